"""benchmarks/projection.py: its measures by hand, and a tiny end-to-end run."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "projection.py"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("projection")


def test_masked_error_averages_over_mask_and_channels(bench):
    truth = torch.zeros(2, 3, 4, 4)
    images = torch.zeros(2, 3, 4, 4)
    images[:, :, 0, 0] = 0.6  # inside the mask
    images[:, :, 3, 3] = 5.0  # outside: ignored
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    assert bench.masked_error(images, truth, mask) == pytest.approx(0.6 / 4)


def test_information_ratio(bench):
    assert bench.information_ratio(0.2, 0.1, 0.0) == pytest.approx(0.5)
    assert bench.information_ratio(0.2, 0.05, 0.05) == pytest.approx(1.0)
    assert bench.information_ratio(0.2, 0.3, 0.1) == pytest.approx(-1.0)
    assert math.isnan(bench.information_ratio(0.1, 0.1, 0.2))


def test_end_to_end_tiny_schedule():
    cmd = [sys.executable, str(SCRIPT), "--images", "1", "--first", "3", "--samples", "2",
           "--invert-steps", "2", "--fit-steps", "2",
           "--set", "stage_len_dict={step1: 1, step2: 1, step3: 1}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "2 relit pseudo samples per face, test faces 3..3" in out
    assert "test0003: pseudo" in out
    for key in ("pseudo", "projected", "optimised", "best fit"):
        assert f"  {key}" in out
    assert "information ratio of the means, optimised" in out


def test_family_fit_tiny_schedule_without_the_gan():
    cmd = [sys.executable, str(SCRIPT), "--images", "1", "--first", "2", "--samples", "2",
           "--family-fit", "--no-gan", "--family-steps", "3", "--restarts", "2",
           "--set", "stage_len_dict={step1: 1, step2: 1, step3: 1}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "no GAN (discriminator only)" in out
    for key in ("pseudo", "family fit", "family floor"):
        assert f"  {key}" in out
    assert "  projected" not in out and "optimised" not in out
    assert "information ratio of the means, family fit" in out


def test_no_gan_alone_is_refused():
    cmd = [sys.executable, str(SCRIPT), "--no-gan"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode != 0 and "--family-fit" in run.stderr


def test_true_light_lights_the_input_with_the_scene_light(bench):
    from gan2shape import embedded
    from gan2shape.config import load_config
    from gan2shape.eval import heldout
    from gan2shape.gan import load_stylegan2
    from gan2shape.recon import Reconstructor

    cfg = load_config("demo", overrides=[
        f"view_mvn_path={embedded.asset_path(embedded.VIEW_PRIOR_FILE)}",
        f"light_mvn_path={embedded.asset_path(embedded.LIGHT_PRIOR_FILE)}",
        "input_light=network"])  # else the input's light is the estimate from the image
    rec = Reconstructor(load_stylegan2(embedded.asset_path(embedded.GAN_FILE)), cfg,
                        progress=False)
    scene = heldout.heldout_scenes([0])
    zero = torch.zeros(1, rec.ctx.generator.style_dim)
    target = bench.face_target(rec, scene, zero, true_light=True, code=zero)
    light = rec.ctx.predict(target.image, depth_offset=target.depth_offset,
                            light=target.light).f.light
    expected = heldout.input_light(scene)
    assert torch.allclose(light.ambient, expected.ambient)
    assert torch.allclose(light.direction, expected.direction)
    estimated = bench.face_target(rec, scene, zero, true_light=False, code=zero)
    assert estimated.light is None


def test_end_to_end_with_the_true_light():
    cmd = [sys.executable, str(SCRIPT), "--images", "1", "--samples", "2", "--invert-steps",
           "2", "--fit-steps", "2", "--true-light",
           "--set", "stage_len_dict={step1: 1, step2: 1, step3: 1}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "true input light" in out
