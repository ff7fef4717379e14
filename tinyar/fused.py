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

from tinyar.ops import as_tensor, register, stable_sigmoid, stable_softplus
from tinyar.tensor import Tensor


def _require_float(op, *tensors):
    """A fused op computes in its inputs' float dtype: integer inputs get a clear error."""
    for t in tensors:
        if t.dtype.kind != "f":
            raise TypeError(f"{op}: expected float32 or float64 tensors, got {t.dtype}")


# ==== fused: Bernoulli log-probability (NumPy alone: no kernel) ====
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

    VJP, one reverse sweep i = D, ..., 1 with g = dL/dout[:, o_i] and G = dL/da_{i+1} (G = 0 at i = D):
        dW[o_i] += x[:, o_i]^T G,   a_i = a_{i+1} - W[o_i]^T x[:, o_i],   h_i = sigmoid(a_i)
        dV[o_i] += g^T h_i,   db[o_i] += sum_n g,   G <- G + (g V[o_i]) * h_i * (1 - h_i)
        dc = sum_n G   (now dL/da_1)
    (derivation in kernels/nade.py); the forward keeps only a_{D+1} (B, H) for it.
    """
    from tinyar.kernels import nade as nade_kernels

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
    forward, backward = nade_kernels.choose("nade")      # nade_forward_numpy / _numba and their backward
    out, a_last = forward(x, order, *arrays)             # (B, D, P), (B, H)

    def vjp(dout):                                       # dW, dc, dV, db
        return backward(x, order, *arrays, a_last, np.ascontiguousarray(dout, dtype=dtype))
    return Tensor._make(out, (W, c, V, b), vjp, "nade")


# ==== fused: masked matmul (kernels/masked.py) ====
@register
def masked_matmul(x, W, M, b=None, structure=None, kernel="auto"):
    """y = x (W * M)^T + b, with a constant 0/1 mask M of W's shape (MADE's layers).

    x (B, n_in), W (n_out, n_in), M (n_out, n_in), b (n_out,) or None -> y (B, n_out).
        VJP: dx = dy (W*M),   dW = (dy^T x) * M,   db = sum_b dy
    (derivation in kernels/masked.py). M gets no gradient. `structure`: which rows and columns
    M connects, kernels.masked.mask_layout(M), which a layer computes once per mask (None: here).
    `kernel`: "auto" (the measured rules of kernels.masked.choose), or force "staircase",
    "numba" or "numpy".
    """
    from tinyar.kernels import masked as masked_kernels
    x, W = as_tensor(x), as_tensor(W)
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
        raise ValueError(f"masked_matmul: need x (B, n_in) and W (n_out, n_in), got {x.shape} and {W.shape}")
    M = np.asarray(M.data if isinstance(M, Tensor) else M)
    if M.shape != W.shape:
        raise ValueError(f"masked_matmul: mask shape {M.shape} differs from weight shape {W.shape}")
    b = None if b is None else as_tensor(b)
    if b is not None and b.shape != (W.shape[0],):
        raise ValueError(f"masked_matmul: bias must have shape ({W.shape[0]},), got {b.shape}")
    dtype = W.dtype
    M = np.ascontiguousarray(M, dtype=dtype)
    xd, Wd = np.ascontiguousarray(x.data, dtype=dtype), np.ascontiguousarray(W.data)
    bd = np.zeros(W.shape[0], dtype) if b is None else np.ascontiguousarray(b.data, dtype=dtype)
    forward, backward = masked_kernels.choose("masked_matmul", xd, M, structure, kernel, need_dx=x.requires_grad)
    y = forward(xd, Wd, M, bd)                                               # (B, n_out)

    def vjp(dy):                                       # reads W now, as every VJP here reads its inputs
        dy = np.ascontiguousarray(dy, dtype=dtype)
        dx, dW = backward(dy, xd, Wd, M, x.requires_grad, W.requires_grad)   # (B, n_in), (n_out, n_in)
        db = dy.sum(axis=0) if b is not None and b.requires_grad else None   # (n_out,)
        return (dx, dW) if b is None else (dx, dW, db)
    return Tensor._make(y, (x, W) if b is None else (x, W, b), vjp, "masked_matmul")


# ==== fused: RNN (kernels/rnn.py) ====
def _check_elman_inputs(x, W_xh, W_hh, b, h0, dense):
    """elman_rnn's checks, naming the shapes that disagree; returns x time-major, (T, B, D)
    vectors or (T, B) int64 ids, and h0 as a (B, H) Tensor (zeros for None)."""
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
        x_tm = np.ascontiguousarray(x.data.transpose(1, 0, 2))             # (T, B, D)
    else:
        ids = np.asarray(x.data if isinstance(x, Tensor) else x)
        V = W_xh.shape[1]
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"elman_rnn: ids must be a (B, T) integer array, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(f"elman_rnn: ids must lie in 0..{V - 1} (W_xh has {V} columns), "
                             f"got values in {ids.min()}..{ids.max()}")
        x_tm = np.ascontiguousarray(ids.T, dtype=np.int64)                  # (T, B)
    T, B = x_tm.shape[:2]
    if T == 0:
        raise ValueError("elman_rnn: the sequence is empty (T = 0)")
    if h0 is None:
        h0 = Tensor(np.zeros((B, H), dtype))
    if h0.shape != (B, H) or h0.dtype != dtype:
        raise ValueError(f"elman_rnn: h0 must be ({B}, {H}) {dtype}, got {h0.shape} {h0.dtype}")
    return x_tm, h0


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
    dx_t = da_t W_xh (vectors).
    """
    from tinyar.kernels import embedding as embedding_kernels, rnn as rnn_kernels
    dense = isinstance(x, Tensor) and x.dtype.kind == "f"
    x_tm, h0 = _check_elman_inputs(x, W_xh, W_hh, b, h0, dense)           # (T, B, D) vectors or (T, B) ids
    T, B = x_tm.shape[:2]
    H, dtype = W_hh.shape[0], W_hh.dtype
    forward, backward = rnn_kernels.choose("elman")                                   # the twins under TINYAR_KERNELS=numpy

    if dense:
        u = x_tm @ W_xh.data.T + b.data                                     # (T, B, H)  W_xh x_t + b
    else:
        u = np.ascontiguousarray(W_xh.data.T)[x_tm] + b.data                # (T, B, H)  column x_t of W_xh, + b
    h = forward(np.ascontiguousarray(u, dtype=dtype), np.ascontiguousarray(W_hh.data), np.ascontiguousarray(h0.data))

    def vjp(dy):
        dh_out = np.ascontiguousarray(dy.transpose(1, 0, 2), dtype=dtype)  # (T, B, H)
        da, dW_hh, db, dh0 = backward(np.ascontiguousarray(W_hh.data), np.ascontiguousarray(h0.data), h, dh_out)
        if dense:
            D = x.shape[2]
            dW_xh = da.reshape(T * B, H).T @ x_tm.reshape(T * B, D)        # (H, D)  sum_t da_t^T x_t
            dx = (da @ W_xh.data).transpose(1, 0, 2)                        # (B, T, D)  da_t W_xh
            return dx, dW_xh, dW_hh, db, dh0
        scatter = embedding_kernels.choose("embedding_backward")           # dW_xh[:, k] = sum of da_t[b] with x_t[b] = k
        dW_xhT = scatter(x_tm.reshape(-1), da.reshape(T * B, H), W_xh.shape[1])    # (V, H)
        return np.ascontiguousarray(dW_xhT.T), dW_hh, db, dh0

    parents = (x, W_xh, W_hh, b, h0) if dense else (W_xh, W_hh, b, h0)
    return Tensor._make(h.transpose(1, 0, 2), parents, vjp, "elman_rnn")    # (B, T, H)


# ==== fused: convolution (kernels/conv.py) ====
@register
def conv2d(x, w, b=None, taps=None):
    """y = conv(x, w) + b: 2-D cross-correlation, stride 1, "same" padding, odd kernel sizes, NCHW.

    x (B, C, H, W), w (O, C, kh, kw), b (O,) or None  ->  y (B, O, H, W)
        y[b,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x_pad[b,c,i+u,j+v]     (x_pad: x with kh//2, kw//2 zero borders)
    VJP: db[o]       = sum_{b,i,j} dy[b,o,i,j]
         dw[o,c,u,v] = sum_{b,i,j} dy[b,o,i,j] x_pad[b,c,i+u,j+v]
         dx          = conv(dy, w flipped in both spatial axes, in/out channels swapped)
    taps: None, or a boolean (kh, kw) array of the kernel taps in use: the op is then
    conv(x, w * taps) + b, so dw is zero at the other taps; a masked convolution
    (nn.MaskedConv2d) passes its mask.
    (The derivation, the textbook im2col reference and the shift-and-GEMM twin: kernels/conv.py.)
    """
    from tinyar.kernels import conv as conv_kernels
    x, w = as_tensor(x), as_tensor(w)
    b = None if b is None else as_tensor(b)
    conv_kernels.check_shapes(x.data, w.data, None if b is None else b.data, taps)
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype):
        raise TypeError(f"conv2d: input, weight and bias must share a float dtype, got {x.dtype}, {w.dtype}"
                        + ("" if b is None else f", {b.dtype}"))
    taps = None if taps is None else np.asarray(taps, dtype=bool)
    if taps is not None and taps.all():
        taps = None                                                     # every tap: the plain convolution
    forward, backward = conv_kernels.choose("conv2d")                              # the twins under TINYAR_KERNELS=numpy
    bias = np.zeros(w.shape[0], dtype=w.dtype) if b is None else b.data
    y = forward(np.ascontiguousarray(x.data), np.ascontiguousarray(w.data), bias, taps)

    def vjp(dy):
        dx, dw, db = backward(np.ascontiguousarray(x.data), np.ascontiguousarray(w.data), np.ascontiguousarray(dy),
                              need_dx=x.requires_grad, taps=taps)          # no dx for input images
        return (dx, dw) if b is None else (dx, dw, db)
    return Tensor._make(y, (x, w) if b is None else (x, w, b), vjp, "conv2d")


# ==== fused: attention, LayerNorm, GELU (kernels/attention.py) ====
# The Transformer's ops (models/transformer.py): each is one forward and one VJP in place of a
# dozen primitive ops; the model's `fused=False` builds the same functions from primitives.
def _rows(a, n_last):
    """a as a C-contiguous array of shape (N, *last n_last axes) (a view when it can be)."""
    return np.ascontiguousarray(a).reshape((-1,) + a.shape[a.ndim - n_last:])


@register
def causal_attention(q, k, v):
    """y = softmax(q k^T / sqrt(d) + M) v, M = -inf above the causal diagonal (0 elsewhere).

    q: (..., Tq, d); k, v: (..., Tk, d), Tq <= Tk (query i sits at position
    i + Tk - Tq: Tq = Tk in training, Tq < Tk with a key/value cache).

    Derivation, per batch and head, with S = q k^T / sqrt(d) + M, P = softmax(S), y = P v:
        dv = P^T dy                                   y = P v is linear in v
        dP = dy v^T                                   and in P
        dS_ij = P_ij (dP_ij - sum_l P_il dP_il)       softmax's backward (derived in kernels/attention.py)
        dq = dS k / sqrt(d),   dk = dS^T q / sqrt(d)  S is bilinear in q and k
    Masked entries have P_ij = 0, hence dS_ij = 0: no gradient crosses the mask.
    Besides q / sqrt(d), k and v the forward keeps only L_i = log sum_j exp(S_ij), one number
    per row, and the VJP recomputes P_ij = exp(S_ij - L_i): no (Tq, Tk) array lives between
    the two passes.
    """
    from tinyar.kernels.attention import choose
    _require_float("causal_attention", q, k, v)
    if min(q.ndim, k.ndim, v.ndim) < 2:
        raise ValueError(f"causal_attention: expected q (..., Tq, d) and k, v (..., Tk, d), "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    Tq, Tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    if k.shape != v.shape or q.shape[:-2] != k.shape[:-2] or k.shape[-1] != d or Tq > Tk:
        raise ValueError(f"causal_attention: expected q (..., Tq, d) and k, v (..., Tk, d) with Tq <= Tk, "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    forward, backward = choose("causal_attention")            # the twins under TINYAR_KERNELS=numpy
    scale = float(1.0 / np.sqrt(d))                           # a Python float: float32 stays float32
    qs = _rows(q.data, 2) * scale                             # (N, Tq, d)   q / sqrt(d), N = batch x heads
    kr, vr = _rows(k.data, 2), _rows(v.data, 2)               # (N, Tk, d)
    y, L = forward(qs, kr, vr)                                # y (N, Tq, d); L (N, Tq): log of each row's sum

    def vjp(dy):
        dqs, dk, dv = backward(qs, kr, vr, L, _rows(dy, 2))  # P recomputed from L: P_ij = exp(S_ij - L_i)
        dqs *= scale                                          # dq = dS k / sqrt(d)
        return dqs.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)
    return Tensor._make(y.reshape(q.shape), (q, k, v), vjp, "causal_attention")


@register
def layer_norm(x, gamma, beta, eps=1e-5):
    """y = xhat gamma + beta,  xhat = (x - mu) r,  r = 1 / sqrt(var + eps), over the last axis (C features).

    x (..., C), gamma (C,), beta (C,) -> y (..., C); mu and var are each row's mean and variance.
        VJP: dx = r (g - mean(g) - xhat mean(g xhat)) with g = dy gamma,
             dgamma = sum_rows dy xhat,   dbeta = sum_rows dy
    (derivation in kernels/attention.py). The forward keeps mu and r; the VJP recomputes xhat.
    """
    from tinyar.kernels.attention import choose
    _require_float("layer_norm", x, gamma, beta)
    C = x.shape[-1]
    if gamma.shape != (C,) or beta.shape != (C,):
        raise ValueError(f"layer_norm: x {x.shape} needs gamma and beta of shape ({C},), "
                         f"got {gamma.shape} and {beta.shape}")
    forward, backward = choose("layer_norm")
    xr = _rows(x.data, 1)                                     # (N, C), a view when x is contiguous
    y, mu, r = forward(xr, gamma.data, beta.data, eps)        # (N, C), (N, 1), (N, 1)

    def vjp(dy):
        dx, dgamma, dbeta = backward(_rows(dy, 1), xr, mu, r, gamma.data)   # (N, C), (C,), (C,)
        return dx.reshape(x.shape), dgamma, dbeta
    return Tensor._make(y.reshape(x.shape), (x, gamma, beta), vjp, "layer_norm")


@register
def gelu(x):
    """y = 0.5 x (1 + t),  t = tanh(u),  u = sqrt(2/pi) (x + 0.044715 x^3): functional.gelu as one op.

        VJP: dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) du/dx),   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    with t saved by the forward (derivation in kernels/attention.py).
    """
    from tinyar.kernels.attention import choose
    _require_float("gelu", x)
    forward, backward = choose("gelu")
    xd = np.ascontiguousarray(x.data).reshape(-1)             # flat (0-d inputs too)
    y, t = forward(xd)                                        # y = 0.5 x (1 + t), t = tanh(u)

    def vjp(dy):
        dx = backward(xd, t, np.ascontiguousarray(dy).reshape(-1))   # dy * dy/dx
        return (dx.reshape(x.shape),)
    return Tensor._make(y.reshape(x.shape), (x,), vjp, "gelu")


# ==== embedding ====
@register
def embedding(weight, ids):
    """y[p] = W[ids[p]]: the rows of a table W (n, C) picked by integer ids of any shape -> (*ids.shape, C).

    The same function as getitem(W, ids), with its own VJP, a scatter-add of rows
    (kernels/embedding.py):
        dW[r] = sum over the positions p with ids[p] = r of dy[p]
    (a row picked k times receives k gradients). The ids get no gradient.
    """
    from tinyar.kernels.embedding import choose
    weight, ids = as_tensor(weight), np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    _require_float("embedding", weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: expected a table W of shape (n, C), got {weight.shape}")
    n, C = weight.shape
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: expected integer ids, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):        # the kernel does not check bounds
        raise IndexError(f"embedding: ids must lie in 0..{n - 1}, got values in {ids.min()}..{ids.max()}")
    scatter_add = choose("embedding_backward")
    y = weight.data[ids]                                      # (*ids.shape, C)

    def vjp(dy):
        dW = scatter_add(ids.reshape(-1), np.ascontiguousarray(dy).reshape(-1, C), n)
        return (dW,)                                          # (n, C)
    return Tensor._make(y, (weight,), vjp, "embedding")


# ==== linear ====
@register
def linear(x, weight, bias=None):
    """y = x W^T + b for x (N, in), W (out, in), b (out,): nn.Linear's two ops in one.

    The same function as matmul(x, transpose(W)) + b; as one op it adds the bias in place
    to the fresh product instead of writing a second (N, out) array (kernels/linear.py).
        VJP: dx = dy W,   dW = dy^T x,   db = sum_rows dy
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: expected x (N, in) and W (out, in), got x {x.shape} and W {weight.shape}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear: W {weight.shape} needs a bias of shape ({weight.shape[0]},), got {bias.shape}")
    _require_float("linear", x, weight, *([] if bias is None else [bias]))
    from tinyar.kernels.linear import choose
    dtype = np.result_type(x.data, weight.data)               # the product's dtype, NumPy's promotion
    xd, Wd = (np.ascontiguousarray(a, dtype=dtype) for a in (x.data, weight.data))
    n = xd.shape[0]
    y = choose("linear_forward", n, dtype)(xd, Wd, None)      # (N, out): the twins under TINYAR_KERNELS=numpy
    if bias is not None:
        if np.result_type(y, bias.data) == y.dtype:
            y += bias.data                                    # in place: y is this op's own array
        else:
            y = y + bias.data                                 # a wider bias widens y, as NumPy would

    def vjp(dy):
        backward = choose("linear_backward", n, dtype)
        dx, dW = backward(dy.astype(dtype, copy=False), xd, Wd, need_dx=x.requires_grad, need_dW=weight.requires_grad)
        if bias is None:
            return dx, dW
        return dx, dW, dy.sum(axis=0)                         # db (out,) = sum_rows dy
    return Tensor._make(y, (x, weight) if bias is None else (x, weight, bias), vjp, "linear")
