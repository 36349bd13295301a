"""The per-image reconstruction: shape prior, the stage schedule of Steps 1-3, the result.

``Reconstructor(gan, config).fit(image, latent) -> ReconResult``. The factor networks are
reset to their initial weights (the release's pre-trained weights when given, else a seeded
initialisation) before every image, as the release's ``reset_weight`` does. With a
``checkpoint`` path, the state after the shape prior and after each stage is saved there
atomically, and a later ``fit`` with the same path and configuration resumes after the last
finished stage.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .. import export
from ..distributed import SINGLE, Group
from ..errors import UserError
from ..fileio import load_torch, save_json
from ..perceptual import reconstruction_perceptual
from ..render import normals_from_depth, warp_canon_depth
from . import factors, losses, priors, steps
from .light_estimate import estimate_light
from .networks import build_networks, load_networks
from .sequences import SequenceSpec, make_sequences
from .stage_checkpoint import StageCheckpoint

CHECKPOINT_VERSION = 1

# Per-image output files (docs/method.md section 5); metrics.json is written last and
# marks completion.
OUTPUT_FILES = (
    "depth.png", "depth.npy", "normal.png", "albedo.png", "shading.png", "canonical.png",
    "view.json", "light.json", "mesh.obj", "mesh.mtl", "texture.png", "rotation.gif",
    "relight.gif", "rotation_grid.png", "relight_grid.png", "viewer.html", "metrics.json",
)


def is_finished(out_dir: str | os.PathLike) -> bool:
    """Whether every output of one image is present in out_dir."""
    return all((Path(out_dir) / name).is_file() for name in OUTPUT_FILES)


@dataclass
class Stage:
    """Iterations of Steps 1, 2, 3 in one stage and its symmetry switches."""

    step1: int
    step2: int
    step3: int
    flip1: bool
    flip3: bool


def stage_plan(cfg) -> list[Stage]:
    """The stage schedule of a ``ReconConfig``."""
    return [Stage(*entry) for entry in cfg.stage_schedule()]


@dataclass
class ReconResult:
    """What one image's reconstruction recovered (tensors on the CPU).

    depth (S, S): canonical depth; view_depth (S, S) and view_mask (S, S): the depth seen in
    the input's view (background 1.2) and where it is valid; normals (S, S, 3) of the
    canonical depth; albedo (3, S, S), shading (1, S, S), canonical (3, S, S) = the shaded
    albedo, recon (3, S, S) = canonical seen in the input view; view (6,) physical;
    light: ambient, diffuse, direction; mask (1, S, S) or None; sequences: frames
    (T, 3, S, S) rotation_mesh, rotation_gan, relight_mesh, relight_gan; metrics.
    """

    name: str
    image: torch.Tensor
    depth: torch.Tensor
    view_depth: torch.Tensor
    view_mask: torch.Tensor
    normals: torch.Tensor
    albedo: torch.Tensor
    shading: torch.Tensor
    canonical: torch.Tensor
    recon: torch.Tensor
    view: torch.Tensor
    light: dict
    mask: torch.Tensor | None
    sequences: dict[str, torch.Tensor]
    metrics: dict
    min_depth: float = 0.9
    max_depth: float = 1.1
    fov_deg: float = 10.0
    rot_center_depth: float = 1.0
    extra: dict = field(default_factory=dict)

    def export(self, out_dir: str | os.PathLike, mesh_formats: tuple[str, ...] = ("obj",)
               ) -> Path:
        """Write every output file of docs/method.md section 5 into out_dir (atomically,
        file by file; metrics.json last, so its presence means the folder is complete)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        export.save_depth(self.view_depth, out / "depth.png", out / "depth.npy",
                          self.min_depth, self.max_depth)
        export.save_normals(self.normals, out / "normal.png")
        export.save_rgb(self.albedo, out / "albedo.png")
        export.save_shading(self.shading, out / "shading.png")
        export.save_rgb(self.canonical, out / "canonical.png")
        rx, ry, rz, tx, ty, tz = (float(v) for v in self.view)
        save_json({"rotation_rad": [rx, ry, rz], "translation": [tx, ty, tz],
                   "rotation_deg": [math.degrees(a) for a in (rx, ry, rz)],
                   "fov_deg": self.fov_deg, "rot_center_depth": self.rot_center_depth,
                   "convention": "rotate about (0, 0, rot_center_depth) by Rz Ry Rx, "
                                 "then translate"}, out / "view.json")
        save_json(self.light, out / "light.json")
        mesh = export.write_textured_mesh(out, self.depth, self.canonical, self.fov_deg,
                                          self.rot_center_depth, formats=mesh_formats)
        export.write_viewer(out, mesh, self.light, title=f"gan2shape: {self.name}")
        seq = self.sequences
        export.save_sequence([seq["rotation_mesh"], seq["rotation_gan"]],
                             out / "rotation_grid.png", out / "rotation.gif")
        export.save_sequence([seq["relight_mesh"], seq["relight_gan"]],
                             out / "relight_grid.png", out / "relight.gif")
        save_json(self.metrics, out / "metrics.json")
        return out


def _config_digest(cfg) -> str:
    """A short hash of the configuration, so a checkpoint is resumed only under the same one."""
    data = cfg.to_dict()
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise UserError(f"{what} contains NaN or infinite values")


class Reconstructor:
    """GAN2Shape for one image at a time, with a frozen StyleGAN2.

    gan: a ``StyleGAN2`` (``.generator``, ``.discriminator``), frozen in place (eval mode,
    ``requires_grad`` off) and moved to ``device``; config: a ``ReconConfig``;
    pretrained: the release's GAN2Shape weights (path or dict with netD, netA, netV, netL,
    netEnc; any subset), loaded strictly; device: where to run (default: the GAN's);
    segmenter: optional callable for the ``segmenter`` mask method; sequences: the frames
    of the rotation and relighting sequences; progress: tqdm bars; projector: replaces the
    GAN projection of pseudo samples (``steps.Projector``; Step 2 is then skipped), for
    measuring the method with a perfect GAN.
    """

    def __init__(self, gan, config, pretrained=None, device: str | torch.device | None = None,
                 segmenter: priors.Segmenter | None = None,
                 sequences: SequenceSpec | None = None, progress: bool = True,
                 projector: steps.Projector | None = None):
        cfg = config
        cfg.check_gan(gan.size, gan.channel_multiplier)
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else \
            next(gan.generator.parameters()).device
        self.gan = gan
        generator = gan.generator.to(self.device)
        discriminator = gan.discriminator.to(self.device)
        self.progress = progress
        self.segmenter = segmenter
        self.sequence_spec = sequences or SequenceSpec()

        torch.manual_seed(cfg.seed)
        nets = build_networks(cfg.image_size, generator.style_dim, cfg.nf, cfg.enc_nf)
        self.needs_prior = True
        if pretrained is not None:
            state = load_torch(pretrained, "GAN2Shape weights") \
                if isinstance(pretrained, (str, os.PathLike)) else pretrained
            load_networks(nets, state, str(pretrained) if not isinstance(pretrained, dict)
                          else "weights")
            self.needs_prior = "netD" not in state
        if cfg.prior_mode == "residual":
            if not self.needs_prior:
                raise UserError("prior_mode residual starts the depth network from zero; it "
                                "cannot take pre-trained depth weights (use prior_mode=fit)")
            nets["netD"].zero_output()
            self.needs_prior = False  # the prior enters as the target's depth offset
        for net in nets.values():
            net.to(self.device)
        self.initial_state = {k: copy.deepcopy(n.state_dict()) for k, n in nets.items()}

        prior = priors.ViewLightPrior.load(cfg.view_mvn_path, cfg.light_mvn_path,
                                           cfg.view_scale)
        bf16 = cfg.gan_autocast == "bf16"
        perceptual = reconstruction_perceptual(
            cfg.perceptual, cfg.vgg16_path, discriminator, self.device, cfg.lpips_path,
            cfg.reuse_target_features, bf16)
        self.ctx = steps.Context(nets, generator, discriminator, cfg, prior, perceptual,
                                 projector, bf16)

    @property
    def nets(self) -> dict[str, torch.nn.Module]:
        return self.ctx.nets

    def reset(self) -> None:
        """Back to the initial weights (pre-trained or seeded), as before every image."""
        for k, net in self.nets.items():
            net.load_state_dict(self.initial_state[k])

    # --- inputs ------------------------------------------------------------------------

    def target(self, image: torch.Tensor, latent: torch.Tensor,
               mask: torch.Tensor | None = None, what: str = "image",
               code: torch.Tensor | None = None) -> steps.Target:
        """Check and prepare one input. image (3, N, N) in [-1, 1] as loaded from its file
        (the config's ``crop`` is applied here, then the resize to image_size); latent
        (1, style_dim) or (style_dim,) in W; mask (N, N), (1, N, N) or (1, 1, N, N);
        code (1, style_dim): the z whose mapping is latent, needed by ``latent_space: z``
        (``gan.invert.codes_for_image`` gives both)."""
        cfg, dev = self.cfg, self.device
        style_dim = self.ctx.generator.style_dim
        if cfg.latent_space == "z" and cfg.use_gan_samples:
            if code is None:
                raise UserError(f"{what}: latent_space z needs the image's input latent z, "
                                "not only its W: use --invert, or latent files written by "
                                "'gan2shape invert' or 'gan2shape sample' for this GAN")
            code = torch.as_tensor(code).float().reshape(1, -1).to(dev)
            if code.shape[1] != style_dim:
                raise UserError(f"{what}: z has {code.shape[1]} features, the GAN {style_dim}")
            _check_finite(code, f"{what}: z")
        if image.dim() != 3 or image.shape[0] != 3:
            raise UserError(f"{what}: expected an RGB image (3, N, N), got shape "
                            f"{tuple(image.shape)}")
        if image.shape[1] != image.shape[2]:
            raise UserError(f"{what}: image is not square ({image.shape[2]}x{image.shape[1]})")
        _check_finite(image, what)
        latent = torch.as_tensor(latent).float()
        if latent.dim() == 1:
            latent = latent.unsqueeze(0)
        if latent.dim() != 2 or latent.shape != (1, style_dim):
            raise UserError(f"{what}: latent has shape {tuple(latent.shape)}; the GAN expects "
                            f"a W latent (1, {style_dim})")
        _check_finite(latent, f"{what}: latent")
        origin = image.shape[-1]
        x = self._crop_resize(image.float().unsqueeze(0).to(dev), origin)
        latent = latent.to(dev)
        gan_image = None
        if cfg.use_gan_samples:
            with torch.no_grad():
                gan_image = self.ctx.render_latent(latent, origin)
        if mask is not None:
            mask = torch.as_tensor(mask).float().to(dev)
            mask = mask.reshape(1, 1, *mask.shape[-2:])
            _check_finite(mask, f"{what}: mask")
            mask = self._crop_resize(mask, mask.shape[-1])
        elif cfg.mask != "file":
            mask = priors.make_mask(cfg.mask, x, cfg.category, segmenter=self.segmenter)
        else:
            raise UserError(f"{what}: the config asks for a mask file (mask: file) but none "
                            "was given")
        offset = None
        if cfg.prior_mode == "residual":
            offset = factors.raw_from_depth(self.shape_prior(mask)[None], cfg.min_depth,
                                            cfg.max_depth)
        light = None
        if cfg.input_light == "estimate":
            light = estimate_light(x, self.shape_prior(mask)[None], mask,
                                   self.ctx.prior.light_mean, cfg.fov, cfg.light_shrink)
        return steps.Target(x, latent, gan_image, mask, origin, offset, light, code=code)

    def _crop_resize(self, x: torch.Tensor, origin: int) -> torch.Tensor:
        crop = self.cfg.crop
        if crop is not None and crop < origin:
            m = (origin - crop) // 2
            x = x[..., m:m + crop, m:m + crop]
        return steps.resize(x, self.cfg.image_size)

    # --- the optimisation --------------------------------------------------------------

    def fit(self, image: torch.Tensor, latent: torch.Tensor, mask: torch.Tensor | None = None,
            gt_depth: torch.Tensor | None = None, name: str = "image",
            checkpoint: str | os.PathLike | None = None,
            light: factors.Light | None = None, code: torch.Tensor | None = None
            ) -> ReconResult:
        """Reconstruct one image (see :meth:`target` for the inputs, ``code`` among them).

        gt_depth: optional ground-truth depth (S, S) in the image's view (metric, at
        image_size) for SIDE / MAD. checkpoint: a file for stage checkpoints (resume).
        light: the input's light if it is known (batch 1), used instead of the light
        network's estimate for the input (pseudo samples are still lit around it).
        """
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        target = self.target(image, latent, mask, name, code)
        if light is not None:
            target.light = self._known_light(light, name)
        self.reset()
        plan = stage_plan(cfg)
        stages = StageCheckpoint(checkpoint, {"version": CHECKPOINT_VERSION, "name": name,
                                              "config": _config_digest(cfg)})
        done = stages.resume(self.nets)
        history: dict[str, float] = {}
        if done is None:
            if self.needs_prior:
                self.fit_prior(target, name)
            done = 0
            self._save(stages, 0)
        bar = tqdm(total=len(plan), initial=done, desc=f"{name} stages", unit="stage",
                   disable=not self.progress, leave=False)
        for i in range(done, len(plan)):
            history.update(self.run_stage(target, plan[i], f"{name} stage {i + 1}/{len(plan)}"))
            self._save(stages, i + 1)
            bar.update(1)
        bar.close()
        return self.result(target, name, gt_depth, history)

    def _known_light(self, light: factors.Light, what: str) -> factors.Light:
        parts = [torch.as_tensor(x).float().to(self.device)
                 for x in (light.ambient, light.diffuse, light.direction)]
        if [tuple(x.shape) for x in parts] != [(1,), (1,), (1, 3)]:
            raise UserError(f"{what}: a known light needs ambient (1,), diffuse (1,) and "
                            "direction (1, 3)")
        for x in parts:
            _check_finite(x, f"{what}: light")
        return factors.Light(*parts)

    def shape_prior(self, mask: torch.Tensor) -> torch.Tensor:
        """The config's ellipsoid (S, S) placed on mask (1, 1, S, S), on the device."""
        cfg = self.cfg
        return priors.ellipsoid_prior(mask[0, 0].cpu(), cfg.category, cfg.prior_near,
                                      cfg.prior_far).to(self.device)

    def fit_prior(self, target: steps.Target, name: str = "image") -> float:
        """Fit the depth network to the ellipsoid prior placed on the target's mask."""
        cfg = self.cfg
        if target.depth_offset is not None:
            raise UserError("prior_mode residual: the depth already starts at the prior (the "
                            "target's depth offset); fitting it as well would add it twice")
        prior = self.shape_prior(target.mask)
        bar = tqdm(total=cfg.prior_iters, desc=f"{name} shape prior", leave=False,
                   disable=not self.progress)
        loss = priors.fit_depth_to_prior(
            self.nets["netD"], target.image, prior, cfg.prior_iters, cfg.prior_lr, cfg.weight_decay,
            cfg.min_depth, cfg.max_depth, progress=lambda i, v: bar.update(1))
        bar.close()
        return loss

    def run_stage(self, target: steps.Target, stage: Stage, desc: str) -> dict[str, float]:
        """Steps 1, 2 (+ collection) and 3 of one stage; returns the last loss of each.
        Without GAN samples: Step 1, then Step 3 on the input image alone."""
        ctx = self.ctx
        last = {}
        last["step1"] = self.train_steps(steps.STEP1_NETS, stage.step1, f"{desc} step 1",
                                         lambda: steps.step1_loss(ctx, target, stage.flip1))
        if not self.cfg.use_gan_samples:
            last["step3"] = self.train_steps(
                steps.STEP3_NETS, stage.step3, f"{desc} step 3",
                lambda: steps.step3_input_loss(ctx, target, stage.flip3))
            return last
        canon = steps.canon_of(ctx, target)
        if ctx.uses_encoder:
            last["step2"] = self.train_steps(steps.STEP2_NETS, stage.step2, f"{desc} step 2",
                                             lambda: steps.step2_loss(ctx, target, canon))
        n = self.cfg.collect_iters
        with tqdm(total=n, desc=f"{desc} collect", leave=False,
                  disable=not self.progress) as bar:
            samples = steps.collect(ctx, target, canon, n, bar.update)
        cycler = steps.SampleCycler.for_config(samples, self.cfg)

        def step3() -> torch.Tensor:
            return steps.step3_loss(ctx, target, cycler.next(), stage.flip3)

        last["step3"] = self.train_steps(steps.STEP3_NETS, stage.step3, f"{desc} step 3", step3,
                                         extra=cycler.parameters())
        return last

    def train_steps(self, names: tuple[str, ...], iters: int, desc: str,
                    loss_fn: Callable[[], torch.Tensor], group: Group = SINGLE,
                    extra: Sequence[torch.Tensor] = ()) -> float:
        """``iters`` Adam steps of the named networks on ``loss_fn`` (a fresh optimiser per
        step, as the release makes one at every switch of step). Returns the last loss.
        Public: one of the method's steps (``steps.STEPn_NETS`` on ``steps.stepn_loss``), as
        :meth:`fit`, joint pre-training and the benchmarks run them.

        group: processes that train the same networks on different images; each step
        averages their gradients (joint pre-training under torchrun). extra: tensors of this
        process's own trained alongside at ``lr_sample_light`` without weight decay (the
        samples' refined lights), not averaged."""
        optimizer = steps.make_optimizer(self.nets, names, self.cfg)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if extra:
            optimizer.add_param_group({"params": list(extra), "lr": self.cfg.lr_sample_light,
                                       "weight_decay": 0.0})
        value = float("nan")
        with tqdm(total=iters, desc=desc, leave=False, disable=not self.progress) as bar:
            for _ in range(iters):
                loss = loss_fn()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                group.average_gradients(params)
                optimizer.step()
                value = loss.item()
                if value != value:  # NaN: stop with a clear message instead of garbage
                    raise UserError(f"{desc}: the loss became NaN (try a lower lr)")
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                bar.update(1)
        return value

    # --- checkpoints -------------------------------------------------------------------

    def _save(self, stages: StageCheckpoint, stages_done: int) -> None:
        """The networks and the random state (the stages draw from one stream)."""
        stages.save(stages_done, {k: n.state_dict() for k, n in self.nets.items()}, rng=True)

    # --- the result --------------------------------------------------------------------

    @torch.no_grad()
    def result(self, target: steps.Target, name: str = "image",
               gt_depth: torch.Tensor | None = None,
               history: dict[str, float] | None = None) -> ReconResult:
        """The factors the networks now predict for the target, its sequences and metrics."""
        cfg, ctx = self.cfg, self.ctx
        pred = ctx.predict(target.image, depth_offset=target.depth_offset, light=target.light)
        f = pred.f
        view_depth, view_mask = warp_canon_depth(f.depth, pred.view, cfg.fov,
                                                 cfg.rot_center_depth, cfg.conventions)
        recon, valid = ctx.render(f.depth, f.image, pred.view)
        metrics = {"photometric_l1": float(losses.photometric_loss(recon, target.image, valid))}
        metrics.update({f"last_loss_{k}": v for k, v in (history or {}).items()})
        if gt_depth is not None:
            metrics.update(self.depth_metrics(view_depth, view_mask, gt_depth))
        sequences = make_sequences(ctx, target, f.depth, f.albedo, f.normals, f.light,
                                   f.shading, pred.view, self.sequence_spec)
        light = {"ambient": float(f.light.ambient[0]), "diffuse": float(f.light.diffuse[0]),
                 "direction": [float(v) for v in f.light.direction[0]]}
        cpu = lambda t: t[0].detach().cpu()  # noqa: E731
        return ReconResult(
            name=name, image=cpu(target.image), depth=cpu(f.depth), view_depth=cpu(view_depth),
            view_mask=cpu(view_mask), normals=cpu(f.normals), albedo=cpu(f.albedo),
            shading=cpu(f.shading), canonical=cpu(f.image), recon=cpu(recon),
            view=cpu(pred.view), light=light,
            mask=cpu(target.mask) if target.mask is not None else None,
            sequences={k: v.detach().cpu() for k, v in sequences.items()}, metrics=metrics,
            min_depth=cfg.min_depth, max_depth=cfg.max_depth, fov_deg=cfg.fov,
            rot_center_depth=cfg.rot_center_depth)

    def depth_metrics(self, view_depth: torch.Tensor, view_mask: torch.Tensor,
                      gt_depth: torch.Tensor) -> dict[str, float]:
        """SIDE and MAD (docs/method.md section 6) of the depth in the input view against gt."""
        from ..eval import evaluation_mask, mad, side

        cfg = self.cfg
        gt = torch.as_tensor(gt_depth).float().to(view_depth.device)
        gt = self._crop_resize(gt.reshape(1, 1, *gt.shape[-2:]), gt.shape[-1])[:, 0]
        _check_finite(gt, "ground-truth depth")
        mask = evaluation_mask(gt, view_mask)
        pred_n = normals_from_depth(view_depth, cfg.fov)
        gt_n = normals_from_depth(gt, cfg.fov)
        return {"SIDE": float(side(view_depth, gt, mask)[0]),
                "MAD_deg": float(mad(pred_n, gt_n, mask)[0])}
