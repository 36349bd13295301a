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


def vgg_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    widths = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
              12: (256, 256), 14: (256, 256), 17: (256, 512)}
    state = {}
    for i, (cin, cout) in widths.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.05
    state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


def test_vgg16_relu33_loads_torchvision_keys_and_computes_the_chain(tmp_path):
    state = vgg_state()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    vgg = losses.load_vgg16_relu33(path)
    assert not any(p.requires_grad for p in vgg.parameters())
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    x = (img / 2 + 0.5 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for i in (0, 2, "pool", 5, 7, "pool", 10, 12, 14):
        if i == "pool":
            x = F.max_pool2d(x, 2)
        else:
            x = F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"],
                                padding=1))
    torch.testing.assert_close(vgg(img), x)
    loss = losses.make_perceptual_loss("vgg16", vgg16_path=path)
    assert loss(img, img).item() == 0.0
    assert loss(img, -img).item() > 0.0
    del state["features.12.bias"]
    torch.save(state, path)
    with pytest.raises(UserError, match="features.12.bias"):
        losses.load_vgg16_relu33(path)


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
