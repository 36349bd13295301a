"""Procedural face-like heads in the canonical (frontal) frame: exact depth and albedo.

A head is an ellipsoid seen through the project's pinhole camera (fov 10 deg), with smooth
bumps and dents (nose, brow ridge, eye sockets, cheeks, lips, chin) added to its depth along
the pixel rays, and an albedo (skin, hair, eyes, brows, lips) painted on it. Everything is a
function of the pixel's normalised face coordinates (s, t): s = 0 on the symmetry axis,
|s| = 1 and |t| = 1 near the silhouette, t growing downwards (image rows). Every feature is
an even function of s sampled on a grid symmetric about the centre column, so each head is
exactly left-right symmetric.

World units: the frame's half-width at depth 1 is tan(5 deg) = 0.0875, the project's depths
lie in [0.9, 1.1], and views rotate about (0, 0, 1). A head's silhouette sits at depth
``centre_depth`` (about 1.01) and its front at about 0.93, so the head fills most of the
frame and turns about a point near its own centre. Outside the silhouette the canonical
depth is the plane ``z = centre_depth`` (the background), which the ellipsoid meets at its
rim, so the depth map has no deep cliff that a rotated view would expose.

Per-identity parameters come from uniform numbers in [0, 1) through the ranges of
:data:`HEAD_RANGES`; :func:`head_params` maps them, :func:`canonical_heads` draws a batch.

Two versions of the family share this code (``family``, ``make-data --family``):

- v1 (:data:`HEAD_RANGES`), the family the embedded GAN was trained on. Its relief is
  about half of a real face's (the nose tip 0.011-0.017 in front of the ellipsoid on a
  0.11-0.13 wide head) and its albedo has smooth parts (a blush) that can paint shading.
- v2 (:data:`HEAD_RANGES_V2`): the relief in real faces' proportions and an albedo made of
  flat regions with soft one-pixel edges (skin, hair, brows, eyes, lips), whose tones vary
  from face to face but which cannot paint a smooth shading gradient; four nuisance
  factors of v1 (warmth, blush, iris tone, brow darkness) are fixed
  (:data:`HEAD_CONSTANTS_V2`). Proportions, from the adult norms of Farkas (Anthropometry
  of the Head and Face, 1994): head width eu-eu about 150 mm, face width zy-zy about
  135 mm, nasal tip protrusion sn-prn about 20 mm, with the subnasale itself about 10 mm in
  front of the cheeks beside the nose, so the tip stands about 30 mm (0.2-0.25 of the face
  width) in front of the cheeks; the eyes lie about 10 mm deep between the brow ridge and
  the cheek (0.07 of the width). Here the head is 0.112-0.128 wide and the ellipsoid
  already sets the cheeks (s = 0.4) about 0.007 behind its apex, so the nose adds
  0.018-0.024 (tip 0.025-0.031 in front of the cheeks, 0.2-0.25 of the width) and the
  sockets 0.007-0.011.
"""

from __future__ import annotations

import math

import torch

# name -> (low, high) of a uniform draw. Lengths in world units, face coordinates in (s, t).
HEAD_RANGES: dict[str, tuple[float, float]] = {
    # ellipsoid
    "half_width": (0.056, 0.064),  # x semi-axis
    "aspect": (1.15, 1.28),  # y semi-axis / x semi-axis
    "centre_y": (-0.002, 0.004),  # vertical offset of the ellipsoid centre (down is +)
    "depth_axis": (0.075, 0.085),  # z semi-axis
    "centre_depth": (1.005, 1.02),  # z of the ellipsoid centre = background plane depth
    # relief (depth offsets, world units; negative = towards the camera)
    "nose_height": (0.011, 0.017),
    "nose_length": (0.28, 0.38),  # tip below the eyes, in t
    "nose_width": (0.07, 0.11),  # lateral Gaussian width, in s
    "eye_t": (-0.08, 0.02),
    "eye_s": (0.32, 0.40),
    "socket_depth": (0.004, 0.009),
    "brow_height": (0.003, 0.007),
    "cheek_height": (0.002, 0.005),
    "mouth_t": (0.52, 0.62),
    "lip_height": (0.002, 0.004),
    "chin_height": (0.003, 0.007),
    # albedo
    "skin_tone": (0.0, 1.0),  # light .. dark
    "skin_warmth": (-1.0, 1.0),
    "blush": (0.0, 1.0),
    "hair_tone": (0.0, 1.0),  # black .. brown .. blond
    "hairline": (-0.62, -0.38),  # t of the hairline on the axis
    "hair_curve": (0.55, 1.1),  # how fast the hairline drops at the sides
    "iris_tone": (0.0, 1.0),  # brown .. blue-grey
    "lip_colour": (0.0, 1.0),
    "brow_darkness": (0.0, 1.0),
}

HEAD_PARAM_NAMES: tuple[str, ...] = tuple(HEAD_RANGES)

# v2: the same geometry with the relief in real proportions (module docstring), and the
# albedo's smooth or minor factors fixed.
HEAD_RANGES_V2: dict[str, tuple[float, float]] = {
    **{k: HEAD_RANGES[k] for k in ("half_width", "aspect", "centre_y", "depth_axis",
                                   "centre_depth")},
    "nose_height": (0.018, 0.024),
    "nose_length": (0.28, 0.38),
    "nose_width": (0.08, 0.11),
    "eye_t": (-0.08, 0.02),
    "eye_s": (0.32, 0.40),
    "socket_depth": (0.007, 0.011),
    "brow_height": (0.004, 0.008),
    "cheek_height": (0.002, 0.005),
    "mouth_t": (0.52, 0.62),
    "lip_height": (0.003, 0.005),
    "chin_height": (0.004, 0.008),
    "skin_tone": (0.0, 1.0),
    "hair_tone": (0.0, 1.0),
    "hairline": (-0.62, -0.38),
    "hair_curve": (0.55, 1.1),
    "lip_colour": (0.0, 1.0),
}
HEAD_CONSTANTS_V2: dict[str, float] = {
    "skin_warmth": 0.0, "blush": 0.0, "iris_tone": 0.0, "brow_darkness": 0.5}
_FAMILY_HEADS = {"v1": (HEAD_RANGES, {}), "v2": (HEAD_RANGES_V2, HEAD_CONSTANTS_V2)}


def head_ranges(family: str = "v1") -> dict[str, tuple[float, float]]:
    """The uniform ranges of the family's per-head parameters (name -> (low, high))."""
    if family not in _FAMILY_HEADS:
        raise ValueError(f"unknown family {family!r} (choose from {', '.join(_FAMILY_HEADS)})")
    return _FAMILY_HEADS[family][0]


def head_constants(family: str = "v1") -> dict[str, float]:
    """The family's fixed per-head parameters (name -> value; none in v1)."""
    head_ranges(family)
    return dict(_FAMILY_HEADS[family][1])


def head_params(uniforms: torch.Tensor, family: str = "v1") -> dict[str, torch.Tensor]:
    """Map uniforms (B, len(head_ranges(family))) in [0, 1) to named per-head parameters
    (B,), the family's fixed ones included."""
    ranges = head_ranges(family)
    if uniforms.shape[-1] != len(ranges):
        raise ValueError(f"expected {len(ranges)} uniforms per head, got {uniforms.shape}")
    params = {name: lo + (hi - lo) * uniforms[:, k]
              for k, (name, (lo, hi)) in enumerate(ranges.items())}
    for name, value in head_constants(family).items():
        params[name] = torch.full_like(uniforms[:, 0], value)
    return params


def pixel_rays(size: int, fov_deg: float = 10.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ray coordinates of pixel columns and rows: (xn (S,), yn (S,)).

    Pixel (u, v) at depth d is the point d * (xn[u], yn[v], 1) (docs/method.md section 1).
    """
    focal = (size - 1) / 2 / math.tan(math.radians(fov_deg) / 2)
    coords = (torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2) / focal
    return coords, coords.clone()


def _gauss(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * (x / sigma) ** 2)


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)


def ellipsoid_depth(
    p: dict[str, torch.Tensor], size: int, fov_deg: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth of the head ellipsoid along each pixel ray, and the signed distance to its rim.

    Returns ``depth`` (B, S, S): the nearer ray/ellipsoid intersection, ``centre_depth``
    (the background plane) where the ray misses; ``rim_px`` (B, S, S): signed distance in
    pixels from the silhouette (positive inside), for anti-aliased masks.
    """
    xn, yn = pixel_rays(size, fov_deg, p["half_width"].device)
    x, y = xn.view(1, 1, -1), yn.view(1, -1, 1)
    a = p["half_width"].double().view(-1, 1, 1)
    b = a * p["aspect"].double().view(-1, 1, 1)
    c = p["depth_axis"].double().view(-1, 1, 1)
    yc = p["centre_y"].double().view(-1, 1, 1)
    z0 = p["centre_depth"].double().view(-1, 1, 1)
    # (d x / a)^2 + ((d y - yc) / b)^2 + ((d - z0) / c)^2 = 1, a quadratic in d.
    qa = (x / a) ** 2 + (y / b) ** 2 + 1 / c**2
    qb = -2 * (y * yc / b**2 + z0 / c**2)
    qc = (yc / b) ** 2 + (z0 / c) ** 2 - 1
    disc = qb**2 - 4 * qa * qc
    hit = disc > 0
    depth = torch.where(hit, (-qb - disc.clamp(min=0).sqrt()) / (2 * qa), z0)
    # Signed distance to the silhouette conic disc = 0, to first order: disc / |grad disc|
    # with the gradient taken in pixels (d/du = d/dxn / focal).
    focal = (size - 1) / 2 / math.tan(math.radians(fov_deg) / 2)
    ddisc_dx = -4 * qc * 2 * x / a**2
    ddisc_dy = 2 * qb * (-2 * yc / b**2) - 4 * qc * 2 * y / b**2
    grad_px = torch.sqrt(ddisc_dx**2 + ddisc_dy**2).clamp(min=1e-12) / focal
    rim_px = disc / grad_px
    return depth.float(), rim_px.float()


def face_coords(
    p: dict[str, torch.Tensor], size: int, fov_deg: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised face coordinates s, t (B, S, S) and the pixel size in s units (B, 1, 1)."""
    xn, yn = pixel_rays(size, fov_deg, p["half_width"].device)
    x, y = xn.float().view(1, 1, -1), yn.float().view(1, -1, 1)
    a = p["half_width"].view(-1, 1, 1)
    b = a * p["aspect"].view(-1, 1, 1)
    z0 = p["centre_depth"].view(-1, 1, 1)
    s = x * z0 / a
    t = (y * z0 - p["centre_y"].view(-1, 1, 1)) / b
    focal = (size - 1) / 2 / math.tan(math.radians(fov_deg) / 2)
    return s, t, z0 / (focal * a)


def relief(p: dict[str, torch.Tensor], s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Depth offsets of the facial features (B, S, S), even in s, zero near the rim."""
    v = {k: val.view(-1, 1, 1) for k, val in p.items()}
    eye_t, eye_s = v["eye_t"], v["eye_s"]
    # Nose: a ridge from the bridge to the tip that widens and rises towards the tip, then
    # falls off quickly below it; small alar bumps beside the tip.
    bridge, tip = eye_t - 0.05, eye_t + v["nose_length"]
    along = torch.where(
        t <= tip,
        _smoothstep((t - bridge) / (tip - bridge)) ** 1.3,
        _gauss(t - tip, 0.045),
    )
    nose = along * _gauss(s, v["nose_width"] * (0.6 + 0.4 * along))
    alae = (_gauss(s - 0.13, 0.06) + _gauss(s + 0.13, 0.06)) * _gauss(t - tip + 0.02, 0.04)
    offset = -v["nose_height"] * (nose + 0.35 * alae)
    # Eye sockets (dents), brow ridge, cheeks.
    eyes = _gauss(s - eye_s, 0.13) + _gauss(s + eye_s, 0.13)
    offset = offset + v["socket_depth"] * eyes * _gauss(t - eye_t, 0.09)
    offset = offset - v["brow_height"] * _gauss(s, 0.42) * _gauss(t - eye_t + 0.17, 0.06)
    cheeks = _gauss(s - 0.42, 0.15) + _gauss(s + 0.42, 0.15)
    offset = offset - v["cheek_height"] * cheeks * _gauss(t - eye_t - 0.3, 0.15)
    # Lips (upper and lower) and chin.
    mouth = v["mouth_t"]
    lips = _gauss(s, 0.17) * _gauss(t - mouth + 0.035, 0.03)
    lips = lips + _gauss(s, 0.15) * _gauss(t - mouth - 0.04, 0.03)
    offset = offset - v["lip_height"] * lips
    offset = offset - v["chin_height"] * _gauss(s, 0.2) * _gauss(t - 0.78, 0.1)
    # Fade everything out towards the silhouette so the rim stays the ellipsoid's.
    envelope = _smoothstep((1 - s**2 - t**2) / 0.35)
    return offset * envelope


def _lerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * w


def _palette(colours: list[tuple[float, float, float]], w: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear colour ramp through ``colours`` at w in [0, 1]: (B,) -> (B, 3, 1, 1)."""
    table = torch.tensor(colours, dtype=w.dtype, device=w.device)
    pos = w.clamp(0, 1) * (len(colours) - 1)
    lo = pos.floor().long().clamp(max=len(colours) - 2)
    frac = (pos - lo).unsqueeze(1)
    return _lerp(table[lo], table[lo + 1], frac).view(-1, 3, 1, 1)


def albedo(
    p: dict[str, torch.Tensor], s: torch.Tensor, t: torch.Tensor, pixel_s: torch.Tensor
) -> torch.Tensor:
    """Albedo (B, 3, S, S) in [0, 1]: skin, blush, hair, brows, eyes, lips; even in s."""
    v = {k: val.view(-1, 1, 1) for k, val in p.items()}
    edge = 0.6 * pixel_s  # soft edges about one pixel wide (anti-aliasing)

    def inside(signed: torch.Tensor) -> torch.Tensor:  # signed > 0 inside, in s units
        return torch.sigmoid(signed / edge).unsqueeze(1)

    def ellipse(cs, ct, rs, rt) -> torch.Tensor:  # centred at (+-cs, ct): even in s
        radius = torch.sqrt(((s.abs() - cs) / rs) ** 2 + ((t - ct) / rt) ** 2)
        return inside((1 - radius) * torch.minimum(torch.as_tensor(rs), torch.as_tensor(rt)))

    skin = _palette([(0.86, 0.70, 0.60), (0.70, 0.52, 0.40), (0.42, 0.28, 0.20)],
                    p["skin_tone"])
    warmth = torch.tensor([0.03, 0.0, -0.03], device=s.device).view(1, 3, 1, 1)
    colour = (skin * (1 + warmth * v["skin_warmth"].unsqueeze(1))).expand(-1, 3, *s.shape[1:])
    eye_t, eye_s, mouth = v["eye_t"], v["eye_s"], v["mouth_t"]
    # Blush on the cheeks.
    cheeks = (_gauss(s - 0.42, 0.16) + _gauss(s + 0.42, 0.16)) * _gauss(t - eye_t - 0.3, 0.12)
    red = torch.tensor([0.10, -0.04, -0.03], device=s.device).view(1, 3, 1, 1)
    colour = colour + red * (v["blush"] * cheeks).unsqueeze(1)
    # Lips.
    lip = skin * torch.tensor([0.95, 0.55, 0.55], device=s.device).view(1, 3, 1, 1)
    lip = _lerp(lip, torch.tensor([0.65, 0.22, 0.25], device=s.device).view(1, 3, 1, 1),
                0.6 * p["lip_colour"].view(-1, 1, 1, 1))
    colour = _lerp(colour, lip, ellipse(0.0, mouth, 0.21, 0.075))
    # Eyes: light sclera, coloured iris.
    sclera = torch.tensor([0.88, 0.86, 0.82], device=s.device).view(1, 3, 1, 1)
    iris = _palette([(0.22, 0.13, 0.07), (0.35, 0.25, 0.15), (0.30, 0.40, 0.50)],
                    p["iris_tone"])
    colour = _lerp(colour, sclera, ellipse(eye_s, eye_t, 0.13, 0.06))
    colour = _lerp(colour, iris, ellipse(eye_s, eye_t, 0.06, 0.06))
    # Hair: everything above a hairline that drops towards the sides, framing the face.
    hair = _palette([(0.07, 0.05, 0.04), (0.30, 0.19, 0.10), (0.72, 0.58, 0.34)],
                    p["hair_tone"])
    colour = _lerp(colour, hair, inside(v["hairline"] + v["hair_curve"] * s**2 - t))
    # Brows: arcs above the eyes in a darker hair colour.
    brow = hair * (1 - 0.5 * p["brow_darkness"].view(-1, 1, 1, 1))
    brow_t = eye_t - 0.16 + 0.25 * (s.abs() - eye_s) ** 2
    band = torch.minimum(0.035 - (t - brow_t).abs(), 0.2 - (s.abs() - eye_s).abs())
    colour = _lerp(colour, brow, inside(band))
    return colour.clamp(0, 1)


def canonical_heads(
    uniforms: torch.Tensor, size: int, fov_deg: float = 10.0, features: bool = True,
    family: str = "v1",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of the family's heads in the canonical frame.

    uniforms: (B, len(head_ranges(family))) in [0, 1). ``features=False`` gives the bare
    ellipsoids (for tests against the analytic ray/ellipsoid depth).
    Returns depth (B, S, S) metric, clamped to [0.9, 1.1]; albedo (B, 3, S, S) in [0, 1];
    mask (B, S, S) in [0, 1], the anti-aliased head silhouette.
    """
    p = head_params(uniforms, family)
    depth, rim_px = ellipsoid_depth(p, size, fov_deg)
    s, t, pixel_s = face_coords(p, size, fov_deg)
    if features:
        depth = depth + relief(p, s, t) * (rim_px > 0)
    mask = (rim_px + 0.5).clamp(0, 1)
    return depth.clamp(0.9, 1.1), albedo(p, s, t, pixel_s), mask
