"""The embedded model shipped inside the package: a small 64 px StyleGAN2 trained by the
project on fresh renders of its procedural faces (``gan2shape train-gan --procedural``) with
the image encoder it is inverted in Z from, and the exact view and light priors of that
family. See ``assets/MODEL_CARD.md``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import NamedTuple

from .errors import UserError

GAN_FILE = "embedded64.pt"
VIEW_PRIOR_FILE = "embedded64_view_prior.pt"
LIGHT_PRIOR_FILE = "embedded64_light_prior.pt"
# The data family the embedded GAN was trained on (seed 0), its held-out test family and
# the validation family that settings are chosen on (the same seeds for every version of
# the family: ``make-data --family``).
TRAIN_SEED = 0
TEST_SEED = 1
VALIDATION_SEED = 2
# The version of the procedural family the embedded GAN was trained on.
FAMILY = "v2"
IMAGE_SIZE = 64
NAME = "embedded"  # the ``--gan`` value that picks the shipped model
GAN_HELP = (f"StyleGAN2 checkpoint (rosinality format: 'g_ema' and 'd'), or '{NAME}': the "
            "shipped 64 px model")


def asset_path(name: str) -> Path:
    """Path of a file in the package's assets folder (which must exist)."""
    path = Path(str(resources.files("gan2shape") / "assets" / name))
    if not path.is_file():
        raise UserError(f"the embedded asset {name} is missing from this installation "
                        f"({path}); reinstall gan2shape or pass your own files")
    return path


def load_embedded_gan(device: str = "cpu"):
    """The embedded StyleGAN2 (a ``gan2shape.gan.StyleGAN2``)."""
    from .gan import load_stylegan2

    return load_stylegan2(asset_path(GAN_FILE), device=device)


class GanFiles(NamedTuple):
    """What a ``--gan`` value names: a checkpoint and, for the embedded model, its priors."""

    checkpoint: Path
    view_prior: Path | None = None
    light_prior: Path | None = None


def resolve_gan(value: str | Path) -> GanFiles:
    """The files of a ``--gan`` value: ``'embedded'`` (unless a file of that name exists) is
    the shipped model with its exact view and light priors; any other value is a checkpoint
    path, with no priors of its own."""
    path = Path(value)
    if str(value) != NAME or path.exists():
        return GanFiles(path)
    return GanFiles(asset_path(GAN_FILE), asset_path(VIEW_PRIOR_FILE),
                    asset_path(LIGHT_PRIOR_FILE))
