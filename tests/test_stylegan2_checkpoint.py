"""Checkpoint and latent files: round trips, architecture inference, one-line errors."""

import pytest
import torch

from gan2shape.errors import UserError
from gan2shape.gan import (
    Discriminator,
    Generator,
    load_latent,
    load_stylegan2,
    save_latent,
    save_stylegan2,
)

WIDTHS = {4: 16, 8: 16, 16: 12, 32: 8, 64: 4}


def make_ckpt(size=64, style_dim=24, n_mlp=3):
    torch.manual_seed(0)
    g = Generator(size, style_dim=style_dim, n_mlp=n_mlp, channels=WIDTHS)
    d = Discriminator(size, channels=WIDTHS)
    return g, d


def one_line_error(ckpt, match):
    with pytest.raises(UserError, match=match) as exc:
        load_stylegan2(ckpt)
    assert "\n" not in str(exc.value)


def test_round_trip_infers_architecture(tmp_path):
    g, d = make_ckpt()
    g_ema = Generator(64, style_dim=24, n_mlp=3, channels=WIDTHS)
    path = tmp_path / "gan.pt"
    save_stylegan2(path, g, d, generator_ema=g_ema, extra={"args": {"size": 64}})
    raw = torch.load(path)
    assert set(raw) == {"g", "d", "g_ema", "args"}
    gan = load_stylegan2(path)
    assert gan.size == 64 and gan.generator.style_dim == 24 and gan.generator.n_mlp == 3
    assert gan.generator.channels == {r: WIDTHS[r] for r in (4, 8, 16, 32, 64)}
    assert not gan.generator.training
    w = torch.randn(2, 24)
    assert torch.equal(gan.generator.synthesis(w), g_ema.synthesis(w))  # g_ema, not g
    img = torch.randn(4, 3, 64, 64)
    assert torch.equal(gan.discriminator(img), d.eval()(img))
    assert gan.latent_avg is None


@pytest.mark.parametrize("size,cm", [(128, 1), (256, 2)], ids=["config-e-128", "config-f-256"])
def test_release_configurations_load(size, cm):
    g, d = Generator(size, channel_multiplier=cm), Discriminator(size, channel_multiplier=cm)
    gan = load_stylegan2({"g_ema": g.state_dict(), "d": d.state_dict(),
                          "latent_avg": torch.zeros(512)})
    assert gan.size == size
    assert gan.generator.channels[64] == 256 * cm
    assert gan.discriminator.channels[size] == Discriminator(size, cm).channels[size]
    assert gan.latent_avg.shape == (1, 512)


def test_not_a_dict(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(3), path)
    one_line_error(path, "not a checkpoint dict")


def test_missing_parts():
    g, d = make_ckpt()
    one_line_error({"d": d.state_dict()}, "'g_ema'")
    one_line_error({"g_ema": g.state_dict()}, "'d'")
    gan = load_stylegan2({"g_ema": g.state_dict()}, need_discriminator=False)
    assert gan.discriminator is None


def test_truncated_file(tmp_path):
    g, d = make_ckpt()
    path = tmp_path / "gan.pt"
    save_stylegan2(path, g, d)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    one_line_error(path, "not a readable PyTorch file")
    one_line_error(tmp_path / "missing.pt", "not found")


def test_gan2shape_weights_are_named():
    one_line_error({"netD": {}, "netA": {}, "netV": {}}, "GAN2Shape reconstruction weights")


def test_wrong_tensors():
    g, d = make_ckpt()
    sd = g.state_dict()
    sd["convs.1.conv.weight"] = torch.zeros(1, 16, 3, 3, 3)
    one_line_error({"g_ema": sd, "d": d.state_dict()}, "wrong shape keys convs.1.conv.weight")
    sd = g.state_dict()
    del sd["noises.noise_2"]
    one_line_error({"g_ema": sd, "d": d.state_dict()}, "missing keys noises.noise_2")
    one_line_error({"g_ema": {"foo": torch.zeros(1)}, "d": d.state_dict()}, "style.1.weight")


def test_latent_round_trip_and_release_dict(tmp_path):
    w = torch.randn(1, 512)
    save_latent(tmp_path / "a.pt", w)
    assert torch.equal(load_latent(tmp_path / "a.pt"), w)
    torch.save({"latent": w[0].double()}, tmp_path / "b.pt")
    assert torch.allclose(load_latent(tmp_path / "b.pt"), w)
    saved = torch.load(tmp_path / "a.pt")
    assert saved.shape == (1, 512) and saved.dtype == torch.float32


@pytest.mark.parametrize("obj,match", [
    (torch.zeros(1, 256), "shape"),
    (torch.zeros(1, 10, 512), "shape"),
    (torch.full((1, 512), float("nan")), "NaN"),
    ([0.0] * 512, "not a tensor"),
    ({"w": torch.zeros(1, 512)}, "without a 'latent'"),
    (torch.zeros(1, 512, dtype=torch.int64), "floats"),
    ({"latent": torch.zeros(1, 512), "z": torch.zeros(1, 64)}, "expected a z latent"),
    ({"latent": torch.zeros(1, 512), "z": torch.full((1, 512), float("inf"))}, "infinite"),
])
def test_bad_latents(tmp_path, obj, match):
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match=match) as exc:
        load_latent(path)
    assert "\n" not in str(exc.value)
