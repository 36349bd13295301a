"""``gan2shape train-gan``: the command line of :mod:`.train` (the recipe, the output
folder's files and the distributed training are described there).
"""

from __future__ import annotations

import argparse
import math

import torch

from ..devices import resolve_device
from ..distributed import SINGLE, Group, from_environment, joined, process_device
from ..errors import UserError, check_number
from ..fileio import load_torch, writable_dir
from .images import load_image_folder
from .train import CHECKPOINT, DEFAULT_CHANNELS_64, TrainConfig, parse_channels, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="?",
                        help="folder of images (or a make-data folder with images/); "
                        "not with --procedural")
    parser.add_argument("--procedural", metavar="FAMILY",
                        help="train on fresh renders of the procedural faces of this family "
                        "(make-data --family) every batch, never the same face twice")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="the procedural family's seed (held-out test faces: 1)")
    parser.add_argument("--style-dim", type=int, default=512,
                        help="latent width (the release's 512; small values narrow the range)")
    parser.add_argument("--warmup-kimg", type=float, default=0.0,
                        help="first train generator + encoder as an autoencoder for this many "
                        "thousand images (no discriminator)")
    parser.add_argument("--recon-weight", type=float, default=0.0,
                        help="weight of the autoencoder's reconstruction in the adversarial "
                        "phase")
    parser.add_argument("--kl-weight", type=float, default=1e-4,
                        help="weight of the encoder's KL to N(0, I) in the reconstruction term")
    parser.add_argument("--out", required=True, help="output folder (checkpoint, samples, log)")
    parser.add_argument("--size", type=int, default=64, help="resolution (power of 2)")
    width = parser.add_mutually_exclusive_group()
    width.add_argument("--channels", help="widths from 4 px up, e.g. 256x256x128x64x32")
    width.add_argument("--width", type=int, help="one width for every resolution")
    parser.add_argument("--n-mlp", type=int, default=8, help="mapping layers (release: 8)")
    parser.add_argument("--batch", type=int, default=16)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--kimg", type=float, help="train until this many thousand images")
    length.add_argument("--iters", type=int, help="train until this iteration")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.pt; with none there, start a new "
                             "run (and say so), so job scripts can always pass it")
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop after this many minutes, checkpointed (--resume continues)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on for CUDA with bf16 and CPUs with AMX)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if there)")
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--r1", type=float, default=10.0, help="R1 weight (gamma)")
    parser.add_argument("--r1-every", type=int, default=16, help="lazy R1 interval")
    parser.add_argument("--pl-weight", type=float, default=0.0, help="path-length weight")
    parser.add_argument("--pl-every", type=int, default=4)
    parser.add_argument("--mixing", type=float, default=0.9, help="style-mixing probability")
    parser.add_argument("--aug", action="store_true", help="flip/translate D's inputs")
    parser.add_argument("--ema-kimg", type=float, default=10.0, help="EMA half-life (kimg)")
    parser.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint interval (it)")
    parser.add_argument("--ckpt-minutes", type=float, default=5.0,
                        help="also checkpoint after this many minutes")
    parser.add_argument("--sample-every", type=int, default=500, help="sample grid interval")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def default_bf16(device: str) -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with AMX tiles, not otherwise."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_amx_tile_supported())


def config_from_args(args: argparse.Namespace, group: Group = SINGLE) -> TrainConfig:
    size = args.size
    if size < 8 or size & (size - 1):
        raise UserError(f"--size {size}: must be a power of two, at least 8")
    if args.channels:
        channels = parse_channels(args.channels, size)
    elif args.width:
        channels = {2**i: args.width for i in range(2, int(math.log2(size)) + 1)}
    elif size == 64:
        channels = dict(DEFAULT_CHANNELS_64)
    else:
        raise UserError(f"--size {size}: give --channels or --width (defaults exist for 64)")
    device = str(process_device(group, resolve_device(args.device)))
    if args.batch < 1:
        raise UserError("--batch must be positive")
    if args.minutes is not None:
        check_number("--minutes", args.minutes, above=0)
    if args.iters is not None and args.iters < 1:
        raise UserError(f"--iters must be at least 1, got {args.iters}")
    if args.kimg is not None:
        check_number("--kimg", args.kimg, above=0)
    check_number("--lr", args.lr, above=0)
    check_number("--r1", args.r1, minimum=0)
    check_number("--pl-weight", args.pl_weight, minimum=0)
    check_number("--mixing", args.mixing, minimum=0, maximum=1)
    check_number("--ema-kimg", args.ema_kimg, above=0)
    check_number("--ckpt-minutes", args.ckpt_minutes, above=0)
    for option, value in (("--r1-every", args.r1_every), ("--pl-every", args.pl_every),
                          ("--ckpt-every", args.ckpt_every), ("--log-every", args.log_every)):
        if value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    if args.style_dim < 1:
        raise UserError("--style-dim must be positive")
    for name in ("warmup_kimg", "recon_weight", "kl_weight"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number >= 0")
    if (args.data is None) == (args.procedural is None):
        raise UserError("give a DATA folder or --procedural FAMILY (one of them)")
    if args.procedural is not None:
        from ..data.scenes import FAMILIES

        if args.procedural not in FAMILIES:
            raise UserError(f"--procedural {args.procedural!r}: choose from "
                            f"{', '.join(FAMILIES)}")
    warmup_iters = int(math.ceil(args.warmup_kimg * 1000 / args.batch))
    if (warmup_iters > 0 or args.recon_weight > 0) and args.pl_weight > 0:
        raise UserError("--pl-weight does not combine with the autoencoder (--warmup-kimg, "
                        "--recon-weight)")
    if args.iters is not None:
        iters = args.iters
    elif args.kimg is not None:
        iters = int(math.ceil(args.kimg * 1000 / args.batch))
    else:
        iters = int(math.ceil(1000 * 1000 / args.batch))
    return TrainConfig(
        size=size, channels=channels, style_dim=args.style_dim, n_mlp=args.n_mlp,
        batch=args.batch, iters=iters, procedural=args.procedural, data_seed=args.data_seed,
        warmup_iters=warmup_iters, recon_weight=args.recon_weight, kl_weight=args.kl_weight,
        lr=args.lr, r1=args.r1, r1_every=args.r1_every, pl_weight=args.pl_weight,
        pl_every=args.pl_every, mixing=args.mixing, aug=args.aug, ema_kimg=args.ema_kimg,
        seed=args.seed, bf16=default_bf16(device) if args.bf16 is None else args.bf16,
        device=device, ckpt_every=args.ckpt_every, ckpt_minutes=args.ckpt_minutes,
        sample_every=args.sample_every, log_every=args.log_every,
    )


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    group = from_environment()
    cfg = config_from_args(args, group)
    out_dir = writable_dir(args.out)
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists() and not args.resume:
        raise UserError(f"{ckpt_path} exists: pass --resume to continue it, or another --out")
    if args.resume and ckpt_path.exists():
        saved = TrainConfig.from_dict(load_torch(ckpt_path, "training checkpoint")["args"])
        for name in ("size", "channels", "style_dim", "n_mlp", "uses_encoder"):
            if getattr(saved, name) != getattr(cfg, name):
                raise UserError(
                    f"--resume: {name} {getattr(cfg, name)} differs from the checkpoint's "
                    f"{getattr(saved, name)}"
                )
    if args.resume and not ckpt_path.exists() and group.is_main:
        print(f"train-gan: --resume: no checkpoint in {out_dir} yet, starting a new run")
    images = None if cfg.procedural else load_image_folder(args.data, cfg.size)
    processes = f", {group.world_size} processes" if group.distributed else ""
    if group.is_main:
        source = f"procedural family {cfg.procedural} (seed {cfg.data_seed}), fresh renders" \
            if cfg.procedural else f"{images.shape[0]} images"
        print(f"train-gan: {source} at {cfg.size} px, widths {cfg.channels}, "
              f"batch {cfg.batch}, until iteration {cfg.iters}, bf16 {cfg.bf16}, "
              f"{cfg.device}{processes}")
    with joined(group, torch.device(cfg.device)):
        trainer = train(cfg, images, out_dir, resume=args.resume, progress=not args.quiet,
                        group=group, minutes=args.minutes)
    if group.is_main:
        left = "" if trainer.iteration >= cfg.iters else " (--resume continues)"
        print(f"train-gan: iteration {trainer.iteration} of {cfg.iters}, checkpoint "
              f"{ckpt_path}{left}")
    # Stopped by a signal (Ctrl-C, SIGTERM): checkpointed, but the command did not finish.
    return 130 if trainer.interrupted else 0
