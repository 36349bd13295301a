"""GAN inversion (gan2shape.gan.invert) and the ``invert`` command."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape import cli
from gan2shape.errors import UserError
from gan2shape.gan import Discriminator, Generator, load_latent, save_stylegan2
from gan2shape.gan.invert import (
    InvertOptions,
    PoorFitWarning,
    invert,
    invert_image,
    latent_for_image,
    learning_rate,
    noise_regularisation,
    psnr_db,
)
from gan2shape.perceptual import VGG16_CONVS, inversion_perceptual

SIZE, STYLE = 16, 32
CHANNELS = {4: 32, 8: 32, 16: 16}


@pytest.fixture(scope="module")
def gan():
    """A small random-init StyleGAN2 (its images are structured enough to invert)."""
    torch.manual_seed(0)
    g = Generator(SIZE, style_dim=STYLE, n_mlp=2, channels=CHANNELS).eval()
    d = Discriminator(SIZE, channels=CHANNELS)
    return g, d


def samples(g, n, seed=1):
    with torch.no_grad():
        w = g.mapping(torch.randn(n, STYLE, generator=torch.Generator().manual_seed(seed)))
        return w, g.synthesis(w)


def test_learning_rate_schedule():
    assert learning_rate(0.0, 0.1) == 0.0
    assert learning_rate(0.025, 0.1) == pytest.approx(0.05)  # half-way up the warm-up
    assert learning_rate(0.5, 0.1) == pytest.approx(0.1)
    assert learning_rate(0.875, 0.1) == pytest.approx(0.05)  # half-way down the cosine
    assert learning_rate(1.0, 0.1) == pytest.approx(0.0)


def test_noise_regularisation_and_psnr_by_hand():
    # A constant map correlates perfectly with its shifts: 2 terms of 1 at 16 and at 8 px.
    ones = torch.ones(2, 1, 16, 16)
    assert noise_regularisation([ones]).tolist() == [4.0, 4.0]
    white = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert noise_regularisation([white]).item() < 1e-3
    # 0.2 apart on [-1, 1] is 0.1 on [0, 1]: MSE 0.01, 20 dB; the mask picks the pixels.
    a = torch.zeros(1, 3, 4, 4)
    b = a.clone()
    b[..., :2] = 0.2
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    assert psnr_db(a, b, mask).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr_db(a, b).item() == pytest.approx(-10 * math.log10(0.005), abs=1e-4)


def test_recovers_a_gan_sample_with_known_latent(gan):
    """150 steps in W from the mean latent recover GAN samples.

    Measured with this generator and seed: 43.7 37.8 76.4 23.5 44.0 26.9 35.1 35.3 dB
    (the mean latent's image scores 8-14 dB). Thresholds: every image >= 20 dB, median >= 30.
    """
    g, d = gan
    w, target = samples(g, 8)
    result = invert(g, target, InvertOptions(steps=150), d)
    assert result.latents.shape == (8, STYLE) and result.images.shape == target.shape
    assert result.psnr_db.min() >= 20 and result.psnr_db.median() >= 30, result.psnr_db
    # The projected image is the generator's image of the returned latent.
    with torch.no_grad():
        assert torch.allclose(g.synthesis(result.latents), result.images, atol=1e-5)
    assert torch.allclose(result.psnr_db, psnr_db(result.images, target))
    for name in ("pixel", "perceptual", "noise", "total"):
        assert result.losses[name].shape == (8,)


def test_w_plus_does_not_do_worse_than_w(gan):
    """On images outside W (style-mixed samples) W+ fits at least as well on the same budget.

    Measured: W 20.6 18.6 23.2 20.2 dB, W+ 27.8 21.4 28.9 23.3 dB.
    """
    g, d = gan
    w, _ = samples(g, 8, seed=1)
    with torch.no_grad():
        mixed = torch.cat([w[:4, None].expand(-1, 3, -1), w[4:, None].expand(-1, 3, -1)], 1)
        target = g.synthesis(mixed)
    in_w = invert(g, target, InvertOptions(steps=150), d)
    in_w_plus = invert(g, target, InvertOptions(steps=150, w_plus=True), d)
    assert in_w_plus.latents.shape == (4, g.n_latent, STYLE)
    assert (in_w_plus.psnr_db >= in_w.psnr_db).all(), (in_w.psnr_db, in_w_plus.psnr_db)


def test_batch_matches_single_and_masked_pixels_are_ignored(gan):
    g, d = gan
    _, target = samples(g, 3, seed=2)
    batch = invert(g, target, InvertOptions(steps=20), d, seed=7)
    single = invert(g, target[1:2], InvertOptions(steps=20), d, seed=7)
    assert torch.allclose(batch.latents[1:2], single.latents, atol=1e-3)
    # Two targets that differ only where the mask is zero give the same inversion (pixel
    # loss only: D features see across the mask's edge through their receptive fields).
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., : SIZE // 2] = 1
    spoiled = target[:1].clone()
    spoiled[..., SIZE // 2:] = 1.0
    clean = invert(g, target[:1], InvertOptions(steps=20, perceptual="none"), mask=mask)
    dirty = invert(g, spoiled, InvertOptions(steps=20, perceptual="none"), mask=mask)
    assert torch.allclose(clean.latents, dirty.latents, atol=1e-5)
    assert torch.allclose(clean.psnr_db, dirty.psnr_db, atol=1e-4)


def test_noise_optimisation_keeps_unit_white_noise(gan):
    g, d = gan
    _, target = samples(g, 2, seed=3)
    result = invert(g, target, InvertOptions(steps=10, optimise_noise=True, perceptual="none"))
    assert len(result.noise) == len(g.stored_noise())
    for n in result.noise:
        assert n.shape[0] == 2
        assert torch.allclose(n.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
        assert torch.allclose(n.pow(2).mean(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)
    # The generator is handed back with its parameters trainable as before.
    assert all(p.requires_grad for p in g.parameters())


def test_vgg_features_from_a_torchvision_layout_state_dict():
    torch.manual_seed(0)
    state, in_ch = {}, 3
    for index, (_, out_ch) in VGG16_CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, 3, 3) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(out_ch)
        in_ch = out_ch
    vgg = inversion_perceptual("vgg", vgg_weights={"state_dict": state})
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    feats = vgg.target_features(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert vgg.to_features(x, feats).abs().max() < 1e-6
    assert (vgg.to_features(x.flip(-1), feats) > 0).all()


def test_latent_for_image_warns_on_a_poor_fit(gan):
    g, d = gan

    class Gan:
        generator, discriminator = g, d

    # A fine checkerboard at twice the GAN's resolution is far from anything it makes.
    board = (torch.arange(2 * SIZE)[:, None] + torch.arange(2 * SIZE)[None]) % 2 * 2.0 - 1
    with pytest.warns(PoorFitWarning, match="PSNR"):
        latent = latent_for_image(Gan, board.expand(3, -1, -1), InvertOptions(steps=5))
    assert latent.shape == (1, STYLE)


@pytest.fixture
def checkpoint(tmp_path, gan):
    g, d = gan
    path = tmp_path / "gan.pt"
    save_stylegan2(path, g, d, generator_ema=g)
    return path


def test_command_writes_outputs_resumes_and_rejects_bad_files(tmp_path, gan, checkpoint,
                                                              capsys):
    g, _ = gan
    _, target = samples(g, 2, seed=4)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(2):
        array = ((target[k].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(array).resize((3 * SIZE, 2 * SIZE)).save(folder / f"p{k}.png")
    (folder / "list.txt").write_text("p0.png\np1.png\n")
    out = tmp_path / "out"
    args = ["invert", str(folder / "list.txt"), "--gan", str(checkpoint), "--out", str(out),
            "--steps", "20", "--quiet"]
    assert cli.main(args) == 0
    for k in range(2):
        assert load_latent(out / f"p{k}.pt", style_dim=STYLE).shape == (1, STYLE)
        assert np.asarray(Image.open(out / f"p{k}.png")).shape == (SIZE, SIZE, 3)
        report = json.loads((out / f"p{k}.json").read_text())
        assert report["psnr_db"] > 0 and set(report["losses"]) >= {"pixel", "total"}
    before = (out / "p0.json").stat().st_mtime_ns
    assert cli.main(args) == 0
    assert "2 of 2 images already done" in capsys.readouterr().err
    assert (out / "p0.json").stat().st_mtime_ns == before

    (folder / "bad.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.png").write_bytes(b"")
    for name in ("bad.png", "empty.png", "missing.png"):
        assert cli.main(["invert", str(folder / name), "--gan", str(checkpoint),
                         "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err


def test_invert_image_reads_and_preprocesses_a_photo(tmp_path, gan):
    g, d = gan

    class Gan:
        generator, discriminator = g, d

    _, target = samples(g, 1, seed=6)
    array = ((target[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    # RGBA, twice the GAN's size: composited, resized, then inverted.
    rgba = np.concatenate([array, np.full(array.shape[:2] + (1,), 255, np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").resize((2 * SIZE, 2 * SIZE)).save(tmp_path / "p.png")
    latent = invert_image(tmp_path / "p.png", Gan, InvertOptions(steps=60),
                          device=torch.device("cpu"), poor_fit_db=15.0)
    assert latent.shape == (1, STYLE)
    with torch.no_grad():
        assert psnr_db(g.synthesis(latent), target).item() > 20


def test_z_inversion_recovers_samples_through_the_whole_mapping(gan):
    g, d = gan
    z = torch.randn(4, STYLE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        target = g.synthesis(g.mapping(z))
    # measured with this generator and seed: 39.7 36.9 41.0 40.4 dB
    result = invert(g, target, InvertOptions(steps=400, z_space=True), d)
    assert result.z.shape == (4, STYLE) and result.latents.shape == (4, STYLE)
    assert result.psnr_db.min() >= 30, result.psnr_db
    with torch.no_grad():  # the W returned is the mapping of the z found, and its image
        assert torch.allclose(g.mapping(result.z), result.latents, atol=1e-6)
        assert torch.allclose(g.synthesis(result.latents), result.images, atol=1e-5)
    assert torch.allclose(result.losses["radius"], (result.z.square().mean(1) - 1).square())


def test_z_radius_term_keeps_z_at_the_priors_typical_radius(gan):
    g, d = gan
    _, target = samples(g, 2)
    held = invert(g, target, InvertOptions(steps=60, z_space=True, z_radius_weight=10.0), d)
    assert torch.allclose(held.z.square().mean(1), torch.ones(2), atol=0.05)
    with pytest.raises(UserError, match="not both"):
        InvertOptions(steps=1, z_space=True, w_plus=True)


def test_a_gan_with_an_encoder_is_inverted_in_z_from_its_estimate(gan):
    from gan2shape.gan import StyleGAN2

    g, d = gan
    z = torch.randn(1, STYLE, generator=torch.Generator().manual_seed(5))

    class KnownEncoder(torch.nn.Module):  # returns the true z whatever the image
        def forward(self, img):
            return z.expand(img.shape[0], -1), torch.zeros(img.shape[0], STYLE)

    with torch.no_grad():
        image = g.synthesis(g.mapping(z))[0]
    model = StyleGAN2(g, d, SIZE, encoder=KnownEncoder())
    latent = latent_for_image(model, image, InvertOptions(steps=0))  # no steps: the start itself
    assert torch.allclose(latent, g.mapping(z), atol=1e-6)
    # W, from the mean latent
    plain = latent_for_image(StyleGAN2(g, d, SIZE), image, InvertOptions(steps=0))
    assert not torch.allclose(plain, latent, atol=1e-3)
    # options that ask for W keep an encoder's GAN in W
    in_w = latent_for_image(model, image, InvertOptions(steps=0, z_space=False))
    assert torch.equal(in_w, plain)


def test_a_gan_with_an_encoder_writes_its_z_beside_w(tmp_path, gan):
    """invert and sample save {'latent': W, 'z': z} for a GAN inverted in Z, W being the
    mapping of z; load_latent reads the W as before, load_latent_codes both."""
    from gan2shape.gan.encoder import ImageEncoder
    from gan2shape.gan.latents import load_latent_codes

    g, d = gan
    torch.manual_seed(1)
    encoder = ImageEncoder(SIZE, STYLE, CHANNELS)
    path = tmp_path / "gan_z.pt"
    save_stylegan2(path, g, d, generator_ema=g,
                   extra={"encoder": {k: v.clone() for k, v in encoder.state_dict().items()}})
    _, target = samples(g, 1, seed=7)
    array = ((target[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(tmp_path / "p.png")
    out = tmp_path / "inv"
    assert cli.main(["invert", str(tmp_path / "p.png"), "--gan", str(path), "--out", str(out),
                     "--steps", "5", "--quiet"]) == 0
    w, z = load_latent_codes(out / "p.pt", STYLE)
    assert z is not None and torch.equal(load_latent(out / "p.pt", STYLE), w)
    with torch.no_grad():
        torch.testing.assert_close(g.mapping(z), w, atol=1e-5, rtol=1e-5)
    assert json.loads((out / "p.json").read_text())["z_space"] is True

    sampled = tmp_path / "s"
    assert cli.main(["sample", "--gan", str(path), "-n", "1", "--out", str(sampled),
                     "--device", "cpu"]) == 0
    w, z = load_latent_codes(sampled / "latents" / "000000.pt", STYLE)
    with torch.no_grad():
        torch.testing.assert_close(g.mapping(z), w, atol=1e-5, rtol=1e-5)
    # without an encoder: the release's plain W tensor
    save_stylegan2(tmp_path / "plain.pt", g, d, generator_ema=g)
    assert cli.main(["invert", str(tmp_path / "p.png"), "--gan", str(tmp_path / "plain.pt"),
                     "--out", str(tmp_path / "inv_w"), "--steps", "2", "--quiet"]) == 0
    assert isinstance(torch.load(tmp_path / "inv_w" / "p.pt"), torch.Tensor)
    assert load_latent_codes(tmp_path / "inv_w" / "p.pt", STYLE)[1] is None
