"""kernels/linear.py: the compiled products agree with their NumPy twins in float32 and float64,
do not depend on the thread count, and `choose` keeps small batches on the twins."""
import numpy as np
import pytest

from tinyar.kernels import linear as K

DTYPES = [(np.float64, 1e-12), (np.float32, 2e-5)]
# (N, in, out): below one block of rows, several blocks with a ragged last one, one input or output,
# more than one dW block per lane (5000 rows: 5 blocks of 1024 over 4 lanes)
SHAPES = [(3, 4, 5), (300, 7, 2), (1100, 16, 33), (2600, 1, 9), (700, 12, 1), (5000, 8, 7)]


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_kernels_agree_with_their_twins(shape, dtype, tol):
    N, n_in, n_out = shape
    rng = np.random.default_rng(sum(shape))
    x, W = rng.standard_normal((N, n_in)).astype(dtype), rng.standard_normal((n_out, n_in)).astype(dtype)
    b, dy = rng.standard_normal(n_out).astype(dtype), rng.standard_normal((N, n_out)).astype(dtype)
    for bias in (b, None):
        y = K.linear_forward_numba(x, W, bias)
        assert y.dtype == dtype and y.shape == (N, n_out)
        np.testing.assert_allclose(y, K.linear_forward_numpy(x, W, bias), rtol=tol, atol=tol * np.sqrt(n_in))
    dx, dW = K.linear_backward_numba(dy, x, W)
    np.testing.assert_allclose(dx, dy @ W, rtol=tol, atol=tol * np.sqrt(n_out))
    np.testing.assert_allclose(dW, dy.T @ x, rtol=tol, atol=tol * np.sqrt(N))
    assert dx.dtype == dW.dtype == dtype
    assert K.linear_backward_numba(dy, x, W, need_dx=False)[0] is None
    assert K.linear_backward_numba(dy, x, W, need_dW=False)[1] is None


def test_linear_kernels_take_strided_inputs():
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal((900, 10))[:, ::2], rng.standard_normal((5, 6)).T     # views, not C order
    np.testing.assert_allclose(K.linear_forward_numba(x, W, None), x @ W.T, rtol=1e-12)
    dy = rng.standard_normal((900, 6))[:, ::-1]
    for a, b in zip(K.linear_backward_numba(dy, x, W), (dy @ W, dy.T @ x)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_linear_kernels_do_not_depend_on_the_thread_count():
    """Row blocks go to fixed lanes and dW's lane sums are added in lane order: the same bits."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to compare")
    rng = np.random.default_rng(5)
    x, W, dy = (rng.standard_normal(s).astype(np.float32) for s in ((5000, 24), (40, 24), (5000, 40)))
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append((K.linear_forward_numba(x, W, None),) + K.linear_backward_numba(dy, x, W))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_choose_keeps_small_batches_and_other_dtypes_on_the_twins(monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert K.choose("linear_forward", K.MIN_ROWS, np.float32) is K.linear_forward_numba
    assert K.choose("linear_backward", K.MIN_ROWS, np.float64) is K.linear_backward_numba
    assert K.choose("linear_forward", K.MIN_ROWS - 1, np.float32) is K.linear_forward_numpy
    assert K.choose("linear_backward", 10 ** 6, np.float16) is K.linear_backward_numpy
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose("linear_forward", 10 ** 6, np.float32) is K.linear_forward_numpy
    with pytest.raises(ValueError, match="linear_forward or linear_backward"):
        K.choose("linear", 10, np.float32)


@pytest.mark.parametrize("n", [5, 2 * K.MIN_ROWS + 3])
@pytest.mark.parametrize("x_dtype, w_dtype, b_dtype", [(np.float64, np.float64, np.float64), (np.float32, np.float32, np.float32),
                                                       (np.float32, np.float64, np.float64), (np.float32, np.float32, np.float64)])
def test_fused_linear_equals_matmul_plus_bias_on_both_paths(n, x_dtype, w_dtype, b_dtype):
    """fused.linear (the twins below MIN_ROWS rows, the compiled products from it) against the
    composite x @ W^T + b: values, gradients and NumPy's dtype promotion."""
    from tinyar import fused, ops
    from tinyar.tensor import Tensor
    rng = np.random.default_rng(n)
    xa, Wa, ba = rng.standard_normal((n, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    dy = rng.standard_normal((n, 3))
    grads = []
    for op in (lambda x, W, b: fused.linear(x, W, b), lambda x, W, b: ops.matmul(x, ops.transpose(W)) + b):
        x, W, b = (Tensor(a.astype(t), requires_grad=True) for a, t in ((xa, x_dtype), (Wa, w_dtype), (ba, b_dtype)))
        y = op(x, W, b)
        y.backward(dy.astype(y.dtype))
        grads.append((y.data, x.grad, W.grad, b.grad))
    tol = 1e-12 if x_dtype == np.float64 else 1e-5                        # float32 products: float32 rounding
    for a, b in zip(*grads):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_linear_kernels_leave_what_gemm_cannot_take_to_the_twins():
    """Mixed dtypes (BLAS would read float64 memory as float32) and empty dimensions."""
    rng = np.random.default_rng(9)
    x, W = rng.standard_normal((600, 3)).astype(np.float32), rng.standard_normal((2, 3))
    np.testing.assert_allclose(K.linear_forward_numba(x, W, None), x @ W.T, rtol=1e-6)
    dy = rng.standard_normal((600, 2))
    for a, b in zip(K.linear_backward_numba(dy, x, W), (dy @ W, dy.T @ x)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    empty = np.zeros((600, 0))
    assert K.linear_forward_numba(empty, np.zeros((4, 0)), None).shape == (600, 4)
    assert np.all(K.linear_forward_numba(empty, np.zeros((4, 0)), None) == 0)


def test_gradcheck_fused_linear_on_the_compiled_path():
    """float64 finite differences through the row-block kernels (the op's gradcheck case in
    gradcheck_cases.py has 4 rows, below MIN_ROWS: the twins)."""
    from tinyar import fused
    from tinyar.gradcheck import gradcheck
    from tinyar.tensor import Tensor
    assert K.choose("linear_backward", K.MIN_ROWS + 5, np.float64) is K.linear_backward_numba
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((K.MIN_ROWS + 5, 3)), requires_grad=True)
    W, b = Tensor(rng.standard_normal((2, 3)), requires_grad=True), Tensor(rng.standard_normal(2), requires_grad=True)
    result = gradcheck(lambda x, W, b: fused.linear(x, W, b), x, W, b)
    assert result["max_abs_error"] < 1e-6
