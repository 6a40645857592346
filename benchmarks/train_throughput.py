"""Training throughput: images/s and MFU of one train step, and (with --data) of the data loader.

    python benchmarks/train_throughput.py --model lab-ddpm --preset small --size 64 --batch 256 --compile
    python benchmarks/train_throughput.py --data /work/shared/data/train/tiny64-0.tar --workers 8

The step is timed on one fixed batch already on the device (what the GPU can do); the loader is
timed on its own (what the CPU workers can feed). Training runs at the smaller of the two.
FLOPs of a step (forward + backward) come from torch.utils.flop_counter.FlopCounterMode (with
the loop's correction for grouped convolutions' backward: `train.loop.flop_counter`);
MFU = FLOPs/s over --peak-tflops (default: the device's bf16 dense peak when known, else n/a).
Numbers belong in docs/training.md, never in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.train.loop import Trainer, TrainOptions, default_peak  # noqa: E402
from colorize_cli.train.objectives import ObjectiveOptions  # noqa: E402


def synthetic_folder(root: Path, size: int, count: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"{i}.png")
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Trainer, images: torch.Tensor, warmup: int, steps: int, repeats: int) -> list[float]:
    """Seconds per step, one median-able sample per repeat."""
    for _ in range(warmup):
        trainer.train_step(images)
    sync(trainer.device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(images)
        sync(trainer.device)
        samples.append((time.perf_counter() - t0) / steps)
    return samples


# Kernel name fragments -> what the time is spent on. First match wins; the order matters (cuDNN's
# layout transposes also live in its engines).
KERNEL_KINDS = (
    ("layout transposes (cuDNN NCHW<->NHWC)", ("nchwToNhwc", "nhwcToNchw")),
    ("convolutions", ("conv", "xmma", "implicit_gemm", "cudnn")),
    ("matrix products", ("gemm", "bmm", "cutlass")),
    ("fused elementwise / norms (Triton)", ("triton",)),
    ("optimizer", ("adam", "foreach", "multi_tensor")),
)


def kernel_breakdown(kernels: list[tuple[str, float]]) -> dict[str, float]:
    """Device time (µs) per kind of kernel, from (kernel name, µs) pairs; unmatched ones are 'other'."""
    totals: dict[str, float] = {}
    for name, us in kernels:
        lowered = name.lower()
        kind = next((kind for kind, parts in KERNEL_KINDS if any(p.lower() in lowered for p in parts)), "other")
        totals[kind] = totals.get(kind, 0.0) + us
    return totals


# Operators that only forward a copy to aten::copy_: the one above them is the copy's origin.
COPY_WRAPPERS = frozenset({"aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone",
                           "aten::reshape", "aten::_reshape_alias"})


def copy_origins(copies: list[tuple[list[str], str, float]]) -> list[tuple[str, int, float, str]]:
    """Who asks for the copies: (ancestor names innermost first, input shapes, µs) per aten::copy_ ->
    (origin, count, µs, commonest shapes) by µs, largest first. Copies outside any operator (in
    the compiled graph's or the step's own code) come under '(top level)'."""
    count: Counter[str] = Counter()
    micros: Counter[str] = Counter()
    by_shape: dict[str, Counter[str]] = defaultdict(Counter)
    for ancestry, shapes, us in copies:
        origin = next((name for name in ancestry if name not in COPY_WRAPPERS), "(top level)")
        count[origin] += 1
        micros[origin] += us
        by_shape[origin][shapes] += us
    rows = [(origin, count[origin], micros[origin], by_shape[origin].most_common(1)[0][0]) for origin in count]
    return sorted(rows, key=lambda row: -row[2])


def profile_steps(trainer: Trainer, images: torch.Tensor, steps: int, path: Path) -> None:
    """Where a step's time goes: torch.profiler over `steps` steps, top operators by device time, and
    (CUDA) the kernels' time by kind against the wall time, which shows launch gaps too. The operator
    table counts a kernel both on its own row and in the operator that launched it; the breakdown
    counts each kernel once."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    sync(trainer.device)
    t0 = time.perf_counter()
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            trainer.train_step(images)
        sync(trainer.device)
    wall_us = (time.perf_counter() - t0) * 1e6
    key = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    text = prof.key_averages().table(sort_by=key, row_limit=40)
    kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA]
    lines = []
    if kernels:
        busy = sum(us for _, us in kernels)
        lines = [f"{steps} steps: {wall_us / steps / 1e3:.1f} ms/step wall (profiler on), "
                 f"kernels {busy / steps / 1e3:.1f} ms/step"]
        for kind, us in sorted(kernel_breakdown(kernels).items(), key=lambda kv: -kv[1]):
            lines.append(f"  {kind:<40}{us / steps / 1e3:8.1f} ms/step {100 * us / busy:6.1f} % of kernel time")
    # GPU session 3 (2026-11-27) found ~67 aten::copy_ per channels-last step, 8 ms of 75: who asks?
    copies = []
    for e in prof.events():
        if e.name != "aten::copy_" or e.device_type != DeviceType.CPU:
            continue
        ancestry, parent = [], e.cpu_parent
        while parent is not None:
            ancestry.append(parent.name)
            parent = parent.cpu_parent
        copies.append((ancestry, str(e.input_shapes), e.device_time_total if kernels else e.cpu_time_total))
    origins = copy_origins(copies)
    if origins:
        lines.append(f"aten::copy_ by the operator that asked for it ({'device' if kernels else 'CPU'} time):")
        for origin, count, us, shapes in origins[:12]:
            lines.append(f"  {origin[:56]:<56}{count / steps:6.1f}/step{us / steps / 1e3:8.2f} ms/step  e.g. {shapes[:90]}")
    if lines:
        summary = "\n".join(lines)
        print(summary, file=sys.stderr)
        text = summary + "\n\n" + text
    path.write_text(text)
    print(f"profile of {steps} steps: {path}", file=sys.stderr)


def time_loader(trainer: Trainer, batches: int) -> float:
    """Images/s the DataLoader delivers (first batch excluded: worker start-up)."""
    it = iter(trainer.loader)
    images, _ = next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
    return batches * images.shape[0] / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lab-ddpm")
    p.add_argument("--preset", default="small")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--encoder", default="none")
    p.add_argument("--stage", default="auto", help="latent-cold: vq | cold (auto times the first stage)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights and activations (with --compile, inside the compiled graph too)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation happens here)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--data", nargs="*", default=None, help="also time the loader on these folders/shards")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--loader-batches", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    p.add_argument("--profile", type=Path, default=None,
                   help="also profile 5 steps after timing and write the top operators to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = args.data
        else:
            (Path(tmp) / "img").mkdir()
            data = [str(synthetic_folder(Path(tmp) / "img", args.size))]
        options = TrainOptions(
            data=data, out=str(Path(tmp) / "run"), model=args.model, preset=args.preset, size=args.size,
            batch_size=args.batch, steps=10**9, encoder=None if args.encoder == "none" else args.encoder,
            device=args.device, compile=args.compile, channels_last=args.channels_last,
            workers=args.workers if args.data else 0, val_fraction=0.0,
            val_images=1, peak_tflops=args.peak_tflops,
            objective=ObjectiveOptions(stage=args.stage, perceptual_weight=0.1))
        trainer = Trainer(options)
        stage = trainer.objective.stage_at(0)
        trainer.enter_stage(stage)
        torch.manual_seed(0)
        images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
        if trainer.device.type == "cuda":
            images = images.pin_memory()
        flops = trainer.count_flops(images)
        t0 = time.perf_counter()
        samples = time_steps(trainer, images, args.warmup, args.steps, args.repeats)
        total = time.perf_counter() - t0
        if args.profile:
            profile_steps(trainer, images, 5, args.profile)
        loader_ips = time_loader(trainer, args.loader_batches) if args.data else None

    step_s = statistics.median(samples)
    ips = args.batch / step_s
    peak = args.peak_tflops if args.peak_tflops is not None else default_peak(trainer.device)
    mfu = flops / step_s / (peak * 1e12) if peak else None
    params = sum(p.numel() for p in trainer.model.parameters())
    device_name = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads)"
    result = {
        "model": args.model, "preset": args.preset, "stage": stage.name, "size": args.size, "batch": args.batch,
        "encoder": args.encoder, "compile": args.compile, "channels_last": args.channels_last,
        "device": device_name, "parameters": params,
        "step_ms": 1000 * step_s, "step_ms_spread": [1000 * min(samples), 1000 * max(samples)],
        "images_per_s": ips, "gflop_per_image": flops / args.batch / 1e9, "tflop_per_s": flops / step_s / 1e12,
        "peak_tflops": peak, "mfu": mfu, "loader_images_per_s": loader_ips, "warmup_and_timed_s": total,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'model':<14}{'stage':<8}{'size':>5}{'batch':>6}{'params':>10}{'ms/step':>10}{'img/s':>10}"
          f"{'GFLOP/img':>11}{'TFLOP/s':>9}{'MFU':>7}{'loader img/s':>14}")
    print(f"{args.model:<14}{stage.name:<8}{args.size:>5}{args.batch:>6}{params / 1e6:>9.2f}M{1000 * step_s:>10.1f}"
          f"{ips:>10.1f}{flops / args.batch / 1e9:>11.3f}{flops / step_s / 1e12:>9.3f}"
          f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%':>7}"
          f"{'-' if loader_ips is None else f'{loader_ips:.0f}':>14}")
    print(f"device: {device_name}; compile={args.compile}; torch {torch.__version__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
