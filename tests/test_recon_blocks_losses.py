"""Each loss against a hand computation or a brute-force loop written here."""

import pytest
import torch

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
