"""CIE Lab conversion (sRGB, D65) and the normalisation the networks see.

Networks work on L in [-1, 1] (L* / 50 - 1) and ab in [-1, 1] (ab / AB_SCALE).
Conversions run in float32 on whatever device the tensor lives on.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

# 110 covers the sRGB gamut's a*b* extent (about -86..98 a*, -108..95 b*).
AB_SCALE = 110.0
# The range kornia and the CIE definition allow for a*, b*; clipped before conversion back.
AB_MIN, AB_MAX = -128.0, 127.0
# Side of the a*b* grid cells a classifying model chooses among (Zhang et al. 2016 use 10).
AB_BIN_SPACING = 10.0
# Chroma (a*b* units) at which `saturate` gives half of its full extra gain. A model's faint
# tints are its unsure guesses and stay nearly as they are; its strong colours get the boost.
# Chosen on bsds-val (docs/benchmarks.md): 10-40 beat a constant gain; 20 was best in between.
SATURATION_KNEE = 20.0
# Predicted chroma (a*b* units) spanned by a strength profile's chroma nodes, if it has any;
# stronger predictions take the last node's weight. Most of what a regression model predicts lies below.
PROFILE_CHROMA_SPAN = 40.0
# Mean chroma (a*b* units) above which a photo already has colour: the JPEG noise of a grey scan
# stays below 1, toned (sepia, selenium) and colour prints reach 5-20.
COLOUR_CHROMA = 3.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3, H, W) -> Lab with L* in [0, 100]."""
    # Imported here: importing kornia takes ~0.15 s, and colouring a photo needs none of it
    # (upsample.py converts with kornia's constants, checked against these functions by the tests).
    from kornia.color import rgb_to_lab as _rgb_to_lab

    return _rgb_to_lab(rgb.clamp(0.0, 1.0))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> sRGB in [0, 1]; ab is clipped to its valid range first, RGB to [0, 1] after."""
    L = lab[..., :1, :, :].clamp(0.0, 100.0)
    ab = lab[..., 1:, :, :].clamp(AB_MIN, AB_MAX)
    from kornia.color import lab_to_rgb as _lab_to_rgb  # see rgb_to_lab

    return _lab_to_rgb(torch.cat([L, ab], dim=-3), clip=True)


def rgb_to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (..., 3, H, W) -> L* in [0, 100] (..., 1, H, W)."""
    return rgb_to_lab(rgb)[..., :1, :, :]


def grey_to_rgb(L: torch.Tensor) -> torch.Tensor:
    """L* (..., 1, H, W) -> the neutral grey sRGB image with that lightness."""
    return lab_to_rgb(torch.cat([L, torch.zeros_like(L).expand(*L.shape[:-3], 2, *L.shape[-2:])], dim=-3))


def has_colour(pixels: np.ndarray) -> bool:
    """Whether (H, W, 3) uint8/uint16 sRGB pixels carry visible colour (a toned or colour print).

    Measured on at most ~65k evenly spaced pixels.
    """
    step = max(1, int((pixels.shape[0] * pixels.shape[1] / 65536) ** 0.5))
    sample = pixels[::step, ::step].astype(np.float32) / float(np.iinfo(pixels.dtype).max)
    return float(_chroma(torch.from_numpy(sample).permute(2, 0, 1)).mean()) > COLOUR_CHROMA


# kornia's Lab arithmetic, written out for what runs on every photo (the L* tables and the colour
# check of `upsample.py`, `_chroma` here): importing kornia costs more than colouring a photo's L*.
# The tests compare each use with kornia's own conversion.
RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> linear RGB (the sRGB decoding curve), elementwise."""
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)


def lab_f(t: torch.Tensor) -> torch.Tensor:
    """CIE Lab's f(t) of a white-relative X, Y or Z (L* = 116 f(Y) - 16), elementwise."""
    return torch.where(t > 0.008856, t.clamp_min(0.008856).pow(1.0 / 3.0), 7.787 * t + 4.0 / 29.0)


def _chroma(rgb: torch.Tensor) -> torch.Tensor:
    """Lab chroma of sRGB in [0, 1] (3, ...), as `rgb_to_lab` gives it, without kornia."""
    matrix = torch.tensor(RGB_TO_XYZ) / torch.tensor(D65_WHITE)[:, None]
    f = lab_f(torch.einsum("ij,j...->i...", matrix, srgb_to_linear(rgb)))
    return torch.hypot(500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2]))


def normalize_L(L: torch.Tensor) -> torch.Tensor:
    return L / 50.0 - 1.0


def denormalize_L(L_norm: torch.Tensor) -> torch.Tensor:
    return (L_norm + 1.0) * 50.0


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    return ab / AB_SCALE


def denormalize_ab(ab_norm: torch.Tensor) -> torch.Tensor:
    return ab_norm * AB_SCALE


def saturate(ab: torch.Tensor, saturation: float, knee: float = SATURATION_KNEE, *,
             L: torch.Tensor | None = None, profile: torch.Tensor | None = None) -> torch.Tensor:
    """Scale the chroma of a*b* (..., 2, H, W), in real Lab units, keeping each pixel's hue.

    Above 1, chroma C becomes C * (1 + (s - 1) * C / (C + knee)) with s = `saturation`: near-grey
    pixels barely move, strong colours are scaled by up to s. Below 1, every chroma is scaled
    by `saturation`, so 0 is grey (the knee would leave faint tints at 0). Monotonic in C, so
    colours keep their order of strength. Results may leave the sRGB gamut; the full-resolution
    composition maps them back.

    `profile` (J, K) or (J, K, M), with the pixels' L* (..., 1, H, W), shares the strength above 1
    out by lightness, predicted hue and, with M, predicted chroma: a pixel's s is
    1 + (saturation - 1) * w, where w interpolates the table linearly between J lightness nodes
    spread over L* 0..100, K hue nodes at the a*b* angles 360°·k/K (circularly) and M chroma nodes
    spread over 0..PROFILE_CHROMA_SPAN, so s changes smoothly across the photo. A regression model
    is surer of some colours (sky, foliage, whatever it predicts strongly) than of others (the
    faint warm average it gives anything it cannot tell), and the profile boosts the sure ones
    more (`strength_profile`). Weights never fall with chroma, so the mapping stays monotonic.
    """
    if saturation < 0:
        raise ValueError(f"saturation must be >= 0, not {saturation}")
    if saturation == 1.0:
        return ab
    if saturation < 1.0:
        return ab * saturation
    chroma = torch.linalg.vector_norm(ab, dim=-3, keepdim=True)
    extra = saturation - 1.0
    if profile is not None:
        if L is None:
            raise ValueError("a strength profile needs the pixels' L*")
        extra = extra * profile_weight(profile, L, ab, chroma)
    return ab * (1.0 + extra * chroma / (chroma + knee))


def check_strength_profile(profile) -> torch.Tensor:
    """A (J, K) or (J, K, M) table of finite weights >= 0 as float32: J >= 1 lightness nodes, K >= 2
    hue nodes and M >= 2 chroma nodes, along which the weights must not fall (see `saturate`)."""
    try:
        table = torch.tensor(profile, dtype=torch.float32, device="cpu")  # (models are built on "meta")
    except (TypeError, ValueError, RuntimeError):
        raise ValueError("strength_profile must be a table (nested lists of equal length) of numbers") from None
    if table.dim() not in (2, 3) or table.shape[0] < 1 or table.shape[1] < 2 or table.shape[2:3] == (1,):
        raise ValueError("strength_profile must have lightness rows of at least 2 hue weights (or of "
                         f"hue rows of at least 2 chroma weights), not shape {tuple(table.shape)}")
    if not (torch.isfinite(table).all() and (table >= 0).all()):
        raise ValueError("strength_profile weights must be finite and >= 0")
    if table.dim() == 3 and (table.diff(dim=2) < 0).any():
        raise ValueError("strength_profile weights must not fall with chroma (a stronger prediction "
                         "would come out weaker)")
    return table


def _nodes(position: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower node, upper node and fraction between them of `position` in 0..1 on `count` nodes."""
    if count == 1:
        zero = torch.zeros_like(position, dtype=torch.long)
        return zero, zero, torch.zeros_like(position)
    scaled = position.clamp(0, 1) * (count - 1)
    lower = scaled.floor().clamp(max=count - 2)
    return lower.long(), lower.long() + 1, scaled - lower


def profile_weight(profile: torch.Tensor, L: torch.Tensor, ab: torch.Tensor,
                   chroma: torch.Tensor | None = None) -> torch.Tensor:
    """(..., 1, H, W) weight of each pixel in a (J, K) or (J, K, M) table (see `saturate`);
    `chroma`, the norm of `ab` (..., 1, H, W), when the caller has it already."""
    J, K = profile.shape[:2]
    M = profile.shape[2] if profile.dim() == 3 else 1
    table = profile.to(ab.device, ab.dtype).flatten()
    a, b = ab[..., 0:1, :, :], ab[..., 1:2, :, :]
    hue = torch.atan2(b, a) * (K / (2 * math.pi)) % K
    k0 = hue.floor()
    t = hue - k0
    k0 = k0.long() % K
    k1 = (k0 + 1) % K
    j0, j1, u = _nodes(L.to(ab.dtype) / 100, J)
    if chroma is None:
        chroma = torch.hypot(a, b)
    m0, m1, v = _nodes(chroma / PROFILE_CHROMA_SPAN, M)

    def at(j: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        cell = (j * K + k) * M
        return (1 - v) * table[cell + m0] + v * table[cell + m1]

    return ((1 - u) * ((1 - t) * at(j0, k0) + t * at(j0, k1))
            + u * ((1 - t) * at(j1, k0) + t * at(j1, k1)))


def ab_bin_centres(spacing: float = AB_BIN_SPACING) -> torch.Tensor:
    """(Q, 2) a*b* centres of the grid cells (side `spacing`) that 8-bit sRGB colours fall in.

    Q = 261 for spacing 10. The faces of the RGB cube suffice: a solid's shadow on the ab
    plane is its surface's shadow. Cached; computed on the CPU whatever the default device.
    """
    return _ab_bin_centres(float(spacing)).clone()


@lru_cache(maxsize=4)
def _ab_bin_centres(spacing: float) -> torch.Tensor:
    with torch.device("cpu"):
        levels = torch.arange(256, dtype=torch.float32) / 255.0
        u, v = (t.reshape(-1) for t in torch.meshgrid(levels, levels, indexing="ij"))
        faces = []
        for fixed in range(3):
            for value in (0.0, 1.0):
                rest = iter((u, v))
                faces.append(torch.stack([torch.full_like(u, value) if c == fixed else next(rest) for c in range(3)]))
        ab = rgb_to_lab(torch.cat(faces, dim=1)[:, None])[1:].reshape(2, -1)
        cells = torch.unique(torch.round(ab / spacing).T, dim=0)  # sorted by a*, then b*
        return cells * spacing
