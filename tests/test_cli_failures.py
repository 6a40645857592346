"""How the command line fails: one `Error:` line, the right exit code, and no data lost.

Each test here is a case an adversarial run of the CLI found going wrong (2026-11-26).
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorize_cli.errors import ExitCode
from colorize_cli.weights import load_model_file, save_model_file

from conftest import save_photo
from test_cli import error_lines, run


def one_error(result, code: ExitCode) -> str:
    """The single `Error:` line of a failed run with exit code `code`, after checking there is no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_input_is_never_overwritten_as_another_inputs_output(fake_registry, tmp_path):
    first = save_photo(tmp_path / "p.png", "L")
    second = save_photo(tmp_path / "p-colorized.png", "L", seed=1)  # also the default output of p.png
    before = second.read_bytes()
    result = run(first, second, "--overwrite")
    assert result.exit_code == ExitCode.PARTIAL
    assert "is an input of this run" in result.stderr
    assert second.read_bytes() == before
    assert (tmp_path / "p-colorized-colorized.png").is_file()  # the other input was still coloured


def test_an_output_without_extension_names_a_folder(fake_registry, tmp_path):
    src = save_photo(tmp_path / "p.png", "L")
    result = run(src, "-o", tmp_path / "newout")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "newout" / "p-colorized.png").is_file()


def test_output_folders_that_cannot_be_made_exit_with_output(fake_registry, tmp_path):
    src = save_photo(tmp_path / "p.png", "L")
    (tmp_path / "afile").write_text("in the way")
    line = one_error(run(src, "-o", tmp_path / "afile"), ExitCode.OUTPUT)
    assert "a file of that name is in the way" in line
    line = one_error(run(src, "-o", tmp_path / "afile" / "x.png"), ExitCode.OUTPUT)
    assert "its folder cannot be created" in line
    (tmp_path / "scans").mkdir()
    save_photo(tmp_path / "scans" / "a.png", "L")
    one_error(run("batch", tmp_path / "scans", "-o", tmp_path / "afile"), ExitCode.OUTPUT)
    assert (tmp_path / "afile").read_text() == "in the way"


def test_an_unknown_output_extension_is_a_usage_error_found_before_the_model_loads(fake_registry, tmp_path,
                                                                                     monkeypatch):
    from colorize_cli import pipeline

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline.Engine, "load", no_load)
    src = save_photo(tmp_path / "p.png", "L")
    line = one_error(run(src, "-o", tmp_path / "out.xyz"), ExitCode.USAGE)
    assert "'.xyz'" in line


def test_batch_of_the_current_folder(fake_registry, tmp_path, monkeypatch):
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    monkeypatch.chdir(scans)
    result = run("batch", ".", "-q")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "scans-colorized" / "a.png").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_a_usage_error(fake_registry, tmp_path):
    src = save_photo(tmp_path / "p.png", "L")
    line = one_error(run(src, "-o", tmp_path / "o.png", "--device", "cuda"), ExitCode.USAGE)
    assert "no CUDA GPU" in line


def test_weights_with_missing_tensors_are_a_weights_error(fake_registry, tiny_weights, tmp_path):
    state, config = load_model_file(tiny_weights["unet"])
    state.pop(sorted(state)[0])
    broken = tmp_path / "broken.safetensors"
    save_model_file(broken, state, config)
    src = save_photo(tmp_path / "p.png", "L")
    line = one_error(run(src, "-o", tmp_path / "o.png", "--weights", broken), ExitCode.WEIGHTS)
    assert "does not hold a model this version can load" in line
    assert sorted(state)[0] not in line and "Missing key" in line and sorted(load_model_file(
        tiny_weights["unet"])[0])[0] in line  # the missing tensor is named


@pytest.mark.parametrize("change, words", [
    (lambda state, config: state.update({k: v * float("nan") for k, v in list(state.items())[:1]}), "NaN"),
    (lambda state, config: config.update(default_steps="x"), "settings this version cannot use"),
    (lambda state, config: config.update(saturation=float("nan")), "settings this version cannot use"),
    (lambda state, config: config.update(strength_profile=[[1.0, -1.0]]), "strength_profile weights must be finite"),
    (lambda state, config: config.update(strength_profile=[[1.0, 1.0], [1.0]]), "strength_profile must be a table"),
    (lambda state, config: config.update(strength_profile=[[[1.0, 0.5], [1.0, 1.0]]]), "must not fall with chroma"),
    (lambda state, config: state.update({"extra": torch.zeros(2, dtype=torch.complex64)}), "complex"),
    (lambda state, config: config["unet"].update(base_channels=0), "unet.base_channels must be an integer from 1"),
    # a few bytes of JSON that had the load build a million blocks until the memory ran out
    (lambda state, config: config["unet"].update(num_res_blocks=1_000_000), "unet.num_res_blocks must be an integer"),
    (lambda state, config: config["unet"].update(channel_mults=[1] * 10_000), "unet.channel_mults must be 1 to 8"),
    (lambda state, config: config.update(unet=None), "unet must be a table of settings"),
    (lambda state, config: config["unet"].update(attention_levels=[7]), "unet.attention_levels must be levels"),
])
def test_weights_with_bad_values_are_a_weights_error(change, words, fake_registry, tiny_weights, tmp_path):
    state, config = load_model_file(tiny_weights["unet"])
    change(state, config)
    bad = tmp_path / "bad.safetensors"
    save_model_file(bad, state, config)
    src = save_photo(tmp_path / "p.png", "L")
    result = run(src, "-o", tmp_path / "o.png", "--weights", bad)
    line = one_error(result, ExitCode.WEIGHTS)
    assert words in line and not (tmp_path / "o.png").exists()
    assert result.stderr.splitlines() == [line]  # no library warning before it


def test_weights_that_are_not_a_regular_file_are_a_weights_error(fake_registry, tmp_path):
    src = save_photo(tmp_path / "p.png", "L")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    assert "not a regular file" in one_error(run(src, "--weights", fifo), ExitCode.WEIGHTS)  # (it used to hang)
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()  # Typer's own check made this a usage error (exit 2)
    assert "not a regular file" in one_error(run(src, "--weights", folder), ExitCode.WEIGHTS)


def test_two_runs_never_both_write_one_new_output(fake_registry, tmp_path, monkeypatch):
    from colorize_cli import imageio

    target = tmp_path / "o.png"
    real = imageio._create_temp

    def meanwhile(path):  # another process writes the output between the check and the rename
        made = real(path)
        target.write_bytes(b"the other run's colouring")
        return made

    monkeypatch.setattr(imageio, "_create_temp", meanwhile)
    with pytest.raises(imageio.OutputExistsError):
        imageio.save_image(target, np.zeros((4, 4, 3), np.uint8))
    assert target.read_bytes() == b"the other run's colouring"
    assert not list(tmp_path.glob(".o.png*"))  # no temporary file left


def test_file_names_are_printed_as_they_are(fake_registry, tmp_path):
    src = save_photo(tmp_path / "x:smile:\tb.png", "L")
    out = tmp_path / "y:thumbs_up:.png"
    result = run(src, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(out)]


def test_control_characters_in_error_messages_are_escaped(fake_registry, tmp_path):
    line = one_error(run(tmp_path / "evil\x1b[2J.png"), ExitCode.BAD_INPUT)
    assert "\x1b" not in line and "\\x1b[2J" in line


def test_an_unexpected_error_is_one_line_unless_debug_asks(fake_registry, tmp_path, monkeypatch):
    from colorize_cli import pipeline

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline.Engine, "load", broken)
    src = save_photo(tmp_path / "p.png", "L")
    line = one_error(run(src, "-o", tmp_path / "o.png"), ExitCode.FAILURE)
    assert line == "Error: a bug (run with --debug for details)"
    result = run("--debug", src, "-o", tmp_path / "o.png")
    assert result.exit_code == ExitCode.FAILURE and "Traceback" in result.stderr
    for args in ([src, "-o", tmp_path / "o.png", "--debug"], ["batch", tmp_path, "--debug"]):  # appended, as users do
        result = run(*args)
        assert result.exit_code == ExitCode.FAILURE and "Traceback" in result.stderr
    dashed = run("--", "--debug")  # after `--`, a file named --debug
    assert dashed.exit_code == ExitCode.BAD_INPUT and "Traceback" not in dashed.stderr


def test_batch_reports_broken_links_and_folders_it_cannot_read(fake_registry, tmp_path, monkeypatch):
    scans = tmp_path / "scans"
    (scans / "locked").mkdir(parents=True)
    save_photo(scans / "good.png", "L")
    save_photo(scans / "locked" / "hidden.png", "L")
    (scans / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    real_scandir = os.scandir

    def scandir(path="."):  # as if `chmod 000 locked` (root would read it anyway)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run("batch", scans, "--recursive")
    assert result.exit_code == ExitCode.PARTIAL
    assert "broken link" in result.stderr and "Cannot read the folder" in result.stderr
    assert (tmp_path / "scans-colorized" / "good.png").is_file()


def test_symlink_loops_are_unreadable_files_not_a_crash(fake_registry, tmp_path):
    """Python before 3.13 raises RuntimeError resolving a loop: that stopped the whole batch
    with exit 1 ("a bug") before a photo was coloured."""
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / "good.png", "L")
    (scans / "self.png").symlink_to("self.png")
    (scans / "ping.png").symlink_to("pong.png")
    (scans / "pong.png").symlink_to("ping.png")
    result = run("batch", scans, "-q")
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    assert result.stderr.count("leads back to itself") == 3 and "Traceback" not in result.stderr
    assert [p.name for p in (tmp_path / "scans-colorized").iterdir()] == ["good.png"]
    mixed = run(scans / "good.png", scans / "self.png", "-o", tmp_path / "out", "-q")
    assert mixed.exit_code == ExitCode.PARTIAL and "leads back to itself" in mixed.stderr
    assert (tmp_path / "out" / "good-colorized.png").is_file()


def test_batch_colours_photos_that_share_a_name(fake_registry, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / "full.jpg", "L")
    save_photo(scans / "full.png", "L", seed=1)
    assert run("batch", scans, "-q").exit_code == 0
    out = tmp_path / "scans-colorized"
    assert sorted(p.name for p in out.iterdir()) == ["full.jpg.png", "full.png.png"]
    again = run("batch", scans, "--json")
    assert again.exit_code == 0 and '"skipped": 2' in again.stdout


def dark_and_light(folder: Path, dark: str, light: str) -> Path:
    """Two flat photos that share a stem; their colourings tell which photo made them."""
    folder.mkdir()
    Image.fromarray(np.full((24, 24), 30, np.uint8)).save(folder / dark)
    Image.fromarray(np.full((24, 24), 220, np.uint8)).save(folder / light)
    return folder


def test_a_resumed_batch_never_takes_another_photos_colouring_for_its_own(fake_registry, tmp_path):
    # scan.tif coloured alone first (a --glob run), then the whole box: the light scan.jpg must be
    # coloured, not skipped because the dark scan.tif's colouring has the plain name scan.png.
    scans = dark_and_light(tmp_path / "box", "scan.tif", "scan.jpg")
    assert run("batch", scans, "--glob", "*.tif", "-q").exit_code == 0
    out = tmp_path / "box-colorized"
    # Its name does not depend on the --glob: scan.jpg is in the folder, so scan.tif is qualified.
    assert [p.name for p in out.iterdir()] == ["scan.tif.png"]
    (out / "scan.tif.png").rename(out / "scan.png")  # what colorize before 2026-11-26 wrote
    result = run("batch", scans, "--json")
    assert result.exit_code == 0, result.stderr
    report = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
    assert report["scan.jpg"]["status"] == "done" and report["scan.tif"]["status"] == "done"
    assert np.asarray(Image.open(out / "scan.jpg.png").convert("L")).mean() > 150
    assert np.asarray(Image.open(out / "scan.tif.png").convert("L")).mean() < 60


def test_a_glob_run_names_outputs_as_a_whole_run_would(fake_registry, tmp_path):
    # scan.jpg coloured by a '*.jpg' run, then scan.png by a '*.png' run: each gets its own
    # colouring, never "skipped: output exists" because of the other's.
    scans = dark_and_light(tmp_path / "g", "scan.jpg", "scan.png")
    assert run("batch", scans, "--glob", "*.jpg", "-q").exit_code == 0
    result = run("batch", scans, "--glob", "*.png", "--json")
    assert json.loads(result.stdout)["done"] == 1, result.stdout
    out = tmp_path / "g-colorized"
    assert sorted(p.name for p in out.iterdir()) == ["scan.jpg.png", "scan.png.png"]
    assert np.asarray(Image.open(out / "scan.png.png").convert("L")).mean() > 150


def test_earlier_colourings_and_sheets_in_the_input_are_left_out(fake_registry, tmp_path):
    box = tmp_path / "r1"
    (box / "sub").mkdir(parents=True)
    save_photo(box / "a.png", "L")
    save_photo(box / "sub" / "b.png", "L")
    first = run("batch", box, "-r", "-o", box / "colour", "--contact-sheet", box / "colour" / "review.jpg")
    assert first.exit_code == 0, first.stderr
    second = run("batch", box, "-r", "--json")
    assert second.exit_code == 0, second.stderr
    assert sorted(Path(f["source"]).name for f in json.loads(second.stdout)["files"]) == ["a.png", "b.png"]
    third = run("batch", box, "-r", "-o", tmp_path / "third")
    assert "Note: left out 3 image(s) colorize made earlier" in third.stderr


def test_names_that_look_like_another_photos_output_are_kept_apart(fake_registry, tmp_path):
    scans = tmp_path / "box"
    scans.mkdir()
    for name in ("photo.tif", "photo.jpg", "photo.tif.jpg", "other.jpg"):
        save_photo(scans / name, "L")
    assert run("batch", scans, "-q").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "box-colorized").iterdir()) == [
        "other.png", "photo.jpg.png", "photo.tif.jpg.png", "photo.tif.png"]


def test_a_photo_without_extension_never_takes_the_name_it_shares(fake_registry, tmp_path):
    """`a` and `a.jpg` share the plain name a.png, which neither gets; `a`'s qualified name would be
    that same a.png, so it is tagged instead."""
    scans = tmp_path / "box"
    scans.mkdir()
    save_photo(scans / "a.jpg", "L")
    Image.open(save_photo(scans / "b.png", "L", seed=2)).save(scans / "a", format="PNG")
    assert run("batch", scans, "--glob", "*", "-o", tmp_path / "out", "-q").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "a.png" not in names and "a.jpg.png" in names and any(re.fullmatch(r"a-[0-9a-f]{6}\.png", n) for n in names)


@pytest.mark.parametrize("args", [("-o", ""), ("--glob", ""), ("--glob=",), ("--contact-sheet", "")])
def test_an_empty_value_is_refused_not_taken_for_here_or_everything(fake_registry, tmp_path, args, monkeypatch):
    """`-o "$OUT"` with OUT unset used to write into the current folder; `--glob ''` coloured everything."""
    scans = tmp_path / "box"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = run("batch", scans, *args)
    assert result.exit_code == ExitCode.USAGE and "empty" in error_lines(result)[0]
    assert list(here.iterdir()) == [] and sorted(p.name for p in scans.iterdir()) == ["a.png"]  # nothing written
    assert run("", "-o", tmp_path / "x.png").exit_code == ExitCode.USAGE  # an empty photo name too
    for words in (("batch", "-r", ""), ("batch", "-rq", ""), (scans / "a.png", "--seed", "1", "")):
        result = run(*words)  # the empty word is an argument of its own, not the value of the word before it
        assert "for an argument" in error_lines(result)[0], words


@pytest.mark.parametrize("args, words", [(("-o", "-"), "standard output"), (("--glob", "."), "relative to the folder"),
                                         (("--glob", "/abs/*.png"), "relative to the folder")])
def test_batch_options_that_cannot_work_are_usage_errors(fake_registry, tmp_path, args, words):
    scans = tmp_path / "box"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    result = run("batch", scans, *args)
    assert result.exit_code == ExitCode.USAGE and len(error_lines(result)) == 1 and words in result.stderr
    assert not (tmp_path / "-").exists()


def test_a_folder_too_deep_for_the_system_fails_alone(fake_registry, tmp_path):
    """A path over PATH_MAX made rglob stop the whole batch (exit 2, nothing coloured)."""
    scans = tmp_path / "box"
    scans.mkdir()
    save_photo(scans / "top.png", "L")
    deep = scans
    fd = os.open(scans, os.O_RDONLY)
    try:  # built relative to each level, as no absolute path that long can be used
        for _ in range(20):
            os.mkdir("d" * 240, dir_fd=fd)
            inner = os.open("d" * 240, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    deep = scans / "/".join(["d" * 240] * 20)
    assert len(str(deep)) > 4096
    result = run("batch", scans, "-r", "-o", tmp_path / "out", "--json")
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    files = json.loads(result.stdout)["files"]
    assert [f["status"] for f in files if f["source"].endswith("top.png")] == ["done"]
    assert any(f["status"] == "failed" for f in files)


def test_a_resumed_batch_writes_only_the_missing_samples(fake_registry, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    assert run("batch", scans, "--samples", "2", "-q").exit_code == 0
    out = tmp_path / "scans-colorized"
    first = (out / "a-1.png").read_bytes()
    (out / "a-2.png").unlink()
    result = run("batch", scans, "--samples", "2", "-q")
    assert result.exit_code == 0, result.stderr
    assert (out / "a-2.png").is_file() and (out / "a-1.png").read_bytes() == first


def test_bench_stops_on_a_broken_image_with_one_line(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    save_photo(data / "a.png")
    (data / "b.jpg").write_bytes(b"not a jpeg")
    line = one_error(run("bench", data, "--models", "grey", "--metrics", "psnr", "-q"), ExitCode.BAD_INPUT)
    assert "b.jpg" in line


def test_bench_takes_a_model_path_of_another_kind_as_a_file_and_refuses_it(tmp_path, monkeypatch):
    data = tmp_path / "set"
    data.mkdir()
    save_photo(data / "a.png")
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle's opening bytes
    line = one_error(run("bench", data, "--models", pickled, "--metrics", "psnr", "-q"), ExitCode.WEIGHTS)
    assert "model.pt" in line and "Unknown model" not in line
    line = one_error(run("bench", data, "--models", tmp_path / "gone.safetensors", "--metrics", "psnr", "-q"),
                     ExitCode.WEIGHTS)
    assert "--weights" not in line
    monkeypatch.chdir(tmp_path)  # a bare file name in the current folder is a file too
    line = one_error(run("bench", data, "--models", "model.pt", "--metrics", "psnr", "-q"), ExitCode.WEIGHTS)
    assert "Unknown model" not in line


def test_bench_keeps_photos_that_share_a_name_apart(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    save_photo(data / "a.png", seed=0)
    save_photo(data / "a.jpg", seed=1)
    from colorize_cli.bench.runner import GreyBaseline, run_bench

    cached = run_bench(data, [GreyBaseline()], ["psnr"], out_dir=tmp_path / "out").runs[0].per_image
    direct = run_bench(data, [GreyBaseline()], ["psnr"]).runs[0].per_image
    assert [r["psnr"] for r in cached] == [r["psnr"] for r in direct]
    assert len(list((tmp_path / "out" / "cache").glob("grey-*/*.png"))) == 2


def test_downloading_a_bundled_model_points_at_the_bundled_file(fake_registry):
    result = run("models", "download", "tiny")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().endswith("tiny.safetensors")
    line = one_error(run("models", "download", "absent"), ExitCode.WEIGHTS)
    assert "not published" in line
    import json

    result = run("models", "download", "tiny", "--json")
    report = json.loads(result.stdout)
    assert report["name"] == "tiny" and report["source"] == "bundled" and report["path"].endswith("tiny.safetensors")
    failed = run("models", "download", "absent", "--json")
    assert failed.exit_code == ExitCode.WEIGHTS and json.loads(failed.stdout)["exit_code"] == int(ExitCode.WEIGHTS)


def test_json_mode_reports_an_early_failure_on_stdout(fake_registry, tmp_path):
    import json

    result = run(tmp_path / "missing.png", "--json")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert json.loads(result.stdout) == {"error": f"{tmp_path / 'missing.png'} does not exist",
                                         "exit_code": int(ExitCode.BAD_INPUT)}
    assert run(tmp_path / "missing.png").stdout == ""  # without --json, stdout stays empty


# --------------------------------------------------------------------------- audit of 2026-11-26 (later)


def test_a_name_too_long_for_the_disk_is_cut_to_fit_or_fails_that_photo_only(fake_registry, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / ("p" * 251 + ".png"), "L")  # its output p...p.tiff would be 256 bytes: cut to fit
    save_photo(scans / "ok.png", "L")
    result = run("batch", scans, "--format", "tiff", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["done"] == 2
    single = tmp_path / ("q" * 245 + ".png")
    save_photo(single, "L")
    named = tmp_path / ("r" * 256 + ".png")  # a name the user gives is theirs: too long is their argument to fix
    assert "too long" in one_error(run(single, "-o", named), ExitCode.USAGE)


def test_an_absolute_glob_is_a_usage_error(fake_registry, tmp_path):
    save_photo(tmp_path / "a.png", "L")
    line = one_error(run("batch", tmp_path, "--glob", str(tmp_path / "*.png"), "--json"), ExitCode.USAGE)
    assert "relative to the folder" in line


def test_an_output_subfolder_in_the_way_fails_only_its_photos(fake_registry, tmp_path):
    scans = tmp_path / "box"
    (scans / "sub").mkdir(parents=True)
    save_photo(scans / "a.png", "L")
    save_photo(scans / "sub" / "b.png", "L")
    (tmp_path / "box-colorized").mkdir()
    (tmp_path / "box-colorized" / "sub").write_text("in the way")
    result = run("batch", scans, "-r", "--json")
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    assert (tmp_path / "box-colorized" / "a.png").is_file()
    assert (tmp_path / "box-colorized" / "sub").read_text() == "in the way"


def test_an_output_folder_holding_the_users_photos_is_refused(fake_registry, tmp_path):
    scans = tmp_path / "box"
    (scans / "sub").mkdir(parents=True)
    save_photo(scans / "a.png", "L")
    save_photo(scans / "sub" / "b.png", "L")
    for out in (scans / "sub", scans):
        line = one_error(run("batch", scans, "-r", "-o", out), ExitCode.USAGE)
        assert "holds" in line and "would not be coloured" in line
    assert sorted(p.name for p in (scans / "sub").iterdir()) == ["b.png"]


def test_earlier_colourings_inside_the_input_folder_are_not_coloured_again(fake_registry, tmp_path):
    for fmt in ("png", "bmp"):  # bmp holds no note: known as this batch's own output by its name
        scans = tmp_path / f"box-{fmt}"
        scans.mkdir()
        save_photo(scans / "a.png", "L")
        out = scans / "colour"
        assert run("batch", scans, "-r", "-o", out, "--format", fmt, "-q").exit_code == 0
        again = run("batch", scans, "-r", "-o", out, "--format", fmt, "--json")
        assert again.exit_code == 0, again.stderr
        assert json.loads(again.stdout)["skipped"] == 1 and len(json.loads(again.stdout)["files"]) == 1


@pytest.mark.parametrize("args", [
    ("a.png", "--size", "8"), ("a.png", "--device", "tpu"), ("batch", ".", "--samples", "0"),
    ("bench", ".", "--limit", "0"), ("models", "inspect", "unet"), ("--no-such-option",), ("batch",),
])
def test_bad_options_are_one_error_line_and_json(args, fake_registry):
    result = run(*args, "--json")
    line = one_error(result, ExitCode.USAGE)
    assert "--help" in line
    assert json.loads(result.stdout)["exit_code"] == ExitCode.USAGE


def test_a_bare_command_shows_its_help(fake_registry):
    for args in ((), ("models",)):
        result = run(*args)
        assert result.exit_code == 0 and "Usage" in result.stdout and not error_lines(result)


def test_verifying_one_broken_model_is_one_error_line(fake_registry, tmp_path):
    bundled = fake_registry.parent / "bundled" / "tiny.safetensors"
    bundled.write_bytes(bundled.read_bytes()[:-10] + b"0123456789")
    line = one_error(run("models", "verify", "tiny"), ExitCode.WEIGHTS)
    assert "tiny" in line


def test_a_picture_the_encoder_refuses_is_an_output_error(fake_registry, tmp_path):
    src = tmp_path / "strip.png"
    Image.fromarray(np.full((2, 17000), 120, np.uint8)).save(src)  # WebP holds at most 16383 px a side
    line = one_error(run(src, "-o", tmp_path / "strip.webp"), ExitCode.OUTPUT)
    assert "WEBP" in line and not list(tmp_path.glob(".strip.webp*"))
    pytest.importorskip("pillow_heif")  # x265 refuses such a strip with a RuntimeError
    line = one_error(run(src, "-o", tmp_path / "strip.heic"), ExitCode.OUTPUT)
    assert "HEIF" in line and not list(tmp_path.glob(".strip.heic*"))


def test_several_inputs_that_share_a_name_all_get_coloured(fake_registry, tmp_path):
    a = save_photo(tmp_path / "a.png", "L")
    b = save_photo(tmp_path / "a.jpg", "L", seed=1)
    result = run(a, b, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg-colorized.png", "a.png-colorized.png"]
    beside = run(a, b)
    assert beside.exit_code == 0, beside.stderr
    assert (tmp_path / "a.png-colorized.png").is_file() and (tmp_path / "a.jpg-colorized.png").is_file()
    (tmp_path / "x").mkdir()  # the same file name from two folders into one: each gets a tag of its own path
    c = save_photo(tmp_path / "x" / "a.png", "L", seed=2)
    both = run(a, c, "-o", tmp_path / "out2")
    assert both.exit_code == 0, both.stderr
    names = sorted(p.name for p in (tmp_path / "out2").iterdir())
    assert len(names) == 2 and all(re.fullmatch(r"a\.png-colorized-[0-9a-f]{6}\.png", n) for n in names), names
    assert sorted(both.stdout.split()) == sorted(str(tmp_path / "out2" / n) for n in names)
    again = run(c, a, "-o", tmp_path / "out2")  # the same names in any order: refused as existing, not renamed
    assert again.exit_code == ExitCode.PARTIAL and "already exists" in again.stderr
    assert all(n in again.stderr for n in names) and sorted(p.name for p in (tmp_path / "out2").iterdir()) == names
    same = run(a, a, "-o", tmp_path / "out3")  # one file given twice is coloured once
    assert same.exit_code == ExitCode.PARTIAL and "is also the output of" in same.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_an_interrupt_while_the_model_loads_is_one_error_line(fake_registry, tmp_path, monkeypatch, as_json):
    from colorize_cli import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Engine, "load", interrupted)
    save_photo(tmp_path / "a.png", "L")
    result = run(tmp_path / "a.png", "-o", tmp_path / "out.png", *(["--json"] if as_json else []))
    assert one_error(result, ExitCode.INTERRUPTED) == "Error: interrupted"
    if as_json:
        assert json.loads(result.stdout) == {"error": "interrupted", "exit_code": int(ExitCode.INTERRUPTED)}
    assert not (tmp_path / "out.png").exists()


def test_names_too_long_for_the_disk_are_one_error_line_and_the_longest_allowed_work(fake_registry, tmp_path):
    src = save_photo(tmp_path / "a.png", "L")
    too_long = "z" * 300
    for args in ([src, "-o", tmp_path / f"{too_long}.png"], [tmp_path / f"{too_long}.png"],
                 ["batch", tmp_path / too_long]):
        line = one_error(run(*args), ExitCode.USAGE)
        assert "File name too long" in line and len(line) < 200
    # 250 bytes is a legal name: its temporary file must be too.
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / ("y" * 246 + ".png"), "L")
    result = run("batch", scans, "-o", tmp_path / "out", "--contact-sheet", tmp_path / "sheets" / f"{too_long}.jpg")
    assert result.exit_code == 0, result.stderr  # the colouring is done; the sheet is a warning
    assert (tmp_path / "out" / ("y" * 246 + ".png")).is_file()
    assert "Warning: contact sheet" in result.stderr and "File name too long" in result.stderr


def test_a_folder_where_an_output_goes_fails_that_photo_instead_of_being_skipped(fake_registry, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    save_photo(scans / "b.png", "L")
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    for extra in ([], ["--overwrite"]):
        result = run("batch", scans, "-o", tmp_path / "out", "--json", *extra)
        assert result.exit_code == ExitCode.PARTIAL, result.stderr
        files = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
        assert files["a.png"]["status"] == "failed" and "a folder" in files["a.png"]["reason"]
        assert (tmp_path / "out" / "a.png").is_dir() and (tmp_path / "out" / "b.png").is_file()


def test_an_interrupted_batch_still_reports_the_files_it_finished(fake_registry, tmp_path, monkeypatch):
    from colorize_cli import batch as batch_module

    real = batch_module.run_jobs

    def interrupted_after_one(engine, jobs, **kwargs):
        kwargs.pop("triaged", None)  # the caller's triage is of all the jobs; this run sees one
        real(engine, jobs[:1], **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_module, "run_jobs", interrupted_after_one)
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(3):
        save_photo(scans / f"p{k}.png", "L", seed=k)
    result = run("batch", scans, "--json")
    assert result.exit_code == ExitCode.INTERRUPTED
    report = json.loads(result.stdout)
    assert report["done"] == 1 and report["exit_code"] == int(ExitCode.INTERRUPTED) and "interrupted" in report["error"]
    assert [Path(f["source"]).name for f in report["files"]] == ["p0.png"]
    plain = run("batch", scans, "-o", tmp_path / "plain")
    assert "1 done before the interrupt" in plain.stderr


def test_an_interrupt_reports_the_colourings_still_being_written_as_done(fake_registry, tmp_path, monkeypatch):
    """Ctrl-C while the writer is busy: what it was writing is finished, and reported done."""
    import time

    from colorize_cli import batch as batch_module
    from colorize_cli.pipeline import Engine

    real_save, real_colour = batch_module.save_image, Engine.colorize_pixels
    calls = []

    def slow_save(*args, **kwargs):
        time.sleep(0.5)  # still writing the first photo when the interrupt comes
        return real_save(*args, **kwargs)

    def interrupted_on_the_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_colour(self, *args, **kwargs)

    monkeypatch.setattr(batch_module, "save_image", slow_save)
    monkeypatch.setattr(Engine, "colorize_pixels", interrupted_on_the_second_batch)
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(3):
        save_photo(scans / f"p{k}.png", "L", seed=k)
    result = run("batch", scans, "-o", tmp_path / "out", "--batch-size", "1", "--json")
    assert result.exit_code == ExitCode.INTERRUPTED
    report = json.loads(result.stdout)
    assert report["done"] == 1 and [Path(f["source"]).name for f in report["files"]] == ["p0.png"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["p0.png"]


def test_json_reports_stay_utf8_when_a_file_name_is_not(fake_registry, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    odd = os.fsdecode(os.fsencode(scans) + b"/bad\xff\xfename.png")  # Latin-1 bytes from an old disk
    try:
        save_photo(Path(odd), "L")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    result = run("batch", scans, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout_bytes.decode("utf-8"))  # strict: raw \xff would fail here
    (entry,) = report["files"]
    assert os.fsencode(entry["source"]) == os.fsencode(odd) and Path(entry["outputs"][0]).is_file()


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
    type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 20.00 GiB"),
])
def test_training_out_of_memory_says_what_to_change(tmp_path, monkeypatch, error):
    import colorize_cli.train as train_pkg

    def out_of_memory(**kwargs):
        raise error

    monkeypatch.setattr(train_pkg, "train_command", out_of_memory)
    line = one_error(run("train", "--data", tmp_path, "--batch-size", "100000", "-q"), ExitCode.USAGE)
    assert "out of memory" in line and "--batch-size" in line and "alloc_cpu" not in line


def test_a_photo_too_large_for_memory_fails_alone_with_a_plain_reason(fake_registry, tmp_path, monkeypatch):
    from colorize_cli.pipeline import Engine

    real = Engine.colorize_pixels

    def refuses_the_big_one(self, pixels, *args, **kwargs):
        if pixels[0].shape[0] > 100:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory")
        return real(self, pixels, *args, **kwargs)

    monkeypatch.setattr(Engine, "colorize_pixels", refuses_the_big_one)
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    Image.fromarray(np.full((200, 150), 90, np.uint8)).save(scans / "b.png")
    save_photo(scans / "c.png", "L", seed=1)
    result = run("batch", scans, "--batch-size", "1", "--json")
    assert result.exit_code == ExitCode.PARTIAL
    files = {Path(f["source"]).name: f for f in json.loads(result.stdout)["files"]}
    assert [files[n]["status"] for n in ("a.png", "b.png", "c.png")] == ["done", "failed", "done"]
    assert "out of memory" in files["b.png"]["reason"] and "alloc_cpu" not in files["b.png"]["reason"]


def test_bench_and_train_failures_are_the_error_line_alone(tmp_path):
    """Redirected, their progress bars printed an empty line before the `Error:` line."""
    (tmp_path / "empty").mkdir()
    bench = run("bench", tmp_path / "empty")
    train = run("train", "--data", tmp_path / "nowhere")
    for result, code in ((bench, ExitCode.BAD_INPUT), (train, ExitCode.BAD_INPUT)):
        assert result.exit_code == code
        assert result.stderr.splitlines() == error_lines(result), result.stderr


def test_an_interrupted_training_run_says_whether_there_is_anything_to_resume(tmp_path, monkeypatch):
    import colorize_cli.train as train_pkg
    from colorize_cli.train.checkpoint import FILENAME

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_pkg, "train_command", interrupted)
    run_folder = tmp_path / "run"
    line = one_error(run("train", "--data", tmp_path, "--out", run_folder, "-q"), ExitCode.INTERRUPTED)
    assert "nothing to resume" in line and "--resume" not in line
    run_folder.mkdir()
    (run_folder / FILENAME).write_bytes(b"a checkpoint")
    line = one_error(run("train", "--data", tmp_path, "--out", run_folder, "-q"), ExitCode.INTERRUPTED)
    assert f"--resume --out {run_folder}" in line
    # Without --out the run chose its folder: the message names it.
    from colorize_cli.train.command import TrainingInterrupted

    def interrupted_in(**kwargs):
        raise TrainingInterrupted(str(run_folder))

    monkeypatch.setattr(train_pkg, "train_command", interrupted_in)
    line = one_error(run("train", "--data", tmp_path, "-q"), ExitCode.INTERRUPTED)
    assert f"--resume --out {run_folder}" in line


def test_other_runtime_errors_in_training_are_still_bugs(tmp_path, monkeypatch):
    import colorize_cli.train as train_pkg

    def broken(**kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(train_pkg, "train_command", broken)
    assert run("train", "--data", tmp_path, "-q").exit_code == ExitCode.FAILURE


def test_outputs_another_run_writes_meanwhile_are_skipped_by_a_batch(fake_registry, tmp_path, monkeypatch):
    """Two `colorize batch` runs of one folder at once: each output is written once, by whichever
    run gets there first; the other reports it skipped (as a resume does), not failed."""
    from colorize_cli import batch as batch_module

    real_save = batch_module.save_image

    def the_other_run_was_faster(path, *args, **kwargs):
        real_save(path, *args, **kwargs)  # the other run's file...
        return real_save(path, *args, **kwargs)  # ...and then ours, refused as existing

    monkeypatch.setattr(batch_module, "save_image", the_other_run_was_faster)
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(2):
        save_photo(scans / f"p{k}.png", "L", seed=k)
    result = run("batch", scans, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped"] == 2 and "another run" in report["files"][0]["reason"]
    single = run(scans / "p0.png", "-o", tmp_path / "one.png")  # one named output: still refused, as before
    assert single.exit_code == ExitCode.OUTPUT


def test_bad_model_options_fail_even_when_there_is_nothing_to_colour(fake_registry, tmp_path):
    """A finished batch rerun with a typo in --model must not report success (it skipped the
    model's loading, and with it every check of the options naming the model)."""
    import torch

    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / "a.png", "L")
    assert run("batch", scans, "-q").exit_code == 0
    assert run("batch", scans, "-q").exit_code == 0  # a plain rerun: all skipped, still fine
    line = one_error(run("batch", scans, "--model", "nosuch"), ExitCode.USAGE)
    assert "nosuch" in line
    line = one_error(run("batch", scans, "--weights", tmp_path / "nope.safetensors"), ExitCode.WEIGHTS)
    assert "does not exist" in line
    if not torch.cuda.is_available():
        assert one_error(run("batch", scans, "--device", "cuda"), ExitCode.USAGE)
    for setting in (["--steps", "5000"], ["--sampler", "cold"]):  # the model's own limits, met by loading it
        assert one_error(run("batch", scans, *setting), ExitCode.USAGE)
    # One photo whose output exists: the option is the first thing wrong, so it is what is said.
    (tmp_path / "a-colorized.png").write_bytes((tmp_path / "scans-colorized" / "a.png").read_bytes())
    line = one_error(run(scans / "a.png", "-o", tmp_path / "a-colorized.png", "--model", "nosuch"), ExitCode.USAGE)
    assert "nosuch" in line


def test_a_trailing_slash_makes_the_output_a_folder_whatever_its_name(fake_registry, tmp_path):
    src = save_photo(tmp_path / "p.png", "L")
    dated = tmp_path / "scans.2024"
    result = run(src, "-o", f"{dated}/")  # a new folder with a dot in its name
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in dated.iterdir()] == ["p-colorized.png"]
    line = one_error(run(src, "-o", tmp_path / "scans.2025"), ExitCode.USAGE)
    assert "unknown image extension '.2025'" in line and f"-o {tmp_path / 'scans.2025'}/" in line
    two = run(src, src.with_name("q.png"), "-o", f"{tmp_path / 'both.d'}/")
    assert two.exit_code in (0, ExitCode.PARTIAL) and (tmp_path / "both.d" / "p-colorized.png").is_file()
    for args, folder in ((["-qo", f"{tmp_path / 'q.2026'}/"], "q.2026"), ([f"-qo{tmp_path / 'r.png'}/"], "r.png")):
        result = run(src, *args)  # -o after short flags in one word: the slash still counts
        assert result.exit_code == 0, result.stderr
        assert [p.name for p in (tmp_path / folder).iterdir()] == ["p-colorized.png"]


def test_a_colouring_beside_its_photo_does_not_change_the_photos_output_name(fake_registry, tmp_path):
    # `colorize g/photo.jpg -o g/photo.png`, then batches with and without a --glob: one name.
    box = tmp_path / "g"
    box.mkdir()
    save_photo(box / "photo.jpg", "L")
    assert run(box / "photo.jpg", "-o", box / "photo.png", "-q").exit_code == 0
    assert run("batch", box, "--glob", "*.jpg", "-o", tmp_path / "a", "-q").exit_code == 0
    assert run("batch", box, "-o", tmp_path / "b", "-q").exit_code == 0
    assert [p.name for p in (tmp_path / "a").iterdir()] == [p.name for p in (tmp_path / "b").iterdir()] == ["photo.png"]


def test_os_errors_name_their_files_and_only_names_too_long_are_shortened(tmp_path):
    import errno

    from colorize_cli.errors import error_message

    deep = "/archive/" + "Grandmother_Collection/" * 5 + "scan.png"
    assert error_message(PermissionError(errno.EACCES, "Permission denied", deep)) == f"{deep}: Permission denied"
    long = "z" * 300
    assert error_message(OSError(errno.ENAMETOOLONG, "File name too long", long)).startswith("z" * 40 + "…")
    try:
        os.rename(tmp_path / "missing.png", tmp_path / "b.png")
    except OSError as e:
        assert error_message(e) == f"{tmp_path / 'missing.png'} -> {tmp_path / 'b.png'}: No such file or directory"


def test_names_that_differ_only_in_case_get_outputs_apart_on_any_disk(fake_registry, tmp_path):
    """Photo.jpg and photo.jpg (a Linux folder) written to a case-insensitive disk must not share a
    file: their outputs differ by more than case, and a rerun finds them both again."""
    scans = tmp_path / "box"
    scans.mkdir()
    save_photo(scans / "Photo.jpg", "L")
    save_photo(scans / "photo.jpg", "L")
    save_photo(scans / "other.jpg", "L")
    assert run("batch", scans, "-q").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "box-colorized").iterdir())
    assert len(names) == 3 and "other.png" in names
    assert len({n.lower() for n in names}) == 3, names
    assert all(n.startswith(("Photo.jpg-", "photo.jpg-")) for n in names if n != "other.png")
    again = run("batch", scans, "--json")
    assert again.exit_code == 0, again.stderr
    assert sorted(f["status"] for f in json.loads(again.stdout)["files"]) == ["skipped"] * 3


def test_a_glob_leaves_out_sidecars_but_takes_an_image_without_an_extension(fake_registry, tmp_path):
    """`--glob 'IMG_*'` over an iPhone export must colour the photos, not fail on their .AAE/.xmp
    sidecars; a JPEG saved without an extension is still a photo."""
    from conftest import photo
    scans = tmp_path / "box"
    scans.mkdir()
    save_photo(scans / "IMG_0001.jpg", "L")
    (scans / "IMG_0001.AAE").write_text('<?xml version="1.0"?><plist><dict/></plist>')
    (scans / "IMG_0001.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    Image.fromarray(photo()).convert("L").save(scans / "IMG_0002", format="JPEG")
    (scans / "2025").mkdir()  # a subfolder, left out without --recursive: counted without its sidecar
    save_photo(scans / "2025" / "IMG_0003.jpg", "L")
    (scans / "2025" / "IMG_0003.AAE").write_text('<?xml version="1.0"?><plist><dict/></plist>')
    result = run("batch", scans, "--glob", "IMG_*")
    assert result.exit_code == 0, result.stderr
    assert "Note: left out 2 file(s) matching --glob 'IMG_*' that are not images" in result.stderr
    assert "1 image(s) in subfolders are not included" in result.stderr
    assert sorted(p.name for p in (tmp_path / "box-colorized").iterdir()) == ["IMG_0001.png", "IMG_0002.png"]
    # Named, a file that is not an image is still an error: only a glob's matches are sorted out.
    named = run(scans / "IMG_0001.AAE", "-o", tmp_path / "x.png")
    assert named.exit_code != 0 and len(error_lines(named)) == 1


def test_a_batch_names_scans_saved_without_an_extension_and_how_to_take_them(fake_registry, tmp_path):
    """A scanner that writes `scan0001` or `scan.001`: the batch colours the named photos and says
    which files it passed over that are photos all the same, never a note file or a camera's raw
    file (which opens as a TIFF); `--glob '*'` then colours them."""
    from conftest import photo
    scans = tmp_path / "box"
    scans.mkdir()
    save_photo(scans / "named.jpg", "L")
    for name in ("scan0001", "scan.002"):
        Image.fromarray(photo()).convert("L").save(scans / name, format="PNG")
    (scans / "README").write_text("box 3, 1950s")
    Image.fromarray(photo()).convert("L").save(scans / "IMG_0001.CR2", format="TIFF")
    result = run("batch", scans)
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "without an extension" in line]
    assert len(notes) == 1 and "left out 2 file(s)" in notes[0] and "scan.002" in notes[0], result.stderr
    assert [p.name for p in (tmp_path / "box-colorized").iterdir()] == ["named.png"]
    quiet = run("batch", scans, "-o", tmp_path / "q", "-q")
    assert quiet.exit_code == 0 and "without an extension" not in quiet.stderr
    taken = run("batch", scans, "-o", tmp_path / "all", "--glob", "*")
    assert taken.exit_code == 0, taken.stderr
    assert {"scan0001.png", "scan.002.png", "named.png"} <= {p.name for p in (tmp_path / "all").iterdir()}
    assert "without an extension" not in taken.stderr

def test_names_that_differ_only_in_unicode_composition_are_kept_apart(fake_registry, tmp_path):
    """café.png composed and decomposed are two files here but one on a Mac disk: each gets a tag."""
    import unicodedata

    scans = tmp_path / "box"
    scans.mkdir()
    composed, decomposed = (unicodedata.normalize(form, "caf\u00e9.png") for form in ("NFC", "NFD"))
    save_photo(scans / composed, "L")
    save_photo(scans / decomposed, "L", seed=2)
    if len(list(scans.iterdir())) != 2:
        pytest.skip("this disk takes the two spellings for one name")
    assert run("batch", scans, "-o", tmp_path / "out", "-q").exit_code == 0
    names = [unicodedata.normalize("NFC", p.name) for p in (tmp_path / "out").iterdir()]
    assert len(names) == 2 and all(re.fullmatch("caf\u00e9\\.png-[0-9a-f]{6}\\.png", n) for n in names), names


def test_a_batch_into_a_folder_it_cannot_write_stops_before_colouring(fake_registry, tmp_path, monkeypatch):
    """A read-only disk or a folder without write permission: one error before the model loads,
    not every photo coloured and then failed one by one. (Simulated: the tests may run as root.)"""
    from colorize_cli import pipeline

    scans, out = tmp_path / "box", tmp_path / "out"
    scans.mkdir()
    out.mkdir()
    for i in range(3):
        save_photo(scans / f"p{i}.png", "L", seed=i)
    import tempfile

    real_temporary_file = tempfile.TemporaryFile

    def temporary_file(*args, dir=None, **kwargs):  # as a read-only disk answers (root passes permission bits)
        if dir is not None and Path(dir) == out:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    monkeypatch.setattr(pipeline.Engine, "load", lambda *a, **k: pytest.fail("model loaded for outputs it cannot write"))
    result = run("batch", scans, "-o", out)
    assert result.exit_code == ExitCode.OUTPUT and len(error_lines(result)) == 1, result.stderr
    assert f"cannot write into {out}: a read-only disk" in error_lines(result)[0]
    result = run(scans / "p0.png", "-o", out / "one.png")
    assert result.exit_code == ExitCode.OUTPUT and "cannot write into" in error_lines(result)[0]  # one photo alike


def test_a_notes_cache_sees_a_file_replaced_with_the_same_size_and_time(tmp_path):
    """`cp -p` or `rsync -t` over an output keeps its size and mtime: the cached note must not."""
    from colorize_cli import batch
    from colorize_cli.imageio import save_image
    from colorize_cli.metadata import ImageMetadata

    path, other = tmp_path / "scan-1.png", tmp_path / "other.png"
    pixels = np.zeros((4, 4, 3), np.uint8)
    for target, name in ((path, "scan-1.jpg"), (other, "scan-2.jpg")):
        save_image(target, pixels, metadata=ImageMetadata(software=f'colorize 0.1.0, machine colourisation: model u, '
                                                          f'sampler oneshot, seed 0, sample 0, source "{name}"'))
    assert path.stat().st_size == other.stat().st_size
    assert batch.not_its_colouring(path, tmp_path / "scan-1.jpg") is None
    stamp = path.stat()
    path.write_bytes(other.read_bytes())  # in place: same inode, size and (below) modification time
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    # Only the change time still differs, as it does for `cp -p` later on; but a kernel that stamps
    # files from its coarse clock (1-10 ms ticks) may not have moved it yet: touch until it has.
    for _ in range(2000):
        if path.stat().st_ctime_ns != stamp.st_ctime_ns:
            break
        time.sleep(0.001)
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert "another photo, scan-2.jpg" in batch.not_its_colouring(path, tmp_path / "scan-1.jpg")


def test_photos_with_names_near_the_file_systems_limit_get_outputs_that_fit(fake_registry, tmp_path):
    """A 250-byte photo name plus "-colorized" or a case tag is more than a file system takes: the
    output name is cut in the middle with a tag of the whole name, found again by a rerun."""
    long = "b" * 245
    scans = tmp_path / "scans"
    scans.mkdir()
    save_photo(scans / f"a{long}.png", "L")
    save_photo(scans / f"A{long}.png", "L")  # differs only in case: a tag too
    result = run("batch", scans, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    outputs = sorted((tmp_path / "out").iterdir())
    assert len(outputs) == 2 and all(len(os.fsencode(p.name)) <= 255 for p in outputs)
    again = json.loads(run("batch", scans, "-o", tmp_path / "out", "--json").stdout)
    assert (again["done"], again["skipped"]) == (0, 2)
    single = run(scans / f"a{long}.png")
    assert single.exit_code == 0, single.stderr
    beside = [p for p in scans.iterdir() if p.name.endswith("-colorized.png")]
    assert len(beside) == 1 and len(os.fsencode(beside[0].name)) <= 255


def test_training_failures_take_the_exit_codes_of_their_kind(tmp_path, tiny_weights):
    """--data missing or corrupt is a bad input (3), --init-weights of another architecture a
    weights problem (4): both were "bad options" (2). A run refused once its folder was made
    (an encoder to train in a model without one) left that folder behind, empty but for its lock."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        save_photo(photos / f"{i}.png", "RGB", seed=i)
    tiny = ["--model", "unet", "--preset", "tiny", "--perceptual-weight", "0", "--size", "16", "--batch-size", "2",
            "--steps", "1", "--workers", "0", "-q"]
    assert "nowhere" in one_error(run("train", "--data", tmp_path / "nowhere", *tiny), ExitCode.BAD_INPUT)
    (tmp_path / "cut.tar").write_bytes(b"\0" * 100 + b"not a tar")
    assert "cut.tar" in one_error(run("train", "--data", tmp_path / "cut.tar", *tiny), ExitCode.BAD_INPUT)
    line = one_error(run("train", "--data", photos, *tiny, "--init-weights", tiny_weights["lab-ddpm"],
                         "--out", tmp_path / "a"), ExitCode.WEIGHTS)
    assert "lab-ddpm" in line
    one_error(run("train", "--data", photos, *tiny, "--encoder-lr-scale", "0.1", "--out", tmp_path / "b"),
              ExitCode.USAGE)  # (no encoder to train: found once the model is built)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_checkpoint_with_damaged_settings_is_refused_not_half_used(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        save_photo(photos / f"{i}.png", "RGB", seed=i)
    out = tmp_path / "run"
    assert run("train", "--data", photos, "--model", "unet", "--preset", "tiny", "--perceptual-weight", "0", "--size",
               "16", "--batch-size", "2", "--steps", "1", "--workers", "0", "-q", "--out", out).exit_code == 0
    path = out / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as f:
        meta, tensors = json.loads(f.metadata()["colorize.train"]), {k: f.get_tensor(k) for k in f.keys()}
    for damage in ({"objective": []}, {"steps": "abc"}, {"lr": True}, None):
        options = None if damage is None else {**meta["options"], **damage}
        save_file(tensors, str(path), metadata={"colorize.train": json.dumps({**meta, "options": options})})
        line = one_error(run("train", "--resume", "--out", out, "--steps", "2", "-q"), ExitCode.USAGE)
        assert "not a valid checkpoint" in line, line


def test_a_bundled_weights_file_gone_from_the_install_is_a_damaged_install(fake_registry, tmp_path):
    """It was "not available", "it is not bundled and not on the Hub" and `models verify` exit 0."""
    bundled = fake_registry.parent / "bundled" / "tiny.safetensors"
    bundled.unlink()
    verify = run("models", "verify")
    assert verify.exit_code == ExitCode.WEIGHTS and "tiny: FAILED" in verify.stdout
    assert "absent: missing" in verify.stdout  # a model never published is not an error
    assert "broken" in run("models", "list", "--json").stdout
    line = one_error(run("color", save_photo(tmp_path / "in.png"), "-o", tmp_path / "out.png"), ExitCode.WEIGHTS)
    assert "is missing" in line and "reinstall colorize" in line and "not bundled" not in line
    bundled.mkdir()  # a folder where the file should be
    assert "is not a regular file" in one_error(run("color", tmp_path / "in.png", "-o", tmp_path / "o.png"),
                                                ExitCode.WEIGHTS)
