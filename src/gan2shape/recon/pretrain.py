"""Joint pre-training (docs/method.md section 3): the stage loop over many images, shared weights.

As in the release's joint mode, each iteration of a step takes the next image of a
shuffled cycle: Step 1 on that image, then the Step-1 factors of every image are frozen
(the material of its pseudo samples), Step 2 on the next image's pseudo samples, the
collection spread evenly over the images (``collect_iters`` >= number of images), Step 3 on
the next image with a random batch of its own projected samples. The weights are never
reset; the result is a GAN2Shape weight file that ``reconstruct --pretrained`` starts from.

Under torchrun (a :class:`~gan2shape.distributed.Group`), each process holds its share of
the images and cycles over it; every step averages the processes' gradients, so a step
learns from one image per process, and the collection is split between the processes.
(DistributedDataParallel does not fit here: Step 3 runs the view and light networks twice
before one backward pass, and the trained networks change from step to step.) Process 0
fits the shape prior, writes the checkpoint and gives its weights to the others, so the
processes need no shared disk.
"""

from __future__ import annotations

import math
import os

import torch
from tqdm import tqdm

from ..distributed import SINGLE, Group
from ..errors import UserError
from . import priors, steps
from .reconstructor import Reconstructor, _config_digest, stage_plan
from .stage_checkpoint import StageCheckpoint

PRIOR_BATCH = 16  # images the depth network is fitted to the shape prior on, at once
CHECKPOINT_VERSION = 2


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
             checkpoint: str | os.PathLike | None = None,
             group: Group = SINGLE) -> dict[str, dict]:
    """Train the shared networks of ``rec`` jointly on targets; returns the weights.

    targets: this process's share of the images. checkpoint: a file (process 0's) written
    after the shape prior and after each stage; a later call with the same file,
    configuration and number of images resumes after the last stage, with any number of
    processes.
    """
    cfg = rec.cfg
    sizes = group.gather(len(targets))
    n = sum(sizes)
    if min(sizes) == 0:
        raise UserError(f"joint pre-training needs at least one image per process: {n} "
                        f"images for {group.world_size} processes")
    collect_iters = math.ceil(cfg.collect_iters / group.world_size)
    if collect_iters < max(sizes):
        raise UserError(f"collect_iters ({cfg.collect_iters}) must be at least the number of "
                        f"images ({n}) so that every image gets projected samples")
    plan = stage_plan(cfg)
    # (each stage is seeded: the checkpoint needs no random state)
    stages = StageCheckpoint(checkpoint, {"version": CHECKPOINT_VERSION,
                                          "key": f"{_config_digest(cfg)}:{n}"},
                             "pre-training checkpoint")
    done = group.broadcast(stages.resume(rec.nets) if group.is_main else None)
    if done is None:
        torch.manual_seed(_stage_seed(cfg.seed, 0, 0))
        if rec.needs_prior and group.is_main:
            _fit_prior(rec, targets[:PRIOR_BATCH])
        done = 0
        if group.is_main:
            stages.save(0, release_weights(rec))
    group.broadcast_modules(rec.nets.values())
    for s in range(done, len(plan)):
        # Each stage seeded per process, with a fresh cycle: a resumed run draws what an
        # unbroken one would.
        torch.manual_seed(_stage_seed(cfg.seed, s, group.rank))
        joint_stage(rec, targets, plan[s], Cycle(len(targets)),
                    f"joint stage {s + 1}/{len(plan)}", collect_iters, group)
        if group.is_main:
            stages.save(s + 1, release_weights(rec))
    return release_weights(rec)


def _stage_seed(seed: int, stage: int, rank: int) -> int:
    return seed + 1_000_003 * stage + 7919 * rank


def joint_stage(rec: Reconstructor, targets: list[steps.Target], stage, cycle: Cycle,
                desc: str, collect_iters: int, group: Group = SINGLE) -> None:
    """Steps 1, 2 (+ ``collect_iters`` collections) and 3 of one stage, cycling over the
    targets; each step's gradients averaged over ``group``."""
    cfg, ctx = rec.cfg, rec.ctx
    rec.train_steps(steps.STEP1_NETS, stage.step1, f"{desc} step 1",
                    lambda: steps.step1_loss(ctx, targets[cycle.next()], stage.flip1), group)
    canons = [steps.canon_of(ctx, t) for t in targets]

    def step2() -> torch.Tensor:
        i = cycle.next()
        return steps.step2_loss(ctx, targets[i], canons[i])

    if ctx.uses_encoder:
        rec.train_steps(steps.STEP2_NETS, stage.step2, f"{desc} step 2", step2, group)
    collected: list[list[steps.Samples]] = [[] for _ in targets]
    # Round robin, not the cycle: every image gets collect_iters / n batches.
    for k in tqdm(range(collect_iters), desc=f"{desc} collect", leave=False,
                  disable=not rec.progress):
        i = k % len(targets)
        collected[i].append(steps.collect(ctx, targets[i], canons[i], 1))
    cyclers = [steps.SampleCycler.for_config(steps.Samples.cat(cs), cfg) for cs in collected]

    def step3() -> torch.Tensor:
        i = cycle.next()
        return steps.step3_loss(ctx, targets[i], cyclers[i].next(), stage.flip3)

    rec.train_steps(steps.STEP3_NETS, stage.step3, f"{desc} step 3", step3, group,
                    extra=[p for c in cyclers for p in c.parameters()])


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
