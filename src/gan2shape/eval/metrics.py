"""SIDE and MAD (docs/method.md sections 6 and 8), their mask, and ground-truth depth PNGs.

Standalone math: depths (B, H, W), normals (B, H, W, 3), masks (B, H, W) in {0, 1}.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import UserError


def erode(mask: torch.Tensor) -> torch.Tensor:
    """Erode (B, H, W) masks by one pixel as the release does: a 3x3 average pool with zero
    padding, kept where > 0.99 (so the one-pixel image frame is always dropped)."""
    pooled = F.avg_pool2d(mask.float().unsqueeze(1), 3, stride=1, padding=1,
                          count_include_pad=True)
    return (pooled.squeeze(1) > 0.99).float()


def evaluation_mask(gt_depth: torch.Tensor, valid_mask: torch.Tensor) -> torch.Tensor:
    """The pixels SIDE and MAD are computed over (CONTRACT), (B, H, W) float.

    (gt_depth < its maximum), eroded by one pixel, times the valid-render mask
    (B, H, W), eroded by one pixel. The maximum is taken over the whole ``gt_depth`` tensor
    as the release does (it evaluates one image at a time; the background is the farthest
    depth, 1.1 for its BFM data).
    """
    gt_mask = (gt_depth < gt_depth.max()).float()
    return erode(gt_mask) * erode(valid_mask)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    return (x * mask).reshape(b, -1).sum(1) / mask.reshape(b, -1).sum(1)


def side(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant depth error per image (B,) (CONTRACT).

    sqrt(mean over mask of (e - mean over mask of e)^2), e = log(pred) - log(gt).
    Images with an empty mask give NaN.
    """
    mask = mask.to(pred_depth.dtype)
    e = pred_depth.log() - gt_depth.log()
    mean = _masked_mean(e, mask).view(-1, 1, 1)
    return _masked_mean((e - mean) ** 2, mask).sqrt()


def mad(pred_normals: torch.Tensor, gt_normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean angular deviation in degrees per image (B,) (CONTRACT).

    Mean over mask of acos(clamp(<n_pred, n_gt>, -1, 1)), the release's formula (its
    normals are slightly short of unit length; no renormalisation here, docs/method.md section 8).
    """
    cos = (pred_normals * gt_normals).sum(-1).clamp(-1, 1)
    return _masked_mean(torch.rad2deg(cos.acos()), mask.to(cos.dtype))


def _rescale(d: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    return (1 + d) / 2 * max_depth + (1 - d) / 2 * min_depth


def _read_gray(path: Path) -> tuple[np.ndarray, int]:
    """A PNG (8- or 16-bit, grey or colour) as float64 in [0, 1] and its number of levels
    minus one (255 or 65535); colour uses channel 0."""
    if not path.is_file():
        raise UserError(f"ground-truth depth not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            array = np.asarray(im, dtype=np.float64)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"ground-truth depth {path} is not a readable image") from exc
    if mode == "F":
        return array, 0
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        levels = 65535 if mode.startswith("I;16") or array.max() > 255 else 255
        return array / levels, levels
    if array.ndim == 3:
        array = array[..., 0]
    return array / 255.0, 255


def center_crop(array: np.ndarray, crop: int) -> np.ndarray:
    """The central crop x crop pixels of (H, W), offsets rounded as torchvision's CenterCrop
    (the release's). A map no larger than the crop is returned whole, as the reconstruction
    treats such images."""
    h, w = array.shape[:2]
    if crop >= min(h, w):
        return array
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return array[top:top + crop, left:left + crop]


def resize_map(array: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking, as PIL) resize of a float map to size x size."""
    if array.shape == (size, size):
        return array
    im = Image.fromarray(array.astype(np.float32))
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float64)


def gt_depth_from_png(path: str | os.PathLike, size: int | None = None, crop: int | None = None,
                      min_depth: float = 0.9, max_depth: float = 1.1) -> torch.Tensor:
    """Ground-truth depth (H, W) from a depth PNG in the release's convention.

    A value g in [0, 1] (8- or 16-bit) becomes rescale((1 - g) * 2 - 1), [-1, 1] ->
    [min_depth, max_depth]: white is near. ``crop`` centre-crops and ``size`` resizes the
    PNG's values first, as the release's loader does (8-bit maps are resized by PIL in 8
    bits, as there: its ground-truth normals see those steps).
    """
    g, levels = _read_gray(Path(path))
    if crop is not None:
        g = center_crop(g, crop)
    if size is not None and g.shape != (size, size):
        if levels == 255:  # PIL's own 8-bit resize, exactly as the release's loader
            im = Image.fromarray(np.round(g * 255).astype(np.uint8))
            g = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255
        else:
            g = resize_map(g, size)
    return torch.from_numpy(_rescale((1 - g) * 2 - 1, min_depth, max_depth)).float()


def gt_depth_to_png(depth: torch.Tensor | np.ndarray, min_depth: float = 0.9,
                    max_depth: float = 1.1) -> np.ndarray:
    """Depth (H, W) -> uint16 array g = 1 - (depth - min) / (max - min), clipped to [0, 1]
    (the inverse of :func:`gt_depth_from_png`; save it with ``fileio.save_image``)."""
    d = depth.detach().cpu().double().numpy() if isinstance(depth, torch.Tensor) \
        else np.asarray(depth, dtype=np.float64)
    g = 1 - (d - min_depth) / (max_depth - min_depth)
    return np.round(np.clip(g, 0, 1) * 65535).astype(np.uint16)
