"""Choosing the torch device for a command."""

from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name: str | None) -> torch.device:
    """'auto' or None: CUDA when PyTorch sees a GPU, else the CPU; otherwise the named device.

    A name torch does not know, or 'cuda' without a visible GPU, is a one-line UserError.
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} asked for, but PyTorch sees no CUDA device")
    return device
