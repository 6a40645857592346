"""Contact sheets: every photo of a batch beside its colouring, to review a box of scans at a glance.

    sheets = write_contact_sheets([(source, output), ...], Path("review.jpg"))

Each cell shows the input (as the model saw it, upright) and the colouring at the same size,
captioned with the file's path relative to `root`. Pages hold `per_page` cells; one page is
written to the given name, more to `review-1.jpg`, `review-2.jpg`, ... Pages go through
`imageio.save_image`, so they are written atomically in the format their extension names.
"""

from __future__ import annotations

import math
import re
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


def is_page_of(path: Path, target: Path) -> bool:
    """Whether `path` is `target` or one of its numbered pages (`review-2.jpg` for `review.jpg`)."""
    pattern = re.escape(target.stem) + r"(-\d+)?" + re.escape(target.suffix)
    return path.parent == target.parent and re.fullmatch(pattern, path.name) is not None


def is_contact_sheet(path: Path) -> bool:
    """Whether the file at `path` is a page this module wrote."""
    note = software_note(path)
    return note is not None and note.startswith(SHEET_NOTE)


def write_contact_sheets(pairs: list[tuple[Path, Path]], target: Path, *, root: Path | None = None,
                         per_page: int = PER_PAGE) -> tuple[list[Path], list[str]]:
    """Write the sheets for (source, colouring) pairs; returns (pages written, problems).

    A pair whose files cannot be read is left out and reported in `problems`, never fatal.
    """
    cells, problems = [], []
    for source, coloured in pairs:
        try:
            cells.append((_thumbnail(source), _thumbnail(coloured), _caption(source, root)))
        except ImageError as e:
            problems.append(str(e))
    pages = [cells[i:i + per_page] for i in range(0, len(cells), per_page)]
    if len(pages) == 1:
        names = [target]
    else:
        names = [target.with_name(f"{target.stem}-{k}{target.suffix}") for k in range(1, len(pages) + 1)]
    for name, page in zip(names, pages):
        save_image(name, np.asarray(_render(page)), overwrite=True, metadata=ImageMetadata(software=SHEET_NOTE))
    return names[:len(pages)], problems


def _thumbnail(path: Path) -> Image.Image:
    image = load_image(path)
    im = Image.fromarray(to_uint8(image.pixels))
    im.thumbnail((THUMB, THUMB), Image.LANCZOS)
    return im


def _caption(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return path.name


def _render(cells: list[tuple[Image.Image, Image.Image, str]]) -> Image.Image:
    columns = min(COLUMNS, len(cells))
    rows = math.ceil(len(cells) / columns)
    cell_w, cell_h = 2 * THUMB + GAP, THUMB + CAPTION
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * 2 * GAP, rows * cell_h + (rows + 1) * 2 * GAP),
                      "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for k, (before, after, caption) in enumerate(cells):
        x0 = 2 * GAP + (k % columns) * (cell_w + 2 * GAP)
        y0 = 2 * GAP + (k // columns) * (cell_h + 2 * GAP)
        sheet.paste(before, (x0 + THUMB - before.width, y0 + (THUMB - before.height) // 2))
        sheet.paste(after, (x0 + THUMB + GAP, y0 + (THUMB - after.height) // 2))
        text = caption if len(caption) <= 60 else "..." + caption[-57:]
        try:
            draw.text((x0, y0 + THUMB + 2), text, fill=(40, 40, 40), font=font)
        except UnicodeEncodeError:  # Pillow's fallback bitmap font is Latin-1 only
            draw.text((x0, y0 + THUMB + 2), text.encode("latin-1", "replace").decode("latin-1"), fill=(40, 40, 40))
    return sheet
