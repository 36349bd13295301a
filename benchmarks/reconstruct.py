"""Per-iteration time of each step of the reconstruction, the per-image total, and where the
time goes (GAN, discriminator, factor networks, renderer); with ``--baseline``, before and
after the speed-ups side by side.

    python benchmarks/reconstruct.py [--presets synface celeba] [--gan CKPT] [--iters 3]
                                     [--device cpu|cuda] [--threads N] [--baseline]
                                     [--levers malloc reuse nhwc bf16]
                                     [--before-levers LEVER ...] [--repeat R]
                                     [--set KEY=VALUE ...] [--no-breakdown]

Without ``--gan`` a randomly initialised StyleGAN2 of the preset's size and channel
multiplier is used (the timing does not depend on the weights). Each step is timed as the
pipeline runs it (forward, backward, Adam step); the breakdown times each component alone,
with the batch sizes and gradient needs it has inside that step, so the shares show where
the next speed-up should aim. The per-image total is the stage schedule of the preset
multiplied out, plus the shape prior and the result (sequences) measured once. Wall and
process CPU time (user + sys of all threads) are both given: on a shared machine the CPU
time is the steadier of the two.

``--baseline`` runs each preset in fresh processes, alternately without the speed-ups
(``before``: the allocator left as it is, ``reuse_target_features=false``, the exact
channels_last shortcuts off (:mod:`gan2shape.gan.nhwc`), ``gan_autocast=none``) and with
the ``--levers`` (``after``; default all of them: ``malloc``
:func:`gan2shape.memory.keep_freed_memory`, ``reuse`` ``reuse_target_features``, ``nhwc``
the shortcuts, ``bf16`` the opt-in ``gan_autocast=bf16``; then any ``--set`` overrides),
``--repeat`` times each, and prints the medians side by side with their ratios: ``--levers
nhwc`` measures that lever alone; ``--before-levers malloc reuse`` gives the ``before`` side
those (the levers' gain over the default float32 config: ``--before-levers malloc reuse
--levers malloc reuse nhwc``). ``--set`` overrides apply to the ``after`` side only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gan2shape.config import load_config
from gan2shape.errors import run_script
from gan2shape.gan import Discriminator, Generator, StyleGAN2, load_stylegan2, nhwc
from gan2shape.memory import keep_freed_memory
from gan2shape.perceptual import discriminator_features
from gan2shape.recon import Reconstructor, steps
from gan2shape.recon.reconstructor import stage_plan

LEVERS = ("malloc", "reuse", "nhwc", "bf16")  # bf16 is opt-in: it moves results beyond rounding


def lever_overrides(levers) -> list[str]:
    """The config overrides that turn the config's levers on or off."""
    return [f"reuse_target_features={'true' if 'reuse' in levers else 'false'}",
            f"gan_autocast={'bf16' if 'bf16' in levers else 'none'}"]


def timer(device: torch.device, iters: int) -> Callable[[Callable[[], object]], float]:
    """Mean wall seconds of fn over iters runs after one warm-up run; the mean process CPU
    seconds of the same runs are in ``measure.cpu[-1]``."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def measure(fn: Callable[[], object]) -> float:
        fn()
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(iters):
            fn()
        sync()
        measure.cpu.append((time.process_time() - cpu) / iters)
        return (time.perf_counter() - start) / iters
    measure.cpu = []
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


def step_timings(rec: Reconstructor, target, measure) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per iteration of each step as the pipeline runs it (with the
    optimiser)."""
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
    return {k: (v, cpu) for (k, v), cpu in zip(out.items(), measure.cpu[-len(out):],
                                                strict=True)}


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
        features = discriminator_features(d, 4, ctx.gan_bf16)
        return fwd_bwd(lambda: sum(f.mean() for f in features(x)))

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


def time_preset(preset: str, args, overrides: list[str]) -> dict:
    """Steps, per-image total, result time and (unless ``--no-breakdown``) the breakdown of
    one preset in this process: {"steps": {name: [wall, cpu]}, "result": s, "total": s,
    "total_cpu": s, "breakdown": {...}, "peak_rss_mb": MB, "header": str}."""
    device = torch.device(args.device)
    measure = timer(device, args.iters)
    cfg = load_config(preset, overrides=overrides)
    gan = load_stylegan2(args.gan, device=device) if args.gan else random_gan(cfg, device)
    rec = Reconstructor(gan, cfg, device=device, progress=False)
    torch.manual_seed(1)
    latent = gan.generator.mapping(torch.randn(1, gan.generator.style_dim, device=device))
    with torch.no_grad():
        image = gan.generator.synthesis(latent)[0].clamp(-1, 1)
    target = rec.target(image, latent.detach())
    header = (f"{preset}: image {cfg.image_size}px, GAN {gan.size}px (channel multiplier "
              f"{cfg.channel_multiplier}, {'bfloat16' if rec.ctx.gan_bf16 else 'float32'}), "
              f"batch {cfg.batchsize}, perceptual {cfg.perceptual}; "
              f"schedule: {len(stage_plan(cfg))} stages, prior {cfg.prior_iters}, collect "
              f"{cfg.collect_iters}")
    t = step_timings(rec, target, measure)
    start = time.perf_counter()
    rec.result(target)
    result_s = time.perf_counter() - start
    out = {"header": header, "steps": t, "result": result_s,
           "total": per_image_total(cfg, {k: v[0] for k, v in t.items()}, result_s),
           "total_cpu": per_image_total(cfg, {k: v[1] for k, v in t.items()}, result_s)}
    if not args.no_breakdown:
        out["breakdown"] = breakdown(rec, target, measure)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def print_single(res: dict) -> None:
    print(f"\n== {res['header']}")
    for name, (wall, cpu) in res["steps"].items():
        print(f"  {name:11s} {wall * 1000:9.1f} ms / iteration (CPU {cpu * 1000:9.1f} ms)")
    print(f"  result     {res['result'] * 1000:9.1f} ms once (factors, metrics, sequences)")
    print(f"  per image  {res['total']:9.1f} s = {res['total'] / 3600:.2f} h for the preset's "
          f"schedule (CPU time {res['total_cpu'] / 3600:.2f} h); peak memory "
          f"{res['peak_rss_mb']:.0f} MB")
    print_breakdown(res)


def print_breakdown(res: dict) -> None:
    if "breakdown" not in res:
        return
    print("  breakdown (components alone, ms per iteration; share of their sum):")
    for step, parts in res["breakdown"].items():
        total_parts = sum(parts.values()) or 1.0
        cells = ", ".join(f"{k} {v * 1000:.1f} ({v / total_parts:.0%})"
                          for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
        print(f"    {step}: {cells}")


def child_run(preset: str, side: str, args) -> dict:
    """One preset timed in a fresh process, without (``before``) or with the speed-ups."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", side, "--json", str(path), "--presets",
               preset, "--iters", str(args.iters), "--device", args.device]
        cmd += ["--gan", args.gan] if args.gan else []
        cmd += ["--levers", *(args.before_levers if side == "before" else args.levers)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += [x for kv in args.overrides for x in ("--set", kv)]
        if side == "before" or args.no_breakdown:
            cmd.append("--no-breakdown")
        subprocess.run(cmd, check=True)
        return json.loads(path.read_text())


def median_runs(runs: list[dict]) -> dict:
    steps_ = {k: [statistics.median(r["steps"][k][i] for r in runs) for i in (0, 1)]
              for k in runs[0]["steps"]}
    out = dict(runs[-1])
    out["steps"] = steps_
    for key in ("result", "total", "total_cpu", "peak_rss_mb"):
        out[key] = statistics.median(r[key] for r in runs)
    return out


def print_comparison(before: dict, after: dict, repeat: int) -> None:
    print(f"\n== {after['header']}  (medians of {repeat})")
    print(f"  {'step':11s} {'before ms':>10s} {'after ms':>10s} {'ratio':>6s}   "
          f"{'CPU before':>10s} {'CPU after':>10s} {'ratio':>6s}")
    for name, (wall_a, cpu_a) in after["steps"].items():
        wall_b, cpu_b = before["steps"][name]
        print(f"  {name:11s} {wall_b * 1000:10.1f} {wall_a * 1000:10.1f} {wall_b / wall_a:5.2f}x"
              f"   {cpu_b * 1000:10.1f} {cpu_a * 1000:10.1f} {cpu_b / cpu_a:5.2f}x")
    tb, ta = before["total"], after["total"]
    cb, ca = before["total_cpu"], after["total_cpu"]
    print(f"  {'per image':11s} {tb / 3600:9.2f}h {ta / 3600:9.2f}h {tb / ta:5.2f}x"
          f"   {cb / 3600:9.2f}h {ca / 3600:9.2f}h {cb / ca:5.2f}x")
    print(f"  peak memory {before['peak_rss_mb']:.0f} MB before, {after['peak_rss_mb']:.0f} MB "
          "after")
    print_breakdown(after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["synface", "celeba"])
    parser.add_argument("--gan", help="a StyleGAN2 checkpoint to time instead of a random one")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--baseline", action="store_true",
                        help="before and after the speed-ups side by side (fresh processes)")
    parser.add_argument("--levers", nargs="*", choices=LEVERS, default=list(LEVERS),
                        help="with --baseline: the speed-ups of the 'after' side")
    parser.add_argument("--before-levers", nargs="*", choices=LEVERS, default=[],
                        help="with --baseline: the speed-ups of the 'before' side (none)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --baseline: alternate runs per side (medians)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override (the 'after' side only)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the breakdown")
    parser.add_argument("--child", choices=("before", "after"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:  # one side of --baseline, in its own process
        levers = args.levers  # the side's levers (child_run passes them)
        applied = keep_freed_memory() if "malloc" in levers else False
        nhwc.set_enabled("nhwc" in levers)
        overrides = lever_overrides(levers) + ([] if args.child == "before" else args.overrides)
        res = time_preset(args.presets[0], args, overrides)
        res["allocator"] = applied
        Path(args.json).write_text(json.dumps(res))
        return 0
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} CPU "
          f"threads, {args.iters} timed iterations after 1 warm-up, load average "
          f"{os.getloadavg()[0]:.1f}")
    for preset in args.presets:
        if not args.baseline:
            keep_freed_memory()
            print_single(time_preset(preset, args, args.overrides))
            continue
        runs = {"before": [], "after": []}
        for _ in range(args.repeat):
            for side in runs:
                runs[side].append(child_run(preset, side, args))
        print(f"\nlevers: before {' '.join(args.before_levers) or 'none'}, after "
              f"{' '.join(args.levers)}")
        print_comparison(median_runs(runs["before"]), median_runs(runs["after"]), args.repeat)
    return 0


if __name__ == "__main__":
    run_script(main)
