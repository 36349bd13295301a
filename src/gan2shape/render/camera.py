"""Pinhole camera and rigid view transforms (docs/method.md section 1).

Pixel grids are x = column, y = row. The camera looks down +z; a pixel (u, v) of an image
with depth d is the 3D point d * K^-1 (u, v, 1), with fx = fy = (W - 1) / 2 / tan(fov / 2)
and (cx, cy) = ((W - 1) / 2, (H - 1) / 2). A physical view vector (rx, ry, rz, tx, ty, tz)
(radians, depth units) rotates points about (0, 0, rot_center_depth) by R = Rz Ry Rx, then
translates them by (tx, ty, tz).
"""

import functools
import math

import torch


def focal_length(width: int, fov_deg: float) -> float:
    """Focal length in pixels of a `width`-pixel-wide image with horizontal field of view."""
    return (width - 1) / 2 / math.tan(math.radians(fov_deg) / 2)


def intrinsics(height: int, width: int, fov_deg: float = 10.0) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels; square pixels, principal point at the image centre."""
    f = focal_length(width, fov_deg)
    return f, f, (width - 1) / 2, (height - 1) / 2


def pixel_rays(u: torch.Tensor, v: torch.Tensor, height: int, width: int,
               fov_deg: float = 10.0) -> torch.Tensor:
    """K^-1 (u, v, 1): rays (..., 3) with unit z through image points u (column), v (row)."""
    fx, fy, cx, cy = intrinsics(height, width, fov_deg)
    return torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], dim=-1)


@functools.lru_cache(maxsize=16)
def _grid_rays(height: int, width: int, fov_deg: float, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                          torch.arange(width, dtype=dtype, device=device), indexing="ij")
    return pixel_rays(u, v, height, width, fov_deg)


def depth_to_points(depth: torch.Tensor, fov_deg: float = 10.0) -> torch.Tensor:
    """Back-project a depth map: depth (B, H, W) -> camera-space points (B, H, W, 3)."""
    _, h, w = depth.shape
    return _grid_rays(h, w, float(fov_deg), depth.dtype, depth.device) * depth.unsqueeze(-1)


def project_points(points: torch.Tensor, height: int, width: int,
                   fov_deg: float = 10.0) -> torch.Tensor:
    """Perspective projection: points (..., 3) -> image points (..., 2) as (u, v) pixels."""
    fx, fy, cx, cy = intrinsics(height, width, fov_deg)
    z = points[..., 2]
    return torch.stack([points[..., 0] / z * fx + cx, points[..., 1] / z * fy + cy], dim=-1)


def rotation_matrix(rx: torch.Tensor, ry: torch.Tensor, rz: torch.Tensor) -> torch.Tensor:
    """R = Rz(rz) Ry(ry) Rx(rx) for angles (B,) in radians -> (B, 3, 3)."""
    zero, one = torch.zeros_like(rx), torch.ones_like(rx)
    cx_, sx = rx.cos(), rx.sin()
    cy_, sy = ry.cos(), ry.sin()
    cz, sz = rz.cos(), rz.sin()
    r_x = torch.stack([one, zero, zero, zero, cx_, -sx, zero, sx, cx_], -1).view(-1, 3, 3)
    r_y = torch.stack([cy_, zero, sy, zero, one, zero, -sy, zero, cy_], -1).view(-1, 3, 3)
    r_z = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return r_z @ r_y @ r_x


def view_to_transform(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Physical view (B, 6) = (rx, ry, rz, tx, ty, tz) -> rotation (B, 3, 3), translation (B, 3)."""
    if view.dim() != 2 or view.shape[1] != 6:
        raise ValueError(f"view must be (B, 6), got {tuple(view.shape)}")
    return rotation_matrix(view[:, 0], view[:, 1], view[:, 2]), view[:, 3:]


def warp_points(points: torch.Tensor, view: torch.Tensor,
                rot_center_depth: float = 1.0) -> torch.Tensor:
    """Forward warp: points (B, N, 3) -> R (p - c) + c + t, c = (0, 0, rot_center_depth)."""
    rot, trans = view_to_transform(view)
    c = points.new_tensor([0.0, 0.0, rot_center_depth])
    offset = c + trans - rot @ c  # (B, 3): one matmul and one add on the (B, N, 3) points
    return torch.baddbmm(offset.unsqueeze(1), points, rot.transpose(1, 2))


def inverse_warp_points(points: torch.Tensor, view: torch.Tensor,
                        rot_center_depth: float = 1.0) -> torch.Tensor:
    """Inverse of `warp_points`: points (B, N, 3) -> R^T (p - t - c) + c."""
    rot, trans = view_to_transform(view)
    c = points.new_tensor([0.0, 0.0, rot_center_depth])
    offset = c - ((trans + c).unsqueeze(1) @ rot).squeeze(1)  # c - R^T (t + c)
    return torch.baddbmm(offset.unsqueeze(1), points, rot)


def points_to_grid(points: torch.Tensor, fov_deg: float = 10.0) -> torch.Tensor:
    """Camera-space points (B, H, W, 3) -> grid_sample coordinates (B, H, W, 2) in [-1, 1].

    Image point u maps to 2 u / (W - 1) - 1: pixel centres at the ends, for
    grid_sample(..., align_corners=True).
    """
    _, h, w, _ = points.shape
    fx, fy, _, _ = intrinsics(h, w, fov_deg)
    # u = fx x / z + (W - 1) / 2, so 2 u / (W - 1) - 1 = x / z * 2 fx / (W - 1)
    scale = points.new_tensor([2 * fx / (w - 1), 2 * fy / (h - 1)])
    return points[..., :2] / points[..., 2:] * scale
