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


def _corner_ids(faces: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """Rows of the (B * N)-row vertex table for every corner: (B, 3, F)."""
    offsets = torch.arange(b, device=faces.device).view(b, 1, 1) * n
    return faces.t().unsqueeze(0) + offsets


def _visible_faces(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                   fov_deg: float, supersample: int, sample_offset: float) -> torch.Tensor:
    """Z-buffer: for every sample, the GLOBAL id (b * F + f) of the nearest face, or -1.

    vertices: (B, N, 3); faces: (F, 3). Returns (B * H * s * W * s,) long.
    """
    hs, ws = height * supersample, width * supersample
    fx, fy, cx, cy = intrinsics(height, width, fov_deg)

    # Per vertex: sample coordinates and inverse depth; per face: (B, 3 corners, F) each.
    b, n, _ = vertices.shape
    inv_z = 1.0 / vertices[..., 2]
    per_vertex = torch.stack([
        _to_samples(vertices[..., 0] * inv_z * fx + cx, supersample, sample_offset),
        _to_samples(vertices[..., 1] * inv_z * fy + cy, supersample, sample_offset),
        inv_z,
    ], dim=-1).reshape(b * n, 3)
    x, y, iz = per_vertex.index_select(0, _corner_ids(faces, b, n).reshape(-1)).view(
        b, 3, -1, 3).unbind(-1)
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    iz0, iz1, iz2 = iz.unbind(1)
    e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    det = e1x * e2y - e1y * e2x
    usable = (iz.amin(1) > 0) & (iz.amax(1) < 1 / _NEAR) & (det.abs() > _MIN_DET)
    inv_det = torch.where(usable, 1.0 / det, torch.zeros_like(det))

    # Integer bounding box of samples, clipped to the screen; empty for unusable faces.
    x_lo = (x.amin(1) - 1e-3).ceil_().clamp_(min=0)
    x_hi = (x.amax(1) + 1e-3).floor_().clamp_(max=ws - 1)
    y_lo = (y.amin(1) - 1e-3).ceil_().clamp_(min=0)
    y_hi = (y.amax(1) + 1e-3).floor_().clamp_(max=hs - 1)
    nx = (x_hi - x_lo + 1).clamp_(min=0).long()
    ny = (y_hi - y_lo + 1).clamp_(min=0).long()
    counts = torch.where(usable, nx * ny, torch.zeros_like(nx)).reshape(-1)

    # Per face: barycentrics w1, w2 as affine functions of the (col, row) offset inside the
    # box, inverse depth at the box origin's barycentrics plus its increments along w1, w2;
    # and the box's width, first pixel id and first pair id.
    dx, dy = x_lo - x0, y_lo - y0
    a1, b1, a2, b2 = e2y * inv_det, -e2x * inv_det, -e1y * inv_det, e1x * inv_det
    ftable = torch.stack([a1, b1, a1 * dx + b1 * dy, a2, b2, a2 * dx + b2 * dy,
                          iz0, iz1 - iz0, iz2 - iz0], dim=-1).reshape(-1, 9)
    batch = torch.arange(b, device=vertices.device).unsqueeze(1)
    first_pixel = (batch * hs + y_lo.long()) * ws + x_lo.long()
    starts = torch.cumsum(counts, 0) - counts
    itable = torch.stack([nx.reshape(-1), first_pixel.reshape(-1), starts], dim=-1)

    # Enumerate the (face, sample) pairs of every bounding box.
    face_ids = torch.repeat_interleave(counts)
    ci = itable.index_select(0, face_ids)
    k = torch.arange(face_ids.shape[0], device=vertices.device) - ci[:, 2]
    row = torch.div(k, ci[:, 0], rounding_mode="floor")
    col = k - row * ci[:, 0]
    pix = ci[:, 1] + row * ws + col
    c = ftable.index_select(0, face_ids)
    col_f, row_f = col.to(c.dtype), row.to(c.dtype)
    w1 = torch.addcmul(torch.addcmul(c[:, 2], c[:, 0], col_f), c[:, 1], row_f)
    w2 = torch.addcmul(torch.addcmul(c[:, 5], c[:, 3], col_f), c[:, 4], row_f)
    inside = (torch.minimum(w1, w2) >= -_INSIDE_EPS) & (w1 + w2 <= 1 + _INSIDE_EPS)
    inv_depth = torch.addcmul(torch.addcmul(c[:, 6], w1, c[:, 7]), w2, c[:, 8])
    # One int64 key per pair ordered by inverse depth, then face id (the bits of a positive
    # float32 sort as its value), so one scatter-amax finds the nearest face; exact ties
    # (shared edges) go to the largest id. Pairs outside their face go to a spare slot.
    keys = (inv_depth.float().view(torch.int32).long() << 32) | face_ids
    pix = torch.where(inside, pix, b * hs * ws)
    zbuf = torch.full((b * hs * ws + 1,), -1, dtype=torch.long, device=vertices.device)
    zbuf.scatter_reduce_(0, pix, keys, reduce="amax")
    zbuf = zbuf[:-1]
    return torch.where(zbuf >= 0, zbuf & 0xFFFFFFFF, zbuf)


@torch.no_grad()
def rasterize_faces(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                    fov_deg: float = 10.0, supersample: int = 1,
                    sample_offset: float = 0.0) -> torch.Tensor:
    """Z-buffer visibility: the index of the nearest face seen by every sample.

    vertices: (B, N, 3) camera-space points; faces: (F, 3) vertex ids.
    Returns face_index: (B, H * s, W * s) long, -1 where no face is hit.
    """
    b = vertices.shape[0]
    ids = _visible_faces(vertices, faces, height, width, fov_deg, supersample, sample_offset)
    ids = ids.view(b, height * supersample, width * supersample)
    offsets = torch.arange(b, device=ids.device).view(b, 1, 1) * faces.shape[0]
    return torch.where(ids >= 0, ids - offsets, ids)


def rasterize_depth(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                    fov_deg: float = 10.0, supersample: int = 1, sample_offset: float = 0.0,
                    background_depth: float = 100.0) -> torch.Tensor:
    """Depth (z) of the nearest surface at every sample, differentiable w.r.t. vertices.

    vertices: (B, N, 3) camera-space points; faces: (F, 3) vertex ids.
    Returns depth: (B, H * s, W * s), background_depth where nothing is hit.
    """
    b, n, _ = vertices.shape
    n_faces = faces.shape[0]
    hs, ws = height * supersample, width * supersample
    with torch.no_grad():
        ids = _visible_faces(vertices, faces, height, width, fov_deg, supersample,
                             sample_offset).view(b, hs * ws)
        covered = ids >= 0
        # Only the faces some sample sees, compacted without sorting: (K,) global ids, and
        # for every sample the row of its face among them (0 where nothing is hit).
        seen = torch.zeros(b * n_faces + 1, dtype=torch.bool, device=ids.device)
        seen[ids] = True  # -1 marks the spare last entry
        seen = seen[:-1]
        seen_ids = seen.nonzero().squeeze(1)
        rows = torch.cumsum(seen, 0) - 1
        sample_rows = rows.index_select(0, ids.clamp(min=0).reshape(-1)).clamp(min=0)
        batch = torch.div(seen_ids, n_faces, rounding_mode="floor")
        vertex_ids = faces.index_select(0, seen_ids - batch * n_faces) + (batch * n)[:, None]
        i, j = torch.meshgrid(torch.arange(hs, dtype=vertices.dtype, device=ids.device),
                              torch.arange(ws, dtype=vertices.dtype, device=ids.device),
                              indexing="ij")
        ray = pixel_rays(_from_samples(j, supersample, sample_offset),
                         _from_samples(i, supersample, sample_offset),
                         height, width, fov_deg).reshape(1, hs * ws, 3)
    # The plane n . X = n . v0 of each face as q = n / (n . v0), so that the ray X = z * ray
    # meets it at 1 / z = q . ray: exact, perspective-correct depth.
    points = vertices.reshape(b * n, 3)
    v0, v1, v2 = (points.index_select(0, vertex_ids[:, c]) for c in range(3))
    normal = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    plane = normal / (normal * v0).sum(-1, keepdim=True)
    inv_depth = (plane.index_select(0, sample_rows).view(b, hs * ws, 3) * ray).sum(-1)
    depth = torch.where(covered, 1.0 / inv_depth, background_depth)
    return depth.view(b, hs, ws)
