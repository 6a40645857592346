"""Names for the temporary files that make writes atomic (write beside, then rename).

One rule for every writer (images, weights, checkpoints, bench files): a hidden name in the same
folder, so the rename stays on one filesystem, and never longer than the disk allows, so the
longest legal output name (255 bytes) is still writable.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

# The temporary name adds a dot, a dot and 12 hex digits, and ".tmp" (18 bytes): keeping at most
# this many bytes of the target's name stays under 255.
_KEPT_NAME_BYTES = 200


def temp_path_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name next to `path`: `.NAME.<random>.tmp` (NAME cut to fit the disk)."""
    return path.with_name(f".{_kept_stem(path)}.{secrets.token_hex(6)}{suffix}")


def _kept_stem(path: Path) -> str:
    return path.name.encode("utf-8", "surrogateescape")[:_KEPT_NAME_BYTES].decode("utf-8", "ignore")


# A process killed mid-write (kill -9, power loss) leaves its temporary file behind; this old, no
# writer can still be filling it (a write that slow would have updated its time).
STALE_AFTER_S = 3600.0
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{12}\.tmp$", re.DOTALL)


def remove_stale_temps(targets: Iterable[Path], older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporary files that interrupted writes of `targets` left beside them (only
    names `temp_path_beside` makes for those very targets, untouched for `older_than_s`); return
    what was removed. One listing per folder, whatever the number of targets."""
    wanted: dict[Path, set[str]] = defaultdict(set)
    for target in targets:
        wanted[target.parent].add(_kept_stem(target))
    cutoff = time.time() - older_than_s
    removed = []
    for folder, stems in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # not made yet, or unreadable: nothing of ours there
        for entry in entries:
            match = _TEMP_NAME.match(entry.name)
            if match is None or match["stem"] not in stems:
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue  # gone already, or not ours to remove
    return removed
