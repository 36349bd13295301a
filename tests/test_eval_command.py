"""``gan2shape evaluate`` end to end on synthetic results and ground truth."""

import json
import math

import numpy as np
import pytest

from gan2shape import cli
from gan2shape.eval import gt_depth_to_png
from gan2shape.fileio import save_image, save_text

S = 32


def erode(m):
    p = np.pad(m, 1)
    total = sum(p[1 + dy:1 + dy + S, 1 + dx:1 + dx + S] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return (total / 9 > 0.99).astype(np.float64)


def make_gt(rng):
    i, j = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
    r2 = ((i - 16) ** 2 + (j - 15) ** 2) / 12.0 ** 2
    bump = 1.0 - 0.08 * np.sqrt(np.clip(1 - r2, 0, 1)) + 0.01 * rng.random()
    return np.where(r2 < 1, bump, 1.1)


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, res = tmp_path / "data", tmp_path / "results"
    gts = {}
    for k, scale in enumerate((1.0, 1.03)):
        stem = f"img{k}"
        gt = make_gt(rng)
        gts[stem] = gt
        save_image(gt_depth_to_png(gt), gt_dir / "depth" / f"{stem}.png")
        pred = np.where(gt < 1.1, gt * scale, 1.2).astype(np.float32)  # background: invalid
        (res / stem).mkdir(parents=True)
        np.save(res / stem / "depth.npy", pred)
    save_text("min_depth: 0.9\nmax_depth: 1.1\nfov: 10.0\ncrop: null\n", res / "config.yaml")
    return res, gt_dir, gts


def test_evaluate_scaled_prediction_and_baselines(dataset, capsys):
    res, gt_dir, gts = dataset
    assert cli.main(["evaluate", "--results", str(res), "--gt", str(gt_dir)]) == 0
    report = json.loads((res / "evaluation.json").read_text())
    ours = report["methods"]["gan2shape"]
    assert report["n_images"] == 2
    assert ours["SIDE_x1e-2"]["mean"] == pytest.approx(0.0, abs=1e-3)  # a scaled gt
    # constant-depth baseline: SIDE = population std of log(gt) over the eroded gt mask
    sides = []
    for gt in gts.values():
        gt = 1.1 - np.round((1.1 - gt) / 0.2 * 65535) / 65535 * 0.2  # through the 16-bit PNG
        mask = erode((gt < gt.max()).astype(np.float64)) * erode(np.ones((S, S)))
        e = -np.log(gt[mask > 0])
        sides.append(np.sqrt(np.mean((e - e.mean()) ** 2)) * 100)
    const = report["methods"]["constant_depth"]["SIDE_x1e-2"]
    assert const["mean"] == pytest.approx(np.mean(sides), rel=1e-4)
    assert const["std"] == pytest.approx(np.std(sides), rel=1e-3, abs=1e-6)
    assert "average_gt_depth" in report["methods"]
    assert set(report["per_image"]) == {"img0", "img1"}
    out = capsys.readouterr().out
    assert "gan2shape" in out and "constant_depth" in out and "+-" in out
    assert report["settings"]["unit_normals"] is False
    assert cli.main(["evaluate", "--results", str(res), "--gt", str(gt_dir),
                     "--conventions", "clean", "--out", str(res / "clean.json")]) == 0
    clean = json.loads((res / "clean.json").read_text())["methods"]["gan2shape"]["MAD_deg"]
    assert clean["mean"] < ours["MAD_deg"]["mean"] - 1  # the release's normal floor is gone


def test_evaluate_npy_ground_truth(dataset, tmp_path):
    res, gt_dir, gts = dataset
    for stem, gt in gts.items():
        (gt_dir / "depth" / f"{stem}.png").unlink()
        np.save(gt_dir / "depth" / f"{stem}.npy", gt.astype(np.float32))
    out = tmp_path / "e.json"
    assert cli.main(["evaluate", "--results", str(res), "--gt", str(gt_dir), "--out", str(out),
                     "--no-baselines"]) == 0
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["gan2shape"]
    assert math.isfinite(report["methods"]["gan2shape"]["MAD_deg"]["mean"])


def test_evaluate_errors_are_one_line(dataset, tmp_path, capsys):
    res, gt_dir, _ = dataset
    (gt_dir / "depth" / "img1.png").unlink()
    assert cli.main(["evaluate", "--results", str(res), "--gt", str(gt_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no ground truth for img1" in err and "\n" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["evaluate", "--results", str(empty), "--gt", str(gt_dir)]) == 2
    np.save(res / "img0" / "depth.npy", np.zeros((4, 5), np.float32))
    assert cli.main(["evaluate", "--results", str(res), "--gt", str(gt_dir)]) == 2
    assert "square" in capsys.readouterr().err


def test_release_synface_naming(dataset, tmp_path):
    res, gt_dir, _ = dataset
    for k in (0, 1):
        (res / f"img{k}").rename(res / f"{k:04d}_image")
        (gt_dir / "depth" / f"img{k}.png").rename(gt_dir / "depth" / f"{k:04d}_depth.png")
    assert cli.main(["evaluate", "--results", str(res), "--gt", str(gt_dir),
                     "--no-baselines"]) == 0
    report = json.loads((res / "evaluation.json").read_text())
    assert set(report["per_image"]) == {"0000_image", "0001_image"}
    assert report["methods"]["gan2shape"]["SIDE_x1e-2"]["mean"] == pytest.approx(0.0, abs=1e-3)
