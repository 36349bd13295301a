"""Factor maps as image files: 16-bit depth PNG + .npy, normal, albedo, shading, RGB.

Images in [-1, 1] are written as 8-bit RGB. The depth PNG follows the release's
ground-truth convention (docs/method.md section 6): g in [0, 1] with depth =
rescale((1 - g) * 2 - 1), so near is bright and the file can be compared with the
release's ground-truth depth PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..fileio import save_image, save_npy


def to_uint8(image: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(C, H, W) or (H, W) tensor -> uint8 array (H, W, C) or (H, W), clamped to value_range."""
    lo, hi = value_range
    x = ((image.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    x = (x * 255).round().to(torch.uint8)
    if x.dim() == 3:
        x = x.permute(1, 2, 0)
        if x.shape[2] == 1:
            x = x[..., 0]
    return x.numpy()


def depth_to_png16(depth: torch.Tensor, min_depth: float = 0.9,
                   max_depth: float = 1.1) -> np.ndarray:
    """Depth (H, W) -> uint16 (H, W) in the release's convention g = 1 - (d - min) / (max - min)."""
    g = 1 - (depth.detach().double().cpu() - min_depth) / (max_depth - min_depth)
    return (g.clamp(0, 1) * 65535).round().to(torch.int32).numpy().astype(np.uint16)


# (rows, columns) on each side that the method fixes rather than recovers: the depth's two
# border-depth columns and the frame without central differences (normals take one more
# column, whose difference reaches into the border). Masked in the pictures only.
DEPTH_FRAME = (1, 2)
NORMAL_FRAME = (1, 3)


def mask_frame(image: torch.Tensor, frame: tuple[int, int], value) -> torch.Tensor:
    """A copy of image (H, W) or (H, W, C) with ``frame`` = (rows, columns) on each side set
    to ``value`` (a scalar, or (C,))."""
    rows, cols = frame
    h, w = image.shape[:2]
    keep = torch.zeros(h, w, dtype=torch.bool)
    keep[rows:h - rows, cols:w - cols] = True
    if image.dim() == 3:
        keep = keep.unsqueeze(-1)
    fill = torch.as_tensor(value, dtype=image.dtype)
    return torch.where(keep.to(image.device), image.detach(), fill.to(image.device))


def save_depth(depth: torch.Tensor, png_path: str | Path, npy_path: str | Path,
               min_depth: float = 0.9, max_depth: float = 1.1) -> None:
    """Depth (H, W): 16-bit PNG (release convention; :data:`DEPTH_FRAME` shown as
    background) and float32 .npy (metric depth, as computed: what SIDE / MAD measure)."""
    png = mask_frame(depth.detach().cpu(), DEPTH_FRAME, max_depth)
    save_image(depth_to_png16(png, min_depth, max_depth), png_path)
    save_npy(depth.detach().float().cpu().numpy(), npy_path)


def save_normals(normals: torch.Tensor, path: str | Path) -> None:
    """Normals (H, W, 3) in the camera frame -> RGB image of n / 2 + 0.5, with
    :data:`NORMAL_FRAME` shown as a flat (0, 0, 1)."""
    flat = torch.tensor([0.0, 0.0, 1.0], dtype=normals.dtype)
    save_image(to_uint8(mask_frame(normals, NORMAL_FRAME, flat).permute(2, 0, 1)), path)


def save_rgb(image: torch.Tensor, path: str | Path) -> None:
    """Image (3, H, W) in [-1, 1] -> 8-bit RGB PNG."""
    save_image(to_uint8(image), path)


def save_shading(shading: torch.Tensor, path: str | Path) -> None:
    """Shading (1, H, W) or (H, W), clamped to [0, 1] -> 8-bit grey PNG."""
    save_image(to_uint8(shading.reshape(shading.shape[-2:]), (0.0, 1.0)), path)
