"""``gan2shape invert``: project photos into a StyleGAN2 and save their latents.

Per image ``<out>/<stem>.pt`` (the latent: the release's (1, 512) W format, or
(1, n_latent, 512) with ``--w-plus``; for a GAN with an image encoder, which is inverted in
its input space Z, the dict {'latent': W, 'z': z} that ``latent_space: z`` needs),
``<out>/<stem>.png`` (the GAN's image of that latent) and ``<out>/<stem>.json`` (final
losses, PSNR, settings). Images whose three outputs exist are
skipped, so an interrupted run over a long list (or one stopped by an unreadable file, with
its one-line error) resumes where it stopped. Started by torchrun, process r of w inverts
images r, r + w, ... of the list, each process on its own GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..devices import resolve_device
from ..distributed import from_environment, process_device
from ..embedded import GAN_HELP, resolve_gan
from ..errors import UserError, check_number
from ..fileio import save_image, save_json, save_torch, writable_dir
from .checkpoint import load_stylegan2
from .images import load_image, tensor_to_uint8
from .invert import POOR_FIT_PSNR_DB, InvertOptions, fit_warning, inversion_start, invert
from .latents import save_latent

OUTPUT_SUFFIXES = (".pt", ".png", ".json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMG",
                        help="image files, or .txt lists of image paths (one per line)")
    parser.add_argument("--gan", required=True, metavar="CKPT", help=GAN_HELP)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=int, default=500, help="optimisation steps per image")
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    parser.add_argument("--w-plus", action="store_true",
                        help="optimise one latent per layer (W+; not the release's W format)")
    parser.add_argument("--noise", action="store_true",
                        help="optimise the generator's noise maps too (regularised)")
    parser.add_argument("--perceptual", choices=("discriminator", "vgg", "none"),
                        default="discriminator", help="perceptual term (default: D features)")
    parser.add_argument("--vgg", metavar="PATH", help="VGG16 weights (torchvision layout)")
    parser.add_argument("--crop", metavar="L,T,W,H",
                        help="crop box in the upright photo (default: the centre square)")
    parser.add_argument("--batch", type=int, default=4, help="images inverted together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if there)")
    parser.add_argument("--poor-fit-db", type=float, default=POOR_FIT_PSNR_DB,
                        help="warn when the projection's PSNR is below this (dB)")
    parser.add_argument("--force", action="store_true", help="redo images already inverted")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def expand_inputs(items: list[str]) -> list[Path]:
    """Image paths from the command line; ``.txt`` files list more (relative to themselves)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise UserError(f"image list not found: {path}")
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    entry = Path(line)
                    paths.append(entry if entry.is_absolute() else path.parent / entry)
        else:
            paths.append(path)
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems and stems[path.stem] != path:
            raise UserError(f"two inputs share the name {path.stem!r} ({stems[path.stem]} and "
                            f"{path}): their outputs would collide")
        stems[path.stem] = path
    return list(stems.values())


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise UserError(f"--crop {text!r}: expected four integers L,T,W,H") from exc
    if len(box) != 4:
        raise UserError(f"--crop {text!r}: expected four integers L,T,W,H")
    return box


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.steps < 1 or args.batch < 1:
        raise UserError("--steps and --batch must be positive")
    check_number("--lr", args.lr, above=0)
    check_number("--poor-fit-db", args.poor_fit_db)
    if args.perceptual == "vgg" and not args.vgg:
        raise UserError("--perceptual vgg needs --vgg PATH (VGG16 weights)")
    group = from_environment()
    device = str(process_device(group, resolve_device(args.device)))
    crop = parse_crop(args.crop)
    paths = group.shard(expand_inputs(args.images))
    out = writable_dir(args.out)
    todo = [p for p in paths if args.force or not all(
        (out / f"{p.stem}{s}").is_file() for s in OUTPUT_SUFFIXES)]
    if len(todo) < len(paths):
        print(f"invert: {len(paths) - len(todo)} of {len(paths)} images already done in {out}",
              file=sys.stderr)
    if not todo:
        return 0
    for path in todo:  # cheap checks first; undecodable files stop the run at their batch
        if not path.is_file():
            raise UserError(f"image not found: {path}")
    checkpoint = resolve_gan(args.gan).checkpoint
    gan = load_stylegan2(checkpoint, device=device)
    generator = gan.generator

    options = InvertOptions(steps=args.steps, lr=args.lr, w_plus=args.w_plus,
                            optimise_noise=args.noise, perceptual=args.perceptual,
                            vgg_weights=args.vgg, progress=not args.quiet and group.is_main)
    poor = 0
    bar = tqdm(total=len(todo), unit="img", disable=args.quiet or not group.is_main,
               dynamic_ncols=True)
    for start in range(0, len(todo), args.batch):
        chunk = todo[start:start + args.batch]
        images = torch.stack([load_image(p, generator.size, crop) for p in chunk]).to(device)
        tic = time.perf_counter()
        chunk_options, init = inversion_start(gan, images, options)
        result = invert(generator, images, chunk_options, gan.discriminator, init=init,
                        seed=args.seed)
        seconds = (time.perf_counter() - tic) / len(chunk)
        for k, path in enumerate(chunk):
            psnr = float(result.psnr_db[k])
            latent = result.latents[k:k + 1].cpu()
            stem = out / path.stem
            if args.w_plus:
                save_torch(latent.clone(), f"{stem}.pt")
            else:
                save_latent(f"{stem}.pt", latent,
                            None if result.z is None else result.z[k:k + 1].cpu())
            save_image(tensor_to_uint8(result.images[k]), f"{stem}.png")
            message = fit_warning(psnr, args.poor_fit_db)
            save_json({
                "image": str(path), "psnr_db": psnr,
                "losses": {name: float(v[k]) for name, v in result.losses.items()},
                "poor_fit": message is not None, "poor_fit_threshold_db": args.poor_fit_db,
                "steps": args.steps, "lr": args.lr, "w_plus": args.w_plus,
                "z_space": result.z is not None,
                "noise": args.noise, "perceptual": args.perceptual, "seed": args.seed,
                "crop": crop, "gan": str(checkpoint), "seconds": seconds,
            }, f"{stem}.json")
            if message:
                poor += 1
                tqdm.write(f"invert: warning: {path}: {message}", file=sys.stderr)
        bar.update(len(chunk))
        bar.set_postfix(psnr=f"{float(result.psnr_db.mean()):.1f}dB")
    bar.close()
    print(f"invert: {len(todo)} images -> {out}" + (f" ({poor} poorly explained)" if poor else ""))
    return 0
