"""Run by tests/test_distributed.py under torchrun (2 processes, Gloo on the CPU).

Checks ``Group.average_gradients`` and ``Group.broadcast_modules`` against analytic values,
then jointly pre-trains the reconstruction networks on this process's share of four GAN
samples and saves the resulting weights to OUT/rank<r>.pt for the test to compare.
"""

import sys

import torch

from gan2shape.config import load_config
from gan2shape.distributed import from_environment, joined
from gan2shape.gan import Discriminator, Generator, StyleGAN2
from gan2shape.recon import Reconstructor
from gan2shape.recon.pretrain import pretrain, release_weights

STYLE_DIM = 32
CHANNELS = {4: 16, 8: 16, 16: 16, 32: 8}
SETTINGS = ["num_stage=1", "stage_len_dict={step1: 2, step2: 2, step3: 2}", "collect_iters=4",
            "prior_iters=2", "flip3_cfg=[true]", "flip1_cfg=[false]"]


def check_collectives(group) -> None:
    """Process r's gradient is r + 1 everywhere: the average is 1.5 on both; process 0's
    weights replace process 1's."""
    module = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(module.weight, float(group.rank))
    module.weight.grad = torch.full_like(module.weight, group.rank + 1.0)
    module.bias.grad = None  # unused on every process: averages to zero
    group.average_gradients(list(module.parameters()))
    assert torch.equal(module.weight.grad, torch.full_like(module.weight, 1.5))
    assert torch.equal(module.bias.grad, torch.zeros_like(module.bias))
    group.broadcast_modules([module])
    assert torch.equal(module.weight, torch.zeros_like(module.weight))
    assert group.broadcast({"rank": group.rank}) == {"rank": 0}


def main(out: str) -> None:
    group = from_environment()
    torch.manual_seed(0)  # the same GAN and images on both processes
    g = Generator(32, style_dim=STYLE_DIM, channels=CHANNELS)
    gan = StyleGAN2(g, Discriminator(32, channels=CHANNELS), 32)
    latents = g.mapping(torch.randn(4, STYLE_DIM)).detach()
    with torch.no_grad():
        images = torch.nn.functional.interpolate(g.synthesis(latents).clamp(-1, 1), size=64,
                                                 mode="bilinear")
    rec = Reconstructor(gan, load_config("tiny", overrides=SETTINGS), device="cpu",
                        progress=False)
    with torch.no_grad():  # different initial networks: process 0's must reach process 1
        for net in rec.nets.values():
            for p in net.parameters():
                p.add_(0.01 * group.rank * torch.randn_like(p))
    initial = {k: {n: t.clone() for n, t in sd.items()} for k, sd in release_weights(rec).items()}
    targets = [rec.target(images[i], latents[i:i + 1]) for i in group.shard(range(4))]
    with joined(group, torch.device("cpu")):
        check_collectives(group)
        weights = pretrain(rec, targets, group=group)
    torch.save({"weights": weights, "initial": initial}, f"{out}/rank{group.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
