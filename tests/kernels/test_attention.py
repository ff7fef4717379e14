"""kernels/attention.py: every compiled kernel agrees with its NumPy twin, in float32 and float64;
`choose` honours TINYAR_KERNELS=numpy."""
import contextlib

import numpy as np
import pytest

from tinyar.kernels import attention as K

DTYPES = [(np.float64, 1e-12), (np.float32, 2e-6)]


def dense_attention(q, k, v):
    """y = softmax(q k^T / sqrt(d) + M) v and each row's log-normalizer, in float64, the plain way."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    Tq, Tk = q.shape[1], k.shape[1]
    S = q @ np.swapaxes(k, 1, 2) / np.sqrt(q.shape[2])
    S[:, np.arange(Tk)[None, :] > np.arange(Tq)[:, None] + Tk - Tq] = -np.inf
    L = np.log(np.exp(S).sum(axis=2))
    return np.exp(S - L[..., None]) @ v, L


# (N, Tq, Tk, d): one row; Tq = Tk below, at and past one block of rows (64); Tq < Tk (a cache)
ATTENTION_SHAPES = [(1, 1, 1, 1), (3, 5, 5, 4), (2, 64, 64, 8), (5, 70, 70, 3), (2, 130, 130, 16),
                    (4, 3, 7, 5), (2, 1, 9, 4), (3, 66, 80, 2), (6, 130, 150, 8)]


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", ATTENTION_SHAPES)
def test_causal_attention_kernel_agrees_with_its_twin_and_the_definition(shape, dtype, tol):
    N, Tq, Tk, d = shape
    rng = np.random.default_rng(sum(shape))
    q, k, v, dy = (rng.standard_normal((N, T, d)).astype(dtype) for T in (Tq, Tk, Tk, Tq))
    qs = q * dtype(1 / np.sqrt(d))
    y, L = K.causal_attention_forward_numba(qs, k, v)
    y_twin, L_twin = K.causal_attention_forward_numpy(qs, k, v)
    y_def, L_def = dense_attention(q, k, v)
    assert y.dtype == L.dtype == dtype and y.shape == (N, Tq, d) and L.shape == (N, Tq)
    for a, b in ((y, y_twin), (L, L_twin), (y, y_def), (L, L_def)):
        np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol)
    grads = K.causal_attention_backward_numba(qs, k, v, L, dy)
    twins = K.causal_attention_backward_numpy(qs, k, v, L_twin, dy)
    for a, b, like in zip(grads, twins, (q, k, v)):
        assert a.dtype == dtype and a.shape == like.shape
        np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol)
    if Tq == Tk:        # the last key is seen by the last query only: dv_last = P_last,last dy_last
        p_last = np.exp((qs[:, -1] * k[:, -1]).sum(axis=1) - L[:, -1])
        np.testing.assert_allclose(grads[2][:, -1], p_last[:, None] * dy[:, -1], rtol=10 * tol, atol=10 * tol)
        no_last = np.concatenate([dy[:, :-1], np.zeros_like(dy[:, -1:])], axis=1)
        assert np.all(K.causal_attention_backward_numba(qs, k, v, L, no_last)[1][:, -1] == 0)


@pytest.mark.parametrize("dtype, tol", DTYPES)
def test_causal_attention_is_stable_for_huge_scores(dtype, tol):
    """Scores of +-1000 (exp would overflow or vanish without the row maximum): finite and exact,
    forward and backward (P recomputed from L near 1000), in float32 and float64."""
    q = (np.array([[[1.0], [1.0], [1.0]]]) * 1000.0).astype(dtype)
    k = np.array([[[1.0], [-1.0], [0.999]]], dtype)
    v = np.array([[[1.0], [2.0], [3.0]]], dtype)
    dy = np.array([[[1.0], [-2.0], [0.5]]], dtype)
    w = np.exp(np.array([1000.0, -1000.0, 999.0]) - 1000.0)
    for forward, backward in ((K.causal_attention_forward_numba, K.causal_attention_backward_numba),
                              (K.causal_attention_forward_numpy, K.causal_attention_backward_numpy)):
        y, L = forward(q, k, v)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(L))
        np.testing.assert_allclose(y[0, 2, 0], (w @ [1.0, 2.0, 3.0]) / w.sum(), rtol=10 * tol)
        np.testing.assert_allclose(L[0], [1000.0, 1000.0, 1000.0 + np.log(w.sum())], rtol=10 * tol)
        grads = backward(q, k, v, L, dy)
        twins = K.causal_attention_backward_numpy(q.astype(float), k.astype(float), v.astype(float),
                                                  K.causal_attention_forward_numpy(q.astype(float), k.astype(float),
                                                                                   v.astype(float))[1], dy.astype(float))
        for a, b in zip(grads, twins):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-3 if dtype == np.float32 else 1e-9, atol=1e-3 * (dtype == np.float32))


def test_causal_attention_kernels_refuse_mismatched_shapes():
    """The compiled kernels index by hand: a wrong shape is a one-line ValueError, not a stray read."""
    q, k = np.zeros((2, 5, 3), np.float32), np.zeros((2, 7, 3), np.float32)
    with pytest.raises(ValueError, match="Tq <= Tk"):
        K.causal_attention_forward_numba(k, q, q)                           # Tq 7 > Tk 5
    with pytest.raises(ValueError, match="k \\(2, 7, 3\\), v \\(2, 5, 3\\)"):
        K.causal_attention_forward_numba(q, k, q)
    with pytest.raises(ValueError, match="L \\(2, 4\\)"):
        K.causal_attention_backward_numba(q, k, k, np.zeros((2, 4), np.float32), q)
    with pytest.raises(ValueError, match="dy \\(2, 5, 2\\)"):
        K.causal_attention_backward_numba(q, k, k, np.zeros((2, 5), np.float32), np.zeros((2, 5, 2), np.float32))


def test_causal_attention_does_not_depend_on_the_thread_count():
    """The (batch, head) pairs go to fixed lanes: one numba thread or all of them, the same numbers."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to compare")
    rng = np.random.default_rng(7)
    q, k, v, dy = (rng.standard_normal((16, 260, 8)).astype(np.float32) for _ in range(4))
    assert 16 * 260 * 260 >= K.PARALLEL_SCORES                             # large enough to run on the lanes' threads
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            y, L = K.causal_attention_forward_numba(q, k, v)
            results.append((y, L) + K.causal_attention_backward_numba(q, k, v, L, dy))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", [(1, 3), (7, 5), (40, 16)])
def test_layer_norm_forward_and_backward(shape, dtype, tol):
    rng = np.random.default_rng(shape[0])
    x = (2 * rng.standard_normal(shape) + 1).astype(dtype)
    gamma, beta = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    out_numba = K.layer_norm_forward_numba(x, gamma, beta, 1e-5)
    out_numpy = K.layer_norm_forward_numpy(x, gamma, beta, 1e-5)
    for a, b in zip(out_numba, out_numpy):
        assert a.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol)
    _, mu, r = out_numpy
    np.testing.assert_allclose(mu[:, 0], x.mean(axis=1), rtol=10 * tol, atol=10 * tol)
    back_numba = K.layer_norm_backward_numba(dy, x, mu, r, gamma)
    back_numpy = K.layer_norm_backward_numpy(dy, x, mu, r, gamma)
    for a, b in zip(back_numba, back_numpy):
        assert a.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 7)])
def test_gelu_backward(shape, dtype, tol):
    rng = np.random.default_rng(len(shape))
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    t = np.tanh(K.GELU_C * (x + K.GELU_A * x ** 3)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    dx = K.gelu_backward_numba(x, t, dy)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(dx, K.gelu_backward_numpy(x, t, dy), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 7)])
def test_gelu_forward(shape, dtype, tol):
    x = (3 * np.random.default_rng(len(shape)).standard_normal(shape)).astype(dtype)
    y, t = K.gelu_forward_numba(x)
    y_twin, t_twin = K.gelu_forward_numpy(x)
    assert y.dtype == t.dtype == dtype and y.shape == t.shape == x.shape
    np.testing.assert_allclose(t, t_twin, rtol=tol, atol=tol)
    np.testing.assert_allclose(y, y_twin, rtol=tol, atol=tol)
    np.testing.assert_allclose(y, x * 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
                               rtol=tol, atol=tol)


def test_causal_mask_marks_the_future():
    np.testing.assert_array_equal(K.causal_mask(3, 3, 0), np.triu(np.ones((3, 3), bool), 1))
    np.testing.assert_array_equal(K.causal_mask(2, 4, 2), [[False, False, False, True], [False] * 4])


def test_choose_honours_the_numpy_switch(monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose("causal_attention") == (K.causal_attention_forward_numpy, K.causal_attention_backward_numpy)
    assert K.choose("gelu") == (K.gelu_forward_numpy, K.gelu_backward_numpy)
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert K.choose("layer_norm") == (K.layer_norm_forward_numba, K.layer_norm_backward_numba)
    assert K.choose("causal_attention") == (K.causal_attention_forward_numba, K.causal_attention_backward_numba)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose("layer_norm") == (K.layer_norm_forward_numpy, K.layer_norm_backward_numpy)
    with pytest.raises(ValueError, match="causal_attention"):
        K.choose("softmax")


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 3e-7), (np.float64, 1e-15)])
def test_exp_neg_into_is_numpys_exp(dtype, rtol):
    """approx.exp_neg_into, the softmax's exp: e^-t for t >= 0 over float32's range (the Cephes
    scheme, within float32 rounding), float64 exact; past t = 87 float32 gives e^-87, no less."""
    from tinyar.kernels.approx import exp_neg_into
    t = np.concatenate([np.linspace(0, 87, 20001), [0.0, 1e-30, 1e-7, 0.5 * np.log(2)]]).astype(dtype)
    out = np.empty_like(t)
    exp_neg_into(t, out, t.size)
    np.testing.assert_allclose(out, np.exp(-t.astype(np.float64)), rtol=rtol, atol=0)
    assert out[-4] == 1.0
    far = np.array([100.0, 1e4, np.inf], dtype)
    got = np.full(3, -1.0, dtype)
    exp_neg_into(far, got, 2)                                              # n: only the first two
    assert got[2] == -1.0 and np.all(got[:2] >= 0) and np.all(got[:2] <= np.exp(-87.0) * 1.0001)


def test_layer_norm_and_gelu_do_not_depend_on_the_thread_count():
    """Rows and elements run on numba's threads; dgamma and dbeta are per-lane sums added in
    lane order: one thread or all of them, the same bits."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to compare")
    rng = np.random.default_rng(11)
    x, dy = rng.standard_normal((1001, 48)).astype(np.float32), rng.standard_normal((1001, 48)).astype(np.float32)
    gamma, beta = rng.standard_normal(48).astype(np.float32), rng.standard_normal(48).astype(np.float32)
    assert x.size >= K.PARALLEL_ELEMENTS                                   # large enough to use the threads
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            y, mu, r = K.layer_norm_forward_numba(x, gamma, beta, 1e-5)
            g, t = K.gelu_forward_numba(x)
            results.append((y, mu, r) + K.layer_norm_backward_numba(dy, x, mu, r, gamma)
                           + (g, t, K.gelu_backward_numba(x, t, dy)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype, tol", DTYPES)
def test_layer_norm_and_gelu_on_the_threads_agree_with_their_twins(dtype, tol):
    """Above PARALLEL_ELEMENTS the kernels run on numba's threads: same numbers as the twins,
    with a row count that does not split evenly into the lanes."""
    rng = np.random.default_rng(12)
    N, C = 1003, 40
    assert N * C >= K.PARALLEL_ELEMENTS
    x, dy = rng.standard_normal((N, C)).astype(dtype), rng.standard_normal((N, C)).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    y, mu, r = K.layer_norm_forward_numba(x, gamma, beta, 1e-5)
    for got, want in zip((y, mu, r) + K.layer_norm_backward_numba(dy, x, mu, r, gamma),
                         K.layer_norm_forward_numpy(x, gamma, beta, 1e-5)
                         + K.layer_norm_backward_numpy(dy, x, mu, r, gamma)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)   # dgamma, dbeta: sums of 1003 rows
    g, t = K.gelu_forward_numba(3 * x)
    g_twin, t_twin = K.gelu_forward_numpy(3 * x)
    np.testing.assert_allclose(t, t_twin, rtol=tol, atol=tol)
    np.testing.assert_allclose(g, g_twin, rtol=tol, atol=tol)
    np.testing.assert_allclose(K.gelu_backward_numba(3 * x, t, dy), K.gelu_backward_numpy(3 * x, t, dy),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_at_extreme_inputs(dtype):
    """Far from 0 GELU is x (x >> 0) or 0 (x << 0): tanh(u) must come out as exactly +-1 there,
    else 0.5 x (1 + t) leaves x times a rounding error (1e-2 at x = -1e6)."""
    x = np.array([-1e6, -1e3, -30.0, -9.0, 9.0, 30.0, 1e3, 1e6], dtype)
    y, t = K.gelu_forward_numba(x)
    np.testing.assert_array_equal(t, np.sign(x))
    np.testing.assert_array_equal(y[:4], 0.0)
    np.testing.assert_array_equal(y[4:], x[4:])
    np.testing.assert_array_equal(y, K.gelu_forward_numpy(x)[0])


def test_small_layer_norm_and_gelu_calls_run_on_one_thread(monkeypatch):
    """Below PARALLEL_ELEMENTS elements (the cached sampler's one-token steps) one thread,
    above it up to N_LANES."""
    asked = []

    def threads_at_most(n):
        asked.append(n)
        return contextlib.nullcontext()
    monkeypatch.setattr(K, "numba_threads_at_most", threads_at_most)
    x = np.ones((8, 64), np.float32)
    K.gelu_forward_numba(x)
    K.layer_norm_forward_numba(x, np.ones(64, np.float32), np.zeros(64, np.float32), 1e-5)
    big = np.ones((K.PARALLEL_ELEMENTS // 64, 64), np.float32)
    K.gelu_forward_numba(big)
    assert asked == [1, 1, K.N_LANES]
