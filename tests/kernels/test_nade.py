"""kernels/nade.py: every compiled kernel (`<name>_numba`) agrees with its NumPy twin
(`<name>_numpy`; float32 to 1e-5 relative, float64 to 1e-12), on binary, one-hot and real
inputs, including B = 1 and D = 1; the backward agrees with a brute-force recomputation; the
fused op fused.nade passes gradcheck through both implementations; `choose` returns the twins
under TINYAR_KERNELS=numpy; the float32 sigmoid of kernels/approx.py matches the exact one."""
import numba
import numpy as np
import pytest

from tinyar import fused
from tinyar.gradcheck import gradcheck
from tinyar.kernels import approx, nade as K
from tinyar.ops import stable_sigmoid
from tinyar.tensor import Tensor

# (B, D, K, H, P, kind of input)
SHAPES = [(1, 1, 1, 1, 1, "binary"), (1, 7, 1, 5, 1, "binary"), (5, 1, 1, 4, 1, "binary"),
          (6, 9, 1, 16, 1, "binary"), (4, 6, 3, 8, 3, "onehot"), (3, 5, 1, 7, 6, "real"),
          (9, 12, 4, 33, 4, "onehot"), (2, 4, 2, 3, 2, "real")]
DTYPES = [(np.float64, 1e-12), (np.float32, 1e-5)]


def make(shape, dtype, seed=0, scale=1.0):
    B, D, Kin, H, P, kind = shape
    rng = np.random.default_rng(seed + B * 100 + D * 10 + H)
    if kind == "binary":
        x = (rng.random((B, D, Kin)) < 0.5).astype(dtype)
    elif kind == "onehot":
        x = np.eye(Kin, dtype=dtype)[rng.integers(0, Kin, (B, D))]
    else:
        x = rng.standard_normal((B, D, Kin)).astype(dtype)
    order = rng.permutation(D)
    W = (scale * rng.standard_normal((D, Kin, H))).astype(dtype)
    c = (scale * rng.standard_normal(H)).astype(dtype)
    V = (scale * rng.standard_normal((D, P, H))).astype(dtype)
    b = rng.standard_normal((D, P)).astype(dtype)
    dout = rng.standard_normal((B, D, P)).astype(dtype)
    return x, order, W, c, V, b, dout


def assert_agree(got, want, tol):
    """Agreement to `tol` relative to the array's scale (elementwise relative error is
    meaningless for entries that cancel to ~0)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_agree_with_numpy_twin(shape, dtype, tol):
    x, order, W, c, V, b, dout = make(shape, dtype)
    out, a_last = K.nade_forward_numba(x, order, W, c, V, b)
    out_np, a_last_np = K.nade_forward_numpy(x, order, W, c, V, b)
    assert_agree(out, out_np, tol)
    assert_agree(a_last, a_last_np, tol)
    grads = K.nade_backward_numba(x, order, W, c, V, b, a_last_np, dout)
    grads_np = K.nade_backward_numpy(x, order, W, c, V, b, a_last_np, dout)
    for g, g_np, p in zip(grads, grads_np, (W, c, V, b)):
        assert g.shape == p.shape
        assert_agree(g, g_np, tol)


def test_forward_matches_the_definition_without_the_cache():
    """out[:, d] = b_d + V_d sigma(c + sum over dims before d of W_j^T x_j), each computed from scratch: O(D^2 H)."""
    x, order, W, c, V, b, _ = make((3, 6, 2, 5, 2, "real"), np.float64)
    out, a_last = K.nade_forward_numba(x, order, W, c, V, b)
    for i, d in enumerate(order):
        a = c + sum((x[:, j] @ W[j] for j in order[:i]), np.zeros((3, 5)))
        np.testing.assert_allclose(out[:, d], stable_sigmoid(a) @ V[d].T + b[d], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a_last, c + np.einsum("bdk,dkh->bh", x, W), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("numba_path", [True, False])
def test_backward_matches_finite_differences_of_forward(numba_path):
    """sum(dout * out) differentiated numerically w.r.t. every parameter equals the backward."""
    x, order, W, c, V, b, dout = make((3, 5, 3, 4, 2, "onehot"), np.float64, seed=3)
    forward = K.nade_forward_numba if numba_path else K.nade_forward_numpy
    backward = K.nade_backward_numba if numba_path else K.nade_backward_numpy
    _, a_last = forward(x, order, W, c, V, b)
    grads = backward(x, order, W, c, V, b, a_last, dout)
    params = [W, c, V, b]
    for k, p in enumerate(params):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + 1e-6
            plus = np.sum(dout * forward(x, order, *params)[0])
            p[idx] = old - 1e-6
            minus = np.sum(dout * forward(x, order, *params)[0])
            p[idx] = old
            numeric[idx] = (plus - minus) / 2e-6
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("numba_env", ["numba", "numpy"])
def test_fused_op_gradcheck(numba_env, monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", numba_env)
    x, order, W, c, V, b, _ = make((2, 4, 2, 3, 3, "real"), np.float64, seed=5)
    params = [Tensor(p, requires_grad=True) for p in (W, c, V, b)]
    result = gradcheck(lambda *p: fused.nade(x, order, *p), *params)
    assert result["max_rel_error"] < 1e-4


@pytest.mark.parametrize("name, kernels", [("nade", ("nade_forward", "nade_backward")),
                                           ("sample_bernoulli", "sample_bernoulli"),
                                           ("sample_categorical", "sample_categorical"),
                                           ("sample_mog", "sample_mog")])
def test_choose_returns_the_twins_under_the_switch_and_the_compiled_kernels_otherwise(name, kernels, monkeypatch):
    def implementations(suffix):
        if isinstance(kernels, tuple):
            return tuple(getattr(K, k + suffix) for k in kernels)
        return getattr(K, kernels + suffix)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose(name) == implementations("_numpy")
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert K.choose(name) == implementations("_numba")
    monkeypatch.delenv("TINYAR_KERNELS")
    assert K.choose(name) == implementations("_numba")
    with pytest.raises(ValueError, match="unknown kernel"):
        K.choose("nade_forward")


def test_fused_op_rejects_bad_arguments():
    x, order, W, c, V, b, _ = make((2, 4, 1, 3, 1, "binary"), np.float64)
    params = [Tensor(p, requires_grad=True) for p in (W, c, V, b)]
    with pytest.raises(ValueError, match="permutation"):
        fused.nade(x, np.array([0, 1, 1, 3]), *params)
    with pytest.raises(ValueError, match="x must be"):
        fused.nade(x[:, :, 0], order, *params)
    with pytest.raises(TypeError, match="one float dtype"):
        fused.nade(x, order, params[0], Tensor(c.astype(np.float32)), *params[2:])
    with pytest.raises(ValueError, match="expected x"):
        fused.nade(x, order, Tensor(W[:, :, :2]), *params[1:])


def test_float32_sigmoid_is_accurate_and_finite_everywhere():
    a = np.concatenate([np.linspace(-100, 100, 20001), [-1e3, 1e3, -np.inf, np.inf, 0.0, -0.0]]).astype(np.float32)
    h = np.empty_like(a)
    approx.sigmoid_into(a, h)
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-a.astype(np.float64)))
    assert np.all(np.isfinite(h)) and np.all(h >= 0) and np.all(h <= 1)
    central = np.abs(a) <= 80
    np.testing.assert_allclose(h[central], exact[central], rtol=5e-7, atol=0)
    tails = ~central                                         # beyond |a| = 87 the tiny side is capped at e^-87
    assert np.all(np.abs(h - exact)[tails] <= 3e-38 + 1e-7 * exact[tails])
    assert h[-6] < 1e-37 and h[-5] == 1.0 and h[-4] < 1e-37 and h[-3] == 1.0 and h[-2] == h[-1] == 0.5


def test_extreme_preactivations_stay_finite():
    """Pre-activations of +-1e3: the sigmoid saturates, nothing overflows, both paths agree."""
    for dtype in (np.float32, np.float64):
        x, order, W, c, V, b, dout = make((3, 6, 1, 5, 1, "binary"), dtype, scale=1e3)
        out, a_last = K.nade_forward_numba(x, order, W, c, V, b)
        grads = K.nade_backward_numba(x, order, W, c, V, b, a_last, dout)
        grads_np = K.nade_backward_numpy(x, order, W, c, V, b, a_last, dout)
        assert np.abs(a_last).max() > 500
        for g, g_np in zip(grads, grads_np):
            assert np.all(np.isfinite(g))
            assert_agree(g, g_np, 1e-5)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs numba to allow 2 threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_are_bitwise_the_same_on_one_and_two_threads(dtype):
    """The batch is cut into N_CHUNKS chunks whatever the thread count, and the per-chunk
    gradients are summed in a fixed order: 1 and 2 threads give the same bits."""
    x, order, W, c, V, b, dout = make((13, 8, 1, 9, 1, "binary"), dtype)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            out, a_last = K.nade_forward_numba(x, order, W, c, V, b)
            results.append((out, a_last) + K.nade_backward_numba(x, order, W, c, V, b, a_last, dout))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results):
        assert one.dtype == dtype and np.array_equal(one, two)


@pytest.mark.parametrize("n_chunks", [1, 3, 7, 50])
def test_backward_agrees_for_any_number_of_chunks(n_chunks, monkeypatch):
    """Another N_CHUNKS sums the examples' gradients in another grouping: the same up to
    rounding (50 > B: one example per chunk). A chunk that skipped or repeated an example
    would be far off."""
    x, order, W, c, V, b, dout = make((13, 8, 1, 9, 1, "binary"), np.float32)
    _, a_last = K.nade_forward_numba(x, order, W, c, V, b)
    default = K.nade_backward_numba(x, order, W, c, V, b, a_last, dout)
    monkeypatch.setattr(K, "N_CHUNKS", n_chunks)
    for g, g_default in zip(K.nade_backward_numba(x, order, W, c, V, b, a_last, dout), default):
        assert_agree(g, g_default, 1e-5)


# ------------------------------------------------------------------ samplers
def sampler_inputs(n, D, Kin, H, P, dtype, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, Kin, H)).astype(dtype)
    c = rng.standard_normal(H).astype(dtype)
    V = rng.standard_normal((D, P, H)).astype(dtype)
    b = rng.standard_normal((D, P)).astype(dtype)
    order = np.stack([rng.permutation(D) for _ in range(n)])
    observed = rng.random((n, D)) < 0.3
    return rng, order, W, c, V, b, observed


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_inputs", [1, 2])                  # 2: with the mask input row
def test_bernoulli_sampler_agrees_with_twin(dtype, n_inputs):
    rng, order, W, c, V, b, observed = sampler_inputs(50, 7, n_inputs, 6, 1, dtype)
    u = rng.random((50, 7))
    x_obs = (rng.random((50, 7)) < 0.5).astype(dtype)
    x, log_w = K.sample_bernoulli_numba(order, W, c, V, b, u, x_obs, observed)
    x_np, log_w_np = K.sample_bernoulli_numpy(order, W, c, V, b, u, x_obs, observed)
    assert x.dtype == dtype and set(np.unique(x)) <= {0, 1}
    np.testing.assert_array_equal(x, x_np)
    np.testing.assert_array_equal(x[observed], x_obs[observed])
    np.testing.assert_allclose(log_w, log_w_np, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert np.all(log_w[~observed.any(axis=1)] == 0) and np.all(log_w <= 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_inputs", [4, 5])                  # 5: the 4 levels and the mask input
def test_categorical_sampler_agrees_with_twin(dtype, n_inputs):
    rng, order, W, c, V, b, observed = sampler_inputs(60, 5, n_inputs, 7, 4, dtype, seed=1)
    u = rng.random((60, 5))
    x_obs = rng.integers(0, 4, (60, 5))
    x, log_w = K.sample_categorical_numba(order, W, c, V, b, u, x_obs, observed)
    x_np, log_w_np = K.sample_categorical_numpy(order, W, c, V, b, u, x_obs, observed)
    assert x.dtype == np.int64 and x.min() >= 0 and x.max() <= 3
    np.testing.assert_array_equal(x, x_np)
    np.testing.assert_array_equal(x[observed], x_obs[observed])
    np.testing.assert_allclose(log_w, log_w_np, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_inputs", [1, 2])
def test_mog_sampler_agrees_with_twin(dtype, n_inputs):
    rng, order, W, c, V, b, observed = sampler_inputs(40, 6, n_inputs, 5, 9, dtype, seed=2)
    u, z = rng.random((40, 6)), rng.standard_normal((40, 6))
    x_obs = rng.standard_normal((40, 6)).astype(dtype)
    x, log_w = K.sample_mog_numba(order, W, c, V, b, u, z, x_obs, observed, -3.0, 1.0)
    x_np, log_w_np = K.sample_mog_numpy(order, W, c, V, b, u, z, x_obs, observed, -3.0, 1.0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(x, x_np, rtol=tol, atol=tol)
    np.testing.assert_array_equal(x[observed], x_obs[observed])
    np.testing.assert_allclose(log_w, log_w_np, rtol=tol, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("logit", [30.0, -30.0, 40.0, -40.0, 800.0, -800.0])
def test_bernoulli_log_weights_are_exact_at_extreme_logits(logit, dtype):
    """log p(x_d) for an observed x_d at logit z: -|z| - log(1 + e^-|z|) when x_d is the unlikely
    value, -log(1 + e^-|z|) when it is the likely one. log(sigma(z)) / log1p(-sigma(z)) would give
    -30.001 at z = 30 and -inf beyond z ~ 37."""
    W, c, V = np.zeros((1, 1, 1), dtype), np.zeros(1, dtype), np.zeros((1, 1, 1), dtype)
    b = np.array([[logit]], dtype=dtype)                     # logit_0 = b_0 (V = 0)
    tiny = np.log1p(np.exp(-abs(logit)))                    # 9e-14 at |z| = 30, 0 at |z| = 800
    for x_obs in (0.0, 1.0):
        likely = (x_obs == 1.0) == (logit > 0)
        want = -tiny if likely else -abs(logit) - tiny
        args = (np.zeros((1, 1), np.int64), W, c, V, b, np.array([[0.5]]), np.array([[x_obs]], dtype),
                np.array([[True]]))
        for sampler in (K.sample_bernoulli_numba, K.sample_bernoulli_numpy):
            x, log_w = sampler(*args)
            assert x[0, 0] == x_obs and np.isfinite(log_w[0])
            np.testing.assert_allclose(log_w[0], want, rtol=1e-14, atol=0)


def test_samplers_reject_mismatched_shapes():
    rng, order, W, c, V, b, observed = sampler_inputs(4, 5, 1, 3, 1, np.float64)
    with pytest.raises(ValueError, match="per-row"):
        K.sample_bernoulli_numba(order, W, c, V, b, rng.random((4, 4)), np.zeros((4, 5)), observed)
