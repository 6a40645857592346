"""The model zoo: configs and the wrappers that turn a grey image L into chroma ab.

Every model maps normalised L (B, 1, h, w) in [-1, 1] to normalised ab (B, 2, h, w) through
`colorize(...)`. Diffusion models hand a denoiser to a sampler from `colorize_cli.diffusion`;
the network never sees the sampler. The config travels inside the safetensors file, so a
checkpoint rebuilds its model without guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .. import color, diffusion
from .encoder import SemanticEncoder
from .unet import UNet, UNetConfig
from .vqvae import VQConfig, VQVAE

ENCODERS = {"efficientnet-lite0": SemanticEncoder}

Callback = Callable[[int, int], None]


@dataclass
class ModelConfig:
    architecture: str                       # a key of ARCHITECTURES
    unet: UNetConfig = field(default_factory=UNetConfig)
    encoder: str | None = None              # a key of ENCODERS, or None
    prediction: str = "v"                   # diffusion target: eps | v | x0
    schedule: str = "cosine"                # noise schedule: linear | cosine
    timesteps: int = 1000                   # training steps T (diffusion and cold diffusion)
    vq: VQConfig | None = None              # latent-cold only
    default_sampler: str = "ddim"
    default_steps: int = 20
    size: int = 256                         # default working resolution (longer side, px)
    head: str = "regression"                # one-step models: regression (ab) | bins (ab-cell scores)
    temperature: float = 0.38               # bins head: annealed-mean temperature (Zhang et al.'s 0.38)
    rebalance: float = 1.0                  # bins head: share of training's colour rebalancing kept (0..1)
    saturation: float = 1.0                 # chroma gain the engine applies to the output (color.saturate)
    strength_profile: list | None = None    # lightness × hue (× chroma) weights of that gain (color.saturate)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["unet"] = UNetConfig.from_dict(d.get("unet", {}))
        if d.get("vq") is not None:
            d["vq"] = VQConfig.from_dict(d["vq"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


class ColorModel(nn.Module):
    """Base class: a U-Net (and optional frozen encoder) that colours L."""

    samplers: tuple[str, ...] = ()

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # checked at load, not at the first photo; kept as a tensor for every photo
        self.strength_profile = (None if config.strength_profile is None
                                 else color.check_strength_profile(config.strength_profile))
        self.encoder = ENCODERS[config.encoder]() if config.encoder else None
        self.unet = UNet(config.unet)

    @property
    def multiple(self) -> int:
        """Working-size sides must be multiples of this."""
        return self.unet.downscale

    def context(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.encoder(L) if self.encoder is not None else None

    def check_sampler(self, sampler: str | None, steps: int | None) -> tuple[str, int]:
        sampler = sampler or self.config.default_sampler
        steps = self.config.default_steps if steps is None else steps
        if sampler not in self.samplers:
            raise ValueError(f"model {self.config.architecture!r} supports samplers {', '.join(self.samplers)}; not {sampler!r}")
        if steps < 1:
            raise ValueError("steps must be at least 1")
        return sampler, steps

    def colorize(self, L: torch.Tensor, *, sampler: str | None = None, steps: int | None = None,
                 generators: list[torch.Generator] | None = None, callback: Callback | None = None) -> torch.Tensor:
        raise NotImplementedError


class LabDDPM(ColorModel):
    """Conditional diffusion on ab given L: the U-Net sees [noisy ab, L] and predicts eps, v or x0."""

    samplers = ("ddpm", "ddim")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.schedule = diffusion.NoiseSchedule.from_name(config.schedule, config.timesteps)
        if config.prediction not in diffusion.PREDICTIONS:  # at load, not at the first photo
            raise ValueError(f"unknown prediction {config.prediction!r}; choose from {list(diffusion.PREDICTIONS)}")

    def network(self, L: torch.Tensor, context) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x_t, t: self.unet(torch.cat([x_t, L], dim=1), t, context)

    def colorize(self, L, *, sampler=None, steps=None, generators=None, callback=None):
        sampler, steps = self.check_sampler(sampler, steps)
        steps = min(steps, self.config.timesteps)
        generators = generators or diffusion.make_generators(0, L.shape[0])
        denoise = diffusion.make_denoiser(self.network(L, self.context(L)), self.schedule, self.config.prediction)
        x_T = diffusion.batch_randn(generators, (2, *L.shape[-2:]), L.device, L.dtype)
        if sampler == "ddpm":
            ab = diffusion.sample_ddpm(denoise, self.schedule, x_T, steps, generators, callback=callback)
        else:
            ab = diffusion.sample_ddim(denoise, self.schedule, x_T, steps, generators, eta=0.0, callback=callback)
        return ab.clamp(-1.0, 1.0)


class OneStepUNet(ColorModel):
    """One forward pass L -> ab (the `unet` model and the `unet-gan` generator).

    The `regression` head predicts normalised ab directly. The `bins` head scores each cell of
    a 10-unit a*b* grid (Zhang et al., "Colorful Image Colorization", 2016) and returns the
    *annealed mean* of that distribution: softmax(scores / T) averaged over the cell centres.
    A regression to the mean of plausible colours is brownish; the annealed mean leans to the
    likeliest colour (T -> 0 is the mode, T = 1 the mean), which keeps photos colourful.
    """

    samplers = ("oneshot",)
    HEADS = ("regression", "bins")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.head not in self.HEADS:
            raise ValueError(f"unknown head {config.head!r}; known: {', '.join(self.HEADS)}")
        if config.head == "bins":
            if not config.temperature > 0:
                raise ValueError(f"the bins head needs a temperature > 0, not {config.temperature}")
            if not 0.0 <= config.rebalance <= 1.0:
                raise ValueError(f"the bins head needs a rebalance between 0 and 1, not {config.rebalance}")
            # The centres travel in the weights file. A fresh model computes them; one built on
            # the meta device to receive a file's tensors (load_model) does not need to.
            centres = torch.zeros(config.unet.out_channels, 2)
            if torch.get_default_device().type != "meta":
                centres = color.ab_bin_centres() / color.AB_SCALE
                if len(centres) != config.unet.out_channels:
                    raise ValueError(f"the bins head needs {len(centres)} output channels, "
                                     f"not {config.unet.out_channels}")
            self.register_buffer("ab_centres", centres)
            # log w per cell: the class-rebalancing weights training gave each cell (BinPrior).
            # The scores learn log p(cell | L) + log w; the annealed mean subtracts the share
            # (1 - rebalance) of log w, so 0 recovers the plain posterior and 1 keeps the boost
            # that rare, saturated colours got in training.
            self.register_buffer("ab_log_weights", torch.zeros(config.unet.out_channels))

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        """Normalised ab (regression) or one score per ab cell (bins), (B, C, h, w)."""
        return self.unet(L, None, self.context(L))

    def annealed_mean(self, scores: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Cell scores (B, Q, h, w) -> normalised ab (B, 2, h, w)."""
        t = self.config.temperature if temperature is None else temperature
        scores = scores.float()
        if self.config.rebalance < 1.0:  # a full-size pass: only when there is something to take out
            scores = scores - ((1.0 - self.config.rebalance) * self.ab_log_weights.float()).view(1, -1, 1, 1)
        p = torch.softmax(scores / t, dim=1)
        return torch.einsum("bqhw,qc->bchw", p, self.ab_centres.float())

    def colorize(self, L, *, sampler=None, steps=None, generators=None, callback=None):
        self.check_sampler(sampler, 1 if steps is None else steps)
        out = self.predict(L)
        ab = (self.annealed_mean(out) if self.config.head == "bins" else out).clamp(-1.0, 1.0)
        if callback is not None:
            callback(1, 1)
        return ab


class LatentCold(ColorModel):
    """Cold diffusion in a VQ-VAE latent space: carries the grey image's latent to the colour one.

    Degradation D(z0, s) = (1 - s/T) z0 + (s/T) z_grey; the U-Net restores z0 from (z_s, L, s).
    """

    samplers = ("cold", "oneshot")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.vq is None:
            raise ValueError("latent-cold needs a vq config")
        self.vqvae = VQVAE(config.vq)

    @property
    def multiple(self) -> int:
        return self.vqvae.downscale * self.unet.downscale

    def latent_L(self, L: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(L, self.vqvae.downscale)

    def grey_latent(self, L: torch.Tensor) -> torch.Tensor:
        return self.vqvae.quantize(self.vqvae.encode(L, torch.zeros_like(L).expand(-1, 2, -1, -1)))

    def restorer(self, L: torch.Tensor, context) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        L_lat = self.latent_L(L)
        return lambda z_s, s: self.unet(torch.cat([z_s, L_lat], dim=1), s, context)

    def restore_latent(self, L, *, sampler=None, steps=None, callback=None) -> torch.Tensor:
        """The colour latent z0 restored from the grey one (before quantisation and decoding)."""
        sampler, steps = self.check_sampler(sampler, steps)
        T = self.config.timesteps
        z_grey = self.grey_latent(L)
        restore = self.restorer(L, self.context(L))
        if sampler == "oneshot":
            z0 = diffusion.sample_oneshot(restore, z_grey, T)
            if callback is not None:
                callback(1, 1)
            return z0
        degrade = diffusion.linear_interpolation_degradation(z_grey, T)
        return diffusion.sample_cold(restore, degrade, z_grey, min(steps, T), T, callback=callback)

    def colorize(self, L, *, sampler=None, steps=None, generators=None, callback=None):
        z0 = self.restore_latent(L, sampler=sampler, steps=steps, callback=callback)
        return self.vqvae.decode(self.vqvae.quantize(z0), L)


ARCHITECTURES: dict[str, type[ColorModel]] = {
    "lab-ddpm": LabDDPM,
    "latent-cold": LatentCold,
    "unet": OneStepUNet,
    "unet-gan": OneStepUNet,
}


def build_model(config: ModelConfig | dict) -> ColorModel:
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[config.architecture](config)


def load_model(config: ModelConfig | dict, state: dict[str, torch.Tensor]) -> ColorModel:
    """A model holding exactly `state`'s weights (strict: every parameter and buffer).

    Built on the meta device and then handed `state`'s tensors, so no time goes into random
    initialisation that would be overwritten (~40 % of building a bundled model on two cores).
    """
    with torch.device("meta"):
        model = build_model(config)
    model.load_state_dict(state, strict=True, assign=True)
    unset = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if unset:  # a buffer outside the state dict would have no data
        raise ValueError(f"the weights leave {', '.join(unset[:3])} unset")
    return model


# U-Net sizes: "small" is the GPU-trained size; "mini" a quarter of its FLOPs, for CPU training
# and the fastest CPU inference; "tiny" is for tests (a few thousand parameters); "base" (28 M
# parameters, too big to bundle) is the size of the field notes' H100 throughput reference (shared/docs/FIELD.md).
PRESETS = {
    "tiny": UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=()),
    "mini": UNetConfig(base_channels=16, channel_mults=(1, 2, 4, 8), num_res_blocks=1, attention_levels=(3,)),
    "small": UNetConfig(base_channels=32, channel_mults=(1, 2, 4, 4), num_res_blocks=2, attention_levels=(3,)),
    "base": UNetConfig(base_channels=64, channel_mults=(1, 2, 4, 4), num_res_blocks=2, attention_levels=(2, 3)),
}


def preset_config(architecture: str, preset: str = "small", *, encoder: str | None = None,
                  head: str = "regression") -> ModelConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if head != "regression" and architecture not in ("unet", "unet-gan"):
        raise ValueError(f"--head {head} is for the one-step models (unet, unet-gan), not {architecture}")
    tiny = preset == "tiny"
    unet = PRESETS[preset]
    context = SemanticEncoder.channels if encoder else 0
    if architecture == "lab-ddpm":
        return ModelConfig(architecture, replace(unet, in_channels=3, out_channels=2, context_channels=context),
                           encoder=encoder, default_sampler="ddim", default_steps=20)
    if architecture in ("unet", "unet-gan"):
        out = len(color.ab_bin_centres()) if head == "bins" else 2
        return ModelConfig(architecture, replace(unet, in_channels=1, out_channels=out, time_conditioned=False,
                                                 context_channels=context),
                           encoder=encoder, default_sampler="oneshot", default_steps=1, head=head)
    if architecture == "latent-cold":
        vq = VQConfig(channels=8, latent_channels=4, codebook_size=32) if tiny else VQConfig()
        return ModelConfig(architecture, replace(unet, in_channels=vq.latent_channels + 1, out_channels=vq.latent_channels,
                                                 context_channels=context),
                           encoder=encoder, vq=vq, default_sampler="cold", default_steps=10)
    raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
