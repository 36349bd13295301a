"""Image loading and preprocessing shared by GAN training and inversion.

Every command reads images through this one path (:data:`IMAGE_POLICY`): EXIF orientation
applied, transparency composited over a background, greyscale or palette expanded to RGB, a
square crop (the centre one unless a box is given), a resize to the working resolution, and a
float tensor in [-1, 1]. A file that cannot be read, an image with no pixels, or one too small
for the working resolution raises a one-line :class:`UserError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

# What every command does with an image file; quoted in the commands' --help.
IMAGE_POLICY = ("Images: any format Pillow reads; EXIF orientation applied; greyscale, palette "
                "and 16-bit images become 8-bit RGB; transparent pixels show white; a "
                "non-square image is cropped to its centre square; an image whose square is "
                "smaller than half the working resolution is refused (no upscaling beyond 2x).")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` fully decoded and upright (EXIF orientation applied)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"image {path} is an empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"cannot read image {path} ({type(exc).__name__})") from exc
    if upright.width == 0 or upright.height == 0:
        raise UserError(f"image {path} has no pixels ({upright.width}x{upright.height})")
    return upright


def to_rgb(image: Image.Image, background: Sequence[int] = (255, 255, 255)) -> Image.Image:
    """RGB version of ``image``: transparency composited over ``background`` (8-bit RGB)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: keep the top 8 bits of the 16-bit range.
        array = np.asarray(image, dtype=np.int64)
        image = Image.fromarray(np.clip(array >> 8, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def square_crop(image: Image.Image, crop: Sequence[int] | None = None) -> Image.Image:
    """Crop ``image`` to the box ``crop`` = (left, top, width, height) or its centre square."""
    if crop is not None:
        left, top, width, height = (int(v) for v in crop)
        if width <= 0 or height <= 0:
            raise UserError(f"crop box {tuple(crop)} has no pixels")
        if left < 0 or top < 0 or left + width > image.width or top + height > image.height:
            raise UserError(
                f"crop box {tuple(crop)} (left, top, width, height) lies outside the "
                f"{image.width}x{image.height} image"
            )
        return image.crop((left, top, left + width, top + height))
    side = min(image.width, image.height)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def check_resolution(path: str | os.PathLike, side: int, working: int) -> None:
    """Refuse a square of ``side`` px that would be upscaled more than 2x to ``working`` px."""
    if 2 * side < working:
        raise UserError(f"image {path} is too small: its square is {side} px, the working "
                        f"resolution {working} px (at least {(working + 1) // 2} px needed)")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] (clamped) -> (H, W, 3) uint8, for saving."""
    scaled = (image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(1, 2, 0).numpy()


def load_image(
    path: str | os.PathLike,
    size: int | None = None,
    crop: Sequence[int] | None = None,
    background: Sequence[int] = (255, 255, 255),
) -> torch.Tensor:
    """Load an image file as a (3, S, S) float32 tensor in [-1, 1].

    The square is the centre crop, or ``crop`` = (left, top, width, height) in the upright
    image; it is resized to ``size`` (Lanczos, which low-passes when shrinking) unless
    ``size`` is None. Transparent pixels show ``background`` (8-bit RGB).
    """
    image = square_crop(to_rgb(open_image(path), background), crop)
    if size is not None:
        check_resolution(path, image.width, size)
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    return pil_to_tensor(image)


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursively; ``root/images`` if present), sorted."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"image folder not found: {root}")
    if root.is_file():
        raise UserError(f"expected a folder of images, got the file {root}")
    if (root / "images").is_dir():
        root = root / "images"
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return files


def load_image_folder(root: str | os.PathLike, size: int) -> torch.Tensor:
    """Every image under ``root``, preprocessed to ``size``: (N, 3, size, size) uint8.

    uint8 keeps a 10k-image 64 px set at 120 MB, so a training run holds it in memory.
    """
    files = list_images(root)
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, path in enumerate(files):
        out[i] = ((load_image(path, size) + 1) * 127.5).round().to(torch.uint8)
    return out


def random_flip_translate(
    images: torch.Tensor, max_shift: float = 0.125, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Differentiable augmentation for the discriminator's inputs (DiffAugment style).

    Each image is mirrored with probability 1/2 and shifted by an integer number of pixels up
    to ``max_shift`` of its size in x and y, with zero (mid-grey) fill. Applying it to real
    and generated images alike keeps the generator from learning the augmentation.
    images: (B, C, H, W) -> (B, C, H, W).
    """
    b, _, h, w = images.shape
    device = images.device
    flip = torch.rand(b, 1, 1, 1, generator=generator) < 0.5
    images = torch.where(flip.to(device), images.flip(3), images)
    limit_y, limit_x = int(round(h * max_shift)), int(round(w * max_shift))
    shift_y = torch.randint(-limit_y, limit_y + 1, (b, 1, 1), generator=generator).to(device)
    shift_x = torch.randint(-limit_x, limit_x + 1, (b, 1, 1), generator=generator).to(device)
    # Gather from the shifted grid; out-of-range taps read a zero border.
    grid_y = torch.arange(h, device=device).view(1, h, 1) - shift_y
    grid_x = torch.arange(w, device=device).view(1, 1, w) - shift_x
    inside = (grid_y >= 0) & (grid_y < h) & (grid_x >= 0) & (grid_x < w)
    index = (grid_y.clamp(0, h - 1) * w + grid_x.clamp(0, w - 1)).view(b, 1, h * w)
    flat = images.reshape(b, images.shape[1], h * w)
    shifted = flat.gather(2, index.expand(-1, images.shape[1], -1)).view_as(images)
    return shifted * inside.unsqueeze(1).to(images.dtype)
