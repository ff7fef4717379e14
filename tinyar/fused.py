"""Fused ops: one graph node each over a kernel pair from tinyar/kernels/.

Each op here is the same function as a composite of primitive ops (ops.py), written
as one forward and one VJP so that a whole computation (NADE's recursion over D
dimensions, an RNN over T steps, a masked convolution) is a single node of the graph.
Each reads the same way: the equation and its VJP in the docstring, the input checks,
one call that picks the implementation (the kernel module's `choose`, which returns
the NumPy twins under TINYAR_KERNELS=numpy), the forward, the VJP.

The ops here register in the same table as the primitives (ops.OPS), so each has a
gradcheck case in tinyar/gradcheck_cases.py like every other op. Unlike the primitives,
they sum their own bias gradients over the batch (the engine's unbroadcast only sees
gradients already of each input's shape).
"""
from __future__ import annotations

import numpy as np

from tinyar.ops import _blas_friendly, as_tensor, register, stable_sigmoid, stable_softplus
from tinyar.tensor import Tensor


def _rows(a, n_last):
    """a as a C-contiguous array of shape (N, *last n_last axes) (a view when it can be)."""
    return np.ascontiguousarray(a).reshape((-1,) + a.shape[a.ndim - n_last:])


def _require_float(op, *tensors):
    """A fused op computes in its inputs' float dtype: integer inputs get a clear error."""
    for t in tensors:
        if t.dtype.kind != "f":
            raise TypeError(f"{op}: expected float32 or float64 tensors, got {t.dtype}")


@register
def bernoulli_log_prob(z, x):
    """log p(x | z) = x z - softplus(z): the log-probability of binary data x under logits z,
    elementwise (minus the binary cross-entropy with logits), stable for any z.

        VJP: dz = dy x - dy sigmoid(z)      (x is data: no gradient)

    One node instead of the composite's four (x * z, softplus, the difference and its
    gradients): the loss of every binary model; e^-|z| is shared by both terms and the VJP.
    """
    z, x = as_tensor(z), np.asarray(x.data if isinstance(x, Tensor) else x)
    _require_float("bernoulli_log_prob", z)
    if x.shape != z.shape:
        raise ValueError(f"bernoulli_log_prob: x has shape {x.shape}, the logits {z.shape}")
    x = x.astype(z.dtype, copy=False)
    e = np.exp(-np.abs(z.data))               # e^-|z|, for softplus and, in the VJP, sigmoid
    y = x * z.data - stable_softplus(z.data, e)
    return Tensor._make(y, (z,), lambda dy: (dy * x - dy * stable_sigmoid(z.data, e),), "bernoulli_log_prob")


# ==== fused: NADE (kernels/nade.py) ====
@register
def nade(x, order, W, c, V, b):
    """NADE's output parameters for every dimension, by the cached recursion, as ONE graph node.

        a_1 = c,   h_i = sigmoid(a_i),   out[:, o_i] = b[o_i] + V[o_i] h_i,   a_{i+1} = a_i + W[o_i]^T x[:, o_i]

    x:     (B, D, K) array of input features per dimension (data: gets no gradient)
    order: (D,) permutation, o_i = order[i]
    W:     (D, K, H);  c: (H,);  V: (D, P, H);  b: (D, P)   Tensors of one float dtype
    Returns out: (B, D, P), out[:, d] the parameters of p(x_d | the dimensions before d).

    VJP: dW, dc, dV, db by running the recursion in reverse (derivation in kernels/nade.py);
    the forward keeps only a_{D+1} (B, H) for it. TINYAR_KERNELS=numpy runs the NumPy twins.
    """
    from tinyar import kernels
    from tinyar.kernels import nade as K

    dtype = W.dtype
    if c.dtype != dtype or V.dtype != dtype or b.dtype != dtype:
        raise TypeError(f"nade: W, c, V, b must share one float dtype, got {W.dtype}, {c.dtype}, {V.dtype}, {b.dtype}")
    x = np.ascontiguousarray(x.data if isinstance(x, Tensor) else x, dtype=dtype)
    order = np.ascontiguousarray(order, dtype=np.int64)
    if x.ndim != 3:
        raise ValueError(f"nade: x must be (B, D, K) input features, got shape {x.shape}")
    D, H = x.shape[1], c.shape[0]
    if order.shape != (D,) or not np.array_equal(np.sort(order), np.arange(D)):
        raise ValueError(f"nade: order must be a permutation of 0..{D - 1}, got {order.tolist()}")
    arrays = [np.ascontiguousarray(t.data) for t in (W, c, V, b)]
    numba_path = kernels.use_numba()
    forward = K.nade_forward if numba_path else K.nade_forward_numpy
    out, a_last = forward(x, order, *arrays)             # (B, D, P), (B, H)

    def vjp(dout):
        backward = K.nade_backward if numba_path else K.nade_backward_numpy
        return backward(x, order, *arrays, a_last, np.ascontiguousarray(dout, dtype=dtype))
    return Tensor._make(out, (W, c, V, b), vjp, "nade")


# ==== fused: masked matmul (kernels/masked.py) ====
def _use_masked_numba(kernel, values, start, n_out):
    """Run the numba loops (True) or the NumPy twin (False), as `kernel` and the measured rule decide."""
    from tinyar.kernels import masked as K, use_numba
    if kernel != "auto":
        return kernel == "numba"
    return use_numba() and K.prefer_numba(len(values), K.work_fraction(values, start, n_out))


@register
def masked_matmul(x, W, M, b=None, structure=None, kernel="auto"):
    """y = x (W * M)^T + b, with a constant 0/1 mask M of W's shape (MADE's layers).

    x (B, n_in), W (n_out, n_in), M (n_out, n_in), b (n_out,) or None -> y (B, n_out).
        VJP: dx = dy (W*M),   dW = (dy^T x) * M,   db = sum_b dy
    (derivation in kernels/masked.py). M gets no gradient. `structure` is
    kernels.masked.mask_layout(M), which a layer computes once per mask; `kernel`
    picks "staircase", "numba", "numpy" or (by default, "auto") what was measured fastest:
    "staircase" (BLAS on blocks of rows, skipping the masked-out corner; numba) whenever the
    mask is a staircase in its own order (kernels.masked.staircase_in_place: MADE in natural
    order); otherwise, by kernels.masked.prefer_numba, the "numba" loops for very sparse
    inputs (they skip zeros and masked-out weights), BLAS through the "numpy" twin for dense ones.
    """
    from tinyar.kernels import masked as K, use_numba
    x, W = as_tensor(x), as_tensor(W)
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
        raise ValueError(f"masked_matmul: need x (B, n_in) and W (n_out, n_in), got {x.shape} and {W.shape}")
    M = np.asarray(M.data if isinstance(M, Tensor) else M)
    if M.shape != W.shape:
        raise ValueError(f"masked_matmul: mask shape {M.shape} differs from weight shape {W.shape}")
    dtype = W.dtype
    M = np.ascontiguousarray(M, dtype=dtype)
    xd = np.ascontiguousarray(x.data, dtype=dtype)
    Wd = np.ascontiguousarray(W.data)
    b = None if b is None else as_tensor(b)
    bd = np.zeros(W.shape[0], dtype) if b is None else np.ascontiguousarray(b.data, dtype=dtype)
    if b is not None and b.shape != (W.shape[0],):
        raise ValueError(f"masked_matmul: bias must have shape ({W.shape[0]},), got {b.shape}")
    if structure is None:
        structure = K.mask_layout(M)
    elif len(structure) == 2:                                  # mask_structure's (perm, start)
        structure = (*structure, K.staircase_in_place(M, *structure))
    perm, start, staircase = structure
    n_out = W.shape[0]
    if kernel not in ("auto", "staircase", "numba", "numpy"):
        raise ValueError(f"masked_matmul: kernel must be 'auto', 'staircase', 'numba' or 'numpy', got {kernel!r}")
    in_place = staircase and dtype in (np.float32, np.float64)
    if kernel == "staircase" and not in_place:
        raise ValueError("masked_matmul: kernel='staircase' needs a float32/float64 0/1 mask whose rows are sorted by "
                         "degree and whose columns' first rows never decrease (kernels.masked.staircase_in_place)")
    if in_place and (kernel == "staircase" or (kernel == "auto" and use_numba())):
        y = K.masked_matmul_forward_staircase(xd, Wd, M, bd, start)              # (B, n_out)

        def vjp_staircase(dy):                                 # reads W now, as every VJP here reads its inputs
            dy = np.ascontiguousarray(dy, dtype=dtype)
            dx, dW = K.masked_matmul_backward_staircase(dy, xd, Wd, M, start, x.requires_grad, W.requires_grad)
            db = dy.sum(axis=0) if b is not None and b.requires_grad else None
            return (dx, dW) if b is None else (dx, dW, db)
        return Tensor._make(y, (x, W) if b is None else (x, W, b), vjp_staircase, "masked_matmul")

    # the forward and dW loops skip zeros of x; the dx loop runs over dense dy
    numba_x = _use_masked_numba(kernel, xd, start, n_out)
    numba_dy = _use_masked_numba(kernel, np.ones((len(xd), 1)), start, n_out)
    # the BLAS path forms W * M once and keeps it for dx (the numba loops form their own sorted copy)
    WM = None if numba_x and (numba_dy or not x.requires_grad) else Wd * M
    if numba_x:
        y = K.masked_matmul_forward(xd, Wd, M, bd, perm, start)                  # (B, n_out)
    else:
        y = K.masked_matmul_forward_numpy(xd, Wd, M, bd, perm, start, WM=WM)

    def vjp(dy):
        dy = np.ascontiguousarray(dy, dtype=dtype)
        backward_weight = K.masked_matmul_backward_weight if numba_x else K.masked_matmul_backward_weight_numpy
        if not x.requires_grad:
            dx = None
        elif numba_dy:
            dx = K.masked_matmul_backward_input(dy, Wd, M, perm, start)              # (B, n_in)
        else:
            dx = K.masked_matmul_backward_input_numpy(dy, Wd, M, perm, start, WM=WM)
        dW = backward_weight(dy, xd, M, perm, start) if W.requires_grad else None  # (n_out, n_in)
        db = dy.sum(axis=0) if b is not None and b.requires_grad else None           # (n_out,)
        return (dx, dW) if b is None else (dx, dW, db)
    parents = (x, W) if b is None else (x, W, b)
    return Tensor._make(y, parents, vjp, "masked_matmul")


# ==== fused: RNN (kernels/rnn.py) ====
@register
def elman_rnn(x, W_xh, W_hh, b, h0=None):
    """The Elman RNN over a whole sequence as ONE graph node (a 1,000-step sequence is one op).

        h_t = tanh(W_xh x_t + W_hh h_{t-1} + b),   t = 1..T

    x:    (B, T) integer ids (then W_xh x_t is column x_t of W_xh: an embedding
          lookup, never a one-hot matmul; ids get no gradient), or a Tensor (B, T, D)
          of dense input vectors
    W_xh: (H, V) for ids, (H, D) for vectors;  W_hh: (H, H);  b: (H,)
    h0:   (B, H) Tensor, or None for zeros
    Returns h: (B, T, H), the states h_1..h_T.

    VJP: backpropagation through time, derived in tinyar/kernels/rnn.py: the kernel
    gives da_t = dL/da_t for every step, dW_hh, db and dh0; then dW_xh[:, k] = sum of
    da_t over the (t, b) with x_t = k (ids), or dW_xh = sum_t da_t^T x_t and
    dx_t = da_t W_xh (vectors). TINYAR_KERNELS=numpy runs the NumPy twins.
    """
    from tinyar import kernels
    from tinyar.kernels import embedding as embedding_kernels, rnn as K

    dense = isinstance(x, Tensor) and x.dtype.kind == "f"
    H = W_hh.shape[0]
    if W_hh.shape != (H, H) or W_xh.ndim != 2 or W_xh.shape[0] != H or b.shape != (H,):
        raise ValueError(f"elman_rnn: expected W_xh (H, V), W_hh (H, H), b (H,) with one H, "
                         f"got W_xh {W_xh.shape}, W_hh {W_hh.shape}, b {b.shape}")
    dtype = W_hh.dtype
    if W_xh.dtype != dtype or b.dtype != dtype or (dense and x.dtype != dtype):
        raise TypeError(f"elman_rnn: all inputs must share one float dtype, got W_xh {W_xh.dtype}, "
                        f"W_hh {W_hh.dtype}, b {b.dtype}" + (f", x {x.dtype}" if dense else ""))
    if dense:
        if x.ndim != 3 or x.shape[2] != W_xh.shape[1]:
            raise ValueError(f"elman_rnn: dense inputs must be (B, T, {W_xh.shape[1]}), got {x.shape}")
        B, T = x.shape[:2]
        x_tm = np.ascontiguousarray(x.data.transpose(1, 0, 2))             # (T, B, D)
        u = x_tm @ W_xh.data.T + b.data                                     # (T, B, H)  W_xh x_t + b
    else:
        ids = np.asarray(x.data if isinstance(x, Tensor) else x)
        V = W_xh.shape[1]
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"elman_rnn: ids must be a (B, T) integer array, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(f"elman_rnn: ids must lie in 0..{V - 1} (W_xh has {V} columns), "
                             f"got values in {ids.min()}..{ids.max()}")
        B, T = ids.shape
        ids_tm = np.ascontiguousarray(ids.T, dtype=np.int64)                # (T, B)
        u = np.ascontiguousarray(W_xh.data.T)[ids_tm] + b.data              # (T, B, H)  column x_t of W_xh, + b
    if T == 0:
        raise ValueError("elman_rnn: the sequence is empty (T = 0)")
    if h0 is None:
        h0 = Tensor(np.zeros((B, H), dtype))
    if h0.shape != (B, H) or h0.dtype != dtype:
        raise ValueError(f"elman_rnn: h0 must be ({B}, {H}) {dtype}, got {h0.shape} {h0.dtype}")

    numba_path = kernels.use_numba()
    forward = K.elman_forward if numba_path else K.elman_forward_numpy
    h = forward(np.ascontiguousarray(u, dtype=dtype), np.ascontiguousarray(W_hh.data), np.ascontiguousarray(h0.data))

    def vjp(dy):
        backward = K.elman_backward if numba_path else K.elman_backward_numpy
        dh_out = np.ascontiguousarray(dy.transpose(1, 0, 2), dtype=dtype)  # (T, B, H)
        da, dW_hh, db, dh0 = backward(np.ascontiguousarray(W_hh.data), np.ascontiguousarray(h0.data), h, dh_out)
        if dense:
            D = x.shape[2]
            dW_xh = da.reshape(T * B, H).T @ x_tm.reshape(T * B, D)        # (H, D)  sum_t da_t^T x_t
            dx = (da @ W_xh.data).transpose(1, 0, 2)                        # (B, T, D)  da_t W_xh
            return dx, dW_xh, dW_hh, db, dh0
        scatter = embedding_kernels.choose("embedding_backward")           # dW_xh[:, k] = sum of da_t[b] with x_t[b] = k
        dW_xhT = scatter(ids_tm.reshape(-1), da.reshape(T * B, H), W_xh.shape[1])   # (V, H)
        return np.ascontiguousarray(dW_xhT.T), dW_hh, db, dh0

    parents = (x, W_xh, W_hh, b, h0) if dense else (W_xh, W_hh, b, h0)
    return Tensor._make(h.transpose(1, 0, 2), parents, vjp, "elman_rnn")    # (B, T, H)


# ==== fused: convolution (kernels/conv.py) ====
@register
def conv2d(x, w, b=None, taps=None):
    """y = conv(x, w) + b: 2-D cross-correlation, stride 1, "same" padding, odd kernel sizes, NCHW.

    x (B, C, H, W), w (O, C, kh, kw), b (O,) or None  ->  y (B, O, H, W)
        y[b,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x_pad[b,c,i+u,j+v]
    VJP: db[o]       = sum_{b,i,j} dy[b,o,i,j]
         dw[o,c,u,v] = sum_{b,i,j} dy[b,o,i,j] x_pad[b,c,i+u,j+v]
         dx          = conv(dy, w flipped in both spatial axes, in/out channels swapped)
    taps: None, or a boolean (kh, kw) array of the kernel taps in use: the op is then
    conv(x, w * taps) + b (so dw is zero at the other taps) and skips their work; a masked
    convolution (nn.MaskedConv2d) passes its mask.
    (derivation in kernels/conv.py, which holds the shift-and-GEMM, im2col and loop implementations.)
    """
    from tinyar.kernels import conv as kernels
    x, w = as_tensor(x), as_tensor(w)
    b = None if b is None else as_tensor(b)
    kernels.check_shapes(x.data, w.data, None if b is None else b.data, taps)
    taps = None if taps is None else np.asarray(taps, dtype=bool)
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype):
        raise TypeError(f"conv2d: input, weight and bias must share a float dtype, got {x.dtype}, {w.dtype}"
                        + ("" if b is None else f", {b.dtype}"))
    if taps is not None and taps.all():
        taps = None                                                     # every tap: the plain convolution
    forward, backward = kernels.implementation()
    bias = np.zeros(w.shape[0], dtype=w.dtype) if b is None else b.data
    y = forward(np.ascontiguousarray(x.data), np.ascontiguousarray(w.data), bias, taps)

    def vjp(dy):
        dx, dw, db = backward(np.ascontiguousarray(x.data), np.ascontiguousarray(w.data), np.ascontiguousarray(dy),
                              need_dx=x.requires_grad, taps=taps)          # no dx for input images
        return (dx, dw) if b is None else (dx, dw, db)
    return Tensor._make(y, (x, w) if b is None else (x, w, b), vjp, "conv2d")


# ==== fused: attention (if the benchmark shows it pays) ====
# Three ops of the Transformer (kernels/attention.py): each replaces a dozen
# primitive ops and their temporaries by one forward and one VJP, whose row-wise
# passes run as numba kernels over both cores; benchmarks/bench_transformer.py
# measures what that buys against the same functions built from primitives.

@register
def causal_attention(q, k, v):
    """y = softmax(q k^T / sqrt(d) + M) v, M = -inf above the causal diagonal (0 elsewhere).

    q: (..., Tq, d); k, v: (..., Tk, d), Tq <= Tk (query i sits at position
    i + Tk - Tq: Tq = Tk in training, Tq < Tk with a key/value cache).

    Derivation, per batch and head, with S = q k^T / sqrt(d) + M, P = softmax(S), y = P v:
        dv = P^T dy                                   y = P v is linear in v
        dP = dy v^T                                   and in P
        dS_ij = sum_l dP_il dP_il/dS_ij = sum_l dP_il P_il ([l = j] - P_ij)
              = P_ij (dP_ij - sum_l P_il dP_il)       softmax's Jacobian diag(p) - p p^T
        dq = dS k / sqrt(d),   dk = dS^T q / sqrt(d)  S is bilinear in q and k
    Masked entries have P_ij = 0, hence dS_ij = 0: no gradient crosses the mask.
    """
    from tinyar.kernels.attention import implementation
    _require_float("causal_attention", q, k, v)
    if min(q.ndim, k.ndim, v.ndim) < 2:
        raise ValueError(f"causal_attention: expected q (..., Tq, d) and k, v (..., Tk, d), "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    Tq, Tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    if k.shape != v.shape or q.shape[:-2] != k.shape[:-2] or k.shape[-1] != d or Tq > Tk:
        raise ValueError(f"causal_attention: expected q (..., Tq, d) and k, v (..., Tk, d) with Tq <= Tk, "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    scale = float(1.0 / np.sqrt(d))                           # a Python float: float32 stays float32
    qs = q.data * scale                                       # (..., Tq, d)   q / sqrt(d)
    S = qs @ _blas_friendly(np.swapaxes(k.data, -1, -2))      # (..., Tq, Tk)
    P = implementation("causal_softmax")(_rows(S, 2), Tk - Tq).reshape(S.shape)   # masked, stable softmax
    y = P @ v.data                                            # (..., Tq, d)

    def vjp(dy):
        dv = np.swapaxes(P, -1, -2) @ dy                      # (..., Tk, d)   dv = P^T dy
        dP = dy @ _blas_friendly(np.swapaxes(v.data, -1, -2))  # (..., Tq, Tk)  dP = dy v^T
        dS = implementation("causal_softmax_backward")(_rows(P, 2), _rows(dP, 2)).reshape(P.shape)
        dq = dS @ k.data                                      # (..., Tq, d)
        dq *= scale                                           # dq = dS k / sqrt(d)
        dk = np.swapaxes(dS, -1, -2) @ qs                     # (..., Tk, d)   dk = dS^T q / sqrt(d)
        return dq, dk, dv
    return Tensor._make(y, (q, k, v), vjp, "causal_attention")


@register
def layer_norm(x, gamma, beta, eps=1e-5):
    """y = xhat gamma + beta,  xhat = (x - mu) r,  r = 1 / sqrt(var + eps), over the last axis (C features).

    Derivation, per row, with mu = mean(x), var = mean((x - mu)^2):
        dgamma = sum_rows dy xhat,   dbeta = sum_rows dy,   g = dy gamma = dL/dxhat
        dxhat_j/dx_i = r ([i = j] - 1/C) - xhat_j r xhat_i / C     (d mu/dx_i = 1/C,
                                                                    d r/dx_i = -r^3 (x_i - mu) / C)
        dx_i = sum_j g_j dxhat_j/dx_i = r (g_i - mean(g) - xhat_i mean(g xhat))
    """
    from tinyar.kernels.attention import implementation
    _require_float("layer_norm", x, gamma, beta)
    C = x.shape[-1]
    if gamma.shape != (C,) or beta.shape != (C,):
        raise ValueError(f"layer_norm: x {x.shape} needs gamma and beta of shape ({C},), "
                         f"got {gamma.shape} and {beta.shape}")
    xr = _rows(x.data, 1)                                     # (N, C), a view when x is contiguous
    y, mu, r = implementation("layer_norm_forward")(xr, gamma.data, beta.data, eps)   # (N, C), (N, 1), (N, 1)

    def vjp(dy):                                              # xhat = (x - mu) r is recomputed, not kept
        dx, dgamma, dbeta = implementation("layer_norm_backward")(_rows(dy, 1), xr, mu, r, gamma.data)
        return dx.reshape(x.shape), dgamma, dbeta
    return Tensor._make(y.reshape(x.shape), (x, gamma, beta), vjp, "layer_norm")


@register
def gelu(x):
    """y = 0.5 x (1 + t),  t = tanh(u),  u = sqrt(2/pi) (x + 0.044715 x^3): functional.gelu in one op.

    With t saved from the forward:
        dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    VJP: dx = dy * dy/dx. (Three arrays instead of the composite's ~20.)
    """
    from tinyar.kernels.attention import implementation
    _require_float("gelu", x)
    xd = np.ascontiguousarray(x.data).reshape(-1)   # flat (0-d inputs too)
    y, t = implementation("gelu_forward")(xd)  # y = 0.5 x (1 + t), t = tanh(u) (kernels/attention.py)

    def vjp(dy):                               # dy * dy/dx in one pass
        dx = implementation("gelu_backward")(xd, t, np.ascontiguousarray(dy).reshape(-1))
        return (dx.reshape(x.shape),)
    return Tensor._make(y.reshape(x.shape), (x,), vjp, "gelu")


# ==== embedding ====
@register
def embedding(weight, ids):
    """y[p] = W[ids[p]]: the rows of a table W (n, C) picked by integer ids of any shape -> (*ids.shape, C).

    The same function as getitem(W, ids). VJP: a scatter-add of rows,
        dW[r] = sum over the positions p with ids[p] = r of dy[p]
    (a row picked k times receives k gradients), done by a loop (kernels/attention.py)
    instead of getitem's slower np.add.at. The ids get no gradient.
    """
    from tinyar.kernels import embedding as embedding_kernels
    weight, ids = as_tensor(weight), np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    _require_float("embedding", weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: expected a table W of shape (n, C), got {weight.shape}")
    n, C = weight.shape
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: expected integer ids, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):        # the kernel does not check bounds
        raise IndexError(f"embedding: ids must lie in 0..{n - 1}, got values in {ids.min()}..{ids.max()}")
    y = weight.data[ids]                                      # (*ids.shape, C)

    def vjp(dy):
        dW = embedding_kernels.choose("embedding_backward")(ids.reshape(-1), np.ascontiguousarray(dy).reshape(-1, C), n)
        return (dW,)                                          # (n, C)
    return Tensor._make(y, (weight,), vjp, "embedding")


# ==== linear ====
@register
def linear(x, weight, bias=None):
    """y = x W^T + b for x (N, in), W (out, in), b (out,): nn.Linear's two ops in one.

    The same function as matmul(x, transpose(W)) + b, with the bias added in place
    to the fresh product (the composite writes a second (N, out) array: one more
    pass over cold memory, which costs as much as the add itself).
        VJP: dx = dy W,   dW = dy^T x,   db = sum_rows dy
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: expected x (N, in) and W (out, in), got x {x.shape} and W {weight.shape}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear: W {weight.shape} needs a bias of shape ({weight.shape[0]},), got {bias.shape}")
    _require_float("linear", x, weight, *([] if bias is None else [bias]))
    y = x.data @ weight.data.T                                # (N, out)
    if bias is not None:
        if np.result_type(y, bias.data) == y.dtype:
            y += bias.data                                    # in place: y is this op's own array
        else:
            y = y + bias.data                                 # a wider bias widens y, as NumPy would

    def vjp(dy):
        dx = dy @ weight.data if x.requires_grad else None    # (N, in)
        dW = dy.T @ x.data if weight.requires_grad else None   # (out, in)
        if bias is None:
            return dx, dW
        db = np.ones(dy.shape[0], dtype=dy.dtype) @ dy        # (out,)  sum_rows dy, as a BLAS product
        return dx, dW, db                                     # (2-4x faster than dy.sum(axis=0) here)
    return Tensor._make(y, (x, weight) if bias is None else (x, weight, bias), vjp, "linear")
