"""What a user meets on a second run or with bad options: stale results refused, unusable
output folders, non-finite or out-of-range numbers, Ctrl-C in train-gan, one image policy,
presets that follow the GAN, and the sample -> reconstruct hand-over."""

import argparse
import dataclasses
import json
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from gan2shape import cli, embedded
from gan2shape.gan import Generator, save_latent
from gan2shape.gan.images import load_image
from gan2shape.gan.train import Trainer
from gan2shape.recon import reconstruct_command as command
from tiny_cli_inputs import FAST, STYLE_DIM, save_tiny_gan

UNWRITABLE = "/proc/gan2shape-cannot-write-here"  # refused even to root


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 32 px GAN checkpoint, one 64 px sample image with its latent."""
    root = tmp_path_factory.mktemp("inputs")
    g = save_tiny_gan(root / "gan.pt")
    w = g.mapping(torch.randn(1, STYLE_DIM)).detach()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        root / "img.png")
    save_latent(root / "img.pt", w)
    return root


def error_of(capsys, *argv):
    """The command's stderr, checked to be one error line with exit status 2."""
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gan2shape {argv[0]}: error:") and "\n" not in err, err
    return err


def reconstruct_args(files, out, *extra):
    sets = [a for item in FAST for a in ("--set", item)]
    return ["reconstruct", files / "img.png", "--gan", files / "gan.pt", "--latent",
            files / "img.pt", "--preset", "tiny", "--quiet", "--out", out, *sets, *extra]


def test_finished_images_of_other_settings_are_refused_or_overwritten(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([str(a) for a in reconstruct_args(files, out)]) == 0
    metrics = out / "img" / "metrics.json"
    first = json.loads(metrics.read_text())["settings_digest"]
    config = (out / "config.yaml").read_text()
    # the same settings: skipped
    assert cli.main([str(a) for a in reconstruct_args(files, out)]) == 0
    assert "already finished" in capsys.readouterr().out
    # other settings: refused, and the folder's config still describes its results
    err = error_of(capsys, *reconstruct_args(files, out, "--set", "lam_smooth=0.5"))
    assert "--overwrite" in err and "another --out" in err
    assert (out / "config.yaml").read_text() == config
    # --overwrite redoes it under the new settings
    assert cli.main([str(a) for a in reconstruct_args(
        files, out, "--set", "lam_smooth=0.5", "--overwrite")]) == 0
    assert json.loads(metrics.read_text())["settings_digest"] != first
    assert "lam_smooth: 0.5" in (out / "config.yaml").read_text()


def test_unusable_out_is_a_one_line_error_in_every_command(files, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "a.png")
    for out in (a_file, UNWRITABLE):
        commands = [
            reconstruct_args(files, out),
            ["pretrain", files / "img.png", "--gan", files / "gan.pt", "--latent",
             files / "img.pt", "--preset", "tiny", "--out", out],
            ["sample", "--gan", files / "gan.pt", "-n", 1, "--out", out],
            ["invert", files / "img.png", "--gan", files / "gan.pt", "--out", out],
            ["train-gan", data, "--size", 8, "--width", 8, "--iters", 1, "--out", out],
            ["make-data", "--out", out, "-n", 1],
            ["demo", "--out", out],
            ["evaluate", "--results", tmp_path, "--gt", tmp_path,
             "--out", f"{out}/e.json" if out == UNWRITABLE else tmp_path],
        ]
        for argv in commands:
            err = error_of(capsys, *argv)
            assert str(out) in err or "folder" in err, (argv[0], err)


def test_bad_numbers_are_refused(files, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "a.png")
    invert = ["invert", files / "img.png", "--gan", files / "gan.pt", "--out", tmp_path / "i"]
    assert "--lr must be a finite number > 0, got nan" in error_of(capsys, *invert, "--lr", "nan")
    assert "got -1" in error_of(capsys, *invert, "--lr", "-1")
    train = ["train-gan", data, "--size", 8, "--width", 8, "--out", tmp_path / "t"]
    assert "--lr must be a finite" in error_of(capsys, *train, "--lr", "nan")
    assert "--iters must be at least 1" in error_of(capsys, *train, "--iters", "-5")
    assert "--r1 must be a finite number >= 0" in error_of(capsys, *train, "--r1", "nan")
    assert not (tmp_path / "t" / "checkpoint.pt").exists()
    err = error_of(capsys, *reconstruct_args(files, tmp_path / "r", "--set", "lr=nan"))
    assert "lr must be a finite number" in err


def test_train_gan_ctrl_c_exits_130_with_a_checkpoint_and_resume_says_when_new(
        tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(data / f"{i}.png")
    step = Trainer.step

    def interrupted_step(self):
        stats = step(self)
        if self.iteration == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C between iterations
        return stats

    monkeypatch.setattr(Trainer, "step", interrupted_step)
    out = tmp_path / "run"
    argv = ["train-gan", str(data), "--size", "8", "--width", "8", "--batch", "2", "--iters",
            "5", "--out", str(out), "--quiet", "--device", "cpu", "--no-bf16", "--resume"]
    assert cli.main(argv) == 130
    printed = capsys.readouterr().out
    assert "no checkpoint" in printed and "starting a new run" in printed
    assert (out / "checkpoint.pt").is_file()
    monkeypatch.setattr(Trainer, "step", step)
    assert cli.main(argv) == 0
    assert "no checkpoint" not in capsys.readouterr().out


def test_one_image_policy_for_every_command(files, tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((48, 64), 100, np.uint8), "L").save(grey)
    image = load_image(grey)  # centre square, three equal channels
    assert image.shape == (3, 48, 48) and torch.equal(image[0], image[2])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "a.png")
    for argv in (
        [part if part != files / "img.png" else tiny
         for part in reconstruct_args(files, tmp_path / "r")],
        ["invert", tiny, "--gan", files / "gan.pt", "--out", tmp_path / "i", "--quiet"],
        ["train-gan", data, "--size", 32, "--width", 8, "--out", tmp_path / "t"],
    ):
        assert "too small: its square is 8 px" in error_of(capsys, *argv)


def _prepare(**given):
    args = argparse.Namespace(
        images=[], gan=None, latent=[], latent_dir=None, invert=False, image_list=None,
        image_root=None, latent_root=None, gt_depth_root=None, preset=None, config=None,
        overrides=[], pretrained=None, mask=[], gt_depth=[], view_prior=None,
        light_prior=None, device="cpu", quiet=True)
    for key, value in given.items():
        setattr(args, key, value)
    return command.prepare(args)


def test_the_preset_follows_the_gan_and_embedded_brings_its_priors(files, tmp_path, capsys):
    w = tmp_path / "w.pt"
    save_latent(w, torch.zeros(1, 64), torch.zeros(1, 64))  # the embedded GAN's W and z
    cfg, jobs, *_ = _prepare(images=[files / "img.png"], latent=[w],
                             gan=command.Path("embedded"))
    assert cfg.image_size == 64 and cfg.prior_near == 0.975  # the demo preset
    assert cfg.view_mvn_path == str(embedded.asset_path(embedded.VIEW_PRIOR_FILE))
    assert cfg.light_mvn_path == str(embedded.asset_path(embedded.LIGHT_PRIOR_FILE))
    assert "preset demo" in capsys.readouterr().err
    # a 32 px GAN has no preset made for it: say so
    err = error_of(capsys, "reconstruct", files / "img.png", "--gan", files / "gan.pt",
                   "--latent", files / "img.pt", "--out", tmp_path / "o")
    assert "give --preset" in err
    # a preset for another GAN size is refused
    err = error_of(capsys, "reconstruct", files / "img.png", "--gan", "embedded", "--latent",
                   w, "--preset", "celeba", "--out", tmp_path / "o")
    assert "128 px GAN" in err
    # its preset works in Z: a latent file with only a W is refused before any work
    save_latent(tmp_path / "w_only.pt", torch.zeros(1, 64))
    err = error_of(capsys, "reconstruct", files / "img.png", "--gan", "embedded", "--latent",
                   tmp_path / "w_only.pt", "--preset", "demo", "--out", tmp_path / "o")
    assert "holds only a W" in err


def test_sample_output_feeds_reconstruct_through_the_release_layout(files, tmp_path):
    out = tmp_path / "s"
    assert cli.main(["sample", "--gan", str(files / "gan.pt"), "-n", "2", "--out", str(out),
                     "--device", "cpu"]) == 0
    _, jobs, _, _, latents = _prepare(image_list=out / "list.txt", image_root=out,
                                      latent_root=out / "latents", gan=files / "gan.pt",
                                      preset="tiny")
    assert [j.latent for j in jobs] == [out / "latents" / "000000.pt",
                                        out / "latents" / "000001.pt"]
    assert all(w.shape == (1, STYLE_DIM) and z is None for w, z in latents)


def test_inversion_shows_progress(capsys):
    from gan2shape.gan.invert import InvertOptions, invert

    torch.manual_seed(0)
    g = Generator(8, style_dim=STYLE_DIM, channels={4: 8, 8: 8})
    invert(g, torch.zeros(1, 3, 8, 8), InvertOptions(steps=3, perceptual="none", progress=True))
    err = capsys.readouterr().err
    assert "inversion:" in err and "0/3" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("gan2shape ")


def test_sample_and_invert_take_the_embedded_gan(tmp_path):
    samples = tmp_path / "s"
    assert cli.main(["sample", "--gan", "embedded", "-n", "1", "--out", str(samples),
                     "--device", "cpu"]) == 0
    image = samples / "images" / "000000.png"
    assert Image.open(image).size == (embedded.IMAGE_SIZE, embedded.IMAGE_SIZE)
    saved = torch.load(samples / "latents" / "000000.pt")  # W and z: it is used in Z
    assert saved["latent"].shape == saved["z"].shape == (1, 64)
    out = tmp_path / "i"
    assert cli.main(["invert", str(image), "--gan", "embedded", "--steps", "2",
                     "--perceptual", "none", "--device", "cpu", "--quiet",
                     "--out", str(out)]) == 0
    record = json.loads((out / "000000.json").read_text())
    assert record["gan"] == str(embedded.asset_path(embedded.GAN_FILE)) and record["z_space"]
    assert Image.open(out / "000000.png").size == (embedded.IMAGE_SIZE, embedded.IMAGE_SIZE)


def test_reconstruct_invert_shows_the_inversion_progress(files, tmp_path, capsys, monkeypatch):
    from gan2shape.gan import invert as inversion

    full = inversion.invert

    def short(generator, images, options, *args):
        assert options.progress
        return full(generator, images, dataclasses.replace(options, steps=2), *args)

    monkeypatch.setattr(inversion, "invert", short)
    argv = [a for a in reconstruct_args(files, tmp_path / "o") if a != "--quiet"]
    latent = argv.index("--latent")
    argv[latent:latent + 2] = ["--invert"]
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 0
    assert "inversion:" in capsys.readouterr().err
