"""Paths as the disk sees them."""

from __future__ import annotations

import os
from pathlib import Path


def real_path(path: str | os.PathLike) -> Path:
    """`path` absolute, with its symbolic links followed, as `Path.resolve()`: but a symlink loop
    (a.png -> b.png -> a.png) is left where it starts instead of raising RuntimeError, which
    Python before 3.13 does. Opening it then fails as any unreadable file does."""
    return Path(os.path.realpath(path))
