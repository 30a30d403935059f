"""Layers of the C-GSPN encoder: the propagation sub-layer, token mixers, block, patch embedding."""

from .block import MIXER_TYPES, CGSPNBlock
from .latent_propagation import LatentPropagation, default_gate_groups, default_latent_dim, mixer_weight_params
from .mixers import AttentionMixer, LatentPropagationMixer
from .patch_embed import GridPatchEmbed

__all__ = [
    "LatentPropagation",
    "LatentPropagationMixer",
    "AttentionMixer",
    "CGSPNBlock",
    "GridPatchEmbed",
    "MIXER_TYPES",
    "default_latent_dim",
    "default_gate_groups",
    "mixer_weight_params",
]
