"""Textured rendering of a depth map's grid mesh, for visualisation (rotations, relighting)."""

import torch

from .reproject import reproject


def render_mesh(depth: torch.Tensor, texture: torch.Tensor, view: torch.Tensor,
                background: float | tuple[float, ...] = 1.0, fov_deg: float = 10.0,
                rot_center_depth: float = 1.0, conventions: str = "clean") -> torch.Tensor:
    """The grid mesh of `depth` textured with `texture`, seen from `view`.

    depth: (B, H, W); texture: (B, C, H, W) (its pixel (r, c) colours mesh vertex (r, c));
    view: (B, 6) physical; background: a value, or one per channel, where nothing is hit.
    Returns (B, C, H, W).
    """
    image, mask, _ = reproject(depth, texture, view, fov_deg, rot_center_depth, conventions)
    fill = torch.as_tensor(background, dtype=image.dtype, device=image.device)
    fill = fill.reshape(1, -1, 1, 1) if fill.dim() else fill
    return image * mask + fill * (1 - mask)
