"""Shared test settings."""

import torch

# The tests' tensors are small: on a shared 2-core machine a second intra-op thread mostly
# waits for the other core (a small convolution measured 9x slower with 2 threads than 1).
torch.set_num_threads(1)
