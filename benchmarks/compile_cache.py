"""`python -m colorize_cli.train ...` with torch.compile's work carried from one machine to the next.

    python benchmarks/compile_cache.py --load .devinit/ddpm.compile --save $OUT/ddpm.compile -- \
        --data shard.tar --model lab-ddpm --compile ...

A lent GPU machine starts bare, and compiling the small `lab-ddpm` with its encoder took ~150 s of
each call's ~6 training minutes (GPU session 4: the first 50 steps ran at 86 img/s, the rest at
3,500). torch.compile's "mega-cache" (`torch.compiler.save_cache_artifacts`) packs what Inductor
made in this process (generated code, compiled kernels, autotuning choices) into one blob that
`load_cache_artifacts` puts back into the local caches of another machine with the same torch, so
its compilation finds everything already made. `--load` may name a file that does not exist (the
first call); `--save` is written atomically at the end, whatever the training's outcome.

The blob is torch's own format, which unpickles: load only blobs this project's own device calls
made (they travel in git-ignored `.devinit/`), never one from elsewhere. The colorize tool itself
never loads one. On this CPU (torch 2.13) it cut a `--compile` run of the small model with its
encoder from 129 to 68 s (9 s without `--compile`): Inductor's 2 graphs and the autograd graph
were all found; tracing remains.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorize_cli.atomic import temp_path_beside  # noqa: E402
from colorize_cli.train.__main__ import main as train_main  # noqa: E402


def load(path: Path) -> str:
    """Put a saved blob's artifacts into this machine's caches; what happened, for the log."""
    if not path.is_file():
        return f"compile cache: {path} not there, compiling from scratch"
    try:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())
    except Exception as e:  # another torch's blob, a truncated file: compile from scratch instead
        return f"compile cache: {path} not loaded ({type(e).__name__}: {e}), compiling from scratch"
    if info is None:
        return f"compile cache: {path} held nothing this torch can use"
    return f"compile cache: loaded {path} ({path.stat().st_size / 1e6:.1f} MB; {summary(info)})"


def save(path: Path) -> str:
    """Write this process's compile artifacts to `path` (temporary name, then renamed)."""
    result = torch.compiler.save_cache_artifacts()
    if result is None:
        return "compile cache: nothing compiled, nothing saved"
    blob, info = result
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return f"compile cache: saved {path} ({len(blob) / 1e6:.1f} MB; {summary(info)})"


def summary(info) -> str:
    """Artifact counts by kind, from a CacheInfo."""
    kinds = getattr(info, "artifacts", {}) or {}
    return ", ".join(f"{len(keys)} {kind}" for kind, keys in kinds.items() if keys) or "no artifacts"


def hits() -> str:
    """Whether compilation found its work in the caches: dynamo's counters of this process."""
    from torch._dynamo.utils import counters

    wanted = ("fxgraph_cache_hit", "fxgraph_cache_miss", "autograd_cache_hit", "autograd_cache_miss")
    found = {**counters.get("inductor", {}), **counters.get("aot_autograd", {})}
    return ", ".join(f"{k} {found.get(k, 0)}" for k in wanted)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("Error: give the training's arguments after '--'", file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", type=Path, default=None, help="a blob saved by an earlier run (may be missing)")
    p.add_argument("--save", type=Path, default=None, help="where to write this run's blob")
    args = p.parse_args(argv[:split])
    if args.load is not None:
        print(load(args.load), file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        code = train_main(argv[split + 1:])
    finally:
        print(f"compile cache: training took {time.perf_counter() - start:.0f} s; {hits()}", file=sys.stderr)
        if args.save is not None:
            print(save(args.save), file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
