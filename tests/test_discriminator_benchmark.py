"""benchmarks/discriminator.py: its ratio-image relighting by hand, and a tiny end-to-end run."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gan2shape.recon import factors

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "discriminator.py"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("discriminator")


def light(ambient: float, diffuse: float, x: float, y: float) -> factors.Light:
    return factors.Light(torch.tensor([ambient]), torch.tensor([diffuse]),
                         factors.light_direction(torch.tensor([[x, y]])))


def test_relighting_a_flat_depth_scales_by_the_analytic_shading_ratio(bench):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32) * 1.2 - 0.9
    new = [(0.4, 0.5, -0.7, 0.3), (0.2, 0.9, 0.0, 0.5)]
    relit = bench.relight(image, torch.ones(1, 32, 32), light(0.3, 0.6, 0.2, -0.1),
                          factors.Light.cat([light(*args) for args in new]), fov=10.0)

    def shading(a, d, x, y):  # a frontal plane: <n, l> = l_z
        return a + d / math.sqrt(x * x + y * y + 1)

    inner = (slice(None), slice(1, -1), slice(1, -1))
    for i, args in enumerate(new):
        ratio = shading(*args) / shading(0.3, 0.6, 0.2, -0.1)
        expected = ((image[0] / 2 + 0.5) * ratio * 2 - 1).clamp(-1, 1)
        # the release's normal epsilon leaves n_z just short of 1
        assert torch.allclose(relit[i][inner], expected[inner], atol=1e-3)


def test_relighting_under_the_input_light_returns_the_input(bench):
    torch.manual_seed(1)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    depth = (1.0 - 0.05 * (1 - xx ** 2 - yy ** 2).clamp(min=0).sqrt())[None]  # a bump
    lit = light(0.3, 0.7, 0.4, 0.2)
    relit = bench.relight(image, depth, lit, lit.repeat(3), fov=10.0)
    assert torch.allclose(relit, image.expand(3, -1, -1, -1), atol=1e-5)


def test_end_to_end_tiny_run():
    cmd = [sys.executable, str(SCRIPT), "--images", "2", "--lights", "2", "--ascent-steps", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "2 relightings per depth, 2 faces" in out
    assert "the truth scores highest on the line on" in out


def test_bad_arguments_exit_2_with_one_line():
    cmd = [sys.executable, str(SCRIPT), "--images", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --images") and "\n" not in done.stderr.strip()
