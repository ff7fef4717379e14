"""A Linear layer's products: y = x W^T + b and its backward pass.

For x (N, in), W (out, in), b (out,), each output row is y_n = W x_n + b, so with
dy = dL/dy given (N, out):

    dx = dy W              (N, in):   dL/dx_n = sum_o dy_no W_o
    dW = dy^T x            (out, in): each row n adds the outer product dy_n x_n^T
    db = sum_n dy_n        (out,)

fused.linear is the op; the twins below are three NumPy products.
"""
from __future__ import annotations

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick
from tinyar.kernels.runtime import blas_gemm, gemm_block, single_thread_numba_blas


def linear_forward_numpy(x, W, b):
    """y = x W^T (+ b when b is not None): x (N, in), W (out, in) -> (N, out)."""
    y = x @ W.T
    if b is not None:
        y += b                                                            # in place: y is a fresh array
    return y


def linear_backward_numpy(dy, x, W, need_dx=True, need_dW=True):
    """(dx, dW): dx = dy W (N, in), dW = dy^T x (out, in); None for the ones not needed."""
    dx = dy @ W if need_dx else None
    dW = dy.T @ x if need_dW else None
    return dx, dW


# ---- compiled fast path: safe to skip on a first reading ----
# The products on numba's threads: the N rows in blocks, dealt round-robin to N_LANES lanes,
# one BLAS gemm per block (kernels/runtime.py; SciPy's BLAS held to one thread meanwhile). dW
# sums over the rows, so each lane sums its blocks into its own (out, in) array and the
# lanes' arrays are added in lane order: results do not depend on the thread count.
# Why not NumPy's product on OpenBLAS's two threads: the Transformer's other kernels
# (attention) run on numba's threads, and OpenBLAS's idle workers spin on the cores after each
# product, taking a core from them; with every product here, OpenBLAS's pool stays idle.
N_LANES = 4
BLOCK_ROWS = 256                # rows per block of y = x W^T and dx = dy W
GRAM_BLOCK_ROWS = 1024          # rows per block of dW = dy^T x
MIN_ROWS = 512                  # fewer rows (the key/value-cached sampler's steps): the twins


@numba.njit(cache=True, parallel=True)
def _rows_product(gemm, A, B, trans_b, C, block):
    """C (N, n_c) = A (N, n_a) op(B) by blocks of rows; op(B) = B^T for B (n_c, n_a) if trans_b,
    else B itself, (n_a, n_c)."""
    N, n_a = A.shape
    n_c = C.shape[1]
    n_blocks = (N + block - 1) // block
    for lane in numba.prange(N_LANES):
        for bi in range(lane, n_blocks, N_LANES):
            r0, m = bi * block, min(block, N - bi * block)
            gemm_block(gemm, False, trans_b, m, n_c, n_a, A, r0 * n_a, n_a, B, 0, n_a if trans_b else n_c,
                       0.0, C, r0 * n_c, n_c)
    return C


@numba.njit(cache=True, parallel=True)
def _lane_grams(gemm, D, X, P, block):
    """P[lane] (n_d, n_x) = sum over the lane's row blocks of D_block^T X_block; D (N, n_d), X (N, n_x)."""
    N, n_d = D.shape
    n_x = X.shape[1]
    n_blocks = (N + block - 1) // block
    for lane in numba.prange(N_LANES):
        P[lane] = 0.0
        for bi in range(lane, n_blocks, N_LANES):
            r0, m = bi * block, min(block, N - bi * block)
            gemm_block(gemm, True, False, n_d, n_x, m, D, r0 * n_d, n_d, X, r0 * n_x, n_x, 1.0, P[lane], 0, n_x)
    return P


def _contiguous(*arrays):
    return [np.ascontiguousarray(a) for a in arrays]


def _twin_serves(*arrays):
    """True for what BLAS's gemm cannot take: mixed dtypes, other dtypes than float32 and float64,
    an empty dimension."""
    dtype = arrays[0].dtype
    return (dtype not in (np.float32, np.float64) or any(a.dtype != dtype for a in arrays)
            or any(0 in a.shape for a in arrays))


def linear_forward_numba(x, W, b):
    """linear_forward_numpy with the rows in blocks on numba's threads."""
    if _twin_serves(x, W):
        return linear_forward_numpy(x, W, b)
    x, W = _contiguous(x, W)
    y = np.empty((x.shape[0], W.shape[0]), dtype=x.dtype)
    with single_thread_numba_blas():
        _rows_product(blas_gemm(x.dtype), x, W, True, y, BLOCK_ROWS)
    if b is not None:
        y += b
    return y


def linear_backward_numba(dy, x, W, need_dx=True, need_dW=True):
    """linear_backward_numpy with the rows in blocks on numba's threads (dW: per-lane sums, added in order)."""
    if _twin_serves(dy, x, W):
        return linear_backward_numpy(dy, x, W, need_dx, need_dW)
    dy, x, W = _contiguous(dy, x, W)
    dx = dW = None
    gemm = blas_gemm(x.dtype)
    with single_thread_numba_blas():
        if need_dx:
            dx = _rows_product(gemm, dy, W, False, np.empty_like(x), BLOCK_ROWS)
        if need_dW:
            P = _lane_grams(gemm, dy, x, np.empty((N_LANES,) + W.shape, dtype=x.dtype), GRAM_BLOCK_ROWS)
            dW = P[0].copy()
            for lane in range(1, N_LANES):
                dW += P[lane]
    return dx, dW


def choose(name, n_rows, dtype):
    """The (forward or backward) implementation of `name` ("linear_forward" or "linear_backward") for
    n_rows rows of `dtype`: the compiled one from MIN_ROWS rows of float32 or float64 on, else
    (and under TINYAR_KERNELS=numpy) the twin."""
    if name not in ("linear_forward", "linear_backward"):
        raise ValueError(f"kernels.linear.choose: expected linear_forward or linear_backward, got {name!r}")
    return pick(globals(), name, compiled=n_rows >= MIN_ROWS and np.dtype(dtype) in (np.float32, np.float64))
