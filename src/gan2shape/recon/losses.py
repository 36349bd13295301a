"""Losses of the three steps (METHOD.md section 2).

photometric_loss         masked mean |recon - target| (L1)
smoothness_loss          mean |second-order differences| (dxx, dxy, dyx, dyy)
latent_regularisation    mean squared latent offset
discriminator_feature_loss  L1 between the GAN discriminator's first blocks' outputs
perceptual losses        pluggable (``make_perceptual_loss``): VGG16 relu3_3 L1 from a
                         user's weight file (the release's choice, LPIPS-VGG16 there),
                         discriminator features (always available), or none.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..fileio import load_torch

PERCEPTUAL_CHOICES = ("vgg16", "discriminator", "none")

# Perceptual loss: (recon (B, 3, H, W), target (B, 3, H, W), mask (B, 1, H, W) | None) -> ().
PerceptualLoss = Callable[..., torch.Tensor]


def photometric_loss(recon: torch.Tensor, target: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean of |recon - target|; images (B, C, H, W), mask broadcastable (B, 1, H, W).

    With a mask: sum(|d| * m) / sum(m) over all channels (the mask is expanded to them).
    """
    loss = (recon - target).abs()
    if mask is None:
        return loss.mean()
    mask = mask.expand_as(loss)
    return (loss * mask).sum() / mask.sum()


def smoothness_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute second-order differences of maps (B, H, W) or (B, C, H, W).

    The release's sum of four means: d/dx(d/dx), d/dy(d/dx), d/dx(d/dy), d/dy(d/dy), with
    forward differences.
    """
    if x.dim() == 4:
        x = x.reshape(-1, *x.shape[-2:])
    dx = x[:, :, 1:] - x[:, :, :-1]
    dy = x[:, 1:] - x[:, :-1]
    dxx = dx[:, :, 1:] - dx[:, :, :-1]
    dxy = dx[:, 1:] - dx[:, :-1]
    dyx = dy[:, :, 1:] - dy[:, :, :-1]
    dyy = dy[:, 1:] - dy[:, :-1]
    return dxx.abs().mean() + dxy.abs().mean() + dyx.abs().mean() + dyy.abs().mean()


def latent_regularisation(offset: torch.Tensor) -> torch.Tensor:
    """Mean squared latent offset; offset (B, D)."""
    return (offset ** 2).mean()


def _masked_feature_l1(fake: torch.Tensor, real: torch.Tensor,
                       mask: torch.Tensor | None) -> torch.Tensor:
    """Mean |fake - real| over features (B, C, h, w), weighted by the mask average-pooled
    from (B, 1, H, W) down to (h, w) with kernel (H // h, W // w) as the release does."""
    loss = (fake - real).abs()
    if mask is None:
        return loss.mean()
    kh, kw = mask.shape[-2] // loss.shape[-2], mask.shape[-1] // loss.shape[-1]
    weight = F.avg_pool2d(mask, kernel_size=(kh, kw), stride=(kh, kw)).expand_as(loss)
    return (loss * weight).sum() / weight.sum()


def discriminator_feature_loss(discriminator: nn.Module, fake: torch.Tensor,
                               real: torch.Tensor, mask: torch.Tensor | None = None,
                               n_blocks: int = 4) -> torch.Tensor:
    """Sum over the first ``n_blocks`` discriminator blocks of the masked feature L1.

    fake, real: (B, 3, H, W) in [-1, 1]; mask (B, 1, H, W). The real image's features are
    computed without gradients. ``discriminator.features(img, n)`` gives the block outputs.
    """
    with torch.no_grad():
        real_features = discriminator.features(real.detach(), n_blocks)
    fake_features = discriminator.features(fake, n_blocks)
    return sum(_masked_feature_l1(f, r, mask) for f, r in zip(fake_features, real_features,
                                                              strict=True))


# VGG16 ``features`` up to relu3_3: conv indices of torchvision's layout and their widths.
_VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
                12: (256, 256), 14: (256, 256)}
_VGG16_POOLS = (4, 9)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Relu33(nn.Module):
    """VGG16 features up to relu3_3 (torchvision's ``features.0`` .. ``features.15``).

    ``forward(image (B, 3, H, W) in [-1, 1]) -> (B, 256, H/4, W/4)``; the input is mapped
    to [0, 1] and normalised with the ImageNet statistics as the release does.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        for idx in range(16):
            if idx in _VGG16_CONVS:
                cin, cout = _VGG16_CONVS[idx]
                layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            elif idx in _VGG16_POOLS:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(((image / 2 + 0.5) - self.mean) / self.std)


def load_vgg16_relu33(path: str | os.PathLike) -> VGG16Relu33:
    """VGG16 relu3_3 extractor from a torchvision-format ``vgg16`` state dict file.

    Accepts the full state dict (``features.N.weight`` / ``.bias``, classifier keys are
    ignored) or one whose keys lack the ``features.`` prefix. Never downloads. The
    parameters are frozen.
    """
    state = load_torch(path, "VGG16 weights")
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"VGG16 weights {path} is not a state dict")
    state = {k[len("features."):] if k.startswith("features.") else k: v
             for k, v in state.items()}
    net = VGG16Relu33()
    wanted = {f"{i}.{p}" for i in _VGG16_CONVS for p in ("weight", "bias")}
    missing = sorted(wanted - state.keys())
    if missing:
        names = ", ".join("features." + k for k in missing[:3])
        raise UserError(f"VGG16 weights {path} lack {names} (expected torchvision's vgg16 "
                        "state dict)")
    try:
        net.features.load_state_dict({k: state[k] for k in wanted}, strict=True)
    except RuntimeError as exc:
        raise UserError(f"VGG16 weights {path} have wrong shapes for vgg16") from exc
    net.requires_grad_(False)
    return net.eval()


def vgg16_perceptual_loss(vgg: VGG16Relu33) -> PerceptualLoss:
    """L1 between VGG16 relu3_3 features, masked by the average-pooled mask when given."""
    def loss(recon: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            target_features = vgg(target)
        return _masked_feature_l1(vgg(recon), target_features, mask)
    return loss


def discriminator_perceptual_loss(discriminator: nn.Module, n_blocks: int = 4) -> PerceptualLoss:
    """The GAN discriminator's first ``n_blocks`` block outputs as perceptual features."""
    def loss(recon: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        return discriminator_feature_loss(discriminator, recon, target, mask, n_blocks)
    return loss


def no_perceptual_loss(recon: torch.Tensor, target: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Zero: the perceptual term switched off."""
    return recon.new_zeros(())


def make_perceptual_loss(kind: str, vgg16_path: str | os.PathLike | None = None,
                         discriminator: nn.Module | None = None,
                         device: torch.device | str = "cpu") -> PerceptualLoss:
    """The perceptual loss chosen by ``kind`` (one of PERCEPTUAL_CHOICES)."""
    if kind == "vgg16":
        if vgg16_path is None:
            raise UserError("perceptual loss 'vgg16' needs a VGG16 weight file (vgg16_path); "
                            "use 'discriminator' or 'none' without one")
        return vgg16_perceptual_loss(load_vgg16_relu33(vgg16_path).to(device))
    if kind == "discriminator":
        if discriminator is None:
            raise UserError("perceptual loss 'discriminator' needs the GAN's discriminator")
        return discriminator_perceptual_loss(discriminator)
    if kind == "none":
        return no_perceptual_loss
    raise UserError(f"unknown perceptual loss {kind!r} (choose from "
                    f"{', '.join(PERCEPTUAL_CHOICES)})")
