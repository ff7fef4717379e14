"""The backward pass of a table lookup: a scatter-add of rows.

An embedding picks rows of a table W (n_rows, C) by integer ids: y[p] = W[ids[p]].
Each row W[r] reaches every output position p with ids[p] = r, so its gradient is the
sum of theirs:

    dW[r] = sum over the positions p with ids[p] = r of dy[p]

A row picked k times receives k gradients; a plain assignment dW[ids] = dy would keep
only the last. The Transformer's token and position embeddings (fused.embedding) and the
RNN's one-hot input term W_xh x_t (fused.elman_rnn, where x_t picks a column of W_xh)
both end in this sum.
"""
from __future__ import annotations

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick


def embedding_backward_numpy(ids, dy, n_rows):
    """ids (N,) in 0..n_rows-1, dy (N, C) -> dW (n_rows, C): dW[r] = sum of dy[n] over the n with ids[n] = r."""
    dW = np.zeros((n_rows, dy.shape[1]), dtype=dy.dtype)
    np.add.at(dW, ids, dy)                                                # scatter-add: repeated ids add up
    return dW


# ---- compiled fast path: safe to skip on a first reading ----
@numba.njit(cache=True)
def embedding_backward_numba(ids, dy, n_rows):
    N, C = dy.shape
    dW = np.zeros((n_rows, C), dtype=dy.dtype)
    for n in range(N):                                                    # dW[ids[n]] += dy[n]
        r = ids[n]
        for c in range(C):
            dW[r, c] += dy[n, c]
    return dW


def choose(name="embedding_backward"):
    """The implementation of `name` (only "embedding_backward"): the loop, which adds each row
    in one pass where np.add.at is an order of magnitude slower; the twin under TINYAR_KERNELS=numpy."""
    return pick(globals(), name)
