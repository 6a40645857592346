"""CIE Lab conversion (sRGB, D65) and the normalisation the networks see.

Networks work on L in [-1, 1] (L* / 50 - 1) and ab in [-1, 1] (ab / AB_SCALE).
Conversions run in float32 on whatever device the tensor lives on.
"""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb as _lab_to_rgb
from kornia.color import rgb_to_lab as _rgb_to_lab

# 110 covers the sRGB gamut's a*b* extent (about -86..98 a*, -108..95 b*).
AB_SCALE = 110.0
# The range kornia and the CIE definition allow for a*, b*; clipped before conversion back.
AB_MIN, AB_MAX = -128.0, 127.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3, H, W) -> Lab with L* in [0, 100]."""
    return _rgb_to_lab(rgb.clamp(0.0, 1.0))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> sRGB in [0, 1]; ab is clipped to its valid range first, RGB to [0, 1] after."""
    L = lab[..., :1, :, :].clamp(0.0, 100.0)
    ab = lab[..., 1:, :, :].clamp(AB_MIN, AB_MAX)
    return _lab_to_rgb(torch.cat([L, ab], dim=-3), clip=True)


def rgb_to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (..., 3, H, W) -> L* in [0, 100] (..., 1, H, W)."""
    return rgb_to_lab(rgb)[..., :1, :, :]


def grey_to_rgb(L: torch.Tensor) -> torch.Tensor:
    """L* (..., 1, H, W) -> the neutral grey sRGB image with that lightness."""
    return lab_to_rgb(torch.cat([L, torch.zeros_like(L).expand(*L.shape[:-3], 2, *L.shape[-2:])], dim=-3))


def normalize_L(L: torch.Tensor) -> torch.Tensor:
    return L / 50.0 - 1.0


def denormalize_L(L_norm: torch.Tensor) -> torch.Tensor:
    return (L_norm + 1.0) * 50.0


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    return ab / AB_SCALE


def denormalize_ab(ab_norm: torch.Tensor) -> torch.Tensor:
    return ab_norm * AB_SCALE
