"""Modules, parameters and layers.

A Module is any object whose attributes (directly, or inside lists, tuples and
dicts) hold Parameters or other Modules; `parameters()` finds them all by
walking those attributes, so a layer only has to assign them.
"""
from __future__ import annotations

import numpy as np

from tinyar import fused
from tinyar import ops
from tinyar.rng import as_rng
from tinyar.tensor import Tensor


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

    def n_parameters(self, free=False):
        """How many numbers the parameters hold (a Parameter shared by two layers counts once).

        free=False: every stored entry. free=True: only the entries the output can depend on.
        A weight W that a layer uses as W * M, M a fixed 0/1 mask (weight_masks()), contributes
        the number of nonzeros of M broadcast to W's shape: a masked-out entry is stored, but
        it never reaches the output and its gradient is zero (only weight decay moves it, towards
        0). For an FVSBN over D = 64 pixels: D^2 + D = 4,160 stored, D(D - 1)/2 + D = 2,080 free.
        """
        if not free:
            return int(sum(p.size for p in self.parameters()))
        free_entries = {}                                         # id(weight) -> nonzeros of its mask
        for module in _modules(self):
            for name, mask in module.weight_masks().items():
                weight = getattr(module, name)
                free_entries[id(weight)] = int(np.count_nonzero(np.broadcast_to(mask, weight.shape)))
        return int(sum(free_entries.get(id(p), p.size) for p in self.parameters()))

    def weight_masks(self):
        """{attribute name of a Parameter: the 0/1 mask it is multiplied by} for this module's
        own masked weights (n_parameters(free=True) counts them). By convention a module with a
        Parameter `weight` and an array `mask` computes with weight * mask (MaskedLinear,
        MaskedConv2d, whose mask broadcasts over the channels); others have none, unless they
        say otherwise (FVSBN)."""
        weight, mask = getattr(self, "weight", None), getattr(self, "mask", None)
        return {"weight": mask} if isinstance(weight, Parameter) and isinstance(mask, np.ndarray) else {}

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


def _modules(obj):
    """Depth-first: obj if it is a Module, then every Module below it, through lists, tuples and dicts."""
    if isinstance(obj, Module):
        yield obj
    values = vars(obj).values() if isinstance(obj, Module) else obj.values() if isinstance(obj, dict) else obj
    for value in values:
        if isinstance(value, (Module, list, tuple, dict)):
            yield from _modules(value)


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



# ==== Embedding, LayerNorm (Transformer; its attention, MLP and Block live in models/transformer.py) ====


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
    with a hand-written VJP, gradchecked in gradcheck_cases.py); `fused=False` builds the
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
    as one fused op (fused.elman_rnn); step(x_t, h) is the same cell written with
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
def conv_mask(kh, kw, mask_type, out_groups=None, in_groups=None):
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

    Without groups the mask is (kh, kw), the same for every pair of channels. With ordered
    channel groups (colour images: group 0 = R, 1 = G, 2 = B, predicted in that order at each
    pixel), out_groups (C_out,) and in_groups (C_in,) give each channel's group, and the mask
    is (C_out, C_in, kh, kw): the (kh, kw) mask at every tap but the centre, where output
    group g sees input group h only if h < g (mask A) or h <= g (mask B):

        centre tap, in group ->  R G B        R G B
        out group   R            0 0 0        1 0 0
                    G            1 0 0        1 1 0
                    B            1 1 0        1 1 1
                                 mask A       mask B
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
    if out_groups is None and in_groups is None:
        return mask
    return _grouped_mask(mask, mask_type, out_groups, in_groups)


def _grouped_mask(mask, mask_type, out_groups, in_groups):
    """The (kh, kw) mask widened to (C_out, C_in, kh, kw), the centre tap masked by channel group."""
    if mask_type not in ("A", "B") or out_groups is None or in_groups is None:
        raise ValueError(f"conv_mask: channel groups need mask_type 'A' or 'B' and both out_groups and "
                         f"in_groups, got mask_type {mask_type!r}")
    out_groups, in_groups = np.asarray(out_groups), np.asarray(in_groups)
    kh, kw = mask.shape
    full = np.broadcast_to(mask, (len(out_groups), len(in_groups), kh, kw)).copy()
    sees = in_groups[None, :] < out_groups[:, None] if mask_type == "A" else \
        in_groups[None, :] <= out_groups[:, None]                        # (C_out, C_in)
    full[:, :, kh // 2, kw // 2] = sees
    return full


def channel_groups(n_channels, n_groups):
    """The group of each of n_channels channels split into n_groups equal consecutive blocks:
    channel_groups(6, 3) = [0, 0, 1, 1, 2, 2]."""
    if n_groups < 1 or n_channels % n_groups:
        raise ValueError(f"channel_groups: {n_channels} channels do not split into {n_groups} equal groups")
    return np.repeat(np.arange(n_groups), n_channels // n_groups)


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

    (conv_mask draws the other shapes.) With n_groups = 1 (one image channel) the channels
    are not ordered among themselves and `mask` is (kh, kw); it goes to fused.conv2d as its
    `taps`: the op computes conv(x, w * mask), leaving out the masked-out taps (4 of 9 in a
    3x3 mask B, 25 of 49 in a 7x7 mask A). Masked-out weights still exist; they get zero
    gradient (the op's dw is zero there) and so never move.

    n_groups = 3 orders the channels as well, for RGB images: the input and output channels
    are each split into 3 equal consecutive blocks (R, G, B), and `mask` is (C_out, C_in, kh, kw)
    (conv_mask with channel groups): at the centre tap an output of group g sees the inputs of
    groups < g (mask A) or <= g (mask B). The layer then computes conv(x, w * mask) with the
    product w * mask in the graph (so dw = dw' * mask), over the taps the spatial mask keeps.
    w ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C_in kh kw (as in PyTorch), b = 0.
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type="B", bias=True, rng=None,
                 dtype=np.float32, n_groups=1):
        rng = as_rng(rng)
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, (int, np.integer)) else tuple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"MaskedConv2d: kernel sizes must be odd, got {kh}x{kw}")
        self.mask_type = mask_type
        self.n_groups = int(n_groups)
        if self.n_groups == 1:
            self.mask = conv_mask(kh, kw, mask_type).astype(dtype)          # (kh, kw), broadcast over channels
        else:                                                               # (C_out, C_in, kh, kw)
            self.mask = conv_mask(kh, kw, mask_type, channel_groups(out_channels, self.n_groups),
                                  channel_groups(in_channels, self.n_groups)).astype(dtype)
        bound = 1.0 / np.sqrt(in_channels * kh * kw)
        self.weight = Parameter(rng.uniform(-bound, bound, (out_channels, in_channels, kh, kw)), dtype=dtype)
        self.bias = Parameter(np.zeros(out_channels), dtype=dtype) if bias else None

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"MaskedConv2d: expected input of shape (batch, {self.weight.shape[1]}, height, width), "
                             f"got {x.shape}")
        if self.mask.ndim == 2:
            return fused.conv2d(x, self.weight, self.bias, taps=self.mask > 0)    # (B, C_out, H, W)  conv(x, w * mask) + b
        w = self.weight * Tensor(self.mask.astype(self.weight.dtype, copy=False))   # centre tap masked by group
        return fused.conv2d(x, w, self.bias, taps=self.mask.any(axis=(0, 1)))       # (B, C_out, H, W)

