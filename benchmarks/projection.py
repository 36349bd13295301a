"""Does the GAN's projection of pseudo samples carry shape information? Measured on the
embedded model's held-out test faces, where the truth is known.

    python benchmarks/projection.py [--images 8] [--first 0] [--gan CKPT] [--preset PRESET]
        [--set KEY=VALUE ...] [--samples 16] [--invert-steps 300] [--fit-steps 200]
        [--true-light] [--family-fit] [--no-gan] [--family-steps 400] [--restarts 8]
        [--family-anchor 0.003]
        [--family v1] [--split test] [--threads 1]

GAN2Shape learns shape only from how the GAN changes a pseudo sample when it projects it:
the pseudo sample shows the current (prior) shape under a new light, and a GAN that knows
faces should return the same face with the shading of its true shape. For each face this
runs Step 1 and Step 2 of the preset (pseudo samples relight the input's view:
``pseudo_views=false``, so they stay aligned with the truth), renders ``--samples`` pseudo
samples, projects them as Step 3 would learn from them (through the trained latent encoder,
or by optimising each one's latent with ``--set projection=optimise``), renders the true
face under each sample's view and light (``heldout.truth_projector``), and reports mean
|error| against that truth on the head, in [-1, 1] image units, for:

- pseudo: the pseudo samples themselves (what the prior alone predicts);
- projected: their projections by the preset's ``projection`` (what Step 3 learns from);
- optimised: the GAN's best fit of each pseudo sample (optimised in W from the face's
  latent, ``--fit-steps``): what a perfect encoder would return;
- best fit: the GAN's best fit of each truth, the same way: the floor that any projection
  onto this GAN can reach;

and the information ratio (pseudo - projected) / (pseudo - best fit), of the means over the
faces (and per face): 1 when projection lands on the GAN's best explanation of the truth, 0
when it adds nothing, below 0 when it moves the samples away from the truth. A better GAN
(training, size) should raise it; "optimised" tells the encoder's share from the GAN's.
``--true-light`` gives Step 1 each face's true light (in the input's view frame,
``heldout.input_light``) instead of the light network's estimate (the prior's mean at the
start): how much of the pseudo samples' error is the input's light.

``--family-fit`` adds the family-fit ceiling: the same errors and ratio with the exact
procedural family as the "generator" (``data.fit``). The family's numbers (head, light,
background; the input's true view held fixed) are fitted to the input image from the
family's centre (``--restarts``, the best kept), then from that fit to each pseudo sample
and to each truth (``--family-steps`` of Adam on the whole-image L1, plus
``--family-anchor`` times the squared departure of the head's logits from the input's fit:
the counterpart of Step 2's regulariser of the latent offset, which keeps a projection near
the input's own code; 0 lets the head go anywhere in the family): "family fit" and "family
floor" take the places of "optimised" and "best fit". It is what a generator that models
the family exactly, with the face and the light apart in its latent, can give.
``--no-gan`` skips the GAN (its inversion, Step 2 and the encoder); the GAN's
discriminator is still Step 1's perceptual feature network (the preset's ``perceptual:
discriminator``), and Step 2's pseudo batches are still drawn (and discarded) so the
samples are the same as with the GAN. ``--family v2 --split validation``
measures another version of the family (with its own exact view and light priors) or its
validation faces (seed 2; settings are chosen there, the test faces are for the tables).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
from tqdm import tqdm

from gan2shape import embedded
from gan2shape.config import load_config
from gan2shape.data import fit, scenes
from gan2shape.errors import UserError, run_script
from gan2shape.eval import heldout
from gan2shape.gan import load_stylegan2
from gan2shape.gan.invert import InvertOptions, PoorFitWarning, codes_for_image, invert
from gan2shape.recon import Reconstructor, SequenceSpec, steps
from gan2shape.recon.reconstructor import stage_plan

# The best fit starts at the face's own latent: a small step and no latent noise keep it in
# that basin (the projector's defaults are for a start at the mean latent).
FIT_LR = 0.02
NO_SEQUENCES = SequenceSpec(n_yaw=1, n_pitch=1, relight_x=(0.0,), relight_y=(0.0,),
                            relight_strength=(0.3,))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8, help="how many held-out test faces")
    p.add_argument("--first", type=int, default=0, help="the first of them (faces FIRST..)")
    p.add_argument("--gan", default=None, help="StyleGAN2 checkpoint (default: the embedded)")
    p.add_argument("--preset", default=None,
                   help="reconstruction preset (default: the family's, "
                        f"{heldout.FAMILY_PRESETS})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--samples", type=int, default=16, help="pseudo samples per face")
    p.add_argument("--invert-steps", type=int, default=300)
    p.add_argument("--fit-steps", type=int, default=200,
                   help="W optimisation steps of the GAN's best fit of each truth")
    p.add_argument("--true-light", action="store_true",
                   help="Step 1 lights the input with its true light")
    p.add_argument("--family-fit", action="store_true",
                   help="also project the samples onto the exact procedural family")
    p.add_argument("--no-gan", action="store_true",
                   help="skip the GAN's projections (with --family-fit: the ceiling alone)")
    p.add_argument("--family-steps", type=int, default=400,
                   help="Adam steps of each family fit of the samples and truths")
    p.add_argument("--family-anchor", type=float, default=fit.PROJECTION_ANCHOR,
                   help="weight holding the head of the family's fits near the input's fit "
                        f"(default {fit.PROJECTION_ANCHOR}; 0: free)")
    p.add_argument("--restarts", type=int, default=8,
                   help="family fits of the input image from the family's centre")
    p.add_argument("--family", default=embedded.FAMILY, choices=scenes.FAMILIES,
                   help=f"version of the procedural family (default {embedded.FAMILY}, the "
                        "embedded GAN's)")
    p.add_argument("--split", default="test", choices=tuple(heldout.SPLIT_SEEDS),
                   help="held-out faces: test (seed 1) or validation (seed 2)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def face_target(rec: Reconstructor, scene: dict, latent: torch.Tensor,
                true_light: bool, code: torch.Tensor | None = None) -> steps.Target:
    """The face's target (code: its z, for ``latent_space: z``); with ``true_light`` its
    input is lit by the scene's true light instead of the light network's estimate."""
    target = rec.target(scene["image"][0], latent, code=code)
    if true_light:
        target.light = heldout.input_light(scene)
    return target


def masked_error(images: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |images - truth| over the mask (1, 1, S, S) and the colour channels."""
    weight = mask.expand_as(images)
    return float(((images - truth).abs() * weight).sum() / weight.sum())


def information_ratio(pseudo: float, projected: float, best: float) -> float:
    """(pseudo - projected) / (pseudo - best): the share of the attainable improvement that
    the projection realises (NaN when the GAN cannot improve on the pseudo samples at all)."""
    gap = pseudo - best
    return (pseudo - projected) / gap if gap > 0 else float("nan")


def measure_face(gan, cfg, index: int, args) -> dict[str, float]:
    scene = heldout.heldout_scenes([index], args.family, args.split)
    image = scene["image"][0]
    if args.no_gan:
        latent = code = torch.zeros(1, gan.generator.style_dim)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PoorFitWarning)
            latent, code = codes_for_image(gan, image, InvertOptions(steps=args.invert_steps))
    rec = Reconstructor(gan, cfg, device="cpu", progress=False, sequences=NO_SEQUENCES)
    ctx, stage = rec.ctx, stage_plan(cfg)[0]
    torch.manual_seed(cfg.seed)
    target = face_target(rec, scene, latent, args.true_light, code)
    if rec.needs_prior:
        rec.fit_prior(target)
    rec.train_steps(steps.STEP1_NETS, stage.step1, "step 1",
                    lambda: steps.step1_loss(ctx, target, stage.flip1))
    canon = steps.canon_of(ctx, target)
    if cfg.projection == "optimise":
        pass  # Step 2 has nothing to train and draws nothing
    elif args.no_gan:  # Step 2's draws, so that the samples are those of a run with the GAN
        for _ in range(stage.step2):
            steps.sample_pseudo(ctx, canon, cfg.batchsize)
    else:
        rec.train_steps(steps.STEP2_NETS, stage.step2, "step 2",
                        lambda: steps.step2_loss(ctx, target, canon))
    pseudo = steps.sample_pseudo(ctx, canon, args.samples)
    truth = heldout.truth_projector(scene, cfg)(pseudo)
    head = (scene["head_mask"][:1, None] > 0.5).float()
    errors = {"pseudo": masked_error(pseudo.images, truth, head)}
    if not args.no_gan:
        with torch.no_grad():
            projected = steps.project_samples(ctx, target, pseudo)

        def best_fit(images: torch.Tensor) -> torch.Tensor:
            options = InvertOptions(steps=args.fit_steps, lr=FIT_LR, latent_noise=0.0)
            return invert(gan.generator, images, options, gan.discriminator, init=latent).images

        errors.update({"projected": masked_error(projected, truth, head),
                       "optimised": masked_error(best_fit(pseudo.images), truth, head),
                       "best fit": masked_error(best_fit(truth), truth, head)})
        errors["ratio"] = information_ratio(errors["pseudo"], errors["projected"],
                                            errors["best fit"])
    if args.family_fit:
        errors.update(family_errors(scene, pseudo.images, truth, head, args))
        errors["family ratio"] = information_ratio(errors["pseudo"], errors["family fit"],
                                                   errors["family floor"])
    return errors


def family_errors(scene: dict, pseudo: torch.Tensor, truth: torch.Tensor, head: torch.Tensor,
                  args) -> dict[str, float]:
    """Errors of the family's fits of the pseudo samples (N, 3, S, S) and of their truths,
    both started from the family's fit of the input image (seen from its true view)."""
    start, family_fit = fit.projection_from_input(
        scene["image"][:1], scene["view_raw"][:1], args.family, args.family_steps,
        args.restarts, args.family_anchor)
    return {"family input": float(start.loss[0]),
            "family fit": masked_error(family_fit(pseudo), truth, head),
            "family floor": masked_error(family_fit(truth), truth, head)}


def main() -> int:
    args = parse_args()
    if min(args.images, args.samples, args.threads, args.restarts) < 1 or min(
            args.fit_steps, args.invert_steps, args.first, args.family_steps,
            args.family_anchor) < 0:
        raise UserError("--images, --samples, --restarts and --threads must be >= 1, --first, "
                        "--fit-steps, --family-steps, --family-anchor and --invert-steps >= 0")
    if args.no_gan and not args.family_fit:
        raise UserError("--no-gan leaves nothing to measure without --family-fit")
    if args.family != embedded.FAMILY and args.gan is None and not args.no_gan:
        raise UserError(f"the embedded GAN was trained on family {embedded.FAMILY}; give "
                        f"--gan with a GAN trained on {args.family}, or --no-gan")
    torch.set_num_threads(args.threads)
    gan_path = args.gan or embedded.asset_path(embedded.GAN_FILE)
    gan = load_stylegan2(gan_path, device="cpu")
    priors_dir = tempfile.TemporaryDirectory()
    args.preset = args.preset or heldout.FAMILY_PRESETS[args.family]
    priors = heldout.family_prior_overrides(args.family, priors_dir.name)
    cfg = load_config(args.preset, overrides=[*priors, *args.overrides, "pseudo_views=false"])
    keys = ("pseudo",) + (() if args.no_gan else ("projected", "optimised", "best fit")) \
        + (("family fit", "family floor") if args.family_fit else ())
    ratios = (() if args.no_gan else ("ratio",)) + (("family ratio",) if args.family_fit else ())
    rows = []
    start = time.perf_counter()
    for index in tqdm(range(args.first, args.first + args.images), desc=f"{args.split} faces",
                      unit="face"):
        rows.append(measure_face(gan, cfg, index, args))
        r = rows[-1]
        tqdm.write(f"{args.split}{index:04d}: " + " ".join(f"{k} {r[k]:.4f}" for k in keys) + " "
                   + " ".join(f"{k} {r[k]:+.2f}" for k in ratios))
    light = ", true input light" if args.true_light else ""
    if args.family_fit:
        light += f", family anchor {args.family_anchor:g}"
    last = args.first + args.images - 1
    gan_name = "no GAN (discriminator only)" if args.no_gan else f"GAN {gan_path}"
    print(f"{gan_name}, family {args.family}, preset {args.preset} "
          f"{' '.join(args.overrides)}{light}, {args.samples} relit pseudo samples per face, "
          f"{args.split} faces {args.first}..{last}, {time.perf_counter() - start:.0f} s")
    means = {}
    for key in keys:
        values = [r[key] for r in rows]
        means[key] = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"  {key:12s} {means[key]:.4f} ± {spread:.4f}")
    priors_dir.cleanup()
    floors = {"projected": "best fit", "optimised": "best fit", "family fit": "family floor"}
    for key, floor in floors.items():
        if key in means:
            ratio = information_ratio(means["pseudo"], means[key], means[floor])
            print(f"  information ratio of the means, {key}: {ratio:+.2f}")
    return 0


if __name__ == "__main__":
    run_script(main)
