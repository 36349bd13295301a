"""``gan2shape demo``: the whole method on the embedded model, with no downloads.

A held-out procedural test face (the test family of the embedded GAN's data, never seen in
training) is projected into the embedded 64 px StyleGAN2, reconstructed with the ``demo``
preset, every output of ``reconstruct`` is written to ``./gan2shape-demo/``, and SIDE and
MAD against the exact ground-truth depth are printed beside the baselines that need no
learned shape (constant depth, average ground-truth depth, the ellipsoid prior alone).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from . import embedded
from .config import load_config, save_config
from .eval import gt_depth_to_png
from .export import save_rgb
from .fileio import save_image, save_json, writable_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("gan2shape-demo"),
                        help="output folder (default ./gan2shape-demo)")
    parser.add_argument("--index", type=int, default=0,
                        help="which held-out test face (default 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--invert-steps", type=int, default=300,
                        help="optimisation steps projecting the test image into the GAN")
    parser.add_argument("--baseline-images", type=int, default=20,
                        help="test faces averaged for the average-depth baseline")
    parser.add_argument("--preset", default="demo", help="reconstruction preset (default demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config setting (repeatable)")
    parser.add_argument("--gan", type=Path, default=None,
                        help="a StyleGAN2 checkpoint to use instead of the embedded model")


def gain_over_prior(prior: dict[str, float], result: dict[str, float]) -> str:
    """One line: what the reconstruction changed against the ellipsoid prior it started
    from (both {'SIDE', 'MAD_deg'}); negative changes are gains."""
    side = (result["SIDE"] - prior["SIDE"]) / prior["SIDE"] * 100
    mad = result["MAD_deg"] - prior["MAD_deg"]
    verdict = "better than" if side < 0 and mad < 0 else \
        "worse than" if side > 0 and mad > 0 else "mixed against"
    return (f"GAN2Shape is {verdict} the ellipsoid prior it started from: SIDE {side:+.0f} %, "
            f"MAD {mad:+.2f} deg")


def run(args: argparse.Namespace) -> int:
    from .devices import resolve_device
    from .errors import UserError
    from .eval.heldout import average_depth_pool, baseline_scores, heldout_scenes
    from .gan import load_stylegan2
    from .gan.invert import InvertOptions, PoorFitWarning, codes_for_image
    from .recon import Reconstructor

    if args.index < 0 or args.baseline_images < 1 or args.invert_steps < 0:
        raise UserError("--index and --invert-steps must be >= 0, --baseline-images >= 1")
    started = time.perf_counter()
    device = resolve_device(args.device)
    gan = load_stylegan2(args.gan, device=str(device)) if args.gan else \
        embedded.load_embedded_gan(str(device))
    overrides = [f"view_mvn_path={embedded.asset_path(embedded.VIEW_PRIOR_FILE)}",
                 f"light_mvn_path={embedded.asset_path(embedded.LIGHT_PRIOR_FILE)}",
                 *args.overrides]
    cfg = load_config(args.preset, overrides=overrides)
    out = writable_dir(args.out)
    stem = f"test{args.index:04d}"
    scene = heldout_scenes([args.index])
    image, gt = scene["image"][0], scene["depth"][0]
    save_rgb(image, out / f"{stem}_input.png")
    save_image(gt_depth_to_png(gt, cfg.min_depth, cfg.max_depth), out / f"{stem}_gt_depth.png")
    save_config(cfg, out / "config.yaml")

    print(f"gan2shape demo: held-out test face {args.index} -> {out / stem} on {device}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PoorFitWarning)
        latent, code = codes_for_image(
            gan, image.to(device), InvertOptions(steps=args.invert_steps, progress=True))
    for w in caught:
        print(f"warning: {w.message}")
    torch.save(latent.cpu(), out / f"{stem}_latent.pt")
    invert_s = time.perf_counter() - started

    reconstructor = Reconstructor(gan, cfg, device=device)
    result = reconstructor.fit(image, latent, gt_depth=gt, name=stem,
                               checkpoint=out / f"{stem}.checkpoint.pt", code=code)
    result.export(out / stem)
    total_s = time.perf_counter() - started

    scores = baseline_scores(gt, result.mask[0].cpu(), cfg,
                             average_depth_pool(args.baseline_images), args.index)
    scores["GAN2Shape (this run)"] = {"SIDE": result.metrics["SIDE"],
                                      "MAD_deg": result.metrics["MAD_deg"]}
    print(f"\n{'depth from':<30}{'SIDE x1e-2':>12}{'MAD deg':>10}")
    for name, s in scores.items():
        print(f"{name:<30}{s['SIDE'] * 100:>12.3f}{s['MAD_deg']:>10.2f}")
    print(gain_over_prior(scores["ellipsoid prior"], scores["GAN2Shape (this run)"]))
    print(f"\ninversion {invert_s:.0f} s, total {total_s:.0f} s; outputs in {out / stem}")
    save_json({"scores": scores, "inversion_seconds": invert_s, "total_seconds": total_s,
               "device": str(device), "test_index": args.index}, out / "demo_metrics.json")
    (out / f"{stem}.checkpoint.pt").unlink(missing_ok=True)
    return 0
