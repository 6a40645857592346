"""latent-cold: how far the restored colour latent lands from the true one, one-shot vs improved.

    python benchmarks/latent_error.py ../shared/data/eval/imagenet1k-256 --weights runs/latent-cold.safetensors

For each photo, z0 is the VQ-VAE's quantised latent of the true colour image (what the restorer
is trained to reach) and z_hat the latent the sampler restores from the grey image's latent. The
relative latent error is ||z_hat - z0|| / ||z0|| per image, averaged; the latent cold diffusion
paper reports this quantity as 16 % for one-shot and 14 % for improved sampling. Also printed:
the same error for the grey latent itself (where both samplers start), as a yardstick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.bench.runner import list_images, read_rgb  # noqa: E402
from colorize_cli.models import load_model  # noqa: E402
from colorize_cli.train.loop import to_lab  # noqa: E402
from colorize_cli.weights import load_model_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="working size (default: the model's)")
    p.add_argument("--steps", type=int, default=10, help="improved (cold) sampling steps")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    state, config = load_model_file(args.weights)
    if config["architecture"] != "latent-cold":
        p.error(f"{args.weights} holds a {config['architecture']!r} model, not latent-cold")
    model = load_model(config, state).eval()
    size = args.size or config["size"]
    size -= size % model.multiple

    errors: dict[str, list[float]] = {"grey": [], "oneshot": [], f"cold:{args.steps}": []}
    with torch.no_grad():
        for path in list_images(args.data, args.limit):
            rgb = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)[None].float()
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            L, ab = to_lab(rgb.clamp(0, 255))  # what training feeds the VQ-VAE
            z0 = model.vqvae.quantize(model.vqvae.encode(L, ab))
            norm = z0.norm()
            candidates = {
                "grey": model.grey_latent(L),
                "oneshot": model.restore_latent(L, sampler="oneshot"),
                f"cold:{args.steps}": model.restore_latent(L, sampler="cold", steps=args.steps),
            }
            for name, z in candidates.items():
                errors[name].append(float((z - z0).norm() / norm))
    result = {name: {"mean": float(np.mean(v)), "median": float(np.median(v)), "images": len(v)}
              for name, v in errors.items()}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'latent':<10}{'mean rel. error':>17}{'median':>9}   images")
    for name, r in result.items():
        print(f"{name:<10}{100 * r['mean']:>16.1f}%{100 * r['median']:>8.1f}%   {r['images']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
