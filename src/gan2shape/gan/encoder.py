"""An image encoder for a StyleGAN2's input latent space Z: the warm start of ``train-gan``
(an autoencoder through the generator) and the starting point of inversion.

It is the discriminator's residual trunk (the same widths per resolution) ending in a linear
head that gives a Gaussian over z per image, as a variational autoencoder's encoder does:
training samples z from it and pulls it towards the generator's N(0, I) prior (a KL term),
so that the images the generator learns to reconstruct are the images it samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .networks import ConvLayer, ResBlock
from .ops import EqualLinear


class ImageEncoder(nn.Module):
    """E(img (B, 3, S, S)) -> (mean (B, D), log_variance (B, D)) of q(z | img), D the
    generator's style_dim. channels: {resolution: width} from 4 px up to S, as the
    discriminator's."""

    def __init__(self, size: int, latent_dim: int, channels: dict[int, int]):
        super().__init__()
        log_size = int(math.log2(size))
        blocks: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        for i in range(log_size, 2, -1):
            blocks.append(ResBlock(channels[2 ** i], channels[2 ** (i - 1)]))
        self.convs = nn.Sequential(*blocks)
        self.final_conv = ConvLayer(channels[4], channels[4], 3)
        self.head = nn.Sequential(EqualLinear(channels[4] * 4 * 4, channels[4], activate=True),
                                  EqualLinear(channels[4], 2 * latent_dim))
        self.latent_dim = latent_dim

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.final_conv(self.convs(img)).flatten(1))
        mean, log_variance = out.float().chunk(2, dim=1)
        return mean, log_variance.clamp(-12.0, 6.0)


def kl_to_standard_normal(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, I)) summed over dimensions, batch mean: ()."""
    return 0.5 * (mean.square() + log_variance.exp() - log_variance - 1).sum(1).mean()


def sample_posterior(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """z = mean + sigma * eps (the reparameterisation: differentiable in both)."""
    return mean + (0.5 * log_variance).exp() * torch.randn_like(mean)
