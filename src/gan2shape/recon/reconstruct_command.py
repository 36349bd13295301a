"""``gan2shape reconstruct``: 3D shape, albedo, light, view and mesh for images + latents.

Inputs are given either as image files with one latent each (``--latent W.pt ...`` in the
same order, or ``--latent-dir DIR`` holding ``<stem>.pt``), or in the release's layout
(``--image-list FILE --image-root DIR --latent-root DIR``: one image path per line,
relative to the image root; latents at the same relative path with ``.pt``). Each image's
outputs go to ``<out>/<stem>/`` (docs/method.md section 5); a finished image is skipped when the
command is run again, an interrupted one resumes from its last stage checkpoint. Started
by torchrun, the processes split the images (:func:`run`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .. import embedded
from ..config import available_presets, load_config, preset_for_gan, save_config
from ..devices import resolve_device
from ..distributed import SINGLE, Group, from_environment, process_device
from ..errors import UserError
from ..export.mesh import MESH_FORMATS
from ..fileio import writable_dir
from ..gan.images import IMAGE_POLICY
from .stage_checkpoint import FILE_NAME as STAGE_CHECKPOINT


@dataclass
class Job:
    """One image to reconstruct: its files and its output folder name."""

    image: Path
    latent: Path | None
    name: str
    mask: Path | None = None
    gt_depth: Path | None = None


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Images, latents, GAN, settings, masks and device: shared with ``gan2shape pretrain``."""
    parser.epilog = IMAGE_POLICY
    parser.add_argument("images", nargs="*", type=Path, metavar="IMG",
                        help="square RGB images (GAN samples or inverted photos)")
    parser.add_argument("--gan", type=Path, metavar="CKPT",
                        help=f"{embedded.GAN_HELP}, with its view and light priors (as "
                        "gan2shape demo uses it); default: the config's gan_ckpt")
    src = parser.add_argument_group("latents")
    src.add_argument("--latent", nargs="+", type=Path, default=[], metavar="W.pt",
                     help="one W latent file per image, in the order of the images")
    src.add_argument("--latent-dir", type=Path, metavar="DIR",
                     help="folder with <image stem>.pt for every image")
    src.add_argument("--invert", action="store_true",
                     help="find each image's latent by GAN inversion (no latent files)")
    rel = parser.add_argument_group("the release's data layout")
    rel.add_argument("--image-list", type=Path, metavar="FILE",
                     help="one image path per line, relative to --image-root (default: the "
                     "config's img_list_path, when no IMG is given)")
    rel.add_argument("--image-root", type=Path, metavar="DIR",
                     help="default: the config's img_root")
    rel.add_argument("--latent-root", type=Path, metavar="DIR",
                     help="latents at the images' relative paths with the suffix .pt "
                     "(default: the config's latent_root)")
    rel.add_argument("--gt-depth-root", type=Path, metavar="DIR",
                     help="ground-truth depth PNGs at the images' relative paths")
    parser.add_argument("--preset", default=None, choices=available_presets(),
                        help="settings for a category (the release's) or for the embedded "
                        "model (demo); default: the one preset made for the GAN's size "
                        "(64 px: demo, 512 px: car), refused when several are (128 px: "
                        "celeba or synface, 256 px: cat or church)")
    parser.add_argument("--config", type=Path, metavar="YAML",
                        help="YAML file of settings on top of the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one setting (repeatable)")
    parser.add_argument("--pretrained", type=Path, metavar="PTH",
                        help="GAN2Shape weights (netD, netA, netV, netL, netEnc) to start from "
                        "(default: the config's pretrain)")
    parser.add_argument("--mask", nargs="+", type=Path, default=[], metavar="PNG",
                        help="object mask image(s): one for all images or one per image")
    parser.add_argument("--gt-depth", nargs="+", type=Path, default=[], metavar="PNG",
                        help="ground-truth depth PNG(s), one per image: adds SIDE / MAD")
    parser.add_argument("--view-prior", type=Path, metavar="PTH",
                        help="view prior {'mean', 'cov'} (the release's view_mvn.pth)")
    parser.add_argument("--light-prior", type=Path, metavar="PTH",
                        help="light prior {'mean', 'cov'} (the release's light_mvn.pth)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                        help="where to run (default: the config's 'device', auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="results folder: <DIR>/<image stem>/ per image, config.yaml")
    parser.add_argument("--mesh-format", nargs="+", default=["obj"], choices=MESH_FORMATS,
                        help="mesh files to write: obj (always, with its .mtl and texture), "
                        "glb (texture embedded), ply (vertex colours)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo finished images that other settings or inputs made "
                        "(without it such a folder is refused)")


def _per_image(paths: list[Path], n: int, what: str) -> list[Path | None]:
    if not paths:
        return [None] * n
    if len(paths) == 1 and what == "--mask":
        return paths * n
    if len(paths) != n:
        raise UserError(f"{len(paths)} {what} files for {n} images; give one per image")
    return list(paths)


def _latent_path(root: Path, rel: str) -> Path:
    """The latent of image ``rel`` (relative to the image root): ``root/rel`` with ``.pt``,
    the release's layout, or else ``root/<file name>.pt`` when only that exists (the layout
    of ``gan2shape sample``: ``images/x.png`` with ``latents/x.pt``)."""
    same_tree = (root / rel).with_suffix(".pt")
    flat = (root / Path(rel).name).with_suffix(".pt")
    return flat if not same_tree.is_file() and flat.is_file() else same_tree


def _relative_jobs(args) -> list[Job]:
    """Jobs of the release's layout (image list + roots)."""
    if args.image_root is None or (args.latent_root is None and not args.invert):
        raise UserError("--image-list needs --image-root and --latent-root (or --invert)")
    if not args.image_list.is_file():
        raise UserError(f"image list not found: {args.image_list}")
    names = [line.split()[0] for line in args.image_list.read_text().splitlines()
             if line.strip()]
    if not names:
        raise UserError(f"image list {args.image_list} is empty")
    jobs = []
    for rel in names:
        jobs.append(Job(
            image=args.image_root / rel,
            latent=None if args.invert else _latent_path(args.latent_root, rel),
            name=str(Path(rel).with_suffix("")),
            gt_depth=args.gt_depth_root / rel if args.gt_depth_root else None))
    return jobs


def make_jobs(args) -> list[Job]:
    """The list of images with their latent, mask and ground-truth files; checks counts."""
    if args.image_list is not None:
        if args.images:
            raise UserError("give images either as arguments or with --image-list, not both")
        jobs = _relative_jobs(args)
    else:
        if not args.images:
            raise UserError("no images given (IMG... or --image-list)")
        n = len(args.images)
        given = sum([bool(args.latent), args.latent_dir is not None, args.invert])
        if given != 1:
            raise UserError("give exactly one of --latent, --latent-dir and --invert")
        if args.latent:
            if len(args.latent) != n:
                raise UserError(f"{n} images but {len(args.latent)} latent files; "
                                "give one latent per image")
            latents = list(args.latent)
        elif args.latent_dir is not None:
            latents = [args.latent_dir / f"{p.stem}.pt" for p in args.images]
        else:
            latents = [None] * n
        gts = _per_image(args.gt_depth, n, "--gt-depth")
        jobs = [Job(p, w, p.stem, gt_depth=g)
                for p, w, g in zip(args.images, latents, gts, strict=True)]
    masks = _per_image(args.mask, len(jobs), "--mask")
    for job, m in zip(jobs, masks, strict=True):
        job.mask = m
    seen: dict[str, Path] = {}
    for job in jobs:
        if job.name in seen:
            raise UserError(f"two images share the output name {job.name!r}: "
                            f"{seen[job.name]} and {job.image}")
        seen[job.name] = job.image
        for path, what in ((job.image, "image"), (job.latent, "latent file"),
                           (job.mask, "mask"), (job.gt_depth, "ground-truth depth")):
            if path is not None and not path.is_file():
                raise UserError(f"{what} not found: {path}")
    return jobs


def latent_by_inversion(image_path: Path, gan, device: torch.device, progress: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hook for ``--invert``: (W latent (1, style_dim), its z or None) of an image that has
    none, by ``gan2shape.gan.invert.codes_for_file`` (optimisation-based projection, in Z for
    a GAN with an image encoder; ``progress``: a bar over its steps)."""
    try:
        from ..gan import invert
    except ImportError as exc:
        raise UserError("--invert needs GAN inversion (gan2shape.gan.invert), which this "
                        "installation lacks; give latent files instead") from exc
    return invert.codes_for_file(image_path, gan, invert.InvertOptions(progress=progress),
                                 device=device)


# option -> the config key that is its default (the release's YAML files carry these paths)
CONFIG_PATH_OPTIONS = {"gan": "gan_ckpt", "image_list": "img_list_path",
                       "image_root": "img_root", "latent_root": "latent_root",
                       "pretrained": "pretrain"}


def apply_config_paths(args, cfg) -> None:
    """The config's file paths as defaults of the options that were not given; the config
    then records the paths actually used. An image list of the config is not used when
    images are given as arguments (a notice says so)."""
    for option, key in CONFIG_PATH_OPTIONS.items():
        from_config = getattr(cfg, key)
        if option == "image_list" and args.images and from_config is not None:
            print(f"note: the config's img_list_path {from_config} is not used: images are "
                  "given as arguments", file=sys.stderr)
            setattr(cfg, key, None)
            continue
        if getattr(args, option) is None and from_config is not None:
            setattr(args, option, Path(from_config))
        value = getattr(args, option)
        setattr(cfg, key, None if value is None else str(value))
    if args.gan is None:
        raise UserError("no GAN given: pass --gan CKPT (or set gan_ckpt in the --config file)")


def prepare(args, group: Group = SINGLE):
    """Config, jobs, device, GAN and latents ((W, z or None) per job, None where it is to
    be inverted) from the arguments; every input is checked
    here, before any long work starts. Under torchrun (``group``), each process gets its
    own GPU."""
    from ..gan import load_stylegan2
    from ..gan.latents import load_latent_codes

    overrides = list(args.overrides)
    if args.gan is not None:
        files = embedded.resolve_gan(args.gan)
        args.gan = files.checkpoint
        args.view_prior = args.view_prior or files.view_prior
        args.light_prior = args.light_prior or files.light_prior
    if args.view_prior is not None:
        overrides.append(f"view_mvn_path={args.view_prior}")
    if args.light_prior is not None:
        overrides.append(f"light_mvn_path={args.light_prior}")
    cfg = load_config(args.preset, args.config, overrides)
    apply_config_paths(args, cfg)
    jobs = make_jobs(args)
    device = process_device(group, resolve_device(args.device or cfg.device))
    gan = load_stylegan2(args.gan, device=device)
    if args.preset is None:  # the settings made for this GAN's size
        args.preset = preset_for_gan(gan.size)
        print(f"gan2shape: preset {args.preset} (the one for {gan.size} px GANs; --preset "
              "chooses another)", file=sys.stderr)
        paths = {key: getattr(cfg, key) for key in CONFIG_PATH_OPTIONS.values()}
        cfg = load_config(args.preset, args.config, overrides)
        for key, value in paths.items():
            setattr(cfg, key, value)
    cfg.check_gan(gan.size, gan.channel_multiplier)
    style_dim = gan.generator.style_dim
    latents = [load_latent_codes(j.latent, style_dim) if j.latent is not None else None
               for j in jobs]
    if cfg.latent_space == "z" and cfg.use_gan_samples:
        for job, codes in zip(jobs, latents, strict=True):
            if codes is not None and codes[1] is None:
                raise UserError(f"{job.latent}: latent_space z needs each image's input "
                                "latent z, and this file holds only a W: use --invert, or "
                                "latent files written by 'gan2shape invert' or "
                                "'gan2shape sample' for this GAN")
    if args.pretrained is not None and not args.pretrained.is_file():
        raise UserError(f"GAN2Shape weights not found: {args.pretrained}")
    return cfg, jobs, device, gan, latents


def load_inputs(job: Job, codes: tuple[torch.Tensor, torch.Tensor | None] | None, gan, device,
                cfg, progress: bool = False):
    """(image, latent, code, mask, gt_depth) of one job: its W latent and z (or None) from
    ``codes``, or by inversion when None (``progress``: the inversion's bar)."""
    from ..eval import gt_depth_from_png
    from ..gan.images import check_resolution, load_image
    from .priors import load_mask

    if codes is None:  # a photo: square-cropped and resized as the inversion sees it
        image = load_image(job.image, gan.size)
        codes = latent_by_inversion(job.image, gan, device, progress)
    else:  # a GAN sample at its own size: the reconstructor crops and resizes it
        image = load_image(job.image)
        check_resolution(job.image, image.shape[-1], cfg.image_size)
    mask = load_mask(job.mask) if job.mask is not None else None
    gt = gt_depth_from_png(job.gt_depth, min_depth=cfg.min_depth,
                           max_depth=cfg.max_depth) if job.gt_depth is not None else None
    return image, *codes, mask, gt


def run(args) -> int:
    """Reconstruct every unfinished image. Under torchrun, process r of w takes images
    r, r + w, ... of the list (each process its own GPU); the processes never talk, so a
    stopped run resumes with any number of processes."""
    from .finished import DIGEST_KEY, recorded_digest, settings_digest, stale_error
    from .reconstructor import Reconstructor, is_finished

    group = from_environment()
    writable_dir(args.out)
    cfg, jobs, device, gan, latents = prepare(args, group)
    mine = group.shard(list(zip(jobs, latents, strict=True)))
    # (ground truth only adds metrics: a rerun without it keeps the results)
    digests = {j.name: settings_digest(cfg, {"image": j.image, "latent": j.latent,
                                             "mask": j.mask}) for j, _ in mine}
    todo, stale = [], []
    for job, codes in mine:
        meshes = all((args.out / job.name / f"mesh.{fmt}").is_file() for fmt in args.mesh_format)
        if is_finished(args.out / job.name) and meshes:
            if recorded_digest(args.out / job.name) == digests[job.name]:
                continue
            stale.append(job.name)
        todo.append((job, codes))
    if stale and not args.overwrite:
        raise stale_error(args.out, stale)
    for name in stale:  # --overwrite: unfinished until redone, no stale stage checkpoint
        (args.out / name / "metrics.json").unlink()
        (args.out / name / STAGE_CHECKPOINT).unlink(missing_ok=True)
    if group.is_main:
        save_config(cfg, args.out / "config.yaml")
    where = f" (process {group.rank} of {group.world_size})" if group.distributed else ""
    skipped = len(mine) - len(todo)
    if skipped:
        print(f"gan2shape reconstruct{where}: {skipped} of {len(mine)} images already "
              "finished, skipped")
    if not todo:
        return 0
    show = not args.quiet and group.is_main
    rec = Reconstructor(gan, cfg, pretrained=args.pretrained, device=device, progress=show)
    for job, codes in tqdm(todo, desc="images", unit="image", disable=not show):
        image, latent, code, mask, gt = load_inputs(job, codes, gan, device, cfg, show)
        out_dir = args.out / job.name
        checkpoint = out_dir / STAGE_CHECKPOINT
        result = rec.fit(image, latent, mask=mask, gt_depth=gt, name=job.name,
                         checkpoint=checkpoint, code=code)
        result.metrics[DIGEST_KEY] = digests[job.name]
        result.export(out_dir, mesh_formats=tuple(args.mesh_format))
        checkpoint.unlink(missing_ok=True)
        line = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()
                         if k in ("SIDE", "MAD_deg"))
        tqdm.write(f"{job.name}: done{' (' + line + ')' if line else ''} -> {out_dir}{where}")
    return 0
