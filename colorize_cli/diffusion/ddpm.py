"""Ancestral (DDPM) sampling on respaced timesteps (Ho et al. 2020; Nichol & Dhariwal 2021)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .noise import batch_randn
from .schedule import Denoiser, NoiseSchedule


def sample_ddpm(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    steps: int,
    generators: list[torch.Generator],
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Sample x0 from x_T ~ N(0, I) with `steps` ancestral steps.

    Each step draws x_{t'} from the posterior q(x_{t'} | x_t, x0_hat) between consecutive
    respaced timesteps t > t'. As in improved-diffusion's respacing, the betas are those of the
    shortened chain, beta = 1 − ab_t / ab_{t'}, not the training betas at t. The last step
    returns x0_hat itself: no noise is added to the final image.
    """
    timesteps = schedule.timesteps(steps)
    batch = x_T.shape[0]
    x = x_T
    for i, t in enumerate(timesteps):
        x0_hat = denoise(x, torch.full((batch,), t, dtype=torch.long, device=x.device))
        if i + 1 == len(timesteps):
            x = x0_hat
        else:
            ab, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(timesteps[i + 1])
            alpha = ab / ab_prev  # the respaced step's alpha
            beta = 1.0 - alpha
            coef_x0 = math.sqrt(ab_prev) * beta / (1.0 - ab)
            coef_xt = math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab)
            sigma = math.sqrt(beta * (1.0 - ab_prev) / (1.0 - ab))  # posterior std
            noise = batch_randn(generators, x.shape[1:], x.device, x.dtype)
            x = coef_x0 * x0_hat + coef_xt * x + sigma * noise
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x
