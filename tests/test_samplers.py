"""Behavioural tests for colorize_cli.diffusion: schedules, respacing, noise, and the samplers."""

from __future__ import annotations

import math

import pytest
import torch

from colorize_cli.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    SCHEDULES,
    NoiseSchedule,
    batch_randn,
    dynamic_threshold,
    linear_interpolation_degradation,
    make_denoiser,
    make_generators,
    sample_cold,
    sample_ddim,
    sample_ddpm,
    sample_oneshot,
)

T = 1000
SHAPE = (2, 8, 8)  # per item: two ab channels, like the colorizer's output
STEP_COUNTS = [1, 2, 7, 50]
F32_EPS = torch.finfo(torch.float32).eps


def schedule_named(name: str) -> NoiseSchedule:
    return NoiseSchedule.from_name(name, T)


def clean_batch(batch: int = 2, seed: int = 0) -> torch.Tensor:
    # Inside (-1, 1) so the denoiser's clipping never changes the true x0.
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *SHAPE), generator=g) * 1.8 - 0.9


def oracle_network(schedule: NoiseSchedule, x0: torch.Tensor, prediction: str, seen: list[int]):
    """A network that outputs the exact training target for whatever x_t it is given."""

    def network(x_t, t):
        seen.append(int(t[0]))
        _, eps = schedule.predict_x0_eps(x_t, t, x0, "x0")  # the noise that x_t carries
        return schedule.training_target(x0, eps, t, prediction)

    return network


def oracle_tolerance(schedule: NoiseSchedule, seen: list[int], prediction: str, kind: str) -> float:
    """Float32 rounding bound on the result of an oracle run.

    eps prediction recovers x0 by dividing by sqrt(ab_t), which amplifies rounding by up to
    1/sqrt(ab_t) (≈2e4 at the cosine schedule's last training step). DDPM and DDIM return the
    last x0_hat, so only the last step counts. Cold sampling carries every step's residual
    x_s − D(x0_hat, s) to the end, each weighted by how far sqrt(ab) moves in that step.
    """
    if prediction != "eps":
        return 1e-5
    step_error = [16 * F32_EPS / math.sqrt(schedule.alpha_bar(t)) for t in seen]
    if kind != "cold":
        return 1e-5 + step_error[-1]
    sqrt_ab = [math.sqrt(schedule.alpha_bar(t)) for t in seen] + [1.0]
    return 1e-5 + sum(e * (b - a) for e, a, b in zip(step_error, sqrt_ab, sqrt_ab[1:]))


# --- schedules and respacing -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_alphas_cumprod_decrease_strictly_inside_unit_interval(name):
    ab = schedule_named(name).alphas_cumprod
    assert ab.dtype == torch.float32 and ab.device.type == "cpu" and ab.shape == (T,)
    assert torch.all(ab > 0) and torch.all(ab < 1)
    assert torch.all(ab[1:] < ab[:-1])


def test_cosine_schedule_matches_its_closed_form():
    ab = NoiseSchedule.cosine(T, s=0.008).alphas_cumprod.double()
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    # Away from the clipped final beta, ab_t = f(t + 1) / f(0).
    for t in (0, 100, 500, 900):
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)
    assert ab[-1].item() == pytest.approx(ab[-2].item() * (1 - 0.999), rel=1e-4)


def test_unknown_schedule_name_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        NoiseSchedule.from_name("quadratic", T)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_timesteps_respacing(name):
    schedule = schedule_named(name)
    assert schedule.timesteps(1) == [T - 1]
    assert schedule.timesteps(T) == list(range(T - 1, -1, -1))
    for steps in (2, 3, 7, 50, 333, 999):
        ts = schedule.timesteps(steps)
        assert len(ts) == steps and ts[0] == T - 1 and ts[-1] >= 0
        assert all(a > b for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("steps", [0, -1, T + 1])
def test_timesteps_rejects_out_of_range_steps(steps):
    with pytest.raises(ValueError):
        schedule_named("linear").timesteps(steps)


# --- prediction conversions ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_q_sample_then_predict_x0_eps_round_trips(name, prediction):
    schedule = schedule_named(name)
    x0 = clean_batch(batch=5)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 10, 500, 990, T - 1])
    x_t = schedule.q_sample(x0, t, noise)
    target = schedule.training_target(x0, noise, t, prediction)
    x0_hat, eps_hat = schedule.predict_x0_eps(x_t, t, target, prediction)
    for i, ti in enumerate(t.tolist()):
        ab = schedule.alpha_bar(ti)
        # Whichever quantity is recovered by division inherits that division's conditioning.
        tol = 1e-5 + 16 * F32_EPS / math.sqrt(min(ab, 1 - ab))
        assert torch.allclose(x0_hat[i], x0[i], atol=tol, rtol=0)
        assert torch.allclose(eps_hat[i], noise[i], atol=tol, rtol=0)


def test_training_targets_follow_their_definitions():
    schedule = schedule_named("cosine")
    x0, noise = clean_batch(batch=2), torch.randn(2, *SHAPE)
    t = torch.tensor([3, 700])
    a = schedule.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - schedule.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(schedule.q_sample(x0, t, noise), a * x0 + sigma * noise)
    assert torch.equal(schedule.training_target(x0, noise, t, "eps"), noise)
    assert torch.equal(schedule.training_target(x0, noise, t, "x0"), x0)
    assert torch.allclose(schedule.training_target(x0, noise, t, "v"), a * noise - sigma * x0)
    with pytest.raises(ValueError, match="unknown prediction"):
        schedule.training_target(x0, noise, t, "score")


# --- denoiser adapter and dynamic thresholding -----------------------------------------------


def test_dynamic_threshold_clamps_to_percentile_then_rescales():
    g = torch.Generator().manual_seed(3)
    big = torch.randn((1, *SHAPE), generator=g) * 3  # many pixels beyond [-1, 1]
    small = torch.rand((1, *SHAPE), generator=g) * 1.6 - 0.8  # already inside
    x0 = torch.cat([big, small])
    out = dynamic_threshold(x0, 0.9)

    s = torch.quantile(big.abs().flatten(), 0.9).item()
    assert s > 1
    assert torch.allclose(out[0], big.clamp(-s, s) / s, atol=1e-6)
    assert out[0].abs().max().item() == pytest.approx(1.0)
    # s = max(percentile, 1) = 1 for the in-range sample: untouched, whatever its batch mate.
    assert torch.equal(out[1], small[0])


def test_make_denoiser_clip_threshold_and_raw():
    schedule = schedule_named("linear")
    t = torch.tensor([10, 10])
    x_t = torch.zeros(2, *SHAPE)
    wild = torch.linspace(-3, 3, 2 * 128).view(2, *SHAPE)
    network = lambda x, t: wild  # noqa: E731  (an x0 network that overshoots)

    clipped = make_denoiser(network, schedule, "x0")(x_t, t)
    assert torch.equal(clipped, wild.clamp(-1, 1))
    raw = make_denoiser(network, schedule, "x0", clip=False)(x_t, t)
    assert torch.equal(raw, wild)
    thresholded = make_denoiser(network, schedule, "x0", threshold=0.95)(x_t, t)
    assert torch.allclose(thresholded, dynamic_threshold(wild, 0.95))
    assert thresholded.abs().max() <= 1.0
    with pytest.raises(ValueError):
        make_denoiser(network, schedule, "x0", threshold=1.5)
    with pytest.raises(ValueError):
        make_denoiser(network, schedule, "score")


# --- samplers with an oracle denoiser ------------------------------------------------------------


def _gaussian_cold(schedule: NoiseSchedule, eps: torch.Tensor):
    """D(x0, s) = sqrt(ab)·x0 + sqrt(1 − ab)·eps, fixed eps; cold level s ↔ training step s − 1."""

    def degrade(x0, s):
        ab = torch.cat([torch.ones(1), schedule.alphas_cumprod])[s].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    return degrade


def _run_sampler(kind, schedule, denoise, x0, steps):
    generators = make_generators(seed=7, n=x0.shape[0])
    x_T = batch_randn(generators, x0.shape[1:])
    if kind == "ddpm":
        return sample_ddpm(denoise, schedule, x_T, steps, generators)
    if kind.startswith("ddim"):
        eta = float(kind.split("-")[1])
        return sample_ddim(denoise, schedule, x_T, steps, generators, eta=eta)
    # Cold: restore through the denoiser at training step s - 1; start from the degraded x0.
    degrade = _gaussian_cold(schedule, x_T)
    restore = lambda x_s, s: denoise(x_s, s - 1)  # noqa: E731
    return sample_cold(restore, degrade, degrade(x0, torch.full((x0.shape[0],), T)), steps, T)


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("kind", ["ddpm", "ddim-0.0", "ddim-0.5", "cold"])
def test_oracle_denoiser_is_recovered(kind, name, prediction, steps):
    schedule = schedule_named(name)
    x0 = clean_batch()
    seen: list[int] = []
    denoise = make_denoiser(oracle_network(schedule, x0, prediction, seen), schedule, prediction)
    out = _run_sampler(kind, schedule, denoise, x0, steps)

    # The network is queried at the respaced *training* timesteps, not at step indices.
    assert seen == schedule.timesteps(steps)
    assert out.dtype == torch.float32
    tol = oracle_tolerance(schedule, seen, prediction, kind)
    assert torch.allclose(out, x0, atol=tol, rtol=0), (out - x0).abs().max()


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_cold_linear_interpolation_recovers_x0_with_exact_restoration(steps):
    x0 = clean_batch()
    grey = torch.full((1, *SHAPE), 0.25)
    degrade = linear_interpolation_degradation(grey, T)
    levels: list[int] = []

    def restore(x_s, s):
        levels.append(int(s[0]))
        return x0

    out = sample_cold(restore, degrade, degrade(x0, torch.full((2,), T)), steps, T)
    assert levels[0] == T and len(levels) == steps and 0 not in levels
    assert torch.allclose(out, x0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [2, 7, 50])
def test_cold_improved_sampling_cancels_restoration_error_for_additive_degradation(steps):
    """Bansal et al.'s argument for Algorithm 2: for D(x, s) = x + (s/T)·e, x_{s'} = D(x0, s')
    exactly whatever R returns, so even a poor restoration lands on x0. The naive update
    x_{s'} = D(x0_hat, s') would return the last (wrong) x0_hat instead."""
    x0 = clean_batch()
    e = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    degrade = lambda x, s: x + (s.to(x.dtype) / T).view(-1, 1, 1, 1) * e  # noqa: E731
    poor_restore = lambda x_s, s: 0.5 * x_s  # noqa: E731
    out = sample_cold(poor_restore, degrade, degrade(x0, torch.full((2,), T)), steps, T)
    assert torch.allclose(out, x0, atol=1e-5, rtol=0)


def test_linear_interpolation_degradation_endpoints():
    x0, grey = clean_batch(), torch.full((1, *SHAPE), 0.25)
    degrade = linear_interpolation_degradation(grey, T)
    assert torch.equal(degrade(x0, torch.zeros(2, dtype=torch.long)), x0)
    assert torch.allclose(degrade(x0, torch.full((2,), T)), grey.expand_as(x0))
    half = degrade(x0, torch.tensor([T // 2, 0]))
    assert torch.allclose(half[0], 0.5 * x0[0] + 0.5 * grey[0])
    assert torch.equal(half[1], x0[1])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_ddim_eta0_with_oracle_follows_forward_marginals(name):
    """With the true x0, DDIM η=0 keeps the starting noise: every x_t it visits is exactly
    q_sample(x0, t, eps). Wrong respaced coefficients would break this at some step."""
    schedule = schedule_named(name)
    x0 = clean_batch()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    errors = []

    def denoise(x_t, t):
        errors.append((x_t - schedule.q_sample(x0, t, eps)).abs().max().item())
        return x0

    sample_ddim(denoise, schedule, schedule.q_sample(x0, torch.full((2,), T - 1), eps), 7)
    assert len(errors) == 7 and max(errors) < 1e-5


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_ddpm_with_oracle_visits_the_forward_marginals(name):
    """The respaced posterior q(x_t' | x_t, x0) must leave x_t' ~ q(x_t' | x0): the implied noise
    (x_t − sqrt(ab)·x0)/sqrt(1 − ab) is standard normal at every step. Using the training betas
    instead of the respaced ones shrinks it far below 1."""
    schedule = schedule_named(name)
    x0 = torch.rand(1, 4, 128, 128, generator=torch.Generator().manual_seed(2)) * 1.8 - 0.9
    generators = make_generators(11, 1)
    stds, means = [], []

    def denoise(x_t, t):
        _, eps = schedule.predict_x0_eps(x_t, t, x0, "x0")
        stds.append(eps.std().item())
        means.append(eps.mean().item())
        return x0

    x_T = schedule.q_sample(x0, torch.tensor([T - 1]), batch_randn(generators, x0.shape[1:]))
    sample_ddpm(denoise, schedule, x_T, 7, generators)
    assert len(stds) == 7
    assert all(abs(s - 1) < 0.02 for s in stds), stds
    assert all(abs(m) < 0.02 for m in means), means


# --- cold diffusion with Gaussian degradation is DDIM -------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 7, 50])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_cold_gaussian_degradation_reduces_to_ddim_eta0(name, steps):
    """Bansal et al.: with D(x0, s) = sqrt(ab_s)·x0 + sqrt(1 − ab_s)·ε, where ε is the noise that
    makes D(x0_hat, s) = x_s, improved cold sampling is DDIM η=0, step for step.

    The restoration is deliberately imperfect, so x0_hat ≠ x0 and the noise it implies changes
    every step. (With ε frozen at its starting value the two agree only for an exact
    restoration: they differ by (1 − sqrt(1−ab_s')/sqrt(1−ab_s))·sqrt(1−ab_s)·(ε_hat − ε).) As this
    ε makes x_s − D(x0_hat, s) vanish, the test checks levels and respacing, not the improved
    update's correction term; the additive-degradation test above covers that."""
    schedule = schedule_named(name)
    ab_at_level = torch.cat([torch.ones(1), schedule.alphas_cumprod])  # level s ↔ step s − 1
    x0 = clean_batch()
    eps0 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))

    def imperfect(x_t, t):
        return 0.9 * x0 + 0.05 * x_t

    ddim_path: list[torch.Tensor] = []

    def ddim_denoise(x_t, t):
        ddim_path.append(x_t)
        return imperfect(x_t, t)

    x_T = schedule.q_sample(x0, torch.full((2,), T - 1), eps0)
    ddim_out = sample_ddim(ddim_denoise, schedule, x_T, steps)

    cold_path: list[torch.Tensor] = []
    implied_eps = {}

    def restore(x_s, s):
        cold_path.append(x_s)
        x0_hat = imperfect(x_s, s - 1)
        ab = ab_at_level[s].view(-1, 1, 1, 1)
        implied_eps["eps"] = (x_s - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        return x0_hat

    def degrade(x0_, s):
        ab = ab_at_level[s].view(-1, 1, 1, 1)
        return ab.sqrt() * x0_ + (1 - ab).sqrt() * implied_eps["eps"]

    cold_out = sample_cold(restore, degrade, x_T, steps, T)

    assert len(cold_path) == len(ddim_path) == steps
    for x_cold, x_ddim in zip(cold_path, ddim_path):
        assert torch.allclose(x_cold, x_ddim, atol=1e-5, rtol=0)
    assert torch.allclose(cold_out, ddim_out, atol=1e-5, rtol=0)
    # And the check has teeth: the imperfect restoration really does miss x0.
    assert (ddim_out - x0).abs().max() > 1e-2


def test_oneshot_is_one_restoration_at_level_T():
    x_T = torch.randn(3, *SHAPE)
    calls = []

    def restore(x_s, s):
        calls.append(s)
        return 0.5 * x_s

    out = sample_oneshot(restore, x_T, T)
    assert len(calls) == 1 and calls[0].tolist() == [T] * 3 and calls[0].dtype == torch.long
    assert torch.equal(out, 0.5 * x_T)


# --- randomness does not depend on the batch ------------------------------------------------


def test_generators_are_deterministic_and_independent_of_batch_composition():
    batch = batch_randn(make_generators(seed=42, n=3), SHAPE)
    for k in range(3):
        alone = batch_randn(make_generators(seed=42, n=1, offset=k), SHAPE)
        assert torch.equal(alone[0], batch[k])
    # Items differ from each other, and from another seed's items.
    assert not torch.equal(batch[0], batch[1])
    other = batch_randn(make_generators(seed=43, n=3), SHAPE)
    assert not any(torch.equal(batch[k], other[k]) for k in range(3))
    assert batch.dtype == torch.float32 and batch.shape == (3, *SHAPE)


def test_make_generators_rejects_negative_seed():
    with pytest.raises(ValueError):
        make_generators(seed=-1, n=2)


@pytest.mark.parametrize("kind", ["ddpm", "ddim-0.5"])
def test_stochastic_sampling_of_an_image_ignores_its_batch(kind):
    schedule = schedule_named("cosine")
    denoise = lambda x_t, t: torch.tanh(0.7 * x_t)  # noqa: E731  (elementwise, batch-independent)

    def run(generators):
        x_T = batch_randn(generators, SHAPE)
        if kind == "ddpm":
            return sample_ddpm(denoise, schedule, x_T, 10, generators)
        return sample_ddim(denoise, schedule, x_T, 10, generators, eta=0.5)

    batched = run(make_generators(seed=5, n=3))
    for k in range(3):
        alone = run(make_generators(seed=5, n=1, offset=k))
        assert torch.allclose(alone[0], batched[k], atol=1e-6, rtol=0)
    assert not torch.allclose(batched[0], batched[1])


# --- registry, progress and argument checks -------------------------------------------------


def test_sampler_registry():
    assert SAMPLERS == {
        "ddpm": sample_ddpm,
        "ddim": sample_ddim,
        "cold": sample_cold,
        "oneshot": sample_oneshot,
    }


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "cold"])
def test_progress_callback_counts_steps(sampler):
    schedule = schedule_named("linear")
    x_T = torch.zeros(1, *SHAPE)
    progress = []
    callback = lambda i, n: progress.append((i, n))  # noqa: E731
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    if sampler == "ddpm":
        sample_ddpm(zero, schedule, x_T, 4, make_generators(0, 1), callback=callback)
    elif sampler == "ddim":
        sample_ddim(zero, schedule, x_T, 4, callback=callback)
    else:
        sample_cold(zero, linear_interpolation_degradation(x_T, T), x_T, 4, T, callback=callback)
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_ddim_with_noise_needs_generators():
    schedule = schedule_named("linear")
    with pytest.raises(ValueError, match="generator"):
        sample_ddim(lambda x, t: x, schedule, torch.zeros(1, *SHAPE), 3, eta=0.5)
