"""Names for the temporary files that make writes atomic (write beside, then rename).

One rule for every writer (images, weights, checkpoints, bench files): a hidden name in the same
folder, so the rename stays on one filesystem, and never longer than the disk allows, so the
longest legal output name (255 bytes) is still writable.
"""

from __future__ import annotations

import secrets
from pathlib import Path

# The temporary name adds a dot, a dot and 12 hex digits, and ".tmp" (18 bytes): keeping at most
# this many bytes of the target's name stays under 255.
_KEPT_NAME_BYTES = 200


def temp_path_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name next to `path`: `.NAME.<random>.tmp` (NAME cut to fit the disk)."""
    stem = path.name.encode("utf-8", "surrogateescape")[:_KEPT_NAME_BYTES].decode("utf-8", "ignore")
    return path.with_name(f".{stem}.{secrets.token_hex(6)}{suffix}")
