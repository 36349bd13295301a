"""`gan2shape reconstruct` and `pretrain` end to end on a tiny random StyleGAN2: outputs,
resume, errors."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gan2shape import cli
from gan2shape.eval import gt_depth_to_png
from gan2shape.gan import save_latent
from gan2shape.recon import OUTPUT_FILES, build_networks, load_networks
from tiny_cli_inputs import FAST, STYLE_DIM, save_tiny_gan


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A GAN checkpoint, two 64 px GAN samples with their latents, a ground-truth depth."""
    root = tmp_path_factory.mktemp("inputs")
    g = save_tiny_gan(root / "gan.pt")
    images, latents = [], []
    for i in range(2):
        w = g.mapping(torch.randn(1, STYLE_DIM)).detach()
        with torch.no_grad():
            x = torch.nn.functional.interpolate(g.synthesis(w).clamp(-1, 1), size=64,
                                                mode="bilinear")[0]
        array = ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(array).save(root / f"img{i}.png")
        save_latent(root / f"img{i}.pt", w)
        images.append(root / f"img{i}.png")
        latents.append(root / f"img{i}.pt")
    rows = torch.linspace(0.95, 1.08, 64).view(64, 1).expand(64, 64)
    Image.fromarray(gt_depth_to_png(rows)).save(root / "gt.png")
    return {"root": root, "gan": root / "gan.pt", "images": images, "latents": latents,
            "gt": root / "gt.png"}


def reconstruct(*args):
    sets = [a for item in FAST for a in ("--set", item)]
    return cli.main(["reconstruct", *map(str, args), "--preset", "tiny", "--quiet", *sets])


def parse_obj_counts(path):
    counts = {"v": 0, "vt": 0, "vn": 0, "f": 0}
    max_index = 0
    for line in path.read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in counts:
            counts[key] += 1
        if key == "f":
            max_index = max(max_index, *(int(c.split("/")[0]) for c in line.split()[1:]))
    return counts, max_index


def test_reconstruct_writes_every_output_and_skips_finished_images(files, tmp_path, capsys):
    out = tmp_path / "out"
    img, w = files["images"][0], files["latents"][0]
    assert reconstruct(img, "--gan", files["gan"], "--latent", w, "--out", out,
                       "--gt-depth", files["gt"]) == 0
    folder = out / "img0"
    for name in OUTPUT_FILES:
        assert (folder / name).is_file(), name
    assert (out / "config.yaml").is_file()
    assert not (folder / "checkpoint.pt").exists()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert np.isfinite(metrics["SIDE"]) and 0 <= metrics["MAD_deg"] <= 180
    counts, max_index = parse_obj_counts(folder / "mesh.obj")
    rows, cols = 64 - 2, 64 - 4  # less the mesh's margin of 1 row and 2 columns each side
    n_vertices = rows * cols + (rows - 1) * (cols - 1)
    assert counts == {"v": n_vertices, "vt": n_vertices, "vn": n_vertices,
                      "f": 4 * (rows - 1) * (cols - 1)}
    assert max_index == n_vertices
    depth = np.load(folder / "depth.npy")
    assert depth.shape == (64, 64) and np.all((depth >= 0.8) & (depth <= 1.2))
    with Image.open(folder / "depth.png") as png:
        assert png.size == (64, 64) and np.asarray(png).dtype == np.uint16
    with Image.open(folder / "rotation.gif") as gif:
        assert gif.n_frames > 1 and gif.size == (128, 64)  # mesh | GAN side by side

    stamp = (folder / "mesh.obj").stat().st_mtime_ns
    capsys.readouterr()
    assert reconstruct(img, "--gan", files["gan"], "--latent", w, "--out", out) == 0
    assert "1 of 1 images already finished" in capsys.readouterr().out
    assert (folder / "mesh.obj").stat().st_mtime_ns == stamp


def test_torchrun_processes_split_the_images(files, tmp_path, monkeypatch, capsys):
    """Under torchrun (its environment variables), process r of 2 reconstructs images r,
    r + 2, ...; only process 0 writes config.yaml; a rerun as one process skips them all."""
    out = tmp_path / "out"
    args = [*files["images"], "--gan", files["gan"], "--latent", *files["latents"],
            "--out", out]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "1")
    assert reconstruct(*args) == 0
    assert (out / "img1" / "mesh.obj").is_file() and not (out / "img0").exists()
    assert not (out / "config.yaml").exists()
    monkeypatch.setenv("RANK", "0")
    assert reconstruct(*args) == 0
    assert (out / "img0" / "mesh.obj").is_file() and (out / "config.yaml").is_file()
    monkeypatch.setenv("WORLD_SIZE", "1")
    capsys.readouterr()
    assert reconstruct(*args) == 0
    assert "2 of 2 images already finished" in capsys.readouterr().out


def test_release_layout_resolves_latents_and_depths(files, tmp_path):
    from gan2shape.recon.reconstruct_command import make_jobs

    root = files["root"]
    (root / "list.txt").write_text("img1.png 0\nimg0.png\n")
    parser = cli.build_parser(["reconstruct"])
    args = parser.parse_args(["reconstruct", "--gan", str(files["gan"]), "--out", "o",
                              "--image-list", str(root / "list.txt"), "--image-root",
                              str(root), "--latent-root", str(root)])
    jobs = make_jobs(args)
    assert [(j.image, j.latent, j.name) for j in jobs] == [
        (root / "img1.png", root / "img1.pt", "img1"), (root / "img0.png", root / "img0.pt",
                                                        "img0")]


def one_line_error(capsys, *args):
    assert reconstruct(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gan2shape reconstruct: error:") and "\n" not in err
    return err


def test_bad_inputs_give_one_line_errors(files, tmp_path, capsys):
    gan, out = files["gan"], tmp_path / "out"
    img0, img1 = files["images"]
    w0 = files["latents"][0]
    err = one_line_error(capsys, img0, img1, "--gan", gan, "--latent", w0, "--out", out)
    assert "2 images but 1 latent" in err

    wide = tmp_path / "wide.pt"
    torch.save(torch.zeros(1, STYLE_DIM + 1), wide)
    assert "expected a W latent" in one_line_error(
        capsys, img0, "--gan", gan, "--latent", wide, "--out", out)

    nan = tmp_path / "nan.pt"
    torch.save(torch.full((1, STYLE_DIM), float("nan")), nan)
    assert "NaN" in one_line_error(capsys, img0, "--gan", gan, "--latent", nan, "--out", out)

    small = tmp_path / "small.png"  # 16 px for the tiny preset's 64: more than 2x upscaling
    Image.new("RGB", (16, 24)).save(small)
    assert "too small" in one_line_error(capsys, small, "--gan", gan, "--latent", w0,
                                         "--out", out)
    assert "not found" in one_line_error(capsys, img0, "--gan", tmp_path / "missing.pt",
                                         "--latent", w0, "--out", out)
    assert "not found" in one_line_error(capsys, img0, "--gan", gan, "--latent", w0,
                                         "--out", out, "--pretrained", tmp_path / "no.pth")
    assert not any(out.glob("*/metrics.json"))


def test_pretrain_writes_release_weights_that_load_strictly(files, tmp_path, capsys):
    out = tmp_path / "pre"
    sets = [a for item in [*FAST, "collect_iters=2"] for a in ("--set", item)]
    args = ["pretrain", *map(str, files["images"]), "--latent", *map(str, files["latents"]),
            "--gan", str(files["gan"]), "--preset", "tiny", "--out", str(out), "--quiet"]
    assert cli.main([*args, *sets]) == 0
    weights = torch.load(out / "gan2shape_pretrain.pth", map_location="cpu")
    assert set(weights) == {"netD", "netA", "netV", "netL", "netEnc"}
    nets = build_networks(64, STYLE_DIM, nf=16, enc_nf=8)
    load_networks(nets, weights)  # strict: every key and shape of the release layout
    assert not (out / "checkpoint.pt").exists()

    # too few collection iterations for the images: a one-line error
    few = [a for item in [*FAST, "collect_iters=1"] for a in ("--set", item)]
    capsys.readouterr()
    assert cli.main([*args[:-3], "--out", str(tmp_path / "other"), "--quiet", *few]) == 2
    err = capsys.readouterr().err.strip()
    assert "collect_iters" in err and "\n" not in err


def test_pretrain_under_torchrun_writes_the_weights_once(files, tmp_path, torchrun):
    """Two processes, one image each: process 0 alone writes the weights and the message."""
    out = tmp_path / "pre"
    sets = [a for item in [*FAST, "collect_iters=2"] for a in ("--set", item)]
    result = torchrun("-m", "gan2shape", "pretrain", *files["images"], "--latent",
                      *files["latents"], "--gan", files["gan"], "--preset", "tiny",
                      "--out", out, "--quiet", *sets)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("on 2 processes") == 1
    nets = build_networks(64, STYLE_DIM, nf=16, enc_nf=8)
    load_networks(nets, torch.load(out / "gan2shape_pretrain.pth", map_location="cpu"))
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "gan2shape_pretrain.pth"]


@pytest.mark.parametrize("n", [1, 3])
def test_cycle_visits_every_index_once_per_pass(n):
    from gan2shape.recon.pretrain import Cycle

    cycle = Cycle(n)
    for _ in range(3):
        assert sorted(cycle.next() for _ in range(n)) == list(range(n))


def test_invert_hook_takes_a_photo_without_latent(files, tmp_path, monkeypatch):
    """--invert: a non-square RGBA photo is square-cropped to the GAN's size and its latent
    comes from gan.invert.codes_for_file (replaced here by a fixed latent)."""
    from gan2shape.config import load_config
    from gan2shape.gan import invert, load_stylegan2
    from gan2shape.recon.reconstruct_command import Job, load_inputs

    photo = tmp_path / "photo.png"
    Image.new("RGBA", (50, 40), (255, 0, 0, 255)).save(photo)
    w = torch.full((1, STYLE_DIM), 0.5)
    monkeypatch.setattr(invert, "codes_for_file", lambda path, gan, *_, **__: (w, None))
    gan = load_stylegan2(files["gan"])
    image, latent, code, mask, gt = load_inputs(Job(photo, None, "photo"), None, gan, "cpu",
                                          load_config("tiny"))
    assert image.shape == (3, 32, 32) and torch.equal(latent, w)
    torch.testing.assert_close(image[0], torch.ones(32, 32))  # red, in [-1, 1]
    assert code is None and mask is None and gt is None


def test_a_release_yaml_names_the_gan_and_the_list_it_runs(files, tmp_path, capsys):
    """The release's configs carry gan_ckpt / img_list_path / img_root / latent_root: they are
    the defaults of --gan / --image-list / --image-root / --latent-root."""
    root, out = files["root"], tmp_path / "out"
    (root / "release_list.txt").write_text("img1.png\nimg0.png\n")
    release = tmp_path / "synface.yml"
    release.write_text(f"checkpoint_dir: results/synface\nuse_logger: true\n"
                       f"gan_ckpt: {files['gan']}\nimg_list_path: {root / 'release_list.txt'}\n"
                       f"img_root: {root}\nlatent_root: {root}\nreset_weight: true\n")
    assert reconstruct("--config", release, "--out", out) == 0
    assert {p.parent.name for p in out.glob("*/metrics.json")} == {"img0", "img1"}
    err = capsys.readouterr().err
    assert "skipping the release's trainer/logging keys checkpoint_dir, use_logger" in err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["gan_ckpt"] == str(files["gan"]) and saved["gan_size"] == 32


def test_command_options_win_over_the_configs_paths(files, tmp_path):
    from gan2shape.config import load_config
    from gan2shape.recon.reconstruct_command import apply_config_paths

    config = tmp_path / "c.yml"
    config.write_text(f"gan_ckpt: {tmp_path / 'other.pt'}\nimg_list_path: list.txt\n"
                      f"img_root: {tmp_path}\nlatent_root: {tmp_path}\n")
    args = cli.build_parser(["reconstruct"]).parse_args(
        ["reconstruct", str(files["images"][0]), "--gan", str(files["gan"]), "--out", "o",
         "--latent", str(files["latents"][0])])
    cfg = load_config("tiny", config)
    apply_config_paths(args, cfg)
    assert args.gan == files["gan"] and cfg.gan_ckpt == str(files["gan"])
    assert args.image_list is None and cfg.img_list_path is None  # images were given


def test_settings_this_tool_does_not_do_are_refused(files, tmp_path, capsys):
    img, w, out = files["images"][0], files["latents"][0], tmp_path / "out"
    for setting, hint in (("reset_weight=false", "not supported"),
                          ("joint_train=true", "gan2shape pretrain"),
                          ("gan_size=128", "--set gan_size=32")):
        err = one_line_error(capsys, img, "--gan", files["gan"], "--latent", w, "--out", out,
                             "--set", setting)
        assert hint in err
    assert "no GAN given" in one_line_error(capsys, img, "--latent", w, "--out", out)
