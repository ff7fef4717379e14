"""Composite functions, built only from the primitive ops.

None of these has a hand-written derivative: autograd differentiates the
primitives they are made of, so a gradcheck of the primitives covers them, and
their own gradchecks (tinyar/gradcheck_cases.py) confirm it.

Stability. Each is arranged so that no intermediate overflows, even at logits of
+-1000:
    log sigma(z)     = -softplus(-z)                       (softplus is computed stably)
    logsumexp(x)     = m + log sum_j exp(x_j - m),  m = max_j x_j   (every exp <= 1)
    log_softmax(x)_i = (x_i - m) - log sum_j exp(x_j - m)
    BCE(z, y)        = -[y log sigma(z) + (1 - y) log(1 - sigma(z))] = softplus(z) - y z
The shift m in logsumexp is held constant (detached): the result does not depend
on it, so neither does the gradient.
"""
from __future__ import annotations

import math

import numpy as np

from tinyar import ops
from tinyar.tensor import Tensor


def log_sigmoid(z):
    """log sigma(z) = -softplus(-z)."""
    return -ops.softplus(-z)


def _max_along(x, axis):
    """m = max_j x_j along `axis` (kept as a size-1 axis), as a constant Tensor; 0 where all are -inf."""
    m = x.data.max(axis=axis, keepdims=True)
    return Tensor(np.where(np.isfinite(m), m, 0.0).astype(x.dtype))   # all -inf: shift by 0, result -inf


def logsumexp(x, axis=-1, keepdims=False):
    """log sum_j exp(x_j) along `axis`, shifted by the (constant) maximum."""
    m = _max_along(x, axis)
    out = ops.log(ops.sum_(ops.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else ops.reshape(out, np.squeeze(m.data, axis=axis).shape)


def log_softmax(x, axis=-1):
    """log softmax(x)_i = x_i - logsumexp(x) = (x_i - m) - log sum_j exp(x_j - m).

    Written with the shift m kept outside: adding m and subtracting it again
    (x_i - (m + log sum ...)) would lose float32 digits at logits of 1000.
    """
    shifted = x - _max_along(x, axis)
    return shifted - ops.log(ops.sum_(ops.exp(shifted), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - logsumexp(x))."""
    return ops.exp(log_softmax(x, axis=axis))


def binary_cross_entropy_with_logits(logits, targets):
    """Elementwise -log p(y | z) for y in {0, 1} under p(y = 1) = sigma(z): softplus(z) - y z."""
    targets = ops.as_tensor(targets, like=logits)
    if targets.dtype != logits.dtype:
        targets = Tensor(targets.data.astype(logits.dtype))
    return ops.softplus(logits) - targets * logits


def cross_entropy(logits, targets, axis=-1):
    """Elementwise -log softmax(logits)[target] for integer targets.

    logits: (..., K) with the K classes along `axis` (the last by default);
    targets: integer array of logits' shape without that axis. Returns that shape.
    """
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got {targets.dtype}")
    axis = axis % logits.ndim
    K = logits.shape[axis]
    expected = logits.shape[:axis] + logits.shape[axis + 1:]
    if targets.shape != expected:
        raise ValueError(f"cross_entropy: logits {logits.shape} need targets of shape {expected}, got {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= K):
        raise ValueError(f"cross_entropy: targets must lie in 0..{K - 1}, got values in "
                         f"{targets.min()}..{targets.max()}")
    logp = log_softmax(logits, axis=axis)
    picked = ops.getitem(logp, _take_index(targets, axis))
    return -picked


def _take_index(targets, axis):
    """An index that picks, for every position, the class `targets` names along `axis`."""
    grids = list(np.indices(targets.shape, sparse=True))
    grids.insert(axis, targets)
    return tuple(grids)


def gelu(x):
    """GELU(x) = x Phi(x), in the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    c = math.sqrt(2.0 / math.pi)
    return 0.5 * x * (1.0 + ops.tanh(c * (x + 0.044715 * x * x * x)))
