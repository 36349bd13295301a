"""``gan2shape pretrain``: joint pre-training over many images with shared weights.

Takes the same inputs as ``gan2shape reconstruct`` and writes ``<out>/gan2shape_pretrain.pth``
(the release's GAN2Shape weight layout: netD, netA, netV, netL, netEnc) for
``reconstruct --pretrained``, and ``<out>/config.yaml``. An interrupted run resumes from
``<out>/checkpoint.pt`` after its last finished stage. Under torchrun the processes share
the images and average their gradients (``torchrun --nproc_per_node 4 -m gan2shape pretrain
...``); each step then learns from one image per process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ..config import save_config
from ..distributed import from_environment, joined
from ..errors import UserError
from ..fileio import save_torch, writable_dir
from .reconstruct_command import add_input_arguments, load_inputs, prepare
from .stage_checkpoint import FILE_NAME as STAGE_CHECKPOINT

WEIGHTS_NAME = "gan2shape_pretrain.pth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help=f"folder for {WEIGHTS_NAME}, config.yaml and the checkpoint")


def run(args) -> int:
    """Pre-train on every image. Under torchrun, process r of w holds images r, r + w, ...
    and the processes average their gradients at every step (:mod:`.pretrain`)."""
    from .pretrain import pretrain
    from .reconstructor import Reconstructor

    group = from_environment()
    writable_dir(args.out)
    cfg, jobs, device, gan, latents = prepare(args, group)
    if len(jobs) < group.world_size:
        raise UserError(f"{len(jobs)} images for {group.world_size} processes: joint "
                        "pre-training needs at least one image per process")
    weights = args.out / WEIGHTS_NAME
    with joined(group, device):
        if group.broadcast(weights.is_file()):  # process 0's disk decides
            if group.is_main:
                print(f"gan2shape pretrain: {weights} already exists; nothing to do")
            return 0
        if group.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, args.out / "config.yaml")
        show = not args.quiet and group.is_main
        rec = Reconstructor(gan, cfg, pretrained=args.pretrained, device=device, progress=show)
        targets = []
        mine = group.shard(list(zip(jobs, latents, strict=True)))
        for job, codes in tqdm(mine, desc="loading images", leave=False, disable=not show):
            image, latent, code, mask, _ = load_inputs(job, codes, gan, device, cfg, show)
            targets.append(rec.target(image, latent, mask, job.name, code))
        checkpoint = args.out / STAGE_CHECKPOINT
        result = pretrain(rec, targets, checkpoint, group)
    if group.is_main:
        save_torch(result, weights)
        checkpoint.unlink(missing_ok=True)
        where = f" on {group.world_size} processes" if group.distributed else ""
        print(f"gan2shape pretrain: weights of {len(jobs)} images{where} -> {weights}")
    return 0
