"""Perceptual features and distances (gan2shape.perceptual), shared by the inversion and the
reconstruction: each against a brute-force loop, and against the formulas the two used before
they shared this module (written out here), bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan2shape import perceptual
from gan2shape.errors import UserError
from gan2shape.gan import Discriminator


class ToyD(nn.Module):
    """features(img, n): block k is img average-pooled 2**k times, times (k + 1)."""

    n_feature_blocks = 3

    def features(self, img, n):
        out, x = [], img
        for k in range(n):
            out.append(x * (k + 1))
            x = F.avg_pool2d(x, 2)
        return out


def test_discriminator_feature_loss_brute_force():
    torch.manual_seed(0)
    fake = torch.randn(2, 3, 8, 8, requires_grad=True)
    real = torch.randn(2, 3, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.3).float()
    got = perceptual.discriminator_feature_loss(ToyD(), fake, real, mask, n_blocks=3)
    want = 0.0
    for k in range(3):
        s = 2 ** k
        num = den = 0.0
        for b in range(2):
            for c in range(3):
                for y in range(8 // s):
                    for x in range(8 // s):
                        m = mask[b, 0, y * s:(y + 1) * s, x * s:(x + 1) * s].mean().item()
                        f = fake[b, c, y * s:(y + 1) * s, x * s:(x + 1) * s].mean().item()
                        r = real[b, c, y * s:(y + 1) * s, x * s:(x + 1) * s].mean().item()
                        num += abs(f - r) * (k + 1) * m
                        den += m
        want += num / den
    assert got.item() == pytest.approx(want, rel=1e-5)
    got.backward()
    assert fake.grad is not None


VGG_WIDTHS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
              12: (256, 256), 14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512),
              24: (512, 512), 26: (512, 512), 28: (512, 512)}


def vgg_state(seed=0, last=28):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (cin, cout) in VGG_WIDTHS.items():
        if i > last:
            break
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin ** 0.5)
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.05
    state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


def vgg_chain(state, x, n=5):
    """Brute force: torchvision's vgg16 features as explicit convs, returning relu*_* taps."""
    taps = []
    for block in ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))[:n]:
        for i in block:
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"],
                                padding=1))
        taps.append(x)
        if len(taps) < n:
            x = F.max_pool2d(x, 2)
    return taps


def test_vgg16_relu33_loss_loads_torchvision_keys(tmp_path):
    state = vgg_state(last=17)  # relu3_3 needs convs up to 14; later keys are ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    vgg = perceptual.load_vgg16(path, 3)
    assert not any(p.requires_grad for p in vgg.parameters())
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    x = (img / 2 + 0.5 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(vgg(x)[2], vgg_chain(state, x, 3)[2])
    loss = perceptual.reconstruction_perceptual("vgg16", vgg16_path=path)
    assert loss(img, img).item() == 0.0
    other = torch.rand(1, 3, 16, 16) * 2 - 1
    want = (vgg_chain(state, x, 3)[2] - vgg_chain(state, (other / 2 + 0.5 - torch.tensor(
        [0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1), 3)[2]).abs().mean()
    assert loss(img, other).item() == pytest.approx(want.item(), rel=1e-5)
    del state["features.12.bias"]
    torch.save(state, path)
    with pytest.raises(UserError, match="features.12.bias"):
        perceptual.load_vgg16(path)


def test_lpips_against_a_brute_force_computation(tmp_path):
    state = vgg_state(1)
    torch.save(state, tmp_path / "vgg16.pth")
    g = torch.Generator().manual_seed(2)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
           for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, tmp_path / "lpips_vgg.pth")
    loss = perceptual.reconstruction_perceptual("lpips", tmp_path / "vgg16.pth",
                                       lpips_path=tmp_path / "lpips_vgg.pth")
    a = torch.rand(2, 3, 16, 16) * 2 - 1
    b = torch.rand(2, 3, 16, 16) * 2 - 1
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fa, fb = vgg_chain(state, (a - shift) / scale), vgg_chain(state, (b - shift) / scale)
    want = 0.0
    for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
        w = lin[f"lin{i}.model.1.weight"].flatten()
        for n in range(2):
            xn = x[n] / (x[n].pow(2).sum(0).sqrt() + 1e-10)
            yn = y[n] / (y[n].pow(2).sum(0).sqrt() + 1e-10)
            want += float((w.view(-1, 1, 1) * (xn - yn) ** 2).sum(0).mean()) / 2
    assert loss(a, b).item() == pytest.approx(want, rel=1e-4)
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-9)
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="lin1"):
        perceptual.load_lpips_weights(tmp_path / "bad.pth")
    with pytest.raises(UserError, match="lpips_path"):
        perceptual.reconstruction_perceptual("lpips", tmp_path / "vgg16.pth")


def test_perceptual_choices():
    img = torch.rand(1, 3, 16, 16)
    assert perceptual.reconstruction_perceptual("none") is None
    d_loss = perceptual.reconstruction_perceptual("discriminator", discriminator=ToyD())
    assert d_loss(img, -img).item() > 0.0
    with pytest.raises(UserError):
        perceptual.reconstruction_perceptual("vgg16")
    with pytest.raises(UserError):
        perceptual.reconstruction_perceptual("lpips")
    with pytest.raises(UserError):
        perceptual.reconstruction_perceptual("discriminator")
    assert perceptual.inversion_perceptual("none") is None
    with pytest.raises(UserError):
        perceptual.inversion_perceptual("vgg")
    with pytest.raises(UserError):
        perceptual.inversion_perceptual("lpips")


# The formulas invert and reconstruct computed before they shared gan2shape.perceptual.

def old_per_image_mean(x, mask):
    if mask is None:
        return x.flatten(1).mean(1)
    if mask.shape[-2:] != x.shape[-2:]:
        mask = F.adaptive_avg_pool2d(mask, x.shape[-2:])
    return (x * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * x.shape[1]).clamp_min(1e-8)


def old_inversion_d_distance(d, images, target, mask):
    total = 0.0
    with torch.no_grad():
        targets = [t.detach() for t in d.features(target, d.n_feature_blocks)]
    for f, t in zip(d.features(images, d.n_feature_blocks), targets, strict=True):
        scale = t.abs().flatten(1).mean(1).clamp_min(1e-6)
        total = total + old_per_image_mean((f - t).abs(), mask) / scale
    return total


def old_inversion_vgg_features(state, images):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.interpolate(((images + 1) / 2 - mean) / std, size=64, mode="bilinear",
                      align_corners=False)
    out = []
    for stage, block in enumerate(((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))):
        if stage:
            x = F.max_pool2d(x, 2)
        for i in block:
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"],
                                padding=1))
        out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
    return out


def old_release_feature_l1(fake, real, mask):
    loss = (fake - real).abs()
    if mask is None:
        return loss.mean()
    kh, kw = mask.shape[-2] // loss.shape[-2], mask.shape[-1] // loss.shape[-1]
    weight = F.avg_pool2d(mask, kernel_size=(kh, kw), stride=(kh, kw)).expand_as(loss)
    return (loss * weight).sum() / weight.sum()


def value_and_grad(loss_of, x):
    x = x.clone().requires_grad_(True)
    value = loss_of(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    t = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.3).float()
    return x, t, mask


def d32():
    """A 32 px discriminator: 3 blocks, so the terms (4 blocks at most) take all of them."""
    torch.manual_seed(0)
    return Discriminator(32, channels={4: 16, 8: 16, 16: 16, 32: 8}).requires_grad_(False)


@pytest.mark.parametrize("masked", [False, True])
def test_inversion_discriminator_term_is_the_old_formula_bit_for_bit(images, masked):
    x, t, mask = images
    mask = mask if masked else None
    d = d32()
    term = perceptual.inversion_perceptual("discriminator", d)
    targets = term.target_features(t)
    new = value_and_grad(lambda y: term.to_features(y, targets, mask), x)
    old = value_and_grad(lambda y: old_inversion_d_distance(d, y, t, mask), x)
    assert new[0].shape == (2,)
    assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])
    # and a loop over images, blocks and pixels
    for b in range(2):
        want = 0.0
        n = d.n_feature_blocks
        for f, g in zip(d.features(x[b:b + 1], n), d.features(t[b:b + 1], n), strict=True):
            h = f.shape[-1]
            k = 32 // h
            num = den = 0.0
            for i in range(h):
                for j in range(h):
                    m = 1.0 if mask is None else float(mask[b, 0, i * k:(i + 1) * k,
                                                            j * k:(j + 1) * k].mean())
                    num += m * float((f[0, :, i, j] - g[0, :, i, j]).abs().sum())
                    den += m * f.shape[1]
            want += num / den / float(g.abs().mean())
        assert float(new[0][b]) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("masked", [False, True])
def test_inversion_vgg_term_is_the_old_formula_bit_for_bit(images, masked):
    x, t, mask = images
    mask = mask if masked else None
    state = vgg_state(4)
    term = perceptual.inversion_perceptual("vgg", vgg_weights=state)
    targets = term.target_features(t)
    assert all(torch.equal(a, b) for a, b in zip(
        targets, old_inversion_vgg_features(state, t), strict=True))
    old_targets = old_inversion_vgg_features(state, t)

    def old(y):
        return sum(old_per_image_mean((f - g).pow(2), mask) * f.shape[1]
                   for f, g in zip(old_inversion_vgg_features(state, y), old_targets,
                                   strict=True))
    new = value_and_grad(lambda y: term.to_features(y, targets, mask), x)
    want = value_and_grad(old, x)
    assert torch.equal(new[0], want[0]) and torch.equal(new[1], want[1])


@pytest.mark.parametrize("masked", [False, True])
def test_reconstruction_discriminator_terms_are_the_release_formula_bit_for_bit(images,
                                                                                 masked):
    x, t, mask = images
    mask = mask if masked else None
    d = d32()
    with torch.no_grad():
        targets = d.features(t, d.n_feature_blocks)

    def old(y):
        return sum(old_release_feature_l1(f, r, mask)
                   for f, r in zip(d.features(y, d.n_feature_blocks), targets, strict=True))
    want = value_and_grad(old, x)
    term = perceptual.reconstruction_perceptual("discriminator", discriminator=d)
    for loss in (lambda y: term(y, t, mask),
                 lambda y: perceptual.discriminator_feature_loss(d, y, t, mask)):
        got = value_and_grad(loss, x)
        assert got[0].shape == ()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_pooled_masks_are_the_releases_blocks_bit_for_bit():
    mask = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for h in (64, 32, 16, 8, 4, 2):
        k = 64 // h
        assert torch.equal(perceptual.pool_mask(mask, (h, h)), F.avg_pool2d(mask, k, k))
