"""Lab conversion: known values, round trips, and the network normalisation."""

import math

import pytest
import torch

from colorize_cli.color import (AB_SCALE, denormalize_ab, denormalize_L, grey_to_rgb, lab_to_rgb, normalize_ab,
                                normalize_L, rgb_to_lab, rgb_to_luminance)


def pixel(r, g, b):
    return torch.tensor([r, g, b], dtype=torch.float32).view(1, 3, 1, 1)


@pytest.mark.parametrize("rgb,lab", [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),   # sRGB red, D65 (Bruce Lindbloom's calculator)
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
    ((0.5, 0.5, 0.5), (53.39, 0.0, 0.0)),
])
def test_known_values(rgb, lab):
    got = rgb_to_lab(pixel(*rgb)).flatten()
    assert torch.allclose(got, torch.tensor(lab), atol=0.05)


def test_round_trip_random_colours():
    rgb = torch.rand(4, 3, 16, 16)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)


def test_ab_is_clipped_before_conversion_back():
    lab = torch.tensor([50.0, 500.0, -500.0]).view(1, 3, 1, 1)
    rgb = lab_to_rgb(lab)
    assert torch.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    assert torch.allclose(rgb, lab_to_rgb(torch.tensor([50.0, 127.0, -128.0]).view(1, 3, 1, 1)))


def test_grey_has_the_lightness_it_was_given():
    L = torch.linspace(0, 100, 11).view(1, 1, 1, 11)
    rgb = grey_to_rgb(L)
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-4) and torch.allclose(rgb[:, 1], rgb[:, 2], atol=1e-4)
    assert torch.allclose(rgb_to_luminance(rgb), L, atol=1e-3)


def test_normalisation_maps_ranges_to_unit_interval():
    assert normalize_L(torch.tensor([0.0, 50.0, 100.0])).tolist() == [-1.0, 0.0, 1.0]
    ab = torch.tensor([-AB_SCALE, 0.0, AB_SCALE])
    assert normalize_ab(ab).tolist() == [-1.0, 0.0, 1.0]
    # L* round trips through L/50 - 1, so float32 keeps ~1e-5 absolute, not relative, accuracy near 0.
    x = torch.randn(10, generator=torch.Generator().manual_seed(0)) * 50
    assert torch.allclose(denormalize_L(normalize_L(x)), x, atol=1e-4)
    assert torch.allclose(denormalize_ab(normalize_ab(x)), x, atol=1e-4)


def test_ab_bins_cover_every_srgb_colour_on_a_10_unit_grid():
    from colorize_cli.color import ab_bin_centres, rgb_to_lab

    centres = ab_bin_centres()
    assert centres.shape == (261, 2)
    assert torch.equal(centres, torch.round(centres / 10) * 10)  # cell centres: multiples of 10
    assert len(torch.unique(centres, dim=0)) == len(centres)
    # Any sRGB colour (here 20^3 of them, the interior too) lies in one of the cells.
    levels = torch.linspace(0, 1, 20)
    rgb = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, 1, -1)
    ab = rgb_to_lab(rgb)[1:].reshape(2, -1).T
    nearest = torch.cdist(ab, centres).min(dim=1).values
    assert nearest.max() <= 5 * 2**0.5 + 1e-3


def _chroma(ab):
    return torch.linalg.vector_norm(ab, dim=-3)


def test_saturate_keeps_hue_and_boosts_strong_colours_more_than_faint_ones():
    from colorize_cli.color import SATURATION_KNEE, saturate

    angles = torch.linspace(0, 6.2, 8)
    chroma = torch.tensor([1.0, 5.0, 20.0, 60.0]).view(4, 1)
    ab = torch.stack([chroma * angles.cos(), chroma * angles.sin()]).view(1, 2, 4, 8)
    assert saturate(ab, 1.0) is ab
    boosted = saturate(ab, 3.0)
    gain = _chroma(boosted) / _chroma(ab)
    # Same hue: a* and b* are scaled together.
    assert torch.allclose(torch.atan2(boosted[:, 1], boosted[:, 0]), torch.atan2(ab[:, 1], ab[:, 0]), atol=1e-5)
    # The gain rises with chroma, from ~1 for near-greys towards 3; at the knee it is halfway.
    per_row = gain[0, :, 0]
    assert torch.all(per_row[1:] > per_row[:-1])
    assert per_row[0] < 1.1 and 2.0 < per_row[3] < 3.0
    assert torch.isclose(per_row[2], torch.tensor(2.0)) and SATURATION_KNEE == 20.0
    # Below 1 mutes, and the order of colour strengths is kept for any saturation >= 0.
    for s in (0.5, 2.0, 8.0):
        out = _chroma(saturate(ab, s))[0, :, 0]
        assert torch.all(out[1:] > out[:-1])
    assert torch.allclose(_chroma(saturate(ab, 0.5)), 0.5 * _chroma(ab))  # below 1: every colour alike
    assert torch.all(saturate(ab, 0.0) == 0)  # 0 is grey
    with pytest.raises(ValueError):
        saturate(ab, -1.0)


def _ring(chroma: float, degrees: list[float]) -> torch.Tensor:
    """(1, 2, 1, N) a*b* of one chroma at the given hue angles."""
    rad = torch.tensor(degrees) * math.pi / 180
    return torch.stack([chroma * rad.cos(), chroma * rad.sin()]).view(1, 2, 1, -1)


def test_a_strength_profile_boosts_by_hue_and_lightness_and_changes_smoothly():
    from colorize_cli.color import saturate

    ab = _ring(40.0, [0, 90, 180, 240, 270])
    L = torch.full((1, 1, 1, 5), 50.0)
    # A profile of ones is one strength for all; the profile needs the pixels' L*.
    assert torch.allclose(saturate(ab, 3.0, L=L, profile=torch.ones(3, 12)), saturate(ab, 3.0))
    with pytest.raises(ValueError, match="L\\*"):
        saturate(ab, 3.0, profile=torch.ones(3, 12))
    # Weight only on the hue node at 240° (of 12, 30° apart): only the blue is boosted, by the full
    # strength; 270° is one node further, so it is not; hues are kept.
    profile = torch.zeros(1, 12)
    profile[0, 8] = 1.0
    out = saturate(ab, 3.0, L=L, profile=profile)
    gain = (_chroma(out) / _chroma(ab))[0, 0]
    assert torch.allclose(gain, torch.tensor([1.0, 1.0, 1.0, float(saturate(_ring(40.0, [0]), 3.0).norm() / 40), 1.0]))
    assert torch.allclose(torch.atan2(out[:, 1], out[:, 0]), torch.atan2(ab[:, 1], ab[:, 0]), atol=1e-5)
    # Between nodes the weight is linear in hue, and it wraps round: 345° is halfway from node 11 to node 0.
    ramp = torch.arange(12.0).view(1, 12)
    from colorize_cli.color import profile_weight
    w = profile_weight(ramp, torch.full((1, 1, 1, 3), 50.0), _ring(30.0, [15, 225, 345]))
    assert torch.allclose(w.flatten(), torch.tensor([0.5, 7.5, 5.5]), atol=1e-4)
    # Lightness: rows are nodes over L* 0..100, linear between them and flat beyond.
    rows = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
    L = torch.tensor([0.0, 25.0, 50.0, 75.0, 100.0, 120.0]).view(1, 1, 1, 6)
    w = profile_weight(rows, L, _ring(30.0, [10] * 6))
    assert torch.allclose(w.flatten(), torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0, 3.0]))
    # Below 1 every colour is muted alike, whatever the profile: 0 stays grey.
    assert torch.all(saturate(ab, 0.0, L=L[..., :5], profile=profile) == 0)


def test_a_strength_profiles_chroma_axis_boosts_strong_predictions_and_keeps_their_order():
    from colorize_cli.color import PROFILE_CHROMA_SPAN, profile_weight, saturate

    # Constant along chroma, a (J, K, M) table is its (J, K) table.
    torch.manual_seed(0)
    ab = torch.randn(1, 2, 8, 8) * 25
    L = torch.rand(1, 1, 8, 8) * 100
    flat = torch.rand(3, 12)
    assert torch.allclose(saturate(ab, 4.0, L=L, profile=flat.unsqueeze(2).expand(3, 12, 4)),
                          saturate(ab, 4.0, L=L, profile=flat))
    # Chroma nodes spread over 0..PROFILE_CHROMA_SPAN, linear between them and flat beyond;
    # lightness and hue do not matter for a table that varies along chroma only.
    table = torch.tensor([0.0, 1.0, 3.0]).expand(2, 6, 3)
    chroma = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.5]) * PROFILE_CHROMA_SPAN
    ring = torch.stack([_ring(float(c), [100.0]) for c in chroma], -1).view(1, 2, 1, 6)
    w = profile_weight(table, torch.full((1, 1, 1, 6), 70.0), ring)
    assert torch.allclose(w.flatten(), torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0, 3.0]), atol=1e-5)
    # A faint prediction stays as it is, a strong one gets the boost, and with weights that rise
    # with chroma a stronger prediction always comes out stronger, at any hue and lightness.
    rising = torch.rand(3, 12, 5).cumsum(2)
    rising[..., 0] = 0
    steps = torch.linspace(0, 80, 321)
    for hue in (20.0, 130.0, 250.0):
        ring = torch.stack([_ring(float(c), [hue]) for c in steps], -1).view(1, 2, 1, -1)
        for light in (10.0, 60.0):
            out = _chroma(saturate(ring, 5.0, L=torch.full((1, 1, 1, len(steps)), light), profile=rising))
            assert torch.all(out.diff() > 0)
            assert out.flatten()[1] == pytest.approx(float(steps[1]), rel=1e-2)
            assert out.flatten()[-1] > 2 * float(steps[-1])


@pytest.mark.parametrize("bad", [[[1.0]], [1.0, 2.0], [[1.0, 2.0], [3.0]], [[1.0, float("nan")]],
                                 [[1.0, -0.1]], "lots", [[]],
                                 [[[1.0], [1.0]]], [[[0.0, 1.0, 0.5], [0.0, 1.0, 1.0]]]])
def test_a_strength_profile_must_be_a_table_of_weights(bad):
    from colorize_cli.color import check_strength_profile

    with pytest.raises(ValueError, match="strength_profile"):
        check_strength_profile(bad)
    assert check_strength_profile([[0.0, 2.0]]).shape == (1, 2)
    assert check_strength_profile([[[0.0, 2.0], [1.0, 1.0]]]).shape == (1, 2, 2)


def test_has_colour_tells_toned_and_colour_prints_from_grey_scans():
    import numpy as np

    from colorize_cli.color import has_colour

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (300, 400), dtype=np.uint8)
    noisy = np.clip(grey[..., None].astype(int) + rng.integers(-2, 3, (300, 400, 3)), 0, 255).astype(np.uint8)
    assert not has_colour(noisy)  # a grey scan with JPEG-like channel noise
    sepia = np.clip(grey[..., None] * np.array([1.0, 0.85, 0.65]), 0, 255).astype(np.uint8)
    assert has_colour(sepia)
    assert has_colour(sepia.astype(np.uint16) * 257) and not has_colour(noisy.astype(np.uint16) * 257)


def test_the_colour_check_measures_chroma_as_the_lab_conversion_does():
    """has_colour computes chroma without kornia (whose import a photo should not pay); same values."""
    from colorize_cli.color import _chroma

    gen = torch.Generator().manual_seed(0)
    rgb = torch.cat([torch.rand(3, 64, 64, generator=gen),  # every kind of colour
                     torch.linspace(0, 1, 64).expand(3, 64, 64),  # exact greys, black and white
                     torch.rand(1, 64, 64, generator=gen).expand(3, -1, -1) * 0.02], dim=1)  # deep shadows
    lab = rgb_to_lab(rgb)
    torch.testing.assert_close(_chroma(rgb), torch.hypot(lab[1], lab[2]), atol=2e-3, rtol=1e-4)
