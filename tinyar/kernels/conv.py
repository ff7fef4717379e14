"""2-D convolution, stride 1, "same" padding, odd kernel sizes, NCHW.

    y[b, o, i, j] = bias[o] + sum_{c, u, v} w[o, c, u, v] x_pad[b, c, i + u, j + v]

    x     (B, C, H, W)        input images, C channels
    w     (O, C, kh, kw)      kh and kw odd; ph = kh // 2, pw = kw // 2
    bias  (O,)
    x_pad (B, C, H + 2 ph, W + 2 pw)   x with ph rows of zeros above and below and pw columns
                                       left and right ("same" padding: y has x's height and width)
    y     (B, O, H, W)

(This is a cross-correlation, as in every deep-learning library: the kernel is not flipped.)
Cost: B O C kh kw H W multiply-adds, forward and each of the two gradients.

Derivation of the vector-Jacobian product (dy = dL/dy, shape (B, O, H, W)):

    dL/dbias[o]         = sum_{b,i,j} dy[b,o,i,j]
    dL/dw[o,c,u,v]      = sum_{b,i,j} dy[b,o,i,j] x_pad[b,c,i+u,j+v]      (correlate x with dy)
    dL/dx_pad[b,c,m,n]  = sum_{o,u,v} dy[b,o,m-u,n-v] w[o,c,u,v]          (each y sends dy back
                                                                           to the inputs it read)
  put m = i + ph, n = j + pw, u' = kh-1-u, v' = kw-1-v (so m - u = i + u' - ph) and pad dy:
    dL/dx[b,c,i,j]      = sum_{o,u',v'} dy_pad[b,o,i+u',j+v'] w[o,c,kh-1-u',kw-1-v']
  which is the same "same" convolution again, of dy, with the kernel flipped in both
  spatial axes and its two channel axes swapped:   dx = conv(dy, flip(w) with O <-> C).

Taps. Every function takes an optional boolean (kh, kw) array `taps` (None: all taps): the
convolution then uses the kernel restricted to those taps, y = conv(x, w * taps) + bias, and
so dw = (the dw above) * taps (zero at the other taps, whatever w holds there). A masked
convolution (nn.MaskedConv2d) passes its mask; the shift-and-GEMM form below simply leaves
out the products of the taps that are off (a 3x3 mask B keeps 5 of 9 taps, a 7x7 mask A 24
of 49).

Every implementation has the same signatures:
    forward(x, w, bias, taps=None) -> y
    backward(x, w, dy, need_dx=True, taps=None) -> (dx, dw, dbias)    (need_dx=False: dx is None)

The reference: im2col, the textbook form (conv2d_forward_im2col, conv2d_backward_im2col).
Unfold every kh x kw patch of x_pad into one column of a matrix X_col (C kh kw, B H W), row
(c, u, v) of column (b, i, j) holding x_pad[b, c, i+u, j+v]; the whole layer is then one
matrix product, and the weight gradient another:

    Y = W_mat X_col,    dW_mat = dY X_col^T,     W_mat = w reshaped (O, C kh kw)

The NumPy twin: shift-and-GEMM (conv2d_forward_numpy, conv2d_backward_numpy), the same sums
with no unfolded copy of x; the compiled kernels below the fence compute exactly these.
Lay the images out channels-last on a flat grid of rows,
    row base + q(b, i, j) holds x[b, :, i, j]      (C values),
    q(b, i, j) = b Hp Wp + i Wp + j,   Hp = H + ph,  Wp = W + pw,   base = ph Wp + pw,
every other row zero: each image row is followed by pw zero columns and each image by ph
zero rows, shared by neighbours as the right border of one row and the left of the next
(and the bottom border of one image and the top of the next):

    H = W = 3, 3x3 kernel (ph = pw = 1; Hp = Wp = 4), one image, rows of the grid:
        . . . .     the first base = 5 rows (the top border and the first left border),
        . x x x     then x row by row, each followed by pw = 1 zero; ph = 1 zero row after
        . x x x     the image, and base more zero rows at the very end.
        . x x x
        . . . .

Then tap (u, v) of output pixel (i, j), x_pad[b, :, i+u, j+v], sits in row
base + q(b, i+u-ph, j+v-pw) = q(b, i, j) + u Wp + v: each tap is a row shift s_uv = u Wp + v
of the grid, the same for every pixel. With X the grid as a matrix (rows, C) and
W_uv = w[:, :, u, v]^T (C, O),

    Y[q] = sum_{u,v} X[q + s_uv] W_uv        for q = 0 .. L-1, L = B Hp Wp
    y[b, :, i, j] = Y[q(b, i, j)] + bias     (the other rows of Y are thrown away)

one matrix product (L, C) x (C, O) per tap, on a shifted contiguous block of X. The shared
borders cost L / (B H W) = (1 + ph/H)(1 + pw/W) times the work (1.07 for 3x3 on 28x28,
1.27 on 8x8). The gradients, with D the grid of dy (D[base + q(b,i,j)] = dy[b, :, i, j],
zero elsewhere):

    dW_uv = sum_{q < L} X[q + s_uv]^T D[base + q]                    (D is zero where q is no pixel)
    dx:     dX[q] = sum_{u,v} D[q + s_{kh-1-u, kw-1-v}] W_uv^T        (the forward of D with the
            flipped kernel: base + q(b, i+ph-u, j+pw-v) = q(b, i, j) + s_{kh-1-u, kw-1-v})

Below the fence: conv2d_forward_numba / conv2d_backward_numba, the twin's sums compiled, and
the direct loops (conv2d_forward_loops / conv2d_backward_loops), the definition's sums written
out one output pixel at a time. The tests check that all of them agree with the reference;
fused.conv2d calls the pair that choose() returns.
"""
from __future__ import annotations

import threading

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick
from tinyar.kernels.runtime import blas_gemm, gemm_block, single_thread_numba_blas


def check_shapes(x, w, bias=None, taps=None):
    """Raise a clear error unless x (B, C, H, W), w (O, C, kh, kw) with odd kh, kw, bias (O,), taps (kh, kw)."""
    if x.ndim != 4:
        raise ValueError(f"conv2d: expected input of shape (batch, channels, height, width), got {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: expected weight of shape (out_channels, in_channels, kh, kw), got {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but the weight expects {w.shape[1]} "
                         f"(input {x.shape}, weight {w.shape})")
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"conv2d: need at least one input and one output channel, got weight {w.shape}")
    if w.shape[2] % 2 == 0 or w.shape[3] % 2 == 0:
        raise ValueError(f"conv2d: 'same' padding needs odd kernel sizes, got {w.shape[2]}x{w.shape[3]}")
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({w.shape[0]},), got {bias.shape}")
    if taps is not None and np.shape(taps) != w.shape[2:]:
        raise ValueError(f"conv2d: taps must have the kernel's shape {w.shape[2:]}, got {np.shape(taps)}")
    if taps is not None and not np.isin(taps, (0, 1)).all():
        raise ValueError("conv2d: taps marks the kernel taps in use with True/False (or 1/0); "
                         "to scale the weights, multiply w instead")


def live_taps(kh, kw, taps=None):
    """(us, vs): the taps (u, v) in use, in raster order; all kh kw of them when taps is None."""
    if taps is None:
        us, vs = np.divmod(np.arange(kh * kw), kw)
        return us, vs
    return np.nonzero(np.asarray(taps, dtype=bool))


def restrict(w, taps):
    """w * taps (the kernel the convolution uses), or w itself when taps is None."""
    return w if taps is None else w * np.asarray(taps, dtype=bool).astype(w.dtype)


# ------------------------------------------------------- the reference: im2col (the textbook form)
def im2col(x, kh, kw):
    """(B, C, H, W) -> X_col (C kh kw, B H W): column (b, i, j) holds the kh x kw patch
    of x_pad centred on pixel (i, j) of image b, row (c, u, v) its tap x_pad[b, c, i+u, j+v]."""
    B, C, H, W = x.shape
    ph, pw = kh // 2, kw // 2
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))                       # (B, C, H+2ph, W+2pw)
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, (kh, kw), axis=(2, 3))  # (B, C, H, W, kh, kw), a view
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(C * kh * kw, B * H * W)   # one copy


def conv2d_forward_im2col(x, w, bias, taps=None):
    """y = conv(x, w) + bias, as one matrix product  Y = W_mat X_col."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    w = restrict(w, taps)
    X_col = im2col(x, kh, kw)                                  # (C kh kw, B H W)
    Y = w.reshape(O, C * kh * kw) @ X_col                      # (O, B H W)
    Y += bias[:, None]
    return np.ascontiguousarray(Y.reshape(O, B, H, W).transpose(1, 0, 2, 3))   # (B, O, H, W)


def conv2d_backward_im2col(x, w, dy, need_dx=True, taps=None):
    """(dx, dw, dbias) for y = conv(x, w) + bias, given dy = dL/dy (see the module docstring).
    need_dx=False skips dx (returned as None): the input images of a first layer need none."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    w = restrict(w, taps)
    dbias = dy.sum(axis=(0, 2, 3))                                              # (O,)
    dY = dy.transpose(1, 0, 2, 3).reshape(O, B * H * W)                         # (O, B H W)
    dw = restrict((im2col(x, kh, kw) @ dY.T).T.reshape(w.shape), taps)          # dW_mat = dY X_col^T = (X_col dY^T)^T
    if not need_dx:
        return None, dw, dbias
    w_flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, kh, kw)
    dx = conv2d_forward_im2col(dy, w_flipped, np.zeros(C, dtype=dy.dtype))     # dx = conv(dy, flip(w)^T)
    return dx, dw, dbias


# ------------------------------------------------------- the NumPy twin: shift-and-GEMM on the grid
def grid_geometry(H, W, kh, kw):
    """(Hp, Wp, base, Hp Wp) of the flat channels-last grid (module docstring): row base + q(b, i, j)
    holds pixel (i, j) of image b, q(b, i, j) = b Hp Wp + i Wp + j. A batch of B images takes
    base leading rows, Hp Wp rows per image, and base trailing rows: 2 base + B Hp Wp in all."""
    ph, pw = kh // 2, kw // 2
    Hp, Wp = H + ph, W + pw
    return Hp, Wp, ph * Wp + pw, Hp * Wp


def tap_shifts(us, vs, Wp):
    """s_uv = u Wp + v: the row shift of tap (u, v) on the grid."""
    return (np.asarray(us) * Wp + np.asarray(vs)).astype(np.int64)


def to_grid_numpy(x, kh, kw):
    """(B, C, H, W) -> X (2 base + B Hp Wp, C): x channels-last on the grid, zero borders."""
    B, C, H, W = x.shape
    Hp, Wp, base, L1 = grid_geometry(H, W, kh, kw)
    X = np.zeros((2 * base + B * L1, C), dtype=x.dtype)
    X[base:base + B * L1].reshape(B, Hp, Wp, C)[:, :H, :W] = x.transpose(0, 2, 3, 1)
    return X


def from_grid_numpy(Y, B, H, W, kh, kw):
    """Y (B Hp Wp, O) on the grid's output rows q -> (B, O, H, W): the rows that are pixels."""
    Hp, Wp, _, L1 = grid_geometry(H, W, kh, kw)
    return np.ascontiguousarray(Y[:B * L1].reshape(B, Hp, Wp, -1)[:, :H, :W].transpose(0, 3, 1, 2))


def conv2d_forward_numpy(x, w, bias, taps=None):
    """y = conv(x, w) + bias as one product per tap:  Y[q] = sum_{u,v} X[q + s_uv] W_uv."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Hp, Wp, base, L1 = grid_geometry(H, W, kh, kw)
    L = B * L1
    X = to_grid_numpy(x, kh, kw)                                   # (L + 2 base, C)
    Y = np.zeros((L, O), dtype=x.dtype)
    for u, v in zip(*live_taps(kh, kw, taps)):
        s = u * Wp + v
        Y += X[s:s + L] @ w[:, :, u, v].T                          # Y[q] += X[q + s_uv] W_uv
    return from_grid_numpy(Y, B, H, W, kh, kw) + bias[:, None, None]   # (B, O, H, W)


def conv2d_backward_numpy(x, w, dy, need_dx=True, taps=None):
    """(dx, dw, dbias) on the grid:  dW_uv = sum_q X[q + s_uv]^T D[base + q],
    dX[q] = sum_{u,v} D[q + s_{kh-1-u, kw-1-v}] W_uv^T  (module docstring); need_dx=False: dx is None."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Hp, Wp, base, L1 = grid_geometry(H, W, kh, kw)
    L = B * L1
    X = to_grid_numpy(x, kh, kw)                                   # (L + 2 base, C)
    D = to_grid_numpy(dy, kh, kw)                                  # (L + 2 base, O)
    dbias = dy.sum(axis=(0, 2, 3))                                 # (O,)
    dw = np.zeros_like(w)
    us, vs = live_taps(kh, kw, taps)
    for u, v in zip(us, vs):
        s = u * Wp + v
        dw[:, :, u, v] = (X[s:s + L].T @ D[base:base + L]).T       # dW_uv = sum_q X[q + s_uv]^T D[base + q]
    if not need_dx:
        return None, dw, dbias
    dX = np.zeros((L, C), dtype=x.dtype)
    for u, v in zip(us, vs):
        s = (kh - 1 - u) * Wp + (kw - 1 - v)
        dX += D[s:s + L] @ w[:, :, u, v]                           # dX[q] += D[q + s_flipped] W_uv^T
    return from_grid_numpy(dX, B, H, W, kh, kw), dw, dbias


# ---- compiled fast path: safe to skip on a first reading ----
# conv2d_forward_numba / conv2d_backward_numba compute the twin's sums in blocks of grid rows,
# dealt to numba's threads; per block one BLAS gemm per tap, called from compiled code
# (kernels/runtime.py) with beta = 1 so that the taps accumulate in place:
#     Y_block += X[block + s_uv] W_uv,      G_uv += X[block + s_uv]^T D_block.
# With few input channels (C < STACK_BELOW: the 1-channel first layer) a block instead gathers
# its taps side by side, rows [X[q + s_1], X[q + s_2], ...] (the block's im2col rows), for one
# product with K = n_taps C instead of n_taps thin ones.

@numba.njit(cache=True, parallel=True)
def _to_grid(x, kh, kw, X):
    """Write x (B, C, H, W) into the grid X (2 base + B Hp Wp, C), its border rows zeros:
    to_grid_numpy into a given array (every row written), one image per thread at a time."""
    B, C, H, W = x.shape
    ph, pw = kh // 2, kw // 2
    Hp, Wp = H + ph, W + pw
    base = ph * Wp + pw
    X[:base] = 0                                            # top border of the first image
    X[base + B * Hp * Wp:] = 0                              # after the last one
    for b in numba.prange(B):
        for i in range(Hp):
            for j in range(Wp):
                row = base + b * Hp * Wp + i * Wp + j
                if i < H and j < W:
                    for c in range(C):
                        X[row, c] = x[b, c, i, j]
                else:                                       # the borders after each row and image
                    for c in range(C):
                        X[row, c] = 0
    return X


@numba.njit(cache=True, parallel=True)
def _from_grid(Y, B, H, W, kh, kw, bias):
    """Y (B Hp Wp, O) -> y (B, O, H, W) + bias: from_grid_numpy, one image per thread at a time."""
    O = Y.shape[1]
    Hp, Wp = H + kh // 2, W + kw // 2
    y = np.empty((B, O, H, W), dtype=Y.dtype)
    for b in numba.prange(B):
        for i in range(H):
            for j in range(W):
                q = b * Hp * Wp + i * Wp + j
                for o in range(O):
                    y[b, o, i, j] = Y[q, o] + bias[o]
    return y


@numba.njit(cache=True)
def _gather_taps(X, shifts, r0, m, P):
    """P[r, k C:(k+1) C] = X[r0 + r + s_k] for r < m: the block's taps side by side (im2col rows)."""
    C = X.shape[1]
    for r in range(m):
        for k in range(shifts.size):
            src = r0 + r + shifts[k]
            for c in range(C):
                P[r, k * C + c] = X[src, c]


@numba.njit(cache=True, parallel=True)
def _shift_products(gemm, X, Wt, shifts, Y, block, P):
    """Y[q] = sum_k X[q + s_k] Wt[k] for every row q of Y (L, O); X (rows, C), Wt (n_taps, C, O).

    Blocks of `block` rows, dealt round-robin to the lanes of P (n_lanes, block, n_taps C),
    which run in parallel. Per block either one gemm per tap, accumulating (beta = 1 after
    the first), or, when P has room for the gathered taps (stacking), one gemm with K = n_taps C.
    """
    C = X.shape[1]
    n_taps, _, O = Wt.shape
    L = Y.shape[0]
    n_lanes = P.shape[0]
    stack = P.shape[2] == n_taps * C
    n_blocks = (L + block - 1) // block
    for lane in numba.prange(n_lanes):
        for bi in range(lane, n_blocks, n_lanes):
            r0, m = bi * block, min(block, L - bi * block)  # the block's first row, its number of rows
            if stack:
                _gather_taps(X, shifts, r0, m, P[lane])         # P[r] = [X[r0+r+s_1], X[r0+r+s_2], ...]
                gemm_block(gemm, False, False, m, O, n_taps * C, P[lane], 0, n_taps * C, Wt, 0, O, 0.0, Y, r0 * O, O)
            else:
                for k in range(n_taps):                         # Y[q] += X[q + s_k] Wt[k]
                    gemm_block(gemm, False, False, m, O, C, X, (r0 + shifts[k]) * C, C, Wt, k * C * O, O,
                          0.0 if k == 0 else 1.0, Y, r0 * O, O)
    return Y


@numba.njit(cache=True, parallel=True)
def _shift_weight_grad(gemm, X, D, d_start, shifts, L, block, P):
    """G[k] = sum_{q < L} X[q + s_k]^T D[d_start + q]: G (n_taps, C, O).

    The blocks are dealt round-robin to the lanes of P (n_lanes, block, n_taps C or 0), one
    partial sum each, added in a fixed order at the end: the result does not depend on the
    number of threads. Per block one gemm per tap, or one of the gathered taps (stacking).
    """
    C = X.shape[1]
    O = D.shape[1]
    n_taps = shifts.size
    n_lanes = P.shape[0]
    stack = P.shape[2] == n_taps * C
    n_blocks = (L + block - 1) // block
    partial = np.zeros((n_lanes, n_taps * C, O), dtype=X.dtype)
    for lane in numba.prange(n_lanes):
        for bi in range(lane, n_blocks, n_lanes):
            r0, m = bi * block, min(block, L - bi * block)  # the block's first row, its number of rows
            if stack:
                _gather_taps(X, shifts, r0, m, P[lane])         # P[r] = [X[r0+r+s_1], X[r0+r+s_2], ...]
                gemm_block(gemm, True, False, n_taps * C, O, m, P[lane], 0, n_taps * C, D, (d_start + r0) * O, O, 1.0,
                      partial[lane], 0, O)                      # G += P^T D_block
            else:
                for k in range(n_taps):                         # G[k] += X_block[s_k]^T D_block
                    gemm_block(gemm, True, False, C, O, m, X, (r0 + shifts[k]) * C, C, D, (d_start + r0) * O, O, 1.0,
                          partial[lane], k * C * O, O)
    G = partial[0].copy()
    for lane in range(1, n_lanes):
        G += partial[lane]
    return G.reshape(n_taps, C, O)


# Block size: OpenBLAS multiplies small matrices (M N K below 10^6) without first packing them
# into its tile layout, which is faster for a block's thin products; so a block has as many rows
# as keep its products under that size, a multiple of 16, 16 to 1024.
SMALL_GEMM = 10 ** 6
STACK_BELOW = 16      # gather the taps into one product when the input has fewer channels
N_LANES = 4           # blocks are dealt to this many lanes (fixed: results do not depend on the threads)


def block_rows(n, k):
    """Rows per block for products (rows, k) x (k, n): under SMALL_GEMM multiply-adds each."""
    return int(min(1024, max(16, (SMALL_GEMM - 1) // (n * k) // 16 * 16)))


# Work arrays, reused from call to call (fresh multi-megabyte arrays cost page faults on every
# call). One buffer per role and thread, grown when a call needs more; every call writes all of
# the part it uses.
_workspace = threading.local()


def _work_array(role, shape, dtype):
    """An uninitialised array of this shape and dtype, the front of the role's reused buffer."""
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None:
        buffers = _workspace.buffers = {}
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buffer = buffers.get(role)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = buffers[role] = np.empty(max(size, 1), dtype=dtype)
    return buffer[:size].reshape(shape)


def _grid(role, a, kh, kw):
    """a (B, C, H, W) on its grid (in the role's reused buffer)."""
    B, C, H, W = a.shape
    Hp, Wp, base, L1 = grid_geometry(H, W, kh, kw)
    return _to_grid(a, kh, kw, _work_array(role, (2 * base + B * L1, C), a.dtype))


def _tap_lanes(n_taps, C, O, dtype):
    """(block, P): rows per block, and the lanes' room for gathered taps (empty unless C < STACK_BELOW)."""
    K = n_taps * C if C < STACK_BELOW else C                # gathered taps, or one tap per product
    block = block_rows(O, K)
    return block, _work_array("taps", (N_LANES, block, K if C < STACK_BELOW else 0), dtype)


def _products(X, Wt, shifts, L):
    """Y (L, O), Y[q] = sum_k X[q + s_k] Wt[k] (a cached array, valid until the next call)."""
    n_taps, C, O = Wt.shape
    block, P = _tap_lanes(n_taps, C, O, X.dtype)
    Y = _work_array("products", (L, O), X.dtype)
    with single_thread_numba_blas():                   # numba's threads share the cores, BLAS one each
        return _shift_products(blas_gemm(X.dtype), X, Wt, shifts, Y, block, P)


def _no_blas(x, n_taps):
    """True when there is nothing to multiply, or no BLAS gemm for x's dtype: the twin then serves."""
    return n_taps == 0 or x.dtype not in (np.float32, np.float64)


def conv2d_forward_numba(x, w, bias, taps=None):
    """y = conv(x, w) + bias: Y[q] = sum_{u,v} X[q + s_uv] W_uv in blocks of rows, BLAS per block."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Hp, Wp, base, L1 = grid_geometry(H, W, kh, kw)
    us, vs = live_taps(kh, kw, taps)
    if _no_blas(x, us.size):
        return conv2d_forward_numpy(x, w, bias, taps)
    Wt = np.ascontiguousarray(w[:, :, us, vs].transpose(2, 1, 0))          # (n_taps, C, O): W_uv
    Y = _products(_grid("x", x, kh, kw), Wt, tap_shifts(us, vs, Wp), B * L1)   # (L, O)
    return _from_grid(Y, B, H, W, kh, kw, bias)                           # (B, O, H, W)


def conv2d_backward_numba(x, w, dy, need_dx=True, taps=None):
    """(dx, dw, dbias): dW_uv = sum_q X[q + s_uv]^T D[base + q] (BLAS per block),
    dx = the forward of D with the flipped kernel (module docstring); need_dx=False: dx is None."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Hp, Wp, base, L1 = grid_geometry(H, W, kh, kw)
    L = B * L1
    us, vs = live_taps(kh, kw, taps)
    if _no_blas(x, us.size):
        return conv2d_backward_numpy(x, w, dy, need_dx, taps)
    X = _grid("x", x, kh, kw)                                              # (L + 2 base, C)
    D = _grid("dy", dy, kh, kw)                                            # (L + 2 base, O)
    dbias = dy.sum(axis=(0, 2, 3))                                         # (O,)
    block, P = _tap_lanes(us.size, C, O, x.dtype)
    with single_thread_numba_blas():
        G = _shift_weight_grad(blas_gemm(x.dtype), X, D, base, tap_shifts(us, vs, Wp), L, block, P)
    dw = np.zeros_like(w)
    dw[:, :, us, vs] = G.transpose(2, 1, 0)                                # dw[:, :, u, v] = dW_uv^T
    if not need_dx:
        return None, dw, dbias
    Wf = np.ascontiguousarray(w[:, :, us, vs].transpose(2, 0, 1))          # (n_taps, O, C): W_uv^T
    dX = _products(D, Wf, tap_shifts(kh - 1 - us, kw - 1 - vs, Wp), L)      # dX[q] = sum D[q + s_flip] W_uv^T
    return _from_grid(dX, B, H, W, kh, kw, np.zeros(C, dtype=x.dtype)), dw, dbias


# -------------------------------------------------------------- the direct loops (numba)
# The definition's sums written out, one output pixel at a time: a second, independent check
# of the shift kernels, and a column of benchmarks/bench_pixelcnn.py. Nothing else calls them.
# x and w are copied channels-last so that the innermost loop runs over the O output channels,
# contiguous in memory; taps whose input is exactly zero (padding, ReLU zeros, binary pixels)
# are skipped.

@numba.njit(cache=True)
def _to_channels_last(x, ph, pw):
    """(B, C, H, W) -> x_pad in channels-last order (B, H + 2 ph, W + 2 pw, C), zero borders."""
    B, C, H, W = x.shape
    xt = np.zeros((B, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    xt[b, i + ph, j + pw, c] = x[b, c, i, j]
    return xt


@numba.njit(cache=True)
def _forward_loops(x, w, bias):
    """y[b,o,i,j] = bias[o] + sum_{u,v,c} w[o,c,u,v] x_pad[b,c,i+u,j+v], one output pixel at a time.

    The image and the kernel are first copied to channels-last order, so that the innermost
    loop runs over the O output channels of one pixel, contiguous in memory (the compiler turns
    it into vector instructions): for each tap x_pad[b,c,i+u,j+v], add x times w[:, c, u, v] to
    the O accumulators of pixel (i, j). Taps that are exactly zero (padding, ReLU zeros, zero
    pixels of a binary image) are skipped.
    """
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    ph, pw = kh // 2, kw // 2
    xt = _to_channels_last(x, ph, pw)                       # (B, H+2ph, W+2pw, C)
    wt = np.empty((kh, kw, C, O), dtype=w.dtype)            # wt[u, v, c, :] = w[:, c, u, v]
    for o in range(O):
        for c in range(C):
            for u in range(kh):
                for v in range(kw):
                    wt[u, v, c, o] = w[o, c, u, v]
    y = np.empty((B, O, H, W), dtype=x.dtype)
    acc = np.empty(O, dtype=x.dtype)                        # y[b, :, i, j]
    for b in range(B):
        for i in range(H):
            for j in range(W):
                acc[:] = bias
                for u in range(kh):
                    for v in range(kw):
                        for c in range(C):
                            x_tap = xt[b, i + u, j + v, c]
                            if x_tap == 0:
                                continue
                            for o in range(O):
                                acc[o] += wt[u, v, c, o] * x_tap    # y[o] += w[o,c,u,v] x_pad[c,i+u,j+v]
                for o in range(O):
                    y[b, o, i, j] = acc[o]
    return y


@numba.njit(cache=True)
def _weight_grad_loops(x, w, dy):
    """dw[o,c,u,v] = sum_{b,i,j} dy[b,o,i,j] x_pad[b,c,i+u,j+v];  dbias[o] = sum_{b,i,j} dy[b,o,i,j];
    and the flipped kernel flip(w)[c,o,u,v] = w[o,c,kh-1-u,kw-1-v] that dx needs."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    ph, pw = kh // 2, kw // 2
    xt = _to_channels_last(x, ph, pw)                       # (B, H+2ph, W+2pw, C)
    dwt = np.zeros((kh, kw, C, O), dtype=w.dtype)           # dwt[u, v, c, :] = dw[:, c, u, v]
    dbias = np.zeros(O, dtype=w.dtype)
    dy_ij = np.empty(O, dtype=dy.dtype)                     # dy[b, :, i, j]
    for b in range(B):
        for i in range(H):
            for j in range(W):
                for o in range(O):
                    dy_ij[o] = dy[b, o, i, j]
                    dbias[o] += dy_ij[o]
                for u in range(kh):
                    for v in range(kw):
                        for c in range(C):
                            x_tap = xt[b, i + u, j + v, c]
                            if x_tap == 0:
                                continue
                            for o in range(O):
                                dwt[u, v, c, o] += x_tap * dy_ij[o]
    dw = np.empty_like(w)
    w_flipped = np.empty((C, O, kh, kw), dtype=w.dtype)     # flip(w)[c, o, u, v] = w[o, c, kh-1-u, kw-1-v]
    for o in range(O):
        for c in range(C):
            for u in range(kh):
                for v in range(kw):
                    dw[o, c, u, v] = dwt[u, v, c, o]
                    w_flipped[c, o, u, v] = w[o, c, kh - 1 - u, kw - 1 - v]
    return dw, dbias, w_flipped


def conv2d_forward_loops(x, w, bias, taps=None):
    """y = conv(x, w) + bias by the direct loops."""
    return _forward_loops(x, np.ascontiguousarray(restrict(w, taps)), bias)


def conv2d_backward_loops(x, w, dy, need_dx=True, taps=None):
    """(dx, dw, dbias) by the direct loops: dw and dbias as summed above, dx = conv(dy, flip(w)
    with O <-> C) by the forward loops (module docstring); need_dx=False: dx is None."""
    dw, dbias, w_flipped = _weight_grad_loops(x, np.ascontiguousarray(restrict(w, taps)), dy)
    dw = restrict(dw, taps)
    if not need_dx:
        return None, dw, dbias
    return _forward_loops(dy, w_flipped, np.zeros(x.shape[1], dtype=dy.dtype)), dw, dbias


# -------------------------------------------------------------- the choice
# Every implementation by name, for the tests and for benchmarks/bench_pixelcnn.py, which times
# them side by side on the sizes PixelCNN meets (figures in benchmarks/README.md).
IMPLEMENTATIONS = {"shift": (conv2d_forward_numba, conv2d_backward_numba),
                   "shift_numpy": (conv2d_forward_numpy, conv2d_backward_numpy),
                   "im2col": (conv2d_forward_im2col, conv2d_backward_im2col),
                   "loops": (conv2d_forward_loops, conv2d_backward_loops)}


def choose(name="conv2d"):
    """(forward, backward) of `name` (only "conv2d") for fused.conv2d: the compiled shift-and-GEMM,
    the fastest of the four at every size measured; its NumPy twin under TINYAR_KERNELS=numpy."""
    return pick(globals(), name + "_forward"), pick(globals(), name + "_backward")
