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

Only float64 is accepted: with eps = 1e-6, float32's 7 significant digits leave
a rounding error of about 1e-7 / 1e-6 = 0.1 in every difference, far above any
tolerance that would catch a wrong derivative.
"""
from __future__ import annotations

import numpy as np

from tinyar.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, max_coordinates=400, n_directions=20,
              full_jacobian_size=16, seed=0):
    """Check fn's gradients with respect to every input Tensor that requires grad.

    fn:      called as fn(*inputs); returns a Tensor of any shape.
    inputs:  Tensors (float64) and any other arguments; a Tensor is checked if it
             requires grad. The inputs' data are perturbed in place and restored.
    Passes when |analytic - numeric| <= atol + rtol * |numeric| everywhere.
    Returns a dict with the largest absolute and relative errors; raises
    GradcheckError naming the input, the element (or direction), both values and
    the relative error on failure.
    """
    checked = [(k, x) for k, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input Tensor has requires_grad=True; nothing to check")
    for k, x in checked:
        if x.dtype != np.float64:
            raise TypeError(f"gradcheck: input {k} is {x.dtype}; gradcheck needs float64. With eps={eps}, "
                            "float32 rounding (about 1e-7 relative) makes each finite difference wrong by "
                            "about 0.1, which would hide real errors. Convert with Tensor(x.data.astype(np.float64)).")

    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype}; everything must run in float64")
    if out.size <= full_jacobian_size:     # every row of the Jacobian: one weighting per output
        weightings = [np.eye(out.size)[j].reshape(out.shape) for j in range(out.size)]
    else:                                  # one random combination of the rows
        weightings = [rng.standard_normal(out.shape)]

    worst = {"max_abs_error": 0.0, "max_rel_error": 0.0}
    for u in weightings:
        def s():
            with no_grad():
                return float(np.sum(u * fn(*inputs).data))

        for _, x in checked:
            x.grad = None
        out = fn(*inputs)
        if not out.requires_grad:
            raise GradcheckError("gradcheck: the output does not depend on any input that requires grad")
        out.backward(u)
        for k, x in checked:
            analytic = np.zeros_like(x.data) if x.grad is None else x.grad
            if x.size <= max_coordinates:
                numeric = np.empty(x.size)
                for j, idx in enumerate(np.ndindex(x.shape)):   # write x.data itself, whatever its layout
                    old = x.data[idx]
                    x.data[idx] = old + eps
                    s_plus = s()
                    x.data[idx] = old - eps
                    s_minus = s()
                    x.data[idx] = old
                    numeric[j] = (s_plus - s_minus) / (2 * eps)
                a, where = analytic.reshape(-1), "element {}"
                labels = [tuple(int(i) for i in np.unravel_index(j, x.shape)) for j in range(x.size)]   # (1, 2), not np.int64s
            else:
                directions = rng.standard_normal((n_directions,) + x.shape)
                directions /= np.sqrt((directions ** 2).sum(axis=tuple(range(1, directions.ndim)), keepdims=True))
                original = x.data.copy()
                numeric = np.empty(n_directions)
                for j, v in enumerate(directions):
                    x.data[...] = original + eps * v
                    s_plus = s()
                    x.data[...] = original - eps * v
                    s_minus = s()
                    numeric[j] = (s_plus - s_minus) / (2 * eps)
                x.data[...] = original
                a = np.array([np.sum(analytic * v) for v in directions])
                where, labels = "random direction {}", list(range(n_directions))
            abs_err = np.abs(a - numeric)
            rel_err = abs_err / np.maximum(np.abs(numeric), atol)    # no blow-up where the gradient is ~0
            worst["max_abs_error"] = max(worst["max_abs_error"], float(abs_err.max()))
            worst["max_rel_error"] = max(worst["max_rel_error"], float(rel_err.max()))
            excess = abs_err - (atol + rtol * np.abs(numeric))
            j = int(np.argmax(excess))
            if excess[j] > 0:
                raise GradcheckError(
                    f"gradcheck failed for input {k} (shape {x.shape}) at {where.format(labels[j])}: "
                    f"analytic {a[j]:.10g}, numeric {numeric[j]:.10g}, "
                    f"abs error {abs_err[j]:.3g}, relative error {rel_err[j]:.3g} "
                    f"(tolerance atol={atol}, rtol={rtol})")
    for _, x in checked:
        x.grad = None
    return worst
