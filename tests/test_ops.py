"""Every op against finite differences (float64), the composites against SciPy,
and the ops' edge cases and error messages."""
import numpy as np
import pytest
from scipy import special

from tinyar import fused, Tensor, gradcheck_cases, functional as F, ops
from tinyar.gradcheck import gradcheck

OP_CASES = gradcheck_cases.op_cases()
FUNCTIONAL_CASES = gradcheck_cases.functional_cases()


def leaf(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


# ----------------------------------------------------------------- gradchecks
def test_every_registered_op_has_a_gradcheck_case():
    missing = sorted(set(ops.OPS) - set(OP_CASES))
    assert not missing, f"ops without a gradcheck case in tinyar/gradcheck_cases.py op_cases(): {missing}"
    empty = sorted(name for name, cases in OP_CASES.items() if not cases)
    assert not empty, f"ops with an empty list of gradcheck cases: {empty}"
    unknown = sorted(set(OP_CASES) - set(ops.OPS))
    assert not unknown, f"gradcheck cases for ops that are not registered: {unknown}"


def test_the_core_ops_are_registered():
    core = {"add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu",
            "softplus", "maximum", "matmul", "sum", "mean", "max", "reshape", "transpose", "getitem",
            "concatenate", "stack", "where"}
    assert core <= set(ops.OPS)


def test_binary_ops_run_over_the_broadcasting_grid():
    shapes = {s for pair in gradcheck_cases.BROADCAST_PAIRS for s in pair}
    assert {(), (3,), (2, 3), (1, 3), (2, 1)} <= shapes
    for name in ["add", "sub", "mul", "div", "maximum"]:
        assert len(OP_CASES[name]) == len(gradcheck_cases.BROADCAST_PAIRS)
    batched = [shapes for name, shapes, _, _ in OP_CASES["matmul"] if shapes.startswith("(2, 2, 3) (2, 3, 4)")]
    assert batched, "no batched matmul case"


@pytest.mark.parametrize("case", [c for cases in OP_CASES.values() for c in cases],
                         ids=lambda c: f"{c[0]} {c[1]}")
def test_op_gradcheck(case):
    name, shapes, fn, inputs = case
    result = gradcheck(fn, *inputs)
    assert result["max_abs_error"] < 1e-5


@pytest.mark.parametrize("case", FUNCTIONAL_CASES, ids=lambda c: f"{c[0]} {c[1]}")
def test_functional_gradcheck(case):
    name, shapes, fn, inputs = case
    result = gradcheck(fn, *inputs)
    assert result["max_abs_error"] < 1e-5


# ------------------------------------------------- composites against SciPy
LOGITS = np.array([[-1000.0, -3.0, 0.0, 2.5, 1000.0],
                   [0.1, -0.2, 0.3, 40.0, -40.0],
                   [1000.0, 1000.0, -1000.0, 0.0, 999.0]])


def _no_overflow():
    return np.errstate(over="raise", invalid="raise", divide="raise")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_and_log_sigmoid_match_scipy_at_extreme_logits(dtype):
    tol = dict(rtol=1e-12, atol=0) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-30)
    z = leaf(LOGITS, dtype)
    with _no_overflow():
        s = ops.sigmoid(z)
        ls = F.log_sigmoid(z)
        ls.sum().backward()
    np.testing.assert_allclose(s.data, special.expit(LOGITS), **tol)
    np.testing.assert_allclose(ls.data, special.log_expit(LOGITS), **tol)
    assert np.isfinite(ls.data).all() and np.isfinite(z.grad).all()
    np.testing.assert_allclose(z.grad, special.expit(-LOGITS), **tol)   # d/dz log sigma(z) = sigma(-z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("axis", [-1, 0])
def test_logsumexp_matches_scipy_at_extreme_logits(dtype, axis):
    tol = 1e-12 if dtype == np.float64 else 1e-6
    z = leaf(LOGITS, dtype)
    with _no_overflow():
        y = F.logsumexp(z, axis=axis)
        y.sum().backward()
    np.testing.assert_allclose(y.data, special.logsumexp(LOGITS, axis=axis), rtol=tol)
    assert np.isfinite(z.grad).all()
    np.testing.assert_allclose(z.grad, special.softmax(LOGITS, axis=axis), rtol=tol, atol=tol)


def test_logsumexp_keepdims_and_all_minus_infinity():
    z = Tensor(np.array([[1.0, 2.0], [-np.inf, -np.inf]]))
    with np.errstate(divide="ignore"):
        y = F.logsumexp(z, axis=1, keepdims=True)
    assert y.shape == (2, 1)
    np.testing.assert_allclose(y.data[0, 0], np.log(np.e + np.e ** 2))
    assert y.data[1, 0] == -np.inf


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_softmax_and_softmax_match_scipy_at_extreme_logits(dtype):
    tol = 1e-12 if dtype == np.float64 else 1e-6
    rng = np.random.default_rng(1)
    u = rng.standard_normal(LOGITS.shape).astype(dtype).astype(np.float64)   # an arbitrary upstream gradient
    logits = LOGITS.astype(dtype).astype(np.float64)    # the reference sees the same rounded inputs
    z = leaf(LOGITS, dtype)
    with _no_overflow():
        y = F.log_softmax(z)
        y.backward(u.astype(dtype))
    np.testing.assert_allclose(y.data, special.log_softmax(logits, axis=-1), rtol=tol)
    p = special.softmax(logits, axis=-1)
    expected = u - p * u.sum(axis=-1, keepdims=True)     # d log_softmax: u - softmax * sum(u)
    assert np.isfinite(z.grad).all()
    np.testing.assert_allclose(z.grad, expected, rtol=tol * 10, atol=tol * 10)

    z = leaf(LOGITS, dtype)
    with _no_overflow():
        s = F.softmax(z)
        s.backward(u.astype(dtype))
    # exp of a float32 log-probability near -40 is off by about 40 * 2^-24 relative: allow 1e-5
    np.testing.assert_allclose(s.data, p, rtol=max(tol, 1e-5), atol=1e-300)
    expected = p * (u - (p * u).sum(axis=-1, keepdims=True))   # d softmax: p (u - p.u)
    np.testing.assert_allclose(z.grad, expected, rtol=tol * 10, atol=tol * 10)


def test_cross_entropies_at_extreme_logits():
    z = leaf(LOGITS)
    y = np.array([[0, 1, 1, 0, 1], [1, 0, 1, 1, 0], [1, 0, 0, 1, 0]])
    with _no_overflow():
        bce = F.binary_cross_entropy_with_logits(z, y)
        bce.sum().backward()
    expected = -(y * special.log_expit(LOGITS) + (1 - y) * special.log_expit(-LOGITS))
    np.testing.assert_allclose(bce.data, expected, rtol=1e-12, atol=1e-15)   # softplus(40) - 40: cancels
    np.testing.assert_allclose(z.grad, special.expit(LOGITS) - y, rtol=1e-12, atol=1e-300)

    z = leaf(LOGITS)
    targets = np.array([0, 4, 2])
    with _no_overflow():
        ce = F.cross_entropy(z, targets)
        ce.sum().backward()
    logp = special.log_softmax(LOGITS, axis=-1)
    np.testing.assert_allclose(ce.data, -logp[np.arange(3), targets], rtol=1e-12)
    onehot = np.eye(5)[targets]
    np.testing.assert_allclose(z.grad, special.softmax(LOGITS, axis=-1) - onehot, atol=1e-12)


def test_cross_entropy_along_another_axis_and_its_errors():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 4, 3))               # classes along axis 1
    targets = np.array([[0, 3, 1], [2, 2, 0]])
    ce = F.cross_entropy(Tensor(logits), targets, axis=1)
    logp = special.log_softmax(logits, axis=1)
    b, t = np.indices(targets.shape)
    np.testing.assert_allclose(ce.data, -logp[b, targets, t], rtol=1e-12)
    with pytest.raises(ValueError, match="0..3"):
        F.cross_entropy(Tensor(logits), targets + 2, axis=1)
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy(Tensor(logits), targets.astype(float), axis=1)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        F.cross_entropy(Tensor(logits), targets[:, :2], axis=1)


def test_gelu_matches_its_tanh_formula():
    x = np.linspace(-4, 4, 9)
    c = np.sqrt(2 / np.pi)
    np.testing.assert_allclose(F.gelu(Tensor(x)).data, 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3))),
                               rtol=1e-12)
    np.testing.assert_allclose(F.gelu(Tensor(x)).data, x * special.ndtr(x), atol=2e-3)   # close to x Phi(x)


def test_softplus_is_finite_at_extreme_logits():
    z = leaf(LOGITS)
    with _no_overflow():
        y = ops.softplus(z)
        y.sum().backward()
    np.testing.assert_allclose(y.data, np.logaddexp(0, LOGITS), rtol=1e-12)
    np.testing.assert_allclose(z.grad, special.expit(LOGITS), rtol=1e-12)


# --------------------------------------------------------------- edge cases
def test_max_ties_share_the_gradient_equally():
    x = leaf([1.0, 3.0, 3.0, 2.0])
    x.max().backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.5, 0.5, 0.0])

    x = leaf([[5.0, 5.0, 5.0], [1.0, 4.0, 4.0]])
    x.max(axis=1).backward(np.array([3.0, 1.0]))
    np.testing.assert_allclose(x.grad, [[1.0, 1.0, 1.0], [0.0, 0.5, 0.5]])


def test_max_gradient_does_not_depend_on_the_order_of_tied_elements():
    values = np.array([2.0, 7.0, 1.0, 7.0, 7.0, 0.0])
    perm = np.random.default_rng(3).permutation(values.size)
    a, b = leaf(values), leaf(values[perm])
    a.max().backward()
    b.max().backward()
    np.testing.assert_allclose(b.grad, a.grad[perm])
    assert a.grad.sum() == pytest.approx(1.0)


def test_max_keepdims_and_multiple_axes():
    x = leaf(np.arange(12.0).reshape(2, 3, 2))
    y = x.max(axis=(0, 2), keepdims=True)
    assert y.shape == (1, 3, 1)
    np.testing.assert_allclose(y.data.ravel(), [7.0, 9.0, 11.0])
    y.sum().backward()
    assert x.grad.sum() == 3.0 and x.grad[1, :, 1].tolist() == [1.0, 1.0, 1.0]


def test_maximum_ties_split_the_gradient():
    a, b = leaf([1.0, 2.0, 3.0]), leaf([1.0, 5.0, 0.0])
    ops.maximum(a, b).sum().backward()
    np.testing.assert_allclose(a.grad, [0.5, 0.0, 1.0])
    np.testing.assert_allclose(b.grad, [0.5, 1.0, 0.0])


def test_getitem_scatter_adds_repeated_indices():
    x = leaf([10.0, 20.0, 30.0])
    y = x[np.array([0, 2, 0, 0])]
    y.backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(x.grad, [8.0, 0.0, 2.0])     # element 0 picked three times: 1 + 3 + 4

    x = leaf(np.zeros((3, 2)))
    rows, cols = np.array([1, 1, 2, 1]), np.array([0, 0, 1, 1])
    x[rows, cols].sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0], [2, 1], [0, 1]])

    x = leaf(np.zeros((3, 2)))
    x[[0, 0]].sum().backward()                               # a list index, rows repeated
    np.testing.assert_allclose(x.grad, [[2, 2], [0, 0], [0, 0]])


def test_getitem_slices_ints_and_masks():
    x = leaf(np.arange(12.0).reshape(3, 4))
    y = x[1:, ::2]
    np.testing.assert_allclose(y.data, [[4, 6], [8, 10]])
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0]])

    x = leaf(np.arange(6.0))
    mask = np.array([True, False, True, False, False, True])
    x[mask].backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.grad, [1, 0, 2, 0, 0, 3])

    x = leaf(np.arange(6.0).reshape(2, 3))
    x[1, -1].backward()
    np.testing.assert_allclose(x.grad, [[0, 0, 0], [0, 0, 1]])


def test_concatenate_stack_and_where_route_gradients():
    a, b = leaf(np.ones((2, 2))), leaf(np.ones((2, 3)))
    ops.concatenate([a, b], axis=-1).backward(np.arange(10.0).reshape(2, 5))
    np.testing.assert_allclose(a.grad, [[0, 1], [5, 6]])
    np.testing.assert_allclose(b.grad, [[2, 3, 4], [7, 8, 9]])

    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    s = ops.stack([a, b], axis=-1)
    assert s.shape == (2, 2)
    s.backward(np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(a.grad, [1.0, 3.0])
    np.testing.assert_allclose(b.grad, [2.0, 4.0])

    a, b = leaf([1.0, 2.0, 3.0]), leaf([9.0])
    ops.where(np.array([True, False, True]), a, b).backward(np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(a.grad, [1.0, 0.0, 4.0])
    np.testing.assert_allclose(b.grad, [2.0])                 # b broadcast: summed back


def test_matmul_forward_for_vectors_matrices_and_batches():
    rng = np.random.default_rng(4)
    for sa, sb in [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((4, 2, 3), (3, 5)), ((4, 2, 3), (4, 3, 5))]:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        np.testing.assert_allclose((Tensor(a) @ Tensor(b)).data, a @ b, rtol=1e-12)
        np.testing.assert_allclose((a @ Tensor(b)).data, a @ b, rtol=1e-12)     # ndarray @ Tensor


def test_reshape_and_transpose():
    x = leaf(np.arange(6.0).reshape(2, 3))
    assert x.reshape(3, 2).shape == (3, 2) and x.reshape((6,)).shape == (6,) and x.reshape(-1, 2).shape == (3, 2)
    assert x.T.shape == (3, 2)
    y = leaf(np.zeros((2, 3, 4)))
    y.transpose(2, 0, 1).backward(np.arange(24.0).reshape(4, 2, 3))
    np.testing.assert_allclose(y.grad, np.arange(24.0).reshape(4, 2, 3).transpose(1, 2, 0))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)|\(4,\).*\(2, 3\)"):
        x.reshape(4)
    with pytest.raises(ValueError, match="permutation"):
        y.transpose(0, 0, 1)


# ----------------------------------------------------------------- errors
def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(3, 2, 3\).*\(4, 3, 2\)"):
        ops.matmul(Tensor(np.ones((3, 2, 3))), Tensor(np.ones((4, 3, 2))))       # batch axes 3 vs 4
    with pytest.raises(ValueError, match=r"\(\).*\(3,\)"):
        ops.matmul(Tensor(np.float64(2.0)), Tensor(np.ones(3)))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "maximum"])
def test_incompatible_shapes_name_the_op_and_both_shapes(name):
    with pytest.raises(ValueError, match=rf"{name}.*\(2, 3\).*\(4,\)"):
        ops.OPS[name](Tensor(np.ones((2, 3))), Tensor(np.ones(4)))


def test_operator_with_incompatible_shapes():
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(2,\)"):
        Tensor(np.ones((2, 3))) + np.ones(2)


def test_indexing_out_of_range_names_the_shape():
    x = Tensor(np.ones((3, 2)))
    with pytest.raises(IndexError, match=r"\(3, 2\)"):
        x[3]
    with pytest.raises(IndexError, match=r"\(3, 2\)"):
        x[np.array([0, 5])]
    with pytest.raises(IndexError, match=r"\(3, 2\)"):
        x[:, -3]


def test_pow_refuses_a_tensor_exponent():
    with pytest.raises(TypeError, match="exponent"):
        Tensor(np.ones(2)) ** Tensor(np.ones(2))


def test_concatenate_and_stack_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\), \(2, 2\)"):
        ops.concatenate([Tensor(np.ones((2, 3))), Tensor(np.ones((2, 2)))], axis=0)
    with pytest.raises(ValueError, match=r"\(2, 3\), \(2, 2\)"):
        ops.stack([Tensor(np.ones((2, 3))), Tensor(np.ones((2, 2)))])
    for join in (ops.concatenate, ops.stack):                   # an empty list: say so, not "shapes must be equal"
        with pytest.raises(ValueError, match="at least one tensor, got none"):
            join([])


def test_matmul_with_a_transposed_right_operand():
    # x @ W.T (as in Linear) takes a layout shortcut in the VJP; it must give the same gradients
    rng = np.random.default_rng(5)
    x, w = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal((2, 3)))
    assert gradcheck(lambda x, w: x @ w.T, x, w)["max_abs_error"] < 1e-8
    (x @ w.T).backward(np.ones((4, 2)))
    assert w.grad.flags.c_contiguous
    np.testing.assert_allclose(w.grad, np.ones((2, 4)) @ x.data, rtol=1e-12)
    np.testing.assert_allclose(x.grad, np.ones((4, 2)) @ w.data, rtol=1e-12)


def test_matmul_skips_the_gradient_of_a_constant_input():
    w = leaf(np.ones((3, 2)))
    y = Tensor(np.ones((4, 3))) @ w
    dx, dw = y._vjp(np.ones((4, 2)))
    assert dx is None
    np.testing.assert_allclose(dw, np.full((3, 2), 4.0))


@pytest.mark.parametrize("reduce", ["sum_", "mean", "max_"])
def test_a_reduction_over_an_axis_the_tensor_lacks_is_a_clear_error(reduce):
    x = Tensor(np.arange(6.0).reshape(2, 3))
    for axis in (2, -3):
        with pytest.raises(ValueError, match="out of range for a tensor of shape"):
            getattr(ops, reduce)(x, axis=axis)


def test_transpose_with_an_axis_the_tensor_lacks_is_a_clear_error():
    with pytest.raises(ValueError, match="not a permutation"):
        ops.transpose(Tensor(np.ones((2, 3))), (0, 3))


def test_pow_zero_has_zero_gradient_at_zero():
    x = Tensor(np.array([0.0, 2.0]), requires_grad=True)
    ops.pow_(x, 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


def test_fused_ops_refuse_integer_inputs_and_attention_needs_sequences():
    ints = Tensor(np.array([[1, 2, 4]]))
    ones = Tensor(np.ones(3))
    with pytest.raises(TypeError, match="layer_norm: expected float32 or float64"):
        fused.layer_norm(ints, ones, ones)
    with pytest.raises(TypeError, match="gelu: expected float32 or float64"):
        fused.gelu(ints)
    v = Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"causal_attention: expected q \(\.\.\., Tq, d\)"):
        fused.causal_attention(v, v, v)


def test_bernoulli_log_prob_is_the_composite_bit_for_bit_and_stable():
    """The fused op gives exactly x z - softplus(z) and its gradient, and stays finite at |z| = 1000."""
    from tinyar.tensor import Tensor
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        z = rng.normal(size=(4, 7)).astype(dtype) * 5
        x = (rng.random((4, 7)) < 0.5).astype(dtype)
        dy = rng.normal(size=(4, 7)).astype(dtype)
        a, b = Tensor(z, requires_grad=True), Tensor(z, requires_grad=True)
        one_op = fused.bernoulli_log_prob(a, x)
        composite = Tensor(x) * b - ops.softplus(b)
        one_op.backward(dy)
        composite.backward(dy)
        assert np.array_equal(one_op.data, composite.data) and np.array_equal(a.grad, b.grad)
    z = Tensor(np.array([-1000.0, 1000.0, -1000.0, 1000.0]), requires_grad=True)
    y = fused.bernoulli_log_prob(z, np.array([0.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(y.data, [0.0, 0.0, -1000.0, -1000.0])    # log sigma(+-1000) exactly
    y.backward(np.ones(4))
    np.testing.assert_allclose(z.grad, [0.0, 0.0, 1.0, -1.0])           # x - sigma(z)
    with pytest.raises(ValueError, match="shape"):
        fused.bernoulli_log_prob(z, np.zeros(3))


def test_review_fixes_give_clear_errors_and_right_dtypes():
    """embedding takes a plain table; conv2d refuses zero channels and non-0/1 taps; linear
    refuses integers and widens y for a wider bias instead of rounding the bias down."""
    from tinyar.tensor import Tensor
    y = fused.embedding(np.arange(15.0).reshape(5, 3), np.array([1, 4]))
    np.testing.assert_array_equal(y.data, [[3, 4, 5], [12, 13, 14]])
    x = Tensor(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="at least one"):
        fused.conv2d(x, Tensor(np.zeros((0, 3, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="taps"):
        fused.conv2d(x, Tensor(np.zeros((2, 3, 3, 3), np.float32)), taps=np.full((3, 3), 0.5))
    with pytest.raises(TypeError, match="float"):
        fused.linear(Tensor(np.ones((2, 3), np.int64)), Tensor(np.ones((4, 3))))
    y = fused.linear(Tensor(np.ones((2, 3), np.float32)), Tensor(np.ones((4, 3), np.float32)),
                   Tensor(np.full(4, 1e-9)))
    assert y.dtype == np.float64 and np.all(y.data == 3 + 1e-9)
