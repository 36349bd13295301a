"""``gan2shape evaluate``: SIDE and MAD of reconstructions against ground-truth depth.

Reads ``<results>/<stem>/depth.npy`` (the depth seen in the input view, background at the
renderer's clamp value) and ``<gt>/depth/<stem>.png`` (the release's convention; for the
release's synface files ``XXXX_image`` -> ``XXXX_depth.png``) or ``<gt>/depth/<stem>.npy``
(metric depth); prints mean and standard deviation over images of
SIDE (x 1e-2) and MAD (degrees), with the baselines that need no model (a constant depth,
the average ground-truth depth), and writes everything to a JSON file.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import UserError
from ..fileio import save_json, writable_dir
from .metrics import center_crop, gt_depth_from_png, resize_map
from .scoring import average_depth_baseline, constant_depth_baseline, score_depth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", required=True, type=Path,
                        help="folder with one <stem>/depth.npy per image (gan2shape reconstruct)")
    parser.add_argument("--gt", required=True, type=Path,
                        help="data folder with depth/<stem>.png or depth/<stem>.npy")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file to write (default: <results>/evaluation.json)")
    parser.add_argument("--crop", type=int, default=None,
                        help="centre-crop the ground truth first (default: the results' "
                             "config.yaml, else none)")
    parser.add_argument("--min-depth", type=float, default=None)
    parser.add_argument("--max-depth", type=float, default=None)
    parser.add_argument("--fov", type=float, default=None, help="field of view in degrees")
    parser.add_argument("--gt-format", choices=("auto", "png", "npy"), default="auto",
                        help="which ground truth to read; auto prefers the PNG (the release's)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the constant and average-depth baselines")
    parser.add_argument("--conventions", choices=("release", "clean"), default="release",
                        help="release: MAD with the release's slightly short normals (its "
                             "published numbers contain a floor of ~6.5 deg at 64 px); clean: "
                             "unit normals")


def _settings(args: argparse.Namespace) -> dict:
    """Depth range, field of view and crop: command line, else results/config.yaml, else
    the release's defaults."""
    saved: dict = {}
    path = args.results / "config.yaml"
    if path.is_file():
        try:
            saved = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path} is not valid YAML") from exc
        if not isinstance(saved, dict):
            raise UserError(f"{path} must be a mapping of setting: value")

    def pick(cli_value, key, default):
        return cli_value if cli_value is not None else saved.get(key, default)

    settings = {"min_depth": float(pick(args.min_depth, "min_depth", 0.9)),
                "max_depth": float(pick(args.max_depth, "max_depth", 1.1)),
                "fov_deg": float(pick(args.fov, "fov", 10.0)),
                "crop": pick(args.crop, "crop", None),
                "unit_normals": args.conventions == "clean"}
    if not 0 < settings["min_depth"] < settings["max_depth"]:
        raise UserError("need 0 < min-depth < max-depth")
    return settings


def _load_pred(path: Path) -> torch.Tensor:
    try:
        array = np.load(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npy file") from exc
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise UserError(f"{path} must hold a square (H, W) depth map, got {array.shape}")
    if not np.isfinite(array).all() or (array <= 0).any():
        raise UserError(f"{path} has non-finite or non-positive depths")
    return torch.from_numpy(array.astype(np.float32))


def _load_gt(gt_dir: Path, stem: str, size: int, settings: dict, fmt: str) -> torch.Tensor:
    png, npy = gt_dir / "depth" / f"{stem}.png", gt_dir / "depth" / f"{stem}.npy"
    # The release's synface data name the pair XXXX_image.png / XXXX_depth.png.
    release_png = gt_dir / "depth" / f"{stem.replace('image', 'depth')}.png"
    if not png.is_file() and not npy.is_file() and release_png.is_file():
        png = release_png
    use_png = fmt == "png" or (fmt == "auto" and png.is_file())
    if use_png:
        return gt_depth_from_png(png, size, settings["crop"], settings["min_depth"],
                                 settings["max_depth"])
    if not npy.is_file():
        raise UserError(f"no ground truth for {stem}: neither {png} nor {npy}")
    try:
        array = np.load(npy).astype(np.float64)
    except (OSError, ValueError) as exc:
        raise UserError(f"{npy} is not a readable .npy file") from exc
    if array.ndim != 2:
        raise UserError(f"{npy} must hold an (H, W) depth map, got {array.shape}")
    if settings["crop"] is not None:
        array = center_crop(array, settings["crop"])
    return torch.from_numpy(resize_map(array, size)).float()


def _summary(values: list[float], scale: float) -> dict:
    finite = [v * scale for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "n": len(finite)}


def _scores(preds: list[torch.Tensor], gts: list[torch.Tensor], settings: dict,
            predicted: bool) -> dict[str, list[float]]:
    """Per-image SIDE and MAD; a baseline's planes are valid everywhere."""
    out: dict[str, list[float]] = {"side": [], "mad_deg": []}
    for pred, gt in zip(preds, gts, strict=True):
        valid = None if predicted else torch.ones_like(pred)
        s = score_depth(pred[None], gt[None], None if valid is None else valid[None],
                        settings["fov_deg"], settings["min_depth"], settings["max_depth"],
                        settings["unit_normals"])
        out["side"].append(float(s["side"][0]))
        out["mad_deg"].append(float(s["mad_deg"][0]))
    return out


def evaluate(results: Path, gt_dir: Path, settings: dict, gt_format: str = "auto",
             baselines: bool = True) -> dict:
    """The evaluation report (a JSON-able dict) of every ``<results>/<stem>/depth.npy``."""
    if not results.is_dir():
        raise UserError(f"results folder not found: {results}")
    if not gt_dir.is_dir():
        raise UserError(f"ground-truth folder not found: {gt_dir}")
    stems = sorted(p.parent.name for p in results.glob("*/depth.npy"))
    if not stems:
        raise UserError(f"no <stem>/depth.npy under {results}")
    preds = [_load_pred(results / s / "depth.npy") for s in stems]
    gts = [_load_gt(gt_dir, s, p.shape[-1], settings, gt_format) for s, p in zip(stems, preds,
                                                                                 strict=True)]
    methods = {"gan2shape": _scores(preds, gts, settings, predicted=True)}
    if baselines:
        middle = (settings["min_depth"] + settings["max_depth"]) / 2
        methods["constant_depth"] = _scores(
            [constant_depth_baseline(g, middle) for g in gts], gts, settings, predicted=False)
        sizes = {tuple(g.shape) for g in gts}
        if len(sizes) == 1:
            average = average_depth_baseline(torch.stack(gts))
            methods["average_gt_depth"] = _scores(list(average), gts, settings,
                                                  predicted=False)
    report = {"n_images": len(stems), "settings": settings, "methods": {}}
    for name, scores in methods.items():
        report["methods"][name] = {"SIDE_x1e-2": _summary(scores["side"], 100.0),
                                   "MAD_deg": _summary(scores["mad_deg"], 1.0)}
    report["per_image"] = {stem: {"SIDE_x1e-2": methods["gan2shape"]["side"][i] * 100,
                                  "MAD_deg": methods["gan2shape"]["mad_deg"][i]}
                           for i, stem in enumerate(stems)}
    return report


def _fmt(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.3f} +- {stat['std']:.3f}"


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else args.results / "evaluation.json"
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the path of a JSON file to write")
    if args.out is not None:  # (--results is checked by evaluate)
        writable_dir(out.parent, "the folder of --out")
    settings = _settings(args)
    report = evaluate(args.results, args.gt, settings, args.gt_format, not args.no_baselines)
    save_json(_jsonable(report), out)
    print(f"{'method':<18} {'images':>6}  {'SIDE (x1e-2)':>18}  {'MAD (deg)':>18}")
    for name, m in report["methods"].items():
        print(f"{name:<18} {m['SIDE_x1e-2']['n']:>6}  {_fmt(m['SIDE_x1e-2']):>18}  "
              f"{_fmt(m['MAD_deg']):>18}")
    print(f"wrote {out}")
    return 0


def _jsonable(obj):
    """NaN (an image whose mask is empty) -> null, so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
