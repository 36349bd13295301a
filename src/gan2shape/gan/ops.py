"""StyleGAN2 building blocks in plain PyTorch, with rosinality's parameter names.

Equalised learning rate: every weight is stored as N(0, 1) / lr_mul and scaled at run time
by lr_mul / sqrt(fan_in), so that Adam's per-parameter step is the same for all layers.

FIR filtering follows ``upfirdn2d`` of the reference implementations: zero-insertion
upsampling by ``up``, padding ``(pad0, pad1)`` on both axes, convolution with a 2-D kernel,
keeping every ``down``-th sample. Here those steps are expressed as depthwise (transposed)
convolutions, which PyTorch runs fast on CPU and GPU without a custom op.

The modulated convolution is computed the way StyleGAN2-ADA's non-fused path does: scale the
input activations by the style, run one ordinary convolution with weights shared across the
batch, scale the outputs by the demodulation coefficients. It equals the per-sample
convolution with modulated, demodulated weights, but is a single dense batched convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8
BLUR_TAPS = (1, 3, 3, 1)


def make_blur_kernel(taps=BLUR_TAPS) -> torch.Tensor:
    """Separable FIR kernel (K, K) = outer(taps, taps), normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def _depthwise(kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Kernel (K, K) -> depthwise weight (C, 1, K, K), flipped so conv2d convolves."""
    k = kernel.flip(0, 1).to(dtype=x.dtype)
    return k.expand(x.shape[1], 1, *k.shape).contiguous(memory_format=_format(x))


def _format(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int],
               down: int = 1) -> torch.Tensor:
    """``upfirdn2d(x, kernel, up=1, down, pad)``: x (B, C, H, W) -> (B, C, H', W').

    H' = (H + pad0 + pad1 - K) // down + 1.
    """
    p0, p1 = pad
    if p0 != p1:
        x = F.pad(x, (p0, p1, p0, p1))
        p0 = 0
    return F.conv2d(x, _depthwise(kernel, x), stride=down, padding=p0, groups=x.shape[1])


def fir_upsample(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int],
                 up: int = 2) -> torch.Tensor:
    """``upfirdn2d(x, kernel, up, down=1, pad)`` as a depthwise transposed convolution.

    x (B, C, H, W) -> (B, C, H * up + pad0 + pad1 - K + 1, ...).
    """
    k_size = kernel.shape[-1]
    p0, p1 = pad
    # The transposed conv computes the full convolution of the zero-inserted input
    # (length (H - 1) * up + K) minus `p` samples at each end; upfirdn2d wants the samples
    # from K - 1 - pad0 to K - 1 - pad0 + H_out of it (zero outside its support).
    first, last_crop = k_size - 1 - p0, k_size - up - p1
    p = max(0, min(first, last_crop))
    w = kernel.to(dtype=x.dtype).expand(x.shape[1], 1, k_size, k_size)
    out = F.conv_transpose2d(x, w.contiguous(memory_format=_format(x)), stride=up,
                             padding=p, groups=x.shape[1])
    if first != p or last_crop != p:
        a, b = p - first, p - last_crop
        out = F.pad(out, (a, b, a, b))
    return out


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, slope: float = LRELU_SLOPE,
                     gain: float = LRELU_GAIN) -> torch.Tensor:
    """leaky_relu(x + bias) * gain, bias (C,) broadcast over dim 1 of x (B, C, ...)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.to(x.dtype).view(shape), slope) * gain


class PixelNorm(nn.Module):
    """x / sqrt(mean(x^2 over dim 1) + 1e-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) * sqrt(2); parameter ``bias`` (C,)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; ``weight`` (out, in), ``bias`` (out,)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activate:
            out = F.linear(x, self.weight * self.scale)
            return out if bias is None else fused_leaky_relu(out, bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate; ``weight`` (out, in, k, k), ``bias`` (out,)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.scale).contiguous(memory_format=_format(x))
        return F.conv2d(x, w, self.bias, stride=self.stride, padding=self.padding)


class Blur(nn.Module):
    """FIR filter with padding; buffer ``kernel`` (K, K), scaled by up^2 after upsampling."""

    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1, taps=BLUR_TAPS):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_filter(x, self.kernel, self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (H, W) -> (2H, 2W); buffer ``kernel`` (K, K) with gain 4."""

    def __init__(self, factor: int = 2, taps=BLUR_TAPS):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps) * factor ** 2)
        self.factor = factor
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_upsample(x, self.kernel, self.pad, self.factor)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution; ``weight`` (1, out, in, k, k), ``modulation`` (style -> in).

    forward(x (B, in, H, W), style (B, style_dim)) -> (B, out, H', W'), H' = 2H with upsample.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, taps=BLUR_TAPS):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        if upsample:
            # transposed conv (stride 2, no padding) gives 2H + k - 2 samples; the blur
            # trims them to 2H.
            p = (len(taps) - 2) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2, taps=taps)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # (B, in)
        w = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * s.to(x.dtype)[:, :, None, None]
        if self.upsample:
            wt = w.transpose(0, 1).contiguous(memory_format=_format(x))
            out = self.blur(F.conv_transpose2d(x, wt.to(x.dtype), stride=2))
        else:
            wc = w.contiguous(memory_format=_format(x)).to(x.dtype)
            out = F.conv2d(x, wc, padding=self.padding)
        if self.demodulate:
            # sum over (in, k, k) of (w * s)^2 = s^2 @ sum_kk(w^2)^T, per sample and output
            w_sq = w.float().pow(2).sum(dim=(2, 3))  # (out, in)
            demod = torch.rsqrt(s.float().pow(2) @ w_sq.t() + DEMOD_EPS)  # (B, out)
            out = out * demod.to(out.dtype)[:, :, None, None]
        return out


class NoiseInjection(nn.Module):
    """x + weight * noise; ``weight`` (1,), noise (1 or B, 1, H, W)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = torch.randn(b, 1, h, w, device=x.device, dtype=x.dtype)
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    """Learned constant ``input`` (1, C, 4, 4), repeated over the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)
