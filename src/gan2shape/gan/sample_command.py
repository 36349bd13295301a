"""``gan2shape sample``: images from a StyleGAN2 with their W latents, in the release's layout.

Writes ``OUT/images/<stem>.png``, ``OUT/latents/<stem>.pt`` (a (1, 512) W tensor: the image
is synthesis(W) with the checkpoint's stored noise; for a GAN with an image encoder at
truncation 1, the dict {'latent': W, 'z': z}) and ``OUT/list.txt`` (one image path per
line, relative to OUT). Image i is drawn from its own seed (derived from --seed and i), so an
interrupted run resumes where it stopped and produces the same files as an uninterrupted one.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from ..devices import resolve_device
from ..embedded import GAN_HELP, resolve_gan
from ..errors import UserError
from ..fileio import save_image, save_text, writable_dir
from .checkpoint import load_stylegan2
from .latents import save_latent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gan", required=True, metavar="CKPT", help=GAN_HELP)
    parser.add_argument("-n", type=int, required=True, help="number of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--truncation", type=float, default=1.0,
                        help="W truncation towards the mean latent (1 = none; default 1)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def index_latent_z(seed: int, index: int, style_dim: int) -> torch.Tensor:
    """The z (1, style_dim) of image `index`, from a seed derived from (seed, index)."""
    state = int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])
    gen = torch.Generator().manual_seed(state)
    return torch.randn(1, style_dim, generator=gen)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Image (3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    x = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    if not 0.0 <= args.truncation <= 1.0:
        raise UserError(f"--truncation must be in [0, 1], got {args.truncation}")
    if args.seed < 0:
        raise UserError(f"--seed must be non-negative, got {args.seed}")
    out = writable_dir(args.out)
    device = resolve_device(args.device)
    gan = load_stylegan2(resolve_gan(args.gan).checkpoint, device=device,
                         need_discriminator=False)
    g = gan.generator
    width = max(6, len(str(args.n - 1)))
    stems = [f"{i:0{width}d}" for i in range(args.n)]

    def done(stem: str) -> bool:
        return (out / "images" / f"{stem}.png").is_file() and \
            (out / "latents" / f"{stem}.pt").is_file()

    todo = [i for i, stem in enumerate(stems) if not done(stem)]
    # A GAN with an image encoder is used in its input space Z (``latent_space: z``), so its
    # samples' latent files carry their z too (exact only without truncation).
    keep_z = gan.encoder is not None and args.truncation == 1.0
    mean = None
    if todo and args.truncation < 1.0:
        mean = gan.latent_avg if gan.latent_avg is not None else g.mean_latent()
    with torch.inference_mode(), tqdm(total=args.n, initial=args.n - len(todo),
                                      desc="sample", unit="img") as bar:
        for start in range(0, len(todo), args.batch):
            chunk = todo[start:start + args.batch]
            z = torch.cat([index_latent_z(args.seed, i, g.style_dim) for i in chunk])
            w = g.mapping(z.to(device))
            if mean is not None:
                w = mean + args.truncation * (w - mean)
            images = g.synthesis(w)
            for i, zi, wi, img in zip(chunk, z, w, images, strict=True):
                save_latent(out / "latents" / f"{stems[i]}.pt", wi[None],
                            zi[None] if keep_z else None)
                save_image(to_uint8(img), out / "images" / f"{stems[i]}.png")
            bar.update(len(chunk))
    save_text("".join(f"images/{stem}.png\n" for stem in stems), out / "list.txt")
    print(f"{args.n} images and latents in {out} (list: {out / 'list.txt'})")
    return 0
