"""Fit the procedural family's own numbers to images through the differentiable renderer.

The family-fit ceiling of ``benchmarks/projection.py --family-fit``: a "generator" that is
the exact family, whose projection of an image is the family member (head, light,
background; the view held fixed) that reproduces it best. The free numbers are a scene's
uniforms (``scenes.sample_uniforms``' layout, each in (0, 1) through a sigmoid, so heads and
lights stay inside the family's ranges), fitted by Adam to the whole-image L1, optionally
plus an anchor that holds the head near where its fit started: the counterpart of Step 2's
regulariser of the latent offset, which keeps a projection near the input's own code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import scenes

# Uniforms this close to 0 or 1 are pulled inside before the logit (finite start).
_EDGE = 1e-4
# The anchor of the family's projections of pseudo samples (fit_scenes' ``anchor``), chosen
# on v2's validation faces 0-7 (docs/families.md): 0 gave the ratio +0.33, 0.0005 +0.43,
# 0.003 +0.49.
PROJECTION_ANCHOR = 0.003


@dataclass
class FamilyFit:
    """The best family member found for each image: uniforms (B, N_UNIFORMS) in (0, 1),
    images (B, 3, S, S) in [-1, 1] rendered from them, loss (B,) their fit's loss (the
    whole-image L1, plus the anchor's term when there is one)."""

    uniforms: torch.Tensor
    images: torch.Tensor
    loss: torch.Tensor


def free_slots(family: str = "v1") -> torch.Tensor:
    """Boolean (N_UNIFORMS,): the uniforms a fit moves (head, light, background)."""
    free = torch.zeros(scenes.N_UNIFORMS, dtype=torch.bool)
    for part in scenes.uniform_slots(family, ("head", "light", "background")):
        free[part] = True
    return free


def render_uniforms(u: torch.Tensor, view_raw: torch.Tensor, size: int,
                    family: str = "v1") -> torch.Tensor:
    """Images (B, 3, S, S) in [-1, 1] of uniforms u (B, N_UNIFORMS) under raw views (B, 6),
    each lit by its own light uniforms (differentiable in u)."""
    return scenes.render_batch(u, view_raw, scenes.lights_raw(u, family), size,
                               family=family)["image"]


def fit_scenes(targets: torch.Tensor, view_raw: torch.Tensor, init: torch.Tensor,
               steps: int = 400, lr: float = 0.05, family: str = "v1",
               anchor: float = 0.0) -> FamilyFit:
    """Fit one family member to each of targets (B, 3, S, S) in [-1, 1], seen from the fixed
    raw views (B, 6), starting from uniforms init (B, N_UNIFORMS); the best iterate of each
    image (by its loss) is kept. The loss is the whole-image L1 plus ``anchor`` times the
    squared departure of the head's logits from init's, summed over the head's numbers (the
    light and background stay free)."""
    size = targets.shape[-1]
    free = free_slots(family)
    (head,) = scenes.uniform_slots(family, ["head"])
    in_head = torch.zeros_like(free)
    in_head[head] = True
    anchored = in_head[free].float()  # over the free logits
    base = init.detach().float().clamp(_EDGE, 1 - _EDGE)
    start = torch.logit(base)[:, free]
    logits = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    best_loss = torch.full((targets.shape[0],), float("inf"))
    best_u = base.clone()
    for step in range(steps + 1):
        u = base.clone()
        u[:, free] = torch.sigmoid(logits)
        with torch.set_grad_enabled(step < steps):
            loss = (render_uniforms(u, view_raw, size, family) - targets).abs().mean((1, 2, 3))
            if anchor:
                loss = loss + anchor * ((logits - start) ** 2 * anchored).sum(1)
        better = loss.detach() < best_loss
        best_loss = torch.where(better, loss.detach(), best_loss)
        best_u[better] = u.detach()[better]
        if step == steps:
            break
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
    with torch.no_grad():
        images = render_uniforms(best_u, view_raw, size, family)
    return FamilyFit(best_u, images, best_loss)


def centre_uniforms(n: int, spread: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Uniforms (n, N_UNIFORMS) at the family's centre (all 0.5); rows after the first are
    jittered by ``spread`` (standard deviation in logit units, seeded) for restarts."""
    jitter = torch.randn(n, scenes.N_UNIFORMS, generator=torch.Generator().manual_seed(seed))
    jitter[0] = 0
    return torch.sigmoid(spread * jitter)


def projection_from_input(image: torch.Tensor, view_raw: torch.Tensor, family: str,
                          steps: int = 400, restarts: int = 8,
                          anchor: float = PROJECTION_ANCHOR
                          ) -> tuple[FamilyFit, Callable[[torch.Tensor], torch.Tensor]]:
    """The family as a GAN for one image (1, 3, S, S) seen from view_raw (1, 6): its fit of
    the image (:func:`fit_input`) and a projection that replaces images (N, 3, S, S) by
    their family members, fitted by ``steps`` of Adam from that fit, the head anchored there
    by ``anchor`` (gradients are enabled inside, so it runs under ``torch.no_grad`` too)."""
    start = fit_input(image, view_raw, restarts=restarts, family=family)

    def project(images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        with torch.enable_grad():
            return fit_scenes(images.detach(), view_raw.expand(n, -1),
                              start.uniforms.expand(n, -1), steps=steps, family=family,
                              anchor=anchor).images

    return start, project


def fit_input(image: torch.Tensor, view_raw: torch.Tensor, restarts: int = 8,
              steps: int = 300, lr: float = 0.05, spread: float = 1.0, seed: int = 0,
              family: str = "v1") -> FamilyFit:
    """The family member closest to one image (1, 3, S, S) seen from view_raw (1, 6):
    ``restarts`` fits from the family's centre (the first exactly there, the others
    jittered), the best one kept (batch 1)."""
    fits = fit_scenes(image.expand(restarts, -1, -1, -1), view_raw.expand(restarts, -1),
                      centre_uniforms(restarts, spread, seed), steps, lr, family)
    k = int(fits.loss.argmin())
    return FamilyFit(fits.uniforms[k:k + 1], fits.images[k:k + 1], fits.loss[k:k + 1])
