"""Experiment: does `lab-ddpm`, started from `unet`'s colours, beat `unet --saturation`?

SDEdit-style refinement (Meng et al. 2022): `unet`'s a*b* at 64 px are noised to the DDIM step
at fraction `strength` of the schedule and `lab-ddpm` denoises from there (deterministic DDIM,
its 20-step spacing), so the diffusion model adds colour where `unet` is unsure while keeping its
layout. Scored on the first N images of an eval folder (sorted names) with CIEDE2000 and the
colourfulness gap (ΔCF), against grey, `unet` and `lab-ddpm` from noise, all composed at full
resolution by the engine's own code. Not a product path: docs/benchmarks.md has the outcome.

    python benchmarks/sdedit_hybrid.py ../shared/data/eval/imagenet1k-256 --images 200 --strengths 0.3,0.5,0.7
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colorize_cli import diffusion, upsample
from colorize_cli.bench.metrics import colourfulness, mean_ciede2000
from colorize_cli.color import AB_SCALE, normalize_L, saturate
from colorize_cli.pipeline import Engine, sample_seed, working_shape


def ddim_from(denoise, schedule, x: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """Deterministic DDIM over `timesteps` (descending), starting from x at timesteps[0]."""
    for i, t in enumerate(timesteps):
        x0 = denoise(x, torch.full((x.shape[0],), t, dtype=torch.long))
        if i + 1 == len(timesteps):
            return x0
        a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(timesteps[i + 1])
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
        x = math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * eps
    return x


@torch.inference_mode()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--strengths", default="0.3,0.5,0.7")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--saturations", default="2,3", help="also unet at these --saturation values")
    args = p.parse_args()
    strengths = [float(s) for s in args.strengths.split(",")]
    saturations = [float(s) for s in args.saturations.split(",") if s]

    files = sorted(f for f in args.folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.images]
    unet, ddpm = Engine.load(model="unet", device="cpu"), Engine.load(model="lab-ddpm", device="cpu")
    model, schedule = ddpm.model, ddpm.model.schedule
    timesteps = schedule.timesteps(args.steps)
    default_saturation = unet.resolve_settings(None, None, None, None)[3]
    names = (["grey", "unet", *(f"unet --saturation {s:g}" for s in saturations), "lab-ddpm"]
             + [f"unet -> lab-ddpm from {s:g}" for s in strengths])
    scores: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    truth_cf = []
    for path in files:
        truth = np.asarray(Image.open(path).convert("RGB"))
        L_full = upsample.luminance(truth)
        truth_cf.append(colourfulness(truth))

        def score(name: str, ab: torch.Tensor) -> None:
            out = upsample.compose_full_resolution(truth, ab, luminance_full=L_full)
            scores[name][0].append(mean_ciede2000(out, truth))
            scores[name][1].append(colourfulness(out))

        score("grey", torch.zeros(2, 8, 8))
        height, width = truth.shape[:2]
        L_unet = upsample.working_L(truth, working_shape(height, width, 256, unet.model.multiple),
                                    luminance_full=L_full)[None]
        ab_plain = unet.predict_ab(L_unet, sample_seed(0, 0), "oneshot", 1, saturation=1.0)[0]
        ab_unet = saturate(ab_plain, default_saturation)
        score("unet", ab_unet)
        for s in saturations:
            score(f"unet --saturation {s:g}", saturate(ab_plain, s))

        shape = working_shape(height, width, 64, model.multiple)
        L = normalize_L(upsample.working_L(truth, shape, luminance_full=L_full)[None])
        denoise = diffusion.make_denoiser(model.network(L, model.context(L)), schedule, model.config.prediction)
        noise = diffusion.batch_randn(sample_seed(0, 0), (2, *shape), "cpu", torch.float32)
        score("lab-ddpm", ddim_from(denoise, schedule, noise, timesteps).clamp(-1, 1)[0] * AB_SCALE)
        start_ab = torch.nn.functional.interpolate(ab_unet[None] / AB_SCALE, size=shape, mode="area")
        for s in strengths:
            rest = [t for t in timesteps if t <= s * (timesteps[0] + 1)]
            a = schedule.alpha_bar(rest[0])
            x = math.sqrt(a) * start_ab + math.sqrt(1.0 - a) * noise
            score(f"unet -> lab-ddpm from {s:g}", ddim_from(denoise, schedule, x, rest).clamp(-1, 1)[0] * AB_SCALE)

    print(f"{len(files)} images of {args.folder}; colourfulness of the truth {np.mean(truth_cf):.2f}")
    print("| colouring | ΔE00 ↓ | colourfulness | ΔCF ↓ |\n|---|---:|---:|---:|")
    for name, (de, cf) in scores.items():
        print(f"| {name} | {np.mean(de):.2f} | {np.mean(cf):.2f} | {abs(np.mean(cf) - np.mean(truth_cf)):.2f} |")


if __name__ == "__main__":
    main()
