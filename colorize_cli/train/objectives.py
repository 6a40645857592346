"""What each model of the zoo learns: one `Objective` per architecture.

An objective owns one or more optimizer *groups* (e.g. the generator and the discriminator) and,
for each group, a loss module: an `nn.Module` whose `forward(L, ab, extras, prev)` returns
`(loss, logs, out)`. Loss modules are what the loop wraps in DDP and `torch.compile`, so they
contain only tensor work on fixed shapes: randomness (noise, timesteps) is drawn beforehand by
`draw(...)` on the device with the loop's generator, and nothing in them syncs with the host.
`stages` splits a run into consecutive phases that train different groups (latent-cold: the
VQ-VAE first, then the restorer; unet-gan: regression warm-up, then adversarial).

Inputs: L (B, 1, h, w) and ab (B, 2, h, w), normalised to [-1, 1] (see `colorize_cli.color`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import color
from ..diffusion import NoiseSchedule
from ..models.zoo import ColorModel, LabDDPM, LatentCold, OneStepUNet
from .data import MissingTrainingExtraError, TrainingError

PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


@dataclass
class ObjectiveOptions:
    perceptual_weight: float = 0.1     # unet / unet-gan: weight of the VGG16 feature loss
    colourfulness_weight: float = 0.0  # unet / unet-gan: weight of the per-image colourfulness match
    chroma_weight: float = 0.0         # unet / unet-gan: weight of the per-pixel chroma match
    adv_weight: float = 0.01           # unet-gan: weight of the generator's adversarial loss
    gan_start: float = 0.3             # unet-gan: fraction of steps of L1 + perceptual warm-up
    vq_fraction: float = 0.3           # latent-cold: fraction of steps spent on the VQ-VAE
    stage: str = "auto"                # latent-cold: auto | vq | cold
    encoder_lr_scale: float = 0.0      # the pretrained encoder's share of the learning rate (0: frozen)


@dataclass
class Stage:
    name: str
    start: int                          # first step (inclusive)
    end: int                            # last step (exclusive)
    groups: tuple[str, ...]             # optimizer groups updated each step, in this order
    trainable: tuple[str, ...] = field(default=())  # groups whose parameters require grad


def _hidden(module: nn.Module):
    """Keep a module reachable from a loss module without registering it (DDP must not see it)."""
    return (module,)


class _DeviceSchedule(NoiseSchedule):
    """The model's schedule, gathering ab_t from a copy on the data's device.

    The base class gathers on the CPU, which costs a host-device sync per training step.
    """

    def __init__(self, base: NoiseSchedule, owner: nn.Module):
        super().__init__(base.alphas_cumprod)
        self._owner = _hidden(owner)

    def _gather(self, t: Tensor, like: Tensor) -> Tensor:
        ab = self._owner[0].alphas_cumprod[t].to(like.dtype)
        return ab.view(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------------------------------
# lab-ddpm


class DiffusionLoss(nn.Module):
    """MSE between the U-Net's output and the eps / v / x0 target at a random timestep."""

    def __init__(self, model: LabDDPM):
        super().__init__()
        self.model = model
        self.register_buffer("alphas_cumprod", model.schedule.alphas_cumprod.clone(), persistent=False)
        self.schedule = _DeviceSchedule(model.schedule, self)

    def forward(self, L, ab, extras, prev=None):
        noise, t = extras
        x_t = self.schedule.q_sample(ab, t, noise)
        context = self.model.context(L)  # a graph only when the encoder is trained (requires_grad)
        out = self.model.network(L, context)(x_t, t)
        target = self.schedule.training_target(ab, noise, t, self.model.config.prediction)
        loss = F.mse_loss(out.float(), target)
        return loss, {"mse": loss.detach()}, None


class Objective:
    """Base: one group, "model", trained the whole run."""

    def __init__(self, model: ColorModel, steps: int, options: ObjectiveOptions):
        self.model, self.steps, self.options = model, steps, options

    def group_modules(self) -> dict[str, nn.Module]:
        """The modules whose parameters each group's optimizer owns; a trained encoder joins
        "model" in `group_parameters`."""
        return {"model": self.model.unet}

    @property
    def trains_encoder(self) -> bool:
        return self.options.encoder_lr_scale > 0 and self.model.encoder is not None

    def group_parameters(self) -> dict[str, list[tuple[nn.Module, float]]]:
        """Each group's modules with their share of the learning rate. A trained encoder belongs to
        the "model" group (the one that uses its features), at --encoder-lr-scale of its rate."""
        groups = {name: [(module, 1.0)] for name, module in self.group_modules().items()}
        if self.trains_encoder:
            groups["model"].append((self.model.encoder, self.options.encoder_lr_scale))
        return groups

    def stages(self) -> list[Stage]:
        return [Stage("train", 0, self.steps, ("model",), ("model",))]

    def stage_at(self, step: int) -> Stage:
        for stage in self.stages():
            if stage.start <= step < stage.end:
                return stage
        return self.stages()[-1]

    def loss_modules(self, stage: Stage) -> dict[str, nn.Module]:
        raise NotImplementedError

    def draw(self, L: Tensor, generator: torch.Generator) -> tuple:
        return ()

    def extra_modules(self) -> dict[str, nn.Module]:
        """Training-only modules (not exported) whose weights the checkpoint keeps."""
        return {}

    def enter_stage(self, stage: Stage, ema_model: ColorModel | None) -> None:
        """Called when a stage starts (also on resume): set requires_grad for its groups."""
        modules = self.group_modules()
        for name, module in modules.items():
            module.requires_grad_(name in stage.trainable)
        if self.model.encoder is not None:
            self.model.encoder.requires_grad_(self.trains_encoder and "model" in stage.trainable)


class LabDDPMObjective(Objective):
    def __init__(self, model, steps, options):
        super().__init__(model, steps, options)
        self.loss = DiffusionLoss(model)

    def loss_modules(self, stage):
        return {"model": self.loss}

    def draw(self, L, generator):
        noise = torch.randn((L.shape[0], 2, *L.shape[-2:]), device=L.device, generator=generator)
        t = torch.randint(0, self.model.config.timesteps, (L.shape[0],), device=L.device, generator=generator)
        return noise, t


# ---------------------------------------------------------------------------------------------
# unet and unet-gan


class Perceptual(nn.Module):
    """VGG16 feature distance between two sRGB images in [0, 1] (channel-normalised features, MSE
    per layer, summed), as in LPIPS without learnt weights."""

    def __init__(self):
        super().__init__()
        try:
            from ..bench.backbones import vgg16_features
            self.vgg = vgg16_features(PERCEPTUAL_LAYERS)
        except ImportError as e:  # the module or its weight package is missing
            raise MissingTrainingExtraError(f"the perceptual loss needs the VGG16 weights ({e}); "
                                            "install them or pass --perceptual-weight 0") from e
        except RuntimeError as e:  # MissingExtraError
            raise MissingTrainingExtraError(f"{e} (or pass --perceptual-weight 0)") from e
        mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, rgb_pred: Tensor, rgb_true: Tensor) -> Tensor:
        both = (torch.cat([rgb_pred, rgb_true]) - self.mean) / self.std
        loss = rgb_pred.new_zeros(())
        for feats in self.vgg(both).values():
            feats = feats.float()
            feats = feats / (feats.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fp, ft = feats.chunk(2)
            loss = loss + (fp - ft).pow(2).sum(1).mean()
        return loss


def lab_norm_to_rgb(L: Tensor, ab: Tensor) -> Tensor:
    """Normalised L, ab -> sRGB in [0, 1], in float32 (outside autocast)."""
    with torch.autocast(L.device.type, enabled=False):
        lab = torch.cat([color.denormalize_L(L.float()), color.denormalize_ab(ab.float())], dim=1)
        return color.lab_to_rgb(lab)


def colourfulness(rgb: Tensor) -> Tensor:
    """Hasler & Süsstrunk's M3 of each image of a (B, 3, H, W) sRGB batch in [0, 1], on the 0-255
    scale of the bench's `colourfulness` (population σ, signed opponent channels); differentiable."""
    rgb = rgb.float().flatten(2) * 255.0
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    spread = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False) + 1e-6).sqrt()
    offset = (rg.mean(dim=1).square() + yb.mean(dim=1).square() + 1e-6).sqrt()
    return spread + 0.3 * offset


def chroma_of(ab: Tensor) -> Tensor:
    """|ab| per pixel of a (B, 2, H, W) batch; the epsilon keeps the gradient finite at grey."""
    return (ab.float().square().sum(dim=1) + 1e-6).sqrt()


class RegressionLoss(nn.Module):
    """L1 on ab + perceptual loss on the RGB image; with a discriminator, + adversarial term.

    L1 predicts the median of the plausible colours, which for an unsure pixel is close to grey, so
    a regression model comes out muted. The colourfulness term (in the spirit of DDColor's
    colourfulness loss, but matched to each photo's own colourfulness instead of maximised) asks
    every image to be as colourful as its truth, |CF(pred) - CF(truth)| / 100, and leaves the model
    to find where the colour costs the least L1. The chroma term asks the same of every pixel,
    |C(pred) - C(truth)| with C = |ab| (normalised): how strong a colour is, not which hue (often
    easier to guess from grey than the hue), so the colour goes where the truth has it.
    """

    def __init__(self, model: OneStepUNet, perceptual_weight: float, disc: nn.Module | None = None,
                 adv_weight: float = 0.0, colourfulness_weight: float = 0.0, chroma_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.perceptual = Perceptual() if perceptual_weight > 0 else None
        self.perceptual_weight = perceptual_weight
        self.colourfulness_weight = colourfulness_weight
        self.chroma_weight = chroma_weight
        self._disc = _hidden(disc) if disc is not None else None
        self.adv_weight = adv_weight

    def forward(self, L, ab, extras, prev=None):
        context = self.model.context(L)  # a graph only when the encoder is trained (requires_grad)
        pred = self.model.unet(L, None, context).float()
        l1 = (pred - ab).abs().mean()
        loss, logs = l1, {"l1": l1.detach()}
        if self.perceptual is not None or self.colourfulness_weight > 0:
            # ab outside [-1, 1] is clipped by the conversion: pull it back in with the L1 term.
            rgb_pred, rgb_true = lab_norm_to_rgb(L, pred), lab_norm_to_rgb(L, ab)
        if self.perceptual is not None:
            p = self.perceptual(rgb_pred, rgb_true)
            loss = loss + self.perceptual_weight * p
            logs["perceptual"] = p.detach()
        if self.colourfulness_weight > 0:
            cf = (colourfulness(rgb_pred) - colourfulness(rgb_true)).abs().mean() / 100.0
            loss = loss + self.colourfulness_weight * cf
            logs["cf_gap"] = cf.detach()
        if self.chroma_weight > 0:
            chroma = (chroma_of(pred) - chroma_of(ab)).abs().mean()
            loss = loss + self.chroma_weight * chroma
            logs["chroma_gap"] = chroma.detach()
        if self._disc is not None:
            adv = -self._disc[0](torch.cat([L, pred], dim=1)).float().mean()  # hinge generator loss
            loss = loss + self.adv_weight * adv
            logs["g_adv"] = adv.detach()
        return loss, logs, pred.detach()


class BinPrior(nn.Module):
    """How often each ab cell is the nearest to a training pixel, and the class-rebalancing weights
    that follow (Zhang et al. 2016, eq. 3-4): w ∝ ((1 - λ) p̃ + λ / Q)^-1 with E_p̃[w] = 1, where p̃
    is the cell frequency smoothed by a Gaussian of `sigma` ab units. Counted as training goes (no
    pass over the data first); the counts are checkpointed with the run so a resume is exact.
    """

    def __init__(self, centres: Tensor, mix: float = 0.5, sigma: float = 5.0):
        super().__init__()
        self.mix = mix
        self.register_buffer("counts", torch.ones(len(centres)))  # one pseudo-count per cell
        d2 = torch.cdist(centres.double(), centres.double()).square()
        smooth = torch.exp(-d2 / (2 * sigma**2))
        self.register_buffer("smooth", (smooth / smooth.sum(dim=0, keepdim=True)).float(), persistent=False)

    @torch.no_grad()
    def update(self, nearest: Tensor) -> None:
        self.counts.scatter_add_(0, nearest.reshape(-1), torch.ones_like(nearest.reshape(-1), dtype=self.counts.dtype))

    def weights(self) -> Tensor:
        p = self.smooth @ (self.counts / self.counts.sum())
        w = 1.0 / ((1 - self.mix) * p + self.mix / len(p))
        return w / (p * w).sum()


class BinsLoss(nn.Module):
    """The `bins` head: cross-entropy against soft-encoded ab (a Gaussian over the 5 nearest cell
    centres, σ = 5 ab units), rebalanced so rare, saturated colours count as much as browns.

    The centres lie on a square grid, so a pixel's 5 nearest are among the 3×3 cells around its
    own: 9 distances per pixel instead of Q = 261.
    """

    NEIGHBOURS, SIGMA = 5, 5.0
    _OFFSETS = [(da, db) for da in (-1, 0, 1) for db in (-1, 0, 1)]

    def __init__(self, model: OneStepUNet, prior: BinPrior):
        super().__init__()
        self.model = model
        self.prior = prior
        grid = torch.round(model.ab_centres.float().cpu() * color.AB_SCALE / color.AB_BIN_SPACING).long()
        self.reach = int(grid.abs().max()) + 2                       # grid coordinates -reach..reach
        table = torch.full((2 * self.reach + 1, 2 * self.reach + 1), -1, dtype=torch.long)
        table[grid[:, 0] + self.reach, grid[:, 1] + self.reach] = torch.arange(len(grid))
        self.register_buffer("cell_of", table, persistent=False)     # grid coordinates -> bin, or -1
        self.register_buffer("offsets", torch.tensor(self._OFFSETS), persistent=False)

    def nearest_bins(self, ab_units: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 2) ab -> squared distances and indices (N, 5) of the nearest bins, nearest first."""
        home = torch.round(ab_units / color.AB_BIN_SPACING).long()
        cells = (home[:, None, :] + self.offsets).clamp(-self.reach, self.reach)     # (N, 9, 2)
        index = self.cell_of[cells[..., 0] + self.reach, cells[..., 1] + self.reach]   # (N, 9)
        d2 = (ab_units[:, None, :] - cells.float() * color.AB_BIN_SPACING).square().sum(-1)
        d2 = torch.where(index >= 0, d2, torch.full_like(d2, 1e6))   # cells outside sRGB: never chosen
        near_d2, pos = d2.topk(self.NEIGHBOURS, dim=1, largest=False)
        return near_d2, index.gather(1, pos).clamp_min(0)

    def forward(self, L, ab, extras, prev=None):
        context = self.model.context(L)  # a graph only when the encoder is trained (requires_grad)
        scores = self.model.unet(L, None, context).float()
        with torch.no_grad():
            target = color.denormalize_ab(ab.float()).permute(0, 2, 3, 1).reshape(-1, 2)
            near_d2, near = self.nearest_bins(target)
            q = torch.softmax(-near_d2 / (2 * self.SIGMA**2), dim=1)
            if self.model.training:
                self.prior.update(near[:, 0])
            weights = self.prior.weights()
            if self.model.training:  # the export carries them, so inference can take the boost back
                self.model.ab_log_weights.copy_(weights.log())
            weight = weights[near[:, 0]]
        logp = F.log_softmax(scores, dim=1).permute(0, 2, 3, 1).reshape(-1, scores.shape[1])
        ce = (weight * -(q * logp.gather(1, near)).sum(dim=1)).mean()
        logs = {"ce": ce.detach()}
        if self.model.training:  # the annealed mean costs as much as the loss: only for validation
            return ce, logs, None
        pred = self.model.annealed_mean(scores)
        logs["l1"] = (pred - ab).abs().mean()
        return ce, logs, pred


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN over [L, ab]: GroupNorm instead of BatchNorm, 3x3 stride-1 layers so
    small training crops (16 px in tests) keep a 2x2 patch map."""

    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(8, 2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.GroupNorm(8, 4 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 8 * c, 3, 1, 1), nn.GroupNorm(8, 8 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(8 * c, 1, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DiscriminatorLoss(nn.Module):
    """Hinge loss: real [L, ab] above +1, the generator's (detached) output below -1."""

    def __init__(self, disc: PatchDiscriminator):
        super().__init__()
        self.disc = disc

    def forward(self, L, ab, extras, prev):
        real = self.disc(torch.cat([L, ab], dim=1)).float()
        fake = self.disc(torch.cat([L, prev.to(L.dtype)], dim=1)).float()
        loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return loss, {"d_hinge": loss.detach()}, None


class UNetObjective(Objective):
    def __init__(self, model, steps, options):
        super().__init__(model, steps, options)
        self.prior = None
        if model.config.head == "bins":
            self.prior = BinPrior(model.ab_centres.float().cpu() * color.AB_SCALE)
            self.loss = BinsLoss(model, self.prior)
        else:
            self.loss = RegressionLoss(model, options.perceptual_weight,
                                       colourfulness_weight=options.colourfulness_weight,
                                       chroma_weight=options.chroma_weight)

    def extra_modules(self):
        return {"prior": self.prior} if self.prior is not None else {}

    def loss_modules(self, stage):
        return {"model": self.loss}


class UNetGANObjective(Objective):
    def __init__(self, model, steps, options):
        super().__init__(model, steps, options)
        if model.config.head != "regression":
            raise TrainingError("unet-gan trains the regression head; use --model unet for --head bins")
        small = model.config.unet.base_channels < 16
        self.disc = PatchDiscriminator(8 if small else 64)
        self.warmup_loss = RegressionLoss(model, options.perceptual_weight,
                                          colourfulness_weight=options.colourfulness_weight,
                                          chroma_weight=options.chroma_weight)
        self.gan_loss = RegressionLoss(model, options.perceptual_weight, self.disc, options.adv_weight,
                                       options.colourfulness_weight, options.chroma_weight)
        self.disc_loss = DiscriminatorLoss(self.disc)

    def group_modules(self):
        return {"model": self.model.unet, "disc": self.disc}

    def extra_modules(self):
        return {"disc": self.disc}

    def stages(self):
        start = min(self.steps, max(0, round(self.options.gan_start * self.steps)))
        return [Stage("warmup", 0, start, ("model",), ("model",)),
                Stage("adversarial", start, self.steps, ("model", "disc"), ("model", "disc"))]

    def loss_modules(self, stage):
        if stage.name == "warmup":
            return {"model": self.warmup_loss}
        return {"model": self.gan_loss, "disc": self.disc_loss}


# ---------------------------------------------------------------------------------------------
# latent-cold


class VQLoss(nn.Module):
    """Stage 1: the VQ-VAE reconstructs ab from the Lab image (L1) + codebook/commitment loss."""

    def __init__(self, vqvae):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, L, ab, extras, prev=None):
        rec, vq_loss = self.vqvae(L, ab)
        rec_loss = (rec.float() - ab).abs().mean()
        loss = rec_loss + vq_loss.float()
        return loss, {"rec_l1": rec_loss.detach(), "vq": vq_loss.detach().float()}, None


class ColdLoss(nn.Module):
    """Stage 2: the restorer predicts z0 from z_s = (1 - s/T) z0 + (s/T) z_grey, s uniform in [1, T].

    z0 is the quantised latent of the colour image, z_grey that of the grey one (the frozen VQ-VAE).
    s = T is the one-shot case, smaller s the steps of improved cold sampling, so both work. The
    loss is taken in latent space (MSE to z0) plus L1 on the decoded ab, so latent errors that
    matter for colour weigh more.
    """

    def __init__(self, model: LatentCold):
        super().__init__()
        self.model = model

    def forward(self, L, ab, extras, prev=None):
        (s,) = extras
        m, T = self.model, self.model.config.timesteps
        with torch.no_grad():
            z0 = m.vqvae.quantize(m.vqvae.encode(L, ab))
            z_grey = m.grey_latent(L)
        context = m.context(L)  # a graph only when the encoder is trained (requires_grad)
        w = (s.to(z0.dtype) / T).view(-1, 1, 1, 1)
        z_s = (1 - w) * z0 + w * z_grey
        z_hat = m.restorer(L, context)(z_s, s).float()
        latent = F.mse_loss(z_hat, z0)
        decoded = (m.vqvae.decode(z_hat, L).float() - ab).abs().mean()
        loss = latent + decoded
        return loss, {"latent_mse": latent.detach(), "dec_l1": decoded.detach()}, None


class LatentColdObjective(Objective):
    def __init__(self, model, steps, options):
        super().__init__(model, steps, options)
        if options.stage not in ("auto", "vq", "cold"):
            raise TrainingError(f"--stage must be auto, vq or cold, not {options.stage!r}")
        self.vq_loss = VQLoss(model.vqvae)
        self.cold_loss = ColdLoss(model)

    def group_modules(self):
        return {"vqvae": self.model.vqvae, "model": self.model.unet}

    def stages(self):
        if self.options.stage == "vq":
            return [Stage("vq", 0, self.steps, ("vqvae",), ("vqvae",))]
        if self.options.stage == "cold":
            return [Stage("cold", 0, self.steps, ("model",), ("model",))]
        switch = min(self.steps, max(0, round(self.options.vq_fraction * self.steps)))
        return [Stage("vq", 0, switch, ("vqvae",), ("vqvae",)),
                Stage("cold", switch, self.steps, ("model",), ("model",))]

    def loss_modules(self, stage):
        return {"vqvae": self.vq_loss} if stage.name == "vq" else {"model": self.cold_loss}

    def enter_stage(self, stage, ema_model):
        super().enter_stage(stage, ema_model)
        if stage.name == "cold" and ema_model is not None and stage.start > 0:
            # Freeze the VQ-VAE at its EMA weights: the restorer learns the latents the export decodes.
            self.model.vqvae.load_state_dict(ema_model.vqvae.state_dict())

    def draw(self, L, generator):
        T = self.model.config.timesteps
        return (torch.randint(1, T + 1, (L.shape[0],), device=L.device, generator=generator),)


OBJECTIVES: dict[str, type[Objective]] = {
    "lab-ddpm": LabDDPMObjective,
    "latent-cold": LatentColdObjective,
    "unet": UNetObjective,
    "unet-gan": UNetGANObjective,
}


def make_objective(model: ColorModel, steps: int, options: ObjectiveOptions) -> Objective:
    try:
        cls = OBJECTIVES[model.config.architecture]
    except KeyError:
        raise TrainingError(f"cannot train architecture {model.config.architecture!r}; "
                            f"known: {', '.join(OBJECTIVES)}") from None
    return cls(model, steps, options)
