"""An estimate of the input's light from the image and the shape prior (``input_light:
estimate``), for Step 1 instead of the light prior's mean.

Shading is grey, so the pixels of one albedo region share one chromaticity whatever their
shading; the region of the face's dominant chromaticity (its skin, picked in the middle
third of the object mask) then shows ``albedo * (ambient + diffuse * max(0, <n, l>))`` with
one albedo. With the prior's normals n, every candidate direction l of a grid gets the
least-squares fit ``brightness ~ a + b * max(0, <n, l>)`` on those pixels, and the best
(b > 0) wins. The prior's normals are not the face's, which biases the winner away from the
frontal light; it is shrunk towards the light prior's mean direction by ``shrink`` (chosen
on the validation faces). Ambient and diffuse stay the prior mean's (the albedo's scale
cannot be told from theirs).
"""

from __future__ import annotations

import torch

from ..render import normals_from_depth
from .factors import Light, light_direction

# Candidate (lx, ly) of normalize(lx, ly, 1): up to 50 deg sideways, -27 .. 45 deg vertically
# (the families' lights, turned by up to 30 deg of yaw, lie inside).
GRID_X = torch.linspace(-1.2, 1.2, 49)
GRID_Y = torch.linspace(-0.5, 1.0, 31)


def skin_pixels(image: torch.Tensor, mask: torch.Tensor, tolerance: float = 0.01
                ) -> torch.Tensor:
    """Boolean (H, W): object pixels whose chromaticity (rgb / sum) is within ``tolerance``
    (per channel) of the median chromaticity of the mask's middle third of rows.
    image (3, H, W) in [0, 1]; mask (H, W) boolean."""
    chroma = image / image.sum(0, keepdim=True).clamp(min=1e-6)
    h = mask.shape[0]
    middle = mask.clone()
    middle[: h // 3] = False
    middle[2 * h // 3:] = False
    if not middle.any():
        middle = mask
    reference = chroma[:, middle].median(1).values
    return mask & ((chroma - reference[:, None, None]).abs().amax(0) < tolerance)


def direction_scores(brightness: torch.Tensor, normals: torch.Tensor,
                     directions: torch.Tensor) -> torch.Tensor:
    """Mean squared residual (G,) of the best fit brightness ~ a + b * max(0, <n, l>) for
    each unit direction l of directions (G, 3); brightness (P,), normals (P, 3). inf where
    the fit's b is not positive (the light would darken what it faces)."""
    d = (normals @ directions.T).clamp(min=0)  # (P, G)
    dx = d - d.mean(0)
    dy = brightness - brightness.mean()
    b = (dx * dy[:, None]).sum(0) / (dx * dx).sum(0).clamp(min=1e-12)
    residual = dy[:, None] - b * dx
    score = (residual**2).mean(0)
    return torch.where(b > 0, score, torch.full_like(score, float("inf")))


def estimate_light(image: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor,
                   light_mean: torch.Tensor, fov_deg: float, shrink: float = 0.7,
                   tolerance: float = 0.01) -> Light:
    """The input's light (batch 1) from image (1, 3, S, S) in [-1, 1], the prior's depth
    (1, S, S), the object mask (1, 1, S, S) and the light prior's raw mean (4,)."""
    rgb = (image[0] + 1) / 2
    skin = skin_pixels(rgb, mask[0, 0] > 0.5, tolerance)
    mean = light_mean.float().to(image.device)
    if int(skin.sum()) < 10:  # nothing to fit: the prior's mean
        return Light(mean[:1] / 2 + 0.5, mean[1:2] / 2 + 0.5, light_direction(mean[None, 2:]))
    grid = torch.stack(torch.meshgrid(GRID_X, GRID_Y, indexing="ij"), -1).reshape(-1, 2)
    grid = grid.to(image.device)
    normals = normals_from_depth(depth, fov_deg)[0][skin]
    scores = direction_scores(rgb.mean(0)[skin], normals, light_direction(grid))
    best = grid[scores.argmin()]
    xy = mean[2:] + shrink * (best - mean[2:])
    return Light(mean[:1] / 2 + 0.5, mean[1:2] / 2 + 0.5, light_direction(xy[None]))
