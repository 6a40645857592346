"""AVIF and HEIF/HEIC: read and written like the other formats; without their plugin, said so.

Phones save HEIC (iPhones by default), so a box of prints photographed with a phone arrives as
HEIC. Pillow reads AVIF itself when built with libavif; HEIF needs the optional pillow-heif.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from colorize_cli import imageio
from colorize_cli.batch import discover
from colorize_cli.errors import ExitCode
from colorize_cli.imageio import ImageError, UnsupportedFormatError, load_image, output_format, save_image

from test_cli import error_lines, run

Image.init()
needs_avif = pytest.mark.skipif("AVIF" not in Image.SAVE, reason="this Pillow has no AVIF support")


def _heif_installed() -> bool:
    return imageio._heif_plugin()


needs_heif = pytest.mark.skipif(not _heif_installed(), reason="pillow-heif is not installed")


def _grey_photo(h: int = 48, w: int = 72) -> Image.Image:
    """A smooth grey picture with a bright block in its top-left corner (lossy codecs keep it)."""
    y, x = np.mgrid[0:h, 0:w]
    grey = (60 + 80 * x / w + 40 * y / h).astype(np.uint8)
    grey[: h // 4, : w // 4] = 250
    return Image.fromarray(grey).convert("RGB")


def _turned_with_caption(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010E] = "Grandmother, 1931"
    return exif.tobytes()


def _check_upright(path) -> None:
    loaded = load_image(path)
    assert loaded.pixels.shape == (72, 48, 3)  # orientation 6: a 72 x 48 picture stands up as 48 x 72
    assert loaded.was_grey or np.abs(loaded.pixels.astype(int) - loaded.pixels[..., :1]).max() <= 3
    bright = loaded.pixels[..., 0] > 200
    ys, xs = np.nonzero(bright)
    assert ys.max() < 72 // 3 and xs.min() > 48 // 2  # the corner block went to the top-right
    assert loaded.metadata.tags.get(0x010E) == "Grandmother, 1931"


@needs_avif
def test_avif_loads_upright_with_its_metadata(tmp_path):
    path = tmp_path / "print.avif"
    _grey_photo().save(path, exif=_turned_with_caption(), quality=95)
    assert load_image(path).format == "AVIF"
    _check_upright(path)


@needs_heif
def test_heic_loads_upright_with_its_metadata(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    _grey_photo().save(path, format="HEIF", exif=_turned_with_caption(), quality=95)
    assert load_image(path).format == "HEIF"
    _check_upright(path)


@needs_heif
@pytest.mark.parametrize("channels", [1, 3])
def test_a_10bit_heic_is_read_at_full_depth(tmp_path, channels):
    """Pillow's HEIF plugin gives an HDR phone photo's 10-bit samples as 8 bits."""
    import pillow_heif

    h, w = 48, 72
    ramp = np.linspace(0, 65535, h * w).astype(np.uint16).reshape(h, w)  # ~1000 10-bit levels
    samples = ramp if channels == 1 else np.repeat(ramp[:, :, None], 3, axis=2)
    path = tmp_path / "IMG_0002.HEIC"
    pillow_heif.from_bytes(mode="L;16" if channels == 1 else "RGB;16", size=(w, h),
                           data=samples.tobytes()).save(path, quality=-1, exif=_turned_with_caption())
    assert Image.open(path).info["bit_depth"] == 10
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.was_grey and len(np.unique(loaded.pixels)) > 256
    assert loaded.pixels.max() == 65535  # 1023 widened to the top of the range, not 65472
    upright = np.rot90(ramp, k=-1)  # orientation 6: turned a quarter clockwise
    np.testing.assert_allclose(loaded.pixels[..., 0].astype(int), upright.astype(int), atol=3 * 64)  # 3 10-bit levels
    assert loaded.pixels.shape == (w, h, 3)  # turned upright by its orientation 6, as an 8-bit HEIC is
    assert loaded.metadata.tags.get(0x010E) == "Grandmother, 1931"


@pytest.mark.parametrize("ext", [pytest.param(".avif", marks=needs_avif), pytest.param(".heic", marks=needs_heif)])
def test_phone_formats_are_written_with_alpha_and_the_note(tmp_path, ext):
    pixels = np.asarray(_grey_photo(32, 40))
    alpha = np.full((32, 40), 255, np.uint8)
    alpha[:, :10] = 0
    meta = imageio.ImageMetadata(tags={0x010E: "A caption"}, software="colorize test note")
    path = tmp_path / f"out{ext}"
    save_image(path, pixels, alpha, metadata=meta)
    back = load_image(path)
    assert back.pixels.shape == (32, 40, 3)
    assert np.abs(back.pixels.astype(int) - pixels).mean() < 4
    assert back.alpha is not None and back.alpha[:, :10].max() < 20 and back.alpha[:, 12:].min() > 235
    with Image.open(path) as im:
        exif = im.getexif()
    assert exif.get(0x010E) == "A caption" and exif.get(0x0131) == "colorize test note"
    # A fresh process (no HEIF opener registered yet) still reads the note a rerun looks for.
    code = f"from colorize_cli.metadata import software_note; print(software_note({str(path)!r}))"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "colorize test note"


def test_a_heic_photo_without_pillow_heif_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "_READ_FORMATS", tuple(f for f in imageio._READ_FORMATS if f != "HEIF"))
    path = tmp_path / "IMG_0002.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))  # a HEIC file's start
    with pytest.raises(ImageError, match="HEIF/HEIC photo, which needs the optional pillow-heif package"):
        load_image(path)
    not_heif = tmp_path / "notes.heic"
    not_heif.write_bytes(b"just some text, not a photo")
    with pytest.raises(ImageError, match="not a supported image"):
        load_image(not_heif)


def test_heic_output_without_pillow_heif_is_refused_with_the_reason(monkeypatch):
    monkeypatch.delitem(Image.SAVE, "HEIF", raising=False)
    monkeypatch.setattr(imageio, "_heif_plugin", lambda: False)
    with pytest.raises(UnsupportedFormatError, match="pillow-heif"):
        output_format("out.heic")


def test_batch_lists_heic_files_and_reports_them_when_unreadable(fake_registry, tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "_READ_FORMATS", tuple(f for f in imageio._READ_FORMATS if f != "HEIF"))
    scans = tmp_path / "scans"
    scans.mkdir()
    _grey_photo().save(scans / "a.png")
    (scans / "b.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    assert {p.name for p in discover(scans, recursive=False, pattern=None)} == {"a.png", "b.HEIC"}
    result = run("batch", scans, "--size", "16")
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    assert (tmp_path / "scans-colorized" / "a.png").is_file()
    assert "pillow-heif" in result.stderr


def test_one_heic_input_without_pillow_heif_is_one_error_line(fake_registry, tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "_READ_FORMATS", tuple(f for f in imageio._READ_FORMATS if f != "HEIF"))
    path = tmp_path / "IMG_0003.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    result = run(path)
    assert result.exit_code == ExitCode.BAD_INPUT, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "pip install pillow-heif" in lines[0]


def test_batch_format_heic_without_pillow_heif_says_what_to_install(fake_registry, tmp_path, monkeypatch):
    monkeypatch.delitem(Image.SAVE, "HEIF", raising=False)
    monkeypatch.setattr(imageio, "_heif_plugin", lambda: False)
    scans = tmp_path / "scans"
    scans.mkdir()
    _grey_photo().save(scans / "a.png")
    result = run("batch", scans, "--format", "heic")
    assert result.exit_code == ExitCode.USAGE
    lines = error_lines(result)
    assert len(lines) == 1 and "pip install pillow-heif" in lines[0]
    assert not (tmp_path / "scans-colorized").exists()


def test_pillow_heif_is_imported_only_for_heif_files(tmp_path):
    import subprocess
    import sys

    png = tmp_path / "a.png"
    _grey_photo().save(png)
    code = ("import sys; from colorize_cli.imageio import load_image, output_format; "
            f"load_image({str(png)!r}); output_format('x.avif'); assert 'pillow_heif' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)  # ~25 ms of every command otherwise
