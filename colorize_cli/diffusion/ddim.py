"""DDIM sampling (Song et al. 2021): deterministic at eta = 0, DDPM-like noise as eta grows to 1."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .noise import batch_randn
from .schedule import Denoiser, NoiseSchedule


def sample_ddim(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    steps: int,
    generators: list[torch.Generator] | None = None,
    eta: float = 0.0,
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Sample x0 from x_T with `steps` DDIM steps on the respaced training timesteps.

    generators: one per image, needed only when eta > 0.
    The last step returns x0_hat itself.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta > 0 and not generators:
        raise ValueError("eta > 0 draws noise: pass one generator per image")
    timesteps = schedule.timesteps(steps)
    batch = x_T.shape[0]
    x = x_T
    for i, t in enumerate(timesteps):
        x0_hat = denoise(x, torch.full((batch,), t, dtype=torch.long, device=x.device))
        if i + 1 == len(timesteps):
            x = x0_hat
        else:
            ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(timesteps[i + 1])
            # The noise direction consistent with x_t and the (possibly clipped) x0_hat.
            eps = (x - math.sqrt(ab) * x0_hat) / math.sqrt(1.0 - ab)
            sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
            # max(0, ·): rounding (or eta > 1) must not make the deterministic share imaginary.
            x = math.sqrt(ab_prev) * x0_hat + math.sqrt(max(0.0, 1.0 - ab_prev - sigma**2)) * eps
            if sigma > 0:
                x = x + sigma * batch_randn(generators, x.shape[1:], x.device, x.dtype)
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x
