"""Re-projection of a canonical depth map and texture into other views.

Two conventions decide where the rasteriser samples the warped grid mesh:

- "clean" (default): output pixel (r, c) samples image point (c, r), the very point its
  depth is back-projected from afterwards, one sample per pixel; at the identity view the
  warp is exact everywhere, including the last row and column.
- "release": neural_renderer as used by the authors' release: two-sided faces,
  perspective-correct depth, 2x supersampling averaged over 2x2 samples, with output pixel
  (r, c) covering image points (c + 0.25 | c + 0.75, r + 0.25 | r + 0.75), i.e. centred on
  (c + 0.5, r + 0.5), half a pixel off the grid the mesh was built on (so at the identity
  view the last row and column are background). A pixel with any background sample averages
  to more than the clamp and is invalid.

Both: the mesh of the release (vertex (r, c) at image point (c, r), each cell split along
its top-left/bottom-right diagonal), two-sided faces, exact perspective-correct depth;
background depth 100 (neural_renderer's default far, which the release's render_depth
uses), then clamp to [0.8, 1.2] (the depth range 0.9-1.1 plus half of it as margin); valid
mask = depth < 1.2; back-projection of output pixel (r, c) from the point (c, r), inverse
view transform, texture sampling by bilinear grid_sample(align_corners=True, zero padding)
(the release's PyTorch 1.1/1.2 behaved as align_corners=True, matching its (W - 1)
normalisation). Not reproduced: neural_renderer clips samples nearer than 0.1 one by one;
here a face with a vertex nearer than 0.1 is skipped whole (never the case for depths
near 1); and which of two faces at exactly equal depth wins (there they agree anyway).
"""

import torch
import torch.nn.functional as F

from .camera import depth_to_points, inverse_warp_points, points_to_grid, warp_points
from .rasterize import grid_faces, rasterize_depth

CONVENTIONS = ("clean", "release")
BACKGROUND_DEPTH = 100.0
DEPTH_CLAMP = (0.8, 1.2)
_SAMPLING = {"clean": (1, 0.0), "release": (2, 0.5)}  # (supersample, sample_offset)


def _sampling(conventions: str) -> tuple[int, float]:
    if conventions not in _SAMPLING:
        raise ValueError(f"conventions must be one of {CONVENTIONS}, got {conventions!r}")
    return _SAMPLING[conventions]


def warp_canon_depth(depth: torch.Tensor, view: torch.Tensor, fov_deg: float = 10.0,
                     rot_center_depth: float = 1.0, conventions: str = "clean",
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth seen from `view` of the grid mesh of a canonical depth map.

    depth: (B, H, W) canonical depth; view: (B, 6) physical (rx, ry, rz, tx, ty, tz).
    Returns view_depth: (B, H, W) clamped to [0.8, 1.2] (background -> 1.2) and
    mask: (B, H, W) float, 1 where view_depth < 1.2. Differentiable w.r.t. depth and view.
    """
    supersample, offset = _sampling(conventions)
    b, h, w = depth.shape
    vertices = warp_points(depth_to_points(depth, fov_deg).reshape(b, h * w, 3), view,
                           rot_center_depth)
    faces = grid_faces(h, w, device=depth.device)
    view_depth = rasterize_depth(vertices, faces, h, w, fov_deg, supersample, offset,
                                    BACKGROUND_DEPTH)
    if supersample > 1:
        view_depth = view_depth.view(b, h, supersample, w, supersample).mean((2, 4))
    view_depth = view_depth.clamp(*DEPTH_CLAMP)
    return view_depth, (view_depth < DEPTH_CLAMP[1]).to(depth.dtype)


def canon_sampling_grid(view_depth: torch.Tensor, view: torch.Tensor, fov_deg: float = 10.0,
                        rot_center_depth: float = 1.0) -> torch.Tensor:
    """Where each pixel of a view lands in the canonical image: view_depth (B, H, W),
    view (B, 6) -> grid (B, H, W, 2) for grid_sample(align_corners=True)."""
    b, h, w = view_depth.shape
    points = depth_to_points(view_depth, fov_deg).reshape(b, h * w, 3)
    canon = inverse_warp_points(points, view, rot_center_depth).reshape(b, h, w, 3)
    return points_to_grid(canon, fov_deg)


def reproject(canon_depth: torch.Tensor, canon_image: torch.Tensor, view: torch.Tensor,
              fov_deg: float = 10.0, rot_center_depth: float = 1.0, conventions: str = "clean",
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The canonical texture seen from `view`.

    canon_depth: (B, H, W); canon_image: (B, C, H, W); view: (B, 6) physical.
    Returns image: (B, C, H, W) (NOT multiplied by the mask: invalid pixels hold whatever
    the background's grid samples), mask: (B, 1, H, W) float, view_depth: (B, H, W).
    Differentiable w.r.t. canon_depth, canon_image and view.
    """
    view_depth, mask = warp_canon_depth(canon_depth, view, fov_deg, rot_center_depth,
                                        conventions)
    grid = canon_sampling_grid(view_depth, view, fov_deg, rot_center_depth)
    image = F.grid_sample(canon_image, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=True)
    return image, mask.unsqueeze(1), view_depth


def reproject_views(canon_depth: torch.Tensor, canon_image: torch.Tensor, views: torch.Tensor,
                    fov_deg: float = 10.0, rot_center_depth: float = 1.0,
                    conventions: str = "clean",
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`reproject` of ONE shape under a batch of views.

    canon_depth: (H, W) or (1, H, W); canon_image: (C, H, W) or (1, C, H, W);
    views: (N, 6). Returns image (N, C, H, W), mask (N, 1, H, W), view_depth (N, H, W).
    """
    n = views.shape[0]
    depth = canon_depth.reshape(1, *canon_depth.shape[-2:]).expand(n, -1, -1)
    image = canon_image.reshape(1, *canon_image.shape[-3:]).expand(n, -1, -1, -1)
    return reproject(depth, image, views, fov_deg, rot_center_depth, conventions)
