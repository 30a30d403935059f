"""C-GSPN vision encoders: ViT-isomorphic, attention replaced by latent 2D propagation; timm-native.

``CGSPNVisionTransformer`` has the shape of timm's ``VisionTransformer`` (patch embedding, pre-norm
blocks, final norm, pooling, head) with three differences:

* each block's ``attn`` is a ``mixer`` called as ``mixer(x, grid)``: a
  :class:`cgspn.layers.LatentPropagationMixer`, or timm SDPA attention for the blocks listed in
  ``attn_layers`` (hybrid);
* there is no positional embedding (the scans know where they are), so any image whose sides are
  multiples of the patch runs in a single pass, square or not;
* prefix tokens (class token, registers) bypass the scans (see ``LatentPropagationMixer``).

Registered models (``import cgspn`` then ``timm.create_model(name)``), each isomorphic to a timm ViT:

==============================  ===============================  =====  =====  ====  ======
cgspn name                      timm ViT                         width  depth  head  pool
==============================  ===============================  =====  =====  ====  ======
cgspn_tiny_patch16_224          vit_tiny_patch16_224             192    12     3     token
cgspn_small_patch14_dinov2      vit_small_patch14_dinov2         384    12     6     token
cgspn_base_patch16_224          vit_base_patch16_224             768    12     12    token
cgspn_large_patch16_224         vit_large_patch16_224            1024   24     16    token
cgspn_so400m_patch14_378        vit_so400m_patch14_siglip_378    1152   27     16    map
==============================  ===============================  =====  =====  ====  ======
"""

from __future__ import annotations

import re
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import AttentionPoolLatent, LayerNorm, Mlp, get_act_layer, get_norm_layer, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import named_apply

from ..layers import CGSPNBlock, GridPatchEmbed, LatentPropagation

__all__ = ["CGSPNVisionTransformer", "checkpoint_filter_fn", "ISOMORPHIC_VIT"]

GLOBAL_POOL_TYPES = ("", "avg", "avgmax", "max", "token", "map")


def _pool_tokens(x: torch.Tensor, pool_type: str, num_prefix_tokens: int, include_prefix: bool) -> torch.Tensor:
    """(B, P + N, C) -> (B, C) for 'token'/'avg'/'avgmax'/'max'; unchanged for ''."""
    if not pool_type:
        return x
    if pool_type == "token":
        return x[:, 0]
    x = x if include_prefix else x[:, num_prefix_tokens:]
    if pool_type == "avg":
        return x.mean(dim=1)
    if pool_type == "avgmax":
        return 0.5 * (x.amax(dim=1) + x.mean(dim=1))
    if pool_type == "max":
        return x.amax(dim=1)
    raise ValueError(f"unknown pool type {pool_type!r}; expected one of {GLOBAL_POOL_TYPES}")


def _per_layer(name: str, value: Any, depth: int) -> list[Any]:
    """Expand a scalar (or None) to a per-layer list, or check a sequence has one entry per layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise ValueError(f"{name} has {len(value)} entries; it needs one per layer (depth={depth})")
        return list(value)
    return [value] * depth


class CGSPNVisionTransformer(nn.Module):
    """C-GSPN encoder: a ViT whose attention is replaced by 4-direction latent propagation.

    Tokens: ``embed(images)`` gives (B, P + H*W, C), the P prefix tokens (class, then registers)
    first and the H x W grid row-major; every block is called as ``block(x, (H, W))``.

    Args:
        img_size: nominal input size (recorded in configs; any multiple of the patch runs).
        patch_size: patch side p (int).
        in_chans: image channels.
        num_classes: classifier outputs (0 = no classifier, ``head`` is Identity).
        global_pool: '', 'avg', 'avgmax', 'max', 'token' (class token) or 'map' (attention pool
            over the grid tokens, O(N)).
        embed_dim: width C.
        depth: number of blocks.
        num_heads: heads of the attention blocks (hybrid) and of the MAP pool.
        mlp_ratio: MLP hidden width over C.
        qkv_bias, qk_norm: attention blocks' settings.
        proj_bias: biases of the mixers' output projections and the MLPs.
        init_values: LayerScale init (None = no LayerScale).
        class_token: prepend a class token.
        reg_tokens: number of register tokens after the class token.
        pre_norm: norm after the embedding (CLIP style).
        final_norm: norm after the blocks.
        fc_norm: norm after pooling instead of before (default: True for avg/max pools).
        pool_include_prefix: avg/max pools include the prefix tokens.
        drop_rate: dropout before the head.
        proj_drop_rate, attn_drop_rate, drop_path_rate: dropouts and stochastic depth (linear rule).
        latent_dim: propagation scan width C_c (default C // 18 rounded up to 16).
        gate_groups: gate channels G per direction and neighbour (default C_c // 4).
        chunks: scan window per layer: None (global lines), an int for all layers, or a sequence
            with one entry (int or None) per layer, e.g. ``[4, 4, None, ...]`` (local early layers).
        attn_layers: indices of the blocks that keep standard (SDPA) attention (hybrid);
            negative indices count from the end.
        scan_backend: gspn2d backend for every propagation mixer (None = Triton on CUDA,
            reference on CPU).
        weight_init: '' (timm init) or 'skip'.
        norm_layer, act_layer, mlp_layer: as timm's ViT.
    """

    pos_embed = None  # no positional embedding; kept as None for timm utilities that look for it

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: Literal["", "avg", "avgmax", "max", "token", "map"] = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        init_values: float | None = None,
        class_token: bool = True,
        reg_tokens: int = 0,
        pre_norm: bool = False,
        final_norm: bool = True,
        fc_norm: bool | None = None,
        pool_include_prefix: bool = False,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        latent_dim: int | None = None,
        gate_groups: int | None = None,
        chunks: int | None | Sequence[int | None] = None,
        attn_layers: Sequence[int] = (),
        scan_backend: str | None = None,
        weight_init: Literal["", "skip"] = "",
        norm_layer: str | Callable[[int], nn.Module] | None = None,
        act_layer: str | Callable[[], nn.Module] | None = None,
        mlp_layer: Callable[..., nn.Module] = Mlp,
    ) -> None:
        super().__init__()
        if global_pool not in GLOBAL_POOL_TYPES:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOL_TYPES}, got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if isinstance(patch_size, (tuple, list)):
            if len(set(patch_size)) != 1:
                raise ValueError(f"patch_size must be square, got {patch_size}")
            patch_size = patch_size[0]
        if weight_init not in ("", "skip"):
            raise ValueError(f"weight_init must be '' or 'skip', got {weight_init!r}")
        norm_layer = get_norm_layer(norm_layer) or LayerNorm
        act_layer = get_act_layer(act_layer) or nn.GELU
        use_fc_norm = global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.patch_size = int(patch_size)
        self.has_class_token = class_token
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.pool_include_prefix = pool_include_prefix
        self.grad_checkpointing = False

        self.patch_embed = GridPatchEmbed(
            img_size=img_size, patch_size=self.patch_size, in_chans=in_chans, embed_dim=embed_dim, bias=not pre_norm
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.norm_pre = norm_layer(embed_dim) if pre_norm else nn.Identity()

        attn_set = set()
        for i in attn_layers:
            if not -depth <= int(i) < depth:
                raise ValueError(f"attn_layers entry {i} is out of range for depth {depth}")
            attn_set.add(int(i) % depth)
        self.attn_layers = tuple(sorted(attn_set))
        self.chunks = _per_layer("chunks", chunks, depth)
        dpr = [float(r) for r in torch.linspace(0, drop_path_rate, depth, device="cpu")] if depth else []
        self.blocks = nn.ModuleList(
            [
                CGSPNBlock(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    mixer_type="attention" if i in attn_set else "propagation",
                    num_prefix_tokens=self.num_prefix_tokens,
                    latent_dim=latent_dim,
                    gate_groups=gate_groups,
                    chunk=self.chunks[i],
                    scan_backend=scan_backend,
                    qkv_bias=qkv_bias,
                    qk_norm=qk_norm,
                    proj_bias=proj_bias,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    init_values=init_values,
                    drop_path=dpr[i],
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                    mlp_layer=mlp_layer,
                )
                for i in range(depth)
            ]
        )
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=self.patch_size) for i in range(depth)
        ]
        self.norm = norm_layer(embed_dim) if final_norm and not use_fc_norm else nn.Identity()
        if global_pool == "map":
            self.attn_pool = AttentionPoolLatent(
                embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, norm_layer=norm_layer
            )
        else:
            self.attn_pool = None
        self.fc_norm = norm_layer(embed_dim) if final_norm and use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        if weight_init != "skip":
            self.init_weights()

    # ------------------------------------------------------------------ init and timm plumbing
    def init_weights(self) -> None:
        """timm ViT init: trunc-normal(0.02) linears, zero biases, tiny prefix tokens; mixers and
        attention pools run their own ``init_weights`` (gates near "propagate straight")."""
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        named_apply(_init_weights_cgspn, self)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that should not use weight decay: the prefix tokens and each propagation
        mixer's ``merge_weight`` (a per-direction gain in front of a norm, like a norm's weight;
        1-D gains and biases are excluded by timm's optimizer factory already)."""
        names = {"cls_token", "reg_token"}
        for i, block in enumerate(self.blocks):
            if isinstance(block.mixer, LatentPropagation):
                names.add(f"blocks.{i}.mixer.merge_weight")
        return names

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Regexes grouping parameters into stem / blocks (layer-wise LR decay)."""
        return dict(
            stem=r"^cls_token|reg_token|patch_embed|norm_pre",
            blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def load_pretrained(self, path: str, strict: bool = True) -> None:
        """Load weights from a ``.safetensors`` file, a folder of safetensors shards (the shipped
        layout, see :mod:`cgspn.models.shipped`) or a ``.pth``/``.bin`` file (read with
        ``weights_only=True``). C-GSPN checkpoints load as they are; timm ViT checkpoints go
        through :func:`checkpoint_filter_fn`. A classifier of another size is dropped (the
        model keeps its own). timm calls this for ``pretrained=True`` when the config says
        ``custom_load``."""
        from pathlib import Path

        from .shipped import read_sharded

        p = Path(path)
        if p.suffix in (".pth", ".bin", ".pt") and p.is_file():
            state = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            state = read_sharded(p)
        state = checkpoint_filter_fn(state, self)
        own = self.state_dict()
        for k in ("head.weight", "head.bias"):
            if k in state and (k not in own or tuple(state[k].shape) != tuple(own[k].shape)):
                state.pop(k)
                if k in own:
                    state[k] = own[k]
        bad = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"weights {path} do not fit this model: {bad[0]} is {tuple(state[bad[0]].shape)}, "
                             f"the model has {tuple(own[bad[0]].shape)}")
        missing, unexpected = self.load_state_dict(state, strict=False)
        if strict and (missing or unexpected):
            raise ValueError(f"weights {path} do not fit this model: missing {missing[:4]}, unexpected {unexpected[:4]}")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def set_input_size(self, img_size: int | tuple[int, int] | None = None, patch_size: int | None = None) -> None:
        """Change the nominal input size and/or the patch size (the patch-embedding kernel is
        resampled, as timm does). Any size that is a multiple of the patch runs regardless."""
        self.patch_embed.set_input_size(img_size=img_size, patch_size=patch_size)
        self.patch_size = int(self.patch_embed.patch_size[0])
        self.feature_info = [dict(info, reduction=self.patch_size) for info in self.feature_info]

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with ``num_classes`` outputs (0 = Identity) and optionally the pool.

        The MAP pool can be removed (switching to another pool) but not added afterwards.
        """
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in GLOBAL_POOL_TYPES:
                raise ValueError(f"global_pool must be one of {GLOBAL_POOL_TYPES}, got {global_pool!r}")
            if global_pool == "token" and not self.has_class_token:
                raise ValueError("global_pool='token' needs a class token")
            if global_pool == "map" and self.attn_pool is None:
                raise ValueError("cannot add a MAP attention pool in reset_classifier(); build the model with global_pool='map'")
            if global_pool != "map" and self.attn_pool is not None:
                self.attn_pool = None
            self.global_pool = global_pool
        ref = self.patch_embed.proj.weight
        self.head = (
            nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype) if num_classes > 0 else nn.Identity()
        )

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """images (B, in_chans, H*p, W*p) -> (tokens (B, P + H*W, C), (H, W)).

        Patch embedding, then the prefix tokens (class, registers) prepended, then ``norm_pre``
        (Identity unless pre_norm). No positional embedding. Raises ValueError on a wrong rank,
        channel count, or a side that is not a multiple of the patch.
        """
        x = self.patch_embed(x)  # (B, H, W, C)
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(B, -1, -1).to(x.dtype))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1).to(x.dtype))
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        return self.norm_pre(x), (H, W)

    def _run_block(self, block: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, x, grid, use_reentrant=False)
        return block(x, grid)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, in_chans, H*p, W*p) -> normalised tokens (B, P + H*W, C)."""
        x, grid = self.embed(x)
        for block in self.blocks:
            x = self._run_block(block, x, grid)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        """Tokens (B, P + N, C) -> pooled (B, C) (or unchanged for pool type '')."""
        if self.attn_pool is not None:
            if not self.pool_include_prefix:
                x = x[:, self.num_prefix_tokens:]
            return self.attn_pool(x)
        pool_type = self.global_pool if pool_type is None else pool_type
        return _pool_tokens(x, pool_type, self.num_prefix_tokens, self.pool_include_prefix)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens from :meth:`forward_features` -> logits (B, num_classes), or pooled (B, C) if pre_logits."""
        x = self.pool(x)
        x = self.fc_norm(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """images (B, in_chans, H*p, W*p) -> logits (B, num_classes) (pooled features if num_classes=0)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]] | dict[str, Any]:
        """Block outputs as features (timm API).

        Args:
            x: images (B, in_chans, H*p, W*p).
            indices: last n blocks if int, all if None, else these block indices.
            return_prefix_tokens: pair each intermediate with its prefix tokens (B, P, C).
            norm: apply the final norm to each intermediate.
            stop_early: stop after the last requested block.
            output_fmt: 'NCHW' -> (B, C, H, W) grids, 'NLC' -> (B, H*W, C) tokens.
            intermediates_only: return only the intermediates.
            output_dict: return {'image_intermediates', ['image_intermediates_prefix'], ['image_features']}.

        Returns:
            (final normalised tokens (B, P + H*W, C), intermediates), or the intermediates, or a dict.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, (H, W) = self.embed(x)
        B = x.shape[0]
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, (H, W))
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        P = self.num_prefix_tokens
        prefix_tokens = [y[:, :P] for y in intermediates] if P else None
        intermediates = [y[:, P:] for y in intermediates]
        if output_fmt == "NCHW":
            intermediates = [y.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if output_dict:
            out: dict[str, Any] = {"image_intermediates": intermediates}
            if prefix_tokens is not None and return_prefix_tokens:
                out["image_intermediates_prefix"] = prefix_tokens
            if not intermediates_only:
                out["image_features"] = self.norm(x)
            return out
        if return_prefix_tokens and prefix_tokens is not None:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last index in ``indices`` (and optionally the norm and head)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.chunks = self.chunks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take_indices

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_prefix_tokens: bool = False,
        norm: bool = False,
    ) -> list[torch.Tensor]:
        """DINO-style alias of :meth:`forward_intermediates` (NCHW if reshape, else NLC)."""
        return self.forward_intermediates(
            x, n, return_prefix_tokens=return_prefix_tokens, norm=norm,
            output_fmt="NCHW" if reshape else "NLC", intermediates_only=True,
        )


def _init_weights_cgspn(module: nn.Module, name: str = "") -> None:
    """timm's ViT init per module; modules with ``init_weights`` (mixers, attention pool) run their own."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif hasattr(module, "init_weights"):
        module.init_weights()


# ---------------------------------------------------------------------------- checkpoints
_BLOCK_ATTN = re.compile(r"^blocks\.(\d+)\.attn\.(.+)$")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: CGSPNVisionTransformer) -> dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: a C-GSPN checkpoint passes through; a timm ViT becomes a student.

    * timm's own ViT filter runs first, so OpenAI-CLIP / OpenCLIP-trunk / DINOv2 layouts convert
      to timm names (and a patch embedding of another patch size is resampled).
    * ``pos_embed`` is dropped (C-GSPN has none).
    * ``blocks.i.attn.*`` becomes ``blocks.i.mixer.*`` for the hybrid attention blocks. For the
      propagation blocks the teacher's attention initialises the mixer
      (:meth:`LatentPropagation.init_from_attention_weights`: ``proj`` copied, the latent value
      path from the SVD of the teacher's value projection) and the mixer's other parameters take
      the model's current values, so a timm ViT file loads strictly into a fresh student.

    Typical use: ``timm.create_model('cgspn_so400m_patch14_378', pretrained=True,
    pretrained_cfg_overlay=dict(file='vit_so400m_patch14_siglip_378.safetensors'))``, or
    ``model.load_state_dict(checkpoint_filter_fn(vit.state_dict(), model))``.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn as vit_filter

    state_dict = state_dict.get("model", state_dict)
    state_dict = state_dict.get("state_dict", state_dict)
    state_dict = vit_filter(dict(state_dict), model)
    out: dict[str, torch.Tensor] = {}
    teacher_attn: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in state_dict.items():
        if k == "pos_embed":
            continue
        m = _BLOCK_ATTN.match(k)
        if m is not None:
            i, rest = int(m.group(1)), m.group(2)
            if i >= len(model.blocks):
                continue
            if getattr(model.blocks[i], "mixer_type", None) == "attention":
                out[f"blocks.{i}.mixer.{rest}"] = v
            else:
                teacher_attn.setdefault(i, {})[rest] = v
            continue
        out[k] = v
    for i, weights in teacher_attn.items():
        if any(k.startswith(f"blocks.{i}.mixer.") for k in out):
            continue  # the checkpoint already carries this mixer
        mixer = model.blocks[i].mixer
        if not isinstance(mixer, LatentPropagation):
            continue
        needed = ("qkv.weight", "proj.weight")
        if any(n not in weights for n in needed):
            raise ValueError(f"blocks.{i}.attn in the checkpoint lacks {needed}: has {sorted(weights)}")
        mixer.init_from_attention_weights(
            weights["qkv.weight"], weights.get("qkv.bias"), weights["proj.weight"], weights.get("proj.bias")
        )
        for name, t in mixer.state_dict().items():
            out[f"blocks.{i}.mixer.{name}"] = t.detach().clone()
    return out


# ---------------------------------------------------------------------------- configs and registration
def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    """Default pretrained config (timm keys). ``fixed_input_size`` is False: any multiple of the patch runs."""
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_INCEPTION_MEAN,
        "std": IMAGENET_INCEPTION_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


def _shipped(name: str) -> dict[str, Any]:
    """pretrained_cfg keys for weights shipped in the package (``cgspn/weights/<name>``), if any:
    ``pretrained=True`` then loads them offline through :meth:`CGSPNVisionTransformer.load_pretrained`."""
    from .shipped import shipped_weights

    path = shipped_weights(name)
    if path is None:
        return {}
    return {"file": str(path), "custom_load": True}


default_cfgs = generate_default_cfgs(
    {
        "cgspn_tiny_patch16_224": _cfg(),
        "cgspn_small_patch14_dinov2": _cfg(
            input_size=(3, 518, 518), crop_pct=1.0, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, num_classes=0,
            **_shipped("cgspn_small_patch14_dinov2"),
        ),
        "cgspn_base_patch16_224": _cfg(),
        "cgspn_large_patch16_224": _cfg(),
        "cgspn_so400m_patch14_378": _cfg(input_size=(3, 378, 378), crop_pct=1.0, num_classes=0),
    }
)


def _create_cgspn_vit(variant: str, pretrained: bool = False, **kwargs: Any) -> CGSPNVisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        CGSPNVisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


@register_model
def cgspn_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> CGSPNVisionTransformer:
    """C-GSPN Ti/16, isomorphic to ``vit_tiny_patch16_224`` (192 wide, 12 deep)."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_cgspn_vit("cgspn_tiny_patch16_224", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def cgspn_small_patch14_dinov2(pretrained: bool = False, **kwargs: Any) -> CGSPNVisionTransformer:
    """C-GSPN S/14, isomorphic to ``vit_small_patch14_dinov2`` (384 wide, 12 deep, LayerScale 1e-5, 518 px)."""
    model_args = dict(patch_size=14, embed_dim=384, depth=12, num_heads=6, init_values=1e-5, img_size=518)
    return _create_cgspn_vit("cgspn_small_patch14_dinov2", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def cgspn_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> CGSPNVisionTransformer:
    """C-GSPN B/16, isomorphic to ``vit_base_patch16_224`` (768 wide, 12 deep)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_cgspn_vit("cgspn_base_patch16_224", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def cgspn_large_patch16_224(pretrained: bool = False, **kwargs: Any) -> CGSPNVisionTransformer:
    """C-GSPN L/16, isomorphic to ``vit_large_patch16_224`` (1024 wide, 24 deep)."""
    model_args = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)
    return _create_cgspn_vit("cgspn_large_patch16_224", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def cgspn_so400m_patch14_378(pretrained: bool = False, **kwargs: Any) -> CGSPNVisionTransformer:
    """C-GSPN SO400M/14, isomorphic to ``vit_so400m_patch14_siglip_378`` (1152 wide, 27 deep, MLP 4304,
    MAP pool, no class token)."""
    model_args = dict(
        patch_size=14, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362, class_token=False,
        global_pool="map", img_size=378,
    )
    return _create_cgspn_vit("cgspn_so400m_patch14_378", pretrained=pretrained, **dict(model_args, **kwargs))


# the isomorphic timm ViT of each registered model (for benchmarks and parameter ratios)
ISOMORPHIC_VIT = {
    "cgspn_tiny_patch16_224": "vit_tiny_patch16_224",
    "cgspn_small_patch14_dinov2": "vit_small_patch14_dinov2",
    "cgspn_base_patch16_224": "vit_base_patch16_224",
    "cgspn_large_patch16_224": "vit_large_patch16_224",
    "cgspn_so400m_patch14_378": "vit_so400m_patch14_siglip_378",
}
