"""Tests of the FiLM U-Net (bundle pet_lowdose_film_unet): common/networks/{film,conv_blocks,film_unet}.py."""

from __future__ import annotations

import io
import math

import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DeepSupervisionLoss

from common.networks.conv_blocks import (
    CONV_KINDS,
    POOL_KINDS,
    InterleavedDepthwiseConv,
    MixedPool,
    MixtureOfKernelsConv,
)
from common.networks.film import FiLMGenerator, film_modulate
from common.networks.film_unet import FiLMUNet
from common.transforms.dose import encode_dose

SMALL = {"channels": (4, 8, 8, 8), "bottleneck_channels": 8, "film_hidden": 8}
SHAPE = (20, 18, 17)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP contention on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _randomize_film(net: torch.nn.Module, std: float = 0.5) -> None:
    for m in net.modules():
        if isinstance(m, FiLMGenerator):
            m.randomize(std)


def _x(b: int = 1, shape: tuple[int, ...] = SHAPE, c: int = 1) -> torch.Tensor:
    return torch.rand(b, c, *shape)


# ------------------------------------------------------------------------------------------------ parameter count
def _expected_counts(channels, bottleneck, c_in=1, c_out=1, dose_dim=1, hidden=128, k=3):
    """Independent count from the layer definitions (standard convs, biases everywhere).

    conv k^3:         k^3 * Ci * Co + Co          (2 per NConv block: Ci -> Co, Co -> Co)
    transposed conv:  2^3 * Ci * (Ci/2) + Ci/2    (one per decoder level, halves the channels)
    final 1x1:        C1 * c_out + c_out;  PReLU: 1 per conv unit
    FiLM MLP / block: dose_dim * H + H + H * 2C + 2C  (C = block output width)
    """
    conv = 0
    widths = []  # block output widths (one FiLM generator each)
    prev = c_in
    for c in list(channels) + [bottleneck]:  # encoder levels + bottleneck
        conv += k**3 * prev * c + c + k**3 * c * c + c
        widths.append(c)
        prev = c
    cur = bottleneck
    for c in reversed(channels):  # decoder: up(cur -> cur/2), NConv(c + cur/2 -> c)
        half = cur // 2
        conv += 8 * cur * half + half
        conv += k**3 * (c + half) * c + c + k**3 * c * c + c
        widths.append(c)
        cur = c
    conv += channels[0] * c_out + c_out
    conv += 2 * len(widths)  # PReLU
    film = sum(dose_dim * hidden + hidden + hidden * 2 * c + 2 * c for c in widths)
    return conv, film


def test_full_size_parameter_count() -> None:
    net = FiLMUNet()  # (32, 64, 128, 256), bottleneck 256, 1 -> 1, standard convs
    counts = net.parameter_counts()
    conv, film = _expected_counts((32, 64, 128, 256), 256)
    assert abs(counts["backbone"] - conv) <= 0.02 * conv
    assert counts["film"] == film
    assert counts["total"] == counts["backbone"] + counts["film"]
    assert 13.5e6 < counts["backbone"] < 14.2e6  # measured 13,825,651 (the paper's "about 10.6 M" does not hold)


# ------------------------------------------------------------------------------------------------ FiLM
def _meta(drf: float | list[float]) -> torch.Tensor:
    """FiLM metadata ``(B, 1)`` for one or several DRFs, encoded as the bundle does (``encode_dose``, ``log_drf``)."""
    drfs = drf if isinstance(drf, list) else [drf]
    return torch.stack([encode_dose(d, "log_drf") for d in drfs])


def test_log_drf_encoding_values_and_validation() -> None:
    e = _meta([1.0, 20.0, 100.0])
    assert e.shape == (3, 1) and e.dtype == torch.float32
    assert torch.allclose(e[:, 0], torch.tensor([0.0, math.log(20) / 10, math.log(100) / 10]))
    for bad, match in ((0.5, "dose-reduction factor"), (float("nan"), "not finite"), (float("inf"), "not finite")):
        with pytest.raises(ValueError, match=match):
            encode_dose(bad, "log_drf")


def test_film_modulate_broadcasts_per_channel() -> None:
    h = torch.randn(2, 3, 4, 5, 6)
    gamma, beta = torch.randn(2, 3), torch.randn(2, 3)
    out = film_modulate(h, gamma, beta)
    assert torch.allclose(out[1, 2], (1 + gamma[1, 2]) * h[1, 2] + beta[1, 2])


def test_film_really_conditions_when_generator_nonzero() -> None:
    net = FiLMUNet(**SMALL).eval()
    _randomize_film(net)
    x = _x()
    with torch.no_grad():
        a = net(x, _meta(4.0))
        b = net(x, _meta(100.0))
    assert (a - b).abs().max() > 1e-2  # ~8e-2 here; FiLM placed before the norm (original bug) gives ~2e-4


def test_zero_init_film_is_identity_and_equals_unconditioned() -> None:
    cond = FiLMUNet(**SMALL).eval()
    plain = FiLMUNet(**{**SMALL, "dose_dim": 0}).eval()
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".film.generator." in k for k in missing)
    x = _x()
    with torch.no_grad():
        a = cond(x, _meta(4.0))
        b = cond(x, _meta(100.0))
        c = plain(x, None)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-6)


# ------------------------------------------------------------------------------------------------ shapes, residual
@pytest.mark.parametrize("shape", [SHAPE, (7, 5, 3), (33, 16, 1)])
def test_any_shape_gives_same_shape(shape: tuple[int, int, int]) -> None:
    net = FiLMUNet(**SMALL).eval()
    with torch.no_grad():
        out = net(_x(2, shape), _meta([4.0, 10.0]))
    assert out.shape == (2, 1, *shape)
    assert torch.isfinite(out).all()


def test_residual_zero_last_conv_returns_input() -> None:
    net = FiLMUNet(**SMALL).eval()
    _randomize_film(net)
    torch.nn.init.zeros_(net.final.weight)
    torch.nn.init.zeros_(net.final.bias)
    x = _x(1, (9, 11, 13))
    with torch.no_grad():
        assert torch.equal(net(x, _meta(20.0)), x)


def test_residual_uses_first_channels_with_guidance_input() -> None:
    net = FiLMUNet(in_channels=2, out_channels=1, **SMALL).eval()
    torch.nn.init.zeros_(net.final.weight)
    torch.nn.init.zeros_(net.final.bias)
    x = _x(1, (8, 9, 10), c=2)
    with torch.no_grad():
        assert torch.equal(net(x, _meta(20.0)), x[:, :1])


def test_pooling_is_applied_bottleneck_at_one_sixteenth() -> None:
    net = FiLMUNet(**SMALL).eval()
    seen: list[tuple[int, ...]] = []
    net.bottleneck.register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape[2:])))
    with torch.no_grad():
        net(_x(1, (33, 16, 17)), _meta(4.0))
    assert seen == [(3, 1, 2)]  # padded to (48, 16, 32), then four 2x poolings


def test_adaptive_kernel_sizes_per_level() -> None:
    net = FiLMUNet(**SMALL, kernel_sizes=(5, 3, 3, 1, 3))
    assert net.encoder[0].block.units[0].conv.conv.weight.shape[2:] == (5, 5, 5)
    assert net.encoder[3].block.units[1].conv.conv.weight.shape[2:] == (1, 1, 1)
    assert net.decoder[-1].block.units[0].conv.conv.weight.shape[2:] == (5, 5, 5)  # decoder level 1 uses k_1
    with torch.no_grad():
        assert net.eval()(_x(), _meta(4.0)).shape == (1, 1, *SHAPE)
    with pytest.raises(ValueError, match="kernel_sizes"):
        FiLMUNet(**SMALL, kernel_sizes=(3, 3, 3))
    with pytest.raises(ValueError, match="kernel_sizes"):
        FiLMUNet(**SMALL, kernel_sizes=(3, 3, 4, 3, 3))


# ------------------------------------------------------------------------------------------------ variants
@pytest.mark.parametrize(
    ("conv", "pooling"),
    [(c, "avg") for c in CONV_KINDS] + [("standard", p) for p in POOL_KINDS if p != "avg"] + [("mixture", "mixed")],
)
def test_variant_forward_backward_all_params_get_gradients(conv: str, pooling: str) -> None:
    net = FiLMUNet(**SMALL, conv=conv, pooling=pooling, dropout=0.1).train()
    _randomize_film(net)  # zero-initialised FiLM blocks the gradient to the generators' first layers
    x = _x(2)
    out = net(x, _meta([4.0, 50.0]))
    assert out.shape == x.shape
    ((out - x) ** 2).mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert no_grad == []
    if pooling == "mixed":
        pools = [m for m in net.modules() if isinstance(m, MixedPool)]
        assert len(pools) == 4 and all(p.a.grad is not None and p.a.grad.abs() > 0 for p in pools)


def test_mixed_pool_is_a_learnable_mix_of_max_and_avg() -> None:
    pool = MixedPool(3, init=2.0)
    x = torch.randn(1, 2, 4, 4, 4)
    s = torch.sigmoid(torch.tensor(2.0))
    expected = s * torch.nn.functional.max_pool3d(x, 2) + (1 - s) * torch.nn.functional.avg_pool3d(x, 2)
    assert torch.allclose(pool(x), expected, atol=1e-6)


def test_mixture_gate_depends_on_meta() -> None:
    conv = MixtureOfKernelsConv(3, 4, 6, dose_dim=1)
    w = conv.gate_weights(_meta([1.0, 100.0]), 2)
    assert w.shape == (2, 3) and torch.allclose(w.sum(1), torch.ones(2))
    assert (w[0] - w[1]).abs().max() > 1e-4
    x = torch.randn(1, 4, 6, 6, 6).expand(2, -1, -1, -1, -1)
    y = conv(x, _meta([1.0, 100.0]))
    assert (y[0] - y[1]).abs().max() > 1e-5  # same image, different dose -> different mix
    const = MixtureOfKernelsConv(3, 4, 6, dose_dim=0)
    assert torch.allclose(const.gate_weights(None, 2), torch.full((2, 3), 1.0 / 3.0))


def test_mixture_gate_inside_the_unet_follows_meta() -> None:
    net = FiLMUNet(**SMALL, conv="mixture").eval()
    gate = net.encoder[0].block.units[0].conv
    captured: list[torch.Tensor] = []
    orig = gate.gate_weights

    def spy(meta, batch):  # noqa: ANN001, ANN202
        w = orig(meta, batch)
        captured.append(w)
        return w

    gate.gate_weights = spy
    with torch.no_grad():
        net(_x(), _meta(2.0))
        net(_x(), _meta(80.0))
    assert (captured[0] - captured[1]).abs().max() > 1e-4


def test_interleaved_groups_exchange_information() -> None:
    # 8 -> 8 channels, 4 groups of 2: perturb input group 0 (channels 0-1)
    x = torch.randn(1, 8, 5, 5, 5)
    xp = x.clone()
    xp[:, 0:2] += torch.randn(1, 2, 5, 5, 5)
    inter = InterleavedDepthwiseConv(3, 8, 8, groups=4)
    plain = InterleavedDepthwiseConv(3, 8, 8, groups=4, interleave=False)
    plain.load_state_dict(inter.state_dict())  # same weights, only the channel roll differs
    assert inter.groups == 4 and inter.shift == 1
    with torch.no_grad():
        d_inter = (inter(xp) - inter(x)).abs().amax(dim=(0, 2, 3, 4))
        d_plain = (plain(xp) - plain(x)).abs().amax(dim=(0, 2, 3, 4))
    assert d_inter[2:4].max() > 1e-4  # group 1 sees group 0 through the overlap
    assert d_inter[6:8].max() > 1e-4  # ... and so does group 3 (cyclic neighbour)
    assert d_inter[4:6].max() == 0  # group 2 is two groups away: not reached by one layer
    assert d_plain[0:2].max() > 1e-4 and d_plain[2:].max() == 0  # plain grouped conv: no flow at all


# ------------------------------------------------------------------------------------------------ deep supervision
def test_deep_supervision_train_list_eval_tensor_and_monai_loss() -> None:
    net = FiLMUNet(**SMALL, deep_supervision=True, num_ds_heads=2).train()
    x, y = _x(2), _x(2)
    outs = net(x, _meta(10.0))
    assert isinstance(outs, list) and len(outs) == 3
    assert [tuple(o.shape) for o in outs] == [(2, 1, 20, 18, 17), (2, 1, 10, 9, 9), (2, 1, 5, 5, 5)]
    loss = DeepSupervisionLoss(torch.nn.L1Loss())(outs, y)
    loss.backward()
    assert all(h.conv.weight.grad is not None and h.conv.weight.grad.abs().sum() > 0 for h in net.ds_heads)
    net.eval()
    with torch.no_grad():
        out = net(x, _meta(10.0))
        assert isinstance(out, torch.Tensor) and out.shape == x.shape
        assert torch.allclose(net.forward_deep_supervision(x, _meta(10.0))[0], out)


def test_deep_supervision_aux_is_a_denoised_image() -> None:
    net = FiLMUNet(**SMALL, deep_supervision=True, num_ds_heads=3).train()
    for h in net.ds_heads:
        torch.nn.init.zeros_(h.conv.weight)
        torch.nn.init.zeros_(h.conv.bias)
    x = _x(1, (16, 16, 16))
    outs = net(x, _meta(10.0))
    assert len(outs) == 4
    for k, aux in enumerate(outs[1:], start=1):
        assert torch.allclose(aux, torch.nn.functional.avg_pool3d(x, 2**k), atol=1e-6)


# ------------------------------------------------------------------------------------------------ meta handling
def test_meta_batch_one_broadcast_and_mismatch_error() -> None:
    net = FiLMUNet(**SMALL).eval()
    _randomize_film(net)
    x = _x(3)
    m = _meta(20.0)
    with torch.no_grad():
        a = net(x, m)
        b = net(x, m.expand(3, 1))
        c = net(x, m.reshape(1))  # (1,) for dose_dim = 1
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)
    with pytest.raises(ValueError, match="does not match the image batch"):
        net(x, _meta([4.0, 20.0]))
    with pytest.raises(ValueError, match="shape"):
        net(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        net(x, torch.tensor([[float("nan")]]))


def test_meta_missing_on_conditioned_net_raises() -> None:
    with pytest.raises(ValueError, match="dose metadata missing"):
        FiLMUNet(**SMALL)(_x())
    out = FiLMUNet(**{**SMALL, "dose_dim": 0}).eval()(_x(), None)
    assert out.shape == (1, 1, *SHAPE)


def test_sliding_window_inference_broadcasts_volume_meta() -> None:
    net = FiLMUNet(**SMALL).eval()
    _randomize_film(net)
    x = _x(1, (24, 20, 18))
    with torch.no_grad():
        out = sliding_window_inference(x, (16, 16, 16), 4, net, overlap=0.25, dose=_meta(20.0))
        other = sliding_window_inference(x, (16, 16, 16), 4, net, overlap=0.25, dose=_meta(2.0))
    assert out.shape == x.shape
    assert (out - other).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------ TorchScript
def test_torchscript_round_trip_standard() -> None:
    net = FiLMUNet(**SMALL, deep_supervision=True).eval()
    _randomize_film(net)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    x, m = _x(2), _meta([4.0, 100.0])
    with torch.no_grad():
        ref = net(x, m)
        got = loaded(x, m)
    assert isinstance(got, torch.Tensor)  # eval mode with deep supervision: one tensor
    assert torch.allclose(ref, got, atol=1e-5)
    with pytest.raises(Exception, match="dose metadata missing"):
        loaded(x)


@pytest.mark.parametrize("conv", [c for c in CONV_KINDS if c != "standard"])
def test_torchscript_other_variants(conv: str) -> None:
    net = FiLMUNet(channels=(4, 8), bottleneck_channels=8, film_hidden=8, conv=conv, pooling="mixed").eval()
    x, m = _x(1, (9, 8, 7)), _meta(10.0)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(net)(x, m), net(x, m), atol=1e-5)


# ------------------------------------------------------------------------------------------------ misc
def test_two_dimensional_and_bad_arguments() -> None:
    net = FiLMUNet(spatial_dims=2, **SMALL, conv="depthwise").eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 21, 30), _meta(5.0)).shape == (2, 1, 21, 30)
    with pytest.raises(ValueError, match="input"):
        net(torch.rand(1, 1, 8, 8, 8), _meta(5.0))
    with pytest.raises(ValueError, match="conv must be one of"):
        FiLMUNet(conv="fancy")
    with pytest.raises(ValueError, match="pooling must be one of"):
        FiLMUNet(pooling="lp")
    with pytest.raises(ValueError, match="num_ds_heads"):
        FiLMUNet(**SMALL, deep_supervision=True, num_ds_heads=4)


def test_residual_scale_makes_the_network_scale_equivariant() -> None:
    """InstanceNorm features ignore the input's scale: with residual_scale='std' the noise estimate follows the
    intensity (net(a x) = a net(x)); with 'none' (the original layout) the residual does not scale."""
    x, meta = _x(), torch.tensor([[0.3]])
    outs = {}
    for mode in ("std", "none"):
        torch.manual_seed(0)
        net = FiLMUNet(**SMALL, residual_scale=mode).eval()
        torch.nn.init.normal_(net.final.weight)
        with torch.no_grad():
            outs[mode] = (net(x, meta), net(7.0 * x, meta))
    a, b = outs["std"]
    assert float((b - 7.0 * a).abs().max() / (7.0 * a).abs().max()) < 1e-3
    a, b = outs["none"]
    assert float((b - 7.0 * a).abs().max() / (7.0 * a).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="residual_scale"):
        FiLMUNet(**SMALL, residual_scale="max")
