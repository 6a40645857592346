"""Experiment: would DPM-Solver++(2M) let `lab-ddpm` take fewer steps than DDIM for the same colouring?

DPM-Solver++ (Lu et al. 2022), second-order multistep in the data (x0) parametrisation, on the
same respaced timesteps as the engine's DDIM; its last step lands on x0 as DDIM's does. For the
first N images of an eval folder (sorted names), each setting starts from the same noise and is
scored by CIEDE2000 and the colourfulness gap (ΔCF) at full resolution through the engine's own
composition, and by how far its a*b* (at the working size) lie from DDIM with 50 steps, the
converged sampler. Not a product path: docs/benchmarks.md has the outcome.

    python benchmarks/dpm_solver_probe.py ../shared/data/eval/bsds-val --images 40
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from colorize_cli import diffusion, upsample
from colorize_cli.bench.metrics import colourfulness, mean_ciede2000
from colorize_cli.bench.runner import grey_input, read_rgb
from colorize_cli.color import AB_SCALE, normalize_L, saturate
from colorize_cli.pipeline import Engine, sample_seed, working_shape

SETTINGS = (("ddim", 50), ("ddim", 20), ("ddim", 10), ("dpm++2m", 20), ("dpm++2m", 10), ("dpm++2m", 6))


def sample_dpmpp_2m(denoise, schedule, x: torch.Tensor, steps: int) -> torch.Tensor:
    """DPM-Solver++(2M) from pure noise x over the schedule's `steps` respaced timesteps."""
    timesteps = schedule.timesteps(steps)
    previous_x0, previous_h = None, None
    for i, t in enumerate(timesteps):
        x0 = denoise(x, torch.full((x.shape[0],), t, dtype=torch.long))
        a = schedule.alpha_bar(t)
        alpha, sigma = math.sqrt(a), math.sqrt(1.0 - a)
        last = i + 1 == len(timesteps)
        if not last:
            a_next = schedule.alpha_bar(timesteps[i + 1])
            alpha_next, sigma_next = math.sqrt(a_next), math.sqrt(1.0 - a_next)
            h = math.log(alpha_next / sigma_next) - math.log(alpha / sigma)
        D = x0
        if previous_x0 is not None:  # the second-order correction from the previous step's x0
            r = previous_h / (h if not last else previous_h)
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        if last:
            return D.clamp(-1.0, 1.0)
        x = (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * D
        previous_x0, previous_h = x0, h
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    engine = Engine.load("lab-ddpm", device="cpu")
    model = engine.model
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.images]
    truths = [read_rgb(p) for p in files]
    cf_truth = float(np.mean([colourfulness(t) for t in truths]))
    scores = {s: ([], [], []) for s in SETTINGS}
    for truth in truths:
        pixels = grey_input(truth)
        L_full = upsample.luminance(pixels)
        shape = working_shape(*pixels.shape[:2], engine.default_size, model.multiple)
        L_work = upsample.working_L(pixels, shape, luminance_full=L_full)[None]
        L = normalize_L(L_work)
        denoise = diffusion.make_denoiser(model.network(L, model.context(L)), model.schedule, model.config.prediction)
        reference = None
        for kind, steps in SETTINGS:
            generators = sample_seed(0, 0)
            x_T = diffusion.batch_randn(generators, (2, *shape), L.device, L.dtype)
            if kind == "ddim":
                ab = diffusion.sample_ddim(denoise, model.schedule, x_T, steps, generators).clamp(-1.0, 1.0)
            else:
                ab = sample_dpmpp_2m(denoise, model.schedule, x_T, steps)
            reference = ab if reference is None else reference
            strong = saturate(ab * AB_SCALE, engine.default_saturation, L=L_work, profile=model.strength_profile)
            out = upsample.compose_full_resolution(pixels, strong[0], luminance_full=L_full)
            de, cf, gap = scores[(kind, steps)]
            de.append(mean_ciede2000(out, truth))
            cf.append(colourfulness(out))
            gap.append(float((ab - reference).abs().mean()) * AB_SCALE)
    print(f"{len(truths)} images of {args.data}; lab-ddpm at {engine.default_size} px")
    print("| sampler | steps | ΔE00 | ΔCF | mean |a*b* − DDIM 50| |\n|---|---:|---:|---:|---:|")
    for (kind, steps), (de, cf, gap) in scores.items():
        print(f"| {kind} | {steps} | {np.mean(de):.2f} | {abs(np.mean(cf) - cf_truth):.2f} | {np.mean(gap):.2f} |")


if __name__ == "__main__":
    main()
