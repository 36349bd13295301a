"""The rasteriser against a slow, independent ray tracer written here (per-pixel loops,
Moeller-Trumbore ray/triangle intersection in float64), on both conventions."""

import math

import numpy as np
import pytest
import torch

from gan2shape.render import (
    depth_to_points,
    grid_faces,
    rasterize_faces,
    warp_canon_depth,
    warp_points,
)

FOV_DEG = 10.0


def smooth_depth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random smooth depth map in about [0.9, 1.1]: a few low-frequency bumps."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    depth = np.full((size, size), 1.0)
    for _ in range(4):
        cx, cy = rng.uniform(0, 1, 2)
        sigma = rng.uniform(0.15, 0.4)
        depth += rng.uniform(-0.06, 0.06) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2)
                                                   / (2 * sigma ** 2))
    return np.clip(depth, 0.9, 1.1)


def ref_rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    c, s = math.cos, math.sin
    m_x = np.array([[1, 0, 0], [0, c(rx), -s(rx)], [0, s(rx), c(rx)]])
    m_y = np.array([[c(ry), 0, s(ry)], [0, 1, 0], [-s(ry), 0, c(ry)]])
    m_z = np.array([[c(rz), -s(rz), 0], [s(rz), c(rz), 0], [0, 0, 1]])
    return m_z @ m_y @ m_x


def ref_mesh(depth: np.ndarray, view: np.ndarray, rot_center_depth: float = 1.0):
    """Warped vertices (N, 3) and triangles (T, 3, 3) of the grid mesh, in float64."""
    size = depth.shape[0]
    f = (size - 1) / 2 / math.tan(math.radians(FOV_DEG) / 2)
    c = (size - 1) / 2
    verts = []
    for r in range(size):
        for col in range(size):
            d = depth[r, col]
            verts.append([(col - c) / f * d, (r - c) / f * d, d])
    verts = np.array(verts)
    center = np.array([0.0, 0.0, rot_center_depth])
    verts = (verts - center) @ ref_rotation(*view[:3]).T + center + view[3:]
    tris = []
    for r in range(size - 1):
        for col in range(size - 1):
            tl, tr = r * size + col, r * size + col + 1
            bl, br = tl + size, tr + size
            # the release's split: the diagonal runs from top-right to bottom-left
            tris.append([verts[tl], verts[bl], verts[tr]])
            tris.append([verts[tr], verts[bl], verts[br]])
    return np.array(tris)


def ray_hit_depths(tris: np.ndarray, ray: np.ndarray) -> np.ndarray:
    """Depths (z, since ray z = 1) of all hits of a ray from the origin with two-sided
    triangles (T, 3, 3)."""
    v0, v1, v2 = tris[:, 0], tris[:, 1], tris[:, 2]
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(ray, e2)
    det = (e1 * p).sum(-1)
    ok = np.abs(det) > 1e-14
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = -v0
    u = (s * p).sum(-1) * inv
    q = np.cross(s, e1)
    v = (q @ ray) * inv
    t = (q * e2).sum(-1) * inv
    tol = 1e-9
    hit = ok & (u >= -tol) & (v >= -tol) & (u + v <= 1 + tol) & (t > 0.1)
    return t[hit]


def ray_depth(tris: np.ndarray, ray: np.ndarray) -> float:
    """Nearest hit of a ray with the triangles (inf when none)."""
    hits = ray_hit_depths(tris, ray)
    return float(hits.min()) if hits.size else math.inf


def reference_render(depth: np.ndarray, view: np.ndarray, conventions: str) -> np.ndarray:
    """Per-pixel ray tracing of the warped grid mesh; returns clamped depth (H, W)."""
    size = depth.shape[0]
    tris = ref_mesh(depth, view)
    f = (size - 1) / 2 / math.tan(math.radians(FOV_DEG) / 2)
    c = (size - 1) / 2
    if conventions == "clean":
        offsets = [(0.0, 0.0)]
    else:
        offsets = [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]
    out = np.zeros((size, size))
    for r in range(size):
        for col in range(size):
            acc = 0.0
            for dy, dx in offsets:
                ray = np.array([(col + dx - c) / f, (r + dy - c) / f, 1.0])
                z = ray_depth(tris, ray)
                acc += z if math.isfinite(z) else 100.0
            out[r, col] = acc / len(offsets)
    return np.clip(out, 0.8, 1.2)


def random_view(rng: np.random.Generator, max_deg: float = 60.0) -> np.ndarray:
    rot = np.radians(rng.uniform(-max_deg, max_deg, 3)) * np.array([0.5, 1.0, 0.5])
    return np.concatenate([rot, rng.uniform(-0.1, 0.1, 2), [0.0]])


def compare(depths, views, conventions, dtypes=(torch.float64,)):
    """Worst depth error where both are valid, fraction of mask disagreements and of
    pixels both call valid, over the dtypes the rasteriser runs in."""
    ref = np.stack([reference_render(d, v, conventions)
                    for d, v in zip(depths, views, strict=True)])
    ref_mask = ref < 1.2
    results = []
    for dtype in dtypes:
        ours, ours_mask = warp_canon_depth(torch.tensor(np.stack(depths), dtype=dtype),
                                           torch.tensor(np.stack(views), dtype=dtype),
                                           fov_deg=FOV_DEG, conventions=conventions)
        ours, ours_mask = ours.double().numpy(), ours_mask.numpy() > 0
        both = ref_mask & ours_mask
        results.append((np.abs(ours - ref)[both].max(), (ref_mask != ours_mask).mean(),
                        both.mean()))
    return tuple(max(r[i] for r in results) if i < 2 else min(r[i] for r in results)
                 for i in range(3))


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_random_smooth_depth_random_views(conventions):
    rng = np.random.default_rng(3)
    size, count = (20, 3) if conventions == "clean" else (16, 2)
    depths = [smooth_depth(rng, size) for _ in range(count)]
    views = [random_view(rng) for _ in range(count)]
    err, disagree, coverage = compare(depths, views, conventions,
                                      (torch.float64, torch.float32))
    assert coverage > 0.3  # the comparison is not vacuous
    assert err < 1e-4
    assert disagree <= 0.005


@pytest.mark.slow
@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_many_random_views_larger_maps(conventions):
    rng = np.random.default_rng(11)
    depths = [smooth_depth(rng, 32) for _ in range(8)]
    views = [random_view(rng) for _ in range(8)]
    err, disagree, coverage = compare(depths, views, conventions,
                                      (torch.float64, torch.float32))
    assert coverage > 0.3
    assert err < 1e-4
    assert disagree <= 0.005


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_steep_cliff_at_60_degrees(conventions):
    """A depth step seen at 60 degrees yaw: the cliff's faces are long on screen and must
    all be rasterised (a dropped face leaves background or far surface showing)."""
    size = 16
    depth = np.full((size, size), 1.08)
    depth[:, size // 2:] = 0.92
    view = np.array([0.1, math.radians(60), 0.0, 0.0, 0.0, 0.0])
    view_flip = np.array([0.0, math.radians(-60), 0.05, 0.0, 0.0, 0.0])
    err, disagree, coverage = compare([depth, depth], [view, view_flip], conventions)
    # The cliff (the cells between columns 7 and 8) must be what many pixels see.
    views = torch.tensor(np.stack([view, view_flip]))
    vertices = warp_points(depth_to_points(torch.tensor(np.stack([depth, depth])))
                           .reshape(2, -1, 3), views)
    faces = rasterize_faces(vertices, grid_faces(size, size), size, size, FOV_DEG)
    cliff = (faces >= 0) & (faces % ((size - 1) ** 2) % (size - 1) == size // 2 - 1)
    assert cliff.sum(dim=(1, 2)).min() > size * 4
    assert coverage > 0.3
    assert err < 1e-4
    assert disagree <= 0.005


@pytest.mark.parametrize("conventions", ["clean", "release"])
def test_ridge_occludes_what_is_behind_it(conventions):
    """A tall ridge on a far plane, seen from the side: where a pixel's ray crosses both the
    ridge and the plane behind it, the nearest hit (the ridge) must win."""
    size = 16
    col = np.arange(size)
    profile = 1.1 - 0.2 * np.clip(1 - np.abs(col - 7.5) / 2.5, 0, None)
    depth = np.tile(profile, (size, 1))
    view = np.array([0.0, math.radians(40), 0.0, 0.0, 0.0, 0.0])
    err, disagree, coverage = compare([depth], [view], conventions)
    assert err < 1e-4 and disagree <= 0.005 and coverage > 0.3
    # the test is about occlusion: many pixels see through the ridge to a farther surface
    tris = ref_mesh(depth, view)
    f = (size - 1) / 2 / math.tan(math.radians(FOV_DEG) / 2)
    c = (size - 1) / 2
    occluding = 0
    for r in range(0, size, 3):
        for col_ in range(size):
            hits = ray_hit_depths(tris, np.array([(col_ - c) / f, (r - c) / f, 1.0]))
            occluding += int(len(hits) > 0 and hits.max() - hits.min() > 0.05)
    assert occluding >= 6
