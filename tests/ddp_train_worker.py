"""Run by tests/test_distributed.py under torchrun (2 processes, Gloo on the CPU).

Checks the trainer's gradient averaging against a hand average of every process's local
gradients, then trains a few iterations and saves this process's networks to
OUT/rank<r>.pt for the test to compare across processes.
"""

import sys

import torch
import torch.distributed as dist

from gan2shape.distributed import from_environment, joined
from gan2shape.gan.losses import d_logistic_loss, g_nonsaturating_loss
from gan2shape.gan.train import TrainConfig, Trainer, set_requires_grad


def hand_averaged(loss_fn, module: torch.nn.Module) -> list[torch.Tensor]:
    """This process's gradients of loss_fn() on ``module`` averaged over the processes by
    all_gather, not by DDP."""
    module.zero_grad(set_to_none=True)
    loss_fn().backward()
    mean = []
    for p in module.parameters():
        parts = [torch.empty_like(p.grad) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, p.grad)
        mean.append(torch.stack(parts).mean(0))
    module.zero_grad(set_to_none=True)
    return mean


def check_gradients_are_averaged(trainer: Trainer) -> None:
    real = trainer.real_batch()
    with torch.no_grad():
        fake = trainer.g_train.module(trainer.local_batch)["fake"]
    set_requires_grad(trainer.g, False)
    set_requires_grad(trainer.d, True)

    def d_loss(d):
        return lambda: d_logistic_loss(d(real), d(fake))

    expected = hand_averaged(d_loss(trainer.d), trainer.d)
    d_loss(trainer.d_train)().backward()
    for p, e in zip(trainer.d.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)
    trainer.d.zero_grad(set_to_none=True)

    set_requires_grad(trainer.g, True)
    set_requires_grad(trainer.d, False)
    seed = 1234 + dist.get_rank()

    def g_loss(g):
        def loss():
            torch.manual_seed(seed)  # the same latents and noise through both paths
            return g_nonsaturating_loss(trainer.d(g(trainer.local_batch)["fake"]))
        return loss

    expected = hand_averaged(g_loss(trainer.g_train.module), trainer.g)
    g_loss(trainer.g_train)().backward()
    for p, e in zip(trainer.g.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)
    trainer.g.zero_grad(set_to_none=True)


def main(out: str) -> None:
    group = from_environment()
    cfg = TrainConfig(size=16, channels={4: 16, 8: 16, 16: 8}, style_dim=16, n_mlp=2,
                      batch=8, iters=3, r1_every=2, pl_weight=2.0, pl_every=2, seed=0,
                      sample_every=0, n_samples=4)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with joined(group, torch.device("cpu")):
        trainer = Trainer(cfg, images, group)
        initial = {k: v.clone() for k, v in trainer.g.state_dict().items()}
        batch = trainer.real_batch()
        check_gradients_are_averaged(trainer)
        for _ in range(cfg.iters):
            trainer.step()
        torch.save({"g": trainer.g.state_dict(), "d": trainer.d.state_dict(),
                    "g_ema": trainer.g_ema.state_dict(), "g_initial": initial,
                    "real_batch": batch}, f"{out}/rank{group.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
