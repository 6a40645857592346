"""Full-resolution output: the photo's own luminance, chroma brought up edge-aware.

The model predicts chroma (a*, b* in CIE Lab units) at a small working size. The output keeps
the input's L* at every pixel and upsamples the chroma with the fast guided filter (He & Sun,
"Fast Guided Filter", 2015): the filter's linear coefficients A, b are fitted at low resolution
with low-res L* as the guide, upsampled bilinearly, and applied to full-resolution L*:

    ab_full = A_up * L_full + b_up

so chroma edges snap to the luminance edges of the real photo instead of being smeared.
Colours that fall outside sRGB lose chroma (never lightness) until they fit.

Everything after the low-resolution fit runs on row tiles, so a 100-megapixel photo needs
memory for its pixels, the output, one float32 L* plane and one tile of temporaries (~1.4 GB in
all for the whole command, docs/benchmarks.md).

Typical use, computing L* once:

    L_full = luminance(pixels)
    L_low = working_L(pixels, (h, w), luminance_full=L_full)  # the model's input
    rgb = compose_full_resolution(pixels, ab_low, luminance_full=L_full)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from colorize_cli.color import AB_MAX, AB_MIN, D65_WHITE, RGB_TO_XYZ, lab_f, srgb_to_linear

# Guided-filter defaults for L* in 0..100 at a working size of a few hundred pixels.
DEFAULT_RADIUS = 2  # box radius in low-resolution pixels (5x5 window)
DEFAULT_EPS = 10.0  # L*^2: windows whose L* varies by more than ~3 units count as edges
# Pixels per row tile of the L* computation (a colour tile needs ~16 bytes of temporaries per pixel).
_TILE_PIXELS = 1 << 21
_GAMUT_CHUNK = 1 << 18  # pixels per gamut-mapping chunk
# Pixels per tile of the final colour conversion: its ~20 float32 temporaries stay in cache.
_COMPOSE_TILE_PIXELS = 1 << 18
_GAMUT_STEPS = 8  # bisection steps on the chroma factor: within 1/256 of the gamut boundary
_GAMUT_TOL = 1e-6  # linear-RGB overshoot still counted as in gamut (float32 error; below 1/65535 in sRGB)


def luminance(pixels: np.ndarray, *, tile_rows: int | None = None) -> np.ndarray:
    """CIE L* (float32, (H, W), 0..100) of (H, W, 3) uint8/uint16 sRGB pixels, row tile by row tile.

    Looked up per code value rather than converted pixel by pixel: a grey tile (all three
    channels equal, as in most scans) takes one table lookup per pixel; a colour tile one
    lookup per channel for its share of Y, then L* from Y (not the a*, b* a full Lab conversion
    computes). Elementwise throughout, so the answer does not depend on the tile size.
    """
    height, width, _ = pixels.shape
    weighted, grey_L = _code_tables(np.dtype(pixels.dtype).str)
    out = np.empty((height, width), np.float32)
    rows = _tile_rows(width, tile_rows)
    for y in range(0, height, rows):
        tile = pixels[y : y + rows]
        if np.array_equal(tile[..., 0], tile[..., 1]) and np.array_equal(tile[..., 1], tile[..., 2]):
            # A contiguous copy of the channel first: lookups from a strided view are 2x slower.
            np.take(grey_L, np.ascontiguousarray(tile[..., 0]), out=out[y : y + rows])
        else:
            Y = weighted[0].take(tile[..., 0])
            Y += weighted[1].take(tile[..., 1])
            Y += weighted[2].take(tile[..., 2])
            out[y : y + rows] = _L_from_Y(torch.from_numpy(Y)).numpy()
    return out


# kornia's sRGB -> XYZ row for Y (D65, white Y = 1), so L* here agrees with color.rgb_to_lab.
_Y_FROM_LINEAR_RGB = RGB_TO_XYZ[1]


@lru_cache(maxsize=None)
def _code_tables(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """For every code of a uint8/uint16 channel: its share of Y in R, G and B ((3, codes)),
    and the L* of the grey pixel (v, v, v); float32, by kornia's formulas (not by kornia, whose
    import would cost a photo more time than the whole colouring of its L*; the tests compare)."""
    top = np.iinfo(np.dtype(dtype)).max
    codes = torch.arange(top + 1, dtype=torch.float64) / top
    weighted = srgb_to_linear(codes)[None, :] * torch.tensor(_Y_FROM_LINEAR_RGB, dtype=torch.float64)[:, None]
    grey_L = _L_from_Y(weighted.sum(dim=0))
    return weighted.float().numpy().copy(), grey_L.float().numpy().copy()


def _L_from_Y(Y: torch.Tensor) -> torch.Tensor:
    """CIE L* of relative luminance Y (white = 1), as kornia's Lab conversion computes it."""
    return lab_f(Y).mul_(116.0).sub_(16.0)


def working_L(
    pixels: np.ndarray, size: tuple[int, int], *, luminance_full: np.ndarray | None = None
) -> torch.Tensor:
    """The model's input: L* of `pixels` resized to `size` = (h, w), shape (1, h, w) float32.

    Downsizing averages areas (antialiased); pass `luminance_full` to reuse an L* plane.
    """
    L = luminance(pixels) if luminance_full is None else luminance_full
    return _resize_L(torch.from_numpy(L), size)


def _resize_L(L: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) L* -> (1, h, w). Area averaging when shrinking, bilinear when growing."""
    h, w = size
    x = L[None, None]
    if h <= L.shape[0] and w <= L.shape[1]:
        return F.interpolate(x, size=(h, w), mode="area")[0]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, averaging only pixels inside the image at the borders."""
    return F.avg_pool2d(x[None], 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)[0]


def guided_coefficients(
    ab_low: torch.Tensor, L_low: torch.Tensor, radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided-filter coefficients at low resolution: ab ~= A * L + b locally, each (2, h, w)."""
    ab_low, L_low = ab_low.float(), L_low.float()
    if L_low.shape[-2:] != ab_low.shape[-2:]:
        raise ValueError(f"L_low {tuple(L_low.shape)} and ab_low {tuple(ab_low.shape)} differ in size")
    L_low = L_low.reshape(1, *ab_low.shape[-2:])
    mean_L = _box(L_low, radius)
    mean_ab = _box(ab_low, radius)
    var_L = (_box(L_low * L_low, radius) - mean_L * mean_L).clamp_min(0.0)
    cov_L_ab = _box(L_low * ab_low, radius) - mean_L * mean_ab
    A = cov_L_ab / (var_L + eps)
    b = mean_ab - A * mean_L
    # Averaging the coefficients of every window covering a pixel is the filter's last step.
    return _box(A, radius), _box(b, radius)


def _source_index(
    out_size: int, in_size: int, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps for output positions start..stop-1 (align_corners=False, as F.interpolate).

    Computed per absolute position, so tiles of any height give the same result as one tile.
    """
    pos = torch.arange(start, stop, dtype=torch.float64)
    src = ((pos + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    lo = src.floor().long().clamp_max(in_size - 1)
    hi = (lo + 1).clamp_max(in_size - 1)
    return lo, hi, (src - lo).float()


def _upsample_rows(coef: torch.Tensor, out_h: int, out_w: int, y0: int, y1: int, cols) -> torch.Tensor:
    """Rows y0..y1-1 of `coef` (C, h, w) bilinearly resized to (C, out_h, out_w).

    Across first, on the few low-resolution rows the tile draws on, then down: the costly
    full-resolution pass is one interpolation instead of two. Each low-resolution row is
    widened the same way whatever the tile, so tiles stay seamless.
    """
    y_lo, y_hi, wy = _source_index(out_h, coef.shape[1], y0, y1)
    first, last = int(y_lo[0]), int(y_hi[-1])
    x_lo, x_hi, wx = cols
    band = coef[:, first : last + 1]
    band = torch.lerp(band[:, :, x_lo], band[:, :, x_hi], wx)
    return torch.lerp(band[:, y_lo - first], band[:, y_hi - first], wy[None, :, None])


def guided_upsample(
    ab_low: torch.Tensor,
    L_low: torch.Tensor,
    L_full: torch.Tensor,
    radius: int = DEFAULT_RADIUS,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Fast guided upsampling of ab (2, h, w) to the size of L_full ((H, W) or (1, H, W)) -> (2, H, W)."""
    L_full = L_full.float().reshape(L_full.shape[-2:])
    A, b = guided_coefficients(ab_low, L_low, radius, eps)
    height, width = L_full.shape
    coef = _upsample_rows(torch.cat([A, b]), height, width, 0, height, _source_index(width, A.shape[2], 0, width))
    return coef[:2] * L_full + coef[2:]


def gamut_map(L: torch.Tensor, ab: torch.Tensor, steps: int = _GAMUT_STEPS) -> torch.Tensor:
    """Scale the chroma of out-of-sRGB pixels towards 0 until they fit; L* is left untouched.

    L: (1, H, W), ab: (2, H, W), ab already within [AB_MIN, AB_MAX]. Returns the new ab.
    Hue is kept because a* and b* scale together; in-gamut pixels keep their ab exactly.
    """
    L_flat, ab_flat = L.reshape(-1), ab.reshape(2, -1)
    factor = torch.empty_like(L_flat)
    # Chunks small enough for the ~30 temporaries of the gamut test to stay in cache.
    for start in range(0, L_flat.numel(), _GAMUT_CHUNK):
        part = slice(start, start + _GAMUT_CHUNK)
        factor[part] = _chroma_factor(L_flat[part], ab_flat[0, part], ab_flat[1, part], steps)
    return (ab_flat * factor).reshape(ab.shape)


def _chroma_factor(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-pixel s in [0, 1] with (L, s*a, s*b) in gamut: 1 where already inside, else bisection."""
    factor = torch.ones_like(L)
    outside = (~_in_gamut(L, a, b)).nonzero().squeeze(1)
    if outside.numel() == 0:
        return factor
    factor[outside] = _bisect_chroma(L[outside], a[outside], b[outside], steps)
    return factor


def _bisect_chroma(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """The chroma factor of out-of-gamut pixels, to within 2**-steps of the gamut boundary.

    s = 0 (neutral grey) is always inside, so `lo` stays a valid answer throughout.
    """
    lo = torch.zeros_like(L)
    hi = torch.ones_like(L)
    for _ in range(steps):
        mid = (lo + hi) / 2
        fits = _in_gamut(L, a * mid, b * mid)
        lo = torch.where(fits, mid, lo)
        hi = torch.where(fits, hi, mid)
    return lo


# kornia's XYZ -> linear RGB matrix (D65), so the test agrees with color.lab_to_rgb.
_XYZ_TO_LINEAR_RGB = (
    (3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
    (-0.9692549499965682, 1.8759900014898907, 0.0415559265582928),
    (0.0556466391351772, -0.2040413383665112, 1.0573110696453443),
)


def _in_gamut(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether each Lab colour is inside sRGB (same-shape tensors -> bool)."""
    return _inside(_lab_to_linear_rgb(L, a, b))


def _inside(linear: torch.Tensor) -> torch.Tensor:
    """Whether each linear-RGB colour (3, ...) is in [0, 1], which is exactly when sRGB is."""
    return ((linear >= -_GAMUT_TOL) & (linear <= 1.0 + _GAMUT_TOL)).all(dim=0)


def _lab_to_linear_rgb(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Lab (same-shape tensors) -> linear RGB (3, ...), unclipped; kornia's arithmetic, elementwise.

    Runs ~9 times per out-of-gamut pixel during the gamut search, where kornia's full conversion
    (stacking, gamma) would cost several times more.
    """
    fy = (L + 16.0) / 116.0
    f = (fy + a / 500.0, fy, (fy - b / 200.0).clamp_min(0.0))  # kornia clamps fz the same way
    xyz = [w * torch.where(t > 0.2068966, t * t * t, (t - 4.0 / 29.0) / 7.787) for t, w in zip(f, D65_WHITE)]
    return torch.stack([m0 * xyz[0] + m1 * xyz[1] + m2 * xyz[2] for m0, m1, m2 in _XYZ_TO_LINEAR_RGB])


def _encode_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear RGB -> sRGB in [0, 1] (kornia's linear_rgb_to_rgb followed by its clip), in place."""
    linear = linear.clamp_(0.0, 1.0)
    curve = linear.clamp_min(0.0031308).pow_(1.0 / 2.4).mul_(1.055).sub_(0.055)
    return torch.where(linear > 0.0031308, curve, linear.mul_(12.92))


def _colour_tile(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sRGB (3, ...) in [0, 1] of Lab pixels; out-of-gamut ones first lose chroma until they fit.

    The same as lab_to_rgb(L, gamut_map(L, ab)), with one conversion to linear RGB serving both
    the gamut test and the output.
    """
    linear = _lab_to_linear_rgb(L, a, b)
    outside = (~_inside(linear)).nonzero(as_tuple=True)
    if outside[0].numel():
        L_out, a_out, b_out = L[outside], a[outside], b[outside]
        factor = _bisect_chroma(L_out, a_out, b_out, _GAMUT_STEPS)
        linear[(slice(None), *outside)] = _lab_to_linear_rgb(L_out, a_out * factor, b_out * factor)
    return _encode_srgb(linear)


def compose_full_resolution(
    pixels: np.ndarray,
    ab_low: torch.Tensor,
    *,
    radius: int = DEFAULT_RADIUS,
    eps: float = DEFAULT_EPS,
    tile_rows: int | None = None,
    luminance_full: np.ndarray | None = None,
) -> np.ndarray:
    """Colour `pixels` (H, W, 3) uint8/uint16 with chroma `ab_low` (2, h, w) in Lab units.

    Returns sRGB pixels of the same shape and dtype whose L* is the input's (up to quantisation).
    `luminance_full` may pass in `luminance(pixels)` when the caller already has it.
    The chroma is seamless across row tiles; the colour conversion itself can round the last
    float32 bit differently for different tile shapes, so `tile_rows` may move a rare pixel
    by one code value.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be (H, W, 3) uint8 or uint16, got {pixels.shape} {pixels.dtype}")
    ab_low = ab_low.detach().float().cpu()
    if ab_low.ndim != 3 or ab_low.shape[0] != 2:
        raise ValueError(f"ab_low must be (2, h, w), got {tuple(ab_low.shape)}")

    height, width, _ = pixels.shape
    L_full = luminance(pixels) if luminance_full is None else luminance_full
    if L_full.shape != (height, width) or L_full.dtype != np.float32:
        raise ValueError(f"luminance_full must be float32 {(height, width)}, got {L_full.dtype} {L_full.shape}")
    L_low = _resize_L(torch.from_numpy(L_full), tuple(ab_low.shape[1:]))
    A, b = guided_coefficients(ab_low, L_low, radius, eps)
    coef = torch.cat([A, b])
    cols = _source_index(width, coef.shape[2], 0, width)

    maximum = float(np.iinfo(pixels.dtype).max)
    out = np.empty_like(pixels)
    rows = _tile_rows(width, tile_rows, _COMPOSE_TILE_PIXELS)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        L = torch.from_numpy(L_full[y0:y1]).clamp(0.0, 100.0)
        c = _upsample_rows(coef, height, width, y0, y1, cols)
        a_star = torch.addcmul(c[2], c[0], L).clamp_(AB_MIN, AB_MAX)
        b_star = torch.addcmul(c[3], c[1], L).clamp_(AB_MIN, AB_MAX)
        rgb = _colour_tile(L, a_star, b_star).mul_(maximum).round_().to(_TORCH_DTYPE[pixels.dtype.type])
        torch.from_numpy(out[y0:y1]).copy_(rgb.permute(1, 2, 0))  # interleaving costs least as integers
    return out


_TORCH_DTYPE = {np.uint8: torch.uint8, np.uint16: torch.uint16}


def _tile_rows(width: int, tile_rows: int | None, pixels: int = _TILE_PIXELS) -> int:
    if tile_rows is not None:
        if tile_rows < 1:
            raise ValueError(f"tile_rows must be positive, got {tile_rows}")
        return tile_rows
    return max(1, pixels // max(1, width))
