"""The ``gan2shape`` command: a thin dispatcher over subcommand modules.

Each subcommand ``NAME`` lives in ``<room>/<NAME>_command.py`` (dashes as underscores), in
the room it belongs to (``demo``, which spans them, at the top), and exposes
``add_arguments(parser)`` and ``run(args) -> int | None``; modules are imported only when
their command runs, so ``gan2shape --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (room, one-line help); the module is ``gan2shape.<room>.<name>_command``
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("", "embedded model, full pipeline, outputs and metrics"),
    "reconstruct": ("recon", "recover 3D shape from images and latents"),
    "sample": ("gan", "sample images and their latents from a StyleGAN2"),
    "invert": ("gan", "project real photos into a StyleGAN2's W space"),
    "evaluate": ("eval", "SIDE / MAD of results against ground-truth depth"),
    "pretrain": ("recon", "joint pre-training over many images"),
    "train-gan": ("gan", "train a small StyleGAN2 on a folder of images"),
    "make-data": ("data", "procedural images with ground-truth depth"),
}


def command_module(name: str) -> str:
    """The module of the command ``name``."""
    room = COMMANDS[name][0]
    return ".".join(part for part in ("gan2shape", room, f"{name.replace('-', '_')}_command")
                    if part)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gan2shape")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan2shape",
        description="Unsupervised 3D shape reconstruction from 2D StyleGAN2s (GAN2Shape).",
    )
    parser.add_argument("--version", action="version", version=f"gan2shape {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Import only the chosen command's module; list the rest by name.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(command_module(name)).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import UserError
    from .memory import keep_freed_memory

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    keep_freed_memory()  # every command frees and reallocates large tensors per iteration
    module = importlib.import_module(command_module(args.command))
    try:
        status = module.run(args)
    except UserError as exc:
        print(f"gan2shape {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system failure outside the commands' own checks
        where = f" {exc.filename}" if exc.filename else ""
        print(f"gan2shape {args.command}: error: cannot use{where}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gan2shape {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
