"""Does the GAN's discriminator know the shape? Measured on the embedded model's held-out
test faces, where the truth is known.

    python benchmarks/discriminator.py [--images 8] [--gan CKPT] [--lights 16]
        [--ascent-steps 100] [--ascent-grid 8] [--ascent-lr 1e-4] [--threads 1]

GAN2Shape reads shape from the generator (benchmarks/projection.py). This asks the other
network. Each face's input image is relit by a candidate depth with the ratio image
I * shade(n, l) / shade(n, L) (n the candidate's normals, L the light the reconstruction
starts from: the light prior's mean): the albedo it implies is the input divided by the
candidate's shading, so a wrong depth leaves shading in the albedo that new lights expose.
The discriminator scores ``--lights`` random relightings (drawn as for pseudo samples).

- line: the mean score of depth = prior + t (truth - prior) for t = 0, 0.5, 1, 1.5, and the
  faces where t = 1 (the truth) scores highest;
- ascent: SIDE and MAD of the prior, and of the prior plus a smooth residual (bilinear from
  an ``--ascent-grid`` square grid) trained ``--ascent-steps`` Adam steps to raise the
  score: whether the discriminator's gradient leads towards the truth, not only ranks it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gan2shape import embedded
from gan2shape.config import load_config
from gan2shape.errors import UserError, run_script
from gan2shape.eval import heldout
from gan2shape.gan import load_stylegan2
from gan2shape.recon import Reconstructor, factors
from gan2shape.recon.priors import ellipsoid_prior, sample_random_light
from gan2shape.render import normals_from_depth

LINE = (0.0, 0.5, 1.0, 1.5)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8, help="held-out test faces 0..N-1")
    p.add_argument("--gan", default=None, help="StyleGAN2 checkpoint (default: the embedded)")
    p.add_argument("--lights", type=int, default=16, help="random relightings per depth")
    p.add_argument("--ascent-steps", type=int, default=100)
    p.add_argument("--ascent-grid", type=int, default=8, help="residual grid side")
    p.add_argument("--ascent-lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def relight(image: torch.Tensor, depth: torch.Tensor, light: factors.Light,
            lights: factors.Light, fov: float) -> torch.Tensor:
    """image (1, 3, S, S) in [-1, 1] lit by ``light``, relit under each of ``lights`` (n) by
    depth (1, S, S) seen from the input's view: (n, 3, S, S) in [-1, 1]."""
    normals = normals_from_depth(depth, fov)
    n = lights.ambient.shape[0]
    ratio = (factors.shade(normals.expand(n, -1, -1, -1), lights)
             / factors.shade(normals, light).clamp(min=1e-3))
    return ((image / 2 + 0.5) * ratio * 2 - 1).clamp(-1, 1)


def realism(discriminator, image, depth, light, lights, fov) -> torch.Tensor:
    """The discriminator's mean score (logit) of the relit images."""
    return discriminator(relight(image, depth, light, lights, fov)).mean()


def measure_face(gan, rec: Reconstructor, index: int, args) -> dict:
    cfg = rec.cfg
    scene = heldout.heldout_scenes([index])
    zero = torch.zeros(1, gan.generator.style_dim)  # only the image's mask is used
    target = rec.target(scene["image"][0], zero, code=zero)
    light = factors.light_from_raw(torch.zeros(1, 4), rec.ctx.light_mean)
    prior = ellipsoid_prior(target.mask[0, 0], cfg.category, cfg.prior_near, cfg.prior_far)[None]
    truth = scene["depth"]
    generator = torch.Generator().manual_seed(index)
    lights = sample_random_light(args.lights, light.ambient, light.diffuse, cfg.rand_light,
                                 generator=generator)
    D = gan.discriminator.requires_grad_(False)
    row = {}
    with torch.no_grad():
        for t in LINE:
            row[t] = float(realism(D, target.image, prior + t * (truth - prior), light, lights,
                                   cfg.fov))
    row["prior"] = heldout.depth_scores(prior[0], truth[0], cfg)

    residual = torch.zeros(1, 1, args.ascent_grid, args.ascent_grid, requires_grad=True)
    opt = torch.optim.Adam([residual], lr=args.ascent_lr)

    def depth() -> torch.Tensor:
        return prior + F.interpolate(residual, size=prior.shape[-1], mode="bilinear",
                                     align_corners=True)[:, 0]

    for _ in range(args.ascent_steps):
        loss = F.softplus(-D(relight(target.image, depth(), light, lights, cfg.fov))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    row["ascent"] = heldout.depth_scores(depth()[0].detach(), truth[0], cfg)
    return row


def main() -> int:
    args = parse_args()
    if min(args.images, args.lights, args.ascent_grid, args.threads) < 1 \
            or args.ascent_steps < 0 or args.ascent_lr <= 0:
        raise UserError("--images, --lights, --ascent-grid and --threads must be >= 1, "
                        "--ascent-steps >= 0, --ascent-lr > 0")
    torch.set_num_threads(args.threads)
    gan_path = args.gan or embedded.asset_path(embedded.GAN_FILE)
    gan = load_stylegan2(gan_path, device="cpu")
    cfg = load_config("demo", overrides=[
        f"view_mvn_path={embedded.asset_path(embedded.VIEW_PRIOR_FILE)}",
        f"light_mvn_path={embedded.asset_path(embedded.LIGHT_PRIOR_FILE)}"])
    rec = Reconstructor(gan, cfg, device="cpu", progress=False)
    rows, start = [], time.perf_counter()
    for index in tqdm(range(args.images), desc="test faces", unit="face"):
        rows.append(measure_face(gan, rec, index, args))
        r = rows[-1]
        tqdm.write(f"test{index:04d}: " + " ".join(f"t={t} {r[t]:+.3f}" for t in LINE)
                   + f" | prior {r['prior']['SIDE'] * 100:.3f}/{r['prior']['MAD_deg']:.2f}"
                   f" ascent {r['ascent']['SIDE'] * 100:.3f}/{r['ascent']['MAD_deg']:.2f}")
    print(f"GAN {gan_path}, {args.lights} relightings per depth, {args.images} faces, "
          f"{time.perf_counter() - start:.0f} s")
    for t in LINE:
        values = [r[t] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"  score of prior + {t} (truth - prior): {statistics.fmean(values):+.3f} "
              f"± {spread:.3f}")
    best = sum(max(LINE, key=lambda t, r=r: r[t]) == 1.0 for r in rows)
    print(f"  the truth scores highest on the line on {best} of {len(rows)} faces")
    for key in ("prior", "ascent"):
        side = statistics.fmean(r[key]["SIDE"] * 100 for r in rows)
        mad = statistics.fmean(r[key]["MAD_deg"] for r in rows)
        print(f"  {key:6s} SIDE {side:.3f} x1e-2, MAD {mad:.2f} deg")
    print(f"  (ascent: {args.ascent_steps} steps, grid {args.ascent_grid}, lr {args.ascent_lr})")
    return 0


if __name__ == "__main__":
    run_script(main)
