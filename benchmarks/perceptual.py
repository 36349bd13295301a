"""Cost of the perceptual-loss choices, measured side by side in one run.

For a batch of reconstructions at the reconstruction size, times one loss evaluation with
its backward pass to the images for: LPIPS-VGG16 (the release's choice) and VGG16 relu3_3
L1 (random weights of the real shapes, so the timing is the real networks'), the GAN
discriminator's first 4 blocks (a config-e 128 px discriminator, channel multiplier 1, as
the face presets), and none. Prints milliseconds per call and the ratio to VGG16 relu3_3.

    python benchmarks/perceptual.py [--size 64] [--batch 16] [--reps 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from gan2shape import perceptual as P
from gan2shape.gan import Discriminator


def timed(loss, recon, target, reps):
    loss(recon, target).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        recon.grad = None
        loss(recon, target).backward()
    return (time.perf_counter() - start) / reps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--gan-size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    vgg3 = P.VGG16Features(3).requires_grad_(False).eval()
    vgg5 = P.VGG16Features(5).requires_grad_(False).eval()
    lin = [torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    disc = Discriminator(args.gan_size, channel_multiplier=1).requires_grad_(False).eval()
    choices = {"lpips": P.Perceptual(P.lpips_features(vgg5), P.lpips_distance(lin), True),
               "vgg16": P.Perceptual(P.vgg16_features(vgg3), P.feature_l1, True),
               "discriminator": P.Perceptual(P.discriminator_features(disc), P.feature_l1,
                                             True),
               "none": None}
    recon = (torch.rand(args.batch, 3, args.size, args.size) * 2 - 1).requires_grad_(True)
    target = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    # interleave the choices so that machine noise hits them alike
    times = {k: [] for k in choices}
    for _ in range(3):
        for name, loss in choices.items():
            if name == "none":
                times[name].append(0.0)
                continue
            times[name].append(timed(loss, recon, target, args.reps))
    print(f"perceptual loss, batch {args.batch} at {args.size} px, "
          f"{torch.get_num_threads()} threads")
    base = min(times["vgg16"])
    for name, values in times.items():
        best = min(values)
        print(f"  {name:<14} {best:9.1f} ms/call   {best / base:5.2f} x vgg16")


if __name__ == "__main__":
    main()
