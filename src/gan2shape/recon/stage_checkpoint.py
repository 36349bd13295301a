"""Stage checkpoints of ``reconstruct`` (one image) and ``pretrain`` (many images, shared
weights): after the shape prior and after every stage the networks' weights, and where the
run draws from it the random state, are written atomically; a later run whose identity (the
format's version, the configuration's digest, the image's name or the number of images)
matches resumes after the last finished stage. Another identity starts afresh and its first
save replaces the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..fileio import load_torch, save_torch

FILE_NAME = "checkpoint.pt"  # in the output folder of the image (reconstruct) or the run


class StageCheckpoint:
    """``path``: the file (None: no checkpoints, every call does nothing); ``identity``:
    the entries a checkpoint must have to be resumed (``version`` among them); ``what``:
    its name in error messages."""

    def __init__(self, path: str | os.PathLike | None, identity: dict,
                 what: str = "checkpoint"):
        self.path = None if path is None else Path(path)
        self.identity = identity
        self.what = what

    def save(self, stages_done: int, weights: dict[str, dict], rng: bool = False) -> None:
        """weights: network name -> state dict. rng: keep the CPU (and CUDA) random state,
        for a run that draws from it across stages (a resume then continues its stream)."""
        if self.path is None:
            return
        state = {**self.identity, "stages_done": stages_done, "nets": weights}
        if rng:
            state["rng"] = torch.get_rng_state()
            state["cuda_rng"] = torch.cuda.get_rng_state_all() \
                if torch.cuda.is_available() else None
        save_torch(state, self.path)

    def resume(self, nets: dict[str, nn.Module]) -> int | None:
        """Load a matching checkpoint into ``nets`` (and the random state it kept); returns
        the number of finished stages, or None when there is none to resume."""
        if self.path is None or not self.path.is_file():
            return None
        state = load_torch(self.path, self.what)
        if not isinstance(state, dict) or any(state.get(k) != v
                                              for k, v in self.identity.items()):
            return None
        for k, net in nets.items():
            net.load_state_dict(state["nets"][k])
        if state.get("rng") is not None:
            torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["stages_done"])

    def remove(self) -> None:
        """Delete the file: the run's results are written."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
