"""What the command-line tests share: a tiny StyleGAN2 checkpoint and a short schedule."""

import torch

from gan2shape.gan import Discriminator, Generator, save_stylegan2

STYLE_DIM = 32
CHANNELS = {4: 16, 8: 16, 16: 16, 32: 8}
# The tiny preset cut to one iteration of everything.
FAST = ["num_stage=1", "stage_len_dict={step1: 1, step2: 1, step3: 1}", "collect_iters=1",
        "prior_iters=1", "flip3_cfg=[true]", "flip1_cfg=[false]"]


def save_tiny_gan(path) -> Generator:
    """A seeded random 32 px StyleGAN2 saved at path; returns its generator."""
    torch.manual_seed(0)
    g = Generator(32, style_dim=STYLE_DIM, channels=CHANNELS)
    save_stylegan2(path, g, Discriminator(32, channels=CHANNELS))
    return g
