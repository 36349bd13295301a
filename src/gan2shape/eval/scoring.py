"""SIDE / MAD of depth maps seen in the input view, and the baselines that need no model.

Uses the renderer's normals (the release's formula), so it sits above ``metrics``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..render import normals_from_depth
from .metrics import evaluation_mask, mad, side


def valid_render_mask(view_depth: torch.Tensor, min_depth: float = 0.9,
                      max_depth: float = 1.1) -> torch.Tensor:
    """Where a depth rendered in the input view is valid (B, H, W): the release clamps
    background to max_depth + (max_depth - min_depth) / 2 and keeps depth below that."""
    limit = max_depth + (max_depth - min_depth) / 2
    return (view_depth < limit).float()


def score_depth(pred_depth: torch.Tensor, gt_depth: torch.Tensor,
                valid_mask: torch.Tensor | None = None, fov_deg: float = 10.0,
                min_depth: float = 0.9, max_depth: float = 1.1,
                unit_normals: bool = False) -> dict[str, torch.Tensor]:
    """SIDE and MAD (deg) per image of depths (B, H, W) seen in the input view.

    ``valid_mask`` (B, H, W) defaults to :func:`valid_render_mask` of the prediction.
    ``unit_normals`` renormalises the normals before MAD, removing the release's floor
    (about 6.5 deg at 64 px, 13 deg at 128 px; docs/method.md section 8); the default keeps it,
    so that numbers compare with published ones.
    Returns {'side': (B,), 'mad_deg': (B,), 'pixels': (B,) mask sizes}.
    """
    if valid_mask is None:
        valid_mask = valid_render_mask(pred_depth, min_depth, max_depth)
    mask = evaluation_mask(gt_depth, valid_mask)
    pred_n = normals_from_depth(pred_depth, fov_deg)
    gt_n = normals_from_depth(gt_depth, fov_deg)
    if unit_normals:
        pred_n = F.normalize(pred_n, dim=-1)
        gt_n = F.normalize(gt_n, dim=-1)
    return {"side": side(pred_depth, gt_depth, mask), "mad_deg": mad(pred_n, gt_n, mask),
            "pixels": mask.flatten(1).sum(1)}


def constant_depth_baseline(gt_depth: torch.Tensor, value: float = 1.0) -> torch.Tensor:
    """The 'constant null depth' prediction: a flat plane at ``value`` (B, H, W)."""
    return torch.full_like(gt_depth, value)


def average_depth_baseline(gt_depths: torch.Tensor) -> torch.Tensor:
    """The 'average ground-truth depth' prediction: the pixelwise mean of all ground-truth
    maps (N, H, W), repeated for each image."""
    return gt_depths.mean(0, keepdim=True).expand_as(gt_depths)
