"""`-` reads a photo from standard input; `-o -` writes the colouring to standard output as PNG."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorize_cli.errors import ExitCode
from colorize_cli.imageio import load_image

from conftest import photo, save_photo
from test_cli import error_lines, runner
from colorize_cli.cli import app


def invoke(*args, data: bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], input=data, catch_exceptions=False)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo()).convert("L").save(buffer, format="PNG")
    return buffer.getvalue()


def _stand_ins() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("colorize-*"))


def test_a_pipe_in_and_out_gives_what_files_give(fake_registry, tmp_path, monkeypatch):
    # A temporary folder of its own: another colorize run on the machine (another test suite)
    # makes and removes its stand-ins in the shared one meanwhile.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    before = _stand_ins()
    src = tmp_path / "p.png"
    src.write_bytes(_png_bytes())
    assert invoke(src, "-o", tmp_path / "file.png").exit_code == 0
    piped = invoke("-", "-o", "-", data=_png_bytes())
    assert piped.exit_code == 0, piped.stderr
    out = Image.open(io.BytesIO(piped.stdout_bytes))
    assert out.format == "PNG"
    np.testing.assert_array_equal(np.asarray(out.convert("RGB")), load_image(tmp_path / "file.png").pixels)
    assert "machine colourisation" in out.info["Software"]
    assert _stand_ins() == before  # the temporary files are gone


def test_a_pipe_in_to_a_file_and_a_file_to_a_pipe(fake_registry, tmp_path):
    result = invoke("-", "-o", tmp_path / "out.jpg", data=_png_bytes())
    assert result.exit_code == 0, result.stderr
    assert load_image(tmp_path / "out.jpg").format == "JPEG"
    src = save_photo(tmp_path / "p.png", "L")
    result = invoke(src, "-o", "-")
    assert result.exit_code == 0 and result.stdout_bytes.startswith(b"\x89PNG")
    assert not (tmp_path / "p-colorized.png").exists()


def test_what_cannot_work_with_pipes_is_one_error_line(fake_registry, tmp_path):
    src = save_photo(tmp_path / "p.png", "L")
    cases = [
        (("-",), _png_bytes(), ExitCode.USAGE, "needs -o"),
        (("-", src, "-o", tmp_path / "o"), _png_bytes(), ExitCode.USAGE, "only input"),
        (("-", "-o", tmp_path / "o.png"), b"", ExitCode.BAD_INPUT, "empty"),
        (("-", "-o", tmp_path / "o.png"), b"not a photo", ExitCode.BAD_INPUT, "<standard input>"),
        ((src, "-o", "-", "--samples", "2"), None, ExitCode.USAGE, "--samples"),
        ((src, "-o", "-", "--json"), None, ExitCode.USAGE, "--json"),
    ]
    for args, data, code, words in cases:
        result = invoke(*args, data=data)
        assert result.exit_code == code, (args, result.stderr)
        lines = error_lines(result)
        assert len(lines) == 1 and words in lines[0], (args, result.stderr)
        assert "colorize-" not in lines[0]  # no temporary path shown
    assert not (tmp_path / "o.png").exists()


def test_standard_input_redirected_from_the_output_file_is_never_overwritten(tmp_path):
    import subprocess
    import sys

    src = save_photo(tmp_path / "p.png", "L")
    before = src.read_bytes()
    with open(src, "rb") as stdin:
        proc = subprocess.run([sys.executable, "-m", "colorize_cli", "-", "-o", str(src), "--overwrite"],
                              stdin=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.OUTPUT, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: {src} is the photo on standard input; inputs are never overwritten"]
    assert src.read_bytes() == before


def test_a_reader_that_stops_early_does_not_stop_the_batch(tmp_path):
    import subprocess
    import sys

    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(3):
        save_photo(scans / f"p{k}.png", "L", seed=k)
    proc = subprocess.Popen([sys.executable, "-m", "colorize_cli", "batch", str(scans), "-o", str(tmp_path / "out"),
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    # (an output's line comes when it is written: two writer threads may finish p1 before p0)
    assert first.strip().endswith((b"p0.png", b"p1.png", b"p2.png")) and "Error" not in stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png", "p2.png"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_behind_standard_output_is_an_output_error(tmp_path, tiny_weights):
    import subprocess
    import sys

    src = tmp_path / "p.png"
    src.write_bytes(_png_bytes())
    with open(src, "rb") as stdin, open("/dev/full", "wb") as stdout:
        proc = subprocess.run([sys.executable, "-m", "colorize_cli", "-", "-o", "-", "--weights", str(tiny_weights["unet"]),
                               "--size", "32"], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=120)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == ExitCode.OUTPUT
    assert lines == ["Error: cannot write the PNG to standard output: No space left on device"]


def test_errors_only_a_write_meets_are_output_errors():
    import errno

    from colorize_cli.errors import exit_code_for

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        assert exit_code_for(OSError(code, os.strerror(code))) == ExitCode.OUTPUT
    assert exit_code_for(OSError(errno.EIO, "I/O error")) == ExitCode.FAILURE


def test_notes_about_a_piped_photo_name_standard_input_not_a_temporary_file(fake_registry, tmp_path):
    buffer = io.BytesIO()
    pages = [Image.fromarray(np.full((24, 32), 80 * (i + 1), np.uint8)) for i in range(2)]
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    piped = invoke("-", "-o", "-", data=buffer.getvalue())
    assert piped.exit_code == 0, piped.stderr
    assert "Note: <standard input> has 2 pages; only the first was coloured" in piped.stderr
    assert tempfile.gettempdir() not in piped.stderr
    whole = invoke("-", "-o", tmp_path / "album.tif", data=buffer.getvalue())
    assert whole.exit_code == 0 and "Note:" not in whole.stderr
    assert Image.open(tmp_path / "album.tif").n_frames == 2


def test_a_json_report_that_cannot_be_written_or_read_is_no_traceback(tmp_path, tiny_weights):
    """--json behind a full disk: one Error line, the output error's code; a reader that goes away
    (`| true`) leaves the run's own exit code (a failed file's 6), as plain output does."""
    import subprocess
    import sys

    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "p.png").write_bytes(_png_bytes())
    (folder / "bad.png").write_bytes(b"not a png")
    command = [sys.executable, "-m", "colorize_cli", "batch", str(folder), "--weights", str(tiny_weights["unet"]),
               "--size", "32", "--json"]
    if Path("/dev/full").exists():
        with open("/dev/full", "wb") as stdout:
            proc = subprocess.run(command + ["-o", str(tmp_path / "a")], stdout=stdout, stderr=subprocess.PIPE,
                                  timeout=120)
        assert proc.returncode == ExitCode.OUTPUT
        assert "Traceback" not in proc.stderr.decode()
        assert proc.stderr.decode().splitlines()[-1] == (
            "Error: cannot write the --json report to standard output: No space left on device")
    proc = subprocess.Popen(command + ["-o", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the report comes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.PARTIAL and "Traceback" not in err.decode()


def test_standard_streams_the_run_cannot_use_are_said_and_json_names_them(fake_registry, tmp_path):
    src = save_photo(tmp_path / "p.png", "L")
    result = invoke(src, src, "-o", "-")
    assert result.exit_code == ExitCode.USAGE and "give one input" in result.stderr
    result = invoke("-", "-o", tmp_path / "out.png", "--json", data=_png_bytes())
    assert result.exit_code == 0, result.stderr
    assert '"source": "<standard input>"' in result.stdout
