"""How `color.saturate`'s knee was chosen: colourfulness bought against CIEDE2000 lost.

    colorize bench ../shared/data/eval/bsds-val --models unet --metrics deltae,cf --out runs/sat/bsds
    python benchmarks/saturation_knee.py runs/sat/bsds/cache/unet-*-oneshot-1-256-0-code* ../shared/data/eval/bsds-val

Takes a bench cache of one model's outputs (at saturation 1) and the ground-truth folder, scales
each output's chroma after the fact with the knee and saturation of every grid point (knee 0 is a
constant gain), and prints mean CIEDE2000 and ΔCF per point. It works on the composed 8-bit
outputs, where `colorize` applies the curve to the model's a*b* before composing, so the numbers
are close to, not equal to, `colorize bench --saturation`. Choose on a development set, not on
the reporting set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.bench.metrics import colourfulness, mean_ciede2000  # noqa: E402
from colorize_cli.bench.runner import cached_colourings  # noqa: E402
from colorize_cli.color import lab_to_rgb, rgb_to_lab, saturate  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path, help="a bench cache folder of PNG outputs")
    p.add_argument("truth", type=Path, help="the ground-truth folder the bench ran on")
    p.add_argument("--knees", default="0,5,10,20,40")
    p.add_argument("--saturations", default="1.5,2,2.5,3,4")
    args = p.parse_args(argv)
    knees = [float(k) for k in args.knees.split(",")]
    grid = [(1.0, 0.0)] + [(float(s), k) for k in knees for s in args.saturations.split(",")]
    pairs = cached_colourings(args.cache, args.truth)  # matched as the bench names its cache
    if not pairs:
        raise SystemExit(f"{args.cache} holds no colouring of a photo in {args.truth}")
    print(f"{len(pairs)} cached colourings of the photos in {args.truth}")
    scores: dict[tuple[float, float], list[tuple[float, float, float]]] = {g: [] for g in grid}
    for output, truth_path in pairs:
        truth = np.asarray(Image.open(truth_path).convert("RGB"))
        lab = rgb_to_lab(torch.from_numpy(np.asarray(Image.open(output).convert("RGB")).copy()).permute(2, 0, 1) / 255)
        for s, knee in grid:
            ab = lab[1:] * s if knee == 0 else saturate(lab[1:], s, knee)
            rgb = (lab_to_rgb(torch.cat([lab[:1], ab])).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            scores[(s, knee)].append((mean_ciede2000(rgb, truth), colourfulness(rgb), colourfulness(truth)))
    print("| knee | saturation | ΔE00 | CF | ΔCF |\n|---:|---:|---:|---:|---:|")
    for (s, knee), rows in scores.items():
        de, cf, cf_truth = np.mean(rows, axis=0)
        print(f"| {knee:g} | {s:g} | {de:.2f} | {cf:.2f} | {abs(cf_truth - cf):.2f} |")


if __name__ == "__main__":
    main()
