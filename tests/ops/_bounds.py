"""Bounds checking for Triton kernels run under the interpreter (``TRITON_INTERPRET=1``, CPU).

On a GPU an out-of-bounds access faults only when it leaves mapped memory, so whether a stray
address crashes depends on where the caching allocator put the tensors (a kernel may pass every
GPU test and still fault inside a model). Under the interpreter every load and store is a numpy
gather / scatter on host addresses; :func:`checked_bounds` wraps them and raises if any address a
lane actually touches (its mask on) lies outside the extent of every tensor the launch was given.
"""

from __future__ import annotations

import contextlib
import traceback
from typing import Iterable, Iterator

import numpy as np
import torch


def _extent(t: torch.Tensor) -> tuple[int, int]:
    """[first byte, last byte + 1) of the elements a view can address."""
    lo = hi = 0
    for n, st in zip(t.shape, t.stride()):
        if n == 0:
            return t.data_ptr(), t.data_ptr()
        (hi := hi + (n - 1) * st) if st >= 0 else (lo := lo + (n - 1) * st)
    es = t.element_size()
    return t.data_ptr() + lo * es, t.data_ptr() + (hi + 1) * es


def _spans(tensors: Iterable[object]) -> list[tuple[int, int]]:
    return sorted({_extent(t) for t in tensors if isinstance(t, torch.Tensor) and t.numel() > 0})


class OutOfBounds(AssertionError):
    pass


@contextlib.contextmanager
def checked_bounds(name: str = "kernel") -> Iterator[list[str]]:
    """Within the block, every interpreted load and store must stay inside the tensor arguments of
    the launch in progress (so any code path may run in the block: public ops, autograd). Yields
    the list of violations found so far; the first one also raises :class:`OutOfBounds`."""
    from triton.runtime import interpreter as I

    stack: list[tuple[list[tuple[int, int]], np.ndarray, np.ndarray]] = []  # per launch: spans, starts, ends
    found: list[str] = []

    def check(kind: str, ptrs, mask) -> None:
        if not stack:
            return
        spans, starts, ends = stack[-1]
        addr = np.asarray(ptrs.data, dtype=np.uint64)
        on = np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)
        a = addr[on]
        if a.size == 0:
            return
        es = np.uint64(np.dtype(I._get_np_dtype(ptrs.get_element_ty())).itemsize)
        k = np.maximum(np.searchsorted(starts, a, side="right").astype(np.int64) - 1, 0)
        ok = (a >= starts[k]) & (a + es <= ends[k])
        if not ok.all():
            bad = int(a[~ok][0])
            near = min(range(len(spans)), key=lambda j: min(abs(bad - spans[j][0]), abs(bad - spans[j][1])))
            s0, s1 = spans[near]
            where = f"{bad - s1} bytes past the end" if bad >= s1 else f"{s0 - bad} bytes before the start"
            frames = [f for f in traceback.extract_stack() if "site-packages" not in f.filename and f.filename != __file__]
            src = f" at {frames[-1].filename}:{frames[-1].lineno} `{(frames[-1].line or '').strip()}`" if frames else ""
            msg = (f"{name}: {kind}{src} outside every argument ({int((~ok).sum())} lanes); the first, {hex(bad)}, is {where} "
                   f"of the argument spanning [{hex(s0)}, {hex(s1)}) ({s1 - s0} bytes)")
            found.append(msg)
            raise OutOfBounds(msg)

    B = I.InterpreterBuilder
    load, store = B.create_masked_load, B.create_masked_store
    call = I.GridExecutor.__call__

    def masked_load(self, ptrs, mask, other, *rest):
        check("load", ptrs, mask)
        return load(self, ptrs, mask, other, *rest)

    def masked_store(self, ptrs, value, mask, *rest):
        check("store", ptrs, mask)
        return store(self, ptrs, value, mask, *rest)

    def launch(self, *args, **kwargs):
        spans = _spans(list(args) + list(kwargs.values()))
        stack.append((spans, np.array([a for a, _ in spans], dtype=np.uint64), np.array([b for _, b in spans], dtype=np.uint64)))
        try:
            return call(self, *args, **kwargs)
        finally:
            stack.pop()

    B.create_masked_load, B.create_masked_store, I.GridExecutor.__call__ = masked_load, masked_store, launch
    try:
        yield found
    finally:
        B.create_masked_load, B.create_masked_store, I.GridExecutor.__call__ = load, store, call
