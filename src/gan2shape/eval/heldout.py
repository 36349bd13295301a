"""The embedded model's held-out test faces and the depth baselines that need no learned shape.

The test faces are the procedural family ``embedded.TEST_SEED`` (the GAN trained on
``TRAIN_SEED``), rendered at the embedded size with exact ground-truth depth. The baselines,
as in the paper's Table 1: a constant depth, the average ground-truth depth of other test
faces (leave one out), and the ellipsoid shape prior placed on the image's object mask.
Shared by ``gan2shape demo`` and ``benchmarks/synthetic.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import embedded
from ..data import scenes
from ..fileio import save_torch
from .scoring import average_depth_baseline, constant_depth_baseline, score_depth

BASELINES = ("constant depth", "average ground-truth depth", "ellipsoid prior")


SPLIT_SEEDS = {"test": embedded.TEST_SEED, "validation": embedded.VALIDATION_SEED}
# The reconstruction preset made for a GAN trained on each version of the family.
FAMILY_PRESETS = {"v1": "demo_v1", "v2": "demo"}


def family_prior_overrides(family: str, folder: str | Path) -> list[str]:
    """Config overrides for the family's exact view and light priors: the embedded model's
    files for its own family, else the family's moments, written under ``folder``."""
    if family == embedded.FAMILY:
        view, light = (embedded.asset_path(embedded.VIEW_PRIOR_FILE),
                       embedded.asset_path(embedded.LIGHT_PRIOR_FILE))
    else:
        view, light = Path(folder) / "view_prior.pt", Path(folder) / "light_prior.pt"
        save_torch(scenes.view_prior(family=family), view)
        save_torch(scenes.light_prior(family), light)
    return [f"view_mvn_path={view}", f"light_mvn_path={light}"]


def heldout_scenes(indices: list[int], family: str = embedded.FAMILY,
                   split: str = "test") -> dict[str, torch.Tensor]:
    """Held-out faces ``indices`` of the family version ``family`` ('v1', 'v2'), from its
    test family (seed ``embedded.TEST_SEED``) or its validation family (``split``
    'validation', seed ``embedded.VALIDATION_SEED``); see ``data.scenes.render_batch`` for
    the tensors: image (B, 3, S, S) in [-1, 1], depth (B, S, S) metric ground truth in the
    view, ..."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLIT_SEEDS)})")
    return scenes.render_scenes(SPLIT_SEEDS[split], indices, embedded.IMAGE_SIZE, family=family)


def average_depth_pool(n_images: int, family: str = embedded.FAMILY,
                       split: str = "test") -> torch.Tensor:
    """Ground-truth depths (n + 1, S, S) of held-out faces 0..n: each face's average-depth
    baseline averages the first n of them other than itself."""
    return heldout_scenes(list(range(n_images + 1)), family, split)["depth"]


def average_depth_for(index: int, pool: torch.Tensor) -> torch.Tensor:
    """The average ground-truth depth (S, S) of the first len(pool) - 1 test faces of
    ``pool`` (from :func:`average_depth_pool`) other than face ``index``."""
    n = pool.shape[0] - 1
    others = [i for i in range(n + 1) if i != index][:n]
    return average_depth_baseline(pool[others])[0]


def depth_scores(pred: torch.Tensor, gt: torch.Tensor, cfg) -> dict[str, float]:
    """SIDE and MAD (deg) of a depth map pred (S, S) against gt (S, S), both in the input
    view, over every pixel the ground truth covers (the baselines have no invalid pixels)."""
    s = score_depth(pred[None], gt[None], torch.ones_like(gt)[None], cfg.fov, cfg.min_depth,
                    cfg.max_depth)
    return {"SIDE": float(s["side"][0]), "MAD_deg": float(s["mad_deg"][0])}


def baseline_scores(gt: torch.Tensor, mask: torch.Tensor, cfg, pool: torch.Tensor,
                    index: int) -> dict[str, dict[str, float]]:
    """Scores of :data:`BASELINES` for test face ``index`` with ground truth gt (S, S);
    mask (S, S): the image's object mask (where the ellipsoid prior is placed); cfg: the
    ``ReconConfig`` (prior depths, category, fov); pool: :func:`average_depth_pool`."""
    from ..recon.priors import ellipsoid_prior

    predictions = {
        "constant depth": constant_depth_baseline(gt),
        "average ground-truth depth": average_depth_for(index, pool),
        "ellipsoid prior": ellipsoid_prior(mask, cfg.category, cfg.prior_near, cfg.prior_far),
    }
    return {name: depth_scores(pred, gt, cfg) for name, pred in predictions.items()}


def input_light(scene: dict[str, torch.Tensor]):
    """The true light of a held-out face (:func:`heldout_scenes`, first face) as a
    ``factors.Light`` of batch 1 in the frame the reconstruction lights its input in: the
    input's own view, which is its canonical frame while its view stays at the identity.

    The scene renderer shades the head in the head's frame and then turns it by the view's
    rotation R, so in the view's frame the light's direction is R l (normals turn with the
    head); l itself is off by up to the view's 30 deg of yaw.
    """
    from ..recon.factors import Light, light_from_raw
    from ..render.camera import view_to_transform

    light = light_from_raw(scene["light_raw"][:1])
    rotation, _ = view_to_transform(scene["view"][:1])
    return Light(light.ambient, light.diffuse, (rotation @ light.direction[:, :, None])[:, :, 0])


def truth_projector(scene: dict[str, torch.Tensor], cfg):
    """A perfect GAN for one held-out face: a ``steps.Projector`` that replaces each pseudo
    sample by the true face under the sample's view and light.

    scene: :func:`heldout_scenes` of one face. The true depth and albedo are taken in the
    input's view (the renderer carries the albedo there) and lit in that frame, so a
    sample's view and light act on the input's frame, which is the reconstruction's
    canonical frame when its input view stays at the identity (the demo preset's lr_view
    keeps it there). cfg: the ``ReconConfig`` (fov, rot_center_depth, conventions).
    """
    from ..data.scenes import FOV_DEG, ROT_CENTER_DEPTH
    from ..recon.factors import canonical_image, shade
    from ..render import normals_from_depth, reproject

    depth = scene["depth"][:1]
    albedo = reproject(scene["canon_depth"][:1], scene["canon_albedo"][:1] * 2 - 1,
                       scene["view"][:1], FOV_DEG, ROT_CENTER_DEPTH)[0]
    head = (scene["head_mask"][:1, None] > 0.5).float()
    normals = normals_from_depth(depth, FOV_DEG)  # the true geometry's own camera
    background = scene["background"][:1, :, None, None] * 2 - 1

    @torch.no_grad()
    def project(pseudo) -> torch.Tensor:
        n, device = pseudo.images.shape[0], pseudo.images.device
        shading = shade(normals.to(device).expand(n, -1, -1, -1), pseudo.lights)
        texture = torch.cat([canonical_image(albedo.to(device).expand(n, -1, -1, -1), shading),
                             head.to(device).expand(n, -1, -1, -1)], 1)
        seen, valid, _ = reproject(depth.to(device).expand(n, -1, -1), texture, pseudo.views,
                                   cfg.fov, cfg.rot_center_depth, cfg.conventions)
        alpha = seen[:, 3:] * valid
        return (alpha * seen[:, :3] + (1 - alpha) * background.to(device)).clamp(-1, 1)

    return project


def family_projector(scene: dict[str, torch.Tensor], family: str, steps: int = 400,
                     restarts: int = 8, anchor: float | None = None):
    """A GAN that models the procedural family exactly, for one held-out face: a
    ``steps.Projector`` that replaces each pseudo sample by the family member that
    reproduces it best (``data.fit``: head, light and background fitted by ``steps`` of
    Adam from the family's fit of the input image, ``restarts`` from the family's centre;
    the input's true view held; the head anchored there by ``anchor``, default
    ``data.fit.PROJECTION_ANCHOR``; ``data.fit.projection_from_input``). What
    ``benchmarks/projection.py --family-fit`` measures image by image, as the projection
    Step 3 learns from. The view is held, so the pseudo samples must only relight
    (``pseudo_views: false``).

    scene: :func:`heldout_scenes` of one face of the family version ``family``.
    """
    from ..data import fit

    anchor = fit.PROJECTION_ANCHOR if anchor is None else anchor
    _, project_images = fit.projection_from_input(scene["image"][:1], scene["view_raw"][:1],
                                                  family, steps, restarts, anchor)

    def project(pseudo) -> torch.Tensor:
        images = pseudo.images
        return project_images(images.float().cpu()).to(images.device)

    return project
