"""3D-aware manipulation: rotation and relighting sequences of a reconstruction.

Each sequence is made twice, as in the paper's figures: rendered from the textured mesh
(``render_mesh``, background white) and re-projected through the GAN (the canonical
texture warped into the view, then projected onto the GAN manifold by the latent encoder
and the generator), which fills in what the mesh cannot show. Without GAN samples
(``use_gan_samples`` off) the GAN never runs and the second row is the plain reprojection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..render import render_mesh
from . import factors
from .steps import Context, Target

WIDE_CATEGORIES = ("car", "church", "horse")  # scenes rotated less far
RELIGHT_AMBIENT_DROP = 0.6
GAN_BATCH = 10


@dataclass(frozen=True)
class SequenceSpec:
    """Frames of the manipulation sequences; the defaults are the release's sweeps: yaw up
    to 70 deg (45 for wide scenes) in 9 frames, pitch up to 20 deg in 5, relighting over
    five horizontal and two vertical light positions at two strengths."""

    n_yaw: int = 9
    n_pitch: int = 5
    max_pitch_deg: float = 20.0
    relight_x: tuple[float, ...] = (-1.5, -0.7, 0.0, 0.7, 1.5)
    relight_y: tuple[float, ...] = (0.0, 0.6)
    relight_strength: tuple[float, ...] = (0.3, 0.6)


DEFAULT_SPEC = SequenceSpec()


def rotation_views(category: str, spec: SequenceSpec = DEFAULT_SPEC) -> torch.Tensor:
    """Physical views (n_yaw + n_pitch, 6): a yaw sweep, then a pitch sweep."""
    max_yaw = 45.0 if category in WIDE_CATEGORIES else 70.0
    n_yaw, n_pitch, max_pitch_deg = spec.n_yaw, spec.n_pitch, spec.max_pitch_deg
    yaw = torch.linspace(-math.radians(max_yaw), math.radians(max_yaw), n_yaw)
    pitch = torch.linspace(-math.radians(max_pitch_deg), math.radians(max_pitch_deg), n_pitch)
    views = torch.zeros(n_yaw + n_pitch, 6)
    views[:n_yaw, 1] = yaw
    views[n_yaw:, 0] = pitch
    return views


def relight_shadings(normals: torch.Tensor, light: factors.Light,
                     spec: SequenceSpec = DEFAULT_SPEC) -> torch.Tensor:
    """Shadings (T, 1, H, W) of normals (1, H, W, 3) under the relighting sweep: the light
    moves over (x, y) positions, ambient lowered and diffuse raised by each strength."""
    out = []
    for strength in spec.relight_strength:
        for y in spec.relight_y:
            for x in spec.relight_x:
                direction = factors.light_direction(normals.new_tensor([[x, y]]))
                lambert = factors.diffuse_term(normals, direction)
                out.append(light.ambient.view(1, 1, 1, 1) - RELIGHT_AMBIENT_DROP * strength
                           + (light.diffuse.view(1, 1, 1, 1) + strength) * lambert)
    return torch.cat(out)


@torch.no_grad()
def through_gan(ctx: Context, target: Target, images: torch.Tensor) -> torch.Tensor:
    """Images (T, 3, S, S) projected onto the GAN manifold, in batches."""
    return torch.cat([ctx.project(target, images[i:i + GAN_BATCH])[0]
                      for i in range(0, images.shape[0], GAN_BATCH)])


@torch.no_grad()
def make_sequences(ctx: Context, target: Target, depth: torch.Tensor, albedo: torch.Tensor,
                   normals: torch.Tensor, light: factors.Light, shading: torch.Tensor,
                   view: torch.Tensor, spec: SequenceSpec = DEFAULT_SPEC,
                   ) -> dict[str, torch.Tensor]:
    """Rotation (canonical frame) and relighting (input view) sequences.

    depth (1, S, S), albedo (1, 3, S, S), normals (1, S, S, 3), shading (1, 1, S, S),
    view (1, 6). Returns frames (T, 3, S, S): rotation_mesh, rotation_gan, relight_mesh,
    relight_gan.
    """
    cfg = ctx.cfg
    kw = {"fov_deg": cfg.fov, "rot_center_depth": cfg.rot_center_depth,
          "conventions": cfg.conventions}
    texture = factors.canonical_image(albedo, shading)
    views = rotation_views(cfg.category, spec).to(depth)
    t = views.shape[0]
    rotation_mesh = render_mesh(depth.expand(t, -1, -1), texture.expand(t, -1, -1, -1),
                                views, background=1.0, **kw)
    rotated, _ = ctx.render(depth.expand(t, -1, -1), texture.expand(t, -1, -1, -1), views)

    relit = factors.canonical_image(albedo, relight_shadings(normals, light, spec))
    r = relit.shape[0]
    relight_mesh = render_mesh(depth.expand(r, -1, -1), relit, view.expand(r, -1),
                               background=1.0, **kw).clamp(-1, 1)
    relit_view, _ = ctx.render(depth.expand(r, -1, -1), relit, view.expand(r, -1))
    if not cfg.use_gan_samples:
        return {"rotation_mesh": rotation_mesh.clamp(-1, 1), "rotation_gan": rotated,
                "relight_mesh": relight_mesh, "relight_gan": relit_view}
    return {"rotation_mesh": rotation_mesh.clamp(-1, 1),
            "rotation_gan": through_gan(ctx, target, rotated),
            "relight_mesh": relight_mesh,
            "relight_gan": through_gan(ctx, target, relit_view)}
