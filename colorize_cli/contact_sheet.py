"""Contact sheets: every photo of a batch beside its colouring, to review a box of scans at a glance.

    sheets = write_contact_sheets([(source, output), (source, Failed("why")), ...], Path("review.jpg"))

Each cell shows the input (as the model saw it, upright) and the colouring at the same size,
captioned with the file's path relative to `root`; a photo that failed shows, in its place in
the batch, its input (when readable) beside why it failed, so a box's failures are seen too. Pages hold `per_page` cells; one page is
written to the given name, more to `review-1.jpg`, `review-2.jpg`, ... Pages go through
`imageio.save_image`, so they are written atomically in the format their extension names.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .imageio import ImageError, load_image, save_image, to_uint8
from .metadata import ImageMetadata, software_note

THUMB = 192  # px: the longer side of each thumbnail
CAPTION = 16  # px of caption under each cell
GAP = 6  # px between cells
COLUMNS = 4  # cells (input + colouring) per row
PER_PAGE = 48
# Written into each page (EXIF/PNG Software), so a rerun knows it may replace the page.
SHEET_NOTE = "colorize contact sheet"


@dataclass(frozen=True)
class Failed:
    """In place of a colouring: why the photo was not coloured (one line, as the batch reports it)."""
    reason: str


FAILED_INK = (150, 20, 20)
FAILED_PAPER = (250, 232, 232)


def is_page_of(path: Path, target: Path) -> bool:
    """Whether `path` is `target` or one of its numbered pages (`review-2.jpg` for `review.jpg`)."""
    pattern = re.escape(target.stem) + r"(-\d+)?" + re.escape(target.suffix)
    return path.parent == target.parent and re.fullmatch(pattern, path.name) is not None


def pages_it_may_write(target: Path, pairs: int, per_page: int = PER_PAGE) -> set[Path]:
    """The names a sheet of at most `pairs` photos may take: `target` (one page, also when some
    photos fail and the rest fit on one) and, past one page, `target-1` ... `target-K`."""
    count = -(-pairs // per_page) if pairs > per_page else 0
    return {target, *(target.with_name(f"{target.stem}-{k}{target.suffix}") for k in range(1, count + 1))}


def is_contact_sheet(path: Path) -> bool:
    """Whether the file at `path` is a page this module wrote."""
    note = software_note(path)
    return note is not None and note.startswith(SHEET_NOTE)


def write_contact_sheets(pairs: list[tuple[Path, Path | Failed]], target: Path, *, root: Path | None = None,
                         per_page: int = PER_PAGE) -> tuple[list[Path], list[str]]:
    """Write the sheets for (source, colouring or Failed) pairs; returns (pages written, problems).

    A colouring that cannot be read is left out and reported in `problems`, never fatal.
    Thumbnails are made one page at a time, so memory does not grow with the batch. Pages of an
    earlier, longer sheet of this name that this run did not rewrite are removed.
    """
    problems: list[str] = []
    written: list[Path] = []

    def save(cells: list, name: Path) -> None:
        save_image(name, np.asarray(_render(cells)), overwrite=True, metadata=ImageMetadata(software=SHEET_NOTE))
        written.append(name)

    pages = _pages_of_cells(pairs, root, per_page, problems)
    first, second = next(pages, None), next(pages, None)
    if first is not None and second is None:  # one page: the name as given
        save(first, target)
    elif first is not None:  # more: review-1, review-2, ...
        for k, cells in enumerate((first, second, *pages), start=1):
            save(cells, target.with_name(f"{target.stem}-{k}{target.suffix}"))
    if written:  # (nothing written, nothing replaces the earlier pages: they stay)
        _remove_stale_pages(target, written)
    return written, problems


def _pages_of_cells(pairs: list[tuple[Path, Path | Failed]], root: Path | None, per_page: int,
                    problems: list[str]) -> Iterator[list[tuple[Image.Image, Image.Image | Failed, str]]]:
    """The cells, `per_page` at a time (made as each page is asked for)."""
    cells = []
    for source, coloured in pairs:
        try:
            if isinstance(coloured, Failed):  # its input may be what cannot be read
                named = coloured.reason.replace(str(source), source.name)  # the caption has its path
                reason = Failed(named.removeprefix(f"{source.name}: "))
                cells.append((_thumbnail_or_none(source), reason, _caption(source, root)))
            else:
                cells.append((_thumbnail(source), _thumbnail(coloured), _caption(source, root)))
        except ImageError as e:
            problems.append(str(e))
        if len(cells) == per_page:
            yield cells
            cells = []
    if cells:
        yield cells


def _remove_stale_pages(target: Path, written: list[Path]) -> None:
    """Pages of `target` that an earlier run wrote and this one did not (it had fewer photos)."""
    if not target.parent.is_dir():
        return
    kept = {p.name for p in written}
    for path in target.parent.iterdir():
        if path.name not in kept and is_page_of(path, target) and is_contact_sheet(path):
            path.unlink(missing_ok=True)


def _thumbnail(path: Path) -> Image.Image:
    image = load_image(path, preview=2 * THUMB)  # twice the size, so the LANCZOS step still has detail
    im = Image.fromarray(to_uint8(image.pixels))
    im.thumbnail((THUMB, THUMB), Image.LANCZOS)
    return im


def _thumbnail_or_none(path: Path) -> Image.Image | None:
    try:
        return _thumbnail(path)
    except (ImageError, OSError):
        return None


def _caption(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return path.name


def _render(cells: list[tuple[Image.Image | None, Image.Image | Failed, str]]) -> Image.Image:
    columns = min(COLUMNS, len(cells))
    rows = math.ceil(len(cells) / columns)
    cell_w, cell_h = 2 * THUMB + GAP, THUMB + CAPTION
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * 2 * GAP, rows * cell_h + (rows + 1) * 2 * GAP),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for k, (before, after, caption) in enumerate(cells):
        x0 = 2 * GAP + (k % columns) * (cell_w + 2 * GAP)
        y0 = 2 * GAP + (k // columns) * (cell_h + 2 * GAP)
        if before is None:
            draw.rectangle([x0, y0, x0 + THUMB - 1, y0 + THUMB - 1], fill=FAILED_PAPER)
        else:
            sheet.paste(before, (x0 + THUMB - before.width, y0 + (THUMB - before.height) // 2))
        if isinstance(after, Failed):
            right = x0 + THUMB + GAP
            draw.rectangle([right, y0, right + THUMB - 1, y0 + THUMB - 1], fill=FAILED_PAPER)
            lines = ["not coloured:", *_wrapped(after.reason, 30, 10)]
            for n, line in enumerate(lines):
                _text(draw, (right + 6, y0 + 6 + 15 * n), line, FAILED_INK)
            _text(draw, (x0, y0 + THUMB + 2), _shortened(caption), FAILED_INK)
        else:
            sheet.paste(after, (x0 + THUMB + GAP, y0 + (THUMB - after.height) // 2))
            _text(draw, (x0, y0 + THUMB + 2), _shortened(caption), (40, 40, 40))
    return sheet


def _shortened(caption: str, most: int = 60) -> str:
    return caption if len(caption) <= most else "..." + caption[-(most - 3):]


def _wrapped(text: str, width: int, most_lines: int) -> list[str]:
    """`text` in lines of at most `width` characters (long words cut), at most `most_lines`."""
    lines: list[str] = []
    for word in text.split():
        while len(word) > width:
            lines.append(word[:width])
            word = word[width:]
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines[:most_lines - 1] + ["..."] if len(lines) > most_lines else lines


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, ink: tuple[int, int, int]) -> None:
    try:
        draw.text(xy, text, fill=ink, font=_caption_font())
    except UnicodeEncodeError:  # Pillow's fallback bitmap font is Latin-1 only
        draw.text(xy, text.encode("latin-1", "replace").decode("latin-1"), fill=ink)


# Fonts with wide Unicode coverage, tried in order; Pillow's own default draws only Latin letters,
# so a caption like "Großmutter_写真.jpg" would come out as boxes.
_UNICODE_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "Arial Unicode.ttf", "ArialUnicodeMS.ttf",
                  "segoeui.ttf", "arial.ttf")


@functools.lru_cache(maxsize=1)
def _caption_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in _UNICODE_FONTS:
        try:
            return ImageFont.truetype(name, 12)
        except OSError:
            continue
    return ImageFont.load_default(size=12)
