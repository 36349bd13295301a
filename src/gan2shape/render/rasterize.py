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

import functools

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
    """Rows of the (B * N)-row vertex table for every corner: (B * 3 * F,), ordered
    (batch, corner, face)."""
    offsets = torch.arange(b, device=faces.device).view(b, 1, 1) * n
    return (faces.t().unsqueeze(0) + offsets).reshape(-1)


@functools.lru_cache(maxsize=16)
def _sample_rays(height: int, width: int, fov_deg: float, supersample: int,
                 sample_offset: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Rays K^-1 (u, v, 1) through every sample: (H * s * W * s, 3)."""
    hs, ws = height * supersample, width * supersample
    i, j = torch.meshgrid(torch.arange(hs, dtype=dtype, device=device),
                          torch.arange(ws, dtype=dtype, device=device), indexing="ij")
    return pixel_rays(_from_samples(j, supersample, sample_offset),
                      _from_samples(i, supersample, sample_offset),
                      height, width, fov_deg).reshape(hs * ws, 3)


def _visible_faces(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                   fov_deg: float, supersample: int, sample_offset: float) -> torch.Tensor:
    """Z-buffer: for every sample, the GLOBAL id (b * F + f) of the nearest face, or -1.

    vertices: (B, N, 3); faces: (F, 3). Returns (B * H * s * W * s,) long.
    (Few, large tensor operations: on a busy CPU each costs a thread hand-off.)
    """
    b, n, _ = vertices.shape
    n_faces = faces.shape[0]
    hs, ws = height * supersample, width * supersample
    fx, fy, cx, cy = intrinsics(height, width, fov_deg)
    scale = vertices.new_tensor([fx * supersample, fy * supersample])
    shift = vertices.new_tensor([_to_samples(cx, supersample, sample_offset),
                                 _to_samples(cy, supersample, sample_offset)])

    # Per vertex (sample x, sample y, 1 / z); per face and corner: (B, 3, F, 3).
    inv_z = vertices[..., 2:].reciprocal()
    per_vertex = torch.cat([torch.addcmul(shift, vertices[..., :2] * inv_z, scale), inv_z], -1)
    corners = per_vertex.reshape(b * n, 3).index_select(0, _corner_ids(faces, b, n))
    corners = corners.view(b, 3, n_faces, 3)
    p, iz = corners[..., :2], corners[..., 2]
    edges = p[:, 1:] - p[:, :1]  # (B, 2, F, 2): e1, e2
    det = edges[:, 0, :, 0] * edges[:, 1, :, 1] - edges[:, 0, :, 1] * edges[:, 1, :, 0]
    usable = (iz.amin(1) > 0) & (iz.amax(1) < 1 / _NEAR) & (det.abs() > _MIN_DET)
    inv_det = torch.where(usable, det.reciprocal(), 0.0)

    # Integer bounding box of samples, clipped to the screen; empty for unusable faces.
    lo = (p.amin(1) - 1e-3).ceil_().clamp_(min=0)  # (B, F, 2)
    hi = torch.minimum((p.amax(1) + 1e-3).floor_(), vertices.new_tensor([ws - 1, hs - 1]))
    size = (hi - lo + 1).clamp_(min=0)
    counts = torch.where(usable, size.prod(-1), 0.0).long().reshape(-1)

    # Barycentrics (w1, w2) = A (offset from vertex 0), A = [[e2y, -e2x], [-e1y, e1x]] / det,
    # tabulated per face as A, (w1, w2) at the box origin, 1/z0, and 1/z1 - 1/z0, 1/z2 - 1/z0.
    sign = vertices.new_tensor([[1.0, -1.0], [-1.0, 1.0]]).view(1, 2, 1, 2)
    mat = edges.flip((1, 3)) * sign * inv_det.unsqueeze(1).unsqueeze(-1)  # (B, 2, F, 2)
    w_origin = (mat * (lo - p[:, 0]).unsqueeze(1)).sum(-1)  # (B, 2, F)
    ftable = torch.cat([mat.permute(0, 2, 1, 3).reshape(b, n_faces, 4),
                        w_origin.transpose(1, 2), iz[:, 0].unsqueeze(-1),
                        (iz[:, 1:] - iz[:, :1]).transpose(1, 2)], -1).reshape(-1, 9)
    lo_i = lo.long()
    batch = torch.arange(b, device=vertices.device).unsqueeze(1) * (hs * ws)
    first_pixel = lo_i[..., 1] * ws + lo_i[..., 0] + batch
    starts = torch.cumsum(counts, 0) - counts
    itable = torch.stack([size[..., 0].long().reshape(-1), first_pixel.reshape(-1), starts], -1)

    # Enumerate the (face, sample) pairs of every bounding box: the k-th pair of a face is
    # (row, col) = divmod(k, box width).
    face_ids = torch.repeat_interleave(counts)
    ci = itable.index_select(0, face_ids)
    k = torch.arange(face_ids.shape[0], device=vertices.device) - ci[:, 2]
    row = torch.div(k, ci[:, 0], rounding_mode="floor")
    pix = ci[:, 1] + k + row * (ws - ci[:, 0])
    c = ftable.index_select(0, face_ids)
    row_f = row.to(c.dtype).unsqueeze(1)
    col_f = (k - row * ci[:, 0]).to(c.dtype).unsqueeze(1)
    w = torch.addcmul(torch.addcmul(c[:, 4:6], c[:, 0:4:2], col_f), c[:, 1:4:2], row_f)
    inside = (w.amin(-1) >= -_INSIDE_EPS) & (w.sum(-1) <= 1 + _INSIDE_EPS)
    inv_depth = c[:, 6] + (w * c[:, 7:9]).sum(-1)
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


class _PlaneDepth(torch.autograd.Function):
    """Depth where each sample's ray meets the plane of its face, with a hand-written
    backward (a few large operations instead of autograd's many).

    corners: (3, F', 3) the corners v0, v1, v2 of every face (F' = B * F);
    face: (B * P,) the face of each sample; covered: (B, P) bool; rays: (P, 3).
    With n = (v1 - v0) x (v2 - v0) and h = n . v0 = det(v0, v1, v2), z = h / (n . r).
    dz/dv_i = (c_i - z (a_i x r)) / (n . r), with c = (v1 x v2, v2 x v0, v0 x v1) and
    a = (v1 - v2, v2 - v0, v0 - v1); summed per face, the ray enters only through
    sum(g / (n . r)) and sum(g z / (n . r) r).
    """

    @staticmethod
    def forward(ctx, corners, face, rays, covered):
        v0, v1, v2 = corners.unbind(0)
        normal = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
        plane = torch.cat([normal, (normal * v0).sum(-1, keepdim=True)], -1)
        seen = plane.index_select(0, face).view(*covered.shape, 4)
        n_dot_r = torch.where(covered, (seen[..., :3] * rays).sum(-1), 1.0)
        z = seen[..., 3] / n_dot_r
        ctx.save_for_backward(corners, face, rays, n_dot_r, z)
        return z

    @staticmethod
    def backward(ctx, grad_z):
        corners, face, rays, n_dot_r, z = ctx.saved_tensors
        s = grad_z / n_dot_r
        per_sample = torch.cat([s.unsqueeze(-1), (s * z).unsqueeze(-1) * rays], -1)
        per_face = corners.new_zeros(corners.shape[1], 4)
        per_face.index_add_(0, face, per_sample.reshape(-1, 4))
        nxt, nxt2 = corners.roll(-1, 0), corners.roll(-2, 0)  # (v1, v2, v0), (v2, v0, v1)
        grad = (torch.linalg.cross(nxt, nxt2, dim=-1) * per_face[:, :1]
                - torch.linalg.cross(nxt - nxt2, per_face[:, 1:].expand_as(corners), dim=-1))
        return grad, None, None, None


def rasterize_depth(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                    fov_deg: float = 10.0, supersample: int = 1, sample_offset: float = 0.0,
                    background_depth: float = 100.0) -> torch.Tensor:
    """Depth (z) of the nearest surface at every sample, differentiable w.r.t. vertices.

    vertices: (B, N, 3) camera-space points; faces: (F, 3) vertex ids.
    Returns depth: (B, H * s, W * s), background_depth where nothing is hit.
    """
    b, n, _ = vertices.shape
    hs, ws = height * supersample, width * supersample
    with torch.no_grad():
        ids = _visible_faces(vertices, faces, height, width, fov_deg, supersample,
                             sample_offset).view(b, hs * ws)
        covered = ids >= 0
    rays = _sample_rays(height, width, float(fov_deg), supersample, float(sample_offset),
                        vertices.dtype, vertices.device)
    # Corners ordered (corner, batch, face): (3, B * F, 3). The depth is exact and
    # perspective-correct: the ray X = z * r meets the plane n . X = n . v0.
    corner_major = (faces.t().unsqueeze(1)
                    + torch.arange(b, device=faces.device).view(1, b, 1) * n).reshape(-1)
    corners = vertices.reshape(b * n, 3).index_select(0, corner_major).view(3, -1, 3)
    z = _PlaneDepth.apply(corners, ids.clamp(min=0).reshape(-1), rays, covered)
    return torch.where(covered, z, background_depth).view(b, hs, ws)
