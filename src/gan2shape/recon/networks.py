"""The four factor networks and the latent encoder of GAN2Shape.

The layer sequences follow the authors' release (Unsup3d's encoder-decoder and encoder,
GAN2Shape's residual latent encoder) so that the state-dict keys (``network.<index>.weight``)
and shapes are exactly the release's and its GAN2Shape checkpoints load with
``strict=True``. Activation layers are kept as separate modules because they take up
indices in the ``nn.Sequential`` and therefore decide the key names.

Widths (docs/method.md section 4): ``nf = max(4096 // image_size, 16)``, GroupNorm base 8 at
128 px and above (16 below), bottleneck 256, latent-encoder width 32 with 512 outputs.
Image sizes are powers of two from 64 px; every extra octave above 64 adds one down block
and one up block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

NETWORK_NAMES = ("netD", "netA", "netV", "netL", "netEnc")


def _extra_octaves(image_size: int) -> int:
    """Number of down/up blocks beyond the 64 px design (0 at 64 px, 1 at 128 px, ...)."""
    octaves = math.log2(image_size) if image_size > 0 else -1
    if image_size < 64 or octaves != int(octaves):
        raise UserError(f"image_size must be a power of two >= 64, got {image_size}")
    return int(octaves) - 6


def _down(cin: int, cout: int) -> nn.Conv2d:
    """4x4 stride-2 convolution halving the resolution."""
    return nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """4x4 stride-2 transposed convolution doubling the resolution."""
    return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    """Resolution-preserving k x k convolution."""
    return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2, bias=False)


class EncoderDecoder(nn.Module):
    """Image -> per-pixel map: the release's ``EDDeconv`` (depth and albedo networks).

    ``forward(image (B, cin, S, S)) -> (B, cout, S, S)``; tanh at the end when ``tanh``.
    """

    def __init__(self, cin: int, cout: int, image_size: int, nf: int, gn_base: int,
                 zdim: int = 256, tanh: bool = True):
        super().__init__()
        extra = _extra_octaves(image_size)
        lrelu = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        gn = nn.GroupNorm
        # Encoder: 64 -> 32 -> 16 -> 8 -> 4 (plus one halving per extra octave) -> 1.
        layers: list[nn.Module] = [
            _down(cin, nf), gn(gn_base, nf), lrelu(),
            _down(nf, nf * 2), gn(gn_base * 2, nf * 2), lrelu(),
            _down(nf * 2, nf * 4), gn(gn_base * 4, nf * 4), lrelu(),
            _down(nf * 4, nf * 8),
        ]
        for _ in range(extra):
            nf, gn_base = nf * 2, gn_base * 2
            layers += [gn(gn_base * 4, nf * 4), lrelu(), _down(nf * 4, nf * 8)]
        layers += [
            lrelu(),
            nn.Conv2d(nf * 8, zdim, kernel_size=4, stride=1, padding=0, bias=False), relu(),
        ]
        # Decoder: 1 -> 4 -> 8 -> 16 -> 32 (plus extra octaves), nearest upsampling to S.
        layers += [
            nn.ConvTranspose2d(zdim, nf * 8, kernel_size=4, stride=1, padding=0, bias=False),
            relu(),
            _conv(nf * 8, nf * 8, 3), relu(),
        ]
        for mult in (4, 2, 1):
            layers += [
                _up(nf * mult * 2, nf * mult), gn(gn_base * mult, nf * mult), relu(),
                _conv(nf * mult, nf * mult, 3), gn(gn_base * mult, nf * mult), relu(),
            ]
        for _ in range(extra):
            nf, gn_base = nf // 2, gn_base // 2
            layers += [
                _up(nf * 2, nf), gn(gn_base, nf), relu(),
                _conv(nf, nf, 3), gn(gn_base, nf), relu(),
            ]
        layers += [
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(nf, nf, 3), gn(gn_base, nf), relu(),
            _conv(nf, nf, 5), gn(gn_base, nf), relu(),
            _conv(nf, cout, 5),
        ]
        if tanh:
            layers.append(nn.Tanh())
        self.network = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)

    def zero_output(self) -> None:
        """Zero the last convolution, so that the network starts at a constant output (the
        depth network in the ``residual`` prior mode; only without the final tanh)."""
        last = self.network[-1]
        if not isinstance(last, nn.Conv2d):
            raise ValueError("zero_output needs a network without the final tanh")
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)


class Encoder(nn.Module):
    """Image -> vector: the release's ``Encoder`` (view and light networks).

    ``forward(image (B, cin, S, S)) -> (B, cout)`` in (-1, 1) (tanh).
    """

    def __init__(self, cin: int, cout: int, image_size: int, nf: int):
        super().__init__()
        extra = _extra_octaves(image_size)
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        layers: list[nn.Module] = [
            _down(cin, nf), relu(),
            _down(nf, nf * 2), relu(),
            _down(nf * 2, nf * 4), relu(),
            _down(nf * 4, nf * 8), relu(),
        ]
        for _ in range(extra):
            nf *= 2
            layers += [_down(nf * 4, nf * 8), relu()]
        layers += [
            nn.Conv2d(nf * 8, nf * 8, kernel_size=4, stride=1, padding=0, bias=False), relu(),
            nn.Conv2d(nf * 8, cout, kernel_size=1, stride=1, padding=0, bias=False),
            nn.Tanh(),
        ]
        self.network = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image).reshape(image.shape[0], -1)


class ResBlockDown(nn.Module):
    """Residual block halving the resolution, as the release computes it.

    The release applies an in-place ReLU to the block's input before its residual branch,
    which also rectifies the tensor the shortcut reads: the shortcut sees relu(x), not x.
    Its netEnc weights were trained that way, so we compute exactly that (out of place).
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv_sc = nn.Conv2d(cin, cout, kernel_size=1)  # present in the keys even if unused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        h = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.cin != self.cout:
            shortcut = self.conv_sc(shortcut)
        return shortcut + h


class ResEncoder(nn.Module):
    """Image -> latent offset: the release's ``ResEncoder`` (netEnc), no final activation.

    ``forward(image (B, cin, S, S)) -> (B, cout)``.
    """

    def __init__(self, cin: int, cout: int, image_size: int, nf: int = 32):
        super().__init__()
        extra = _extra_octaves(image_size)
        layers: list[nn.Module] = [
            _down(cin, nf),
            ResBlockDown(nf, nf * 2), ResBlockDown(nf * 2, nf * 4), ResBlockDown(nf * 4, nf * 8),
        ]
        for _ in range(extra):
            nf *= 2
            layers.append(ResBlockDown(nf * 4, nf * 8))
        layers += [
            nn.ReLU(inplace=True),
            nn.Conv2d(nf * 8, nf * 16, kernel_size=4, stride=1, padding=0, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf * 16, cout, kernel_size=1, stride=1, padding=0, bias=False),
        ]
        self.network = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image).reshape(image.shape[0], -1)


def network_widths(image_size: int) -> tuple[int, int]:
    """(nf, GroupNorm base) of the factor networks at ``image_size`` (docs/method.md section 4)."""
    return max(4096 // image_size, 16), (8 if image_size >= 128 else 16)


def build_networks(image_size: int, latent_dim: int = 512, nf: int | None = None,
                   enc_nf: int = 32) -> dict[str, nn.Module]:
    """The release's five networks for ``image_size`` px inputs (CONTRACT).

    Returns ``{'netD', 'netA', 'netV', 'netL', 'netEnc'}``:
    netD depth (B, 3, S, S) -> raw (B, 1, S, S), no activation;
    netA albedo -> (B, 3, S, S) in (-1, 1); netV view -> (B, 6) in (-1, 1);
    netL light -> (B, 4) in (-1, 1); netEnc latent encoder -> (B, latent_dim).
    With the default widths the state dicts match the release's GAN2Shape checkpoints key
    for key; ``nf`` / ``enc_nf`` narrow the networks (fast tests and CPU demos; such
    networks cannot load the release's weights). ``nf`` must be a multiple of the GroupNorm
    base (16 below 128 px, 8 from 128 px).
    """
    release_nf, gn_base = network_widths(image_size)
    nf = release_nf if nf is None else nf
    if nf < gn_base or nf % gn_base:
        raise UserError(f"network width {nf} must be a multiple of {gn_base} at {image_size} px")
    return {
        "netD": EncoderDecoder(3, 1, image_size, nf, gn_base, zdim=256, tanh=False),
        "netA": EncoderDecoder(3, 3, image_size, nf, gn_base, zdim=256, tanh=True),
        "netV": Encoder(3, 6, image_size, nf),
        "netL": Encoder(3, 4, image_size, nf),
        "netEnc": ResEncoder(3, latent_dim, image_size, nf=enc_nf),
    }


def load_networks(networks: dict[str, nn.Module], state: dict, source: str = "weights") -> None:
    """Load a release-format dict ``{'netD': state_dict, ...}`` strictly into ``networks``.

    Names missing from ``state`` keep their current weights (the release's pretrain files
    for some categories hold only some networks); any key or shape mismatch is a one-line
    :class:`UserError` naming ``source``.
    """
    if not isinstance(state, dict) or not any(k in state for k in NETWORK_NAMES):
        raise UserError(f"{source} holds none of {', '.join(NETWORK_NAMES)}")
    for name, net in networks.items():
        if name not in state:
            continue
        try:
            net.load_state_dict(state[name], strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])
            raise UserError(f"{source}: {name} does not match this image size ({detail})"
                            ) from exc
