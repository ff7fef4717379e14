"""The masked-matmul kernels (numba) agree with their NumPy twins, and the structure is right."""
import numpy as np
import pytest

from tinyar import fused, ops
from tinyar.kernels import masked as K
from tinyar.tensor import Tensor


def made_mask(n_out, n_in, rng, strict=False, max_degree=6):
    m_in, m_out = rng.integers(1, max_degree, n_in), rng.integers(1, max_degree, n_out)
    return (m_out[:, None] > m_in[None, :]) if strict else (m_out[:, None] >= m_in[None, :])


MASKS = ["made", "made-strict", "random", "zeros", "ones"]


def make_mask(kind, n_out, n_in, rng):
    if kind == "made":
        return made_mask(n_out, n_in, rng)
    if kind == "made-strict":
        return made_mask(n_out, n_in, rng, strict=True)
    if kind == "random":
        return rng.random((n_out, n_in)) < 0.5
    return np.full((n_out, n_in), kind == "ones")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 4), (7, 13, 9), (16, 40, 33)])
@pytest.mark.parametrize("kind", MASKS)
def test_kernels_agree_with_twins(dtype, shape, kind):
    B, n_in, n_out = shape
    rng = np.random.default_rng(hash((B, n_in, n_out, kind)) % 2**32)
    M = make_mask(kind, n_out, n_in, rng).astype(dtype)
    x = rng.standard_normal((B, n_in)).astype(dtype)
    x[rng.random(x.shape) < 0.4] = 0.0                     # zeros, which the kernel skips
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    dy = rng.standard_normal((B, n_out)).astype(dtype)
    perm, start = K.mask_structure_numba(M)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    pairs = [(K.masked_matmul_forward_numba(x, W, M, b, perm, start),
              K.masked_matmul_forward_numpy(x, W, M, b, perm, start)),
             (K.masked_matmul_backward_input_numba(dy, W, M, perm, start),
              K.masked_matmul_backward_input_numpy(dy, W, M, perm, start)),
             (K.masked_matmul_backward_weight_numba(dy, x, M, perm, start),
              K.masked_matmul_backward_weight_numpy(dy, x, M, perm, start))]
    for got, want in pairs:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)
    # the twins are the equations: compare with an explicit triple loop on the smallest shape
    if B * n_in * n_out <= 60:
        y = np.array([[b[k] + sum(x[i, j] * W[k, j] * M[k, j] for j in range(n_in)) for k in range(n_out)]
                      for i in range(B)])
        np.testing.assert_allclose(pairs[0][1], y, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_kernel_propagates_nan_to_the_connected_outputs(dtype):
    """No "nnan"/"ninf" fastmath: a NaN input reaches exactly the outputs that see it, as in
    the equation y_k = b_k + sum_j x_j W_kj M_kj with M_kj = 0 terms left out."""
    rng = np.random.default_rng(3)
    M = made_mask(12, 8, rng).astype(dtype)
    j = int(np.argmax((M.sum(axis=0) > 0) & (M.sum(axis=0) < 12)))   # an input seen by some outputs only
    assert 0 < M[:, j].sum() < 12
    x = rng.standard_normal((3, 8)).astype(dtype)
    x[1, j] = np.nan
    W = rng.standard_normal((12, 8)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    y = K.masked_matmul_forward_numba(x, W, M, b, *K.mask_structure_numba(M))
    np.testing.assert_array_equal(np.isnan(y[1]), M[:, j] == 1)
    assert np.isfinite(y[[0, 2]]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", MASKS)
def test_mask_structure_twin_and_meaning(kind, dtype):
    rng = np.random.default_rng(3)
    M = make_mask(kind, 11, 8, rng).astype(dtype)
    perm, start = K.mask_structure_numba(M)
    perm2, start2 = K.mask_structure_numpy(M)
    np.testing.assert_array_equal(perm, perm2)
    np.testing.assert_array_equal(start, start2)
    assert sorted(perm) == list(range(11))
    if kind != "random":           # every MADE-like mask is a staircase: start says exactly where M is 1
        staircase = (np.arange(11)[:, None] >= start[None, :]).astype(float)
        np.testing.assert_array_equal(M[perm], staircase)
    if kind.startswith("made"):
        assert start.max() > 0     # and some work is skipped


def test_random_mask_gets_no_skipping():
    M = np.array([[1, 0], [0, 1]], dtype=np.float64)       # rows not nested: no staircase
    perm, start = K.mask_structure_numba(M)
    np.testing.assert_array_equal(start, [0, 0])


def test_masked_weights_get_zero_gradient_and_op_paths_agree():
    rng = np.random.default_rng(0)
    M = made_mask(6, 5, rng, strict=True).astype(np.float64)
    results = {}
    for kernel in ("numba", "numpy"):
        x = Tensor(rng.standard_normal((4, 5)), requires_grad=True) if kernel == "numba" else x_copy
        W = Tensor(np.arange(30.0).reshape(6, 5) / 10, requires_grad=True)
        b = Tensor(np.ones(6), requires_grad=True)
        y = fused.masked_matmul(x, W, M, b, kernel=kernel)
        y.backward(np.ones_like(y.data))
        results[kernel] = (y.data, x.grad, W.grad, b.grad)
        x_copy = Tensor(x.data.copy(), requires_grad=True)
        x.grad = None
    for a, c in zip(results["numba"], results["numpy"]):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
    assert np.all(results["numba"][2][M == 0] == 0.0)                 # dW is zero off the mask
    assert np.all(results["numba"][2][M == 1] != 0.0)
    np.testing.assert_allclose(results["numba"][3], 4.0)              # db = column sums of dy


def test_op_rejects_bad_shapes():
    x, W = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match="mask shape"):
        fused.masked_matmul(x, W, np.ones((3, 4)))
    with pytest.raises(ValueError, match="need x"):
        fused.masked_matmul(Tensor(np.ones((2, 5))), W, np.ones((4, 3)))
    with pytest.raises(ValueError, match="kernel must be"):
        fused.masked_matmul(x, W, np.ones((4, 3)), kernel="cuda")


def test_numpy_switch(monkeypatch):
    """TINYAR_KERNELS=numpy makes the op choose the twins even where numba is preferred."""
    from tinyar import kernels
    calls = []
    monkeypatch.setattr(K, "masked_matmul_forward_numpy",
                        lambda *a, **kw: calls.append(1) or a[0] @ (a[1] * a[2]).T + a[3])
    monkeypatch.setattr(K, "prefer_numba", lambda *a: True)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert not kernels.use_numba()
    x = np.zeros((3, 4))
    x[0, 0] = 1.0
    fused.masked_matmul(Tensor(x), Tensor(np.ones((2, 4))), np.ones((2, 4)))
    assert calls == [1]


# ------------------------------------------------------------- the staircase in place
def sorted_made_mask(n_out, n_in, rng, strict=False, max_degree=6):
    """A MADE mask whose units are numbered by degree: a staircase in its own order."""
    m_in, m_out = np.sort(rng.integers(1, max_degree, n_in)), np.sort(rng.integers(1, max_degree, n_out))
    return (m_out[:, None] > m_in[None, :]) if strict else (m_out[:, None] >= m_in[None, :])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (0, 6, 5), (3, 5, 4), (7, 130, 90), (5, 70, 200)])
@pytest.mark.parametrize("mask", ["made", "strict", "ones", "zeros", "same rows"])
@pytest.mark.parametrize("block", [1, 3, 16])
def test_staircase_kernels_agree_with_twins(dtype, shape, mask, block, monkeypatch):
    """Several blocks of rows and of columns (STAIRCASE_BLOCK made small), rows that see no
    column and columns seen by no row (strict masks), empty batches, against the dense twins."""
    monkeypatch.setattr(K, "STAIRCASE_BLOCK", block)
    B, n_in, n_out = shape
    rng = np.random.default_rng(n_in * 1000 + n_out + len(mask))
    if mask in ("made", "strict"):
        M = sorted_made_mask(n_out, n_in, rng, strict=mask == "strict", max_degree=12).astype(dtype)
    elif mask == "same rows":
        M = np.broadcast_to(np.arange(n_in) < n_in // 2, (n_out, n_in)).astype(dtype)
    else:
        M = np.full((n_out, n_in), mask == "ones", dtype)
    perm, start = K.mask_structure_numba(M)
    assert K.staircase_in_place(M, perm, start)
    x = rng.standard_normal((B, n_in)).astype(dtype)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    dy = rng.standard_normal((B, n_out)).astype(dtype)
    y = K.masked_matmul_forward_staircase(x, W, M, b, start)
    dx, dW = K.masked_matmul_backward_staircase(dy, x, W, M, start)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, K.masked_matmul_forward_numpy(x, W, M, b, perm, start), **tol)
    np.testing.assert_allclose(dx, K.masked_matmul_backward_input_numpy(dy, W, M, perm, start), **tol)
    np.testing.assert_allclose(dW, K.masked_matmul_backward_weight_numpy(dy, x, M, perm, start), **tol)
    assert np.all(dW[M == 0] == 0) and y.dtype == dx.dtype == dW.dtype == dtype
    dx_only, none = K.masked_matmul_backward_staircase(dy, x, W, M, start, need_dW=False)
    assert none is None and np.array_equal(dx_only, dx)


def test_staircase_in_place_needs_sorted_rows_and_columns():
    rng = np.random.default_rng(0)
    M = sorted_made_mask(30, 40, rng)
    def in_place(M):
        return K.staircase_in_place(M, *K.mask_structure_numba(M))
    assert in_place(M) and in_place(np.ones((3, 4)))
    assert not in_place(M * 0.5)                                        # not 0/1
    assert not in_place(M[rng.permutation(30)])                         # rows out of order
    assert not in_place(M[:, rng.permutation(40)])                      # columns out of order
    assert not in_place(rng.random((30, 40)) < 0.5)                     # no staircase at all
    assert not in_place(np.kron(np.eye(2), np.ones((2, 2))))            # not nested, rows in order
    assert not in_place(np.eye(3))


def test_op_takes_the_staircase_for_sorted_masks_and_says_when_it_cannot(monkeypatch):
    rng = np.random.default_rng(1)
    M = sorted_made_mask(20, 30, rng).astype(np.float32)
    calls = []
    forward = K.masked_matmul_forward_staircase
    monkeypatch.setattr(K, "masked_matmul_forward_staircase", lambda *a: calls.append(1) or forward(*a))
    x = Tensor(rng.standard_normal((4, 30)).astype(np.float32))
    W = Tensor(rng.standard_normal((20, 30)).astype(np.float32), requires_grad=True)
    y = fused.masked_matmul(x, W, M)                                     # auto: the staircase
    y.backward(np.ones(y.shape, np.float32))
    got = W.grad
    W.grad = None
    want = fused.masked_matmul(x, W, M, kernel="numpy")
    want.backward(np.ones(y.shape, np.float32))
    assert calls == [1]
    np.testing.assert_allclose(y.data, want.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, W.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="staircase"):
        fused.masked_matmul(x, W, M[::-1].copy(), kernel="staircase")
    with pytest.raises(ValueError, match="kernel must be"):
        fused.masked_matmul(x, W, M, kernel="fast")


@pytest.mark.parametrize("M", [np.kron(np.eye(2), np.ones((2, 2))), np.eye(3), np.full((3, 4), 0.5),
                               np.ones((3, 4))])
def test_op_gradient_is_masked_for_masks_that_only_look_like_staircases(M):
    """Masks whose rows happen to be in order but are not nested (start = 0 everywhere, as for
    a full mask), and masks of other values than 0/1: every path gives the twin's gradient."""
    x = Tensor(np.ones((2, M.shape[1])))
    for kernel in ("auto", "numba", "numpy"):
        W = Tensor(np.ones(M.shape), requires_grad=True)
        fused.masked_matmul(x, W, M, kernel=kernel).backward(np.ones((2, M.shape[0])))
        np.testing.assert_allclose(W.grad, 2 * M, err_msg=kernel)


def test_staircase_kernels_take_any_layout_and_refuse_mixed_dtypes():
    rng = np.random.default_rng(3)
    M = sorted_made_mask(9, 7, rng).astype(np.float64)
    perm, start = K.mask_structure_numba(M)
    x, W, b = rng.standard_normal((4, 7)), np.asfortranarray(rng.standard_normal((9, 7))), np.zeros(9)
    np.testing.assert_allclose(K.masked_matmul_forward_staircase(x, W, M, b, start), x @ (W * M).T, rtol=1e-12)
    with pytest.raises(TypeError, match="one dtype"):
        K.masked_matmul_forward_staircase(x.astype(np.float32), W, M, b, start)


def test_op_takes_mask_structure_pairs_too():
    rng = np.random.default_rng(4)
    M = sorted_made_mask(9, 7, rng).astype(np.float32)
    x = Tensor(rng.standard_normal((3, 7)).astype(np.float32))
    W = Tensor(rng.standard_normal((9, 7)).astype(np.float32))
    got = fused.masked_matmul(x, W, M, structure=K.mask_structure_numba(M))
    np.testing.assert_allclose(got.data, x.data @ (W.data * M).T, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- choose
COMPILED = ["mask_structure_numba", "masked_matmul_forward_numba", "masked_matmul_backward_input_numba",
            "masked_matmul_backward_weight_numba", "masked_matmul_forward_staircase",
            "masked_matmul_backward_staircase"]


def recording(ran, name, kernel):
    """kernel, noting its name in `ran` at every call."""
    def call(*args, **kwargs):
        ran.append(name)
        return kernel(*args, **kwargs)
    return call


def run_chosen_pairs(monkeypatch):
    """Run choose's pair, forward and backward, on a staircase in place and on a MADE mask in another
    order, both with a sparse input that the rules send to compiled code; return the compiled
    kernels that ran and whether every result matched the twins."""
    ran = []
    for name in COMPILED:
        monkeypatch.setattr(K, name, recording(ran, name, getattr(K, name)))
    rng = np.random.default_rng(5)
    agree = True
    for M in (sorted_made_mask(20, 30, rng), made_mask(20, 30, rng)):
        M = M.astype(np.float64)
        x = np.zeros((50, 30))
        x[0, 0] = 1.0                                        # 1 of 1,500 inputs nonzero: numba's side of the rule
        W, b, dy = rng.standard_normal((20, 30)), rng.standard_normal(20), rng.standard_normal((50, 20))
        forward, backward = K.choose("masked_matmul", x, M)
        dx, dW = backward(dy, x, W, M, True, True)
        perm, start = K.mask_structure_numpy(M)
        agree &= np.allclose(forward(x, W, M, b), K.masked_matmul_forward_numpy(x, W, M, b, perm, start))
        agree &= np.allclose(dx, K.masked_matmul_backward_input_numpy(dy, W, M, perm, start))
        agree &= np.allclose(dW, K.masked_matmul_backward_weight_numpy(dy, x, M, perm, start))
    return ran, agree


def test_choose_honours_the_numpy_switch(monkeypatch):
    """TINYAR_KERNELS=numpy: every implementation choose returns is a NumPy twin, where the
    rules would otherwise pick the staircase kernels and the loops."""
    monkeypatch.delenv("TINYAR_KERNELS", raising=False)
    assert K.choose("mask_structure") is K.mask_structure_numba
    ran, agree = run_chosen_pairs(monkeypatch)
    assert agree and {"masked_matmul_forward_staircase", "masked_matmul_forward_numba"} <= set(ran)
    monkeypatch.undo()
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose("mask_structure") is K.mask_structure_numpy
    ran, agree = run_chosen_pairs(monkeypatch)
    assert agree and ran == []


def test_choose_names_what_it_knows():
    with pytest.raises(ValueError, match="no kernel"):
        K.choose("masked_conv")
