"""Vectorised z-buffer depth rasteriser for triangle meshes, in pure PyTorch.

Visibility is decided without gradients: every triangle's screen bounding box is enumerated
into (triangle, sample) pairs with `repeat_interleave`, so a triangle of any on-screen size
is rasterised (none is dropped), pairs outside the triangle are discarded by a barycentric
test, and the nearest pair per sample wins through `scatter_reduce(amax)` on inverse depth.
Faces are two-sided. The depth of each covered sample is then recomputed WITH gradients as
the exact intersection of the sample's ray with the winning triangle's plane, which is the
perspective-correct barycentric interpolation of the vertex depths; gradients reach the
vertex positions (visibility decisions themselves are not differentiated).

Samples: the rasteriser evaluates a grid of (H * s) x (W * s) samples; sample (i, j) looks
at the image point u = (j + 0.5) / s - 0.5 + sample_offset (column), v likewise (row), in
the pixel coordinates of an H x W image whose camera is given by `fov_deg`.
"""

import torch

from .camera import intrinsics, pixel_rays

# Barycentric slack so that samples lying exactly on an edge (all of them at the identity
# view in the clean convention) are covered despite rounding; a shift of 1e-4 of a triangle.
_INSIDE_EPS = 1e-4
# Triangles closer than this (or behind the camera) are skipped, as neural_renderer's near.
_NEAR = 0.1
# Screen-space twice-area below which a triangle is edge-on and covers nothing.
_MIN_DET = 1e-10


def grid_faces(height: int, width: int, device=None) -> torch.Tensor:
    """Faces (2 (H-1)(W-1), 3) of the grid mesh over an H x W vertex grid (row-major ids).

    Each 2x2 cell (tl, tr, bl, br) is split along the tl-br diagonal into (tl, br, tr) and
    (tl, bl, br), as the release does (the diagonal decides the piecewise-planar surface).
    """
    ids = torch.arange(height * width, device=device).view(height, width)
    tl, tr, bl, br = ids[:-1, :-1], ids[:-1, 1:], ids[1:, :-1], ids[1:, 1:]
    upper = torch.stack([tl, br, tr], dim=-1).reshape(-1, 3)
    lower = torch.stack([tl, bl, br], dim=-1).reshape(-1, 3)
    return torch.cat([upper, lower], dim=0)


def _to_samples(coord: torch.Tensor, supersample: int, sample_offset: float) -> torch.Tensor:
    """Image coordinate -> fractional sample index (inverse of the mapping in the docstring)."""
    return (coord + 0.5 - sample_offset) * supersample - 0.5


def _from_samples(index: torch.Tensor, supersample: int, sample_offset: float) -> torch.Tensor:
    return (index + 0.5) / supersample - 0.5 + sample_offset


@torch.no_grad()
def rasterize_faces(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                    fov_deg: float = 10.0, supersample: int = 1,
                    sample_offset: float = 0.0) -> torch.Tensor:
    """Z-buffer visibility: the index of the nearest face seen by every sample.

    vertices: (B, N, 3) camera-space points; faces: (F, 3) vertex ids.
    Returns face_index: (B, H * s, W * s) long, -1 where no face is hit.
    """
    b, _, _ = vertices.shape
    n_faces = faces.shape[0]
    hs, ws = height * supersample, width * supersample
    fx, fy, cx, cy = intrinsics(height, width, fov_deg)

    tri = vertices[:, faces]  # (B, F, 3 vertices, 3 coords)
    z = tri[..., 2]
    x = _to_samples(tri[..., 0] / z * fx + cx, supersample, sample_offset)
    y = _to_samples(tri[..., 1] / z * fy + cy, supersample, sample_offset)
    x0, y0 = x[..., 0], y[..., 0]
    e1x, e1y = x[..., 1] - x0, y[..., 1] - y0
    e2x, e2y = x[..., 2] - x0, y[..., 2] - y0
    det = e1x * e2y - e1y * e2x
    usable = (z.amin(-1) > _NEAR) & (det.abs() > _MIN_DET)
    det = torch.where(usable, det, torch.ones_like(det))

    # Integer bounding box of samples, clipped to the screen; empty for unusable faces.
    x_lo = (x.amin(-1) - 1e-3).ceil().clamp(min=0)
    x_hi = (x.amax(-1) + 1e-3).floor().clamp(max=ws - 1)
    y_lo = (y.amin(-1) - 1e-3).ceil().clamp(min=0)
    y_hi = (y.amax(-1) + 1e-3).floor().clamp(max=hs - 1)
    nx = (x_hi - x_lo + 1).clamp(min=0).long()
    ny = (y_hi - y_lo + 1).clamp(min=0).long()
    counts = torch.where(usable, nx * ny, torch.zeros_like(nx)).reshape(-1)

    # Per face: origin, barycentric gradients (w1, w2 as affine functions of the offset from
    # vertex 0) and inverse depth at vertex 0 plus its increments towards vertices 1 and 2.
    inv_z = 1.0 / z
    table = torch.stack([
        x0, y0, e2y / det, -e2x / det, -e1y / det, e1x / det,
        inv_z[..., 0], inv_z[..., 1] - inv_z[..., 0], inv_z[..., 2] - inv_z[..., 0],
        x_lo, y_lo,
    ], dim=-1).reshape(-1, 11)

    # Enumerate (face, sample) pairs of every bounding box.
    face_ids = torch.repeat_interleave(counts)
    starts = torch.cumsum(counts, 0) - counts
    k = torch.arange(face_ids.shape[0], device=vertices.device) - starts[face_ids]
    nx_pair = nx.reshape(-1)[face_ids]
    row = torch.div(k, nx_pair, rounding_mode="floor")
    col = k - row * nx_pair
    c = table[face_ids]
    sx = c[:, 9] + col
    sy = c[:, 10] + row
    px, py = sx - c[:, 0], sy - c[:, 1]
    w1 = c[:, 2] * px + c[:, 3] * py
    w2 = c[:, 4] * px + c[:, 5] * py
    inside = (w1 >= -_INSIDE_EPS) & (w2 >= -_INSIDE_EPS) & (w1 + w2 <= 1 + _INSIDE_EPS)
    inv_depth = (c[:, 6] + w1 * c[:, 7] + w2 * c[:, 8])[inside]
    face_ids = face_ids[inside]
    batch = torch.div(face_ids, n_faces, rounding_mode="floor")
    pix = (batch * hs + sy[inside].long()) * ws + sx[inside].long()

    # Nearest = largest inverse depth; ties (shared edges) go to the largest face id.
    zbuf = vertices.new_full((b * hs * ws,), -float("inf"))
    zbuf.scatter_reduce_(0, pix, inv_depth, reduce="amax")
    winners = inv_depth == zbuf[pix]
    face_index = torch.full((b * hs * ws,), -1, dtype=torch.long, device=vertices.device)
    face_index.scatter_reduce_(0, pix[winners], face_ids[winners] - batch[winners] * n_faces,
                               reduce="amax")
    return face_index.view(b, hs, ws)


def rasterize_depth(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                    fov_deg: float = 10.0, supersample: int = 1, sample_offset: float = 0.0,
                    background_depth: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (z) of the nearest surface at every sample, differentiable w.r.t. vertices.

    vertices: (B, N, 3) camera-space points; faces: (F, 3) vertex ids.
    Returns depth: (B, H * s, W * s) (background_depth where nothing is hit) and
    face_index: (B, H * s, W * s) long (-1 where nothing is hit).
    """
    face_index = rasterize_faces(vertices, faces, height, width, fov_deg, supersample,
                                 sample_offset)
    bi, si, sj = (face_index >= 0).nonzero(as_tuple=True)
    tri = vertices[bi.unsqueeze(1), faces[face_index[bi, si, sj]]]  # (M, 3, 3)
    u = _from_samples(sj.to(vertices.dtype), supersample, sample_offset)
    v = _from_samples(si.to(vertices.dtype), supersample, sample_offset)
    ray = pixel_rays(u, v, height, width, fov_deg)
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    z = (normal * tri[:, 0]).sum(-1) / (normal * ray).sum(-1)
    depth = vertices.new_full(face_index.shape, background_depth)
    return depth.index_put((bi, si, sj), z), face_index
