"""Exact channels_last shortcuts for two convolutions of the frozen GAN on the CPU.

oneDNN computes some convolutions of NCHW tensors in its channels_last (NHWC) kernels and
converts the result back with a slow strided copy: on this project's CPU the gradient to the
input of a stride-2 convolution (the discriminator's downsampling, (16, 128, 129, 129) at
128 px) spent 0.4 s of its 0.65 s in that copy, and the generator's upsampling transposed
convolution as much. Run on channels_last copies, the same kernels give the same numbers
without the copy, and a blocked 2-D transposition (:func:`to_nchw`, 8x faster than
``contiguous()``) brings them back.

The shortcut is taken only where it gives the bits of the plain call: the first time a
signature (shapes, strides, dtype) is met the plain result is computed as well and compared
element for element; where they differ (another oneDNN version or CPU may pick other
kernels) that signature keeps the plain call. Only for frozen weights (no weight gradient:
the reconstruction's GAN, not its training) on the CPU: float32 tensors, and the transposed
convolution under bfloat16 autocast too (``gan_autocast``; its oneDNN bfloat16 kernel has
the same slow copy, 0.47 s against 0.20 s at (16, 256, 64, 64)).
``GAN2SHAPE_EXACT_NHWC=0`` (or :func:`set_enabled`) turns it off.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CL = torch.channels_last
_enabled = os.environ.get("GAN2SHAPE_EXACT_NHWC", "1") != "0"
_same_bits: dict[tuple, bool] = {}  # signature -> the shortcut gave the plain call's bits


def set_enabled(on: bool) -> None:
    """Turn the shortcuts on or off for this process (benchmarks' ``before`` side)."""
    global _enabled
    _enabled = bool(on)


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """A channels_last (B, C, H, W) tensor as a contiguous one, the same values: one blocked
    2-D transposition (HW, C) -> (C, HW) per image (PyTorch's fast transpose copy)."""
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view of x's memory
    out = torch.empty(b, c, h * w, dtype=x.dtype, device=x.device)
    for i in range(b):
        out[i].copy_(rows[i].t())
    return out.view(b, c, h, w)


def _usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_enabled and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and weight.dtype == x.dtype and not weight.requires_grad and x.dim() == 4
            and x.is_contiguous() and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available())


def _checked(key: tuple, fast, plain) -> torch.Tensor:
    """fast() where it is known to equal plain(); at a signature's first use both run."""
    known = _same_bits.get(key)
    if known is None:
        out, ref = fast(), plain()
        _same_bits[key] = known = torch.equal(out, ref)
        return ref
    return fast() if known else plain()


def _signature(kind: str, *tensors: torch.Tensor, **params) -> tuple:
    return (kind, *((tuple(t.shape), t.stride(), t.dtype) for t in tensors),
            tuple(params.items()))


class _Conv2dNHWCBackward(torch.autograd.Function):
    """conv2d(x, weight, bias) of a frozen weight; the gradient to x on channels_last."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(weight)
        ctx.x_shape, ctx.stride, ctx.padding = x.shape, stride, padding
        return F.conv2d(x, weight, bias, stride=stride, padding=padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        args = ([ctx.stride] * 2, [ctx.padding] * 2, [1, 1], False, [0, 0], 1,
                [True, False, False])
        grad = grad.contiguous()

        def plain():
            x = grad.new_empty(ctx.x_shape)
            return torch.ops.aten.convolution_backward(grad, x, weight, None, *args)[0]

        def fast():
            x = grad.new_empty(ctx.x_shape).contiguous(memory_format=CL)
            out = torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=CL), x, weight.contiguous(memory_format=CL),
                None, *args)[0]
            return to_nchw(out)
        key = _signature("conv2d_backward", grad, weight, x_shape=tuple(ctx.x_shape),
                         stride=ctx.stride, padding=ctx.padding)
        return _checked(key, fast, plain), None, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
           padding: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)``, bit for bit; for a stride-2
    convolution of a frozen weight with x requiring grad, the backward to x on channels_last."""
    if stride == 2 and x.requires_grad and torch.is_grad_enabled() and _usable(x, weight) \
            and (bias is None or not bias.requires_grad):
        return _Conv2dNHWCBackward.apply(x, weight, bias, stride, padding)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


class _ConvTranspose2dNHWC(torch.autograd.Function):
    """conv_transpose2d(x, weight, stride) of a frozen weight computed on channels_last;
    the backward to x is the plain one."""

    @staticmethod
    def forward(ctx, x, weight, stride, fast):
        ctx.save_for_backward(weight)
        ctx.x_shape, ctx.stride = x.shape, stride
        return fast()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        x = grad.new_empty(ctx.x_shape)
        grad_x = torch.ops.aten.convolution_backward(
            grad.contiguous(), x, weight, None, [ctx.stride] * 2, [0, 0], [1, 1], True, [0, 0],
            1, [True, False, False])[0]
        return grad_x, None, None, None


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, stride=stride)``, bit for bit; for a frozen weight
    the forward runs on channels_last copies (under bfloat16 autocast: on the bfloat16
    casts autocast would make)."""
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16 \
            and _enabled and x.device.type == "cpu":
        with torch.autocast("cpu", enabled=False):
            return conv_transpose2d(x.to(torch.bfloat16), weight.to(torch.bfloat16), stride)
    if not _usable(x, weight):
        return F.conv_transpose2d(x, weight, stride=stride)
    weight = weight.contiguous()

    def plain():
        return F.conv_transpose2d(x.detach(), weight, stride=stride)

    def fast():
        return to_nchw(F.conv_transpose2d(x.detach().contiguous(memory_format=CL),
                                          weight.contiguous(memory_format=CL), stride=stride))
    key = _signature("conv_transpose2d", x, weight, stride=stride)
    if _same_bits.get(key) is False:
        return F.conv_transpose2d(x, weight, stride=stride)
    forward = lambda: _checked(key, fast, plain)  # noqa: E731
    if x.requires_grad and torch.is_grad_enabled():
        return _ConvTranspose2dNHWC.apply(x, weight, stride, forward)
    return forward()
