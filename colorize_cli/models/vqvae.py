"""A small VQ-VAE over Lab images, the latent space of latent cold diffusion.

The encoder sees the whole Lab image (L and ab, so a grey image, ab = 0, has a latent too); the
decoder turns a latent back into ab, with the full-resolution L fed in at the end so that detail
comes from the grey image rather than from the latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .unet import ResBlock, _groups


@dataclass
class VQConfig:
    channels: int = 64          # width of the first/last stage
    latent_channels: int = 4    # dimension of each code vector
    codebook_size: int = 512
    downsample: int = 2         # number of ×2 stages: latent side = image side / 2**downsample
    beta: float = 0.25          # commitment loss weight

    @classmethod
    def from_dict(cls, d: dict) -> "VQConfig":
        return cls(**d)


class VectorQuantizer(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.codebook = nn.Embedding(size, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / size, 1.0 / size)

    def forward(self, z: torch.Tensor, beta: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z: (B, D, h, w) -> (quantised z with straight-through gradients, code indices (B, h, w),
        codebook + beta * commitment loss (van den Oord et al. 2017))."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.weight.t() + self.codebook.weight.pow(2).sum(1)[None]
        idx = dist.argmin(1)
        zq = self.codebook(idx).view(b, h, w, d).permute(0, 3, 1, 2)
        loss = F.mse_loss(zq, z.detach()) + beta * F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), idx.view(b, h, w), loss


class VQVAE(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = cfg = config
        c = cfg.channels
        enc = [nn.Conv2d(3, c, 3, padding=1)]
        for _ in range(cfg.downsample):
            enc += [ResBlock(c, c, 0, 0.0), nn.Conv2d(c, c, 3, stride=2, padding=1)]
        self.encoder = nn.ModuleList(enc + [ResBlock(c, c, 0, 0.0)])
        self.to_latent = nn.Conv2d(c, cfg.latent_channels, 1)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.latent_channels)
        self.from_latent = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        dec = [ResBlock(c, c, 0, 0.0)]
        for _ in range(cfg.downsample):
            dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), ResBlock(c, c, 0, 0.0)]
        self.decoder = nn.ModuleList(dec)
        self.fuse_L = ResBlock(c + 1, c, 0, 0.0)
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, 2, 3, padding=1)

    @property
    def downscale(self) -> int:
        return 2 ** self.config.downsample

    def _run(self, layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(h, None) if isinstance(layer, ResBlock) else layer(h)
        return h

    def encode(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """Continuous latent (before quantisation) of a normalised Lab image."""
        return self.to_latent(self._run(self.encoder, torch.cat([L, ab], dim=1)))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        return self.quantizer(z, self.config.beta)[0]

    def decode(self, z: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """Latent + full-size L -> ab in [-1, 1]."""
        h = self._run(self.decoder, self.from_latent(z))
        h = self.fuse_L(torch.cat([h, L], dim=1), None)
        return torch.tanh(self.out(F.silu(self.out_norm(h))))

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructed ab and the codebook loss."""
        zq, _, vq_loss = self.quantizer(self.encode(L, ab), self.config.beta)
        return self.decode(zq, L), vq_loss
