"""Shared fixtures: tiny random models saved as real weights files, and a fake registry."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The tests read what the CLI prints to pipes. Rich takes FORCE_COLOR / TTY_COMPATIBLE (set by some
# CI runners) for a terminal, which turns that output into colour codes, tables and progress bars,
# and COLUMNS for its width, where it wraps text. Set here, before colorize_cli.cli makes its
# consoles, and inherited by the tests' subprocesses: what a runner without a terminal gives.
for _name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINES"):
    os.environ.pop(_name, None)
os.environ["COLUMNS"] = "80"

from colorize_cli import weights as weights_mod
from colorize_cli.models import build_model, preset_config

ARCHS = ("lab-ddpm", "unet", "latent-cold")


@pytest.fixture(autouse=True)
def _same_random_start():
    """Each test that draws from the global generators (torch.rand, ...) gets the same numbers
    whichever tests ran before it: alone, in another order, or after one that drew more."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def make_tiny_weights(path: Path, architecture: str, seed: int = 0) -> Path:
    """A tiny model with random (non-zero) weights, so its output depends on its input."""
    torch.manual_seed(seed)
    model = build_model(preset_config(architecture, "tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    weights_mod.save_model_file(path, model.state_dict(), model.config.to_dict())
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    return {arch: make_tiny_weights(root / f"{arch}.safetensors", arch) for arch in ARCHS}


@pytest.fixture
def fake_registry(tmp_path, tiny_weights, monkeypatch) -> Path:
    """A registry whose default model `tiny` is bundled (a tiny lab-ddpm) and `absent` resolves nowhere."""
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "tiny.safetensors").write_bytes(tiny_weights["lab-ddpm"].read_bytes())
    toml = tmp_path / "weights.toml"
    toml.write_text(
        'default = "tiny"\n\n'
        '[models.tiny]\narchitecture = "lab-ddpm"\ndescription = "tiny test model"\nlicence = "MIT"\n'
        'default_sampler = "ddim"\ndefault_steps = 3\nsize = 32\nparams = 1\nfile = "tiny.safetensors"\n'
        f'sha256 = "{weights_mod.sha256_file(bundled / "tiny.safetensors")}"\n\n'
        '[models.absent]\narchitecture = "unet"\ndescription = "never published"\nlicence = "MIT"\n'
        'default_sampler = "oneshot"\ndefault_steps = 1\nsize = 32\nparams = 1\n'
    )
    monkeypatch.setattr(weights_mod, "bundled_dir", lambda: bundled)
    monkeypatch.setattr(weights_mod, "registry_path", lambda: toml)
    return toml


def photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colourful test picture with an edge, uint8 RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = 127 + 100 * np.sin(x / 7.0 + rng.uniform(0, 3))
    g = 127 + 100 * np.cos(y / 5.0 + rng.uniform(0, 3))
    b = np.where(x > width // 2, 200, 40) + 0 * y
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def save_photo(path: Path, mode: str = "RGB", **kwargs) -> Path:
    Image.fromarray(photo(**kwargs)).convert(mode).save(path)
    return path
