"""Projection of images into a StyleGAN2's latent space by optimisation.

The recipe is StyleGAN2's projector (Karras et al. 2020, appendix D): start from the mean
latent, optimise with Adam under a learning rate that ramps up over the first 5 % of the
steps and down (cosine) over the last 25 %, add latent noise that decays to zero over the
first 75 % (it keeps the early steps from settling in a poor basin), and, when the generator's
noise maps are optimised too, regularise them towards white noise at every scale and
renormalise them after every step. The reconstruction loss is a pixel MSE plus a perceptual
term (``gan2shape.perceptual.inversion_perceptual``): distances between the GAN
discriminator's first feature maps (no extra weights needed) or, when the user supplies VGG16
weights, LPIPS-style normalised VGG16 features.

Each image has its own latent (and noise maps); the loss is a sum of per-image terms and the
discriminator features have no cross-batch terms, so a batch inverts exactly as its images
would one by one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import UserError
from ..perceptual import inversion_perceptual, per_image_masked_mean

# Below this PSNR (dB) a projection is reported as a poor explanation of the image. Measured
# with the embedded 64 px model (benchmarks/invert.py, 200 W steps, 4 images per case) at
# iterations 1219 / 2397: its own samples 43-45 / 42-46 dB, held-out procedural photos
# 25.6-29.4 / 27.3-31.7 dB, the same photos colour-inverted 21.6-24.3 / 22.2-25.6 dB,
# unrelated photos and screenshots 17.0-23.5 / 17.1-26.0 dB. PSNR also rewards flat
# backgrounds, so larger GANs on real photos may need a lower value.
POOR_FIT_PSNR_DB = 24.0
MEAN_LATENT_SAMPLES = 4096  # W samples for the starting point and the latent-noise scale
MEAN_LATENT_SEED = 0
Z_START_SAMPLES = 64  # prior samples searched for a Z inversion's start
# Default latent noise, as a fraction of W's spread or of Z's typical radius. In Z, 0.05 left
# a small random GAN's samples at 19-25 dB after 150 steps, 0.01 reached 20-30 (4 samples).
W_LATENT_NOISE = 0.05
Z_LATENT_NOISE = 0.01


class PoorFitWarning(UserWarning):
    """The projection explains the image badly (the image is far from the GAN's range)."""


@dataclass
class InversionResult:
    """latents: (B, D) in W or (B, n_latent, D) in W+; images: (B, 3, S, S) projected;
    losses: name -> (B,) final per-image terms; psnr_db: (B,) of the projection against the
    target (over the mask when one is given); history: (step, mean PSNR) pairs; z: (B, D)
    the input latents when the inversion ran in Z (``latents`` is then their W)."""

    latents: torch.Tensor
    images: torch.Tensor
    losses: dict[str, torch.Tensor]
    psnr_db: torch.Tensor
    noise: list[torch.Tensor] | None
    history: list[tuple[int, float]]
    z: torch.Tensor | None = None


def learning_rate(t: float, lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """StyleGAN2 projector schedule at progress t in [0, 1]: linear warm-up, cosine decay."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return lr * ramp


def noise_regularisation(noises: list[torch.Tensor]) -> torch.Tensor:
    """Per-image sum over maps and scales of squared one-pixel autocorrelations.

    noises: list of (B, 1, r, r) -> (B,). White noise scores 0; each map is average-pooled by
    2 down to 8 x 8 so that correlations at every scale are penalised.
    """
    total = 0.0
    for noise in noises:
        n = noise
        while True:
            total = total + (n * n.roll(1, dims=3)).mean(dim=(1, 2, 3)).pow(2)
            total = total + (n * n.roll(1, dims=2)).mean(dim=(1, 2, 3)).pow(2)
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


def psnr_db(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR (dB) of images in [-1, 1] (clamped), peak 1 on the [0, 1] scale: (B, C, H, W) -> (B,).

    mask: (B, 1, H, W) weights in [0, 1] (None: every pixel).
    """
    err = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2)
    mse = per_image_masked_mean(err, mask)
    return -10 * torch.log10(mse.clamp_min(1e-10))


@dataclass(frozen=True)
class InvertOptions:
    """How an inversion runs; the defaults are StyleGAN2's projector in W.

    steps; lr: the peak learning rate, ramped up over the first ``lr_rampup`` and down
    (cosine) over the last ``lr_rampdown`` of the steps. w_plus: one latent per layer, a
    shared W plus per-layer offsets moving at ``w_plus_lr_mult`` times the learning rate.
    z_space: in the input space Z through the whole mapping, so that the projection stays
    on the learned distribution (every z the mapping sees is a sample of its training
    distribution: the mapping's pixel norm keeps only z's direction, and the directions of
    N(0, I) samples are uniform); ``z_radius_weight`` times (mean z^2 - 1)^2, the squared
    distance from N(0, I)'s typical radius, is added to each image's loss: it changes no
    image, but keeps z away from 0, where the pixel norm's gradient blows up. None: in Z
    when the GAN has an image encoder (:func:`codes_for_image`), else in W.
    optimise_noise: per-image copies of the generator's noise maps are optimised too (with
    ``noise_weight`` times the noise regularisation) and returned; else its stored maps.
    latent_noise: the starting jitter's scale, decaying to zero over the first
    ``latent_noise_ramp`` of the steps (None: W_LATENT_NOISE in W, Z_LATENT_NOISE in Z).
    perceptual: "discriminator" (needs the discriminator), "vgg" (needs ``vgg_weights``, a
    torchvision-layout VGG16 state dict or its file) or "none"; the loss is ``pixel_weight``
    times the pixel MSE + ``perceptual_weight`` times the perceptual distance
    (:func:`gan2shape.perceptual.inversion_perceptual`).
    record_every: the PSNR is kept in the result's ``history`` (and given to the callback)
    every so many steps (0: never). progress: a tqdm bar over the steps (stderr).
    """

    # the schedule
    steps: int = 500
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    # the space searched
    w_plus: bool = False
    w_plus_lr_mult: float = 0.1
    z_space: bool | None = None
    z_radius_weight: float = 0.01
    # noise maps and latent jitter
    optimise_noise: bool = False
    noise_weight: float = 1e5
    latent_noise: float | None = None
    latent_noise_ramp: float = 0.75
    # the loss
    perceptual: str = "discriminator"
    vgg_weights: object = None
    perceptual_weight: float = 0.1
    pixel_weight: float = 1.0
    # reporting
    record_every: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.z_space and self.w_plus:
            raise UserError("an inversion runs in Z or in W+, not both")


def invert(
    generator: torch.nn.Module,
    images: torch.Tensor,
    options: InvertOptions | None = None,
    discriminator: torch.nn.Module | None = None,
    mask: torch.Tensor | None = None,
    init: str | torch.Tensor = "mean",
    seed: int | Sequence[int] = 0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> InversionResult:
    """Project ``images`` (B, 3, S, S) in [-1, 1] into the generator's latent space as
    ``options`` (:class:`InvertOptions`; None: the defaults) say.

    generator: a StyleGAN2 generator (``mapping``, ``synthesis``, ``mean_latent``);
    discriminator: the GAN's, for the perceptual term "discriminator". mask: (B, 1, S, S) or
    (1, 1, S, S) weights in [0, 1] restricting every loss.
    init: "mean" or a latent (B or 1, D) / (B or 1, n_latent, D) to start from (in Z: "mean"
    is, per image, the nearest in pixels of 64 seeded prior samples, and a tensor is a z,
    e.g. an image encoder's mean).
    seed: one seed for every image or one per image; each image draws its latent jitter and
    initial noise maps from its own stream, so batching does not change its result.
    Losses are per image: pixel MSE, perceptual distance, noise regularisation, total.
    callback(step, per-image PSNR) is called every ``options.record_every`` steps, and the
    same points are kept in ``history``.
    """
    opt = options or InvertOptions()
    z_space = bool(opt.z_space)
    device = images.device
    b, _, size, _ = images.shape
    if size != generator.size or images.shape[-1] != size:
        raise UserError(f"images are {tuple(images.shape[-2:])}, the GAN makes {generator.size} px")
    if mask is not None:
        mask = mask.to(device=device, dtype=images.dtype).expand(b, 1, -1, -1)
    seeds = [seed] * b if isinstance(seed, int) else list(seed)
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for {b} images")
    # One random stream per image: an image's result does not depend on its batch-mates.
    rngs = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def randn(shape) -> torch.Tensor:
        """(B, *shape) normal samples, row k from image k's stream."""
        return torch.stack([torch.randn(shape, generator=g) for g in rngs]).to(device)

    frozen = [generator] + ([discriminator] if discriminator is not None else [])
    flags = [[p.requires_grad for p in m.parameters()] for m in frozen]
    for m in frozen:
        m.requires_grad_(False)

    try:
        target = images.detach()
        metric = inversion_perceptual(opt.perceptual, discriminator, opt.vgg_weights, device)
        target_features = None if metric is None else metric.target_features(target)

        with torch.no_grad():
            fixed = torch.Generator(device="cpu").manual_seed(MEAN_LATENT_SEED)
            w_samples = generator.mapping(
                torch.randn(MEAN_LATENT_SAMPLES, generator.style_dim, generator=fixed).to(device))
            w_mean = w_samples.mean(0, keepdim=True)
            w_std = float((w_samples - w_mean).pow(2).sum(1).mean().sqrt())
        # W+ is parameterised as a shared W latent plus per-layer offsets that start at zero
        # and move at a fraction of the learning rate: the shared part follows the same path
        # as a W-only inversion, and the offsets only refine it.
        latent_noise = opt.latent_noise
        if latent_noise is None:
            latent_noise = Z_LATENT_NOISE if z_space else W_LATENT_NOISE
        if z_space:  # N(0, I)'s typical radius replaces W's spread for the latent noise
            w_std = float(generator.style_dim) ** 0.5
            if isinstance(init, str) and init == "mean":
                init = nearest_prior_sample(generator, target, Z_START_SAMPLES)
        start = _initial_latent(init, w_mean, b, generator, opt.w_plus)
        base = (start.mean(1) if opt.w_plus else start).clone().requires_grad_(True)
        groups = [{"params": [base], "lr_mult": 1.0}]
        offsets = None
        if opt.w_plus:
            offsets = (start - start.mean(1, keepdim=True)).clone().requires_grad_(True)
            groups.append({"params": [offsets], "lr_mult": opt.w_plus_lr_mult})
        noises = None
        if opt.optimise_noise:
            noises = [randn(n.shape[1:]).requires_grad_(True) for n in generator.stored_noise()]
            groups.append({"params": noises, "lr_mult": 1.0})
        optimiser = torch.optim.Adam(groups, lr=opt.lr, betas=(0.9, 0.999))

        def current_latent() -> torch.Tensor:
            return base if offsets is None else base[:, None, :] + offsets

        def synthesise(latent: torch.Tensor) -> torch.Tensor:
            w = generator.mapping(latent) if z_space else latent
            return generator.synthesis(w, noise=noises or "stored")

        def all_losses(projected: torch.Tensor, latent: torch.Tensor) -> dict:
            terms = _losses(projected, target, metric, target_features, mask, noises,
                            opt.pixel_weight, opt.perceptual_weight, opt.noise_weight)
            if z_space:
                terms["radius"] = (latent.square().mean(1) - 1).square()
                terms["total"] = terms["total"] + opt.z_radius_weight * terms["radius"]
            return terms

        history: list[tuple[int, float]] = []

        for step in tqdm(range(opt.steps), desc="inversion", unit="step", leave=False,
                         disable=not opt.progress, dynamic_ncols=True):
            t = step / max(opt.steps, 1)
            rate = learning_rate(t, opt.lr, opt.lr_rampup, opt.lr_rampdown)
            for group in optimiser.param_groups:
                group["lr"] = group["lr_mult"] * rate
            noise_scale = w_std * latent_noise * max(0.0, 1 - t / opt.latent_noise_ramp) ** 2
            latent = current_latent()
            jitter = randn(latent.shape[1:]) * noise_scale
            projected = synthesise(latent + jitter)
            losses = all_losses(projected, latent)
            optimiser.zero_grad(set_to_none=True)
            losses["total"].sum().backward()
            optimiser.step()
            if noises is not None:
                with torch.no_grad():  # keep the noise maps zero-mean, unit-variance
                    for n in noises:
                        n -= n.mean(dim=(1, 2, 3), keepdim=True)
                        n *= n.pow(2).mean(dim=(1, 2, 3), keepdim=True).rsqrt()
            if opt.record_every and ((step + 1) % opt.record_every == 0 or step + 1 == opt.steps):
                with torch.no_grad():
                    current = psnr_db(projected.detach(), target, mask)
                history.append((step + 1, float(current.mean())))
                if callback is not None:
                    callback(step + 1, current)

        with torch.no_grad():
            latent = current_latent()
            final = synthesise(latent)
            losses = all_losses(final, latent)
            if offsets is not None:
                # Keep the shared W part alone where it explains the image better than with
                # its per-layer offsets, so W+ never ends worse than its own W component.
                shared = base[:, None, :].expand_as(latent)
                alt = generator.synthesis(shared, noise=noises or "stored")
                alt_losses = _losses(alt, target, metric, target_features, mask, noises,
                                     opt.pixel_weight, opt.perceptual_weight, opt.noise_weight)
                better = alt_losses["total"] < losses["total"]
                latent = torch.where(better[:, None, None], shared, latent)
                final = torch.where(better[:, None, None, None], alt, final)
                losses = {k: torch.where(better, alt_losses[k], v) for k, v in losses.items()}
            psnr = psnr_db(final, target, mask)
            z = latent if z_space else None
            if z_space:
                latent = generator.mapping(latent)
    finally:  # give the networks back as they came
        for m, m_flags in zip(frozen, flags, strict=True):
            for p, flag in zip(m.parameters(), m_flags, strict=True):
                p.requires_grad_(flag)
    return InversionResult(
        latents=latent.detach(),
        images=final.detach(),
        losses={k: v.detach() for k, v in losses.items()},
        psnr_db=psnr,
        noise=None if noises is None else [n.detach() for n in noises],
        history=history,
        z=None if z is None else z.detach(),
    )


@torch.no_grad()
def nearest_prior_sample(generator, target: torch.Tensor, n: int) -> torch.Tensor:
    """Per image of target (B, 3, S, S), the one of n seeded N(0, I) samples z whose image is
    nearest in pixel MSE: (B, D), the starting point of a Z inversion."""
    seeded = torch.Generator(device="cpu").manual_seed(MEAN_LATENT_SEED)
    z = torch.randn(n, generator.style_dim, generator=seeded).to(target.device)
    images = generator.synthesis(generator.mapping(z))
    errors = (images[None] - target[:, None]).square().flatten(2).mean(2)  # (B, n)
    return z[errors.argmin(1)]


def _initial_latent(init, w_mean, batch, generator, w_plus) -> torch.Tensor:
    """The starting latent: (B, D) for W, (B, n_latent, D) for W+."""
    if isinstance(init, str):
        if init != "mean":
            raise UserError(f"init must be 'mean' or a latent tensor, got {init!r}")
        start = w_mean
    else:
        start = init.detach().to(w_mean.device, w_mean.dtype)
    if start.dim() == 2:
        start = start[:, None, :].expand(-1, generator.n_latent, -1) if w_plus else start
    elif not w_plus:
        raise UserError("a W+ latent (B, n_latent, D) cannot start a W inversion")
    if start.shape[-1] != generator.style_dim:
        raise UserError(f"latent has {start.shape[-1]} features, the GAN {generator.style_dim}")
    return start.expand(batch, *start.shape[1:]).contiguous()


def _losses(projected, target, metric, target_features, mask, noises,
            pixel_weight, perceptual_weight, noise_weight) -> dict[str, torch.Tensor]:
    pixel = per_image_masked_mean((projected - target).pow(2), mask)
    zero = torch.zeros_like(pixel)
    percep = metric.to_features(projected, target_features, mask) if metric else zero
    noise_reg = noise_regularisation(noises) if noises else zero
    total = pixel_weight * pixel + perceptual_weight * percep + noise_weight * noise_reg
    return {"pixel": pixel, "perceptual": percep, "noise": noise_reg, "total": total}


def fit_warning(psnr: float, threshold_db: float = POOR_FIT_PSNR_DB) -> str | None:
    """A one-line warning when a projection's PSNR says it explains the image badly."""
    if psnr >= threshold_db:
        return None
    return (f"the GAN explains this image poorly (projection PSNR {psnr:.1f} dB < "
            f"{threshold_db:.0f} dB): it may be far from what the GAN can produce, and the "
            "shape recovered from it is less reliable")


def prepare_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) or (1, 3, H, W) in [-1, 1] -> (1, 3, size, size) (area-resized if needed)."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise UserError(f"expected one RGB image (3, H, W), got {tuple(image.shape)}")
    if image.shape[-2:] != (size, size):
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
    return image


def latent_for_image(gan, image: torch.Tensor, options: InvertOptions | None = None,
                     seed: int = 0, mask: torch.Tensor | None = None,
                     poor_fit_db: float = POOR_FIT_PSNR_DB) -> torch.Tensor:
    """The W latent (1, style_dim) whose GAN image best matches ``image`` (3, S, S) in [-1, 1]
    (:func:`codes_for_image`'s W)."""
    return codes_for_image(gan, image, options, seed, mask, poor_fit_db)[0]


def inversion_start(gan, target: torch.Tensor, options: InvertOptions | None = None
                    ) -> tuple[InvertOptions, str | torch.Tensor]:
    """(options, init) of :func:`invert` for ``target`` (B, 3, S, S) at the GAN's size: a
    GAN with an image encoder (``gan.encoder``) is inverted in Z from the encoder's estimate
    unless ``options`` say W or W+; others as ``options`` say, from the mean."""
    options = options or InvertOptions()
    encoder = getattr(gan, "encoder", None)
    if encoder is None or options.w_plus or options.z_space is False:
        return options, "mean"
    with torch.no_grad():
        return replace(options, z_space=True), encoder(target)[0]


def codes_for_image(gan, image: torch.Tensor, options: InvertOptions | None = None,
                    seed: int = 0, mask: torch.Tensor | None = None,
                    poor_fit_db: float = POOR_FIT_PSNR_DB
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W latent (1, style_dim), its input latent z (1, style_dim) or None) whose GAN image
    best matches ``image`` (3, S, S) in [-1, 1]; z when the inversion ran in Z.

    ``gan`` is a loaded StyleGAN2 (``.generator``, ``.discriminator``); the image is resized
    to the GAN's resolution if needed. A GAN with an image encoder (``gan.encoder``) is
    inverted in Z from the encoder's estimate, under Z's Gaussian prior (unless ``options``
    say W or W+); others in W from the mean latent. Warns (:class:`PoorFitWarning`) when the
    projection's PSNR is below ``poor_fit_db``.
    """
    generator = gan.generator
    device = next(generator.parameters()).device
    target = prepare_image(image.to(device), generator.size)
    options, init = inversion_start(gan, target, options)
    result = invert(generator, target, options, gan.discriminator, mask, init, seed)
    message = fit_warning(float(result.psnr_db[0]), poor_fit_db)
    if message:
        warnings.warn(message, PoorFitWarning, stacklevel=2)
    return result.latents[:1], None if result.z is None else result.z[:1]


def codes_for_file(path, gan, options: InvertOptions | None = None, device=None, crop=None,
                   seed: int = 0, poor_fit_db: float = POOR_FIT_PSNR_DB
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W (1, style_dim), z (1, style_dim) or None) of the image file ``path``
    (``reconstruct --invert``): :func:`codes_for_image` of the photo preprocessed as
    ``gan2shape invert`` does (EXIF, RGBA, greyscale, centre square or ``crop`` box, resize
    to the GAN's size)."""
    from .images import load_image

    generator = gan.generator
    device = device or next(generator.parameters()).device
    image = load_image(path, generator.size, crop).to(device)
    return codes_for_image(gan, image, options, seed, poor_fit_db=poor_fit_db)


def invert_image(path, gan, options: InvertOptions | None = None, device=None, crop=None,
                 seed: int = 0, poor_fit_db: float = POOR_FIT_PSNR_DB) -> torch.Tensor:
    """The W latent (1, style_dim) of the image file ``path`` (:func:`codes_for_file`'s W)."""
    return codes_for_file(path, gan, options, device, crop, seed, poor_fit_db)[0]
