"""``gan2shape pretrain``: joint pre-training over many images with shared weights.

Takes the same inputs as ``gan2shape reconstruct`` and writes ``<out>/gan2shape_pretrain.pth``
(the release's GAN2Shape weight layout: netD, netA, netV, netL, netEnc) for
``reconstruct --pretrained``, and ``<out>/config.yaml``. An interrupted run resumes from
``<out>/checkpoint.pt`` after its last finished stage.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from ..config import save_config
from ..distributed import from_environment
from ..errors import UserError
from ..fileio import save_torch
from .command import add_input_arguments, load_inputs, prepare

WEIGHTS_NAME = "gan2shape_pretrain.pth"
CHECKPOINT_NAME = "checkpoint.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help=f"folder for {WEIGHTS_NAME}, config.yaml and the checkpoint")


def run(args) -> int:
    from .pretrain import pretrain
    from .reconstructor import Reconstructor

    if from_environment().distributed:
        raise UserError("pretrain runs as one process (its images share one set of weights "
                        "and one cycle); start it without torchrun")
    cfg, jobs, device, gan, latents = prepare(args)
    weights = args.out / WEIGHTS_NAME
    if weights.is_file():
        print(f"gan2shape pretrain: {weights} already exists; nothing to do")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, args.out / "config.yaml")
    rec = Reconstructor(gan, cfg, pretrained=args.pretrained, device=device,
                        progress=not args.quiet)
    targets = []
    for job, latent in tqdm(list(zip(jobs, latents, strict=True)), desc="loading images",
                            disable=args.quiet, leave=False):
        image, latent, mask, _ = load_inputs(job, latent, gan, device, cfg)
        targets.append(rec.target(image, latent, mask, job.name))
    checkpoint = args.out / CHECKPOINT_NAME
    save_torch(pretrain(rec, targets, checkpoint), weights)
    if checkpoint.exists():
        os.remove(checkpoint)
    print(f"gan2shape pretrain: weights of {len(targets)} images -> {weights}")
    return 0
