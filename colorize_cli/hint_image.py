"""Hint images: the colours someone painted, found in an image, one `PaintedHint` per paint.

Two ways to paint, told apart by transparency:
- a *layer*: strokes on a transparent layer over the photo, exported alone. A pixel at least half
  opaque is paint, and keeps the paint's own colour (an editor does not mix it with the
  transparent pixels around it), so two colours apart are two paints, a grey one too;
- a *copy of the grey photo* with strokes on it: a pixel is paint where it has colour. A stroke's
  edges blend into the grey around it (a JPEG also smears its colour over 8-16 px blocks).

Either way the edges of strokes hold colours no one painted (blends with the grey, or with the
stroke they cross, after anti-aliasing or scaling). Painted colours are first grouped by a*b*
(`SAME_PAINT`), then a group that is mostly edge (few pixels inside it) and lies against a larger
group is taken for that group's rim and joins it. What remains are the paints.

    hints = read_hint_image("strokes.png")           # [PaintedHint, ...]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from .color import rgb_to_lab
from .errors import UsageError
from .hints import PaintedHint

# Larger hint images are reduced (each block keeps its most opaque, or most colourful, pixel, so
# a 1-px stroke survives): the seeds end at the working size (256 px by default) anyway.
LARGEST_SIDE = 2048
# At least this share of pixels under half opaque makes a layer; an opaque copy of the photo with
# a stray transparent pixel stays a copy (its every grey pixel would otherwise be paint).
LAYER_SHARE = 0.1
# On a copy of the photo, paint is what is at least this colourful (a*b* chroma): JPEG noise in a
# grey photo stays below ~3, a pale skin tone is ~10.
PAINTED_CHROMA = 8.0
# More than COLOUR_SHARE of a copy coloured is a colour photo, not strokes on a grey one; more than
# TONED_SHARE, mostly in one faint colour (chroma under TONE_CHROMA), a sepia-toned one.
COLOUR_SHARE = 0.5
TONED_SHARE = 0.3
TONE_CHROMA = 20.0
# Colours within this many a*b* units of a group's first (most painted) colour join it: on a layer
# only 8-bit rounding apart; on a copy, a JPEG's noise.
SAME_PAINT = {"layer": 4.0, "copy": 10.0}
# A group with under RIM_INNER of inner pixels (all 4 neighbours in the group) is a rim when at
# least RIM_CONTACT of its pixels touch a larger group. On a copy a JPEG smears a stroke's colour,
# fainter, over whole 8-16 px blocks beside it: there a group is a rim of a stronger one it touches,
# with more inside it.
RIM_INNER = {"layer": 0.2, "copy": 0.5}
RIM_CONTACT = {"layer": 0.5, "copy": 0.25}
# On a copy, smaller groups are specks of noise, not paint (on a layer every dab counts).
LEAST_PAINT = {"layer": 1, "copy": 4}
MAX_PAINTS = 16


def read_hint_image(path: str | os.PathLike, *, prefix: str = "--") -> list[PaintedHint]:
    """One PaintedHint per paint found in the image at `path`. ImageError when it cannot be read
    (an input problem); UsageError, naming `{prefix}hint-image`, when nothing is painted on it,
    too many colours are, or it is a colour photo rather than strokes."""
    from .imageio import ImageError, load_image, to_uint8

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a hint image is a path (str or os.PathLike), not {type(path).__name__}")
    path = Path(path)
    name = f"{prefix}hint-image {path}"
    if str(path) == "-":
        raise UsageError(f"{name}: a hint image is a file (standard input can only hold the photo)")
    try:
        image = load_image(path)
    except ImageError as e:  # say that it is the hint image, not the photo, that cannot be read
        raise type(e)(f"{prefix}hint-image: {e}") from None
    height, width = image.pixels.shape[:2]
    pixels = to_uint8(image.pixels)
    alpha = None if image.alpha is None else to_uint8(image.alpha)
    layer = alpha is not None and float((alpha < 128).mean()) >= LAYER_SHARE
    kind = "layer" if layer else "copy"
    priority = alpha if layer else (pixels.max(axis=2) - pixels.min(axis=2))
    pixels, priority = _reduce(pixels, priority, LARGEST_SIDE)
    # a*b* only where paint may be: the opaque pixels of a layer; on a copy, those whose channels
    # differ at all (grey is equal channels; a chroma of 8 is a spread of several levels)
    maybe = priority >= 128 if layer else priority >= 2
    ab = np.zeros((*priority.shape, 2), np.float32)
    ab[maybe] = _ab_of(pixels[maybe])
    painted = maybe if layer else np.hypot(ab[..., 0], ab[..., 1]) > PAINTED_CHROMA
    if not painted.any():
        how = ("no pixel is at least half opaque" if layer else
               "it has no transparency and no colour (paint strokes on a transparent layer, or in colour on the photo)")
        raise UsageError(f"{name}: nothing is painted on it: {how}")
    toned = f"{name}: it looks like a colour or toned photo, not strokes on a grey one (paint on a transparent " \
            "layer, or on a grey copy of the photo)"
    if not layer and painted.mean() > COLOUR_SHARE:
        raise UsageError(toned)
    labels, colours = _find_paints(ab, painted, kind)
    if not layer and painted.mean() > TONED_SHARE:
        largest = np.bincount(labels[labels >= 0]).argmax()
        if np.hypot(*colours[largest]) < TONE_CHROMA:
            raise UsageError(toned)
    if len(colours) > MAX_PAINTS:
        raise UsageError(f"{name}: {len(colours)} different colours are painted on it, at most {MAX_PAINTS}: "
                         "paint each surface in one flat colour (is it a photo?)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    shown = os.fsencode(path.name).decode("utf-8", "backslashreplace")  # a note is ASCII text
    text = f"image {json.dumps(shown)} (sha256 {digest[:16]})"
    return [PaintedHint(torch.from_numpy(labels == k), (float(a), float(b)), text=text, size=(width, height))
            for k, (a, b) in enumerate(colours)]


def _reduce(pixels: np.ndarray, priority: np.ndarray, largest: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `largest` px a side: each f x f block becomes its pixel of highest priority."""
    h, w = priority.shape
    f = math.ceil(max(h, w) / largest)
    if f <= 1:
        return pixels, priority
    H, W = math.ceil(h / f) * f, math.ceil(w / f) * f
    pri = np.zeros((H, W), priority.dtype)
    pri[:h, :w] = priority
    blocks = pri.reshape(H // f, f, W // f, f).transpose(0, 2, 1, 3).reshape(H // f, W // f, f * f)
    best = blocks.argmax(axis=2)
    rows = (np.arange(H // f)[:, None] * f + best // f).clip(max=h - 1)
    cols = (np.arange(W // f)[None, :] * f + best % f).clip(max=w - 1)
    return pixels[rows, cols], priority[rows, cols]


def _ab_of(pixels: np.ndarray) -> np.ndarray:
    """a*b* (N, 2) of 8-bit sRGB pixels (N, 3), converted once per distinct colour."""
    keys = pixels.astype(np.int32) @ np.array([65536, 256, 1], np.int32)
    distinct, inverse = np.unique(keys, return_inverse=True)
    rgb = np.stack([distinct // 65536, distinct // 256 % 256, distinct % 256]).astype(np.float32) / 255.0
    lab = rgb_to_lab(torch.from_numpy(rgb)[None, :, :, None])[0, :, :, 0].numpy()  # (3, U)
    return lab[1:].T[inverse.reshape(-1)]


def _find_paints(ab: np.ndarray, painted: np.ndarray, kind: str) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(labels (h, w): a paint's index, -1 where unpainted; each paint's a*b*)."""
    colours = ab[painted]
    # Group: 1-unit bins, the most painted first; a bin joins the first group within SAME_PAINT.
    bins, counts = np.unique(np.round(colours).astype(np.int32), axis=0, return_counts=True)
    leaders: list[np.ndarray] = []
    for i in np.argsort(-counts, kind="stable"):
        if not leaders or np.linalg.norm(np.asarray(leaders) - bins[i], axis=1).min() > SAME_PAINT[kind]:
            leaders.append(bins[i].astype(np.float32))
            if len(leaders) > 16 * MAX_PAINTS:  # a photo: no need to count every colour of it
                break
    centres = np.asarray(leaders)
    group = np.linalg.norm(colours[:, None, :] - centres[None], axis=2).argmin(axis=1)
    labels = np.full(painted.shape, -1, np.int64)
    labels[painted] = group
    labels = _absorb_rims(labels, centres, kind)
    kept = np.unique(labels[labels >= 0])
    renumbered = np.full(len(centres), -1, np.int64)
    renumbered[kept] = np.arange(len(kept))
    labels = np.where(labels >= 0, renumbered[labels.clip(min=0)], -1)
    return labels, [_paint_of(ab[labels == k], kind) for k in range(len(kept))]


def _paint_of(colours: np.ndarray, kind: str) -> tuple[float, float]:
    """The a*b* a group was painted in: on a layer its mean; on a copy the mean of its strongest
    colours (within 80 % of its 95th-percentile chroma), not of its blends with the grey around."""
    if kind == "copy":
        chroma = np.hypot(colours[:, 0], colours[:, 1])
        colours = colours[chroma >= 0.8 * np.quantile(chroma, 0.95)]
    a, b = colours.mean(axis=0)
    return float(a), float(b)


def _neighbours(labels: np.ndarray) -> list[np.ndarray]:
    """The label of each pixel's 8 neighbours (-1 beyond the border), the 4 sharing a side first."""
    padded = np.pad(labels, 1, constant_values=-1)
    h, w = labels.shape
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    return [padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in steps]


def _absorb_rims(labels: np.ndarray, centres: np.ndarray, kind: str, passes: int = 8) -> np.ndarray:
    """Merge rim groups (mostly edge, against a larger group: on a copy, a stronger one) and specks
    into their neighbours. `centres`: each group's first a*b*."""
    groups = len(centres)
    chroma = np.linalg.norm(centres, axis=1) if kind == "copy" else None
    for _ in range(passes):
        sizes = np.bincount(labels[labels >= 0], minlength=groups)
        live = np.flatnonzero(sizes)
        if len(live) <= 1:
            break
        around = _neighbours(labels)
        inner = np.logical_and.reduce([n == labels for n in around[:4]]) & (labels >= 0)
        inner_share = np.bincount(labels[inner], minlength=groups) / np.maximum(sizes, 1)
        size_of = np.where(labels >= 0, sizes[labels.clip(min=0)], 0)
        larger = np.zeros(labels.shape, bool)
        own = labels.clip(min=0)
        for n in around:
            other = n.clip(min=0)
            touches = (n >= 0) & (sizes[other] > size_of)
            if chroma is not None:  # on a copy: the fainter side of a stroke's smear whatever the sizes,
                # or a little overshoot (sharpening, bicubic scaling) round a larger stroke
                near = np.linalg.norm(centres[other] - centres[own], axis=-1) <= 2 * SAME_PAINT["copy"]
                touches = (n >= 0) & ((chroma[other] > chroma[own]) | (touches & near))
            larger |= touches
        contact = np.bincount(labels[larger & (labels >= 0)], minlength=groups) / np.maximum(sizes, 1)
        rims = (inner_share < RIM_INNER[kind]) & (contact >= RIM_CONTACT[kind])
        specks = sizes < LEAST_PAINT[kind]
        drop = (rims | specks) & (sizes > 0)
        drop[live[np.argmax(sizes[live])]] = False  # the largest group is paint whatever its shape
        if not drop.any():
            break
        labels = _relabel(labels, drop)
    return labels


def _relabel(labels: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Pixels of dropped groups take the group of a neighbour that is kept (spreading inwards from
    it); any cut off from every kept group is left unpainted."""
    lost = (labels >= 0) & drop[labels.clip(min=0)]
    labels = np.where(lost, -2, labels)  # -2: painted, waiting for a group
    for _ in range(64):
        waiting = labels == -2
        if not waiting.any():
            break
        best = np.full(labels.shape, -1, np.int64)
        for n in _neighbours(labels):
            best = np.maximum(best, n)
        take = waiting & (best >= 0)
        if not take.any():
            break
        labels = np.where(take, best, labels)
    return np.where(labels == -2, -1, labels)
