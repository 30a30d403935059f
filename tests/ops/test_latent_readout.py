"""The fused latent read-out (Triton; the interpreter on CPU) against its PyTorch reference."""

import pytest
import torch

from cgspn.ops import available_backends, latent_readout

from ._tolerance import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif("triton" not in available_backends(DEVICE), reason="Triton backend not runnable here")


def _inputs(lead, D, K, N, dtype, affine=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(DEVICE, dtype).requires_grad_()
    y = mk(*lead, D, K)
    w = (1.0 + 0.3 * torch.randn(K, generator=g)).to(DEVICE, dtype).requires_grad_() if affine else None
    b = mk(K, scale=0.2) if affine else None
    up_w = mk(N, K, scale=K**-0.5)
    up_b = mk(N, scale=0.3) if bias else None
    return [y, w, b, up_w, up_b]


def _run(backend, ins, dout, eps=1e-5):
    out = latent_readout(*ins, eps=eps, backend=backend)
    grads = torch.autograd.grad(out, [t for t in ins if t is not None], dout)
    return out, grads


@needs_triton
@pytest.mark.parametrize(
    "lead,D,K,N,affine,bias",
    [((2, 3, 5), 4, 16, 40, True, True), ((7,), 1, 48, 200, True, False), ((1, 70), 4, 32, 16, False, True)],
)
def test_latent_readout_matches_reference(lead, D, K, N, affine, bias):
    ins = _inputs(lead, D, K, N, torch.float32, affine, bias)
    dout = torch.randn(*lead, N, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    ref_ins = [t.detach().double().cpu().requires_grad_() if t is not None else None for t in ins]
    want, want_g = _run("reference", ref_ins, dout.double().cpu())
    got, got_g = _run("triton", ins, dout)
    assert got.shape == (*lead, N) and got.dtype == torch.float32
    assert_close("out", got, want, 1e-5)
    names = [n for n, t in zip(("dy", "dnorm_weight", "dnorm_bias", "dup_weight", "dup_bias"), ins) if t is not None]
    for name, a, b in zip(names, got_g, want_g):
        assert_close(name, a, b, 1e-5)


@needs_triton
@pytest.mark.parametrize(
    "dtype,lead,N",
    [
        (torch.float16, (3, 9), 96),
        # the Triton interpreter's bf16 tl.dot returns garbage (Triton 3.8): bf16 is checked on the GPU
        pytest.param(torch.bfloat16, (2, 37 * 37), 1152, marks=pytest.mark.skipif(DEVICE == "cpu", reason="GPU only")),
    ],
)
def test_latent_readout_half_io(dtype, lead, N):
    ins = _inputs(lead, 4, 64, N, dtype, seed=1)
    dout = torch.randn(*lead, N, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    ref_ins = [t.detach().double().cpu().requires_grad_() for t in ins]
    want, want_g = _run("reference", ref_ins, dout.double().cpu())
    got, got_g = _run("triton", ins, dout)
    assert got.dtype == dtype and all(g.dtype == dtype for g in got_g)
    ratio = {torch.bfloat16: 2e-2, torch.float16: 5e-3}[dtype]
    assert_close("out", got, want, ratio)
    for name, a, b in zip(("dy", "dnorm_weight", "dnorm_bias", "dup_weight", "dup_bias"), got_g, want_g):
        assert_close(name, a, b, 2 * ratio)


@needs_triton
def test_latent_readout_opcheck():
    import cgspn.ops.latent_readout.op  # noqa: F401  (registers the op; the dispatch imports it lazily)

    ins = _inputs((2, 6), 4, 16, 24, torch.float32)
    torch.library.opcheck(torch.ops.cgspn.latent_readout.default, (*[t.detach() for t in ins], 1e-5))


@needs_triton
@pytest.mark.parametrize("affine,bias", [(True, True), (False, False)])
def test_latent_readout_eager_path_matches_the_registered_op_bitwise(affine, bias):
    """Eager calls skip the custom-op wrappers; outputs and gradients must be the op's exactly."""
    ins = _inputs((3, 5), 4, 16, 24, torch.float32, affine, bias, seed=3)
    dout = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    leaves = [t for t in ins if t is not None]
    eager = latent_readout(*ins, eps=1e-5, backend="triton")
    registered = torch.ops.cgspn.latent_readout(*ins, 1e-5)
    assert torch.equal(eager, registered)
    for a, b in zip(torch.autograd.grad(eager, leaves, dout), torch.autograd.grad(registered, leaves, dout)):
        assert torch.equal(a, b)


def test_latent_readout_reference_is_the_unfused_composition():
    y, w, b, up_w, up_b = (t.detach() for t in _inputs((4,), 4, 8, 12, torch.float64))
    want = torch.nn.functional.gelu(
        torch.nn.functional.linear(torch.nn.functional.layer_norm(y.sum(-2), (8,), w, b, 1e-6), up_w, up_b)
    )
    assert torch.allclose(latent_readout(y, w, b, up_w, up_b, eps=1e-6, backend="reference"), want)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(y=torch.zeros(4)), "y must have shape"),
        (dict(up_weight=torch.zeros(12, 7)), "up_weight must have shape"),
        (dict(norm_weight=torch.zeros(9)), "norm_weight must have shape"),
        (dict(up_bias=torch.zeros(3)), "up_bias must have shape"),
    ],
)
def test_latent_readout_bad_input(kwargs, match):
    args = dict(y=torch.zeros(2, 4, 8), norm_weight=torch.ones(8), norm_bias=torch.zeros(8),
                up_weight=torch.zeros(12, 8), up_bias=torch.zeros(12))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        latent_readout(args["y"], args["norm_weight"], args["norm_bias"], args["up_weight"], args["up_bias"])


def test_latent_readout_integer_input():
    with pytest.raises(TypeError, match="floating"):
        latent_readout(torch.zeros(2, 4, 8, dtype=torch.int64), None, None, torch.zeros(3, 8), None)


@needs_triton
@pytest.mark.skipif(DEVICE != "cpu", reason="bounds are checked under the interpreter")
def test_latent_readout_stays_inside_its_tensors():
    """Every address the read-out kernel touches lies inside its launch's tensors (rows and output
    columns that do not tile the blocks, strided direction slices)."""
    from ._bounds import checked_bounds

    y, w, b, up_w, up_b = _inputs((3, 7), 4, 24, 50, torch.float32)
    with checked_bounds(name="latent_readout"):
        out = latent_readout(y[:, 1:], w, b, up_w, up_b, backend="triton")
    assert torch.isfinite(out).all()
