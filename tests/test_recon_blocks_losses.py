"""Each loss against a hand computation or a brute-force loop written here."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan2shape.errors import UserError
from gan2shape.recon import losses


def test_photometric_masked_l1_by_hand():
    recon = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]).expand(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert losses.photometric_loss(recon, target, mask).item() == pytest.approx(2.5)
    assert losses.photometric_loss(recon, target).item() == pytest.approx(2.5)
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert losses.photometric_loss(recon, target, mask).item() == pytest.approx(1.5)


def test_smoothness_on_analytic_maps():
    i, j = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    assert losses.smoothness_loss((j ** 2)[None]).item() == pytest.approx(2.0)  # dxx = 2
    assert losses.smoothness_loss((i ** 2)[None]).item() == pytest.approx(2.0)  # dyy = 2
    assert losses.smoothness_loss((i * j)[None]).item() == pytest.approx(2.0)  # dxy = dyx = 1
    assert losses.smoothness_loss((3 * i + 2 * j + 1)[None, None]).item() == pytest.approx(0.0)


def test_latent_regularisation():
    assert losses.latent_regularisation(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).item() == 7.5


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
    got = losses.discriminator_feature_loss(ToyD(), fake, real, mask, n_blocks=3)
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
    vgg = losses.load_vgg16(path, 3)
    assert not any(p.requires_grad for p in vgg.parameters())
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    x = (img / 2 + 0.5 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(vgg(x)[2], vgg_chain(state, x, 3)[2])
    loss = losses.make_perceptual_loss("vgg16", vgg16_path=path)
    assert loss(img, img).item() == 0.0
    other = torch.rand(1, 3, 16, 16) * 2 - 1
    want = (vgg_chain(state, x, 3)[2] - vgg_chain(state, (other / 2 + 0.5 - torch.tensor(
        [0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1), 3)[2]).abs().mean()
    assert loss(img, other).item() == pytest.approx(want.item(), rel=1e-5)
    del state["features.12.bias"]
    torch.save(state, path)
    with pytest.raises(UserError, match="features.12.bias"):
        losses.load_vgg16(path)


def test_lpips_against_a_brute_force_computation(tmp_path):
    state = vgg_state(1)
    torch.save(state, tmp_path / "vgg16.pth")
    g = torch.Generator().manual_seed(2)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
           for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, tmp_path / "lpips_vgg.pth")
    loss = losses.make_perceptual_loss("lpips", tmp_path / "vgg16.pth",
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
        losses.load_lpips_weights(tmp_path / "bad.pth")
    with pytest.raises(UserError, match="lpips_path"):
        losses.make_perceptual_loss("lpips", tmp_path / "vgg16.pth")


def test_perceptual_choices():
    img = torch.rand(1, 3, 16, 16)
    assert losses.make_perceptual_loss("none")(img, -img).item() == 0.0
    d_loss = losses.make_perceptual_loss("discriminator", discriminator=ToyD())
    assert d_loss(img, -img).item() > 0.0
    with pytest.raises(UserError):
        losses.make_perceptual_loss("vgg16")
    with pytest.raises(UserError):
        losses.make_perceptual_loss("lpips")
    with pytest.raises(UserError):
        losses.make_perceptual_loss("discriminator")
