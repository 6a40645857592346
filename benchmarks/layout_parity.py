"""Does `--channels-last` train the same model? Loss and gradients of NCHW against NHWC, eager and compiled.

    python benchmarks/layout_parity.py --init-weights colorize_cli/weights/lab-ddpm.safetensors --batch 256 --steps 30
    python benchmarks/layout_parity.py --variants nchw-eager,cl-eager --preset tiny --size 16 --batch 4

GPU session 4 (2026-11-27, H200) trained `lab-ddpm` with `--compile --channels-last` and it went
wrong from the start (validation MSE 0.0233 at step 500 against 0.0175 for the same run in NCHW)
and reached NaN at step 2,100, while on the CPU the four variants give the same losses to six
digits. This script tells which part differs: every variant starts from the same weights, trains
on the same fixed batch with the same noise draws (the Trainer's seeded generator), and is compared
with the first variant (the reference) step by step: the loss, each parameter's first-step
gradient (relative error ||g - g_ref|| / ||g_ref||, see relative_errors), and parameters whose gradient's strides differ
from the parameter's own (what a fused optimizer reads as flat memory). A layout is numerically
sound when its errors stay at the level the reference's own precision gives (bf16 autocast on CUDA:
~1e-2 relative per gradient; fp32 on the CPU: ~1e-5). Numbers go to docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.train.loop import Trainer, TrainOptions  # noqa: E402
from train_throughput import synthetic_folder  # noqa: E402

VARIANTS = {  # name -> (channels_last, compile)
    "nchw-eager": (False, False),
    "cl-eager": (True, False),
    "nchw-compile": (False, True),
    "cl-compile": (True, True),
}


def relative_errors(grads: dict[str, Tensor], reference: dict[str, Tensor], floor: float = 1e-3) -> dict[str, float]:
    """||g - g_ref|| / ||g_ref|| per parameter both have (inf where only one of them has a gradient).

    A denominator below `floor` x the median parameter's gradient norm counts as that: some
    gradients are zero but for rounding (a convolution's bias before a GroupNorm of one channel per
    group), and their relative error says nothing."""
    norms = {name: float(ref.float().norm()) for name, ref in reference.items()}
    least = floor * (statistics.median(norms.values()) if norms else 0.0)
    errors = {}
    for name, ref in reference.items():
        got = grads.get(name)
        if got is None:
            errors[name] = float("inf")
            continue
        diff = float((got.float() - ref.float()).norm())
        scale = max(norms[name], least)
        errors[name] = diff / scale if scale > 0 else diff
    for name in grads.keys() - reference.keys():
        errors[name] = float("inf")
    return errors


def same_layout(a: Tensor, b: Tensor) -> bool:
    """Same memory order: strides equal wherever the size is above 1 (a 1x1 conv's weight is both
    NCHW and NHWC, and autograd returns either)."""
    return a.shape == b.shape and all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n > 1)


def stride_mismatches(model: torch.nn.Module) -> list[str]:
    """Parameters whose gradient is laid out differently from the parameter itself."""
    return [f"{name} {tuple(p.shape)} param {p.stride()} grad {p.grad.stride()}"
            for name, p in model.named_parameters()
            if p.grad is not None and not same_layout(p, p.grad)]


def run_variant(options: TrainOptions, steps: int) -> dict:
    """`steps` train steps on the loader's first batch: losses, first-step gradients, stride mismatches."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    # enter_stage sets Inductor's global layout switch for --channels-last and nothing resets it.
    with inductor_config.patch(force_layout_optimization=False):
        trainer = Trainer(options)
        trainer.enter_stage(trainer.objective.stage_at(0))
        images, _ = next(iter(trainer.loader))
        images = images.to(trainer.device)
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        captured: dict[str, Tensor] = {}
        mismatched: list[str] = []

        def capture(opt, args, kwargs):  # runs after clipping, before the update
            if not captured:
                for pg in opt.param_groups:
                    for p in pg["params"]:
                        if p.grad is not None:
                            captured[names[id(p)]] = p.grad.detach().float().cpu().clone()
                mismatched.extend(stride_mismatches(trainer.model))

        hooks = [opt.register_step_pre_hook(capture) for opt in trainer.optimizers.values()]
        losses = []
        for _ in range(steps):
            logs = trainer.train_step(images)
            trainer.step += 1
            losses.append(float(logs["loss"]))
        for h in hooks:
            h.remove()
    return {"losses": losses, "grads": captured, "stride_mismatches": mismatched}


def compare(variant: dict, reference: dict, worst: int) -> dict:
    """One variant's run against the reference's: gradient errors, loss gaps, layout mismatches."""
    errors = relative_errors(variant["grads"], reference["grads"])
    gaps = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(variant["losses"], reference["losses"])]
    return {
        "max_grad_error": max(errors.values()) if errors else 0.0,
        "median_grad_error": statistics.median(errors.values()) if errors else 0.0,
        "worst_grads": sorted(errors.items(), key=lambda kv: -kv[1])[:worst],
        "loss_gap_first": gaps[0] if gaps else None,
        "loss_gap_max": max(gaps) if gaps else None,
        "final_loss": variant["losses"][-1], "reference_final_loss": reference["losses"][-1],
        "stride_mismatches": variant["stride_mismatches"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="nchw-compile,cl-compile,nchw-eager,cl-eager",
                   help="the first is the reference; compiled first, as they are what GPU runs use")
    p.add_argument("--model", default="lab-ddpm")
    p.add_argument("--preset", default="small")
    p.add_argument("--encoder", default="none")
    p.add_argument("--init-weights", default=None)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", nargs="*", default=None, help="folders/shards (default: synthetic images)")
    p.add_argument("--worst", type=int, default=5, help="parameters with the largest gradient error to list")
    p.add_argument("--json", type=Path, default=None, help="also write the full result here")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")

    results: dict[str, dict] = {}
    report: dict = {"reference": names[0], "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = args.data
        else:
            (Path(tmp) / "img").mkdir()
            data = [str(synthetic_folder(Path(tmp) / "img", args.size, count=max(16, args.batch)))]
        for name in names:
            channels_last, compile_ = VARIANTS[name]
            options = TrainOptions(
                data=data, out=str(Path(tmp) / name), model=args.model, preset=args.preset, size=args.size,
                batch_size=args.batch, steps=args.steps, lr=args.lr, warmup_steps=0,
                encoder=None if args.encoder == "none" else args.encoder, init_weights=args.init_weights,
                device=args.device, compile=compile_, channels_last=channels_last, workers=0,
                val_fraction=0.0, val_images=1, seed=0)
            results[name] = r = run_variant(options, args.steps)
            line = f"{name}: losses {' '.join(f'{x:.5f}' for x in r['losses'][:6])} ... {r['losses'][-1]:.5f}"
            if name != names[0]:  # summarised as it comes: a run cut off by a time limit still reports
                report["variants"][name] = compare(r, results[names[0]], args.worst)
                v = report["variants"][name]
                line += (f" | gradient error median {v['median_grad_error']:.2e} max {v['max_grad_error']:.2e}"
                         f" ({', '.join(n for n, _ in v['worst_grads'][:3])}), loss gap max {v['loss_gap_max']:.2e},"
                         f" {len(v['stride_mismatches'])} layout mismatches")
            print(line, file=sys.stderr, flush=True)

    report["reference_stride_mismatches"] = results[names[0]]["stride_mismatches"]
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
