"""cgspn: 2D spatial-propagation (C-GSPN) vision encoders at foundation scale."""

__version__ = "0.1.0"
