"""PNG encoder for colorize's outputs: 8- or 16-bit RGB(A), deflated on every core.

Pillow's encoder runs on one core and tries all five row filters; on photos the Up filter
alone compresses as well (docs/benchmarks.md: 105.0 against 105.1 MB for a 100-MP scan) and
costs one subtraction per byte. The deflate stream is cut into segments that are compressed
in parallel, as pigz does: each segment is primed with the 32 KiB of data before it (so
little compression is lost at the cuts) and ends on a byte boundary with a sync flush, so
their concatenation is one valid zlib stream. zlib releases the GIL while it compresses, so
threads suffice. The bytes written do not depend on the number of threads.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Raw bytes per deflate segment: large enough that restarting the compressor costs nothing
# measurable, small enough that a 1-MP photo still splits over a few cores.
SEGMENT_BYTES = 1 << 20
_WINDOW = 32768  # deflate's history: what primes the next segment
_UP = 2  # PNG filter type: each byte minus the byte above it


def write_png(handle: io.BufferedWriter | io.BytesIO, pixels: np.ndarray, alpha: np.ndarray | None = None,
              chunks: Iterable[tuple[bytes, bytes]] = (), *, level: int = 3, threads: int | None = None) -> None:
    """Write (H, W, 3) uint8/uint16 `pixels` (plus an (H, W) `alpha` of the same dtype) as a PNG.

    `chunks`: (type, data) ancillary chunks that go before the image data (pHYs, eXIf, text).
    `level`: zlib level. `threads`: compressing threads (default: the CPUs this process may use).
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be (H, W, 3) uint8 or uint16, got {pixels.shape} {pixels.dtype}")
    if alpha is not None and (alpha.shape != pixels.shape[:2] or alpha.dtype != pixels.dtype):
        raise ValueError(f"alpha must be {pixels.shape[:2]} {pixels.dtype}, got {alpha.shape} {alpha.dtype}")
    height, width, _ = pixels.shape
    depth = 8 * pixels.dtype.itemsize
    handle.write(SIGNATURE)
    write_chunk(handle, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 2 if alpha is None else 6, 0, 0, 0))
    for kind, data in chunks:
        write_chunk(handle, kind, data)

    rows = max(1, SEGMENT_BYTES // _row_bytes(pixels, alpha))
    starts = list(range(0, height, rows))
    jobs = [(pixels, alpha, y, min(height, y + rows), level, y + rows >= height) for y in starts]
    checksum = 1  # adler32 of nothing
    header = _zlib_header(level)
    for data, adler, length in _in_order(_compress_segment, jobs, _threads(threads, len(jobs))):
        checksum = adler32_combine(checksum, adler, length)
        write_chunk(handle, b"IDAT", header + data)
        header = b""
    write_chunk(handle, b"IDAT", struct.pack(">I", checksum))
    write_chunk(handle, b"IEND", b"")


def write_chunk(handle: io.BufferedWriter | io.BytesIO, kind: bytes, data: bytes) -> None:
    handle.write(struct.pack(">I", len(data)) + kind)
    handle.write(data)
    handle.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _threads(threads: int | None, jobs: int) -> int:
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            threads = os.cpu_count() or 1
    return max(1, min(threads, jobs))


def _in_order(work, jobs: list[tuple], threads: int):
    """work(*job) for every job, yielded in order; at most 2 x threads results held at a time."""
    if threads == 1:
        for job in jobs:
            yield work(*job)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png") as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(work, *job))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _compress_segment(pixels: np.ndarray, alpha: np.ndarray | None, y0: int, y1: int, level: int,
                      last: bool) -> tuple[bytes, int, int]:
    """Rows y0..y1-1 filtered and deflated: (raw deflate data, adler32 of the filtered bytes, their length)."""
    primer = min(y0, -(-_WINDOW // _row_bytes(pixels, alpha)))  # rows before y0 that hold the last 32 KiB
    filtered = _filtered_rows(pixels, alpha, y0 - primer, y1)
    history, data = filtered[:primer].reshape(-1)[-_WINDOW:], filtered[primer:]
    compressor = (zlib.compressobj(level, zlib.DEFLATED, -15, zdict=history.tobytes()) if history.size
                  else zlib.compressobj(level, zlib.DEFLATED, -15))
    raw = data.tobytes()
    out = compressor.compress(raw) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return out, zlib.adler32(raw), len(raw)


def _row_bytes(pixels: np.ndarray, alpha: np.ndarray | None) -> int:
    """Bytes of one scanline: the filter-type byte, then the samples."""
    return 1 + pixels.shape[1] * (3 if alpha is None else 4) * pixels.dtype.itemsize


def _filtered_rows(pixels: np.ndarray, alpha: np.ndarray | None, y0: int, y1: int) -> np.ndarray:
    """Rows y0..y1-1 as PNG scanlines with the Up filter: (rows, 1 + bytes per row) uint8."""
    def raw(a: int, b: int) -> np.ndarray:
        block = pixels[a:b] if alpha is None else np.concatenate([pixels[a:b], alpha[a:b, :, None]], axis=2)
        if block.dtype == np.uint16:
            block = block.astype(">u2")  # PNG samples are big-endian
        return block.reshape(b - a, -1).view(np.uint8)

    rows = raw(max(0, y0 - 1), y1)  # with the row above, which the first row is filtered against
    current = rows[1:] if y0 > 0 else rows
    above = rows[:-1] if y0 > 0 else np.concatenate([np.zeros_like(rows[:1]), rows[:-1]])
    lines = np.empty((y1 - y0, current.shape[1] + 1), np.uint8)
    lines[:, 0] = _UP
    np.subtract(current, above, out=lines[:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
    return lines


def _zlib_header(level: int) -> bytes:
    """The two bytes that open a zlib stream with a 32 KiB window (RFC 1950)."""
    cmf = 0x78
    flg = (0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3) << 6
    flg += 31 - (cmf * 256 + flg) % 31
    return bytes([cmf, flg])


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """adler32 of A + B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    base = 65521
    rem = second_length % base
    low = ((first & 0xFFFF) + (second & 0xFFFF) - 1) % base
    high = (rem * (first & 0xFFFF) + (first >> 16) + (second >> 16) - rem) % base
    return (high << 16) | low
