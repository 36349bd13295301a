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

from . import nhwc

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8
BLUR_TAPS = (1, 3, 3, 1)


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX-512 BF16 / AMX)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and probe is not None and probe())


def frozen_autocast(device: torch.device | str, enabled: bool):
    """bfloat16 autocast on ``device`` for a frozen network's forward (and the backward to
    its input) when ``enabled``, else a no-op: convolutions and matmuls run in bfloat16,
    the demodulation in float32; callers cast the outputs back to float32."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def low_precision(device: torch.device | str, enabled: bool = True):
    """bfloat16 autocast on ``device`` (CUDA, or CPUs with native bfloat16), else a no-op.

    Convolutions and matmuls run in bfloat16; demodulation coefficients are computed in
    float32. Use for speed where ~1e-2 image differences are acceptable.
    """
    device = torch.device(device)
    on = enabled and (device.type == "cuda" or (device.type == "cpu" and bf16_supported()))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def make_blur_kernel(taps=BLUR_TAPS) -> torch.Tensor:
    """Separable FIR kernel (K, K) = outer(taps, taps), normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def _depthwise(kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Kernel (K, K) -> depthwise weight (C, 1, K, K), flipped so conv2d convolves."""
    k = kernel.flip(0, 1).to(dtype=x.dtype)
    return k.expand(x.shape[1], 1, *k.shape).contiguous(memory_format=memory_format_of(x))


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for NHWC-strided 4-D tensors, else contiguous (so weights can match)."""
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int],
               down: int = 1) -> torch.Tensor:
    """``upfirdn2d(x, kernel, up=1, down, pad)``: x (B, C, H, W) -> (B, C, H', W').

    H' = (H + pad0 + pad1 - K) // down + 1.

    A bfloat16 channels_last x with ``down`` > 1 on the CPU is filtered in float32 and
    rounded back (oneDNN's bfloat16 depthwise strided kernel there was 12x slower than the
    float32 one, forward + backward: the discriminator's downsampling under ``gan_autocast``).
    """
    p0, p1 = pad
    if p0 != p1:
        x = F.pad(x, (p0, p1, p0, p1))
        p0 = 0
    if down > 1 and x.dtype == torch.bfloat16 and x.device.type == "cpu" \
            and memory_format_of(x) == torch.channels_last:
        with torch.autocast("cpu", enabled=False):
            wide = x.float()
            return F.conv2d(wide, _depthwise(kernel, wide), stride=down, padding=p0,
                            groups=x.shape[1]).to(x.dtype)
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
    out = F.conv_transpose2d(x, w.contiguous(memory_format=memory_format_of(x)), stride=up,
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


class _ScaleChannels(torch.autograd.Function):
    """x (B, C, H, W) * s (B, C) per sample and channel; the backward reduces grad * x to
    (B, C) without a full-size temporary."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(x, s)
        return x * s[:, :, None, None]

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        grad_x = grad * s[:, :, None, None] if ctx.needs_input_grad[0] else None
        grad_s = torch.einsum("bchw,bchw->bc", grad, x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_s


def scale_channels(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) * s (B, C)[:, :, None, None]."""
    return _ScaleChannels.apply(x, s.to(x.dtype))


class _ScaledLeakyReLU(torch.autograd.Function):
    """leaky_relu(x * scale + shift) with the activation done in place and a backward that
    reuses one temporary (the fused bias / noise / demodulation epilogue)."""

    @staticmethod
    def forward(ctx, x, scale, shift):
        out = torch.addcmul(shift, x, scale)
        F.leaky_relu_(out, LRELU_SLOPE)
        ctx.save_for_backward(x, scale, out)
        ctx.shift_shape = shift.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        x, scale, out = ctx.saved_tensors
        pre = torch.ops.aten.leaky_relu_backward(grad, out, LRELU_SLOPE, True)
        need_x, need_scale, need_shift = ctx.needs_input_grad
        grad_scale = (torch.einsum("bchw,bchw->bc", pre, x)[:, :, None, None]
                      .sum_to_size(scale.shape) if need_scale else None)
        grad_shift = pre.sum_to_size(ctx.shift_shape) if need_shift else None
        grad_x = None
        if need_x:  # in place unless a graph of the backward is built or pre is returned
            in_place = not torch.is_grad_enabled() and grad_shift is not pre
            grad_x = pre.mul_(scale) if in_place else pre * scale
        return grad_x, grad_scale, grad_shift


def scaled_leaky_relu(x: torch.Tensor, scale: torch.Tensor,
                      shift: torch.Tensor) -> torch.Tensor:
    """leaky_relu(x * scale + shift, 0.2); x (B, C, H, W), scale and shift broadcastable."""
    return _ScaledLeakyReLU.apply(x, scale.to(x.dtype), shift.to(x.dtype))


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
        w = (self.weight * self.scale).contiguous(memory_format=memory_format_of(x))
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
        out, demod = self.modulated(x, style)
        return out if demod is None else out * demod[:, :, None, None]

    def modulated(self, x: torch.Tensor, style: torch.Tensor):
        """(convolution of the style-scaled input (B, out, H', W'), demodulation (B, out) or
        None); forward multiplies them. Callers that add noise and bias next can fuse that
        multiplication with their own elementwise work."""
        s = self.modulation(style)  # (B, in)
        w = self.weight[0] * self.scale  # (out, in, k, k)
        if self.padding == 0 and not self.upsample:
            out = self._pointwise(x, w[:, :, 0, 0], s)
        else:
            x = scale_channels(x, s)
            if self.upsample:
                wt = w.transpose(0, 1).contiguous(memory_format=memory_format_of(x))
                out = self.blur(nhwc.conv_transpose2d(x, wt.to(x.dtype), 2))
            else:
                wc = w.contiguous(memory_format=memory_format_of(x)).to(x.dtype)
                out = F.conv2d(x, wc, padding=self.padding)
        if not self.demodulate:
            return out, None
        # sum over (in, k, k) of (w * s)^2 = s^2 @ sum_kk(w^2)^T, per sample and output
        acc = torch.promote_types(s.dtype, torch.float32)  # float32 under bfloat16 autocast
        w_sq = w.to(acc).pow(2).sum(dim=(2, 3))  # (out, in)
        with torch.autocast(s.device.type, enabled=False):
            demod = torch.rsqrt(s.to(acc).pow(2) @ w_sq.t() + DEMOD_EPS)  # (B, out)
        return out, demod.to(out.dtype)

    @staticmethod
    def _pointwise(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """1x1 modulated conv as a batched matmul with per-sample weights w * s (B, out, in):
        one read of x instead of a scaled copy (x: (B, in, H, W) -> (B, out, H, W))."""
        b, c, h, wd = x.shape
        ws = (w[None] * s[:, None, :]).to(x.dtype)  # (B, out, in)
        if memory_format_of(x) == torch.channels_last:
            out = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * wd, c), ws.transpose(1, 2))
            return out.view(b, h, wd, -1).permute(0, 3, 1, 2)
        return torch.bmm(ws, x.reshape(b, c, h * wd)).view(b, -1, h, wd)


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
