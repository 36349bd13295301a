"""ReconConfig, presets (the release's values, docs/method.md section 4), YAML and overrides."""

import pytest
import yaml

from gan2shape.config import ReconConfig, available_presets, load_config, save_config
from gan2shape.errors import UserError


def test_presets_exist_and_validate():
    assert {"celeba", "cat", "car", "church", "synface", "demo", "tiny"} <= set(available_presets())
    for name in available_presets():
        load_config(name)


# (image_size, crop, gan_size, channel_multiplier, stage 1, later, n_stage, batch, flip3,
#  use_mask, relative_enc, F1_d, view_scale, rand_light) as in the release's configs/*.yml
RELEASE = {
    "celeba": (128, None, 128, 1, (600, 600, 400), (200, 500, 300), 4, 16,
               [True, False, False, False], False, True, 2, 1.2,
               [-1, 1, -0.2, 0.8, -0.1, 0.6, -0.6]),
    "cat": (128, 170, 256, 1, (600, 600, 400), (200, 500, 300), 4, 16,
            [True, False, False, False], False, True, 2, 1.2,
            [-1, 1, -0.2, 0.8, -0.1, 0.6, -0.6]),
    "car": (128, None, 512, 2, (700, 700, 600), (200, 500, 400), 4, 8, [False] * 4, True,
            False, 2, 1.0, [-1, 1, -0.2, 0.8, -0.1, 0.6, -0.6]),
    "church": (128, None, 256, 2, (700, 700, 600), (200, 500, 400), 4, 8, [False] * 4, True,
               False, 2, 1.0, [-1, 1, -0.2, 0.8, -0.1, 0.6, -0.6]),
    "synface": (64, 170, 128, 1, (500, 500, 200), None, 1, 16, [True], False, True, 8, 1.2,
                [-0.9, 0.9, -0.3, 0.8, -0.1, 0.7, -0.4]),
}


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_presets_carry_the_release_settings(name):
    (size, crop, gan, cm, first, later, n, batch, flip3, use_mask, rel, f1d, vs,
     rl) = RELEASE[name]
    c = load_config(name)
    assert (c.image_size, c.crop, c.gan_size, c.channel_multiplier) == (size, crop, gan, cm)
    schedule = c.stage_schedule()
    assert len(schedule) == n
    assert schedule[0][:3] == first
    for stage in schedule[1:]:
        assert stage[:3] == later
    assert [s[4] for s in schedule] == flip3 and not any(s[3] for s in schedule)
    assert (c.batchsize, c.use_mask, c.relative_enc, c.F1_d, c.view_scale) == (
        batch, use_mask, rel, f1d, vs)
    assert c.rand_light == rl
    assert (c.lr, c.weight_decay, c.collect_iters) == (1e-4, 5e-4, 100)
    assert (c.lam_perc, c.lam_smooth, c.lam_regular) == (0.5, 0.01, 0.01)
    assert (c.min_depth, c.max_depth, c.xyz_rotation_range, c.xy_translation_range,
            c.z_translation_range, c.fov, c.rot_center_depth) == (0.9, 1.1, 60, 0.1, 0, 10, 1)
    assert c.border_depth is None  # the release's 0.7 * max_depth + 0.3 * min_depth
    assert c.prior_far == (1.0 if name == "church" else 1.02) and c.prior_near == 0.91
    assert c.prior_iters == 1000 and c.nf is None and c.enc_nf == 32


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "my.yml"
    path.write_text("batchsize: 4\nlam_smooth: 0.02\ncheckpoint_dir: results/x\n")
    c = load_config("celeba", path, ["lr=2e-4", "flip3_cfg=[false, true, false, false]",
                                     "stage_len_dict.step2=7", "vgg16_path=/w/vgg.pth",
                                     "perceptual=vgg16", "crop=null"])
    assert (c.batchsize, c.lam_smooth, c.lr) == (4, 0.02, 2e-4)
    assert c.flip3_cfg == [False, True, False, False]
    assert c.stage_len_dict == {"step1": 600, "step2": 7, "step3": 400}
    assert c.perceptual == "vgg16" and c.crop is None
    c2 = load_config(overrides=["stage_len_dict2.step3=9"])
    assert c2.stage_len_dict2["step3"] == 9 and c2.stage_len_dict2["step1"] == 200


def test_release_yaml_loads(tmp_path):
    release = """
checkpoint_dir: results/synface
use_logger: true
num_stage: 1
flip1_cfg: [false]
flip3_cfg: [true]
stage_len_dict:
    step1: 500
    step2: 500
    step3: 200
image_size: 64
crop: 170
category: synface
relative_enc: true
use_mask: false
view_scale: 1.2
batchsize: 16
lr: 0.0001
F1_d: 8
gan_ckpt: checkpoints/stylegan2/stylegan2-synface-config-e.pt
view_mvn_path: checkpoints/view_light/synface_view_mvn.pth
rand_light: [-0.9,0.9,-0.3,0.8,-0.1,0.7,-0.4]
fov: 10
"""
    path = tmp_path / "synface.yml"
    path.write_text(release)
    c = load_config(None, path, ["stage_len_dict2=null"])
    assert c.stage_schedule() == [(500, 500, 200, False, True)]
    assert c.gan_ckpt.endswith("config-e.pt")


@pytest.mark.parametrize("overrides, pattern", [
    (["batchsze=4"], "did you mean 'batchsize'"),
    (["batchsize=four"], "batchsize must be int"),
    (["batchsize=0"], "batchsize must be >= 1"),
    (["use_mask=1"], "use_mask must be bool"),
    (["image_size=96"], "power of two"),
    (["num_stage=6"], "flip1_cfg has 4 entries"),
    (["stage_len_dict={step1: 1, step2: 1}"], "step1, step2, step3"),
    (["min_depth=1.2"], "min_depth < max_depth"),
    (["perceptual=alex"], "perceptual must be one of"),
    (["sample_params=known"], "sample_params must be one of"),
    (["perceptual=vgg16"], "needs vgg16_path"),
    (["perceptual=lpips", "vgg16_path=a.pth"], "needs lpips_path"),
    (["mask=parser"], "mask must be one of"),
    (["rand_light=[1, 2]"], "rand_light"),
    (["lr"], "key=value"),
    (["nf=20"], "multiple of 8"),
    (["nosuch.step1=3"], "unknown setting"),
])
def test_bad_settings_are_one_line_errors(overrides, pattern):
    with pytest.raises(UserError, match=pattern) as info:
        load_config("celeba", overrides=overrides)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="unknown preset"):
        load_config("horse")
    with pytest.raises(UserError, match="not found"):
        load_config("celeba", tmp_path / "missing.yml")
    (tmp_path / "bad.yml").write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config("celeba", tmp_path / "bad.yml")
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config("celeba", tmp_path / "list.yml")


def test_save_config_round_trip(tmp_path):
    c = load_config("car", overrides=["seed=3"])
    save_config(c, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert ReconConfig(**data) == c
    assert load_config(None, tmp_path / "config.yaml") == c


def _names_read(trees) -> set[str]:
    """Attribute names (cfg.key) and string constants (getattr(cfg, "key")) in ast trees."""
    import ast

    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    return names


def test_no_setting_is_accepted_and_ignored():
    """Every setting is read by the code that runs (outside config.py, or in ReconConfig's
    stage_schedule / check_gan), or is one that validate() refuses unless at the only value
    supported."""
    import ast
    from pathlib import Path

    import gan2shape
    from gan2shape.config import FIELD_NAMES

    package = Path(gan2shape.__file__).parent
    trees = [ast.parse(p.read_text()) for p in package.rglob("*.py") if p.name != "config.py"]
    config = ast.parse((package / "config.py").read_text())
    trees += [node for node in ast.walk(config) if isinstance(node, ast.FunctionDef)
              and node.name in ("stage_schedule", "check_gan")]
    refused_unless_default = {"reset_weight", "joint_train"}
    unread = set(FIELD_NAMES) - _names_read(trees) - refused_unless_default
    assert not unread, f"settings nothing reads: {sorted(unread)}"


def test_check_gan_fills_in_or_refuses():
    c = load_config("celeba")
    c.check_gan(128, 1)
    assert (c.gan_size, c.channel_multiplier) == (128, 1)
    with pytest.raises(UserError, match="128 px GAN.*--set gan_size=64"):
        c.check_gan(64, None)
    with pytest.raises(UserError, match="channel_multiplier=2"):
        c.check_gan(128, 2)
    open_ = load_config("tiny")
    open_.check_gan(32, None)
    assert (open_.gan_size, open_.channel_multiplier) == (32, None)


def test_the_demo_preset_is_made_for_the_embedded_v2_gan():
    from gan2shape.config import preset_for_gan
    from gan2shape.data import scenes
    from gan2shape.eval.heldout import FAMILY_PRESETS

    demo = load_config("demo")
    # Pseudo samples relit inside v2's own light directions, with no strength jitter, and
    # projected by optimisation in Z (the embedded GAN has an image encoder).
    box = scenes.light_raw_ranges("v2")
    assert demo.rand_light == [*box["lx"], *box["ly"], 0.0, 0.0, 0.0]
    assert (demo.latent_space, demo.projection, demo.pseudo_views) == ("z", "optimise", False)
    assert preset_for_gan(64) == "demo"
    assert FAMILY_PRESETS == {"v1": "demo_v1", "v2": "demo"}
    assert load_config("demo_v1").gan_size is None  # not a second preset for 64 px GANs
