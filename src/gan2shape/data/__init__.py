"""Procedural scenes with exact ground-truth depth (the `make-data` command's engine)."""

from .heads import HEAD_RANGES, canonical_heads
from .scenes import (
    LIGHT_RAW_RANGES,
    ROTATION_RAW_RANGES,
    light_from_raw,
    light_prior,
    render_batch,
    render_scenes,
    view_from_raw,
    view_prior,
    view_raw_ranges,
)

__all__ = [
    "HEAD_RANGES",
    "LIGHT_RAW_RANGES",
    "ROTATION_RAW_RANGES",
    "canonical_heads",
    "light_from_raw",
    "light_prior",
    "render_batch",
    "render_scenes",
    "view_from_raw",
    "view_prior",
    "view_raw_ranges",
]
