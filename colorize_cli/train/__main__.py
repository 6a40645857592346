"""`python -m colorize_cli.train ...`: the training command without the Typer app (for torchrun).

    torchrun --nproc_per_node 8 -m colorize_cli.train --data shards/ --model lab-ddpm --compile
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from .command import train_command
from .data import TrainingError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m colorize_cli.train", description=train_command.__doc__)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="folders of images and/or .tar shards")
    signature = inspect.signature(train_command)
    for name, param in signature.parameters.items():
        if name in ("data", "show_progress"):
            continue
        flag = "--" + name.replace("_", "-")
        default = param.default
        annotation = str(param.annotation)
        if annotation == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float,
                "Path | None": Path}.get(annotation, str)
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--no-progress", action="store_true", help="no Rich progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    show = not args.pop("no_progress")
    try:
        train_command(show_progress=show, **args)
    except TrainingError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
