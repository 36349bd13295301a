"""Raw network outputs -> physical factors, against hand computations (docs/method.md
sections 1 and 8)."""

import math

import numpy as np
import torch

from gan2shape.recon import factors


def test_depth_from_raw_matches_hand_computation():
    raw = torch.tensor([[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                         [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]]])  # (1, 2, 6), mean 2.5
    got = factors.depth_from_raw(raw.unsqueeze(1), 0.9, 1.1)
    r = raw.numpy()[0]
    d = np.tanh(r - 2.5)
    d = (1 + d) / 2 * 1.1 + (1 - d) / 2 * 0.9
    border = 0.7 * 1.1 + 0.3 * 0.9
    d[:, [0, 1, 4, 5]] = d[:, [0, 1, 4, 5]] * (1 - 1.02) + 1.02 * border
    np.testing.assert_allclose(got[0].numpy(), d, rtol=0, atol=1e-6)


def test_depth_mean_is_per_image():
    raw = torch.stack([torch.zeros(1, 8, 8), torch.full((1, 8, 8), 7.0)])
    got = factors.depth_without_border(raw)
    torch.testing.assert_close(got, torch.ones(2, 8, 8))


def test_view_from_raw_scaling_and_mean():
    raw = torch.tensor([[0.5, -0.5, 0.1, 1.0, -1.0, 1.0]])
    mean = torch.tensor([0.1, 0.0, 0.0, 0.0, 0.5, 0.0])
    got = factors.view_from_raw(raw, mean, 60.0, 0.1, 0.0)
    deg = math.pi / 180
    want = torch.tensor([[0.6 * 60 * deg, -0.5 * 60 * deg, 0.1 * 60 * deg, 0.1, -0.05, 0.0]])
    torch.testing.assert_close(got, want)


def test_light_from_raw():
    light = factors.light_from_raw(torch.tensor([[0.0, 0.5, 1.0, 0.0]]),
                                   torch.tensor([0.2, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(light.ambient, torch.tensor([0.6]))
    torch.testing.assert_close(light.diffuse, torch.tensor([0.75]))
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(light.direction, torch.tensor([[s, 0.0, s]]))


def test_raw_from_light_inverts_light_from_raw():
    """A light of known numbers back to its raw values, with and without the prior mean."""
    s = 1 / math.sqrt(2)
    light = factors.Light(torch.tensor([0.6]), torch.tensor([0.75]),
                          torch.tensor([[s, 0.0, s]]))
    mean = torch.tensor([0.2, 0.0, 0.0, 0.0])
    torch.testing.assert_close(factors.raw_from_light(light, mean),
                               torch.tensor([[0.0, 0.5, 1.0, 0.0]]))
    raw = torch.randn(5, 4)
    torch.testing.assert_close(factors.raw_from_light(factors.light_from_raw(raw)), raw)


def test_canonical_image_formula():
    albedo = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    shading = torch.full((1, 1, 1, 1), 0.5)
    got = factors.canonical_image(albedo, shading)
    torch.testing.assert_close(got.flatten(), torch.tensor([-1.0, -0.5, 0.0]))


def test_compose_shading_on_a_tilted_plane():
    # A plane whose normal is known: shading = ka + kd * max(0, <n, l>) with n from render.
    h = w = 16
    cols = torch.arange(w, dtype=torch.float32)
    depth = (1.0 + 0.002 * cols).expand(1, h, w).clone()
    light = factors.Light(torch.tensor([0.3]), torch.tensor([0.6]),
                          factors.light_direction(torch.tensor([[0.4, -0.2]])))
    albedo = torch.zeros(1, 3, h, w)
    f = factors.compose(depth, albedo, light)
    n = f.normals[0, 5, 5]
    cos = max(0.0, float((n * light.direction[0]).sum()))
    assert abs(float(f.shading[0, 0, 5, 5]) - (0.3 + 0.6 * cos)) < 1e-6
    assert abs(float(f.diffuse[0, 0, 5, 5]) - cos) < 1e-6
    torch.testing.assert_close(f.image, f.shading.expand(1, 3, h, w) - 1)


def test_raw_from_depth_inverts_depth_from_raw_as_offset():
    """depth = min + (max - min) * (tanh(offset) + 1) / 2 with a constant network output,
    so raw_from_depth(d) as the offset gives d back (border columns blended apart)."""
    torch.manual_seed(0)
    d = 0.92 + 0.16 * torch.rand(2, 8, 8)
    offset = factors.raw_from_depth(d, 0.9, 1.1)
    expected_offset = 0.5 * torch.log((1 + (d - 1.0) / 0.1) / (1 - (d - 1.0) / 0.1))
    torch.testing.assert_close(offset, expected_offset, atol=1e-5, rtol=0)
    got = factors.depth_from_raw(torch.full((2, 1, 8, 8), 3.0), 0.9, 1.1, offset=offset)
    torch.testing.assert_close(got[..., 2:-2], d[..., 2:-2], atol=1e-6, rtol=0)
