"""Test-suite setup: without a GPU, Triton kernels run under the Triton interpreter (CPU)."""

import os

import torch

if not torch.cuda.is_available():
    # must be set before any @triton.jit kernel module is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
