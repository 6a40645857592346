"""The inference engine: load a model once, colour images at a working size, compose at full size.

The model only ever sees a small grey image (the working size, like DeOldify's render factor);
the output keeps the input's own luminance at full resolution and takes its chroma from the
model through an edge-aware, luminance-guided upsampling (see `upsample.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, diffusion, upsample
from .hints import Hint, PaintedHint, apply_hints
from .color import AB_SCALE, normalize_L, saturate
from .models import ColorModel
from .errors import UsageError
from .weights import (ModelEntry, Registry, WeightsError, load_model_from_file, load_registry, resolve_weights,
                      sha256_file)

# Called with (images done, images total) as work completes.
Progress = Callable[[int, int], None]
# --saturation beyond this only pushes colours out of gamut, where they are mapped back anyway.
MAX_SATURATION = 8.0
# Working sizes (longer side, px); the command line's --size bounds repeat them as literals, as the
# CLI module stays free of torch until a command runs. Below 16 px there is no colour to predict.
MIN_WORKING_SIZE, MAX_WORKING_SIZE = 16, 4096


def select_device(name: str | torch.device = "auto", *, prefix: str = "--") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; `cuda:N` one GPU of several. `prefix`
    as for `Engine.resolve_settings`: "--" names the command line's flag, "" the keyword argument."""
    def asked(value) -> str:
        return f"--device {value}" if prefix else f"device={str(value)!r}"

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or (device.type != "cuda" and device.index):
        raise UsageError(f"unknown device {str(name)!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{asked(device)} was asked for, but no CUDA GPU is available (try {asked('cpu')})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{asked(device)} was asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UsageError(f"{asked('mps')} was asked for, but Apple's MPS backend is not available (try {asked('cpu')})")
    return device


def _whole_number(name: str, value) -> int:
    """`value` as an int; ValueError for floats, strings, booleans..."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return int(value)


def working_shape(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
    """The model's input shape: longer side ≈ `size`, aspect kept, both sides multiples of `multiple`."""
    if size < multiple:
        raise ValueError(f"--size must be at least {multiple} for this model")
    scale = size / max(height, width)
    def fit(side: int) -> int:
        return max(multiple, int(round(side * scale / multiple)) * multiple)
    return fit(height), fit(width)


def sample_seed(seed: int, sample: int) -> list[torch.Generator]:
    """The generator for sample `sample` of an image: depends on the seed and sample index only,
    so an image's colours never depend on which other images share its batch."""
    return diffusion.make_generators(seed, 1, offset=sample)


def _prepare_for_inference(model: ColorModel, device: torch.device) -> None:
    """Eval mode, no gradients, on `device`; channels-last on CPU.

    oneDNN's channels-last convolutions make a one-step 256 px colouring ~25% faster on CPU
    (and the first call, which pays for kernel set-up, ~40%) with the same output up to float
    rounding. GPUs keep the default layout: GroupNorm is slower there in channels-last.
    """
    model.eval().requires_grad_(False).to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)


@dataclass
class Engine:
    model: ColorModel
    name: str
    architecture: str
    device: torch.device
    weights_path: Path | None
    weights_source: str
    weights_sha256: str
    default_sampler: str
    default_steps: int
    default_size: int
    default_saturation: float = 1.0

    @classmethod
    def load(cls, model: str | None = None, weights: str | Path | None = None, device: str = "auto", *,
             registry: Registry | None = None, local_files_only: bool = False, prefix: str = "--") -> "Engine":
        """A named registry model (default: the registry's default) or a local safetensors file.
        `prefix`: how messages name the settings (see `resolve_settings`)."""
        torch_device = select_device(device, prefix=prefix)
        entry: ModelEntry | None = None
        if weights is None or model is not None:
            registry = registry or load_registry()
            entry = registry.get(model or registry.default)
        resolved = resolve_weights(entry if weights is None else None, weights_path=weights,
                                   local_files_only=local_files_only)
        net = load_model_from_file(resolved.path, expected_architecture=entry.architecture if entry else None)
        _prepare_for_inference(net, torch_device)
        cfg = net.config
        engine = cls(
            model=net,
            name=entry.name if entry else Path(resolved.path).stem,
            architecture=cfg.architecture,
            device=torch_device,
            weights_path=Path(resolved.path),
            weights_source=resolved.source,
            # resolve_weights has checked registry files against their hash already
            weights_sha256=entry.sha256 if entry and entry.sha256 and resolved.source != "file" else sha256_file(resolved.path),
            default_sampler=(entry.default_sampler if entry else None) or cfg.default_sampler,
            default_steps=(entry.default_steps if entry else None) or cfg.default_steps,
            default_size=(entry.size if entry else None) or cfg.size,
            default_saturation=cfg.saturation,
        )
        try:  # the file's own defaults (sampler, steps, size, saturation) must be usable
            engine.resolve_settings(None, None, None, None)
        except ValueError as e:
            raise WeightsError(f"{resolved.path} holds settings this version cannot use: {e}") from None
        return engine

    @classmethod
    def from_model(cls, model: ColorModel, device: str = "cpu", name: str = "custom") -> "Engine":
        """Wrap an in-memory model (tests, training previews)."""
        torch_device = select_device(device)
        _prepare_for_inference(model, torch_device)
        cfg = model.config
        return cls(model, name, cfg.architecture, torch_device, None, "memory", "", cfg.default_sampler,
                   cfg.default_steps, cfg.size, cfg.saturation)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def supported_samplers(self) -> tuple[str, ...]:
        return self.model.samplers

    def resolve_settings(self, sampler: str | None, steps: int | None, size: int | None,
                         saturation: float | None = None, *, prefix: str = "--") -> tuple[str, int, int, float]:
        """The settings a colouring will use (None: the model's default); ValueError if not valid.

        `prefix`: how the caller's user names a setting in the messages — "--" for the command
        line's flags (--steps), "" for the Python API's keyword arguments (steps).
        """
        sampler = self.default_sampler if sampler is None else sampler
        if sampler not in self.supported_samplers:
            raise ValueError(f"model {self.name!r} ({self.architecture}) supports {prefix}sampler "
                             f"{', '.join(self.supported_samplers)}, not {sampler!r}")
        steps = _whole_number(f"{prefix}steps", self.default_steps if steps is None else steps)
        if steps < 1:
            raise ValueError(f"{prefix}steps must be at least 1")
        if sampler == "oneshot" and steps != 1:  # it would be ignored, and the output's note would say it
            raise ValueError(f"sampler oneshot colours in one step; {prefix}steps {steps} does not apply to it")
        if steps > self.model.config.timesteps:
            raise ValueError(f"{prefix}steps must be at most {self.model.config.timesteps}, the number of noise "
                             f"levels model {self.name!r} was trained with")
        size = _whole_number(f"{prefix}size", self.default_size if size is None else size)
        least = max(MIN_WORKING_SIZE, self.model.multiple)
        if size < least or size > MAX_WORKING_SIZE:
            raise ValueError(f"{prefix}size must be between {least} and {MAX_WORKING_SIZE} px")
        saturation = self.default_saturation if saturation is None else saturation  # (a file's own, too)
        try:
            if isinstance(saturation, (bool, str, bytes)):  # a number, as size and steps must be
                raise TypeError
            saturation = float(saturation)
        except (TypeError, ValueError):
            raise ValueError(f"{prefix}saturation must be a number, not {saturation!r}") from None
        if not 0.0 <= saturation <= MAX_SATURATION:
            raise ValueError(f"{prefix}saturation must be between 0 and {MAX_SATURATION:g}, not {saturation:g}")
        return sampler, steps, size, saturation

    def provenance(self, sampler: str | None, steps: int | None, size: int | None, saturation: float | None,
                   seed: int, sample: int = 0, hints: Sequence[Hint | PaintedHint] = (), source: str | None = None) -> str:
        """The note each output carries (EXIF and PNG `Software`): what made it, and how to make it again.

        `source`: the input's file name, last and JSON-quoted (any name survives, in ASCII), so a
        rerun of a batch knows a file at an output's name for this photo's colouring and not
        another's (`metadata.note_source`)."""
        sampler, steps, size, saturation = self.resolve_settings(sampler, steps, size, saturation)
        weights = f" (sha256 {self.weights_sha256[:16]})" if self.weights_sha256 else ""
        given = "".join(f", hint {text}" for text in dict.fromkeys(hint.text for hint in hints))  # an image's colours: once
        named = f", source {json.dumps(source)}" if source is not None else ""
        # a --weights file whose name is not UTF-8: its bytes shown as \xNN (a note is text)
        model = os.fsencode(self.name).decode("utf-8", "backslashreplace")
        return (f"colorize {__version__}, machine colourisation: model {model}{weights}, sampler {sampler}, "
                f"steps {steps}, size {size}, saturation {saturation:g}, seed {seed}, sample {sample}{given}{named}")

    @torch.inference_mode()
    def predict_ab(self, L_work: torch.Tensor, generators: list[torch.Generator], sampler: str, steps: int,
                   callback: Callable[[int, int], None] | None = None, saturation: float = 1.0) -> torch.Tensor:
        """L* (B, 1, h, w) at the working size -> a*b* (B, 2, h, w), both in real Lab units."""
        L = normalize_L(L_work.to(self.device, torch.float32))
        ab = self.model.colorize(L, sampler=sampler, steps=steps, generators=generators, callback=callback)
        return saturate(ab.float().cpu() * AB_SCALE, saturation, L=L_work.float().cpu(),
                        profile=self.model.strength_profile)

    def colorize_pixels(self, pixels: Sequence[np.ndarray], *, sampler: str | None = None, steps: int | None = None,
                        size: int | None = None, saturation: float | None = None,
                        seeds: Sequence[int] | None = None, samples: Sequence[int] | None = None,
                        hints: Sequence[Sequence[Hint | PaintedHint]] | None = None,
                        batch_size: int = 8, progress: Progress | None = None,
                        step_progress: Progress | None = None) -> list[np.ndarray]:
        """Colour full-resolution sRGB images (H, W, 3) uint8/uint16; returns the same shapes and dtypes.

        `seeds[i]` and `samples[i]` (default 0) pick image i's random stream; images whose working
        shapes match are batched together. `progress` counts images, `step_progress` sampler steps.
        `saturation` scales the predicted chroma (`color.saturate`; None: the model file's setting).
        `hints[i]` are image i's colour hints (`hints.py`), blended in after the saturation.
        """
        sampler, steps, size, saturation = self.resolve_settings(sampler, steps, size, saturation)
        n = len(pixels)
        seeds = list(seeds) if seeds is not None else [0] * n
        samples = list(samples) if samples is not None else [0] * n
        if len(seeds) != n or len(samples) != n or (hints is not None and len(hints) != n):
            raise ValueError(f"seeds, samples and hints need one entry per image ({n})")
        if any(_whole_number("a seed", v) < 0 for v in seeds) or any(_whole_number("a sample", v) < 0 for v in samples):
            raise ValueError("seeds and sample indices must not be negative")
        if _whole_number("batch_size", batch_size) < 1:
            raise ValueError("batch_size must be at least 1")
        for p in pixels:
            if p.ndim != 3 or p.shape[2] != 3 or p.shape[0] < 1 or p.shape[1] < 1:
                raise ValueError(f"expected (H, W, 3) pixels with H, W >= 1, got shape {p.shape}")
        # A working size above both the photo's own and the model's default adds no detail, only
        # time and memory (a 512-px photo at --size 2048: 23 s, 3.9 GB): it stops at the larger of them.
        shapes = [working_shape(p.shape[0], p.shape[1], min(size, max(p.shape[0], p.shape[1], self.default_size)),
                                self.model.multiple) for p in pixels]
        results: list[np.ndarray | None] = [None] * n
        done = 0
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            by_shape.setdefault(shape, []).append(i)
        for shape, members in by_shape.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                # L* once per image: it feeds both the model's input and the full-size composition.
                L_full = {i: upsample.luminance(pixels[i]) for i in chunk}
                L_work = torch.stack([upsample.working_L(pixels[i], shape, luminance_full=L_full[i]) for i in chunk])
                generators = [sample_seed(seeds[i], samples[i])[0] for i in chunk]
                ab = self.predict_ab(L_work, generators, sampler, steps, callback=step_progress, saturation=saturation)
                for j, i in enumerate(chunk):
                    ab_i = ab[j]
                    if hints is not None and hints[i]:
                        height, width = pixels[i].shape[:2]
                        ab_i = apply_hints(ab_i, L_work[j], list(hints[i]), photo_size=(width, height))
                    results[i] = upsample.compose_full_resolution(pixels[i], ab_i, luminance_full=L_full.pop(i))
                    done += 1
                    if progress is not None:
                        progress(done, n)
        return results  # type: ignore[return-value]
