"""The paper's Table 1 on the embedded model: depth from held-out procedural faces.

    python benchmarks/synthetic.py [--images 20] [--first 0] [--preset PRESET] [--set KEY=VALUE ...]
        [--out runs/synthetic] [--device auto] [--invert-steps 300] [--threads 1] [--oracle]
        [--family v2] [--split test] [--family-oracle] [--oracles-only] [--baselines-only]
        [--report]

For each of the first N held-out test faces (family ``embedded.TEST_SEED``; the embedded GAN
was trained on ``TRAIN_SEED``), SIDE (x1e-2) and MAD (deg) with the release's definitions,
as mean and sample standard deviation over the faces, for:

- constant depth, the average ground-truth depth of 20 other test faces and the ellipsoid
  prior alone (placed on the image's object mask): ``gan2shape.eval.heldout``;
- no GAN: the same networks from the same prior, trained on the input image alone
  (``use_gan_samples=false``: Steps 1 and 3 with their iteration counts, no Step 2);
- GAN2Shape: the test image projected into the GAN (``latent_for_image``), then the full
  method with the preset's schedule;
- with ``--oracle``, "perfect GAN": GAN2Shape whose projection of every pseudo sample is the
  true face under that sample's view and light (``heldout.truth_projector``): what the
  reconstruction makes of perfect projected samples, an upper bound that separates the
  GAN's share of the error from the reconstruction's; and "perfect GAN and light": the same
  with the input's true light instead of the light network's estimate (``Reconstructor.fit``
  ``light``), which separates the light estimate's share;
- with ``--family-oracle``, "family GAN": GAN2Shape whose projection of every pseudo sample
  is the procedural family's best member for it (``heldout.family_projector``: what
  ``benchmarks/projection.py --family-fit`` measures, learned from by Step 3), the result
  a generator that models the family exactly would give. It holds the input's view, so it
  needs ``--set pseudo_views=false`` (then every learned row runs with it);

and the per-image wall time of the two learned methods (GAN2Shape's includes the inversion).

Results are cached per face in ``OUT/images/testNNNN.json`` (atomically, after each method),
so a rerun with the same settings skips what is done; a change of settings (preset,
overrides, inversion steps, GAN weights) recomputes. The GAN is the embedded model as first
snapshotted into ``OUT/`` (the packaged asset may be replaced while it trains), or ``--gan``.
``--family v1`` scores the test faces of the first version of the procedural family (the
first embedded model's), with its exact view and light priors (written into ``OUT/``) and its
preset
(``heldout.FAMILY_PRESETS``); the learned methods then need ``--gan``, a GAN trained on that
family. ``--baselines-only`` scores the three baselines alone (any family, no GAN needed:
the embedded model only provides the mask estimate's setting). ``--report`` only prints the
table of the finished faces. ``--oracles-only`` skips no GAN and GAN2Shape (the baselines and
the oracles asked for run). ``--split validation`` scores the validation faces (seed
``embedded.VALIDATION_SEED``), where settings are chosen. The table goes to ``OUT/table.md``,
the effective configuration of GAN2Shape to ``OUT/config.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from gan2shape import embedded
from gan2shape.config import load_config, save_config
from gan2shape.data import scenes
from gan2shape.errors import UserError, run_script
from gan2shape.eval import heldout
from gan2shape.fileio import atomic_path, load_torch, save_json, save_text
from gan2shape.recon import Reconstructor, SequenceSpec

LEARNED = ("no GAN", "GAN2Shape")
METHODS = (*heldout.BASELINES, *LEARNED)
ORACLES = ("perfect GAN", "perfect GAN and light")
FAMILY_ORACLE = "family GAN"
BASELINE_IMAGES = 20  # other test faces averaged for the average-depth baseline (as the demo)
# The result's rotation / relighting sequences are not scored: one frame each keeps their cost
# out of the timings.
NO_SEQUENCES = SequenceSpec(n_yaw=1, n_pitch=1, relight_x=(0.0,), relight_y=(0.0,),
                            relight_strength=(0.3,))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20, help="held-out test faces 0..N-1")
    p.add_argument("--first", type=int, default=0,
                   help="start at this face (processes given disjoint ranges can share --out; "
                        "then --report --images N tabulates faces 0..N-1)")
    p.add_argument("--preset", default=None,
                   help=f"reconstruction preset (default: the family's, {heldout.FAMILY_PRESETS})")
    p.add_argument("--family", default=embedded.FAMILY, choices=scenes.FAMILIES,
                   help=f"version of the procedural family (default {embedded.FAMILY}, the "
                        "embedded GAN's)")
    p.add_argument("--baselines-only", action="store_true",
                   help="only the baselines (constant, average depth, ellipsoid prior)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config setting, for both learned methods (repeatable)")
    p.add_argument("--out", type=Path, default=Path("runs/synthetic"))
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--invert-steps", type=int, default=300,
                   help="optimisation steps projecting each test image into the GAN")
    p.add_argument("--gan", type=Path, default=None,
                   help="StyleGAN2 checkpoint (default: a snapshot of the embedded model)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--oracle", action="store_true",
                   help="also run the perfect GAN (the true face as every projected sample), "
                   "with the estimated and with the true input light")
    p.add_argument("--family-oracle", action="store_true",
                   help="also run the family GAN (the family's best fit of each pseudo "
                   "sample as its projection); needs --set pseudo_views=false")
    p.add_argument("--oracles-only", action="store_true",
                   help="skip no GAN and GAN2Shape: the baselines and the oracles asked for")
    p.add_argument("--split", default="test", choices=tuple(heldout.SPLIT_SEEDS),
                   help="held-out faces: test (seed 1, the tables) or validation (seed 2, "
                   "where settings are chosen)")
    p.add_argument("--report", action="store_true", help="only tabulate the finished faces")
    return p.parse_args()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def snapshot(out: Path) -> dict[str, Path]:
    """The embedded GAN and its view / light priors, copied into out on first use."""
    files = {}
    for key, name in (("gan", embedded.GAN_FILE), ("view", embedded.VIEW_PRIOR_FILE),
                      ("light", embedded.LIGHT_PRIOR_FILE)):
        files[key] = out / name
        if not files[key].is_file():
            with atomic_path(files[key]) as tmp:
                shutil.copyfile(embedded.asset_path(name), tmp)
    return files


def config_digest(cfg) -> str:
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_record(path: Path, settings: dict) -> dict:
    """The cached record of one face, or a fresh one when absent or made under other
    settings."""
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = {}
        if record.get("settings") == settings:
            return record
    return {"settings": settings, "scores": {}, "seconds": {}}


class Bench:
    """Everything that is set up once: the configs, the GAN and (unless ``report_only``)
    both reconstructors."""

    def __init__(self, args: argparse.Namespace, report_only: bool = False):
        from gan2shape.devices import resolve_device
        from gan2shape.gan import load_stylegan2

        self.device = resolve_device(args.device)
        files = {} if args.gan else snapshot(args.out)
        gan_path = args.gan or files["gan"]
        if files and args.family == embedded.FAMILY:  # the embedded model's, as snapshotted
            priors = [f"view_mvn_path={files['view']}", f"light_mvn_path={files['light']}"]
        else:
            priors = heldout.family_prior_overrides(args.family, args.out)
        self.family, self.split = args.family, args.split
        self.methods = heldout.BASELINES if args.baselines_only or args.oracles_only \
            else METHODS
        self.cfg = load_config(args.preset, overrides=[*priors, *args.overrides])
        if args.family_oracle and self.cfg.pseudo_views:
            raise UserError("--family-oracle holds the input's view: add --set "
                            "pseudo_views=false")
        self.cfg_no_gan = load_config(args.preset, overrides=[*priors, *args.overrides,
                                                              "use_gan_samples=false"])
        checkpoint = load_torch(gan_path, "StyleGAN2 checkpoint")
        self.gan_iteration = checkpoint.get("iteration") if isinstance(checkpoint, dict) else None
        self.gan = load_stylegan2(checkpoint, device=str(self.device))
        self.invert_steps = args.invert_steps
        self.settings = {"preset": args.preset, "overrides": args.overrides,
                         "family": args.family, "split": args.split,
                         "config": config_digest(self.cfg),
                         "config_no_gan": config_digest(self.cfg_no_gan),
                         "gan": sha256(Path(gan_path)), "invert_steps": args.invert_steps,
                         "baseline_images": BASELINE_IMAGES}
        if report_only:
            return
        save_config(self.cfg, args.out / "config.yaml")  # GAN2Shape's; no GAN adds one switch
        self.full = Reconstructor(self.gan, self.cfg, device=self.device, progress=False,
                                  sequences=NO_SEQUENCES)
        self.no_gan = Reconstructor(self.gan, self.cfg_no_gan, device=self.device,
                                    progress=False, sequences=NO_SEQUENCES)
        self.pool = heldout.average_depth_pool(BASELINE_IMAGES, args.family, args.split)
        self.oracles = (ORACLES if args.oracle else ()) \
            + ((FAMILY_ORACLE,) if args.family_oracle else ())

    def run_face(self, index: int, path: Path, bar: tqdm) -> dict:
        """Fill in the missing methods of face ``index``'s record, saving after each."""
        from gan2shape.gan.invert import (
            InvertOptions,
            PoorFitWarning,
            codes_for_image,
            prepare_image,
            psnr_db,
        )

        record = load_record(path, self.settings)
        scores, seconds = record["scores"], record["seconds"]
        scene = heldout.heldout_scenes([index], self.family, self.split)
        label = f"{self.split}{index:04d}"
        image, gt = scene["image"][0], scene["depth"][0]
        style_dim = self.gan.generator.style_dim
        if not all(name in scores for name in heldout.BASELINES):
            bar.set_postfix_str(f"{label} baselines")
            target = self.no_gan.target(image, torch.zeros(1, style_dim))
            scores.update(heldout.baseline_scores(gt, target.mask[0, 0].cpu(), self.cfg,
                                                  self.pool, index))
            save_json(record, path)
        if self.methods == heldout.BASELINES and not self.oracles:
            return record
        if "no GAN" in self.methods and "no GAN" not in scores:
            bar.set_postfix_str(f"{label} no GAN")
            start = time.perf_counter()
            result = self.no_gan.fit(image, torch.zeros(1, style_dim), gt_depth=gt)
            seconds["no GAN"] = time.perf_counter() - start
            scores["no GAN"] = {k: result.metrics[k] for k in ("SIDE", "MAD_deg")}
            save_json(record, path)
        if "GAN2Shape" in self.methods and "GAN2Shape" not in scores:
            bar.set_postfix_str(f"{label} inversion")
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PoorFitWarning)  # the PSNR is recorded instead
                latent, code = codes_for_image(self.gan, image.to(self.device),
                                               InvertOptions(steps=self.invert_steps))
            seconds["inversion"] = time.perf_counter() - start
            with torch.no_grad():
                projected = self.gan.generator.synthesis(latent)
                target = prepare_image(image[None].to(self.device), self.gan.size)
                record["inversion_psnr_db"] = float(psnr_db(projected, target)[0])
            bar.set_postfix_str(f"{label} GAN2Shape")
            start = time.perf_counter()
            result = self.full.fit(image, latent, gt_depth=gt, code=code)
            seconds["GAN2Shape"] = time.perf_counter() - start + seconds["inversion"]
            scores["GAN2Shape"] = {k: result.metrics[k] for k in ("SIDE", "MAD_deg")}
            save_json(record, path)
        for oracle_name in self.oracles:
            if oracle_name in scores:
                continue
            bar.set_postfix_str(f"{label} {oracle_name}")
            start = time.perf_counter()
            projector = heldout.family_projector(scene, self.family) \
                if oracle_name == FAMILY_ORACLE else heldout.truth_projector(scene, self.cfg)
            oracle = Reconstructor(self.gan, self.cfg, device=self.device, progress=False,
                                   sequences=NO_SEQUENCES, projector=projector)
            light = heldout.input_light(scene) if oracle_name == ORACLES[1] else None
            # (the projector replaces the GAN's projection: the latent and its z are unused)
            zero = torch.zeros(1, style_dim)
            result = oracle.fit(image, zero, gt_depth=gt, light=light, code=zero)
            seconds[oracle_name] = time.perf_counter() - start
            scores[oracle_name] = {k: result.metrics[k] for k in ("SIDE", "MAD_deg")}
            save_json(record, path)
        return record


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """Mean ± sample standard deviation of the finite values; undefined scores (a depth
    with no valid pixel on the ground truth) are counted as failures."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"failed on all {len(values)}"
    mean = statistics.fmean(finite) * scale
    std = statistics.stdev(finite) * scale if len(finite) > 1 else math.nan
    failed = len(values) - len(finite)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" + (f" ({failed} failed)" if failed else "")


def table(records: dict[int, dict], settings: dict, device: str,
          gan_iteration: int | None = None, methods: tuple[str, ...] = METHODS) -> str:
    """Markdown table over the faces whose every method of ``methods`` is done;
    gan_iteration: the GAN trainer's iteration stored in its checkpoint, when known."""
    done = {i: r for i, r in sorted(records.items()) if all(m in r["scores"] for m in methods)}
    if not done:
        return "No test face is finished yet.\n"
    n = len(done)
    rows = ["| depth from | SIDE (x1e-2) | MAD (deg) | wall time / image (s) |",
            "|---|---|---|---|"]
    oracles = [m for m in (*ORACLES, FAMILY_ORACLE)
               if all(m in r["scores"] for r in done.values())]
    for m in (*methods, *oracles):
        side = [r["scores"][m]["SIDE"] for r in done.values()]
        mad = [r["scores"][m]["MAD_deg"] for r in done.values()]
        wall = mean_std([r["seconds"][m] for r in done.values()], digits=0) \
            if m in (*LEARNED, *oracles) else "-"
        rows.append(f"| {m} | {mean_std(side, 100, 3)} | {mean_std(mad)} | {wall} |")
    indices = list(done)
    faces = f"faces {indices[0]}..{indices[-1]}" if indices == list(
        range(indices[0], indices[-1] + 1)) else f"faces {indices}"
    split = settings.get("split", "test")
    head = (
        f"N = {n} held-out {split} {faces} (procedural family {settings.get('family', 'v1')}, "
        f"seed {heldout.SPLIT_SEEDS[split]}), {embedded.IMAGE_SIZE} px, preset "
        f"{settings['preset']}"
        + (f" with {' '.join(settings['overrides'])}" if settings["overrides"] else ""))
    if "GAN2Shape" not in methods:
        return "\n".join([f"{head}. Mean ± sample standard deviation over the faces.", "",
                          *rows]) + "\n"
    inversion = [r["seconds"]["inversion"] for r in done.values()]
    psnr = [r["inversion_psnr_db"] for r in done.values()]

    def beats(ours: float, theirs: float) -> bool:  # a failure (NaN) loses
        return math.isfinite(ours) and (not math.isfinite(theirs) or ours < theirs)

    better = {k: sum(beats(r["scores"]["GAN2Shape"][k], r["scores"]["no GAN"][k])
                     for r in done.values()) for k in ("SIDE", "MAD_deg")}
    lines = [
        head + f", GAN sha256 {settings['gan']}"
        + (f" (training iteration {gan_iteration})" if gan_iteration is not None else "")
        + f", {settings['invert_steps']} inversion steps, "
        f"device {device}. Mean ± sample standard deviation over the faces.",
        "",
        *rows,
        "",
        f"GAN2Shape's time includes the inversion: {mean_std(inversion, digits=0)} s "
        f"(projection PSNR {mean_std(psnr, digits=1)} dB). GAN2Shape is better than no GAN "
        f"on {better['SIDE']}/{n} faces by SIDE and {better['MAD_deg']}/{n} by MAD.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    if args.images < 1 or args.invert_steps < 0 or args.threads < 1 or args.first < 0:
        raise UserError("--images and --threads must be >= 1, --invert-steps and --first >= 0")
    if args.family != embedded.FAMILY and args.gan is None and not args.baselines_only:
        raise UserError(f"the embedded GAN was trained on family {embedded.FAMILY}; give "
                        f"--gan with a GAN trained on {args.family}, or --baselines-only")
    if args.oracles_only and not (args.oracle or args.family_oracle):
        raise UserError("--oracles-only needs --oracle or --family-oracle")
    args.preset = args.preset or heldout.FAMILY_PRESETS[args.family]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    faces = args.out / "images"
    faces.mkdir(exist_ok=True)
    bench = Bench(args, report_only=args.report)
    records = {}
    bar = tqdm(range(args.first, args.first + args.images), desc=f"{args.split} faces", unit="face",
               disable=args.report)
    for index in bar:
        path = faces / f"{args.split}{index:04d}.json"
        if args.report:
            record = load_record(path, bench.settings)
        else:
            record = bench.run_face(index, path, bar)
        records[index] = record
    text = table(records, bench.settings, str(bench.device), bench.gan_iteration,
                 bench.methods)
    save_text(text, args.out / "table.md")
    print(text)
    return 0


if __name__ == "__main__":
    run_script(main)
