"""Noise schedules and samplers, as plain functions over a denoiser callable.

Samplers never see a network: diffusion samplers take `denoise(x_t, t) -> x0_hat` (build one with
`make_denoiser`), cold samplers take a restoration `R(x_s, s) -> x0_hat` and a degradation.

`SAMPLERS` maps a sampler name to its function:
- diffusion models (trained on Gaussian noise): "ddpm", "ddim";
- cold models (trained on a deterministic degradation): "cold", "oneshot".
"""

from .cold import (
    Degradation,
    Restoration,
    linear_interpolation_degradation,
    sample_cold,
    sample_oneshot,
)
from .ddim import sample_ddim
from .ddpm import sample_ddpm
from .noise import batch_randn, make_generators
from .schedule import (
    PREDICTIONS,
    SCHEDULES,
    Denoiser,
    Network,
    NoiseSchedule,
    dynamic_threshold,
    make_denoiser,
    respace,
)

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "cold": sample_cold,
    "oneshot": sample_oneshot,
}
# The samplers that start from noise: only they give a different colouring for each seed or
# sample; cold and one-shot sampling are deterministic.
RANDOM_SAMPLERS = frozenset({"ddpm", "ddim"})

__all__ = [
    "PREDICTIONS",
    "RANDOM_SAMPLERS",
    "SAMPLERS",
    "SCHEDULES",
    "Degradation",
    "Denoiser",
    "Network",
    "NoiseSchedule",
    "Restoration",
    "batch_randn",
    "dynamic_threshold",
    "linear_interpolation_degradation",
    "make_denoiser",
    "make_generators",
    "respace",
    "sample_cold",
    "sample_ddim",
    "sample_ddpm",
    "sample_oneshot",
]
