"""A conditional U-Net: the backbone shared by every model of the zoo.

Conditioning enters three ways: extra input channels (the grey image L, concatenated onto the
noisy ab as in improved-diffusion's super-resolution model), a timestep embedding (diffusion
models only), and optional semantic features from a pretrained encoder — a global vector added
to the embedding and a coarse feature map added at the bottleneck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# Far above any colorize model (the largest preset has 4 levels of 2 blocks, 64 base channels),
# far below what a weights file's config could ask for: a few bytes of JSON saying a million
# blocks had a load build modules until the memory ran out, before any tensor was compared.
_LIMITS = {"in_channels": 1024, "out_channels": 1024, "base_channels": 1024, "num_res_blocks": 16, "levels": 8,
           "channel_mult": 64}


@dataclass
class UNetConfig:
    in_channels: int = 3                 # noisy ab (2) + L (1) for diffusion; L (1) for one-step
    out_channels: int = 2                # ab
    base_channels: int = 64              # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)  # one entry per resolution level
    num_res_blocks: int = 2              # residual blocks per level
    attention_levels: tuple[int, ...] = (3,)       # levels (0 = full res) with self-attention
    dropout: float = 0.0
    time_conditioned: bool = True        # False for one-step regression models
    context_channels: int = 0            # channels of the semantic encoder's features (0 = none)

    def __post_init__(self) -> None:
        # A bad config (a hand-edited file) is refused here, before torch builds zero-sized layers
        # with a warning or fails deep inside a layer.
        counts = {"in_channels": self.in_channels, "out_channels": self.out_channels,
                  "base_channels": self.base_channels, "num_res_blocks": self.num_res_blocks}
        for name, value in counts.items():
            if not isinstance(value, int) or not 1 <= value <= _LIMITS[name]:
                raise ValueError(f"unet.{name} must be an integer from 1 to {_LIMITS[name]}, not {value!r}")
        if (not self.channel_mults or len(self.channel_mults) > _LIMITS["levels"]
                or any(not isinstance(m, int) or not 1 <= m <= _LIMITS["channel_mult"] for m in self.channel_mults)):
            raise ValueError(f"unet.channel_mults must be 1 to {_LIMITS['levels']} integers from 1 to "
                             f"{_LIMITS['channel_mult']}, not {self.channel_mults!r}")
        if any(not isinstance(a, int) or not 0 <= a < len(self.channel_mults) for a in self.attention_levels):
            raise ValueError(f"unet.attention_levels must be levels 0..{len(self.channel_mults) - 1}, "
                             f"not {self.attention_levels!r}")
        if not isinstance(self.context_channels, int) or self.context_channels < 0:
            raise ValueError(f"unet.context_channels must be an integer >= 0, not {self.context_channels!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"unet.dropout must be in [0, 1), not {self.dropout!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        if not isinstance(d, dict):
            raise ValueError(f"unet must be a table of settings, not {d!r}")
        d = dict(d)
        for key in ("channel_mults", "attention_levels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps t of shape (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None and emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over all positions. Past `max_kv_tokens` positions (a large --size), keys and
    values come from an average-pooled grid, so cost and memory grow linearly, not quadratically;
    at the sizes the model was trained at the two are identical."""

    max_kv_tokens = 1024

    def __init__(self, channels: int, head_dim: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))
        q, kv = qkv[:, :c], qkv[:, c:]
        if h * w > self.max_kv_tokens:
            r = math.ceil(math.sqrt(h * w / self.max_kv_tokens))
            kv = F.adaptive_avg_pool2d(kv, (math.ceil(h / r), math.ceil(w / r)))
        d = c // self.heads
        q = q.reshape(b, self.heads, d, h * w).transpose(-1, -2)
        k, v = kv.reshape(b, 2, self.heads, d, -1).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, d)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """The residual blocks (and attention) of one resolution level on one side of the U."""

    def __init__(self, channels_in: list[int], cout: int, emb_dim: int, dropout: float, attention: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(cin, cout, emb_dim, dropout) for cin in channels_in)
        self.attns = nn.ModuleList(Attention(cout) if attention else nn.Identity() for _ in channels_in)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch = [cfg.base_channels * m for m in cfg.channel_mults]
        emb_dim = 4 * cfg.base_channels if (cfg.time_conditioned or cfg.context_channels) else 0
        self.emb_dim = emb_dim
        if cfg.time_conditioned:
            self.time_mlp = nn.Sequential(
                nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.context_channels:
            self.context_global = nn.Sequential(nn.Linear(cfg.context_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.context_spatial = nn.Conv2d(cfg.context_channels, ch[-1], 1)
            nn.init.zeros_(self.context_spatial.weight)
            nn.init.zeros_(self.context_spatial.bias)

        self.stem = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [ch[0]]
        cur = ch[0]
        for i, c in enumerate(ch):
            ins = [cur] + [c] * (cfg.num_res_blocks - 1)
            self.down.append(Level(ins, c, emb_dim, cfg.dropout, i in cfg.attention_levels))
            cur = c
            skips += [c] * cfg.num_res_blocks
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)

        self.mid1 = ResBlock(cur, cur, emb_dim, cfg.dropout)
        self.mid_attn = Attention(cur)
        self.mid2 = ResBlock(cur, cur, emb_dim, cfg.dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c in reversed(list(enumerate(ch))):
            ins = []
            for _ in range(cfg.num_res_blocks + 1):
                ins.append(cur + skips.pop())
                cur = c
            self.up.append(Level(ins, c, emb_dim, cfg.dropout, i in cfg.attention_levels))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(cur), cur)
        self.out = nn.Conv2d(cur, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def downscale(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                context: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, in_channels, H, W); t: (B,) timesteps; context: (global (B, C), spatial (B, C, h, w))."""
        emb = None
        if self.config.time_conditioned:
            if t is None:
                raise ValueError("this U-Net is time-conditioned: pass t")
            emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        if self.config.context_channels and context is not None:
            g = self.context_global(context[0])
            emb = g if emb is None else emb + g

        h = self.stem(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)

        if self.config.context_channels and context is not None:
            spatial = F.interpolate(context[1], size=h.shape[-2:], mode="bilinear", align_corners=False)
            h = h + self.context_spatial(spatial)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

        for j, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
