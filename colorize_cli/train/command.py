"""`colorize train`: typed options -> `loop.train`, with Rich progress on stderr.

The lead's Typer app wraps `train_command`; `python -m colorize_cli.train` calls it too (for
torchrun). Under torchrun (WORLD_SIZE > 1) the process group is set up here: NCCL on CUDA, gloo
on the CPU. Errors the user can cause raise `TrainingError` (one `Error:` line in the CLI).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Collection

from .data import TrainingDataError, TrainingError
from .loop import TrainOptions, TrainResult
from .objectives import ObjectiveOptions

MODELS = ("lab-ddpm", "latent-cold", "unet", "unet-gan")
ENCODERS = ("efficientnet-lite0", "none")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or a stop signal during a run; `out` is its folder (chosen by the run when not given)."""

    def __init__(self, out: str):
        super().__init__(out)
        self.out = Path(out)


def interrupted_advice(run: str | os.PathLike[str] | None) -> str:
    """What to tell the user of a run stopped early: how to resume it, or that nothing can be."""
    from .checkpoint import FILENAME

    if run is None or not (Path(run) / FILENAME).is_file():
        return ("interrupted before the first checkpoint: there is nothing to resume; run the command again "
                "to start over (--ckpt-every sets how often checkpoints are made).")
    return f"interrupted; rerun with --resume --out {run} to continue from the last checkpoint."


def default_out(model: str) -> Path:
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def _init_distributed(device: str) -> bool:
    """Join torchrun's process group when launched by it; True when this call created it."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return True


def _shared_out(out: Path | None, model: str) -> Path:
    """The output folder, chosen on rank 0 (the timestamp) and shared with every rank."""
    import torch.distributed as dist

    chosen = [str(out) if out is not None else str(default_out(model))]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(chosen, src=0)
    return Path(chosen[0])


class RichProgress:
    """Renders the loop's progress events on stderr."""

    def __init__(self, model: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn(f"[bold]{model}[/bold] {{task.fields[stage]}}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                            # Only on a terminal: redirected to a log, a bar is an empty line (before
                            # an error, too); the log gets the printed lines, the JSONL log the rest.
                            console=self.console, disable=not self.console.is_terminal)
        self.task = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.console.print(f"training on {event['device']} × {event['world']}: {event['train_images']} images"
                               + (f", {event['skipped_members']} tar members skipped" if event["skipped_members"] else "")
                               + f"; run folder {event['out']}", markup=False, highlight=False)
            self.task = self.bar.add_task("train", total=event["steps"], completed=event["step"], stage="", status="")
        elif kind == "step":
            self.bar.update(self.task, completed=event["step"])
        elif kind == "train":
            losses = " ".join(f"{k}={v:.4f}" for k, v in event.items()
                              if k not in ("event", "step", "stage", "lr", "images_per_s", "mfu", "time"))
            mfu = f" mfu={100 * event['mfu']:.1f}%" if event.get("mfu") else ""
            self.bar.update(self.task, stage=event["stage"],
                            status=f"{losses} {event['images_per_s']:.0f} img/s{mfu}")
        elif kind == "note":
            self.console.print(f"Note: {event['message']}", markup=False, highlight=False)
        elif kind == "val" and len(event) > 2:
            vals = " ".join(f"{k}={v:.4f}" for k, v in event.items() if k.startswith("val_"))
            self.console.print(f"step {event['step']}: {vals}")
        elif kind == "end":
            ips = event["images_per_s"]
            mfu = f"{100 * event['mfu']:.1f}%" if event.get("mfu") else "n/a"
            self.console.print(f"done: {event['step']} steps, "
                               f"{'n/a' if ips is None else f'{ips:.1f}'} images/s, MFU {mfu}; "
                               f"exported {event['export']}")


def _refuse_changed_settings(options: TrainOptions, saved: dict, given: Collection[str]) -> None:
    """A typed option that only a new run can change (--model, --batch-size, ...) must match the run's value:
    silently training on with the old one would surprise."""
    from dataclasses import asdict

    from ..models.zoo import ModelConfig

    # None stands for a default: the model's (prediction, schedule), or no encoder.
    defaults = {key: ModelConfig.__dataclass_fields__[key].default for key in ("prediction", "schedule")}

    def effective(key: str, value):
        value = json.loads(json.dumps(value))  # through JSON: tuples and lists compare alike
        return defaults.get(key, "none" if key == "encoder" else None) if value is None else value

    now = asdict(options)
    pairs = [(key, value, saved) for key, value in now.items() if key != "objective"]
    pairs += [(key, value, saved.get("objective", {})) for key, value in now["objective"].items()]
    fixed = [(key, value, old[key]) for key, value, old in pairs
             if key in given and key in old and key not in (*TrainOptions.RUNTIME, "resume", "out")]
    for key, value, was in fixed:
        if effective(key, value) != effective(key, was):
            raise TrainingError(f"--{key.replace('_', '-')} cannot change on --resume (this run uses "
                                f"{effective(key, was)!r}); start a new run, e.g. with --init-weights from its export")


def train_command(
    data: list[Path],
    model: str = "lab-ddpm",
    out: Path | None = None,
    resume: bool = False,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    size: int = 64,
    preset: str = "small",
    encoder: str = "none",
    prediction: str | None = None,
    schedule: str | None = None,
    head: str = "regression",
    seed: int = 0,
    device: str = "auto",
    compile: bool = False,
    val_every: int = 1000,
    ckpt_every: int = 1000,
    log_every: int = 50,
    workers: int = 4,
    init_weights: Path | None = None,
    ema_decay: float = 0.999,
    warmup_steps: int = 500,
    grad_clip: float = 1.0,
    val_fraction: float = 0.01,
    peak_tflops: float | None = None,
    time_limit: float | None = None,
    channels_last: bool = False,
    perceptual_weight: float = 0.1,
    adv_weight: float = 0.01,
    colourfulness_weight: float = 0.0,
    chroma_weight: float = 0.0,
    gan_start: float = 0.3,
    vq_fraction: float = 0.3,
    stage: str = "auto",
    encoder_lr_scale: float = 0.0,
    show_progress: bool = True,
    given: Collection[str] | None = None,
) -> TrainResult:
    """Train `model` on images under `data`; checkpoint, log, sample grids and export under `out`.

    With `resume`, continue from `out`/checkpoint.safetensors with the options saved there
    (steps, device, compile, workers, data, the time limit and the logging/checkpoint intervals
    may change; those not named in `given` keep their saved values, and `data` may be empty).
    `time_limit` (minutes) stops cleanly — checkpoint and export — when it runs out, so a run on
    a lent machine can be cut to fit its lease and resumed later.
    """
    from . import loop

    if model not in MODELS:
        raise TrainingError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if encoder not in ENCODERS:
        raise TrainingError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    if resume and out is None:
        raise TrainingError("--resume needs --out DIR (the run folder holding checkpoint.safetensors)")
    if not data and not resume:
        raise TrainingError("--data is required: image folders and/or .tar shards to train on")
    if any(os.fspath(p) == "" for p in data):  # `--data "$DIR"` with DIR unset: not the current folder
        raise TrainingError("--data is empty (an unset shell variable?): give a folder or a .tar shard")
    created = _init_distributed(device)
    try:
        options = TrainOptions(
            # absolute (a resume from another folder finds them), links kept: a folder's name is part
            # of each image's split key, and a link's name is what the user gave
            data=[os.path.abspath(p) for p in data], out=str(_shared_out(out, model)), model=model,
            steps=10_000 if steps is None else steps, batch_size=batch_size, lr=2e-4 if lr is None else lr, size=size, preset=preset,
            encoder=None if encoder == "none" else encoder, prediction=prediction, schedule=schedule, head=head,
            seed=seed, device=device, compile=compile, val_every=val_every, ckpt_every=ckpt_every, log_every=log_every,
            workers=workers, init_weights=str(init_weights) if init_weights else None, resume=resume,
            warmup_steps=warmup_steps, ema_decay=ema_decay, grad_clip=grad_clip, val_fraction=val_fraction,
            peak_tflops=peak_tflops, time_limit=time_limit, channels_last=channels_last,
            objective=ObjectiveOptions(perceptual_weight=perceptual_weight, adv_weight=adv_weight,
                                       colourfulness_weight=colourfulness_weight, chroma_weight=chroma_weight,
                                       gan_start=gan_start, vq_fraction=vq_fraction, stage=stage,
                                       encoder_lr_scale=encoder_lr_scale))
        if resume:
            from .checkpoint import FILENAME, load_checkpoint
            # Only the metadata: the loop reads the tensors once, when it restores the run.
            saved = load_checkpoint(Path(options.out) / FILENAME, tensors=False)[1]["options"]
            if given is None:  # a Python caller: every argument counts, except an unset `steps` or `data`
                unset = ({"steps"} if steps is None else set()) | (set() if data else {"data"}) | (
                    {"lr"} if lr is None else set())
                given = set(TrainOptions.RUNTIME) - unset
            for key in TrainOptions.RUNTIME:
                if key not in given and key in saved:
                    setattr(options, key, saved[key])
            _refuse_changed_settings(options, saved, given)
            if "data" not in given:  # its own data, read from the checkpoint: say where to give it if it moved
                gone = next((p for p in options.data if not os.path.lexists(p)), None)
                if gone is not None:
                    raise TrainingDataError(f"this run's data, {gone}, is not there any more; if it moved, give its "
                                        "new place with --data (the same images under the same names)")
            model = saved.get("model", model)  # for the progress bar's name
        rank0 = int(os.environ.get("RANK", "0")) == 0
        try:
            if show_progress and rank0:
                with RichProgress(model) as progress:
                    return loop.train(options, progress)
            return loop.train(options)
        except KeyboardInterrupt:
            raise TrainingInterrupted(options.out) from None
    finally:
        if created:
            import torch.distributed as dist
            dist.destroy_process_group()
