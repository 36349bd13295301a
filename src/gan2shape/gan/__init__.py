"""StyleGAN2 in plain PyTorch: rosinality-format networks, checkpoint I/O, latents."""

from .checkpoint import StyleGAN2, load_stylegan2, save_stylegan2
from .latents import load_latent, save_latent
from .networks import Discriminator, Generator

__all__ = ["Discriminator", "Generator", "StyleGAN2", "load_latent", "load_stylegan2",
           "save_latent", "save_stylegan2"]
