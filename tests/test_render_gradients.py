"""Gradients of the rendered depth and of the re-projected image against finite
differences (torch.autograd.gradcheck, float64)."""

import math

import pytest
import torch

from gan2shape.render import reproject, warp_canon_depth


def smooth_depth(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size, dtype=torch.float64),
                          torch.linspace(0, 1, size, dtype=torch.float64), indexing="ij")
    a, b, c = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * 0.1
    return (1 + a * torch.sin(3 * x + 1) + b * torch.cos(2 * y) + c * x * y).unsqueeze(0)


VIEWS = [
    [0.1, math.radians(25), 0.05, 0.02, -0.03, 0.0],
    [-0.2, math.radians(-40), 0.0, -0.05, 0.01, 0.0],
]


@pytest.mark.parametrize("conventions", ["clean", "release"])
@pytest.mark.parametrize("view", VIEWS)
def test_rendered_depth_gradient(conventions, view):
    depth = smooth_depth(6, 0).requires_grad_(True)
    view_t = torch.tensor([view], dtype=torch.float64, requires_grad=True)
    weights = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)

    def f(d, v):
        return (warp_canon_depth(d, v, conventions=conventions)[0] * weights).sum()

    rendered, mask = warp_canon_depth(depth, view_t, conventions=conventions)
    assert mask.sum() > 10  # gradients flow through a meaningful number of pixels
    assert torch.autograd.gradcheck(f, (depth, view_t), eps=1e-6, atol=1e-6, rtol=1e-4)
    # ...and they are not identically zero
    (g,) = torch.autograd.grad(f(depth, view_t), depth)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_reprojected_image_gradient(conventions):
    depth = smooth_depth(6, 2).requires_grad_(True)
    image = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(3),
                       dtype=torch.float64, requires_grad=True)
    view = torch.tensor([VIEWS[0]], dtype=torch.float64, requires_grad=True)
    weights = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(4),
                         dtype=torch.float64)

    def f(d, im, v):
        out, mask, _ = reproject(d, im, v, conventions=conventions)
        return (out * mask * weights).sum()

    # fast mode: finite differences along random directions of all inputs at once
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(f, (depth, image, view), eps=1e-6, atol=1e-6,
                                        rtol=1e-4, fast_mode=True)
