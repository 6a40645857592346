"""upsample: the output keeps the input's L*, chroma follows luminance edges, tiles are seamless."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorize_cli.color import rgb_to_lab
from colorize_cli.upsample import (
    _source_index,
    _upsample_rows,
    compose_full_resolution,
    gamut_map,
    guided_coefficients,
    guided_upsample,
    luminance,
    working_L,
)

RNG = np.random.default_rng(7)


def _lab_of(pixels: np.ndarray) -> torch.Tensor:
    scale = float(np.iinfo(pixels.dtype).max)
    return rgb_to_lab(torch.from_numpy(pixels.astype(np.float32) / scale).permute(2, 0, 1))


def _random_ab(h: int, w: int, limit: float = 127.0) -> torch.Tensor:
    return torch.from_numpy(RNG.uniform(-limit, limit, (2, h, w)).astype(np.float32))


def test_output_keeps_input_luminance_even_for_saturated_chroma():
    pixels = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ab_low = _random_ab(12, 16)  # mostly far outside sRGB: must be gamut-mapped, not clipped
    out = compose_full_resolution(pixels, ab_low)
    error = np.abs(luminance(out) - luminance(pixels))
    assert error.max() < 0.5  # one 8-bit step moves L* by at most ~0.3
    assert error.mean() < 0.15
    # ...and it is really coloured, not a grey copy.
    assert _lab_of(out)[1:].abs().mean() > 10


def test_plain_rgb_clipping_would_have_changed_luminance():
    # Guards the test above: without gamut mapping these colours lose several L* units.
    from colorize_cli.color import lab_to_rgb

    L = torch.from_numpy(luminance(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)))[None]
    ab = _random_ab(16, 16)
    clipped = lab_to_rgb(torch.cat([L, ab]))
    assert (rgb_to_lab(clipped)[0] - L[0]).abs().max() > 5
    mapped = lab_to_rgb(torch.cat([L, gamut_map(L, ab)]))
    assert (rgb_to_lab(mapped)[0] - L[0]).abs().max() < 0.05


def test_one_pass_colour_conversion_equals_gamut_map_then_lab_to_rgb():
    from colorize_cli.color import lab_to_rgb
    from colorize_cli.upsample import _colour_tile

    L = torch.from_numpy(RNG.uniform(0, 100, (1, 40, 50)).astype(np.float32))
    ab = _random_ab(40, 50, limit=110.0)  # most far outside sRGB, some inside
    expected = lab_to_rgb(torch.cat([L, gamut_map(L, ab)]))
    torch.testing.assert_close(_colour_tile(L[0], ab[0], ab[1]), expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_luminance_by_lookup_tables_matches_the_lab_conversion(dtype):
    top = np.iinfo(dtype).max
    grey = np.linspace(0, top, 20 * 30).round().astype(dtype).reshape(20, 30)  # every 8-bit code, and more
    pixels = np.repeat(grey[:, :, None], 3, axis=2)
    pixels[12:] = RNG.integers(0, top + 1, (8, 30, 3), dtype=dtype)  # colour rows below grey ones
    expected = _lab_of(pixels)[0].numpy()
    for rows in (1, 5, 12, 100):  # grey tiles, colour tiles, and tiles of both
        np.testing.assert_allclose(luminance(pixels, tile_rows=rows), expected, rtol=0, atol=1e-4)


def test_gamut_map_only_shrinks_chroma_of_out_of_gamut_pixels():
    L = torch.full((1, 1, 3), 50.0)
    ab = torch.tensor([[[10.0, 120.0, -120.0]], [[5.0, 120.0, 30.0]]])
    mapped = gamut_map(L, ab)
    assert torch.equal(mapped[:, 0, 0], ab[:, 0, 0])  # in gamut: untouched
    for i in (1, 2):
        factor = mapped[:, 0, i] / ab[:, 0, i]
        assert torch.allclose(factor[0], factor[1]) and 0.0 < factor[0] < 1.0  # hue kept


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_zero_chroma_gives_the_grey_input_back(dtype):
    top = np.iinfo(dtype).max
    grey = RNG.integers(0, top + 1, (30, 41), dtype=dtype)
    grey[0, :2] = (0, top)
    pixels = np.repeat(grey[:, :, None], 3, axis=2)
    out = compose_full_resolution(pixels, torch.zeros(2, 8, 8))
    assert out.dtype == dtype
    if dtype == np.uint8:
        np.testing.assert_array_equal(out, pixels)  # bit-identical
    else:
        assert np.abs(out.astype(np.int64) - pixels).max() <= 4  # float32 round trip, 4/65535


def test_every_8bit_grey_level_round_trips():
    levels = np.arange(256, dtype=np.uint8)
    pixels = np.repeat(np.tile(levels, (2, 1))[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(compose_full_resolution(pixels, torch.zeros(2, 2, 2)), pixels)


def test_tiled_bilinear_coefficients_are_seamless():
    coef = torch.from_numpy(RNG.normal(size=(4, 9, 7)).astype(np.float32))
    cols = _source_index(29, 7, 0, 29)
    whole = _upsample_rows(coef, 37, 29, 0, 37, cols)
    for rows in (1, 5, 16):
        tiles = [_upsample_rows(coef, 37, 29, y, min(37, y + rows), cols) for y in range(0, 37, rows)]
        assert torch.equal(torch.cat(tiles, dim=1), whole)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiled_equals_untiled(dtype):
    pixels = RNG.integers(0, np.iinfo(dtype).max + 1, (37, 29, 3), dtype=dtype)
    ab_low = _random_ab(9, 7, limit=60.0)
    whole = compose_full_resolution(pixels, ab_low, tile_rows=1000)
    for tile_rows in (1, 5, 16):
        tiled = compose_full_resolution(pixels, ab_low, tile_rows=tile_rows)
        # The colour conversion's matrix products may round the last float32 bit differently
        # for different tile shapes, which can flip a rare pixel by one code value.
        difference = np.abs(tiled.astype(np.int64) - whole)
        assert difference.max() <= 1
        assert (difference == 0).mean() > 0.98
    np.testing.assert_allclose(luminance(pixels, tile_rows=3), luminance(pixels, tile_rows=100), atol=1e-4)


def test_tiled_bilinear_matches_torch_interpolate():
    # Full-resolution chroma must equal the untiled formula with F.interpolate(align_corners=False).
    L_full = torch.from_numpy(RNG.uniform(0, 100, (45, 38)).astype(np.float32))
    L_low = F.interpolate(L_full[None, None], size=(10, 9), mode="area")[0]
    ab_low = _random_ab(10, 9, limit=50.0)
    A, b = guided_coefficients(ab_low, L_low)
    up = F.interpolate(torch.cat([A, b])[None], size=(45, 38), mode="bilinear", align_corners=False)[0]
    expected = up[:2] * L_full + up[2:]
    assert torch.allclose(guided_upsample(ab_low, L_low, L_full), expected, atol=1e-3)


def _step_edge_case():
    """L* steps from 30 to 70 at column 61 (inside a low-res pixel); the true a* flips sign there."""
    H = W = 128
    L_full = torch.full((H, W), 30.0)
    L_full[:, 61:] = 70.0
    true_a = torch.where(L_full > 50, -40.0, 40.0)
    L_low = F.interpolate(L_full[None, None], size=(32, 32), mode="area")[0]
    a_low = F.interpolate(true_a[None, None], size=(32, 32), mode="area")[0]
    a_low = F.avg_pool2d(a_low[None], 3, stride=1, padding=1, count_include_pad=False)[0]  # a blurry model
    ab_low = torch.cat([a_low, torch.zeros_like(a_low)])
    return ab_low, L_low, L_full, true_a


def test_guided_upsampling_bleeds_less_than_bilinear_at_an_edge():
    ab_low, L_low, L_full, true_a = _step_edge_case()
    guided = guided_upsample(ab_low, L_low, L_full)[0]
    bilinear = F.interpolate(ab_low[None], size=L_full.shape, mode="bilinear", align_corners=False)[0, 0]
    band = slice(45, 80)
    guided_error = (guided[:, band] - true_a[:, band]).abs().mean()
    bilinear_error = (bilinear[:, band] - true_a[:, band]).abs().mean()
    assert guided_error < 0.8 * bilinear_error
    # Guided chroma jumps where L* does; bilinear chroma ramps over several pixels.
    guided_jump = (guided[:, 60] - guided[:, 61]).mean()
    bilinear_jump = (bilinear[:, 60] - bilinear[:, 61]).mean()
    assert guided_jump > 20 and guided_jump > 4 * bilinear_jump


def test_guided_chroma_changes_sign_exactly_at_the_luminance_edge_in_the_output():
    ab_low, L_low, L_full, _ = _step_edge_case()
    grey = np.repeat(np.round(L_full.numpy() * 2.55).astype(np.uint8)[:, :, None], 3, axis=2)
    out = compose_full_resolution(grey, ab_low)
    a = _lab_of(out)[1, 64]
    assert (a[:61] > 5).all() and (a[61:] < -5).all()


def test_constant_chroma_stays_constant():
    L_full = torch.from_numpy(RNG.uniform(30, 70, (40, 50)).astype(np.float32))
    L_low = F.interpolate(L_full[None, None], size=(10, 12), mode="area")[0]
    ab_low = torch.stack([torch.full((10, 12), 20.0), torch.full((10, 12), -10.0)])
    ab = guided_upsample(ab_low, L_low, L_full)
    assert torch.allclose(ab[0], torch.tensor(20.0), atol=1e-2)
    assert torch.allclose(ab[1], torch.tensor(-10.0), atol=1e-2)


def test_uint16_in_uint16_out_with_16bit_precision():
    pixels = (RNG.integers(0, 65536, (20, 24, 3))).astype(np.uint16)
    out = compose_full_resolution(pixels, _random_ab(5, 6, limit=30.0))
    assert out.dtype == np.uint16 and out.shape == pixels.shape
    assert np.abs(luminance(out) - luminance(pixels)).max() < 0.02  # far finer than 8-bit steps


def test_working_L_is_area_downsampled_luminance():
    pixels = RNG.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    L = working_L(pixels, (16, 24))
    assert L.shape == (1, 16, 24) and L.dtype == torch.float32
    expected = luminance(pixels).reshape(16, 4, 24, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(L[0].numpy(), expected, atol=1e-4)
    assert working_L(pixels[:8, :8], (16, 24)).shape == (1, 16, 24)  # upsizing a tiny input works


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        compose_full_resolution(np.zeros((4, 4, 3), np.float32), torch.zeros(2, 2, 2))
    with pytest.raises(ValueError):
        compose_full_resolution(np.zeros((4, 4, 3), np.uint8), torch.zeros(3, 2, 2))
