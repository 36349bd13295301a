"""torchrun support: process groups from the environment, image sharding, StyleGAN2
training with DistributedDataParallel and joint pre-training with averaged gradients, on
two CPU processes (Gloo)."""

from pathlib import Path

import pytest
import torch

from gan2shape.distributed import Group, from_environment, process_device
from gan2shape.errors import UserError


@pytest.mark.parametrize("n", [0, 1, 5, 8])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_hold_every_item_once_and_are_balanced(n, world):
    items = list(range(n))
    shards = [Group(rank, world).shard(items) for rank in range(world)]
    assert sorted(x for s in shards for x in s) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_group_comes_from_torchrun_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert from_environment() == Group(0, 1, 0) and not from_environment().distributed
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    group = from_environment()
    assert group == Group(3, 4, 1) and group.distributed and not group.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="RANK 4, WORLD_SIZE 4"):
        from_environment()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(UserError, match="torchrun environment"):
        from_environment()


def test_cpu_processes_keep_the_cpu():
    assert process_device(Group(1, 2, 1), torch.device("cpu")) == torch.device("cpu")


def test_two_process_training_averages_gradients_and_stays_in_sync(tmp_path, torchrun):
    """Gradients through the trainer's DDP modules equal the hand average of every process's
    own gradients; after a few iterations with R1 and path-length steps both processes hold
    the same networks, which have moved, although they saw different real images."""
    result = torchrun(Path(__file__).with_name("ddp_train_worker.py"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for net in ("g", "d", "g_ema"):
        for key, value in ranks[0][net].items():
            assert torch.equal(value, ranks[1][net][key]), f"{net}.{key} differs"
    moved = [key for key, value in ranks[0]["g"].items()
             if not torch.equal(value, ranks[0]["g_initial"][key])]
    assert moved
    assert not torch.equal(ranks[0]["real_batch"], ranks[1]["real_batch"])


def test_two_process_pretraining_shares_one_set_of_weights(tmp_path, torchrun):
    """Joint pre-training on two processes, each with two of four images and its own
    initial networks: the collectives give analytic values, and both processes end with
    the same weights, which have moved from process 0's initial ones."""
    result = torchrun(Path(__file__).with_name("ddp_pretrain_worker.py"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert any(not torch.equal(v, ranks[1]["initial"]["netA"][k])
               for k, v in ranks[0]["initial"]["netA"].items())
    for net, state in ranks[0]["weights"].items():
        for key, value in state.items():
            assert torch.equal(value, ranks[1]["weights"][net][key]), f"{net}.{key} differs"
    for net in ("netD", "netA", "netV", "netL", "netEnc"):
        assert any(not torch.equal(v, ranks[0]["initial"][net][k])
                   for k, v in ranks[0]["weights"][net].items()), f"{net} did not train"
