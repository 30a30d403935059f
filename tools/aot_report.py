"""Compile the GSPN kernels ahead of time for a GPU target on a machine without a GPU, and report
what the compiler made of them: registers, spill (stack) bytes, shared memory, the layout
conversions in the scan loop, and the warp shuffles, barriers and global load widths of the whole
kernel's PTX (prologue and loop: the prologue issues the first step's loads, so about half the
loads of a prefetching kernel are the loop's).

It builds the exact launch the library would make (``gspn2d_fwd_launch`` / ``gspn2d_bwd_launch`` on
``meta``-device tensors: shapes and strides, no data), derives the signature Triton's runtime
would specialise (pointer alignment, integers divisible by 16, integers equal to 1), and compiles it
with ``triton.compile(..., target=GPUTarget("cuda", arch, 32))``. No device time is spent, so this
screens launch configurations before a GPU run (docs/design.md, "Where the time goes").

    PYTHONPATH=src python3 tools/aot_report.py --shape 32,147,147,64 --groups 16 --dtype bf16 --pass fwd
    PYTHONPATH=src python3 tools/aot_report.py --shape 32,147,147,64 --groups 16 --config 32,8,1,0,1,0,5
    PYTHONPATH=src python3 tools/aot_report.py --shape 32,147,147,64 --groups 1 --pass bwd --json out.json
    PYTHONPATH=src python3 tools/aot_report.py --shape 32,74,74,64 --groups 16,C --sweep   # bench op's sweep grid
    PYTHONPATH=src python3 tools/aot_report.py --shape 32,74,74,64 --groups 1 --pass both --sass   # + the loop's SASS

``--sass`` disassembles the scan loop (cuobjdump): its instruction count per element of a line step,
the most frequent opcodes, and where in the loop the global loads, stores and barriers sit (ptxas
may schedule a prefetch's loads after the step's math; docs/design.md, fifth session), and its
shared-memory accesses: the TTGIR's layout conversions include free ones (between layouts that
give each thread the same elements), which leave no LDS / STS.

``--config`` is a LaunchConfig as block_l,block_c,num_warps,prefetch,num_stages,joined,split[,scratch[,fence[,maxnreg[,asm_dz[,evict[,flat[,unroll[,row_gates]]]]]]]].
Prints one line (and optionally JSON) per compiled kernel. Run under the Triton version whose code
you want to see (the H200 has 3.6; pip may bring a newer one here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def signature_of(launch: Any) -> tuple[dict[str, str], dict[tuple[int, ...], Any], dict[tuple[int, ...], Any]]:
    """(signature, constexprs, attrs) of a KernelLaunch the way Triton's runtime specialises it."""
    names = list(launch.kernel.arg_names)
    sig: dict[str, str] = {}
    cons: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], Any] = {}
    for i, (name, value) in enumerate(zip(names, launch.args)):
        if isinstance(value, torch.Tensor):
            sig[name] = "*" + _TRITON_TYPES[value.dtype]
            if (value.storage_offset() * value.element_size()) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, int):
            if value == 1:
                sig[name] = "constexpr"
                cons[(i,)] = 1
            else:
                sig[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            raise TypeError(f"argument {name}: unsupported {type(value).__name__}")
    for name, value in launch.meta.items():
        if name in ("num_warps", "num_stages", "num_ctas", "maxnreg"):
            continue
        sig[name] = "constexpr"
        cons[(names.index(name),)] = value
    for i, p in enumerate(launch.kernel.params):  # constexprs the launch leaves at their defaults
        if p.name not in sig and p.is_constexpr and p.has_default:
            sig[p.name] = "constexpr"
            cons[(i,)] = p.default
    return {n: sig[n] for n in names if n in sig}, cons, attrs


def _cuobjdump() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def resources(cubin: bytes) -> dict[str, int]:
    """Registers, stack (spill) and shared bytes from cuobjdump's resource usage."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if not m:
        return {}
    return {"registers": int(m[1]), "stack_bytes": int(m[2]), "shared_bytes": int(m[3]), "local_bytes": int(m[4])}


def sass_loop(cubin: bytes) -> dict[str, Any]:
    """The scan loop in the cubin's SASS (the longest backward branch): its instruction count, the
    most frequent opcodes, and where in it the global loads, stores and barriers sit (as a fraction
    of the loop: ptxas may schedule a prefetch's loads after the step's math)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_cuobjdump(), "-sass", f.name], capture_output=True, text=True).stdout
    seq = [(int(m[1], 16), m[2].strip()) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", out)]
    # the whole kernel's instruction stream, hashed: equal digests = the same machine code (a
    # refactor of the kernel source that should not change it can be checked without a GPU)
    digest = hashlib.sha256("\n".join(ins for _, ins in seq).encode()).hexdigest()[:16]
    best = None
    for addr, ins in seq:
        b = re.search(r"\bBRA\s+(?:\S+\s+)?0x([0-9a-f]+)", ins)
        if b and int(b[1], 16) < addr and (best is None or addr - int(b[1], 16) > best[1] - best[0]):
            best = (int(b[1], 16), addr)
    if best is None:
        return {"sass_sha256": digest}
    body = [ins for addr, ins in seq if best[0] <= addr <= best[1]]
    ops = [re.sub(r"^@!?U?P\w+\s+", "", ins).split()[0].split(".")[0] for ins in body]
    hist: dict[str, int] = {}
    for op in ops:
        hist[op] = hist.get(op, 0) + 1
    where = lambda name: [round(i / max(1, len(ops) - 1), 2) for i, op in enumerate(ops) if op == name]
    return {"sass_sha256": digest, "loop_sass_instructions": len(body), "loop_opcodes": dict(sorted(hist.items(), key=lambda kv: -kv[1])[:12]),
            "loop_ldg_at": where("LDG"), "loop_stg_at": where("STG"), "loop_bar_at": where("BAR"),
            # shared-memory accesses: a layout conversion in the TTGIR between layouts that map the same
            # elements to the same threads costs none (loop_sass_shared 0 with conversions counted)
            "loop_sass_shared": sum(op in ("LDS", "STS", "LDSM", "STSM") for op in ops), "loop_sass": body}


def elements_per_thread(meta: dict[str, Any], split: int) -> float:
    """Elements of one line step a thread holds: the tile(s) over the program's threads."""
    rows = meta.get("BLOCK_K", meta.get("BLOCK_L", 1)) * max(1, split)
    return rows * meta["BLOCK_C"] / (32 * meta["num_warps"])


def compile_report(launch: Any, arch: int = 90, sass: bool = False) -> dict[str, Any]:
    """Compile one KernelLaunch for sm_<arch> and summarise the result."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, cons, attrs = signature_of(launch)
    src = ASTSource(launch.kernel, sig, constexprs=cons, attrs=attrs)
    opts = {k: v for k, v in launch.meta.items() if k in ("num_warps", "num_stages", "maxnreg")}
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
    ttgir, ptx = k.asm["ttgir"], k.asm["ptx"]
    loop = ttgir[ttgir.find("scf.for"):] if "scf.for" in ttgir else ""
    loads: dict[str, int] = {}
    for m in re.findall(r"ld\.global(?:\.[A-Za-z0-9_:]+)*", ptx):
        loads[m] = loads.get(m, 0) + 1
    extra: dict[str, Any] = {"cache_policies": len(re.findall(r"createpolicy", ptx))}
    if sass:
        extra = sass_loop(k.asm["cubin"])
        name = getattr(launch.kernel, "__name__", "")
        split = int(m[1]) if (m := re.search(r"split_r(\d+)", name)) else 1
        if extra:
            extra["loop_sass_per_element"] = round(extra["loop_sass_instructions"] / elements_per_thread(launch.meta, split), 1)
    return {
        **extra,
        "kernel": launch.kernel.__name__ if hasattr(launch.kernel, "__name__") else str(launch.kernel),
        "triton": triton.__version__,
        "arch": arch,
        "grid": list(launch.grid),
        "meta": {k: v for k, v in launch.meta.items()},
        **resources(k.asm["cubin"]),
        "dynamic_shared_bytes": int(getattr(k.metadata, "shared", 0) or 0),
        "layout_conversions_in_loop": loop.count("convert_layout"),
        "shuffles": ptx.count("shfl.sync"),
        "shared_stores": ptx.count("st.shared"),
        "barriers": ptx.count("bar.sync"),
        "global_loads": loads,
    }


def _config(text: str | None):
    from cgspn.ops.gspn.triton_backend import LaunchConfig

    if not text:
        return None
    v = [int(t) for t in text.split(",")]
    if len(v) not in range(7, 16):
        raise SystemExit("--config: block_l,block_c,num_warps,prefetch,num_stages,joined,split[,scratch[,fence[,maxnreg[,asm_dz[,evict[,flat[,unroll[,row_gates]]]]]]]] (7-15 integers)")
    return LaunchConfig(v[0], v[1], v[2], v[3], v[4], bool(v[5]), v[6], *(bool(t) for t in v[7:9]), *v[9:10], *(bool(t) for t in v[10:15]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="32,147,147,64", help="B,H,W,C (default: %(default)s)")
    p.add_argument("--groups", default="16", help="comma list of gate groups G, or C (default: %(default)s)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--pass", dest="which", default="fwd", choices=["fwd", "bwd", "both"])
    p.add_argument("--config", default=None, help="LaunchConfig override (see the module docstring)")
    p.add_argument("--sweep", action="store_true", help="compile every config `cgspn bench op --sweep` would time")
    p.add_argument("--no-u", action="store_true")
    p.add_argument("--lam-logits", action="store_true")
    p.add_argument("--save-h", action="store_true", help="forward that also writes the state (training)")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--json", default=None, help="also write the reports here")
    p.add_argument("--sass", action="store_true", help="also disassemble the scan loop: instructions (per element), "
                                                       "opcodes, where its loads / stores / barriers sit")
    p.add_argument("--dump-loop", default=None, metavar="PREFIX",
                   help="with --sass: write each kernel's scan-loop SASS to PREFIX<n>.sass (one instruction a line)")
    args = p.parse_args(argv)

    from cgspn.bench.op import sweep_backward_configs, sweep_configs
    from cgspn.ops.gspn.triton_backend import gspn2d_bwd_launch, gspn2d_fwd_launch

    B, H, W, C = (int(t) for t in args.shape.split(","))
    dtype = DTYPES[args.dtype]
    cfg = _config(args.config)
    reports = []
    for gtxt in args.groups.split(","):
        G = C if gtxt.strip() == "C" else int(gtxt)
        mk = lambda *s: torch.empty(*s, device="meta", dtype=dtype)
        x, lam, z = mk(B, H, W, C), mk(B, H, W, 4, C), mk(B, H, W, 4, 3, G)
        u = None if args.no_u else mk(B, H, W, 4, C)
        L = max(H, W)
        fwd_cfgs = sweep_configs(L, C, B, (C // G) >= 8, dtype.itemsize) if args.sweep else [cfg]
        bwd_cfgs = sweep_backward_configs(L, C, C // G, B, dtype.itemsize) if args.sweep else [cfg]
        launches = []
        if args.which in ("fwd", "both"):
            launches += [("fwd", gspn2d_fwd_launch(x, lam, z, u, None, args.save_h, c, args.lam_logits)[0]) for c in fwd_cfgs]
        if args.which in ("bwd", "both"):
            launches += [("bwd", gspn2d_bwd_launch(mk(B, H, W, 4, C), x, lam, z, u, mk(B, H, W, 4, C), None,
                                                   c, args.lam_logits)[0]) for c in bwd_cfgs]
        for which, launch in launches:
            if "FAST" in launch.meta:  # meta tensors are not CUDA, but the target is: the CUDA fast math
                launch.meta["FAST"] = True
            r = {"shape": [B, H, W, C], "G": G, "dtype": args.dtype, "pass": which, **compile_report(launch, args.arch, args.sass)}
            reports.append(r)
            cfg_txt = {k: v for k, v in r["meta"].items() if k.isupper() and k.startswith(("BLOCK", "PREFETCH", "NUM_STAGES", "JOINED", "ZW", "DZ_ASM"))}
            print(f"{which} {args.shape} G={G} {args.dtype} {r['kernel']} warps={r['meta']['num_warps']} {cfg_txt}: "
                  f"regs {r.get('registers')} stack {r.get('stack_bytes')} B shared {r['dynamic_shared_bytes']} B | loop: "
                  f"{r['layout_conversions_in_loop']} layout conversions | whole kernel (prologue + loop): {r['shuffles']} shuffles, "
                  f"{r['barriers']} barriers, loads {r['global_loads']}", flush=True)
            if "sass_sha256" in r:
                print(f"    SASS sha256 {r['sass_sha256']}", flush=True)
            if args.dump_loop and "loop_sass" in r:
                with open(f"{args.dump_loop}{len(reports) - 1}.sass", "w") as f:
                    f.write("\n".join(r["loop_sass"]) + "\n")
            if "loop_sass_instructions" in r:
                span = lambda v: f"{v[0]:.0%}-{v[-1]:.0%}" if v else "-"
                print(f"    loop SASS: {r['loop_sass_instructions']} instructions ({r['loop_sass_per_element']} per element), "
                      f"LDG at {span(r['loop_ldg_at'])}, STG at {span(r['loop_stg_at'])}, {len(r['loop_bar_at'])} BAR, "
                      f"{r['loop_sass_shared']} LDS/STS; "
                      f"{r['loop_opcodes']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
