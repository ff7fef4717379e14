"""The masked matrix product of MADE's layers, y = x (W * M)^T + b.

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

The structure of a MADE mask. Every unit has a degree m (how many inputs it may see)
and M_kj = [m_out(k) >= m_in(j)] (hidden layers) or [m_out(k) > m_in(j)] (the output
layer). Sort the output units by degree: then the rows connected to input j are a
*suffix* of the sorted rows, from start_j on, and the sorted mask is a staircase
(shown with the columns sorted too):

    rows sorted by degree (m_out)     columns j, sorted by m_in
                                      1 2 2 3 4  <- m_in
              m_out = 1               1 0 0 0 0
              m_out = 2               1 1 1 0 0
              m_out = 3               1 1 1 1 0
              m_out = 4               1 1 1 1 1
                                      ^ start_j: first sorted row that sees column j

With perm the rows in sorted order, M[perm[r], j] = [r >= start_j], and the three
products need only the connected terms (i: the example in the batch):

    y_{i, perm[r]}  = b_{perm[r]} + sum_{j : start_j <= r} x_ij W_{perm[r], j}
    dx_ij           = sum_{r >= start_j} dy_{i, perm[r]} W_{perm[r], j}
    dW_{perm[r], j} = [r >= start_j] sum_i dy_{i, perm[r]} x_ij

A zero x_ij (a binary input that is 0, a ReLU unit that is off) adds nothing either.
`mask_structure_numpy` finds perm and start, and checks that the mask has this shape (the
sets of rows connected to the columns are nested); for any other mask it returns
start = 0 everywhere, which reads every weight. The NumPy twins need no structure
(they ignore perm and start) and read like the equations at the top; the compiled
kernels skip what the structure says is zero, and tests assert that the two agree.
"""
from __future__ import annotations

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick, use_numba
from tinyar.kernels.runtime import FASTMATH, blas_gemm, gemm_block, single_thread_numba_blas


def mask_structure_numpy(M):
    """perm (n_out,): rows sorted by degree (row sums, ascending, stable);
    start (n_in,): column j is connected exactly to the sorted rows r >= start[j].
    For a mask without that nested shape, start is all 0 (no skipping)."""
    connected = M != 0
    perm = np.argsort(connected.sum(axis=1), kind="stable")          # rows by degree
    start = M.shape[0] - connected.sum(axis=0)                        # (n_in,)
    staircase = np.arange(M.shape[0])[:, None] >= start[None, :]      # (n_out, n_in) in sorted rows
    if not np.array_equal(connected[perm], staircase):
        start = np.zeros_like(start)
    return perm.astype(np.int64), start.astype(np.int64)


def masked_matmul_forward_numpy(x, W, M, b, perm, start, WM=None):
    """y = x (W*M)^T + b (perm and start are not needed).

    WM: W * M if the caller has it already (fused.masked_matmul forms it once and keeps it
    for dx, as one would by hand: W * M is a pass over every weight).
    """
    return x @ (W * M if WM is None else WM).T + b


def masked_matmul_backward_input_numpy(dy, W, M, perm, start, WM=None):
    """dx = dy (W*M) (WM: W * M, if already formed)."""
    return dy @ (W * M if WM is None else WM)


def masked_matmul_backward_weight_numpy(dy, x, M, perm, start):
    """dW = (dy^T x) * M."""
    dW = dy.T @ x                                  # (n_out, n_in)
    return np.multiply(dW, M, out=dW)


# ---- compiled fast path: safe to skip on a first reading ----
# The loops below work on the sorted, transposed weight WMt[j, r] = (W*M)[perm[r], j], so that
# the suffix r >= start_j of each row j is contiguous and vectorises. Their inner loops run over
# unsigned indices, range(np.uint64(start), np.uint64(n)): with a signed start numba must allow
# for negative (wrap-around) indices, and that check stops LLVM from vectorising the loop.
TILE = 32          # side of the square tiles in which the kernels transpose


@numba.njit(cache=True)
def mask_structure_numba(M):
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


@numba.njit(cache=True)
def _sorted_columns(dy, perm):
    """dys[:, r] = dy[:, perm[r]]: dy with its columns in sorted order (B, n_out)."""
    B, n_out = dy.shape
    dys = np.empty((B, n_out), dy.dtype)
    for i in range(B):
        for r in range(n_out):
            dys[i, r] = dy[i, perm[r]]
    return dys


@numba.njit(cache=True, fastmath=FASTMATH)
def masked_matmul_forward_numba(x, W, M, b, perm, start):
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


@numba.njit(cache=True, fastmath=FASTMATH)
def masked_matmul_backward_input_numba(dy, W, M, perm, start):
    """dx = dy (W*M): dx[b, j] = sum_{r >= start_j} dy[b, perm[r]] WMt[j, r]."""
    B, n_out = dy.shape
    n_in = W.shape[1]
    WMt = _sorted_masked_transpose(W, M, perm)     # (n_in, n_out)
    dys = _sorted_columns(dy, perm)                # (B, n_out)
    dx = np.empty((B, n_in), dy.dtype)
    zero = np.zeros(1, dy.dtype)[0]
    for j in range(n_in):
        for i in range(B):
            s = zero
            for r in range(np.uint64(start[j]), np.uint64(n_out)):
                s += dys[i, r] * WMt[j, r]
            dx[i, j] = s
    return dx


@numba.njit(cache=True, fastmath=FASTMATH)
def masked_matmul_backward_weight_numba(dy, x, M, perm, start):
    """dW = (dy^T x) * M: dW[perm[r], j] = sum_{b : x_bj != 0} x_bj dy[b, perm[r]], r >= start_j."""
    B, n_out = dy.shape
    n_in = x.shape[1]
    dys = _sorted_columns(dy, perm)                # (B, n_out)
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
STAIRCASE_BLOCK = 64       # rows (columns for dx) per block (figures: benchmarks/README.md)


@numba.njit(cache=True)
def _balanced(t, n):
    """Block index of the t-th of n iterations: 0, n-1, 1, n-2, ... The blocks of a staircase
    grow from nothing to everything, and prange hands each thread a contiguous run of t:
    so each thread gets pairs of a small and a large block, about the same work in all."""
    return t // 2 if t % 2 == 0 else n - 1 - t // 2


@numba.njit(cache=True)
def _masked_band(W, M, r0, r1, c0, c1):
    """(W * M)[r0:r1, c0:c1] into a fresh buffer: the masked part of a block."""
    band = np.empty((r1 - r0, c1 - c0), W.dtype)
    for r in range(r0, r1):
        for j in range(c0, c1):
            band[r - r0, j - c0] = W[r, j] * M[r, j]
    return band


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
            band = _masked_band(W, M, r0, r1, a, c)
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
                band = _masked_band(W, M, s0, s1, c0, c1)
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


# ------------------------------------------------------------------ which one to use
# The measured rules (figures: benchmarks/README.md, MADE). A staircase in place goes to the
# staircase kernels. Otherwise the loops pay only when they skip nearly all of the dense work
# (zero inputs times masked-out weights): below WORK_RATIO of it, less their set-up spread over
# the batch. dx, whose dy is dense, then goes to BLAS too; so does every layer of a MADE with
# random orderings on binary or 17-level data.
WORK_RATIO = 0.015         # numba pays when it does less than ~1.5% of the dense work ...
SETUP_PER_ROW = 0.3        # ... minus its set-up (WMt, the unsorting), spread over the batch
KERNELS = ("auto", "staircase", "numba", "numpy")


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
    """(perm, start, staircase) of a 0/1 mask: mask_structure and whether the staircase kernels
    apply (staircase_in_place). The `structure` fused.masked_matmul takes; a layer computes it
    once per mask."""
    perm, start = choose("mask_structure")(M)
    return perm, start, staircase_in_place(M, perm, start)


def connected_fraction(start, n_out):
    """The fraction of the weights the mask connects (the loops' work for a dense input)."""
    return float((n_out - start).sum()) / max(n_out * len(start), 1)


def work_fraction(values, start, n_out):
    """The fraction of the dense multiply-adds the loops do: nonzero values x mask density."""
    density = np.count_nonzero(values) / max(values.size, 1)
    return density * connected_fraction(start, n_out)


def prefer_numba(batch, work):
    """Whether the numba loops beat the NumPy twins (BLAS) for this batch size and work fraction."""
    return work < WORK_RATIO - SETUP_PER_ROW / max(batch, 1)


def _staircase_pair(start):
    """(forward, backward) on the staircase kernels."""
    def forward(x, W, M, b):
        return masked_matmul_forward_staircase(x, W, M, b, start)

    def backward(dy, x, W, M, need_dx, need_dW):
        return masked_matmul_backward_staircase(dy, x, W, M, start, need_dx, need_dW)
    return forward, backward


def _loops_or_twins_pair(perm, start, loops_x, loops_dy, keep_WM):
    """(forward, backward) on the numba loops or the NumPy twins, chosen per product: the
    forward and dW (which skip zeros of x) by loops_x, dx (over a dense dy) by loops_dy.
    keep_WM: the forward forms W * M once and the twins reuse it, dx included."""
    kept = {"WM": None}

    def forward(x, W, M, b):
        kept["WM"] = W * M if keep_WM else None
        if loops_x:
            return masked_matmul_forward_numba(x, W, M, b, perm, start)
        return masked_matmul_forward_numpy(x, W, M, b, perm, start, WM=kept["WM"])

    def backward(dy, x, W, M, need_dx, need_dW):
        dx = dW = None
        if need_dx and loops_dy:
            dx = masked_matmul_backward_input_numba(dy, W, M, perm, start)
        elif need_dx:
            dx = masked_matmul_backward_input_numpy(dy, W, M, perm, start, WM=kept["WM"])
        if need_dW and loops_x:
            dW = masked_matmul_backward_weight_numba(dy, x, M, perm, start)
        elif need_dW:
            dW = masked_matmul_backward_weight_numpy(dy, x, M, perm, start)
        return dx, dW
    return forward, backward


def choose(name, x=None, M=None, structure=None, kernel="auto", need_dx=True):
    """The implementation of `name`: "mask_structure" (a function M -> (perm, start)) or
    "masked_matmul", for which it returns the pair fused.masked_matmul calls,

        forward(x, W, M, b) -> y,      backward(dy, x, W, M, need_dx, need_dW) -> (dx, dW)

    for the input x (B, n_in), the mask M and its `structure` (mask_layout(M), or
    mask_structure's (perm, start), or None: computed here). kernel="auto" follows the rules
    above, or gives the twins under TINYAR_KERNELS=numpy; "staircase", "numba" or "numpy"
    forces one, whatever the switch says.
    need_dx: whether dx will be asked for (then the twins keep W * M from the forward for it).
    """
    if name == "mask_structure":
        return pick(globals(), name)
    if name != "masked_matmul":
        raise ValueError(f"kernels.masked.choose: no kernel {name!r} (mask_structure, masked_matmul)")
    if kernel not in KERNELS:
        raise ValueError(f"masked_matmul: kernel must be 'auto', 'staircase', 'numba' or 'numpy', got {kernel!r}")
    if structure is None:
        structure = mask_layout(M)
    elif len(structure) == 2:                                  # mask_structure's (perm, start)
        structure = (*structure, staircase_in_place(M, *structure))
    perm, start, staircase = structure
    in_place = staircase and x.dtype in (np.float32, np.float64)
    if kernel == "staircase" and not in_place:
        raise ValueError("masked_matmul: kernel='staircase' needs a float32/float64 0/1 mask whose rows are sorted by "
                         "degree and whose columns' first rows never decrease (kernels.masked.staircase_in_place)")
    if in_place and (kernel == "staircase" or (kernel == "auto" and use_numba())):
        return _staircase_pair(start)
    if kernel == "auto":                  # the loops skip zeros of x (forward, dW); dx runs over a dense dy
        loops_x = use_numba() and prefer_numba(len(x), work_fraction(x, start, M.shape[0]))
        loops_dy = use_numba() and prefer_numba(len(x), connected_fraction(start, M.shape[0]))
    else:
        loops_x = loops_dy = kernel == "numba"
    return _loops_or_twins_pair(perm, start, loops_x, loops_dy, keep_WM=not loops_x or (need_dx and not loops_dy))
