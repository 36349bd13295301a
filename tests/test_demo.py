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
    assert "SIDE x1e-2" in printed and "GAN2Shape" in printed
    assert not (out / "test0000.checkpoint.pt").exists()
    load_stylegan2(embedded.asset_path(embedded.GAN_FILE))


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--index", "-1"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--no-such-flag"])
