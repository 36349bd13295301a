"""StyleGAN2 operations against slow explicit formulations (tests/stylegan2_reference.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from gan2shape.gan.networks import minibatch_stddev
from gan2shape.gan.ops import (
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    fir_filter,
    fir_upsample,
    fused_leaky_relu,
    scale_channels,
    scaled_leaky_relu,
)
from stylegan2_reference import blur_kernel, modulated_conv_ref, upfirdn2d_ref


@pytest.fixture(autouse=True, scope="module")
def float64_single_thread():
    # float64 for tight comparisons.
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def test_upfirdn_reference_on_impulse():
    # upsampling an impulse by 2 with pad (2, 1) gives the kernel itself, shifted by pad0 - ...
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 1, 1] = 1.0
    k = rand(4, 4)
    out = upfirdn2d_ref(x, k, up=2, pad=(2, 1))
    assert out.shape == (1, 1, 6, 6)
    # impulse at zero-inserted position 2, padded to 4; output n sees u[n + 3 - t] at tap t
    assert torch.allclose(out[0, 0, 1:5, 1:5], k)


@pytest.mark.parametrize("pad", [(2, 1), (1, 1), (1, 2), (3, 3), (0, 0)])
def test_fir_upsample_matches_zero_insertion(pad):
    x, k = rand(2, 3, 5, 6), rand(4, 4, seed=1)
    assert torch.allclose(fir_upsample(x, k, pad), upfirdn2d_ref(x, k, up=2, pad=pad))


@pytest.mark.parametrize("pad,down", [((2, 2), 1), ((1, 1), 1), ((2, 1), 1), ((0, 0), 2),
                                      ((2, 2), 2), ((1, 1), 2)])
def test_fir_filter_matches_explicit_filtering(pad, down):
    x, k = rand(2, 3, 8, 7), rand(4, 4, seed=1)
    assert torch.allclose(fir_filter(x, k, pad, down=down),
                          upfirdn2d_ref(x, k, down=down, pad=pad))


def test_blur_kernel_is_normalised_binomial():
    k = blur_kernel()
    assert math.isclose(k.sum().item(), 1.0)
    assert torch.allclose(k[0], torch.tensor([1, 3, 3, 1], dtype=torch.float64) / 64)


def test_equalised_linear_scaling():
    layer = EqualLinear(6, 4, bias_init=0.5, lr_mul=0.01)
    x = rand(3, 6)
    ref = x @ (layer.weight * 0.01 / math.sqrt(6)).t() + 0.5 * 0.01
    assert torch.allclose(layer(x), ref)
    # stored weights are N(0, 1) / lr_mul, so the effective weights have std 1 / sqrt(fan_in)
    big = EqualLinear(512, 512, lr_mul=0.01)
    eff = big.weight * big.scale
    assert abs(eff.std().item() * math.sqrt(512) - 1) < 0.02


def test_equalised_conv_and_fused_lrelu():
    conv = EqualConv2d(3, 5, 3, padding=1)
    with torch.no_grad():
        conv.bias.copy_(rand(5, seed=2))
    x = rand(2, 3, 6, 6)
    ref = F.conv2d(x, conv.weight / math.sqrt(27), conv.bias, padding=1)
    assert torch.allclose(conv(x), ref)
    b = rand(5, seed=3)
    y = ref + b.view(1, 5, 1, 1)
    expected = torch.where(y > 0, y, 0.2 * y) * math.sqrt(2)
    assert torch.allclose(fused_leaky_relu(ref, b), expected)


@pytest.mark.parametrize("upsample,demodulate,k", [(False, True, 3), (True, True, 3),
                                                   (False, False, 1)])
def test_modulated_conv_matches_per_sample_conv(upsample, demodulate, k):
    conv = ModulatedConv2d(4, 5, k, style_dim=7, demodulate=demodulate, upsample=upsample)
    x, style = rand(3, 4, 6, 6), rand(3, 7, seed=4)
    sd = {f"m.{n}": v for n, v in conv.state_dict().items()}
    ref = modulated_conv_ref(x, style, sd, "m", demodulate=demodulate, upsample=upsample)
    out = conv(x, style)
    assert out.shape == ref.shape == (3, 5, 6 * (2 if upsample else 1), 6 * (2 if upsample else 1))
    assert torch.allclose(out, ref)


def test_modulated_conv_channels_last_same_result():
    conv = ModulatedConv2d(4, 5, 3, style_dim=7, upsample=True)
    x, style = rand(2, 4, 5, 5), rand(2, 7, seed=4)
    out = conv(x.contiguous(memory_format=torch.channels_last), style)
    assert torch.allclose(out, conv(x, style))


@pytest.mark.parametrize("batch", [8, 3, 6])
def test_minibatch_stddev_strided_groups(batch):
    x = rand(batch, 4, 2, 3)
    out = minibatch_stddev(x)
    g = min(batch, 4) if batch % min(batch, 4) == 0 else batch
    m = batch // g
    for i in range(batch):
        members = x[i % m::m]
        expected = torch.sqrt(members.var(dim=0, unbiased=False) + 1e-8).mean()
        assert torch.allclose(out[i, 4], expected.expand(2, 3))
    assert torch.equal(out[:, :4], x)


def test_fused_epilogues_gradcheck():
    x = rand(2, 3, 4, 5).requires_grad_()
    s = rand(2, 3, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(scale_channels, (x, s))
    assert torch.autograd.gradgradcheck(scale_channels, (x, s))
    scale = rand(2, 3, 1, 1, seed=2).requires_grad_()
    for shift_shape in [(1, 3, 4, 5), (2, 3, 4, 5)]:
        shift = rand(*shift_shape, seed=3).requires_grad_()
        assert torch.autograd.gradcheck(scaled_leaky_relu, (x, scale, shift))
        assert torch.autograd.gradgradcheck(scaled_leaky_relu, (x, scale, shift))
    y = scaled_leaky_relu(x, scale, shift)
    pre = x * scale + shift
    assert torch.allclose(y, torch.where(pre > 0, pre, 0.2 * pre))
