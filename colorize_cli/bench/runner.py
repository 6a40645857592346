"""The bench runner: colour a folder of ground-truth photos with several models and settings,
score them with the protocol of ``shared/data/README.md``, and time them.

Protocol: for each ground-truth image (8-bit sRGB) the input is its CIE L* shown as neutral grey
sRGB (a* = b* = 0); each model colours it at the working size; the output is scored at the
ground truth's size. Per-image metrics are averaged; ΔCF, LPIPS, DISTS, FID and KID are per set.

Speed: every image is coloured in its own ``colorize_pixels`` call (batch size 1), after one
untimed warm-up call per setting; latency is that call's wall time. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA, and on CPU the rise of the process's peak resident
set over its size at the start of the setting (Linux ``VmHWM`` after resetting it, else
``getrusage`` ``ru_maxrss``), after handing memory freed by earlier settings back to the system
(glibc ``malloc_trim``): else a setting that reuses it reads as needing none.

Outputs are cached as PNG per (model, weights hash, sampler, steps, size, seed, image), so a rerun
with one more metric re-scores without re-colouring. Engines are duck-typed: anything with the
``colorize_cli.pipeline.Engine`` attributes and ``colorize_pixels`` works (see the baselines below).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import glob
import hashlib
import inspect
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from colorize_cli.bench import metrics as M
from colorize_cli.bench.backbones import MissingExtraError
from colorize_cli.color import grey_to_rgb, has_colour, lab_to_rgb, rgb_to_luminance
from colorize_cli.errors import UsageError
from colorize_cli.imageio import (IMAGE_EXTENSIONS, ImageError, OutputError, has_no_extension, in_marked_folder,
                                  load_image, opens_as_image, readable_formats, save_image, to_uint8, upright_size)

from ..atomic import remove_stale_temps, temp_path_beside
from ..paths import real_path

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # one list of readable image files for the whole tool

PIXEL_METRICS = ("psnr", "ssim", "deltae", "cf")
# Below this many images, FID and KID are reported with a note that they mean little.
FEW_FOR_FID = 100
NETWORK_METRICS = ("lpips", "lpips-vgg", "dists", "fid", "kid")
ALL_METRICS = PIXEL_METRICS + NETWORK_METRICS
DEFAULT_METRICS = ("psnr", "ssim", "deltae", "cf", "lpips", "fid", "kid")
METRIC_ALIASES = {
    "lpips-alex": "lpips",
    "ciede2000": "deltae",
    "de": "deltae",
    "delta-e": "deltae",
    "colourfulness": "cf",
    "colorfulness": "cf",
}

# Images per forward pass of the metric networks.
METRIC_BATCH = 32
# Images shown in the contact sheet.
SAMPLE_COUNT = 8

# progress(stage, done, total)
ProgressFn = Callable[[str, int, int], None]


# --- settings --------------------------------------------------------------------------------


def parse_metrics(text: str | Iterable[str] | None) -> list[str]:
    """"lpips,deltae,fid" -> canonical metric names, in the order of ``ALL_METRICS``."""
    if text is None:
        return list(DEFAULT_METRICS)
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = set()
    for item in (part.strip().lower() for part in items):
        if not item:
            continue
        if item == "all":
            chosen.update(ALL_METRICS)
            continue
        name = METRIC_ALIASES.get(item, item)
        if name not in ALL_METRICS:
            raise ValueError(f"unknown metric {item!r}; choose from {', '.join(ALL_METRICS)} (or 'all')")
        chosen.add(name)
    if not chosen:
        raise ValueError("no metric given")
    return [name for name in ALL_METRICS if name in chosen]


def parse_saturations(text: str | None) -> list[float]:
    """"1,1.5,2" -> [1.0, 1.5, 2.0], each in the range the engine takes (checked here, before any
    model loads, and also when only the baselines run, which take no strength at all)."""
    from colorize_cli.pipeline import MAX_SATURATION

    values: list[float] = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"bad --saturation {part!r}: expected numbers like 1,1.5,2") from None
        if not 0.0 <= value <= MAX_SATURATION:
            raise ValueError(f"bad --saturation {part!r}: each must be between 0 and {MAX_SATURATION:g}")
        values.append(value)
    if text is not None and text.strip() and not values:  # `--saturation ,`: not "the default" by accident
        raise ValueError(f"--saturation {text!r} names no strength; e.g. --saturation 1,1.5,2")
    return list(dict.fromkeys(values))  # each strength once: a repeated one would be a second, identical row


def parse_samplers(text: str | None) -> list[tuple[str, int | None]]:
    """"ddim:20,ddpm:250,oneshot" -> [("ddim", 20), ("ddpm", 250), ("oneshot", None)].

    A name that is no sampler at all (a typo) is refused; one that some models lack is skipped
    for them with a note (`expand_settings`)."""
    from colorize_cli.diffusion import SAMPLERS

    settings: list[tuple[str, int | None]] = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        name, _, steps = part.partition(":")
        if steps and not steps.isdecimal() or steps == "0":  # (isdigit takes '²', which int() refuses)
            raise ValueError(f"bad sampler setting {part!r}: expected NAME or NAME:STEPS with STEPS ≥ 1")
        name = name.strip().lower()
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r} in --samplers (samplers: {', '.join(SAMPLERS)})")
        settings.append((name, int(steps) if steps else None))
    return list(dict.fromkeys(settings))  # each setting once, as --saturation


@dataclass(frozen=True)
class RunSpec:
    """One model at one sampler and saturation setting (None: the model's default)."""

    engine: Any
    sampler: str | None = None
    steps: int | None = None
    saturation: float | None = None


def expand_settings(engines: Sequence[Any], samplers: Sequence[tuple[str, int | None]],
                    saturations: Sequence[float] = ()) -> tuple[list[RunSpec], list[str]]:
    """Every engine × every sampler setting it supports × every saturation, plus notes for the
    skipped sampler settings.

    Engines without samplers (baselines) run once whatever ``samplers`` says; so does an engine
    none of the asked samplers suits (a one-step model beside diffusion ones), at its own
    default, with a note. Samplers that suit no engine at all measure nothing: ValueError.
    """
    specs: list[RunSpec] = []
    notes: list[str] = []
    matched = False
    for engine in engines:
        supported = tuple(getattr(engine, "supported_samplers", ()) or ())
        settings: list[tuple[str | None, int | None]] = [(None, None)]
        if samplers and supported:
            suited = [s for s in samplers if s[0] in supported]
            matched = matched or bool(suited)
            if suited:
                settings = suited
                notes += [f"{engine.name}: sampler {name!r} skipped (supports {', '.join(supported)})"
                          for name, _ in samplers if name not in supported]
            else:
                notes.append(f"{engine.name}: none of the samplers asked for suits it (it supports "
                             f"{', '.join(supported)}); measured with its own default")
        specs += [RunSpec(engine, sampler, steps, saturation)
                  for sampler, steps in settings for saturation in (saturations or [None])]
    if samplers and not matched and any(getattr(e, "supported_samplers", ()) for e in engines):
        raise ValueError(f"no model here supports any of --samplers {','.join(n for n, _ in samplers)}")
    if saturations and not engines:
        notes.append("--saturation scales a model's colour; the baselines have none to scale, and no model is "
                     "asked for: it changes nothing here")
    return _distinct(specs), notes


def _distinct(specs: list[RunSpec]) -> list[RunSpec]:
    """Each setting once: `ddim` and `ddim:20` for a 20-step model, or a registry name and the path of
    its file, are one setting, which would be coloured twice for a second, identical row."""
    seen: set[tuple] = set()
    kept = []
    for spec in specs:
        engine = spec.engine
        path = getattr(engine, "weights_path", None)
        identity = (str(real_path(path)), engine.weights_sha256) if path is not None else (id(engine),)
        try:
            resolved = engine.resolve_settings(spec.sampler, spec.steps, None, spec.saturation)
        except (AttributeError, ValueError):  # a baseline, or a setting refused (with its message) when it runs
            resolved = (spec.sampler, spec.steps, spec.saturation)
        key = (identity, tuple(resolved))
        if key not in seen:
            seen.add(key)
            kept.append(spec)
    return kept


def with_baselines(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """``specs`` with the grey and colour-prior baselines in front (unless already present)."""
    kinds = {type(spec.engine) for spec in specs}
    baselines = [RunSpec(b) for b in (GreyBaseline(), ColourPriorBaseline()) if type(b) not in kinds]
    return baselines + list(specs)


# --- the protocol's input, and the baselines ------------------------------------------------


def grey_input(truth: np.ndarray) -> np.ndarray:
    """The protocol's input: the ground truth's L* as neutral grey sRGB, uint8 (H, W, 3)."""
    L = rgb_to_luminance(M.to_tensor(truth))
    return _to_uint8(grey_to_rgb(L))


def _to_uint8(rgb01: torch.Tensor) -> np.ndarray:
    return (rgb01[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _baseline_sha(description: str) -> str:
    # Stable "weights hash" so baseline outputs cache like a model's; bump the text to invalidate.
    return hashlib.sha256(description.encode()).hexdigest()


class _Baseline:
    """What the bench needs of an engine, for the baselines: no weights, no samplers, CPU."""

    params = 0
    device = torch.device("cpu")
    supported_samplers: tuple[str, ...] = ()
    default_sampler = None
    default_steps = None
    default_size = 256


class GreyBaseline(_Baseline):
    """"No colour": returns the grey input itself (L* with a* = b* = 0)."""

    name = "grey"
    architecture = "baseline: L* with a* = b* = 0"
    weights_sha256 = _baseline_sha("colorize grey baseline v1")

    def colorize_pixels(self, pixels, *, sampler=None, steps=None, size=None, seeds, progress=None):
        # The input already is the grey image; return it untouched (a second L* round trip
        # would also remove the ±1 rounding tints of the first).
        return [np.array(p, dtype=np.uint8) for p in pixels]


class ColourPriorBaseline(_Baseline):
    """A trivial colour prior: the mean a*, b* of photographs as a function of L* alone.

    The table is the mean a*, b* per L* (bins of 10) over the 10,000 photos of
    ``shared/data/train/tiny64-0.tar`` (Tiny ImageNet), interpolated linearly: a gentle warm tint,
    strongest in the mid-tones and fading to neutral at black and white. It ignores content, so it
    shows how much a model gains over "photos are slightly warm".
    """

    name = "prior"
    architecture = "baseline: mean a*b* per L* (Tiny ImageNet)"
    L_KNOTS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
    A_MEAN = (1.4, 3.6, 4.4, 5.0, 4.9, 3.8, 2.1, 0.8, -0.1, -1.3, -1.4)
    B_MEAN = (0.4, 3.8, 7.6, 10.1, 11.4, 12.4, 12.1, 11.1, 9.4, 7.4, 3.1)
    weights_sha256 = _baseline_sha(f"colorize colour prior v1 {A_MEAN} {B_MEAN}")

    def colorize_pixels(self, pixels, *, sampler=None, steps=None, size=None, seeds, progress=None):
        outputs = []
        for pixel in pixels:
            L = rgb_to_luminance(M.to_tensor(np.asarray(pixel, dtype=np.uint8)))
            flat = L.flatten().numpy()
            a = np.interp(flat, self.L_KNOTS, self.A_MEAN).reshape(L.shape)
            b = np.interp(flat, self.L_KNOTS, self.B_MEAN).reshape(L.shape)
            lab = torch.cat([L, torch.from_numpy(a).float(), torch.from_numpy(b).float()], dim=1)
            outputs.append(_to_uint8(lab_to_rgb(lab)))
        return outputs


# --- results ---------------------------------------------------------------------------------


@dataclass
class SpeedStats:
    working_size: int | None      # the --size the model coloured at (None: model default unknown)
    image_size: str               # "256x256" or "mixed (median WxH)"
    batch_size: int               # images per colorize_pixels call (always 1 for latency)
    timed_images: int             # images with a latency (0 when every output came from a cache made elsewhere)
    latency_median_s: float | None
    latency_p95_s: float | None
    images_per_s: float | None    # 1 / mean latency
    peak_memory_bytes: int | None
    memory_kind: str              # "cuda_max_allocated" | "cpu_peak_rss_delta"
    params: int


@dataclass
class RunResult:
    model: str
    architecture: str
    weights_sha256: str
    sampler: str | None
    steps: int | None
    size: int | None
    seed: int
    baseline: bool
    cache_dir: str | None
    per_image: list[dict[str, Any]]
    summary: dict[str, float | None]
    speed: SpeedStats
    saturation: float | None = None  # None: the model's own setting
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # contact sheet outputs

    @property
    def label(self) -> str:
        return _label(self.model, self.sampler, self.steps, self.saturation)


@dataclass
class BenchResult:
    data_dir: str
    images: list[str]
    metrics: list[str]
    seed: int
    device: str
    runs: list[RunResult]
    truth_summary: dict[str, float | None]
    notes: list[str]
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)  # name -> (grey, truth)
    meta: dict[str, Any] = field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------------


def list_images(data_dir: Path, limit: int | None = None, overlooked: list[Path] | None = None) -> list[Path]:
    """Image files under ``data_dir`` (recursively), sorted by relative path; the first ``limit``.

    Folders a bench wrote (marked with ``BENCH_MARKER``: its colourings, contact sheet and
    cache), when they are inside the set, are not part of it. Where ``overlooked`` is given, the
    files without an extension that open as images all the same (``scan0001``) are appended to
    it, as `batch` lists them, so that a set is never quietly smaller than the folder.
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"{data_dir} is a file: bench takes a folder of colour photos")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {data_dir}")
    real = real_path(data_dir)
    inside = next((folder for folder in (real, *real.parents) if (folder / BENCH_MARKER).is_file()), None)
    if inside is not None:  # its cache of colourings would be scored as if they were the truth
        raise UsageError(f"{data_dir} is {'' if inside == real else 'inside '}a bench's output folder "
                         f"({inside}: its colourings, cache and reports), not a set of photos")
    marked: dict[Path, bool] = {}
    files = sorted(
        (p for p in data_dir.rglob("*")  # a broken link too: scores never quietly leave a photo out
         if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in IMAGE_SUFFIXES
         and not any(part.startswith(".") for part in p.relative_to(data_dir).parts)
         and not in_marked_folder(p, data_dir, BENCH_MARKER, marked)),
        key=lambda p: p.relative_to(data_dir).as_posix(),
    )
    if overlooked is not None:
        overlooked += sorted(
            (p for p in data_dir.rglob("*")
             if has_no_extension(p) and p.is_file() and not any(part.startswith(".") for part in p.relative_to(data_dir).parts)
             and not in_marked_folder(p, data_dir, BENCH_MARKER, marked) and opens_as_image(p, unreadable=False)),
            key=lambda p: p.relative_to(data_dir).as_posix())
    if limit is not None:
        files = files[: max(limit, 0)]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {data_dir}")
    return files


# The file a bench puts in its output and cache folders, so it never reads them as photos.
BENCH_MARKER = ".colorize-bench"


def read_rgb(path: Path) -> np.ndarray:
    """A photo of the set as `colorize` reads one (upright by its EXIF orientation, its ICC
    profile converted to sRGB), at 8 bits: (H, W, 3) uint8."""
    try:
        return to_uint8(load_image(path).pixels)
    except ImageError as e:
        # The set is broken: say which file, and stop. Scores that quietly left photos out could
        # not be compared with another run's.
        raise ImageError(f"{str(e).rstrip('.')}; mend it or take it out of the set") from e


def read_photo(path: Path) -> tuple[np.ndarray, int]:
    """`read_rgb`'s photo, to score against, and how many full-size pages its file holds (of a
    multi-page TIFF the first is scored). (`read_rgb` itself is left as it is: its source is part
    of the colourings' cache key.)"""
    try:
        image = load_image(path)
    except ImageError as e:
        raise ImageError(f"{str(e).rstrip('.')}; mend it or take it out of the set") from e
    return to_uint8(image.pixels), image.pages


def _check_ssim_sizes(paths: Sequence[Path]) -> None:
    """Before any colouring: name the image too small for SSIM's window (reading headers only)."""
    for path in paths:
        try:
            with Image.open(path, formats=readable_formats(path)) as im:
                width, height = im.size
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # scoring reads it again and says what is wrong with it
        if min(width, height) < M.SSIM_WINDOW:
            raise ImageError(f"{path} is {width}x{height} pixels: SSIM needs at least {M.SSIM_WINDOW}x"
                             f"{M.SSIM_WINDOW} (leave ssim out of --metrics, or the image out of the set)")


# Cache names add a digest and the seed to the key: a key this long keeps its start and a digest
# of the whole, so a deep folder's photo still has a name the disk allows (255 bytes).
_MAX_KEY = 120


def _image_key(path: Path, data_dir: Path) -> str:
    """A flat, filesystem-safe name for an image (its relative path without suffix)."""
    rel = path.relative_to(data_dir).with_suffix("").as_posix()
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__"))
    if len(key) > _MAX_KEY:
        key = f"{key[:_MAX_KEY - 11]}-{hashlib.sha256(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"
    return key


def _image_keys(paths: Sequence[Path], data_dir: Path) -> list[str]:
    """Cache names for ``paths``, one per image: names that would be shared (photo.jpg and
    photo.png, or "a b" and "a_b") get a digest of the relative path added."""
    keys = [_image_key(p, data_dir) for p in paths]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key.lower()] = counts.get(key.lower(), 0) + 1
    return [key if counts[key.lower()] == 1 else
            f"{key}-{hashlib.sha256(p.relative_to(data_dir).as_posix().encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
            for key, p in zip(keys, paths)]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def resolve_metrics_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from colorize_cli.pipeline import select_device

    return select_device(device)  # an unusable one is a usage error, also when only baselines run


def _refuse_output_over_the_set(folder: Path, data_dir: Path, photos: Sequence[Path]) -> None:
    """A bench's output folder is marked as such (so no later bench takes it for photos) and gets its
    reports: it must not be the set, hold it (the set would be hidden from every later bench), or
    hold any photo of it (a report would be written over one), whatever --limit takes."""
    where, data = real_path(folder), real_path(data_dir)
    if where == data:
        raise UsageError(f"{folder} is the image set itself: write the bench's output to another folder")
    if data.is_relative_to(where):
        raise UsageError(f"{folder} holds the image set {data_dir}: write the bench's output to a folder outside it")
    if where.is_relative_to(data):  # only then can it hold photos of the set
        held = next((p for p in photos if real_path(p).is_relative_to(where)), None)
        if held is not None:
            raise UsageError(f"{folder} holds photos of the set (e.g. {held}): write the bench's output to a "
                             "folder of its own")


# What a bench writes into its --out folder and into a --cache-dir: anything else there is not its own.
_OUT_NAMES = re.compile(r"^(results\.json|results\.md|contact_sheet\.png|contact_sheet\.html|cache)$")
_CACHE_NAMES = re.compile(r"^(truth-inception-[0-9a-f]{16}\.npy|.+-code[0-9a-f]{8})$", re.DOTALL)
_TEMP_NAMES = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.npy)?$", re.DOTALL)


def _refuse_someone_elses_folder(folder: Path, ours: re.Pattern) -> None:
    """An existing folder a bench did not make, holding other files: its reports would replace the
    user's files of those names, and its marker would hide the folder from every later bench."""
    if not folder.is_dir() or (folder / BENCH_MARKER).is_file():
        return
    with os.scandir(folder) as entries:
        foreign = sorted(e.name for e in entries if not (ours.match(e.name) or _TEMP_NAMES.match(e.name)))
    if foreign:
        raise OutputError(f"{folder} holds files colorize bench did not make (e.g. {foreign[0]}): write the "
                          "bench's output to a new or empty folder")


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


class _PeakMemory:
    """Peak memory of one setting: CUDA allocator peak, or the rise of the CPU process's peak RSS."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss_delta"
        self._start = 0

    def __enter__(self) -> "_PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _release_freed_memory()
            self._start = _rss_bytes("VmRSS") if _reset_rss_peak() else _ru_maxrss_bytes()
        return self

    def peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        now = _rss_bytes("VmHWM")
        if now is None:
            now = _ru_maxrss_bytes()
        return max(0, int(now - (self._start or 0)))

    def __exit__(self, *exc) -> None:
        return None


def _release_freed_memory() -> None:
    """Give the heap's free pages back to the system where the C library can (glibc)."""
    gc.collect()
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows)
        return
    trim(0)


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _rss_bytes("VmRSS") is not None
    except OSError:
        return False


def _rss_bytes(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _ru_maxrss_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows: no peak to read; the column shows the rise as 0
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


# --- scoring ---------------------------------------------------------------------------------


class _Scorer:
    """Holds the metric networks (built once) and the ground truth's per-set statistics."""

    def __init__(self, metrics: Sequence[str], device: torch.device, skip_missing: bool = False):
        """`skip_missing`: a metric whose package is not installed is left out (and said so in
        `skipped`) instead of raising MissingExtraError; the others still run."""
        self.metrics = list(metrics)
        self.device = device
        self.skipped: list[str] = []

        def build(needed_by: set[str], make):
            if not needed_by & set(self.metrics):
                return None
            try:
                return make().to(device)
            except MissingExtraError as error:
                if not skip_missing:
                    raise
                self.metrics = [m for m in self.metrics if m not in needed_by]
                self.skipped.append(f"{', '.join(sorted(needed_by & set(metrics)))} skipped: {error}")
                return None

        self.lpips_alex = build({"lpips"}, lambda: M.LPIPS("alex"))
        self.lpips_vgg = build({"lpips-vgg"}, lambda: M.LPIPS("vgg"))
        self.dists = build({"dists"}, M.DISTS)
        self.inception = build({"fid", "kid"}, M.InceptionFeatures)
        self.truth_cf: dict[int, float] = {}
        self.truth_features: dict[int, np.ndarray] = {}

    def _stack(self, images: Sequence[np.ndarray], size: int, antialias: bool = True) -> torch.Tensor:
        # One image at a time to the metric size, so a batch may mix image sizes.
        return torch.cat([M.resize_square(M.to_tensor(im, self.device), size, antialias) for im in images])

    @torch.inference_mode()
    def score_chunk(self, indices: Sequence[int], outputs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> tuple[list[dict], np.ndarray | None]:
        records: list[dict[str, Any]] = []
        for index, out, truth in zip(indices, outputs, truths):
            record: dict[str, Any] = {}
            if "psnr" in self.metrics:
                record["psnr"] = M.psnr(out, truth)
            if "ssim" in self.metrics:
                record["ssim"] = M.ssim(out, truth)
            if "deltae" in self.metrics:
                record["deltae"] = M.mean_ciede2000(out, truth)
            if "cf" in self.metrics:
                if index not in self.truth_cf:
                    self.truth_cf[index] = M.colourfulness(truth)
                record["cf"] = M.colourfulness(out)
                record["cf_truth"] = self.truth_cf[index]
            records.append(record)

        perceptual = [(name, net) for name, net in (("lpips", self.lpips_alex), ("lpips_vgg", self.lpips_vgg), ("dists", self.dists)) if net is not None]
        if perceptual:
            x = self._stack(outputs, M.PERCEPTUAL_SIZE)
            y = self._stack(truths, M.PERCEPTUAL_SIZE)
            for name, net in perceptual:
                for record, value in zip(records, net(x, y).cpu().tolist()):
                    record[name] = value

        features = None
        if self.inception is not None:
            features = self.inception(self._stack(outputs, M.INCEPTION_SIZE, antialias=False)).double().cpu().numpy()
            missing = [i for i, index in enumerate(indices) if index not in self.truth_features]
            if missing:
                truth_feats = self.inception(self._stack([truths[i] for i in missing], M.INCEPTION_SIZE, antialias=False))
                for i, feat in zip(missing, truth_feats.double().cpu().numpy()):
                    self.truth_features[indices[i]] = feat
        return records, features

    def summarise(self, records: Sequence[dict], features: np.ndarray | None, indices: Sequence[int], seed: int, notes: list[str], label: str) -> dict[str, float | None]:
        summary: dict[str, float | None] = {}
        for name in ("psnr", "ssim", "deltae", "cf", "lpips", "lpips_vgg", "dists"):
            values = [r[name] for r in records if name in r]
            if values:
                summary[name] = float(np.mean(values))
        if "cf" in summary:
            summary["cf_truth"] = float(np.mean([r["cf_truth"] for r in records]))
            summary["delta_cf"] = abs(summary["cf"] - summary["cf_truth"])
        if features is not None:
            truth = np.stack([self.truth_features[i] for i in indices])
            if len(indices) < 2:
                notes.append(f"{label}: FID/KID need at least 2 images; skipped")
            else:
                if "fid" in self.metrics:
                    summary["fid"] = M.fid_from_features(features, truth)
                if "kid" in self.metrics:
                    summary["kid"], summary["kid_std"] = M.kid_from_features(features, truth, seed=seed)
        return summary


# --- the run ---------------------------------------------------------------------------------


def _as_spec(item: Any) -> RunSpec:
    if isinstance(item, RunSpec):
        return item
    if isinstance(item, tuple):
        return RunSpec(*item)
    return RunSpec(item)


def _resolved(spec: RunSpec, size: int | None) -> tuple[str | None, int | None, int | None]:
    engine = spec.engine
    sampler = spec.sampler or getattr(engine, "default_sampler", None)
    steps = spec.steps if spec.steps is not None else (getattr(engine, "default_steps", None) if sampler else None)
    return sampler, steps, size or getattr(engine, "default_size", None)


def _label(model: str, sampler: str | None, steps: int | None, saturation: float | None = None) -> str:
    label = model if sampler is None else f"{model} {sampler}" + (f":{steps}" if steps else "")
    return label if saturation is None else f"{label} sat {saturation:.12g}"


@dataclass
class _Colouring:
    outputs: dict[int, np.ndarray]  # index -> output, only when there is no cache to hold it
    latencies: dict[str, float]     # image key -> seconds (this run's and, same device, the cache's)
    peak_memory_bytes: int | None
    memory_kind: str


def _usable_cached(cached: Path, truth: Path) -> bool:
    """A cached colouring that is whole (every PNG chunk's checksum, up to its end) and at its
    photo's size; a damaged one is removed (and the photo coloured again) instead of stopping the
    bench or being scored. Headers and checksums only: scoring decodes the pixels once, later."""
    if not cached.is_file():
        return False
    try:
        size = upright_size(truth)  # the colouring is upright, as the photo is read
        with Image.open(cached, formats=("PNG",)) as im:
            same_size = im.size == size
            im.verify()
        if same_size:
            return True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        pass
    cached.unlink(missing_ok=True)
    return False


def _colour_all(engine: Any, paths: Sequence[Path], keys: Sequence[str], run_cache: Path | None,
                settings: dict[str, Any], seed: int, progress: Callable[[int, int], None],
                notes: list[str], label: str) -> _Colouring:
    """Colour (timed, one image per call) every image the cache does not hold yet."""
    timings = _load_timings(run_cache)
    engine_device = str(getattr(engine, "device", "cpu"))
    if timings.get("device") not in (None, engine_device):
        notes.append(f"{label}: cached latencies were measured on {timings['device']}; not reused on {engine_device}")
        timings = {"latency_s": {}}
    latencies: dict[str, float] = dict(timings.get("latency_s", {}))
    outputs: dict[int, np.ndarray] = {}
    computed = 0
    with _PeakMemory(torch.device(engine_device)) as memory:
        try:
            for index, (path, key) in enumerate(zip(paths, keys)):
                progress(index, len(paths))
                cached = run_cache / f"{key}.png" if run_cache is not None else None
                if cached is not None and _usable_cached(cached, path):
                    continue
                grey = grey_input(read_rgb(path))
                call = dict(settings, seeds=[seed + index], progress=None)
                if computed == 0:  # the first call pays for lazy initialisation: keep it out of the latency
                    engine.colorize_pixels([grey], **call)
                start = time.perf_counter()
                output = np.asarray(engine.colorize_pixels([grey], **call)[0], dtype=np.uint8)
                latencies[key] = time.perf_counter() - start
                computed += 1
                if cached is not None:
                    save_image(cached, output, overwrite=True)  # atomic, by png.py
                else:
                    outputs[index] = output
        finally:  # also when interrupted: the colourings cached so far keep their latencies
            if computed:  # a partly cached run keeps the larger of the two peaks
                peak = max(memory.peak(), timings.get("peak_memory_bytes") or 0)
                _save_timings(run_cache, {"device": engine_device, "memory_kind": memory.kind,
                                          "peak_memory_bytes": peak, "latency_s": latencies})
            else:
                peak = timings.get("peak_memory_bytes")
    progress(len(paths), len(paths))
    kind = memory.kind if computed else timings.get("memory_kind", memory.kind)
    return _Colouring(outputs, latencies, peak, kind)


def run_bench(
    data_dir: str | Path,
    engines_with_settings: Sequence[RunSpec | Any],
    metrics: Sequence[str] | str | None = None,
    limit: int | None = None,
    size: int | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    *,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = "cpu",
) -> BenchResult:
    """Colour every image of ``data_dir`` with each (engine, sampler, steps) and score it.

    ``engines_with_settings``: ``RunSpec``s, ``(engine, sampler, steps)`` tuples or bare engines.
    ``metrics``: names (see ``parse_metrics``); None: the defaults, minus network metrics whose
    extra is not installed (named explicitly, a missing extra raises ``MissingExtraError``).
    ``size``: working size passed to the engines (None: each engine's default).
    ``out_dir``: outputs are cached under ``out_dir/cache`` (or ``cache_dir``); None and no
    ``cache_dir``: nothing is written. ``device``: where the metric networks run.
    Image ``i`` (in sorted order) is coloured with seed ``seed + i``, whatever ``limit`` is.
    """
    data_dir = Path(data_dir)
    report = progress or (lambda stage, done, total: None)
    notes: list[str] = []
    if metrics is None:
        metric_names = list(DEFAULT_METRICS)
        explicit = False
    else:
        metric_names = parse_metrics(metrics)
        explicit = True
    metrics_device = resolve_metrics_device(device)
    # Asked for by name, a metric that cannot run is an error; by default, only it is left out.
    scorer = _Scorer(metric_names, metrics_device, skip_missing=not explicit)
    notes += [f"network metrics {text}" for text in scorer.skipped]
    metric_names = scorer.metrics

    cache_root = Path(cache_dir) if cache_dir is not None else (Path(out_dir) / "cache" if out_dir is not None else None)
    overlooked: list[Path] = []
    every = list_images(data_dir, overlooked=overlooked)  # (before this run marks its own folders: one may hold the set)
    if overlooked:
        notes.append(f"left out {len(overlooked)} file(s) without an extension that open as images (e.g. "
                     f"{overlooked[0].relative_to(data_dir).as_posix()}): give them their format's extension to "
                     "score them")
    for folder in (out_dir, cache_root):
        if folder is not None:
            _refuse_output_over_the_set(Path(folder), data_dir, every)
    for folder, ours in ((out_dir, _OUT_NAMES), (cache_dir, _CACHE_NAMES)):
        if folder is not None:
            _refuse_someone_elses_folder(Path(folder), ours)
    paths = every[: max(limit, 0)] if limit is not None else every
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {data_dir}")
    for folder in (out_dir, cache_dir):  # marked, so no later bench of the set takes it for photos
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / BENCH_MARKER).write_text("colorize bench output: not part of any image set\n")
    if "ssim" in scorer.metrics:
        _check_ssim_sizes(paths)
    from colorize_cli.metadata import made_by_colorize

    ours = [p for p in paths if made_by_colorize(p)]
    if ours:  # (`batch` leaves such files out; here the user chose the set)
        notes.append(f"{len(ours)} photo(s) of the set are colorize's own colourings or sheets (e.g. "
                     f"{ours[0].relative_to(data_dir).as_posix()}): scored as ground truth, they measure agreement "
                     "with colorize, not with real colour")
    keys = _image_keys(paths, data_dir)
    # A cached colouring is named after its image's content and its seed too: a photo replaced
    # under the same name, or moved to another place in the set (its seed is seed + its index),
    # is coloured again, never scored with a colouring it would not get now.
    contents = [_content_digest(path) for path in paths] if cache_root else []
    cache_names = ([f"{_cache_prefix(key, content)}{seed + index}"
                    for index, (key, content) in enumerate(zip(keys, contents))] if cache_root else keys)
    shown = min(SAMPLE_COUNT, len(paths))  # contact sheet: evenly spaced over the sorted images
    sample_indices = {round(i * (len(paths) - 1) / max(shown - 1, 1)) for i in range(shown)}
    specs = [_as_spec(item) for item in engines_with_settings]
    for spec in specs:  # a setting a model refuses stops the run before anything is coloured or scored
        if hasattr(spec.engine, "resolve_settings"):
            try:
                spec.engine.resolve_settings(spec.sampler, spec.steps, size, spec.saturation, prefix="")
            except ValueError as e:
                raise UsageError(f"{spec.engine.name}: {e}") from None
    truth_features_file = None
    if cache_root is not None and scorer.inception is not None:
        # The ground truth's Inception features are the slow half of FID on CPU: keep them.
        truth_features_file = cache_root / f"truth-inception-{_files_digest(paths, data_dir, contents)[:16]}.npy"
        features = _load_truth_features(truth_features_file, len(paths))
        if features is not None:
            scorer.truth_features = dict(enumerate(features))

    # Two weights files of one name (the bundled unet and a training run's unet.safetensors) are
    # told apart by their hash in the table.
    weights_of: dict[str, set[str]] = {}
    for spec in specs:
        weights_of.setdefault(spec.engine.name, set()).add(spec.engine.weights_sha256)
    shown_names = [spec.engine.name if len(weights_of[spec.engine.name]) == 1
                   else f"{spec.engine.name}@{spec.engine.weights_sha256[:8]}" for spec in specs]
    truth_sizes: list[tuple[int, int]] = []
    grey_truths: list[str] = []  # photos of the set with no colour to recover
    paged_truths: list[str] = []  # multi-page TIFFs, of which the first page is scored
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    runs: list[RunResult] = []
    for spec_number, spec in enumerate(specs):
        engine = spec.engine
        sampler, steps, work_size = _resolved(spec, size)
        label = _label(shown_names[spec_number], sampler, steps, spec.saturation)
        settings: dict[str, Any] = dict(sampler=sampler, steps=steps, size=work_size)
        saturated = ""
        if spec.saturation is not None:  # only then: baselines take no saturation, old caches stay valid
            settings["saturation"] = spec.saturation
            saturated = f"-sat{spec.saturation:.12g}"
        run_cache = None
        if cache_root is not None:
            run_cache = cache_root / _safe(f"{engine.name}-{engine.weights_sha256[:12]}-{sampler or 'none'}-"
                                           f"{steps or 'none'}-{work_size or 'default'}-{seed}{saturated}"
                                           f"-code{inference_code_fingerprint()}")
            run_cache.mkdir(parents=True, exist_ok=True)
            remove_stale_temps([run_cache / "timings.json"])  # what a run killed mid-write left, once old

        colouring = _colour_all(engine, paths, cache_names, run_cache, settings, seed,
                                lambda done, total: report(f"colour {label}", done, total), notes, label)

        # Score in chunks, so the metric networks see batches.
        records: list[dict[str, Any]] = []
        feature_chunks: list[np.ndarray] = []
        run_samples: dict[str, np.ndarray] = {}
        for first in range(0, len(paths), METRIC_BATCH):
            chunk = list(range(first, min(first + METRIC_BATCH, len(paths))))
            report(f"score {label}", first, len(paths))
            truths, pages = zip(*(read_photo(paths[i]) for i in chunk))
            outs = [colouring.outputs.pop(i) if i in colouring.outputs else read_rgb(run_cache / f"{cache_names[i]}.png")
                    for i in chunk]
            for i, out, truth, count in zip(chunk, outs, truths, pages):
                if out.shape != truth.shape:
                    raise ValueError(f"{label} returned {out.shape[1]}x{out.shape[0]} for {paths[i].name} "
                                     f"({truth.shape[1]}x{truth.shape[0]}): outputs must match the input size")
                if spec_number == 0:
                    truth_sizes.append((truth.shape[1], truth.shape[0]))
                    if not has_colour(truth):
                        grey_truths.append(paths[i].relative_to(data_dir).as_posix())
                    if count > 1:
                        paged_truths.append(paths[i].relative_to(data_dir).as_posix())
                if i in sample_indices:
                    run_samples[keys[i]] = out
                    samples.setdefault(keys[i], (grey_input(truth), truth))
            chunk_records, chunk_features = scorer.score_chunk(chunk, outs, truths)
            for i, record in zip(chunk, chunk_records):
                records.append({"image": paths[i].relative_to(data_dir).as_posix(), "latency_s": colouring.latencies.get(cache_names[i]),
                                **record})
            if chunk_features is not None:
                feature_chunks.append(chunk_features)
        report(f"score {label}", len(paths), len(paths))
        features = np.concatenate(feature_chunks) if feature_chunks else None
        summary = scorer.summarise(records, features, list(range(len(paths))), seed, notes, label)

        default_size = getattr(engine, "default_size", None)
        if size is not None and default_size is not None and truth_sizes:
            # The engine never works above a photo's longer side (or its own default, when larger).
            used = max(min(size, max(w, h, default_size)) for w, h in truth_sizes)
            if used < size:
                notes.append(f"{label}: --size {size} is above what it works at on these photos: at most {used} px "
                             "(a photo's longer side, or the model's default size when larger)")
        timed = [colouring.latencies[k] for k in cache_names if k in colouring.latencies]
        speed = SpeedStats(
            working_size=work_size,
            image_size=_describe_sizes(truth_sizes),
            batch_size=1,
            timed_images=len(timed),
            latency_median_s=_percentile(timed, 50),
            latency_p95_s=_percentile(timed, 95),
            images_per_s=(len(timed) / sum(timed)) if timed and sum(timed) > 0 else None,
            peak_memory_bytes=colouring.peak_memory_bytes,
            memory_kind=colouring.memory_kind,
            params=int(getattr(engine, "params", 0)),
        )
        runs.append(
            RunResult(
                model=shown_names[spec_number],
                architecture=getattr(engine, "architecture", ""),
                weights_sha256=engine.weights_sha256,
                sampler=sampler,
                steps=steps,
                size=work_size,
                saturation=spec.saturation,
                seed=seed,
                baseline=isinstance(engine, (GreyBaseline, ColourPriorBaseline)),
                cache_dir=str(run_cache) if run_cache is not None else None,
                per_image=records,
                summary=summary,
                speed=speed,
                samples=run_samples,
            )
        )

    if truth_features_file is not None and not truth_features_file.is_file() and len(scorer.truth_features) == len(paths):
        cache_root.mkdir(parents=True, exist_ok=True)
        _write_atomically(truth_features_file, lambda tmp: np.save(tmp, np.stack(
            [scorer.truth_features[i] for i in range(len(paths))])), suffix=".tmp.npy")

    truth_summary: dict[str, float | None] = {}
    if scorer.truth_cf:
        truth_summary["cf"] = float(np.mean(list(scorer.truth_cf.values())))
    if grey_truths:
        notes.append(f"{len(grey_truths)} photo(s) of the set have no colour (e.g. {grey_truths[0]}): the grey "
                     "baseline is (nearly) exact on them and they tell nothing about colour; a "
                     "colourization set should hold colour photos")
    if paged_truths:
        notes.append(f"{len(paged_truths)} photo(s) of the set hold several pages (e.g. {paged_truths[0]}): "
                     "only the first page of each is scored")
    if {"fid", "kid"} & set(metric_names) and len(paths) < FEW_FOR_FID:
        notes.append(f"FID and KID compare two distributions of Inception features; on {len(paths)} images they "
                     f"mean little (KID may even be negative): use {FEW_FOR_FID} or more")
    return BenchResult(
        data_dir=str(data_dir),
        images=[p.relative_to(data_dir).as_posix() for p in paths],
        metrics=metric_names,
        seed=seed,
        device=str(metrics_device),
        runs=runs,
        truth_summary=truth_summary,
        notes=notes,
        samples=samples,
    )


def _cache_prefix(key: str, content: str) -> str:
    """A cached colouring's name up to its seed: `{key}-{content}-s{seed}.png`."""
    return f"{key}-{content}-s"


def cached_colourings(cache_dir: str | Path, data_dir: str | Path) -> list[tuple[Path, Path]]:
    """(cached colouring, its ground truth) for each photo of ``data_dir`` that ``cache_dir`` (one
    run's folder in a bench's ``cache/``) holds a colouring of, matched as the bench names them:
    by the photo's path and content (any seed: a run's folder holds one seed per photo)."""
    cache_dir, data_dir = Path(cache_dir), Path(data_dir)
    paths = list_images(data_dir)
    pairs = []
    for path, key in zip(paths, _image_keys(paths, data_dir)):
        prefix = _cache_prefix(key, _content_digest(path))
        found = sorted(p for p in cache_dir.glob(glob.escape(prefix) + "*.png") if p.stem[len(prefix):].isdigit())
        if found:
            pairs.append((found[0], path))
    return pairs


def _content_digest(path: Path) -> str:
    """12 hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _files_digest(paths: Sequence[Path], data_dir: Path, contents: Sequence[str]) -> str:
    """Identifies a set of ground-truth files by their names and contents (`_content_digest`s): a
    photo replaced by another of the same size and date must not keep the old one's features."""
    digest = hashlib.sha256(b"tf-inception-2015-12-05 pool3 299 bilinear v1\n")
    for path, content in zip(paths, contents):
        digest.update(f"{path.relative_to(data_dir).as_posix()}\t{content}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _describe_sizes(sizes: Sequence[tuple[int, int]]) -> str:
    if not sizes:
        return "none"
    if len(set(sizes)) == 1:
        return f"{sizes[0][0]}x{sizes[0][1]}"
    pixels = sorted(sizes, key=lambda s: s[0] * s[1])
    w, h = pixels[len(pixels) // 2]
    return f"mixed (median {w}x{h})"


# The code that decides a colouring's pixels: how a photo is read (imageio) and a model file
# loaded (weights), the engine (the rest), and this module's protocol input and baselines. A
# change to any of it makes cached colourings (and their timings) stale, so its hash is part of
# each cache folder's name.
_INFERENCE_CODE = ("pipeline.py", "upsample.py", "color.py", "hints.py", "models", "diffusion", "imageio.py",
                   "weights.py")


@functools.lru_cache(maxsize=1)  # the code does not change while the process runs: hash it once
def inference_code_fingerprint() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _INFERENCE_CODE:
        path = package / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    for part in (read_rgb, grey_input, _to_uint8, GreyBaseline, ColourPriorBaseline, _colour_all):
        digest.update(inspect.getsource(part).encode() + b"\0")
    return digest.hexdigest()[:8]


def _load_timings(run_cache: Path | None) -> dict[str, Any]:
    empty: dict[str, Any] = {"latency_s": {}}
    if run_cache is None or not (run_cache / "timings.json").is_file():
        return empty
    try:
        timings = json.loads((run_cache / "timings.json").read_text())
    except (OSError, ValueError):
        return empty  # a damaged timing file only costs the cached latencies
    # ... and so does one of the wrong shape (edited by hand, or by another program)
    if not isinstance(timings, dict) or not isinstance(timings.get("latency_s"), dict):
        return empty
    latencies = timings["latency_s"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
               for v in latencies.values()):
        return empty
    if not isinstance(timings.get("peak_memory_bytes"), (int, type(None))):
        timings["peak_memory_bytes"] = None
    return timings


def _save_timings(run_cache: Path | None, timings: dict[str, Any]) -> None:
    if run_cache is not None:
        _write_atomically(run_cache / "timings.json",
                          lambda tmp: tmp.write_text(json.dumps(timings, indent=1, sort_keys=True)))


def _write_atomically(path: Path, write: Callable[[Path], Any], suffix: str = ".tmp") -> None:
    """`write(temporary path)`, then the rename; the temporary file is removed if the write fails
    (a full disk, Ctrl-C), so no hidden leftover outlives the run."""
    tmp = temp_path_beside(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_truth_features(path: Path, count: int) -> np.ndarray | None:
    """The cached Inception features of the set's photos, or None (then they are computed again): a
    damaged or cut file is removed rather than stopping every later run."""
    if not path.is_file():
        return None
    try:
        features = np.load(path, allow_pickle=False)
        if features.ndim == 2 and len(features) == count and np.isfinite(features).all():
            return features
    except (OSError, ValueError, EOFError):
        pass
    path.unlink(missing_ok=True)
    return None


# --- the command -----------------------------------------------------------------------------

BASELINE_NAMES = ("grey", "prior")


def _load_engine(name: str | None, device: str):
    from colorize_cli.pipeline import Engine  # lazily: the bench core does not need the model zoo

    return Engine.load(name, device=device)


def bench_command(
    data: str | Path,
    models: str | None = None,
    samplers: str | None = None,
    metrics: str | None = None,
    limit: int | None = None,
    size: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
    command: Sequence[str] | None = None,
    engine_loader: Callable[[str | None, str], Any] | None = None,
    saturations: str | None = None,
) -> BenchResult:
    """``colorize bench``: run, print the Rich table to stdout (progress and notes to stderr), and
    with ``out`` write results.json, results.md and the contact sheet there.

    ``models``: comma-separated model names (None: the default model; only "grey"/"prior": the
    baselines alone); the baselines always run too. ``samplers``: "ddim:20,ddpm:250".
    ``saturations``: "1,1.5,2" runs every model at each of these chroma gains.
    ``engine_loader(name, device)`` replaces ``Engine.load`` (tests, custom engines).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from colorize_cli.bench import report as reports

    load = engine_loader or _load_engine
    names = list(dict.fromkeys(n.strip() for n in models.split(",") if n.strip())) if models is not None else [None]
    if not names:  # `--models ,`: not "the baselines alone" by accident (`--models grey` asks for that)
        raise UsageError(f"--models {models!r} names no model; e.g. --models unet,lab-ddpm")
    sampler_settings, saturation_values = parse_samplers(samplers), parse_saturations(saturations)  # typos before loading
    metric_names = parse_metrics(metrics) if metrics else None
    engines = [load(name, device) for name in names if name not in BASELINE_NAMES]
    specs, notes = expand_settings(engines, sampler_settings, saturation_values)
    specs = with_baselines(specs)

    stderr = Console(file=sys.stderr)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr, disable=quiet or not stderr.is_terminal, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        result = run_bench(data, specs, metric_names, limit, size, out, seed, progress,
                           cache_dir=cache_dir, device=device)
    result.notes[:0] = notes
    result.meta["device"] = device
    result.meta["engine_devices"] = {run.label: str(getattr(spec.engine, "device", "cpu")) for run, spec in zip(result.runs, specs)}

    stdout = Console(file=sys.stdout)
    if not stdout.is_terminal:  # piped to a file: do not squeeze the table into 80 columns
        stdout = Console(file=sys.stdout, width=240)
    stdout.print(reports.rich_table(result))
    for note in result.notes:
        stderr.print(f"note: {note}", highlight=False)
    if out is not None:
        written = reports.write_report(result, out, command=command)
        if not quiet:
            stderr.print(f"wrote {', '.join(str(p) for p in written.values())}", highlight=False)
    return result
