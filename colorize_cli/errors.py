"""Exit codes, and the mapping from expected failures to them.

Kept free of torch so that `colorize --help` stays instant.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1        # an unexpected error (a bug): traceback with --debug
    USAGE = 2          # bad options or arguments (Click's own code)
    BAD_INPUT = 3      # an input image is missing, corrupt, unsupported or too large
    WEIGHTS = 4        # model weights missing, unsafe, corrupt or of the wrong architecture
    OUTPUT = 5         # an output exists (no --overwrite), would overwrite an input, or cannot be written
    PARTIAL = 6        # a batch finished, but some files failed
    MISSING_EXTRA = 7  # an optional package (bench metrics, training encoder) is not installed
    INTERRUPTED = 130  # Ctrl-C


class UsageError(ValueError):
    """A combination of options that cannot work (reported with exit code USAGE).

    A ValueError, so that Python callers (`colorize_cli.api`) catch every bad setting as one."""


# What only a write can run into: the disk full, a quota, a read-only disk, a file too large for it.
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code for an expected error; FAILURE for anything else."""
    from .imageio import ImageError, OutputError, OutputExistsError, SameFileError, UnsupportedFormatError
    from .weights import WeightsError

    # bench.backbones and train.data; checked by name to stay torch-free
    if type(error).__name__ in ("MissingExtraError", "MissingTrainingExtraError"):
        return ExitCode.MISSING_EXTRA
    if type(error).__name__ == "TrainingDataError":  # train.data: --data missing, unreadable or without images
        return ExitCode.BAD_INPUT
    if type(error).__name__ == "UnknownModelError":  # a misspelt --model: an option is wrong, not weights
        return ExitCode.USAGE
    if isinstance(error, UnsupportedFormatError):  # an output extension: an option, not the input, is wrong
        return ExitCode.USAGE
    if isinstance(error, ImageError) or isinstance(error, FileNotFoundError):
        return ExitCode.BAD_INPUT
    if isinstance(error, (OutputError, OutputExistsError, SameFileError, PermissionError, IsADirectoryError,
                          FileExistsError, NotADirectoryError)):
        return ExitCode.OUTPUT
    if isinstance(error, WeightsError):
        return ExitCode.WEIGHTS
    if isinstance(error, (UsageError, ValueError)):
        return ExitCode.USAGE
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:  # a name given on the command line
        return ExitCode.USAGE
    if isinstance(error, OSError) and error.errno in _CANNOT_WRITE:
        return ExitCode.OUTPUT
    return ExitCode.FAILURE


def error_message(error: BaseException) -> str:
    """`error` as one line. An error raised in a data-loader process reaches the caller as
    "Caught X in DataLoader worker process N." plus the worker's traceback: its last line
    ("module.X: the message") holds what the user needs; otherwise the first line does."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        names = [str(n) for n in (error.filename, error.filename2) if n is not None]
        if error.errno == errno.ENAMETOOLONG:  # a name too long for the disk is too long for the message too
            names = [f"{n[:40]}…{n[-20:]}" if len(n) > 80 else n for n in names]
        return f"{' -> '.join(names)}: {error.strerror}"
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(error).__name__


def is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, torch's OutOfMemoryError (CUDA, MPS), or the CPU allocator's refusal,
    which torch raises as a plain RuntimeError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def is_expected(error: BaseException) -> bool:
    return exit_code_for(error) != ExitCode.FAILURE


def interrupt_on_signal(signum, frame) -> None:
    """A signal handler: `kill` (SIGTERM) stops a command as Ctrl-C does, through KeyboardInterrupt
    (temporary files removed, finished outputs and checkpoints kept)."""
    raise KeyboardInterrupt
