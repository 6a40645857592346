"""Would choosing the colour strength per photo beat one strength for all? An upper bound.

    colorize bench ../shared/data/eval/imagenet1k-256 --models unet --metrics deltae,cf --out runs/in964
    python benchmarks/strength_oracle.py runs/in964/cache/unet-*-oneshot-1-256-0-code* ../shared/data/eval/imagenet1k-256

Takes one model's bench cache and its ground truth, re-scales each cached colouring's chroma with
`color.saturate` at every strength of the grid (after the fact, on the 8-bit outputs, as
`saturation_knee.py` does), and scores mean CIEDE2000 against ΔCF (the set's colourfulness gap) for:

- **one strength for all** (what `--saturation` does);
- **the oracle**: each photo's strength picked knowing its truth (maximising λ·CF − ΔE00 per
  photo, for a sweep of λ): no rule that sees only the grey photo can do better;
- **rules by a photo score**: photos split into quintiles of a score, one strength per quintile,
  chosen on a random half of the photos and scored on the other half. Two scores: the truth's own
  colourfulness (what a perfect predictor of "how colourful was this scene" would give) and the
  model output's colourfulness (available when colouring).

Each line is the lowest mean ΔE00 the strategy reaches with ΔCF at most `--max-dcf`.
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


def score_grid(pairs: list[tuple[Path, Path]], grid: list[float]) -> np.ndarray:
    """(photos, strengths, 3): ΔE00, CF of the re-scaled output, CF of the truth."""
    rows = []
    for output, truth_path in pairs:
        truth = np.asarray(Image.open(truth_path).convert("RGB"))
        lab = rgb_to_lab(torch.from_numpy(np.asarray(Image.open(output).convert("RGB")).copy()).permute(2, 0, 1) / 255)
        row = []
        for s in grid:
            rgb = (lab_to_rgb(torch.cat([lab[:1], saturate(lab[1:], s)])).permute(1, 2, 0).numpy() * 255)
            rgb = rgb.round().astype(np.uint8)
            row.append((mean_ciede2000(rgb, truth), colourfulness(rgb), colourfulness(truth)))
        rows.append(row)
    return np.array(rows)


def best_under(points: list[tuple[float, float]], max_dcf: float) -> str:
    """The lowest ΔE00 among (ΔE00, ΔCF) points with ΔCF <= max_dcf."""
    ok = [p for p in points if p[1] <= max_dcf]
    return "none reaches it" if not ok else "ΔE00 {:.2f} at ΔCF {:.2f}".format(*min(ok))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path, help="one run's folder of a bench cache (PNG colourings)")
    p.add_argument("truth", type=Path, help="the ground-truth folder the bench ran on")
    p.add_argument("--saturations", default="1,1.5,2,2.5,3,4,5,6,8")
    p.add_argument("--max-dcf", type=float, default=8.0, help="the ΔCF bound (issue 6: 8)")
    p.add_argument("--splits", type=int, default=20, help="random halves the quintile rules are scored on")
    args = p.parse_args(argv)
    grid = [float(s) for s in args.saturations.split(",")]
    pairs = cached_colourings(args.cache, args.truth)
    if not pairs:
        raise SystemExit(f"{args.cache} holds no colouring of a photo in {args.truth}")
    rows = score_grid(pairs, grid)
    de, cf, cf_truth = rows[..., 0], rows[..., 1], rows[:, 0, 2]
    n, photos = len(rows), np.arange(len(rows))
    lambdas = np.linspace(0.0, 0.3, 121)

    def gap(chosen_cf: np.ndarray, members: np.ndarray) -> float:
        return abs(chosen_cf.mean() - cf_truth[members].mean())

    print(f"{n} photos · strengths {grid} · lowest mean ΔE00 with ΔCF <= {args.max_dcf:g}")
    print("| strategy | result |\n|---|---|")
    uniform = [(de[:, g].mean(), gap(cf[:, g], photos)) for g in range(len(grid))]
    print(f"| one strength for all | {best_under(uniform, args.max_dcf)} |")
    oracle = []
    for lam in lambdas:
        pick = np.argmax(lam * cf - de, axis=1)
        oracle.append((de[photos, pick].mean(), gap(cf[photos, pick], photos)))
    print(f"| oracle (each photo's best strength, knowing its truth) | {best_under(oracle, args.max_dcf)} |")
    for label, score in (("truth's colourfulness", cf_truth), ("output's colourfulness", cf[:, 0])):
        results = []
        for split in range(args.splits):
            perm = np.random.default_rng(split).permutation(n)
            fit, test = perm[: n // 2], perm[n // 2:]
            bucket = np.searchsorted(np.quantile(score[fit], [0.2, 0.4, 0.6, 0.8]), score)
            points = []
            for lam in lambdas:
                choice = np.zeros(5, int)
                for b in range(5):
                    members = fit[bucket[fit] == b]
                    if len(members):
                        choice[b] = np.argmax(lam * cf[members].mean(0) - de[members].mean(0))
                pick = choice[bucket[test]]
                points.append((de[test, pick].mean(), gap(cf[test, pick], test)))
            # one strength for all on the same half, for a like-for-like difference
            flat = [(de[test, g].mean(), gap(cf[test, g], test)) for g in range(len(grid))]
            rule = [q for q in points if q[1] <= args.max_dcf]
            base = [q for q in flat if q[1] <= args.max_dcf]
            if rule and base:
                results.append(min(rule)[0] - min(base)[0])
        if results:
            print(f"| a strength per quintile of the {label} (vs one for all, same half; {len(results)} of "
                  f"{args.splits} splits reach the bound) | ΔE00 {np.mean(results):+.2f} "
                  f"(±{np.std(results):.2f}) |")
        else:
            print(f"| a strength per quintile of the {label} | no split reaches the bound |")


if __name__ == "__main__":
    main()
