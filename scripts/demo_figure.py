"""The README's picture of a demo result: input, depth, normals, albedo, shading and three
frames of the mesh's rotation, side by side (each tile upscaled by --scale, nearest).

    gan2shape demo --out gan2shape-demo
    python scripts/demo_figure.py gan2shape-demo docs/demo.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

PAD = 2


def rotation_frames(grid_path: Path, size: int, picks: tuple[int, ...]) -> list[np.ndarray]:
    """Tiles of the first row (the mesh's rotation) of a rotation_grid.png (PAD-pixel gaps)."""
    grid = np.asarray(Image.open(grid_path).convert("RGB"))
    return [grid[PAD:PAD + size, PAD + i * (size + PAD):PAD + i * (size + PAD) + size]
            for i in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    stem = f"test{args.index:04d}"
    result = args.demo_dir / stem
    tiles = [np.asarray(Image.open(args.demo_dir / f"{stem}_input.png").convert("RGB"))]
    size = tiles[0].shape[0]
    for name in ("depth.png", "normal.png", "albedo.png", "shading.png"):
        image = Image.open(result / name)
        if image.mode.startswith("I"):  # the 16-bit depth PNG
            image = Image.fromarray((np.asarray(image) // 257).astype(np.uint8))
        tiles.append(np.asarray(image.convert("RGB")))
    grid = Image.open(result / "rotation_grid.png")
    n_frames = (grid.width - PAD) // (size + PAD)
    tiles += rotation_frames(result / "rotation_grid.png", size, (0, n_frames // 2, n_frames - 1))
    tiles = [np.kron(t, np.ones((args.scale, args.scale, 1), np.uint8)) for t in tiles]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(args.out, optimize=True)
    print(f"{args.out}: {row.shape[1]}x{row.shape[0]}")


if __name__ == "__main__":
    main()
