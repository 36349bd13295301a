"""Analytic cases: planes (fronto-parallel and tilted) and a sphere cap, under both
conventions; a single screen-filling triangle; the round trip of the re-projection."""

import math

import numpy as np
import pytest
import torch

from gan2shape.render import (
    depth_to_points,
    inverse_warp_points,
    project_points,
    rasterize_depth,
    render_mesh,
    reproject,
    reproject_views,
    rotation_matrix,
    warp_canon_depth,
    warp_points,
)

FOV_DEG = 10.0
F64 = torch.float64


def rays(size: int, offsets=((0.0, 0.0),)) -> np.ndarray:
    """Rays K^-1 (u, v, 1) through the sample points of each pixel: (S, size, size, 3)."""
    f = (size - 1) / 2 / math.tan(math.radians(FOV_DEG) / 2)
    c = (size - 1) / 2
    r, col = np.mgrid[0:size, 0:size].astype(float)
    return np.stack([np.stack([(col + dx - c) / f, (r + dy - c) / f, np.ones_like(r)], -1)
                     for dy, dx in offsets])


RELEASE_OFFSETS = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))


def np_rotation(rx, ry, rz):
    c, s = math.cos, math.sin
    m_x = np.array([[1, 0, 0], [0, c(rx), -s(rx)], [0, s(rx), c(rx)]])
    m_y = np.array([[c(ry), 0, s(ry)], [0, 1, 0], [-s(ry), 0, c(ry)]])
    m_z = np.array([[c(rz), -s(rz), 0], [s(rz), c(rz), 0], [0, 0, 1]])
    return m_z @ m_y @ m_x


def test_rotation_matrix_is_rz_ry_rx():
    angles = torch.tensor([[0.3, -0.7, 1.1], [-1.0, 0.2, 0.05]], dtype=F64)
    ours = rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2]).numpy()
    for a, m in zip(angles.numpy(), ours, strict=True):
        np.testing.assert_allclose(m, np_rotation(*a), atol=1e-12)


def test_warp_then_inverse_warp_is_identity_and_projection_inverts_backprojection():
    g = torch.Generator().manual_seed(0)
    depth = 0.9 + 0.2 * torch.rand(2, 9, 9, generator=g, dtype=F64)
    points = depth_to_points(depth, FOV_DEG)
    uv = project_points(points, 9, 9, FOV_DEG)
    v, u = torch.meshgrid(torch.arange(9, dtype=F64), torch.arange(9, dtype=F64),
                          indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).expand(2, -1, -1, -1))
    view = torch.tensor([[0.3, -0.9, 0.2, 0.05, -0.1, 0.02], [0, 1.0, 0, 0, 0, 0]], dtype=F64)
    flat = points.reshape(2, -1, 3)
    torch.testing.assert_close(inverse_warp_points(warp_points(flat, view), view), flat)
    # the rotation centre stays where it is under a pure rotation
    center = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=F64).expand(2, 1, 3)
    rot_only = view.clone()
    rot_only[:, 3:] = 0
    torch.testing.assert_close(warp_points(center, rot_only), center)


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_fronto_parallel_plane(conventions):
    size = 12
    depth = torch.full((2, size, size), 1.05, dtype=F64)
    view = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0.0, 0.0, 0.03]], dtype=F64)
    out, mask = warp_canon_depth(depth, view, FOV_DEG, conventions=conventions)
    expected = torch.tensor([1.05, 1.08], dtype=F64).view(2, 1, 1).expand_as(out)
    if conventions == "clean":
        assert mask[0].all()  # at the identity view every pixel, edges included, is valid
    else:
        # half a pixel off the mesh grid: the last row and column see background
        assert mask[0, :-1, :-1].all() and not mask[0, -1].any() and not mask[0, :, -1].any()
    valid = mask > 0
    torch.testing.assert_close(out[valid], expected[valid], atol=1e-12, rtol=0)


def plane_depth(normal, h, ray):
    return h / (ray @ normal)


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_tilted_plane_under_random_views(conventions):
    size = 16
    rng = np.random.default_rng(1)
    normal = np.array([0.3, -0.2, 1.0])
    normal /= np.linalg.norm(normal)
    h = normal @ np.array([0.0, 0.0, 1.0])
    canon = plane_depth(normal, h, rays(size)[0])
    center = np.array([0.0, 0.0, 1.0])
    offsets = ((0.0, 0.0),) if conventions == "clean" else RELEASE_OFFSETS
    views, expected = [], []
    for _ in range(3):
        view = np.concatenate([np.radians(rng.uniform(-40, 40, 3)), rng.uniform(-0.05, 0.05, 3)])
        n_view = np_rotation(*view[:3]) @ normal
        h_view = h - normal @ center + n_view @ (center + view[3:])
        expected.append(plane_depth(n_view, h_view, rays(size, offsets)).mean(0))
        views.append(view)
    out, mask = warp_canon_depth(torch.tensor(np.stack([canon] * 3)), torch.tensor(np.stack(views)),
                                 FOV_DEG, conventions=conventions)
    valid = mask.numpy() > 0
    assert valid.mean() > 0.4
    np.testing.assert_allclose(out.numpy()[valid], np.stack(expected)[valid], atol=1e-9)


def sphere_depth(ray: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Depth of the near intersection of rays (..., 3) with a sphere (nan on a miss)."""
    a = (ray ** 2).sum(-1)
    b = ray @ center
    disc = b ** 2 - a * (center @ center - radius ** 2)
    return (b - np.sqrt(np.where(disc >= 0, disc, np.nan))) / a


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_sphere_cap_rotated_about_its_centre(conventions):
    """A sphere centred on the rotation centre looks the same from every view: wherever the
    rotated cap is seen, its depth is the sphere's (up to the mesh's chord error)."""
    size = 32
    center, radius = np.array([0.0, 0.0, 1.0]), 0.15
    canon = sphere_depth(rays(size)[0], center, radius)
    assert np.isfinite(canon).all()
    views = torch.tensor([[0.0, 0.5, 0.0, 0, 0, 0], [-0.4, 0.2, 0.3, 0, 0, 0]], dtype=F64)
    out, mask = warp_canon_depth(torch.tensor(np.stack([canon] * 2)), views, FOV_DEG,
                                 conventions=conventions)
    offsets = ((0.0, 0.0),) if conventions == "clean" else RELEASE_OFFSETS
    expected = sphere_depth(rays(size, offsets), center, radius).mean(0)
    # away from the silhouette, and from the cap's rim where the mesh grazes the sphere
    eroded = -torch.nn.functional.max_pool2d(-mask.unsqueeze(1), 3, 1, 1).squeeze(1)
    inner = (eroded.numpy() > 0) & (np.abs(out.numpy() - 0.85) < 0.03)
    assert inner.mean() > 0.3
    np.testing.assert_allclose(out.numpy()[inner], np.broadcast_to(expected, out.shape)[inner],
                               atol=1e-4)


def test_screen_filling_triangles_are_rasterised_with_occlusion():
    """Two triangles far larger than the screen; the nearer one wins where both cover."""
    size = 10
    b = 0.5
    vertices = torch.tensor([[[-b, -b, 1.0], [3 * b, -b, 1.0], [-b, 3 * b, 1.0],
                              [-b, -b, 0.95], [3 * b, -b, 0.85], [-b, 3 * b, 0.95]]],
                            dtype=F64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for supersample, offset in [(1, 0.0), (2, 0.5)]:
        depth = rasterize_depth(vertices, faces, size, size, FOV_DEG, supersample, offset)
        n = size * supersample
        f = (size - 1) / 2 / math.tan(math.radians(FOV_DEG) / 2)
        u = (np.arange(n) + 0.5) / supersample - 0.5 + offset
        x = (u - (size - 1) / 2) / f
        # the nearer triangle's plane: z = 0.95 - 0.1 (X + b) / (4 b); along the ray
        # X = z x: z (1 + 0.025 x / b) = 0.925
        near = 0.925 / (1 + 0.025 * x / b)
        expected = np.broadcast_to(near, (n, n))
        np.testing.assert_allclose(depth[0].numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_round_trip_lands_back_on_the_pixel(conventions):
    """Sample the canonical 3D points at the re-projected grid and warp them forward again:
    they project back onto the pixel they were sampled for, at the rendered depth."""
    size = 24
    y, x = torch.meshgrid(torch.linspace(-1, 1, size, dtype=F64),
                          torch.linspace(-1, 1, size, dtype=F64), indexing="ij")
    depth = (1.0 + 0.04 * torch.sin(2 * x + 0.5) * torch.cos(1.5 * y)).unsqueeze(0)
    points = depth_to_points(depth, FOV_DEG)
    view = torch.tensor([[0.2, -0.6, 0.1, 0.03, -0.02, 0.0]], dtype=F64)
    sampled, mask, view_depth = reproject(depth, points.permute(0, 3, 1, 2), view, FOV_DEG,
                                          conventions=conventions)
    warped = warp_points(sampled.permute(0, 2, 3, 1).reshape(1, -1, 3), view)
    uv = project_points(warped, size, size, FOV_DEG).view(size, size, 2)
    v, u = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64),
                          indexing="ij")
    valid = mask[0, 0] > 0
    assert valid.float().mean() > 0.4
    # bilinear sampling of the vertex grid vs the flat triangles: second-order differences
    err_px = (uv - torch.stack([u, v], -1)).norm(dim=-1)[valid]
    if conventions == "clean":
        assert err_px.max() < 0.02
        torch.testing.assert_close(warped[0, :, 2].view(size, size)[valid],
                                   view_depth[0][valid], atol=5e-4, rtol=0)
    else:
        # rendered half a pixel off the back-projection grid; at self-occlusion edges the
        # 2x2 average blends two surfaces (a few pixels land far off)
        assert err_px.quantile(0.95) < 0.6
        assert (err_px < 0.6).float().mean() > 0.95


def test_identity_view_reproduces_the_texture_exactly():
    g = torch.Generator().manual_seed(2)
    depth = 0.95 + 0.1 * torch.rand(2, 10, 10, generator=g, dtype=F64)
    image = torch.rand(2, 3, 10, 10, generator=g, dtype=F64) * 2 - 1
    out, mask, view_depth = reproject(depth, image, torch.zeros(2, 6, dtype=F64))
    assert mask.all()
    torch.testing.assert_close(out, image)
    torch.testing.assert_close(view_depth, depth)


def test_reproject_views_and_render_mesh():
    g = torch.Generator().manual_seed(3)
    depth = 0.95 + 0.1 * torch.rand(1, 10, 10, generator=g, dtype=F64)
    image = torch.rand(1, 3, 10, 10, generator=g, dtype=F64)
    views = torch.tensor([[0, 0.4, 0, 0, 0, 0], [0.3, -0.5, 0.1, 0.02, 0, 0]], dtype=F64)
    batch = reproject(depth.expand(2, -1, -1), image.expand(2, -1, -1, -1), views)
    single = reproject_views(depth[0], image[0], views)
    for a, b in zip(batch, single, strict=True):
        torch.testing.assert_close(a, b)
    shown = render_mesh(depth.expand(2, -1, -1), image.expand(2, -1, -1, -1), views,
                        background=(0.25, 0.5, 0.75))
    mask = batch[1].expand(-1, 3, -1, -1) > 0
    assert (~mask).any()
    torch.testing.assert_close(shown[mask], batch[0][mask])
    fill = torch.tensor([0.25, 0.5, 0.75], dtype=F64).view(1, 3, 1, 1).expand_as(shown)
    torch.testing.assert_close(shown[~mask], fill[~mask])


def test_bad_arguments_are_refused():
    depth = torch.ones(1, 4, 4)
    with pytest.raises(ValueError, match="conventions"):
        warp_canon_depth(depth, torch.zeros(1, 6), conventions="nr")
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        warp_canon_depth(depth, torch.zeros(1, 5))


def _inverse_depth_on_triangle(corners, depths, u, v):
    """Perspective-correct depth at screen point (u, v) of the triangle with screen corners
    ((u0, v0), (u1, v1), (u2, v2)) and corner depths: 1/z is affine in screen space."""
    (u0, v0), (u1, v1), (u2, v2) = corners
    det = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)
    b1 = ((u - u0) * (v2 - v0) - (u2 - u0) * (v - v0)) / det
    b2 = ((u1 - u0) * (v - v0) - (u - u0) * (v1 - v0)) / det
    inv = (1 - b1 - b2) / depths[0] + b1 / depths[1] + b2 / depths[2]
    return 1 / inv


def _cell_depth(z, u, v, diagonal):
    """Depth of the one-cell mesh with vertex depths z = {tl, tr, bl, br} at screen point
    (u, v) in [0, 1]^2 (tl at (0, 0), u along columns, v along rows), split along
    ``diagonal`` "tr-bl" (the release's) or "tl-br"."""
    pos = {"tl": (0, 0), "tr": (1, 0), "bl": (0, 1), "br": (1, 1)}
    if diagonal == "tr-bl":
        tri = ("tl", "bl", "tr") if u + v <= 1 else ("tr", "bl", "br")
    else:
        tri = ("tl", "br", "tr") if u >= v else ("tl", "bl", "br")
    return _inverse_depth_on_triangle([pos[k] for k in tri], [z[k] for k in tri], u, v)


@pytest.mark.parametrize("raised", ["tl", "tr", "bl", "br"])
def test_grid_mesh_uses_the_releases_diagonal(raised):
    """One 2x2 depth map with a single raised vertex, seen at the identity view with the
    release's sampling (2x2 samples at the pixel's quarter points, averaged): the output
    pixel (0, 0) is the cell's mean depth over those samples, which depends on the diagonal
    wherever the raised vertex is off the split line."""
    z = {"tl": 1.0, "tr": 1.0, "bl": 1.0, "br": 1.0}
    z[raised] = 0.95
    depth = torch.tensor([[[z["tl"], z["tr"]], [z["bl"], z["br"]]]], dtype=F64)
    got = warp_canon_depth(depth, torch.zeros(1, 6, dtype=F64), FOV_DEG,
                           conventions="release")[0][0, 0, 0].item()
    quarter = [(du, dv) for du in (0.25, 0.75) for dv in (0.25, 0.75)]
    expected = {d: np.mean([_cell_depth(z, u, v, d) for u, v in quarter])
                for d in ("tr-bl", "tl-br")}
    # by hand: a raised corner off the split line moves one of the four samples, to
    # 1 / (0.5 / 0.95 + 0.5) = 0.974359; on it, all four (harmonic interpolation)
    if raised in ("tl", "br"):
        assert expected["tr-bl"] == pytest.approx((3 + 0.974359) / 4, abs=1e-6)
        assert expected["tl-br"] == pytest.approx(0.980766, abs=1e-6)
    else:
        assert expected["tl-br"] == pytest.approx((3 + 0.974359) / 4, abs=1e-6)
        assert expected["tr-bl"] == pytest.approx(0.980766, abs=1e-6)
    assert got == pytest.approx(expected["tr-bl"], abs=1e-9)
    assert abs(got - expected["tl-br"]) > 0.01
