"""Hint images: the colours someone painted, found in an image, one `PaintedHint` per paint.

Two ways to paint, told apart by transparency:
- a *layer*: strokes on a transparent layer over the photo, exported alone. A pixel at least half
  opaque is paint, and keeps the paint's own colour (an editor does not mix it with the
  transparent pixels around it), so two colours apart are two paints, a grey one too;
- a *copy of the grey photo* with strokes on it: a pixel is paint where it has colour. A stroke's
  edges blend into the grey around it (a JPEG also smears its colour over 8-16 px blocks).

Either way the edges of strokes hold colours no one painted (blends with the grey, or with the
stroke they cross, after anti-aliasing, scaling or a soft brush), and a lossy file adds noise.
Painted colours are put in classes of near a*b* (`SAME_PAINT`), each class is cut into connected
regions -- so two strokes apart stay two, however near their colours -- and a region that is a
rim, band, speck or patch of noise of a neighbouring region joins it (`_absorb_rims`). Regions of
one colour left apart are one paint laid twice.

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
# ... unless its opaque part is mostly grey in at least this many shades: a copy of the photo
# with transparent margins.
PHOTO_SHADES = 64
# On a copy of the photo, paint is what is at least this colourful (a*b* chroma): JPEG noise in a
# grey photo stays below ~3, a pale skin tone is ~10.
PAINTED_CHROMA = 8.0
# More than COLOUR_SHARE of a copy coloured is a colour photo, not strokes on a grey one; more than
# TONED_SHARE, mostly in one faint colour (chroma under TONE_CHROMA), a sepia-toned one.
COLOUR_SHARE = 0.5
TONED_SHARE = 0.3
TONE_CHROMA = 20.0
# Colours within this many a*b* units of a class's first (most painted) colour join it: on a layer
# only 8-bit rounding apart (regions apart: twice that on a lossy layer); on a copy, a JPEG's noise.
SAME_PAINT = {"layer": 4.0, "copy": 10.0}
# A region may join a neighbour (larger; on a copy, or more colourful) whose colour is near its own
# (within 2 x SAME_PAINT) or of which it is a blend: with another neighbour, or with grey (a stroke
# fading into the photo; a layer's edge mixed with its transparent pixels' black or white), within
# BLEND a*b* of the line between them (mixing in RGB bends that line in a*b*). It does when:
# - it is a rim: under RIM_INNER of its pixels inner (all 4 neighbours in it), and at least
#   RIM_CONTACT of them touching such neighbours. On a copy a JPEG smears a stroke's colour,
#   fainter, over whole 8-16 px blocks beside it: there a rim may have more inside it;
BLEND = 12.0
RIM_INNER = {"layer": 0.2, "copy": 0.5}
RIM_CONTACT = {"layer": 0.5, "copy": 0.25}
# - on a copy, it is a band of a soft brush's edge: fainter (by at most 2 x SAME_PAINT chroma), of
#   the neighbour's hue, touching it along at least FADE_CONTACT of its edge, and at most FADE_WIDTH
#   px wide (twice its area over its edge; a pale stroke beside a stronger one of its hue is wider);
FADE_CONTACT = 0.3
FADE_WIDTH = 8
# - on a layer, it is a patch of lossy noise (near a larger neighbour's colour, RIM_CONTACT of it
#   touching), or fewer than EDGE_SPECK px at the paint's edge (anti-aliasing, whatever its colour);
EDGE_SPECK = 4
# - it is a speck: smaller than LEAST_PAINT (on a layer every dab counts) or, on a copy, faint
#   (chroma under twice PAINTED_CHROMA) and smaller than FAINT_SPECK (a JPEG's ringing). A speck
#   with no neighbour to join is no paint.
LEAST_PAINT = {"layer": 1, "copy": 4}
FAINT_SPECK = 64
MAX_PAINTS = 16
# Strokes make at most a few thousand patches of one colour class, even through a JPEG; a photo or
# noise (confetti) can make millions, each of which `_absorb_rims` weighs in Python.
MAX_PATCHES = 20_000


class _Scattered(Exception):
    """Painted colour in too many separate patches to be strokes."""

    def __init__(self, patches: int):
        super().__init__(patches)
        self.patches = patches


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
    if layer:
        reduced, priority = _reduce(pixels, alpha, LARGEST_SIDE)
        if _holds_a_photo(reduced, priority >= 128):
            # a copy of the photo with transparent margins (cropped, or pasted on a larger canvas):
            # its grey is the photo, not paint; what is painted is what has colour
            pixels = np.where((alpha < 128)[..., None], np.uint8(128), pixels)
            layer = False
    kind = "layer" if layer else "copy"
    if layer:
        pixels = reduced
    else:
        pixels, priority = _reduce(pixels, pixels.max(axis=2) - pixels.min(axis=2), LARGEST_SIDE)
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
    looks = "it looks like a colour or toned photo, not strokes on a grey one (paint on a transparent layer, or " \
            "on a grey copy of the photo)"
    toned = f"{name}: {looks}"
    if not layer and painted.mean() > COLOUR_SHARE:
        raise UsageError(f"{name}: {painted.mean():.0%} of it has colour, so little of a grey photo shows: {looks}")
    try:
        labels, colours = _find_paints(ab, painted, kind)
    except _Scattered as e:
        raise UsageError(f"{name}: its colour lies in {e.patches:,} separate patches, more than painted strokes "
                         f"make (at most {MAX_PATCHES:,}): it looks like a photo or noise, not strokes on a grey "
                         "photo or a transparent layer") from None
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


def _holds_a_photo(pixels: np.ndarray, opaque: np.ndarray) -> bool:
    """Whether the opaque part of a layer is mostly grey in many shades: a photo, where a painted
    grey (to keep a surface neutral) is one flat shade, or a few."""
    grey = opaque & (pixels.max(axis=2) - pixels.min(axis=2) <= 2)
    return bool(grey.sum() >= 0.5 * opaque.sum() and len(np.unique(pixels[grey][:, 1])) >= PHOTO_SHADES)


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
    """(labels (h, w): a paint's index, -1 where unpainted; each paint's a*b*), as the module's
    docstring tells."""
    classes, centres = _colour_classes(ab[painted], kind)
    labels = np.full(painted.shape, -1, np.int64)
    labels[painted] = classes
    regions, region_class = _components(labels)
    if len(region_class) > MAX_PATCHES:  # each would be weighed one by one: refused before that
        raise _Scattered(len(region_class))
    regions, kept = _absorb_rims(regions, centres[region_class], kind)
    pixels = _members(regions, len(region_class))
    flat_ab = ab.reshape(-1, 2)
    own = np.array([_paint_of(flat_ab[pixels[r]], kind, centres[region_class[r]]) for r in kept]).reshape(-1, 2)
    paint_of_region = np.full(len(region_class), -1, np.int64)
    firsts = np.zeros((0, 2), np.float32)  # each paint's first (largest) region's colour
    # a lossy layer's noise moves a stroke's colour a little from place to place
    same = SAME_PAINT[kind] if kind == "copy" or _lossless(ab, painted) else 2 * SAME_PAINT[kind]
    for i in np.argsort([-len(pixels[r]) for r in kept], kind="stable"):
        near = np.flatnonzero(np.linalg.norm(firsts - own[i], axis=1) <= same)
        if not len(near):
            firsts = np.concatenate([firsts, own[i][None]])
        paint_of_region[kept[i]] = near[0] if len(near) else len(firsts) - 1
    labels = np.where(regions >= 0, paint_of_region[regions.clip(min=0)], -1)
    paints = _members(labels, len(firsts))
    return labels, [_paint_of(flat_ab[paints[k]], kind, firsts[k]) for k in range(len(firsts))]


def _lossless(ab: np.ndarray, painted: np.ndarray) -> bool:
    """Whether the paint is stored without loss: most side-by-side painted pixels are exactly one
    colour (inside strokes), where a lossy file's noise makes them differ."""
    pairs = painted[:, 1:] & painted[:, :-1]
    return bool((ab[:, 1:][pairs] == ab[:, :-1][pairs]).all(axis=1).mean() >= 0.9) if pairs.any() else True


def _members(labels: np.ndarray, n: int) -> list[np.ndarray]:
    """The flat indices of the pixels of each label 0..n-1."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(n + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n)]


def _colour_classes(colours: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Each colour's class and the classes' a*b*: 1-unit bins, the most painted first; a bin joins
    the first class within SAME_PAINT, or starts one; each colour then takes the nearest class."""
    rounded = np.round(colours).astype(np.int32) + 128  # a*b* lie within -128..127
    keys, inverse, counts = np.unique(rounded[:, 0] * 256 + rounded[:, 1], return_inverse=True, return_counts=True)
    bins = np.stack([keys // 256, keys % 256], axis=1) - 128
    leaders: list[np.ndarray] = []
    for i in np.argsort(-counts, kind="stable"):
        if not leaders or np.linalg.norm(np.asarray(leaders) - bins[i], axis=1).min() > SAME_PAINT[kind]:
            leaders.append(bins[i].astype(np.float32))
            if len(leaders) > 16 * MAX_PAINTS:  # a photo: no need to count every colour of it
                break
    centres = np.asarray(leaders)
    nearest = np.linalg.norm(bins[:, None, :] - centres[None], axis=2).argmin(axis=1)  # per bin: fewer than pixels
    return nearest[inverse.reshape(-1)], centres


def _components(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(regions (h, w): each 8-connected patch of one label numbered apart, -1 where unlabelled;
    each region's label). Union-find over neighbouring pixel pairs, vectorised: each round hooks
    every root onto the smallest root it meets, then compresses the paths."""
    h, w = labels.shape
    index = np.arange(h * w).reshape(h, w)
    firsts, seconds = [], []
    for dy, dx in [(0, 1), (1, -1), (1, 0), (1, 1)]:  # half the 8 neighbours: each pair once
        ys, yt = slice(0, h - dy), slice(dy, h)
        xs, xt = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        same = (labels[ys, xs] >= 0) & (labels[ys, xs] == labels[yt, xt])
        firsts.append(index[ys, xs][same])
        seconds.append(index[yt, xt][same])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    parent = np.arange(h * w)
    while True:
        pa, pb = parent[a], parent[b]
        apart = pa != pb
        if not apart.any():
            break
        np.minimum.at(parent, np.maximum(pa, pb)[apart], np.minimum(pa, pb)[apart])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    painted = labels.ravel() >= 0
    roots, numbered = np.unique(parent[painted], return_inverse=True)
    regions = np.full(h * w, -1, np.int64)
    regions[painted] = numbered.reshape(-1)
    return regions.reshape(h, w), labels.ravel()[roots]


def _paint_of(colours: np.ndarray, kind: str, centre: np.ndarray) -> tuple[float, float]:
    """The a*b* a region was painted in, not its blends with what is around it: the mean of its
    colours within SAME_PAINT of its centre (not its blends with a neighbouring paint) -- on a copy,
    of the strongest of those (within 80 % of their 95th-percentile chroma), as a stroke also
    fades into the grey round it."""
    near = np.linalg.norm(colours - centre, axis=1) <= SAME_PAINT[kind]
    colours = colours[near] if near.any() else colours
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


def _between(c: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Whether colour c (2,) is a blend of p and each of q (k, 2): it lies across the segment from
    p to q, within BLEND of it (mixing in RGB bends the segment in a*b*)."""
    d = q - p
    t = ((c - p) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-9)
    off = np.linalg.norm(c - (p + t[:, None] * d), axis=-1)
    return (t >= 0) & (t <= 1) & (off <= BLEND)


def _absorb_rims(regions: np.ndarray, colour: np.ndarray, kind: str, passes: int = 8
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Join each rim, band, patch of noise and speck to the neighbouring region it belongs to
    (the rules are told where their constants are set), in passes, as joined regions grow;
    of the neighbours a region may join it joins the nearest in colour. `colour`: each region's
    a*b*. (regions relabelled, the kept ones)"""
    n = len(colour)
    chroma = np.linalg.norm(colour, axis=1)
    grey = np.zeros((1, 2), colour.dtype)
    for _ in range(passes):
        sizes = np.bincount(regions[regions >= 0], minlength=n)
        live = np.flatnonzero(sizes)
        if len(live) <= 1:
            break
        around = _neighbours(regions)
        inner = np.logical_and.reduce([r == regions for r in around[:4]]) & (regions >= 0)
        inner_share = np.bincount(regions[inner], minlength=n) / np.maximum(sizes, 1)
        at_edge = np.zeros(n, bool)  # touching the unpainted part
        at_edge[regions[np.logical_or.reduce([r == -1 for r in around]) & (regions >= 0)]] = True
        own, other, contact = _contacts(regions, around, n)
        first = np.searchsorted(own, np.arange(n + 1))  # own is sorted: region r's pairs are first[r]:first[r+1]
        target = np.full(n, -1, np.int64)
        biggest = live[np.argmax(sizes[live])]  # the largest region is paint whatever its shape
        for r in live[live != biggest]:
            nbrs, touch = other[first[r]:first[r + 1]], contact[first[r]:first[r + 1]]
            upper = sizes[nbrs] > sizes[r]
            if kind == "copy":
                upper |= chroma[nbrs] > chroma[r]
            near = np.linalg.norm(colour[nbrs] - colour[r], axis=1) <= 2 * SAME_PAINT[kind]
            partners = np.concatenate([colour[nbrs], grey])  # grey last
            # (neighbour, partner): whether its colour is a blend of that neighbour's and the partner's
            between = np.array([_between(colour[r], colour[m], partners) for m in nbrs], bool).reshape(len(nbrs), len(partners))
            blend = between.any(axis=1)
            fits = upper & (near | blend)
            edge = max((1 - inner_share[r]) * sizes[r], 1)  # its pixels not inner
            speck = sizes[r] < LEAST_PAINT[kind] or (
                kind == "copy" and sizes[r] < FAINT_SPECK and chroma[r] < 2 * PAINTED_CHROMA)
            rim = inner_share[r] < RIM_INNER[kind] and touch[fits].sum() >= RIM_CONTACT[kind] * sizes[r]
            if kind == "layer":
                patch = touch[fits & near].sum() >= RIM_CONTACT[kind] * sizes[r]
                if at_edge[r] and sizes[r] < EDGE_SPECK:
                    fits, rim = upper, True
                rim |= patch
            else:
                step = chroma[nbrs] - chroma[r]  # a band is one class fainter; a pale stroke, often more
                fade = (step > 0) & (step <= 2 * SAME_PAINT[kind]) & between[:, -1]
                if touch[fade].sum() >= FADE_CONTACT * edge and 2 * sizes[r] / edge <= FADE_WIDTH:
                    fits, rim = fade, True
            if fits.any() and (rim or speck):
                target[r] = nbrs[fits][np.argmin(np.linalg.norm(colour[nbrs[fits]] - colour[r], axis=1))]
            elif speck:
                target[r] = -2  # a speck of noise on its own: unpainted
        if not (target != -1).any():
            break
        regions = _follow(regions, target, sizes)
    return regions, np.unique(regions[regions >= 0])


def _contacts(regions: np.ndarray, around: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pair of touching regions (sorted by the first) and how many of the first's pixels touch
    the second."""
    flat = regions.ravel()
    keys = []
    for r in around:
        r = r.ravel()
        meets = np.flatnonzero((flat >= 0) & (r >= 0) & (r != flat))
        keys.append(meets * n + r[meets])  # (pixel, the region it touches)
    touching = np.unique(np.concatenate(keys))
    pairs, counts = np.unique(flat[touching // n] * n + touching % n, return_counts=True)
    return pairs // n, pairs % n, counts


def _follow(regions: np.ndarray, target: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Relabel each region as the region its chain of targets ends at. target: -1 stays, -2 is
    unpainted, else the region it joins; a cycle ends at its largest member, and a chain that
    runs into an unpainted speck stops before it."""
    end = np.arange(len(target))
    for r in np.flatnonzero(target != -1):
        seen = [r]
        while target[seen[-1]] >= 0 and target[seen[-1]] not in seen:
            seen.append(target[seen[-1]])
        last = seen[-1]
        if target[last] >= 0:  # a cycle
            cycle = seen[seen.index(target[last]):]
            end[r] = max(cycle, key=lambda c: sizes[c])
        elif target[last] == -2:
            end[r] = -1 if last == r else seen[-2]
        else:
            end[r] = last
    return np.where(regions >= 0, end[regions.clip(min=0)], -1)
