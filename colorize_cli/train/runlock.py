"""One training process per run folder.

Two processes on one folder (a `--resume` typed twice, two runs started in the same second
without `--out`) would overwrite each other's checkpoints, and the second would take the first's
young log for an aborted run's and delete it. The first process holds an advisory lock on
`RUN/.lock` for its whole run; the operating system lets it go when the process ends, however
it ends, so a lock is never left stale. (Loader processes forked from it share the lock: after a
`kill -9` of the run alone it goes when they notice and exit, a few seconds later.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .data import TrainingError

try:
    import fcntl
except ImportError:  # Windows: runs there are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_folder_lock(folder: Path) -> Iterator[None]:
    """Hold the run folder `folder` (which exists) for this process, or raise TrainingError naming
    the process that holds it."""
    if fcntl is None:
        yield
        return
    fd = _open_lock_file(folder / LOCK_NAME)
    if fd is None:  # none, in a folder this process cannot write: its first write will say so
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            raise TrainingError(f"{folder} is in use by another training run"
                                + (f" (process {holder})" if holder.isdecimal() else "")
                                + "; wait for it to end, or choose another --out") from None
        except OSError:  # a file system without locks (some network shares): run unlocked, as before
            pass
        else:  # who holds it, for the message above
            with contextlib.suppress(OSError):  # (not through a read-only descriptor)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # (which lets the lock go)


def _open_lock_file(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # another user's lock file in a shared folder: a read-only descriptor locks as well
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None
