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
    save_normals,
    save_sequence,
    to_uint8,
    write_textured_mesh,
)
from gan2shape.export.mesh import MESH_MARGIN


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
    h, w = h - 2, w - 4  # the mesh leaves out 1 row and 2 columns on each side
    n_vertices = h * w + (h - 1) * (w - 1)
    assert v.shape == (n_vertices, 3) and vt.shape == (n_vertices, 2)
    assert vn.shape == (n_vertices, 3)
    assert f.shape == (4 * (h - 1) * (w - 1), 3, 3)
    assert f.min() == 1 and f.max() == n_vertices  # 1-based, every vertex used, none beyond
    assert "mtllib mesh.mtl" in text
    assert "map_Kd texture.png" in (tmp_path / "mesh.mtl").read_text()
    assert Image.open(tmp_path / "texture.png").size == (w + 4, h + 2)
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
    depth = torch.linspace(0.9, 1.1, 7 * 8).view(7, 8)
    save_depth(depth, tmp_path / "d.png", tmp_path / "d.npy")
    g = np.asarray(Image.open(tmp_path / "d.png")).astype(np.float64) / 65535
    back = (1 + ((1 - g) * 2 - 1)) / 2 * 1.1 + (1 - ((1 - g) * 2 - 1)) / 2 * 0.9
    # the picture shows 1 row and 2 columns on each side as background (max depth)
    np.testing.assert_allclose(back[1:-1, 2:-2], depth.numpy()[1:-1, 2:-2], atol=1e-5)
    assert np.all(g[0] == 0) and np.all(g[:, :2] == 0) and np.all(g[:, -2:] == 0)
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


def _bumpy(h=12, w=14):
    torch.manual_seed(0)
    return 1.0 + 0.03 * torch.rand(h, w), torch.rand(3, h, w) * 2 - 1


def test_mesh_margin_keeps_the_pixels_camera_positions():
    depth, _ = _bumpy()
    full = grid_mesh(depth)
    inner = grid_mesh(depth, margin=(1, 2))
    h, w = depth.shape
    grid = full["vertices"][:h * w].reshape(h, w, 3)[1:-1, 2:-2]
    np.testing.assert_array_equal(inner["vertices"][:(h - 2) * (w - 4)], grid.reshape(-1, 3))
    np.testing.assert_array_equal(inner["uvs"][:(h - 2) * (w - 4)],
                                  full["uvs"][:h * w].reshape(h, w, 2)[1:-1, 2:-2].reshape(-1, 2))


def test_glb_loads_back_in_trimesh_with_its_texture(tmp_path):
    import trimesh

    depth, texture = _bumpy()
    write_textured_mesh(tmp_path, depth, texture, formats=("obj", "glb"))
    loaded = trimesh.load(tmp_path / "mesh.glb", force="mesh")
    expected = grid_mesh(depth, margin=MESH_MARGIN)
    assert len(loaded.faces) == len(expected["faces"])
    np.testing.assert_allclose(np.sort(loaded.vertices, 0), np.sort(expected["vertices"], 0),
                               atol=1e-4)
    image = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(image, to_uint8(texture))
    assert loaded.visual.uv.shape == (len(loaded.vertices), 2)


def test_ply_has_the_texture_colour_at_each_vertex(tmp_path):
    import trimesh

    depth, texture = _bumpy()
    write_textured_mesh(tmp_path, depth, texture, formats=("ply",))
    loaded = trimesh.load(tmp_path / "mesh.ply", process=False)
    expected = grid_mesh(depth, margin=MESH_MARGIN)
    np.testing.assert_allclose(loaded.vertices, expected["vertices"], atol=1e-4)
    pixels = to_uint8(texture)
    h, w = depth.shape
    # pixel vertices come first, row by row over the inner grid
    inner = pixels[1:h - 1, 2:w - 2].reshape(-1, 3)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:len(inner), :3], inner)


def test_normal_picture_masks_its_frame(tmp_path):
    normals = torch.nn.functional.normalize(torch.rand(6, 9, 3), dim=-1)
    save_normals(normals, tmp_path / "n.png")
    rgb = np.asarray(Image.open(tmp_path / "n.png"))
    flat = np.array([128, 128, 255])
    assert np.all(np.abs(rgb[0].astype(int) - flat) <= 1)
    assert np.all(np.abs(rgb[:, :3].astype(int) - flat) <= 1)
    np.testing.assert_array_equal(rgb[1:-1, 3:-3], to_uint8(normals.permute(2, 0, 1))[1:-1, 3:-3])
