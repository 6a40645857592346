"""Colour hints: "this point was red", spread over its region of the photo.

A family often knows a few true colours (a uniform, a car, a dress). A hint names a point and
a colour; the hint's a*b* replace the model's around that point and fade with the *geodesic*
distance from it, measured over the photo's lightness: each pixel step costs its length plus
the change in L* it crosses, so a hint fills the surface it was put on and stops at that
surface's edges instead of leaking into the background (the idea of Levin et al.,
"Colorization using Optimization", 2004, and Criminisi et al.'s geodesic image distances).

    hint = parse_hint("40%,25%:#b22222")            # or pixels: "812,430:navy"
    ab = apply_hints(ab, L, [hint])                  # at the working size, before upsampling

A hint image does the same for strokes painted in an image editor: every painted pixel is a
seed, and each paint spreads as one hint (`PaintedHint`, read by `hint_image.read_hint_image`).

Hint syntax: `X,Y:COLOUR[:REACH]`. X, Y are pixels of the upright photo (as viewers show it)
or percentages of its width and height; COLOUR is `#rrggbb` or a CSS colour name; REACH is
how far the hint spreads over a flat surface, a percentage of the photo's longer side
(default 30%). Several hints blend by their closeness; where none reaches, the model's colour
stays.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

import torch
from PIL import ImageColor

from .color import rgb_to_lab
from .errors import UsageError

# Chosen by eye on scikit-image's `astronaut` (a textured suit, a wall, a face, a flag; the README
# shows it): a hint on the suit fills most of the suit and stops at the face and, mostly, the wall.
DEFAULT_REACH = 0.3  # of the longer side: how far a hint spreads over a flat surface
EDGE_COST = 3.0  # px of distance per unit of L* crossed: an edge of 20 L* is as far as 60 px
EDGE_TOLERANCE = 3.0  # L* change per pixel step that costs nothing (fabric folds, grain)
FALLOFF = 4.0  # exponent of the fade with distance: higher keeps full strength longer, then drops faster
BLUR = 1.0  # Gaussian sigma (working-size px) of the L* that distances are measured on
# L* per px (of the blurred L*) above which a pixel is part of a strong edge, and standing on it
# costs EDGE_COST per unit above. The per-step cost alone lets a path creep along a curved edge in
# steps each under EDGE_TOLERANCE (a halo of the hint's colour outside a disc); at 15 the suit's
# folds in the README's example stay free (its CIEDE2000 figures unchanged) and a disc's edge holds.
EDGE_STEEPNESS = 15.0
_SEED_RADIUS = 0.01  # of the longer side: the hint's own spot, at full strength

_NUMBER = r"(\d+(?:\.\d+)?)(%?)"
_SYNTAX = re.compile(rf"^\s*{_NUMBER}\s*,\s*{_NUMBER}\s*:\s*([^:]+?)\s*(?::\s*(\d+(?:\.\d+)?)%?\s*)?$")


@dataclass(frozen=True)
class Hint:
    x: float  # pixels, or a fraction of the width when `relative`
    y: float
    relative: bool
    rgb: tuple[int, int, int]
    reach: float = DEFAULT_REACH  # fraction of the longer side
    text: str = ""  # as the user wrote it (for the output's note)

    def __post_init__(self) -> None:
        # The checks `parse_hint` makes on text, for a Hint made in Python: a zero reach would
        # divide by zero (NaN colours), a colour outside 0..255 is no colour.
        name = self.text or f"Hint({self.x!r}, {self.y!r})"
        coords = (self.x, self.y)
        if not all(isinstance(c, numbers.Real) and not isinstance(c, bool) and math.isfinite(c) and c >= 0
                   for c in coords):
            raise UsageError(f"hint {name}: x and y must be numbers >= 0")
        if self.relative and max(coords) > 1:
            raise UsageError(f"hint {name}: relative positions are fractions of the photo, at most 1")
        if (not isinstance(self.rgb, (tuple, list)) or len(self.rgb) != 3
                or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c <= 255 for c in self.rgb)):
            raise UsageError(f"hint {name}: the colour must be three whole numbers 0..255, not {self.rgb!r}")
        object.__setattr__(self, "rgb", tuple(int(c) for c in self.rgb))  # frozen: hashable, plain ints
        if not (isinstance(self.reach, numbers.Real) and not isinstance(self.reach, bool) and 0 < self.reach <= 1):
            raise UsageError(f"hint {name}: the reach must be above 0 and at most 1 (a share of the longer side)")
        if not self.text:  # made in Python: the note and messages still say which hint it is
            object.__setattr__(self, "text", self.canonical_text())

    def canonical_text(self) -> str:
        """The hint as `--hint` takes it (`50%,25%:#b22222:10%`), which parse_hint reads back."""
        x, y = (self.x * 100, self.y * 100) if self.relative else (self.x, self.y)
        unit = "%" if self.relative else ""
        reach = "" if self.reach == DEFAULT_REACH else f":{_number(self.reach * 100)}%"
        return f"{_number(x)}{unit},{_number(y)}{unit}:#{bytes(self.rgb).hex()}{reach}"

    def position(self, width: int, height: int) -> tuple[float, float]:
        """(x, y) as fractions of a (width, height) photo: the centre of the pixel the hint names
        (anywhere in a pixel means that pixel; 100% means the last one, not the edge beyond it,
        which on a tiny photo lies far from every pixel). ValueError when outside the photo."""
        px, py = (self.x * width, self.y * height) if self.relative else (self.x, self.y)
        if not (0.0 <= px <= width and 0.0 <= py <= height) or (not self.relative and (px == width or py == height)):
            raise ValueError(f"hint {self.text!r} is outside the {width}x{height} photo")
        return (min(math.floor(px), width - 1) + 0.5) / width, (min(math.floor(py), height - 1) + 0.5) / height

    def check_fits(self, width: int, height: int) -> None:
        """ValueError when the hint cannot go on a (width, height) photo: its point is outside."""
        self.position(width, height)

    def seeds(self, guide: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Where the hint starts at full strength on the working-size blurred L* `guide` (h, w) of a
        (width, height) photo: the spot around its point, but only the surface the point is on (a
        hint put next to an edge must not seed the other side at full strength: it would flood it)."""
        h, w = guide.shape
        fx, fy = self.position(width, height)
        cx, cy = min(fx * w, w - 0.5), min(fy * h, h - 0.5)
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        radius = max(1.0, _SEED_RADIUS * max(h, w))
        same_surface = (guide - guide[int(cy), int(cx)]).abs() <= EDGE_TOLERANCE
        seeds = ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius**2) & same_surface
        seeds[int(cy), int(cx)] = True  # a tiny working size still gets its pixel
        return seeds

    def ab(self) -> tuple[float, float]:
        rgb = torch.tensor(self.rgb, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
        lab = rgb_to_lab(rgb)[0, :, 0, 0]
        return float(lab[1]), float(lab[2])


@dataclass(frozen=True, eq=False)
class PaintedHint:
    """One paint of a hint image (`hint_image.read_hint_image`): the pixels it was painted on, and its a*b*."""

    mask: torch.Tensor  # (rows, cols) bool: where this paint is, on the hint image's (perhaps reduced) grid
    colour_ab: tuple[float, float]
    reach: float = DEFAULT_REACH  # fraction of the longer side, as a point hint's
    text: str = "painted hint"  # the image's name and hash, the same for each of its paints: what the note names
    size: tuple[int, int] | None = None  # (width, height) of the hint image as read (default: the mask's)

    def __post_init__(self) -> None:
        # What `read_hint_image` guarantees, for one made in Python: a bad value would colour the
        # photo black (NaN) or fail deep inside the spreading.
        if not (isinstance(self.mask, torch.Tensor) and self.mask.dtype == torch.bool and self.mask.dim() == 2
                and min(self.mask.shape) >= 1):
            raise UsageError(f"{self.text}: the mask must be a 2-D torch bool tensor with at least one pixel")
        colour = self.colour_ab
        if not (isinstance(colour, (tuple, list)) and len(colour) == 2 and all(
                isinstance(c, numbers.Real) and not isinstance(c, bool) and math.isfinite(c) and abs(c) <= 128
                for c in colour)):
            raise UsageError(f"{self.text}: the colour must be two finite a*b* numbers within ±128, not {colour!r}")
        object.__setattr__(self, "colour_ab", (float(colour[0]), float(colour[1])))
        if not (isinstance(self.reach, numbers.Real) and not isinstance(self.reach, bool) and 0 < self.reach <= 1):
            raise UsageError(f"{self.text}: the reach must be above 0 and at most 1 (a share of the longer side)")
        size = self.size if self.size is not None else (self.mask.shape[1], self.mask.shape[0])
        if not (isinstance(size, (tuple, list)) and len(size) == 2
                and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in size)):
            raise UsageError(f"{self.text}: the size must be (width, height) in whole pixels, not {size!r}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))

    def check_fits(self, width: int, height: int) -> None:
        """ValueError unless the hint image has the photo's shape (at any scale)."""
        cols, rows = self.size
        if abs(math.log((cols / rows) / (width / height))) > math.log1p(HINT_IMAGE_SHAPE_TOLERANCE):
            raise ValueError(f"hint {self.text} is {cols}x{rows}, not the shape of the {width}x{height} photo: "
                             "paint on a copy of the photo (or a layer of its size)")

    def seeds(self, guide: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The painted pixels on the working grid (h, w): a working pixel any stroke touches, so a
        stroke thinner than a working pixel still counts."""
        self.check_fits(width, height)
        painted = self.mask.float()[None, None]
        return torch.nn.functional.adaptive_max_pool2d(painted, tuple(guide.shape))[0, 0] > 0

    def ab(self) -> tuple[float, float]:
        return self.colour_ab


# How far a hint image's width/height may differ from the photo's (either way): a copy scaled
# down keeps its shape to within a pixel of rounding.
HINT_IMAGE_SHAPE_TOLERANCE = 0.02


def parse_hint(text: str, *, prefix: str = "--") -> Hint:
    """`X,Y:COLOUR[:REACH]` -> Hint; UsageError saying what is wrong otherwise, naming the command
    line's --hint (prefix "--") or the Python API's hint (prefix "")."""
    name = f"{prefix}hint"
    # The text goes into the output's note, where EXIF holds ASCII: Unicode digits (Arabic-Indic,
    # fullwidth), which \d and Pillow's rgb() read as numbers, came out garbled there.
    if not (text.strip().isascii() and text.strip().isprintable()):
        raise UsageError(f"{name} {text!r}: use plain ASCII letters, digits and spaces, e.g. 120,80:#b22222")
    match = _SYNTAX.match(text)
    if not match:
        raise UsageError(f"{name} {text!r}: expected X,Y:COLOUR[:REACH%], e.g. 120,80:#b22222 or 40%,25%:navy")
    x, x_pct, y, y_pct, colour, reach = match.groups()
    if bool(x_pct) != bool(y_pct):
        raise UsageError(f"{name} {text!r}: give both coordinates in pixels or both in percent")
    try:
        rgb = ImageColor.getrgb(colour)[:3]
    except ValueError:
        raise UsageError(f"{name} {text!r}: unknown colour {colour!r} (use #rrggbb or a CSS name)") from None
    relative = bool(x_pct)
    fx, fy = (float(x) / 100, float(y) / 100) if relative else (float(x), float(y))
    if relative and (fx > 1 or fy > 1):
        raise UsageError(f"{name} {text!r}: percentages must be at most 100")
    spread = DEFAULT_REACH if reach is None else float(reach) / 100
    if not 0 < spread <= 1:
        raise UsageError(f"{name} {text!r}: the reach must be above 0% and at most 100%")
    return Hint(fx, fy, relative, tuple(int(c) for c in rgb), spread, text.strip())


def _number(value: float) -> str:
    """A coordinate or percentage as the hint syntax takes it: decimals, never an exponent."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def apply_hints(ab: torch.Tensor, L: torch.Tensor, hints: list[Hint | PaintedHint],
                photo_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The model's ab (2, h, w) with the hints blended in; L (1, h, w) is L* at the same size.

    `photo_size` = (width, height) of the full photo, for hints given in pixels (default: the
    working size). Returns ab unchanged when there are no hints.
    """
    if not hints:
        return ab
    _, h, w = ab.shape
    width, height = photo_size or (w, h)
    longer = max(h, w)
    guide = _blur(L[0].float(), BLUR)
    seeds = torch.stack([hint.seeds(guide, width, height) for hint in hints])
    reach = torch.tensor([hint.reach * longer for hint in hints]).view(-1, 1, 1)
    # beyond 3 reaches a hint's weight is below e^-9: no need to measure further
    distance = geodesic_distance(guide, seeds, EDGE_COST, EDGE_TOLERANCE, cutoff=3.0 * float(reach.max()),
                                 toll=_edge_toll(guide))
    weight = torch.exp(-((distance / reach) ** FALLOFF))  # (K, h, w), 1 on the seed
    hint_ab = torch.tensor([hint.ab() for hint in hints]).view(-1, 2, 1, 1)  # (K, 2, 1, 1)
    blended = (weight[:, None] * hint_ab).sum(0) / weight.sum(0).clamp_min(1e-12)
    strength = 1.0 - torch.prod(1.0 - weight, dim=0)  # where any hint is sure, it rules
    return strength * blended + (1.0 - strength) * ab


def _edge_toll(L: torch.Tensor) -> torch.Tensor:
    """What entering each pixel costs by the steepness of L* there, whatever the direction of the
    step: a path can cross a curved edge in steps each under the tolerance, creeping along it,
    but not without standing on the edge's steep pixels."""
    padded = torch.nn.functional.pad(L[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    gx = (padded[1:-1, 2:] - padded[1:-1, :-2]) / 2
    gy = (padded[2:, 1:-1] - padded[:-2, 1:-1]) / 2
    return EDGE_COST * (torch.hypot(gx, gy) - EDGE_STEEPNESS).clamp_min(0.0)


def _blur(L: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return L
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    image = torch.nn.functional.pad(L[None, None], (radius, radius, radius, radius), mode="replicate")
    image = torch.nn.functional.conv2d(image, kernel.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(image, kernel.view(1, 1, -1, 1))[0, 0]


def geodesic_distance(L: torch.Tensor, seeds: torch.Tensor, edge_cost: float = EDGE_COST,
                      tolerance: float = EDGE_TOLERANCE, cutoff: float = float("inf"),
                      toll: torch.Tensor | None = None) -> torch.Tensor:
    """Shortest-path distance (K, h, w) from each seed mask (K, h, w) over the image L* (h, w).

    A step to one of the 8 neighbours costs its length plus `edge_cost` x (|change in L*| -
    `tolerance`, if positive), plus the mean of the two pixels' `toll` (h, w) when given.
    Computed by raster sweeps, repeated until nothing shrinks: top-down and bottom-up over rows,
    then left-right and right-left over columns; each line takes what the line before offers,
    then relaxes along itself exactly, in both directions, with a running minimum. Distances
    over `cutoff` are returned as infinite.
    """
    def crossing(change: torch.Tensor) -> torch.Tensor:
        return edge_cost * (change.abs() - tolerance).clamp_min(0.0)

    L = L.float()
    toll = torch.zeros_like(L) if toll is None else toll.float()
    distance = torch.where(seeds, 0.0, float("inf")).float()
    for _ in range(_MAX_PASSES):
        before = distance.clone()
        _sweep_rows(distance, L, crossing, toll)
        _sweep_rows(distance.transpose(1, 2), L.T, crossing, toll.T)  # columns, through a view
        if torch.allclose(distance, before, rtol=0.0, atol=0.01):
            break
    return torch.where(distance > cutoff, float("inf"), distance)


def _sweep_rows(distance: torch.Tensor, L: torch.Tensor, crossing, toll: torch.Tensor) -> None:
    """One top-down and one bottom-up sweep over the rows of `distance` (K, h, w), in place."""
    h = L.shape[0]
    # C[y, x]: the cost of walking along row y from x = 0 to x
    steps = 1.0 + crossing(L[:, 1:] - L[:, :-1]) + 0.5 * (toll[:, 1:] + toll[:, :-1])
    C = torch.cat([torch.zeros(h, 1), steps.cumsum(dim=1)], dim=1)
    for rows in (range(h), range(h - 1, -1, -1)):
        previous = None
        for y in rows:
            row = distance[:, y]
            if previous is not None:
                row = torch.minimum(row, _from_row(previous, L[y], L[y - rows.step], crossing,
                                                   toll[y], toll[y - rows.step]))
            row = torch.minimum(row, torch.cummin(row - C[y], dim=1).values + C[y])  # rightwards
            row = torch.minimum(row, torch.cummin((row + C[y]).flip(1), dim=1).values.flip(1) - C[y])  # leftwards
            distance[:, y] = row
            previous = row


_DIAGONAL = math.sqrt(2.0)
# Enough on photos (astronaut at 256 px: exact to 0.1%); a maze-like path that doubles back
# more often is measured a little long, which only fades its hint a little sooner.
_MAX_PASSES = 3


def _from_row(previous: torch.Tensor, L_row: torch.Tensor, L_previous: torch.Tensor, crossing,
              toll_row: torch.Tensor, toll_previous: torch.Tensor) -> torch.Tensor:
    """Best arrival (K, w) on a row from its neighbour row's distances `previous` (K, w)."""
    inf = torch.full_like(previous[:, :1], float("inf"))
    straight = previous + 1.0 + crossing(L_row - L_previous) + 0.5 * (toll_row + toll_previous)
    from_left = torch.cat([inf, previous[:, :-1] + _DIAGONAL + crossing(L_row[1:] - L_previous[:-1])
                           + 0.5 * (toll_row[1:] + toll_previous[:-1])], 1)
    from_right = torch.cat([previous[:, 1:] + _DIAGONAL + crossing(L_row[:-1] - L_previous[1:])
                            + 0.5 * (toll_row[:-1] + toll_previous[1:]), inf], 1)
    return torch.minimum(straight, torch.minimum(from_left, from_right))
