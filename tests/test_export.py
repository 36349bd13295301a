"""Mesh, depth-image and sequence writers against analytic cases and independent parsing."""

import math

import numpy as np
import torch
from PIL import Image

from gan2shape.export import (
    depth_to_png16,
    grid_mesh,
    image_grid,
    save_depth,
    save_gif,
    save_sequence,
    write_textured_mesh,
)


def parse_obj(text):
    v, vt, vn, f = [], [], [], []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            v.append([float(x) for x in parts[1:]])
        elif parts[0] == "vt":
            vt.append([float(x) for x in parts[1:]])
        elif parts[0] == "vn":
            vn.append([float(x) for x in parts[1:]])
        elif parts[0] == "f":
            f.append([[int(i) for i in corner.split("/")] for corner in parts[1:]])
    return np.array(v), np.array(vt), np.array(vn), np.array(f)


def test_obj_counts_indices_and_material(tmp_path):
    h, w = 7, 9
    depth = 1.0 + 0.05 * torch.rand(h, w)
    texture = torch.rand(3, h, w) * 2 - 1
    write_textured_mesh(tmp_path, depth, texture)
    assert {p.name for p in tmp_path.iterdir()} == {"mesh.obj", "mesh.mtl", "texture.png"}
    text = (tmp_path / "mesh.obj").read_text()
    v, vt, vn, f = parse_obj(text)
    n_vertices = h * w + (h - 1) * (w - 1)
    assert v.shape == (n_vertices, 3) and vt.shape == (n_vertices, 2)
    assert vn.shape == (n_vertices, 3)
    assert f.shape == (4 * (h - 1) * (w - 1), 3, 3)
    assert f.min() == 1 and f.max() == n_vertices  # 1-based, every vertex used, none beyond
    assert "mtllib mesh.mtl" in text
    assert "map_Kd texture.png" in (tmp_path / "mesh.mtl").read_text()
    assert Image.open(tmp_path / "texture.png").size == (w, h)
    assert np.all((vt >= 0) & (vt <= 1))


def test_plane_vertices_normals_and_winding_are_analytic():
    h = w = 5
    d, fov, scale = 1.05, 10.0, 100.0
    mesh = grid_mesh(torch.full((h, w), d), fov_deg=fov, rot_center_depth=1.0, scale=scale)
    v = mesh["vertices"]
    # corner pixel (0, 0) is at x = -tan(fov / 2) * d, y up = +tan(fov / 2) * d
    half = math.tan(math.radians(fov / 2)) * d * scale
    np.testing.assert_allclose(v[0], [-half, half, (1.0 - d) * scale], rtol=1e-5)
    np.testing.assert_allclose(v[h * w - 1], [half, -half, (1.0 - d) * scale], rtol=1e-5)
    np.testing.assert_allclose(v[:, 2], (1.0 - d) * scale, rtol=1e-5)
    np.testing.assert_allclose(mesh["normals"], np.tile([0, 0, 1.0], (len(v), 1)), atol=1e-6)
    a, b, c = (v[mesh["faces"][:, i]] for i in range(3))
    normal_z = np.cross(b - a, c - a)[:, 2]
    assert np.all(normal_z > 0)  # counter-clockwise seen from the viewer (+z)


def test_depth_png_follows_release_convention(tmp_path):
    depth = torch.linspace(0.9, 1.1, 12).view(3, 4)
    png = depth_to_png16(depth)
    assert png.dtype == np.uint16 and png[0, 0] == 65535 and png[-1, -1] == 0
    save_depth(depth, tmp_path / "d.png", tmp_path / "d.npy")
    g = np.asarray(Image.open(tmp_path / "d.png")).astype(np.float64) / 65535
    back = (1 + ((1 - g) * 2 - 1)) / 2 * 1.1 + (1 - ((1 - g) * 2 - 1)) / 2 * 0.9
    np.testing.assert_allclose(back, depth.numpy(), atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), depth.numpy())


def test_grid_and_gif(tmp_path):
    frames = torch.rand(6, 3, 8, 10) * 2 - 1
    grid = image_grid(frames, ncol=3, pad=2)
    assert grid.shape == (2 * 10 + 2, 3 * 12 + 2, 3)
    save_gif(frames, tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 6 + 4 and gif.size == (10, 8)
    save_sequence([frames, -frames], tmp_path / "g.png", tmp_path / "g.gif")
    assert Image.open(tmp_path / "g.png").size == (6 * 12 + 2, 2 * 10 + 2)
    with Image.open(tmp_path / "g.gif") as gif:
        assert gif.size == (20, 8)
