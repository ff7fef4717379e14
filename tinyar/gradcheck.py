"""Finite-difference checks of the gradients of any function of Tensors.

For a function y = f(x_1, ..., x_n) and a fixed random weighting u of its
outputs, the scalar s = sum(u * f(x)) has the gradient g_k = ds/dx_k, which
autograd computes with one backward pass. The same numbers come from central
differences,

    ds/dx[j] ~ (s(x + eps e_j) - s(x - eps e_j)) / (2 eps)      error O(eps^2),

one coordinate e_j at a time for small inputs (every entry of u^T J), or along
random unit directions v for large ones (g . v against (s(x + eps v) - s(x - eps v)) / (2 eps)).
Where the output is small (at most `full_jacobian_size` elements), u runs over
the unit vectors instead, so that every row of the Jacobian is tested, not only
one random combination of them.

A NaN or inf anywhere, analytic or numeric, fails the check by itself, naming where
it is: every comparison with NaN is false, so a NaN would otherwise pass the tolerance
test and vanish from the largest error (max(0.0, nan) is 0.0).

Only float64 is accepted: with eps = 1e-6, float32's 7 significant digits leave
a rounding error of about 1e-7 / 1e-6 = 0.1 in every difference, far above any
tolerance that would catch a wrong derivative.
"""
from __future__ import annotations

import numpy as np

from tinyar.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate, or one of them is not finite.

    errors: the largest absolute and relative errors over the finite entries that were checked
    (the dict gradcheck returns when it passes), or None if nothing was compared.
    """

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.errors = errors


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, max_coordinates=400, n_directions=20,
              full_jacobian_size=16, seed=0):
    """Check fn's gradients with respect to every input Tensor that requires grad.

    fn:      called as fn(*inputs); returns a Tensor of any shape.
    inputs:  Tensors (float64) and any other arguments; a Tensor is checked if it
             requires grad. The inputs' data are perturbed in place and restored.
    Passes when every analytic and numeric value is finite and
    |analytic - numeric| <= atol + rtol * |numeric| everywhere. A NaN or inf fails by
    itself: NaN compares false with every tolerance, so it would otherwise pass unseen.
    Returns a dict with the largest absolute and relative errors. On failure, after
    checking every entry, raises GradcheckError naming the input, the element (or
    direction), both values and the relative error of the first non-finite entry, or
    else of the entry furthest over the tolerance; the message also counts the failing
    entries and gives the largest errors over the finite ones (also in the error's `errors`).
    """
    checked = _inputs_to_check(inputs, eps)
    rng = np.random.default_rng(seed)
    out = _output(fn, inputs)
    worst = {"max_abs_error": 0.0, "max_rel_error": 0.0}
    tally = {"entries": 0, "failed": 0, "headline": None}      # headline: (priority, message) of the worst
    for u in _weightings(out, full_jacobian_size, rng):
        s = _weighted_sum(fn, inputs, u)
        _backward(fn, inputs, checked, u)                  # x.grad = ds/dx for every checked x
        for k, x in checked:
            analytic, numeric, where = _both_gradients(x, s, eps, rng, max_coordinates, n_directions)
            _compare(k, x, analytic, numeric, where, atol, rtol, worst, tally)
    for _, x in checked:
        x.grad = None
    if tally["failed"]:
        raise GradcheckError(f"{tally['headline'][1]}; {tally['failed']} of {tally['entries']} checked entries "
                             f"failed; largest errors over the finite entries: abs {worst['max_abs_error']:.3g}, "
                             f"relative {worst['max_rel_error']:.3g}", dict(worst))
    return worst


def _inputs_to_check(inputs, eps):
    """[(position, Tensor)] of the inputs that require grad; all must be float64."""
    checked = [(k, x) for k, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input Tensor has requires_grad=True; nothing to check")
    for k, x in checked:
        if x.dtype != np.float64:
            raise TypeError(f"gradcheck: input {k} is {x.dtype}; gradcheck needs float64. With eps={eps}, "
                            "float32 rounding (about 1e-7 relative) makes each finite difference wrong by "
                            "about 0.1, which would hide real errors. Convert with Tensor(x.data.astype(np.float64)).")
    return checked


def _output(fn, inputs):
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype}; everything must run in float64")
    return out


def _weightings(out, full_jacobian_size, rng):
    """The weightings u of the outputs: every unit vector for a small output, else one random u."""
    if out.size <= full_jacobian_size:     # every row of the Jacobian: one weighting per output
        return [np.eye(out.size)[j].reshape(out.shape) for j in range(out.size)]
    return [rng.standard_normal(out.shape)]     # one random combination of the rows


def _weighted_sum(fn, inputs, u):
    """s() = sum(u * fn(*inputs)) over the outputs whose weight is not 0, without a graph.

    Leaving out the zero weights keeps one infinite output (log 0) from turning every
    other row of the Jacobian into NaN through 0 * inf.
    """
    used = u != 0

    def s():
        with no_grad():
            return float(np.sum(u[used] * fn(*inputs).data[used]))
    return s


def _backward(fn, inputs, checked, u):
    """The analytic gradients: one backward pass of sum(u * fn(*inputs)), into each x.grad."""
    for _, x in checked:
        x.grad = None
    out = fn(*inputs)
    if not out.requires_grad:
        raise GradcheckError("gradcheck: the output does not depend on any input that requires grad")
    out.backward(u)


def _both_gradients(x, s, eps, rng, max_coordinates, n_directions):
    """(analytic, numeric, "element" or "random direction"): every coordinate of a small x,
    or the derivatives along n_directions random unit vectors v of a large one (g . v)."""
    analytic = np.zeros_like(x.data) if x.grad is None else x.grad
    if x.size <= max_coordinates:
        return analytic.reshape(-1), _along_coordinates(x, s, eps), "element"
    directions = _random_directions(rng, x.shape, n_directions)
    numeric = _along_directions(x, s, eps, directions)
    return np.array([np.sum(analytic * v) for v in directions]), numeric, "random direction"


def _along_coordinates(x, s, eps):
    """ds/dx[j] ~ (s(x + eps e_j) - s(x - eps e_j)) / (2 eps) for every element j of x, flat."""
    numeric = np.empty(x.size)
    for j, idx in enumerate(np.ndindex(x.shape)):     # write x.data itself, whatever its layout
        old = x.data[idx]
        x.data[idx] = old + eps
        s_plus = s()
        x.data[idx] = old - eps
        s_minus = s()
        x.data[idx] = old
        numeric[j] = (s_plus - s_minus) / (2 * eps)
    return numeric


def _random_directions(rng, shape, n):
    """n random unit vectors of the given shape, (n,) + shape."""
    directions = rng.standard_normal((n,) + shape)
    directions /= np.sqrt((directions ** 2).sum(axis=tuple(range(1, directions.ndim)), keepdims=True))
    return directions


def _along_directions(x, s, eps, directions):
    """The derivative of s along each unit vector v: (s(x + eps v) - s(x - eps v)) / (2 eps)."""
    original = x.data.copy()
    numeric = np.empty(len(directions))
    for j, v in enumerate(directions):
        x.data[...] = original + eps * v
        s_plus = s()
        x.data[...] = original - eps * v
        s_minus = s()
        numeric[j] = (s_plus - s_minus) / (2 * eps)
    x.data[...] = original
    return numeric


def _compare(k, x, analytic, numeric, where, atol, rtol, worst, tally):
    """Fold the finite entries' errors into `worst`; count the failing entries in `tally`, and
    keep as its headline the first non-finite entry, or else the largest excess over the tolerance."""
    finite = np.isfinite(analytic) & np.isfinite(numeric)
    with np.errstate(invalid="ignore"):                     # inf - inf: NaN, which `finite` leaves out
        abs_err = np.abs(analytic - numeric)
        rel_err = abs_err / np.maximum(np.abs(numeric), atol)    # no blow-up where the gradient is ~0
        excess = np.where(finite, abs_err - (atol + rtol * np.abs(numeric)), -np.inf)
    if finite.any():
        worst["max_abs_error"] = max(worst["max_abs_error"], float(abs_err[finite].max()))
        worst["max_rel_error"] = max(worst["max_rel_error"], float(rel_err[finite].max()))
    tally["entries"] += len(finite)
    tally["failed"] += int(np.sum(~finite | (excess > 0)))
    if not finite.all():
        j, priority, verdict = int(np.argmin(finite)), np.inf, "not finite (NaN or inf passes no tolerance)"
    else:
        j = int(np.argmax(excess))
        priority, verdict = excess[j], f"tolerance atol={atol}, rtol={rtol}"
    if priority > 0 and (tally["headline"] is None or priority > tally["headline"][0]):
        label = tuple(int(i) for i in np.unravel_index(j, x.shape)) if where == "element" else j   # (1, 2)
        tally["headline"] = (priority, f"gradcheck failed for input {k} (shape {x.shape}) at {where} {label}: "
                                       f"analytic {analytic[j]:.10g}, numeric {numeric[j]:.10g}, "
                                       f"abs error {abs_err[j]:.3g}, relative error {rel_err[j]:.3g} ({verdict})")
