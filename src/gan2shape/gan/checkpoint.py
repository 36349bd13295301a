"""Load and save StyleGAN2 checkpoints in the rosinality format.

A checkpoint is a dict with state dicts 'g_ema' (the generator used for sampling), 'd' (the
discriminator) and, from training, 'g' (the non-averaged generator) plus optimiser states
and 'args'. Architecture (size, widths, style_dim, n_mlp) is read off the tensors, so
checkpoints of any size (4 .. 1024) and channel table load without options.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ..errors import UserError
from ..fileio import load_torch, save_torch
from .encoder import ImageEncoder
from .networks import Discriminator, Generator, default_channels

GAN2SHAPE_WEIGHT_KEYS = ("netD", "netA", "netV", "netL", "netEnc")


@dataclass
class StyleGAN2:
    """A loaded checkpoint: ``generator`` (g_ema weights), ``discriminator``, ``size``.

    ``latent_avg`` is the checkpoint's mean W (1, style_dim) when it stores one, else None;
    ``encoder`` the image encoder into Z that ``train-gan``'s autoencoder warm start trained
    (key 'encoder'), else None.
    """

    generator: Generator
    discriminator: Discriminator | None
    size: int
    latent_avg: torch.Tensor | None = None
    encoder: ImageEncoder | None = None

    @property
    def channel_multiplier(self) -> int | None:
        """The rosinality channel multiplier (1: config-e, 2: config-f) whose width table the
        generator has, or None for other widths (this project's embedded GAN, say) and below
        64 px, where both tables agree."""
        matches = [m for m in (1, 2) if all(default_channels(m)[r] == c
                                            for r, c in self.generator.channels.items())]
        return matches[0] if len(matches) == 1 else None


def _tensor(sd: dict, key: str, what: str) -> torch.Tensor:
    value = sd.get(key)
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{what} has no tensor '{key}': not a rosinality StyleGAN2 state dict")
    return value


def generator_config(sd: dict, what: str = "g_ema") -> dict:
    """Constructor arguments of the Generator whose state dict is sd."""
    n_rgbs = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
    size = 2 ** (n_rgbs + 2)
    style_dim = _tensor(sd, "style.1.weight", what).shape[1]
    n_mlp = sum(1 for k in sd if re.fullmatch(r"style\.\d+\.weight", k))
    channels = {4: _tensor(sd, "conv1.conv.weight", what).shape[1]}
    for level in range(n_rgbs):
        weight = _tensor(sd, f"convs.{2 * level}.conv.weight", what)
        channels[2 ** (level + 3)] = weight.shape[1]
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channels": channels}


def discriminator_config(sd: dict, what: str = "d") -> dict:
    """Constructor arguments of the Discriminator whose state dict is sd."""
    n_blocks = sum(1 for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k))
    size = 2 ** (n_blocks + 2)
    channels = {size: _tensor(sd, "convs.0.0.weight", what).shape[0],
                4: _tensor(sd, "final_conv.0.weight", what).shape[0]}
    for block in range(1, n_blocks + 1):
        weight = _tensor(sd, f"convs.{block}.conv2.1.weight", what)
        channels[size >> block] = weight.shape[0]
    return {"size": size, "channels": channels}


def _load_strict(module: torch.nn.Module, sd: dict, what: str) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        own = module.state_dict()
        missing = [k for k in own if k not in sd]
        extra = [k for k in sd if k not in own]
        wrong = [k for k in own if k in sd and getattr(sd[k], "shape", None) != own[k].shape]
        parts = []
        for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label} keys {', '.join(keys[:3])}{more}")
        detail = "; ".join(parts) or str(exc).splitlines()[0]
        raise UserError(f"{what} does not match a StyleGAN2 architecture: {detail}") from exc


def load_stylegan2(path_or_dict, device: str | torch.device = "cpu",
                   need_discriminator: bool = True) -> StyleGAN2:
    """Build the generator (from 'g_ema') and discriminator (from 'd') of a checkpoint.

    path_or_dict: a file path or an already loaded checkpoint dict. Modules are returned in
    eval mode on ``device``. need_discriminator=False accepts files without 'd'
    (discriminator None). Raises UserError with a one-line reason for anything else.
    """
    if isinstance(path_or_dict, (str, os.PathLike)):
        name = f"StyleGAN2 checkpoint {path_or_dict}"
        ckpt = load_torch(path_or_dict, what="StyleGAN2 checkpoint")
    else:
        name = "StyleGAN2 checkpoint"
        ckpt = path_or_dict
    if not isinstance(ckpt, dict):
        raise UserError(f"{name} is not a checkpoint dict (got {type(ckpt).__name__}); "
                        "expected a rosinality-format dict with 'g_ema' and 'd'")
    if any(k in ckpt for k in GAN2SHAPE_WEIGHT_KEYS):
        raise UserError(f"{name} holds GAN2Shape reconstruction weights (netD, netA, ...), "
                        "not a StyleGAN2; pass the StyleGAN2 checkpoint with 'g_ema' and 'd'")
    required = ("g_ema", "d") if need_discriminator else ("g_ema",)
    missing = [k for k in required if not isinstance(ckpt.get(k), dict)]
    if missing:
        keys = ", ".join(repr(k) for k in list(ckpt)[:6]) or "none"
        raise UserError(f"{name} has no {' or '.join(repr(k) for k in missing)} state dict "
                        f"(top-level keys: {keys}); expected a rosinality-format checkpoint")

    g_sd = ckpt["g_ema"]
    generator = Generator(**generator_config(g_sd, f"{name} 'g_ema'"))
    _load_strict(generator, g_sd, f"{name} 'g_ema'")
    discriminator = None
    if isinstance(ckpt.get("d"), dict):
        d_sd = ckpt["d"]
        discriminator = Discriminator(**discriminator_config(d_sd, f"{name} 'd'"))
        _load_strict(discriminator, d_sd, f"{name} 'd'")
        discriminator.eval().to(device)
    latent_avg = ckpt.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor):
        latent_avg = latent_avg.reshape(1, -1).float().to(device)
    else:
        latent_avg = None
    encoder = None
    if isinstance(ckpt.get("encoder"), dict):
        channels = discriminator_config(ckpt["d"], f"{name} 'd'")["channels"] \
            if isinstance(ckpt.get("d"), dict) else generator.channels
        encoder = ImageEncoder(generator.size, generator.style_dim, channels)
        _load_strict(encoder, ckpt["encoder"], f"{name} 'encoder'")
        encoder.eval().to(device)
    return StyleGAN2(generator.eval().to(device), discriminator, generator.size, latent_avg,
                     encoder)


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_stylegan2(path, generator: Generator, discriminator: Discriminator,
                   generator_ema: Generator | None = None, extra: dict | None = None) -> None:
    """Write {'g', 'd', 'g_ema', **extra} (CPU tensors) atomically to path."""
    ckpt = {"g": _cpu_state(generator), "d": _cpu_state(discriminator),
            "g_ema": _cpu_state(generator_ema if generator_ema is not None else generator)}
    ckpt.update(extra or {})
    save_torch(ckpt, path)
