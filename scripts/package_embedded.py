"""Package a ``gan2shape train-gan`` checkpoint as the embedded model.

    python scripts/package_embedded.py runs/v2_ae64/checkpoint.pt --family v2
    python scripts/package_embedded.py OUT_DIR --family v1 --half   # an export_gan.py folder

Writes into src/gan2shape/assets/: embedded64.pt (only 'g_ema', 'd' and, when the GAN was
trained with one, its image 'encoder' for the inversion in Z: all that ``load_stylegan2``
needs; float32, or float16 with ``--half`` to keep a wider model within the package's size
budget), the exact view and light priors of the procedural family it was trained on
(release {mean, cov} format, as ``make-data`` writes them), and embedded64_samples.png (an
8 x 4 grid of samples at truncation 1, seeds 0..31).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from export_gan import half, load_exported  # scripts/ is on sys.path when run as a script

from gan2shape import embedded
from gan2shape.data import FAMILIES, scenes
from gan2shape.export.sequences import image_grid
from gan2shape.fileio import load_torch, save_image, save_torch
from gan2shape.gan import load_stylegan2

ASSETS = Path(__file__).resolve().parents[1] / "src" / "gan2shape" / "assets"
KEPT = ("g_ema", "d", "encoder", "iteration", "args")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path,
                        help="a train-gan checkpoint, or a folder written by export_gan.py")
    parser.add_argument("--family", required=True, choices=FAMILIES,
                        help="the procedural family the GAN was trained on")
    parser.add_argument("--half", action="store_true", help="store the weights as float16")
    args = parser.parse_args()
    if args.family != embedded.FAMILY:
        parser.error(f"embedded.FAMILY is {embedded.FAMILY!r}: set it to {args.family!r} "
                     "first (the demo's test faces and presets follow it)")
    ckpt = load_exported(args.checkpoint) if args.checkpoint.is_dir() else \
        load_torch(args.checkpoint, "StyleGAN2 checkpoint")
    small = {key: ckpt[key] for key in KEPT if key in ckpt}
    if args.half:
        small = half(small)
    gan = load_stylegan2(small)  # refuse to package anything that does not load
    save_torch(small, ASSETS / embedded.GAN_FILE)
    save_torch(scenes.view_prior(family=args.family), ASSETS / embedded.VIEW_PRIOR_FILE)
    save_torch(scenes.light_prior(args.family), ASSETS / embedded.LIGHT_PRIOR_FILE)
    with torch.no_grad():
        z = torch.randn(32, gan.generator.style_dim, generator=torch.Generator().manual_seed(0))
        images = gan.generator(z).clamp(-1, 1)
    save_image(image_grid(images, ncol=8), ASSETS / "embedded64_samples.png")
    encoder = "with its image encoder" if gan.encoder is not None else "without an encoder"
    print(f"packaged iteration {ckpt.get('iteration', '?')} ({encoder}) into {ASSETS}")


if __name__ == "__main__":
    main()
