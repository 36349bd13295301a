"""torchrun scaling: the same job as one process and as several, timed side by side.

    python benchmarks/distributed.py [--processes 2] [--threads 2] [--repeats 2]
        [--train-iters 60] [--images 4] [--steps 30] [--gan CKPT]
        [--jobs train-gan,reconstruct,pretrain]

Three jobs, each run alternately as one process with ``--threads`` torch threads and as
``--processes`` torchrun processes with ``threads / processes`` threads each (the same
cores), ``--repeats`` times; the wall time of each run is measured around the whole command
(start-up, data loading and the final checkpoint included):

- train-gan: the embedded model's widths, global batch 16, ``--train-iters`` iterations on
  procedural data (``make-data``), DistributedDataParallel over Gloo;
- reconstruct: ``--images`` GAN samples of the embedded model with the demo preset on a
  short schedule (``--steps`` iterations of each step), split between the processes;
- pretrain: joint pre-training on the same samples and schedule. Each step of P processes
  learns from P images at once (averaged gradients), so their run gets 1/P of the steps:
  both runs make the same number of image-steps, the P processes in P times fewer, larger
  steps.

On a CPU the processes share its cores, so the ratio is what processes win over threads
for these small networks; on a machine with P GPUs run it with ``--processes P`` to see
what P GPUs give over one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gan2shape import embedded

JOBS = ("train-gan", "reconstruct", "pretrain")


def short_schedule(steps: int, collect_iters: int) -> list[str]:
    """``--set`` arguments: one stage of ``steps`` iterations per step."""
    settings = ["num_stage=1", f"stage_len_dict={{step1: {steps}, step2: {steps}, "
                f"step3: {steps}}}", f"collect_iters={collect_iters}", "prior_iters=30"]
    return [a for s in settings for a in ("--set", s)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the one process")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--train-iters", type=int, default=60)
    p.add_argument("--images", type=int, default=4, help="images to reconstruct")
    p.add_argument("--steps", type=int, default=30,
                   help="iterations of each step of the short schedule")
    p.add_argument("--gan", default=None, help="StyleGAN2 checkpoint (default: the embedded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", default=",".join(JOBS),
                   help="comma-separated subset of " + ", ".join(JOBS))
    return p.parse_args()


def command(args, processes: int, *argv: str) -> list[str]:
    """``gan2shape argv`` as one process, or under torchrun as ``processes``."""
    if processes == 1:
        return [sys.executable, "-m", "gan2shape", *argv]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(processes), "-m", "gan2shape", *argv]


def timed(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    tic = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - tic
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return seconds


def side_by_side(name: str, args, make_argv, unit_count: int, unit: str) -> None:
    """Alternate one process and torchrun; print the medians and their ratio."""
    shapes = {1: args.threads, args.processes: max(1, args.threads // args.processes)}
    times: dict[int, list[float]] = {p: [] for p in shapes}
    for r in range(args.repeats):
        for processes, threads in shapes.items():
            with tempfile.TemporaryDirectory() as out:  # torch takes OMP_NUM_THREADS
                cmd = command(args, processes, *make_argv(Path(out), processes))
                times[processes].append(timed(cmd, threads))
            print(f"  {name} run {r + 1}: {processes} process(es) x {threads} thread(s) "
                  f"{times[processes][-1]:.1f} s", flush=True)
    one, many = (statistics.median(times[p]) for p in shapes)
    print(f"{name}: 1 process x {args.threads} threads {one:.1f} s "
          f"({unit_count / one:.2f} {unit}/s), {args.processes} processes x "
          f"{shapes[args.processes]} threads {many:.1f} s ({unit_count / many:.2f} {unit}/s); "
          f"speed-up {one / many:.2f}x", flush=True)


def main() -> int:
    args = parse_args()
    jobs = args.jobs.split(",")
    if args.processes < 2 or min(args.threads, args.repeats, args.train_iters,
                                 args.images, args.steps) < 1:
        raise SystemExit("--processes must be >= 2 (it is compared with one), other counts >= 1")
    if not set(jobs) <= set(JOBS):
        raise SystemExit(f"--jobs: choose from {', '.join(JOBS)}")
    gan = args.gan or str(embedded.asset_path(embedded.GAN_FILE))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if "train-gan" in jobs:
            subprocess.run([sys.executable, "-m", "gan2shape", "make-data", "--out",
                            str(work / "data"), "-n", "256", "--seed", "0"], check=True,
                           capture_output=True)
        subprocess.run([sys.executable, "-m", "gan2shape", "sample", "--gan", gan, "-n",
                        str(args.images), "--out", str(work / "samples"), "--seed", "0"],
                       check=True, capture_output=True)
        images = sorted((work / "samples" / "images").glob("*.png"))
        latents = [work / "samples" / "latents" / f"{p.stem}.pt" for p in images]

        def train_argv(out: Path, processes: int) -> list[str]:
            return ["train-gan", str(work / "data"), "--out", str(out / "run"), "--size", "64",
                    "--batch", "16", "--iters", str(args.train_iters), "--mixing", "0",
                    "--r1", "0.1", "--quiet", "--no-bf16", "--device", args.device,
                    "--sample-every", "0"]

        def recon_argv(out: Path, processes: int) -> list[str]:
            return ["reconstruct", *map(str, images), "--latent", *map(str, latents),
                    "--gan", gan, "--preset", "demo", "--out", str(out / "rec"), "--quiet",
                    "--device", args.device, *short_schedule(args.steps, 2)]

        def pretrain_argv(out: Path, processes: int) -> list[str]:
            return ["pretrain", *map(str, images), "--latent", *map(str, latents),
                    "--gan", gan, "--preset", "demo", "--out", str(out / "pre"), "--quiet",
                    "--device", args.device,
                    *short_schedule(args.steps // processes, 2 * args.images)]

        print(f"torchrun scaling on {args.device}: {args.processes} processes vs 1, "
              f"{args.threads} threads in all, {args.repeats} repeats", flush=True)
        runs = {"train-gan": (train_argv, args.train_iters * 16, "images"),
                "reconstruct": (recon_argv, args.images, "images"),
                "pretrain": (pretrain_argv, 3 * args.steps, "image-steps")}
        for job in jobs:
            side_by_side(job, args, *runs[job])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
