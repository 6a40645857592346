"""Would a colour strength per hue (and lightness) beat one strength for all? Fit on one set, score on another.

    colorize bench ../shared/data/eval/bsds-val --models unet --saturation 1 --metrics deltae,cf --out runs/hue-bsds
    colorize bench ../shared/data/eval/imagenet1k-256 --models unet --saturation 1 --metrics deltae,cf --out runs/hue-in964
    python benchmarks/hue_gain.py runs/hue-bsds/cache/unet-* ../shared/data/eval/bsds-val \\
        runs/hue-in964/cache/unet-* ../shared/data/eval/imagenet1k-256 --tables runs/hue-tables

`strength_oracle.py` found that a strength per *photo*, chosen from what the model's output shows,
buys nothing. This asks the same of a strength per *pixel class*: the model's predicted hue (in
`--hue-sectors` equal sectors of the a*b* angle, plus one class for near-grey predictions) and,
optionally, the pixel's lightness (`--l-bands`). A regression model may be right about some hues
(sky, foliage) and only guessing at others (the warm average it paints on anything unsure), so
boosting the first more could buy colourfulness for less CIEDE2000 than `--saturation`.

Each cached colouring (made at saturation 1) is re-scaled after the fact with `color.saturate` at
every strength of the grid, as `strength_oracle.py` does. Both CIEDE2000 and the colourfulness
statistics (sums of rg, rg², yb, yb²) are sums over pixels, so they are tabled per photo, class and
strength once; any assignment of strengths to classes is then scored exactly from the tables.
Assignments are fitted on the first set (coordinate ascent on λ·CF − ΔE00 for a sweep of λ) and
scored on the second; one strength for all is scored from the same tables. Each line is the
lowest mean ΔE00 with ΔCF at most `--max-dcf`, and the ΔE00 at a few colourfulness levels.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.bench.metrics import ciede2000, colourfulness  # noqa: E402
from colorize_cli.bench.runner import cached_colourings  # noqa: E402
from colorize_cli.color import lab_to_rgb, rgb_to_lab, saturate  # noqa: E402

GREY_CHROMA = 3.0  # predictions weaker than this (Lab units) form their own class
CHROMA_EDGES = (8.0, 16.0)  # predicted chroma bands for --c-bands 3: weak, middling, strong


def read_lab(path: Path, reduce: int = 1) -> torch.Tensor:
    """An image file as CIE Lab (3, H, W), optionally shrunk by an integer factor first."""
    image = Image.open(path).convert("RGB")
    if reduce > 1:
        image = image.reduce(reduce)
    return rgb_to_lab(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1) / 255)


def pixel_classes(lab: torch.Tensor, sectors: int, bands: int, c_bands: int = 1) -> torch.Tensor:
    """(H, W) class of each pixel: hue sector (or near-grey) × lightness band × chroma band."""
    a, b = lab[1], lab[2]
    chroma = torch.hypot(a, b)
    hue = torch.atan2(b, a) % (2 * math.pi)
    sector = (hue / (2 * math.pi) * sectors).long().clamp(max=sectors - 1)
    sector = torch.where(chroma < GREY_CHROMA, torch.full_like(sector, sectors), sector)
    band = (lab[0] / 100 * bands).long().clamp(0, bands - 1)
    c_band = torch.bucketize(chroma, torch.tensor(CHROMA_EDGES[: c_bands - 1]))
    return (sector * bands + band) * c_bands + c_band


def tables(pairs, grid, sectors, bands, c_bands=1):
    """(photos, classes, strengths, 5) sums of ΔE00, rg, rg², yb, yb²; (photos,) pixels and truth CF."""
    classes = (sectors + 1) * bands * c_bands
    out = np.zeros((len(pairs), classes, len(grid), 5))
    pixels, cf_truth = np.zeros(len(pairs)), np.zeros(len(pairs))
    for i, (output, truth_path) in enumerate(pairs):
        truth = np.asarray(Image.open(truth_path).convert("RGB"))
        cf_truth[i] = colourfulness(truth)
        truth_lab = read_lab(truth_path).double()
        lab = read_lab(output)
        cls = pixel_classes(lab, sectors, bands, c_bands).flatten()
        pixels[i] = cls.numel()
        for g, s in enumerate(grid):
            rgb = (lab_to_rgb(torch.cat([lab[:1], saturate(lab[1:], s)])) * 255).round()
            de = ciede2000(rgb_to_lab(rgb / 255).double(), truth_lab).flatten()
            rgb = rgb.double().flatten(1)
            rg = rgb[0] - rgb[1]
            yb = 0.5 * (rgb[0] + rgb[1]) - rgb[2]
            for k, v in enumerate((de, rg, rg * rg, yb, yb * yb)):
                out[i, :, g, k] = torch.zeros(classes, dtype=torch.float64).index_add_(0, cls, v).numpy()
    return out, pixels, cf_truth


def score(t, pixels, choice):
    """Mean ΔE00 and per-photo CF for one strength index per class."""
    s = t[:, np.arange(t.shape[1]), choice].sum(1) / pixels[:, None]   # (photos, 5) means
    cf = np.sqrt(np.maximum(s[:, 2] - s[:, 1] ** 2, 0) + np.maximum(s[:, 4] - s[:, 3] ** 2, 0))
    cf += 0.3 * np.sqrt(s[:, 1] ** 2 + s[:, 3] ** 2)
    return s[:, 0].mean(), cf


def fit(t, pixels, lam, start):
    """Coordinate ascent on λ·mean CF − mean ΔE00 over one strength per class."""
    choice = start.copy()
    best = None
    for _ in range(6):
        changed = False
        for c in range(t.shape[1]):
            for g in range(t.shape[2]):
                trial = choice.copy()
                trial[c] = g
                de, cf = score(t, pixels, trial)
                value = lam * cf.mean() - de
                if best is None or value > best + 1e-12:
                    best, choice, changed = value, trial, True
        if not changed:
            break
    return choice


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fit_cache", type=Path)
    p.add_argument("fit_truth", type=Path)
    p.add_argument("test_cache", type=Path)
    p.add_argument("test_truth", type=Path)
    p.add_argument("--saturations", default="1,1.5,2,2.5,3,3.5,4,5,6,8")
    p.add_argument("--hue-sectors", type=int, default=12)
    p.add_argument("--l-bands", type=int, default=1)
    p.add_argument("--c-bands", type=int, default=1, choices=(1, 2, 3), help="bands of predicted chroma")
    p.add_argument("--max-dcf", type=float, default=8.0)
    p.add_argument("--tables", type=Path, help="folder to keep each set's tables in (npz), reused when present")
    args = p.parse_args(argv)
    grid = [float(s) for s in args.saturations.split(",")]
    sets = {}
    for name, cache, truth in (("fit", args.fit_cache, args.fit_truth), ("test", args.test_cache, args.test_truth)):
        kept = None
        if args.tables:
            tag = f"{truth.name}-{cache.name}-{args.hue_sectors}x{args.l_bands}x{args.c_bands}-{args.saturations}.npz"
            kept = args.tables / tag
        if kept and kept.exists():
            with np.load(kept) as z:
                sets[name] = (z["t"], z["px"], z["cf"])
            continue
        pairs = cached_colourings(cache, truth)
        if not pairs:
            raise SystemExit(f"{cache} holds no colouring of a photo in {truth}")
        sets[name] = tables(pairs, grid, args.hue_sectors, args.l_bands, args.c_bands)
        print(f"{name}: {len(pairs)} photos tabled", file=sys.stderr)
        if kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            np.savez(kept, t=sets[name][0], px=sets[name][1], cf=sets[name][2])
    classes = sets["fit"][0].shape[1]
    # points are (mean ΔE00, CF of the outputs minus CF of the truth): signed, so a curve that
    # overshoots the truth's colourfulness is not read as a smaller gap on the way back
    uniform = {n: [] for n in sets}
    fitted = {n: [] for n in sets}
    for g in range(len(grid)):
        for n, (t, px, cft) in sets.items():
            de, cf = score(t, px, np.full(classes, g))
            uniform[n].append((de, cf.mean() - cft.mean()))
    t, px, _ = sets["fit"]
    flat = [score(t, px, np.full(classes, g)) for g in range(len(grid))]   # (ΔE00, CFs) per strength
    for lam in np.linspace(0.0, 0.4, 41):
        g0 = int(np.argmax([lam * cf.mean() - de for de, cf in flat]))   # the best one strength: the start
        choice = fit(t, px, lam, np.full(classes, g0))
        for n, (tt, pp, cft) in sets.items():
            de, cf = score(tt, pp, choice)
            fitted[n].append((de, cf.mean() - cft.mean()))
    levels = (20, 15, 10, 8)
    print(f"hue sectors {args.hue_sectors} (+ near-grey) × lightness bands {args.l_bands} × chroma bands "
          f"{args.c_bands}; strengths {grid}")
    print("| set | strategy | lowest ΔE00 with ΔCF ≤ {:g} | ".format(args.max_dcf)
          + " | ".join(f"ΔE00 at ΔCF {v}" for v in levels) + " |")
    print("|---|---|---|" + "---:|" * len(levels))
    for n in sets:
        for label, pts in (("one strength for all", uniform[n]),
                           ("a strength per class, fitted on the fit set", fitted[n])):
            ok = [(de, abs(gap)) for de, gap in pts if abs(gap) <= args.max_dcf]
            best = "none" if not ok else "{:.2f} at ΔCF {:.2f}".format(*min(ok))
            print(f"| {n} | {label} | {best} | " + " | ".join(f"{at_gap(pts, v)}" for v in levels) + " |")


def at_gap(points, dcf):
    """ΔE00 interpolated at colourfulness gap `dcf` below the truth, on the lower envelope of the points."""
    under = sorted((gap, de) for de, gap in points if gap <= 0)
    if not under or not under[0][0] <= -dcf <= under[-1][0]:
        return "–"
    gaps = np.array([g for g, _ in under])
    des = np.minimum.accumulate(np.array([d for _, d in under])[::-1])[::-1]   # best ΔE00 at ≥ that colour
    return f"{np.interp(-dcf, gaps, des):.2f}"


if __name__ == "__main__":
    main()
