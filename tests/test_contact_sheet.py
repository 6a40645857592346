"""`colorize batch --contact-sheet`: every photo beside its colouring, on review pages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from colorize_cli import contact_sheet
from colorize_cli.cli import app
from colorize_cli.errors import ExitCode

from conftest import save_photo


def batch(*args):
    return CliRunner().invoke(app, ["batch", *map(str, args)])


def scans(folder, n=3):
    folder.mkdir()
    for k in range(n):
        save_photo(folder / f"scan{k}.png", "L", seed=k)
    return folder


def test_batch_writes_a_sheet_of_inputs_beside_colourings(tmp_path, tiny_weights):
    src = scans(tmp_path / "box")
    sheet = tmp_path / "review.png"
    result = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", sheet)
    assert result.exit_code == 0, result.output
    page = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    t, gap = contact_sheet.THUMB, contact_sheet.GAP
    # three cells in one row: inputs and colourings, not a blank page
    assert page.shape[1] == 3 * (2 * t + gap) + 4 * 2 * gap
    first_input = page[2 * gap:2 * gap + t, 2 * gap:2 * gap + t]
    first_colour = page[2 * gap:2 * gap + t, 2 * gap + t + gap:2 * gap + 2 * t + gap]
    photo_rows = first_input[(first_input != 255).any(axis=(1, 2))]
    assert len(photo_rows) > 0 and np.abs(photo_rows[..., 0] - photo_rows[..., 2]).max() <= 2  # grey input
    assert np.abs(first_colour[..., 0] - first_colour[..., 2]).max() > 2  # coloured output

    # a rerun (everything skipped) still makes the sheet, from the existing outputs
    sheet.unlink()
    assert batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", sheet).exit_code == 0
    assert sheet.exists()


def test_a_photo_that_failed_has_its_cell_saying_why(tmp_path, tiny_weights):
    src = scans(tmp_path / "box", n=2)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    sheet = tmp_path / "review.png"
    result = batch(src, "--weights", tiny_weights["unet"], "-o", tmp_path / "out", "--contact-sheet", sheet)
    assert result.exit_code not in (0, ExitCode.USAGE) and "1 failed" in result.stderr
    page = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    t, gap = contact_sheet.THUMB, contact_sheet.GAP
    assert page.shape[1] == 3 * (2 * t + gap) + 4 * 2 * gap  # three cells: the failure has one too
    # in the batch's order (broken.jpg first): an unreadable input, and why, on the failure's paper
    first_input = page[2 * gap:2 * gap + t, 2 * gap:2 * gap + t]
    why = page[2 * gap:2 * gap + t, 2 * gap + t + gap:2 * gap + 2 * t + gap]
    assert (first_input == contact_sheet.FAILED_PAPER).all(axis=-1).all()
    assert (why == contact_sheet.FAILED_PAPER).all(axis=-1).mean() > 0.8
    assert (np.abs(why - contact_sheet.FAILED_INK).sum(axis=-1) < 60).any()  # its text
    cells = [contact_sheet._wrapped("Cannot read broken.jpg: the file is corrupt", 12, 3)]
    assert cells == [["Cannot read", "broken.jpg:", "..."]]


def test_many_photos_make_numbered_pages_and_unreadable_ones_are_reported(tmp_path):
    pairs = []
    for k in range(5):
        a, b = save_photo(tmp_path / f"in{k}.png", "L", seed=k), save_photo(tmp_path / f"out{k}.png", seed=k)
        pairs.append((a, b))
    (tmp_path / "out4.png").write_bytes(b"not a png")
    pages, problems = contact_sheet.write_contact_sheets(pairs, tmp_path / "sheet.jpg", per_page=2)
    assert [p.name for p in pages] == ["sheet-1.jpg", "sheet-2.jpg"]
    assert all(p.exists() for p in pages) and not (tmp_path / "sheet.jpg").exists()
    assert len(problems) == 1 and "out4.png" in problems[0]
    # Fewer photos the next time: one page under the plain name, the old numbered pages gone
    # (a file of that pattern that colorize did not make stays).
    save_photo(tmp_path / "sheet-3.jpg", seed=9)
    pages, problems = contact_sheet.write_contact_sheets(pairs[:2], tmp_path / "sheet.jpg", per_page=2)
    assert [p.name for p in pages] == ["sheet.jpg"] and not problems
    assert sorted(p.name for p in tmp_path.glob("sheet*.jpg")) == ["sheet-3.jpg", "sheet.jpg"]
    # Exactly one full page is one page, not a numbered one.
    pages, _ = contact_sheet.write_contact_sheets(pairs[:2] + pairs[4:], tmp_path / "sheet.jpg", per_page=2)
    assert [p.name for p in pages] == ["sheet.jpg"]


def test_captions_draw_letters_beyond_latin_when_a_unicode_font_is_installed():
    font = contact_sheet._caption_font()
    if not hasattr(font, "getmask2") or "DejaVu" not in str(getattr(font, "path", "")):
        import pytest

        pytest.skip("no DejaVu font on this machine")
    box = font.getmask("\u0416")  # a Cyrillic letter: a glyph, not the font's empty box
    missing = font.getmask("\uffff")
    assert np.asarray(box).tobytes() != np.asarray(missing).tobytes()


def test_sheets_that_would_be_coloured_or_replace_outputs_are_refused(tmp_path, tiny_weights):
    src = scans(tmp_path / "box", n=1)
    inside = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", src / "review.jpg")
    assert inside.exit_code == ExitCode.USAGE and "inside the input folder" in inside.stderr
    clash = batch(src, "--weights", tiny_weights["unet"], "-o", tmp_path / "out",
                  "--contact-sheet", tmp_path / "out" / "scan0.png")
    assert clash.exit_code == ExitCode.USAGE and "would replace" in clash.stderr
    bad = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", tmp_path / "review.pdf")
    assert bad.exit_code == ExitCode.USAGE and "--contact-sheet" in bad.stderr
    assert ".pdf is no format that carries the note" in bad.stderr and ".avif" in bad.stderr
    assert ".bmp" not in bad.stderr  # the formats a sheet can be, not every image format
    bmp = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", tmp_path / "review.bmp")
    assert bmp.exit_code == ExitCode.USAGE and "BMP file cannot carry" in bmp.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "box-colorized").exists()


def test_a_sheet_never_replaces_a_photo_or_a_file_it_did_not_make(tmp_path, tiny_weights):
    src = scans(tmp_path / "box", n=1)
    photo = src / "scan0.png"
    before = photo.read_bytes()
    # the output folder holds the input folder: a sheet named like a photo is still refused
    result = batch(src, "--weights", tiny_weights["unet"], "-o", tmp_path, "--contact-sheet", photo)
    assert result.exit_code == ExitCode.USAGE and photo.read_bytes() == before

    notes = tmp_path / "notes.png"
    save_photo(notes, "L")
    result = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", notes)
    assert result.exit_code == ExitCode.OUTPUT and "--overwrite" in result.stderr
    assert not (tmp_path / "box-colorized").exists()  # refused before any colouring

    sheet = tmp_path / "review.png"
    for _ in range(2):  # a rerun replaces the sheet it made itself
        result = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", sheet)
        assert result.exit_code == 0, result.output
    assert contact_sheet.is_contact_sheet(sheet) and not contact_sheet.is_contact_sheet(notes)

    # A file of a page's name that this run cannot reach (one page here) is no reason to refuse.
    unrelated = tmp_path / "review-7.png"
    save_photo(unrelated, "L")
    kept = unrelated.read_bytes()
    result = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", sheet)
    assert result.exit_code == 0, result.output
    assert unrelated.read_bytes() == kept


def test_the_pages_a_sheet_may_write():
    target = Path("/box/review.jpg")
    assert contact_sheet.pages_it_may_write(target, 48) == {target}
    assert contact_sheet.pages_it_may_write(target, 49) == {target, Path("/box/review-1.jpg"), Path("/box/review-2.jpg")}
    assert len(contact_sheet.pages_it_may_write(target, 97)) == 4


def test_a_sheet_that_cannot_be_written_is_a_warning_after_the_batch(tmp_path, tiny_weights, monkeypatch):
    from colorize_cli.imageio import OutputError

    def disk_full(*args, **kwargs):
        raise OutputError("Cannot write review.png: No space left on device.")

    monkeypatch.setattr(contact_sheet, "save_image", disk_full)
    src = scans(tmp_path / "box", n=2)
    result = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", tmp_path / "review.png", "--json")
    assert result.exit_code == 0, result.output
    assert "Warning: contact sheet: Cannot write review.png" in result.stderr
    assert '"done": 2' in result.stdout.replace("\n", "")
    (tmp_path / "sheet.png").mkdir()
    folder_in_the_way = batch(src, "--weights", tiny_weights["unet"], "--contact-sheet", tmp_path / "sheet.png")
    assert folder_in_the_way.exit_code == ExitCode.USAGE and "is a folder" in folder_in_the_way.stderr

