"""Textured grid mesh of a canonical depth map, written as OBJ + MTL + texture PNG, and on
request as binary glTF (GLB, texture embedded) or PLY (vertex colours), through trimesh.

Every pixel is a vertex (back-projected through the pinhole camera) and every 2x2 cell of
neighbouring pixels gets one extra centre vertex and four triangles fanning around it, so
the mesh has H*W + (H-1)*(W-1) vertices and 4*(H-1)*(W-1) faces and no diagonal bias.
Coordinates are flipped from the camera frame (x right, y down, z into the scene) to the
usual modelling frame (x right, y up, z towards the viewer) and scaled by ``scale``.
The written meshes leave out :data:`MESH_MARGIN`: the depth's outer columns are pinned to
the border depth by the method (docs/method.md section 1) and would hang as flaps at the
mesh's sides.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_path, save_image, save_text
from .images import to_uint8

# (rows, columns) left out on each side of written meshes: the 2 border-depth columns, and
# the 1-pixel frame of rows, whose normals are undefined.
MESH_MARGIN = (1, 2)
MESH_FORMATS = ("obj", "glb", "ply")


def camera_points(depth: torch.Tensor, fov_deg: float = 10.0) -> torch.Tensor:
    """Back-project depth (H, W) to camera-frame points (H, W, 3): d * K^-1 (col, row, 1)."""
    h, w = depth.shape
    focal = (w - 1) / 2 / math.tan(math.radians(fov_deg) / 2)
    rows = torch.arange(h, dtype=depth.dtype, device=depth.device).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=depth.dtype, device=depth.device).view(1, w).expand(h, w)
    x = (cols - (w - 1) / 2) / focal
    y = (rows - (h - 1) / 2) / focal
    return torch.stack([x * depth, y * depth, depth], -1)


def grid_mesh(depth: torch.Tensor, fov_deg: float = 10.0, rot_center_depth: float = 1.0,
              scale: float = 100.0, margin: tuple[int, int] = (0, 0)) -> dict[str, np.ndarray]:
    """The grid mesh of depth (H, W), less ``margin`` = (rows, columns) on each side.

    Returns float32 ``vertices`` (V, 3) in the modelling frame, ``uvs`` (V, 2) in [0, 1]
    (v up, as OBJ expects; texture coordinates of the whole image), unit ``normals`` (V, 3)
    facing the viewer, and int64 ``faces`` (F, 3) of 0-based vertex indices wound
    counter-clockwise seen from the viewer; with h = H - 2 rows and w = W - 2 columns
    of margin, V = h*w + (h-1)*(w-1), F = 4*(h-1)*(w-1).
    """
    depth = depth.detach().double().cpu()
    full_h, full_w = depth.shape
    mr, mc = margin
    pts = camera_points(depth, fov_deg)[mr:full_h - mr, mc:full_w - mc]
    h, w = pts.shape[:2]
    pts = torch.stack([pts[..., 0], -pts[..., 1], rot_center_depth - pts[..., 2]], -1) * scale
    centres = (pts[:-1, :-1] + pts[1:, :-1] + pts[:-1, 1:] + pts[1:, 1:]) / 4
    vertices = torch.cat([pts.reshape(-1, 3), centres.reshape(-1, 3)])

    u = torch.linspace(0, 1, full_w, dtype=torch.float64)[mc:full_w - mc]
    v = torch.linspace(1, 0, full_h, dtype=torch.float64)[mr:full_h - mr]
    u, v = u.view(1, w).expand(h, w), v.view(h, 1).expand(h, w)
    uv = torch.stack([u, v], -1)
    uv_centres = (uv[:-1, :-1] + uv[1:, :-1] + uv[:-1, 1:] + uv[1:, 1:]) / 4
    uvs = torch.cat([uv.reshape(-1, 2), uv_centres.reshape(-1, 2)])

    idx = torch.arange(h * w).view(h, w)
    centre = torch.arange((h - 1) * (w - 1)).view(h - 1, w - 1) + h * w
    tl, bl, br, tr = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = torch.cat([torch.stack(tri, -1).reshape(-1, 3) for tri in (
        (tl, bl, centre), (bl, br, centre), (br, tr, centre), (tr, tl, centre))])

    normals = _vertex_normals(vertices, faces)
    return {"vertices": vertices.float().numpy(), "uvs": uvs.float().numpy(),
            "normals": normals.float().numpy(), "faces": faces.numpy()}


def _vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (V, 3) of a counter-clockwise triangle mesh."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    face_n = torch.linalg.cross(b - a, c - a)  # length = 2 * area: area weighting
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1),
                                                    face_n.repeat_interleave(3, 0))
    return normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12)


def obj_text(mesh: dict[str, np.ndarray], mtl_name: str) -> str:
    """OBJ text of ``mesh`` (as returned by :func:`grid_mesh`) using material file mtl_name."""
    out = io.StringIO()
    out.write(f"# gan2shape grid mesh\nmtllib {mtl_name}\n")
    np.savetxt(out, mesh["vertices"], fmt="v %.5f %.5f %.5f")
    np.savetxt(out, mesh["uvs"], fmt="vt %.5f %.5f")
    np.savetxt(out, mesh["normals"], fmt="vn %.4f %.4f %.4f")
    out.write("usemtl texture\n")
    f = mesh["faces"] + 1  # OBJ indices are 1-based; v, vt and vn share the index
    np.savetxt(out, np.repeat(f, 3, axis=1), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    return out.getvalue()


def mtl_text(texture_name: str) -> str:
    """A single unlit material whose diffuse map is ``texture_name``."""
    return ("newmtl texture\nKa 1.0 1.0 1.0\nKd 1.0 1.0 1.0\nKs 0.0 0.0 0.0\n"
            f"d 1.0\nillum 0\nmap_Kd {texture_name}\n")


def _trimesh(mesh: dict[str, np.ndarray], texture: np.ndarray, colours: bool):
    """A trimesh.Trimesh of ``mesh`` textured by ``texture`` (H, W, 3) uint8: by its UV map,
    or with ``colours`` by the texture's colour at each vertex (PLY has no textures)."""
    import trimesh
    from PIL import Image

    if colours:
        h, w = texture.shape[:2]
        uv = mesh["uvs"]
        col = np.clip(np.rint(uv[:, 0] * (w - 1)), 0, w - 1).astype(int)
        row = np.clip(np.rint((1 - uv[:, 1]) * (h - 1)), 0, h - 1).astype(int)
        rgba = np.concatenate([texture[row, col], np.full((len(uv), 1), 255, np.uint8)], 1)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    else:
        material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture))
        visual = trimesh.visual.TextureVisuals(uv=mesh["uvs"], material=material)
    return trimesh.Trimesh(vertices=mesh["vertices"], faces=mesh["faces"],
                           vertex_normals=mesh["normals"], visual=visual, process=False)


def write_textured_mesh(out_dir: str | Path, depth: torch.Tensor, texture: torch.Tensor,
                        fov_deg: float = 10.0, rot_center_depth: float = 1.0,
                        stem: str = "mesh", texture_name: str = "texture.png",
                        formats: tuple[str, ...] = ("obj",)) -> dict[str, np.ndarray]:
    """Write the mesh into out_dir, atomically, in each of ``formats``: ``obj`` (always
    written: ``<stem>.obj``, ``<stem>.mtl`` and the texture PNG), ``glb`` (``<stem>.glb``,
    texture embedded), ``ply`` (``<stem>.ply``, vertex colours).

    depth: (H, W) canonical depth; texture: (3, H, W) in [-1, 1] (the canonical image).
    Returns the mesh written (as :func:`grid_mesh` returns it).
    """
    out_dir = Path(out_dir)
    unknown = set(formats) - set(MESH_FORMATS)
    if unknown:
        raise ValueError(f"mesh formats {sorted(unknown)}; known: {MESH_FORMATS}")
    pixels = to_uint8(texture)
    save_image(pixels, out_dir / texture_name)
    save_text(mtl_text(texture_name), out_dir / f"{stem}.mtl")
    mesh = grid_mesh(depth, fov_deg=fov_deg, rot_center_depth=rot_center_depth,
                     margin=MESH_MARGIN)
    save_text(obj_text(mesh, f"{stem}.mtl"), out_dir / f"{stem}.obj")
    for fmt in ("glb", "ply"):
        if fmt in formats:
            data = _trimesh(mesh, pixels, colours=fmt == "ply").export(file_type=fmt)
            with atomic_path(out_dir / f"{stem}.{fmt}") as tmp:
                tmp.write_bytes(data)
    return mesh
