"""Finished results and the settings that made them.

Each image's ``metrics.json`` records ``settings_digest``: a hash of the effective settings
and of the contents of every file the image was made from (GAN, pre-trained weights,
priors, image, latent, mask). A rerun into the same ``--out`` skips an image
only when its digest is the current one, so a folder never mixes results of different
settings silently.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from ..errors import UserError

DIGEST_KEY = "settings_digest"
# Settings that name files (their contents are hashed instead) or only where to run.
_NOT_HASHED = ("gan_ckpt", "img_list_path", "img_root", "latent_root", "pretrain",
               "view_mvn_path", "light_mvn_path", "device")


@cache
def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_digest(cfg, files: dict[str, Path | None]) -> str:
    """A short hash of ``cfg`` (a ReconConfig) and of the contents of ``files``."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_HASHED}
    for key in ("view_mvn_path", "light_mvn_path", "pretrain", "gan_ckpt"):
        files = {**files, key: getattr(cfg, key)}
    hashes = {k: _file_hash(str(p)) if p is not None else None for k, p in files.items()}
    text = json.dumps({"settings": settings, "files": hashes}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded_digest(out_dir: Path) -> str | None:
    """The digest a finished image folder records (None: none, an older or broken file)."""
    try:
        return json.loads((out_dir / "metrics.json").read_text()).get(DIGEST_KEY)
    except (OSError, ValueError, AttributeError):
        return None


def stale_error(out: Path, stale: list[str]) -> UserError:
    """The one-line refusal for finished images made with other settings or inputs."""
    first = out / stale[0]
    what = f"{first} was" if len(stale) == 1 else \
        f"{len(stale)} finished images ({first}, ...) were"
    return UserError(f"{what} made with other settings or inputs than this run's: pass "
                     "--overwrite to redo them, or give another --out")
