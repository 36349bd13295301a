"""Shared test settings and fixtures."""

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# The tests' tensors are small: on a shared 2-core machine a second intra-op thread mostly
# waits for the other core (a small convolution measured 9x slower with 2 threads than 1).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark(name) -> the module benchmarks/<name>.py (scripts, not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark",
                                                      BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
