"""Split a ``train-gan`` checkpoint into small half-precision files that load as one GAN.

    python scripts/export_gan.py runs/wide64/checkpoint.pt OUT_DIR
    python scripts/export_gan.py --join OUT_DIR runs/wide64.pt   # the parts as one file

Writes OUT_DIR/g_ema.pt ('g_ema', 'iteration', 'args') and OUT_DIR/d.pt ('d'), every
floating tensor as float16 (``load_state_dict`` casts back to float32), so that a
256x256x128x64x32 model comes back from a machine that returns files of at most 16 MiB
each. ``--join`` puts them back into one checkpoint file (still float16) for ``--gan``;
``scripts/package_embedded.py OUT_DIR DATA --half`` packages them as the embedded model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gan2shape.errors import run_script
from gan2shape.fileio import cast_floating, load_torch, save_torch
from gan2shape.gan import load_stylegan2

PARTS = {"g_ema.pt": ("g_ema", "iteration", "args"), "d.pt": ("d",)}


def half(value):
    """float16 copies of the floating tensors in a (nested) state dict."""
    return cast_floating(value, torch.float16)


def load_exported(folder: Path) -> dict:
    """The checkpoint dict ('g_ema', 'd', ...) of an :func:`export` folder."""
    ckpt = {}
    for name in PARTS:
        ckpt.update(load_torch(folder / name, f"exported GAN part {name}"))
    return ckpt


def export(checkpoint: Path, out: Path) -> None:
    ckpt = load_torch(checkpoint, "StyleGAN2 checkpoint")
    load_stylegan2(ckpt)  # refuse to export anything that does not load
    out.mkdir(parents=True, exist_ok=True)
    for name, keys in PARTS.items():
        save_torch({k: half(ckpt[k]) for k in keys if k in ckpt}, out / name)
    load_stylegan2(load_exported(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a checkpoint (with --join: a folder)")
    parser.add_argument("out", type=Path, help="a folder (with --join: a checkpoint file)")
    parser.add_argument("--join", action="store_true", help="join exported parts")
    args = parser.parse_args()
    if args.join:
        ckpt = load_exported(args.source)
        load_stylegan2(ckpt)
        save_torch(ckpt, args.out)
        print(f"joined {args.source} into {args.out}")
        return 0
    export(args.source, args.out)
    sizes = ", ".join(f"{n} {(args.out / n).stat().st_size / 2**20:.1f} MiB" for n in PARTS)
    print(f"exported {args.source} to {args.out}: {sizes}")
    return 0


if __name__ == "__main__":
    run_script(main)
