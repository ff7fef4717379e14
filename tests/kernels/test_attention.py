"""kernels/attention.py: every compiled kernel agrees with its NumPy twin, in float32 and float64;
`choose` honours TINYAR_KERNELS=numpy."""
import numpy as np
import pytest

from tinyar.kernels import attention as K

DTYPES = [(np.float64, 1e-12), (np.float32, 2e-6)]


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 5), (4, 3, 7), (2, 16, 16)])
def test_causal_softmax_and_its_backward(shape, dtype, tol):
    rng = np.random.default_rng(sum(shape))
    S = (3 * rng.standard_normal(shape)).astype(dtype)
    dP = rng.standard_normal(shape).astype(dtype)
    offset = shape[2] - shape[1]
    P_numba = K.causal_softmax_forward_numba(S.copy(), offset)
    P_numpy = K.causal_softmax_forward_numpy(S.copy(), offset)
    assert P_numba.dtype == dtype
    np.testing.assert_allclose(P_numba, P_numpy, rtol=tol, atol=tol)
    np.testing.assert_allclose(P_numba.sum(axis=-1), 1.0, atol=10 * tol)
    future = np.arange(shape[2])[None, :] > np.arange(shape[1])[:, None] + offset
    assert np.all(P_numba[:, future] == 0.0)
    dS_numba = K.causal_softmax_backward_numba(P_numpy, dP.copy())
    dS_numpy = K.causal_softmax_backward_numpy(P_numpy, dP.copy())
    np.testing.assert_allclose(dS_numba, dS_numpy, rtol=tol, atol=tol)
    np.testing.assert_allclose(dS_numba.sum(axis=-1), 0.0, atol=10 * tol)    # softmax's Jacobian kills constants


def test_causal_softmax_is_stable_for_huge_scores():
    S = np.array([[[1000.0, 0, 0], [1000.0, -1000.0, 0], [-1000.0, 1000.0, 999.0]]])
    for fn in (K.causal_softmax_forward_numba, K.causal_softmax_forward_numpy):
        P = fn(S.copy(), 0)
        assert np.all(np.isfinite(P))
        np.testing.assert_allclose(P[0, 2], [0.0, 1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])


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
    assert K.choose("causal_softmax") == (K.causal_softmax_forward_numpy, K.causal_softmax_backward_numpy)
    assert K.choose("gelu") == (K.gelu_forward_numpy, K.gelu_backward_numpy)
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert K.choose("layer_norm") == (K.layer_norm_forward_numba, K.layer_norm_backward_numba)
    assert K.choose("causal_softmax") == (K.causal_softmax_forward_numba, K.causal_softmax_backward_numba)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose("layer_norm") == (K.layer_norm_forward_numpy, K.layer_norm_backward_numpy)
    with pytest.raises(ValueError, match="causal_softmax"):
        K.choose("softmax")
