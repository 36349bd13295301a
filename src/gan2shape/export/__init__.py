"""Writing reconstruction results: meshes, factor images, rotation and relighting sequences,
and the offline viewer page."""

from .images import depth_to_png16, save_depth, save_normals, save_rgb, save_shading, to_uint8
from .mesh import grid_mesh, obj_text, write_textured_mesh
from .sequences import image_grid, save_gif, save_sequence
from .viewer import write_viewer

__all__ = [
    "depth_to_png16", "grid_mesh", "image_grid", "obj_text", "save_depth", "save_gif",
    "save_normals", "save_rgb", "save_sequence", "save_shading", "to_uint8",
    "write_textured_mesh", "write_viewer",
]
