"""Atomic file writing and checked file reading shared by every command.

Every output is written to a temporary file in the destination folder and renamed over the
destination, so an interrupted run never leaves a half-written file where a good one was
expected (``os.replace`` is atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600 files; outputs get the usual permissions (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create the output folder ``path`` if needed and check that files can be written in
    it, so an unusable location fails at once with a one-line :class:`UserError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what} {path} is not writable ({exc.strerror or exc})") from exc
    return path


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cast_floating(value: Any, dtype: torch.dtype, min_numel: int = 1) -> Any:
    """``value`` (a tensor, or dicts and lists of them) with every floating tensor of at
    least ``min_numel`` elements cast to ``dtype``, for smaller checkpoint files
    (``load_state_dict`` casts back); anything else is returned as it is."""
    if isinstance(value, torch.Tensor):
        small = value.is_floating_point() and value.numel() >= min_numel
        return value.to(dtype) if small else value
    if isinstance(value, dict):
        return {k: cast_floating(v, dtype, min_numel) for k, v in value.items()}
    if isinstance(value, list):
        return [cast_floating(v, dtype, min_numel) for v in value]
    return value


def save_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_image(array: np.ndarray | Image.Image, path: str | os.PathLike) -> None:
    """Save a PIL image or an array (H, W) / (H, W, C), uint8 or uint16, by the path's suffix."""
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))


def load_torch(path: str | os.PathLike, what: str = "file") -> Any:
    """``torch.load`` on CPU with a one-line :class:`UserError` for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any failure to unpickle means a bad file
        reason = type(exc).__name__
        raise UserError(f"{what} {path} is not a readable PyTorch file ({reason})") from exc
