"""cgspn: 2D spatial-propagation (C-GSPN) vision encoders at foundation scale."""

__version__ = "0.1.0"

from . import models  # noqa: E402,F401  registers the cgspn_* timm models
