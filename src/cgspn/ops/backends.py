"""Which implementation of an op runs where: explicit, reported, never a silent slow fallback.

Backends:
* ``"reference"``: pure PyTorch (any device, any floating dtype, float64 included).
* ``"triton"``: the fused Triton kernels (CUDA; on CPU only under ``TRITON_INTERPRET=1``, the
  Triton interpreter, which is for testing).
"""

from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "available_backends", "backend_for", "resolve_backend", "triton_available"]

BACKENDS = ("reference", "triton")


def _probe_triton() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"{type(e).__name__}: {e}"
    return None


_TRITON_IMPORT_ERROR = _probe_triton()


def _triton_import_error() -> str | None:
    """None when Triton imports, else the import error (probed once at module import)."""
    return _TRITON_IMPORT_ERROR


def triton_available() -> bool:
    """True when Triton imports."""
    return _triton_import_error() is None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Names of the backends that can run here (on ``device``, default: CUDA if present else CPU).

    "triton" counts on CUDA when Triton imports, and on CPU when ``TRITON_INTERPRET=1`` is set.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    names = ["reference"]
    if triton_available() and ((dev.type == "cuda" and torch.cuda.is_available()) or (dev.type == "cpu" and _interpreting())):
        names.append("triton")
    return names


def backend_for(tensor: torch.Tensor) -> str:
    """The backend ``backend=None`` picks for this tensor: "triton" on CUDA, "reference" on CPU."""
    return "triton" if tensor.device.type == "cuda" else "reference"


def resolve_backend(backend: str | None, tensor: torch.Tensor) -> str:
    """Check an explicit backend choice (or pick one) and raise a clear error if it cannot run."""
    name = backend_for(tensor) if backend is None else backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if name == "triton":
        err = _triton_import_error()
        if err is not None:
            raise RuntimeError(
                f"the 'triton' backend needs Triton, which failed to import ({err}); "
                "install triton or pass backend='reference' explicitly (pure PyTorch, slow)"
            )
        dev = tensor.device.type
        if dev == "cpu" and not _interpreting():
            raise RuntimeError(
                "the 'triton' backend runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1, for testing); "
                "got CPU tensors: move them to a GPU or pass backend='reference'"
            )
        if dev not in ("cpu", "cuda"):
            raise RuntimeError(f"the 'triton' backend does not run on device type {dev!r}; pass backend='reference'")
    return name
