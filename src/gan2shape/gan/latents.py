"""Per-image latents in the GAN2Shape release's format.

A latent file holds a W vector as a (1, style_dim) float tensor saved with ``torch.save``,
or a dict with that tensor under 'latent'.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..fileio import load_torch, save_torch


def load_latent(path, style_dim: int = 512) -> torch.Tensor:
    """Read a latent file -> float32 tensor (1, style_dim); one-line UserError if bad."""
    obj = load_torch(path, what="latent file")
    if isinstance(obj, dict):
        if "latent" not in obj:
            raise UserError(f"latent file {path} is a dict without a 'latent' entry "
                            f"(keys: {', '.join(map(str, list(obj)[:6]))})")
        obj = obj["latent"]
    if not isinstance(obj, torch.Tensor):
        raise UserError(f"latent file {path} holds a {type(obj).__name__}, not a tensor")
    if obj.numel() != style_dim or obj.ndim > 2 or (obj.ndim == 2 and obj.shape[0] != 1):
        raise UserError(f"latent file {path} has shape {tuple(obj.shape)}; expected a W "
                        f"latent (1, {style_dim})")
    if not obj.is_floating_point():
        raise UserError(f"latent file {path} holds {obj.dtype} values, expected floats")
    w = obj.detach().float().reshape(1, style_dim)
    if not torch.isfinite(w).all():
        raise UserError(f"latent file {path} contains NaN or infinite values")
    return w


def save_latent(path, w: torch.Tensor) -> None:
    """Write w (1, D) or (D,) as a float32 CPU tensor (1, D), atomically."""
    if w.ndim > 2 or (w.ndim == 2 and w.shape[0] != 1):
        raise ValueError(f"a latent file holds one W vector (1, D), got {tuple(w.shape)}")
    save_torch(w.detach().float().cpu().reshape(1, -1).clone(), path)
