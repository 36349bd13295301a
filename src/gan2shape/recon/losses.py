"""Losses of the three steps (docs/method.md section 2).

photometric_loss         masked mean |recon - target| (L1)
smoothness_loss          mean |second-order differences| (dxx, dxy, dyx, dyy)
latent_regularisation    mean squared latent offset
discriminator_feature_loss  L1 between the GAN discriminator's first blocks' outputs
perceptual losses        pluggable (``make_perceptual_loss``): LPIPS-VGG16 (the release's
                         choice) or VGG16 relu3_3 L1 from the user's weight files,
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

PERCEPTUAL_CHOICES = ("lpips", "vgg16", "discriminator", "none")

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
                               n_blocks: int = 4,
                               real_features: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Sum over the first ``n_blocks`` discriminator blocks of the masked feature L1.

    fake, real: (B, 3, H, W) in [-1, 1]; mask (B, 1, H, W). The real image's features are
    computed without gradients, or given as ``real_features`` (``discriminator.features(real,
    n_blocks)``, e.g. from :class:`TargetFeatures`). ``discriminator.features(img, n)`` gives
    the block outputs; a discriminator with fewer blocks (a small GAN) contributes all it has.
    """
    n_blocks = min(n_blocks, discriminator.n_feature_blocks)
    if real_features is None:
        with torch.no_grad():
            real_features = discriminator.features(real.detach(), n_blocks)
    fake_features = discriminator.features(fake, n_blocks)
    return sum(_masked_feature_l1(f, r, mask) for f, r in zip(fake_features, real_features,
                                                              strict=True))


class TargetFeatures:
    """The features of target images, without gradients: ``features(target) -> [tensors]``.

    With ``reuse``, the last target and its features are kept, and a next target equal to
    it element for element gets the same feature tensors back instead of a second pass:
    Step 1's masked input (depth and view, so the valid mask, are fixed within Step 1) and
    the two explanations of a flipped batch (both compared under the joint valid mask to
    the same targets). The features are then bit for bit those a recomputation gives (the
    feature network is frozen; the target is copied, so later in-place edits of the
    caller's tensor cannot fool the comparison).
    """

    def __init__(self, features: Callable[[torch.Tensor], list[torch.Tensor]],
                 reuse: bool = True):
        self.features = features
        self.reuse = reuse
        self.last: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def __call__(self, target: torch.Tensor) -> list[torch.Tensor]:
        target = target.detach()
        last = self.last
        if last is not None and last[0].shape == target.shape \
                and last[0].dtype == target.dtype and torch.equal(last[0], target):
            return last[1]
        with torch.no_grad():
            out = self.features(target)
        if self.reuse:
            self.last = (target.clone(), out)
        return out


# torchvision's vgg16 ``features``: conv indices and widths, max-pool indices, and the
# ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
                12: (256, 256), 14: (256, 256), 17: (256, 512), 19: (512, 512),
                21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
_VGG16_POOLS = (4, 9, 16, 23)
_VGG16_TAPS = (3, 8, 15, 22, 29)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS v0.1 input scaling of images in [-1, 1]
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


class VGG16Features(nn.Module):
    """torchvision's VGG16 ``features`` up to the ``n_taps``-th of relu1_2, relu2_2, relu3_3,
    relu4_3, relu5_3 (same module indices, so its state dict keys are ``features.N.*``).

    ``forward(x (B, 3, H, W), already normalised) -> [tap outputs]``.
    """

    def __init__(self, n_taps: int = 3):
        super().__init__()
        self.taps = _VGG16_TAPS[:n_taps]
        layers: list[nn.Module] = []
        for idx in range(self.taps[-1] + 1):
            if idx in _VGG16_CONVS:
                cin, cout = _VGG16_CONVS[idx]
                layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            elif idx in _VGG16_POOLS:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in self.taps:
                out.append(x)
        return out


def _state_dict_from(path: str | os.PathLike, what: str) -> dict:
    state = load_torch(path, what)
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} is not a state dict")
    return state


def load_vgg16(path: str | os.PathLike, n_taps: int = 3) -> VGG16Features:
    """VGG16 features from a torchvision-format ``vgg16`` state dict file, frozen.

    Accepts the full state dict (``features.N.weight`` / ``.bias``; classifier keys are
    ignored) or one whose keys lack the ``features.`` prefix. Never downloads.
    """
    state = _state_dict_from(path, "VGG16 weights")
    state = {k[len("features."):] if k.startswith("features.") else k: v
             for k, v in state.items()}
    net = VGG16Features(n_taps)
    wanted = {f"{i}.{p}" for i in _VGG16_CONVS if i < len(net.features)
              for p in ("weight", "bias")}
    missing = sorted(wanted - state.keys(), key=lambda k: int(k.split(".")[0]))
    if missing:
        names = ", ".join("features." + k for k in missing[:3])
        raise UserError(f"VGG16 weights {path} lack {names} (expected torchvision's vgg16 "
                        "state dict)")
    try:
        net.features.load_state_dict({k: state[k] for k in wanted}, strict=True)
    except RuntimeError as exc:
        raise UserError(f"VGG16 weights {path} have wrong shapes for vgg16") from exc
    return net.requires_grad_(False).eval()


def load_lpips_weights(path: str | os.PathLike) -> list[torch.Tensor]:
    """The five LPIPS v0.1 linear layers (1, C, 1, 1) for VGG16 from the LPIPS weight file
    (keys ``lin0.model.1.weight`` .. ``lin4.model.1.weight``, optionally prefixed)."""
    state = _state_dict_from(path, "LPIPS weights")
    weights = []
    for i, (_, width) in enumerate(_VGG16_CONVS[t - 1] for t in _VGG16_TAPS):
        keys = [k for k in state if k.endswith(f"lin{i}.model.1.weight")]
        if len(keys) != 1:
            raise UserError(f"LPIPS weights {path} lack lin{i}.model.1.weight")
        w = torch.as_tensor(state[keys[0]]).float()
        if w.shape != (1, width, 1, 1):
            raise UserError(f"LPIPS weights {path}: lin{i} has shape {tuple(w.shape)}, "
                            f"expected (1, {width}, 1, 1) for VGG16")
        weights.append(w)
    return weights


def vgg16_perceptual_loss(vgg: VGG16Features, reuse_targets: bool = True) -> PerceptualLoss:
    """L1 between VGG16 relu3_3 features of ImageNet-normalised images (Unsup3d's loss),
    masked by the average-pooled mask when given. ``vgg`` needs 3 taps or more.
    reuse_targets: a repeated target's features are reused (:class:`TargetFeatures`)."""
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        return vgg((x / 2 + 0.5 - mean.to(x)) / std.to(x))[2:3]

    target_features = TargetFeatures(features, reuse_targets)

    def loss(recon: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        return _masked_feature_l1(features(recon)[0], target_features(target)[0], mask)
    return loss


def lpips_perceptual_loss(vgg: VGG16Features, lin: list[torch.Tensor],
                          reuse_targets: bool = True) -> PerceptualLoss:
    """LPIPS v0.1 (VGG16, linear heads): the release's perceptual loss, batch mean.

    Per layer: unit-normalise features over channels (norm + 1e-10), squared difference,
    weighted sum over channels by the linear head, spatial mean (mask-weighted when a mask
    is given); summed over the five layers. ``vgg`` needs all 5 taps. reuse_targets: a
    repeated target's features are reused (:class:`TargetFeatures`).
    """
    shift = torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1)

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        feats = vgg((x - shift.to(x)) / scale.to(x))
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]

    target_features = TargetFeatures(features, reuse_targets)

    def loss(recon: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        total = recon.new_zeros(())
        for f, t, w in zip(features(recon), target_features(target), lin, strict=True):
            d = F.conv2d((f - t) ** 2, w.to(f))  # (B, 1, h, w)
            if mask is None:
                total = total + d.mean()
            else:
                kh, kw = mask.shape[-2] // d.shape[-2], mask.shape[-1] // d.shape[-1]
                m = F.avg_pool2d(mask, kernel_size=(kh, kw), stride=(kh, kw))
                total = total + (d * m).sum() / m.sum()
        return total
    return loss


def discriminator_perceptual_loss(discriminator: nn.Module, n_blocks: int = 4,
                                  reuse_targets: bool = True) -> PerceptualLoss:
    """The GAN discriminator's first ``n_blocks`` block outputs as perceptual features.
    reuse_targets: a repeated target's features are reused (:class:`TargetFeatures`)."""
    n_blocks = min(n_blocks, discriminator.n_feature_blocks)
    target_features = TargetFeatures(lambda x: discriminator.features(x, n_blocks),
                                     reuse_targets)

    def loss(recon: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        return discriminator_feature_loss(discriminator, recon, target, mask, n_blocks,
                                          target_features(target))
    return loss


def no_perceptual_loss(recon: torch.Tensor, target: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Zero: the perceptual term switched off."""
    return recon.new_zeros(())


def make_perceptual_loss(kind: str, vgg16_path: str | os.PathLike | None = None,
                         discriminator: nn.Module | None = None,
                         device: torch.device | str = "cpu",
                         lpips_path: str | os.PathLike | None = None,
                         reuse_targets: bool = True) -> PerceptualLoss:
    """The perceptual loss chosen by ``kind`` (one of PERCEPTUAL_CHOICES).

    lpips: the release's LPIPS-VGG16 (needs ``vgg16_path`` and ``lpips_path``);
    vgg16: relu3_3 L1 (needs ``vgg16_path``); discriminator: the GAN discriminator's first
    4 blocks; none: zero. reuse_targets: the features of a target equal to the previous
    call's are reused instead of recomputed (:class:`TargetFeatures`; same values).
    """
    if kind in ("lpips", "vgg16"):
        if vgg16_path is None:
            raise UserError(f"perceptual loss {kind!r} needs a VGG16 weight file (vgg16_path); "
                            "use 'discriminator' or 'none' without one")
        if kind == "vgg16":
            return vgg16_perceptual_loss(load_vgg16(vgg16_path, 3).to(device), reuse_targets)
        if lpips_path is None:
            raise UserError("perceptual loss 'lpips' needs the LPIPS weight file (lpips_path)")
        lin = [w.to(device) for w in load_lpips_weights(lpips_path)]
        return lpips_perceptual_loss(load_vgg16(vgg16_path, 5).to(device), lin, reuse_targets)
    if kind == "discriminator":
        if discriminator is None:
            raise UserError("perceptual loss 'discriminator' needs the GAN's discriminator")
        return discriminator_perceptual_loss(discriminator, reuse_targets=reuse_targets)
    if kind == "none":
        return no_perceptual_loss
    raise UserError(f"unknown perceptual loss {kind!r} (choose from "
                    f"{', '.join(PERCEPTUAL_CHOICES)})")
