"""Test-suite setup: without a GPU, Triton kernels run under the Triton interpreter (CPU)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # must be set before any @triton.jit kernel module is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core runner OpenMP's
    spin-waiting makes each small op ~1000x slower; restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
