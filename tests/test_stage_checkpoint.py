"""The stage checkpoint shared by reconstruct and pretrain (recon.stage_checkpoint)."""

import torch
from torch import nn

from gan2shape.recon.stage_checkpoint import StageCheckpoint


def nets(seed):
    torch.manual_seed(seed)
    return {"a": nn.Linear(3, 2), "b": nn.Conv2d(1, 1, 3)}


def weights(ns):
    return {k: n.state_dict() for k, n in ns.items()}


def test_resume_restores_weights_and_random_state_only_under_the_same_identity(tmp_path):
    path = tmp_path / "checkpoint.pt"
    identity = {"version": 1, "name": "img", "config": "abc"}
    saved = nets(0)
    torch.manual_seed(5)
    StageCheckpoint(path, identity).save(2, weights(saved), rng=True)
    after_save = torch.rand(4)
    # another identity: nothing resumed, nothing loaded
    fresh = nets(1)
    before = {k: v.clone() for k, v in fresh["a"].state_dict().items()}
    for other in ({**identity, "name": "other"}, {**identity, "version": 2},
                  {**identity, "key": "x"}):
        assert StageCheckpoint(path, other).resume(fresh) is None
    assert all(torch.equal(v, before[k]) for k, v in fresh["a"].state_dict().items())
    # the same identity: the weights and the random stream continue
    torch.manual_seed(99)
    assert StageCheckpoint(path, identity).resume(fresh) == 2
    for k, net in fresh.items():
        for name, value in net.state_dict().items():
            assert torch.equal(value, saved[k].state_dict()[name])
    assert torch.equal(torch.rand(4), after_save)


def test_without_random_state_the_stream_is_left_alone_and_no_path_does_nothing(tmp_path):
    path = tmp_path / "checkpoint.pt"
    StageCheckpoint(path, {"version": 2}).save(1, weights(nets(0)))
    assert "rng" not in torch.load(path)
    fresh = nets(1)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert StageCheckpoint(path, {"version": 2}).resume(fresh) == 1
    assert torch.equal(torch.rand(3), expected)
    StageCheckpoint(path, {"version": 2}).remove()
    assert not path.exists()
    nothing = StageCheckpoint(None, {"version": 2})
    nothing.save(1, weights(nets(0)))
    assert nothing.resume(nets(0)) is None
    nothing.remove()
    assert list(tmp_path.iterdir()) == []
