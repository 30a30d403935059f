"""The C-GSPN latent read-out: ``GELU(LayerNorm(sum_d y_d) @ W_up^T + b_up)`` in one kernel.

kernel (``triton_kernel.py``) + autograd op (``op.py``) + reference (``reference.py``), in the
layout of ``ops/gspn``.
"""

from .api import latent_readout

__all__ = ["latent_readout"]
