"""What a colouring keeps of its source photo's metadata, and the note it adds about itself.

Archives describe their scans in metadata: the scan resolution, dates, who made and who owns
the photo, captions in XMP or PNG text. A colouring is a derivative of that photo, so it keeps
those fields, and it says how it was made: the EXIF `Software` tag (and PNG `Software` text)
names colorize, the model and the settings, which also makes the file reproducible.

What is kept (when the output format can hold it):

- resolution (DPI): PNG, JPEG, TIFF, BMP, and WebP, AVIF and HEIF as EXIF's XResolution;
- EXIF: descriptive tags of the main IFD (description, make, model, date, artist, copyright,
  ...), the Exif sub-IFD (capture date, exposure, ...) and GPS: JPEG, PNG, WebP, AVIF, HEIF and
  TIFF (a 16-bit one gets them from `tiff_sub_ifds`, as colorize writes those TIFFs itself);
- XMP: JPEG, PNG, WebP, TIFF, AVIF, HEIF;
- text: PNG text chunks (and a JPEG comment) to PNG; the JPEG comment to JPEG.

What is dropped on purpose: the orientation (the pixels are already upright), the EXIF
thumbnail (a grey picture), maker notes (private offsets that break when moved), colour
profiles (the output is sRGB) and the TIFF structure tags of the source.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import ExifTags, Image, TiffImagePlugin

log = logging.getLogger(__name__)

_SOFTWARE = ExifTags.Base.Software  # 0x0131
# Main-IFD tags that describe the photo (not the file's layout), so they hold for its colouring.
_DESCRIPTIVE_TAGS = frozenset({
    ExifTags.Base.DocumentName, ExifTags.Base.ImageDescription, ExifTags.Base.Make, ExifTags.Base.Model,
    ExifTags.Base.PageName, ExifTags.Base.DateTime, ExifTags.Base.Artist, ExifTags.Base.HostComputer,
    ExifTags.Base.Copyright,
})
# In the Exif sub-IFD: maker notes hold offsets into the old file; interop points at another IFD.
_DROPPED_EXIF_TAGS = frozenset({ExifTags.Base.MakerNote, ExifTags.IFD.Interop})
# Never inside a sub-IFD of a sound file; a corrupt one (an IFD pointing back at the main one)
# would carry an orientation and IFD pointers into the output's sub-IFDs.
_MAIN_IFD_ONLY = frozenset({ExifTags.Base.Orientation, ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop})
_COLOR_SPACE, _PIXEL_X, _PIXEL_Y = ExifTags.Base.ColorSpace, ExifTags.Base.ExifImageWidth, ExifTags.Base.ExifImageHeight
_SRGB = 1
_XMP_KEY = "XML:com.adobe.xmp"  # PNG iTXt keyword of XMP packets
_TIFF_XMP = 700
# A JPEG marker segment holds 65,533 bytes; XMP shares its segment with a 29-byte namespace.
_JPEG_EXIF_MAX = 65533
_JPEG_XMP_MAX = 65533 - 29
_JPEG_COMMENT_MAX = 65533
# JPEG keeps DPI in 16 bits; TIFF rationals here have a denominator of 1000
_DPI_RANGE = (1.0, 65535.0)
# XMP's copy of the orientation (Lightroom and Photoshop write both): viewers and Pillow fall
# back to it when EXIF has none, which would turn the upright output again.
_XMP_ORIENTATION = (re.compile(rb'(tiff:Orientation\s*=\s*["\'])\s*\d+\s*(["\'])'),
                    re.compile(rb"(<tiff:Orientation>)\s*\d+\s*(</tiff:Orientation>)"))


@dataclass(frozen=True)
class ImageMetadata:
    """A source photo's metadata that carries over to its colouring (see the module docstring)."""

    dpi: tuple[float, float] | None = None
    tags: dict[int, Any] = field(default_factory=dict)  # descriptive main-IFD EXIF tags
    exif_ifd: dict[int, Any] = field(default_factory=dict)  # the Exif sub-IFD
    gps_ifd: dict[int, Any] = field(default_factory=dict)
    xmp: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)  # PNG text chunks; "Comment": a JPEG comment
    software: str | None = None  # the note on how the colouring was made

    def with_software(self, software: str) -> "ImageMetadata":
        return dataclasses.replace(self, software=software)

    def stripped(self) -> "ImageMetadata":
        """Only what describes the output itself: its resolution and the colorize note."""
        return ImageMetadata(dpi=self.dpi, software=self.software)


def read_metadata(im: Image.Image, orientation: int) -> ImageMetadata:
    """The metadata of an opened image whose pixels were turned by EXIF `orientation`.

    Never raises: a field that cannot be read is left out (a broken EXIF block must not stop
    a photo from being coloured).
    """
    dpi = _read_dpi(im)
    if dpi is not None and orientation in (5, 6, 7, 8):  # a quarter turn swaps the axes
        dpi = (dpi[1], dpi[0])
    tags, exif_ifd, gps_ifd = _read_exif(im)
    xmp = im.info.get("xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(xmp, bytes) and xmp:
        for pattern in _XMP_ORIENTATION:
            xmp = pattern.sub(rb"\g<1>1\g<2>", xmp)
    else:
        xmp = None
    return ImageMetadata(dpi=dpi, tags=tags, exif_ifd=exif_ifd, gps_ifd=gps_ifd, xmp=xmp, text=_read_text(im))


def software_note(path: str | os.PathLike) -> str | None:
    """The EXIF or PNG `Software` field of the image file at `path` (None: none, or unreadable)."""
    from .imageio import readable_formats  # (imageio imports this module)

    try:  # with the formats colorize reads: HEIC needs pillow-heif's opener registered first
        with Image.open(path, formats=readable_formats(path)) as im:
            if im.format == "PNG":
                # Header only: colorize writes its note before the pixels (tEXt/iTXt, eXIf), and a
                # batch asks this of every photo in a folder; `im.text` would decode the image.
                note = im.info.get("Software")
                if not note and "exif" in im.info:
                    note = im.getexif().get(ExifTags.Base.Software)
            else:
                note = im.getexif().get(ExifTags.Base.Software)
    except Exception:  # not an image, unreadable, corrupt EXIF: no note
        return None
    return note if isinstance(note, str) else None


_NOTE_FIELDS = {"model": r"model (\S+)", "sampler": r"sampler (\w+)", "steps": r"steps (\d+)",
                "size": r"size (\d+)", "saturation": r"saturation ([0-9.eE+-]+)", "seed": r"seed (\d+)"}


def note_settings(note: str | None) -> dict[str, str]:
    """The settings a colouring's note records (`Engine.provenance`): model, sampler, steps, size,
    saturation, seed, as strings; {} for a note colorize did not write."""
    if not note or not note.startswith("colorize "):
        return {}
    found = {key: re.search(pattern, note) for key, pattern in _NOTE_FIELDS.items()}
    return {key: match.group(1) for key, match in found.items() if match}


COLOURING_NOTE = "machine colourisation"  # in every colouring's note (Engine.provenance), not in a contact sheet's


def note_source(note: str | None) -> str | None:
    """The input file name a colouring's note records (`Engine.provenance`), None if it records none
    (a note of colorize before 2026-11-27, or not colorize's)."""
    if not note or not note.startswith("colorize "):
        return None
    at = note.rfind(', source "')
    if at < 0:
        return None
    try:
        name = json.loads(note[at + len(", source "):])
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def made_by_colorize(path: str | os.PathLike) -> bool:
    """Whether colorize wrote the image at `path` (a colouring or a contact sheet: see `with_software`)."""
    note = software_note(path)
    return note is not None and note.startswith("colorize ")


def _read_dpi(im: Image.Image) -> tuple[float, float] | None:
    """The resolution the file states; None where Pillow only assumes one."""
    if im.format == "TIFF" and not {282, 283} <= set(getattr(im, "tag_v2", {})):
        return None  # Pillow reports (1, 1) for a TIFF without resolution tags
    if im.format in ("JPEG", "MPO") and im.info.get("jfif_unit") not in (1, 2):
        try:  # without a JFIF density, Pillow falls back to EXIF's, or to 72 when there is none
            if ExifTags.Base.XResolution not in im.getexif():
                return None
        except Exception:
            return None
    if im.format in ("WEBP", "AVIF", "HEIF"):  # no resolution field of their own: EXIF's, if any
        return _exif_dpi(im)
    try:
        x, y = (float(v) for v in im.info.get("dpi"))
    except (TypeError, ValueError):
        return None
    if not (_DPI_RANGE[0] <= x <= _DPI_RANGE[1] and _DPI_RANGE[0] <= y <= _DPI_RANGE[1]):
        return None
    # PNG stores pixels per metre: 600 dpi reads back as 599.9988
    return (_tidy(x), _tidy(y))


def _exif_dpi(im: Image.Image) -> tuple[float, float] | None:
    """The resolution in EXIF's XResolution / YResolution (per inch, or per cm), if sound."""
    try:
        exif = im.getexif()
        x, y = float(exif[ExifTags.Base.XResolution]), float(exif[ExifTags.Base.YResolution])
        per_cm = exif.get(ExifTags.Base.ResolutionUnit, 2) == 3
    except Exception:  # absent, or garbage
        return None
    x, y = (x * 2.54, y * 2.54) if per_cm else (x, y)
    if not (_DPI_RANGE[0] <= x <= _DPI_RANGE[1] and _DPI_RANGE[0] <= y <= _DPI_RANGE[1]):
        return None
    return (_tidy(x), _tidy(y))


def _tidy(value: float) -> float:
    return float(round(value)) if abs(value - round(value)) < 0.01 else value


def _read_exif(im: Image.Image) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    try:
        exif = im.getexif()
        tags = {t: v for t, v in exif.items() if t in _DESCRIPTIVE_TAGS and t != _SOFTWARE}
        if _is_layout_note(tags.get(ExifTags.Base.ImageDescription)):
            del tags[ExifTags.Base.ImageDescription]
        exif_ifd = {t: v for t, v in exif.get_ifd(ExifTags.IFD.Exif).items()
                    if t not in _DROPPED_EXIF_TAGS and t not in _MAIN_IFD_ONLY}
        gps_ifd = {t: v for t, v in exif.get_ifd(ExifTags.IFD.GPSInfo).items() if t not in _MAIN_IFD_ONLY}
    except Exception as e:  # garbage EXIF raises anything from struct.error to SyntaxError
        log.debug("unreadable EXIF: %s", e)
        return {}, {}, {}
    return tags, exif_ifd, gps_ifd


def _is_layout_note(description: Any) -> bool:
    """Whether a TIFF's ImageDescription is a library's note on the array's layout, not a caption:
    tifffile's `{"shape": [...]}` or ImageJ's `ImageJ=...` header. Copied to a colouring, it would
    describe the wrong shape (tifffile warns on reading it back)."""
    if not isinstance(description, str):
        return False
    text = description.strip()
    if text.startswith("ImageJ="):
        return True
    if not text.startswith("{"):
        return False
    try:
        return "shape" in json.loads(text)
    except (ValueError, TypeError):
        return False


def _read_text(im: Image.Image) -> dict[str, str]:
    text: dict[str, str] = {}
    if im.format == "PNG":
        for key, value in getattr(im, "text", {}).items():
            # XMP travels as xmp; "Raw profile type exif/icc" hold a stale orientation or profile
            if key != _XMP_KEY and key != "Software" and not key.startswith("Raw profile type"):
                text[key] = str(value)
    comment = im.info.get("comment")
    if isinstance(comment, bytes):
        comment = _decode_text(comment)
    if comment:
        text.setdefault("Comment", comment)
    return text


def _decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _exif_text(value: Any) -> Any:
    """EXIF ASCII values as bytes, so Pillow writes them unchanged instead of as ASCII with '?'.

    Pillow reads them as Latin-1, so that gives back the source's bytes (UTF-8 included).
    """
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


# --------------------------------------------------------------------------- writing


def exif_bytes(meta: ImageMetadata, size: tuple[int, int], extra: dict[int, Any] | None = None,
               max_bytes: int | None = None) -> bytes | None:
    """An EXIF block (with the "Exif\\0\\0" header) for an output of `size` = (width, height).

    `extra` adds main-IFD tags. A copied value Pillow cannot write again is left out; when the
    block is over `max_bytes`, the sub-IFDs go first, then the copied main-IFD tags; the note stays.
    """
    if not (meta.tags or meta.exif_ifd or meta.gps_ifd or meta.software or extra):
        return None
    try:
        Image.Exif().tobytes()  # (warm-up: the probes below then cost microseconds)
        meta = dataclasses.replace(meta, tags=_writable(meta.tags), exif_ifd=_writable(meta.exif_ifd, ExifTags.IFD.Exif),
                                   gps_ifd=_writable(meta.gps_ifd, ExifTags.IFD.GPSInfo))
    except Exception as e:
        log.debug("EXIF probe failed: %s", e)
    for keep in ("all", "main", "note"):
        exif = Image.Exif()
        for tag, value in ({**meta.tags, **(extra or {})} if keep != "note" else {}).items():
            exif[tag] = _exif_text(value)
        if meta.software:
            exif[_SOFTWARE] = meta.software if meta.software.isascii() else meta.software.encode("utf-8")
        if keep == "all":
            for group, sub in sub_ifds(meta, size).items():
                exif.get_ifd(group).update(sub)
        try:
            block = exif.tobytes()
        except Exception as e:  # an odd value type in a copied tag
            log.debug("EXIF not writable (keeping %s): %s", keep, e)
            continue
        if max_bytes is None or len(block) <= max_bytes:
            return block
        log.debug("EXIF of %d bytes over the format's %d (keeping %s)", len(block), max_bytes, keep)
    return None


def sub_ifds(meta: ImageMetadata, size: tuple[int, int]) -> dict[int, dict[int, Any]]:
    """The Exif and GPS sub-IFDs (pointer tag -> tags) of an output of `size` = (width, height):
    the source's, with the colour space and pixel size of the output."""
    subs: dict[int, dict[int, Any]] = {}
    if meta.exif_ifd:
        sub = {tag: _exif_text(value) for tag, value in meta.exif_ifd.items()}
        if _COLOR_SPACE in sub:
            sub[_COLOR_SPACE] = _SRGB  # the output is sRGB whatever the source was
        for tag, value in ((_PIXEL_X, size[0]), (_PIXEL_Y, size[1])):
            if tag in sub:
                sub[tag] = value
        subs[ExifTags.IFD.Exif] = sub
    if meta.gps_ifd:
        subs[ExifTags.IFD.GPSInfo] = dict(meta.gps_ifd)
    return subs


def tiff_sub_ifds(meta: ImageMetadata | None, size: tuple[int, int]) -> dict[int, Callable[[int], bytes]]:
    """For a TIFF written without Pillow: each sub-IFD Pillow can serialise (pointer tag -> a
    function of the file offset it will sit at, giving its little-endian bytes)."""
    if meta is None:
        return {}
    writable = dataclasses.replace(meta, exif_ifd=_writable(meta.exif_ifd, ExifTags.IFD.Exif),
                                   gps_ifd=_writable(meta.gps_ifd, ExifTags.IFD.GPSInfo))
    serialisers: dict[int, Callable[[int], bytes]] = {}
    for group, tags in sub_ifds(writable, size).items():
        def serialise(offset: int, group: int = group, tags: dict[int, Any] = tags) -> bytes:
            ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II", group=group)
            for tag, value in tags.items():
                ifd[tag] = value
            return ifd.tobytes(offset)
        try:
            serialise(0)  # values Pillow takes one by one may still fail together: then leave it out
        except Exception as e:
            log.debug("sub-IFD %#x not writable, left out: %s", group, e)
            continue
        serialisers[group] = serialise
    return serialisers


def _writable(tags: dict[int, Any], ifd: int | None = None) -> dict[int, Any]:
    """The tags whose values Pillow can serialise (each tried alone in the IFD it belongs to)."""
    kept = {}
    for tag, value in tags.items():
        probe = Image.Exif()
        (probe if ifd is None else probe.get_ifd(ifd))[tag] = _exif_text(value)
        try:
            probe.tobytes()
        except Exception as e:
            log.debug("EXIF tag %#x not writable, left out: %s", tag, e)
            continue
        kept[tag] = value
    return kept


def png_text(meta: ImageMetadata) -> list[tuple[str, str]]:
    """PNG text chunks: the source's text, the colorize note, XMP (as iTXt)."""
    items = list(meta.text.items())
    if meta.software:
        items.append(("Software", meta.software))
    if meta.xmp:
        items.append((_XMP_KEY, meta.xmp.decode("utf-8", "replace")))
    return items


# The output formats whose files carry colorize's note (EXIF or PNG `Software`): only by it does a
# rerun know a file colorize made. BMP holds no metadata at all.
NOTE_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "WEBP", "AVIF", "HEIF"})


def pillow_save_options(fmt: str, meta: ImageMetadata | None, size: tuple[int, int]) -> dict[str, Any]:
    """Keyword arguments for Pillow's `Image.save` in format `fmt` that write `meta`.

    (PNGs are written by png.py, with `png_chunks`.)"""
    if meta is None:
        return {}
    options: dict[str, Any] = {}
    if meta.dpi and fmt in ("JPEG", "TIFF", "BMP"):
        options["dpi"] = meta.dpi
    if fmt in ("JPEG", "WEBP", "TIFF", "AVIF", "HEIF"):
        # Pillow's TIFF writer takes XMP only as a main-IFD tag, and ignores `exif` next to `tiffinfo`
        extra = {_TIFF_XMP: meta.xmp} if fmt == "TIFF" and meta.xmp else None
        if meta.dpi and fmt in ("WEBP", "AVIF", "HEIF"):  # no resolution field of their own: EXIF's
            extra = {ExifTags.Base.XResolution: _rational(meta.dpi[0]), ExifTags.Base.YResolution: _rational(meta.dpi[1]),
                     ExifTags.Base.ResolutionUnit: 2}  # inches
        exif = exif_bytes(meta, size, extra, max_bytes=_JPEG_EXIF_MAX if fmt == "JPEG" else None)
        if exif and fmt == "TIFF":
            # Pillow's TIFF writer reloads EXIF bytes and writes text as ASCII with '?': give it
            # the main IFD's text as bytes, which it writes unchanged.
            loaded = Image.Exif()
            loaded.load(exif)
            for tag, value in list(loaded.items()):
                loaded[tag] = _exif_text(value)
            options["exif"] = loaded
        elif exif:
            options["exif"] = exif
    if meta.xmp and (fmt in ("WEBP", "AVIF", "HEIF") or (fmt == "JPEG" and len(meta.xmp) <= _JPEG_XMP_MAX)):
        options["xmp"] = meta.xmp  # (JPEG's extended XMP, split over segments, is not written)
    comment = meta.text.get("Comment", "").encode("utf-8")
    if fmt == "JPEG" and comment and len(comment) <= _JPEG_COMMENT_MAX:
        options["comment"] = comment
    return options


def _rational(value: float) -> TiffImagePlugin.IFDRational:
    return TiffImagePlugin.IFDRational(round(value * 1000), 1000)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def png_chunks(meta: ImageMetadata | None, size: tuple[int, int]) -> list[tuple[bytes, bytes]]:
    """(type, data) chunks for a PNG written without Pillow: pHYs, eXIf, tEXt/iTXt."""
    if meta is None:
        return []
    chunks = []
    if meta.dpi:
        per_metre = [max(1, round(d / 0.0254)) for d in meta.dpi]
        chunks.append((b"pHYs", struct.pack(">IIB", per_metre[0], per_metre[1], 1)))
    exif = exif_bytes(meta, size)
    if exif:
        chunks.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    for key, value in png_text(meta):
        keyword = key.encode("latin-1", "replace")[:79]
        if key == _XMP_KEY or not _latin1(value):
            chunks.append((b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8")))
        else:
            chunks.append((b"tEXt", keyword + b"\0" + value.encode("latin-1")))
    return chunks


def tiff_ascii_tags(meta: ImageMetadata | None) -> list[tuple[int, bytes]]:
    """(tag, NUL-terminated ASCII) entries for a TIFF written without Pillow."""
    if meta is None:
        return []
    tags = {t: v for t, v in meta.tags.items() if isinstance(v, str)}
    if meta.software:
        tags[_SOFTWARE] = meta.software
    return [(t, (v.encode("ascii") if v.isascii() else _exif_text(v)) + b"\0") for t, v in sorted(tags.items())]
