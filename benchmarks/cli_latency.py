"""Whole-command latency of `colorize photo.jpg -o out.png` on a 1-megapixel photo.

What a user waits for: Python start-up, imports, model load, colouring at full resolution and
writing the PNG. Each model's command runs `--runs` times, interleaved round by round so a
noisy machine hurts every model alike; the table gives min / median / max wall time and the
peak resident memory of the child process. `--stages` adds one in-process breakdown per model
(where the time goes), measured the way the CLI does the work (which does not import kornia,
since 2026-11-27: see docs/benchmarks.md).

    python benchmarks/cli_latency.py --models unet,lab-ddpm --runs 7 --stages

The photo is scikit-image's `astronaut` (public domain), made grey and resized to 1000×1000,
written as a JPEG into a temporary folder; `--image` takes your own file instead. For a large
scan, `--megapixels 100` makes it 10000×10000 with a film grain (sigma 4 levels, seeded), so
that it compresses like a real scan rather than like a smooth enlargement:

    python benchmarks/cli_latency.py --models unet --runs 3 --megapixels 100 --stages

To tell a change from the machine's mood, time an older checkout in the same rounds: `--code DIR`
adds each model's command run from DIR (`python -m colorize_cli` with DIR on `PYTHONPATH`, cwd
outside any checkout), e.g. after `git worktree add /tmp/before HEAD~1`:

    python benchmarks/cli_latency.py --models unet --runs 10 --code /tmp/before
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES_SCRIPT = r"""
import gc, sys, time
gc.disable()  # as the CLI starts up (cli._collector_paused)
t = [time.perf_counter()]
import torch; t.append(time.perf_counter())
from colorize_cli.pipeline import Engine
from colorize_cli.imageio import load_image, save_image
t.append(time.perf_counter())
engine = Engine.load(model=sys.argv[1] or None, weights=sys.argv[2] or None, device="cpu"); t.append(time.perf_counter())
gc.freeze(); gc.enable()
image = load_image(sys.argv[3]); t.append(time.perf_counter())
out = engine.colorize_pixels([image.pixels])[0]; t.append(time.perf_counter())
save_image(sys.argv[4], out, image.alpha, overwrite=True); t.append(time.perf_counter())
names = ("import torch", "import colorize", "load model", "read photo", "colour", "write PNG")
print(" | ".join(f"{n} {b - a:.3f}" for n, a, b in zip(names, t, t[1:])))
"""


def make_photo(folder: Path, megapixels: float | None = None) -> Path:
    import numpy as np
    import skimage.data
    from PIL import Image

    side = 1000 if megapixels is None else round(1000 * megapixels ** 0.5)
    grey = Image.fromarray(skimage.data.astronaut()).convert("L").resize((side, side), Image.LANCZOS)
    if megapixels is not None:
        grain = np.random.default_rng(0).normal(0.0, 4.0, (side, side))
        grey = Image.fromarray(np.clip(np.asarray(grey) + grain, 0, 255).round().astype(np.uint8))
    path = folder / f"astronaut-{side * side / 1e6:g}mp.jpg"
    grey.save(path, quality=95)
    Image.MAX_IMAGE_PIXELS = None
    assert Image.open(path).size == (side, side)
    return path


def run_once(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--make-photo"]:
        print(make_photo(Path(argv[1]), float(argv[2]) if argv[2] else None))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="unet", help="comma-separated registry models")
    p.add_argument("--weights", action="append", default=[], help="also time a local .safetensors file")
    p.add_argument("--image", type=Path, help="photo to colour (default: 1-MP grey astronaut)")
    p.add_argument("--megapixels", type=float, help="make the astronaut this large, with grain (e.g. 100)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--stages", action="store_true", help="also print an in-process breakdown per model")
    p.add_argument("--code", type=Path, action="append", default=[],
                   help="also time the commands as another checkout of colorize runs them (interleaved)")
    args = p.parse_args(argv)

    colorize = shutil.which("colorize")
    base = [colorize] if colorize else [sys.executable, "-m", "colorize_cli"]
    variants = [(m, ["--model", m], (m, "")) for m in args.models.split(",") if m]
    variants += [(Path(w).stem + " (file)", ["--weights", w], ("", w)) for w in args.weights]
    # (label, command, environment) per variant: the installed code, then each --code checkout's
    commands = {name: (base + extra, None) for name, extra, _ in variants}
    if args.code:  # this checkout too as `python -m` with PYTHONPATH, so both start alike
        mine = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        commands = {name: ([sys.executable, "-m", "colorize_cli", *extra], mine) for name, extra, _ in variants}
    for tree in args.code:
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        commands.update({f"{name} ({tree})": ([sys.executable, "-m", "colorize_cli", *extra], env)
                         for name, extra, _ in variants})

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Made in a child process: a parent grown by a 100-MP photo would pass its resident memory on
        # to every command it starts (ru_maxrss counts from fork), inflating their peaks.
        photo = args.image or Path(subprocess.run(
            [sys.executable, __file__, "--make-photo", str(folder), str(args.megapixels or "")],
            capture_output=True, text=True, check=True).stdout.strip())
        out = folder / "out.png"
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for command, env in commands.values():  # warm the file cache and .pyc files; not counted
            run_once([*command, str(photo), "-o", str(out), "--overwrite", "-q"], env, folder)
        for round_ in range(args.runs):
            order = list(commands.items())
            for name, (command, env) in order if round_ % 2 == 0 else order[::-1]:  # neither always first
                out.unlink(missing_ok=True)
                times[name].append(run_once([*command, str(photo), "-o", str(out), "-q"], env, folder))

        print(f"photo: {photo} · {args.runs} runs per command, interleaved · {os.cpu_count()} CPUs")
        print("| model | wall s (min / median / max) | peak RSS MB |")
        print("|---|---:|---:|")
        for name, runs in times.items():
            walls = [w for w, _ in runs]
            print(f"| {name} | {min(walls):.2f} / {statistics.median(walls):.2f} / {max(walls):.2f} "
                  f"| {max(r for _, r in runs):.0f} |")
        if args.stages:
            for name, _, (model, weights) in variants:
                result = subprocess.run([sys.executable, "-c", STAGES_SCRIPT, model, weights, str(photo), str(out)],
                                        capture_output=True, text=True, check=True)
                print(f"{name}: {result.stdout.strip()}")


if __name__ == "__main__":
    main()
