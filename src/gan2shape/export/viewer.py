"""``viewer.html``: one self-contained page (inline WebGL, nothing fetched) that shows a
result's textured mesh with orbit, zoom and a movable light, beside its depth, normal and
albedo images.

The page relights the mesh as the method shades it (docs/method.md section 1):
colour = albedo * (ambient + diffuse * max(0, <n, l>)), with the mesh's vertex normals and
the albedo as texture; it starts from the light the reconstruction estimated. The mesh is
the one :func:`gan2shape.export.mesh.grid_mesh` builds, embedded as base64 little-endian
arrays; the images are embedded as data URIs of the PNG files already in the folder.
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path

import numpy as np

from ..fileio import save_text

# The images shown beside the canvas (and the albedo, the mesh's texture), as exported.
VIEWER_IMAGES = {"depth": "depth.png", "normal": "normal.png", "albedo": "albedo.png"}


def model_light(direction_camera) -> list[float]:
    """A light direction of the camera frame (x right, y down, z into the scene, as
    light.json stores it) -> the mesh's modelling frame, where <n_mesh, l_mesh> equals the
    method's <n_camera, l_camera>: the camera frame's normals point into the scene, so
    n_mesh = -(x, -y, -z) = (-x, y, z), and l maps the same way."""
    x, y, z = (float(v) for v in direction_camera)
    return [-x, y, z]


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def viewer_payload(mesh: dict[str, np.ndarray], light: dict, images: dict[str, bytes]) -> dict:
    """The page's data: ``mesh`` as :func:`grid_mesh` returns it (vertices and uvs float32,
    normals int8 scaled by 127, faces uint16 where the vertices allow, else uint32), the
    light (ambient, diffuse, direction in the modelling frame) and ``images`` (name -> PNG
    bytes) as data URIs."""
    n_vertices = len(mesh["vertices"])
    index_type = "uint16" if n_vertices <= 65535 else "uint32"
    normals = np.clip(np.rint(mesh["normals"] * 127), -127, 127)
    return {
        "mesh": {"vertices": _b64(mesh["vertices"], "<f4"), "uvs": _b64(mesh["uvs"], "<f4"),
                 "normals": _b64(normals, "i1"),
                 "faces": _b64(mesh["faces"], "<u2" if index_type == "uint16" else "<u4"),
                 "index_type": index_type},
        "light": {"ambient": float(light["ambient"]), "diffuse": float(light["diffuse"]),
                  "direction": model_light(light["direction"])},
        "images": {name: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                   for name, png in images.items()},
    }


def viewer_html(mesh: dict[str, np.ndarray], light: dict, images: dict[str, bytes],
                title: str = "gan2shape result") -> str:
    """The page's text (see :func:`viewer_payload` for the arguments)."""
    template = resources.files(__package__).joinpath("viewer_template.html").read_text("utf-8")
    # "</" inside the JSON would end its <script> element early
    data = json.dumps(viewer_payload(mesh, light, images), separators=(",", ":"))
    data = data.replace("</", "<\\/")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)


def write_viewer(out_dir: str | Path, mesh: dict[str, np.ndarray], light: dict,
                 title: str = "gan2shape result") -> Path:
    """Write ``out_dir/viewer.html`` (atomically) for ``mesh`` and ``light`` (as light.json
    has it), embedding the folder's :data:`VIEWER_IMAGES`, which must be written already."""
    out_dir = Path(out_dir)
    images = {name: (out_dir / file).read_bytes() for name, file in VIEWER_IMAGES.items()}
    path = out_dir / "viewer.html"
    save_text(viewer_html(mesh, light, images, title), path)
    return path
