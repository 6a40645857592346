"""`python -m colorize_cli.train ...`: the training command without the Typer app (for torchrun).

    torchrun --nproc_per_node 8 -m colorize_cli.train --data shards/ --model lab-ddpm --compile
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
from pathlib import Path

from .command import interrupted_advice, train_command
from ..errors import error_message, interrupt_on_signal
from .data import TrainingError


def _path(text: str) -> Path:
    """A path argument; an empty one (`--out "$DIR"` with DIR unset) is refused, not taken for here."""
    if not text:
        raise argparse.ArgumentTypeError("it is empty (an unset shell variable?)")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m colorize_cli.train", description=train_command.__doc__)
    p.add_argument("--data", type=_path, nargs="+", action="extend", default=[],
                   help="folders of images and/or .tar shards (a resumed run reads its own)")
    signature = inspect.signature(train_command)
    for name, param in signature.parameters.items():
        if name in ("data", "show_progress", "given"):
            continue
        flag = "--" + name.replace("_", "-")
        default = param.default
        annotation = str(param.annotation)
        if annotation == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float,
                "Path | None": _path}.get(annotation, str)
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--no-progress", action="store_true", help="no Rich progress bar")
    return p


def typed_options(argv: list[str]) -> set[str]:
    """The option names on the command line (`--val-every 5`, `--no-compile` -> val_every, compile),
    so that a resumed run keeps its saved values for the others, as `colorize train` does."""
    names = {arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    return {name[3:] if name.startswith("no_") and name != "no_progress" else name for name in names}


def main(argv: list[str] | None = None) -> int:
    from ..errors import ExitCode, exit_code_for, is_expected

    argv = sys.argv[1:] if argv is None else argv
    args = vars(_parser().parse_args(argv))
    show = not args.pop("no_progress")
    # `kill`, and torchrun passing on its own stop to each rank, stop a run as Ctrl-C does (as in
    # `colorize train`): by default SIGTERM ended the process at once, without a word, and its
    # loader processes lingered.
    before = signal.signal(signal.SIGTERM, interrupt_on_signal)
    try:
        train_command(show_progress=show, given=typed_options(argv), **args)
    except KeyboardInterrupt as e:
        print(f"Error: {interrupted_advice(getattr(e, 'out', args.get('out')))}", file=sys.stderr)
        return 130
    except Exception as e:
        if not (isinstance(e, TrainingError) or is_expected(e)):
            raise
        print(f"Error: {error_message(e)}", file=sys.stderr)
        code = exit_code_for(e)  # MISSING_EXTRA for a missing package; any other TrainingError is USAGE
        return int(code if code != ExitCode.FAILURE else ExitCode.USAGE)
    finally:
        signal.signal(signal.SIGTERM, before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
