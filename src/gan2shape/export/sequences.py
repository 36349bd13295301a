"""Image sequences (rotation, relighting) as a grid PNG and an animated GIF (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..fileio import atomic_path, save_image
from .images import to_uint8


def image_grid(frames: torch.Tensor, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """frames (T, 3, H, W) in [-1, 1] -> uint8 grid (rows x ncol tiles, white padding)."""
    t, _, h, w = frames.shape
    ncol = ncol or math.ceil(math.sqrt(t))
    nrow = math.ceil(t / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(t):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = to_uint8(frames[i])
    return grid


def side_by_side(*sequences: torch.Tensor) -> torch.Tensor:
    """Frames (T, 3, H, W) of several sequences joined left to right: (T, 3, H, W * n)."""
    return torch.cat([s.detach().cpu() for s in sequences], dim=3)


def save_gif(frames: torch.Tensor, path: str | Path, frame_ms: int = 120,
             boomerang: bool = True) -> None:
    """Animated, looping GIF of frames (T, 3, H, W) in [-1, 1]; ``boomerang`` plays back too."""
    # fast octree palettes: Pillow's default median cut dominates the export time
    images = [Image.fromarray(to_uint8(f)).quantize(method=Image.Quantize.FASTOCTREE)
              for f in frames]
    if boomerang and len(images) > 2:
        images = images + images[-2:0:-1]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=frame_ms, loop=0)


def save_sequence(rows: list[torch.Tensor], grid_path: str | Path, gif_path: str | Path,
                  frame_ms: int = 120) -> None:
    """Write sequences of equal length T (each (T, 3, H, W)): the grid PNG has one row of T
    tiles per sequence; the GIF shows the sequences side by side, frame by frame."""
    t = rows[0].shape[0]
    save_image(image_grid(torch.cat([r.detach().cpu() for r in rows]), ncol=t), grid_path)
    save_gif(side_by_side(*rows), gif_path, frame_ms=frame_ms)
