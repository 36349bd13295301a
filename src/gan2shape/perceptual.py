"""Perceptual terms, the one module both the inversion (``gan.invert``) and the
reconstruction (``recon``) take them from.

A perceptual term is a feature extractor and a distance between feature lists:

- features: images (B, 3, H, W) in [-1, 1] -> a list of maps (B, C_i, h_i, w_i).
  ``discriminator_features``  the GAN discriminator's first residual blocks (no extra weights)
  ``vgg16_features``          VGG16 relu3_3 of ImageNet-normalised images (Unsup3d's choice)
  ``lpips_features``          VGG16's five relu taps of LPIPS-scaled images, unit length over
                              channels (the release's LPIPS v0.1 before its linear heads)
  ``unit_vgg16_features``     VGG16's five relu taps of ImageNet-normalised images, unit
                              length over channels (LPIPS without its heads)
- distances: (features, target features, mask (B, 1, H, W) | None) -> a loss.
  Batch losses (one scalar; the reconstruction's, as the release computes them):
  ``feature_l1`` and ``lpips_distance``. Per-image losses ((B,): a batch of inversions is
  exactly its images one by one): ``scaled_feature_l1`` and ``feature_mse``.

:class:`Perceptual` joins the two and computes the target's features without gradients
(:class:`TargetFeatures`). The kinds each command offers: :data:`RECONSTRUCTION_KINDS`
(:func:`reconstruction_perceptual`) and :data:`INVERSION_KINDS` (:func:`inversion_perceptual`).
A mask is average-pooled to each feature map's size (:func:`pool_mask`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import PERCEPTUAL_CHOICES as RECONSTRUCTION_KINDS
from .errors import UserError
from .fileio import load_torch
from .gan.ops import frozen_autocast

Features = Callable[[torch.Tensor], list[torch.Tensor]]
Distance = Callable[..., torch.Tensor]

INVERSION_KINDS = ("discriminator", "vgg", "none")
D_FEATURE_BLOCKS = 4  # as the release's discriminator-feature loss

# torchvision's vgg16 ``features``: conv indices and widths, max-pool indices, and the
# ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256),
               12: (256, 256), 14: (256, 256), 17: (256, 512), 19: (512, 512),
               21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
_VGG16_POOLS = (4, 9, 16, 23)
_VGG16_TAPS = (3, 8, 15, 22, 29)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS v0.1 input scaling of images in [-1, 1]
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


# --- masks and means ------------------------------------------------------------------

def pool_mask(mask: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """mask (B, 1, H, W) average-pooled to (B, 1, *size): the release's (H // h)-pixel
    blocks when h divides H (and the mask itself at its own size)."""
    size = tuple(size)
    return mask if mask.shape[-2:] == size else F.adaptive_avg_pool2d(mask, size)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of x (B, C, h, w) over everything, weighted by the mask pooled to (h, w) and
    expanded to every channel: a scalar."""
    if mask is None:
        return x.mean()
    weight = pool_mask(mask, x.shape[-2:]).expand_as(x)
    return (x * weight).sum() / weight.sum()


def per_image_masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean of x (B, C, h, w) weighted by the mask pooled to (h, w): (B,)."""
    if mask is None:
        return x.flatten(1).mean(1)
    mask = pool_mask(mask, x.shape[-2:])
    weighted = (x * mask).flatten(1).sum(1)
    return weighted / (mask.flatten(1).sum(1) * x.shape[1]).clamp_min(1e-8)


# --- feature extractors ---------------------------------------------------------------

def discriminator_features(discriminator: nn.Module, n_blocks: int = D_FEATURE_BLOCKS,
                           bf16: bool = False) -> Features:
    """The outputs of the discriminator's first ``n_blocks`` residual blocks (all it has when
    it has fewer: a small GAN).

    bf16: the frozen discriminator runs under bfloat16 autocast on a channels_last copy of
    the images and its outputs come back as float32 (forward and the backward to the
    images 2.6x faster on a CPU with AMX at 128 px, batch 16; 1.4x without channels_last);
    its rounding is bfloat16's, ~4e-3 relative.
    """
    n_blocks = min(n_blocks, discriminator.n_feature_blocks)
    if not bf16:
        return lambda images: discriminator.features(images, n_blocks)

    def features(images: torch.Tensor) -> list[torch.Tensor]:
        with frozen_autocast(images.device, True):
            out = discriminator.features(
                images.contiguous(memory_format=torch.channels_last), n_blocks)
        return [f.float() for f in out]
    return features


class VGG16Features(nn.Module):
    """torchvision's VGG16 ``features`` up to the ``n_taps``-th of relu1_2, relu2_2, relu3_3,
    relu4_3, relu5_3 (same module indices, so its state dict keys are ``features.N.*``).

    ``forward(x (B, 3, H, W), already normalised, at_tap=None) -> [tap outputs]``, each
    passed through ``at_tap`` when given, as soon as it is reached (so before the next
    layer: this fixes the order autograd sums a tap's gradients in).
    """

    def __init__(self, n_taps: int = 3):
        super().__init__()
        self.taps = _VGG16_TAPS[:n_taps]
        layers: list[nn.Module] = []
        for idx in range(self.taps[-1] + 1):
            if idx in VGG16_CONVS:
                cin, cout = VGG16_CONVS[idx]
                layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            elif idx in _VGG16_POOLS:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, at_tap: Callable[[torch.Tensor], torch.Tensor] | None
                = None) -> list[torch.Tensor]:
        out = []
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in self.taps:
                out.append(x if at_tap is None else at_tap(x))
        return out


def _state_dict_from(source, what: str) -> dict:
    """A state dict given as one, or in a file (optionally wrapped as ``{'state_dict': ...}``
    or saved as a module)."""
    state = source if isinstance(source, dict) else load_torch(source, what)
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"{what} {source} is not a state dict")
    return state.get("state_dict", state)


def load_vgg16(weights: str | os.PathLike | dict, n_taps: int = 3) -> VGG16Features:
    """VGG16 features from a torchvision-format ``vgg16`` state dict (a file or the dict),
    frozen.

    Accepts the full state dict (``features.N.weight`` / ``.bias``; classifier keys are
    ignored) or one whose keys lack the ``features.`` prefix. Never downloads.
    """
    where = "" if isinstance(weights, dict) else f" {weights}"
    state = _state_dict_from(weights, "VGG16 weights")
    state = {k[len("features."):] if k.startswith("features.") else k: v
             for k, v in state.items()}
    net = VGG16Features(n_taps)
    wanted = {f"{i}.{p}" for i in VGG16_CONVS if i < len(net.features)
              for p in ("weight", "bias")}
    missing = sorted(wanted - state.keys(), key=lambda k: int(k.split(".")[0]))
    if missing:
        names = ", ".join("features." + k for k in missing[:3])
        raise UserError(f"VGG16 weights{where} lack {names} (expected torchvision's vgg16 "
                        "state dict)")
    try:
        net.features.load_state_dict({k: state[k] for k in wanted}, strict=True)
    except RuntimeError as exc:
        raise UserError(f"VGG16 weights{where} have wrong shapes for vgg16") from exc
    return net.requires_grad_(False).eval()


def load_lpips_weights(path: str | os.PathLike) -> list[torch.Tensor]:
    """The five LPIPS v0.1 linear layers (1, C, 1, 1) for VGG16 from the LPIPS weight file
    (keys ``lin0.model.1.weight`` .. ``lin4.model.1.weight``, optionally prefixed)."""
    state = _state_dict_from(path, "LPIPS weights")
    weights = []
    for i, (_, width) in enumerate(VGG16_CONVS[t - 1] for t in _VGG16_TAPS):
        keys = [k for k in state if k.endswith(f"lin{i}.model.1.weight")]
        if len(keys) != 1:
            raise UserError(f"LPIPS weights {path} lack lin{i}.model.1.weight")
        w = torch.as_tensor(state[keys[0]]).float()
        if w.shape != (1, width, 1, 1):
            raise UserError(f"LPIPS weights {path}: lin{i} has shape {tuple(w.shape)}, "
                            f"expected (1, {width}, 1, 1) for VGG16")
        weights.append(w)
    return weights


def _channel_stats(values, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values).view(1, 3, 1, 1).to(x)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1] -> ImageNet channel statistics."""
    return (images / 2 + 0.5 - _channel_stats(_IMAGENET_MEAN, images)) / _channel_stats(
        _IMAGENET_STD, images)


def unit_length(f: torch.Tensor) -> torch.Tensor:
    """A map (B, C, h, w) divided by its length over channels (+ 1e-10), as LPIPS."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


def vgg16_features(vgg: VGG16Features) -> Features:
    """[relu3_3] of ImageNet-normalised images; ``vgg`` needs 3 taps or more."""
    return lambda images: vgg(imagenet_normalise(images))[2:3]


def lpips_features(vgg: VGG16Features) -> Features:
    """The five taps of LPIPS-scaled images, unit length over channels; ``vgg``: 5 taps."""
    def features(images: torch.Tensor) -> list[torch.Tensor]:
        scaled = (images - _channel_stats(_LPIPS_SHIFT, images)) / _channel_stats(
            _LPIPS_SCALE, images)
        return [unit_length(f) for f in vgg(scaled)]
    return features


def unit_vgg16_features(vgg: VGG16Features, min_size: int = 64) -> Features:
    """The five taps of ImageNet-normalised images, unit length over channels; images
    smaller than ``min_size`` are first upsampled (five poolings need some room)."""
    def features(images: torch.Tensor) -> list[torch.Tensor]:
        x = imagenet_normalise(images)
        if x.shape[-1] < min_size:
            x = F.interpolate(x, size=min_size, mode="bilinear", align_corners=False)
        return vgg(x, at_tap=unit_length)
    return features


# --- distances ------------------------------------------------------------------------

def feature_l1(features, target_features, mask=None) -> torch.Tensor:
    """Batch loss: sum over maps of the masked mean |f - t| (the release's feature L1)."""
    return sum(masked_mean((f - t).abs(), mask)
               for f, t in zip(features, target_features, strict=True))


def lpips_distance(lin: list[torch.Tensor]) -> Distance:
    """Batch loss: LPIPS's sum over maps of the masked spatial mean of the squared difference
    weighted over channels by the linear heads ``lin`` (five (1, C, 1, 1))."""
    def distance(features, target_features, mask=None) -> torch.Tensor:
        return sum(masked_mean(F.conv2d((f - t) ** 2, w.to(f)), mask)
                   for f, t, w in zip(features, target_features, lin, strict=True))
    return distance


def scaled_feature_l1(features, target_features, mask=None) -> torch.Tensor:
    """Per image (B,): sum over maps of the masked mean |f - t| divided by the target's mean
    |activation|, so that maps of different magnitudes weigh alike."""
    return sum(per_image_masked_mean((f - t).abs(), mask)
               / t.abs().flatten(1).mean(1).clamp_min(1e-6)
               for f, t in zip(features, target_features, strict=True))


def feature_mse(features, target_features, mask=None) -> torch.Tensor:
    """Per image (B,): sum over maps of the masked squared difference summed over channels
    (for unit-length features: LPIPS with unit heads)."""
    return sum(per_image_masked_mean((f - t).pow(2), mask) * f.shape[1]
               for f, t in zip(features, target_features, strict=True))


# --- terms ----------------------------------------------------------------------------

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

    def __init__(self, features: Features, reuse: bool = True):
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


class Perceptual:
    """A perceptual term: ``term(images, target, mask)`` is ``distance(features(images),
    target_features(target), mask)``, the target's features without gradients (reused for a
    repeated target with ``reuse_targets``: :class:`TargetFeatures`; same values)."""

    def __init__(self, features: Features, distance: Distance, reuse_targets: bool = False):
        self.features = features
        self.distance = distance
        self.target_features = TargetFeatures(features, reuse_targets)

    def to_features(self, images: torch.Tensor, target_features: list[torch.Tensor],
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """The distance of images to targets whose features are already computed."""
        return self.distance(self.features(images), target_features, mask)

    def __call__(self, images: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_features(images, self.target_features(target), mask)


def discriminator_feature_loss(discriminator: nn.Module, fake: torch.Tensor,
                               real: torch.Tensor, mask: torch.Tensor | None = None,
                               n_blocks: int = D_FEATURE_BLOCKS,
                               real_features: list[torch.Tensor] | None = None,
                               bf16: bool = False) -> torch.Tensor:
    """The release's discriminator-feature loss: :func:`feature_l1` between the first
    ``n_blocks`` blocks' outputs of fake and real (B, 3, H, W); the real image's features
    are computed without gradients, or given as ``real_features``. bf16: the discriminator
    under bfloat16 autocast (:func:`discriminator_features`; the L1 stays float32)."""
    features = discriminator_features(discriminator, n_blocks, bf16)
    if real_features is None:
        with torch.no_grad():
            real_features = features(real.detach())
    return feature_l1(features(fake), real_features, mask)


def reconstruction_perceptual(kind: str, vgg16_path: str | os.PathLike | None = None,
                              discriminator: nn.Module | None = None,
                              device: torch.device | str = "cpu",
                              lpips_path: str | os.PathLike | None = None,
                              reuse_targets: bool = True, gan_bf16: bool = False
                              ) -> Perceptual | None:
    """The reconstruction's perceptual term (a batch loss) of ``kind``, or None for 'none'.

    lpips: the release's LPIPS-VGG16 (needs ``vgg16_path`` and ``lpips_path``); vgg16:
    relu3_3 L1 (needs ``vgg16_path``); discriminator: the GAN discriminator's first 4
    blocks, L1. reuse_targets: the features of a target equal to the previous call's are
    reused instead of recomputed (:class:`TargetFeatures`; same values). gan_bf16: the
    discriminator under bfloat16 autocast (``gan_autocast``).
    """
    if kind in ("lpips", "vgg16"):
        if vgg16_path is None:
            raise UserError(f"perceptual loss {kind!r} needs a VGG16 weight file (vgg16_path); "
                            "use 'discriminator' or 'none' without one")
        if kind == "vgg16":
            vgg = load_vgg16(vgg16_path, 3).to(device)
            return Perceptual(vgg16_features(vgg), feature_l1, reuse_targets)
        if lpips_path is None:
            raise UserError("perceptual loss 'lpips' needs the LPIPS weight file (lpips_path)")
        lin = [w.to(device) for w in load_lpips_weights(lpips_path)]
        vgg = load_vgg16(vgg16_path, 5).to(device)
        return Perceptual(lpips_features(vgg), lpips_distance(lin), reuse_targets)
    if kind == "discriminator":
        if discriminator is None:
            raise UserError("perceptual loss 'discriminator' needs the GAN's discriminator")
        return Perceptual(discriminator_features(discriminator, bf16=gan_bf16), feature_l1,
                          reuse_targets)
    if kind == "none":
        return None
    raise UserError(f"unknown perceptual loss {kind!r} (choose from "
                    f"{', '.join(RECONSTRUCTION_KINDS)})")


def inversion_perceptual(kind: str, discriminator: nn.Module | None = None,
                         vgg_weights=None, device: torch.device | str = "cpu"
                         ) -> Perceptual | None:
    """The inversion's perceptual term (per image) of ``kind``, or None for 'none'.

    discriminator: the GAN discriminator's first 4 blocks, :func:`scaled_feature_l1`; vgg:
    :func:`unit_vgg16_features` of user-supplied VGG16 weights (``vgg_weights``: a
    torchvision-layout state dict or its file), :func:`feature_mse`.
    """
    if kind == "none":
        return None
    if kind == "discriminator":
        if discriminator is None:
            raise UserError("perceptual='discriminator' needs the GAN's discriminator")
        return Perceptual(discriminator_features(discriminator), scaled_feature_l1)
    if kind == "vgg":
        if vgg_weights is None:
            raise UserError("perceptual='vgg' needs VGG16 weights (torchvision layout)")
        return Perceptual(unit_vgg16_features(load_vgg16(vgg_weights, 5).to(device)),
                          feature_mse)
    raise UserError(f"perceptual must be one of {', '.join(INVERSION_KINDS)}, got {kind!r}")
