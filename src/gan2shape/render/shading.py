"""Normals from a depth map and Lambertian shading (docs/method.md sections 1 and 8)."""

import torch

from .camera import depth_to_points

# The release adds this to the norm of the (tiny, ~1e-5) cross product, leaving its normals
# 0.3 % (64 px) to 1.3 % (128 px) short of unit length; kept so shading and MAD match it.
_RELEASE_NORMAL_EPS = 1e-7


def normals_from_depth(depth: torch.Tensor, fov_deg: float = 10.0) -> torch.Tensor:
    """Camera-space normals as the release computes them: depth (B, H, W) -> (B, H, W, 3).

    n = (tu x tv) / (|tu x tv| + 1e-7) with tu, tv the horizontal and vertical central
    differences of the back-projected points; the one-pixel frame gets (0, 0, 1).
    """
    points = depth_to_points(depth, fov_deg)
    tu = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    tv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    inner = torch.linalg.cross(tu, tv, dim=-1)
    inner = inner / (inner.norm(dim=-1, keepdim=True) + _RELEASE_NORMAL_EPS)
    normals = torch.zeros_like(points)
    normals[..., 2] = 1.0
    normals[:, 1:-1, 1:-1] = inner
    return normals


def lambertian_shading(normals: torch.Tensor, light_dir: torch.Tensor, ambient: torch.Tensor,
                       diffuse: torch.Tensor) -> torch.Tensor:
    """ambient + diffuse * max(0, <n, l>): normals (B, H, W, 3), light_dir (B, 3),
    ambient (B,), diffuse (B,) -> shading (B, 1, H, W)."""
    cos = (normals * light_dir[:, None, None, :]).sum(-1).clamp(min=0)
    return (ambient[:, None, None] + diffuse[:, None, None] * cos).unsqueeze(1)
