"""StyleGAN2 speed: our networks vs dense matmul throughput and vs a reference formulation.

For the 128 px config-e generator (channel multiplier 1) and its discriminator, batch 16:
synthesis forward, forward+backward (to the latents only, as GAN2Shape's encoder training
needs, and to latents and weights, as GAN training needs), the discriminator feature loss
(L1 between features(img, 4) of two batches, backward to one image batch), in float32 and in
bfloat16 autocast. Achieved GFLOP/s count the convolution, FIR and linear-layer FLOPs
analytically (elementwise work not counted) and are compared with a dense 2048x2048
matmul timed in the same run. The reference formulation is the usual pure-PyTorch port:
grouped per-sample modulated convolutions and upfirdn2d by zero insertion + padding + a
single-channel 2-D convolution, with separate bias / activation passes.

    python benchmarks/stylegan2.py [--batch 16] [--size 128] [--reps 2] [--no-reference]

The machine is shared: the cases are run round-robin --reps times, each run right after a
float32 matmul, and every figure is the best over those runs; ratios are taken between
figures measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch
import torch.nn.functional as F

from gan2shape.gan import Discriminator, Generator
from gan2shape.gan.ops import bf16_supported, low_precision

# ----------------------------------------------------------------------------- FLOPs


def generator_flops(g: Generator, batch: int) -> float:
    """Forward FLOPs of mapping + synthesis (multiply-add = 2 FLOPs)."""
    d = g.style_dim
    total = g.n_mlp * d * d  # mapping (MACs)

    def modconv(cin, cout, k, res_in, up):
        macs = d * cin + cin * cout * k * k * res_in ** 2  # modulation + conv
        if up:
            macs += 16 * cout * (2 * res_in) ** 2  # 4x4 blur after the transposed conv
        return macs

    ch = g.channels
    total += modconv(ch[4], ch[4], 3, 4, False) + modconv(ch[4], 3, 1, 4, False)
    res = 8
    while res <= g.size:
        cin, cout = ch[res // 2], ch[res]
        total += modconv(cin, cout, 3, res // 2, True) + modconv(cout, cout, 3, res, False)
        total += modconv(cout, 3, 1, res, False) + 4 * 3 * res ** 2  # to_rgb + skip upsample
        res *= 2
    return 2.0 * batch * total


def feature_flops(d: Discriminator, n: int, batch: int) -> float:
    """Forward FLOPs of d.features(img, n)."""
    size = d.size
    total = 3 * d.channels[size] * size ** 2
    res = size
    for _ in range(n - 1):
        cin, cout = d.channels[res], d.channels[res // 2]
        total += cin * cin * 9 * res ** 2  # conv1
        total += 16 * cin * (res + 1) ** 2 + cin * cout * 9 * (res // 2) ** 2  # blur + conv2
        total += 16 * cin * (res // 2) ** 2 + cin * cout * (res // 2) ** 2  # skip
        res //= 2
    return 2.0 * batch * total


# ---------------------------------------------------- reference formulation (slow port)


def upfirdn_ref(x, kernel, up=1, down=1, pad=(0, 0)):
    """Zero insertion, padding, single-channel conv over (B*C, 1, H, W), subsampling."""
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, 1, w, 1)
    x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1)).reshape(b * c, 1, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    x = F.conv2d(x, kernel.flip(0, 1)[None, None].to(x.dtype))[:, :, ::down, ::down]
    return x.reshape(b, c, x.shape[2], x.shape[3])


def lrelu_ref(x, bias):
    return F.leaky_relu(x + bias.view(1, -1, 1, 1).to(x.dtype), 0.2) * math.sqrt(2)


def modconv_ref(x, style, p, name, demodulate=True, upsample=False):
    weight = p[f"{name}.weight"]  # (1, out, in, k, k)
    _, cout, cin, k, _ = weight.shape
    lin = p[f"{name}.modulation.weight"]
    s = F.linear(style, lin / math.sqrt(lin.shape[1]), p[f"{name}.modulation.bias"])
    b, _, h, w = x.shape
    wb = weight / math.sqrt(cin * k * k) * s.view(b, 1, cin, 1, 1)
    if demodulate:
        wb = wb * torch.rsqrt(wb.pow(2).sum((2, 3, 4)) + 1e-8).view(b, cout, 1, 1, 1)
    if upsample:
        wb = wb.transpose(1, 2).reshape(b * cin, cout, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * cin, h, w), wb.to(x.dtype), stride=2, groups=b)
        out = out.view(b, cout, out.shape[2], out.shape[3])
        return upfirdn_ref(out, p[f"{name}.blur.kernel"], pad=(1, 1))
    out = F.conv2d(x.reshape(1, b * cin, h, w), wb.reshape(b * cout, cin, k, k).to(x.dtype),
                   padding=k // 2, groups=b)
    return out.view(b, cout, h, w)


def synthesis_ref(p, n_levels, w):
    """The generator's image from a state dict p, W (B, D), stored noise."""
    def styled(x, name, noise, up=False):
        out = modconv_ref(x, w, p, f"{name}.conv", upsample=up)
        out = out + p[f"{name}.noise.weight"] * noise
        return lrelu_ref(out, p[f"{name}.activate.bias"])

    def rgb(x, name, skip):
        out = modconv_ref(x, w, p, f"{name}.conv", demodulate=False) + p[f"{name}.bias"]
        if skip is not None:
            out = out + upfirdn_ref(skip, p[f"{name}.upsample.kernel"], up=2, pad=(2, 1))
        return out

    x = styled(p["input.input"].repeat(w.shape[0], 1, 1, 1), "conv1", p["noises.noise_0"])
    skip = rgb(x, "to_rgb1", None)
    for i in range(n_levels):
        x = styled(x, f"convs.{2 * i}", p[f"noises.noise_{2 * i + 1}"], up=True)
        x = styled(x, f"convs.{2 * i + 1}", p[f"noises.noise_{2 * i + 2}"])
        skip = rgb(x, f"to_rgbs.{i}", skip)
    return skip


def conv_layer_ref(x, p, name, down=False, activate=True):
    i = 1 if down else 0
    weight = p[f"{name}.{i}.weight"]
    k = weight.shape[-1]
    if down:
        q = 2 + k - 1
        x = upfirdn_ref(x, p[f"{name}.0.kernel"], pad=((q + 1) // 2, q // 2))
    x = F.conv2d(x, (weight / math.sqrt(weight[0].numel())).to(x.dtype),
                 stride=2 if down else 1, padding=0 if down else k // 2)
    return lrelu_ref(x, p[f"{name}.{i + 1}.bias"]) if activate else x


def features_ref(p, img, n):
    x = conv_layer_ref(img, p, "convs.0")
    feats = [x]
    for i in range(1, n):
        y = conv_layer_ref(conv_layer_ref(x, p, f"convs.{i}.conv1"), p, f"convs.{i}.conv2",
                           down=True)
        x = (y + conv_layer_ref(x, p, f"convs.{i}.skip", down=True, activate=False)) \
            / math.sqrt(2)
        feats.append(x)
    return feats


# ------------------------------------------------------------------------------ timing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, reps, warmup=False):
    """Best wall time of reps calls (after one untimed call if warmup)."""
    if warmup:
        fn()
    best = math.inf
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(device, dtype, reps, n=2048):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = best_time(lambda: a @ b, device, max(reps, 3), warmup=True)
    return 2 * n ** 3 / t / 1e9


def feature_loss(d, features, a, b, n=4):
    """L1 between features of a (with grad) and of b (a detached target), backward to a."""
    with torch.no_grad():
        target = features(d, b, n)
    loss = sum((fa - fb).abs().mean() for fa, fb in zip(features(d, a, n), target,
                                                       strict=True))
    loss.backward()
    return loss


def run(device: torch.device, args) -> None:
    torch.manual_seed(0)
    g = Generator(args.size, channel_multiplier=1).to(device)
    d = Discriminator(args.size, channel_multiplier=1).to(device).requires_grad_(False)
    with torch.no_grad():  # trained-like statistics: non-zero noise strengths and biases
        for name, prm in g.named_parameters():
            if name.endswith("noise.weight"):
                prm.fill_(0.1)
    w0 = g.mean_latent(1024).to(device) + 0.5 * g.mapping(
        torch.randn(args.batch, g.style_dim, device=device))
    img_a = torch.randn(args.batch, 3, args.size, args.size, device=device).clamp(-1, 1)
    img_b = torch.randn(args.batch, 3, args.size, args.size, device=device).clamp(-1, 1)
    g_flops = generator_flops(g, args.batch)
    f_flops = feature_flops(d, 4, args.batch)
    lowp = device.type == "cuda" or bf16_supported()

    mm16 = matmul_gflops(device, torch.bfloat16, args.reps) if lowp else float("nan")
    print(f"[{device}] threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.size} px config-e; dense matmul: bfloat16 {mm16:.0f} GFLOP/s, float32 "
          f"{matmul_gflops(device, torch.float32, 3):.0f} GFLOP/s (and again before each run)")
    if not lowp:
        print("  bfloat16: this CPU has no native bfloat16 (AVX-512 BF16 / AMX); "
              "the bfloat16 rows are skipped")
    print(f"  analytic FLOPs: synthesis forward {g_flops / 1e9:.0f} G, "
          f"features(img, 4) forward {f_flops / 1e9:.0f} G; fwd+bwd counts 2x (input "
          "gradients) or 3x (input and weight gradients) the forward", flush=True)

    def g_forward(bf16=False):
        with torch.no_grad(), low_precision(device, bf16):
            return g.synthesis(w0)

    def g_train(bf16=False, weights=True):
        g.requires_grad_(weights)
        w = w0.detach().requires_grad_()
        with low_precision(device, bf16):
            img = g.synthesis(w)
        img.float().square().mean().backward()
        g.zero_grad(set_to_none=True)

    def d_loss(bf16=False):
        a = img_a.detach().requires_grad_()
        with low_precision(device, bf16):
            feature_loss(d, lambda m, x, n: m.features(x, n), a, img_b)

    p = {k: v.detach() for k, v in g.state_dict().items()}
    pd = {k: v.detach() for k, v in d.state_dict().items()}

    def ref_train():
        leaves = {k: v.clone().requires_grad_() if k.endswith(("weight", "bias", "input"))
                  else v for k, v in p.items()}
        w = w0.detach().requires_grad_()
        synthesis_ref(leaves, len(g.to_rgbs), w).square().mean().backward()

    def ref_d_loss():
        a = img_a.detach().requires_grad_()
        feature_loss(pd, lambda m, x, n: features_ref(m, x, n), a, img_b)

    def interleaved(cases, reps):
        """Time each (label, fn, flops) case reps times, round-robin, each run right after a
        float32 matmul; print best time, GFLOP/s and the best ratio to that matmul."""
        runs = {label: [] for label, _, _ in cases}
        for _ in range(reps):
            for label, fn, flops in cases:
                mm32 = matmul_gflops(device, torch.float32, 1)
                seconds = best_time(fn, device, 1)
                runs[label].append((seconds, flops / seconds / 1e9 / mm32))
        best = {}
        for label, _, flops in cases:
            seconds = min(t for t, _ in runs[label])
            ratio = max(r for _, r in runs[label])
            print(f"  {label:<42s} {seconds:8.3f} s {flops / seconds / 1e9:7.1f} GFLOP/s "
                  f"{100 * ratio:4.0f}% of matmul", flush=True)
            best[label] = seconds
        return best

    fb, fbw, dl = ("synthesis fwd+bwd to w and weights", "synthesis fwd+bwd to w only",
                   "D feature loss fwd+bwd to image")
    fp32 = interleaved([("synthesis forward", g_forward, g_flops), (fb, g_train, 3 * g_flops),
                        (fbw, lambda: g_train(weights=False), 2 * g_flops),
                        (dl, d_loss, 3 * f_flops)], args.reps)
    print(f"  D feature loss / synthesis fwd+bwd: {fp32[dl] / fp32[fb]:.2f} (to w and "
          f"weights), {fp32[dl] / fp32[fbw]:.2f} (to w only)", flush=True)
    if lowp:
        with torch.no_grad():
            ref = g_forward().float()
            diff = (g_forward(True).float() - ref).abs().mean().item()
            span = ref.abs().mean().item()
        print(f"  bfloat16 autocast (GFLOP/s ratios still against the float32 matmul); "
              f"images: mean |diff| to float32 {diff:.4f} (mean |image| {span:.3f})")
        bf16 = interleaved([("synthesis forward", lambda: g_forward(True), g_flops),
                            (fb, lambda: g_train(True), 3 * g_flops),
                            (fbw, lambda: g_train(True, False), 2 * g_flops),
                            (dl, lambda: d_loss(True), 3 * f_flops)], args.reps)
        print("  bfloat16 speed-up over float32: " + ", ".join(
            f"{label} x{fp32[label] / bf16[label]:.2f}" for label in bf16), flush=True)
        print(f"  bf16 D feature loss / synthesis fwd+bwd: {bf16[dl] / bf16[fb]:.2f} (to w "
              f"and weights), {bf16[dl] / bf16[fbw]:.2f} (to w only)", flush=True)
    if args.no_reference:
        return
    with torch.no_grad():
        err = (synthesis_ref(p, len(g.to_rgbs), w0) - g.synthesis(w0)).abs().max().item()
        ref_feats = features_ref(pd, img_a, 4)
        err_d = max((a - b).abs().max().item()
                    for a, b in zip(ref_feats, d.features(img_a, 4), strict=True))
    print(f"  reference formulation (max |diff| to ours: image {err:.1e}, "
          f"features {err_d:.1e}), one run each:", flush=True)
    ref = interleaved([(fb, ref_train, 3 * g_flops), (dl, ref_d_loss, 3 * f_flops)], 1)
    print(f"  ours vs reference: synthesis fwd+bwd x{ref[fb] / fp32[fb]:.2f} faster, "
          f"D feature loss x{ref[dl] / fp32[dl]:.2f} faster", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the slow reference formulation")
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    run(torch.device("cpu"), args)
    if torch.cuda.is_available() and not args.cpu_only:
        with contextlib.suppress(torch.cuda.OutOfMemoryError):
            run(torch.device("cuda"), args)


if __name__ == "__main__":
    main()
