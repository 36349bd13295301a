"""StyleGAN2's training losses: non-saturating logistic loss, R1 and path-length penalties."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: softplus(D(fake)) + softplus(-D(real)), batch means. logits: (B, 1)."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: softplus(-D(G(z))), batch mean. fake_logits: (B, 1)."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |d D(x) / d x|^2 at the real images (Mescheder et al. 2018).

    ``real_images`` must require grad and ``real_logits`` must be computed from them; the
    graph is kept so that the penalty itself can be back-propagated into D.
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def path_length_penalty(
    images: torch.Tensor, latents: torch.Tensor, mean_length: torch.Tensor, decay: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length regulariser.

    The Jacobian-vector length |J_w^T y| for image-space noise y (scaled so its expectation
    does not depend on the resolution) is pulled towards its running mean.
    images: (B, 3, H, W) generated from latents (B, n_latent, D) or (B, D).
    Returns (penalty, new running mean, mean path length of this batch).
    """
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).float().sum(), latents, create_graph=True)
    grad = grad.float()
    lengths = grad.pow(2).sum(-1).mean(-1).sqrt() if grad.dim() == 3 else grad.norm(dim=-1)
    new_mean = mean_length + decay * (lengths.detach().mean() - mean_length)
    penalty = (lengths - new_mean).pow(2).mean()
    return penalty, new_mean, lengths.detach().mean()
