"""The masked matrix product of MADE, y = x (W * M)^T + b: numba kernels and NumPy twins.

Shapes: x (B, n_in), W (n_out, n_in), M (n_out, n_in) holding 0 or 1, b (n_out,),
y (B, n_out). The product W * M is elementwise: M switches connections off.

    forward     y  = x (W*M)^T + b                       (B, n_out)
    backward    dx = dy (W*M)                            (B, n_in)
                dW = (dy^T x) * M                        (n_out, n_in)
                db = sum over the batch of dy            (n_out,)

Derivation: y_bk = b_k + sum_j x_bj W_kj M_kj, so dy_bk/dx_bj = W_kj M_kj and
dy_bk/dW_kj = x_bj M_kj. By the chain rule dL/dx_bj = sum_k dy_bk W_kj M_kj and
dL/dW_kj = M_kj sum_b dy_bk x_bj: a masked-out weight gets exactly zero gradient,
so it stays where it was and never acts.

Where the work can be skipped. In MADE every unit has a degree m (how many
inputs it may see) and M_kj = [m_out(k) >= m_in(j)] (hidden layers) or
[m_out(k) > m_in(j)] (the output layer). Sort the output units by degree: then
the rows connected to input j are a *suffix* of the sorted rows, from start_j
on, and the sorted mask is a staircase (shown with the columns sorted too):

    rows sorted by degree (m_out)     columns j, sorted by m_in
                                      1 2 2 3 4  <- m_in
              m_out = 1               1 0 0 0 0
              m_out = 2               1 1 1 0 0
              m_out = 3               1 1 1 1 0
              m_out = 4               1 1 1 1 1
                                      ^ start_j: first sorted row that sees column j

`mask_structure` finds this order (`perm`) and the `start` of every column, and
checks that the mask really has this shape (rows connected to the columns are
nested sets); for any other mask it returns start = 0 everywhere, and the kernels
are still right, only without skipping. The kernels work on the sorted,
transposed weight WMt[j, r] = (W*M)[perm[r], j], so that the suffix r >= start_j
of each row j is contiguous and vectorises:

    y[b, perm[r]] = b[perm[r]] + sum_{j : x_bj != 0} x_bj WMt[j, r]     for r >= start_j

They also skip zeros of x (the binary input layer, and the ~half of ReLU units
that are off), which a dense product cannot.

Which is faster, and so the default of ops.masked_matmul, was measured (see the
notes above `prefer_numba`): BLAS through the NumPy twin for every layer of the MADEs
of the issue, binary or 17-level; the loops only when they skip ~99% of the work.
Skipping the masked-out half is not enough to beat a dense BLAS product that runs ~10x
faster per multiply-add than these plain loops.
The NumPy twins ignore `perm` and `start` (they need no structure) and read like
the equations above; tests assert that kernel and twin agree.
"""
from __future__ import annotations

import numba
import numpy as np

TILE = 32          # side of the square tiles in which the kernels transpose

# The inner loops run over unsigned indices, range(np.uint64(start), np.uint64(n)): with a
# signed start numba must allow for negative (wrap-around) indices, and that check stops
# LLVM from vectorising the loop (measured: 6.5 ms -> 1.2 ms for one 784 -> 500 forward).


# ------------------------------------------------------------ mask structure
@numba.njit(cache=True)
def mask_structure(M):
    """perm (n_out,): rows sorted by degree (row sums, ascending, stable);
    start (n_in,): column j is connected exactly to the sorted rows r >= start[j].
    For a mask without that nested shape, start is all 0 (no skipping)."""
    n_out, n_in = M.shape
    row_sum = np.zeros(n_out, np.int64)
    col_sum = np.zeros(n_in, np.int64)
    for k in range(n_out):
        for j in range(n_in):
            if M[k, j] != 0:
                row_sum[k] += 1
                col_sum[j] += 1
    perm = np.argsort(row_sum, kind="mergesort")
    start = n_out - col_sum                        # the last col_sum[j] sorted rows
    for r in range(n_out):
        k = perm[r]
        for j in range(n_in):
            if (M[k, j] != 0) != (r >= start[j]):  # not a staircase: no skipping
                start[:] = 0
                return perm, start
    return perm, start


def mask_structure_numpy(M):
    """Twin of mask_structure: the same perm and start, by array operations."""
    connected = M != 0
    perm = np.argsort(connected.sum(axis=1), kind="stable")          # rows by degree
    start = M.shape[0] - connected.sum(axis=0)                        # (n_in,)
    staircase = np.arange(M.shape[0])[:, None] >= start[None, :]      # (n_out, n_in) in sorted rows
    if not np.array_equal(connected[perm], staircase):
        start = np.zeros_like(start)
    return perm.astype(np.int64), start.astype(np.int64)


@numba.njit(cache=True)
def _sorted_masked_transpose(W, M, perm):
    """WMt[j, r] = W[perm[r], j] * M[perm[r], j]  (n_in, n_out), transposed in tiles."""
    n_out, n_in = W.shape
    WMt = np.empty((n_in, n_out), W.dtype)
    for t in range((n_out + TILE - 1) // TILE):
        r0 = t * TILE
        for j0 in range(0, n_in, TILE):
            for r in range(r0, min(r0 + TILE, n_out)):
                k = perm[r]
                for j in range(j0, min(j0 + TILE, n_in)):
                    WMt[j, r] = W[k, j] * M[k, j]
    return WMt


# fastmath flags: "reassoc" lets LLVM vectorise the sums (a rounding-level change of order),
# "contract" fuses a * b + c into one FMA. Not "nnan"/"ninf" (fastmath=True): with them LLVM
# may assume no inf or NaN ever occurs, and a diverging run would be reported wrongly.
FASTMATH = {"reassoc", "contract"}


# ------------------------------------------------------------------- forward
@numba.njit(cache=True, fastmath=FASTMATH)
def masked_matmul_forward(x, W, M, b, perm, start):
    """y = x (W*M)^T + b, skipping zero inputs and the masked-out suffix of each column."""
    B, n_in = x.shape
    n_out = W.shape[0]
    WMt = _sorted_masked_transpose(W, M, perm)     # (n_in, n_out), rows of W sorted by degree
    y = np.empty((B, n_out), x.dtype)
    acc = np.empty(n_out, x.dtype)                 # one row of y, in sorted order
    for i in range(B):
        for r in range(n_out):
            acc[r] = b[perm[r]]
        for j in range(n_in):
            xij = x[i, j]
            if xij != 0:
                for r in range(np.uint64(start[j]), np.uint64(n_out)):   # only the rows that see input j
                    acc[r] += xij * WMt[j, r]
        for r in range(n_out):
            y[i, perm[r]] = acc[r]
    return y


def masked_matmul_forward_numpy(x, W, M, b, perm, start, WM=None):
    """Twin: y = x (W*M)^T + b (perm and start are not needed).

    WM: W * M if the caller has it already (ops.masked_matmul computes it once and keeps it
    for dx, as one would by hand: W * M is a pass over every weight).
    """
    return x @ (W * M if WM is None else WM).T + b


# ------------------------------------------------------------------ backward
@numba.njit(cache=True, fastmath=FASTMATH)
def masked_matmul_backward_input(dy, W, M, perm, start):
    """dx = dy (W*M): dx[b, j] = sum_{r >= start_j} dy[b, perm[r]] WMt[j, r]."""
    B, n_out = dy.shape
    n_in = W.shape[1]
    WMt = _sorted_masked_transpose(W, M, perm)     # (n_in, n_out)
    dys = np.empty((B, n_out), dy.dtype)           # dy with its columns in sorted order
    for i in range(B):
        for r in range(n_out):
            dys[i, r] = dy[i, perm[r]]
    dx = np.empty((B, n_in), dy.dtype)
    zero = np.zeros(1, dy.dtype)[0]
    for j in range(n_in):
        for i in range(B):
            s = zero
            for r in range(np.uint64(start[j]), np.uint64(n_out)):
                s += dys[i, r] * WMt[j, r]
            dx[i, j] = s
    return dx


def masked_matmul_backward_input_numpy(dy, W, M, perm, start, WM=None):
    """Twin: dx = dy (W*M) (WM: W * M, if already computed)."""
    return dy @ (W * M if WM is None else WM)


@numba.njit(cache=True, fastmath=FASTMATH)
def masked_matmul_backward_weight(dy, x, M, perm, start):
    """dW = (dy^T x) * M: dW[perm[r], j] = sum_{b : x_bj != 0} x_bj dy[b, perm[r]], r >= start_j."""
    B, n_out = dy.shape
    n_in = x.shape[1]
    dys = np.empty((B, n_out), dy.dtype)           # dy, columns sorted by degree
    for i in range(B):
        for r in range(n_out):
            dys[i, r] = dy[i, perm[r]]
    xt = np.ascontiguousarray(x.T)                 # (n_in, B): column j of x is contiguous
    dW = np.empty((n_out, n_in), dy.dtype)
    for t in range((n_in + TILE - 1) // TILE):
        j0 = t * TILE
        j1 = min(j0 + TILE, n_in)
        acc = np.zeros((j1 - j0, n_out), dy.dtype)  # dW^T for columns j0..j1, sorted rows
        for j in range(j0, j1):
            for i in range(B):
                xij = xt[j, i]
                if xij != 0:
                    for r in range(np.uint64(start[j]), np.uint64(n_out)):
                        acc[j - j0, r] += xij * dys[i, r]
        for r in range(n_out):                     # un-sort, transpose back, and mask
            k = perm[r]
            for j in range(j0, j1):
                dW[k, j] = acc[j - j0, r] * M[k, j]
    return dW


def masked_matmul_backward_weight_numpy(dy, x, M, perm, start):
    """Twin: dW = (dy^T x) * M."""
    dW = dy.T @ x                                  # (n_out, n_in)
    return np.multiply(dW, M, out=dW)


# -------------------------------------------------------- which one to use
# Measured (benchmarks/bench_made.py --kernels, batch 100, float32, MADE masks of density
# ~0.5; 2-core x86-64 with AVX-512, OpenBLAS 0.3.31 on 2 threads; table in benchmarks/README.md):
# BLAS does the dense product at ~60-90 G multiply-adds per second, these single-threaded
# loops ~7 G of the multiply-adds they do not skip, and building WMt costs about as much as
# W * M. So the loops pay only when they skip nearly everything: forward + dW break even at
# about 1% of the dense work (inputs ~2% nonzero under a half-dense mask), e.g. a one-hot
# input layer with K >= ~50 levels. For every layer of the MADE (binary pixels,
# ReLU activations ~50% nonzero, 17-level one-hot inputs: 3% of the work) BLAS is faster,
# and dx, whose dy is dense, always goes to BLAS. The loops stay as the readable account
# of what the masks skip, and as the default where that measurement says they win.
WORK_RATIO = 0.015         # numba pays when it does less than ~1.5% of the dense work ...
SETUP_PER_ROW = 0.3        # ... minus its set-up (WMt, the unsorting), spread over the batch


def work_fraction(values, start, n_out):
    """The fraction of the dense multiply-adds the loops do: nonzero values x mask density."""
    mask_fraction = float((n_out - start).sum()) / max(n_out * len(start), 1)
    density = np.count_nonzero(values) / max(values.size, 1)
    return density * mask_fraction


def prefer_numba(batch, work):
    """Whether the numba kernels beat the NumPy twins (BLAS) for this batch size and work fraction."""
    return work < WORK_RATIO - SETUP_PER_ROW / max(batch, 1)
