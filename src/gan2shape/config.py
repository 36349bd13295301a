"""Typed configuration of a reconstruction, presets, YAML files and command-line overrides.

Setting names are the release's (configs/*.yml), so its YAML files load as they are. Every
key is used or refused: the keys that only drove its trainer, logger or distributed set-up
are skipped with a one-line notice naming them; its file paths (``gan_ckpt``,
``img_list_path``, ``img_root``, ``latent_root``, ``pretrain``) are the defaults of the
command's options (an option given on the command line wins); ``gan_size`` and
``channel_multiplier`` are checked against the GAN checkpoint; ``reset_weight: false`` and
``joint_train: true``, which this tool does not do per image, are refused with the command to
use instead.
A configuration is built as: dataclass defaults <- preset YAML <- user YAML <- overrides
(``key=value``, value in YAML syntax; ``stage_len_dict.step1=50`` sets one entry).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .fileio import save_text

PRESET_DIR = Path(__file__).parent / "presets"
STEP_NAMES = ("step1", "step2", "step3")
CATEGORIES = ("face", "synface", "cat", "car", "church", "horse", "object")
MASK_METHODS = ("box", "foreground", "file", "segmenter")
PERCEPTUAL_CHOICES = ("lpips", "vgg16", "discriminator", "none")
PRIOR_MODES = ("fit", "residual")
SAMPLE_PARAMS = ("predicted", "rendered", "refined")
LATENT_SPACES = ("w", "z")
PROJECTIONS = ("encoder", "optimise")
GAN_AUTOCAST = ("none", "bf16")
CONVENTIONS = ("clean", "release")

# Keys of the release's YAML files that drove its trainer, logging or multi-GPU set-up;
# they have no meaning here and are skipped (with a notice) when such a file is loaded.
RELEASE_IGNORED = frozenset({
    "checkpoint_dir", "save_checkpoint_freq", "keep_num_checkpoint", "use_logger", "log_freq",
    "independent", "share_weight", "save_results", "model_name", "num_scale", "tex_cube_size",
    "load_gt_depth", "distributed", "num_workers", "config", "z_dim",
})


def _steps(step1: int, step2: int, step3: int) -> dict[str, int]:
    return {"step1": step1, "step2": step2, "step3": step3}


@dataclass
class ReconConfig:
    """Every setting of a reconstruction (docs/method.md section 4), with the release's names.

    Stage schedule: ``num_stage`` stages; stage 1 runs ``stage_len_dict`` iterations of
    steps 1/2/3, later stages ``stage_len_dict2`` (``None``: the same as stage 1);
    ``flip1_cfg`` / ``flip3_cfg`` switch the symmetry (flipped second explanation) per stage
    in step 1 / step 3. :meth:`stage_schedule` gives it as a list of
    ``(step1, step2, step3, flip1, flip3)``.
    """

    # what and at which size
    category: str = "face"
    image_size: int = 128
    crop: int | None = None
    # The GAN the settings were made for (None: any); checked against the checkpoint by
    # :meth:`check_gan`, which fills them in from it.
    gan_size: int | None = None
    channel_multiplier: int | None = None
    truncation: float = 1.0
    # stage schedule
    num_stage: int = 4
    stage_len_dict: dict[str, int] = field(default_factory=lambda: _steps(600, 600, 400))
    stage_len_dict2: dict[str, int] | None = field(default_factory=lambda: _steps(200, 500, 300))
    flip1_cfg: list[bool] = field(default_factory=lambda: [False] * 4)
    flip3_cfg: list[bool] = field(default_factory=lambda: [True, False, False, False])
    # The release's switches for carrying networks from one image to the next and for joint
    # training; here every image starts from the initial weights (reset_weight true) and
    # joint training is its own command (``gan2shape pretrain``), so only these values pass.
    reset_weight: bool = True
    joint_train: bool = False
    # method switches
    # False: the "no GAN" ablation. Step 2 and the collection of projected samples are
    # skipped (they only serve the samples) and Step 3 trains the depth, albedo, view and
    # light networks on the input image alone (the Step-1 loss), for the same Step-1 and
    # Step-3 iterations from the same shape prior. The generator never runs (the latent is
    # ignored, the sequences' GAN rows are the plain reprojections); the discriminator still
    # serves as the perceptual feature network when perceptual is 'discriminator'.
    use_gan_samples: bool = True
    batchsize: int = 16
    collect_iters: int = 100
    # Step 3 compares each projected sample with its render only where the sample sees the
    # object (its mask carried into the sample's view). Without it the sample's background,
    # which no light changes, pulls the depth near the object's rim: with perfect relit
    # samples (benchmarks/synthetic.py --oracle) the depth's rim bends towards the
    # background (docs/analysis.md, section 2).
    use_mask: bool = False
    relative_enc: bool = True
    add_mean_L: bool = True
    add_mean_V: bool = True
    F1_d: int = 2
    view_scale: float = 1.2
    # False: pseudo samples keep the input's view and only change the light (relighting).
    # With a perfect projection (benchmarks/synthetic.py --oracle) new views hurt at 64 px,
    # with or without use_mask, as long as Step 3 also fits the input image (lam_input3 1);
    # at lam_input3 0 they help, though less than relighting (docs/analysis.md, section 4).
    pseudo_views: bool = True
    # Each projected sample's view and light in Step 3: "predicted" by the view and light
    # networks from the projected image (the release's), or "rendered": the pseudo sample's
    # own, which the projection is trained to keep (networks trained from scratch per image
    # cannot predict a new view after a few dozen steps), or "refined": the rendered view,
    # and a light per sample that Step 3 learns (at lr_sample_light) from the rendered one.
    # A projection shows the face under a light of its own, not quite its pseudo
    # sample's; explained under the pseudo sample's light, the depth bends. With the exact
    # family as the GAN, "refined" lifts the depth well past "rendered"; with the trained
    # embedded GAN it does worse (docs/generator.md, sixth session).
    sample_params: str = "predicted"
    lr_sample_light: float = 0.05
    # Where Step 2's latent encoder moves a projection: "w", the release's (w + mapping_tail(h)
    # - center_w), or "z": the image's input latent z (from an inversion in Z, ``code`` of
    # Reconstructor.fit) plus the encoder's offset, through the whole mapping, so every
    # projection is the mapping's image of a z and stays on the learned distribution (the
    # offset, not a W difference, is then what lam_regular regularises).
    latent_space: str = "w"
    # How collected pseudo samples are projected: "encoder", the release's (Step 2 trains
    # the latent encoder, which projects them), or "optimise": Step 2's objective solved
    # for each sample by projection_steps of Adam on its own latent offset at projection_lr
    # (no encoder; Step 2 has nothing to train). An encoder trained for a few dozen steps
    # finds a much worse minimum of that objective than the sample's own optimisation
    # (the v2 GAN on validation faces: information ratio -0.25 through the encoder, +0.33
    # optimised in Z; docs/generator.md).
    projection: str = "encoder"
    projection_steps: int = 100
    projection_lr: float = 0.01
    # The input's light in Steps 1 and 3: "network", the light network's estimate (the
    # light prior's mean at the start; the release's), or "estimate": fitted to the image
    # with the shape prior's normals on the pixels of the skin's chromaticity, shrunk
    # towards the prior's mean by light_shrink (``recon.light_estimate``), and held fixed.
    input_light: str = "network"
    light_shrink: float = 0.7
    rand_light: list[float] = field(
        default_factory=lambda: [-1.0, 1.0, -0.2, 0.8, -0.1, 0.6, -0.6])
    # optimisation
    lr: float = 1e-4
    # The depth network's lr in Step 3 (None: lr, the release's). Every Adam step moves
    # each weight by about lr whatever the gradient, and at 64 px a depth change of 1e-4
    # tilts a normal by 2 deg, so a small net's depth drifts at the release's lr.
    lr_depth: float | None = None
    # The view network's lr in Step 3 (None: lr). The canonical frame is the input's (the
    # prior is placed in it), so a drift of the input's predicted view only misaligns the
    # depth: on validation faces it cost 1 deg MAD at lr 1e-4.
    lr_view: float | None = None
    weight_decay: float = 5e-4
    lam_perc: float = 0.5
    lam_smooth: float = 0.01
    lam_regular: float = 0.01
    # Weight of the input image's own terms (photometric + perceptual) in Step 3 (the
    # release's 1; its smoothness terms keep lam_smooth). With perfect relit samples the
    # input's term holds the depth back: on 4 validation faces 0.162 / 6.98 (SIDE / MAD)
    # at 1, 0.076 / 6.28 at 0, and new views go from 1.60 / 16.6 to 0.71 / 9.9
    # (docs/analysis.md, section 4). It is all the "no GAN" ablation has, so that ignores it.
    lam_input3: float = 1.0
    # lpips (the release's; needs vgg16_path + lpips_path), vgg16 (relu3_3 L1; needs
    # vgg16_path), discriminator (the GAN's own features), none. Presets use discriminator:
    # it needs no file beyond the GAN checkpoint. It is not the cheap choice: per loss call
    # with backward (benchmarks/perceptual.py, batch 16 at 64 px, 128 px config-e D) it
    # costs 3.2x VGG16 relu3_3 and 2.1x LPIPS.
    perceptual: str = "discriminator"
    # Reuse the perceptual features of a target equal to the previous one (Step 1's input,
    # the flipped half of a batch) instead of recomputing them: the same values, less time.
    reuse_target_features: bool = True
    # The frozen GAN's precision: "bf16" runs the generator's synthesis and the
    # discriminator's features (Step 2's feature loss, the discriminator perceptual loss)
    # under bfloat16 autocast; the mapping network, the factor networks, the renderer and
    # the losses stay float32. It pays on CPUs with AVX-512 BF16 / AMX at 128 px (batch 16,
    # 1 thread: the discriminator's features 2.6x, the generator 1.7x), not at 64 px, and it
    # moves the demo's SIDE / MAD per face by up to 0.005 x1e-2 / 0.10 deg, beyond the
    # issue's float32 tolerance, though no more than a float32 kernel change does
    # (docs/performance.md): opt-in. "none": float32, the release's.
    gan_autocast: str = "none"
    vgg16_path: str | None = None  # torchvision vgg16 state dict
    lpips_path: str | None = None  # LPIPS v0.1 linear heads for VGG16 (lin0..lin4)
    # geometry
    min_depth: float = 0.9
    max_depth: float = 1.1
    border_depth: float | None = None  # None: 0.7 * max_depth + 0.3 * min_depth
    xyz_rotation_range: float = 60.0  # degrees
    xy_translation_range: float = 0.1
    z_translation_range: float = 0.0
    fov: float = 10.0  # degrees
    rot_center_depth: float = 1.0
    conventions: str = "clean"
    # shape prior and masks
    mask: str = "box"
    prior_near: float = 0.91
    prior_far: float = 1.02
    prior_iters: int = 1000
    prior_lr: float = 1e-4
    # fit: the release's, the depth network is first trained by MSE towards the ellipsoid
    # (prior_iters Adam steps at prior_lr). residual: the ellipsoid is added to the depth
    # network's centred raw output and that network's last layer starts at zero, so the
    # depth starts exactly at the prior with no fitting (a 64 px net fitted for 100 steps
    # starts 10 deg MAD worse than the prior it was fitted to). Not with pre-trained netD.
    prior_mode: str = "fit"
    # network widths (None: the release's, needed to load its weights)
    nf: int | None = None
    enc_nf: int = 32
    # files: defaults of the commands' options (--view-prior, --light-prior, --pretrained,
    # --gan, --image-list, --image-root, --latent-root); an option given wins
    view_mvn_path: str | None = None
    light_mvn_path: str | None = None
    pretrain: str | None = None
    gan_ckpt: str | None = None
    img_list_path: str | None = None
    img_root: str | None = None
    latent_root: str | None = None
    # run
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def stage_schedule(self) -> list[tuple[int, int, int, bool, bool]]:
        """[(step1, step2, step3, flip1, flip3)] per stage."""
        plan = []
        for i in range(self.num_stage):
            lengths = self.stage_len_dict if i == 0 or self.stage_len_dict2 is None \
                else self.stage_len_dict2
            plan.append((lengths["step1"], lengths["step2"], lengths["step3"],
                         self.flip1_cfg[i], self.flip3_cfg[i]))
        return plan

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check types and ranges; raise a one-line :class:`UserError` on the first problem."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(f"config: {message}")

        size = self.image_size
        need(size >= 64 and math.log2(size).is_integer(),
             f"image_size must be a power of two >= 64, got {size}")
        need(self.crop is None or self.crop > 0, "crop must be positive")
        need(self.category in CATEGORIES,
             f"category {self.category!r} is not one of {', '.join(CATEGORIES)}")
        need(self.num_stage >= 1, "num_stage must be >= 1")
        need(self.input_light in ("network", "estimate"),
             f"input_light must be network or estimate, got {self.input_light!r}")
        need(0 <= self.light_shrink <= 1, "light_shrink must be in [0, 1]")
        for name in ("stage_len_dict", "stage_len_dict2"):
            lengths = getattr(self, name)
            if lengths is None:
                continue
            need(set(lengths) == set(STEP_NAMES),
                 f"{name} needs exactly the keys step1, step2, step3, got {sorted(lengths)}")
            need(all(v >= 0 for v in lengths.values()), f"{name} counts must be >= 0")
        for name in ("flip1_cfg", "flip3_cfg"):
            need(len(getattr(self, name)) >= self.num_stage,
                 f"{name} has {len(getattr(self, name))} entries; num_stage is {self.num_stage}")
        need(self.batchsize >= 1, "batchsize must be >= 1")
        need(self.collect_iters >= 1, "collect_iters must be >= 1")
        need(0 <= self.F1_d <= 8, "F1_d must be in 0..8")
        need(self.view_scale > 0, "view_scale must be positive")
        rl = self.rand_light
        need(len(rl) == 7 and rl[0] <= rl[1] and rl[2] <= rl[3] and rl[4] <= rl[5],
             "rand_light must be [x_min, x_max, y_min, y_max, jitter_min, jitter_max, alpha]")
        for name in ("lr", "prior_lr", "fov"):
            need(getattr(self, name) > 0, f"{name} must be positive")
        for name in ("lr_depth", "lr_view"):
            need(getattr(self, name) is None or getattr(self, name) > 0,
                 f"{name} must be positive")
        need(self.fov < 180, "fov must be below 180 degrees")
        for name in ("weight_decay", "lam_perc", "lam_smooth", "lam_regular", "lam_input3",
                     "prior_iters", "xyz_rotation_range", "xy_translation_range",
                     "z_translation_range"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0")
        need(0 < self.min_depth < self.max_depth,
             f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        need(0 < self.prior_near < self.prior_far,
             f"need 0 < prior_near < prior_far, got {self.prior_near}, {self.prior_far}")
        need(self.prior_far - self.prior_near < 0.4,
             "prior_far - prior_near must be below the ellipsoid radius 0.4")
        need(self.latent_space in LATENT_SPACES,
             f"latent_space must be one of {', '.join(LATENT_SPACES)}")
        need(self.latent_space == "w" or self.F1_d == 8,
             "latent_space z takes the encoder's offset through the whole mapping: it needs "
             "F1_d 8")
        need(self.projection in PROJECTIONS,
             f"projection must be one of {', '.join(PROJECTIONS)}")
        need(self.projection_steps >= 1, "projection_steps must be >= 1")
        need(self.projection_lr > 0, "projection_lr must be positive")
        need(self.lr_sample_light > 0, "lr_sample_light must be positive")
        need(self.sample_params in SAMPLE_PARAMS,
             f"sample_params must be one of {', '.join(SAMPLE_PARAMS)}")
        need(self.prior_mode in PRIOR_MODES,
             f"prior_mode must be one of {', '.join(PRIOR_MODES)}")
        need(self.perceptual in PERCEPTUAL_CHOICES,
             f"perceptual must be one of {', '.join(PERCEPTUAL_CHOICES)}")
        need(self.perceptual not in ("vgg16", "lpips") or self.vgg16_path is not None,
             f"perceptual {self.perceptual!r} needs vgg16_path (a torchvision vgg16 state dict)")
        need(self.perceptual != "lpips" or self.lpips_path is not None,
             "perceptual 'lpips' needs lpips_path (the LPIPS VGG16 linear weights)")
        need(self.gan_autocast in GAN_AUTOCAST,
             f"gan_autocast must be one of {', '.join(GAN_AUTOCAST)}, got {self.gan_autocast!r}")
        need(self.mask in MASK_METHODS, f"mask must be one of {', '.join(MASK_METHODS)}")
        need(self.conventions in CONVENTIONS, f"conventions must be one of {CONVENTIONS}")
        gn_base = 8 if size >= 128 else 16
        need(self.nf is None or (self.nf >= gn_base and self.nf % gn_base == 0),
             f"nf must be a multiple of {gn_base} at {size} px (GroupNorm groups)")
        need(self.enc_nf >= 1, "enc_nf must be >= 1")
        need(0 < self.truncation <= 1, "truncation must be in (0, 1]")
        need(self.reset_weight, "reset_weight false (carrying one image's trained networks to "
             "the next) is not supported: every image starts from the initial weights; for "
             "weights shared by many images use 'gan2shape pretrain'")
        need(not self.joint_train, "joint_train true: joint training over many images is "
             "'gan2shape pretrain', not a setting of 'reconstruct'")
        need(self.gan_size is None or (self.gan_size >= 4
                                       and math.log2(self.gan_size).is_integer()),
             f"gan_size must be a power of two, got {self.gan_size}")
        need(self.channel_multiplier in (None, 1, 2), "channel_multiplier must be 1 or 2")

    def check_gan(self, size: int, channel_multiplier: int | None) -> None:
        """Check the GAN's output size and channel multiplier (None: not a standard width
        table) against ``gan_size`` / ``channel_multiplier`` and fill in those left open, so
        that the saved configuration names the GAN it ran with."""
        if self.gan_size is not None and self.gan_size != size:
            raise UserError(f"config: the settings are for a {self.gan_size} px GAN (gan_size) "
                            f"but the checkpoint is {size} px: choose a preset made for it or "
                            f"pass --set gan_size={size}")
        if None not in (self.channel_multiplier, channel_multiplier) and \
                self.channel_multiplier != channel_multiplier:
            raise UserError(f"config: the settings are for channel_multiplier "
                            f"{self.channel_multiplier} but the checkpoint has the widths of "
                            f"{channel_multiplier}: pass --set "
                            f"channel_multiplier={channel_multiplier}")
        self.gan_size = size
        if channel_multiplier is not None:
            self.channel_multiplier = channel_multiplier


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (int -> float allowed)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    bad = UserError(f"config: {name} must be {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise UserError(f"config: {name} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, os.PathLike)):
            raise bad
        return os.fspath(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): _coerce(f"{name}.{k}", v, args[1]) for k, v in value.items()}
    raise TypeError(f"unsupported config annotation {tp}")  # a bug here, not user input


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ReconConfig))


def _default(name: str) -> Any:
    """The dataclass default of one setting."""
    f = next(f for f in dataclasses.fields(ReconConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{what} {path} is not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must be a mapping of setting: value")
    return data


def _unknown(key: str, source: str) -> UserError:
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UserError(f"unknown setting {key!r} in {source}{hint}")


def _merge(settings: dict[str, Any], data: dict[str, Any], source: str) -> None:
    skipped = [str(k) for k in data if k in RELEASE_IGNORED]
    if skipped:
        print(f"note: {source}: skipping the release's trainer/logging keys "
              f"{', '.join(skipped)} (they have no meaning here)", file=sys.stderr)
    for key, value in data.items():
        if key in RELEASE_IGNORED:
            continue
        if key not in FIELD_NAMES:
            raise _unknown(str(key), source)
        settings[key] = value


def _apply_override(settings: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise UserError(f"override {item!r} must look like key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise UserError(f"override {item!r}: the value is not valid YAML") from exc
    if "." in key:  # one entry of a mapping setting, e.g. stage_len_dict.step1=50
        parent, child = key.split(".", 1)
        if parent not in FIELD_NAMES:
            raise _unknown(parent, "overrides")
        current = settings[parent] if parent in settings else _default(parent)
        if current is None:
            current = {}
        if not isinstance(current, dict):
            raise UserError(f"override {item!r}: {parent} is not a mapping")
        settings[parent] = {**current, child: value}
        return
    if key not in FIELD_NAMES:
        raise _unknown(key, "overrides")
    settings[key] = value


def preset_for_gan(size: int) -> str:
    """The one preset made for a ``size`` px GAN (``tiny``, for tests, is for any GAN)."""
    made_for = [name for name in available_presets() if name != "tiny"
                and _read_yaml(PRESET_DIR / f"{name}.yaml", "preset").get("gan_size") == size]
    if len(made_for) != 1:
        choices = " or ".join(made_for) if made_for else "none (--set gan_size=... adapts one)"
        raise UserError(f"give --preset: presets for a {size} px GAN: {choices}")
    return made_for[0]


def load_config(preset: str | None = None, yaml_path: str | os.PathLike | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> ReconConfig:
    """Defaults <- preset ``<name>.yaml`` <- ``yaml_path`` <- ``key=value`` overrides.

    Unknown keys, bad values and missing files are one-line :class:`UserError`s.
    """
    settings: dict[str, Any] = {}
    if preset is not None:
        if preset not in available_presets():
            raise UserError(f"unknown preset {preset!r} (choose from "
                            f"{', '.join(available_presets())})")
        _merge(settings, _read_yaml(PRESET_DIR / f"{preset}.yaml", "preset"), f"preset {preset}")
    if yaml_path is not None:
        _merge(settings, _read_yaml(Path(yaml_path), "config file"), str(yaml_path))
    for item in overrides:
        _apply_override(settings, item)
    return ReconConfig(**settings)


def save_config(config: ReconConfig, path: str | os.PathLike) -> None:
    """Write the effective configuration as YAML (atomically)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    save_text(text, path)
