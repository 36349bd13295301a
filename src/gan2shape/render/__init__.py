"""Differentiable grid-mesh renderer in pure PyTorch: camera, rasteriser, shading, warps."""

from .camera import (
    depth_to_points,
    intrinsics,
    inverse_warp_points,
    points_to_grid,
    project_points,
    rotation_matrix,
    view_to_transform,
    warp_points,
)
from .mesh import render_mesh
from .rasterize import grid_faces, rasterize_depth, rasterize_faces
from .reproject import (
    CONVENTIONS,
    canon_sampling_grid,
    reproject,
    reproject_views,
    warp_canon_depth,
)
from .shading import lambertian_shading, normals_from_depth

__all__ = [
    "CONVENTIONS",
    "canon_sampling_grid",
    "depth_to_points",
    "grid_faces",
    "intrinsics",
    "inverse_warp_points",
    "lambertian_shading",
    "normals_from_depth",
    "points_to_grid",
    "project_points",
    "rasterize_depth",
    "rasterize_faces",
    "render_mesh",
    "reproject",
    "reproject_views",
    "rotation_matrix",
    "view_to_transform",
    "warp_canon_depth",
    "warp_points",
]
