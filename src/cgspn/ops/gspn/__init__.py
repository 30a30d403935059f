"""The GSPN line-scan operator: public functionals, backends and the pure-PyTorch reference.

Files: ``reference.py`` (vectorised PyTorch, ground truth and CPU path), ``naive.py`` (literal
loop, test oracle), ``triton_kernels.py`` (fused kernels), ``triton_backend.py`` (launchers),
``op.py`` (``torch.library`` custom ops with autograd and fake rules), ``validate.py``.
"""

from .api import gspn2d, line_scan, normalize_gates

__all__ = ["gspn2d", "line_scan", "normalize_gates"]
