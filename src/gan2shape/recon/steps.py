"""The three steps of GAN2Shape (docs/method.md section 3) for one target image.

Step 1 trains the albedo network to explain the input image with depth, view and light held
fixed. Step 2 renders pseudo samples (the current shape and albedo under random views and
lights, or lights alone: ``pseudo_views``), projects them onto the GAN's image manifold
through the latent encoder's offset, trains that encoder, and then collects projected
samples. Step 3 trains the depth, albedo, view and light networks to explain the projected
samples (each under its predicted view and light, or the ones its pseudo sample was
rendered under, or that light refined: ``sample_params``) and the input image, optionally
with the horizontally flipped depth and albedo as a second explanation (symmetry). Without
GAN samples (the config's ``use_gan_samples`` off, the "no GAN" ablation) Step 3 explains
the input image alone (:func:`step3_input_loss`) and the generator never runs.

Every step computes gradients only for the weights it trains: the GAN's parameters never
require gradients, and networks a step holds fixed run under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..gan.invert import learning_rate
from ..gan.ops import frozen_autocast
from ..perceptual import discriminator_feature_loss, discriminator_features
from ..render import reproject
from ..render.camera import depth_to_points, points_to_grid, warp_points
from . import factors, losses
from .priors import ViewLightPrior, sample_random_light

STEP1_NETS = ("netA",)
STEP2_NETS = ("netEnc",)
STEP3_NETS = ("netD", "netA", "netV", "netL")


@dataclass
class Target:
    """One image to reconstruct, in the reconstruction's space (S = image_size).

    image (1, 3, S, S) in [-1, 1]; latent (1, style_dim) in W; gan_image (1, 3, S, S): the
    GAN's image of ``latent`` brought to the same space (None without GAN samples);
    mask (1, 1, S, S) in [0, 1] or None; origin_size: the side of the image file before
    cropping (for the release's ``crop``); depth_offset (1, S, S): the shape prior in the
    depth network's raw units, added to its output (``prior_mode: residual``), or None;
    light: the input's light when it is known (batch 1), used instead of the light
    network's estimate, or None; code (1, style_dim): the input latent z whose mapping is
    ``latent`` (``latent_space: z``), or None.
    """

    image: torch.Tensor
    latent: torch.Tensor
    gan_image: torch.Tensor | None
    mask: torch.Tensor | None = None
    origin_size: int | None = None
    depth_offset: torch.Tensor | None = None
    light: factors.Light | None = None
    code: torch.Tensor | None = None


@dataclass
class Prediction:
    """Factors predicted for one image (n = 2 with the flipped copy, else 1).

    view (n, 6) physical; ``f`` the composed canonical factors (depth (n, H, W), normals,
    albedo, light, shading, diffuse, image).
    """

    view: torch.Tensor
    f: factors.Factors


@dataclass
class Canon:
    """Frozen Step-1 factors of a target, the material of pseudo samples.

    depth (1, H, W), albedo (1, 3, H, W), normals (1, H, W, 3), ambient and diffuse (1,),
    mask (1, 1, H, W): the object mask carried into the canonical frame, or ones;
    view (1, 6): the input's predicted view.
    """

    depth: torch.Tensor
    albedo: torch.Tensor
    normals: torch.Tensor
    ambient: torch.Tensor
    diffuse: torch.Tensor
    mask: torch.Tensor
    view: torch.Tensor


@dataclass
class Samples:
    """Pseudo samples, or their projections onto the GAN manifold, with the parameters
    they were rendered under: images (N, 3, S, S), masks (N, 1, S, S) where the sample
    sees the canonical image, views (N, 6) physical, lights (N)."""

    images: torch.Tensor
    masks: torch.Tensor
    views: torch.Tensor
    lights: factors.Light

    def __getitem__(self, index) -> Samples:
        return Samples(self.images[index], self.masks[index], self.views[index],
                       self.lights[index])

    @staticmethod
    def cat(parts: list[Samples]) -> Samples:
        return Samples(torch.cat([p.images for p in parts]), torch.cat([p.masks for p in parts]),
                       torch.cat([p.views for p in parts]),
                       factors.Light.cat([p.lights for p in parts]))


# Replaces the GAN projection of pseudo samples: Samples -> images (N, 3, S, S). Used to
# measure the method with a perfect GAN (the truth rendered under each sample's parameters).
Projector = Callable[[Samples], torch.Tensor]


def make_optimizer(nets: dict[str, nn.Module], names: Iterable[str], cfg) -> torch.optim.Adam:
    """Adam over the named networks with the release's settings (lr, betas 0.9/0.999, wd);
    the depth and view networks at ``cfg.lr_depth`` and ``cfg.lr_view`` when those are set."""
    own = {"netD": cfg.lr_depth, "netV": cfg.lr_view}
    groups = [{"params": [p for p in nets[n].parameters() if p.requires_grad],
               "lr": own[n] if own.get(n) is not None else cfg.lr} for n in names]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


class Context:
    """What the steps share: the factor networks, the frozen GAN, the config and the losses.

    nets: dict netD netA netV netL netEnc; generator / discriminator: the frozen StyleGAN2;
    prior: the view and light ``ViewLightPrior`` (its view_scale already set);
    perceptual: callable (recon, target) -> scalar, or None; projector: replaces the GAN
    projection of collected samples (then Step 2 has nothing to train), or None; gan_bf16:
    the generator's synthesis and Step 2's discriminator features run under bfloat16
    autocast (``gan_autocast``; the mapping network, the factor networks, the renderer and
    the losses stay float32).
    """

    def __init__(self, nets: dict[str, nn.Module], generator: nn.Module,
                 discriminator: nn.Module, cfg, prior: ViewLightPrior,
                 perceptual: Callable | None, projector: Projector | None = None,
                 gan_bf16: bool = False):
        self.nets = nets
        self.gan_bf16 = gan_bf16
        self.projector = projector
        self.generator = generator.requires_grad_(False).eval()
        self.discriminator = discriminator.requires_grad_(False).eval()
        self.cfg = cfg
        self.prior = prior
        self.perceptual = perceptual
        device = next(generator.parameters()).device
        self.device = device
        self.view_mean = prior.view_mean.float().to(device) if cfg.add_mean_V else None
        self.light_mean = prior.light_mean.float().to(device) if cfg.add_mean_L else None
        split = 8 - cfg.F1_d  # mapping modules [0, split) are the head, [split, 9) the tail
        self.mapping_split = split
        self.center_w = self.center_h = self.mean_w = None
        if not cfg.use_gan_samples:
            return
        with torch.no_grad():
            zero = torch.zeros(1, generator.style_dim, device=device)
            self.center_w = generator.mapping(zero)
            self.center_h = generator.mapping(zero, 0, split)
            self.mean_w = generator.mean_latent() if cfg.truncation < 1 else None

    # --- the GAN side -------------------------------------------------------------------

    @property
    def uses_encoder(self) -> bool:
        """Whether collected samples are projected through the latent encoder (so Step 2
        trains it): not with a projector nor with ``projection: optimise``."""
        return self.projector is None and self.cfg.projection == "encoder"

    def to_image_space(self, gan_images: torch.Tensor, origin_size: int | None) -> torch.Tensor:
        """GAN output (B, 3, R, R) -> clamped (B, 3, S, S) as the input image was prepared.

        With the release's ``crop`` (when smaller than the image file's side): resize to the
        file's side, centre-crop ``crop`` pixels, resize to image_size; otherwise resize
        straight to image_size (the input image is prepared the same way).
        """
        x = gan_images.clamp(-1, 1)
        crop = self.cfg.crop
        if crop is not None and origin_size is not None and crop < origin_size:
            x = resize(x, origin_size)
            margin = (origin_size - crop) // 2
            x = x[..., margin:margin + crop, margin:margin + crop]
        return resize(x, self.cfg.image_size)

    def render_latent(self, latent: torch.Tensor, origin_size: int | None) -> torch.Tensor:
        """The GAN's image of W latents (B, style_dim) in image space (B, 3, S, S), with the
        config's truncation towards the mean latent."""
        if self.mean_w is not None:
            latent = self.mean_w + self.cfg.truncation * (latent - self.mean_w)
        with frozen_autocast(self.device, self.gan_bf16):
            images = self.generator.synthesis(latent)
        return self.to_image_space(images.float(), origin_size)

    def project(self, target: Target, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project images (B, 3, S, S) onto the GAN manifold through the latent encoder.

        h = E(images) [- E(gan_image) if relative_enc] + center_h;
        offset = mapping_tail(h) - center_w; projected = G(w + offset). With
        ``latent_space: z``: offset = E(images) [- E(gan_image)]; projected =
        G(mapping(z + offset)), z the target's code.
        Returns projected (B, 3, S, S) and offset (B, style_dim).
        """
        enc = self.nets["netEnc"]
        if self.cfg.relative_enc:  # one batch: the encoder has no batch-dependent layers
            codes = enc(torch.cat([images, target.gan_image]))
            code = codes[:-1] - codes[-1:]
        else:
            code = enc(images)
        if self.cfg.latent_space == "z":
            return self.render_offset(target, code), code
        offset = self.generator.mapping(code + self.center_h, self.mapping_split) - self.center_w
        return self.render_offset(target, offset), offset

    def render_offset(self, target: Target, offset: torch.Tensor) -> torch.Tensor:
        """The GAN's image (B, 3, S, S) of the target's latent moved by offset (B, style_dim):
        in W, G(w + offset); with ``latent_space: z``, G(mapping(z + offset)), z the
        target's code."""
        if self.cfg.latent_space == "z":
            latent = self.generator.mapping(target.code + offset)
        else:
            latent = target.latent + offset
        return self.render_latent(latent, target.origin_size)

    # --- factors and rendering ----------------------------------------------------------

    def predict(self, image: torch.Tensor, train: Iterable[str] = (), flip: bool = False,
                depth_offset: torch.Tensor | None = None,
                light: factors.Light | None = None) -> Prediction:
        """Factors of image (1, 3, S, S); only networks named in ``train`` record gradients.

        flip: append the horizontally flipped depth and albedo as a second explanation
        (view and light repeated), n = 2. depth_offset, light: the target's (``Target``);
        a given light replaces the light network's estimate.
        """
        cfg, train = self.cfg, set(train)

        def run(name: str) -> torch.Tensor:
            with torch.set_grad_enabled(torch.is_grad_enabled() and name in train):
                return self.nets[name](image)

        depth = factors.depth_from_raw(run("netD"), cfg.min_depth, cfg.max_depth,
                                       cfg.border_depth, depth_offset)
        albedo = run("netA")
        view = self.view_from_raw(run("netV"))
        if light is None:
            light = factors.light_from_raw(run("netL"), self.light_mean)
        if flip:
            depth = torch.cat([depth, depth.flip(2)])
            albedo = torch.cat([albedo, albedo.flip(3)])
            view, light = view.repeat(2, 1), light.repeat(2)
        return Prediction(view, factors.compose(depth, albedo, light, cfg.fov))

    def view_from_raw(self, raw: torch.Tensor, mean: bool = True) -> torch.Tensor:
        cfg = self.cfg
        return factors.view_from_raw(raw, self.view_mean if mean else None,
                                     cfg.xyz_rotation_range, cfg.xy_translation_range,
                                     cfg.z_translation_range)

    def render(self, depth: torch.Tensor, texture: torch.Tensor,
               view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Texture (B, C, S, S) on canonical depth (B, S, S) seen from view (B, 6).

        Returns the image clamped to [-1, 1] and its valid-render mask (B, 1, S, S) (no
        gradient flows through the mask).
        """
        image, mask, _ = reproject(depth, texture, view, fov_deg=self.cfg.fov,
                                   rot_center_depth=self.cfg.rot_center_depth,
                                   conventions=self.cfg.conventions)
        return image.clamp(-1, 1), mask.detach()

    def image_loss(self, recon: torch.Tensor, target: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
        """Masked photometric L1 + lam_perc * perceptual on masked images."""
        loss = losses.photometric_loss(recon, target, mask)
        if self.perceptual is not None and self.cfg.lam_perc > 0:
            loss = loss + self.cfg.lam_perc * self.perceptual(recon * mask, target * mask)
        return loss


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize (B, C, H, W) -> (B, C, size, size): area when shrinking, else bilinear."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


# --- Step 1 ------------------------------------------------------------------------------

def reconstruction_loss(ctx: Context, image: torch.Tensor, pred: Prediction,
                        image_weight: float = 1.0) -> torch.Tensor:
    """The Step-1 loss of ``pred`` against image (1, 3, S, S): image_weight * image terms
    (for the flipped copy too, both under the joint valid mask) + lam_smooth * smoothness."""
    f = pred.f
    loss = 0.0
    if image_weight > 0:  # (the render first: the order of terms sets float rounding)
        recon, valid = ctx.render(f.depth, f.image, pred.view)
        if recon.shape[0] == 2:
            valid = (valid[:1] * valid[1:]).repeat(2, 1, 1, 1)
        loss = image_weight * sum(ctx.image_loss(recon[i:i + 1], image, valid[i:i + 1])
                                  for i in range(recon.shape[0]))
    smooth = losses.smoothness_loss(f.depth) + losses.smoothness_loss(f.diffuse)
    return loss + ctx.cfg.lam_smooth * smooth


def step1_loss(ctx: Context, target: Target, flip: bool = False) -> torch.Tensor:
    """Step 1: albedo network only; depth, view and light are computed without gradients."""
    pred = ctx.predict(target.image, STEP1_NETS, flip, target.depth_offset, target.light)
    return reconstruction_loss(ctx, target.image, pred)


# --- Step 2 ------------------------------------------------------------------------------

@torch.no_grad()
def canon_of(ctx: Context, target: Target) -> Canon:
    """The current factors of the target's image, frozen, with its mask in canonical frame."""
    pred = ctx.predict(target.image, depth_offset=target.depth_offset, light=target.light)
    f = pred.f
    if ctx.cfg.use_mask and target.mask is not None:
        # Where each canonical pixel lands in the input view: sample the input mask there.
        b, h, w = f.depth.shape
        points = warp_points(depth_to_points(f.depth, ctx.cfg.fov).reshape(b, -1, 3),
                             pred.view, ctx.cfg.rot_center_depth).reshape(b, h, w, 3)
        grid = points_to_grid(points, ctx.cfg.fov)
        mask = F.grid_sample(target.mask, grid, mode="bilinear", align_corners=True)
    else:
        mask = torch.ones_like(f.depth).unsqueeze(1)
    return Canon(f.depth, f.albedo, f.normals, f.light.ambient, f.light.diffuse, mask,
                 pred.view)


@torch.no_grad()
def sample_pseudo(ctx: Context, canon: Canon, n: int) -> Samples:
    """Render n pseudo samples of the canonical shape under random lights and views.

    Light: direction normalize(x, y, 1) with x, y uniform in the rand_light ranges, a
    diffuse jitter r uniform in its range; shading = ambient + alpha * r + (diffuse + r) *
    max(0, <n, l>). View: a draw from the view prior (raw convention, mean included) with
    its yaw scaled by view_scale, or the input's view without ``pseudo_views``. Images are
    in [-1, 1]; masks: where the sample sees the (masked) canonical image.
    """
    cfg, dev = ctx.cfg, canon.depth.device
    light = sample_random_light(n, canon.ambient, canon.diffuse, cfg.rand_light)
    shading = factors.shade(canon.normals.expand(n, -1, -1, -1), light)
    texture = factors.canonical_image(canon.albedo.expand(n, -1, -1, -1), shading)

    if cfg.pseudo_views:
        views = ctx.view_from_raw(ctx.prior.sample_views(n).to(dev), mean=False)
    else:
        views = canon.view.expand(n, -1)
    depth = canon.depth.expand(n, -1, -1)
    rendered, _ = ctx.render(depth, torch.cat([texture, canon.mask.expand(n, -1, -1, -1)], 1),
                             views)
    return Samples(rendered[:, :3], (rendered[:, 3:] > 0.5).float(), views, light)


def projection_loss(ctx: Context, target: Target, pseudo: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """Photometric + discriminator-feature distance between the projections of pseudo
    samples (B, 3, S, S) and the samples themselves (masked by (B, 1, S, S)) +
    lam_regular * mean squared latent offset."""
    projected, offset = ctx.project(target, pseudo)
    return projection_objective(ctx, projected, offset, pseudo, mask)


def projection_objective(ctx: Context, projected: torch.Tensor, offset: torch.Tensor,
                         pseudo: torch.Tensor, mask: torch.Tensor,
                         pseudo_features: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Step 2's objective for projections (B, 3, S, S) made by latent offsets (B, D) of
    pseudo samples (B, 3, S, S) masked by (B, 1, S, S): photometric + discriminator-feature
    distance + lam_regular * mean squared offset. pseudo_features: the samples'
    discriminator features, if already computed."""
    return (losses.photometric_loss(projected, pseudo, mask)
            + discriminator_feature_loss(ctx.discriminator, projected, pseudo, mask,
                                         real_features=pseudo_features, bf16=ctx.gan_bf16)
            + ctx.cfg.lam_regular * losses.latent_regularisation(offset))


OPTIMISE_CHUNK = 64  # pseudo samples optimised together by collect


def optimise_projection(ctx: Context, target: Target, pseudo: Samples) -> torch.Tensor:
    """Step 2's objective solved for each pseudo sample instead of amortised by the
    encoder (``projection: optimise``): a latent offset per sample (in the space of
    ``latent_space``, from 0: the input's own code) minimising the photometric +
    discriminator-feature distance of its image to the sample + lam_regular * its mean
    square, by ``projection_steps`` of Adam at ``projection_lr`` (the inversion's warm-up
    and cosine decay, so that the offsets settle). The samples' losses are
    independent, so one batch solves them all. Returns the projections (B, 3, S, S)."""
    cfg = ctx.cfg
    images, masks = pseudo.images.detach(), pseudo.masks
    offset = torch.zeros(images.shape[0], ctx.generator.style_dim, device=images.device,
                         requires_grad=True)
    optimizer = torch.optim.Adam([offset], lr=cfg.projection_lr)
    with torch.enable_grad():
        with torch.no_grad():
            real_features = discriminator_features(ctx.discriminator, bf16=ctx.gan_bf16)(images)
        for i in range(cfg.projection_steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate((i + 0.5) / cfg.projection_steps, cfg.projection_lr)
            loss = projection_objective(ctx, ctx.render_offset(target, offset), offset,
                                        images, masks, real_features)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return ctx.render_offset(target, offset)


def step2_loss(ctx: Context, target: Target, canon: Canon) -> torch.Tensor:
    """Step 2: latent encoder only, on a fresh batch of pseudo samples."""
    pseudo = sample_pseudo(ctx, canon, ctx.cfg.batchsize)
    return projection_loss(ctx, target, pseudo.images, pseudo.masks)


@torch.no_grad()
def project_samples(ctx: Context, target: Target, pseudo: Samples) -> torch.Tensor:
    """The projections (B, 3, S, S) of pseudo samples that Step 3 learns from: by the
    context's projector if it has one, else by the encoder or by optimisation
    (``projection``)."""
    if ctx.projector is not None:
        return ctx.projector(pseudo)
    if ctx.cfg.projection == "optimise":
        return optimise_projection(ctx, target, pseudo)
    return ctx.project(target, pseudo.images)[0]


@torch.no_grad()
def collect(ctx: Context, target: Target, canon: Canon, iters: int,
            progress: Callable[[int], None] | None = None) -> Samples:
    """``iters`` batches of fresh pseudo samples projected onto the GAN manifold (or by
    the context's projector), with the parameters each pseudo sample was rendered under.
    Optimised projections (``projection: optimise``) are solved up to
    ``OPTIMISE_CHUNK`` samples at a time: the samples are independent and a large batch
    costs far less per sample on a CPU (40 at 64 px: 1.9x)."""
    optimised = ctx.projector is None and ctx.cfg.projection == "optimise"
    per_call = max(OPTIMISE_CHUNK // ctx.cfg.batchsize, 1) if optimised else 1
    parts = []
    for start in range(0, iters, per_call):
        n = min(per_call, iters - start)
        pseudo = sample_pseudo_batches(ctx, canon, n)
        images = project_samples(ctx, target, pseudo)
        parts.append(Samples(images, pseudo.masks, pseudo.views, pseudo.lights))
        if progress is not None:
            progress(n)
    return Samples.cat(parts)


def sample_pseudo_batches(ctx: Context, canon: Canon, n: int) -> Samples:
    """``n`` batches of ``batchsize`` pseudo samples, drawn one batch after the other (the
    random draws of n calls of :func:`sample_pseudo`)."""
    return Samples.cat([sample_pseudo(ctx, canon, ctx.cfg.batchsize) for _ in range(n)])


class SampleCycler:
    """Batches of collected samples, walking a fresh random permutation each pass.

    learn_lights (``sample_params: refined``): each sample's light is the one it was
    rendered under plus an offset (N, 4) in the raw units of ``factors.light_from_raw``
    (ambient, diffuse, lx, ly), from 0; :meth:`parameters` are the offsets, which Step 3
    trains with its networks."""

    def __init__(self, samples: Samples, batch: int, learn_lights: bool = False):
        self.samples, self.batch = samples, min(batch, samples.images.shape[0])
        self.order = torch.empty(0, dtype=torch.long)
        self.start = factors.raw_from_light(samples.lights) if learn_lights else None
        self.offsets = (torch.zeros_like(self.start, requires_grad=True) if learn_lights
                        else None)

    @classmethod
    def for_config(cls, samples: Samples, cfg) -> SampleCycler:
        """The cycler Step 3 uses under ``cfg``: batches of ``batchsize``, with learned
        lights when ``sample_params`` is refined."""
        return cls(samples, cfg.batchsize, learn_lights=cfg.sample_params == "refined")

    def parameters(self) -> list[torch.Tensor]:
        return [] if self.offsets is None else [self.offsets]

    def next(self) -> Samples:
        if self.order.numel() < self.batch:
            self.order = torch.randperm(self.samples.images.shape[0])
        idx, self.order = self.order[:self.batch], self.order[self.batch:]
        idx = idx.to(self.samples.images.device)
        batch = self.samples[idx]
        if self.offsets is not None:
            batch.lights = factors.light_from_raw(self.start[idx] + self.offsets[idx])
        return batch


# --- Step 3 ------------------------------------------------------------------------------

def step3_input_loss(ctx: Context, target: Target, flip: bool = False) -> torch.Tensor:
    """Step 3 without GAN samples: depth, albedo, view and light networks on the Step-1
    loss of the input image alone."""
    pred = ctx.predict(target.image, STEP3_NETS, flip, target.depth_offset, target.light)
    return reconstruction_loss(ctx, target.image, pred)


def step3_loss(ctx: Context, target: Target, batch: Samples, flip: bool = False
               ) -> torch.Tensor:
    """Step 3: depth, albedo, view and light networks. The Step-1 loss on the input image
    plus the image terms of each projected sample of ``batch`` (b samples) rendered from the
    input's depth and albedo with the sample's own view and light (predicted from it, or
    the batch's: the ones it was rendered under or their refinement, ``sample_params``),
    and the flipped explanation under the joint valid mask when ``flip``. The input's image
    terms are weighted by lam_input3."""
    pred = ctx.predict(target.image, STEP3_NETS, flip, target.depth_offset, target.light)
    loss = reconstruction_loss(ctx, target.image, pred, ctx.cfg.lam_input3)

    images, masks = batch.images, batch.masks
    b, n = images.shape[0], 2 if flip else 1
    f = pred.f
    if ctx.cfg.sample_params != "predicted":  # the batch's lights: rendered or refined
        view, light = batch.views.repeat(n, 1), batch.lights.repeat(n)
    else:
        view = ctx.view_from_raw(ctx.nets["netV"](images)).repeat(n, 1)
        light = factors.light_from_raw(ctx.nets["netL"](images), ctx.light_mean).repeat(n)
    # each explanation (original, flipped) repeated over the b samples
    depth = f.depth.repeat_interleave(b, 0)
    normals = f.normals.repeat_interleave(b, 0)
    albedo = f.albedo.repeat_interleave(b, 0)
    shading = factors.shade(normals, light)
    recon, valid = ctx.render(depth, factors.canonical_image(albedo, shading), view)
    if flip:
        valid = (valid[:b] * valid[b:]).repeat(2, 1, 1, 1)
    valid = valid * masks.repeat(n, 1, 1, 1)
    for i in range(n):
        part = slice(i * b, (i + 1) * b)
        loss = loss + ctx.image_loss(recon[part], images, valid[part])
    return loss
