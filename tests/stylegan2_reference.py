"""Slow, explicit StyleGAN2 formulations used as independent references by the tests.

Written from the papers' definitions: FIR resampling as zero insertion + padding + a 2-D
convolution evaluated tap by tap; the modulated convolution as a per-sample ordinary
convolution with modulated and demodulated weights (the reference implementations'
grouped-conv formulation).
"""

import math

import torch
import torch.nn.functional as F


def upfirdn2d_ref(x, kernel, up=1, down=1, pad=(0, 0)):
    """x (B, C, H, W); kernel (K, K) applied as a true convolution (flipped)."""
    b, c, h, w = x.shape
    u = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    p0, p1 = pad
    u = F.pad(u, (p0, p1, p0, p1))
    k = kernel.shape[0]
    oh, ow = u.shape[2] - k + 1, u.shape[3] - k + 1
    out = torch.zeros(b, c, oh, ow, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out += kernel[k - 1 - i, k - 1 - j] * u[:, :, i:i + oh, j:j + ow]
    return out[:, :, ::down, ::down]


def blur_kernel(gain=1.0):
    t = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = t[:, None] * t[None, :]
    return k / k.sum() * gain


def lrelu(x, bias):
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * math.sqrt(2)


def equal_linear(x, sd, prefix, lr_mul=1.0, activate=False):
    w = sd[f"{prefix}.weight"] * (lr_mul / math.sqrt(sd[f"{prefix}.weight"].shape[1]))
    b = sd[f"{prefix}.bias"] * lr_mul
    out = x @ w.t()
    return lrelu(out, b) if activate else out + b


def modulated_conv_ref(x, style, sd, prefix, demodulate=True, upsample=False):
    """Per-sample convolution with weights scale * W * s, demodulated per output channel."""
    weight = sd[f"{prefix}.weight"][0]  # (out, in, k, k)
    cout, cin, k, _ = weight.shape
    s = equal_linear(style, sd, f"{prefix}.modulation")
    outs = []
    for bi in range(x.shape[0]):
        wb = weight / math.sqrt(cin * k * k) * s[bi].view(1, cin, 1, 1)
        if demodulate:
            wb = wb / torch.sqrt((wb ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[bi:bi + 1]
        if upsample:
            o = F.conv_transpose2d(xb, wb.transpose(0, 1), stride=2)
            o = upfirdn2d_ref(o, blur_kernel(4.0), pad=(1, 1))
        else:
            o = F.conv2d(xb, wb, padding=k // 2)
        outs.append(o)
    return torch.cat(outs)


def generator_ref(sd, w_plus):
    """Image of a rosinality state dict sd (float64) for W+ latents (B, n_latent, D)."""
    n_rgbs = sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".upsample.kernel"))

    def styled(x, style, prefix, noise, up=False):
        o = modulated_conv_ref(x, style, sd, f"{prefix}.conv", upsample=up)
        o = o + sd[f"{prefix}.noise.weight"] * noise
        return lrelu(o, sd[f"{prefix}.activate.bias"])

    def rgb(x, style, prefix, skip):
        o = modulated_conv_ref(x, style, sd, f"{prefix}.conv", demodulate=False)
        o = o + sd[f"{prefix}.bias"]
        if skip is not None:
            o = o + upfirdn2d_ref(skip, blur_kernel(4.0), up=2, pad=(2, 1))
        return o

    x = sd["input.input"].expand(w_plus.shape[0], -1, -1, -1)
    x = styled(x, w_plus[:, 0], "conv1", sd["noises.noise_0"])
    skip = rgb(x, w_plus[:, 1], "to_rgb1", None)
    for n in range(n_rgbs):
        x = styled(x, w_plus[:, 2 * n + 1], f"convs.{2 * n}", sd[f"noises.noise_{2 * n + 1}"],
                   up=True)
        x = styled(x, w_plus[:, 2 * n + 2], f"convs.{2 * n + 1}",
                   sd[f"noises.noise_{2 * n + 2}"])
        skip = rgb(x, w_plus[:, 2 * n + 3], f"to_rgbs.{n}", skip)
    return skip


def mapping_ref(sd, z, n_mlp):
    x = z / torch.sqrt((z ** 2).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        x = equal_linear(x, sd, f"style.{i}", lr_mul=0.01, activate=True)
    return x


def conv_layer_ref(x, sd, prefix, down=False, activate=True):
    i = 0
    stride, k = 1, sd[f"{prefix}.{1 if down else 0}.weight"].shape[-1]
    padding = k // 2
    if down:
        p = 2 + (k - 1)
        x = upfirdn2d_ref(x, blur_kernel(), pad=((p + 1) // 2, p // 2))
        stride, padding, i = 2, 0, 1
    w = sd[f"{prefix}.{i}.weight"]
    x = F.conv2d(x, w / math.sqrt(w[0].numel()), stride=stride, padding=padding)
    return lrelu(x, sd[f"{prefix}.{i + 1}.bias"]) if activate else x


def discriminator_features_ref(sd, img):
    """The outputs of every residual block of a rosinality discriminator state dict, in
    order, as the release's ``Discriminator.forward(input, ftr_num)`` collects them: the 1x1
    stem conv ``convs.0`` runs first and is not one of them."""
    n_blocks = sum(1 for k in sd if k.endswith(".conv1.0.weight"))
    x = conv_layer_ref(img, sd, "convs.0")
    feats = []
    for bi in range(1, n_blocks + 1):
        y = conv_layer_ref(x, sd, f"convs.{bi}.conv1")
        y = conv_layer_ref(y, sd, f"convs.{bi}.conv2", down=True)
        s = conv_layer_ref(x, sd, f"convs.{bi}.skip", down=True, activate=False)
        x = (y + s) / math.sqrt(2)
        feats.append(x)
    return feats


def discriminator_ref(sd, img):
    """Logits (B, 1) of a rosinality discriminator state dict (float64)."""
    x = discriminator_features_ref(sd, img)[-1]
    b, c, h, w = x.shape
    g = min(b, 4)
    # sample i is grouped with samples i + k * (b // g)
    std = torch.zeros(b // g, dtype=x.dtype)
    for m in range(b // g):
        members = x[m::b // g]
        std[m] = torch.sqrt(members.var(dim=0, unbiased=False) + 1e-8).mean()
    stat = torch.stack([std[i % (b // g)] for i in range(b)]).view(b, 1, 1, 1).expand(b, 1, h, w)
    x = conv_layer_ref(torch.cat([x, stat], 1), sd, "final_conv")
    x = equal_linear(x.flatten(1), sd, "final_linear.0", activate=True)
    return equal_linear(x, sd, "final_linear.1")
