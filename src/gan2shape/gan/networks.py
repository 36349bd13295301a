"""StyleGAN2 generator and discriminator whose state dicts are rosinality's, key for key.

Generator keys: ``style.{1..n_mlp}.weight/bias`` (index 0 is the pixel norm),
``input.input``, ``conv1.*``, ``to_rgb1.*``, ``convs.{i}.*``, ``to_rgbs.{i}.*``,
``noises.noise_{i}``. Discriminator keys: ``convs.0`` (1x1 stem), ``convs.{i}`` residual
blocks (``conv1``, ``conv2``, ``skip``), ``final_conv``, ``final_linear.{0,1}``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import nhwc
from .ops import (
    BLUR_TAPS,
    LRELU_GAIN,
    LRELU_SLOPE,
    Blur,
    ConstantInput,
    EqualConv2d,
    EqualLinear,
    FusedLeakyReLU,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    Upsample,
    fir_filter,
    memory_format_of,
    scaled_leaky_relu,
)

MAPPING_LR_MUL = 0.01
STDDEV_GROUP = 4
STDDEV_FEATURES = 1


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Rosinality's width table: resolution -> channels."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm,
            512: 32 * cm, 1024: 16 * cm}


def _channels(size: int, channel_multiplier: int, channels: dict[int, int] | None):
    if size < 4 or size & (size - 1):
        raise ValueError(f"StyleGAN2 size must be a power of two >= 4, got {size}")
    table = default_channels(channel_multiplier)
    table.update({int(k): int(v) for k, v in (channels or {}).items()})
    missing = [r for r in (2 ** i for i in range(2, int(math.log2(size)) + 1)) if r not in table]
    if missing:
        raise ValueError(f"no channel width given for resolutions {missing}")
    return table


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU (keys conv, noise, activate)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x, style, noise=None):
        """x (B, in, H, W), style (B, style_dim), noise (1 or B, 1, H', W') or None (random)."""
        out, demod = self.conv.modulated(x, style)
        if noise is None:
            b, _, h, w = out.shape
            noise = torch.randn(b, 1, h, w, device=out.device, dtype=out.dtype)
        # lrelu(out * demod + noise_weight * noise + bias) * gain in two passes over the
        # activations: leaky ReLU is positively homogeneous, so the gain moves inside.
        shift = (self.noise.weight * LRELU_GAIN) * noise.to(self.noise.weight.dtype) \
            + (self.activate.bias * LRELU_GAIN)[None, :, None, None]
        shift = shift.contiguous(memory_format=memory_format_of(out))
        return scaled_leaky_relu(out, (demod * LRELU_GAIN)[:, :, None, None], shift)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) + bias, added to the upsampled skip image."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias.to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip).to(out.dtype)
        return out


class Generator(nn.Module):
    """StyleGAN2 generator (rosinality layout).

    size: output resolution; n_latent = 2 log2(size) - 2 style inputs for W+.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8,
                 channel_multiplier: int = 2, channels: dict[int, int] | None = None):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        table = _channels(size, channel_multiplier, channels)
        self.log_size = int(math.log2(size))
        self.channels = {2 ** i: table[2 ** i] for i in range(2, self.log_size + 1)}
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=MAPPING_LR_MUL, activate=True)
            for _ in range(n_mlp)])
        self.input = ConstantInput(table[4])
        self.conv1 = StyledConv(table[4], table[4], style_dim)
        self.to_rgb1 = ToRGB(table[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept for rosinality's module layout
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_ch = table[4]
        for i in range(3, self.log_size + 1):
            out_ch = table[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch

    def mapping(self, z: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Modules [start, stop) of the mapping stack (0 = pixel norm, 1..n_mlp = linear).

        z: (B, style_dim) -> (B, style_dim).
        """
        return self.style[start:stop](z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean of mapping(z) over n seeded normal z: (1, style_dim)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.style_dim, generator=gen)
        device = self.input.input.device
        return self.mapping(z.to(device)).mean(dim=0, keepdim=True)

    def stored_noise(self) -> list[torch.Tensor]:
        """The noise buffers (1, 1, R, R), one per styled conv layer."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def synthesis(self, w: torch.Tensor, noise: str | list = "stored",
                  stop_resolution: int | None = None) -> torch.Tensor:
        """Image from W (B, style_dim) or W+ (B, n_latent, style_dim): (B, 3, R, R).

        noise: "stored" (the checkpoint's buffers: deterministic), "random", or a list of
        num_layers tensors (1 or B, 1, r, r). stop_resolution: return the skip image at this
        resolution (4 .. size) without running the higher layers. Values are unclamped,
        roughly in [-1, 1].
        """
        if w.ndim == 2:
            w = w[:, None, :].expand(-1, self.n_latent, -1)
        if w.ndim != 3 or w.shape[1] != self.n_latent or w.shape[2] != self.style_dim:
            raise ValueError(f"w must be (B, {self.style_dim}) or (B, {self.n_latent}, "
                             f"{self.style_dim}), got {tuple(w.shape)}")
        if isinstance(noise, str):
            if noise not in ("stored", "random"):
                raise ValueError(f"noise must be 'stored', 'random' or a list, got {noise!r}")
            noise = self.stored_noise() if noise == "stored" else [None] * self.num_layers
        stop = self.size if stop_resolution is None else int(stop_resolution)
        if stop not in self.channels:
            raise ValueError(f"stop_resolution must be a power of two in [4, {self.size}], "
                             f"got {stop_resolution}")

        out = self.conv1(self.input(w.shape[0]), w[:, 0], noise[0])
        skip = self.to_rgb1(out, w[:, 1])
        res = 4
        for level, to_rgb in enumerate(self.to_rgbs):
            if res >= stop:
                break
            i = 2 * level
            out = self.convs[i](out, w[:, i + 1], noise[i + 1])
            out = self.convs[i + 1](out, w[:, i + 2], noise[i + 2])
            skip = to_rgb(out, w[:, i + 3], skip)
            res *= 2
        return skip

    def forward(self, z: torch.Tensor, truncation: float = 1.0,
                truncation_latent: torch.Tensor | None = None,
                noise: str | list = "stored") -> torch.Tensor:
        """synthesis(mapping(z)) with truncation towards truncation_latent (default: mean)."""
        w = self.mapping(z)
        if truncation != 1.0:
            if truncation_latent is None:
                truncation_latent = self.mean_latent()
            w = truncation_latent + truncation * (w - truncation_latent)
        return self.synthesis(w, noise=noise)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [bias + leaky ReLU], as an indexed Sequential (keys 0, 1, 2).

    gain scales the output (ResBlock's 1 / sqrt(2)); it is folded into the weights.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True, gain: float = 1.0):
        layers: list[nn.Module] = []
        stride, padding = 1, kernel_size // 2
        if downsample:
            p = (len(BLUR_TAPS) - 2) + (kernel_size - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)
        self.downsample = downsample
        self.activate = activate
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv: EqualConv2d = self[1 if self.downsample else 0]
        stride = conv.stride
        if self.downsample:
            blur: Blur = self[0]
            if conv.weight.shape[-1] == 1:  # 1x1 conv commutes with the blur: keep 1/4
                x, stride = fir_filter(x, blur.kernel, blur.pad, down=2), 1
            else:
                x = blur(x)
        # bias, activation gain and output gain folded into one convolution; leaky ReLU is
        # positively homogeneous.
        gain = self.gain * (LRELU_GAIN if self.activate else 1.0)
        bias = self[-1].bias if self.activate else conv.bias
        weight = (conv.weight * (conv.scale * gain)).contiguous(memory_format=memory_format_of(x))
        out = nhwc.conv2d(x, weight.to(x.dtype),
                          None if bias is None else (bias * gain).to(x.dtype), stride, conv.padding)
        return F.leaky_relu(out, LRELU_SLOPE, inplace=True) if self.activate else out


class ResBlock(nn.Module):
    """Residual 2x downsampling block: (conv1 -> conv2(down) + skip(down)) / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, gain=1 / math.sqrt(2))
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, bias=False, activate=False,
                              gain=1 / math.sqrt(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.skip(x)


def minibatch_stddev(x: torch.Tensor, group: int = STDDEV_GROUP,
                     features: int = STDDEV_FEATURES) -> torch.Tensor:
    """Append the std over strided batch groups as extra channels: (B, C, H, W) -> (B, C+f, H, W).

    Sample b belongs to group b mod (B / G) with G = min(B, group); when B does not divide
    by G the whole batch forms one group.
    """
    b, c, h, w = x.shape
    g = min(b, group)
    if b % g:
        g = b
    y = x.to(torch.promote_types(x.dtype, torch.float32))
    y = y.reshape(g, -1, features, c // features, h, w)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # (B/G, f, C/f, H, W)
    y = y.mean(dim=(2, 3, 4)).view(-1, features, 1, 1)  # (B/G, f, 1, 1)
    y = y.repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator (rosinality layout): D(img (B, 3, S, S)) -> (B, 1)."""

    def __init__(self, size: int, channel_multiplier: int = 2,
                 channels: dict[int, int] | None = None):
        super().__init__()
        table = _channels(size, channel_multiplier, channels)
        self.size = size
        log_size = int(math.log2(size))
        self.channels = {2 ** i: table[2 ** i] for i in range(2, log_size + 1)}
        blocks: list[nn.Module] = [ConvLayer(3, table[size], 1)]
        in_ch = table[size]
        for i in range(log_size, 2, -1):
            blocks.append(ResBlock(in_ch, table[2 ** (i - 1)]))
            in_ch = table[2 ** (i - 1)]
        self.convs = nn.Sequential(*blocks)
        self.final_conv = ConvLayer(in_ch + STDDEV_FEATURES, table[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(table[4] * 4 * 4, table[4], activate=True),
            EqualLinear(table[4], 1),
        )

    @property
    def n_feature_blocks(self) -> int:
        """How many features :meth:`features` can give: the residual blocks."""
        return len(self.convs) - 1

    def features(self, img: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Outputs of the first n residual blocks, full resolution first: the release's
        ``ftr_num`` features. The 1x1 stem conv (``convs[0]``) runs but is not a feature, so
        feature k is the output of ``convs[k + 1]``: at 128 px, channel multiplier 1, the
        first four are (B, 256, 64, 64), (B, 512, 32, 32), (B, 512, 16, 16), (B, 512, 8, 8).
        """
        if not 1 <= n <= self.n_feature_blocks:
            raise ValueError(f"n must be in [1, {self.n_feature_blocks}], got {n}")
        out = self.convs[0](img)
        feats = []
        for block in self.convs[1:n + 1]:
            out = block(out)
            feats.append(out)
        return feats

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        out = minibatch_stddev(self.convs(img))
        out = self.final_conv(out)
        return self.final_linear(out.flatten(1))
