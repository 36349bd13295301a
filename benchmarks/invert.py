"""Inversion benchmark: PSNR reached against optimisation steps, and time per image.

For a checkpoint (e.g. the embedded model's) it inverts
  * GAN samples with known latents (the PSNR a perfect optimiser would push to infinity),
  * held-out photos from a folder (e.g. the procedural test split), and
  * those photos upside down and colour-inverted, and --unrelated photos: images far from
    what the GAN makes, whose PSNR sets the poor-fit warning threshold
    (gan2shape.gan.invert.POOR_FIT_PSNR_DB),
in W and in W+, recording the mean PSNR every few steps. With --config-e it also times a
128 px config-e generator (rosinality channel multiplier 1, random weights: time only).

    python benchmarks/invert.py --gan runs/embedded64/checkpoint.pt \
        --photos data/test64/images -n 8 --steps 300 --threads 1 --unrelated PHOTO...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from gan2shape.gan import Discriminator, Generator, load_stylegan2
from gan2shape.gan.images import list_images, load_image
from gan2shape.gan.invert import POOR_FIT_PSNR_DB, InvertOptions, invert


def run_case(name, generator, discriminator, targets, steps, every, w_plus):
    tic = time.perf_counter()
    result = invert(generator, targets,
                    InvertOptions(steps=steps, w_plus=w_plus, record_every=every), discriminator)
    seconds = (time.perf_counter() - tic) / targets.shape[0]
    curve = "  ".join(f"{s}:{p:5.1f}" for s, p in result.history)
    psnr = result.psnr_db
    print(f"{name:<26} {'W+' if w_plus else 'W ':<3} {seconds:7.2f} s/img  "
          f"final {psnr.mean():5.1f} dB (min {psnr.min():5.1f}, max {psnr.max():5.1f})  "
          f"[{curve}]", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gan", required=True, help="checkpoint (rosinality format)")
    parser.add_argument("--photos", help="folder of held-out photos (e.g. data/test64/images)")
    parser.add_argument("--unrelated", nargs="+", metavar="IMG",
                        help="unrelated photos (any content) for the poor-fit threshold")
    parser.add_argument("-n", type=int, default=8, help="images per case")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50, help="record PSNR every N steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-w-plus", action="store_true", help="W only")
    parser.add_argument("--config-e", action="store_true",
                        help="also time a random 128 px config-e generator")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    gan = load_stylegan2(args.gan)
    g, d = gan.generator.eval(), gan.discriminator
    modes = [False] if args.no_w_plus else [False, True]
    print(f"checkpoint {args.gan}: {g.size} px, widths {g.channels}, {args.n} images per case, "
          f"{args.steps} steps, {torch.get_num_threads()} threads; poor-fit threshold "
          f"{POOR_FIT_PSNR_DB} dB")
    with torch.no_grad():
        z = torch.randn(args.n, g.style_dim, generator=torch.Generator().manual_seed(123))
        samples = g.synthesis(g.mapping(z))
    for w_plus in modes:
        run_case("GAN samples (known w)", g, d, samples, args.steps, args.every, w_plus)
    if args.photos:
        files = list_images(args.photos)[: args.n]
        photos = torch.stack([load_image(p, g.size) for p in files])
        for w_plus in modes:
            run_case(f"photos ({Path(args.photos).name})", g, d, photos, args.steps,
                     args.every, w_plus)
        run_case("photos upside down", g, d, photos.flip(2), args.steps, args.every, False)
        run_case("photos colour-inverted", g, d, -photos, args.steps, args.every, False)
    if args.unrelated:
        others = torch.stack([load_image(p, g.size) for p in args.unrelated])
        run_case("unrelated photos", g, d, others, args.steps, args.every, False)
    if args.config_e:
        torch.manual_seed(0)
        ge = Generator(128, channel_multiplier=1).eval()
        de = Discriminator(128, channel_multiplier=1)
        with torch.no_grad():
            z = torch.randn(2, 512, generator=torch.Generator().manual_seed(5))
            targets = ge.synthesis(ge.mapping(z))
        steps = min(args.steps, 50)
        run_case("config-e 128 px (random)", ge, de, targets, steps, max(steps // 2, 1), False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
