"""Procedural scenes with exact ground-truth depth (the `make-data` command's engine)."""

from .heads import HEAD_RANGES, HEAD_RANGES_V2, canonical_heads, head_ranges
from .scenes import (
    FAMILIES,
    LIGHT_RAW_RANGES,
    LIGHT_RAW_RANGES_V2,
    ROTATION_RAW_RANGES,
    light_from_raw,
    light_prior,
    light_raw_ranges,
    render_batch,
    render_scenes,
    view_from_raw,
    view_prior,
    view_raw_ranges,
)

__all__ = [
    "FAMILIES",
    "HEAD_RANGES",
    "HEAD_RANGES_V2",
    "LIGHT_RAW_RANGES",
    "LIGHT_RAW_RANGES_V2",
    "ROTATION_RAW_RANGES",
    "canonical_heads",
    "head_ranges",
    "light_from_raw",
    "light_prior",
    "light_raw_ranges",
    "render_batch",
    "render_scenes",
    "view_from_raw",
    "view_prior",
    "view_raw_ranges",
]
