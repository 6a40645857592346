"""Reading every kind of input photo into sRGB pixels, and writing results atomically.

`load_image` turns JPEG, PNG, TIFF, WebP, BMP and AVIF files (and HEIF/HEIC, the format phones
save, when the optional pillow-heif package is installed) in any Pillow mode into an (H, W, 3)
sRGB array at the file's own bit depth (8 or 16), plus alpha if there is one, with EXIF
orientation applied and an embedded ICC profile converted to sRGB (by LittleCMS at 8 bits; at
16 bits by `icc.py`, for the matrix/TRC profiles scans are saved with), and
the metadata a colouring carries over (`metadata.py`).

`save_image` picks the format from the extension, keeps 16 bits where PNG and TIFF allow it
(Pillow cannot write 16-bit RGB, so both have a small encoder here) and never leaves a partial
file behind: it writes a hidden temporary file next to the target and renames it into place.

Limitations:
- A 16-bit image's profile is applied only when it is a matrix/TRC profile (grey or RGB
  working spaces); one built on lookup tables is ignored, the pixels read as sRGB.
- 32-bit integer and float greyscale images are mapped to 16 bits (see `_wide_grey_to_uint16`).
- 16-bit RGB(A) PNG/TIFF keep 16 bits, but 16-bit grey+alpha PNG is read at 8 bits (Pillow
  has no such mode).
- Multi-frame files are read one page at a time: the full-size pages of a TIFF (`page`), the
  first frame of anything else (an animated WebP, a camera MPO's preview).
- Loading switches Pillow's global MAX_IMAGE_PIXELS off while any load runs (restored after),
  so the per-call `max_pixels` is the only limit; other threads opening images with Pillow
  directly at that moment are not limited either.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from . import icc, png
from .atomic import temp_path_beside
from .metadata import ImageMetadata, png_chunks, pillow_save_options, read_metadata, tiff_ascii_tags, tiff_sub_ifds
from .paths import real_path

# A 100-megapixel scan must load; 200 MP of 16-bit RGB is already 1.2 GB of pixels.
DEFAULT_MAX_PIXELS = 200_000_000

# Readable file extensions (lowercase, with the dot, as `Path.suffix.lower()` gives them).
# HEIF/HEIC files are listed even without pillow-heif, so a batch reports them (with how to
# read them) instead of passing over a phone's photos in silence.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".avif",
                              ".heic", ".heif"})

# Pillow decoders we allow (its JPEG opener also returns camera MPO files as format "MPO");
# AVIF where this Pillow was built with libavif, HEIF where pillow-heif registered it.
_READ_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "DIB", "AVIF", "HEIF")

_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".avif": "AVIF",
    ".heic": "HEIF",
    ".heif": "HEIF",
}
_ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP", "AVIF", "HEIF"})
# Quality for lossy encoders. AVIF's and HEIF's scales are not JPEG's: at 90 they are already
# visually lossless on photos, and 95 roughly doubles the file.
_QUALITY = {"JPEG": 95, "WEBP": 95, "AVIF": 90, "HEIF": 90}
# What a format needs that this installation may lack, for the error that says so.
_FORMAT_NEEDS = {"HEIF": "the optional pillow-heif package (pip install pillow-heif)",
                 "AVIF": "a Pillow built with AVIF support (pip install -U pillow)"}
# ISO base-media brands of HEIF stills: a file that starts with one is a HEIF/HEIC photo.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
# The largest image each format takes: beyond it the encoder fails with an unclear message
# (libjpeg-turbo over 65500 px, libwebp over 16383, pillow-heif's HEVC over 65528, measured), or,
# for AVIF, writes a file that libavif's readers refuse by default (over 32768 px a side or
# 16384 x 16384 pixels: Pillow could not open a 32769-px-wide one).
_MAX_SIDE = {"JPEG": 65500, "WEBP": 16383, "AVIF": 32768, "HEIF": 65528}
_MAX_FORMAT_PIXELS = {"AVIF": 16384 * 16384}
_FORMAT_NAMES = {"HEIF": "HEIC"}
# zlib level for PNG (png.py): on photos level 3 writes files no bigger than level 6 (often
# smaller) in a third of the time (docs/benchmarks.md).
_PNG_COMPRESS_LEVEL = 3

# Raw modes in which Pillow reads 16-bit RGB(A) but keeps only the high byte of each sample.
_WIDE_RGB_RAWMODES = frozenset(
    f"{mode};16{order}" for mode in ("RGB", "RGBA") for order in ("B", "L", "N")
)
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})

# Rows per block when encoding or scanning: bounds temporary memory on 100 MP images.
_BLOCK_PIXELS = 1 << 21


def in_marked_folder(path: Path, root: Path, marker: str, known: dict[Path, bool]) -> bool:
    """Whether `path` lies in a folder, `root` or below it, holding a file named `marker`: the tool's
    own output (a bench's, a training run's) found inside a set of photos. `known` memoises folders."""
    folder = path.parent
    if folder not in known:
        known[folder] = (folder / marker).is_file() or (
            folder != root and folder.parent != folder and in_marked_folder(folder, root, marker, known))
    return known[folder]


class ImageError(Exception):
    """The input is not a usable image: missing, empty, corrupt, truncated or unsupported."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit (a possible decompression bomb)."""


class UnsupportedFormatError(ImageError, ValueError):
    """The output file's extension names no format we can write."""


class OutputExistsError(Exception):
    """The output file exists and overwriting was not asked for."""


class SameFileError(Exception):
    """The output path is the input file itself."""


class OutputError(Exception):
    """An output cannot be written (a folder in the way, no space, a read-only disk...)."""


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) sRGB, uint8 or uint16
    alpha: np.ndarray | None  # (H, W), same dtype as pixels
    bit_depth: int  # 8 or 16
    path: Path
    format: str  # Pillow's format name: "JPEG", "PNG", "TIFF", ...
    was_grey: bool  # single-channel source, or all three channels identical
    metadata: ImageMetadata = field(default_factory=ImageMetadata)  # what a colouring carries over
    pages: int = 1  # full-size pages of a multi-page TIFF; only the first is read


# --------------------------------------------------------------------------- reading


@functools.cache
def _heif_plugin() -> bool:
    """Register pillow-heif's HEIF/HEIC opener and writer with Pillow once; False if not installed."""
    try:
        import pillow_heif
        pillow_heif.register_heif_opener()
    except Exception:  # not installed, or its libheif cannot load: HEIF stays unreadable, with a hint
        return False
    return True


def readable_formats(source: str | os.PathLike | bytes | None = None) -> tuple[str, ...]:
    """The Pillow formats colorize reads in this installation (for `Image.open(formats=...)`).

    `source` (a file, or its bytes) is what will be opened: pillow-heif (~25 ms to import) is
    loaded only when it is a HEIF file; without `source`, always.
    """
    Image.init()  # registers every built-in plugin, so `Image.OPEN` can name WEBP, AVIF, ...
    if source is None or _is_heif(source):
        _heif_plugin()
    return tuple(fmt for fmt in _READ_FORMATS if fmt in Image.OPEN)


def _is_heif(source: str | os.PathLike | bytes) -> bool:
    """Whether a file (or its bytes) starts as a HEIF still does: an ISO `ftyp` box of a HEIF brand."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        header = bytes(source[:12])
    else:
        try:
            with open(source, "rb") as f:
                header = f.read(12)
        except OSError:
            return False
    return header[4:8] == b"ftyp" and header[8:12] in _HEIF_BRANDS


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF
    except OSError:
        return False


def has_no_extension(path: Path) -> bool:
    """No extension, or a counter in its place (`scan.001`): a scanner's or an old archive's name
    that says nothing about the format."""
    return path.suffix == "" or path.suffix[1:].isdigit()


def opens_as_image(path: str | os.PathLike, *, unreadable: bool = True) -> bool:
    """Whether Pillow recognises the file as one of the formats colorize reads (the header only,
    no pixels decoded). For files whose extension says nothing: a `--glob` match like IMG_0001.AAE
    or photo.xmp (sidecars) is not a photo, while a JPEG saved without an extension is.
    `unreadable`: the answer for a file that cannot be opened (a glob's match is taken, so that
    loading it reports the problem)."""
    try:
        with Image.open(path, formats=readable_formats(path)):
            return True
    except UnidentifiedImageError:
        return False
    except PermissionError:
        return unreadable
    except (OSError, ValueError, SyntaxError):
        return False


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, page: int = 0,
               *, preview: int | None = None) -> LoadedImage:
    """Read an image file into sRGB pixels at its native bit depth; of a multi-page TIFF, the
    full-size page `page` (from 0; `pages` says how many there are).

    `preview`: the pixels are for a picture about this many pixels across, so they may come
    smaller, both sides still at least that large: a JPEG decoded at a DCT scale of 1/2 to 1/8
    (a 100-MP scan's thumbnail in a tenth of the time), an 8-bit image of another format
    box-reduced by a whole factor right after decoding.

    Raises ImageError for anything that is not a readable image and ImageTooLargeError when
    width * height exceeds `max_pixels` (None: no limit).
    """
    path = Path(path)
    if path.is_dir():
        try:
            with os.scandir(path):
                pass
        except OSError as exc:  # a batch lists the subfolders it cannot enter as failures
            raise ImageError(f"Cannot read the folder {path}: {exc.strerror}.") from exc
        raise ImageError(f"Cannot read {path}: it is a directory, not an image.")
    if path.is_symlink() and not path.exists():
        raise ImageError(f"Cannot read {path}: {_dead_link_problem(path)}.")
    if not path.exists():
        raise ImageError(f"Cannot read {path}: no such file.")
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):  # e.g. `colorize <(curl ...)`: no size, read once
        raise ImageError(f"Cannot read {path}: it is a pipe, not a file; for a photo that is streamed in, use "
                         "`-` and standard input: colorize - -o out.png < photo.jpg")
    if not stat.S_ISREG(mode):  # /dev/zero would be read for ever
        raise ImageError(f"Cannot read {path}: it is a device, not a photo file.")
    if path.stat().st_size == 0:
        raise ImageError(f"Cannot read {path}: the file is empty.")

    formats = readable_formats(path)
    # Pillow may warn "Corrupt EXIF data" (handled here as no rotation). Filtering that is left
    # to the CLI: warnings.catch_warnings is not thread-safe and batch loads run in threads.
    with _pillow_bomb_check_disabled():
        try:
            # Through a file object: opened by name, Pillow memory-maps an uncompressed TIFF and
            # reads a turned one (orientation 5-8) with the turned size: stripes (Pillow 13).
            with open(path, "rb") as file, Image.open(file, formats=formats) as im:
                pages = _seek_page(im, path, page) if im.format == "TIFF" else 1
                _check_pixel_limit(path, im.size, max_pixels)
                fmt = im.format or "unknown"
                if preview is not None and fmt == "JPEG":
                    im.draft(im.mode, (preview, preview))
                # Pillow turns TIFFs upright itself while decoding and drops the tag: remember it
                # for the resolution's axes.
                tiff_orientation = _exif_orientation(im) if fmt == "TIFF" else 1
                pixels, alpha, was_grey = _decode(im, path) if preview is None else _decode_preview(im, path, preview)
                # After decoding: PNG's getexif() loads the image, and eXIf may follow the data.
                orientation = _exif_orientation(im)
                metadata = read_metadata(im, orientation if orientation != 1 else tiff_orientation)
        except (ImageError, MemoryError):
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"Cannot read {path}: the image is too large ({exc}).") from exc
        except PermissionError as exc:
            raise ImageError(f"Cannot read {path}: permission denied.") from exc
        except UnidentifiedImageError as exc:
            if "HEIF" not in formats and _is_heif(path):
                raise ImageError(f"Cannot read {path}: it is a HEIF/HEIC photo, which needs "
                                 f"{_FORMAT_NEEDS['HEIF']}.") from exc
            if _is_tiff(path):  # Pillow knows TIFF, but not every sample layout in one
                raise ImageError(f"Cannot read {path}: a TIFF whose sample layout Pillow cannot decode "
                                 "(16-bit grey with alpha, for one); save it as PNG, or without the alpha.") from exc
            raise ImageError(
                f"Cannot read {path}: not a supported image (JPEG, PNG, TIFF, WebP, BMP, AVIF or HEIC)."
            ) from exc
        # Pillow's decoders raise many exception types on corrupt data (OSError, SyntaxError,
        # struct.error, IndexError, ...); every one of them means "this file is broken".
        except Exception as exc:
            raise ImageError(f"Cannot read {path}: the file is corrupt or truncated ({exc}).") from exc

    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    was_grey = was_grey or _channels_equal(pixels)
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    return LoadedImage(pixels, alpha, bit_depth, path, fmt, was_grey, metadata, pages)


def _dead_link_problem(path: Path) -> str:
    """Why a link leads to no file: it names a missing one, or it comes back to itself."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"it is a link that leads back to itself (through {os.readlink(path)})"
    return f"it is a broken link (to {os.readlink(path)})"


def upright_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of the image as `load_image` will return it, from its header; None if unreadable."""
    try:
        with _pillow_bomb_check_disabled(), Image.open(path, formats=readable_formats(path)) as im:
            width, height = im.size
            # Pillow reports a TIFF's size upright already (it turns TIFFs itself, see load_image).
            turned = _exif_orientation(im) in (5, 6, 7, 8) and im.format != "TIFF"
    except Exception:  # load_image will say what is wrong with it
        return None
    return (height, width) if turned else (width, height)


_bomb_lock = threading.Lock()
_bomb_users = 0
_bomb_saved_limit: int | None = None


@contextmanager
def _pillow_bomb_check_disabled() -> Iterator[None]:
    """Turn off Pillow's global pixel limit while we load; `max_pixels` replaces it per call.

    Pillow's check (warning at 89 MP, error at 179 MP) would refuse scans our own limit allows.
    A counter restores the original value when the last concurrent load finishes.
    """
    global _bomb_users, _bomb_saved_limit
    with _bomb_lock:
        if _bomb_users == 0:
            _bomb_saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _bomb_users += 1
    try:
        yield
    finally:
        with _bomb_lock:
            _bomb_users -= 1
            if _bomb_users == 0:
                Image.MAX_IMAGE_PIXELS = _bomb_saved_limit


def _check_pixel_limit(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"Cannot read {path}: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
            f"over the limit of {max_pixels / 1e6:.1f} megapixels."
        )


def load_pages(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[LoadedImage]:
    """Every full-size page of a multi-page TIFF (one image for any other file)."""
    first = load_image(path, max_pixels)
    return [first] + [load_image(path, max_pixels, page=i) for i in range(1, first.pages)]


def _full_size_frames(im: Image.Image) -> list[int]:
    """Frame numbers of a TIFF's full-size pages: a scanner's reduced-resolution preview
    (NewSubfileType bit 0) is not a page. Ends at a broken page directory."""
    frames = []
    try:
        for index in range(int(getattr(im, "n_frames", 1) or 1)):
            im.seek(index)
            if not int(im.tag_v2.get(254, 0)) & 1:
                frames.append(index)
    except Exception:  # Pillow raises many types on a corrupt directory
        pass
    return frames


def _seek_page(im: Image.Image, path: Path, page: int) -> int:
    """Go to a TIFF's full-size page `page`; return how many there are. (Other formats' extra
    frames, a JPEG's MPO preview or an animation, are not pages: they are never counted.)"""
    frames = _full_size_frames(im) or [0]
    if page >= len(frames):
        raise ImageError(f"Cannot read page {page + 1} of {path}: it has {len(frames)}.")
    im.seek(frames[page])
    return len(frames)


def _exif_orientation(im: Image.Image) -> int:
    # Garbage EXIF blocks raise anything from struct.error to SyntaxError; an unreadable
    # orientation is treated as "no rotation" rather than a reason to refuse the photo.
    try:
        value = int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an (H, W[, C]) array, as `ImageOps.exif_transpose` does.

    Done in numpy so that 16-bit RGB, which Pillow cannot hold, is rotated the same way.
    """
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, k=-1)
    elif orientation == 7:
        array = array[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, k=1)
    return np.ascontiguousarray(array)


def _decode(im: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Pixels (H, W, 3), alpha (H, W) or None, and whether the source mode was greyscale.

    An embedded profile is applied here to 16-bit pixels (`icc.py`), by Pillow to 8-bit ones."""
    pixels, alpha, one_channel = _decode_pixels(im, path)
    profile = im.info.get("icc_profile")
    if pixels.dtype != np.uint16 or not profile:
        return pixels, alpha, one_channel
    # Neutral pixels stay neutral through the profile, so this is also `load_image`'s answer.
    was_grey = one_channel or _channels_equal(pixels)
    converted = icc.to_srgb16(pixels, profile, grey=one_channel, neutral=was_grey)
    # (None: a profile it cannot apply; the pixels are read as sRGB, as before)
    return (pixels if converted is None else converted), alpha, was_grey


def _holds_16bit_rgb(im: Image.Image) -> bool:
    """Whether a not yet decoded RGB(A) file holds 16-bit samples that Pillow would read at 8 bits
    (planes of a 16-bit TIFF, or raw 16-bit RGB tiles)."""
    return im.mode in ("RGB", "RGBA") and bool(im.tile) and (
        _is_planar_16bit_tiff(im) or all(_rawmode(t) in _WIDE_RGB_RAWMODES for t in im.tile))


def _holds_16bit_grey_alpha(im: Image.Image) -> bool:
    """Whether a not yet decoded file is a 16-bit grey + alpha PNG, which Pillow reads as 8-bit RGBA."""
    return im.mode == "RGBA" and bool(im.tile) and all(_rawmode(t) == "LA;16B" for t in im.tile)


def _pillow_would_narrow(im: Image.Image) -> bool:
    """Whether Pillow would read this not yet decoded file's 16-bit samples at 8 bits."""
    return _holds_16bit_rgb(im) or _holds_16bit_grey_alpha(im)


def _decode_pixels(im: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    if im.mode == "F":  # decoded once here, as decode_pillow_image would, to look at the samples first
        values = np.asarray(im)
        if not np.isfinite(values).any():  # else it would come out black
            raise ImageError(f"Cannot read {path}: every sample is NaN or infinite; there is no picture in it.")
        return _wide_grey(values, im.info.get("transparency"))
    if _holds_16bit_grey_alpha(im):
        return _decode_wide_grey_alpha(im)
    if im.format == "HEIF" and im.info.get("bit_depth", 8) > 8:  # Pillow's HEIF plugin gives 8 bits
        return _decode_wide_heif(path, im.info["bit_depth"])
    if not _holds_16bit_rgb(im):
        return decode_pillow_image(im)
    if _is_planar_16bit_tiff(im):
        # Stored plane by plane: Pillow gives each plane an 8-bit raw mode ('R', 'G', ...) and
        # would read every 16-bit sample as two pixels. Raw planes get their 16-bit raw modes
        # and take the path below; through libtiff (compressed) only the high bytes come out
        # right, so such a file is read at 8 bits, which is still the right picture.
        if not all(t.codec_name == "raw" and _rawmode(t) in ("R", "G", "B", "A") for t in im.tile):
            return decode_pillow_image(im)
        order = "B" if im.tag_v2.prefix == b"MM" else "L"
        im.tile = [t._replace(args=(f"{_rawmode(t)};16{order}", *t.args[1:])) for t in im.tile]
    return _decode_wide_rgb(im, path)


def _decode_preview(im: Image.Image, path: Path, preview: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """`_decode` for a preview: an 8-bit grey or RGB(A) image is box-reduced first, by the largest
    whole factor that keeps both sides >= `preview` (16-bit data, which Pillow may show as 8-bit
    RGB, and other modes are decoded whole)."""
    factor = min(im.size) // preview
    if factor < 2 or im.mode not in ("L", "LA", "RGB", "RGBA") or _pillow_would_narrow(im):
        return _decode(im, path)
    small = im.reduce(factor)
    small.info = im.info  # its ICC profile and transparency still apply
    return decode_pillow_image(small)


def _is_planar_16bit_tiff(im: Image.Image) -> bool:
    tags = getattr(im, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    return (im.format == "TIFF" and tags.get(284) == 2 and isinstance(bits, tuple)
            and bool(bits) and all(b == 16 for b in bits))


def decode_pillow_image(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """An image in any Pillow mode -> sRGB pixels (H, W, 3) uint8, or uint16 for 16-bit and wider
    grey; alpha (H, W) or None; whether the mode was greyscale. Its ICC profile is applied (8 bit)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _wide_grey(np.asarray(im), im.info.get("transparency"))
    return _decode_8bit(im)


def _wide_grey(values: np.ndarray, transparency) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """16-bit, 32-bit integer or float grey samples (H, W) -> decode_pillow_image's answer."""
    grey = _wide_grey_to_uint16(values)
    return np.repeat(grey[:, :, None], 3, axis=2), _transparent_where(values, transparency), True


def _decode_8bit(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    icc = im.info.get("icc_profile")
    was_grey = im.mode in _GREY_MODES
    if im.mode in ("P", "PA"):
        has_alpha = im.mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("La", "RGBa"):  # premultiplied alpha
        im = im.convert(im.mode[:-1] + "A")

    alpha = None
    if im.mode in ("LA", "RGBA"):
        alpha = np.array(im.getchannel("A"))
        im = im.convert(im.mode[:-1])
    elif "transparency" in im.info and im.mode in ("L", "RGB"):  # a single transparent colour
        rgba = im.convert("LA" if im.mode == "L" else "RGBA")
        alpha = np.array(rgba.getchannel("A"))

    rgb = _icc_to_srgb(im, icc) if icc else None
    if rgb is None and im.mode == "L":  # one channel out of Pillow, widened by numpy: 2x faster
        return np.repeat(np.asarray(im)[:, :, None], 3, axis=2), alpha, was_grey
    if rgb is None:
        rgb = im if im.mode == "RGB" else im.convert("RGB")  # (convert would copy an RGB image first)
    return np.array(rgb), alpha, was_grey


_srgb_profile: ImageCms.ImageCmsProfile | None = None


def _icc_to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert with the embedded profile; None when the profile is unusable for this image."""
    global _srgb_profile
    if _srgb_profile is None:
        _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, source, _srgb_profile, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile (e.g. an RGB profile on a greyscale image): the
        # pixels are still a photo, so read them as if they were sRGB.
        return None


def _rawmode(tile: tuple) -> str:
    args = tile[3]
    return args if isinstance(args, str) else args[0]


def _decode_wide_rgb(im: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """16-bit RGB(A) PNG/TIFF at full depth.

    Pillow has no 16-bit RGB mode and unpacks such files to their high bytes. Decoding the same
    tiles a second time with the opposite byte order in the raw mode yields the low bytes; the
    two together are the exact 16-bit samples, at the cost of decoding twice.
    """
    tiles = list(im.tile)
    im.load()
    high = np.asarray(im)
    with open(path, "rb") as file, Image.open(file, formats=(im.format,)) as again:  # no mmap: see load_image
        if im.tell():
            again.seek(im.tell())  # the same page of a multi-page TIFF
        again.tile = [_swap_byte_order(t) for t in tiles]
        again.load()
        low = np.asarray(again)
    samples = (high.astype(np.uint16) << 8) | low
    alpha = samples[:, :, 3].copy() if samples.shape[2] == 4 else _transparent_where(samples, im.info.get("transparency"))
    return np.ascontiguousarray(samples[:, :, :3]), alpha, False


def _decode_wide_grey_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """A 16-bit grey + alpha PNG at full depth, in one decode: its 4 bytes a pixel (grey high,
    grey low, alpha high, alpha low) unpacked as if they were 8-bit RGBA, which unfilters the
    rows alike (the same 4 bytes a pixel), then put back together."""
    im.tile = [_with_rawmode(t, "RGBA") for t in im.tile]
    im.load()
    raw = np.asarray(im)
    grey = (raw[:, :, 0].astype(np.uint16) << 8) | raw[:, :, 1]
    alpha = (raw[:, :, 2].astype(np.uint16) << 8) | raw[:, :, 3]
    return np.repeat(grey[:, :, None], 3, axis=2), alpha, True


def _decode_wide_heif(path: Path, bits: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """A 10- or 12-bit HEIF/HEIC (an HDR phone photo) at full depth, from pillow-heif directly:
    the same primary image, turned as Pillow's plugin turns it, its samples in the high bits of
    uint16 and widened to the full 16-bit range (1023 -> 65535) by repeating their top bits."""
    import pillow_heif

    samples = np.asarray(pillow_heif.open_heif(path, convert_hdr_to_8bit=False))
    samples = samples | (samples >> bits)  # (v << (16 - bits)) | (v >> (2 * bits - 16))
    if samples.ndim == 2:
        return np.repeat(samples[:, :, None], 3, axis=2), None, True
    alpha = samples[:, :, 3].copy() if samples.shape[2] == 4 else None
    return np.ascontiguousarray(samples[:, :, :3]), alpha, False


def _transparent_where(samples: np.ndarray, key) -> np.ndarray | None:
    """16-bit alpha from a PNG tRNS key (one grey value, or one RGB triple): 0 where a pixel is
    that colour, opaque elsewhere; None without a key."""
    if isinstance(key, int) and samples.ndim == 2:
        hit = samples == key
    elif isinstance(key, tuple) and len(key) == 3 and samples.ndim == 3:
        hit = (samples[:, :, :3] == np.array(key, samples.dtype)).all(axis=2)
    else:
        return None
    return np.where(hit, np.uint16(0), np.uint16(65535))  # (uint16 throughout: no int64 temporary)


def _swap_byte_order(tile: tuple) -> tuple:
    native = "L" if sys.byteorder == "little" else "B"
    rawmode = _rawmode(tile)
    order = native if rawmode[-1] == "N" else rawmode[-1]
    return _with_rawmode(tile, rawmode[:-1] + ("B" if order == "L" else "L"))


def _with_rawmode(tile: tuple, rawmode: str) -> tuple:
    args = tile[3]
    args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


# How far a float (mode F) photo may stray outside 0..1 and still be read as fractions. On the
# 0..255 scale such an image would be black to the eye (at most 0.5 % grey) anyway.
_FLOAT_OVERSHOOT = 0.25


def _wide_grey_to_uint16(values: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float greyscale -> uint16, keeping the photo's lightness.

    16-bit data is kept as is. 32-bit integers (Pillow's mode I) are read by their range: within
    0..255 as 8-bit samples (what Pillow's L -> I gives), within 0..65535 as 16-bit ones. Floats
    (mode F) likewise: within 0..1 as fractions (give or take a resampling's overshoot, clipped),
    0..255 as 8-bit and 0..65535 as 16-bit samples. Only values outside all of these (negative,
    or wider) are stretched from their own min..max.
    """
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        return values.astype(np.uint16)  # also turns big-endian I;16B into native order
    if values.dtype.kind == "f":
        # No-data samples (NaN, infinities) take the darkest real value, so they neither decide
        # the range nor stand out from the photo.
        values = values.astype(np.float64)
        finite = np.isfinite(values)
        darkest = values[finite].min() if finite.any() else 0.0
        values = np.where(finite, values, darkest)
        lo, hi = values.min(), values.max()
        # A 0..1 photo resized with a bicubic or Lanczos filter overshoots at its edges (to 1.14
        # seen): read as 0..255 samples it came out black. Such overshoot is clipped away.
        if -_FLOAT_OVERSHOOT <= lo and hi <= 1.0 + _FLOAT_OVERSHOOT and (lo < 0.0 or hi > 1.0):
            return np.rint(np.clip(values, 0.0, 1.0) * 65535.0).astype(np.uint16)
    lo, hi = values.min(), values.max()
    full_scales = ((1.0,) if values.dtype.kind == "f" else ()) + (255, 65535)
    full_scale = next((full for full in full_scales if lo >= 0 and hi <= full), None)
    if full_scale is not None:
        return np.rint(values * (65535.0 / full_scale)).astype(np.uint16)
    lo, hi = float(lo), float(hi)
    if hi == lo:  # one value, beyond every range: no range to stretch; beyond white is white
        return np.full(values.shape, 65535 if lo > 0 else 0, np.uint16)
    return np.rint((values.astype(np.float64) - lo) * (65535.0 / (hi - lo))).astype(np.uint16)


def _channels_equal(pixels: np.ndarray) -> bool:
    rows = max(1, _BLOCK_PIXELS // max(1, pixels.shape[1]))
    for y in range(0, pixels.shape[0], rows):
        block = pixels[y : y + rows]
        if not (np.array_equal(block[..., 0], block[..., 1]) and np.array_equal(block[..., 0], block[..., 2])):
            return False
    return True


# --------------------------------------------------------------------------- writing


def _mkdir_problem(error: OSError) -> str:
    in_the_way = isinstance(error, (FileExistsError, NotADirectoryError))
    return "a file of that name is in the way" if in_the_way else str(error.strerror or error)


def make_folder(path: str | os.PathLike, what: str = "the output folder") -> None:
    """`mkdir -p path`, or OutputError saying why it cannot be made."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {what} {path}: {_mkdir_problem(e)}") from e


def output_format(path: str | os.PathLike) -> str:
    """The Pillow format that `path`'s extension names; UnsupportedFormatError if none."""
    path = Path(path)
    problem = unwritable_reason(path.suffix)
    if problem is not None:
        raise UnsupportedFormatError(f"Cannot write {path}: {problem}.")
    return _WRITE_FORMATS[path.suffix.lower()]


def check_output_size(path: str | os.PathLike, width: int, height: int) -> None:
    """OutputError if `path`'s format cannot hold a width x height image (checked before the
    colouring, so no time goes into one that could not be saved)."""
    fmt = output_format(path)
    side, pixels = _MAX_SIDE.get(fmt), _MAX_FORMAT_PIXELS.get(fmt)
    if (side is not None and max(width, height) > side) or (pixels is not None and width * height > pixels):
        limit = f"{side} px a side" + (f" and {pixels / 1e6:.0f} megapixels" if pixels else "")
        raise OutputError(f"Cannot write {path}: {width}x{height} is more than {_FORMAT_NAMES.get(fmt, fmt)} "
                          f"holds ({limit}); write a .png or .tif instead.")


def unwritable_reason(suffix: str) -> str | None:
    """Why images named `*{suffix}` cannot be written in this installation; None when they can."""
    fmt = _WRITE_FORMATS.get(suffix.lower())
    if fmt is None:
        return f"unknown image extension {suffix or '(none)'!r}; use one of {', '.join(sorted(_WRITE_FORMATS))}"
    if fmt in _FORMAT_NEEDS:
        readable_formats(None if fmt == "HEIF" else b"")  # registers the plugin, which brings its writer
        if fmt not in Image.SAVE:
            return f"{fmt} output needs {_FORMAT_NEEDS[fmt]}"
    return None


def save_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    overwrite: bool = False,
    source: str | os.PathLike | None = None,
    metadata: ImageMetadata | None = None,
    more_pages: Iterable[tuple] = (),
) -> None:
    """Write (H, W, 3) uint8/uint16 sRGB pixels (and optional (H, W) alpha) atomically.

    The format comes from the extension. uint16 pixels are written at 16 bits to PNG and TIFF
    and rounded to 8 bits for the others. Alpha is kept for PNG, TIFF, WebP, AVIF and HEIF.
    `metadata` is written as far as the format holds it (see `metadata.py`).
    `more_pages` follow as pages 2, 3, ... of a TIFF (each at its own bit depth): (pixels,
    alpha, metadata) with the page's own resolution, text and XMP, or (pixels, alpha) with the
    first page's. It may be a generator: each page is taken when it is written, so an album is
    never all in memory at once; an exception it raises stops the write (nothing is left behind)
    and comes out of `save_image` as it is. Missing parent directories are created.
    """
    path = Path(path)
    fmt = output_format(path)
    pixels, alpha = _check_arrays(path, pixels, alpha)
    check_output_size(path, pixels.shape[1], pixels.shape[0])
    more_pages = iter(more_pages)
    if fmt != "TIFF":
        if next(more_pages, None) is not None:
            raise ValueError(f"only a TIFF holds several pages, not {path.name}")
        more_pages = iter(())
    pages = _PageSource((*_check_arrays(path, *page[:2]), page[2] if len(page) > 2 else metadata)
                        for page in more_pages)
    if source is not None and _same_file(path, Path(source)):
        raise SameFileError(f"Refusing to write {path}: it is the input image itself.")
    if path.exists() and not overwrite:
        raise _exists(path)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"Cannot write {path}: its folder cannot be created ({_mkdir_problem(e)}).") from e
    try:
        tmp, handle = _create_temp(path)
    except OSError as e:  # a read-only folder or disk, ...
        raise OutputError(f"Cannot write {path}: {e.strerror or e}.") from e
    try:
        with handle:
            _encode(handle, fmt, pixels, alpha if fmt in _ALPHA_FORMATS else None, metadata, pages)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _place_new(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, _PageFailed):  # making a page failed, not writing: its own error
            raise e.error from None
        if isinstance(e, OSError):  # e.g. the disk filled up, or a folder of that name appeared
            raise OutputError(f"Cannot write {path}: {e.strerror or e}.") from e
        # The encoder refuses the picture: too wide for WebP (ValueError), or x265 cannot open for
        # its size (pillow-heif's RuntimeError; any other RuntimeError is a bug and stays one).
        if isinstance(e, ValueError) or (isinstance(e, RuntimeError) and fmt == "HEIF"):
            raise OutputError(f"Cannot write {path} as {fmt}: {' '.join(str(e).split())}.") from e
        raise


class _PageFailed(Exception):
    """Carries an exception raised while the caller made a page, apart from the writer's own."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class _PageSource:
    """Iterates the caller's pages, wrapping what making one raises in `_PageFailed`."""

    def __init__(self, pages: Iterator[tuple[np.ndarray, np.ndarray | None]]):
        self._pages = pages

    def __iter__(self) -> _PageSource:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            return next(self._pages)
        except StopIteration:
            raise
        except Exception as e:
            raise _PageFailed(e) from e


def _exists(path: Path) -> OutputExistsError:
    return OutputExistsError(f"Refusing to overwrite {path}: the file exists (use --overwrite; overwrite=True from "
                             "Python).")


def _place_new(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path` only if nothing is there: a hard link fails on an existing name in one
    step, so another process that wrote `path` since the check above is never overwritten."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:  # a filesystem without hard links (FAT, some network disks): check, then rename
        if path.exists():
            raise _exists(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink(missing_ok=True)


def _check_arrays(path: Path, pixels: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"Cannot write {path}: pixels must be (H, W, 3) uint8 or uint16, got {pixels.shape} {pixels.dtype}."
        )
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != pixels.shape[:2] or alpha.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Cannot write {path}: alpha must be (H, W) uint8 or uint16, got {alpha.shape}.")
        if alpha.dtype != pixels.dtype:
            alpha = to_uint8(alpha) if pixels.dtype == np.uint8 else alpha.astype(np.uint16) * 257
    return pixels, alpha


def _same_file(path: Path, source: Path) -> bool:
    try:
        if path.exists() and os.path.samefile(path, source):
            return True
    except OSError:
        pass
    return real_path(path) == real_path(source)


def _create_temp(path: Path) -> tuple[Path, io.BufferedWriter]:
    """A new hidden file next to `path`, so the final rename stays on one filesystem.

    Opened with mode 0o666 so the user's umask applies, as it would to a plain open().
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = temp_path_beside(path)
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")


def _encode(handle: io.BufferedWriter, fmt: str, pixels: np.ndarray, alpha: np.ndarray | None,
            metadata: ImageMetadata | None, more_pages: Iterable[tuple] = ()) -> None:
    """Write the image; `more_pages` ((pixels, alpha, metadata); TIFF only, checked by the caller)
    are taken one at a time."""
    if fmt == "PNG":
        _write_png(handle, pixels, alpha, metadata)
        return
    following = iter(more_pages)  # each page at its own depth, as in an album of mixed scans
    if pixels.dtype == np.uint16 and fmt == "TIFF":
        _write_tiff_pages(handle, _prepended((pixels, alpha, metadata), following))
        return
    second = next(following, None)  # (there are none but for a TIFF: see save_image)
    if second is None:
        _write_pillow(handle, fmt, to_uint8(pixels), None if alpha is None else to_uint8(alpha), metadata)
        return
    # The first page by Pillow (it keeps every kind of metadata, EXIF included; in memory, as
    # the pages are linked from it), the others appended as they come: an album is never held whole.
    buffer = io.BytesIO()
    _write_pillow(buffer, fmt, to_uint8(pixels), None if alpha is None else to_uint8(alpha), metadata)
    pages, second = _prepended(second, following), None  # held only while it is written
    _write_tiff_pages(handle, pages, after=buffer.getbuffer())


def _prepended(first: tuple, rest: Iterator[tuple]) -> Iterator[tuple]:
    """`first`, then `rest`, holding `first` no longer than until it is taken (itertools.chain
    keeps its arguments, here a page of an album, for as long as it lives)."""
    box = [first]
    del first
    yield box.pop()
    yield from rest


def to_uint8(values: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 rounded to 8 bits."""
    if values.dtype == np.uint8:
        return values
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)


def _write_pillow(handle: io.BufferedWriter | io.BytesIO, fmt: str, pixels: np.ndarray, alpha: np.ndarray | None,
                  metadata: ImageMetadata | None) -> None:
    im = Image.fromarray(pixels)
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha))
    options = pillow_save_options(fmt, metadata, im.size)
    if fmt in _QUALITY:
        options["quality"] = _QUALITY[fmt]
    im.save(_WithoutDescriptor(handle), format=fmt, **options)


class _WithoutDescriptor:
    """A file Pillow cannot take the descriptor of. Given one, its encoders (JPEG's among them)
    write to it directly and do not check for a short write, so on a full disk a small JPEG came
    out truncated and was reported done; through Python's own writes a full disk is an OSError."""

    def __init__(self, handle):
        self._handle = handle

    def fileno(self):
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):  # write, seek, tell, flush, ...
        return getattr(self._handle, name)


def _rows_per_block(width: int) -> int:
    return max(1, _BLOCK_PIXELS // max(1, width))


def _with_alpha(block: np.ndarray, alpha: np.ndarray | None, y: int) -> np.ndarray:
    if alpha is None:
        return block
    return np.concatenate([block, alpha[y : y + block.shape[0], :, None]], axis=2)


def _write_png(handle: io.BufferedWriter, pixels: np.ndarray, alpha: np.ndarray | None,
               metadata: ImageMetadata | None = None) -> None:
    """8- or 16-bit RGB(A) PNG by colorize's own encoder (png.py: deflate on every core)."""
    height, width, _ = pixels.shape
    png.write_png(handle, pixels, alpha, png_chunks(metadata, (width, height)), level=_PNG_COMPRESS_LEVEL)


# TIFF field types
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL = 1, 2, 3, 4, 5
_TIFF_XMP = 700


def _tiff_entry(tag: int, kind: int, values: list[int] | bytes) -> tuple[int, int, int, bytes]:
    """(tag, type, count, payload) of one IFD entry; SHORT/LONG/RATIONAL values are ints."""
    if kind in (_BYTE, _ASCII):
        return tag, kind, len(values), bytes(values)
    fmt = "<H" if kind == _SHORT else "<I"
    payload = b"".join(struct.pack(fmt, v) for v in values)
    return tag, kind, len(values) // 2 if kind == _RATIONAL else len(values), payload


def _write_tiff_pages(handle: io.BufferedWriter,
                      pages: Iterable[tuple[np.ndarray, np.ndarray | None, ImageMetadata | None]], *,
                      after: bytes | memoryview | None = None) -> None:
    """Baseline little-endian TIFF pages, uncompressed, one strip each, 8 or 16 bits per sample as
    each page's dtype says.

    Pages are taken from `pages` one at a time and each is linked from the directory before it
    as it is written, so only one page is ever held here. `after`: a finished little-endian
    TIFF (Pillow's one-page file) to write first and append the pages to; without it the file
    starts here. Of its metadata each page gets the resolution, the main IFD's text tags, XMP and
    the Exif and GPS sub-IFDs.
    """
    if after is None:
        handle.write(b"II*\0" + struct.pack("<I", 8))
        link, offset = 4, 8  # the header's pointer to the first directory
    else:
        link = _last_directory_link(after)
        handle.write(after)
        offset = len(after)
    for page, page_alpha, page_metadata in pages:
        if offset % 2:  # a directory starts on a word boundary
            handle.write(b"\0")
            offset += 1
        entries, values, strip_bytes = _tiff_directory(page, page_alpha, page_metadata, offset)
        end = offset + len(entries) + 4 + len(values) + strip_bytes
        if end >= 1 << 32:
            raise ImageError("Cannot write a TIFF over 4 GB; save as PNG instead.")
        handle.seek(link)
        handle.write(struct.pack("<I", offset))
        handle.seek(offset)
        handle.write(entries + struct.pack("<I", 0) + values)
        link = offset + len(entries)
        rows = _rows_per_block(page.shape[1])
        sample = "<u2" if page.dtype == np.uint16 else "u1"
        for y in range(0, page.shape[0], rows):
            block = _with_alpha(page[y : y + rows], page_alpha, y)
            handle.write(np.ascontiguousarray(block, dtype=sample).tobytes())
        offset = end


def _last_directory_link(tiff: bytes | memoryview) -> int:
    """Where a little-endian TIFF's last directory keeps the offset of the next one (0 now)."""
    if bytes(tiff[:4]) != b"II*\0":
        raise RuntimeError("expected a little-endian classic TIFF to append pages to")
    directory = struct.unpack_from("<I", tiff, 4)[0]
    for _ in range(65536):  # a chain of directories, never a loop in a file written here
        link = directory + 2 + 12 * struct.unpack_from("<H", tiff, directory)[0]
        directory = struct.unpack_from("<I", tiff, link)[0]
        if directory == 0:
            return link
    raise RuntimeError("the TIFF's directories do not end")


def _tiff_directory(pixels: np.ndarray, alpha: np.ndarray | None, metadata: ImageMetadata | None,
                      offset: int) -> tuple[bytes, bytes, int]:
    """One page's IFD placed at `offset`: its entries, then (after the 4-byte next-IFD pointer the
    caller writes) the values they point to, then its strip. Returns (entries, values, strip length)."""
    height, width, _ = pixels.shape
    channels = 3 if alpha is None else 4
    strip_bytes = width * height * channels * pixels.itemsize
    dpi = metadata.dpi if metadata is not None and metadata.dpi else (72, 72)
    resolution = [[round(d * 1000), 1000] for d in dpi]
    entries = [
        _tiff_entry(256, _LONG, [width]),
        _tiff_entry(257, _LONG, [height]),
        _tiff_entry(258, _SHORT, [8 * pixels.itemsize] * channels),
        _tiff_entry(259, _SHORT, [1]),  # no compression
        _tiff_entry(262, _SHORT, [2]),  # RGB
        _tiff_entry(273, _LONG, [0]),  # strip offset, filled in below
        _tiff_entry(277, _SHORT, [channels]),
        _tiff_entry(278, _LONG, [height]),
        _tiff_entry(279, _LONG, [strip_bytes]),
        _tiff_entry(282, _RATIONAL, resolution[0]),
        _tiff_entry(283, _RATIONAL, resolution[1]),
        _tiff_entry(284, _SHORT, [1]),  # chunky (interleaved) samples
        _tiff_entry(296, _SHORT, [2]),  # resolution in inches
    ]
    entries += [_tiff_entry(tag, _ASCII, text) for tag, text in tiff_ascii_tags(metadata)]
    if alpha is not None:
        entries.append(_tiff_entry(338, _SHORT, [2]))  # extra sample: unassociated alpha
    if metadata is not None and metadata.xmp:
        entries.append(_tiff_entry(_TIFF_XMP, _BYTE, metadata.xmp))
    sub_ifds = tiff_sub_ifds(metadata, (width, height))  # Exif (dates, exposure) and GPS
    entries += [_tiff_entry(group, _LONG, [0]) for group in sub_ifds]  # pointers, filled in below
    entries.sort(key=lambda e: e[0])  # TIFF requires ascending tag order

    extra_offset = offset + 2 + 12 * len(entries) + 4
    placed, extra = [], b""
    for tag, kind, count, payload in entries:
        if len(payload) <= 4:
            placed.append((tag, kind, count, payload.ljust(4, b"\0")))
        else:
            placed.append((tag, kind, count, struct.pack("<I", extra_offset + len(extra))))
            extra += payload
            extra += b"\0" * (len(extra) % 2)  # keep offsets word-aligned
    pointers = {273: 0}
    for group, serialise in sub_ifds.items():  # each sub-IFD among the values, at a word boundary
        pointers[group] = extra_offset + len(extra)
        extra += serialise(pointers[group])
        extra += b"\0" * (len(extra) % 2)
    pointers[273] = extra_offset + len(extra)  # the strip; the caller checks the page ends below 4 GB
    ifd = struct.pack("<H", len(placed))
    for tag, kind, count, value in placed:
        ifd += struct.pack("<HHI", tag, kind, count) + (struct.pack("<I", pointers[tag]) if tag in pointers else value)
    return ifd, extra, strip_bytes
