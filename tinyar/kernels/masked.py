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

Which is faster, and so the default of fused.masked_matmul, was measured (benchmarks/
bench_made.py; notes above STAIRCASE_BLOCK and `prefer_numba`): these loops lose to a dense
BLAS product, which runs ~10x faster per multiply-add, unless they skip ~99% of the work.
What does pay is skipping the masked-out half with BLAS itself: when the staircase needs no
reordering (rows and columns already sorted, as in MADE in natural order with its hidden
units numbered by degree) the "staircase" kernels below multiply blocks of rows by only
the columns they see, one BLAS product per block, on all cores. Otherwise (random
orderings, several masks) the NumPy twin's dense product is the default.
The NumPy twins ignore `perm` and `start` (they need no structure) and read like
the equations above; tests assert that kernel and twin agree.
"""
from __future__ import annotations

import numba
import numpy as np

from tinyar.kernels.runtime import single_thread_numba_blas
from tinyar.kernels.runtime import blas_gemm, gemm_block

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

    WM: W * M if the caller has it already (fused.masked_matmul computes it once and keeps it
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


# ------------------------------------- the staircase in place: BLAS on blocks of rows (numba)
# When the rows are already sorted by degree (perm is the identity) and the columns too (start
# never decreases), the staircase needs no reordering: a block of rows r0..r1-1 sees only the
# columns j < c = #{j : start_j < r1}, and the columns j < a = #{j : start_j <= r0} are seen by
# every row of the block. MADE in natural order has this shape when its hidden units are
# numbered by degree (made_degrees sorts them; the order of hidden units is arbitrary):
#
#          columns ->   0 ........ a ..... c ........ n_in
#     rows r0..r1-1   [ all connected | band | nothing ]
#
# The forward and dW products then run on each block's c columns only (about half the
# multiply-adds of the dense product), dx on each block of columns' connected rows, all as
# BLAS products on row-major blocks (kernels/runtime.py) spread over the cores by prange. A 0/1
# mask is 1 on the "all connected" part, so there the products read W itself; only the band
# is masked, W * M into a small buffer per block, and W * M is never formed whole:
#
#     y[:, r0:r1]  = x[:, :a] W[r0:r1, :a]^T  +  x[:, a:c] (W * M)[r0:r1, a:c]^T
#     dW[r0:r1, :] = [ dy[:, r0:r1]^T x[:, :c], times M on the band | 0 ]
#     dx[:, c0:c1] = dy[:, s1:] W[s1:, c0:c1]  +  dy[:, s0:s1] (W * M)[s0:s1, c0:c1]
#
# where rows s0 = start_c0 and on see some column of c0..c1-1, and rows s1 = start_{c1-1} and
# on see all of them.
STAIRCASE_BLOCK = 64       # rows (columns for dx) per block; 64-128 measured fastest, 16-32 ~10% slower


@numba.njit(cache=True)
def _balanced(t, n):
    """Block index of the t-th of n iterations: 0, n-1, 1, n-2, ... The blocks of a staircase
    grow from nothing to everything, and prange hands each thread a contiguous run of t:
    so each thread gets pairs of a small and a large block, about the same work in all."""
    return t // 2 if t % 2 == 0 else n - 1 - t // 2


def staircase_in_place(M, perm, start):
    """Whether mask_structure(M) = (perm, start) describes a staircase of 0s and 1s in the
    mask's own order, which the staircase kernels need. A pass over M: compute it once per mask
    (mask_layout, nn.MaskedLinear.set_mask).

    mask_structure returns start = 0 everywhere both for a mask whose every weight is connected
    and for one without the nested shape (no skipping); only the first is a staircase.
    """
    if not (np.array_equal(perm, np.arange(len(perm))) and np.all(start[1:] >= start[:-1])):
        return False
    if not np.all((M == 0) | (M == 1)):
        return False
    return bool(start.any() or np.all(M == 1))


def mask_layout(M):
    """(perm, start, staircase) of a 0/1 mask: mask_structure (the numba kernel, or its twin
    under TINYAR_KERNELS=numpy) and whether the staircase kernels apply (staircase_in_place).
    The `structure` fused.masked_matmul takes; a layer computes it once per mask."""
    from tinyar.kernels import use_numba
    perm, start = (mask_structure if use_numba() else mask_structure_numpy)(M)
    return perm, start, staircase_in_place(M, perm, start)


@numba.njit(cache=True, parallel=True)
def _staircase_forward(gemm, x, W, M, b, start, block, y):
    B, n_in = x.shape
    n_out = W.shape[0]
    n_blocks = (n_out + block - 1) // block
    for t in numba.prange(n_blocks):
        r0 = _balanced(t, n_blocks) * block
        r1 = min(r0 + block, n_out)
        a = np.searchsorted(start, r0, side="right")     # columns seen by every row of the block
        c = np.searchsorted(start, r1)                   # columns seen by some row of the block
        beta = 0.0
        if a > 0:                                        # y[:, r0:r1] = x[:, :a] W[r0:r1, :a]^T
            gemm_block(gemm, False, True, B, r1 - r0, a, x, 0, n_in, W, r0 * n_in, n_in, 0.0, y, r0, n_out)
            beta = 1.0
        if c > a:                                        # + x[:, a:c] (W * M)[r0:r1, a:c]^T
            band = np.empty((r1 - r0, c - a), W.dtype)
            for r in range(r0, r1):
                for j in range(a, c):
                    band[r - r0, j - a] = W[r, j] * M[r, j]
            gemm_block(gemm, False, True, B, r1 - r0, c - a, x, a, n_in, band, 0, c - a, beta, y, r0, n_out)
        elif a == 0:                                     # a block that sees no column
            y[:, r0:r1] = 0
        for i in range(B):
            for r in range(r0, r1):
                y[i, r] += b[r]


@numba.njit(cache=True, parallel=True)
def _staircase_backward(gemm, dy, x, W, M, start, block, need_dx, need_dW, dx, dW):
    B, n_out = dy.shape
    n_in = x.shape[1]
    if need_dW:
        n_blocks = (n_out + block - 1) // block
        for t in numba.prange(n_blocks):
            r0 = _balanced(t, n_blocks) * block
            r1 = min(r0 + block, n_out)
            a = np.searchsorted(start, r0, side="right")
            c = np.searchsorted(start, r1)
            if c > 0:                                    # dW[r0:r1, :c] = dy[:, r0:r1]^T x[:, :c]
                gemm_block(gemm, True, False, r1 - r0, c, B, dy, r0, n_out, x, 0, n_in, 0.0, dW, r0 * n_in, n_in)
            for r in range(r0, r1):
                for j in range(a, c):                    # the band: * M
                    dW[r, j] *= M[r, j]
                for j in range(c, n_in):                 # beyond it M = 0
                    dW[r, j] = 0
    if need_dx:
        n_blocks = (n_in + block - 1) // block
        for t in numba.prange(n_blocks):
            c0 = _balanced(t, n_blocks) * block
            c1 = min(c0 + block, n_in)
            s0, s1 = start[c0], start[c1 - 1]            # rows from s0 see some, from s1 all of the columns
            beta = 0.0
            if s1 < n_out:                               # dx[:, c0:c1] = dy[:, s1:] W[s1:, c0:c1]
                gemm_block(gemm, False, False, B, c1 - c0, n_out - s1, dy, s1, n_out, W, s1 * n_in + c0, n_in,
                           0.0, dx, c0, n_in)
                beta = 1.0
            if s1 > s0:                                  # + dy[:, s0:s1] (W * M)[s0:s1, c0:c1]
                band = np.empty((s1 - s0, c1 - c0), W.dtype)
                for r in range(s0, s1):
                    for j in range(c0, c1):
                        band[r - s0, j - c0] = W[r, j] * M[r, j]
                gemm_block(gemm, False, False, B, c1 - c0, s1 - s0, dy, s0, n_out, band, 0, c1 - c0, beta,
                           dx, c0, n_in)
            elif s1 >= n_out:                            # columns no row sees
                dx[:, c0:c1] = 0


def _blas_ready(*arrays):
    """C-contiguous arrays of one float dtype: BLAS reads them by address and row length."""
    if len({a.dtype for a in arrays}) != 1 or arrays[0].dtype not in (np.float32, np.float64):
        raise TypeError(f"staircase kernels: expected arrays of one dtype, float32 or float64, "
                        f"got {[str(a.dtype) for a in arrays]}")
    return [np.ascontiguousarray(a) for a in arrays]


def masked_matmul_forward_staircase(x, W, M, b, start):
    """y = x (W*M)^T + b for a 0/1 staircase in place (staircase_in_place), skipping what M = 0 switches off."""
    x, W, M, b = _blas_ready(x, W, M, b)
    y = np.empty((x.shape[0], W.shape[0]), x.dtype)
    with single_thread_numba_blas():                     # numba's threads share the cores, BLAS one each
        _staircase_forward(blas_gemm(x.dtype), x, W, M, b, start, STAIRCASE_BLOCK, y)
    return y


def masked_matmul_backward_staircase(dy, x, W, M, start, need_dx=True, need_dW=True):
    """(dx, dW) of masked_matmul_forward_staircase: dx = dy (W*M), dW = (dy^T x) * M (None if not needed)."""
    dy, x, W, M = _blas_ready(dy, x, W, M)
    # the results are allocated here, not in compiled code: NumPy's own arrays (base None), which
    # the autograd can hand to a leaf's .grad without a defensive copy
    dx = np.empty(x.shape, x.dtype) if need_dx else np.empty((0, 0), x.dtype)
    dW = np.empty(M.shape, x.dtype) if need_dW else np.empty((0, 0), x.dtype)
    with single_thread_numba_blas():
        _staircase_backward(blas_gemm(dy.dtype), dy, x, W, M, start, STAIRCASE_BLOCK, need_dx, need_dW, dx, dW)
    return (dx if need_dx else None), (dW if need_dW else None)


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
