"""Embedded ICC profiles applied to 16-bit pixels, which Pillow's LittleCMS binding cannot transform.

Pillow converts 8-bit images with their profile (`imageio._icc_to_srgb`), but it has no 16-bit
RGB mode at all and builds no 16-bit grey transform, so a 16-bit scan's profile would be
ignored: its values read as if they were sRGB. For the working spaces archival scans are saved
in (Gray Gamma 2.2, Dot Gain, Adobe RGB, ProPhoto, eciRGB's L* curve) that misreads the tones:
mid-grey of a ProPhoto scan comes out 7 L* too dark. Those profiles are all *matrix/TRC*
profiles (a tone curve per channel, then a 3x3 matrix to the D50 XYZ connection space; a grey
profile has one curve), simple enough to apply here at full 16-bit precision. Profiles built on
lookup tables (A2B0 and its kind: scanner and printer characterisations) are left alone, as is
anything malformed; `to_srgb16` then returns None and the caller keeps the pixels as they are.

The destination is LittleCMS's own sRGB profile (parsed here too), so a 16-bit file gets the
same colours as its 8-bit copy gets from Pillow, with the relative colorimetric intent (all a
matrix/TRC profile has) and no black-point compensation, as Pillow's default transform does.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

# Tags whose presence makes LittleCMS prefer lookup tables over the matrix/TRC model.
_LUT_TAGS = (b"A2B0", b"A2B1", b"A2B2", b"D2B0", b"D2B1", b"D2B2")
# Rows converted at a time (bounds the float32 temporaries for a large scan).
_BLOCK_PIXELS = 1 << 20


@dataclass(frozen=True)
class MatrixProfile:
    """A matrix/TRC profile: per-channel tone curves (65536-entry tables of linear light for each
    16-bit code) and, for RGB, the 3x3 matrix from linear RGB to D50 XYZ."""

    colour_space: str                 # "RGB" or "GRAY"
    curves: tuple[np.ndarray, ...]     # 3 (RGB) or 1 (GRAY) float64 tables, code -> linear light
    matrix: np.ndarray | None          # (3, 3), columns are the red, green and blue XYZ (RGB only)


def parse(icc: bytes) -> MatrixProfile | None:
    """The matrix/TRC model of an ICC profile, or None for any other or a malformed one."""
    try:
        return _parse(bytes(icc))
    except (struct.error, ValueError, IndexError, ZeroDivisionError, OverflowError):
        return None


def _parse(icc: bytes) -> MatrixProfile | None:
    if len(icc) < 132 or icc[36:40] != b"acsp":
        return None
    space, pcs = icc[16:20], icc[20:24]
    count = struct.unpack_from(">I", icc, 128)[0]
    if count > (len(icc) - 132) // 12:
        return None
    tags: dict[bytes, bytes] = {}
    for i in range(count):
        sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        if offset + size > len(icc):
            return None
        tags[sig] = icc[offset:offset + size]
    if any(t in tags for t in _LUT_TAGS):
        return None
    if space == b"GRAY" and b"kTRC" in tags and pcs in (b"XYZ ", b"Lab "):
        curve = _curve(tags[b"kTRC"])
        if pcs == b"Lab ":  # a grey curve into Lab gives L*/100: turn it into luminance
            curve = _lightness_to_luminance(curve * 100.0)
        return MatrixProfile("GRAY", (curve,), None)
    needed = (b"rTRC", b"gTRC", b"bTRC", b"rXYZ", b"gXYZ", b"bXYZ")
    if space == b"RGB " and pcs == b"XYZ " and all(t in tags for t in needed):
        curves = tuple(_curve(tags[t]) for t in needed[:3])
        matrix = np.stack([_xyz(tags[t]) for t in needed[3:]], axis=1)
        if abs(np.linalg.det(matrix)) < 1e-6:
            return None
        return MatrixProfile("RGB", curves, matrix)
    return None


def _s15(data: bytes, offset: int) -> float:
    return struct.unpack_from(">i", data, offset)[0] / 65536.0


def _xyz(data: bytes) -> np.ndarray:
    if data[:4] != b"XYZ ":
        raise ValueError("not an XYZ tag")
    return np.array([_s15(data, 8 + 4 * i) for i in range(3)])


# Parameters of each parametric curve type: g, a, b, c, d, e, f as the ICC spec names them.
_PARA_PARAMS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}


def _curve(data: bytes) -> np.ndarray:
    """A TRC tag (curv or para) as linear light for each of the 65536 codes of a 16-bit sample."""
    x = np.arange(65536, dtype=np.float64) / 65535.0
    kind = data[:4]
    if kind == b"curv":
        n = struct.unpack_from(">I", data, 8)[0]
        if n == 0:
            return x
        if n == 1:
            return x ** (struct.unpack_from(">H", data, 12)[0] / 256.0)
        table = np.frombuffer(data, ">u2", count=n, offset=12).astype(np.float64) / 65535.0
        if n < 2:
            raise ValueError("a curve table needs two entries")
        return np.interp(x, np.linspace(0.0, 1.0, n), table)
    if kind == b"para":
        function = struct.unpack_from(">H", data, 8)[0]
        if function not in _PARA_PARAMS:
            raise ValueError(f"unknown parametric curve {function}")
        g, a, b, c, d, e, f = ([_s15(data, 12 + 4 * i) for i in range(_PARA_PARAMS[function])] + [0.0] * 7)[:7]
        if function == 0:
            return x ** g
        if function == 1:  # (ax + b)^g above -b/a, else 0
            return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g, 0.0)
        if function == 2:  # (ax + b)^g + c above -b/a, else c
            return np.where(x >= -b / a, np.maximum(a * x + b, 0.0) ** g + c, c)
        if function == 3:  # (ax + b)^g above d, else cx
            return np.where(x >= d, np.maximum(a * x + b, 0.0) ** g, c * x)
        return np.where(x >= d, np.maximum(a * x + b, 0.0) ** g + e, c * x + f)  # function 4
    raise ValueError("not a curve tag")


def _lightness_to_luminance(lightness: np.ndarray) -> np.ndarray:
    """CIE L* (0..100) -> relative luminance Y (0..1)."""
    f = (np.asarray(lightness, np.float64) + 16.0) / 116.0
    return np.where(f > 6.0 / 29.0, f ** 3, 3.0 * (6.0 / 29.0) ** 2 * (f - 4.0 / 29.0))


@functools.cache
def _srgb() -> MatrixProfile:
    """LittleCMS's built-in sRGB profile (the destination of Pillow's 8-bit conversions)."""
    from PIL import ImageCms

    profile = parse(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    if profile is None or profile.colour_space != "RGB":
        raise RuntimeError("LittleCMS's sRGB profile is not a matrix/TRC profile")
    return profile


def _encode_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light (clipped to 0..1) -> sRGB-encoded values 0..1 (IEC 61966-2-1)."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def _to_uint16(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * 65535.0).astype(np.uint16)


@functools.cache
def _encoding_table() -> np.ndarray:
    """16-bit sRGB codes indexed by the square root of linear light in 65536 steps: a table
    4x faster than the power law per pixel, within one 16-bit level of it (the root spreads the
    steps where the curve is steep, near black)."""
    return _to_uint16(_encode_srgb(np.linspace(0.0, 1.0, 65536) ** 2))


def _linear_to_srgb16(linear: np.ndarray) -> np.ndarray:
    index = np.rint(np.sqrt(np.clip(linear, 0.0, 1.0)) * np.float32(65535.0)).astype(np.uint16)
    return _encoding_table()[index]


def to_srgb16(pixels: np.ndarray, icc: bytes, *, grey: bool, neutral: bool) -> np.ndarray | None:
    """(H, W, 3) uint16 pixels decoded from a file with profile `icc` -> sRGB uint16, or None when
    the profile is not one this module applies, or does not fit the pixels (`grey`: the file
    held one channel, which needs a GRAY profile; three channels need an RGB one).

    `neutral`: the three channels are equal (a grey file, or an RGB scan of a grey print). With
    the same curve on every channel such pixels go through one 65536-entry table and stay
    exactly grey, so the photo is not taken for a colour one.
    """
    profile = parse(icc)
    if profile is None or (profile.colour_space == "GRAY") != grey:
        return None
    same_curves = all(np.array_equal(c, profile.curves[0]) for c in profile.curves[1:])
    if profile.colour_space == "GRAY" or (neutral and same_curves):
        return _to_uint16(_encode_srgb(profile.curves[0]))[pixels]
    # Both profiles map their white (R = G = B = 1) to D50 up to the 16-bit rounding of their
    # tags; scaling each row to sum to 1 keeps a neutral pixel neutral.
    to_srgb = np.linalg.inv(_srgb().matrix) @ profile.matrix
    matrix = (to_srgb / to_srgb.sum(axis=1, keepdims=True)).T.astype(np.float32)
    curves = [c.astype(np.float32) for c in profile.curves]
    out = np.empty_like(pixels)
    rows = max(1, _BLOCK_PIXELS // max(1, pixels.shape[1]))
    for y in range(0, pixels.shape[0], rows):
        block = pixels[y:y + rows]
        linear = np.stack([curves[c][block[..., c]] for c in range(3)], axis=-1)
        out[y:y + rows] = _linear_to_srgb16(linear @ matrix)
    return out
