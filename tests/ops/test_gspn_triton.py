"""The fused Triton kernels against the reference: outputs and every gradient.

On CPU they run under the Triton interpreter (TRITON_INTERPRET=1, set in conftest.py) on small
awkward shapes; the same tests run on a GPU, where ``tests/ops/test_gspn_gpu.py`` adds large ones.
"""

import dataclasses

import pytest
import torch

from cgspn.ops import available_backends, gspn2d, line_scan, normalize_gates

from ._tolerance import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif("triton" not in available_backends(DEVICE), reason="Triton backend not runnable here")


def _run(fn, inputs, dy):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, [t for t in inputs if t is not None], dy)
    return out, grads


def gspn_case(B, H, W, C, G, chunk, with_u, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(DEVICE, dtype).requires_grad_()
    x, lam = mk(B, H, W, C), mk(B, H, W, 4, C)
    z = mk(B, H, W, 4, 3, G, scale=2.0)
    u = mk(B, H, W, 4, C) if with_u else None
    dy = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE, dtype)
    ref_in = [t.detach().double().cpu().requires_grad_() if t is not None else None for t in (x, lam, z, u)]
    want, want_g = _run(lambda a, b, c, d: gspn2d(a, b, c, u=d, chunk=chunk, backend="reference"), ref_in, dy.double().cpu())
    got, got_g = _run(lambda a, b, c, d: gspn2d(a, b, c, u=d, chunk=chunk, backend="triton"), [x, lam, z, u], dy)
    return got, got_g, want, want_g


CASES = [
    # (B, H, W, C, G, chunk, with_u)
    (2, 5, 7, 8, 8, None, True),
    (1, 6, 4, 8, 1, 2, False),
    (2, 3, 5, 6, 2, 3, True),  # group size 3: not a power of two
    (1, 1, 5, 4, 4, None, True),  # 1 x N
    (1, 5, 1, 4, 2, 2, False),  # N x 1
    (1, 9, 3, 3, 3, 7, True),  # odd channels, chunk longer than one side
    (1, 4, 4, 40, 5, None, True),  # more channels than one block
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}H{}W{}C{}G{}ck{}u{}".format(*c))
def test_gspn2d_triton_matches_reference(case):
    got, got_g, want, want_g = gspn_case(*case)
    assert got.dtype == torch.float32
    assert_close("y", got, want, 1e-5)
    for name, a, b in zip(("dx", "dlam", "dgate_logits", "du"), got_g, want_g):
        assert_close(name, a, b, 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gspn2d_triton_half_io(dtype):
    got, got_g, want, want_g = gspn_case(2, 5, 6, 8, 2, None, True, dtype=dtype, seed=1)
    assert got.dtype == dtype and all(g.dtype == dtype for g in got_g)
    ratio = {torch.bfloat16: 2e-2, torch.float16: 5e-3}[dtype]
    assert_close("y", got, want, ratio)
    for name, a, b in zip(("dx", "dlam", "dgate_logits", "du"), got_g, want_g):
        assert_close(name, a, b, ratio * 2)


# (2, 264, 40, 3): lines of 40 with batch x channels at which gspn2d's backward takes the split
# kernel; line_scan runs the general one, whose block must still cover the line
@pytest.mark.parametrize("shape,chunk", [((2, 3, 5, 7), None), ((1, 2, 1, 6), 4), ((1, 3, 6, 2), 1), ((2, 264, 40, 3), None)])
def test_line_scan_triton_matches_reference(shape, chunk):
    g = torch.Generator().manual_seed(2)
    mk = lambda: torch.randn(*shape, generator=g).to(DEVICE).requires_grad_()
    x, lam = mk(), mk()
    gates = [t.detach().requires_grad_() for t in normalize_gates(*(2 * torch.randn(3, *shape, generator=g)).to(DEVICE))]
    dy = torch.randn(*shape, generator=g).to(DEVICE)
    ins = [x, lam, *gates]
    want, want_g = _run(lambda *a: line_scan(*a, chunk=chunk, backend="reference"), ins, dy)
    got, got_g = _run(lambda *a: line_scan(*a, chunk=chunk, backend="triton"), ins, dy)
    assert_close("h", got, want, 1e-5)
    for name, a, b in zip(("dx", "dlam", "dg1", "dg2", "dg3"), got_g, want_g):
        assert_close(name, a, b, 1e-5)


def test_backward_is_deterministic_and_leaves_grad_output_alone():
    g = torch.Generator().manual_seed(3)
    B, H, W, C, G = 1, 4, 5, 8, 2
    x = torch.randn(B, H, W, C, generator=g).to(DEVICE).requires_grad_()
    lam = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE).requires_grad_()
    z = torch.randn(B, H, W, 4, 3, G, generator=g).to(DEVICE).requires_grad_()
    u = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE).requires_grad_()
    dy = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE)
    dy_copy = dy.clone()
    runs = [torch.autograd.grad(gspn2d(x, lam, z, u=u, backend="triton"), (x, lam, z, u), dy) for _ in range(2)]
    assert torch.equal(dy, dy_copy)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_opcheck_registered_ops():
    import cgspn.ops.gspn.op  # noqa: F401  (registers the custom ops; the dispatch imports it lazily)

    g = torch.Generator().manual_seed(4)
    B, H, W, C, G = 1, 3, 4, 4, 2
    x = torch.randn(B, H, W, C, generator=g).to(DEVICE).requires_grad_()
    lam = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE).requires_grad_()
    z = torch.randn(B, H, W, 4, 3, G, generator=g).to(DEVICE).requires_grad_()
    u = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE).requires_grad_()
    torch.library.opcheck(torch.ops.cgspn.gspn2d_fwd.default, (x, lam, z, u, 2, True))
    torch.library.opcheck(torch.ops.cgspn.gspn2d_fwd.default, (x, lam, z, None, 0, True))
    t = [torch.randn(1, 2, 3, 4, generator=g).to(DEVICE).requires_grad_() for _ in range(5)]
    torch.library.opcheck(torch.ops.cgspn.line_scan_fwd.default, (*t, 0))


def test_torch_compile_fullgraph_traces_the_op():
    g = torch.Generator().manual_seed(5)
    B, H, W, C, G = 1, 3, 4, 4, 4
    x = torch.randn(B, H, W, C, generator=g).to(DEVICE).requires_grad_()
    lam = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE)
    z = torch.randn(B, H, W, 4, 3, G, generator=g).to(DEVICE)

    def f(x, lam, z):
        return gspn2d(torch.tanh(x), lam, z, backend="triton").sum(3).square().mean()

    eager = f(x, lam, z)
    (ge,) = torch.autograd.grad(eager, x)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(x, lam, z)
    (gc,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(gc, ge)


def test_compiled_graph_holds_the_registered_op():
    """Under torch.compile the op is the registered custom op (one graph node), not the eager path."""
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 4, 4, generator=g).to(DEVICE)
    lam, z = torch.randn(1, 3, 4, 4, 4, generator=g).to(DEVICE), torch.randn(1, 3, 4, 4, 3, 2, generator=g).to(DEVICE)
    out = torch.compile(lambda a, b, c: gspn2d(a, b, c, backend="triton"), fullgraph=True, backend=recording_backend)(x, lam, z)
    torch.testing.assert_close(out, gspn2d(x, lam, z, backend="triton"))
    assert graphs and "cgspn.gspn2d_fwd" in graphs[0]


@pytest.mark.parametrize("with_u,chunk,lam_logits", [(True, None, False), (False, 3, True)])
def test_eager_path_matches_the_registered_op_bitwise(with_u, chunk, lam_logits):
    """Eager gspn2d skips the custom-op wrappers (op.py); it must give the registered op's outputs
    and gradients exactly (the same launches)."""
    import cgspn.ops.gspn.op  # noqa: F401  (registers the custom ops)

    g = torch.Generator().manual_seed(8)
    B, H, W, C, G = 2, 5, 7, 6, 3
    mk = lambda *s: torch.randn(*s, generator=g).to(DEVICE).requires_grad_()
    ins = [mk(B, H, W, C), mk(B, H, W, 4, C), mk(B, H, W, 4, 3, G), mk(B, H, W, 4, C) if with_u else None]
    dy = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE)
    leaves = [t for t in ins if t is not None]
    eager = gspn2d(*ins[:3], u=ins[3], chunk=chunk, backend="triton", lam_logits=lam_logits)
    registered, _ = torch.ops.cgspn.gspn2d_fwd(*ins, chunk or 0, True, lam_logits)
    assert torch.equal(eager, registered)
    for a, b in zip(torch.autograd.grad(eager, leaves, dy), torch.autograd.grad(registered, leaves, dy)):
        assert torch.equal(a, b)
    shape = (2, 3, 5, 4)
    ls = [torch.randn(*shape, generator=g).to(DEVICE).requires_grad_() for _ in range(5)]
    eager, registered = line_scan(*ls, chunk=chunk, backend="triton"), torch.ops.cgspn.line_scan_fwd(*ls, chunk or 0)
    assert torch.equal(eager, registered)
    dh = torch.randn(*shape, generator=g).to(DEVICE)
    for a, b in zip(torch.autograd.grad(eager, ls, dh), torch.autograd.grad(registered, ls, dh)):
        assert torch.equal(a, b)


def test_double_backward_refuses_clearly():
    """The backward kernels have no derivative: a second-order gradient raises instead of returning zeros."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 3, 4, 4, generator=g).to(DEVICE).requires_grad_()
    lam, z = torch.randn(1, 3, 4, 4, 4, generator=g).to(DEVICE), torch.randn(1, 3, 4, 4, 3, 1, generator=g).to(DEVICE)
    (dx,) = torch.autograd.grad(gspn2d(x, lam, z, backend="triton").square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        dx.sum().backward()


def test_strided_views_of_one_projection_need_no_copies():
    """lam, u and the gate logits as slices of one projection output (how the block calls it)."""
    g = torch.Generator().manual_seed(6)
    B, H, W, C, G = 1, 4, 5, 8, 2
    proj = torch.randn(B, H, W, 4 * (2 * C + 3 * G), generator=g).to(DEVICE).requires_grad_()
    x = torch.randn(B, H, W, C, generator=g).to(DEVICE).requires_grad_()
    parts = proj.view(B, H, W, 4, 2 * C + 3 * G)
    lam, u = parts[..., :C], parts[..., C : 2 * C]
    z = parts[..., 2 * C :].unflatten(-1, (3, G))
    assert not lam.is_contiguous() and lam.stride() == u.stride()
    dy = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE)
    got = gspn2d(x, lam, z, u=u, backend="triton")
    gg = torch.autograd.grad(got, (x, proj), dy)
    want = gspn2d(x, lam, z, u=u, backend="reference")
    gw = torch.autograd.grad(want, (x, proj), dy)
    assert_close("y", got, want, 1e-5)
    assert_close("dx", gg[0], gw[0], 1e-5)
    assert_close("dproj", gg[1], gw[1], 1e-5)


def test_direction_major_planes_keep_their_layout():
    """lam, u and the logits stored direction-major ((4, B, H, W, C) storage viewed as
    (B, H, W, 4, C)): no copies, y comes back in lam's layout, values and gradients as the reference."""
    g = torch.Generator().manual_seed(7)
    B, H, W, C, G = 2, 5, 6, 8, 4
    planes = lambda *s: torch.randn(4, *s, generator=g).to(DEVICE).requires_grad_()
    lam_p, u_p, z_p = planes(B, H, W, C), planes(B, H, W, C), planes(B, H, W, 3, G)
    x = torch.randn(B, H, W, C, generator=g).to(DEVICE).requires_grad_()
    lam, u, z = lam_p.permute(1, 2, 3, 0, 4), u_p.permute(1, 2, 3, 0, 4), z_p.permute(1, 2, 3, 0, 4, 5)
    dy = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE)
    got = gspn2d(x, lam, z, u=u, backend="triton")
    assert got.stride() == lam.stride()
    gg = torch.autograd.grad(got, (x, lam_p, u_p, z_p), dy)
    want = gspn2d(x, lam, z, u=u, backend="reference")
    gw = torch.autograd.grad(want, (x, lam_p, u_p, z_p), dy)
    assert_close("y", got, want, 1e-5)
    for name, a, b in zip(("dx", "dlam", "du", "dz"), gg, gw):
        assert_close(name, a, b, 1e-5)


@pytest.mark.parametrize("case", [(2, 5, 7, 8, 2, None, True), (1, 4, 6, 16, 4, 3, False)], ids=["G2u", "G4ck3"])
def test_gspn2d_triton_lam_logits(case):
    """lam_logits=True: the sigmoid of lam runs inside the kernel; output and every gradient (w.r.t.
    the logits) match the reference, which equals gspn2d on sigmoid(lam)."""
    B, H, W, C, G, chunk, with_u = case
    g = torch.Generator().manual_seed(3)
    mk = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(DEVICE).requires_grad_()
    x, lam, z = mk(B, H, W, C), mk(B, H, W, 4, C, scale=2.0), mk(B, H, W, 4, 3, G, scale=2.0)
    u = mk(B, H, W, 4, C) if with_u else None
    dy = torch.randn(B, H, W, 4, C, generator=g).to(DEVICE)
    ins = [x, lam, z, u]
    ref_in = [t.detach().double().cpu().requires_grad_() if t is not None else None for t in ins]
    f = lambda backend: (lambda a, b, c, d: gspn2d(a, b, c, u=d, chunk=chunk, backend=backend, lam_logits=True))
    want, want_g = _run(f("reference"), ref_in, dy.double().cpu())
    got, got_g = _run(f("triton"), ins, dy)
    plain = gspn2d(*[t.detach() for t in ref_in[:1]], torch.sigmoid(ref_in[1].detach()), ref_in[2].detach(),
                   u=None if u is None else ref_in[3].detach(), chunk=chunk, backend="reference")
    torch.testing.assert_close(want.detach(), plain)
    assert_close("y", got, want, 1e-5)
    for name, a, b in zip(("dx", "dlam_logits", "dgate_logits", "du"), got_g, want_g):
        assert_close(name, a, b, 1e-5)


def _split_case_inputs(case, seed):
    """x, lam (logits), z, u (None without), dy for a (B, H, W, C, G, chunk, with_u) case."""
    B, H, W, C, G, _chunk, with_u = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H, W, C, generator=g)
    lam = 2 * torch.randn(B, H, W, 4, C, generator=g)
    z = 2 * torch.randn(B, H, W, 4, 3, G, generator=g)
    u = torch.randn(B, H, W, 4, C, generator=g) if with_u else None
    dy = torch.randn(B, H, W, 4, C, generator=g)
    return x, lam, z, u, dy


SPLIT_CASES = [
    # (B, H, W, C, G, chunk, with_u), (rows per tile, channel block, warps, tiles)
    ((1, 7, 9, 8, 2, None, True), (4, 8, 1, 3)),  # 3 x 4 rows for lines of 7 and 9
    ((2, 5, 7, 8, 8, 3, True), (2, 8, 1, 4)),  # per-channel gates, windows
    ((1, 9, 3, 6, 3, 2, False), (4, 4, 1, 3)),  # odd channels (masked), group size 2, no u
    ((1, 1, 5, 4, 4, None, True), (2, 4, 1, 3)),  # 1 x N
    ((1, 6, 5, 40, 5, None, True), (2, 16, 1, 4)),  # channel blocks that do not tile C
    ((1, 13, 10, 8, 1, None, True), (8, 8, 2, 2)),  # shared gates, 2 warps
    ((1, 7, 9, 8, 2, None, True), (4, 8, 1, 3, 3)),  # loads left to Triton's pipeliner (num_stages 3)
    # (..., tiles, stages, scratch, prefetch): wrap neighbours through the scratch buffer
    ((1, 7, 9, 8, 2, None, True), (4, 8, 1, 3, 1, True, 1)),
    ((2, 5, 7, 8, 8, 3, True), (2, 8, 2, 4, 1, True, 0)),  # windows, no prefetch
    ((1, 9, 3, 6, 3, 2, False), (4, 4, 1, 3, 1, True, 2)),  # masked channels, prefetch 2
    ((1, 1, 5, 4, 4, None, True), (2, 4, 1, 3, 1, True, 2)),  # 1 x N
    ((1, 6, 5, 40, 5, None, True), (2, 16, 1, 4, 1, True, 1)),
    ((1, 13, 10, 8, 1, None, True), (8, 8, 2, 2, 1, True, 1)),  # shared gates
    ((2, 11, 4, 8, 4, None, True), (16, 8, 4, 1, 1, True, 2)),  # one tile (R = 1)
    # (..., prefetch, fence): a barrier after each step's loads
    ((1, 7, 9, 8, 2, None, True), (4, 8, 1, 3, 1, True, 1, True)),
    ((2, 5, 7, 8, 8, 3, True), (2, 8, 2, 4, 1, True, 0, True)),  # windows, no prefetch
    ((1, 9, 3, 6, 3, 2, False), (4, 4, 1, 3, 1, True, 2, True)),  # masked channels, prefetch 2
    ((1, 13, 10, 8, 1, None, True), (8, 8, 2, 2, 1, False, 0, True)),  # the shuffle exchange
    # (..., fence, flat): the wrap-around through a gather of the flattened tile (shared memory)
    ((1, 7, 9, 8, 2, None, True), (4, 8, 2, 3, 1, True, 1, False, True)),  # tiles across 2 warps
    ((2, 5, 7, 8, 8, 3, True), (2, 8, 1, 4, 1, True, 2, False, True)),  # per-channel, windows, prefetch 2
    ((1, 13, 10, 8, 1, None, True), (8, 8, 2, 2, 1, True, 0, False, True)),  # shared gates, no prefetch
    ((2, 11, 4, 8, 4, None, True), (16, 8, 4, 1, 1, True, 1, False, True)),  # one tile (R = 1)
    # (..., flat, unroll): the loop unrolled by prefetch + 1 (odd step counts leave a remainder)
    ((1, 7, 9, 8, 2, None, True), (4, 8, 1, 3, 1, True, 1, False, False, True)),  # scratch, prefetch 1
    ((2, 5, 7, 8, 8, 3, True), (2, 8, 1, 4, 1, False, 2, False, True, True)),  # flat, prefetch 2, windows
    ((1, 13, 10, 8, 1, None, True), (8, 8, 2, 2, 1, True, 2, True, False, True)),  # shared gates, fenced
]


@pytest.mark.parametrize("case,cfg", SPLIT_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("lam_logits", [False, True], ids=["lam", "lamlogits"])
def test_split_forward_kernel_matches_reference(case, cfg, lam_logits):
    """The split-line forward (line position i = row * tiles + tile) with explicit tile shapes, the
    saved state included: y and h against the float64 reference."""
    from cgspn.ops.gspn import triton_backend as TB

    B, H, W, C, G, chunk, with_u = case
    x, lam, z, u, _ = _split_case_inputs(case, seed=7)
    rows, bc, warps, tiles, *rest = cfg
    stages, scratch, prefetch, fence, flat, unroll = rest + [1, False, 0, False, False, False][len(rest):]
    config = TB.LaunchConfig(rows, bc, warps, prefetch, stages, False, tiles, scratch, fence=fence, flat=flat, unroll=unroll)
    lam_in = lam if lam_logits else torch.sigmoid(lam)
    y, hs = TB.gspn2d_fwd_triton(*(t.to(DEVICE) for t in (x, lam_in, z)), None if u is None else u.to(DEVICE), chunk,
                                 True, config, lam_logits=lam_logits)
    d = lambda t: None if t is None else t.double()
    want = gspn2d(d(x), d(torch.sigmoid(lam)), d(z), u=d(u), chunk=chunk, backend="reference")
    assert_close("y", y, want, 1e-5)
    if with_u:
        h = gspn2d(d(x), d(torch.sigmoid(lam)), d(z), chunk=chunk, backend="reference")
        assert_close("h", hs, h, 1e-5)


def test_general_forward_kernel_matches_reference():
    """The general (one tile per line) forward, which runs for lines longer than the split kernel
    takes, forced here on a small shape."""
    from cgspn.ops.gspn import triton_backend as TB

    g = torch.Generator().manual_seed(8)
    B, H, W, C, G = 2, 6, 9, 8, 2
    x, lam = torch.randn(B, H, W, C, generator=g), torch.rand(B, H, W, 4, C, generator=g)
    z, u = 2 * torch.randn(B, H, W, 4, 3, G, generator=g), torch.randn(B, H, W, 4, C, generator=g)
    config = TB.forward_config(max(H, W), C, B=B)
    assert config.split == 0
    y, _ = TB.gspn2d_fwd_triton(*(t.to(DEVICE) for t in (x, lam, z, u)), 4, False, config)
    want = gspn2d(*(t.double() for t in (x, lam, z)), u=u.double(), chunk=4, backend="reference")
    assert_close("y", y, want, 1e-5)


@pytest.mark.parametrize("L", [1, 5, 16, 17, 37, 74, 147, 292, 384])
def test_split_config_covers_the_line(L):
    from cgspn.ops.gspn import triton_backend as TB
    from cgspn.ops.gspn.triton_split import MAX_SPLIT

    cfg = TB.split_forward_config(L, 64)
    assert cfg is not None and 1 <= cfg.split <= MAX_SPLIT
    assert cfg.split * cfg.block_l >= L and cfg.block_l <= 32 and cfg.block_l & (cfg.block_l - 1) == 0
    assert TB.split_forward_config(32 * MAX_SPLIT + 1, 64) is None


SPLIT_BWD_CASES = [
    # (B, H, W, C, G, chunk, with_u), (rows per tile, channel block, warps, tiles, prefetch)
    ((1, 7, 9, 8, 8, None, True), (4, 8, 1, 3, 1)),  # per-channel gates (mode 0)
    ((2, 5, 7, 8, 2, 3, True), (2, 8, 2, 4, 0)),  # groups of 4 inside the block (mode 1), windows
    ((1, 9, 3, 6, 3, 2, False), (4, 4, 1, 3, 1)),  # groups of 2, masked channels (mode 1), no u
    ((1, 6, 5, 12, 1, None, True), (2, 4, 1, 4, 1)),  # the block inside one group of 12: 3 partials (mode 3)
    ((1, 6, 5, 12, 2, None, True), (2, 4, 1, 4, 1)),  # groups of 6 that do not tile the block (mode 2)
    ((1, 6, 5, 12, 4, None, True), (2, 8, 1, 4, 1)),  # groups of 3 that do not tile the block (mode 2)
    ((1, 1, 5, 4, 1, None, True), (2, 4, 1, 3, 1)),  # 1 x N, shared gates
    ((2, 11, 4, 8, 4, None, True), (16, 8, 4, 1, 1)),  # one tile (R = 1)
    # (..., prefetch, fence): a barrier after each step's loads
    ((2, 5, 7, 8, 2, 3, True), (2, 8, 2, 4, 0, True)),  # mode 1, windows, no prefetch
    ((1, 7, 9, 8, 8, None, True), (4, 8, 1, 3, 1, True)),  # mode 0
    # (..., prefetch, fence, asm_dz): the grouped stores in their reduction's layout (on CPU the
    # same tl.store of broadcast pointers; the inline PTX runs in the GPU tests)
    ((2, 5, 7, 8, 2, 3, True), (2, 8, 2, 4, 0, False, True)),  # mode 1, windows
    ((1, 9, 3, 6, 3, 2, False), (4, 4, 1, 3, 1, False, True)),  # mode 1, masked channels
    ((1, 6, 5, 12, 1, None, True), (2, 4, 1, 4, 1, False, True)),  # mode 3, partials
    ((2, 11, 4, 8, 4, None, True), (16, 8, 4, 1, 1, False, True)),  # mode 1, R = 1
    ((1, 6, 5, 12, 4, None, True), (2, 8, 1, 4, 1, False, True)),  # mode 2: not used
    ((1, 6, 5, 12, 1, None, True), (2, 4, 1, 4, 1, True, True)),  # mode 3, fenced
    # (..., fence, asm_dz, flat): the wrap-around through a gather of the flattened tile
    ((1, 7, 9, 8, 8, None, True), (4, 8, 2, 3, 1, False, False, True)),  # mode 0, tiles across 2 warps
    ((2, 5, 7, 8, 2, 3, True), (2, 8, 2, 4, 0, False, False, True)),  # mode 1, windows, no prefetch
    ((1, 6, 5, 12, 1, None, True), (2, 4, 1, 4, 1, False, True, True)),  # mode 3, partials
    ((2, 11, 4, 8, 8, None, True), (16, 8, 4, 1, 1, False, False, True)),  # one tile (R = 1), as ViT-B's
    # (..., flat, unroll): the loop unrolled by 2 (odd step counts leave a remainder)
    ((1, 7, 9, 8, 8, None, True), (4, 8, 1, 3, 1, False, False, False, True)),  # mode 0
    ((2, 5, 7, 8, 2, 3, True), (2, 8, 2, 4, 1, False, True, True, True)),  # mode 1, windows, flat
    ((1, 6, 5, 12, 1, None, True), (2, 4, 1, 4, 1, False, True, False, True)),  # mode 3, partials
    # (..., unroll, row_gates): one gate group's logits as [rows] vectors (a no-op where ZW > 1)
    ((1, 6, 5, 12, 1, None, True), (2, 4, 1, 4, 1, False, True, False, False, True)),  # mode 3, partials
    ((2, 5, 7, 8, 1, 3, False), (2, 8, 2, 4, 0, False, False, False, False, True)),  # one group, windows, no prefetch
    ((1, 6, 5, 12, 1, None, True), (2, 4, 1, 4, 1, False, True, True, True, True)),  # mode 3, flat, unrolled
    ((1, 1, 5, 4, 1, None, True), (2, 4, 1, 3, 1, False, False, False, False, True)),  # 1 x N, shared gates
    ((2, 5, 7, 8, 2, 3, True), (2, 8, 2, 4, 1, False, True, False, False, True)),  # mode 1: ZW = 2, unchanged
    ((2, 5, 7, 8, 2, 3, True), (2, 4, 1, 4, 1, False, True, False, False, True)),  # a group per block: ZW = 1
]


@pytest.mark.parametrize("case,cfg", SPLIT_BWD_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("lam_logits", [False, True], ids=["lam", "lamlogits"])
def test_split_backward_kernel_matches_reference(case, cfg, lam_logits):
    """The split-line backward (scratch exchange) with explicit tile shapes: dx, dlam, dz, du
    against the float64 reference's autograd, every gate-gradient reduction mode."""
    from cgspn.ops.gspn import triton_backend as TB

    B, H, W, C, G, chunk, with_u = case
    x, lam, z, u, dy = _split_case_inputs(case, seed=11)
    rows, bc, warps, tiles, pf, *rest = cfg
    fence, asm_dz, flat, unroll, row_gates = rest + [False] * (5 - len(rest))
    config = TB.LaunchConfig(rows, bc, warps, pf, 1, False, tiles, True, fence=fence, asm_dz=asm_dz, flat=flat,
                             unroll=unroll, row_gates=row_gates)
    lam_in = lam if lam_logits else torch.sigmoid(lam)
    dev = lambda t: None if t is None else t.to(DEVICE)
    h = gspn2d(x, torch.sigmoid(lam), z, chunk=chunk, backend="reference")  # the forward state
    got = TB.gspn2d_bwd_triton(dev(dy), dev(x), dev(lam_in), dev(z), dev(u), dev(h), chunk, config, lam_logits=lam_logits)
    ins = [t.double().requires_grad_() for t in (x, lam_in, z)] + ([u.double().requires_grad_()] if with_u else [])
    f = lambda a, b, c, *d: gspn2d(a, torch.sigmoid(b) if lam_logits else b, c, u=d[0] if d else None, chunk=chunk,
                                   backend="reference")
    want = torch.autograd.grad(f(*ins), ins, dy.double())
    for name, a, b in zip(("dx", "dlam", "dz", "du"), got, want):
        assert_close(name, a, b, 1e-5)
    if not with_u:
        assert got[3] is None


@pytest.mark.parametrize("L", [33, 74, 96, 97, 147, 192, 193, 384])
@pytest.mark.parametrize("B,itemsize", [(32, 2), (1, 2), (32, 4)])
def test_scratch_configs_cover_the_line(L, B, itemsize):
    """The scratch split kernels' launch rules give tiles that cover the line in at most 6 tiles,
    2-16 warps and power-of-two channel blocks; lines they do not take get None."""
    from cgspn.ops.gspn import triton_backend as TB

    for cfg in (TB.scratch_forward_config(B, L, 64, itemsize), TB.scratch_backward_config(B, L, 64, 2, 4)):
        if cfg is None:  # the backward rule declines fp32 / few programs
            continue
        assert cfg.scratch and 1 <= cfg.split <= 6 and cfg.split * cfg.block_l >= L
        assert 2 <= cfg.num_warps <= 16 and cfg.block_c & (cfg.block_c - 1) == 0 and cfg.block_c <= 64
    for L_out in (1, 32, 385):
        assert TB.scratch_forward_config(B, L_out, 64, itemsize) is None
        assert TB.scratch_backward_config(B, L_out, 64, 2, 4) is None


def test_dispatch_follows_the_measurements():
    """Which kernel runs where (docs/benchmarks.md, "Current kernels"): the scratch split forward on
    147-long lines and on 74-long lines with gate groups, the general one on 74-long lines with
    per-channel or shared gates; the split backward for bf16 with gate groups, not for fp32 or one
    shared group."""
    from cgspn.ops.gspn import triton_backend as TB

    f = TB.gspn2d_forward_config
    assert f(32, 147, 147, 64, 16, 2).scratch and f(32, 147, 147, 64, 1, 4).scratch
    shape = lambda c: (c.block_l, c.split, c.block_c, c.num_warps, c.prefetch)
    for G in (64, 16, 1):  # ~5120 elements of a line step per program (the wide sweep's fastest)
        # bf16 with gate groups: 3 tiles of 32 rows with the shared-memory exchange (tenth session)
        assert shape(f(32, 74, 74, 64, G, 2)) == ((16, 5, 64, 16, 1) if G == 64 else (32, 3, 64, 16, 1))
        assert shape(f(32, 74, 74, 64, G, 4)) == (16, 5, 64, 8, 1)
        assert shape(f(32, 147, 147, 64, G, 4)) == (32, 5, 32, 8, 1)
    # bf16 with gate groups at 147: the shared-memory exchange in 3 tiles of 64 rows (tenth session)
    assert [shape(f(32, 147, 147, 64, G, 2)) for G in (64, 16, 1)] == [(32, 5, 32, 16, 1), (64, 3, 32, 16, 1), (64, 3, 32, 16, 1)]
    assert shape(f(32, 120, 120, 64, 16, 2)) == (32, 4, 32, 8, 1)  # lines of 97-128: half the warps (eighth session)
    # the exchange through shared memory (seventh / eighth sessions): everywhere but bf16 per-channel
    # gates at 74 and fp32 per-channel gates
    assert [f(32, 147, 147, 64, G, 2).flat for G in (64, 16, 1)] == [True, True, True]
    assert [f(32, 147, 147, 64, G, 4).flat for G in (64, 16, 1)] == [False, True, True]
    assert [f(32, 74, 74, 64, G, 2).flat for G in (64, 16, 1)] == [False, True, True]
    assert not any(f(32, 74, 74, 64, G, 4).flat for G in (64, 16, 1))
    # 16 groups of 48 on lines <= 32: the general kernel's block narrowed inside a group (sixth session)
    assert shape(f(64, 14, 14, 768, 16, 2)) == (16, 0, 16, 1, 2) and shape(f(16, 32, 32, 768, 16, 4)) == (32, 0, 16, 1, 2)
    assert shape(f(64, 14, 14, 768, 64, 2)) == (16, 0, 128, 4, 1)  # groups of 12: no such block, the general one
    # per-channel gates on lines <= 16 in bf16: 32-channel blocks (eighth session); fp32 and longer lines keep theirs
    assert shape(f(64, 14, 14, 768, 768, 2)) == (16, 0, 32, 4, 1)
    assert shape(f(64, 14, 14, 768, 768, 4)) == (16, 0, 128, 4, 1) and shape(f(16, 32, 32, 768, 768, 2))[2] == 64
    # per-channel gates on lines of 17-24 in bf16: the one-tile split kernel with the scratch (eighth session)
    assert shape(f(32, 24, 24, 768, 768, 2)) == (32, 1, 64, 8, 1) and f(32, 24, 24, 768, 768, 2).scratch
    assert f(32, 24, 24, 768, 768, 4).split == 0 and f(16, 32, 32, 768, 768, 2).split == 0 and f(1, 24, 24, 64, 64, 2).split == 0
    for G, bc in ((64, 4), (16, 8), (1, 4)):  # one image's latent: 64-row tiles, one element per thread
        cfg = f(1, 147, 147, 64, G, 2)
        assert cfg.scratch and (cfg.block_l, cfg.split, cfg.block_c, cfg.num_warps) == (64, 3, bc, 8)
    assert f(1, 147, 147, 64, 1, 2).fence and not f(1, 147, 147, 64, 16, 2).fence and not f(1, 147, 147, 64, 64, 2).fence
    # one gate group for all channels: the exchange through shared memory, prefetch 2 steps (ninth session)
    one = f(1, 147, 147, 64, 1, 2)
    assert one.flat and one.prefetch == 2 and not f(1, 147, 147, 64, 16, 2).flat and not f(1, 147, 147, 64, 64, 2).flat
    assert f(1, 147, 147, 64, 16, 4).block_l != 64 and f(4, 147, 147, 64, 16, 2).block_l != 64
    b = lambda L, G, B, it: TB.backward_config(L, 64, 64 // G, B=B, itemsize=it)[0]
    assert b(147, 16, 32, 2).split and b(74, 64, 32, 2).split
    assert b(147, 1, 32, 2).split and not b(147, 16, 1, 2).split and not b(300, 1, 32, 2).split
    for G in (64, 16, 1):  # fp32 (the wide sweep, 2026-12-01)
        assert shape(b(147, G, 32, 4)) == (32, 5, 16, 8, 0)
        assert shape(b(74, G, 32, 4)) == (16, 5, 32, 8, 0 if G == 64 else 1)
    assert shape(b(74, 64, 32, 2)) == (16, 5, 32, 8, 1) and shape(b(74, 16, 32, 2)) == (16, 5, 32, 8, 0)
    assert shape(b(74, 1, 32, 2)) == (16, 5, 32, 8, 1)
    assert shape(b(147, 16, 32, 2)) == (32, 5, 16, 8, 0) and shape(b(147, 1, 32, 2)) == (32, 5, 16, 8, 1)
    # bf16 gate groups store their gradients in the reduction's layout (fifth session); fp32 and
    # per-channel gates do not
    assert all(b(L, G, 32, 2).asm_dz for L in (74, 147) for G in (16, 1))
    assert not any(b(L, 64, 32, it).asm_dz for L in (74, 147) for it in (2, 4))
    assert b(147, 16, 32, 4).asm_dz and not b(74, 16, 32, 4).asm_dz  # fp32: lines of 97-192 only (sixth session)
    assert all(b(L, 1, 32, 4).asm_dz for L in (74, 147))  # fp32, one group: the 16-byte partials (tenth session)
    # lines of 9-32, per-channel gates, 2-byte dtypes: the split backward as one tile (sixth session)
    one = lambda B, L, C, GS, it: TB.backward_config(L, C, GS, B=B, itemsize=it)[0]
    assert shape(one(64, 14, 768, 1, 2)) == (16, 1, 64, 4, 1) and one(64, 14, 768, 1, 2).scratch
    assert shape(one(16, 32, 768, 1, 2)) == (32, 1, 32, 8, 1) and one(16, 32, 768, 1, 2).flat  # seventh session
    assert not one(64, 14, 768, 1, 2).flat
    assert not any(one(64, 14, 768, GS, it).split for GS, it in ((48, 2), (768, 2), (1, 4)))
    assert not one(64, 8, 768, 1, 2).split and not one(1, 14, 32, 1, 2).split  # short lines / few programs
    # groups of 6 in 96 channels: no block inside a group of >= 8 channels, so the previous rule
    assert (TB.backward_config(74, 96, 6, B=32, itemsize=2)[0].block_c, TB.backward_config(74, 96, 6, B=32, itemsize=2)[1]) == (16, 2)


MODE3_PARTIAL_CASES = [
    # (B, H, W, C, G, chunk, with_u), LaunchConfig args: the block inside one gate group, several blocks
    # per group, so each block writes partial gate gradients into the caller's 16-byte slots (DZ_VEC)
    ((1, 7, 9, 8, 1, None, True), (4, 4, 1, 1, 1, False, 3, True)),  # split kernel, 2 blocks
    ((2, 5, 6, 16, 2, 3, False), (2, 4, 1, 0, 1, False, 3, True)),  # 2 groups x 2 blocks, windows, no u
    ((1, 6, 7, 12, 1, None, True), (8, 4, 1, 1, 1, False, 0, False)),  # general kernel, 3 blocks
    ((1, 9, 4, 8, 1, 2, True), (16, 4, 4, 1, 1, False, 1, True)),  # one tile, windows
]


@pytest.mark.parametrize("case,cfg", MODE3_PARTIAL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_mode3_partial_gate_gradients_match_reference(case, cfg):
    """Mode 3 with several channel blocks per gate group: the per-block partials (a 16-byte slot per
    pixel, direction and block) summed by the caller give the reference's gate gradients, with the
    own-layout stores (asm_dz; the vector store on CUDA, plain stores under the interpreter) and without."""
    from cgspn.ops.gspn import triton_backend as TB

    B, H, W, C, G, chunk, with_u = case
    lam_logits = chunk is not None  # lam as logits in the cases with windows
    x, lam, z, u, dy = _split_case_inputs(case, seed=21)
    lam_in = lam if lam_logits else torch.sigmoid(lam)
    h = gspn2d(x, torch.sigmoid(lam), z, chunk=chunk, backend="reference")
    ins = [t.double().requires_grad_() for t in (x, lam_in, z)] + ([u.double().requires_grad_()] if with_u else [])
    f = lambda a, b, c, *d: gspn2d(a, torch.sigmoid(b) if lam_logits else b, c, u=d[0] if d else None, chunk=chunk,
                                   backend="reference")
    want = torch.autograd.grad(f(*ins), ins, dy.double())
    base = TB.LaunchConfig(*cfg)
    for config in (base, dataclasses.replace(base, asm_dz=True)):
        _, mode = TB.backward_config(max(H, W), C, C // G, config, B=B, itemsize=4)
        assert mode == 3 and -(-C // config.block_c) > G  # several blocks per group: partials
        dev = lambda t: None if t is None else t.to(DEVICE)
        got = TB.gspn2d_bwd_triton(dev(dy), dev(x), dev(lam_in), dev(z), dev(u), dev(h), chunk, config,
                                   lam_logits=lam_logits)
        assert got[2].shape == z.shape and got[2].is_contiguous()
        for name, a, b in zip(("dx", "dlam", "dz", "du"), got, want):
            assert_close(name, a, b, 1e-5)


def test_backward_narrows_the_block_inside_gate_groups_that_do_not_tile_it():
    """768 channels in 16 groups of 48 on 14-long lines: 16-channel blocks inside one group (mode 3,
    one partial per block) instead of per-channel fp32 gate gradients (mode 2); the same launch
    shape on a small grid against the float64 reference."""
    from cgspn.ops.gspn import triton_backend as TB

    cfg, mode = TB.backward_config(14, 768, 48, B=64, itemsize=2)
    assert (cfg.split, cfg.block_c, cfg.num_warps, mode) == (0, 16, 1, 3)
    assert TB.backward_config(14, 768, 12, B=64, itemsize=2)[1] == 2  # groups of 12: no 8-channel block inside
    B, H, W, C, G = 1, 5, 7, 96, 2
    x, lam, z, u, dy = _split_case_inputs((B, H, W, C, G, None, True), seed=13)
    lam = torch.sigmoid(lam)
    h = gspn2d(x, lam, z, backend="reference")
    ins = [t.double().requires_grad_() for t in (x, lam, z, u)]
    want = torch.autograd.grad(gspn2d(*ins[:3], u=ins[3], backend="reference"), ins, dy.double())
    for c in (cfg, dataclasses.replace(cfg, asm_dz=True)):  # the grouped stores in their own layout (tl.store on CPU)
        got = TB.gspn2d_bwd_triton(*(t.to(DEVICE) for t in (dy, x, lam, z, u, h)), None, c)
        for name, a, b in zip(("dx", "dlam", "dz", "du"), got, want):
            assert_close(name, a, b, 1e-5)


@pytest.mark.parametrize("HW,chunk", [((13, 9), None), ((7, 11), 4)], ids=["13x9", "7x11ck4"])
def test_one_tile_split_backward_matches_reference(HW, chunk):
    """The config the dispatch picks for ViT-B's 14 x 14 x 768 per-channel backward in bf16 (one
    16-row tile, 64 channels), on a small grid: every gradient against the float64 reference."""
    from cgspn.ops.gspn import triton_backend as TB

    cfg, mode = TB.backward_config(14, 768, 1, B=64, itemsize=2)
    assert (cfg.split, cfg.block_l, cfg.block_c, mode) == (1, 16, 64, 0)
    x, lam, z, u, dy = _split_case_inputs((1, *HW, 64, 64, chunk, True), seed=17)
    lam = torch.sigmoid(lam)
    h = gspn2d(x, lam, z, chunk=chunk, backend="reference")
    ins = [t.double().requires_grad_() for t in (x, lam, z, u)]
    want = torch.autograd.grad(gspn2d(*ins[:3], u=ins[3], chunk=chunk, backend="reference"), ins, dy.double())
    got = TB.gspn2d_bwd_triton(*(t.to(DEVICE) for t in (dy, x, lam, z, u, h)), chunk, cfg)
    for name, a, b in zip(("dx", "dlam", "dz", "du"), got, want):
        assert_close(name, a, b, 1e-5)


def test_forward_narrows_the_block_inside_gate_groups_on_short_lines():
    """96 channels in 2 groups of 48 on lines of 6, with programs enough that the general kernel's
    block would be 64 channels (gates normalised per channel): the dispatch narrows it to 16 inside
    one group (one warp); that config's outputs and states (on one batch item, to keep the
    interpreter quick) against the float64 reference."""
    from cgspn.ops.gspn import triton_backend as TB

    cfg = TB.gspn2d_forward_config(25, 6, 5, 96, 2, 4)
    assert (cfg.split, cfg.block_l, cfg.block_c, cfg.num_warps, cfg.prefetch) == (0, 8, 16, 1, 2)
    x, lam, z, u, _ = _split_case_inputs((1, 6, 5, 96, 2, 4, True), seed=19)
    lam = torch.sigmoid(lam)
    y, hs = TB.gspn2d_fwd_triton(*(t.to(DEVICE) for t in (x, lam, z, u)), 4, True, cfg)
    assert_close("y", y, gspn2d(x.double(), lam.double(), z.double(), u=u.double(), chunk=4, backend="reference"), 1e-5)
    assert_close("h", hs, gspn2d(x.double(), lam.double(), z.double(), chunk=4, backend="reference"), 1e-5)


def test_dispatch_gives_valid_launches_on_any_shape():
    """Every config the forward and backward dispatch (and line_scan's, general tiles only) pick,
    over a grid of batch sizes, line lengths, channel counts, gate groupings and dtypes: its tiles
    cover the line, blocks and warps are powers of two, blocks no wider than the channels need, and
    the backward's gate-gradient mode matches the block (3: inside one group; 1: whole
    power-of-two groups; 0: per-channel). No kernel runs; this pins the rules' invariants."""
    from cgspn.ops.gspn import triton_backend as TB

    pow2 = lambda v: v > 0 and v & (v - 1) == 0
    seen = 0
    for B in (1, 2, 5, 32, 128):
        for L in (1, 2, 7, 9, 14, 16, 17, 24, 32, 33, 37, 64, 74, 96, 97, 147, 192, 193, 256, 384, 385, 600):
            for C in (1, 3, 8, 24, 64, 96, 192, 768, 1152):
                for G in sorted({g for g in (1, 2, 4, 16, 48, C // 4, C // 2, C) if g >= 1 and C % g == 0}):
                    GS = C // G
                    for itemsize in (2, 4):
                        cfgs = [TB.gspn2d_forward_config(B, L, max(1, L // 2), C, G, itemsize)]
                        bwd, mode = TB.backward_config(L, C, GS, B=B, itemsize=itemsize)
                        cfgs.append(bwd)
                        general, _ = TB.backward_config(L, C, 1, B=B, itemsize=itemsize, allow_split=False)
                        assert general.split == 0
                        cfgs.append(general)
                        for cfg in cfgs:
                            assert max(1, cfg.split) * cfg.block_l >= L, (B, L, C, G, itemsize, cfg)
                            assert pow2(cfg.block_l) and pow2(cfg.block_c) and pow2(cfg.num_warps) and cfg.num_warps <= 16
                            assert cfg.block_c <= max(1, 2 * C), cfg  # no block wider than the channels' power of two
                        bc = bwd.block_c
                        if GS == 1:
                            assert mode == 0
                        elif mode == 3:
                            assert GS % bc == 0
                        elif mode == 1:
                            assert pow2(GS) and bc % GS == 0
                        else:
                            assert mode == 2 and not (GS % bc == 0 or (pow2(GS) and bc % GS == 0))
                        assert not bwd.asm_dz or (GS > 1 and mode in (1, 3))
                        seen += 1
    assert seen > 5000


def test_config_shorter_than_the_line_is_refused():
    """Split (R tiles) and general (one block) configs alike must cover the line; line_scan takes
    only general ones."""
    from cgspn.ops.gspn import triton_backend as TB

    x, lam, z = torch.randn(1, 9, 5, 8), torch.rand(1, 9, 5, 4, 8), torch.randn(1, 9, 5, 4, 3, 2)
    split = TB.LaunchConfig(4, 8, 1, 1, 1, False, 2, True)  # 2 tiles x 4 rows < 9
    general = TB.LaunchConfig(8, 8, 1, 1)  # one block of 8 rows < 9
    for bad in (split, general):
        with pytest.raises(ValueError, match="covers lines of 8 positions"):
            TB.gspn2d_fwd_launch(x, lam, z, None, None, False, bad)
        with pytest.raises(ValueError, match="covers lines of 8 positions"):
            TB.gspn2d_bwd_launch(torch.randn(1, 9, 5, 4, 8), x, lam, z, None, torch.randn(1, 9, 5, 4, 8), None, bad)
    t = torch.randn(1, 2, 9, 3)
    with pytest.raises(ValueError, match="covers lines of 8 positions"):
        TB.line_scan_fwd_triton(t, t, t, t, t, None, general)
    with pytest.raises(ValueError, match="covers lines of 8 positions"):
        TB.line_scan_bwd_triton(t, t, t, t, t, t, t, None, general)
    with pytest.raises(ValueError, match="only under gspn2d"):
        TB.line_scan_fwd_triton(t, t, t, t, t, None, TB.LaunchConfig(16, 8, 1, 1, 1, False, 1, True))


BOUNDS_CASES = [
    # (B, H, W, C, G, chunk, with_u), forward config, backward config (None: the dispatch's)
    ((1, 7, 9, 8, 2, None, True), (4, 8, 1, 1, 1, False, 3, True), (4, 8, 1, 1, 1, False, 3, True)),
    ((2, 5, 7, 8, 8, 3, True), (2, 8, 2, 0, 1, False, 4, True), (2, 8, 2, 0, 1, False, 4, True)),
    ((1, 9, 3, 6, 3, 2, False), (4, 4, 1, 2, 1, False, 3, True), (4, 4, 1, 1, 1, False, 3, True, False, 0, True)),
    ((1, 6, 5, 12, 4, None, True), (2, 8, 1, 2, 1, False, 4, False), (2, 8, 1, 1, 1, False, 4, True)),
    # padding rows past the line's end: one 32-row tile on lines of 5 and 9 (the 147 x 147 launch's
    # padding, 147 -> 160, at a size the interpreter runs quickly)
    ((1, 5, 9, 16, 16, None, True), (32, 16, 2, 1, 1, False, 1, True), (32, 16, 2, 0, 1, False, 1, True)),
    ((1, 5, 9, 16, 4, None, True), (32, 16, 2, 2, 1, False, 1, True), (32, 16, 2, 0, 1, False, 1, True, False, 0, True)),
    # the wide tiles: 64 (here 16) channels x 16 warps, 4 elements of a tile per thread; the shared-gate
    # backward's 32-row tiles (padding rows past lines of 5 and 9)
    ((1, 7, 9, 16, 4, None, True), (16, 16, 2, 1, 1, False, 3, True), (32, 16, 4, 1, 1, False, 3, True)),
    ((1, 5, 9, 16, 1, 2, True), (16, 16, 4, 1, 1, False, 1, True), (32, 16, 16, 1, 1, False, 1, True)),
    # the few-programs forward (B x C <= 132): 3 tiles of 64 rows, one element of each per thread
    ((1, 5, 9, 4, 4, None, True), (64, 4, 8, 1, 1, False, 3, True), None),
    ((1, 9, 5, 8, 2, 3, False), (64, 8, 8, 1, 1, False, 3, True), None),
    ((2, 6, 5, 8, 2, 4, True), None, None),  # the general kernels, as dispatched
]


@pytest.mark.skipif(DEVICE != "cpu", reason="bounds are checked under the interpreter")
@pytest.mark.parametrize("case,fcfg,bcfg", BOUNDS_CASES, ids=lambda c: "x".join(map(str, c)) if c else "dispatch")
def test_kernels_stay_inside_their_tensors(case, fcfg, bcfg):
    """Every address a forward or backward lane loads from or stores to lies inside a tensor the
    launch was given. On a GPU a stray read faults only when it leaves mapped memory, so it can pass
    every GPU test and still crash inside a model (the split backward's wrap-around row read, fixed
    2026-12-01, did at 32 x 147 x 147); the interpreter sees every address."""
    from cgspn.ops.gspn import triton_backend as TB

    from ._bounds import checked_bounds

    B, H, W, C, G, chunk, with_u = case
    x, lam, z, u, dy = _split_case_inputs(case, seed=5)
    lam = torch.sigmoid(lam).to(torch.bfloat16)
    x, z, dy = x.to(torch.bfloat16), z.to(torch.bfloat16), dy.to(torch.bfloat16)
    u = None if u is None else u.to(torch.bfloat16)
    cfg = lambda c: None if c is None else TB.LaunchConfig(*c)
    with checked_bounds(name="forward"):
        y, h = TB.gspn2d_fwd_triton(x, lam, z, u, chunk, True, cfg(fcfg))
    with checked_bounds(name="backward"):
        grads = TB.gspn2d_bwd_triton(dy, x, lam, z, u, y if h is None else h, chunk, cfg(bcfg))
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.skipif(DEVICE != "cpu", reason="bounds are checked under the interpreter")
@pytest.mark.parametrize("case", [(2, 5, 7, 6, 3, 3, True), (1, 9, 4, 8, 1, None, False), (1, 1, 6, 4, 4, 2, True)],
                         ids=lambda c: "B{}H{}W{}C{}G{}ck{}u{}".format(*c))
def test_public_ops_stay_inside_their_tensors(case):
    """gspn2d and line_scan through the public API, forward and backward (autograd), with every
    interpreted launch checked against its own tensor arguments."""
    from ._bounds import checked_bounds

    B, H, W, C, G, chunk, with_u = case
    g = torch.Generator().manual_seed(9)
    mk = lambda *s: torch.randn(*s, generator=g).requires_grad_()
    x, lam, z = mk(B, H, W, C), torch.rand(B, H, W, 4, C, generator=g).requires_grad_(), mk(B, H, W, 4, 3, G)
    u = mk(B, H, W, 4, C) if with_u else None
    with checked_bounds(name="gspn2d"):
        y = gspn2d(x, lam, z, u=u, chunk=chunk, backend="triton")
        y.square().sum().backward()
    xs = [torch.randn(B, C, H, W, generator=g).requires_grad_() for _ in range(2)]
    gates = [t.detach().requires_grad_() for t in normalize_gates(*torch.randn(3, B, C, H, W, generator=g), line_dim=-2)]
    with checked_bounds(name="line_scan"):
        h = line_scan(xs[0], torch.sigmoid(xs[1]), *gates, chunk=chunk, backend="triton")
        h.square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in [x, lam, z, *xs, *gates])


@pytest.mark.parametrize("GS,bc,want,reduces", [
    (4, 32, 32, True), (64, 32, 32, True), (48, 32, 16, True), (40, 32, 8, True), (16, 16, 16, True), (2, 8, 8, True),
    (6, 32, 32, False), (36, 16, 16, False), (3, 16, 16, False),  # only blocks under 8 channels would: mode 2
])
def test_channel_blocks_inside_or_holding_whole_gate_groups(GS, bc, want, reduces):
    """The backward's block narrowing: the widest power of two <= bc inside one group or holding
    whole power-of-two groups, or bc when only blocks under 8 channels would (then mode 2)."""
    from cgspn.ops.gspn import triton_backend as TB

    assert TB._inside_or_whole_groups(GS, bc) == want
    assert TB._reduces_in_block(GS, want) is reduces


@pytest.mark.parametrize("C,chunk", [(64, None), (72, 5)])
def test_the_dispatch_one_tile_split_forward_for_24_long_lines(C, chunk):
    """The config gspn2d's forward takes for bf16 per-channel gates on lines of 17-24 (the one-tile split
    kernel with the scratch exchange, eighth session), applied to a small awkward input: odd sides,
    a partial channel block, windows."""
    from cgspn.ops.gspn import triton_backend as TB

    cfg = TB.gspn2d_forward_config(32, 24, 24, 768, 768, 2)
    assert cfg.split == 1 and cfg.scratch
    g = torch.Generator().manual_seed(11)
    B, H, W = 1, 17, 23
    x, lam = torch.randn(B, H, W, C, generator=g), torch.rand(B, H, W, 4, C, generator=g)
    z, u = torch.randn(B, H, W, 4, 3, C, generator=g), torch.randn(B, H, W, 4, C, generator=g)
    want = gspn2d(*(t.double() for t in (x, lam, z)), u=u.double(), chunk=chunk, backend="reference")
    y, _ = TB.gspn2d_fwd_triton(*(t.to(DEVICE) for t in (x, lam, z, u)), chunk, False, cfg)
    assert_close("y", y.cpu(), want, 1e-5)
