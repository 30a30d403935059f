"""Operators: the GSPN line scan (``line_scan``, ``gspn2d``, ``normalize_gates``), the fused latent
read-out of the C-GSPN mixer (``latent_readout``) and backend selection."""

from .backends import available_backends, backend_for
from .gspn import gspn2d, line_scan, normalize_gates
from .latent_readout import latent_readout

__all__ = ["line_scan", "gspn2d", "normalize_gates", "latent_readout", "backend_for", "available_backends"]
