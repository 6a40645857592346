"""png: the parallel PNG encoder writes valid, lossless, thread-independent files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from colorize_cli import png

RNG = np.random.default_rng(3)


def _decode(data: bytes) -> tuple[dict, np.ndarray]:
    """An independent reader: chunk CRCs checked, IDATs inflated (zlib checks the adler32), any of the
    five row filters undone. Returns (IHDR fields, samples as (H, W, channels) uint8/uint16)."""
    assert data.startswith(png.SIGNATURE)
    pos, idat, header = len(png.SIGNATURE), b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            header = {"width": width, "height": height, "depth": depth, "colour_type": colour_type}
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kind == b"IEND"
    channels = {2: 3, 6: 4}[header["colour_type"]]
    bpp = channels * header["depth"] // 8
    lines = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(header["height"], -1).astype(np.int64)
    rows, previous = [], np.zeros(lines.shape[1] - 1, np.int64)
    for line in lines:
        kind, row = line[0], line[1:].copy()
        for i in range(len(row)):
            left = row[i - bpp] if i >= bpp else 0
            up, up_left = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] += left
            elif kind == 2:
                row[i] += up
            elif kind == 3:
                row[i] += (left + up) // 2
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                row[i] += left if pa <= pb and pa <= pc else up if pb <= pc else up_left
            row[i] &= 0xFF
        rows.append(row)
        previous = row
    samples = np.array(rows, np.uint8)
    if header["depth"] == 16:
        samples = samples.reshape(header["height"], -1, 2).astype(np.uint16)
        samples = samples[..., 0] << 8 | samples[..., 1]
    return header, samples.reshape(header["height"], header["width"], channels)


def _write(pixels, alpha=None, **options) -> bytes:
    buffer = io.BytesIO()
    png.write_png(buffer, pixels, alpha, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("with_alpha", [False, True])
@pytest.mark.parametrize("segment_bytes", [1 << 20, 50, 700])  # one segment; one per row; several rows each
def test_lossless_at_any_segment_size(monkeypatch, dtype, with_alpha, segment_bytes):
    monkeypatch.setattr(png, "SEGMENT_BYTES", segment_bytes)
    top = np.iinfo(dtype).max
    pixels = RNG.integers(0, top + 1, (23, 17, 3), dtype=dtype)
    alpha = RNG.integers(0, top + 1, (23, 17), dtype=dtype) if with_alpha else None
    header, samples = _decode(_write(pixels, alpha, threads=3))
    assert header["depth"] == 8 * np.dtype(dtype).itemsize
    expected = pixels if alpha is None else np.concatenate([pixels, alpha[..., None]], axis=2)
    np.testing.assert_array_equal(samples, expected)


def test_pillow_reads_it_with_the_chunks_given(monkeypatch):
    monkeypatch.setattr(png, "SEGMENT_BYTES", 4096)  # many segments, each primed by the one before
    y, x = np.mgrid[0:120, 0:90]
    pixels = np.stack([x * 2, y * 2, (x + y) % 256], axis=2).astype(np.uint8)
    data = _write(pixels, chunks=[(b"tEXt", b"Software\0colorize test"), (b"pHYs", struct.pack(">IIB", 11811, 11811, 1))])
    with Image.open(io.BytesIO(data)) as im:
        np.testing.assert_array_equal(np.asarray(im), pixels)
        assert im.info["Software"] == "colorize test"
        assert round(im.info["dpi"][0]) == 300


def test_the_bytes_do_not_depend_on_the_number_of_threads(monkeypatch):
    monkeypatch.setattr(png, "SEGMENT_BYTES", 2048)
    pixels = RNG.integers(0, 256, (200, 64, 3), dtype=np.uint8)
    one = _write(pixels, threads=1)
    assert _write(pixels, threads=2) == one and _write(pixels, threads=7) == one


def test_compresses_a_photo_like_image_as_well_as_pillow():
    # A smooth picture with film grain, where a missing or wrong filter would cost a lot of size.
    y, x = np.mgrid[0:400, 0:600].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(x / 40), 128 + 90 * np.cos(y / 30), 100 + (x + y) / 10], axis=2)
    pixels = np.clip(base + RNG.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    ours = len(_write(pixels, level=3))
    pillow = io.BytesIO()
    Image.fromarray(pixels).save(pillow, format="PNG", compress_level=3)
    assert ours < 1.05 * len(pillow.getvalue())
    unfiltered = len(zlib.compress(pixels.tobytes(), 3))
    assert ours < 0.8 * unfiltered


def test_adler32_combine_matches_zlib():
    for first_length, second_length in [(0, 5), (5, 0), (1000, 70000), (70000, 65521 * 3 + 7)]:
        first = RNG.integers(0, 256, first_length, dtype=np.uint8).tobytes()
        second = RNG.integers(0, 256, second_length, dtype=np.uint8).tobytes()
        combined = png.adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(first + second)


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="uint8 or uint16"):
        _write(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="alpha"):
        _write(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8))
