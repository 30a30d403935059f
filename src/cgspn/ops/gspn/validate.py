"""Input checks shared by every backend: clear errors naming the offending argument and shapes."""

from __future__ import annotations

import torch

__all__ = ["check_line_scan_inputs", "check_gspn2d_inputs", "check_chunk"]


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor (float32, bfloat16, float16 or float64), got {t.dtype}"
        )
    return t


def check_chunk(chunk: object) -> int | None:
    """``chunk`` is None (global lines) or an int >= 1 (window length along the scan axis)."""
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise TypeError(f"chunk must be None or an int >= 1, got {chunk!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be None or an int >= 1, got {chunk}")
    return chunk


def _check_same_device(named: dict[str, torch.Tensor]) -> None:
    devices = {n: t.device for n, t in named.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all inputs must be on the same device, got {listing}")


def check_line_scan_inputs(
    x: torch.Tensor, lam: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor, chunk: object
) -> int | None:
    """x, lam, g1, g2, g3: (N, C, H, W), identical shapes, floating, one device."""
    named = {"x": x, "lam": lam, "g1": g1, "g2": g2, "g3": g3}
    for n, t in named.items():
        _check_tensor(n, t)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got a {x.dim()}-d tensor of shape {tuple(x.shape)}")
    for n, t in named.items():
        if t.shape != x.shape:
            raise ValueError(
                f"{n} must have x's shape (N, C, H, W) = {tuple(x.shape)}, got {tuple(t.shape)}"
            )
    _check_same_device(named)
    return check_chunk(chunk)


def check_gspn2d_inputs(
    x: torch.Tensor, lam: torch.Tensor, gate_logits: torch.Tensor, u: torch.Tensor | None, chunk: object
) -> int | None:
    """x (B, H, W, C); lam, u (B, H, W, 4, C); gate_logits (B, H, W, 4, 3, G) with C % G == 0."""
    named = {"x": x, "lam": lam, "gate_logits": gate_logits}
    if u is not None:
        named["u"] = u
    for n, t in named.items():
        _check_tensor(n, t)
    if x.dim() != 4:
        raise ValueError(
            f"x must be channels-last tokens of shape (B, H, W, C), got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
        )
    B, H, W, C = x.shape
    want = (B, H, W, 4, C)
    for n in ("lam", "u"):
        t = named.get(n)
        if t is not None and tuple(t.shape) != want:
            raise ValueError(f"{n} must have shape (B, H, W, 4, C) = {want} for x of shape {tuple(x.shape)}, got {tuple(t.shape)}")
    z = gate_logits
    if z.dim() != 6 or tuple(z.shape[:5]) != (B, H, W, 4, 3):
        raise ValueError(
            f"gate_logits must have shape (B, H, W, 4, 3, G) = ({B}, {H}, {W}, 4, 3, G) for x of shape "
            f"{tuple(x.shape)}, got {tuple(z.shape)}"
        )
    G = z.shape[-1]
    if G < 1 or C % G != 0:
        raise ValueError(
            f"gate_logits' last dim G = {G} must divide the channel count C = {C} (C % G == 0; G = C per channel, G = 1 shared)"
        )
    _check_same_device(named)
    return check_chunk(chunk)
