"""Shared test settings and fixtures."""

import importlib.util
import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def torchrun():
    """torchrun(*args) -> CompletedProcess of ``torchrun --standalone --nproc_per_node 2
    ARGS`` on the CPU, one thread per process, output captured."""
    # Loopback only: a CI container's hostname may not resolve to a usable interface.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}

    def run(*args, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node", "2", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    return run
