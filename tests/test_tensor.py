"""The autograd engine (tinyar/tensor.py): graph walking, accumulation, no_grad,
detach, retain_grad, deep graphs, errors, anomaly detection and dtypes."""
import sys

import numpy as np
import pytest

from tinyar import Tensor, detect_anomaly, functional as F, no_grad, ops
from tinyar.tensor import unbroadcast


def leaf(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


def test_tensor_used_twice_gets_the_sum_of_both_gradients():
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()                          # d/dx x^2 = 2x
    np.testing.assert_allclose(x.grad, [2.0, -4.0, 6.0])

    y = leaf([0.5, 1.5])
    (y + y + y).sum().backward()                      # three uses
    np.testing.assert_allclose(y.grad, [3.0, 3.0])


def test_diamond_graph():
    # x -> a = 2x, x -> b = exp(x), c = a * b:  dc/dx = 2 e^x + 2x e^x
    x = leaf([0.3, -1.2])
    a = x * 2.0
    b = ops.exp(x)
    (a * b).sum().backward()
    expected = 2 * np.exp(x.data) + 2 * x.data * np.exp(x.data)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


def test_diamond_with_shared_intermediate():
    # h = tanh(x) used by two branches that join again: L = sum(h^2 + 3h)
    x = leaf([[0.1, 0.7], [-0.4, 1.1]])
    h = ops.tanh(x)
    (h * h + h * 3.0).sum().backward()
    dh = 2 * np.tanh(x.data) + 3.0
    np.testing.assert_allclose(x.grad, dh * (1 - np.tanh(x.data) ** 2), rtol=1e-12)


def test_gradients_accumulate_across_two_backward_calls():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    y.backward()                                      # the same graph again: adds, never overwrites
    np.testing.assert_allclose(x.grad, [4.0, 8.0])
    (x * 10.0).sum().backward()                       # a different graph adds too
    np.testing.assert_allclose(x.grad, [14.0, 18.0])


def test_zero_grad_clears_the_gradient():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    x.zero_grad()
    assert x.grad is None
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])


def test_leaf_gradients_are_independent_arrays():
    # add's VJP hands the same dy to both parents; writing one leaf's grad must not change the other's
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).backward(np.array([1.0, 1.0]))
    a.grad *= 100.0
    np.testing.assert_allclose(b.grad, [1.0, 1.0])


def test_no_grad_builds_no_graph():
    x = leaf([1.0, 2.0])
    with no_grad():
        y = ops.exp(x * 2.0).sum()
    assert not y.requires_grad
    assert y._parents == () and y._vjp is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    z = (x * 2.0).sum()                               # switched back on after the block
    assert z.requires_grad


def test_no_grad_is_restored_after_an_exception():
    x = leaf([1.0])
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert (x * 2.0).requires_grad


def test_constant_inputs_get_no_gradient():
    x = leaf([1.0, 2.0])
    c = Tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 4.0])
    assert c.grad is None
    assert not (c * 2.0).requires_grad


def test_detach_cuts_the_graph_but_shares_the_data():
    x = leaf([1.0, 2.0, 3.0])
    d = x.detach()
    assert not d.requires_grad and d.data is x.data
    (x * d).sum().backward()                           # d is a constant: dL/dx = d = x, not 2x
    np.testing.assert_allclose(x.grad, [1.0, 2.0, 3.0])


def test_retain_grad_keeps_an_intermediate_gradient():
    x = leaf([0.5, -1.0])
    h = (x * 3.0).retain_grad()
    g = ops.tanh(x)                                    # not retained
    (h * h + g).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)      # dL/dh = 2h
    np.testing.assert_allclose(x.grad, 3 * 2 * h.data + 1 - np.tanh(x.data) ** 2)
    assert g.grad is None


def test_a_chain_of_10000_ops_backpropagates_without_recursion():
    assert sys.getrecursionlimit() < 10_000 * 2       # a recursive walk would fail here
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(5_000):                            # 10,000 ops: y <- (y * c) + 0.001
        y = y * 1.0001 + 0.001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 5_000] * 2, rtol=1e-10)


def test_non_scalar_backward_needs_an_upstream_gradient():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"non-scalar.*\(2, 2\)|\(2, 2\).*non-scalar"):
        y.backward()
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 2\)"):
        y.backward(np.ones(3))
    y.backward(np.array([[1.0, 0.0], [0.5, 2.0]]))
    np.testing.assert_allclose(x.grad, [[2.0, 0.0], [1.0, 4.0]])


def test_backward_of_a_scalar_with_shape_1_or_1x1():
    x = leaf([2.0])
    (x * x).backward()
    np.testing.assert_allclose(x.grad, [4.0])
    y = leaf([[3.0]])
    (y * y).backward()                                 # one element: taken as a scalar
    np.testing.assert_allclose(y.grad, [[6.0]])


def test_only_float_tensors_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(TypeError, match="float16"):
        Tensor(np.array([1.0], np.float16))


def test_detect_anomaly_names_the_op_and_the_input_shapes():
    x = leaf([[1.0, -1.0, 2.0]])
    with detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"'log'.*NaN.*\(1, 3\)"):
            ops.log(x)
    with np.errstate(invalid="ignore"):
        y = ops.log(x)                                  # outside the block: no check
    assert np.isnan(y.data[0, 1])


def test_detect_anomaly_catches_an_infinite_gradient_in_backward():
    x = leaf([0.0, 4.0])
    with detect_anomaly():
        y = ops.sqrt(x)                                  # finite forward: sqrt(0) = 0
        with np.errstate(divide="ignore"), pytest.raises(FloatingPointError, match=r"'sqrt'.*inf.*gradient.*\(2,\)"):
            y.sum().backward()                           # dx = 1 / (2 sqrt(0)) = inf


SCALAR_EXPRESSIONS = {
    "x + 1": lambda x: x + 1, "1 + x": lambda x: 1 + x, "x - 0.5": lambda x: x - 0.5, "2 - x": lambda x: 2 - x,
    "x * 3": lambda x: x * 3, "0.5 * x": lambda x: 0.5 * x, "x / 4": lambda x: x / 4, "1 / x": lambda x: 1.0 / x,
    "x ** 2": lambda x: x ** 2, "x ** 0.5": lambda x: x ** 0.5, "-x": lambda x: -x,
    "maximum(x, 1)": lambda x: ops.maximum(x, 1.0), "max": lambda x: x.max(axis=1),
    "mean": lambda x: x.mean(), "where": lambda x: ops.where(x.data > 1, x, 0.0),
    "x * int array": lambda x: x * np.array([1, 2, 3]), "x * np.float64": lambda x: x * np.float64(2.0),
    "np.float64 * x": lambda x: np.float64(2.0) * x, "x @ x.T": lambda x: x @ x.T,
    "gelu": F.gelu, "softmax": F.softmax, "log_sigmoid": F.log_sigmoid, "logsumexp": F.logsumexp,
    "bce": lambda x: F.binary_cross_entropy_with_logits(x, np.array([[0, 1, 1], [1, 0, 0]])),
    "cross_entropy": lambda x: F.cross_entropy(x, np.array([2, 0])),
}


@pytest.mark.parametrize("name", list(SCALAR_EXPRESSIONS))
def test_float32_stays_float32_through_ops_with_python_scalars(name):
    x = leaf([[0.5, 1.5, 2.0], [1.0, 3.0, 0.25]], dtype=np.float32)
    y = SCALAR_EXPRESSIONS[name](x)
    assert y.dtype == np.float32, f"{name}: output is {y.dtype}"
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == np.float32, f"{name}: gradient is {x.grad.dtype}"


def test_float64_works_throughout():
    x = leaf([[0.5, 1.5, 2.0]])
    y = F.log_softmax(ops.tanh(x) @ np.eye(3)).sum()
    y.backward()
    assert y.dtype == np.float64 and x.grad.dtype == np.float64


def test_unbroadcast_sums_added_and_stretched_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_allclose(unbroadcast(g, (3, 4)), g.sum(0))
    np.testing.assert_allclose(unbroadcast(g, (3, 1)), g.sum(0).sum(1, keepdims=True))
    np.testing.assert_allclose(unbroadcast(g, ()), g.sum())
    np.testing.assert_allclose(unbroadcast(g, (1, 1, 4)), g.sum((0, 1), keepdims=True))
    assert unbroadcast(g, (2, 3, 4)) is g
    with pytest.raises(ValueError, match=r"\(5,\)"):
        unbroadcast(g, (5,))


def test_broadcast_gradient_reaches_each_input_in_its_own_shape():
    a = leaf(np.ones((2, 1)))
    b = leaf([1.0, 2.0, 3.0])
    (a * b).sum().backward()                          # y (2, 3)
    np.testing.assert_allclose(a.grad, [[6.0], [6.0]])
    np.testing.assert_allclose(b.grad, [2.0, 2.0, 2.0])


def test_a_gradient_has_the_dtype_of_its_tensor_in_mixed_precision():
    w = leaf([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    x = Tensor(np.array([[0.5, -1.0]]))                 # float64 data
    y = x @ w
    assert y.dtype == np.float64                        # NumPy's promotion in the forward
    y.sum().backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_allclose(w.grad, [[0.5, 0.5], [-1.0, -1.0]])
