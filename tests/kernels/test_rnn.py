"""The Elman RNN kernels (tinyar/kernels/rnn.py) against their NumPy twins, and the fused op."""
import numpy as np
import pytest

from tinyar import fused, nn, ops
from tinyar.gradcheck_cases import op_cases
from tinyar.gradcheck import gradcheck
from tinyar.kernels import rnn as K
from tinyar.kernels.approx import tanh_rational
from tinyar.tensor import Tensor

SHAPES = [(1, 1, 1), (5, 3, 4), (17, 2, 9), (40, 8, 16)]        # (T, B, H)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def _inputs(T, B, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((T, B, H)).astype(dtype)                         # pre-activations from the inputs
    W_hh = (rng.standard_normal((H, H)) * 1.2 / np.sqrt(H)).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    dh = rng.standard_normal((T, B, H)).astype(dtype)
    return u, W_hh, h0, dh


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_twin(shape, dtype):
    u, W_hh, h0, _ = _inputs(*shape, dtype)
    h = K.elman_forward_numba(u, W_hh, h0)
    h_twin = K.elman_forward_numpy(u, W_hh, h0)
    assert h.dtype == dtype and h.shape == shape
    np.testing.assert_allclose(h, h_twin, **TOL[dtype])
    # and both are the recurrence itself: step 1 from h0 by hand
    np.testing.assert_allclose(h[0], np.tanh(u[0] + h0 @ W_hh.T), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_twin(shape, dtype):
    u, W_hh, h0, dh = _inputs(*shape, dtype)
    h = K.elman_forward_numpy(u, W_hh, h0)
    got = K.elman_backward_numba(W_hh, h0, h, dh)
    want = K.elman_backward_numpy(W_hh, h0, h, dh)
    for name, g, w in zip(["da", "dW_hh", "db", "dh0"], got, want):
        assert g.dtype == dtype and g.shape == w.shape, name
        # sums over T*B terms in another order: rounding scales with the largest entry
        tol = TOL[dtype]
        np.testing.assert_allclose(g, w, err_msg=name, rtol=tol["rtol"], atol=tol["rtol"] * np.abs(w).max())


def test_backward_twin_is_the_chain_rule_on_two_steps():
    """T = 2, B = 1 written out by hand: an independent check of the twin itself."""
    u, W, h0, dh = _inputs(2, 1, 3, np.float64, seed=3)
    h1 = np.tanh(u[0] + h0 @ W.T)
    h2 = np.tanh(u[1] + h1 @ W.T)
    da2 = dh[1] * (1 - h2 ** 2)
    da1 = (dh[0] + da2 @ W) * (1 - h1 ** 2)
    da, dW, db, dh0 = K.elman_backward_numpy(W, h0, np.stack([h1, h2]), dh)
    np.testing.assert_allclose(da, np.stack([da1, da2]), rtol=1e-12)
    np.testing.assert_allclose(dW, da2.T @ h1 + da1.T @ h0, rtol=1e-12)
    np.testing.assert_allclose(db, (da1 + da2)[0], rtol=1e-12)
    np.testing.assert_allclose(dh0, da1 @ W, rtol=1e-12)


def test_tanh_rational_is_float32_exact():
    x = np.linspace(-12, 12, 200001).astype(np.float32)
    exact = np.tanh(x.astype(np.float64))
    approx = np.array([tanh_rational(v) for v in x[::50]])
    inside = np.abs(x[::50]) <= 9
    assert np.abs(approx - exact[::50])[inside].max() < 1e-8                 # the fit: below float32's rounding
    assert np.abs(approx[~inside] - np.sign(x[::50][~inside])).max() < 6e-8  # clamped: within 1 ulp of +-1
    u = x.reshape(-1, 1, 1)
    h = K.elman_forward_numba(u, np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))
    assert np.abs(h.ravel() - exact).max() <= 6e-8                           # = np.tanh's own float32 error
    assert np.abs(h).max() <= 1


# ----------------------------------------------------------------- the fused op
def _layer(n_inputs, H, dtype, seed=0):
    layer = nn.ElmanRNN(n_inputs, H, rng=seed, dtype=dtype)
    layer.W_hh.data *= 2.0                                                  # not just the small-weight regime
    return layer


@pytest.mark.parametrize("dense", [False, True])
def test_fused_op_equals_unrolled_cell(dense):
    """One fused node == T steps of primitive ops: the same h_t and the same gradients."""
    rng = np.random.default_rng(0)
    B, T, V, H = 3, 12, 5, 4
    layer = _layer(V, H, np.float64)
    x = Tensor(rng.standard_normal((B, T, V)), requires_grad=True) if dense else rng.integers(0, V, (B, T))
    h0 = Tensor(rng.uniform(-1, 1, (B, H)), requires_grad=True)
    w = rng.standard_normal((B, T, H))

    h = layer(x, h0)
    assert h.shape == (B, T, H) and h.op == "elman_rnn"
    (h * Tensor(w)).sum().backward()
    one_op = [p.grad.copy() for p in (layer.W_xh, layer.W_hh, layer.b, h0)] + ([x.grad.copy()] if dense else [])
    for p in (layer.W_xh, layer.W_hh, layer.b, h0, x if dense else h0):
        p.grad = None
    hs = layer.unrolled(x, h0)
    np.testing.assert_allclose(h.data, np.stack([s.data for s in hs], axis=1), rtol=1e-12)
    ops.sum_(ops.stack(hs, axis=1) * Tensor(w)).backward()
    unrolled = [p.grad for p in (layer.W_xh, layer.W_hh, layer.b, h0)] + ([x.grad] if dense else [])
    for g1, g2 in zip(one_op, unrolled):
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)


def test_gradcheck_fused_op():
    for name, shapes, fn, inputs in op_cases()["elman_rnn"]:
        result = gradcheck(fn, *inputs)
        assert result["max_rel_error"] < 1e-5, shapes


def test_gradcheck_catches_a_wrong_derivative(monkeypatch):
    """The gradcheck above can fail: break BPTT (drop the recurrent term) and it must."""
    def broken(W_hh, h0, h, dh_out):
        da = dh_out * (1 - h * h)                                            # forgets da_{t+1} @ W_hh
        return da, np.einsum("tbi,tbj->ij", da, np.concatenate([h0[None], h[:-1]])), da.sum((0, 1)), da[0] @ W_hh
    monkeypatch.setattr(K, "elman_backward_numba", broken)
    monkeypatch.setattr(K, "elman_backward_numpy", broken)
    name, shapes, fn, inputs = op_cases()["elman_rnn"][0]
    with pytest.raises(AssertionError):
        gradcheck(fn, *inputs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_switch_gives_the_same_numbers(monkeypatch, dtype):
    rng = np.random.default_rng(2)
    layer = _layer(6, 8, dtype)
    x = rng.integers(0, 6, (4, 20))
    results = []
    for mode in ("numba", "numpy"):
        monkeypatch.setenv("TINYAR_KERNELS", mode)
        layer.zero_grad()
        h = layer(x)
        ops.sum_(h * h).backward()
        results.append([h.data] + [p.grad for p in layer.parameters()])
    for a, b in zip(*results):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, **TOL[dtype])


def test_choose_honours_the_numpy_switch(monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose("elman") == (K.elman_forward_numpy, K.elman_backward_numpy)
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert K.choose("elman") == (K.elman_forward_numba, K.elman_backward_numba)


def test_backward_through_2000_steps():
    """A 2,000-step sequence: one node for the fused op; ~8,000 nodes unrolled, and
    backward walks them iteratively (no recursion limit)."""
    rng = np.random.default_rng(0)
    layer = _layer(3, 4, np.float64)
    x = rng.integers(0, 3, (1, 2000))
    h = layer(x)
    ops.sum_(h[:, -1]).backward()
    one_op = layer.W_hh.grad.copy()
    assert np.isfinite(one_op).all() and np.abs(one_op).sum() > 0
    layer.zero_grad()
    hs = layer.unrolled(x, Tensor(np.zeros((1, 4))))
    ops.sum_(hs[-1]).backward()
    np.testing.assert_allclose(layer.W_hh.grad, one_op, rtol=1e-9, atol=1e-14)


def test_bad_inputs_say_what_is_wrong():
    layer = _layer(4, 3, np.float32)
    with pytest.raises(ValueError, match="0..3"):
        layer(np.array([[0, 4]]))
    with pytest.raises(TypeError, match="dtype"):
        fused.elman_rnn(np.array([[0, 1]]), layer.W_xh, Tensor(layer.W_hh.data.astype(np.float64)), layer.b)
    with pytest.raises(ValueError, match="h0"):
        layer(np.array([[0, 1]]), Tensor(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match="dense inputs"):
        layer(Tensor(np.zeros((1, 2, 5), np.float32)))
