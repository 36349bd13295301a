"""Forward+backward time of the re-projection vs the depth network, side by side.

For batch 16 at 64 and 128 px (and the GPU when CUDA is available), times one training-
style use of `reproject` (canonical depth and texture with gradients, random views up to
60 degrees, masked L1 loss, backward) and of the depth network's forward+backward
(`build_networks(size)['netD']`) on the same batch, interleaved in one run, and prints the
median times and their ratio, for both conventions.

    python benchmarks/render.py [--sizes 64 128] [--batch 16] [--repeats 5] [--cpu-only]
                                [--threads N ...]

On a shared machine, intra-op threads that wait on busy cores slow PyTorch's many small
element-wise kernels far more than the network's convolutions, so the CPU section is run
at the default thread count and at one thread.
"""

import argparse
import math
import statistics
import time

import torch

from gan2shape.recon.networks import build_networks
from gan2shape.render import reproject


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench(size: int, batch: int, repeats: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                          indexing="ij")
    bumps = 0.08 * torch.exp(-(x ** 2 + y ** 2) / 0.3) * torch.rand(batch, 1, 1, generator=g)
    canon_depth = (1.02 - bumps).to(device).requires_grad_(True)
    canon_image = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    canon_image.requires_grad_(True)
    view = torch.zeros(batch, 6)
    view[:, :3] = (torch.rand(batch, 3, generator=g) * 2 - 1) * math.radians(60)
    view[:, 3:5] = (torch.rand(batch, 2, generator=g) * 2 - 1) * 0.1
    view = view.to(device)
    target = torch.rand(batch, 3, size, size, generator=g).to(device)

    net = build_networks(size)["netD"].to(device)
    net_input = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)

    def net_step():
        net.zero_grad(set_to_none=True)
        net(net_input).mean().backward()

    def render_step(conventions):
        def step():
            canon_depth.grad = canon_image.grad = None
            image, mask, _ = reproject(canon_depth, canon_image, view,
                                       conventions=conventions)
            ((image - target).abs() * mask).mean().backward()
        return step

    steps = {"netD": net_step, "clean": render_step("clean"),
             "release": render_step("release")}
    times = {name: [] for name in steps}
    for fn in steps.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            times[name].append(_timed(fn, device))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{device.type} size {size} batch {batch}: netD fwd+bwd {med['netD'] * 1e3:.1f} ms")
    for name in ("clean", "release"):
        print(f"  reproject[{name}] fwd+bwd {med[name] * 1e3:.1f} ms, "
              f"ratio to netD {med[name] / med['netD']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({torch.get_num_threads(), 1}, reverse=True))
    args = parser.parse_args()
    print(f"torch {torch.__version__}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"-- {threads} CPU thread(s)")
        for size in args.sizes:
            bench(size, args.batch, args.repeats, torch.device("cpu"))
    if torch.cuda.is_available() and not args.cpu_only:
        print(f"-- {torch.cuda.get_device_name()}")
        for size in args.sizes:
            bench(size, args.batch, args.repeats, torch.device("cuda"))


if __name__ == "__main__":
    main()
