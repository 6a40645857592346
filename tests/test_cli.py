"""The command line, driven through Typer's CliRunner (and one real subprocess)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorize_cli.cli import app
from colorize_cli.errors import ExitCode
from colorize_cli.upsample import luminance

from conftest import photo, save_photo

try:
    runner = CliRunner(mix_stderr=False)
except TypeError:  # Click >= 8.2 keeps stderr apart by default
    runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def test_version_and_help_do_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from colorize_cli.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(app, ['--version']); assert 'colorize' in r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command", [[], ["color"], ["batch"], ["train"], ["bench"], ["models"], ["models", "verify"]])
def test_help_shows_switches_without_a_value(command):
    """A switch is given or not: Typer 0.29 labelled each `--overwrite <bool>` in --help, which
    reads as if it took a value (`--overwrite true` would take "true" for a photo); also the
    switches Typer and Click add themselves (--help, the completion options)."""
    result = run(*command, "--help")
    assert result.exit_code == 0
    switches = [line for line in result.stdout.splitlines()
                if re.search(r"--(overwrite|quiet|json|recursive|resume|compile|debug|version|help|install-completion)\b",
                             line)]
    assert any("--help" in line for line in switches)
    assert not [line for line in switches if "bool" in line.lower()], switches


def test_colouring_a_photo_does_not_import_kornia(tmp_path, tiny_weights):
    """Importing kornia costs ~0.15 s of a 1-MP photo's ~1.5 s; the colouring path converts with
    its formulas (tests/test_upsample.py compares) and leaves the import to Lab users (hints, bench, train)."""
    grey, colour = save_photo(tmp_path / "grey.png", "L"), save_photo(tmp_path / "colour.jpg", "RGB")
    code = ("import sys; from colorize_cli.cli import main; sys.argv = ['colorize', *sys.argv[1:]]\n"
            "try: main()\nexcept SystemExit as e: assert e.code in (0, None), e.code\n"
            "assert 'kornia' not in sys.modules, 'kornia imported'")
    subprocess.run([sys.executable, "-c", code, str(grey), str(colour), "-o", str(tmp_path / "out"),
                    "--weights", str(tiny_weights["unet"]), "--size", "32", "--quiet"], check=True, timeout=120)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["colour-colorized.png", "grey-colorized.png"]


def test_model_loading_pauses_the_garbage_collector_and_always_resumes_it(fake_registry, tmp_path, monkeypatch):
    import gc

    from colorize_cli import cli, pipeline

    seen = []
    real_load = pipeline.Engine.load

    def load(*args, **kwargs):
        seen.append(gc.isenabled())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pipeline.Engine, "load", load)
    assert gc.isenabled()
    try:
        result = run(save_photo(tmp_path / "grey.png", "L"), "-o", tmp_path / "out.png")
        assert result.exit_code == 0, result.stderr
        assert seen == [False] and gc.isenabled()
        # A failing load (unknown model) resumes it too.
        assert run(tmp_path / "grey.png", "-o", tmp_path / "again.png", "--model", "nope").exit_code != 0
        assert gc.isenabled()
        # And it is left off where the caller had turned it off.
        gc.disable()
        with cli._collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_colours_one_photo_with_the_bundled_default(fake_registry, tmp_path):
    src = save_photo(tmp_path / "grey.png", "L")
    out = tmp_path / "out.png"
    result = run(src, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    colour = np.asarray(Image.open(out))
    grey = np.asarray(Image.open(src).convert("RGB"))
    assert colour.shape == grey.shape
    # The luminance is the input's own, at full resolution.
    assert np.abs(luminance(colour) - luminance(grey)).max() < 1.0
    # And it is no longer grey.
    assert np.abs(colour.astype(int) - grey.astype(int)).max() > 0


def test_default_output_name_beside_input(fake_registry, tmp_path):
    src = save_photo(tmp_path / "scan.jpg", "L")
    assert run(src).exit_code == 0
    assert (tmp_path / "scan-colorized.png").is_file()


def test_several_inputs_into_a_folder(fake_registry, tmp_path):
    a, b = save_photo(tmp_path / "a.png", "L"), save_photo(tmp_path / "b.jpg", "L", seed=1)
    result = run(a, b, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a-colorized.png", "b-colorized.png"]


def test_refuses_to_overwrite_output_without_flag(fake_registry, tmp_path, monkeypatch):
    from colorize_cli import pipeline

    src = save_photo(tmp_path / "a.png", "L")
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    real_load = pipeline.Engine.load

    def no_model_needed(*args, **kwargs):
        raise AssertionError("the model was loaded although nothing needs colouring")

    monkeypatch.setattr(pipeline.Engine, "load", no_model_needed)
    result = run(src, "-o", out)
    monkeypatch.setattr(pipeline.Engine, "load", real_load)
    assert result.exit_code == ExitCode.OUTPUT
    assert len(error_lines(result)) == 1 and "--overwrite" in error_lines(result)[0]
    assert out.read_bytes() == b"precious"
    assert run(src, "-o", out, "--overwrite").exit_code == 0
    assert Image.open(out).size == (64, 48)


def test_never_overwrites_the_input(fake_registry, tmp_path):
    src = save_photo(tmp_path / "a.png", "L")
    before = src.read_bytes()
    result = run(src, "-o", src, "--overwrite")
    assert result.exit_code == ExitCode.OUTPUT
    assert len(error_lines(result)) == 1
    assert src.read_bytes() == before


def _bomb_png(path: Path) -> Path:
    """A valid PNG header claiming 40000 x 40000 pixels (1.6 GP): refused before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "random", "missing", "bomb"])
def test_bad_inputs_give_one_error_line_and_no_output(fake_registry, tmp_path, kind):
    src = tmp_path / "bad.png"
    if kind == "empty":
        src.write_bytes(b"")
    elif kind == "text":
        src.write_text("hello, not an image")
    elif kind == "truncated":
        good = save_photo(tmp_path / "good.png", "L", height=200, width=200)
        src.write_bytes(good.read_bytes()[:300])
    elif kind == "random":
        src.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "bomb":
        _bomb_png(src)
    out = tmp_path / "out.png"
    result = run(src, "-o", out)
    assert result.exit_code == ExitCode.BAD_INPUT, result.stderr
    assert len(error_lines(result)) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


@pytest.mark.parametrize("mode,ext", [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"), ("P", ".png"),
                                      ("CMYK", ".jpg"), ("L", ".tif"), ("RGB", ".webp"), ("RGB", ".bmp"), ("LA", ".png")])
def test_every_input_kind(fake_registry, tmp_path, mode, ext):
    src = save_photo(tmp_path / f"in{ext}", mode)
    out = tmp_path / ("out.png" if mode not in ("RGBA", "LA") else "out.png")
    result = run(src, "-o", out)
    assert result.exit_code == 0, result.stderr
    img = Image.open(out)
    assert img.size == (64, 48)
    assert img.mode == ("RGBA" if mode in ("RGBA", "LA") else "RGB")


def test_alpha_is_kept(fake_registry, tmp_path):
    rgba = np.dstack([photo(), np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))])
    src = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(src)
    assert run(src, "-o", tmp_path / "o.png").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png"))[..., 3], rgba[..., 3])


def test_16_bit_grey_gives_16_bit_output(fake_registry, tmp_path):
    grey16 = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    src = tmp_path / "scan16.png"
    Image.fromarray(grey16).save(src)
    out = tmp_path / "out16.png"
    assert run(src, "-o", out).exit_code == 0
    from colorize_cli.imageio import load_image

    loaded = load_image(out)
    assert loaded.bit_depth == 16 and loaded.pixels.dtype == np.uint16
    assert len(np.unique(loaded.pixels)) > 256  # more than 8 bits of information survived


def test_exif_orientation_is_applied(fake_registry, tmp_path):
    img = Image.fromarray(photo()).convert("L")  # 64 wide, 48 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    src = tmp_path / "rot.jpg"
    img.save(src, exif=exif)
    assert run(src, "-o", tmp_path / "o.png").exit_code == 0
    assert Image.open(tmp_path / "o.png").size == (48, 64)


def test_same_seed_same_image_and_batch_independence(fake_registry, tmp_path):
    a, b = save_photo(tmp_path / "a.png", "L"), save_photo(tmp_path / "b.png", "L", seed=3)
    run(a, "-o", tmp_path / "a1.png", "--seed", "5", "--sampler", "ddpm")
    run(a, b, "-o", tmp_path / "both", "--seed", "5", "--sampler", "ddpm", "--batch-size", "2")
    run(a, "-o", tmp_path / "a2.png", "--seed", "6", "--sampler", "ddpm")
    one = np.asarray(Image.open(tmp_path / "a1.png")).astype(int)
    batched = np.asarray(Image.open(tmp_path / "both" / "a-colorized.png")).astype(int)
    other_seed = np.asarray(Image.open(tmp_path / "a2.png")).astype(int)
    assert np.abs(one - batched).max() <= 1  # float reductions may differ by one level
    assert np.abs(one - other_seed).max() > 1


def test_samples_gives_distinct_colourings(fake_registry, tmp_path):
    src = save_photo(tmp_path / "a.png", "L")
    result = run(src, "-o", tmp_path / "o.png", "--samples", "2", "--sampler", "ddpm")
    assert result.exit_code == 0, result.stderr
    one, two = (np.asarray(Image.open(tmp_path / f"o-{k}.png")).astype(int) for k in (1, 2))
    assert np.abs(one - two).max() > 1


def test_samples_of_a_deterministic_sampler_are_refused(fake_registry, tiny_weights, tmp_path):
    # One-step models give one colouring per photo: K identical files would pass for K choices.
    src = save_photo(tmp_path / "a.png", "L")
    result = run(src, "-o", tmp_path / "o.png", "--samples", "3", "--weights", tiny_weights["unet"])
    assert result.exit_code == ExitCode.USAGE
    assert "one colouring per photo" in error_lines(result)[0]
    assert not list(tmp_path.glob("o*.png"))
    assert run(src, "-o", tmp_path / "o.png", "--weights", tiny_weights["unet"]).exit_code == 0


def test_unsupported_sampler_is_a_usage_error(fake_registry, tmp_path):
    src = save_photo(tmp_path / "a.png", "L")
    result = run(src, "-o", tmp_path / "o.png", "--sampler", "cold")
    assert result.exit_code == ExitCode.USAGE
    assert "supports" in error_lines(result)[0]


def test_each_architecture_runs_from_a_weights_file(tiny_weights, tmp_path):
    src = save_photo(tmp_path / "a.png", "L")
    for arch, path in tiny_weights.items():
        out = tmp_path / f"{arch}.png"
        result = run(src, "-o", out, "--weights", path, "--size", "32")
        assert result.exit_code == 0, (arch, result.stderr)
        assert Image.open(out).size == (64, 48)


def test_missing_weights_and_pickles_are_weights_errors(fake_registry, tmp_path):
    src = save_photo(tmp_path / "a.png", "L")
    result = run(src, "--model", "absent")
    assert result.exit_code == ExitCode.WEIGHTS
    assert len(error_lines(result)) == 1
    pickle_file = tmp_path / "evil.safetensors"
    import pickle

    pickle_file.write_bytes(pickle.dumps({"a": 1}))
    result = run(src, "--weights", pickle_file)
    assert result.exit_code == ExitCode.WEIGHTS
    assert not (tmp_path / "a-colorized.png").exists()


def test_batch_mirrors_resumes_and_reports_failures(fake_registry, tmp_path, monkeypatch):
    scans = tmp_path / "scans"
    (scans / "box1").mkdir(parents=True)
    save_photo(scans / "a.png", "L")
    save_photo(scans / "box1" / "b.jpg", "L", seed=2)
    (scans / "box1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    result = run("batch", scans, "-o", out, "--recursive")
    assert result.exit_code == ExitCode.PARTIAL
    assert (out / "a.png").is_file() and (out / "box1" / "b.png").is_file()
    assert not (out / "box1" / "broken.png").exists()
    assert "2 done, 0 skipped, 1 failed" in result.stderr
    assert "broken.jpg" in result.stderr

    # Rerun: finished files are skipped (resume), the broken one is reported again.
    stamp = (out / "a.png").stat().st_mtime_ns
    result = run("batch", scans, "-o", out, "--recursive", "--json")
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 2, 1)
    assert (out / "a.png").stat().st_mtime_ns == stamp
    failed = [f for f in summary["files"] if f["status"] == "failed"]
    assert "broken.jpg" in failed[0]["source"] and failed[0]["reason"]

    # A finished batch is confirmed without loading the model at all.
    from colorize_cli import pipeline

    (scans / "box1" / "broken.jpg").unlink()
    monkeypatch.setattr(pipeline.Engine, "load", lambda *a, **k: pytest.fail("model loaded for a finished batch"))
    result = run("batch", scans, "-o", out, "--recursive")
    assert result.exit_code == 0 and "0 done, 2 skipped, 0 failed" in result.stderr


def test_a_batch_counts_as_done_only_its_photos_own_colourings(fake_registry, tmp_path):
    """A rerun skips an output only if its note says it is this photo's colouring: a user's own
    photo, another photo's colouring or a contact sheet at the name is reported, never taken for
    done and never replaced (not even with --overwrite); a colouring whose note names no source
    (colorize before the source was recorded) and a BMP (no note at all) still count as done."""
    from PIL import Image

    from colorize_cli.metadata import note_source, software_note

    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    for name, seed in (("a.png", 1), ("b.jpg", 2), ("c.png", 3)):
        save_photo(scans / name, "L", seed=seed)
    assert run("batch", scans, "-o", out).exit_code == 0
    assert note_source(software_note(out / "b.png")) == "b.jpg"

    own = out / "a.png"  # the user's photo where a.png's colouring goes
    Image.new("RGB", (8, 8), "red").save(own)
    (out / "b.png").replace(out / "c.png")  # b's colouring where c's goes
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in ((), ("--overwrite",)):
        result = run("batch", scans, "-o", out, "--json", *extra)
        assert result.exit_code == ExitCode.PARTIAL, result.stderr
        files = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
        assert files["a.png"]["status"] == "failed" and "colorize did not make" in files["a.png"]["reason"]
        assert files["c.png"]["status"] == "failed" and "colouring of another photo, b.jpg" in files["c.png"]["reason"]
        assert files["b.jpg"]["status"] == "done"  # its own output was moved away: coloured again
        assert all((out / name).read_bytes() == data for name, data in before.items())  # nothing replaced

    (scans / "b.jpg").rename(scans / "b.JPG")  # renamed: its colouring (b.png, made for b.jpg) is still its own
    result = run("batch", scans, "-o", out, "--json")
    files = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["b.JPG"]["status"] == "skipped"

    sheet_scans = tmp_path / "sheet-scans"
    sheet_scans.mkdir()
    save_photo(sheet_scans / "review.png", "L")
    assert run("batch", scans, "-o", tmp_path / "o2", "--contact-sheet", tmp_path / "o3" / "review.png").exit_code == 0
    result = run("batch", sheet_scans, "-o", tmp_path / "o3", "--json")
    assert "a contact sheet colorize made" in json.loads(result.stdout)["files"][0]["reason"]


def test_a_samples_colouring_is_never_taken_for_the_photo_its_name_matches(fake_registry, tmp_path):
    """scan.png's second-run sample scan-1.png sits where scan-1.png's colouring goes: whichever
    photos a later run selects (--glob), it is reported, not skipped as done."""
    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    save_photo(scans / "scan.png", "L")
    assert run("batch", scans, "-o", out, "--samples", "2", "-q").exit_code == 0
    save_photo(scans / "scan-1.png", "L", seed=2)
    for extra in ((), ("--glob", "scan-1*")):
        result = run("batch", scans, "-o", out, "--json", *extra)
        files = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
        assert files["scan-1.png"]["status"] == "failed", files
        assert "colouring of another photo, scan.png" in files["scan-1.png"]["reason"]


def test_colourings_without_a_recorded_source_and_bmps_still_resume(fake_registry, tmp_path):
    from colorize_cli.imageio import load_image, save_image
    from colorize_cli.metadata import ImageMetadata, software_note

    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    save_photo(scans / "b.png", "L", seed=2)
    assert run("batch", scans, "-o", out).exit_code == 0
    note = software_note(out / "a.png")
    legacy = note[:note.rindex(", source ")]  # as colorize wrote it before notes named their source
    image = load_image(out / "a.png")
    save_image(out / "a.png", image.pixels, overwrite=True, metadata=ImageMetadata(software=legacy))
    result = run("batch", scans, "-o", out, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["skipped"] == 2
    assert run("batch", scans, "-o", tmp_path / "bmp", "--format", "bmp").exit_code == 0
    result = run("batch", scans, "-o", tmp_path / "bmp", "--format", "bmp", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["skipped"] == 2


def test_a_photo_whose_output_is_another_photos_folder_of_colourings_is_reported(fake_registry, tmp_path):
    """in/x.jpg -> out/x.png and in/x.png/y.jpg -> out/x.png/y.png cannot both be written: the
    photo is reported before anything is coloured (it was 'skipped' or failed by chance)."""
    scans, out = tmp_path / "scans", tmp_path / "out"
    (scans / "x.png").mkdir(parents=True)
    save_photo(scans / "x.jpg", "L")
    save_photo(scans / "x.png" / "y.jpg", "L", seed=2)
    for _ in range(2):  # and the same on a rerun
        result = run("batch", scans, "-o", out, "-r", "--json")
        assert result.exit_code == ExitCode.PARTIAL
        files = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
        assert files["x.jpg"]["status"] == "failed" and "also the folder" in files["x.jpg"]["reason"]
        assert files["y.jpg"]["status"] in ("done", "skipped") and (out / "x.png" / "y.png").is_file()


def test_a_batch_removes_what_a_killed_run_left_half_written_and_nothing_else(fake_registry, tmp_path):
    from colorize_cli.atomic import temp_path_beside

    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    out.mkdir()
    stale = temp_path_beside(out / "a.png")        # a kill -9 an hour ago, mid-write
    fresh = temp_path_beside(out / "a.png")        # another process writing it right now
    other = temp_path_beside(out / "notes.txt")    # not an output of this batch
    lookalike = out / ".a.png.backup.tmp"          # the user's, whatever its age
    for path in (stale, fresh, other, lookalike):
        path.write_bytes(b"half")
    old = os.stat(stale).st_mtime - 7200
    for path in (stale, other, lookalike):
        os.utime(path, (old, old))
    assert run("batch", scans, "-o", out).exit_code == 0
    assert (out / "a.png").is_file() and not stale.exists()
    assert fresh.exists() and other.exists() and lookalike.exists()


def test_batch_without_recursive_and_with_glob(fake_registry, tmp_path):
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    save_photo(scans / "a.png", "L")
    save_photo(scans / "b.tif", "L")
    save_photo(scans / "sub" / "c.png", "L")
    save_photo(scans / "SCAN_2.PNG", "L")  # what scanners and cameras name their files
    result = run("batch", scans, "--glob", "*.png", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [Path(f["source"]).name for f in summary["files"]] == ["SCAN_2.PNG", "a.png"]
    assert (tmp_path / "scans-colorized" / "a.png").is_file()
    result = run("batch", scans, "--glob", "scan_[0-9].png", "-o", tmp_path / "one", "--json")
    assert [Path(f["source"]).name for f in json.loads(result.stdout)["files"]] == ["SCAN_2.PNG"]
    for recursive in (["-r"], []):  # pathlib's '**' lists folders only; '**' alone recurses
        result = run("batch", scans, *recursive, "--glob", "**", "-o", tmp_path / f"all{len(recursive)}", "--json")
        assert sorted(Path(f["source"]).name for f in json.loads(result.stdout)["files"]) == [
            "SCAN_2.PNG", "a.png", "b.tif", "c.png"]


def test_batch_of_empty_folder_is_an_error(fake_registry, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("batch", tmp_path / "empty")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert len(error_lines(result)) == 1


def test_models_list_info_verify(fake_registry):
    result = run("models", "list", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["tiny"]["default"] and rows["tiny"]["source"] == "bundled"
    assert rows["absent"]["source"] == "not available"
    # Piped (not a terminal): whole names, one tab-separated line per model, grep-able.
    lines = [line.split("\t") for line in run("models", "list").stdout.splitlines()]
    assert lines[0][:3] == ["model", "default", "architecture"]
    assert {line[0]: line[1] for line in lines[1:]} == {"tiny": "yes", "absent": "no"}
    assert lines[1][-1] == "tiny test model" or lines[2][-1] == "tiny test model"
    info = json.loads(run("models", "info", "tiny", "--json").stdout)
    assert info["config"]["architecture"] == "lab-ddpm" and info["sha256_status"] == "ok"
    assert run("models", "verify", "tiny").exit_code == 0
    assert run("models", "verify", "absent").exit_code == ExitCode.WEIGHTS
    assert run("models", "info", "nope").exit_code == ExitCode.USAGE  # a misspelt name


def test_installed_entry_point_runs(tmp_path, tiny_weights):
    exe = shutil.which("colorize")
    if exe is None:
        pytest.skip("the colorize entry point is not installed (pip install -e .)")
    src = save_photo(tmp_path / "a.png", "L")
    proc = subprocess.run([exe, str(src), "-o", str(tmp_path / "o.png"), "--weights", str(tiny_weights["unet"]),
                           "--size", "32", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "o.png")
    proc = subprocess.run([exe, str(tmp_path / "missing.png"), "--weights", str(tiny_weights["unet"])], capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.BAD_INPUT
    assert proc.stderr.strip().startswith("Error:") and "Traceback" not in proc.stderr


_EXIT_PROBE = """
import atexit, sys, threading, time
from colorize_cli import cli

class Teardown:
    def __del__(self):
        print("interpreter teardown ran")

KEEP = Teardown()  # a module global: only the interpreter's teardown deletes it
atexit.register(lambda: print("exit handler ran"))
sys.stdout.write("x" * 200_000)  # still in Python's buffer when the command ends
if sys.argv[1] == "thread":
    # The thread waits until the exit has counted threads, so it is still running then however
    # slowly the command ran (a fixed sleep raced a slow machine's imports).
    release, count = threading.Event(), threading.active_count
    threading.Thread(target=lambda: (release.wait(60), time.sleep(0.1), print("thread finished"))).start()
    # counts once, then puts the real function back: a reference left in threading to a function of
    # this script keeps the script's globals, KEEP among them, from the teardown
    threading.active_count = lambda: (setattr(threading, "active_count", count), count(), release.set())[1]
sys.argv = ["colorize", *sys.argv[2:]]
cli.run()
"""


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["missing.png"], ExitCode.BAD_INPUT)])
def test_the_executable_skips_teardown_but_not_what_a_command_leaves(tmp_path, args, code):
    """`run` (the installed `colorize`) exits without the interpreter's teardown, yet with the
    command's exit code, its buffered output and the exit handlers; a thread still running gets
    the ordinary exit, which waits for it."""
    proc = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "plain", *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("x" * 200_000) and "exit handler ran" in proc.stdout
    assert "interpreter teardown ran" not in proc.stdout
    assert (code == 0) == ("colorize " in proc.stdout) and (code != 0) == proc.stderr.startswith("Error:")
    proc = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "thread", *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == code
    assert "thread finished" in proc.stdout and "interpreter teardown ran" in proc.stdout


_LATE_SIGNAL_PROBE = """
import atexit, os, signal, sys, threading, time
from colorize_cli import cli

SIGNAL = getattr(signal, sys.argv[1])

def late_signal():  # a second Ctrl-C or kill, arriving while the exit handlers run
    os.kill(os.getpid(), SIGNAL)
    time.sleep(0.5)
    print("exit handler finished")

atexit.register(late_signal)
if sys.argv[2] == "thread":  # the ordinary exit (see below), as with a training run's loader threads
    release, count = threading.Event(), threading.active_count  # running when the exit counts threads
    threading.Thread(target=lambda: (release.wait(60), time.sleep(0.2))).start()
    threading.active_count = lambda: (setattr(threading, "active_count", count), count(), release.set())[1]
sys.argv = ["colorize", *sys.argv[3:]]
cli.run()
"""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("exit_path", ["plain", "thread"])
def test_a_signal_after_the_command_ends_the_process_without_a_traceback(tmp_path, signame, exit_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", _LATE_SIGNAL_PROBE, signame, exit_path, "missing.png"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == ExitCode.BAD_INPUT  # the command's own code
    assert proc.stderr.startswith("Error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "exit handler finished" not in proc.stdout
    proc = subprocess.run([sys.executable, "-c", _LATE_SIGNAL_PROBE, signame, exit_path, "--version"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("colorize ") and not proc.stderr  # success stays success


def test_train_command_passes_every_training_option_through(monkeypatch, tmp_path):
    """`colorize train` offers every option of train_command (what `python -m colorize_cli.train`
    and docs/training.md offer) and hands the values on unchanged."""
    import inspect

    import colorize_cli.train as train_pkg
    from colorize_cli.train import train_command

    seen = {}

    class Result:
        export = tmp_path / "model.safetensors"

    def fake(**kwargs):
        seen.update(kwargs)
        return Result()

    monkeypatch.setattr(train_pkg, "train_command", fake)
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--model", "unet-gan", "--gan-start", "0.5",
                                 "--vq-fraction", "0.2", "--stage", "vq", "--channels-last", "--time-limit", "3",
                                 "--warmup-steps", "7", "--ema-decay", "0.99", "--log-every", "5", "-q"])
    assert result.exit_code == 0, result.output
    expected = set(inspect.signature(train_command).parameters)
    assert set(seen) == expected
    assert (seen["gan_start"], seen["vq_fraction"], seen["stage"], seen["channels_last"], seen["time_limit"],
            seen["warmup_steps"], seen["ema_decay"], seen["log_every"]) == (0.5, 0.2, "vq", True, 3.0, 7, 0.99, 5)
    # --resume needs no --data, and tells the command which options were typed.
    seen.clear()
    result = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path), "--steps", "9", "-q"])
    assert result.exit_code == 0, result.output
    assert seen["data"] == [] and {"resume", "out", "steps"} <= seen["given"] and "workers" not in seen["given"]


def test_saturation_strengthens_colour_keeps_lightness_and_defaults_to_the_files_setting(tiny_weights, tmp_path):
    from colorize_cli.color import rgb_to_lab
    from colorize_cli.weights import load_model_file, save_model_file

    src = save_photo(tmp_path / "grey.png", "L")

    def lab_of(path):
        rgb = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
        return rgb_to_lab(rgb.permute(2, 0, 1))

    outs = {}
    for s in ("1", "3"):
        outs[s] = tmp_path / f"s{s}.png"
        result = run(src, "-o", outs[s], "--weights", tiny_weights["unet"], "--saturation", s)
        assert result.exit_code == 0, result.stderr
    plain, vivid = lab_of(outs["1"]), lab_of(outs["3"])
    assert vivid[1:].norm(dim=0).mean() > 1.5 * plain[1:].norm(dim=0).mean()
    assert (vivid[0] - plain[0]).abs().max() < 1.0  # lightness is the input's either way

    # A file whose config says saturation 3 colours as --saturation 3 does on the original.
    state, config = load_model_file(tiny_weights["unet"])
    save_model_file(tmp_path / "vivid.safetensors", state, dict(config, saturation=3.0))
    result = run(src, "-o", tmp_path / "file3.png", "--weights", tmp_path / "vivid.safetensors")
    assert result.exit_code == 0, result.stderr
    # (the pixels: the files' notes name different weights)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "file3.png")), np.asarray(Image.open(outs["3"])))

    assert run(src, "-o", tmp_path / "x.png", "--saturation", "9").exit_code == ExitCode.USAGE


def test_a_files_strength_profile_shares_out_the_saturation(tiny_weights, tmp_path):
    from colorize_cli.weights import load_model_file, save_model_file

    src = save_photo(tmp_path / "grey.png", "L")
    state, config = load_model_file(tiny_weights["unet"])

    def colour(weights, *args):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.png"
        result = run(src, "-o", out, "--weights", weights, *args)
        assert result.exit_code == 0, result.stderr
        return np.asarray(Image.open(out))

    plain, vivid = colour(tiny_weights["unet"], "--saturation", "1"), colour(tiny_weights["unet"], "--saturation", "3")
    assert not np.array_equal(plain, vivid)
    # All weight 0: --saturation 3 adds nothing; all weight 1: as without a profile.
    for weight, expected in ((0.0, plain), (1.0, vivid)):
        path = tmp_path / f"profile{weight}.safetensors"
        save_model_file(path, state, dict(config, strength_profile=[[weight] * 12] * 3))
        assert np.array_equal(colour(path, "--saturation", "3"), expected)


@pytest.mark.parametrize("preset, expected", [({}, "1000"), ({"OMP_WAIT_POLICY": "ACTIVE"}, None),
                                              ({"GOMP_SPINCOUNT": "5"}, "5")])
def test_main_shortens_openmp_spinning_unless_the_user_chose(monkeypatch, preset, expected):
    import warnings

    from colorize_cli import cli

    # main() sets these in os.environ and adds warning filters: undone after, or every later test
    # (and its subprocesses) runs with them. (delenv of an unset name would record nothing to undo.)
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "HF_HUB_VERBOSITY"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for key, value in preset.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["colorize", "--version"])
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handling
    with pytest.raises(SystemExit), warnings.catch_warnings():
        cli.main()
    assert os.environ.get("GOMP_SPINCOUNT") == expected


def test_inputs_already_in_colour_are_noted_not_refused(tmp_path, tiny_weights):
    folder = tmp_path / "box"
    folder.mkdir()
    save_photo(folder / "grey.png", "L")
    save_photo(folder / "colour.png")  # a colourful picture
    result = run("batch", folder, "--weights", tiny_weights["unet"])
    assert result.exit_code == 0, result.stderr
    assert "Note: already in colour" in result.stderr and "colour.png" in result.stderr
    assert "grey.png" not in result.stderr.split("Note:")[1]
    result = run("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out", "--json")
    flags = {Path(f["source"]).name: f["had_colour"] for f in json.loads(result.stdout)["files"]}
    assert flags == {"grey.png": False, "colour.png": True}


def test_a_multi_page_scan_is_coloured_page_by_page_into_a_tiff_and_says_so_into_other_formats(tmp_path,
                                                                                               tiny_weights):
    """A TIFF output holds every page coloured; a PNG holds one, and that must not pass as done."""
    from PIL import Image

    from colorize_cli.imageio import load_pages

    folder = tmp_path / "box"
    folder.mkdir()
    shades = [60, 120, 180]
    pages = [Image.fromarray(np.full((24, 32 + 8 * i), shade, np.uint8)) for i, shade in enumerate(shades)]
    pages[0].save(folder / "album.tif", save_all=True, append_images=pages[1:], dpi=(600, 600))
    save_photo(folder / "single.tif", "L")

    whole = run(folder / "album.tif", "--weights", tiny_weights["unet"], "-o", tmp_path / "album.tif", "--json")
    assert whole.exit_code == 0, whole.stderr
    (entry,) = json.loads(whole.stdout)["files"]
    assert entry["pages"] == entry["pages_coloured"] == 3 and "Note:" not in whole.stderr
    coloured = load_pages(tmp_path / "album.tif")
    assert [p.pixels.shape[:2] for p in coloured] == [(24, 32), (24, 40), (24, 48)]
    assert coloured[0].metadata.dpi == (600, 600)
    for page, shade in zip(coloured, shades):  # each page keeps its own lightness
        assert abs(float(page.pixels.astype(float).mean()) - shade) < 12

    first = run(folder / "album.tif", "--weights", tiny_weights["unet"], "-o", tmp_path / "album.png")
    assert first.exit_code == 0, first.stderr
    assert "album.tif has 3 pages; only the first was coloured" in first.stderr and "-o NAME.tif" in first.stderr

    result = run("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out", "--json")
    counts = {Path(f["source"]).name: (f["pages"], f["pages_coloured"]) for f in json.loads(result.stdout)["files"]}
    assert counts == {"album.tif": (3, 1), "single.tif": (1, 1)}
    plain = run("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out2")
    note = plain.stderr.split("Note: ")[-1]
    assert "album.tif has 3 pages" in note and "--format tif" in note and "single.tif" not in note
    tiffs = run("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out3", "--format", "tif")
    assert tiffs.exit_code == 0 and "Note:" not in tiffs.stderr
    assert len(load_pages(tmp_path / "out3" / "album.tif")) == 3


def test_json_page_counts_and_colour_are_null_for_files_not_read_this_run(tmp_path, tiny_weights):
    """A rerun skips the album coloured into a PNG and the colour print, and fails the broken file:
    none was read, so `--json` must not report them as one page, all of it coloured (README: the
    other pages are never taken for done), nor the colour print as grey."""
    folder = tmp_path / "box"
    folder.mkdir()
    pages = [Image.fromarray(np.full((24, 32), shade, np.uint8)) for shade in (60, 120, 180)]
    pages[0].save(folder / "album.tif", save_all=True, append_images=pages[1:])
    (folder / "broken.png").write_bytes(b"not an image")
    save_photo(folder / "print.png", "RGB")
    args = ("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out", "--json")
    first = {Path(f["source"]).name: f for f in json.loads(run(*args).stdout)["files"]}
    assert (first["album.tif"]["pages"], first["album.tif"]["pages_coloured"]) == (3, 1)
    assert first["broken.png"]["status"] == "failed"
    assert (first["broken.png"]["pages"], first["broken.png"]["pages_coloured"]) == (None, None)
    assert first["broken.png"]["had_colour"] is None and first["print.png"]["had_colour"] is True
    rerun = {Path(f["source"]).name: f for f in json.loads(run(*args).stdout)["files"]}
    assert rerun["album.tif"]["status"] == "skipped"
    assert (rerun["album.tif"]["pages"], rerun["album.tif"]["pages_coloured"]) == (None, None)
    assert rerun["print.png"]["status"] == "skipped" and rerun["print.png"]["had_colour"] is None


def test_a_scan_too_wide_for_the_batch_format_fails_alone_with_the_reason(tmp_path, tiny_weights):
    from PIL import Image

    folder = tmp_path / "box"
    folder.mkdir()
    Image.fromarray(np.full((4, 16400), 120, np.uint8)).save(folder / "panorama.png")
    save_photo(folder / "photo.png", "L")
    result = run("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out", "--format", "webp")
    assert result.exit_code == 6
    (line,) = error_lines(result)
    assert "panorama.png" in line and "16400x4 is more than WEBP holds (16383 px a side)" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.webp"]


def test_every_page_of_an_album_keeps_its_own_resolution_and_caption(tmp_path, tiny_weights):
    """Pages scanned at different resolutions, each with its caption: the coloured album keeps
    each page's own, and only the first page's note names the hint given for it."""
    from PIL import Image, TiffImagePlugin

    from colorize_cli.imageio import load_pages

    album = tmp_path / "album.tif"
    pages = [(Image.fromarray(np.full((24, 32), 90 + 40 * i, np.uint8)), dpi, f"page {i + 1} caption")
             for i, dpi in enumerate([300, 600, 1200])]
    with open(album, "w+b") as fp, TiffImagePlugin.AppendingTiffWriter(fp) as writer:
        for frame, dpi, caption in pages:
            frame.encoderinfo, frame.encoderconfig = {"dpi": (dpi, dpi), "description": caption}, ()
            TiffImagePlugin._save(frame, writer, str(album))
            writer.newFrame()

    result = run(album, "--weights", tiny_weights["unet"], "-o", tmp_path / "out.tif", "--hint", "50%,50%:#d9633c")
    assert result.exit_code == 0, result.stderr
    coloured = load_pages(tmp_path / "out.tif")
    assert [p.metadata.dpi for p in coloured] == [(300, 300), (600, 600), (1200, 1200)]
    assert [p.metadata.tags.get(270) for p in coloured] == [caption for _, _, caption in pages]
    with Image.open(tmp_path / "out.tif") as im:
        notes = []
        for index in range(3):
            im.seek(index)
            notes.append(im.tag_v2.get(305))
    assert all(note.startswith("colorize ") for note in notes)
    assert "hint 50%,50%:#d9633c" in notes[0] and not any("hint" in note for note in notes[1:])


def test_a_multi_page_scan_with_a_broken_later_page_fails_alone(tmp_path, tiny_weights):
    """Later pages are read while the album's TIFF is written: a page that cannot be read fails
    that album (no partial output), and the batch goes on."""
    folder = tmp_path / "box"
    folder.mkdir()
    pages = [Image.fromarray(np.full((16, 16), shade, np.uint8)) for shade in (60, 120, 180)]
    pages[0].save(folder / "album.tif", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    with Image.open(folder / "album.tif") as im:  # garble the third page's compressed data
        im.seek(2)
        start, length = im.tag_v2[273][0], im.tag_v2[279][0]
    data = bytearray((folder / "album.tif").read_bytes())
    data[start:start + length] = b"\xff" * length
    (folder / "album.tif").write_bytes(bytes(data))
    save_photo(folder / "single.png", "L")

    result = run("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out", "--format", "tif")
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    assert "album.tif" in result.stderr and "corrupt" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["single.tif"]


def test_batch_says_what_it_leaves_as_it_is(fake_registry, tmp_path):
    box = tmp_path / "box"
    (box / "sub").mkdir(parents=True)
    save_photo(box / "a.png", "L")
    save_photo(box / "sub" / "b.png", "L")
    first = run("batch", box)
    assert "1 image(s) in subfolders are not included" in first.stderr and "--recursive" in first.stderr
    assert "in subfolders" not in run("batch", box, "-r", "-o", tmp_path / "all").stderr
    inside = run("batch", box, "-o", box / "coloured")  # an earlier run's outputs in a subfolder are not photos
    assert "1 image(s) in subfolders" in run("batch", box, "-o", tmp_path / "again").stderr and inside.exit_code == 0
    rerun = run("batch", box, "--saturation", "2")  # other settings: the kept output is said to be kept
    assert "1 output(s) were kept as an earlier run made them, with other settings" in rerun.stderr
    assert "saturation 1" in rerun.stderr and "--overwrite" in rerun.stderr
    assert "were kept" not in run("batch", box).stderr  # a plain rerun is a resume
    assert "were kept" not in run("batch", box, "--saturation", "1", "--seed", "0").stderr  # the same settings


@pytest.mark.parametrize("pattern, name, matches", [
    ("*.jpg", "SCAN_1.JPG", True), ("scan_[0-9].tif", "Scan_7.TIF", True), ("[a-c]*.png", "B.PNG", True),
    ("[a-c]*.png", "d.png", False), ("[!x]?.png", "X1.png", False), ("[!]x]*", "]a", False),
    ("[!]x]*", "ab", True), ("[]x]*", "]", True), ("a[b", "A[B", True), ("ß*.png", "ß1.PNG", True),
])
def test_glob_patterns_match_as_fnmatch_does_but_without_case(pattern, name, matches):
    import fnmatch

    from colorize_cli.batch import case_insensitive_glob

    assert fnmatch.fnmatchcase(name, case_insensitive_glob(pattern)) is matches
    assert fnmatch.fnmatchcase(name.lower(), pattern.lower()) is matches  # what "without case" means


@pytest.mark.parametrize("pixel_budget, most_ahead", [(0, 4), (250, 2), (50, 1)])
def test_loads_run_ahead_within_the_pixel_budget(tmp_path, pixel_budget, most_ahead):
    """Large scans are not all read into memory while the model works on the first one."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from colorize_cli.batch import Job, _prefetch

    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((10, 10), 20 * i, np.uint8)).save(paths[-1])  # 100 pixels each
    submitted: list[Path] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            submitted.append(args[0])
            return super().submit(fn, *args, **kwargs)

    handed_out, ahead = [], []
    with Recording(max_workers=2) as executor:
        for job, future in _prefetch(executor, [Job(p, [tmp_path / "out" / p.name]) for p in paths], ahead=4,
                                     pixel_budget=pixel_budget):
            ahead.append(len(submitted) - len(handed_out) - 1)  # loads started beyond this one
            handed_out.append(job.source)
            assert future.result().pixels.shape == (10, 10, 3)
    assert handed_out == paths == submitted
    assert max(ahead) == most_ahead


def test_colourings_waiting_for_a_slow_writer_stay_within_the_budget(tmp_path, tiny_weights, monkeypatch):
    """Behind a slow encoder the model waits, rather than colouring the whole folder into memory."""
    import threading
    import time

    from PIL import Image

    from colorize_cli import batch

    folder = tmp_path / "box"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((16, 16), 30 * i, np.uint8)).save(folder / f"{i}.png")
    monkeypatch.setattr(batch, "HELD_PIXELS", 1)  # every photo is over it, as a 100-MP scan is over 48 MP
    loads, loads_when_written, lock = [], [], threading.Lock()
    real_load, real_save, real_wait = batch.load_image, batch.save_image, batch.wait
    run_waits = threading.Event()

    def counting_load(*args, **kwargs):
        loads.append(args[0])
        return real_load(*args, **kwargs)

    def waiting(*args, **kwargs):
        run_waits.set()
        return real_wait(*args, **kwargs)

    def slow_save(*args, **kwargs):
        # Slow until the run waits for a write, or has read every photo (as it would without the
        # budget): a fixed sleep let a slow machine's model fall behind it, hiding an unbounded run.
        deadline = time.monotonic() + 60
        while not run_waits.is_set() and len(loads) < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        real_save(*args, **kwargs)
        with lock:
            loads_when_written.append(len(loads))

    monkeypatch.setattr(batch, "load_image", counting_load)
    monkeypatch.setattr(batch, "save_image", slow_save)
    monkeypatch.setattr(batch, "wait", waiting)
    result = run("batch", folder, "--weights", tiny_weights["unet"], "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 6
    # When the first output is written, at most the photo being coloured and one loading ahead
    # have joined it (without the budget all six would be in memory by then).
    assert loads_when_written[0] <= 4


def test_overwrite_replaces_a_file_at_a_name_colorize_made_only_if_it_is_that_photos_colouring(fake_registry, tmp_path):
    """`colorize a.png b.png -o out/ --overwrite` must not destroy a hand-coloured out/a-colorized.png
    the user keeps there; `-o FILE` names the file to replace, so it may (as the API's target)."""
    from PIL import Image

    from colorize_cli.api import Colorizer
    from colorize_cli.imageio import OutputError

    src_a, src_b, out = save_photo(tmp_path / "a.png", "L"), save_photo(tmp_path / "b.png", "L", seed=2), tmp_path / "out"
    out.mkdir()
    mine = out / "a-colorized.png"
    Image.new("RGB", (8, 8), "red").save(mine)
    before = mine.read_bytes()
    result = run(src_a, src_b, "-o", out, "--overwrite", "--json")
    files = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["a.png"]["status"] == "failed" and "colorize did not make" in files["a.png"]["reason"]
    assert files["b.png"]["status"] == "done" and mine.read_bytes() == before
    assert run(src_b, src_a, "-o", out, "--overwrite").exit_code == ExitCode.PARTIAL  # its own b: replaced, a: not
    assert run(src_a, "-o", mine, "--overwrite").exit_code == 0 and mine.read_bytes() != before  # named: replaced

    link = out / "b-colorized.png"  # a broken link where a colouring goes: not "nothing there"
    link.unlink()
    link.symlink_to(tmp_path / "nowhere.png")
    result = run(src_b, "-o", out / "", "--overwrite")
    assert result.exit_code == ExitCode.OUTPUT and "a link to nothing" in error_lines(result)[0] and link.is_symlink()
    shot = tmp_path / "shot-1.png"  # -o shot.png --samples 2 writes shot-1.png, shot-2.png: names colorize made
    Image.new("RGB", (8, 8), "blue").save(shot)
    kept = shot.read_bytes()
    assert run(src_a, "-o", tmp_path / "shot.png", "--samples", "2", "--overwrite").exit_code == ExitCode.OUTPUT
    assert shot.read_bytes() == kept

    beside = tmp_path / "a-colorized.png"  # the API: its default name is colorize's, its target the caller's
    Image.new("RGB", (8, 8), "red").save(beside)
    with pytest.raises(OutputError, match="colorize did not make"):
        Colorizer(size=32, device="cpu").colorize_file(src_a, overwrite=True)
    assert Colorizer(size=32, device="cpu").colorize_file(src_a, beside, overwrite=True) == beside
