"""Operators: the GSPN line scan (``line_scan``, ``gspn2d``, ``normalize_gates``) and backend selection."""

from .backends import available_backends, backend_for
from .gspn import gspn2d, line_scan, normalize_gates

__all__ = ["line_scan", "gspn2d", "normalize_gates", "backend_for", "available_backends"]
