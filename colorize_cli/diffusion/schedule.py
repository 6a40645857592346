"""Noise schedules, respacing, and the conversions between what a network predicts and x0.

A `NoiseSchedule` is a plain object (not an `nn.Module`): it holds `alphas_cumprod` for the T
training timesteps on the CPU, and everything a sampler or the training loop needs is computed
from it. Samplers never see the network; `make_denoiser` turns a network into the one contract
they use, `denoise(x_t, t) -> x0_hat`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

# denoise(x_t, t) -> x0_hat, where t is a (B,) long tensor of *training* timesteps.
Denoiser = Callable[[Tensor, Tensor], Tensor]
# network(x_t, t) -> eps, v or x0 depending on how it was trained.
Network = Callable[[Tensor, Tensor], Tensor]

PREDICTIONS = ("eps", "v", "x0")


def respace(T: int, steps: int) -> list[int]:
    """`steps + 1` descending levels from T to 0, evenly spaced ("trailing" spacing).

    Level l stands for "l forward steps applied": level T is the most degraded sample and level 0
    the clean one. Rounding is half-up in integer arithmetic, which keeps consecutive levels at
    least one apart (banker's rounding would not), so levels are strictly descending.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}], got {steps}")
    return [(2 * T * (steps - i) + steps) // (2 * steps) for i in range(steps + 1)]


class NoiseSchedule:
    """The forward process q(x_t | x0) = N(sqrt(ab_t) x0, (1 - ab_t) I) for t in [0, T)."""

    def __init__(self, alphas_cumprod: Tensor):
        if alphas_cumprod.dim() != 1 or alphas_cumprod.numel() < 1:
            raise ValueError("alphas_cumprod must be a non-empty 1-D tensor")
        # float32 on the CPU: gathered per step and moved to x's device, never float64 there.
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float32)
        self.T = alphas_cumprod.numel()

    @classmethod
    def linear(
        cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2
    ) -> "NoiseSchedule":
        """Ho et al. (2020): betas linear in t."""
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64, device="cpu")
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008) -> "NoiseSchedule":
        """Nichol & Dhariwal (2021): ab(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2).

        Betas are clipped at 0.999 so the last step keeps a tiny, non-zero signal.
        """
        t = torch.arange(T + 1, dtype=torch.float64, device="cpu") / T
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1.0 - f[1:] / f[:-1]).clamp(max=0.999)
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def from_name(cls, name: str, T: int = 1000) -> "NoiseSchedule":
        try:
            build = SCHEDULES[name]
        except KeyError:
            choices = sorted(SCHEDULES)
            raise ValueError(f"unknown schedule {name!r}; choose from {choices}") from None
        return build(T=T)

    def alpha_bar(self, t: int) -> float:
        """ab_t as a Python float, for per-step coefficients shared by the whole batch."""
        return float(self.alphas_cumprod[t])

    def timesteps(self, steps: int) -> list[int]:
        """Descending training timesteps for a `steps`-step sampler, always starting at T-1.

        Respaced step i maps back to training timestep `level_i - 1`; feeding the network the
        step index instead of this is the classic respacing bug.
        """
        return [level - 1 for level in respace(self.T, steps)[:-1]]

    def _gather(self, t: Tensor, like: Tensor) -> Tensor:
        """ab_t for each item, shaped to broadcast over `like` and on its device and dtype."""
        ab = self.alphas_cumprod[t.to("cpu", torch.long)]
        return ab.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(ab_t)·x0 + sqrt(1 − ab_t)·noise."""
        ab = self._gather(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0_eps(
        self, x_t: Tensor, t: Tensor, model_output: Tensor, prediction: str
    ) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) implied by a network output of kind `prediction` at x_t."""
        convert = _check_prediction(prediction, _TO_X0_EPS)
        ab = self._gather(t, x_t)
        return convert(x_t, model_output, ab.sqrt(), (1 - ab).sqrt())

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor, prediction: str) -> Tensor:
        """What a network of kind `prediction` should output for x_t = q_sample(x0, t, noise)."""
        target = _check_prediction(prediction, _TARGETS)
        ab = self._gather(t, x0)
        return target(x0, noise, ab.sqrt(), (1 - ab).sqrt())


SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {
    "linear": NoiseSchedule.linear,
    "cosine": NoiseSchedule.cosine,
}


# Each converter gets (x_t, output, sqrt(ab), sqrt(1 - ab)) and returns (x0, eps).
def _from_eps(x_t, eps, a, sigma):
    return (x_t - sigma * eps) / a, eps


def _from_v(x_t, v, a, sigma):
    # v = a·eps − sigma·x0 and x_t = a·x0 + sigma·eps, with a² + sigma² = 1.
    return a * x_t - sigma * v, sigma * x_t + a * v


def _from_x0(x_t, x0, a, sigma):
    return x0, (x_t - a * x0) / sigma


_TO_X0_EPS = {"eps": _from_eps, "v": _from_v, "x0": _from_x0}
_TARGETS = {
    "eps": lambda x0, noise, a, sigma: noise,
    "v": lambda x0, noise, a, sigma: a * noise - sigma * x0,
    "x0": lambda x0, noise, a, sigma: x0,
}


def _check_prediction(prediction: str, table: dict):
    try:
        return table[prediction]
    except KeyError:
        choices = list(PREDICTIONS)
        raise ValueError(f"unknown prediction {prediction!r}; choose from {choices}") from None


def dynamic_threshold(x0: Tensor, percentile: float) -> Tensor:
    """Imagen's dynamic thresholding: per sample, s = max(p-th percentile of |x0|, 1);
    clamp to [-s, s] and divide by s, so saturated pixels are pulled in instead of clipped flat.

    The percentile is linearly interpolated on a sort (like `torch.quantile`), which unlike
    `torch.quantile` has no input-size limit and runs on every backend.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")
    flat = x0.abs().reshape(x0.shape[0], -1).sort(dim=1).values
    pos = percentile * (flat.shape[1] - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    hi = min(lo + 1, flat.shape[1] - 1)
    q = flat[:, lo] + frac * (flat[:, hi] - flat[:, lo])
    s = q.clamp(min=1.0).view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def make_denoiser(
    network: Network,
    schedule: NoiseSchedule,
    prediction: str,
    threshold: float | None = None,
    clip: bool = True,
) -> Denoiser:
    """Adapt a network that predicts eps, v or x0 into `denoise(x_t, t) -> x0_hat`.

    threshold: percentile p in (0, 1] for dynamic thresholding (Imagen uses 0.995); it already
        bounds x0_hat to [-1, 1], so `clip` is then irrelevant.
    clip: with no threshold, clamp x0_hat to [-1, 1], the range the data lives in.
    """
    _check_prediction(prediction, _TO_X0_EPS)
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        x0, _ = schedule.predict_x0_eps(x_t, t, network(x_t, t), prediction)
        if threshold is not None:
            return dynamic_threshold(x0, threshold)
        return x0.clamp(-1.0, 1.0) if clip else x0

    return denoise
