"""Generator and discriminator against slow references; determinism, W/W+, truncation, exits."""

import pytest
import torch

from gan2shape.gan import Discriminator, Generator
from stylegan2_reference import (
    discriminator_features_ref,
    discriminator_ref,
    generator_ref,
    mapping_ref,
)

WIDTHS = {4: 16, 8: 16, 16: 12, 32: 8}


def small_generator(size=32, seed=0):
    torch.manual_seed(seed)
    g = Generator(size, style_dim=24, n_mlp=3, channels=WIDTHS)
    with torch.no_grad():  # non-trivial noise strengths and biases (zero at init)
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias"):
                p.normal_(0, 0.3)
    return g


def f64(sd):
    return {k: v.double() for k, v in sd.items()}


def test_generator_matches_per_sample_reference():
    g = small_generator()
    w_plus = torch.randn(3, g.n_latent, 24)
    ref = generator_ref(f64(g.state_dict()), w_plus.double())
    img = g.synthesis(w_plus)
    assert img.shape == (3, 3, 32, 32)
    assert torch.allclose(img.double(), ref, atol=2e-5, rtol=1e-4)


def test_generator_gradients_match_reference():
    g = small_generator(size=16).double()
    w_plus = torch.randn(2, g.n_latent, 24, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    (g.synthesis(w_plus) * probe).sum().backward()
    sd = {k: v.detach().clone().requires_grad_(v.is_floating_point())
          for k, v in g.state_dict().items()}
    w_ref = w_plus.detach().clone().requires_grad_()
    (generator_ref(sd, w_ref) * probe).sum().backward()
    assert torch.allclose(w_plus.grad, w_ref.grad, atol=1e-8, rtol=1e-6)
    params = dict(g.named_parameters())
    for name in ["convs.0.conv.weight", "convs.1.noise.weight", "convs.1.activate.bias",
                 "conv1.conv.modulation.weight", "to_rgbs.1.conv.weight", "input.input"]:
        assert torch.allclose(params[name].grad, sd[name].grad, atol=1e-8, rtol=1e-6), name


def test_discriminator_input_gradient_matches_reference():
    d = small_discriminator().double()
    img = torch.randn(4, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    sum(f.square().sum() for f in d.features(img, 3)).backward()
    d(img).sum().backward()
    sd = {k: v.detach() for k, v in d.state_dict().items()}
    ref_img = img.detach().clone().requires_grad_()
    discriminator_ref(sd, ref_img).sum().backward()
    grad_logits = ref_img.grad.clone()
    ref_img.grad = None
    feats = discriminator_features_ref(sd, ref_img)[:3]
    sum(f.square().sum() for f in feats).backward()
    assert torch.allclose(img.grad, grad_logits + ref_img.grad, atol=1e-8, rtol=1e-6)


def test_mapping_matches_reference_and_splits():
    g = small_generator()
    z = torch.randn(4, 24)
    w = g.mapping(z)
    assert torch.allclose(w.double(), mapping_ref(f64(g.state_dict()), z.double(), 3), atol=1e-5)
    # the release's split: head modules [0, k), tail [k, 9 equivalent)
    for k in range(len(g.style) + 1):
        assert torch.allclose(g.mapping(g.mapping(z, 0, k), k), w, atol=1e-6)
    assert torch.equal(g.mapping(z, 0, 0), z)  # an empty head is not even the pixel norm


def test_stored_noise_is_deterministic_and_random_is_not():
    g = small_generator()
    w = torch.randn(2, 24)
    a, b = g.synthesis(w), g.synthesis(w, noise="stored")
    assert torch.equal(a, b)
    r1, r2 = g.synthesis(w, noise="random"), g.synthesis(w, noise="random")
    assert not torch.allclose(r1, r2)


def test_w_and_w_plus_agree_and_layers_are_separate():
    g = small_generator()
    w = torch.randn(2, 24)
    w_plus = w[:, None].repeat(1, g.n_latent, 1)
    assert torch.allclose(g.synthesis(w), g.synthesis(w_plus), atol=1e-6)
    # changing the last style (the final to_rgb) must not change the lower-resolution skip
    w_plus2 = w_plus.clone()
    w_plus2[:, -1] += 1.0
    assert not torch.allclose(g.synthesis(w_plus2), g.synthesis(w_plus))
    assert torch.equal(g.synthesis(w_plus2, stop_resolution=16),
                       g.synthesis(w_plus, stop_resolution=16))


def test_truncation_interpolates_towards_mean_latent():
    g = small_generator()
    z = torch.randn(2, 24)
    mean = g.mean_latent(256, seed=1)
    assert mean.shape == (1, 24)
    assert torch.allclose(mean, g.mean_latent(256, seed=1))
    w = g.mapping(z)
    assert torch.allclose(g(z, truncation=0.5, truncation_latent=mean),
                          g.synthesis(mean + 0.5 * (w - mean)), atol=1e-6)
    same = g(z, truncation=0.0, truncation_latent=mean)
    assert torch.allclose(same[0], same[1], atol=1e-6)
    assert torch.allclose(g(z), g.synthesis(w))


@pytest.mark.parametrize("stop", [4, 8, 16])
def test_early_exit_is_the_smaller_generator(stop):
    g = small_generator()
    small = Generator(stop, style_dim=24, n_mlp=3, channels=WIDTHS)
    own = small.state_dict()
    small.load_state_dict({k: v for k, v in g.state_dict().items() if k in own}, strict=True)
    w = torch.randn(2, 24)
    out = g.synthesis(w, stop_resolution=stop)
    assert out.shape == (2, 3, stop, stop)
    assert torch.allclose(out, small.synthesis(w), atol=1e-6)


def test_bad_synthesis_arguments():
    g = small_generator()
    with pytest.raises(ValueError):
        g.synthesis(torch.randn(2, 5, 24))
    with pytest.raises(ValueError):
        g.synthesis(torch.randn(2, 24), stop_resolution=12)


def small_discriminator():
    torch.manual_seed(0)
    d = Discriminator(32, channels=WIDTHS)
    with torch.no_grad():
        for name, p in d.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3)
    return d


@pytest.mark.parametrize("batch", [8, 2, 6])
def test_discriminator_matches_reference(batch):
    d = small_discriminator()
    img = torch.randn(batch, 3, 32, 32)
    ref = discriminator_ref(f64(d.state_dict()), img.double())
    out = d(img)
    assert out.shape == (batch, 1)
    assert torch.allclose(out.double(), ref, atol=1e-4, rtol=1e-4)


def test_discriminator_features_are_the_residual_blocks_after_the_stem():
    d = small_discriminator()
    img = torch.randn(2, 3, 32, 32)
    feats = d.features(img, 3)
    # widths 8 (32 px stem) -> 12 (16 px) -> 16 (8 px) -> 16 (4 px): the stem is no feature
    assert [f.shape[1:] for f in feats] == [(12, 16, 16), (16, 8, 8), (16, 4, 4)]
    ref = discriminator_features_ref(f64(d.state_dict()), img.double())
    for f, r in zip(feats, ref, strict=True):
        assert torch.allclose(f.double(), r, atol=1e-5, rtol=1e-4)
    assert len(d.features(img, 1)) == 1
    for n in (0, 4):  # 3 residual blocks at 32 px
        with pytest.raises(ValueError):
            d.features(img, n)


def test_discriminator_feature_shapes_match_the_release_at_128px_config_e():
    d = Discriminator(128, channel_multiplier=1)
    with torch.no_grad():
        feats = d.features(torch.zeros(1, 3, 128, 128), 4)
    assert [tuple(f.shape) for f in feats] == [(1, 256, 64, 64), (1, 512, 32, 32),
                                               (1, 512, 16, 16), (1, 512, 8, 8)]


def test_bfloat16_autocast_path_runs_and_stays_close():
    # low_precision() enables this on CUDA and on CPUs with native bfloat16; the code path
    # (dtype handling, float32 demodulation, custom backward) is checked here directly.
    g, d = small_generator(size=16), Discriminator(16, channels=WIDTHS)
    w = g.mapping(torch.randn(4, 24)).detach().requires_grad_()
    ref = g.synthesis(w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = g.synthesis(w)
        feats = d.features(img, 2)
        logits = d(img)
    assert img.dtype == torch.bfloat16 and logits.shape == (4, 1)
    assert (img.float() - ref).abs().mean() < 0.02 * ref.abs().mean().clamp(min=1.0)
    sum(f.float().abs().mean() for f in feats).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
