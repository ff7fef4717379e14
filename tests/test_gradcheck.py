"""gradcheck itself: it must pass right gradients and catch wrong ones, loudly."""
import re

import numpy as np
import pytest

from tinyar import GradcheckError, Tensor, gradcheck, ops


def leaf(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


def cube_with_wrong_vjp(x, wrong_at, error=0.5):
    """y = x^3 with a VJP that is off by `error` at one flat position."""
    def vjp(dy):
        dx = dy * 3.0 * x.data ** 2
        dx.reshape(-1)[wrong_at] += error
        return (dx,)
    return Tensor._make(x.data ** 3, (x,), vjp, "wrong_cube")


def test_passes_a_right_gradient():
    rng = np.random.default_rng(0)
    a, b = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal((4, 2)))
    result = gradcheck(lambda a, b: ops.tanh(a @ b) * 2.0, a, b)
    assert result["max_abs_error"] < 1e-8 and result["max_rel_error"] < 1e-6


def test_catches_a_wrong_vjp_and_names_input_element_and_values():
    x = leaf(np.linspace(0.5, 1.6, 12).reshape(3, 4))
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: cube_with_wrong_vjp(x, wrong_at=6).sum(), x)
    message = str(info.value)
    assert "input 0" in message and "(3, 4)" in message
    assert "element (1, 2)" in message                         # flat 6 in a (3, 4) array
    true = 3.0 * x.data[1, 2] ** 2
    analytic = float(re.search(r"analytic (\S+),", message).group(1))
    numeric = float(re.search(r"numeric (\S+),", message).group(1))
    assert analytic == pytest.approx(true + 0.5, rel=1e-8)
    assert numeric == pytest.approx(true, rel=1e-6)
    assert re.search(r"relative error (\S+)", message)
    np.testing.assert_array_equal(x.data, np.linspace(0.5, 1.6, 12).reshape(3, 4))   # inputs restored


def test_names_the_second_input_when_it_is_the_wrong_one():
    a, b = leaf([0.3, 0.7]), leaf([1.1, 0.9, 1.3])
    with pytest.raises(GradcheckError, match=r"input 1 \(shape \(3,\)\) at element \(2,\)"):
        gradcheck(lambda a, b: a.sum() * cube_with_wrong_vjp(b, wrong_at=2).sum(), a, b)


def test_catches_a_small_error_only_in_one_output_row():
    # y = x (identity, 4 outputs) whose VJP mixes up the rows only slightly
    x = leaf([1.0, 2.0, 3.0, 4.0])
    swap = np.eye(4)
    swap[[0, 1]] = swap[[1, 0]]
    fn = lambda x: Tensor._make(x.data.copy(), (x,), lambda dy: (swap @ dy,), "swapped")
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(fn, x)


def test_refuses_float32_and_says_why():
    x = leaf([1.0, 2.0], dtype=np.float32)
    with pytest.raises(TypeError) as info:
        gradcheck(lambda x: (x * x).sum(), x)
    message = str(info.value)
    assert "float32" in message and "float64" in message and "rounding" in message


def test_refuses_a_float32_output():
    x = leaf([1.0, 2.0])
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: Tensor._make(x.data.astype(np.float32), (x,), lambda dy: (dy,), "cast"), x)


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda x: x * 2.0, Tensor(np.ones(3)))


def test_random_direction_mode_on_a_large_input():
    rng = np.random.default_rng(1)
    x = leaf(rng.uniform(0.5, 1.5, (40, 25)))               # 1,000 elements > max_coordinates = 400
    calls = []

    def fn(x):
        calls.append(1)
        return (ops.tanh(x) * x).sum(axis=0)                # 25 outputs > full_jacobian_size: one random weighting

    result = gradcheck(fn, x, n_directions=10)
    assert result["max_rel_error"] < 1e-6
    assert len(calls) == 1 + 1 + 2 * 10                       # probe, backward, two evaluations per direction

    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(40, 25\)\) at random direction \d"):
        gradcheck(lambda x: cube_with_wrong_vjp(x, wrong_at=517, error=5.0).sum(), x, n_directions=10)


def test_full_jacobian_mode_checks_every_coordinate():
    x = leaf(np.linspace(0.5, 1.5, 6))
    calls = []

    def fn(x):
        calls.append(1)
        return x ** 3.0

    gradcheck(fn, x)
    # one probe, then for each of the 6 outputs: one backward pass and 2 * 6 finite differences
    assert len(calls) == 1 + 6 * (1 + 2 * 6)


def test_inputs_that_do_not_require_grad_are_passed_through():
    x, c = leaf([0.5, 1.5]), Tensor(np.array([2.0, 3.0]))
    result = gradcheck(lambda x, c, k: (x * c).sum() * k, x, c, 4.0)
    assert result["max_abs_error"] < 1e-8
    assert c.grad is None and x.grad is None                  # gradcheck clears what it filled


def test_a_missing_gradient_is_caught_on_a_non_contiguous_input():
    """Perturbing a copy instead of the input would make every numeric derivative 0."""
    from tinyar.tensor import Tensor as T

    def forgets_its_gradient(x):                 # y = 2x with a VJP that returns nothing
        return T._make(2.0 * x.data, (x,), lambda dy: (None,), "broken")

    x = T(np.random.default_rng(0).standard_normal((3, 2)).T, requires_grad=True)   # a transposed view
    assert not x.data.flags.c_contiguous
    with pytest.raises(GradcheckError, match="numeric 2"):
        gradcheck(forgets_its_gradient, x)


# ---------------------------------------------------------------- NaN and inf never pass

def square_with_vjp_value(x, bad_at, bad_value):
    """y = x^2 with a VJP that returns bad_value (NaN or inf) at one flat position."""
    def vjp(dy):
        dx = dy * 2.0 * x.data
        dx.reshape(-1)[bad_at] = bad_value
        return (dx,)
    return Tensor._make(x.data ** 2, (x,), vjp, "bad_square")


def log_with_silent_vjp(x):
    """y = ln x with a VJP that returns 0 where x = 0 instead of inf: the analytic side stays finite."""
    def vjp(dy):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.where(x.data == 0, 0.0, dy / x.data),)
    with np.errstate(divide="ignore", invalid="ignore"):
        return Tensor._make(np.log(x.data), (x,), vjp, "silent_log")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_vjp_fails_and_names_input_and_element(bad_value):
    a, b = leaf([0.4, 0.9]), leaf(np.linspace(0.5, 1.6, 6).reshape(2, 3))
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda a, b: a.sum() * square_with_vjp_value(b, 4, bad_value).sum(), a, b)
    message = str(info.value)
    assert f"input 1 (shape (2, 3)) at element (1, 1): analytic {bad_value}" in message   # flat 4 of (2, 3)
    assert "not finite" in message and "1 of 8 checked entries failed" in message
    assert info.value.errors["max_abs_error"] < 1e-7                     # the 7 finite entries are right


def test_non_finite_entries_do_not_hide_a_wrong_finite_one():
    x = leaf(np.linspace(0.5, 1.6, 6))

    def fn(x):                                                           # NaN at 1, off by 0.5 at 4
        def vjp(dy):
            dx = dy * 2.0 * x.data
            dx[1], dx[4] = np.nan, dx[4] + 0.5
            return (dx,)
        return Tensor._make(x.data ** 2, (x,), vjp, "nan_and_wrong").sum()

    with pytest.raises(GradcheckError) as info:
        gradcheck(fn, x)
    message = str(info.value)
    assert "at element (1,): analytic nan" in message                    # the non-finite one leads
    assert "2 of 6 checked entries failed" in message                    # and the wrong one is counted
    assert info.value.errors["max_abs_error"] == pytest.approx(0.5, rel=1e-6)
    assert "abs 0.5" in message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("op, n_failed", [
    (ops.log, 5),      # column 0 of every row (dy / 0), and all of row 0: its output log 0 = -inf makes
                       # each difference -inf - (-inf) = NaN
    (ops.sqrt, 3),     # column 0 of every row only: sqrt 0 = 0 is finite
])
def test_log_and_sqrt_at_zero_fail_at_the_zero(op, n_failed):
    x = leaf([0.0, 1.0, 2.0])
    with pytest.raises(GradcheckError) as info:
        gradcheck(op, x)
    message = str(info.value)
    assert "input 0 (shape (3,)) at element (0,)" in message and "not finite" in message
    assert f"{n_failed} of 9 checked entries failed" in message       # of the 3x3 Jacobian
    assert info.value.errors["max_abs_error"] < 1e-7
    np.testing.assert_array_equal(x.data, [0.0, 1.0, 2.0])               # inputs restored
    assert x.grad is None                                                # and the gradients cleared
    assert gradcheck(op, leaf([0.5, 1.0, 2.0]))["max_rel_error"] < 1e-6  # away from 0 the op is right


def test_a_finite_analytic_gradient_against_a_nan_numeric_one_fails():
    x = leaf([0.0, 1.5])
    with pytest.raises(GradcheckError, match=r"element \(0,\): analytic 0, numeric nan.*not finite"):
        with np.errstate(invalid="ignore"):
            gradcheck(lambda x: log_with_silent_vjp(x).sum(), x)


def test_a_nan_is_caught_along_random_directions():
    x = leaf(np.random.default_rng(2).uniform(0.5, 1.5, (30, 20)))      # 600 elements: directions mode
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(30, 20\)\) at random direction 0: analytic nan"):
        gradcheck(lambda x: square_with_vjp_value(x, 77, np.nan).sum(), x, n_directions=5)
