"""Per-iteration time of each step of the reconstruction, the per-image total, and where the
time goes (GAN, discriminator, factor networks, renderer).

    python benchmarks/reconstruct.py [--presets synface celeba] [--gan CKPT] [--iters 3]
                                     [--device cpu|cuda] [--threads N]

Without ``--gan`` a randomly initialised StyleGAN2 of the preset's size and channel
multiplier is used (the timing does not depend on the weights). Each step is timed as the
pipeline runs it (forward, backward, Adam step); the breakdown times each component alone,
with the batch sizes and gradient needs it has inside that step, so the shares show where
the next speed-up should aim. The per-image total is the stage schedule of the preset
multiplied out, plus the shape prior and the result (sequences) measured once.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from gan2shape.config import load_config
from gan2shape.gan import Discriminator, Generator, StyleGAN2, load_stylegan2
from gan2shape.recon import Reconstructor, steps
from gan2shape.recon.reconstructor import stage_plan


def timer(device: torch.device, iters: int) -> Callable[[Callable[[], object]], float]:
    """Mean seconds of fn over iters runs after one warm-up run."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def measure(fn: Callable[[], object]) -> float:
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        return (time.perf_counter() - start) / iters
    return measure


def fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """Forward then backward of the sum (gradients only where inputs require them)."""
    def run():
        out = fn()
        if out.requires_grad:
            out.float().sum().backward()
    return run


def random_gan(cfg, device) -> StyleGAN2:
    torch.manual_seed(0)
    g = Generator(cfg.gan_size, channel_multiplier=cfg.channel_multiplier)
    d = Discriminator(cfg.gan_size, channel_multiplier=cfg.channel_multiplier)
    return StyleGAN2(generator=g.to(device).eval(), discriminator=d.to(device).eval(),
                     size=cfg.gan_size)


def step_timings(rec: Reconstructor, target, measure) -> dict[str, float]:
    """Seconds per iteration of each step as the pipeline runs it (with the optimiser)."""
    ctx, cfg = rec.ctx, rec.cfg
    plan = stage_plan(cfg)
    out = {}

    def train(names, loss_fn):
        opt = steps.make_optimizer(ctx.nets, names, cfg)

        def run():
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    from gan2shape.recon import priors
    prior = priors.ellipsoid_prior(target.mask[0, 0].cpu(), cfg.category).to(rec.device)
    out["prior"] = measure(lambda: priors.fit_depth_to_prior(
        ctx.nets["netD"], target.image, prior, 1, cfg.prior_lr))
    for flip in sorted({s.flip1 for s in plan}):
        out[f"step1{'_flip' if flip else ''}"] = measure(
            train(steps.STEP1_NETS, lambda f=flip: steps.step1_loss(ctx, target, f)))
    canon = steps.canon_of(ctx, target)
    out["step2"] = measure(train(steps.STEP2_NETS, lambda: steps.step2_loss(ctx, target, canon)))
    out["collect"] = measure(lambda: steps.collect(ctx, target, canon, 1))
    samples = steps.collect(ctx, target, canon, 2)
    cycler = steps.SampleCycler(samples, cfg.batchsize)
    for flip in sorted({s.flip3 for s in plan}):
        out[f"step3{'_flip' if flip else ''}"] = measure(train(
            steps.STEP3_NETS,
            lambda f=flip: steps.step3_loss(ctx, target, cycler.next(), f)))
    return out


def breakdown(rec: Reconstructor, target, measure) -> dict[str, dict[str, float]]:
    """Seconds per iteration of each component alone, with the shapes and gradients it has
    in each step (flip on where the preset's first stage has it)."""
    ctx, cfg = rec.ctx, rec.cfg
    first = stage_plan(cfg)[0]
    nets, g, d = ctx.nets, ctx.generator, ctx.discriminator
    b, s = cfg.batchsize, cfg.image_size
    image = target.image
    canon = steps.canon_of(ctx, target)
    images = torch.rand(b, 3, s, s, device=rec.device) * 2 - 1
    kw = {"fov_deg": cfg.fov, "rot_center_depth": cfg.rot_center_depth,
          "conventions": cfg.conventions}
    from gan2shape.render import reproject
    views = torch.zeros(b, 6, device=rec.device)
    views[:, 1] = 0.3

    def render(n, depth_grad, texture_grad):
        depth = canon.depth.expand(n, -1, -1).clone().requires_grad_(depth_grad)
        tex = torch.rand(n, 3, s, s, device=rec.device).requires_grad_(texture_grad)
        return fwd_bwd(lambda: reproject(depth, tex, views[:1].expand(n, -1), **kw)[0])

    def nets_fwd(names, x, grad):
        def run():
            with torch.set_grad_enabled(grad):
                return sum(nets[k](x).float().mean() for k in names)
        return fwd_bwd(run)

    def disc(n, grad):
        x = torch.rand(n, 3, s, s, device=rec.device).requires_grad_(grad)
        return fwd_bwd(lambda: sum(f.float().mean() for f in d.features(x, 4)))

    def gan(n):
        w = target.latent.expand(n, -1).clone().requires_grad_(True)
        return fwd_bwd(lambda: ctx.render_latent(g.mapping(w, ctx.mapping_split),
                                                 target.origin_size))

    n1 = 2 if first.flip1 else 1
    n3 = 2 if first.flip3 else 1
    perc = cfg.perceptual == "discriminator" and cfg.lam_perc > 0
    table = {
        "step1": {
            "networks": measure(nets_fwd(["netD", "netV", "netL"], image, False))
            + measure(nets_fwd(["netA"], image, True)),
            "renderer": measure(render(n1, False, True)),
            "discriminator": measure(disc(n1, True)) if perc else 0.0,
        },
        "step2": {
            "renderer": measure(lambda: steps.sample_pseudo(ctx, canon, b)),
            "networks": measure(nets_fwd(["netEnc"], torch.cat([images, image]), True)),
            "GAN": measure(gan(b)),
            "discriminator": measure(disc(b, True)) + measure(disc(b, False)),
        },
        "step3": {
            "networks": measure(nets_fwd(["netD", "netA", "netV", "netL"], image, True))
            + measure(nets_fwd(["netV", "netL"], images, True)),
            "renderer": measure(render(n3 * b + n3, True, True)),
            "discriminator": measure(disc(n3 * b + n3, True)) if perc else 0.0,
        },
    }
    return table


def per_image_total(cfg, t: dict[str, float], result_s: float) -> float:
    total = cfg.prior_iters * t["prior"] + result_s
    for st in stage_plan(cfg):
        total += st.step1 * t["step1_flip" if st.flip1 else "step1"]
        total += st.step2 * t["step2"] + cfg.collect_iters * t["collect"]
        total += st.step3 * t["step3_flip" if st.flip3 else "step3"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["synface", "celeba"])
    parser.add_argument("--gan", help="a StyleGAN2 checkpoint to time instead of a random one")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    measure = timer(device, args.iters)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{args.iters} timed iterations after 1 warm-up")
    for preset in args.presets:
        cfg = load_config(preset)
        gan = load_stylegan2(args.gan, device=device) if args.gan else random_gan(cfg, device)
        rec = Reconstructor(gan, cfg, device=device, progress=False)
        torch.manual_seed(1)
        latent = gan.generator.mapping(torch.randn(1, gan.generator.style_dim, device=device))
        with torch.no_grad():
            image = gan.generator.synthesis(latent)[0].clamp(-1, 1)
        target = rec.target(image, latent.detach())
        print(f"\n== {preset}: image {cfg.image_size}px, GAN {gan.size}px "
              f"(channel multiplier {cfg.channel_multiplier}), batch {cfg.batchsize}, "
              f"perceptual {cfg.perceptual}")
        t = step_timings(rec, target, measure)
        start = time.perf_counter()
        rec.result(target)
        result_s = time.perf_counter() - start
        for name, sec in t.items():
            print(f"  {name:11s} {sec * 1000:9.1f} ms / iteration")
        print(f"  result     {result_s * 1000:9.1f} ms once (factors, metrics, sequences)")
        total = per_image_total(cfg, t, result_s)
        print(f"  per image  {total:9.1f} s = {total / 3600:.2f} h for the preset's schedule "
              f"({len(stage_plan(cfg))} stages, prior {cfg.prior_iters}, "
              f"collect {cfg.collect_iters})")
        print("  breakdown (components alone, ms per iteration; share of their sum):")
        for step, parts in breakdown(rec, target, measure).items():
            total_parts = sum(parts.values()) or 1.0
            cells = ", ".join(f"{k} {v * 1000:.1f} ({v / total_parts:.0%})"
                              for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
            print(f"    {step}: {cells}")


if __name__ == "__main__":
    main()
