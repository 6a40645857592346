"""Cold diffusion sampling (Bansal et al. 2022) over an arbitrary degradation.

A cold model pairs a degradation D(x0, s) (s = 0 is clean, s = T fully degraded) with a learnt
restoration R(x_s, s) -> x0_hat. Both take s as a (B,) long tensor, like the diffusion
denoiser's t, so a network can embed it directly.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .schedule import respace

Degradation = Callable[[Tensor, Tensor], Tensor]  # D(x0, s) -> x_s
Restoration = Callable[[Tensor, Tensor], Tensor]  # R(x_s, s) -> x0_hat


def _levels_like(x: Tensor, s: int) -> Tensor:
    return torch.full((x.shape[0],), s, dtype=torch.long, device=x.device)


def sample_cold(
    restore: Restoration,
    degrade: Degradation,
    x_T: Tensor,
    steps: int,
    T: int,
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Improved cold sampling (the paper's Algorithm 2) over `steps` evenly respaced levels.

    x_{s'} = x_s − D(x0_hat, s) + D(x0_hat, s'), where s' is the next level down. Only the
    *difference* of two degradations of the same x0_hat moves x, so errors in x0_hat largely
    cancel (exactly, for degradations linear in x0); the naive x_{s'} = D(x0_hat, s') does not
    have that property. With D(·, 0) the identity, the final x is the last step's x0_hat plus the
    residual x_s − D(x0_hat, s), which is zero when the restoration is consistent with x_s.
    """
    levels = respace(T, steps)
    x = x_T
    for i, (s, s_next) in enumerate(zip(levels[:-1], levels[1:])):
        s_now, s_down = _levels_like(x, s), _levels_like(x, s_next)
        x0_hat = restore(x, s_now)
        x = x - degrade(x0_hat, s_now) + degrade(x0_hat, s_down)
        if callback is not None:
            callback(i + 1, steps)
    return x


def sample_oneshot(restore: Restoration, x_T: Tensor, T: int) -> Tensor:
    """One restoration call from the fully degraded sample: R(x_T, T)."""
    return restore(x_T, _levels_like(x_T, T))


def linear_interpolation_degradation(x_end: Tensor, T: int) -> Degradation:
    """D(x0, s) = (1 − s/T)·x0 + (s/T)·x_end: a straight blend towards a fixed end point.

    Our latent cold diffusion uses the latent of the grey (ab = 0) image as x_end. x_end must
    broadcast against x0, e.g. (1, C, h, w) or (B, C, h, w).
    """

    def degrade(x0: Tensor, s: Tensor) -> Tensor:
        w = (s.to(x0.dtype) / T).view(-1, *([1] * (x0.dim() - 1)))
        return (1 - w) * x0 + w * x_end.to(device=x0.device, dtype=x0.dtype)

    return degrade
