"""Evaluation against ground-truth depth: SIDE, MAD, their mask, depth PNGs, baselines."""

from .metrics import (
    erode,
    evaluation_mask,
    gt_depth_from_png,
    gt_depth_to_png,
    mad,
    side,
)

__all__ = ["erode", "evaluation_mask", "gt_depth_from_png", "gt_depth_to_png", "mad", "side"]
