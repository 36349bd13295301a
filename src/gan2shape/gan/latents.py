"""Per-image latents in the GAN2Shape release's format.

A latent file holds a W vector as a (1, style_dim) float tensor saved with ``torch.save``,
or a dict with that tensor under 'latent'. Files written for a GAN that is inverted in its
input space Z (one with an image encoder, ``gan.invert.codes_for_image``) are such a dict
with the z whose mapping is that W under 'z' as well, which ``latent_space: z`` needs.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..fileio import load_torch, save_torch


def _vector(obj, path, style_dim: int, what: str) -> torch.Tensor:
    """obj checked as one latent vector -> float32 (1, style_dim); UserError if not."""
    if not isinstance(obj, torch.Tensor):
        raise UserError(f"latent file {path} holds a {type(obj).__name__}, not a tensor")
    if obj.numel() != style_dim or obj.ndim > 2 or (obj.ndim == 2 and obj.shape[0] != 1):
        raise UserError(f"latent file {path} has shape {tuple(obj.shape)}; expected a {what} "
                        f"latent (1, {style_dim})")
    if not obj.is_floating_point():
        raise UserError(f"latent file {path} holds {obj.dtype} values, expected floats")
    v = obj.detach().float().reshape(1, style_dim)
    if not torch.isfinite(v).all():
        raise UserError(f"latent file {path} contains NaN or infinite values")
    return v


def load_latent_codes(path, style_dim: int = 512) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a latent file -> (W (1, style_dim), its z (1, style_dim) or None when the file
    holds none), float32; one-line UserError if bad."""
    obj = load_torch(path, what="latent file")
    z = None
    if isinstance(obj, dict):
        if "latent" not in obj:
            raise UserError(f"latent file {path} is a dict without a 'latent' entry "
                            f"(keys: {', '.join(map(str, list(obj)[:6]))})")
        if obj.get("z") is not None:
            z = _vector(obj["z"], path, style_dim, "z")
        obj = obj["latent"]
    return _vector(obj, path, style_dim, "W"), z


def load_latent(path, style_dim: int = 512) -> torch.Tensor:
    """Read a latent file -> its W, float32 tensor (1, style_dim); one-line UserError if bad."""
    return load_latent_codes(path, style_dim)[0]


def save_latent(path, w: torch.Tensor, z: torch.Tensor | None = None) -> None:
    """Write w (1, D) or (D,) as a float32 CPU tensor (1, D), atomically; with z (its input
    latent, same shape), the dict {'latent': w, 'z': z} instead."""
    def row(v: torch.Tensor) -> torch.Tensor:
        if v.ndim > 2 or (v.ndim == 2 and v.shape[0] != 1):
            raise ValueError(f"a latent file holds one vector (1, D), got {tuple(v.shape)}")
        return v.detach().float().cpu().reshape(1, -1).clone()

    save_torch(row(w) if z is None else {"latent": row(w), "z": row(z)}, path)
