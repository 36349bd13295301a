"""Keep a training run resumable across machines: a compact copy of its checkpoint.

    python scripts/snapshot_training.py runs/embedded64 checkpoints/embedded64

Copies OUT/checkpoint.pt with every floating tensor of more than one element stored as
bfloat16 (half the size; ``load_state_dict`` casts back to float32 on ``--resume``, and
bfloat16 keeps Adam's tiny second moments in range), plus options.json and losses.jsonl.
To continue: copy the folder to runs/embedded64 and rerun train-gan with --resume.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from gan2shape.fileio import atomic_path, cast_floating, load_torch, save_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    ckpt = load_torch(args.run / "checkpoint.pt", "training checkpoint")
    save_torch(cast_floating(ckpt, torch.bfloat16, min_numel=2), args.dest / "checkpoint.pt")
    for name in ("options.json", "losses.jsonl"):
        with atomic_path(args.dest / name) as tmp:
            shutil.copyfile(args.run / name, tmp)
    print(f"iteration {ckpt['iteration']} -> {args.dest}")


if __name__ == "__main__":
    main()
