"""Training data: image folders and tar shards, streamed, filtered, augmented, sharded.

Sources are indexed once (a folder walk; a tar's member headers), so every image has a stable
index and a name. Tar members are read straight from their byte offset into memory and decoded
with PIL: nothing is ever extracted to disk, and members whose names would leave the archive
(absolute paths, `..`), links and special files are skipped when the index is built.

The held-out split is a hash of each image's key — its name relative to the `--data` argument
(`shard.tar::member`, `folder/sub/photo.jpg`) — so it never changes with the order of `--data`,
the number of shards, or where the data lies on a machine: a GPU run and a CPU run over the same
shards hold out the same images, and visit them in the same order. Training order: one permutation of the training images
per epoch (seeded from the run seed and the epoch), cut into `world_size * workers` interleaved
shards; each DataLoader worker turns its shard into whole batches of uint8 RGB crops. Each
batch carries the worker's position in its stream, so a run can resume exactly where it stopped.

Near-grey images are dropped: Hasler–Süsstrunk colourfulness (M3, signed form, 0–255 sRGB)
below `min_colourfulness` (8 by default, the filter our shipped data already passed).
Colour conversion to Lab happens later, batched, on the training device.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import signal
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps

from ..imageio import IMAGE_EXTENSIONS, in_marked_folder, readable_formats
from ..paths import real_path
from torch.utils.data import IterableDataset, get_worker_info

RUN_CHECKPOINT = "checkpoint.safetensors"  # a run folder holds one (checkpoint.FILENAME)
IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # one list of readable image files for the whole tool
TAR_SUFFIXES = (".tar",)
MIN_COLOURFULNESS = 8.0
# Which rule chose the held-out images: 2 = by key (the name relative to --data), since
# 2026-11-26; checkpoints without it used the path as given. A resume across rules says so.
SPLIT_VERSION = 2
CROP_SCALE = (0.5, 1.0)      # random resized crop: fraction of the image area kept
CROP_RATIO = (3 / 4, 4 / 3)  # and aspect-ratio range
# An image decoded from an archive bigger than this many pixels is refused (decompression bombs).
MAX_PIXELS = 64_000_000
# ... and files larger than its pixels uncompressed at 16 bits a channel, with room for a header.
MAX_FILE_BYTES = MAX_PIXELS * 6 + (16 << 20)


class TrainingError(Exception):
    """An error the user can cause (bad --data, no images, bad options); printed as one line."""


class TrainingDataError(TrainingError):
    """--data cannot be used: a path missing or unreadable, a shard corrupt, no (colour) images:
    exit code BAD_INPUT, as for a photo colorize cannot read."""


class MissingTrainingExtraError(TrainingError):
    """An optional package a run needs (the pretrained encoder, the VGG16 of the perceptual loss)
    is not installed: exit code MISSING_EXTRA, as for bench metrics."""


@dataclass(frozen=True)
class ImageRef:
    """One image: a file (tar_index = -1) or a tar member read from `offset`, `size` bytes."""

    name: str           # where it is: the file path, or "<tar path>::<member name>"
    path: str
    tar_offset: int = -1
    tar_size: int = 0
    key: str = ""       # what it is, the same on every machine: "<tar file name>::<member>", "<folder name>/<relative path>"

    def read_bytes(self) -> bytes:
        """Its bytes; none (so: dropped, as no image) when it is larger than any image a run
        takes could be, so a stray disk image or video named .tif is never read into memory."""
        with open(self.path, "rb") as f:
            if self.tar_offset < 0:
                if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
                    return b""
                return f.read()
            if self.tar_size > MAX_FILE_BYTES:
                return b""
            f.seek(self.tar_offset)
            return f.read(self.tar_size)


def safe_member_name(name: str) -> bool:
    """True when a tar member's name stays inside the archive (no absolute path, no `..`)."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in PurePosixPath(name).parts[0]:
        return False
    return ".." not in PurePosixPath(name).parts


def index_tar(path: Path) -> tuple[list[ImageRef], int]:
    """(image members of a tar, number of members refused). Reads headers only, extracts nothing."""
    refs, refused = [], 0
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isreg() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                    refused += not member.isdir()
                    continue
                if member.issparse():  # its stored bytes are not the file: reading them would give garbage
                    refused += 1
                    continue
                if not safe_member_name(member.name):
                    refused += 1
                    continue
                refs.append(ImageRef(f"{path}::{member.name}", str(path), member.offset_data, member.size,
                                     key=f"{path.name}::{member.name}"))
    except (tarfile.TarError, OSError) as e:
        raise TrainingDataError(f"cannot read tar shard {path}: {_compressed(path) or e}") from e
    return refs, refused


# Archives a shard cannot be: images are read in place, by offset, from a plain tar.
COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".zip")
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}


def _compressed(path: Path) -> str | None:
    """Why a shard that is a compressed archive cannot be read, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    kind = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)
    return None if kind is None else (f"it is {kind}-compressed, and shards are read in place: decompress it to a "
                                      "plain .tar")


def index_sources(paths: list[str | os.PathLike[str]], exclude: list[str | os.PathLike[str]] = (),
                  unreadable: list[Path] | None = None,
                  compressed: list[Path] | None = None) -> tuple[list[ImageRef], int]:
    """All images under `paths` (folders, searched recursively, image files, tar shards), sorted by
    name, and the number of tar members refused as unsafe or not images. Subfolders that cannot be
    read (a disk's lost+found, a locked folder) are appended to `unreadable`, or are an error
    without it; compressed archives in --data folders, which cannot be read in place, are appended
    to `compressed` (when no image is found at all they are named in the error instead)."""
    if not paths:
        raise TrainingError("no --data given: pass folders of images or .tar shards")
    refs: list[ImageRef] = []
    refused = 0
    archives: list[Path] = []  # compressed archives in --data folders: not readable, worth a word if nothing else is
    real: dict[str, str] = {}  # each file's real path, resolved once (a shard holds thousands of images)
    # The run's own folder (its sample grids) is never training data, even inside a --data folder,
    # nor is any other run's folder there (one holding a checkpoint).
    skipped = [real_path(e) for e in exclude]
    run_folders: dict[Path, bool] = {}
    for raw in paths:
        path = Path(raw)
        try:
            exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
        except OSError as e:  # e.g. a name longer than the file system allows
            raise TrainingDataError(f"--data {path} cannot be read: {e.strerror or e}") from None
        if not exists:
            if path.is_symlink():
                raise TrainingDataError(f"--data {path} is a link that leads nowhere (or back to itself)")
            raise TrainingDataError(f"--data path does not exist: {path}")
        if not is_dir and not is_file:  # a pipe or device would block the reader
            raise TrainingDataError(f"--data {path} is neither a folder nor a regular file")
        inside = next((e for e in skipped if real_path(path).is_relative_to(e)), None)
        if inside is not None:  # every file of it would be left out, in silence where other data remains
            raise TrainingError(f"--data {path} is inside the run folder --out ({inside}), whose files are never "
                                "training data (they hold its sample grids): choose an --out outside it")
        files = _files_under(path, unreadable) if path.is_dir() else [path]
        for f in files:  # each file resolved once: for the run folder test here, for duplicates below
            real.setdefault(str(f), str(real_path(f)))
        files = [f for f in files if not any(Path(real[str(f)]).is_relative_to(e) for e in skipped)
                 and not (path.is_dir() and in_marked_folder(f, path, RUN_CHECKPOINT, run_folders))]
        folder = Path(os.path.abspath(path)).name  # the argument's own name, not a link target's
        for file in files:
            if file.name.lower().endswith(TAR_SUFFIXES):
                found, bad = index_tar(file)
                refs += found
                refused += bad
            elif file.suffix.lower() in IMAGE_SUFFIXES:
                key = (Path(folder) / file.relative_to(path)).as_posix() if path.is_dir() else file.name
                refs.append(ImageRef(str(file), str(file), key=key))
            elif not path.is_dir():
                hint = (" (a compressed archive: decompress it to a plain .tar, as shards are read in place)"
                        if file.name.lower().endswith(COMPRESSED_SUFFIXES) else "")
                raise TrainingDataError(f"--data file is neither an image nor a .tar shard: {file}{hint}")
            elif file.name.lower().endswith(COMPRESSED_SUFFIXES):
                archives.append(file)
    # One entry per image even when two --data arguments reach it; ordered by key (then name,
    # for two shards of one file name) so the order does not depend on where the data lies.
    unique: dict[str, ImageRef] = {}
    for ref in refs:  # reached twice (a folder and a file in it, a link): the folder-relative key, whatever the order
        if ref.path not in real:
            real[ref.path] = str(real_path(Path(ref.path)))
        identity = real[ref.path] + ref.name[len(ref.path):]  # (+ "::member" in a shard)
        if identity not in unique or len(ref.key) > len(unique[identity].key):
            unique[identity] = ref
    refs = sorted(unique.values(), key=lambda r: (r.key, r.name))
    if not refs:
        why = f" ({refused} archive member(s) refused: unsafe names or links, or not images)" if refused else ""
        if unreadable:
            why += f" ({len(unreadable)} folder(s) could not be read, e.g. {unreadable[0]})"
        if archives:
            why += (f" ({len(archives)} compressed archive(s), e.g. {archives[0].name}: decompress them to plain "
                    ".tar shards, which are read in place)")
        raise TrainingDataError(f"no images found in --data {', '.join(map(str, paths))}{why}")
    if compressed is not None:
        compressed += archives
    return refs, refused


def _files_under(folder: Path, unreadable: list[Path] | None) -> list[Path]:
    """Every file under `folder`, sorted, through links to folders too (each real folder once, so a
    link back up is no loop). A folder that cannot be read goes into `unreadable` (the run says
    so) or, without that list, is an error: never silently fewer images."""
    def cannot_read(error: OSError) -> None:
        if unreadable is None or Path(error.filename) == folder:
            raise TrainingDataError(f"cannot read {error.filename} under --data {folder}: {error.strerror or error}")
        unreadable.append(Path(error.filename))

    files, walked = [], set()
    for here, subfolders, names in os.walk(folder, onerror=cannot_read, followlinks=True):
        real = real_path(Path(here))
        if real in walked:
            subfolders[:] = []
            continue
        walked.add(real)
        files += [Path(here) / name for name in names if (Path(here) / name).is_file()]
    return sorted(files)


def is_held_out(key: str, fraction: float) -> bool:
    """Deterministic held-out split by a hash of the image's key."""
    # surrogateescape: a name that is not UTF-8 (tarfile and pathlib keep its bytes as surrogates)
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogateescape")).digest()[:8], "big")
    return h / 2**64 < fraction


def split(refs: list[ImageRef], val_fraction: float) -> tuple[list[ImageRef], list[ImageRef]]:
    train = [r for r in refs if not is_held_out(r.key, val_fraction)]
    val = [r for r in refs if is_held_out(r.key, val_fraction)]
    return train, val


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler–Süsstrunk M3, signed form, of an (H, W, 3) uint8 sRGB image."""
    x = rgb.astype(np.float32)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(math.sqrt(rg.var() + yb.var()) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def _read_or_none(ref: ImageRef) -> bytes:
    """The image's bytes; none (so: not an image, dropped) when the disk refuses to give them."""
    try:
        return ref.read_bytes()
    except OSError:
        return b""


def decode(data: bytes, draft_size: int | None = None) -> Image.Image | None:
    """Bytes -> upright RGB PIL image, or None when they are not a readable image."""
    try:
        with warnings.catch_warnings():  # (a huge header's DecompressionBombWarning: refused below)
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=readable_formats(data))
            if img.width * img.height > MAX_PIXELS:
                return None
            if draft_size and img.format == "JPEG":
                # JPEG DCT scaling: decode big photos at >= 2x the crop size, much faster.
                img.draft("RGB", (2 * draft_size, 2 * draft_size))
            # Upright, as colouring sees photos (a phone's portrait shot is stored sideways).
            return ImageOps.exif_transpose(img).convert("RGB")
    except Exception:  # noqa: BLE001 - any decoder's failure (some raise NotImplementedError) drops the image
        return None


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """torchvision-style random resized crop + horizontal flip -> (size, size, 3) uint8."""
    w, h = img.size
    area = w * h
    box = (0, 0, w, h)
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (x, y, x + cw, y + ch)
            break
    else:  # central square crop
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    out = img.resize((size, size), Image.BICUBIC, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.array(out, dtype=np.uint8)


def center_crop(img: Image.Image, size: int) -> np.ndarray:
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.array(img.resize((size, size), Image.BICUBIC, box=box), dtype=np.uint8)


def load_validation(refs: list[ImageRef], size: int, count: int,
                    min_colourfulness: float = MIN_COLOURFULNESS) -> torch.Tensor:
    """Up to `count` centre-cropped colourful images from `refs`: (N, 3, size, size) uint8."""
    images = []
    for ref in refs:
        if len(images) >= count:
            break
        img = decode(_read_or_none(ref), size)
        if img is None:
            continue
        arr = center_crop(img, size)
        if colourfulness(arr) >= min_colourfulness:
            images.append(torch.from_numpy(arr).permute(2, 0, 1))
    if not images:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.stack(images)


@dataclass(frozen=True)
class StreamPosition:
    """Where one shard's stream stands: the next image is item `pos` of its slice of epoch `epoch`."""

    epoch: int = 0
    pos: int = 0


class TrainStream(IterableDataset):
    """An endless stream of (uint8 RGB batch (B, 3, S, S), position (3,) int64 [shard, epoch, pos]).

    Shards: `world_size * workers`; rank r's worker w owns shard `r * workers + (w + offset) % workers`.
    The DataLoader takes batches from its workers in turn, starting with worker 0, so a stream
    resumed after `k` batches passes `offset = k % workers` to keep the shards' turns unchanged.
    Used with a DataLoader with `batch_size=None` (batches are built here, always full: fixed shapes).
    """

    def __init__(self, refs: list[ImageRef], size: int, batch_size: int, seed: int, *, rank: int = 0,
                 world_size: int = 1, workers: int = 0, start: dict[int, StreamPosition] | None = None,
                 min_colourfulness: float = MIN_COLOURFULNESS, offset: int = 0):
        super().__init__()
        if not refs:
            raise TrainingError("no training images left after the held-out split")
        self.refs, self.size, self.batch_size, self.seed = refs, size, batch_size, seed
        self.rank, self.world_size, self.workers = rank, world_size, max(workers, 1)
        self.start = dict(start or {})
        self.min_colourfulness = min_colourfulness
        self.offset = offset % self.workers

    def shard_of(self, worker: int) -> int:
        return self.rank * self.workers + (worker + self.offset) % self.workers

    def epoch_slice(self, shard: int, epoch: int) -> np.ndarray:
        perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, 0x5EED]))).permutation(len(self.refs))
        return perm[shard::self.world_size * self.workers]

    def load(self, index: int, epoch: int) -> np.ndarray | None:
        """Image `index` cropped for `epoch`, or None when unreadable or near-grey."""
        img = decode(_read_or_none(self.refs[index]), self.size)
        if img is None:
            return None
        # The crop depends only on (seed, epoch, image): resuming reproduces it without saved state.
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, int(index), 0xC809])))
        small = img if max(img.size) <= 256 else img.resize((max(1, img.width // 4), max(1, img.height // 4)))
        if colourfulness(np.asarray(small)) < self.min_colourfulness:
            return None
        return random_resized_crop(img, self.size, rng)

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        shard = self.shard_of(worker)
        position = self.start.get(shard, StreamPosition())
        epoch, pos = position.epoch, position.pos
        batch: list[np.ndarray] = []
        empty_epochs = 0
        while True:
            order = self.epoch_slice(shard, epoch)
            kept = 0
            while pos < len(order):
                arr = self.load(order[pos], epoch)
                pos += 1
                if arr is None:
                    continue
                kept += 1
                batch.append(arr)
                if len(batch) == self.batch_size:
                    images = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
                    yield images, torch.tensor([shard, epoch, pos], dtype=torch.int64)
                    batch = []
            empty_epochs = 0 if kept else empty_epochs + 1
            if empty_epochs >= 2:
                why = f"unreadable or near-grey (colourfulness < {self.min_colourfulness})"
                if self.workers * self.world_size == 1:
                    raise TrainingDataError(f"all {len(order)} training images were {why}: add colour photos")
                # (this process sees only its share: whether the others have colour it cannot tell)
                raise TrainingDataError(f"all {len(order)} training images of one loader process's share were "
                                        f"{why}: add colour photos (where only a few are colour, --workers 0 "
                                        "lets one process see them all)")
            epoch, pos = epoch + 1, 0


def _ignore_stop_signals(worker: int) -> None:
    # `timeout` or a scheduler sends SIGTERM, and Ctrl-C sends SIGINT, to the whole process group:
    # the main process stops cleanly (checkpoint kept) and ends its loader processes itself. Taken
    # by a loader process, a stop signal ends it early (a second Ctrl-C lands outside torch's
    # handler, as a traceback) and the run fails as "DataLoader worker exited unexpectedly".
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(stream: TrainStream, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    kwargs = dict(num_workers=workers, batch_size=None, pin_memory=pin_memory)
    if workers > 0:
        kwargs.update(prefetch_factor=4, persistent_workers=False, worker_init_fn=_ignore_stop_signals)
    return torch.utils.data.DataLoader(stream, **kwargs)
