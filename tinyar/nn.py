"""Modules, parameters and layers.

A Module is any object whose attributes (directly, or inside lists, tuples and
dicts) hold Parameters or other Modules; `parameters()` finds them all by
walking those attributes, so a layer only has to assign them.
"""
from __future__ import annotations

import numpy as np

from tinyar import fused, functional as F
from tinyar import ops
from tinyar.rng import as_rng
from tinyar.tensor import Tensor, is_grad_enabled


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    def __init__(self, data, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(np.array(data, dtype=dtype), requires_grad=True)     # a copy: the Parameter owns it


class Module:
    """Base class: `forward` computes, `__call__` calls it; parameters are found recursively."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        """Layers define this; models need not (they are used through log_prob and sample)."""
        raise TypeError(f"{type(self).__name__} cannot be called: it defines no forward() "
                        "(a model is used through log_prob(x) and sample(n))")

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs in attribute order, each Parameter once."""
        seen = set()
        for name, p in _walk(self, prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def n_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def state_dict(self):
        """{name: copy of the array} for every parameter."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters; every name must be present with the right shape."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"load_state_dict: {type(self).__name__} is missing {missing or 'nothing'}; "
                           f"unexpected keys {unexpected or 'none'}")
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: parameter '{name}' has shape {p.shape}, "
                                 f"the state has {value.shape}")
            p.data[...] = value

    def astype(self, dtype):
        """Convert every parameter to `dtype` in place (e.g. np.float64 for gradcheck); returns self."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self


def _walk(obj, prefix):
    """Depth-first (name, Parameter) pairs below a Module, through lists, tuples and dicts."""
    items = vars(obj).items() if isinstance(obj, Module) else \
        obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, Parameter):
            yield name, value
        elif isinstance(value, (Module, list, tuple, dict)):
            yield from _walk(value, name + ".")


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features).

    W ~ U(-1/sqrt(in), 1/sqrt(in)) (as in PyTorch), b = 0.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)), dtype=dtype)
        self.bias = Parameter(np.zeros(out_features), dtype=dtype) if bias else None

    def forward(self, x):
        x = ops.as_tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"Linear: expected inputs with {self.weight.shape[1]} features in the last axis, "
                             f"got shape {x.shape}")
        # (..., in) as one (N, in) matrix: one BLAS product instead of a batch of small ones
        x2 = x if x.ndim == 2 else ops.reshape(x, (-1, x.shape[-1]))     # (N, in)
        y = ops.matmul(x2, ops.transpose(self.weight))                    # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y if x.ndim == 2 else ops.reshape(y, x.shape[:-1] + (self.weight.shape[0],))   # (..., out)


# ==== MaskedLinear (MADE) ====
class MaskedLinear(Linear):
    """y = x (W * M)^T + b: a Linear layer whose weights are switched off where M = 0.

    M (out_features, in_features) holds 0 or 1 and is not a parameter: set it with
    set_mask (MADE swaps masks between minibatches). The layer computes the mask's
    structure (kernels.masked.mask_layout) once per set_mask, and the fused op
    fused.masked_matmul does the rest. Until a mask is set, every weight is connected.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__(in_features, out_features, bias=bias, rng=rng, dtype=dtype)
        self.set_mask(np.ones((out_features, in_features)))

    def set_mask(self, mask):
        from tinyar.kernels.masked import mask_layout
        mask = np.asarray(mask)
        if mask.shape != self.weight.shape:
            raise ValueError(f"MaskedLinear: mask of shape {mask.shape}, expected {self.weight.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("MaskedLinear: the mask must hold only 0 and 1")
        self.mask = np.ascontiguousarray(mask, dtype=self.weight.dtype)
        self.structure = mask_layout(self.mask)

    def astype(self, dtype):
        super().astype(dtype)
        self.mask = self.mask.astype(dtype)
        return self

    def forward(self, x):
        if x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"MaskedLinear: expected inputs with {self.weight.shape[1]} features in the last axis, "
                             f"got shape {x.shape}")
        return fused.masked_matmul(x, self.weight, self.mask, self.bias, structure=self.structure)  # (B, out)



# ==== Embedding, LayerNorm, CausalSelfAttention, MLP, Block (Transformer) ====


class Embedding(Module):
    """y[b, t] = W[ids[b, t]]: a lookup table W of shape (num_embeddings, dim).

    Looking up a row is indexing, W[ids], here as the op fused.embedding (the same
    function as getitem, with a faster VJP). Its VJP scatter-adds: a token that
    occurs n times in the batch receives the sum of its n gradients.
    W ~ N(0, 0.02^2), as in GPT-2.
    """

    def __init__(self, num_embeddings, dim, std=0.02, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.weight = Parameter(rng.normal(0.0, std, (num_embeddings, dim)), dtype=dtype)

    def forward(self, ids):
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        n = self.weight.shape[0]
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding: expected integer ids, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise IndexError(f"Embedding: ids must lie in 0..{n - 1}, got values in {ids.min()}..{ids.max()}")
        return fused.embedding(self.weight, ids)                  # (*ids.shape, dim)


class LayerNorm(Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta, over the last axis.

    gamma = 1, beta = 0 at the start. `fused=True` calls fused.layer_norm (one op
    with a hand-written VJP, gradchecked in checks.py); `fused=False` builds the
    same function from primitives, for reading and for checking the fused op.
    """

    def __init__(self, dim, eps=1e-5, fused=True, dtype=np.float32):
        self.gamma = Parameter(np.ones(dim), dtype=dtype)
        self.beta = Parameter(np.zeros(dim), dtype=dtype)
        self.eps = eps
        self.fused = fused

    def forward(self, x):
        if x.shape[-1] != self.gamma.shape[0]:
            raise ValueError(f"LayerNorm: expected {self.gamma.shape[0]} features in the last axis, got {x.shape}")
        if self.fused:
            return fused.layer_norm(x, self.gamma, self.beta, self.eps)
        mu = ops.mean(x, axis=-1, keepdims=True)                  # (..., 1)
        xc = x - mu                                               # (..., C)
        var = ops.mean(xc * xc, axis=-1, keepdims=True)           # (..., 1)
        return xc / ops.sqrt(var + self.eps) * self.gamma + self.beta


def causal_attention_composite(q, k, v):
    """softmax(q k^T / sqrt(d) + causal mask) v from primitives (no hand-written derivative).

    q: (B, H, Tq, d), k and v: (B, H, Tk, d) with Tq <= Tk; query i sits at
    position i + Tk - Tq and sees keys j <= i + Tk - Tq. The same function as
    fused.causal_attention, which has a hand-written VJP; tests compare the two.
    """
    Tq, Tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / np.sqrt(d))   # (B, H, Tq, Tk)
    future = np.arange(Tk)[None, :] > np.arange(Tq)[:, None] + (Tk - Tq)         # (Tq, Tk) True above the diagonal
    scores = ops.where(future, -np.inf, scores)                                  # (B, H, Tq, Tk)
    P = F.softmax(scores, axis=-1)                                               # (B, H, Tq, Tk)
    return ops.matmul(P, v)                                                      # (B, H, Tq, d)


def _linear(layer, x, use_fused):
    """layer(x) for a Linear layer and x (N, in): with fused=True as the one op fused.linear
    (bias added in place), else as Linear's matmul and add. Same numbers."""
    return fused.linear(x, layer.weight, layer.bias) if use_fused else layer(x)


def _check_sequence_batch(x, d_model, layer):
    """Attention layers take x of shape (B, T, d_model): say so, instead of failing inside."""
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{layer}: expected input of shape (batch, time, {d_model}), got {x.shape}")


class CausalSelfAttention(Module):
    """Multi-head self-attention in which position t attends only to positions s <= t.

    For each head h, with d = d_model / n_heads:
        q = x Wq_h, k = x Wk_h, v = x Wv_h                    (B, T, d) each
        S = q k^T / sqrt(d),  S_ts = -inf for s > t            (B, T, T)
        P = softmax(S) over s (row t sums to 1 over s <= t)
        y_h = P v                                              (B, T, d)
    and y = concat_h(y_h) Wo + bo. The mask, T = 4 (1 = may attend; 0 = -inf):

        query t \\ key s   0 1 2 3
              0           1 0 0 0
              1           1 1 0 0
              2           1 1 1 0
              3           1 1 1 1

    All heads and all positions are computed at once with batched matmuls
    (no Python loop over T or over heads): O(T^2 d_model) per sequence.

    Key/value cache (sampling): `cache` is a dict that keeps k and v of the
    positions seen so far. Given only the new positions x (B, n, C), the layer
    appends their k and v and lets the new queries attend to all cached keys:
    O(T d_model) per new token instead of O(T^2 d_model) for a recomputation.
    The cache builds no graph: it is refused unless gradients are off (no_grad).
    """

    def __init__(self, d_model, n_heads, fused=True, rng=None, dtype=np.float32):
        if d_model % n_heads:
            raise ValueError(f"CausalSelfAttention: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        rng = as_rng(rng)
        self.d_model = d_model
        self.n_heads = n_heads
        self.query = Linear(d_model, d_model, rng=rng, dtype=dtype)    # all heads' Wq side by side
        self.key = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.value = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.proj = Linear(d_model, d_model, rng=rng, dtype=dtype)     # Wo
        self.fused = fused

    def _heads(self, x):
        """q, k, v of x (B, T, C), each (B, H, T, d)."""
        B, T, C = x.shape
        H = self.n_heads
        x2 = ops.reshape(x, (B * T, C))                           # (B T, C)
        split = []
        for layer in (self.query, self.key, self.value):
            a = ops.reshape(_linear(layer, x2, self.fused), (B, T, H, C // H))   # (B, T, H, d)
            split.append(ops.transpose(a, (0, 2, 1, 3)))          # (B, H, T, d)
        return split

    def forward(self, x, cache=None):
        _check_sequence_batch(x, self.d_model, "CausalSelfAttention")
        B, T, C = x.shape
        q, k, v = self._heads(x)                                  # (B, H, T, d)
        if cache is not None:                                     # prepend the cached positions (no graph)
            if is_grad_enabled():
                raise RuntimeError("CausalSelfAttention: the key/value cache holds plain arrays, so no gradient "
                                   "would reach the cached positions; use the cache under tensor.no_grad() "
                                   "(sampling), or call without cache to train")
            if "k" in cache:
                k = Tensor(np.concatenate([cache["k"], k.data], axis=2))   # (B, H, Tk, d)
                v = Tensor(np.concatenate([cache["v"], v.data], axis=2))   # (B, H, Tk, d)
            cache["k"], cache["v"] = k.data, v.data
        attend = fused.causal_attention if self.fused else causal_attention_composite
        y = attend(q, k, v)                                       # (B, H, T, d)
        y = ops.transpose(y, (0, 2, 1, 3))                        # (B, T, H, d)
        y = ops.reshape(y, (B * T, C))                            # (B T, C)
        return ops.reshape(_linear(self.proj, y, self.fused), (B, T, C))   # (B, T, C)

    def weights(self, x):
        """The attention probabilities P of every head, as an array (B, H, T, T) (no graph)."""
        q, k, _ = self._heads(x)
        d = q.shape[-1]
        S = q.data @ np.swapaxes(k.data, -1, -2) / np.sqrt(d)    # (B, H, T, T)
        T = S.shape[-1]
        S = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, S)
        S = np.exp(S - S.max(axis=-1, keepdims=True))
        return S / S.sum(axis=-1, keepdims=True)


class MLP(Module):
    """y = GELU(x W1^T + b1) W2^T + b2, applied to each position on its own.

    GELU(a) = a Phi(a) in its tanh form (functional.gelu); `fused=True` uses
    fused.gelu, the same function as one op with a hand-written VJP, and fused.linear
    for the two layers.
    """

    def __init__(self, d_model, d_hidden, fused=True, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.fc1 = Linear(d_model, d_hidden, rng=rng, dtype=dtype)
        self.fc2 = Linear(d_hidden, d_model, rng=rng, dtype=dtype)
        self.fused = fused

    def forward(self, x):
        if not self.fused:
            return self.fc2(F.gelu(self.fc1(x)))                  # (..., d_model)
        x2 = x if x.ndim == 2 else ops.reshape(x, (-1, x.shape[-1]))                  # (N, d_model)
        y = _linear(self.fc2, fused.gelu(_linear(self.fc1, x2, True)), True)          # (N, d_model)
        return y if x.ndim == 2 else ops.reshape(y, x.shape)                          # (..., d_model)


class Block(Module):
    """A pre-LayerNorm residual block:  x <- x + attn(LN1(x));  x <- x + MLP(LN2(x)).

    The residual stream x is never normalised itself, so the gradient reaches
    the embeddings along an identity path through every block.
    """

    def __init__(self, d_model, n_heads, d_mlp, fused=True, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.ln1 = LayerNorm(d_model, fused=fused, dtype=dtype)
        self.attn = CausalSelfAttention(d_model, n_heads, fused=fused, rng=rng, dtype=dtype)
        self.ln2 = LayerNorm(d_model, fused=fused, dtype=dtype)
        self.mlp = MLP(d_model, d_mlp, fused=fused, rng=rng, dtype=dtype)

    def forward(self, x, cache=None):
        _check_sequence_batch(x, self.attn.d_model, "Block")
        B, T, C = x.shape
        x = x + self.attn(self.ln1(x), cache=cache)               # (B, T, C)
        h = self.ln2(ops.reshape(x, (B * T, C)))                  # (B T, C)
        return x + ops.reshape(self.mlp(h), (B, T, C))            # (B, T, C)


# ==== recurrent cells (RNN) ====
def _input_term(W, x_t):
    """W x_t for one time step: column x_t of W for integer ids (B,), or x_t @ W^T for a Tensor (B, D)."""
    if isinstance(x_t, Tensor) and x_t.dtype.kind == "f":
        return ops.matmul(x_t, ops.transpose(W))                        # (B, rows of W)
    ids = np.asarray(x_t.data if isinstance(x_t, Tensor) else x_t)
    return ops.getitem(ops.transpose(W), ids)                           # (B, rows of W): an embedding lookup


def _sequence_steps(x):
    """The T time steps of a (B, T) id array or a (B, T, D) Tensor, each as (B,) or (B, D)."""
    if isinstance(x, Tensor) and x.dtype.kind == "f":
        return [ops.getitem(x, (slice(None), t)) for t in range(x.shape[1])]
    ids = np.asarray(x.data if isinstance(x, Tensor) else x)
    return [ids[:, t] for t in range(ids.shape[1])]


class ElmanRNN(Module):
    """The tanh RNN h_t = tanh(W_xh x_t + W_hh h_{t-1} + b) over a whole sequence, as one fused op.

    n_inputs: the vocabulary size V when inputs are ids (x_t picks column x_t of
    W_xh), or the width D of dense input vectors. forward(x, h0) runs all T steps
    in the numba kernel (fused.elman_rnn); step(x_t, h) is the same cell written with
    primitive ops, one step at a time (for sampling, and to look inside BPTT).
    Initialised as PyTorch's nn.RNN: W_xh, W_hh, b ~ U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, n_inputs, n_hidden, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        k = 1.0 / np.sqrt(n_hidden)
        self.n_inputs, self.n_hidden = n_inputs, n_hidden
        self.W_xh = Parameter(rng.uniform(-k, k, (n_hidden, n_inputs)), dtype=dtype)    # (H, V or D)
        self.W_hh = Parameter(rng.uniform(-k, k, (n_hidden, n_hidden)), dtype=dtype)    # (H, H)
        self.b = Parameter(rng.uniform(-k, k, n_hidden), dtype=dtype)                   # (H,)

    def forward(self, x, h0=None):
        """x: (B, T) ids or a (B, T, D) Tensor; h0: (B, H) Tensor or None (zeros). Returns (B, T, H)."""
        return fused.elman_rnn(x, self.W_xh, self.W_hh, self.b, h0)

    def step(self, x_t, h):
        """One step, from primitive ops: x_t (B,) ids or (B, D) Tensor, h (B, H) -> h_t (B, H)."""
        return ops.tanh(_input_term(self.W_xh, x_t) + ops.matmul(h, ops.transpose(self.W_hh)) + self.b)

    def unrolled(self, x, h0):
        """forward() written as T separate steps: a list of T Tensors h_1..h_T, each (B, H).

        2T+ graph nodes instead of one; the same numbers as forward(); use it to read
        dL/dh_t for every t (h_t.retain_grad()), as demos/rnn_gradients.py does.
        """
        hs, h = [], h0
        for x_t in _sequence_steps(x):
            h = self.step(x_t, h)
            hs.append(h)
        return hs


class LSTMCell(Module):
    """One step of a long short-term memory cell, written with primitive ops (autograd derives its BPTT).

        [i, f, g, o] = W_x x_t + W_h h_{t-1} + b              four blocks of H
        c_t = sigma(f) * c_{t-1} + sigma(i) * tanh(g)          the cell: an additive update
        h_t = sigma(o) * tanh(c_t)

    Gradients flow back along c through dc_{t-1} = dc_t * sigma(f) only, with no
    squashing and no W_hh, so with forget gates near 1 they survive many steps where
    the tanh RNN's product of (1 - h^2) W_hh factors shrinks them. The forget bias
    starts at 1 (gates open), the other weights ~ U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, n_inputs, n_hidden, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        k = 1.0 / np.sqrt(n_hidden)
        H = n_hidden
        self.n_inputs, self.n_hidden = n_inputs, n_hidden
        self.W_x = Parameter(rng.uniform(-k, k, (4 * H, n_inputs)), dtype=dtype)    # (4H, V or D)
        self.W_h = Parameter(rng.uniform(-k, k, (4 * H, H)), dtype=dtype)           # (4H, H)
        b = rng.uniform(-k, k, 4 * H)
        b[H:2 * H] = 1.0                                                           # forget gate open
        self.b = Parameter(b, dtype=dtype)

    def forward(self, x_t, state):
        """x_t: (B,) ids or (B, D) Tensor; state: (h, c), each (B, H). Returns the new (h, c)."""
        h, c = state
        H = self.n_hidden
        z = _input_term(self.W_x, x_t) + ops.matmul(h, ops.transpose(self.W_h)) + self.b   # (B, 4H)
        i = ops.sigmoid(z[:, 0:H])
        f = ops.sigmoid(z[:, H:2 * H])
        g = ops.tanh(z[:, 2 * H:3 * H])
        o = ops.sigmoid(z[:, 3 * H:4 * H])
        c = f * c + i * g                                                          # (B, H)
        return o * ops.tanh(c), c

    def initial_state(self, batch_size):
        zeros = np.zeros((batch_size, self.n_hidden), self.W_h.dtype)
        return Tensor(zeros), Tensor(zeros.copy())

    def unrolled(self, x, state=None):
        """The cell over a (B, T) id array or (B, T, D) Tensor: a list of T Tensors h_1..h_T."""
        steps = _sequence_steps(x)
        state = self.initial_state(len(np.asarray(x.data if isinstance(x, Tensor) else x))) \
            if state is None else state
        hs = []
        for x_t in steps:
            state = self(x_t, state)
            hs.append(state[0])
        return hs



# ==== MaskedConv2d (PixelCNN) ====
def conv_mask(kh, kw, mask_type):
    """The 0/1 mask of a kh x kw kernel (both odd) that keeps a convolution causal in raster order.

    "A": taps above the centre row, and those left of the centre on its row (centre excluded);
    "B": the same, centre included;  "vertical": every tap on or above the centre row (the
    vertical stack of the gated PixelCNN, whose output is shifted down one row before use);
    None: no mask (all ones). For 5x5 and for a 1x5 kernel (the gated horizontal stack):

        mask A        mask B        vertical      1x5 A          1x5 B
        1 1 1 1 1     1 1 1 1 1     1 1 1 1 1     1 1 0 0 0      1 1 1 0 0
        1 1 1 1 1     1 1 1 1 1     1 1 1 1 1
        1 1 0 0 0     1 1 1 0 0     1 1 1 1 1
        0 0 0 0 0     0 0 0 0 0     0 0 0 0 0
        0 0 0 0 0     0 0 0 0 0     0 0 0 0 0
    """
    if mask_type not in ("A", "B", "vertical", None):
        raise ValueError(f"conv_mask: mask_type must be 'A', 'B', 'vertical' or None, got {mask_type!r}")
    mask = np.ones((kh, kw))
    if mask_type is None:
        return mask
    ph, pw = kh // 2, kw // 2
    mask[ph + 1:, :] = 0                                  # rows below the centre: the future
    if mask_type in ("A", "B"):
        mask[ph, pw + (mask_type == "B"):] = 0            # right of the centre (and the centre, for A)
    return mask


class MaskedConv2d(Module):
    """y = conv(x, w * mask) + b: a convolution that only looks at the past in raster order.

    x (B, C_in, H, W) -> y (B, C_out, H, W); w (C_out, C_in, kh, kw), b (C_out,), stride 1,
    "same" padding (fused.conv2d). With mask A, y[:, :, i, j] depends on the input pixels before
    (i, j) in raster order (rows above, and the row's pixels to the left); with mask B, on
    those and (i, j) itself. The first layer of a PixelCNN uses A (the pixel it predicts must
    stay hidden), the later ones B (their inputs at (i, j) already exclude x_ij):

        mask A (3x3)   mask B (3x3)
        1 1 1          1 1 1
        1 0 0          1 1 0
        0 0 0          0 0 0

    (conv_mask draws the other shapes.) One image channel: the input channels are not
    ordered among themselves, as they would be for RGB. The mask goes to fused.conv2d as its
    `taps`: the op computes conv(x, w * mask) and skips the masked-out taps' work (4 of 9 in a
    3x3 mask B, 25 of 49 in a 7x7 mask A). Masked-out weights still exist; they get zero
    gradient (the op's dw is zero there) and so never move.
    w ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C_in kh kw (as in PyTorch), b = 0.
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type="B", bias=True, rng=None,
                 dtype=np.float32):
        rng = as_rng(rng)
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, (int, np.integer)) else tuple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"MaskedConv2d: kernel sizes must be odd, got {kh}x{kw}")
        self.mask_type = mask_type
        self.mask = conv_mask(kh, kw, mask_type).astype(dtype)              # (kh, kw), broadcast over channels
        bound = 1.0 / np.sqrt(in_channels * kh * kw)
        self.weight = Parameter(rng.uniform(-bound, bound, (out_channels, in_channels, kh, kw)), dtype=dtype)
        self.bias = Parameter(np.zeros(out_channels), dtype=dtype) if bias else None

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"MaskedConv2d: expected input of shape (batch, {self.weight.shape[1]}, height, width), "
                             f"got {x.shape}")
        return fused.conv2d(x, self.weight, self.bias, taps=self.mask > 0)    # (B, C_out, H, W)  conv(x, w * mask) + b

