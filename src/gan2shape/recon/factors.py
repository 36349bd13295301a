"""Raw network outputs -> the physical factors of image formation (docs/method.md sections 1 and 8).

depth:  raw (B, 1, S, S) -> tanh(raw - per-image mean) rescaled to [min_depth, max_depth],
        then the release's 2-column left/right border blend.
view:   raw (B, 6) tanh outputs (+ prior mean) -> (rx, ry, rz in radians, tx, ty, tz).
light:  raw (B, 4) tanh outputs (+ prior mean) -> ambient, diffuse, unit direction.
image:  T = ((albedo / 2 + 0.5) * shading) * 2 - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..render import lambertian_shading, normals_from_depth

BORDER_WIDTH_PX = 2
BORDER_BLEND = 1.02  # the release's blend weight (> 1: it overshoots border_depth slightly)


def rescale_depth(d: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Map values in [-1, 1] linearly to [min_depth, max_depth]."""
    return (1 + d) / 2 * max_depth + (1 - d) / 2 * min_depth


def default_border_depth(min_depth: float, max_depth: float) -> float:
    """The release's border depth 0.7 * max_depth + 0.3 * min_depth."""
    return 0.7 * max_depth + 0.3 * min_depth


def apply_depth_border(depth: torch.Tensor, border_depth: float) -> torch.Tensor:
    """Blend the 2 leftmost and rightmost columns towards ``border_depth`` as the release does.

    depth: (B, H, W). Border columns become d * (1 - 1.02) + 1.02 * border_depth, others
    are unchanged (the release's formula, kept so that its weights see what they saw).
    """
    weight = torch.zeros_like(depth)
    weight[..., :BORDER_WIDTH_PX] = BORDER_BLEND
    weight[..., -BORDER_WIDTH_PX:] = BORDER_BLEND
    return depth * (1 - weight) + weight * border_depth


def depth_from_raw(raw: torch.Tensor, min_depth: float = 0.9, max_depth: float = 1.1,
                   border_depth: float | None = None,
                   offset: torch.Tensor | None = None) -> torch.Tensor:
    """Canonical depth from the depth network's raw output.

    raw: (B, 1, H, W) or (B, H, W). Returns (B, H, W): rescale(tanh(raw - mean(raw) +
    offset)) with the mean taken per image, then the border blend (``border_depth``
    defaults to the release's 0.7 * max + 0.3 * min). offset: (1 or B, H, W) in the same
    raw units (:func:`raw_from_depth` of a shape prior, the ``residual`` prior mode), or None.
    """
    if raw.dim() == 4:
        raw = raw.squeeze(1)
    centred = raw - raw.flatten(1).mean(1).view(-1, 1, 1)
    if offset is not None:
        centred = centred + offset
    depth = rescale_depth(centred.tanh(), min_depth, max_depth)
    if border_depth is None:
        border_depth = default_border_depth(min_depth, max_depth)
    return apply_depth_border(depth, border_depth)


def raw_from_depth(depth: torch.Tensor, min_depth: float = 0.9,
                   max_depth: float = 1.1) -> torch.Tensor:
    """Raw values (B, H, W) that :func:`depth_from_raw` maps back to depth (B, H, W) when
    given as its offset with a constant network output (border blend aside). Depths are
    clamped just inside the range (|tanh| <= 0.999) so the inverse stays finite."""
    unit = (2 * depth - (max_depth + min_depth)) / (max_depth - min_depth)
    return torch.atanh(unit.clamp(-0.999, 0.999))


def depth_without_border(raw: torch.Tensor, min_depth: float = 0.9,
                         max_depth: float = 1.1) -> torch.Tensor:
    """rescale(tanh(raw - mean(raw))), (B, H, W): what the ellipsoid prior fit compares."""
    if raw.dim() == 4:
        raw = raw.squeeze(1)
    centred = raw - raw.flatten(1).mean(1).view(-1, 1, 1)
    return rescale_depth(centred.tanh(), min_depth, max_depth)


def view_from_raw(raw: torch.Tensor, view_mean: torch.Tensor | None = None,
                  rotation_range_deg: float = 60.0, xy_translation_range: float = 0.1,
                  z_translation_range: float = 0.0) -> torch.Tensor:
    """Physical view (B, 6) = (rx, ry, rz radians, tx, ty, tz) from raw values (B, 6).

    ``view_mean`` (6,) is the prior's mean in the raw convention, added before scaling
    (the release's add_mean_V). Samples drawn from the view prior already contain the
    mean: convert them with ``view_mean=None``.
    """
    if view_mean is not None:
        raw = raw + view_mean.to(raw).view(1, 6)
    return torch.cat([
        raw[:, :3] * (math.pi / 180 * rotation_range_deg),
        raw[:, 3:5] * xy_translation_range,
        raw[:, 5:] * z_translation_range,
    ], 1)


@dataclass
class Light:
    """Lambertian light per image: ambient (B,), diffuse (B,), unit direction (B, 3)."""

    ambient: torch.Tensor
    diffuse: torch.Tensor
    direction: torch.Tensor

    def repeat(self, n: int) -> Light:
        """Each light repeated n times along the batch (as ``Tensor.repeat``)."""
        return Light(self.ambient.repeat(n), self.diffuse.repeat(n), self.direction.repeat(n, 1))

    def __getitem__(self, index) -> Light:
        """The lights at ``index`` (an index tensor or slice along the batch)."""
        return Light(self.ambient[index], self.diffuse[index], self.direction[index])

    @staticmethod
    def cat(lights: list[Light]) -> Light:
        """The lights one after another along the batch."""
        return Light(torch.cat([x.ambient for x in lights]),
                     torch.cat([x.diffuse for x in lights]),
                     torch.cat([x.direction for x in lights]))


def light_direction(dxy: torch.Tensor) -> torch.Tensor:
    """Unit direction normalize(lx, ly, 1): dxy (B, 2) -> (B, 3)."""
    d = torch.cat([dxy, torch.ones_like(dxy[:, :1])], 1)
    return d / (d ** 2).sum(1, keepdim=True).sqrt()


def light_from_raw(raw: torch.Tensor, light_mean: torch.Tensor | None = None) -> Light:
    """Light from raw values (B, 4) = (l0, l1, lx, ly) (+ prior mean, the release's add_mean_L).

    ambient = l0 / 2 + 0.5, diffuse = l1 / 2 + 0.5, direction = normalize(lx, ly, 1).
    """
    if light_mean is not None:
        raw = raw + light_mean.to(raw).view(1, 4)
    return Light(raw[:, 0] / 2 + 0.5, raw[:, 1] / 2 + 0.5, light_direction(raw[:, 2:]))


def raw_from_light(light: Light, light_mean: torch.Tensor | None = None) -> torch.Tensor:
    """The raw values (B, 4) that :func:`light_from_raw` maps to ``light`` (its direction's
    z must be positive)."""
    d = light.direction
    raw = torch.stack([light.ambient * 2 - 1, light.diffuse * 2 - 1,
                       d[:, 0] / d[:, 2], d[:, 1] / d[:, 2]], 1)
    return raw if light_mean is None else raw - light_mean.to(raw).view(1, 4)


def shade(normals: torch.Tensor, light: Light) -> torch.Tensor:
    """Shading (B, 1, H, W) = ambient + diffuse * max(0, <n, l>); normals (B, H, W, 3)."""
    return lambertian_shading(normals, light.direction, light.ambient, light.diffuse)


def diffuse_term(normals: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """max(0, <n, l>) as (B, 1, H, W): the part of the shading the smoothness loss sees."""
    ones = torch.ones(normals.shape[0], dtype=normals.dtype, device=normals.device)
    return lambertian_shading(normals, direction, torch.zeros_like(ones), ones)


def canonical_image(albedo: torch.Tensor, shading: torch.Tensor) -> torch.Tensor:
    """T = ((albedo / 2 + 0.5) * shading) * 2 - 1; albedo (B, 3, H, W), shading (B, 1, H, W)."""
    return (albedo / 2 + 0.5) * shading * 2 - 1


@dataclass
class Factors:
    """The canonical factors of one batch: depth (B, H, W), normals (B, H, W, 3),
    albedo (B, 3, H, W), light, shading (B, 1, H, W), canonical image (B, 3, H, W)."""

    depth: torch.Tensor
    normals: torch.Tensor
    albedo: torch.Tensor
    light: Light
    shading: torch.Tensor
    diffuse: torch.Tensor
    image: torch.Tensor


def compose(depth: torch.Tensor, albedo: torch.Tensor, light: Light,
            fov_deg: float = 10.0) -> Factors:
    """Normals, shading and the canonical image from depth, albedo and light."""
    normals = normals_from_depth(depth, fov_deg=fov_deg)
    diffuse = diffuse_term(normals, light.direction)
    shading = light.ambient.view(-1, 1, 1, 1) + light.diffuse.view(-1, 1, 1, 1) * diffuse
    return Factors(depth, normals, albedo, light, shading, diffuse,
                   canonical_image(albedo, shading))
