"""The `gan2shape sample` command: files, latents that reproduce the images, resuming."""

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape import cli
from gan2shape.gan import Discriminator, Generator, load_latent, load_stylegan2, save_stylegan2

WIDTHS = {4: 16, 8: 16, 16: 8}


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    g = Generator(16, style_dim=32, n_mlp=2, channels=WIDTHS)
    path = tmp_path / "gan.pt"
    save_stylegan2(path, g, Discriminator(16, channels=WIDTHS))
    return path


def sample(ckpt, out, *extra):
    return cli.main(["sample", "--gan", str(ckpt), "-n", "5", "--out", str(out),
                     "--batch", "2", *extra])


def test_images_latents_and_list(ckpt, tmp_path):
    out = tmp_path / "s"
    assert sample(ckpt, out) == 0
    lines = (out / "list.txt").read_text().splitlines()
    assert lines == [f"images/{i:06d}.png" for i in range(5)]
    g = load_stylegan2(ckpt).generator
    for line in lines:
        png = np.asarray(Image.open(out / line))
        assert png.shape == (16, 16, 3) and png.dtype == np.uint8
        w = load_latent(out / "latents" / (line[7:-4] + ".pt"), style_dim=32)
        with torch.no_grad():
            img = g.synthesis(w)[0]
        expected = ((img.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
        assert np.abs(png - expected).max() <= 0.51 + 1e-3


def test_resume_rewrites_only_missing_files_identically(ckpt, tmp_path):
    out = tmp_path / "s"
    sample(ckpt, out)
    first = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    (out / "images" / "000003.png").unlink()
    (out / "latents" / "000001.pt").unlink()
    stamp = (out / "images" / "000000.png").stat().st_mtime_ns
    sample(ckpt, out)
    assert (out / "images" / "000000.png").stat().st_mtime_ns == stamp
    again = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert again == first
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_seed_and_truncation(ckpt, tmp_path):
    sample(ckpt, tmp_path / "a", "--seed", "1")
    sample(ckpt, tmp_path / "b", "--seed", "2")
    sample(ckpt, tmp_path / "t", "--truncation", "0")
    a = load_latent(tmp_path / "a" / "latents" / "000000.pt", 32)
    b = load_latent(tmp_path / "b" / "latents" / "000000.pt", 32)
    assert not torch.allclose(a, b)
    t0 = load_latent(tmp_path / "t" / "latents" / "000000.pt", 32)
    t4 = load_latent(tmp_path / "t" / "latents" / "000004.pt", 32)
    assert torch.allclose(t0, t4)


def test_bad_input_is_one_line(ckpt, tmp_path, capsys):
    assert sample(tmp_path / "missing.pt", tmp_path / "o") == 2
    assert sample(ckpt, tmp_path / "o", "--truncation", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("error:" in line for line in err)
