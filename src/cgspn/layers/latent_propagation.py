"""The C-GSPN propagation sub-layer: a 4-direction GSPN scan in a compressed latent.

``LatentPropagation`` is what replaces self-attention in a C-GSPN block. It maps channels-last
tokens (B, H, W, C) to (B, H, W, C)::

    a          = in_proj(x)                                  C -> C_c + 4 C_c + 4 C_c + 12 G   (one GEMM)
    v, lam, u, z = split(a)       v (C_c): the latent value; lam = sigmoid(.) (4, C_c): input gates;
                                  u (4, C_c): output gates; z (4, 3, G): raw gate logits
    y          = gspn2d(v, lam, z, u=u, chunk)               (B, H, W, 4, C_c), gate normalisation fused
    m          = latent_norm(sum_d merge_weight[d] * y[..., d, :])        (B, H, W, C_c)
    out        = proj(act(up(m)))                            C_c -> C -> C

See :class:`LatentPropagation` for why each piece is where it is.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import gspn2d, latent_readout

__all__ = ["LatentPropagation", "default_latent_dim", "default_gate_groups", "mixer_weight_params"]

NUM_DIRECTIONS = 4
NUM_NEIGHBOURS = 3


def default_latent_dim(dim: int, reduction: int = 18, multiple: int = 16) -> int:
    """The default scan width C_c: ``dim // reduction`` rounded up to a multiple of ``multiple``.

    1152 -> 64 (SO400M), 1024 -> 64 (L), 768 -> 48 (B), 384 -> 32 (S), 192 -> 16 (Ti); never below
    ``multiple``. C-GSPN found a compression of 18 the best of 12/18/72 at SO400M width.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return max(multiple, -(-(dim // reduction) // multiple) * multiple)


def default_gate_groups(latent_dim: int) -> int:
    """Default number of gate groups G: one gate per 4 latent channels (``latent_dim // 4``).

    At the B, L and SO400M widths this equals the teacher's head count (48 -> 12, 64 -> 16): each
    group is one propagation pattern, as each head is one attention pattern. Falls back to
    per-channel gates (G = latent_dim) when latent_dim is not a multiple of 4.
    """
    return latent_dim // 4 if latent_dim % 4 == 0 else latent_dim


class LatentPropagation(nn.Module):
    """4-direction GSPN propagation in a compressed latent; (B, H, W, C) -> (B, H, W, C).

    Where the pieces come from, and why:

    * **One input GEMM from the full-width token** produces the latent value ``v`` (C_c), the
      per-direction input gates ``lam`` (4 x C_c, through a sigmoid), the per-direction output
      gates ``u`` (4 x C_c, linear) and the raw gate logits ``z`` (4 directions x 3 neighbours x G).
      Gates, lam and u decide *where* and *how much* to propagate, which is the job of attention's
      queries and keys; they are read off the full C-wide token rather than off the C_c-wide latent
      (which only carries *what* propagates, like the values), and one fused GEMM reads x once.
    * **The scan** is :func:`cgspn.ops.gspn2d` on C_c channels: the sigmoid gate normalisation is
      fused inside, state is float32, each direction's output is mapped back to the grid frame.
      Gates are shared by groups of ``latent_dim // gate_groups`` channels (default 4; G equals the
      teacher's head count at B/L/SO400M widths); per-channel gates (``gate_groups=latent_dim``)
      make the scan read 12 C_c gate logits per token instead of 3 C_c.
    * **Merge**: learned per-direction, per-channel weights ``merge_weight`` (4, C_c), init 1/4,
      then the latent norm (LayerNorm over C_c by default). The norm makes the output scale
      independent of the grid size: each direction accumulates mass ~ the number of lines scanned.
      The weights are folded into u before the scan (:meth:`weighted_u`), so the merge is a plain
      sum, which :meth:`readout` fuses with the norm, ``up`` and ``act`` into one kernel
      (:func:`cgspn.ops.latent_readout`) for the default LayerNorm + GELU.
    * **Read-out**: ``up`` (C_c -> C), ``act`` (GELU), ``proj`` (C -> C). ``proj`` is a C x C map
      so it can start from the teacher's attention output projection (:meth:`init_from_attention`);
      the activation between ``up`` and ``proj`` keeps them from being one C_c x C matrix paid twice
      and lets the read-out leave the rank-C_c subspace ``up`` spans.
    * **No GSPN-1 shell**: no channel expansion, no ``x * D`` inner residual, no GRN.

    Parameter budget (weights only): in_proj ``C (9 C_c + 12 G)`` + up ``C_c C`` + proj ``C^2``.
    With the defaults (C_c = C/18, G = C_c/4) that is ``C^2 (1 + 1/18 + 9/18 + 12/72) = 1.72 C^2``
    against attention's ``4 C^2`` (cgspn_so400m_patch14_378: 345.7M parameters, 0.807 of the ViT's
    428.2M); per-channel gates (G = C_c) give ``2.22 C^2``, the paper's budget (363.7M, 0.849; the
    paper reports 365M vs 427M). The default spends less because the input GEMM and the gate
    bytes the scan reads are the mixer's cost at high resolution, where the block's speed-up is
    bounded by the MLP (see ``cgspn bench block``); ``gate_groups`` trades the two.

    Initialisation ("propagate straight"): the logit biases favour the neighbour straight ahead
    (``+straight_gate_bias`` for the centre gate, ``-straight_gate_bias`` for the two diagonals:
    g2 ~ 0.79 at the default 2.0, so mass diffuses slowly sideways); lam starts at sigmoid(0) = 0.5,
    u at 1 (read the state as is), weights trunc-normal(0.02) like timm's ViT.

    Args:
        dim: token width C.
        latent_dim: scan width C_c (default :func:`default_latent_dim`, C // 18 rounded up to 16).
        gate_groups: G, gate channels per direction and neighbour; must divide latent_dim
            (default :func:`default_gate_groups`).
        chunk: scan window along each direction's scan axis (None = global lines); see gspn2d.
        act_layer: activation between ``up`` and ``proj``.
        norm_layer: latent norm, called as ``norm_layer(latent_dim)``.
        bias: biases of in_proj, up and proj.
        proj_drop: dropout after ``proj``.
        straight_gate_bias: initial logit margin of the straight-ahead gate (see above).
        backend: gspn2d backend ("reference", "triton" or None = Triton on CUDA, reference on CPU).
    """

    def __init__(
        self,
        dim: int,
        latent_dim: int | None = None,
        gate_groups: int | None = None,
        chunk: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        bias: bool = True,
        proj_drop: float = 0.0,
        straight_gate_bias: float = 2.0,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        latent_dim = default_latent_dim(dim) if latent_dim is None else int(latent_dim)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        gate_groups = default_gate_groups(latent_dim) if gate_groups is None else int(gate_groups)
        if gate_groups < 1 or latent_dim % gate_groups != 0:
            raise ValueError(f"gate_groups={gate_groups} must divide latent_dim={latent_dim}")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"chunk must be None or an int >= 1, got {chunk!r}")
        self.dim = dim
        self.latent_dim = latent_dim
        self.gate_groups = gate_groups
        self.chunk = chunk
        self.backend = backend
        self.straight_gate_bias = float(straight_gate_bias)

        self.in_proj = nn.Linear(dim, self.in_proj_features, bias=bias)
        self.merge_weight = nn.Parameter(torch.empty(NUM_DIRECTIONS, latent_dim))
        self.latent_norm = norm_layer(latent_dim)
        self.up = nn.Linear(latent_dim, dim, bias=bias)
        self.act = act_layer()
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.init_weights()

    # ------------------------------------------------------------------ sizes and init
    @property
    def split_sizes(self) -> list[int]:
        """Widths of (v, lam, u, gate logits) in ``in_proj``'s output, in that order."""
        c = self.latent_dim
        return [c, NUM_DIRECTIONS * c, NUM_DIRECTIONS * c, NUM_DIRECTIONS * NUM_NEIGHBOURS * self.gate_groups]

    @property
    def in_proj_features(self) -> int:
        return sum(self.split_sizes)

    def _bias_segments(self) -> dict[str, slice]:
        names = ("value", "lam", "u", "gates")
        out, start = {}, 0
        for n, size in zip(names, self.split_sizes):
            out[n] = slice(start, start + size)
            start += size
        return out

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init with the gates near "propagate straight" (see the class docstring)."""
        for lin in (self.in_proj, self.up, self.proj):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self._init_gate_biases()
        nn.init.constant_(self.merge_weight, 1.0 / NUM_DIRECTIONS)
        if hasattr(self.latent_norm, "reset_parameters"):
            self.latent_norm.reset_parameters()

    @torch.no_grad()
    def _init_gate_biases(self) -> None:
        """lam logits 0, u = 1, gate logits (-b, +b, -b) per (direction, group)."""
        b = self.in_proj.bias
        if b is None:
            return
        seg = self._bias_segments()
        b[seg["lam"]].zero_()
        b[seg["u"]].fill_(1.0)
        gates = b[seg["gates"]].view(NUM_DIRECTIONS, NUM_NEIGHBOURS, self.gate_groups)
        gates.fill_(-self.straight_gate_bias)
        gates[:, 1].fill_(self.straight_gate_bias)

    @torch.no_grad()
    def init_from_attention(self, attn: nn.Module) -> None:
        """Initialise what can start from a teacher's timm ``Attention`` (``qkv``, ``proj``).

        * ``proj`` (C x C weight and bias) is copied from ``attn.proj``: the read-out starts in the
          teacher's output basis.
        * The latent value rows of ``in_proj`` and ``up`` become the rank-C_c truncated SVD of the
          teacher's value projection ``W_v = U S V^T`` (``qkv.weight[2C:3C]``): value rows
          ``S^1/2 V^T``, ``up.weight = U S^1/2`` and ``up.bias = b_v``, so ``up(v)`` spans the value
          subspace the teacher uses most (the attention output is ``proj`` of averaged values; the
          scan averages latent values the same way).
        * Gates, lam, u, the merge and the latent norm keep the "propagate straight" init; they
          have no counterpart in attention (queries and keys act through the softmax).

        Raises ValueError when ``attn`` is not a C-wide timm Attention (``qkv``: C -> 3C,
        ``proj``: C -> C).
        """
        qkv, proj = getattr(attn, "qkv", None), getattr(attn, "proj", None)
        if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear):
            raise ValueError(
                f"init_from_attention needs a timm Attention with nn.Linear 'qkv' and 'proj', got {type(attn).__name__}"
            )
        self.init_from_attention_weights(qkv.weight, qkv.bias, proj.weight, proj.bias)

    @torch.no_grad()
    def init_from_attention_weights(
        self,
        qkv_weight: torch.Tensor,
        qkv_bias: torch.Tensor | None,
        proj_weight: torch.Tensor,
        proj_bias: torch.Tensor | None,
    ) -> None:
        """:meth:`init_from_attention` from raw tensors: qkv_weight (3C, C), qkv_bias (3C,),
        proj_weight (C, C), proj_bias (C,) (timm ``Attention`` layout: rows q, k, v)."""
        C, Cc = self.dim, self.latent_dim
        if tuple(qkv_weight.shape) != (3 * C, C):
            raise ValueError(f"qkv weight must have shape (3C, C) = ({3 * C}, {C}), got {tuple(qkv_weight.shape)}")
        if tuple(proj_weight.shape) != (C, C):
            raise ValueError(f"proj weight must have shape (C, C) = ({C}, {C}), got {tuple(proj_weight.shape)}")
        self.proj.weight.copy_(proj_weight)
        if self.proj.bias is not None:
            if proj_bias is not None:
                self.proj.bias.copy_(proj_bias)
            else:
                self.proj.bias.zero_()
        w_v = qkv_weight[2 * C:].float()
        U, S, Vh = torch.linalg.svd(w_v, full_matrices=False)
        root = S[:Cc].sqrt()
        dev, dt = self.in_proj.weight.device, self.in_proj.weight.dtype
        self.in_proj.weight[:Cc].copy_((root[:, None] * Vh[:Cc]).to(dev, dt))
        if self.in_proj.bias is not None:
            self.in_proj.bias[:Cc].zero_()
        self.up.weight.copy_((U[:, :Cc] * root[None, :]).to(dev, dt))
        if self.up.bias is not None:
            if qkv_bias is not None:
                self.up.bias.copy_(qkv_bias[2 * C:])
            else:
                self.up.bias.zero_()

    # ------------------------------------------------------------------ forward pieces
    def project_in(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., C) -> v (..., C_c), lam (..., 4, C_c) in (0, 1), u (..., 4, C_c), z (..., 4, 3, G)."""
        v, lam, u, z = self.in_proj(x).split(self.split_sizes, dim=-1)
        lead = x.shape[:-1]
        lam = torch.sigmoid(lam).view(*lead, NUM_DIRECTIONS, self.latent_dim)
        u = u.view(*lead, NUM_DIRECTIONS, self.latent_dim)
        z = z.view(*lead, NUM_DIRECTIONS, NUM_NEIGHBOURS, self.gate_groups)
        return v, lam, u, z

    def project_in_weighted(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., C) -> v (..., C_c), lam *logits* (..., 4, C_c), ``merge_weight * u`` (..., 4, C_c), z (..., 4, 3, G).

        One GEMM whose u rows are pre-scaled by the merge weights (``W_u * w``, ``b_u * w``: the same
        product as :meth:`weighted_u`, for a 1.7 MB weight instead of an (N, 4 C_c) activation), and
        no sigmoid: lam and u stay strided views of the GEMM output with equal strides, which the
        scan reads as they are (``gspn2d(..., lam_logits=True)`` applies the sigmoid in the kernel).
        """
        c, g = self.latent_dim, self.gate_groups
        w = self.merge_weight.reshape(-1).to(self.in_proj.weight.dtype)
        ones = w.new_ones(c + NUM_DIRECTIONS * c)
        scale = torch.cat([ones, w, w.new_ones(NUM_DIRECTIONS * NUM_NEIGHBOURS * g)])
        bias = self.in_proj.bias * scale if self.in_proj.bias is not None else None
        v, lam, u, z = F.linear(x, self.in_proj.weight * scale[:, None], bias).split(self.split_sizes, dim=-1)
        lead = x.shape[:-1]
        return (v, lam.view(*lead, NUM_DIRECTIONS, c), u.view(*lead, NUM_DIRECTIONS, c),
                z.view(*lead, NUM_DIRECTIONS, NUM_NEIGHBOURS, g))

    def propagate(
        self, v: torch.Tensor, lam: torch.Tensor, z: torch.Tensor, u: torch.Tensor, lam_logits: bool = False
    ) -> torch.Tensor:
        """The scan: v (B, H, W, C_c), lam/u (B, H, W, 4, C_c), z (B, H, W, 4, 3, G) -> (B, H, W, 4, C_c)."""
        return gspn2d(v, lam, z, u=u, chunk=self.chunk, backend=self.backend, lam_logits=lam_logits)

    def weighted_u(self, u: torch.Tensor) -> torch.Tensor:
        """u (..., 4, C_c) times the merge weights: the scan then returns ``merge_weight[d] * u_d * h_d``,
        so the merge is a plain sum over directions. The product is also the contiguous copy of u the
        scan kernel needs (u is a strided slice of ``in_proj``'s output), so the weights cost nothing."""
        return u * self.merge_weight.to(u.dtype)

    @property
    def fused_readout(self) -> bool:
        """True when :meth:`readout` runs as one op (:func:`cgspn.ops.latent_readout`): a LayerNorm
        latent norm over C_c and the exact GELU, the defaults. Other norms / activations run unfused."""
        ln = self.latent_norm
        return (
            type(ln) is nn.LayerNorm and tuple(ln.normalized_shape) == (self.latent_dim,)
            and type(self.act) is nn.GELU and self.act.approximate == "none"
        )

    def readout(self, y: torch.Tensor) -> torch.Tensor:
        """Sum over directions, latent norm, ``up``, ``act``: y (..., D, C_c) -> (..., C), D >= 1.

        With the default LayerNorm + GELU this is one fused op (the (..., C) pre-activation is
        never written); see :attr:`fused_readout`.
        """
        if self.fused_readout:
            ln = self.latent_norm
            return latent_readout(y, ln.weight, ln.bias, self.up.weight, self.up.bias, eps=ln.eps, backend=self.backend)
        return self.act(self.up(self.latent_norm(y.sum(dim=-2))))

    def project_out(self, m: torch.Tensor) -> torch.Tensor:
        """Merged latent (..., C_c) -> normalised, lifted and projected output (..., C)."""
        return self.proj_drop(self.proj(self.readout(m.unsqueeze(-2))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) channels-last tokens -> (B, H, W, C)."""
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(
                f"LatentPropagation expects channels-last tokens (B, H, W, C={self.dim}), got shape {tuple(x.shape)}"
            )
        v, lam, uw, z = self.project_in_weighted(x)  # merge weights folded into u, lam as logits
        y = self.propagate(v, lam, z, uw, lam_logits=True)
        return self.proj_drop(self.proj(self.readout(y)))  # the merge (a sum) is fused into the read-out

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, latent_dim={self.latent_dim}, gate_groups={self.gate_groups}, chunk={self.chunk}"
            + (f", backend={self.backend!r}" if self.backend else "")
        )


def mixer_weight_params(dim: int, latent_dim: int | None = None, gate_groups: int | None = None) -> float:
    """Weights of a :class:`LatentPropagation` in units of dim**2 (biases and norms excluded)."""
    c = default_latent_dim(dim) if latent_dim is None else latent_dim
    g = default_gate_groups(c) if gate_groups is None else gate_groups
    n = dim * (9 * c + 12 * g) + c * dim + dim * dim
    return n / float(dim * dim)

