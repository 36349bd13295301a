"""``gan2shape make-data``: procedural face images with exact ground-truth depth.

Layout under --out (docs/method.md section 5):
  images/<stem>.png   8-bit RGB
  depth/<stem>.png    16-bit ground-truth depth, release convention (near is bright)
  depth/<stem>.npy    float32 metric depth in the image's view (far 1.1 off the head)
  meta/<stem>.json    true view (physical and raw), light (physical and raw), background
  list.txt            one image path per line, relative to --out
  view_prior.pt, light_prior.pt   {'mean', 'cov'} of the raw view / light distributions
  recipe.json         seed, size, split name and the sampling ranges

Sample i depends only on (seed, i): a run can be interrupted and rerun (complete samples,
those with their meta file, which is written last, are skipped), and growing -n keeps the
existing samples.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from ..eval.metrics import gt_depth_to_png
from ..fileio import save_image, save_json, save_npy, save_text, save_torch
from . import heads, scenes

STEM_DIGITS = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("-n", type=int, required=True, help="number of samples")
    parser.add_argument("--seed", type=int, default=0,
                        help="family seed; sample i is the same for any -n (default 0)")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    parser.add_argument("--split-name", default="",
                        help="optional prefix of the file stems, e.g. 'test' -> test_000000")
    parser.add_argument("--max-translation", type=float,
                        default=scenes.DEFAULT_MAX_TRANSLATION,
                        help="largest |tx|, |ty| of the views (world units; default "
                             f"{scenes.DEFAULT_MAX_TRANSLATION}, about 2.7 px at 64 px)")
    parser.add_argument("--family", default="v1", choices=scenes.FAMILIES,
                        help="version of the procedural family (default v1, the embedded "
                             "GAN's; v2: real faces' relief, flat albedo regions, more "
                             "directional light)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="samples rendered together (memory vs speed; default 128)")


def stem(index: int, split_name: str = "") -> str:
    return f"{split_name}_{index:0{STEM_DIGITS}d}" if split_name else f"{index:0{STEM_DIGITS}d}"


def recipe(seed: int, size: int, split_name: str,
           max_translation: float = scenes.DEFAULT_MAX_TRANSLATION,
           family: str = "v1") -> dict:
    """Everything that decides the samples' content (checked when resuming). v1's recipe
    has no 'family' key, as before families had versions."""
    out = {
        "seed": seed,
        "size": size,
        "split_name": split_name,
        "fov_deg": scenes.FOV_DEG,
        "head_ranges": heads.head_ranges(family),
        "view_raw_ranges": scenes.view_raw_ranges(max_translation),
        "light_raw_ranges": scenes.light_raw_ranges(family),
        "background_ranges": scenes.background_ranges(family),
    }
    if family != "v1":
        out["family"] = family
        out["head_constants"] = heads.head_constants(family)
    return out


def _check_args(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    if args.seed < 0:
        raise UserError(f"--seed must be non-negative, got {args.seed}")
    if not 16 <= args.size <= 1024:
        raise UserError(f"--size must be between 16 and 1024 pixels, got {args.size}")
    if not 0 < args.max_translation <= 0.05:
        raise UserError(f"--max-translation must be in (0, 0.05], got {args.max_translation}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.split_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", args.split_name):
        raise UserError(f"--split-name may hold only letters, digits, '_' and '-', "
                        f"got {args.split_name!r}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")


def _check_recipe(out: Path, wanted: dict) -> None:
    """Refuse to mix two different families in one folder; write the recipe on first use."""
    path = out / "recipe.json"
    if path.exists():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not a readable JSON file ({type(exc).__name__})") from exc
        # Round-trip through JSON so tuples compare equal to lists.
        if found != json.loads(json.dumps(wanted)):
            raise UserError(f"{out} holds data made with another seed, size, split name or "
                            "generator version (see recipe.json); use another --out")
    else:
        save_json(wanted, path)


def _paths(out: Path, name: str) -> dict[str, Path]:
    return {
        "image": out / "images" / f"{name}.png",
        "depth_png": out / "depth" / f"{name}.png",
        "depth_npy": out / "depth" / f"{name}.npy",
        "meta": out / "meta" / f"{name}.json",
    }


def _is_complete(out: Path, name: str) -> bool:
    return all(p.is_file() for p in _paths(out, name).values())


def to_files(batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Images (B, 3, S, S) in [-1, 1] -> uint8 (B, S, S, 3); depths (B, S, S) -> uint16
    (B, S, S) in the release convention (``eval.gt_depth_to_png``: near is bright).

    Computed in numpy for the whole batch: torch's CPU ``round`` takes milliseconds per
    small image here, which dominated make-data.
    """
    image = (batch["image"].permute(0, 2, 3, 1).double().numpy() + 1) / 2
    depth = gt_depth_to_png(batch["depth"], scenes.MIN_DEPTH, scenes.MAX_DEPTH)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), depth


def _meta(batch: dict[str, torch.Tensor], k: int, seed: int, index: int, size: int) -> dict:
    ambient, diffuse, direction = scenes.light_from_raw(batch["light_raw"][k:k + 1])
    return {
        "seed": seed,
        "index": index,
        "size": size,
        "view": batch["view"][k].tolist(),
        "view_raw": batch["view_raw"][k].tolist(),
        "light": {
            "ambient": ambient.item(),
            "diffuse": diffuse.item(),
            "direction": direction[0].tolist(),
        },
        "light_raw": batch["light_raw"][k].tolist(),
        "background": batch["background"][k].tolist(),
    }


def write_batch(out: Path, seed: int, indices: list[int], size: int, split_name: str,
                max_translation: float = scenes.DEFAULT_MAX_TRANSLATION,
                family: str = "v1") -> None:
    """Render ``indices`` together and write their files (meta last, marking completion)."""
    batch = scenes.render_scenes(seed, indices, size, max_translation, family)
    images, depth_pngs = to_files(batch)
    for k, index in enumerate(indices):
        paths = _paths(out, stem(index, split_name))
        save_image(images[k], paths["image"])
        save_image(depth_pngs[k], paths["depth_png"])
        save_npy(batch["depth"][k].numpy(), paths["depth_npy"])
        save_json(_meta(batch, k, seed, index, size), paths["meta"])


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot create --out {out} ({reason})") from exc
    _check_recipe(out, recipe(args.seed, args.size, args.split_name, args.max_translation,
                              args.family))
    save_torch(scenes.view_prior(args.max_translation, args.family), out / "view_prior.pt")
    save_torch(scenes.light_prior(args.family), out / "light_prior.pt")

    names = [stem(i, args.split_name) for i in range(args.n)]
    todo = [i for i, name in enumerate(names) if not _is_complete(out, name)]
    with torch.inference_mode(), tqdm(total=args.n, initial=args.n - len(todo), unit="img",
                                      desc="make-data") as bar:
        for start in range(0, len(todo), args.batch_size):
            chunk = todo[start:start + args.batch_size]
            write_batch(out, args.seed, chunk, args.size, args.split_name, args.max_translation,
                        args.family)
            bar.update(len(chunk))
    save_text("".join(f"images/{name}.png\n" for name in names), out / "list.txt")
    print(f"make-data: {args.n} samples in {out} ({len(todo)} rendered, "
          f"{args.n - len(todo)} already there)")
    return 0
