"""Procedural scenes: a canonical head seen from a random view under a random light.

Every sample is a pure function of (seed, index): its random numbers come from
``numpy.random.default_rng([seed, index])``, so sample i is the same whatever the batch or
the number of samples, and a test split is just another seed.

Views and lights are drawn uniformly in boxes of the release's RAW network parameters
(docs/method.md section 1), so the priors written beside the data are the exact mean and
covariance of the distributions the data came from:

- view raw (rx, ry, rz, tx, ty, tz) = (pitch, yaw, roll) / (60 deg) and (tx, ty) / 0.1;
  tz is 0 (the release's z translation range is 0). Physical ranges: pitch within
  +-15 deg, yaw within +-30 deg, roll within +-3 deg, tx and ty within +-max_translation
  (default 0.0075, about 2.7 px at 64 px).
- light raw (l0, l1, lx, ly): ambient = l0 / 2 + 0.5 in [0.2, 0.5], diffuse = l1 / 2 + 0.5
  in [0.45, 0.75], direction = normalize(lx, ly, 1) with lx in [-0.8, 0.8] and ly in
  [-0.2, 0.7] (with the release's normals ly > 0 lights the upper half of the image, so
  light comes mostly from above, and lx > 0 the left half). The light is in the head's own
  frame, where the head is shaded; in the view's frame its direction is R l, R the view's
  rotation (``heldout.input_light``). Family v2 (``family="v2"``) lights every face with
  one strength, mostly directional: ambient in [0.14, 0.16], diffuse in [0.84, 0.86], the
  same directions as v1.

Rendering follows the method's image formation exactly: the canonical texture is
albedo * shading (shading from the release's normals of the canonical depth); it is
re-projected into the view with the project's renderer together with the anti-aliased head
mask, which then composites it on a plain background colour (after a [1, 2, 1] tent filter
that anti-aliases the occluding contours the z-buffer cuts at whole pixels). The
ground-truth depth is the renderer's view depth where the re-projected head mask is at
least 1/2, and the far depth 1.1 elsewhere (background, and pixels the view leaves
uncovered).

Near the silhouette a depth map is steep, so the side of the head that a view turns towards
the camera shows those rim pixels stretched (a soft band, the price of 2.5D geometry, the
same that GAN2Shape's own depth maps pay); the yaw range is kept to +-30 deg for that reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..render import lambertian_shading, normals_from_depth, reproject
from .heads import canonical_heads, head_params, head_ranges

FOV_DEG = 10.0
ROT_CENTER_DEPTH = 1.0
MIN_DEPTH, MAX_DEPTH = 0.9, 1.1
ROTATION_RANGE_RAD = math.radians(60.0)  # release xyz_rotation_range
XY_TRANSLATION_RANGE = 0.1  # release xy_translation_range
# tz is always 0; its prior variance gets this floor so that the covariance stays positive
# definite (the release builds a MultivariateNormal from it).
TZ_PRIOR_VARIANCE = 1e-6

# Uniform boxes in raw network units.
ROTATION_RAW_RANGES: dict[str, tuple[float, float]] = {
    "rx": (-15.0 / 60.0, 15.0 / 60.0),  # pitch +-15 deg
    "ry": (-30.0 / 60.0, 30.0 / 60.0),  # yaw +-30 deg
    "rz": (-3.0 / 60.0, 3.0 / 60.0),  # roll +-3 deg
}
# Largest |tx|, |ty| (physical). 0.0075 (2.7 px at 64 px) keeps the heads near the centre
# while stopping the pixelwise average ground-truth depth from being an unrealistically
# strong baseline (over 50 test images its MAD is 15.3 deg at 0.004, 17.4 deg at 0.0075;
# the release's normals put a 5.5 deg floor under any MAD here).
DEFAULT_MAX_TRANSLATION = 0.0075
LIGHT_RAW_RANGES: dict[str, tuple[float, float]] = {
    "l0": (-0.6, 0.0),  # ambient 0.2 .. 0.5
    "l1": (-0.1, 0.5),  # diffuse 0.45 .. 0.75
    "lx": (-0.8, 0.8),
    "ly": (-0.2, 0.7),
}
# Plain background: a grey level and a cool/warm tint.
BACKGROUND_RANGES: dict[str, tuple[float, float]] = {"grey": (0.55, 0.8), "tint": (-1.0, 1.0)}
BACKGROUND_TINT = (-0.04, 0.0, 0.04)
# v2: one light strength for every face, mostly directional (ambient 0.15, diffuse 0.85,
# +-0.01), so the shading shows the relief; the same directions; a grey background without
# tint (one nuisance factor fewer). The views are v1's. A strength that varies from face to
# face lets a projection flatten a relit sample's shading by trading diffuse for ambient:
# on validation faces 0-5 the family-fit ceiling rose from +0.25 (ambient 0.1 .. 0.3,
# diffuse 0.6 .. 0.9) to +0.32 with the strength fixed (docs/families.md).
LIGHT_RAW_RANGES_V2: dict[str, tuple[float, float]] = {
    "l0": (-0.72, -0.68),  # ambient 0.14 .. 0.16
    "l1": (0.68, 0.72),  # diffuse 0.84 .. 0.86
    "lx": (-0.8, 0.8),
    "ly": (-0.2, 0.7),
}
BACKGROUND_RANGES_V2: dict[str, tuple[float, float]] = {"grey": (0.55, 0.8)}

# Layout of each sample's uniform numbers; spare slots keep it stable if parameters are added.
N_UNIFORMS = 64
_VIEW = slice(32, 32 + len(ROTATION_RAW_RANGES) + 2)
_LIGHT = slice(40, 40 + len(LIGHT_RAW_RANGES))

# The versions of the family (``make-data --family``; heads.py says what v2 changes). v1
# is the default, kept so that old tables stay reproducible.
FAMILIES = ("v1", "v2")
_LIGHTS = {"v1": LIGHT_RAW_RANGES, "v2": LIGHT_RAW_RANGES_V2}
_BACKGROUNDS = {"v1": BACKGROUND_RANGES, "v2": BACKGROUND_RANGES_V2}


def check_family(family: str) -> str:
    """The family's name, or ValueError for an unknown one."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")
    return family


def light_raw_ranges(family: str = "v1") -> dict[str, tuple[float, float]]:
    """The uniform boxes of the family's raw light (l0, l1, lx, ly)."""
    return _LIGHTS[check_family(family)]


def background_ranges(family: str = "v1") -> dict[str, tuple[float, float]]:
    """The uniform boxes of the family's background (grey [, tint])."""
    return _BACKGROUNDS[check_family(family)]


def uniform_slots(family: str, parts: Sequence[str]) -> list[slice]:
    """The slices of a sample's uniforms (N_UNIFORMS) that hold the named parts of a scene
    (any of 'head', 'view', 'light', 'background') in the family's layout."""
    layout = {"head": slice(0, len(head_ranges(family))), "view": _VIEW, "light": _LIGHT,
              "background": slice(48, 48 + len(background_ranges(family)))}
    return [layout[name] for name in parts]


def sample_uniforms(seed: int, indices: Sequence[int]) -> torch.Tensor:
    """Uniforms (B, N_UNIFORMS) float64 in [0, 1), one reproducible stream per (seed, index)."""
    rows = [np.random.default_rng([seed, int(i)]).random(N_UNIFORMS) for i in indices]
    return torch.from_numpy(np.array(rows, dtype=np.float64).reshape(len(rows), N_UNIFORMS))


def head_parameters(u: torch.Tensor, family: str = "v1") -> dict[str, torch.Tensor]:
    """Named head parameters (B,) of the family from uniforms (B, N_UNIFORMS)."""
    (head,) = uniform_slots(family, ["head"])
    return head_params(u[:, head].float(), family)


def _boxes(u: torch.Tensor, ranges: dict[str, tuple[float, float]]) -> torch.Tensor:
    lo = torch.tensor([r[0] for r in ranges.values()], dtype=u.dtype)
    hi = torch.tensor([r[1] for r in ranges.values()], dtype=u.dtype)
    return lo + (hi - lo) * u


def _box_moments(ranges: dict[str, tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean (D,) and variances (D,) of independent uniforms on the boxes."""
    lo = torch.tensor([r[0] for r in ranges.values()], dtype=torch.float64)
    hi = torch.tensor([r[1] for r in ranges.values()], dtype=torch.float64)
    return (lo + hi) / 2, (hi - lo) ** 2 / 12


def view_raw_ranges(max_translation: float = DEFAULT_MAX_TRANSLATION
                    ) -> dict[str, tuple[float, float]]:
    """The uniform boxes of the raw view (rx, ry, rz, tx, ty); tz is always 0."""
    t = round(max_translation / XY_TRANSLATION_RANGE, 12)
    return {**ROTATION_RAW_RANGES, "tx": (-t, t), "ty": (-t, t)}


def views_raw(u: torch.Tensor, max_translation: float = DEFAULT_MAX_TRANSLATION) -> torch.Tensor:
    """Raw views (B, 6) (release network units, tz = 0) from uniforms (B, N_UNIFORMS)."""
    raw = _boxes(u[:, _VIEW], view_raw_ranges(max_translation))
    return torch.cat([raw, torch.zeros_like(raw[:, :1])], 1)


def view_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Raw (B, 6) -> physical (B, 6) = (rx, ry, rz in radians, tx, ty, tz); tz range is 0."""
    scale = raw.new_tensor([ROTATION_RANGE_RAD] * 3 + [XY_TRANSLATION_RANGE] * 2 + [0.0])
    return raw * scale


def lights_raw(u: torch.Tensor, family: str = "v1") -> torch.Tensor:
    """Raw lights (B, 4) = (l0, l1, lx, ly) of the family from uniforms (B, N_UNIFORMS)."""
    return _boxes(u[:, _LIGHT], light_raw_ranges(family))


def light_from_raw(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw (B, 4) -> ambient (B,), diffuse (B,), unit direction (B, 3), as the release maps."""
    direction = torch.cat([raw[:, 2:4], torch.ones_like(raw[:, :1])], 1)
    return raw[:, 0] / 2 + 0.5, raw[:, 1] / 2 + 0.5, direction / direction.norm(dim=1, keepdim=True)


def backgrounds(u: torch.Tensor, family: str = "v1") -> torch.Tensor:
    """Plain background colours (B, 3) in [0, 1] of the family from uniforms (B, N_UNIFORMS)
    (no tint where the family has none)."""
    (slot,) = uniform_slots(family, ["background"])
    values = _boxes(u[:, slot], background_ranges(family))
    tint = values[:, 1:2] if values.shape[1] > 1 else torch.zeros_like(values[:, :1])
    return values[:, :1] + tint * torch.tensor(BACKGROUND_TINT, dtype=u.dtype)


def view_prior(max_translation: float = DEFAULT_MAX_TRANSLATION,
               family: str = "v1") -> dict[str, torch.Tensor]:
    """{'mean' (6,), 'cov' (6, 6)}: exact moments of the family's raw view distribution
    (the same for v1 and v2)."""
    check_family(family)
    mean, var = _box_moments(view_raw_ranges(max_translation))
    mean = torch.cat([mean, mean.new_zeros(1)])
    var = torch.cat([var, var.new_tensor([TZ_PRIOR_VARIANCE])])
    return {"mean": mean.float(), "cov": torch.diag(var).float()}


def light_prior(family: str = "v1") -> dict[str, torch.Tensor]:
    """{'mean' (4,), 'cov' (4, 4)}: exact moments of the family's raw light distribution."""
    mean, var = _box_moments(light_raw_ranges(family))
    return {"mean": mean.float(), "cov": torch.diag(var).float()}


def _tent_blur(x: torch.Tensor) -> torch.Tensor:
    """Separable [1, 2, 1] / 4 filter with edge replication: x (B, 1, H, W) -> same."""
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = (x[..., :-2] + 2 * x[..., 1:-1] + x[..., 2:]) / 4
    return (x[..., :-2, :] + 2 * x[..., 1:-1, :] + x[..., 2:, :]) / 4


def render_scenes(seed: int, indices: Sequence[int], size: int = 64,
                  max_translation: float = DEFAULT_MAX_TRANSLATION,
                  family: str = "v1") -> dict[str, torch.Tensor]:
    """Render samples ``indices`` of the family version ``family`` drawn with ``seed`` at
    ``size`` px, as one batch.

    See :func:`render_batch` for the returned tensors.
    """
    u = sample_uniforms(seed, indices)
    return render_batch(u, views_raw(u, max_translation), lights_raw(u, family), size,
                        family=family)


def render_batch(u: torch.Tensor, view_raw: torch.Tensor, light_raw: torch.Tensor,
                 size: int = 64, features: bool = True, family: str = "v1"
                 ) -> dict[str, torch.Tensor]:
    """Render the family's heads from uniforms u (B, N_UNIFORMS) under raw views (B, 6) and
    lights (B, 4) (differentiable in all three).

    ``features=False`` renders the bare ellipsoid heads (analytic tests).
    Returns a dict of tensors: image (B, 3, S, S) in [-1, 1]; depth (B, S, S) ground-truth
    metric depth in the view (far 1.1 off the head); head_mask (B, S, S) in [0, 1];
    view (B, 6) physical; view_raw (B, 6); light_raw (B, 4); background (B, 3) in [0, 1];
    canon_depth (B, S, S); canon_albedo (B, 3, S, S) in [0, 1].
    """
    (head,) = uniform_slots(family, ["head"])
    depth, albedo, mask = canonical_heads(u[:, head].float(), size, FOV_DEG, features, family)
    view = view_from_raw(view_raw).float()
    ambient, diffuse, direction = light_from_raw(light_raw.float())
    shading = lambertian_shading(normals_from_depth(depth, FOV_DEG), direction, ambient, diffuse)
    background = backgrounds(u, family).float()[:, :, None, None]
    texture = torch.cat([albedo * shading * 2 - 1, mask[:, None]], 1)
    seen, valid, view_depth = reproject(depth, texture, view, FOV_DEG, ROT_CENTER_DEPTH)
    head = seen[:, 3:4] * valid
    # The z-buffer cuts occluding contours at whole pixels; a small tent filter on the
    # coverage anti-aliases them (edges the canonical mask already smoothed barely change).
    alpha = _tent_blur(head)
    image = alpha * seen[:, :3] + (1 - alpha) * (background * 2 - 1)
    gt_depth = torch.where(head[:, 0] >= 0.5, view_depth, torch.full_like(view_depth, MAX_DEPTH))
    return {
        "image": image.clamp(-1, 1),
        "depth": gt_depth.clamp(MIN_DEPTH, MAX_DEPTH),
        "head_mask": head[:, 0].clamp(0, 1),
        "view": view,
        "view_raw": view_raw.float(),
        "light_raw": light_raw.float(),
        "background": background[:, :, 0, 0],
        "canon_depth": depth,
        "canon_albedo": albedo,
    }
