"""The training loop: one function, `train(options)`, for every model of the zoo.

Per step: a uint8 RGB batch from the DataLoader -> Lab on the device (batched) -> for each
optimizer group of the current stage: loss module (bf16 autocast on CUDA), backward, gradient
clipping, fused AdamW with warm-up + cosine learning rate -> EMA of the model's weights.
Nothing in the step reads a value back to the host; losses are summed on the device and read
every `log_every` steps. Runs under `torchrun` (DDP; NCCL on CUDA, gloo on CPU) unchanged.
Library code: no printing. Progress goes to a callback as dicts (the command layer renders it).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor, nn

from ..atomic import remove_stale_temps, temp_path_beside
from .. import color
from ..errors import error_message
from ..imageio import make_folder
from ..models import build_model, load_model, preset_config
from ..models.encoder import load_pretrained_lite0
from ..models.zoo import ARCHITECTURES, ColorModel
from . import checkpoint as ckpt
from .runlock import LOCK_NAME, run_folder_lock
from .data import (
    MIN_COLOURFULNESS,
    SPLIT_VERSION,
    MissingTrainingExtraError,
    StreamPosition,
    TrainingError,
    TrainStream,
    index_sources,
    load_validation,
    make_loader,
    split,
)
from .objectives import ObjectiveOptions, Stage, make_objective

Progress = Callable[[dict[str, Any]], None]


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """A convolution's backward: each gradient asked for costs what the forward did.

    torch's own formula (2.11-2.13) counts the weight gradient of a grouped convolution as if it
    were dense, `groups` times too much: the encoder's depthwise convolutions made a `unet` step
    with a training encoder read 35 GFLOP per image instead of ~6.
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter():
    """torch's FlopCounterMode (no display), with grouped convolutions' backward counted right."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})


# The largest training crop: what inference works at, at most (`pipeline`'s --size limit).
MAX_TRAIN_SIZE = 4096

# bf16 dense peaks (TFLOP/s) by device-name fragment, for MFU when --peak-tflops is not given.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}


@dataclass
class TrainOptions:
    data: list[str]
    out: str
    model: str = "lab-ddpm"
    steps: int = 10_000
    batch_size: int = 64                # global: split evenly across DDP ranks
    lr: float = 2e-4
    size: int = 64
    preset: str = "small"
    encoder: str | None = None          # "efficientnet-lite0" or None
    prediction: str | None = None       # lab-ddpm: eps | v | x0 (None: the preset's)
    schedule: str | None = None         # lab-ddpm: linear | cosine (None: the preset's)
    head: str = "regression"            # unet / unet-gan: regression | bins
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    val_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 50
    workers: int = 4
    init_weights: str | None = None
    resume: bool = False
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    val_fraction: float = 0.01
    val_images: int = 64
    grid_images: int = 8
    min_colourfulness: float = MIN_COLOURFULNESS
    peak_tflops: float | None = None
    channels_last: bool = False         # NHWC activations and weights (GPU: convs skip layout transposes)
    time_limit: float | None = None     # minutes of training in this process before a clean stop
    objective: ObjectiveOptions = field(default_factory=ObjectiveOptions)

    # Options a resumed run may change; every other value comes from the checkpoint. `data` too:
    # the same files may have moved (paths are stored absolute); `lr` scales the same schedule, so a
    # run that diverged continues from its last checkpoint at a lower peak.
    RUNTIME = ("steps", "device", "compile", "val_every", "ckpt_every", "log_every", "workers", "peak_tflops",
               "time_limit", "channels_last", "data", "lr")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def saved_problems(cls, d: Any) -> list[str]:
        """What is wrong with options read back from a checkpoint (names whose value is not of the
        option's type), so a damaged or hand-edited file is refused, not half-used."""
        if not isinstance(d, dict):
            return ["options"]
        objective = d.get("objective", {})
        if not isinstance(objective, dict):
            return ["options.objective"]
        return _wrong_types(d, cls) + [f"objective.{name}" for name in _wrong_types(objective, ObjectiveOptions)]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        d = dict(d)
        # Names this version does not know (an option since retired, or added by a newer version)
        # are left out, for the objective's options as for the others.
        objective = {f.name for f in fields(ObjectiveOptions)}
        d["objective"] = ObjectiveOptions(**{k: v for k, v in d.get("objective", {}).items() if k in objective})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# JSON types of the option annotations (an int is a float too; a bool is no number).
_JSON_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                            "list[str]": (list,)}


def _wrong_types(values: dict, options_class) -> list[str]:
    wrong = []
    for option in fields(options_class):
        if option.name not in values:
            continue
        value, kind = values[option.name], str(option.type)
        allowed = _JSON_KINDS.get(kind.removesuffix(" | None"))
        if allowed is None or (value is None and kind.endswith(" | None")):
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            wrong.append(option.name)
    return wrong


@dataclass
class TrainResult:
    out: Path
    export: Path
    checkpoint: Path
    steps: int
    images_per_s: float | None
    mfu: float | None
    flops_per_image: float | None
    final_losses: dict[str, float]


# ---------------------------------------------------------------------------------------------
# helpers


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> "DistInfo":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return cls()


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """The inference engine's device rules, but `auto` trains on CUDA or the CPU (MPS only when
    asked), and a bare `cuda` under torchrun is this process's GPU (LOCAL_RANK)."""
    from ..errors import UsageError
    from ..pipeline import select_device

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = select_device(name)
    except UsageError as e:
        raise TrainingError(str(e)) from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return device


def to_lab(images: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 RGB (B, 3, H, W) on the device -> normalised L (B, 1, H, W), ab (B, 2, H, W), float32."""
    lab = color.rgb_to_lab(images.float() / 255.0)
    return color.normalize_L(lab[:, :1]), color.normalize_ab(lab[:, 1:])


def lr_factor(step: int, start: int, end: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay to `min_ratio`, over the window [start, end)."""
    length = max(1, end - start)
    i = step - start
    warmup = min(warmup, max(1, length // 10))
    if i < warmup:
        return (i + 1) / warmup
    progress = min(1.0, (i - warmup) / max(1, length - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(modules: list[tuple[nn.Module, float]], lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW over `modules`, each at its share of the learning rate (`lr_scale`, kept by the step)."""
    groups = []
    for module, scale in modules:
        decay = [p for p in module.parameters() if p.ndim >= 2]
        no_decay = [p for p in module.parameters() if p.ndim < 2]
        groups += [{"params": decay, "weight_decay": weight_decay, "lr_scale": scale},
                   {"params": no_decay, "weight_decay": 0.0, "lr_scale": scale}]
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), **kwargs)


def _preset_model(options: TrainOptions) -> ColorModel:
    try:
        config = preset_config(options.model, options.preset, encoder=options.encoder, head=options.head)
    except ValueError as e:
        raise TrainingError(str(e)) from e
    if options.model == "lab-ddpm":
        config = replace(config, prediction=options.prediction or config.prediction,
                         schedule=options.schedule or config.schedule)
    config = replace(config, size=options.size)
    try:
        return build_model(config)
    except ValueError as e:
        raise TrainingError(str(e)) from e


def _with_new_head(config: dict, state: dict[str, Tensor], options: TrainOptions) -> ColorModel:
    """`config`'s model with `options.head`: every tensor of `state` but the U-Net's output layer."""
    fresh = preset_config(options.model, "tiny", head=options.head)
    unet = {**config["unet"], "out_channels": fresh.unet.out_channels}
    try:
        model = build_model({**config, "architecture": options.model, "head": options.head, "unet": unet})
    except ValueError as e:
        raise TrainingError(str(e)) from e
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith("unet.out.")}
    model.load_state_dict(kept, strict=False)
    return model


def copy_encoder_weights(model: ColorModel, state: dict[str, Tensor]) -> bool:
    """Load `model`'s frozen pretrained encoder from another model's export; False if it has none.

    Every model of the zoo stores the encoder under the same names, so one architecture can start
    from another's file without the encoder's package (the rest of the network starts fresh).
    """
    if model.encoder is None:
        return False
    own = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    if any(k not in state or state[k].shape != v.shape for k, v in own.items()):
        return False
    model.load_state_dict({k: state[k] for k in own}, strict=False)
    return True


def build(options: TrainOptions) -> ColorModel:
    """The model for `options`: from --init-weights, or the preset with the options applied.

    A pretrained encoder comes from --init-weights when that file holds one, else from its package.
    """
    if options.model not in ARCHITECTURES:
        raise TrainingError(f"unknown model {options.model!r}; known: {', '.join(ARCHITECTURES)}")
    encoder_loaded = False
    if options.init_weights:
        from ..weights import WeightsError, build_problem, load_model_file
        try:
            state, config = load_model_file(options.init_weights)
        except (WeightsError, OSError, ValueError) as e:  # exit code 4, as `colorize --weights` gives
            raise WeightsError(f"cannot start from --init-weights {options.init_weights}: {e}") from e
        found = config["architecture"]
        # The GAN's generator is the regression U-Net: a trained `unet` is a good start for `unet-gan`.
        if found == options.model or (found, options.model) == ("unet", "unet-gan"):
            if config.get("head", "regression") == options.head:
                try:
                    return load_model({**config, "architecture": options.model}, state)
                except (ValueError, TypeError, KeyError, RuntimeError) as e:
                    raise WeightsError(f"--init-weights {options.init_weights} does not hold a usable "
                                       f"{found!r} model: {build_problem(e)}") from e
            # Another head: keep the trained U-Net and encoder, start the output layer afresh.
            return _with_new_head(config, state, options)
        # Another architecture: a fresh preset model that takes over the file's pretrained encoder.
        model = _preset_model(options)
        encoder_loaded = copy_encoder_weights(model, state)
        if not encoder_loaded:  # (exit code 4, as for weights of the wrong architecture)
            raise WeightsError(f"--init-weights {options.init_weights} holds a {found!r} model; a "
                                f"{options.model!r} run can only take its encoder, and "
                                + ("it has none" if model.encoder is not None else "this run uses no --encoder"))
    else:
        model = _preset_model(options)
    if model.encoder is not None and not encoder_loaded:
        try:
            load_pretrained_lite0(model.encoder)
        except ImportError as e:
            raise MissingTrainingExtraError(str(e)) from e
    return model


def sample_grid(grey: Tensor, pred: Tensor, truth: Tensor) -> Image.Image:
    """Rows: grey input, model output, ground truth; one column per image. Inputs (N, 3, H, W) in [0, 1]."""
    rows = [torch.cat(list(x), dim=2) for x in (grey, pred, truth)]
    grid = torch.cat(rows, dim=1).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(grid.permute(1, 2, 0).cpu().numpy())


def save_png_atomic(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _aborted_run_log(path: Path, model: str) -> bool:
    """Whether `path`, in the folder of a new run, is the log a run of `model` left when it was
    interrupted before its first checkpoint (the new run replaces it). Any other log.jsonl there, a
    finished run's (its export moved away), another model's or another tool's, is refused: a new
    run would append to it, or replace it."""
    if not path.is_file():  # none; or a folder in its place, which writing the log reports (an output error)
        return False
    try:
        records = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        first = records[0]
        ours = first.get("event") == "start" and isinstance(first.get("options"), dict)
    except (OSError, ValueError, IndexError, AttributeError):
        ours = False
    if not ours:
        raise TrainingError(f"{path.parent} holds a log.jsonl that is not a colorize training log; choose another --out")
    if first["options"].get("model") != model or any(isinstance(r, dict) and r.get("event") == "end" for r in records):
        raise TrainingError(f"{path.parent} holds the log of another run (a {first['options'].get('model')} run, "
                            "without its checkpoint); choose another --out")
    return True


class JsonlLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def drop_after(self, step: int) -> None:
        """Remove the records of steps after `step` (rewritten atomically; unreadable lines are kept)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                late = int(json.loads(line).get("step", 0)) > step
            except (ValueError, TypeError, AttributeError):
                late = False
            if not late:
                kept.append(line)
        tmp = temp_path_beside(self.path)
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)


def default_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


# ---------------------------------------------------------------------------------------------
# the loop


def _keep_stage_switch(options: TrainOptions, saved: TrainOptions) -> TrainOptions:
    """A resumed run given another --steps keeps the step at which its stages switch (warm-up to
    adversarial, VQ-VAE to cold diffusion): they are stored as shares of --steps, and a stage
    already left must never come back."""
    if options.steps == saved.steps or options.steps < 1:
        return options
    shares = {}
    for name in ("gan_start", "vq_fraction"):
        switch = min(saved.steps, max(0, round(getattr(saved.objective, name) * saved.steps)))
        shares[name] = min(1.0, switch / options.steps)
    return replace(options, objective=replace(options.objective, **shares))


class Trainer:
    def __init__(self, options: TrainOptions, progress: Progress | None = None,
                 held: contextlib.ExitStack | None = None):
        """`held`: where the run folder's lock is kept (`train` lets it go when the run ends); a
        caller without one (a benchmark) runs unlocked."""
        self.info = DistInfo.current()
        self.progress = progress if self.info.rank == 0 else None
        self.notes: list[str] = []  # said at the start (and logged): e.g. what a resume cannot keep
        self.out = Path(options.out)
        ckpt_path = self.out / ckpt.FILENAME
        resume_tensors: dict[str, Tensor] | None = None
        resume_meta: dict | None = None
        # One process per run folder (rank 0 holds it for all), from before anything here is read
        # (a resume's checkpoint, which a process still running there could replace meanwhile) or
        # judged; a folder that does not exist yet is locked once it is made, below.
        locked = held is not None and self.info.rank == 0 and self.out.is_dir()
        if locked:
            held.enter_context(run_folder_lock(self.out))
        if options.resume:
            resume_tensors, resume_meta = ckpt.load_checkpoint(ckpt_path)
            saved = TrainOptions.from_dict(resume_meta["options"])
            runtime = {k: getattr(options, k) for k in TrainOptions.RUNTIME}
            options = _keep_stage_switch(replace(saved, **runtime, resume=True, out=options.out), saved)
        self.options = o = options
        self.validate(o)
        unreadable: list[Path] = []
        compressed: list[Path] = []
        refs, self.refused = index_sources(o.data, exclude=[o.out], unreadable=unreadable,  # user errors first
                                           compressed=compressed)
        if unreadable:  # e.g. a disk's lost+found under --data /mnt/disk
            self.notes.append(f"left out {len(unreadable)} folder(s) under --data that cannot be read, e.g. "
                              f"{unreadable[0]}")
        if compressed:
            self.notes.append(f"left out {len(compressed)} compressed archive(s) under --data, e.g. {compressed[0]}: "
                              "shards are read in place, so decompress them to plain .tar files to train on them")
        if self.info.rank == 0:
            make_folder(self.out, "the run folder --out")
            if held is not None and not locked:
                held.enter_context(run_folder_lock(self.out))
        if not o.resume and ckpt_path.exists():
            raise TrainingError(f"{self.out} holds a run already; continue it with --resume --out {self.out}, "
                                "or choose another --out")
        trained = self.out / f"{o.model}.safetensors"  # what `export` writes
        if not o.resume and (trained.exists() or trained.is_symlink()):  # e.g. its checkpoint deleted to save space
            raise TrainingError(f"{self.out} holds a trained model, {trained.name}, and no checkpoint to resume: a new "
                                "run would replace it; choose another --out, or move the file")
        stale_log = not o.resume and _aborted_run_log(self.out / "log.jsonl", o.model)
        if self.info.rank == 0:
            # A process killed while writing (kill -9, the OOM killer, a lease's end) leaves its
            # temporary file, a checkpoint's size each time: the next run here removes old ones.
            remove_stale_temps([ckpt_path, trained, self.out / "log.jsonl"])
        train_refs, val_refs = split(refs, o.val_fraction)
        # What the run trains on, by the images' keys: a resume on other data is told (`_restore`).
        self.data_images = len(refs)
        self.data_digest = hashlib.sha256("\n".join(sorted(r.key for r in refs)).encode(
            "utf-8", "surrogateescape")).hexdigest()[:16]
        # Each loader process needs a batch of images per epoch: with few images, fewer processes.
        # A function of the data and options alone, so a resumed run finds the same layout.
        self.workers = min(o.workers, len(train_refs) // o.batch_size)
        self.device = resolve_device(o.device, self.info)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(o.seed)

        # Model, EMA copy, objective, optimizers.
        if resume_meta is not None:
            try:
                self.model = build_model(resume_meta["config"])
            except (ValueError, TypeError, KeyError) as e:
                raise TrainingError(f"{ckpt_path} holds a model config this version cannot build: {e}") from e
        else:
            self.model = build(o)
        if o.objective.encoder_lr_scale > 0 and self.model.encoder is None:
            raise TrainingError("--encoder-lr-scale trains the pretrained encoder, and this model has none "
                                "(give --encoder, or --init-weights from a file that holds one)")
        if o.size % self.model.multiple:
            raise TrainingError(f"--size {o.size} must be a multiple of {self.model.multiple} for {o.model} ({o.preset})")
        self.model.to(self.device)
        if o.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.objective = make_objective(self.model, o.steps, o.objective)
        for module in self.objective.extra_modules().values():
            module.to(self.device)
        self.optimizers = {name: make_optimizer(modules, o.lr, o.weight_decay, self.device)
                           for name, modules in self.objective.group_parameters().items()}
        self.windows = self._group_windows()
        self.generator = torch.Generator(self.device).manual_seed(o.seed * 1000 + self.info.rank)
        self.step = 0
        self.positions: dict[int, StreamPosition] = {}
        self.flops: dict[str, float] = {}
        if resume_tensors is not None:
            try:
                self._restore(resume_tensors, resume_meta)
            except (RuntimeError, ValueError, TypeError, KeyError) as e:  # tensors that do not fit the model
                raise TrainingError(f"{ckpt_path} cannot be restored: {error_message(e)}") from e
            if self.step > o.steps:
                raise TrainingError(f"--steps {o.steps} is below the step this run has reached ({self.step})")

        # Data.
        self.val_from_train = not val_refs
        self.val_images = load_validation(val_refs or train_refs, o.size, o.val_images, o.min_colourfulness)
        self.n_train = len(train_refs)
        stream = TrainStream(train_refs, o.size, o.batch_size // self.info.world, o.seed, rank=self.info.rank,
                             world_size=self.info.world, workers=self.workers, start=self.positions,
                             min_colourfulness=o.min_colourfulness, offset=self.step)
        self.loader = make_loader(stream, self.workers, pin_memory=self.device.type == "cuda")
        self.log = JsonlLog(self.out / "log.jsonl", self.info.rank == 0)
        if resume_tensors is not None:  # what an interrupted process logged after its last checkpoint is redone
            self.log.drop_after(self.step)
        elif stale_log and self.info.rank == 0:
            # A new run here replaces what a run of this model interrupted before its first
            # checkpoint left (checked above), so its log and sample grids are not taken for this one's.
            self.log.path.unlink(missing_ok=True)
            for grid in (self.out / "samples").glob("step-*.png"):
                if re.fullmatch(r"step-\d{6,}\.png", grid.name):
                    grid.unlink(missing_ok=True)
        self.stage: Stage | None = None
        self.runners: dict[str, Callable] = {}
        self._ema_pairs: tuple[list[Tensor], list[Tensor]] | None = None

    @staticmethod
    def validate(o: TrainOptions) -> None:
        world = DistInfo.current().world
        if o.steps < 1:
            raise TrainingError("--steps must be at least 1")
        if o.batch_size < 1 or o.batch_size % world:
            raise TrainingError(f"--batch-size {o.batch_size} must be a positive multiple of the {world} processes")
        if not 8 <= o.size <= MAX_TRAIN_SIZE:  # (above: a typo, which the OOM killer would answer without a word)
            raise TrainingError(f"--size must be between 8 and {MAX_TRAIN_SIZE} px")
        if not 0 < o.lr < float("inf"):
            raise TrainingError("--lr must be a positive number")
        if not 0 <= o.val_fraction < 1:
            raise TrainingError("--val-fraction must be at least 0 and below 1")
        for name in ("val_every", "ckpt_every", "log_every"):
            if getattr(o, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1")
        if o.workers < 0:
            raise TrainingError("--workers must be >= 0")
        if not 0 <= o.ema_decay < 1:
            raise TrainingError("--ema-decay must be at least 0 and below 1")
        j = o.objective
        for name in ("gan_start", "vq_fraction"):
            if not 0 <= getattr(j, name) <= 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be between 0 and 1 (a share of --steps)")
        for name in ("perceptual_weight", "adv_weight", "encoder_lr_scale", "colourfulness_weight", "chroma_weight"):
            if not 0 <= getattr(j, name) < float("inf"):
                raise TrainingError(f"--{name.replace('_', '-')} must be a number >= 0")
        for name in ("colourfulness_weight", "chroma_weight"):
            if getattr(j, name) > 0 and (o.model not in ("unet", "unet-gan") or o.head != "regression"):
                raise TrainingError(f"--{name.replace('_', '-')} is for the regression head of unet and unet-gan "
                                    "(diffusion and the bins head already sample colourful images)")
        if j.stage not in ("auto", "vq", "cold") or (j.stage != "auto" and o.model != "latent-cold"):
            raise TrainingError(f"--stage {j.stage!r}: auto for every model; vq or cold for latent-cold only")
        if o.warmup_steps < 0 or not o.grad_clip >= 0:
            raise TrainingError("--warmup-steps and --grad-clip must not be negative (--grad-clip 0: no clipping)")
        # The loop seeds a torch generator with seed * 1000 + rank, which must fit in 64 bits.
        if not 0 <= o.seed < 10**16:
            raise TrainingError("--seed must be at least 0 and below 10**16")
        if o.time_limit is not None and not o.time_limit >= 0:  # (NaN too: it would never stop)
            raise TrainingError("--time-limit must be a number of minutes >= 0")
        if o.peak_tflops is not None and not 0 < o.peak_tflops < float("inf"):
            raise TrainingError("--peak-tflops must be a positive number")

    def _group_windows(self) -> dict[str, tuple[int, int]]:
        windows: dict[str, tuple[int, int]] = {}
        for stage in self.objective.stages():
            for g in stage.groups:
                start, end = windows.get(g, (stage.start, stage.end))
                windows[g] = (min(start, stage.start), max(end, stage.end))
        return windows

    # -- stages ---------------------------------------------------------------------------

    def enter_stage(self, stage: Stage) -> None:
        self.stage = stage
        self.objective.enter_stage(stage, self.ema)
        self.runners = {}
        for group, module in self.objective.loss_modules(stage).items():
            module.to(self.device)
            runner: nn.Module = module
            if self.info.world > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP
                ids = [self.device.index] if self.device.type == "cuda" else None
                # Buffers are constants here (the frozen encoder's statistics): no per-step sync.
                import inspect
                sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                        else "broadcast_buffers")
                runner = DDP(module, device_ids=ids, **{sync: False})
            if self.options.compile:
                if self.options.channels_last:
                    # Inductor keeps a graph NCHW when any conv's input is >= 2x its output (every U-Net
                    # decoder), and cuDNN then transposes each conv's tensors to NHWC and back: a quarter
                    # of an H100 step's device time (docs/training.md, 2026-11-26). NHWC was asked for:
                    # keep it through the compiled graph too.
                    import torch._inductor.config as inductor_config
                    inductor_config.force_layout_optimization = True
                runner = torch.compile(runner, dynamic=False)
            self.runners[group] = runner
        if self.step < stage.end:
            self.log.write({"event": "stage", "step": self.step, "stage": stage.name, "groups": list(stage.groups)})

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- one step -------------------------------------------------------------------------

    def train_step(self, images: Tensor) -> dict[str, Tensor]:
        o = self.options
        L, ab = to_lab(images.to(self.device, non_blocking=True))
        if o.channels_last:
            L, ab = L.contiguous(memory_format=torch.channels_last), ab.contiguous(memory_format=torch.channels_last)
        extras = self.objective.draw(L, self.generator)
        logs: dict[str, Tensor] = {}
        prev = None
        for group in self.stage.groups:
            opt = self.optimizers[group]
            start, end = self.windows[group]
            lr = o.lr * lr_factor(self.step, start, end, o.warmup_steps, o.min_lr_ratio)
            for pg in opt.param_groups:
                pg["lr"] = lr * pg.get("lr_scale", 1.0)  # checkpoints from before lr_scale have none
            opt.zero_grad(set_to_none=True)
            with self.autocast():
                loss, group_logs, prev = self.runners[group](L, ab, extras, prev)
            loss.backward()
            params = [p for pg in opt.param_groups for p in pg["params"]]
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, o.grad_clip, foreach=True)
            opt.step()
            logs[f"{group}_loss" if len(self.stage.groups) > 1 else "loss"] = loss.detach()
            logs.update(group_logs)
        self.update_ema()
        return logs

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.options.ema_decay, (1 + self.step) / (10 + self.step))
        if self._ema_pairs is None:  # state_dict tensors share storage with the modules': cache them
            ema, live = self.ema.state_dict(), self.model.state_dict()
            keys = [k for k, t in live.items() if t.is_floating_point()]
            self._ema_pairs = ([ema[k] for k in keys], [live[k] for k in keys])
        torch._foreach_lerp_(*self._ema_pairs, 1.0 - decay)

    def count_flops(self, images: Tensor) -> float:
        """FLOPs of one train step of this stage on this rank (forward + backward), counted once."""
        L, ab = to_lab(images.to(self.device))
        extras = self.objective.draw(L, torch.Generator(self.device).manual_seed(0))
        prev = None
        with flop_counter() as counter:
            for module in self.objective.loss_modules(self.stage).values():
                with self.autocast():
                    loss, _, prev = module(L, ab, extras, prev)
                loss.backward()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())

    # -- validation, samples ----------------------------------------------------------------

    @torch.no_grad()
    def validate_and_sample(self) -> dict[str, float]:
        o = self.options
        if len(self.val_images) == 0:
            return {}
        images = self.val_images.to(self.device)
        L, ab = to_lab(images)
        extras = self.objective.draw(L, torch.Generator(self.device).manual_seed(o.seed + 12345))
        losses: dict[str, float] = {}
        prev = None
        self.model.eval()
        for group, module in self.objective.loss_modules(self.stage).items():
            with self.autocast():
                loss, group_logs, prev = module(L, ab, extras, prev)
            losses[f"val_{group}_loss"] = float(loss)
            losses.update({f"val_{k}": float(v) for k, v in group_logs.items()})
        self.model.train()
        n = min(o.grid_images, L.shape[0])
        from ..diffusion import make_generators
        pred_ab = self.ema.colorize(L[:n], generators=make_generators(o.seed, n))
        L_star = color.denormalize_L(L[:n])
        grey = color.grey_to_rgb(L_star)
        pred = color.lab_to_rgb(torch.cat([L_star, color.denormalize_ab(pred_ab.float())], dim=1))
        path = self.out / "samples" / f"step-{self.step:06d}.png"
        save_png_atomic(sample_grid(grey, pred, images[:n].float() / 255.0), path)
        self.log.write({"event": "val", "step": self.step, **losses, "samples": str(path.relative_to(self.out))})
        return losses

    # -- checkpoints ------------------------------------------------------------------------

    def _rank_state(self) -> dict:
        state = {"rank": self.info.rank,
                 "positions": {str(k): [v.epoch, v.pos] for k, v in self.positions.items()},
                 "generator": bytes(self.generator.get_state().numpy().tobytes()),
                 "torch_cpu": bytes(torch.get_rng_state().numpy().tobytes())}
        if self.device.type == "cuda":
            state["torch_cuda"] = bytes(torch.cuda.get_rng_state(self.device).numpy().tobytes())
        return state

    def save(self) -> None:
        states = [self._rank_state()]
        if self.info.world > 1:
            states = [None] * self.info.world
            dist.all_gather_object(states, self._rank_state())
        if self.info.rank == 0:
            tensors = {}
            tensors.update(ckpt.prefixed("model", self.model.state_dict()))
            tensors.update(ckpt.prefixed("ema", self.ema.state_dict()))
            for name, module in self.objective.extra_modules().items():
                tensors.update(ckpt.prefixed(f"extra.{name}", module.state_dict()))
            optim_meta = {}
            for name, opt in self.optimizers.items():
                t, rest = ckpt.flatten_optimizer(f"opt.{name}", opt.state_dict())
                tensors.update(t)
                optim_meta[name] = rest
            positions = {}
            for s in states:
                for key in ("generator", "torch_cpu", "torch_cuda"):
                    if key in s:
                        tensors[f"rng.{s['rank']}.{key}"] = ckpt.rng_tensor(s[key])
                positions.update(s["positions"])
            meta = {"step": self.step, "options": self.options.to_dict(), "config": self.model.config.to_dict(),
                    "optimizers": optim_meta, "data": {"world": self.info.world, "workers": max(self.workers, 1),
                                                       "positions": positions, "split": SPLIT_VERSION,
                                                       "images": self.data_images, "digest": self.data_digest},
                    "flops": self.flops}
            ckpt.save_checkpoint(self.out / ckpt.FILENAME, tensors, meta)
            self.log.write({"event": "checkpoint", "step": self.step})
        if self.info.world > 1:
            dist.barrier()

    def _restore(self, tensors: dict[str, Tensor], meta: dict) -> None:
        self.model.load_state_dict(ckpt.unprefixed("model", tensors))
        self.ema.load_state_dict(ckpt.unprefixed("ema", tensors))
        for name, module in self.objective.extra_modules().items():
            module.load_state_dict(ckpt.unprefixed(f"extra.{name}", tensors))
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt.unflatten_optimizer(f"opt.{name}", tensors, meta["optimizers"][name]))
        self.step = int(meta["step"])
        self.flops = dict(meta.get("flops", {}))
        r = self.info.rank
        if f"rng.{r}.generator" in tensors:
            self.generator.set_state(tensors[f"rng.{r}.generator"])
            torch.set_rng_state(tensors[f"rng.{r}.torch_cpu"])
            if self.device.type == "cuda" and f"rng.{r}.torch_cuda" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.{r}.torch_cuda"], self.device)
        data = meta["data"]
        if data.get("split") != SPLIT_VERSION:
            self.notes.append("this run was started by a colorize that chose its held-out images by path; from "
                              "here on they are chosen by name (docs/training.md), so some images it held out are "
                              "now trained on and its validation losses are not comparable across the change")
        changed = data.get("digest", self.data_digest) != self.data_digest
        if changed:
            self.notes.append(f"the data are not what this run was trained on ({data.get('images')} images then, "
                              f"{self.data_images} now, or other names: images added, removed or renamed, a folder "
                              "renamed): it goes on from the epoch it had reached in a new order, so it will not match "
                              "an uninterrupted run, and images are held out by name, so some held out before may be "
                              "trained on now")
        if not changed and data["world"] == self.info.world and data["workers"] == max(self.workers, 1):
            self.positions = {int(k): StreamPosition(*v) for k, v in data["positions"].items()}
        else:
            # Other data, or another layout of shards: restart at the epoch the run had reached (not bit-exact).
            epoch = max((v[0] for v in data["positions"].values()), default=0) + 1
            shards = self.info.world * max(self.workers, 1)
            self.positions = {s: StreamPosition(epoch, 0) for s in range(shards)}

    def export(self) -> Path:
        from ..weights import save_model_file
        path = self.out / f"{self.options.model}.safetensors"
        if self.info.rank == 0:
            save_model_file(path, self.ema.state_dict(), self.model.config.to_dict())
        return path

    # -- run --------------------------------------------------------------------------------

    def emit(self, event: dict) -> None:
        if self.progress is not None:
            self.progress(event)

    def _out_of_time(self, mine: bool) -> bool:
        """Whether any rank ran out of time (all ranks must stop at the same step)."""
        if self.info.world == 1:
            return mine
        flag = torch.tensor([float(mine)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def run(self) -> TrainResult:
        o = self.options
        self.log.write({"event": "start", "step": self.step, "world": self.info.world, "device": str(self.device),
                        "train_images": self.n_train, "val_images": len(self.val_images),
                        "val_from_train": self.val_from_train, "skipped_members": self.refused,
                        "parameters": sum(p.numel() for p in self.model.parameters()),
                        "options": o.to_dict(), **({"notes": self.notes} if self.notes else {})})
        for note in self.notes:
            self.emit({"event": "note", "message": note})
        self.emit({"event": "start", "step": self.step, "steps": o.steps, "train_images": self.n_train,
                   "device": str(self.device), "world": self.info.world, "skipped_members": self.refused,
                   "out": str(self.out)})
        peak = o.peak_tflops if o.peak_tflops is not None else default_peak(self.device)
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}  # steps each loss was recorded in (a stage may not record them all)
        t_last = time.perf_counter()
        step_last = self.step
        waited = 0.0  # seconds this interval spent waiting for the loader's next batch
        rates: list[float] = []
        last_losses: dict[str, float] = {}
        stage = self.objective.stage_at(self.step)

        def flush() -> None:
            """One `train` record: the mean of each loss over the steps since the last record."""
            nonlocal sums, counts, t_last, step_last, last_losses, waited
            if not sums:
                return
            values = torch.stack([v.float() / counts[k] for k, v in sums.items()])
            if self.info.world > 1:  # every rank logs (and stops on) the mean over all ranks' batches
                dist.all_reduce(values)
                values /= self.info.world
            last_losses = dict(zip(sums.keys(), values.tolist()))  # the one host sync per interval
            bad = [k for k, v in last_losses.items() if not math.isfinite(v)]
            if bad:
                raise TrainingError(f"the training loss became {last_losses[bad[0]]} by step {self.step} "
                                    f"({', '.join(bad)}); "
                                    + (f"the last checkpoint is kept: continue it with --resume --out {self.out} "
                                       "and a lower --lr (the same schedule, scaled), or start again"
                                       if (self.out / ckpt.FILENAME).is_file() else
                                       "there is no checkpoint yet: start again with a lower --lr"))
            now = time.perf_counter()
            dt = now - t_last
            steps_done = self.step - step_last
            rate = o.batch_size * steps_done / dt if dt > 0 else float("nan")
            rates.append(rate)
            mfu = None
            if peak and stage.name in self.flops:
                mfu = self.flops[stage.name] * steps_done / dt / (peak * 1e12)
            # The share of the interval the loop waited for data: near 0 when the device is the
            # bottleneck, so a low images/s with a high share says add --workers.
            record = {"event": "train", "step": self.step, "stage": stage.name, **last_losses,
                      "lr": self.optimizers[stage.groups[0]].param_groups[0]["lr"], "images_per_s": rate,
                      "mfu": mfu, "loader_wait": min(1.0, waited / dt) if dt > 0 else None, "time": time.time()}
            self.log.write(record)
            self.emit(record)
            sums, counts = {}, {}
            t_last, step_last, waited = time.perf_counter(), self.step, 0.0

        batches = iter(self.loader)
        self.model.train()
        t_start = time.perf_counter()
        stopped_early = False
        try:
            while self.step < o.steps:
                if self.stage is None or self.objective.stage_at(self.step).name != self.stage.name:
                    flush()  # a record never mixes two stages
                    stage = self.objective.stage_at(self.step)
                    self.enter_stage(stage)
                    t_last, step_last = time.perf_counter(), self.step  # exclude stage set-up from timing
                t_wait = time.perf_counter()
                images, meta = next(batches)
                waited += time.perf_counter() - t_wait
                if stage.name not in self.flops:
                    self.flops[stage.name] = self.count_flops(images)
                logs = self.train_step(images)
                shard, epoch, pos = meta.tolist()
                self.positions[int(shard)] = StreamPosition(int(epoch), int(pos))
                for k, v in logs.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                    counts[k] = counts.get(k, 0) + 1
                self.step += 1

                checkpoint_due = self.step % o.ckpt_every == 0 or self.step == o.steps
                # Records also end at checkpoints, so a resumed run logs the intervals an
                # uninterrupted one does.
                if self.step % o.log_every == 0 or checkpoint_due:
                    flush()
                if self.step % o.val_every == 0 or self.step == o.steps:
                    if self.info.rank == 0:
                        t0 = time.perf_counter()
                        val = self.validate_and_sample()
                        self.emit({"event": "val", "step": self.step, **val})
                        t_last += time.perf_counter() - t0
                if checkpoint_due:
                    t0 = time.perf_counter()
                    self.save()
                    t_last += time.perf_counter() - t0
                    self.emit({"event": "checkpoint", "step": self.step})
                self.emit({"event": "step", "step": self.step})
                # Alone, the clock is read every step (no device sync); several ranks agree on
                # stopping at log steps only, where they meet anyway.
                if o.time_limit is not None and self.step < o.steps and (
                        self.info.world == 1 or self.step % o.log_every == 0):
                    if self._out_of_time(time.perf_counter() - t_start > 60 * o.time_limit):
                        stopped_early = True
                        if self.step % o.log_every and not checkpoint_due:
                            flush()  # the steps since the last record are not lost from the log
                        if self.step % o.ckpt_every:
                            self.save()
                        break
        finally:
            # Loader processes ignore SIGTERM and SIGINT (so `kill` and Ctrl-C reach the loop alone): stop
            # them here, or an error would leave the interpreter waiting for them at exit.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

        export = self.export()
        # Throughput: skip the first interval (compilation, warm-up) when there are later ones.
        steady = rates[1:] if len(rates) > 1 else rates
        images_per_s = float(np.median(steady)) if steady else None
        mfu = None
        flops_per_image = None
        if self.flops:
            last_stage = self.objective.stage_at(o.steps - 1).name
            flops_step = self.flops.get(last_stage)
            if flops_step:
                flops_per_image = flops_step / (o.batch_size // self.info.world)
                if peak and images_per_s:
                    mfu = flops_per_image * images_per_s / (peak * 1e12 * self.info.world)
        end = {"event": "end", "step": self.step, "stopped_early": stopped_early, "images_per_s": images_per_s, "mfu": mfu,
               # the export's path within the run folder, as the sample grids' paths are
               "flops_per_image": flops_per_image, "peak_tflops": peak, "export": export.relative_to(self.out).as_posix(),
               **last_losses}
        self.log.write(end)
        self.emit(end)
        return TrainResult(self.out, export, self.out / ckpt.FILENAME, self.step, images_per_s, mfu,
                           flops_per_image, last_losses)


def train(options: TrainOptions, progress: Progress | None = None) -> TrainResult:
    """Train (or resume) a model as `options` say; returns where the export and checkpoint are."""
    out = Path(options.out)
    made_here = DistInfo.current().rank == 0 and not os.path.lexists(out)
    try:
        with contextlib.ExitStack() as held:
            return Trainer(options, progress, held).run()
    except BaseException:
        # A run refused before it wrote anything (a bad --device, --size or --init-weights is only
        # found once the folder is made and locked) leaves no empty run folder behind.
        if made_here:
            with contextlib.suppress(OSError):
                if [entry.name for entry in os.scandir(out)] == [LOCK_NAME]:
                    (out / LOCK_NAME).unlink()
                    out.rmdir()
        raise
