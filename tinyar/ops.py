"""Primitive ops: each a forward and its vector-Jacobian product (VJP), side by side.

Notation: y is the op's output, dy = dL/dy the upstream gradient (same shape as
y), and the VJP returns dx = dL/dx for each input x, in order (None for inputs
that are not differentiable, such as indices and masks). A VJP is written as if
no broadcasting happened; Tensor.backward sums each result back to its input's
shape (tensor.unbroadcast).

Every op is listed in `OPS` (name -> function). tinyar/gradcheck_cases.py holds a
gradcheck case for each, and a test fails if an op has none.

The fused ops (NADE's recursion, masked matmul, the RNN, attention, convolution),
each one graph node over a kernel pair, live in fused.py and register in the same table.
"""
from __future__ import annotations

import numpy as np

from tinyar.tensor import Tensor

OPS = {}


def register(fn):
    """Add an op to the registry under its function name (the function itself is unchanged)."""
    OPS[fn.__name__.rstrip("_")] = fn
    return fn


def as_tensor(x, like=None):
    """Wrap a number or array as a constant Tensor.

    A Python number, or an integer or boolean array, takes `like`'s float dtype, so
    that float32 stays float32 (NumPy would promote float32 * int64 to float64).
    """
    if isinstance(x, Tensor):
        return x
    if like is not None and like.dtype.kind == "f":
        if isinstance(x, (int, float)) or np.asarray(x).dtype.kind in "biu":
            return Tensor(np.asarray(x, dtype=like.dtype))
    return Tensor(x)


def _broadcast_shape(op, *tensors):
    """The broadcast shape of the inputs, or an error that names the op and the shapes."""
    try:
        return np.broadcast_shapes(*(t.shape for t in tensors))
    except ValueError:
        shapes = " and ".join(str(t.shape) for t in tensors)
        raise ValueError(f"{op}: cannot broadcast shapes {shapes} together") from None


def _binary(op, a, b):
    a = as_tensor(a, like=b if isinstance(b, Tensor) else None)
    b = as_tensor(b, like=a)
    _broadcast_shape(op, a, b)
    return a, b


# ------------------------------------------------------------------ arithmetic
@register
def add(a, b):
    """y = a + b.   VJP: da = dy,  db = dy"""
    a, b = _binary("add", a, b)
    return Tensor._make(a.data + b.data, (a, b), lambda dy: (dy, dy), "add")


@register
def sub(a, b):
    """y = a - b.   VJP: da = dy,  db = -dy"""
    a, b = _binary("sub", a, b)
    return Tensor._make(a.data - b.data, (a, b), lambda dy: (dy, -dy), "sub")


@register
def mul(a, b):
    """y = a * b.   VJP: da = dy * b,  db = dy * a"""
    a, b = _binary("mul", a, b)
    def vjp(dy):                              # only the gradients needed (one factor is often data)
        return (dy * b.data if a.requires_grad else None, dy * a.data if b.requires_grad else None)
    return Tensor._make(a.data * b.data, (a, b), vjp, "mul")


@register
def div(a, b):
    """y = a / b.   VJP: da = dy / b,  db = -dy * a / b^2 = -dy * y / b"""
    a, b = _binary("div", a, b)
    y = a.data / b.data
    return Tensor._make(y, (a, b), lambda dy: (dy / b.data, -dy * y / b.data), "div")


@register
def neg(x):
    """y = -x.   VJP: dx = -dy"""
    return Tensor._make(-x.data, (x,), lambda dy: (-dy,), "neg")


@register
def pow_(x, p):
    """y = x^p for a constant number p.   VJP: dx = dy * p * x^(p-1)"""
    if isinstance(p, Tensor):
        raise TypeError("pow: the exponent must be a number; for a tensor exponent use exp(p * log(x))")
    p = float(p)
    if p == 0.0:                                  # y = 1: dx = 0 (p x^(p-1) would be 0 * inf at x = 0)
        return Tensor._make(np.ones_like(x.data), (x,), lambda dy: (np.zeros_like(dy),), "pow")
    return Tensor._make(x.data ** p, (x,), lambda dy: (dy * p * x.data ** (p - 1.0),), "pow")


@register
def exp(x):
    """y = e^x.   VJP: dx = dy * y   (uses the saved y)"""
    y = np.exp(x.data)
    return Tensor._make(y, (x,), lambda dy: (dy * y,), "exp")


@register
def log(x):
    """y = ln x.   VJP: dx = dy / x"""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(x.data)
    return Tensor._make(y, (x,), lambda dy: (dy / x.data,), "log")


@register
def sqrt(x):
    """y = sqrt(x).   VJP: dx = dy / (2 y)"""
    y = np.sqrt(x.data)
    return Tensor._make(y, (x,), lambda dy: (dy / (2.0 * y),), "sqrt")


@register
def abs_(x):
    """y = |x|.   VJP: dx = dy * sign(x)   (0 at x = 0, the middle of the subgradient [-1, 1])"""
    return Tensor._make(np.abs(x.data), (x,), lambda dy: (dy * np.sign(x.data),), "abs")


# ----------------------------------------------------------------- nonlinear
@register
def tanh(x):
    """y = tanh(x).   VJP: dx = dy * (1 - y^2)"""
    y = np.tanh(x.data)
    return Tensor._make(y, (x,), lambda dy: (dy * (1.0 - y * y),), "tanh")


def stable_sigmoid(z, e=None):
    """sigma(z) = 1 / (1 + e^-z), never overflowing: for z < 0 use e^z / (1 + e^z).
    `e` = e^-|z| if the caller already has it."""
    e = np.exp(-np.abs(z)) if e is None else e    # in (0, 1]: cannot overflow
    d = 1.0 + e
    numerator = np.maximum(e, z >= 0)             # 1 where z >= 0, else e (e <= 1); np.where was ~10x slower
    return (numerator / d).astype(z.dtype, copy=False)


def stable_softplus(z, e=None):
    """softplus(z) = log(1 + e^z) = max(z, 0) + log1p(e^-|z|), exact and finite for any z.
    `e` = e^-|z| if the caller already has it."""
    e = np.exp(-np.abs(z)) if e is None else e
    return np.maximum(z, 0) + np.log1p(e)


@register
def sigmoid(x):
    """y = 1 / (1 + e^-x).   VJP: dx = dy * y * (1 - y)   (uses the saved y)"""
    y = stable_sigmoid(x.data)
    return Tensor._make(y, (x,), lambda dy: (dy * y * (1.0 - y),), "sigmoid")


@register
def relu(x):
    """y = max(x, 0).   VJP: dx = dy * [x > 0]"""
    return Tensor._make(np.maximum(x.data, 0), (x,), lambda dy: (dy * (x.data > 0),), "relu")


@register
def softplus(x):
    """y = log(1 + e^x), computed stably.   VJP: dx = dy * sigmoid(x)"""
    e = np.exp(-np.abs(x.data))               # e^-|x|, kept for the VJP: sigmoid(x) needs it too
    y = stable_softplus(x.data, e)
    return Tensor._make(y, (x,), lambda dy: (dy * stable_sigmoid(x.data, e),), "softplus")


@register
def maximum(a, b):
    """y = max(a, b) elementwise.   VJP: da = dy * [a > b] + dy/2 * [a = b],  db likewise

    Ties split the gradient equally (the average of the two one-sided derivatives).
    """
    a, b = _binary("maximum", a, b)
    y = np.maximum(a.data, b.data)

    def vjp(dy):
        wa = ((a.data > b.data) + 0.5 * (a.data == b.data)).astype(y.dtype, copy=False)
        return dy * wa, dy * (1.0 - wa)
    return Tensor._make(y, (a, b), vjp, "maximum")


# -------------------------------------------------------------------- matmul
def _blas_friendly(b):
    """b, copied to C order if it is a stack (ndim > 2) of non-contiguous matrices: NumPy's batched
    matmul takes a slow non-BLAS loop (about 10x slower) when its right operand is, e.g., a swapaxes view."""
    return np.ascontiguousarray(b) if b.ndim > 2 and not b.flags.c_contiguous else b


@register
def matmul(a, b):
    """y = a @ b for vectors, matrices and batches of matrices (NumPy's rules).

    For matrices y_ij = sum_k a_ik b_kj, so
        VJP: da = dy @ b^T,   db = a^T @ dy
    A 1-D a is treated as a row (1, k) and a 1-D b as a column (k, 1), and the
    added axis is removed again. Batch axes broadcast; unbroadcast sums them.
    """
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: inputs must have at least 1 dimension, got shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match "
                         f"(inner dimensions {k_a} != {k_b})")
    try:
        y = a.data @ _blas_friendly(b.data)
    except ValueError:
        raise ValueError(f"matmul: batch shapes of {a.shape} and {b.shape} cannot broadcast") from None

    def vjp(dy):
        if a.ndim == 1 and b.ndim == 1:                        # inner product y = a . b
            return dy * b.data, dy * a.data
        A = a.data[None, :] if a.ndim == 1 else a.data        # (..., n, k)
        B = b.data[:, None] if b.ndim == 1 else b.data        # (..., k, m)
        G = dy
        if a.ndim == 1:
            G = np.expand_dims(G, -2)                          # restore the n = 1 axis
        if b.ndim == 1:
            G = np.expand_dims(G, -1)                          # restore the m = 1 axis
        dA = dB = None                                         # skip the product for an input that needs no
        if a.requires_grad:                                    # gradient (data x in x @ W): as costly as the forward
            dA = G @ _blas_friendly(np.swapaxes(B, -1, -2))    # (..., n, k)
            if a.ndim == 1:
                dA = dA[..., 0, :]                             # drop n = 1; batch axes summed by unbroadcast
        if b.requires_grad:
            if A.ndim == 2 and B.ndim == 2 and B.flags.f_contiguous and not B.flags.c_contiguous:
                # b is a transposed view (x @ W.T in Linear): the same product computed as (dy^T a)^T,
                # so that dW = dB.T comes out C-contiguous like W, with no transposing copy later
                dB = (G.T @ A).T                               # (k, m)
            else:
                dB = np.swapaxes(A, -1, -2) @ G                # (..., k, m)
            if b.ndim == 1:
                dB = dB[..., 0]                                # drop m = 1
        return dA, dB
    return Tensor._make(y, (a, b), vjp, "matmul")


# ---------------------------------------------------------------- reductions
def _axes(axis, shape, op):
    """The reduced axes as non-negative ints, or a clear error for an axis the shape lacks."""
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"{op}: axis {ax} is out of range for a tensor of shape {shape}")
    return tuple(int(ax) % ndim for ax in axes)


def _expand(dy, axes, keepdims):
    """Put back the reduced axes (as size 1) so dy broadcasts against the input."""
    return dy if keepdims else np.expand_dims(dy, axes)


@register
def sum_(x, axis=None, keepdims=False):
    """y = sum of x over `axis`.   VJP: dx = dy copied along the summed axes"""
    axes = _axes(axis, x.shape, "sum")
    y = x.data.sum(axis=axes, keepdims=keepdims)
    return Tensor._make(y, (x,), lambda dy: (np.broadcast_to(_expand(dy, axes, keepdims), x.shape),), "sum")


@register
def mean(x, axis=None, keepdims=False):
    """y = sum(x) / n over `axis` (n elements each).   VJP: dx = dy / n copied along the axes"""
    axes = _axes(axis, x.shape, "mean")
    n = int(np.prod([x.shape[ax] for ax in axes]))
    y = x.data.mean(axis=axes, keepdims=keepdims)
    return Tensor._make(y, (x,), lambda dy: (np.broadcast_to(_expand(dy, axes, keepdims) / n, x.shape),), "mean")


@register
def max_(x, axis=None, keepdims=False):
    """y = max of x over `axis`.   VJP: dx = dy * [x = y] / (number of maxima)

    When several elements tie for the maximum the gradient is shared equally among
    them, so the result does not depend on their order.
    """
    axes = _axes(axis, x.shape, "max")
    y = x.data.max(axis=axes, keepdims=True)

    def vjp(dy):
        is_max = x.data == y
        share = (is_max / is_max.sum(axis=axes, keepdims=True)).astype(x.dtype, copy=False)
        return (_expand(dy, axes, keepdims) * share,)
    return Tensor._make(y if keepdims else y.squeeze(axes), (x,), vjp, "max")


# ------------------------------------------------------------ shape and index
@register
def reshape(x, *shape):
    """y = x with a new shape (same elements, same order).   VJP: dx = dy reshaped back"""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        y = x.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape {x.shape} ({x.size} elements) into {shape}") from None
    return Tensor._make(y, (x,), lambda dy: (dy.reshape(x.shape),), "reshape")


@register
def transpose(x, *axes):
    """y = x with its axes permuted (reversed by default).   VJP: dx = dy with the inverse permutation"""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = axes or tuple(reversed(range(x.ndim)))
    if not all(-x.ndim <= a < x.ndim for a in axes) or sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    inverse = tuple(np.argsort([a % x.ndim for a in axes]))
    return Tensor._make(x.data.transpose(axes), (x,), lambda dy: (dy.transpose(inverse),), "transpose")


def _is_advanced(index):
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (list, np.ndarray)) for p in parts)


@register
def getitem(x, index):
    """y = x[index] for ints, slices, None, Ellipsis and integer or boolean arrays.

    VJP: dx = zeros, with dy added at the indexed places. With integer arrays an
    element may be picked several times; np.add.at then adds every copy's gradient
    (a plain assignment would keep only the last).
    """
    if isinstance(index, Tensor):
        index = index.data
    if isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    try:
        y = x.data[index]
    except IndexError as e:
        raise IndexError(f"getitem: index out of range for a tensor of shape {x.shape} ({e})") from None
    advanced = _is_advanced(index)

    def vjp(dy):
        dx = np.zeros_like(x.data)
        if advanced:
            np.add.at(dx, index, dy)
        else:
            dx[index] = dy
        return (dx,)
    return Tensor._make(np.asarray(y), (x,), vjp, "getitem")


def _join(op, join, tensors, axis, rule):
    """join([t.data ...], axis) for concatenate and stack, with an error that names the op and the shapes."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError(f"{op}: expected at least one tensor, got none")
    try:
        return tensors, join([t.data for t in tensors], axis=axis)
    except ValueError:
        shapes = ", ".join(str(t.shape) for t in tensors)
        raise ValueError(f"{op}: shapes {shapes} {rule}") from None


@register
def concatenate(tensors, axis=0):
    """y = [x_1, x_2, ...] joined along `axis`.   VJP: dx_k = the k-th block of dy"""
    tensors, y = _join("concatenate", np.concatenate, tensors, axis, f"cannot be joined along axis {axis}")
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return Tensor._make(y, tuple(tensors), lambda dy: tuple(np.split(dy, bounds, axis=axis)), "concatenate")


@register
def stack(tensors, axis=0):
    """y = x_1, x_2, ... stacked along a new axis.   VJP: dx_k = dy taken at index k of that axis"""
    tensors, y = _join("stack", np.stack, tensors, axis, "must all be equal")
    n = len(tensors)
    return Tensor._make(y, tuple(tensors),
                        lambda dy: tuple(np.take(dy, k, axis=axis) for k in range(n)), "stack")


@register
def where(condition, a, b):
    """y = a where condition, else b.   VJP: da = dy * condition,  db = dy * (not condition)

    `condition` is a boolean array (or Tensor) and gets no gradient.
    """
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)
    a, b = _binary("where", a, b)
    try:
        y = np.where(cond, a.data, b.data)
    except ValueError:
        raise ValueError(f"where: condition {cond.shape}, a {a.shape} and b {b.shape} cannot broadcast") from None
    return Tensor._make(y, (a, b), lambda dy: (dy * cond, dy * ~cond), "where")


# ------------------------------------------------- operators on Tensor objects
def _reflect(fn):
    return lambda self, other: fn(as_tensor(other, like=self), self)


Tensor.__add__ = add
Tensor.__radd__ = _reflect(add)
Tensor.__sub__ = sub
Tensor.__rsub__ = _reflect(sub)
Tensor.__mul__ = mul
Tensor.__rmul__ = _reflect(mul)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = _reflect(div)
Tensor.__neg__ = neg
Tensor.__pow__ = pow_
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = _reflect(matmul)
Tensor.__getitem__ = getitem
Tensor.sum = sum_
Tensor.mean = mean
Tensor.max = max_
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.T = property(lambda self: transpose(self))
Tensor.exp = exp
Tensor.log = log
