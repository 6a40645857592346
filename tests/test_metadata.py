"""A colouring keeps its photo's metadata (as far as the format holds it) and says how it was made."""

from __future__ import annotations

import json
import numpy as np
import pytest
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo
from typer.testing import CliRunner

from colorize_cli.cli import app
from colorize_cli.imageio import load_image, save_image
from colorize_cli.metadata import ImageMetadata

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:source="Box 3"/></rdf:RDF></x:xmpmeta>')
NOTE = "colorize test note"


def scan_exif() -> Image.Exif:
    """EXIF as a scanner and an archive leave it: rotated a quarter turn, dated, described."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Software] = "EPSON Scan"
    exif[ExifTags.Base.ImageDescription] = "Wedding, 1931"
    exif[ExifTags.Base.Artist] = "A. Archivist"
    exif[ExifTags.Base.BitsPerSample] = (8, 8, 8)  # a layout tag: describes the old file only
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = "1931:05:01 10:00:00"
    sub[ExifTags.Base.ColorSpace] = 0xFFFF  # uncalibrated (e.g. Adobe RGB)
    sub[ExifTags.Base.ExifImageWidth] = 40
    sub[ExifTags.Base.MakerNote] = b"\x00\x01private offsets"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    return exif


def grey_scan(height: int = 30, width: int = 40) -> Image.Image:
    return Image.fromarray((np.arange(height * width).reshape(height, width) % 251).astype(np.uint8)).convert("RGB")


@pytest.fixture
def jpeg_scan(tmp_path):
    path = tmp_path / "scan.jpg"
    grey_scan().save(path, exif=scan_exif().tobytes(), dpi=(600, 300), xmp=XMP, comment="box 3, envelope 2")
    return path


def test_reading_keeps_descriptive_fields_and_drops_layout_orientation_and_maker_notes(jpeg_scan):
    image = load_image(jpeg_scan)
    meta = image.metadata
    assert image.pixels.shape == (40, 30, 3)  # turned upright
    assert meta.dpi == (300, 600)  # ... so the axes' resolutions swap too
    assert meta.tags == {ExifTags.Base.ImageDescription: "Wedding, 1931", ExifTags.Base.Artist: "A. Archivist"}
    assert meta.exif_ifd[ExifTags.Base.DateTimeOriginal] == "1931:05:01 10:00:00"
    assert ExifTags.Base.MakerNote not in meta.exif_ifd
    assert meta.gps_ifd == {ExifTags.GPS.GPSLatitudeRef: "N"}
    assert meta.xmp == XMP
    assert meta.text == {"Comment": "box 3, envelope 2"}


# What each output format can hold: (dpi, EXIF with sub-IFDs, XMP, comment)
CAPABILITIES = {"png": (True, True, True, True), "jpg": (True, True, True, True), "tif": (True, True, True, False),
                "webp": (True, True, True, False), "bmp": (True, False, False, False)}


@pytest.mark.parametrize("ext", sorted(CAPABILITIES))
def test_outputs_carry_the_metadata_their_format_holds(jpeg_scan, tmp_path, ext):
    image = load_image(jpeg_scan)
    out = tmp_path / f"out.{ext}"
    save_image(out, image.pixels, metadata=image.metadata.with_software(NOTE))
    dpi, exif, xmp, comment = CAPABILITIES[ext]
    back = load_image(out).metadata
    assert back.dpi == ((300, 600) if dpi else None)
    written = Image.open(out).getexif()
    assert written.get(ExifTags.Base.Orientation) in (None, 1)  # never rotated twice
    if exif:
        assert written[ExifTags.Base.Software] == NOTE
        assert back.tags[ExifTags.Base.ImageDescription] == "Wedding, 1931"
        assert ExifTags.Base.BitsPerSample not in back.tags
        assert back.exif_ifd[ExifTags.Base.DateTimeOriginal] == "1931:05:01 10:00:00"
        assert back.exif_ifd[ExifTags.Base.ColorSpace] == 1  # sRGB, as the pixels are now
        assert back.exif_ifd[ExifTags.Base.ExifImageWidth] == 30  # the upright width
        assert back.gps_ifd == {ExifTags.GPS.GPSLatitudeRef: "N"}
    assert (back.xmp == XMP) if xmp else back.xmp is None
    assert back.text.get("Comment") == ("box 3, envelope 2" if comment else None)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_outputs_carry_resolution_text_tags_and_xmp(jpeg_scan, tmp_path, ext):
    meta = load_image(jpeg_scan).metadata.with_software(NOTE)
    pixels = np.random.default_rng(0).integers(0, 65536, (12, 16, 3), dtype=np.uint16)
    out = tmp_path / f"out16.{ext}"
    save_image(out, pixels, metadata=meta)
    back = load_image(out)
    assert np.array_equal(back.pixels, pixels)  # the metadata did not disturb the pixels
    assert back.metadata.dpi == (300, 600)
    assert back.metadata.tags[ExifTags.Base.Artist] == "A. Archivist"
    assert Image.open(out).getexif()[ExifTags.Base.Software] == NOTE
    assert back.metadata.xmp == XMP
    assert back.metadata.exif_ifd[ExifTags.Base.DateTimeOriginal] == "1931:05:01 10:00:00"
    assert back.metadata.gps_ifd == {ExifTags.GPS.GPSLatitudeRef: "N"}


def test_png_text_round_trips_including_non_latin_text(tmp_path):
    info = PngInfo()
    info.add_text("Title", "Box 3")
    info.add_itxt("Description", "Hochzeit – 1931, Łódź")
    info.add_text("Software", "old editor")  # replaced by the note
    src = tmp_path / "scan.png"
    grey_scan().save(src, pnginfo=info)
    meta = load_image(src).metadata.with_software(NOTE)
    for name, pixels in (("8.png", np.zeros((4, 4, 3), np.uint8)), ("16.png", np.zeros((4, 4, 3), np.uint16))):
        save_image(tmp_path / name, pixels, metadata=meta)
        text = Image.open(tmp_path / name).text
        assert text["Title"] == "Box 3" and text["Description"] == "Hochzeit – 1931, Łódź"
        assert text["Software"] == NOTE


def test_stripped_metadata_keeps_only_resolution_and_note(jpeg_scan, tmp_path):
    meta = load_image(jpeg_scan).metadata.with_software(NOTE).stripped()
    assert meta == ImageMetadata(dpi=(300, 600), software=NOTE)
    save_image(tmp_path / "out.jpg", np.zeros((4, 4, 3), np.uint8), metadata=meta)
    back = load_image(tmp_path / "out.jpg").metadata
    assert back.tags == {} and back.exif_ifd == {} and back.gps_ifd == {} and back.xmp is None


def test_garbage_exif_is_ignored_not_fatal(tmp_path):
    src = tmp_path / "odd.jpg"
    grey_scan().save(src, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff garbage")
    image = load_image(src)
    assert image.pixels.shape == (30, 40, 3)
    save_image(tmp_path / "out.png", image.pixels, metadata=image.metadata.with_software(NOTE))
    assert Image.open(tmp_path / "out.png").text["Software"] == NOTE


def test_cli_outputs_name_model_and_settings_and_strip_on_request(jpeg_scan, tiny_weights, tmp_path):
    runner = CliRunner()
    kept, stripped = tmp_path / "kept.jpg", tmp_path / "stripped.jpg"
    result = runner.invoke(app, [str(jpeg_scan), "-o", str(kept), "--weights", str(tiny_weights["unet"]),
                                 "--saturation", "2", "--seed", "7"])
    assert result.exit_code == 0, result.output
    note = Image.open(kept).getexif()[ExifTags.Base.Software]
    assert note.startswith("colorize ") and "model unet" in note
    assert "saturation 2" in note and "seed 7" in note and "sha256 " in note
    assert load_image(kept).metadata.exif_ifd[ExifTags.Base.DateTimeOriginal] == "1931:05:01 10:00:00"

    result = runner.invoke(app, [str(jpeg_scan), "-o", str(stripped), "--weights", str(tiny_weights["unet"]),
                                 "--strip-metadata"])
    assert result.exit_code == 0, result.output
    meta = load_image(stripped).metadata
    assert meta.tags == {} and meta.gps_ifd == {} and meta.xmp is None and meta.dpi == (300, 600)
    assert Image.open(stripped).getexif()[ExifTags.Base.Software].startswith("colorize ")


def test_metadata_too_big_for_a_jpeg_segment_is_dropped_not_fatal(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.ImageDescription] = "a long caption " * 5000  # 75 kB
    exif[ExifTags.Base.Artist] = "A. Archivist"
    src = tmp_path / "scan.tif"
    big_xmp = XMP.replace(b"Box 3", b"x" * 100_000)
    exif[700] = big_xmp  # Pillow's TIFF writer takes XMP as a main-IFD tag
    grey_scan().save(src, exif=exif.tobytes())
    meta = load_image(src).metadata.with_software(NOTE)
    assert meta.xmp == big_xmp
    save_image(tmp_path / "out.jpg", np.zeros((4, 4, 3), np.uint8), metadata=meta)
    written = Image.open(tmp_path / "out.jpg").getexif()
    assert written[ExifTags.Base.Software] == NOTE
    assert ExifTags.Base.ImageDescription not in written
    assert load_image(tmp_path / "out.jpg").metadata.xmp is None
    save_image(tmp_path / "out.png", np.zeros((4, 4, 3), np.uint8), metadata=meta)  # PNG holds it all
    assert load_image(tmp_path / "out.png").metadata.xmp == big_xmp


def test_xmp_orientation_is_reset_so_the_upright_output_is_not_turned_again(tmp_path):
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
           b'<rdf:Description><tiff:Orientation>6</tiff:Orientation></rdf:Description></rdf:RDF></x:xmpmeta>')
    src = tmp_path / "lr.jpg"
    grey_scan().save(src, exif=scan_exif().tobytes(), xmp=xmp)
    image = load_image(src)
    assert b'tiff:Orientation="1"' in image.metadata.xmp and b"<tiff:Orientation>1<" in image.metadata.xmp
    for ext in ("jpg", "png", "webp"):
        out = tmp_path / f"out.{ext}"
        save_image(out, image.pixels, metadata=image.metadata)
        assert load_image(out).pixels.shape == image.pixels.shape  # read back upright, not turned


def test_resolution_only_when_the_file_states_one(tmp_path):
    grey_scan().save(tmp_path / "none.tif")  # Pillow reports 1 dpi for it
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = "A. Archivist"
    grey_scan().save(tmp_path / "none.jpg", exif=exif.tobytes())  # Pillow reports 72 dpi for it
    grey_scan().save(tmp_path / "absurd.png", dpi=(100_000, 100_000))
    for name in ("none.tif", "none.jpg", "absurd.png"):
        assert load_image(tmp_path / name).metadata.dpi is None, name
    exif[ExifTags.Base.XResolution], exif[ExifTags.Base.YResolution], exif[ExifTags.Base.ResolutionUnit] = 240, 240, 2
    grey_scan().save(tmp_path / "exif.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "exif.jpg").metadata.dpi == (240, 240)


def test_a_turned_tiff_swaps_its_resolution_too(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    grey_scan().save(tmp_path / "turned.tif", exif=exif.tobytes(), dpi=(300, 150))
    image = load_image(tmp_path / "turned.tif")
    assert image.pixels.shape == (40, 30, 3) and image.metadata.dpi == (150, 300)


def test_non_ascii_exif_text_and_long_comments_survive_or_are_dropped_cleanly(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.ImageDescription] = "Grand-mère 1923 写真".encode("utf-8")
    src = tmp_path / "gm.png"
    info = PngInfo()
    info.add_text("Comment", "c" * 70_000)
    grey_scan().save(src, exif=exif.tobytes(), pnginfo=info)
    meta = load_image(src).metadata.with_software(NOTE)
    for ext, dtype in (("jpg", np.uint8), ("png", np.uint8), ("tif", np.uint8), ("tif", np.uint16)):
        save_image(tmp_path / f"out.{ext}", np.zeros((4, 4, 3), dtype), metadata=meta, overwrite=True)
        written = Image.open(tmp_path / f"out.{ext}").getexif()[ExifTags.Base.ImageDescription]
        assert written.encode("latin-1").decode("utf-8") == "Grand-mère 1923 写真"  # the source's bytes
    assert "comment" not in Image.open(tmp_path / "out.jpg").info  # over a JPEG segment: dropped
    assert Image.open(tmp_path / "out.png").text["Comment"] == "c" * 70_000


def test_a_tag_pillow_cannot_write_is_left_out_alone():
    from colorize_cli.metadata import exif_bytes

    meta = ImageMetadata(tags={ExifTags.Base.ImageDescription: "Wedding"},
                         exif_ifd={ExifTags.Base.DateTimeOriginal: "1931:05:01 10:00:00", 0xA420: complex(1, 2)},
                         gps_ifd={ExifTags.GPS.GPSLatitudeRef: "N"}, software=NOTE)
    exif = Image.Exif()
    exif.load(exif_bytes(meta, (10, 10)))
    assert exif[ExifTags.Base.ImageDescription] == "Wedding" and exif[ExifTags.Base.Software] == NOTE
    assert exif.get_ifd(ExifTags.IFD.Exif) == {ExifTags.Base.DateTimeOriginal: "1931:05:01 10:00:00"}
    assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {ExifTags.GPS.GPSLatitudeRef: "N"}


def test_an_orientation_or_ifd_pointer_inside_a_sub_ifd_is_not_copied(tmp_path):
    # What a corrupt file whose Exif IFD points back at the main IFD looks like once read.
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.Orientation] = 6
    sub[ExifTags.Base.DateTimeOriginal] = "1923:05:01 10:00:00"
    sub[ExifTags.IFD.GPSInfo] = 1234
    src = tmp_path / "odd.jpg"
    grey_scan().save(src, exif=exif.tobytes())
    meta = load_image(src).metadata
    assert ExifTags.Base.Orientation not in meta.exif_ifd and ExifTags.IFD.GPSInfo not in meta.exif_ifd
    save_image(tmp_path / "out.jpg", np.zeros((4, 4, 3), np.uint8), metadata=meta.with_software(NOTE))
    written = Image.open(tmp_path / "out.jpg").getexif()
    assert ExifTags.Base.Orientation not in written
    assert written.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) == "1923:05:01 10:00:00"
    assert ExifTags.Base.Orientation not in written.get_ifd(ExifTags.IFD.Exif)


@pytest.mark.parametrize("description, kept", [
    ('{"shape": [20, 30]}', False),  # tifffile's note on the array's layout
    ("ImageJ=1.53t\nimages=1\n", False),
    ("Grandmother, 1931", True),
    ('{"caption": "a dict, but no layout"}', True),
])
def test_a_librarys_layout_note_is_not_taken_for_a_caption(tmp_path, description, kept):
    from colorize_cli.imageio import load_image

    path = tmp_path / "scan.tif"
    Image.fromarray(np.full((20, 30), 90, np.uint8)).save(path, tiffinfo={270: description})
    assert (270 in load_image(path).metadata.tags) is kept


@pytest.mark.parametrize("name", ["scan.jpg", 'odd, source "x".png', "caf\u00e9 1950.tif", "raw-\udcff.jpg", "-"])
def test_a_notes_source_reads_back_whatever_the_name(name, tmp_path):
    """The note names its input last, JSON-quoted in ASCII, so any file name (quotes, the field's
    own words, accents, bytes that are not UTF-8) reads back exactly, from PNG and JPEG alike."""
    from colorize_cli.imageio import save_image
    from colorize_cli.metadata import ImageMetadata, note_settings, note_source, software_note

    note = ("colorize 0.1.0, machine colourisation: model unet (sha256 0123456789abcdef), sampler oneshot, "
            f"steps 1, size 256, saturation 1.1, seed 0, sample 0, hint 1,2:red, source {json.dumps(name)}")
    assert note.isascii() and note_source(note) == name
    for suffix in (".png", ".jpg"):
        path = tmp_path / f"out{suffix}"
        save_image(path, np.zeros((4, 4, 3), np.uint8), metadata=ImageMetadata(software=note))
        assert note_source(software_note(path)) == name
        assert note_settings(software_note(path))["seed"] == "0"
    assert note_source(note[:note.rindex(", source ")]) is None  # a note from before sources were recorded
    assert note_source("GIMP 2.10") is None
