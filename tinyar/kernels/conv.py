"""2-D convolution, stride 1, "same" padding, odd kernel sizes, NCHW: numba kernels and NumPy twins.

    y[b, o, i, j] = bias[o] + sum_{c, u, v} w[o, c, u, v] x_pad[b, c, i + u, j + v]

    x     (B, C, H, W)        input images, C channels
    w     (O, C, kh, kw)      kh and kw odd; ph = kh // 2, pw = kw // 2
    bias  (O,)
    x_pad (B, C, H + 2 ph, W + 2 pw)   x with ph rows of zeros above and below and pw columns
                                       left and right, so that y has x's height and width
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

Two implementations of the same signatures:

  im2col (NumPy, `*_numpy`): unfold every kh x kw patch of x_pad into one column of a matrix
      X_col (C kh kw, B H W) with stride tricks (a view, then one copy), so the whole layer is
      one matrix product   Y = W_mat X_col,   W_mat = w reshaped (O, C kh kw),
      and the weight gradient another:   dW_mat = dY X_col^T.
  direct loops (numba, `*_numba`): the seven nested sums written out, one output pixel at a
      time, with the innermost loop over the output channels (channels-last copies of x and w
      make it contiguous, so it compiles to vector instructions); zero inputs are skipped.

`implementation()` returns the pair that ops.conv2d calls (see the choice at the end of
this file, made by benchmarks/bench_pixelcnn.py); TINYAR_KERNELS=numpy always gives im2col.
"""
from __future__ import annotations

import numba
import numpy as np

from tinyar.kernels import use_numba


def check_shapes(x, w, bias=None):
    """Raise a clear error unless x (B, C, H, W), w (O, C, kh, kw) with odd kh, kw, bias (O,)."""
    if x.ndim != 4:
        raise ValueError(f"conv2d: expected input of shape (batch, channels, height, width), got {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: expected weight of shape (out_channels, in_channels, kh, kw), got {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but the weight expects {w.shape[1]} "
                         f"(input {x.shape}, weight {w.shape})")
    if w.shape[2] % 2 == 0 or w.shape[3] % 2 == 0:
        raise ValueError(f"conv2d: 'same' padding needs odd kernel sizes, got {w.shape[2]}x{w.shape[3]}")
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({w.shape[0]},), got {bias.shape}")


# --------------------------------------------------------------- im2col (NumPy)
def im2col(x, kh, kw):
    """(B, C, H, W) -> X_col (C kh kw, B H W): column (b, i, j) holds the kh x kw patch
    of x_pad centred on pixel (i, j) of image b, row (c, u, v) its tap x_pad[b, c, i+u, j+v]."""
    B, C, H, W = x.shape
    ph, pw = kh // 2, kw // 2
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))                       # (B, C, H+2ph, W+2pw)
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, (kh, kw), axis=(2, 3))  # (B, C, H, W, kh, kw), a view
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(C * kh * kw, B * H * W)   # one copy


def conv2d_forward_numpy(x, w, bias):
    """y = conv(x, w) + bias, as one matrix product  Y = W_mat X_col."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    X_col = im2col(x, kh, kw)                                  # (C kh kw, B H W)
    Y = w.reshape(O, C * kh * kw) @ X_col                      # (O, B H W)
    Y += bias[:, None]
    return np.ascontiguousarray(Y.reshape(O, B, H, W).transpose(1, 0, 2, 3))   # (B, O, H, W)


def conv2d_backward_numpy(x, w, dy, need_dx=True):
    """(dx, dw, dbias) for y = conv(x, w) + bias, given dy = dL/dy (see the module docstring).
    need_dx=False skips dx (returned as None): the input images of a first layer need none."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    dbias = dy.sum(axis=(0, 2, 3))                                              # (O,)
    dY = dy.transpose(1, 0, 2, 3).reshape(O, B * H * W)                         # (O, B H W)
    dw = (im2col(x, kh, kw) @ dY.T).T.reshape(w.shape)                          # dW_mat = dY X_col^T = (X_col dY^T)^T
    if not need_dx:
        return None, dw, dbias
    w_flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, kh, kw)
    dx = conv2d_forward_numpy(dy, w_flipped, np.zeros(C, dtype=dy.dtype))      # dx = conv(dy, flip(w)^T)
    return dx, dw, dbias


# -------------------------------------------------------------- direct loops (numba)
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
def conv2d_forward_numba(x, w, bias):
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


def conv2d_backward_numba(x, w, dy, need_dx=True):
    """(dx, dw, dbias) for y = conv(x, w) + bias, given dy = dL/dy; need_dx=False: dx is None.

    dw, dbias from the loops below; dx = conv(dy, flip(w) with O <-> C) by the forward loops
    (the derivation in the module docstring)."""
    dw, dbias, w_flipped = _conv2d_backward_loops(x, w, dy)
    if not need_dx:
        return None, dw, dbias
    return conv2d_forward_numba(dy, w_flipped, np.zeros(x.shape[1], dtype=dy.dtype)), dw, dbias


@numba.njit(cache=True)
def _conv2d_backward_loops(x, w, dy):
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


# ------------------------------------------------------------------ the choice
# benchmarks/bench_pixelcnn.py times both on the sizes PixelCNN meets (8x8 digits and 28x28
# images, batch 64, 1 to 64 channels, forward + backward): im2col + BLAS was faster at every
# one of them, 1.7x to 2.9x for single convolutions and 1.7x to 2.3x for whole models
# (figures in benchmarks/README.md), so the fused op ops.conv2d calls the im2col pair and the
# numba loops are its twin. Set DEFAULT = "numba" to run the loops.
IMPLEMENTATIONS = {"im2col": (conv2d_forward_numpy, conv2d_backward_numpy),
                   "numba": (conv2d_forward_numba, conv2d_backward_numba)}
DEFAULT = "im2col"


def implementation():
    """(forward, backward) used by ops.conv2d: DEFAULT's pair, or im2col under TINYAR_KERNELS=numpy."""
    return IMPLEMENTATIONS[DEFAULT if use_numba() else "im2col"]
