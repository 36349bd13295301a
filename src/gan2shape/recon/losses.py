"""Losses of the three steps (docs/method.md section 2).

photometric_loss         masked mean |recon - target| (L1)
smoothness_loss          mean |second-order differences| (dxx, dxy, dyx, dyy)
latent_regularisation    mean squared latent offset

The perceptual terms (LPIPS-VGG16, VGG16 relu3_3, the discriminator's features) and the
discriminator-feature loss of the projection are ``gan2shape.perceptual``'s, shared with the
inversion.
"""

from __future__ import annotations

import torch

from ..perceptual import masked_mean


def photometric_loss(recon: torch.Tensor, target: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean of |recon - target|; images (B, C, H, W), mask broadcastable (B, 1, H, W).

    With a mask: sum(|d| * m) / sum(m) over all channels (the mask is expanded to them).
    """
    return masked_mean((recon - target).abs(), mask)


def smoothness_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute second-order differences of maps (B, H, W) or (B, C, H, W).

    The release's sum of four means: d/dx(d/dx), d/dy(d/dx), d/dx(d/dy), d/dy(d/dy), with
    forward differences.
    """
    if x.dim() == 4:
        x = x.reshape(-1, *x.shape[-2:])
    dx = x[:, :, 1:] - x[:, :, :-1]
    dy = x[:, 1:] - x[:, :-1]
    dxx = dx[:, :, 1:] - dx[:, :, :-1]
    dxy = dx[:, 1:] - dx[:, :-1]
    dyx = dy[:, :, 1:] - dy[:, :, :-1]
    dyy = dy[:, 1:] - dy[:, :-1]
    return dxx.abs().mean() + dxy.abs().mean() + dyx.abs().mean() + dyy.abs().mean()


def latent_regularisation(offset: torch.Tensor) -> torch.Tensor:
    """Mean squared latent offset; offset (B, D)."""
    return (offset ** 2).mean()
