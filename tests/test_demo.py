"""`gan2shape demo` end to end on the embedded model, with a reduced schedule."""

import json

import pytest
import torch

from gan2shape import cli, embedded
from gan2shape.data import scenes
from gan2shape.gan import load_stylegan2
from gan2shape.recon import OUTPUT_FILES


def test_embedded_model_loads_and_matches_its_data():
    gan = embedded.load_embedded_gan()
    assert gan.size == embedded.IMAGE_SIZE
    assert gan.generator.style_dim == 64 and gan.encoder is not None  # inverted in Z
    assert gan.discriminator is not None
    for name, exact in ((embedded.VIEW_PRIOR_FILE, scenes.view_prior(family=embedded.FAMILY)),
                        (embedded.LIGHT_PRIOR_FILE, scenes.light_prior(embedded.FAMILY))):
        shipped = torch.load(embedded.asset_path(name))
        assert all(torch.equal(shipped[k], exact[k]) for k in ("mean", "cov")), name


def test_demo_end_to_end_reduced_schedule(tmp_path, capsys):
    out = tmp_path / "demo"
    status = cli.main(["demo", "--out", str(out), "--preset", "tiny", "--invert-steps", "3",
                       "--baseline-images", "2", "--device", "cpu"])
    assert status == 0
    for name in OUTPUT_FILES:
        assert (out / "test0000" / name).is_file(), name
    report = json.loads((out / "demo_metrics.json").read_text())
    scores = report["scores"]
    assert set(scores) == {"constant depth", "average ground-truth depth", "ellipsoid prior",
                           "GAN2Shape (this run)"}
    for s in scores.values():
        assert 0 <= s["SIDE"] < 1 and 0 <= s["MAD_deg"] < 90
    printed = capsys.readouterr().out
    assert "SIDE x1e-2" in printed and "the ellipsoid prior it started from" in printed
    assert not (out / "test0000.checkpoint.pt").exists()
    load_stylegan2(embedded.asset_path(embedded.GAN_FILE))


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--index", "-1"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--no-such-flag"])


@pytest.mark.slow
def test_packaged_models_projections_carry_shape_on_two_validation_faces():
    """benchmarks/projection.py on the shipped model and preset: the projections Step 3
    learns from are nearer the truth than the pseudo samples they project (a positive
    information ratio of the means) on v2's validation faces 0-1 (about 3 minutes)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "projection.py"
    out = subprocess.run([sys.executable, str(script), "--split", "validation", "--images", "2",
                          "--samples", "8", "--threads", "2"],
                         capture_output=True, text=True, check=True).stdout
    ratio = float(re.search(r"information ratio of the means, projected: ([-+.\d]+)", out)[1])
    assert ratio > 0, out


def test_gain_over_the_prior_by_hand():
    from gan2shape.demo_command import gain_over_prior

    prior = {"SIDE": 0.005, "MAD_deg": 17.0}
    line = gain_over_prior(prior, {"SIDE": 0.004, "MAD_deg": 15.5})
    assert "better than" in line and "SIDE -20 %" in line and "MAD -1.50 deg" in line
    assert "worse than" in gain_over_prior(prior, {"SIDE": 0.006, "MAD_deg": 18.0})
    assert "mixed" in gain_over_prior(prior, {"SIDE": 0.004, "MAD_deg": 18.0})
