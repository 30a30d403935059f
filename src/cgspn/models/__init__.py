"""C-GSPN encoders, registered with timm on import (``timm.create_model('cgspn_...')``)."""

from .cgspn_vit import ISOMORPHIC_VIT, CGSPNVisionTransformer, checkpoint_filter_fn

__all__ = ["CGSPNVisionTransformer", "checkpoint_filter_fn", "ISOMORPHIC_VIT"]
