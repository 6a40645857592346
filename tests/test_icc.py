"""icc: a 16-bit photo's embedded profile is applied as LittleCMS applies it to the 8-bit photo.

LittleCMS (through Pillow, 8 bits in and out) is the reference: the profiles are written here
byte by byte, and the 16-bit conversion of every 8-bit code (v * 257) must land within one
8-bit level of what LittleCMS makes of v.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from colorize_cli import icc
from colorize_cli.imageio import load_image

D50 = (0.9642, 1.0, 0.8249)
# ProPhoto RGB's primaries (D50) and Adobe RGB's (D50-adapted), as their profiles carry them.
PROPHOTO = ((0.7977, 0.2880, 0.0), (0.1352, 0.7119, 0.0), (0.0313, 0.0001, 0.8249))
ADOBE = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))


# --------------------------------------------------------------------------- writing profiles


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def gamma_curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def table_curve(values: np.ndarray) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">I", len(values)) + np.rint(values * 65535).astype(">u2").tobytes()


def para_curve(function: int, *params: float) -> bytes:
    return b"para\0\0\0\0" + struct.pack(">H", function) + b"\0\0" + b"".join(_s15(p) for p in params)


def _desc(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * 79


def profile(space: bytes, tags: list[tuple[bytes, bytes]], pcs: bytes = b"XYZ ") -> bytes:
    """A version-2 display profile with these tags (plus a description and white point)."""
    tags = [(b"desc", _desc("colorize test")), (b"wtpt", _xyz(D50)), *tags]
    body, table = b"", []
    start = 128 + 4 + 12 * len(tags)
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table.append(sig + struct.pack(">II", start + len(body), len(data)))
        body += data
    header = (struct.pack(">I", start + len(body)) + b"none" + bytes([2, 0x40, 0, 0]) + b"mntr" + space + pcs
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + b"".join(_s15(v) for v in D50)
              + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + body


def rgb_profile(primaries, curves) -> bytes:
    curves = curves if isinstance(curves, (list, tuple)) else [curves] * 3
    return profile(b"RGB ", [(b"rXYZ", _xyz(primaries[0])), (b"gXYZ", _xyz(primaries[1])),
                             (b"bXYZ", _xyz(primaries[2])), (b"rTRC", curves[0]), (b"gTRC", curves[1]),
                             (b"bTRC", curves[2])])


def grey_profile(curve: bytes, pcs: bytes = b"XYZ ") -> bytes:
    return profile(b"GRAY", [(b"kTRC", curve)], pcs)


ECI_LSTAR = table_curve(icc._lightness_to_luminance(np.linspace(0, 100, 1024)))  # eciRGB v2's L* curve
SRGB_PARA = para_curve(3, 2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)

GREY_PROFILES = {
    "gray-gamma-2.2": grey_profile(gamma_curve(2.2)),
    "gray-gamma-1.8": grey_profile(gamma_curve(1.8)),
    "gray-lstar-table": grey_profile(ECI_LSTAR),
    "gray-srgb-para": grey_profile(SRGB_PARA),
    "gray-lab-pcs": grey_profile(gamma_curve(1.0), pcs=b"Lab "),
}
RGB_PROFILES = {
    "prophoto": rgb_profile(PROPHOTO, gamma_curve(1.8)),
    "adobe-rgb": rgb_profile(ADOBE, gamma_curve(563 / 256)),
    "eci-lstar": rgb_profile(ADOBE, ECI_LSTAR),
    # a curve of each parametric kind that stays within 0..1 (LittleCMS clips a curve to it)
    "mixed-curves": rgb_profile(PROPHOTO, [para_curve(1, 2.2, 1.1, -0.1), para_curve(2, 2.2, 0.95, 0.05, 0.0),
                                           para_curve(4, 2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045,
                                                      0.0, 0.0)]),
}


def _littlecms(pixels8: np.ndarray, icc_bytes: bytes, mode: str) -> np.ndarray:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_bytes))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    image = Image.fromarray(pixels8[..., 0] if mode == "L" else pixels8, mode)
    return np.asarray(ImageCms.profileToProfile(image, source, srgb, outputMode="RGB"))


def _to_8bit(pixels16: np.ndarray) -> np.ndarray:
    return np.rint(pixels16 / 257.0).astype(int)


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("name", sorted(GREY_PROFILES))
def test_grey_profile_matches_littlecms_on_every_code(name):
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels8 = np.repeat(codes[..., None], 3, axis=2)
    ours = icc.to_srgb16(pixels8.astype(np.uint16) * 257, GREY_PROFILES[name], grey=True, neutral=True)
    assert ours is not None
    reference = _littlecms(pixels8, GREY_PROFILES[name], "L")
    assert np.abs(_to_8bit(ours) - reference).max() <= 1
    assert (ours[..., 0] == ours[..., 1]).all() and (ours[..., 0] == ours[..., 2]).all()


@pytest.mark.parametrize("name", sorted(RGB_PROFILES))
def test_rgb_profile_matches_littlecms(name):
    rng = np.random.default_rng(7)
    pixels8 = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    pixels8[0, :16] = np.arange(0, 256, 16)[:, None]  # greys, and the extremes
    ours = icc.to_srgb16(pixels8.astype(np.uint16) * 257, RGB_PROFILES[name], grey=False, neutral=False)
    assert ours is not None
    reference = _littlecms(pixels8, RGB_PROFILES[name], "RGB")
    assert np.abs(_to_8bit(ours) - reference).max() <= 1


def test_the_change_is_the_one_expected():
    """Mid-grey (code 0.5) of a gamma-1.8 scan is linear 0.287, which sRGB encodes as 0.58, not 0.5."""
    mid = np.full((1, 1, 3), 32768, np.uint16)
    out = icc.to_srgb16(mid, GREY_PROFILES["gray-gamma-1.8"], grey=True, neutral=True)
    expected = 1.055 * (0.5 ** 1.8) ** (1 / 2.4) - 0.055
    assert abs(int(out[0, 0, 0]) / 65535 - expected) < 2e-4


def test_neutral_rgb_stays_exactly_neutral():
    ramp = np.repeat(np.linspace(0, 65535, 300).astype(np.uint16)[None, :, None], 3, axis=2)
    out = icc.to_srgb16(ramp, RGB_PROFILES["prophoto"], grey=False, neutral=True)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    assert (np.diff(out[0, :, 0].astype(int)) >= 0).all()  # and keeps the order of tones


def test_sixteen_bits_are_kept():
    """Neighbouring 16-bit codes stay apart: the conversion does not pass through 8 bits."""
    ramp = np.repeat(np.arange(30000, 30400, dtype=np.uint16)[None, :, None], 3, axis=2)
    out = icc.to_srgb16(ramp, GREY_PROFILES["gray-gamma-2.2"], grey=True, neutral=True)
    assert len(np.unique(out[..., 0])) > 300


@pytest.mark.parametrize("icc_bytes, grey", [
    (RGB_PROFILES["prophoto"], True),        # an RGB profile on a grey file
    (GREY_PROFILES["gray-gamma-2.2"], False),  # a grey profile on an RGB file
    (b"definitely not a profile", False),
    (RGB_PROFILES["prophoto"][:200], False),  # cut short
    (rgb_profile(PROPHOTO, gamma_curve(1.8))[:-40] + b"\0" * 40, False),  # a tag's data zeroed
])
def test_profiles_it_cannot_apply_leave_the_pixels_alone(icc_bytes, grey):
    pixels = np.full((2, 2, 3), 1000, np.uint16)
    assert icc.to_srgb16(pixels, icc_bytes, grey=grey, neutral=True) is None


def test_lookup_table_profiles_are_not_taken_for_matrix_ones():
    """LittleCMS would use the A2B0 table of such a profile, not its matrix: leave it alone."""
    base = rgb_profile(PROPHOTO, gamma_curve(1.8))
    with_lut = profile(b"RGB ", [(b"rXYZ", _xyz(PROPHOTO[0])), (b"gXYZ", _xyz(PROPHOTO[1])),
                                 (b"bXYZ", _xyz(PROPHOTO[2])), (b"rTRC", gamma_curve(1.8)),
                                 (b"gTRC", gamma_curve(1.8)), (b"bTRC", gamma_curve(1.8)),
                                 (b"A2B0", b"mft2" + b"\0" * 60)])
    assert icc.parse(base) is not None
    assert icc.parse(with_lut) is None


# --------------------------------------------------------------------------- through load_image


def _png16(samples: np.ndarray, icc_bytes: bytes) -> bytes:
    """A 16-bit grey (H, W) or RGB (H, W, 3) PNG with an iCCP chunk, written independently."""
    grey = samples.ndim == 2
    h, w = samples.shape[:2]
    raw = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 0 if grey else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"iCCP", b"scan\0\0" + zlib.compress(icc_bytes))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_a_16_bit_grey_scan_is_read_through_its_profile(tmp_path):
    values = np.linspace(0, 65535, 12 * 9).astype(np.uint16).reshape(12, 9)
    path = tmp_path / "scan.png"
    path.write_bytes(_png16(values, GREY_PROFILES["gray-gamma-1.8"]))
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.was_grey
    expected = icc.to_srgb16(np.repeat(values[..., None], 3, axis=2), GREY_PROFILES["gray-gamma-1.8"], grey=True, neutral=True)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert (loaded.pixels[4:8, :, 0].astype(int) > values[4:8] + 1500).all()  # gamma 1.8's mid-tones read lighter


def test_a_16_bit_rgb_scan_is_read_through_its_profile(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.integers(0, 65536, (10, 11, 3), dtype=np.uint16)
    path = tmp_path / "scan.png"
    path.write_bytes(_png16(values, RGB_PROFILES["prophoto"]))
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and not loaded.was_grey
    np.testing.assert_array_equal(loaded.pixels, icc.to_srgb16(values, RGB_PROFILES["prophoto"], grey=False, neutral=False))
    assert not np.array_equal(loaded.pixels, values)


def test_a_16_bit_rgb_scan_of_a_grey_print_stays_grey(tmp_path):
    values = np.repeat(np.linspace(0, 65535, 8 * 8).astype(np.uint16).reshape(8, 8)[..., None], 3, axis=2)
    path = tmp_path / "scan.png"
    path.write_bytes(_png16(values, RGB_PROFILES["adobe-rgb"]))
    loaded = load_image(path)
    assert loaded.was_grey  # the run will not call it a colour photo
    assert not np.array_equal(loaded.pixels, values)


def test_a_16_bit_scan_with_an_unusable_profile_is_read_as_srgb(tmp_path):
    values = np.linspace(0, 65535, 6 * 7).astype(np.uint16).reshape(6, 7)
    path = tmp_path / "scan.png"
    path.write_bytes(_png16(values, RGB_PROFILES["prophoto"]))  # an RGB profile on a grey scan
    np.testing.assert_array_equal(load_image(path).pixels[..., 0], values)


def test_a_16_bit_grey_tiff_is_read_through_its_profile(tmp_path):
    values = np.linspace(0, 65535, 6 * 8).astype(np.uint16).reshape(6, 8)
    path = tmp_path / "scan.tif"
    Image.fromarray(values).save(path, icc_profile=GREY_PROFILES["gray-lstar-table"])  # I;16, tag 34675
    loaded = load_image(path)
    expected = icc.to_srgb16(np.repeat(values[..., None], 3, axis=2), GREY_PROFILES["gray-lstar-table"], grey=True, neutral=True)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert not np.array_equal(loaded.pixels[..., 0], values)
