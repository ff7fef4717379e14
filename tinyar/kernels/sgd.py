"""The SGD-with-momentum update, in place, for one parameter p with gradient g:

    v <- mu v + g          (velocity)
    p <- p - lr v          (classical momentum; optim.SGD)

Both lines read and write arrays of p's size; the compiled version does them in one
pass over the elements. Same rounding as the twin: lr and mu are passed in p's dtype
(the caller casts them), so in float32 every product and sum is a float32 operation,
in the same order. The tests assert exact equality.
"""
from __future__ import annotations

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick


def sgd_momentum_update_numpy(p, v, g, lr, mu):
    """In place: v <- mu v + g;  p <- p - lr v."""
    v *= mu
    v += g
    p -= lr * v


# ---- compiled fast path: safe to skip on a first reading ----
@numba.njit(cache=True)
def sgd_momentum_update_numba(p, v, g, lr, mu):
    # no fastmath: no fused multiply-add, so the numbers are the twin's exactly
    p1, v1, g1 = p.reshape(-1), v.reshape(-1), g.reshape(-1)
    for i in range(p1.size):
        vi = mu * v1[i] + g1[i]                                           # v <- mu v + g
        v1[i] = vi
        p1[i] -= lr * vi                                                  # p <- p - lr v


def choose(name, p, v, g):
    """The implementation of `name` (only "sgd_momentum_update") for these arrays: the one-pass
    loop when p, v and g are C-contiguous arrays of one dtype (the loop reads each once where
    NumPy makes four passes; benchmarks/README.md), else the twin."""
    fits = p.dtype == v.dtype == g.dtype and all(a.flags.c_contiguous for a in (p, v, g))
    return pick(globals(), name, compiled=fits)
