"""Tensor: a NumPy array, its gradient, and how it was made.

Reverse-mode automatic differentiation in one page.

Every op (see ops.py) computes its output with NumPy and records, on the output
Tensor, its parent Tensors and a *vector-Jacobian product* (VJP): a function that
maps dL/dy (the gradient of some scalar L with respect to the output y) to the
tuple (dL/dx_1, dL/dx_2, ...) of gradients with respect to each parent.

    y = f(x_1, ..., x_n)          dL/dx_k = (dy/dx_k)^T dL/dy = vjp(dL/dy)[k]

`backward()` sorts the graph topologically (iteratively, so a chain of 10,000
ops does not meet Python's recursion limit), then walks it from the output back
to the leaves, calling each node's VJP once and *adding* the result into the
parents' gradients: a tensor used twice receives the sum of both uses.

For the primitive ops (ops.py), broadcasting is undone in exactly one place,
`unbroadcast`: a VJP is written as if no broadcasting happened and the engine sums
its result back to the parent's shape. A fused op (fused.py) sees whole batches and
returns gradients already of its inputs' shapes, summing its bias gradient over the
batch itself.

The arithmetic operators (+, *, @, [], ...) are attached to Tensor at the end of
ops.py, next to the ops they call.
"""
from __future__ import annotations

import contextlib

import numpy as np

# Graph building is on unless inside `no_grad()`; anomaly checks are off unless
# inside `detect_anomaly()`. Both are switched by context managers only.
_state = {"grad_enabled": True, "anomaly": False}


@contextlib.contextmanager
def no_grad():
    """Inside this block ops build no graph (evaluation, sampling)."""
    previous = _state["grad_enabled"]
    _state["grad_enabled"] = False
    try:
        yield
    finally:
        _state["grad_enabled"] = previous


def is_grad_enabled():
    return _state["grad_enabled"]


@contextlib.contextmanager
def detect_anomaly():
    """Inside this block, the first op whose output (or whose gradient, during
    backward) holds NaN or inf raises FloatingPointError naming the op and the
    shapes of its inputs."""
    previous = _state["anomaly"]
    _state["anomaly"] = True
    try:
        yield
    finally:
        _state["anomaly"] = previous


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    data:           np.ndarray
    grad:           np.ndarray of data's shape, or None; filled by backward()
    requires_grad:  whether gradients flow to (and through) this tensor
    op:             name of the op that made it ("leaf" for inputs)
    """

    __array_priority__ = 100  # so that `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        data = np.asarray(data, dtype=dtype)
        if data.dtype == np.float16 or data.dtype.kind not in "fiub":
            raise TypeError(f"Tensor: expected a real float32/float64 or integer array, got {data.dtype}")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.op = "leaf"
        self._parents = ()
        self._vjp = None
        self._retain = False

    # ----------------------------------------------------------- graph building
    @staticmethod
    def _make(data, parents, vjp, op):
        """The output of an op: records parents and VJP if any parent needs a gradient."""
        out = Tensor.__new__(Tensor)
        out.data = data
        out.grad = None
        out.op = op
        out._retain = False
        if _state["anomaly"]:
            _check_finite(data, op, parents, "output")
        if _state["grad_enabled"] and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._vjp = vjp
        else:
            out.requires_grad = False
            out._parents = ()
            out._vjp = None
        return out

    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf), times `grad`, into every leaf's `.grad`.

        A scalar output needs no `grad` (it is taken as 1). A non-scalar output
        needs the upstream gradient dL/d(self) of its shape.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: output has shape {self.shape}; a non-scalar output "
                                   "needs an explicit upstream gradient, backward(grad) with grad of that shape")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=self.data.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: upstream gradient has shape {grad.shape}, expected {self.shape}")

        order = self._topological_order()
        grads = {id(self): grad}               # dL/dnode for the nodes reached so far
        shared = {id(grad)}                    # arrays a leaf's .grad must not alias: the caller's, and those already given
        for node in reversed(order):           # outputs before inputs
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if not node._parents:              # a leaf: accumulate, never overwrite
                if node.grad is not None:
                    node.grad = node.grad + g
                elif g.base is None and id(g) not in shared:
                    node.grad = g              # a VJP's fresh array, held by no one else: no copy needed
                else:
                    node.grad = g.copy()       # a view, or an array another leaf (or the caller) holds
                shared.add(id(node.grad))
                continue
            if node._retain:
                node.grad = g.copy() if node.grad is None else node.grad + g
            parent_grads = node._vjp(g)
            for parent, pg in zip(node._parents, parent_grads):
                if pg is None or not parent.requires_grad:
                    continue
                pg = unbroadcast(np.asarray(pg), parent.shape, node.op)
                if pg.dtype != parent.data.dtype:      # a gradient has its tensor's dtype (float32 weight, float64 data)
                    pg = pg.astype(parent.data.dtype)
                if _state["anomaly"]:
                    _check_finite(pg, node.op, node._parents, "gradient")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg

    def _topological_order(self):
        """Nodes that require grad, each after all of its parents (iterative DFS)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
        return order

    def retain_grad(self):
        """Keep dL/d(self) in `.grad` after backward, although self is not a leaf."""
        self._retain = True
        return self

    def zero_grad(self):
        self.grad = None

    def detach(self):
        """The same data, cut from the graph (no gradient flows through it)."""
        return Tensor(self.data)

    # ----------------------------------------------------------------- helpers
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, op={self.op}{grad})"


def unbroadcast(grad, shape, op="?"):
    """Sum `grad` over the axes that broadcasting added or stretched, back to `shape`.

    y = x broadcast to grad.shape copies x along those axes, so dL/dx is the sum of
    dL/dy over the copies. For the primitive ops this is the only place that undoes
    broadcasting; the fused ops sum their own bias gradients over the batch.
    """
    if grad.shape == shape:
        return grad
    n_extra = grad.ndim - len(shape)
    if n_extra < 0:
        raise ValueError(f"{op}: gradient of shape {grad.shape} cannot be reduced to input shape {shape}")
    if n_extra:
        grad = grad.sum(axis=tuple(range(n_extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    if grad.shape != shape:
        raise ValueError(f"{op}: gradient of shape {grad.shape} does not match input shape {shape}")
    return grad


def _check_finite(array, op, parents, what):
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        shapes = ", ".join(str(p.shape) for p in parents)
        bad = "NaN" if np.isnan(array).any() else "inf"
        raise FloatingPointError(f"detect_anomaly: op '{op}' produced {bad} in its {what} "
                                 f"(input shapes: {shapes})")
