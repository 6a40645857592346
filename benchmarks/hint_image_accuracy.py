"""How well `--hint-image` finds what was painted: synthetic strokes, read back, scored.

Strokes (curved, anti-aliased, 3-20 px wide, from a palette of ten colours) are painted
- on grey copies of scikit-image's public-domain photos, saved as PNG and as JPEG at 95, 85, 75;
- with a soft brush (Gaussian edge) on such copies, at the photo's size and scaled 3x;
- on a transparent 800x600 layer, saved as PNG and as lossy WebP at 90 and 75.
Each stroke's visible core (pixels only it covers, fully) is then checked: it is *right* when most
of it lies in a paint within 8 a*b* of the stroke's colour, *wrong* when most of it lies in other
paints, *lost* when most of it is unpainted. `paints` against `colours` counts extra paints.

    python benchmarks/hint_image_accuracy.py --scenes 40
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from colorize_cli.errors import UsageError
from colorize_cli.hint_image import read_hint_image
from colorize_cli.hints import Hint

PALETTE = [(200, 40, 40), (30, 50, 140), (60, 140, 60), (235, 200, 170), (120, 170, 230), (230, 200, 40),
           (120, 80, 40), (128, 128, 128), (180, 60, 160), (250, 140, 30)]
SUPERSAMPLE = 4
RIGHT_WITHIN = 8.0


def ab_of(rgb) -> np.ndarray:
    return np.array(Hint(0, 0, False, tuple(int(c) for c in rgb), text="x").ab())


def photos() -> dict[str, np.ndarray]:
    import skimage.color
    import skimage.data

    def grey(rgb):
        return (skimage.color.rgb2gray(rgb) * 255).round().astype(np.uint8)
    return {"camera": skimage.data.camera(), "astronaut": grey(skimage.data.astronaut()),
            "coffee": grey(skimage.data.coffee()), "chelsea": grey(skimage.data.chelsea())}


def strokes(rng, width, height, count, grey_allowed):
    palette = [c for c in PALETTE if grey_allowed or c != (128, 128, 128)]
    chosen = rng.choice(len(palette), count, replace=False)
    out = []
    for k in chosen:
        x0, y0 = rng.uniform(50, width - 50), rng.uniform(50, height - 50)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(80, 300)
        x1 = float(np.clip(x0 + length * np.cos(angle), 10, width - 10))
        y1 = float(np.clip(y0 + length * np.sin(angle), 10, height - 10))
        bend = rng.uniform(-0.3, 0.3)
        t = np.linspace(0, 1, 20)
        cx, cy = (x0 + x1) / 2 - (y1 - y0) * bend, (y0 + y1) / 2 + (x1 - x0) * bend
        points = list(zip((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1,
                          (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1))
        out.append((points, int(rng.integers(3, 21)), palette[k]))
    return out


def coverage(width, height, points, stroke_width, soft=0.0):
    """A brush stroke's coverage in [0, 1]: drawn at SUPERSAMPLE x, box-reduced (anti-aliasing)."""
    s = SUPERSAMPLE
    mask = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(mask)
    scaled = [(x * s, y * s) for x, y in points]
    draw.line(scaled, fill=255, width=round(stroke_width * s), joint="curve")
    r = stroke_width * s / 2
    for x, y in (scaled[0], scaled[-1]):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    mask = mask.resize((width, height), Image.BOX)
    if soft:
        mask = mask.filter(ImageFilter.GaussianBlur(soft))
    return np.asarray(mask).astype(np.float32) / 255


def paint_copy(grey, scene, soft=0.0):
    """The grey photo with the strokes painted over it, and each pixel's stroke (-1: none or mixed)."""
    h, w = grey.shape
    rgb = np.stack([grey.astype(np.float32)] * 3, axis=-1)
    top = np.full((h, w), -1)
    for k, (points, stroke_width, colour) in enumerate(scene):
        m = coverage(w, h, points, stroke_width, soft)
        rgb = rgb * (1 - m[..., None]) + np.array(colour, np.float32) * m[..., None]
        top = np.where(m >= 0.97, k, np.where(m > 0.02, -1, top))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), top


def paint_layer(width, height, scene):
    """The strokes on a transparent layer (straight alpha, 'over'), and each pixel's stroke."""
    rgb = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    top = np.full((height, width), -1)
    for k, (points, stroke_width, colour) in enumerate(scene):
        m = coverage(width, height, points, stroke_width)
        after = m + alpha * (1 - m)
        mixed = np.array(colour, np.float32) * m[..., None] + rgb * (alpha * (1 - m))[..., None]
        rgb = np.where(after[..., None] > 0, mixed / np.maximum(after, 1e-6)[..., None], 0)
        alpha = after
        top = np.where(m >= 0.99, k, np.where(m > 0, -1, top))
    rgba = np.concatenate([rgb, alpha[..., None] * 255], axis=-1)
    return np.clip(np.round(rgba), 0, 255).astype(np.uint8), top


def score(path, scene, top, tally):
    tally["scenes"] += 1
    try:
        hints = read_hint_image(path)
    except UsageError:
        tally["refused"] += 1
        return
    labels = np.full(top.shape, -1)
    for i, hint in enumerate(hints):
        labels[hint.mask.numpy()] = i
    tally["paints"] += len(hints)
    tally["colours"] += len({colour for _, _, colour in scene})
    found = [np.array(hint.ab()) for hint in hints]
    for k, (_, _, colour) in enumerate(scene):
        core = labels[top == k]
        if not core.size:
            continue
        tally["strokes"] += 1
        truth = ab_of(colour)
        good = [i for i, ab in enumerate(found) if np.linalg.norm(ab - truth) < RIGHT_WITHIN]
        right = np.isin(core, good).mean()
        if (core == -1).mean() > 0.5:
            tally["lost"] += 1
        elif right < 0.5:
            tally["wrong"] += 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40, help="scenes of each kind")
    args = parser.parse_args(argv)
    greys = photos()
    names = list(greys)
    results: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in range(args.scenes):
            rng = np.random.default_rng(300 + seed)
            grey = greys[names[seed % len(names)]]
            scene = strokes(rng, grey.shape[1], grey.shape[0], 5, grey_allowed=False)
            image, top = paint_copy(grey, scene)
            for key, suffix, options in [("copy png", "png", {}), ("copy jpeg 95", "jpg", {"quality": 95}),
                                         ("copy jpeg 85", "jpg", {"quality": 85}),
                                         ("copy jpeg 75", "jpg", {"quality": 75})]:
                Image.fromarray(image).save(tmp / f"copy.{suffix}", **options)
                score(tmp / f"copy.{suffix}", scene, top, results[key])

            rng = np.random.default_rng(700 + seed)
            scale = 1 if seed % 2 == 0 else 3
            photo = Image.fromarray(greys[names[seed % len(names)]])
            grey = np.asarray(photo.resize((photo.width * scale, photo.height * scale), Image.BICUBIC))
            scene = [(points, 2 * scale * width, colour)
                     for points, width, colour in strokes(rng, grey.shape[1], grey.shape[0], 4, grey_allowed=False)]
            image, top = paint_copy(grey, scene, soft=rng.uniform(2, 8) * scale)
            for key, suffix, options in [("soft copy png", "png", {}), ("soft copy jpeg 90", "jpg", {"quality": 90})]:
                Image.fromarray(image).save(tmp / f"soft.{suffix}", **options)
                score(tmp / f"soft.{suffix}", scene, top, results[key])

            rng = np.random.default_rng(500 + seed)
            scene = strokes(rng, 800, 600, 7, grey_allowed=True)
            image, top = paint_layer(800, 600, scene)
            for key, suffix, options in [("layer png", "png", {}), ("layer webp 90", "webp", {"quality": 90}),
                                         ("layer webp 75", "webp", {"quality": 75})]:
                Image.fromarray(image).save(tmp / f"layer.{suffix}", **options)
                score(tmp / f"layer.{suffix}", scene, top, results[key])
    columns = ["scenes", "refused", "colours", "paints", "strokes", "wrong", "lost"]
    print("| kind | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for key, tally in results.items():
        print(f"| {key} | " + " | ".join(str(tally[c]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
