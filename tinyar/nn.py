"""Modules, parameters and layers.

A Module is any object whose attributes (directly, or inside lists, tuples and
dicts) hold Parameters or other Modules; `parameters()` finds them all by
walking those attributes, so a layer only has to assign them.
"""
from __future__ import annotations

import numpy as np

from tinyar import ops
from tinyar.rng import as_rng
from tinyar.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    def __init__(self, data, dtype=None):
        super().__init__(np.array(data, dtype=dtype), requires_grad=True)


class Module:
    """Base class: `forward` computes, `__call__` calls it; parameters are found recursively."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

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
        if x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"Linear: expected inputs with {self.weight.shape[1]} features in the last axis, "
                             f"got shape {x.shape}")
        y = ops.matmul(x, ops.transpose(self.weight))          # (..., out)
        return y + self.bias if self.bias is not None else y


# ==== MaskedLinear (MADE) ====


# ==== Embedding, LayerNorm, CausalSelfAttention, MLP, Block (Transformer) ====


# ==== recurrent cells (RNN) ====


# ==== MaskedConv2d (PixelCNN) ====
