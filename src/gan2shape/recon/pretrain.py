"""Joint pre-training (METHOD.md section 3): the stage loop over many images, shared weights.

As in the release's joint mode, each iteration of a step takes the next image of a
shuffled cycle: Step 1 on that image, then the Step-1 factors of every image are frozen
(the material of its pseudo samples), Step 2 on the next image's pseudo samples, the
collection spread over the images (``collect_iters`` >= number of images), and Step 3 on
the next image with a random batch of its own projected samples. The weights are never
reset; the result is a GAN2Shape weight file that ``reconstruct --pretrained`` starts from.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import UserError
from ..fileio import load_torch, save_torch
from . import priors, steps
from .reconstructor import Reconstructor, _config_digest, stage_plan

PRIOR_BATCH = 16  # images the depth network is fitted to the shape prior on, at once
CHECKPOINT_VERSION = 1


class Cycle:
    """Indices 0..n-1 in a fresh random order on every pass."""

    def __init__(self, n: int):
        self.n, self.order = n, []

    def next(self) -> int:
        if not self.order:
            self.order = torch.randperm(self.n).tolist()
        return self.order.pop()


def release_weights(rec: Reconstructor) -> dict[str, dict]:
    """The networks' state dicts in the release's GAN2Shape weight-file layout (on CPU)."""
    return {k: {n: t.detach().cpu() for n, t in net.state_dict().items()}
            for k, net in rec.nets.items()}


def pretrain(rec: Reconstructor, targets: list[steps.Target],
             checkpoint: str | os.PathLike | None = None) -> dict[str, dict]:
    """Train the shared networks of ``rec`` jointly on targets; returns the weights.

    checkpoint: a file written after the shape prior and after each stage; a later call
    with the same file, configuration and number of images resumes after the last stage.
    """
    cfg = rec.cfg
    n = len(targets)
    if n == 0:
        raise UserError("joint pre-training needs at least one image")
    if cfg.collect_iters < n:
        raise UserError(f"collect_iters ({cfg.collect_iters}) must be at least the number of "
                        f"images ({n}) so that every image gets projected samples")
    torch.manual_seed(cfg.seed)
    plan = stage_plan(cfg)
    key = f"{_config_digest(cfg)}:{n}"
    done = _resume(rec, checkpoint, key)
    if done is None:
        if rec.needs_prior:
            _fit_prior(rec, targets[:PRIOR_BATCH])
        done = 0
        _save(rec, checkpoint, key, 0)
    cycle = Cycle(n)
    for s in range(done, len(plan)):
        joint_stage(rec, targets, plan[s], cycle, f"joint stage {s + 1}/{len(plan)}")
        _save(rec, checkpoint, key, s + 1)
    return release_weights(rec)


def joint_stage(rec: Reconstructor, targets: list[steps.Target], stage, cycle: Cycle,
                desc: str) -> None:
    """Steps 1, 2 (+ collection) and 3 of one stage, cycling over the targets."""
    cfg, ctx = rec.cfg, rec.ctx
    rec._train(steps.STEP1_NETS, stage.step1, f"{desc} step 1",
               lambda: steps.step1_loss(ctx, targets[cycle.next()], stage.flip1))
    canons = [steps.canon_of(ctx, t) for t in targets]

    def step2() -> torch.Tensor:
        i = cycle.next()
        return steps.step2_loss(ctx, targets[i], canons[i])

    rec._train(steps.STEP2_NETS, stage.step2, f"{desc} step 2", step2)
    collected: list[list[steps.Samples]] = [[] for _ in targets]
    for _ in tqdm(range(cfg.collect_iters), desc=f"{desc} collect", leave=False,
                  disable=not rec.progress):
        i = cycle.next()
        collected[i].append(steps.collect(ctx, targets[i], canons[i], 1))
    cyclers = [steps.SampleCycler(steps.Samples.cat(cs), cfg.batchsize) for cs in collected]

    def step3() -> torch.Tensor:
        i = cycle.next()
        return steps.step3_loss(ctx, targets[i], cyclers[i].next(), stage.flip3)

    rec._train(steps.STEP3_NETS, stage.step3, f"{desc} step 3", step3)


def _fit_prior(rec: Reconstructor, targets: list[steps.Target]) -> None:
    """Fit the depth network to each image's ellipsoid prior, all images in one batch."""
    cfg = rec.cfg
    images = torch.cat([t.image for t in targets])
    prior = torch.stack([priors.ellipsoid_prior(t.mask[0, 0].cpu(), cfg.category,
                                                cfg.prior_near, cfg.prior_far)
                         for t in targets]).to(images.device)
    with tqdm(total=cfg.prior_iters, desc="shape prior", leave=False,
              disable=not rec.progress) as bar:
        priors.fit_depth_to_prior(rec.nets["netD"], images, prior, cfg.prior_iters,
                                  cfg.prior_lr, cfg.weight_decay, cfg.min_depth,
                                  cfg.max_depth, progress=lambda i, v: bar.update(1))


def _save(rec: Reconstructor, path, key: str, stages_done: int) -> None:
    if path is not None:
        save_torch({"version": CHECKPOINT_VERSION, "key": key, "stages_done": stages_done,
                    "nets": release_weights(rec), "rng": torch.get_rng_state()}, path)


def _resume(rec: Reconstructor, path, key: str) -> int | None:
    if path is None or not Path(path).is_file():
        return None
    state = load_torch(path, "pre-training checkpoint")
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION \
            or state.get("key") != key:
        return None
    for k, net in rec.nets.items():
        net.load_state_dict(state["nets"][k])
    torch.set_rng_state(state["rng"])
    return int(state["stages_done"])
