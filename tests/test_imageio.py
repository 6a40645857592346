"""imageio: every input kind loads as sRGB at its own depth; writing is format-aware and atomic."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from colorize_cli import imageio
from colorize_cli.imageio import (
    IMAGE_EXTENSIONS,
    ImageError,
    ImageTooLargeError,
    OutputExistsError,
    SameFileError,
    UnsupportedFormatError,
    load_image,
    save_image,
)

RNG = np.random.default_rng(1234)


def _rgb8(h: int = 12, w: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rgb16(h: int = 12, w: int = 17) -> np.ndarray:
    return RNG.integers(0, 65536, (h, w, 3), dtype=np.uint16)


def _save_pil(path: Path, im: Image.Image, **options) -> Path:
    im.save(path, **options)
    return path


def _png16_filter0(samples: np.ndarray, trns: tuple[int, int, int] | None = None, sub_rows: bool = False) -> bytes:
    """A 16-bit grey + alpha (2 channels) or RGB(A) PNG written independently of imageio (filter 0
    on every row; Sub on odd rows with `sub_rows`), with an optional tRNS colour key."""
    h, w, c = samples.shape
    rows = [samples[y].astype(">u2").tobytes() for y in range(h)]
    if sub_rows:  # each byte minus the same byte of the pixel before: unfiltering needs the pixel's width
        bpp = 2 * c
        rows = [row if y % 2 == 0 else bytes((row[i] - (row[i - bpp] if i >= bpp else 0)) & 255 for i in range(len(row)))
                for y, row in enumerate(rows)]
    raw = b"".join(bytes([y % 2 if sub_rows else 0]) + row for y, row in enumerate(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    key = chunk(b"tRNS", struct.pack(">HHH", *trns)) if trns is not None else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + key + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _linear_srgb_icc() -> bytes:
    """The sRGB profile with its tone curve's gamma set to 1: a real, different RGB profile."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    at = data.find(b"para")
    assert at > 0
    data[at + 12 : at + 16] = struct.pack(">i", 1 << 16)
    return bytes(data)


# --------------------------------------------------------------------------- modes and formats


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp", ".webp"])
def test_rgb8_lossless_formats_load_exactly(tmp_path, ext):
    pixels = _rgb8()
    options = {"lossless": True} if ext == ".webp" else {}
    path = _save_pil(tmp_path / f"a{ext}", Image.fromarray(pixels), **options)
    loaded = load_image(path)
    assert loaded.pixels.dtype == np.uint8 and loaded.bit_depth == 8
    np.testing.assert_array_equal(loaded.pixels, pixels)
    assert loaded.alpha is None
    assert not loaded.was_grey


def test_jpeg_loads_with_format_and_shape(tmp_path):
    path = _save_pil(tmp_path / "a.jpg", Image.fromarray(_rgb8(20, 30)), quality=90)
    loaded = load_image(path)
    assert loaded.format == "JPEG"
    assert loaded.pixels.shape == (20, 30, 3)
    assert loaded.path == path


@pytest.mark.parametrize(
    "mode, ext",
    [("L", ".png"), ("L", ".jpg"), ("L", ".bmp"), ("L", ".tif"), ("1", ".png"), ("1", ".bmp"), ("LA", ".png")],
)
def test_grey_modes_become_equal_rgb_channels(tmp_path, mode, ext):
    grey = RNG.integers(0, 256, (10, 14), dtype=np.uint8)
    im = Image.fromarray(grey).convert(mode)
    path = _save_pil(tmp_path / f"g{ext}", im)
    loaded = load_image(path)
    assert loaded.was_grey and loaded.bit_depth == 8
    assert loaded.pixels.shape == (10, 14, 3)
    assert np.array_equal(loaded.pixels[..., 0], loaded.pixels[..., 1])
    assert np.array_equal(loaded.pixels[..., 0], loaded.pixels[..., 2])
    if ext != ".jpg":
        np.testing.assert_array_equal(loaded.pixels[..., 0], np.asarray(im.convert("L")))
    assert (loaded.alpha is not None) == (mode == "LA")


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_grey_keeps_16_bits(tmp_path, ext):
    grey = RNG.integers(0, 65536, (9, 11), dtype=np.uint16)
    grey[0, 0] = 65535
    grey[0, 1] = 257  # not representable at 8 bits
    path = _save_pil(tmp_path / f"g16{ext}", Image.fromarray(grey))
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.pixels.dtype == np.uint16
    assert loaded.was_grey
    for channel in range(3):
        np.testing.assert_array_equal(loaded.pixels[..., channel], grey)


def test_32bit_int_and_float_grey_tiff_map_to_16_bits(tmp_path):
    ints = RNG.integers(0, 65536, (6, 7)).astype(np.int32)
    loaded = load_image(_save_pil(tmp_path / "i.tif", Image.fromarray(ints, mode="I")))
    np.testing.assert_array_equal(loaded.pixels[..., 0], ints)

    floats = RNG.random((6, 7)).astype(np.float32)
    loaded = load_image(_save_pil(tmp_path / "f.tif", Image.fromarray(floats, mode="F")))
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels[..., 0], np.rint(floats.astype(np.float64) * 65535).astype(np.uint16))


def test_a_float_tiff_with_a_resamplings_overshoot_is_read_as_fractions(tmp_path):
    """A 0..1 photo resized bicubically overshoots past 1 (and below 0): read as 0..255 samples,
    it came out almost black, silently."""
    floats = np.where(RNG.random((16, 24)) > 0.5, 1.0, 0.3).astype(np.float32)
    resized = Image.fromarray(floats, mode="F").resize((48, 32), Image.BICUBIC)
    values = np.asarray(resized, dtype=np.float64)
    assert values.max() > 1.05 and values.min() < 0.3  # the overshoot this is about
    loaded = load_image(_save_pil(tmp_path / "over.tif", resized))
    expected = np.rint(np.clip(values, 0, 1) * 65535).astype(np.uint16)
    np.testing.assert_array_equal(loaded.pixels[..., 0], expected)
    assert loaded.pixels.mean() > 0.5 * 65535
    # Values that are 8-bit samples are still read as such.
    eight = (floats * 200).astype(np.float32)
    loaded = load_image(_save_pil(tmp_path / "eight.tif", Image.fromarray(eight, mode="F")))
    np.testing.assert_array_equal(loaded.pixels[..., 0], np.rint(eight.astype(np.float64) * 65535 / 255).astype(np.uint16))


@pytest.mark.parametrize("alpha", [False, True])
def test_16bit_rgb_png_from_another_writer_keeps_16_bits(tmp_path, alpha):
    samples = RNG.integers(0, 65536, (8, 13, 4 if alpha else 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png16_filter0(samples))
    loaded = load_image(path)
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, samples[..., :3])
    if alpha:
        np.testing.assert_array_equal(loaded.alpha, samples[..., 3])


def test_a_float_tiff_without_a_finite_sample_is_refused(tmp_path):
    values = np.full((6, 5), np.nan, np.float32)
    values[0, 0] = np.inf
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(imageio.ImageError, match="every sample is NaN or infinite"):
        load_image(tmp_path / "nan.tif")
    values[1, 1] = 0.5  # one real sample: a picture (the rest takes its value)
    Image.fromarray(values, mode="F").save(tmp_path / "some.tif")
    assert (load_image(tmp_path / "some.tif").pixels == 32768).all()


def test_no_data_samples_take_the_darkest_value_and_do_not_decide_the_range(tmp_path):
    values = np.linspace(-1000, 3000, 8 * 10).reshape(8, 10).astype(np.float32)  # a range of no known scale
    values[2:4, 2:4] = np.nan
    values[5, 5] = -np.inf
    Image.fromarray(values, mode="F").save(tmp_path / "holes.tif")
    pixels = load_image(tmp_path / "holes.tif").pixels[..., 0]
    assert pixels.max() == 65535 and pixels[0, 0] == 0  # stretched over the real values alone
    assert (pixels[2:4, 2:4] == 0).all() and pixels[5, 5] == 0
    flat = np.full((6, 5), 70000, np.int32)  # one value beyond 16 bits: white, not black
    Image.fromarray(flat, mode="I").save(tmp_path / "flat.tif")
    assert (load_image(tmp_path / "flat.tif").pixels == 65535).all()


def test_a_tiff_layout_pillow_cannot_decode_is_named_as_such(tmp_path):
    # A minimal 16-bit grey + alpha TIFF (2 samples, ExtraSamples = unassociated alpha): Pillow
    # knows no mode for it and reports an unidentified file.
    w, h = 3, 2
    data = np.arange(w * h * 2, dtype="<u2").tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 2, 0x00100010), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 2), (278, 3, 1, h), (279, 4, 1, len(data)), (338, 3, 1, 2)]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, data_at if tag == 273 else value) for tag, kind, count, value in entries)
    (tmp_path / "la16.tif").write_bytes(b"II*\0" + struct.pack("<I", ifd_at) + ifd + b"\0" * 4 + data)
    with pytest.raises(imageio.ImageError, match="a TIFF whose sample layout Pillow cannot decode"):
        load_image(tmp_path / "la16.tif")


def test_16bit_grey_and_alpha_png_keeps_16_bits(tmp_path):
    """Pillow reads it as 8-bit RGBA (the helper found 16-bit grey+alpha in, 8-bit out)."""
    samples = RNG.integers(0, 65536, (9, 13, 2), dtype=np.uint16)
    path = tmp_path / "la16.png"
    path.write_bytes(_png16_filter0(samples, sub_rows=True))
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.was_grey
    np.testing.assert_array_equal(loaded.pixels, np.repeat(samples[..., :1], 3, axis=2))
    np.testing.assert_array_equal(loaded.alpha, samples[..., 1])
    thumb = load_image(path, preview=4)  # a preview of it is read whole, as 16-bit data always is
    np.testing.assert_array_equal(thumb.alpha, samples[..., 1])


def test_an_albums_pages_keep_their_own_bit_depth(tmp_path):
    eight = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    sixteen = RNG.integers(0, 65536, (5, 4, 3), dtype=np.uint16)
    for first, second in ((eight, sixteen), (sixteen, eight)):
        path = tmp_path / f"album{first.dtype}.tif"
        imageio.save_image(path, first, more_pages=[(second, None)])
        pages = [load_image(path, page=k) for k in (0, 1)]
        assert [p.bit_depth for p in pages] == [first.itemsize * 8, second.itemsize * 8]
        np.testing.assert_array_equal(pages[1].pixels, second)


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_png(tmp_path, transparency):
    im = Image.fromarray(_rgb8()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    options = {"transparency": 0} if transparency else {}
    path = _save_pil(tmp_path / "p.png", im, **options)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.pixels, np.asarray(im.convert("RGB")))
    if transparency:
        index = np.asarray(im)
        np.testing.assert_array_equal(loaded.alpha == 0, index == 0)
    else:
        assert loaded.alpha is None


@pytest.mark.parametrize("ext", [".png", ".tif", ".webp"])
def test_rgba_alpha_is_kept(tmp_path, ext):
    rgba = np.dstack([_rgb8(), RNG.integers(0, 256, (12, 17), dtype=np.uint8)])
    options = {"lossless": True} if ext == ".webp" else {}
    loaded = load_image(_save_pil(tmp_path / f"a{ext}", Image.fromarray(rgba), **options))
    np.testing.assert_array_equal(loaded.alpha, rgba[..., 3])
    visible = rgba[..., 3] > 0  # WebP may drop the colour of fully transparent pixels
    np.testing.assert_array_equal(loaded.pixels[visible], rgba[..., :3][visible])


@pytest.mark.parametrize("ext", [".jpg", ".tif"])
def test_cmyk_becomes_rgb(tmp_path, ext):
    im = Image.fromarray(_rgb8()).convert("CMYK")
    loaded = load_image(_save_pil(tmp_path / f"c{ext}", im))
    assert loaded.pixels.shape == (12, 17, 3)
    if ext == ".tif":  # lossless: must match Pillow's own conversion
        np.testing.assert_array_equal(loaded.pixels, np.asarray(im.convert("RGB")))


def test_ycbcr_tiff_becomes_rgb(tmp_path):
    im = Image.fromarray(_rgb8()).convert("YCbCr")
    loaded = load_image(_save_pil(tmp_path / "y.tif", im))
    np.testing.assert_array_equal(loaded.pixels, np.asarray(im.convert("RGB")))


def test_sepia_colour_input_is_not_grey(tmp_path):
    sepia = np.zeros((5, 6, 3), np.uint8) + np.array([112, 66, 20], np.uint8)
    loaded = load_image(_save_pil(tmp_path / "s.png", Image.fromarray(sepia)))
    assert not loaded.was_grey
    np.testing.assert_array_equal(loaded.pixels, sepia)


def test_rgb_file_with_equal_channels_counts_as_grey(tmp_path):
    grey = np.repeat(RNG.integers(0, 256, (5, 6, 1), dtype=np.uint8), 3, axis=2)
    assert load_image(_save_pil(tmp_path / "g.png", Image.fromarray(grey))).was_grey


def test_image_extensions_are_lowercase_with_dot():
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


def test_a_16bit_png_colour_key_becomes_alpha(tmp_path):
    grey = (np.arange(12 * 16).reshape(12, 16) * 300).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png", transparency=int(grey[3, 5]))
    alpha = load_image(tmp_path / "g.png").alpha
    assert alpha is not None and alpha.dtype == np.uint16
    np.testing.assert_array_equal(alpha == 0, grey == grey[3, 5])
    rgb = _rgb16(12, 16)
    (tmp_path / "c.png").write_bytes(_png16_filter0(rgb, trns=tuple(int(v) for v in rgb[2, 7])))
    loaded = load_image(tmp_path / "c.png")
    np.testing.assert_array_equal(loaded.pixels, rgb)
    np.testing.assert_array_equal(loaded.alpha == 0, (rgb == rgb[2, 7]).all(axis=2))
    assert loaded.alpha.max() == 65535


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_tiffs_stored_plane_by_plane_load_exactly(tmp_path, channels, byteorder):
    tifffile = pytest.importorskip("tifffile")
    samples = np.dstack([_rgb16(12, 16), RNG.integers(0, 65536, (12, 16), dtype=np.uint16)])[..., :channels]
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(samples, 2, 0), photometric="rgb", planarconfig="separate",
                     byteorder=byteorder, extrasamples=["unassalpha"] if channels == 4 else None)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.pixels, samples[..., :3])
    if channels == 4:
        np.testing.assert_array_equal(loaded.alpha, samples[..., 3])
    # Compressed planes come through libtiff, which gives the high bytes right: read at 8 bits.
    tifffile.imwrite(path, np.moveaxis(samples[..., :3], 2, 0), photometric="rgb", planarconfig="separate",
                     compression="zlib")
    np.testing.assert_array_equal(load_image(path).pixels, (samples[..., :3] >> 8).astype(np.uint8))


# --------------------------------------------------------------------------- EXIF and ICC


def test_jpeg_exif_orientation_6_rotates(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save_pil(tmp_path / "o.jpg", Image.fromarray(_rgb8(20, 40)), exif=exif)
    assert load_image(path).pixels.shape == (40, 20, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    im = Image.fromarray(_rgb8(6, 9))
    path = _save_pil(tmp_path / "o.png", im, exif=exif)
    with Image.open(path) as reopened:
        expected = np.asarray(ImageOps.exif_transpose(reopened).convert("RGB"))
    np.testing.assert_array_equal(load_image(path).pixels, expected)


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_turned_tiff_scans_come_out_upright_not_striped(tmp_path, mode, compression):
    # Opened by name, Pillow 13 memory-maps an uncompressed TIFF and reads a turned one with the
    # turned size: stripes. A gradient with a bright corner shows any mix-up.
    grey = np.tile(np.arange(64, dtype=np.uint16) * 1000, (40, 1))
    grey[:10, :10] = 65535
    im = Image.fromarray(grey if mode == "I;16" else (grey >> 8).astype(np.uint8))
    path = tmp_path / "scan.tif"
    im.save(path, tiffinfo={0x0112: 6}, **({"compression": compression} if compression else {}))
    expected = np.rot90(np.asarray(im), k=-1)  # orientation 6: turn a quarter clockwise to view
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.pixels[..., 0], expected)
    assert imageio.upright_size(path) == (40, 64)  # (width, height) as shown, for --hint


def test_orientation_applies_to_16bit_rgb_and_alpha(tmp_path):
    rgba = np.dstack([_rgb16(6, 9), RNG.integers(0, 65536, (6, 9), dtype=np.uint16)])
    path = tmp_path / "o.png"
    save_image(path, rgba[..., :3], rgba[..., 3])
    loaded_plain = load_image(path)
    np.testing.assert_array_equal(loaded_plain.pixels, rgba[..., :3])
    assert imageio._orient(rgba, 6).shape == (9, 6, 4)
    np.testing.assert_array_equal(imageio._orient(rgba, 6)[..., :3], np.rot90(rgba[..., :3], k=-1))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_broken_exif_still_loads(tmp_path):
    garbage = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08\xff\xff" + bytes(range(40))
    path = _save_pil(tmp_path / "b.jpg", Image.fromarray(_rgb8(10, 20)), exif=garbage)
    assert load_image(path).pixels.shape == (10, 20, 3)


def test_icc_profile_is_converted_to_srgb(tmp_path):
    pixels = np.full((4, 5, 3), (200, 100, 50), np.uint8)
    srgb_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    same = load_image(_save_pil(tmp_path / "s.png", Image.fromarray(pixels), icc_profile=srgb_icc))
    assert np.abs(same.pixels.astype(int) - pixels).max() <= 1

    linear = load_image(_save_pil(tmp_path / "l.png", Image.fromarray(pixels), icc_profile=_linear_srgb_icc()))
    # Linear-encoded values are brighter once re-encoded with the sRGB curve.
    assert (linear.pixels.astype(int) > pixels + 20).all()


def test_unusable_icc_profile_is_ignored(tmp_path):
    pixels = _rgb8()
    path = _save_pil(tmp_path / "x.png", Image.fromarray(pixels), icc_profile=b"definitely not a profile")
    np.testing.assert_array_equal(load_image(path).pixels, pixels)


# --------------------------------------------------------------------------- bad input


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb8(64, 64)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.png", b""),
        ("random.jpg", bytes(RNG.integers(0, 256, 4096, dtype=np.uint8))),
        ("notes.png", b"this is a text file, not a picture\n" * 20),
        ("cut.jpg", _truncated(_encoded("JPEG"))),
        ("cut.png", _truncated(_encoded("PNG"))),
        ("picture.gif", _encoded("GIF")),  # a real image in a format we do not read
    ],
)
def test_bad_files_raise_image_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=name.replace(".", r"\.")):
        load_image(path)


def test_directory_and_missing_file_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_a_jpeg_preview_is_decoded_at_a_smaller_scale_and_looks_the_same(tmp_path):
    y, x = np.mgrid[0:480, 0:640]
    photo = np.stack([x * 255 // 640, y * 255 // 480, (x + y) * 255 // 1120], axis=2).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.jpg", quality=95)
    Image.fromarray(photo).save(tmp_path / "p.png")
    full, small = load_image(tmp_path / "p.jpg"), load_image(tmp_path / "p.jpg", preview=100)
    assert small.pixels.shape == (120, 160, 3)  # 1/4: the smallest DCT scale with both sides >= 100
    shrunk = np.asarray(Image.fromarray(full.pixels).resize((160, 120), Image.BOX), np.float32)
    assert np.abs(shrunk - small.pixels).mean() < 2
    reduced = load_image(tmp_path / "p.png", preview=100).pixels  # other formats: box-reduced after decoding
    assert reduced.shape == (120, 160, 3) and np.abs(shrunk - reduced).mean() < 2
    wide = photo.astype(np.uint16) * 257  # 16-bit RGB, which Pillow would show as 8-bit: read whole
    save_image(tmp_path / "p16.png", wide)
    np.testing.assert_array_equal(load_image(tmp_path / "p16.png", preview=100).pixels, wide)


def test_an_image_larger_than_its_output_format_holds_is_refused_clearly(tmp_path):
    wide = np.zeros((2, 16384, 3), np.uint8)
    with pytest.raises(imageio.OutputError, match=r"16384x2 is more than WEBP holds \(16383 px a side\).*\.png or \.tif"):
        save_image(tmp_path / "wide.webp", wide)
    with pytest.raises(imageio.OutputError, match="65500 px a side"):
        save_image(tmp_path / "tall.jpg", np.zeros((65501, 1, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    save_image(tmp_path / "fits.webp", wide[:, :16383])
    assert load_image(tmp_path / "fits.webp").pixels.shape == (2, 16383, 3)
    save_image(tmp_path / "wide.png", wide)  # PNG and TIFF hold it
    # AVIF: readers refuse more than 32768 px a side or 16384 x 16384 pixels, so neither is written.
    if imageio.unwritable_reason(".avif") is None:
        imageio.check_output_size(tmp_path / "a.avif", 32768, 8192)
        with pytest.raises(imageio.OutputError, match="32768 px a side and 268 megapixels"):
            imageio.check_output_size(tmp_path / "a.avif", 16385, 16384)
        with pytest.raises(imageio.OutputError):
            imageio.check_output_size(tmp_path / "a.avif", 32769, 10)


def test_pixel_limit_raises_too_large(tmp_path):
    path = _save_pil(tmp_path / "big.png", Image.fromarray(_rgb8(30, 40)))
    with pytest.raises(ImageTooLargeError, match="big.png"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=1200).pixels.shape == (30, 40, 3)
    assert load_image(path, max_pixels=None).pixels.shape == (30, 40, 3)


def test_pixel_limit_is_per_call_not_pillows_global(tmp_path, monkeypatch):
    path = _save_pil(tmp_path / "big.png", Image.fromarray(_rgb8(30, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would raise a bomb error
    assert load_image(path).pixels.shape == (30, 40, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # and the global is left as it was


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_16bit_write_round_trips_exactly(tmp_path, ext, with_alpha):
    pixels = _rgb16(23, 31)
    pixels[0, 0] = (65535, 0, 257)
    alpha = RNG.integers(0, 65536, (23, 31), dtype=np.uint16) if with_alpha else None
    path = tmp_path / f"out{ext}"
    save_image(path, pixels, alpha)
    loaded = load_image(path)
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, pixels)
    if with_alpha:
        np.testing.assert_array_equal(loaded.alpha, alpha)
    # An independent reader (Pillow, 8-bit) sees the high bytes.
    with Image.open(path) as im:
        assert im.size == (31, 23) and im.mode == ("RGBA" if with_alpha else "RGB")
        np.testing.assert_array_equal(np.asarray(im)[..., :3], (pixels >> 8).astype(np.uint8))


def test_16bit_png_spanning_several_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "_BLOCK_PIXELS", 50)  # several row blocks and IDAT chunks
    pixels = _rgb16(40, 20)
    save_image(tmp_path / "o.png", pixels)
    np.testing.assert_array_equal(load_image(tmp_path / "o.png").pixels, pixels)


@pytest.mark.parametrize("ext", [".png", ".tif", ".webp", ".bmp", ".jpg", ".jpeg"])
def test_8bit_write_formats(tmp_path, ext):
    ramp = np.linspace(0, 255, 32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128.0 + 0 * ramp[None, :]), axis=2)
    pixels = pixels.astype(np.uint8)  # smooth, so the lossy formats stay close
    path = tmp_path / f"o{ext}"
    save_image(path, pixels)
    loaded = load_image(path)
    assert loaded.bit_depth == 8
    error = np.abs(loaded.pixels.astype(int) - pixels)
    if ext in (".png", ".tif", ".bmp"):
        assert error.max() == 0
    else:
        assert error.mean() < 3


@pytest.mark.parametrize(
    "ext, keeps_alpha", [(".png", True), (".tif", True), (".webp", True), (".jpg", False), (".bmp", False)]
)
def test_alpha_kept_only_where_format_allows(tmp_path, ext, keeps_alpha):
    alpha = np.kron(RNG.integers(0, 256, (3, 4), dtype=np.uint8), np.ones((4, 4), np.uint8))
    path = tmp_path / f"o{ext}"
    save_image(path, _rgb8(12, 16), alpha)
    loaded = load_image(path)
    if keeps_alpha:
        np.testing.assert_array_equal(loaded.alpha, alpha)
    else:
        assert loaded.alpha is None


def test_16bit_to_8bit_formats_rounds(tmp_path):
    pixels = np.full((4, 4, 3), 65535, np.uint16)
    pixels[0] = 25828  # 100.498 in 8-bit units
    pixels[1] = 25829  # 100.502
    save_image(tmp_path / "o.bmp", pixels)
    loaded = load_image(tmp_path / "o.bmp").pixels
    assert (loaded[0] == 100).all() and (loaded[1] == 101).all() and (loaded[2:] == 255).all()


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="xyz"):
        save_image(tmp_path / "o.xyz", _rgb8())
    assert issubclass(UnsupportedFormatError, ValueError)
    assert not (tmp_path / "o.xyz").exists()


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "o.png"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="o.png"):
        save_image(path, _rgb8())
    assert path.read_bytes() == b"keep me"
    pixels = _rgb8()
    save_image(path, pixels, overwrite=True)
    np.testing.assert_array_equal(load_image(path).pixels, pixels)


def test_same_file_as_source_is_always_refused(tmp_path):
    source = tmp_path / "in.png"
    save_image(source, _rgb8())
    before = source.read_bytes()
    with pytest.raises(SameFileError):
        save_image(source, _rgb8(), overwrite=True, source=source)
    with pytest.raises(SameFileError):
        save_image(tmp_path / "sub" / ".." / "in.png", _rgb8(), overwrite=True, source=source)
    link = tmp_path / "link.png"
    link.symlink_to(source)
    with pytest.raises(SameFileError):
        save_image(link, _rgb8(), overwrite=True, source=source)
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    "encoder, pixels, name", [("_write_png", _rgb8(), "o.png"), ("_write_png", _rgb16(), "o.png"), ("_write_pillow", _rgb8(), "o.jpg")]
)
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, encoder, pixels, name):
    def fail_halfway(handle, *args):
        handle.write(b"\x89PNG partial data")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(imageio, encoder, fail_halfway)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_image(tmp_path / name, pixels)
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "o.png"
    path.write_bytes(b"old")

    def fail(*args):
        raise OSError("no space left")

    monkeypatch.setattr(imageio, "_write_png", fail)
    with pytest.raises(imageio.OutputError, match="no space left"):
        save_image(path, _rgb8(), overwrite=True)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["o.png"]


def test_write_creates_parent_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "nested" / "dir" / "o.png"
    save_image(path, _rgb8())
    assert os.listdir(path.parent) == ["o.png"]


def _tiff_with_pages(path: Path, frames: list[tuple[Image.Image, dict]]) -> Path:
    """A TIFF whose pages each carry their own tags (Pillow's save_all gives every page the same)."""
    from PIL import TiffImagePlugin

    with open(path, "w+b") as fp, TiffImagePlugin.AppendingTiffWriter(fp) as writer:
        for frame, tags in frames:
            frame.encoderinfo, frame.encoderconfig = {"tiffinfo": tags, "dpi": (300, 300)}, ()
            TiffImagePlugin._save(frame, writer, str(path))
            writer.newFrame()
    return path


def test_a_tiff_counts_its_full_size_pages_and_keeps_the_first_pages_pixels_and_tags(tmp_path):
    first = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1)))
    second = Image.fromarray(np.full((40, 60), 200, np.uint8))
    preview = first.resize((15, 10))
    album = _tiff_with_pages(tmp_path / "album.tif",
                             [(first, {270: "page one"}), (second, {270: "page two"}), (preview, {254: 1})])
    loaded = imageio.load_image(album)
    assert loaded.pages == 2  # the scanner's reduced-resolution preview is not a page
    np.testing.assert_array_equal(loaded.pixels[..., 0], np.asarray(first))
    assert loaded.metadata.dpi == (300, 300) and loaded.metadata.tags.get(270) == "page one"
    single = _tiff_with_pages(tmp_path / "scan.tif", [(first, {}), (preview, {254: 1})])
    assert imageio.load_image(single).pages == 1
    first.save(tmp_path / "plain.png")
    assert imageio.load_image(tmp_path / "plain.png").pages == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pages_are_taken_one_at_a_time_while_the_tiff_is_written(tmp_path, dtype):
    """An album is never held whole: when a page is asked for, the pages before the one just
    written are gone."""
    import gc
    import weakref

    alive: set[int] = set()
    most_alive = 0

    def pages():
        nonlocal most_alive
        for number in range(1, 6):
            gc.collect()
            most_alive = max(most_alive, len(alive))
            page = np.full((30, 40 + number, 3), number * 40, dtype)
            alive.add(number)
            weakref.finalize(page, alive.discard, number)
            yield page, None

    first = np.zeros((30, 40, 3), dtype)
    imageio.save_image(tmp_path / "album.tif", first, more_pages=pages())
    loaded = imageio.load_pages(tmp_path / "album.tif")
    assert [p.pixels.shape[1] for p in loaded] == [40, 41, 42, 43, 44, 45]
    assert [int(p.pixels[0, 0, 0]) for p in loaded[1:]] == [40 * n for n in range(1, 6)]
    assert most_alive <= 1  # the page just written, while the next one is made


def test_a_page_that_cannot_be_made_stops_the_write_with_its_own_error(tmp_path):
    def pages():
        yield np.zeros((8, 8, 3), np.uint8), None
        raise imageio.ImageError("Cannot read page 3 of album.tif: the file is corrupt")

    target = tmp_path / "out.tif"
    with pytest.raises(imageio.ImageError, match="page 3"):
        imageio.save_image(target, np.zeros((8, 8, 3), np.uint8), more_pages=pages())
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pages_written_to_a_tiff_read_back_exactly(tmp_path, dtype):
    from colorize_cli.metadata import ImageMetadata

    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    first = rng.integers(0, top, (20, 30, 3), dtype=dtype, endpoint=True)
    second = rng.integers(0, top, (25, 10, 3), dtype=dtype, endpoint=True)
    second_alpha = rng.integers(0, top, (25, 10), dtype=dtype, endpoint=True)
    third = rng.integers(0, top, (5, 7, 3), dtype=dtype, endpoint=True)
    path = tmp_path / "pages.tif"
    own = ImageMetadata(dpi=(600, 600), tags={270: "the back of the photo"})
    imageio.save_image(path, first, None, metadata=ImageMetadata(dpi=(300, 300)),
                       more_pages=[(second, second_alpha), (third, None, own)])
    pages = imageio.load_pages(path)
    assert [p.pages for p in pages] == [3, 3, 3] and all(p.pixels.dtype == dtype for p in pages)
    np.testing.assert_array_equal(pages[0].pixels, first)
    np.testing.assert_array_equal(pages[1].pixels, second)
    np.testing.assert_array_equal(pages[1].alpha, second_alpha)
    np.testing.assert_array_equal(pages[2].pixels, third)
    assert pages[0].alpha is None and [p.metadata.dpi for p in pages] == [(300, 300), (300, 300), (600, 600)]
    assert pages[2].metadata.tags[270] == "the back of the photo" and 270 not in pages[1].metadata.tags
    with pytest.raises(imageio.ImageError, match="Cannot read page 4 of .*: it has 3"):
        imageio.load_image(path, page=3)
    with pytest.raises(ValueError, match="only a TIFF holds several pages"):
        imageio.save_image(tmp_path / "pages.png", first, None, more_pages=[(third, None)])


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp", ".png", ".tif"])
def test_a_full_disk_is_an_output_error_and_leaves_no_file_in_every_format(tmp_path, monkeypatch, suffix):
    """Pillow's encoders write straight to a file descriptor when they get one and do not check
    short writes: a small JPEG on a full disk came out truncated, reported done. Every write must go
    through a path that raises (simulated: the file takes 100 bytes, then ENOSPC)."""
    import errno

    real_create = imageio._create_temp

    class FullDisk(io.BufferedWriter):
        written = 0

        def write(self, data):
            FullDisk.written += len(data)
            if FullDisk.written > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def create_on_a_full_disk(path):
        tmp, handle = real_create(path)
        return tmp, FullDisk(handle.detach())

    monkeypatch.setattr(imageio, "_create_temp", create_on_a_full_disk)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = tmp_path / f"out{suffix}"
    with pytest.raises(imageio.OutputError, match="No space left"):
        imageio.save_image(out, pixels)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX pipes")
def test_a_pipe_or_a_device_is_named_as_such_not_as_an_empty_file(tmp_path):
    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    with pytest.raises(imageio.ImageError, match="it is a pipe, not a file.*colorize - -o"):
        imageio.load_image(fifo)
    if Path("/dev/zero").exists():
        with pytest.raises(imageio.ImageError, match="it is a device"):
            imageio.load_image("/dev/zero")
