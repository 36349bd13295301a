"""The command-line dispatcher, atomic file writing and compact checkpoint copies."""

import os

import pytest
import torch

from gan2shape import cli
from gan2shape.errors import UserError
from gan2shape.fileio import atomic_path, cast_floating, load_torch, save_torch


def test_every_command_is_listed_in_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_command_modules_are_named_after_their_commands():
    """``NAME`` lives in ``<room>/<NAME>_command.py`` with add_arguments and run, and every
    ``*_command.py`` of the package is a listed command."""
    import importlib
    from pathlib import Path

    package = Path(cli.__file__).parent
    for name in cli.COMMANDS:
        module = importlib.import_module(cli.command_module(name))
        assert Path(module.__file__).name == f"{name.replace('-', '_')}_command.py"
        assert callable(module.add_arguments) and callable(module.run)
    found = {str(p.relative_to(package).with_suffix("")).replace("/", ".")
             for p in package.rglob("*_command.py")}
    assert found == {cli.command_module(n).removeprefix("gan2shape.") for n in cli.COMMANDS}


def test_cast_floating_casts_only_big_enough_floating_tensors():
    value = {"w": torch.ones(2, 3), "scalar": torch.tensor(0.5), "step": torch.tensor(7),
             "nested": [torch.zeros(4, dtype=torch.float64)], "name": "g"}
    out = cast_floating(value, torch.bfloat16, min_numel=2)
    assert out["w"].dtype == torch.bfloat16 and torch.equal(out["w"].float(), value["w"])
    assert out["scalar"].dtype == torch.float32 and out["step"].dtype == torch.int64
    assert out["nested"][0].dtype == torch.bfloat16 and out["name"] == "g"
    assert cast_floating(value, torch.float16)["scalar"].dtype == torch.float16


def test_atomic_path_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_load_torch_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_torch(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch file"):
        load_torch(bad)
    save_torch({"a": 1}, tmp_path / "ok.pt")
    assert load_torch(tmp_path / "ok.pt") == {"a": 1}


def test_resolve_device_errors_are_one_line():
    import torch

    from gan2shape.devices import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected == resolve_device(None).type
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="sees no CUDA device"):
            resolve_device("cuda")
