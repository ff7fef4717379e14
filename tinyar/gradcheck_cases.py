"""Gradcheck cases for every registered op, every composite and every model's loss.

`python -m tinyar gradcheck` runs them all and prints a table; the test suite
runs them too, and fails if an op in ops.OPS has no case here.

A case is (name, shapes, fn, inputs): gradcheck(fn, *inputs) must pass.
Elementwise binary ops run over a grid of shapes that exercises broadcasting.
Inputs are drawn away from kinks (|x| >= 0.2 for abs, relu, maximum) and from
the edges of domains (x > 0.2 for log, sqrt, pow, and a divisor).
"""
from __future__ import annotations

import numpy as np

from tinyar import fused, functional as F
from tinyar import ops
from tinyar.gradcheck import gradcheck
from tinyar.tensor import Tensor

BROADCAST_PAIRS = [((), ()), ((3,), (3,)), ((2, 3), (2, 3)), ((2, 3), ()), ((2, 3), (3,)),
                   ((1, 3), (2, 1)), ((2, 1), (2, 3)), ((3,), (2, 3))]


def _t(rng, shape, low=None, high=None, away_from_zero=False):
    if low is not None:
        x = rng.uniform(low, high, shape)
    elif away_from_zero:
        x = rng.uniform(0.2, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    else:
        x = rng.standard_normal(shape)
    return Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)


def _binary_cases(name, fn, rng, **kw):
    return [(name, f"{sa} {sb}", fn, (_t(rng, sa, **kw.get("a", {})), _t(rng, sb, **kw.get("b", {}))))
            for sa, sb in BROADCAST_PAIRS]


def _unary_cases(name, fn, rng, **kw):
    return [(name, str(s), fn, (_t(rng, s, **kw),)) for s in [(), (3,), (2, 3)]]


def op_cases(seed=0):
    """{op name: [case, ...]} for every op in ops.OPS (the registry).

    The families draw their inputs from one stream in this order (nade, conv2d, embedding
    and linear from streams of their own), so a new case added at the end of a family
    moves no other family's inputs.
    """
    rng = np.random.default_rng(seed)
    cases = {}
    cases.update(_elementwise_cases(rng))
    cases.update(_reduction_cases(rng))
    cases.update(_shape_cases(rng))
    cases.update(_nade_cases(seed))
    cases.update(_masked_matmul_cases(rng))
    cases.update(_rnn_cases(rng))
    cases.update(_conv_cases(seed))
    cases.update(_attention_cases(rng))
    cases.update(_embedding_and_linear_cases(seed))
    return cases


def _elementwise_cases(rng):
    """Binary ops over the broadcasting grid, unary ops over three shapes, the Bernoulli log-probability."""
    positive = dict(low=0.2, high=2.0)
    return {
        "add": _binary_cases("add", ops.add, rng),
        "sub": _binary_cases("sub", ops.sub, rng),
        "mul": _binary_cases("mul", ops.mul, rng),
        "div": _binary_cases("div", ops.div, rng, b=dict(away_from_zero=True)),
        "maximum": _binary_cases("maximum", ops.maximum, rng, a=dict(away_from_zero=True),
                                 b=dict(low=-0.1, high=0.1)),
        "neg": _unary_cases("neg", ops.neg, rng),
        "pow": _unary_cases("pow", lambda x: ops.pow_(x, 2.5), rng, **positive)
               + _unary_cases("pow", lambda x: ops.pow_(x, -1), rng, **positive),
        "exp": _unary_cases("exp", ops.exp, rng),
        "log": _unary_cases("log", ops.log, rng, **positive),
        "sqrt": _unary_cases("sqrt", ops.sqrt, rng, **positive),
        "abs": _unary_cases("abs", ops.abs_, rng, away_from_zero=True),
        "tanh": _unary_cases("tanh", ops.tanh, rng),
        "sigmoid": _unary_cases("sigmoid", ops.sigmoid, rng),
        "relu": _unary_cases("relu", ops.relu, rng, away_from_zero=True),
        "softplus": _unary_cases("softplus", ops.softplus, rng),
        "bernoulli_log_prob": [("bernoulli_log_prob", str(s), lambda z, x=x: fused.bernoulli_log_prob(z, x), (_t(rng, s),))
                               for s, x in [((3,), np.array([0.0, 1.0, 1.0])),
                                            ((2, 3), np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))]],
    }


def _reduction_cases(rng):
    """matmul (with batch broadcasting) and the reductions sum, mean, max over various axes."""
    return {
        "matmul": [("matmul", f"{sa} {sb}", ops.matmul, (_t(rng, sa), _t(rng, sb)))
                   for sa, sb in [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                                  ((2, 2, 3), (3, 4)), ((2, 2, 3), (2, 3, 4)), ((1, 2, 3), (2, 3, 2)),
                                  ((2, 2, 3), (3,))]],
        "sum": [("sum", f"{s} axis={ax}", lambda x, ax=ax, kd=kd: ops.sum_(x, axis=ax, keepdims=kd), (_t(rng, s),))
                for s, ax, kd in [((3,), None, False), ((2, 3), 0, False), ((2, 3), 1, True), ((2, 3, 2), (0, 2), False)]],
        "mean": [("mean", f"{s} axis={ax}", lambda x, ax=ax: ops.mean(x, axis=ax), (_t(rng, s),))
                 for s, ax in [((3,), None), ((2, 3), 0), ((2, 3), -1), ((2, 3, 2), (0, 2))]],
        "max": [("max", f"{s} axis={ax}", lambda x, ax=ax: ops.max_(x, axis=ax), (_t(rng, s),))
                for s, ax in [((3,), None), ((2, 3), 0), ((2, 3), 1), ((2, 3, 2), (1, 2))]],
    }


def _shape_cases(rng):
    """Ops that move or pick elements: reshape, transpose, indexing, concatenate, stack, where."""
    return {
        "reshape": [("reshape", "(2, 3) -> (3, 2)", lambda x: ops.reshape(x, (3, 2)), (_t(rng, (2, 3)),)),
                    ("reshape", "(2, 3) -> (6,)", lambda x: ops.reshape(x, -1), (_t(rng, (2, 3)),))],
        "transpose": [("transpose", "(2, 3)", ops.transpose, (_t(rng, (2, 3)),)),
                      ("transpose", "(2, 3, 4) (1, 2, 0)", lambda x: ops.transpose(x, (1, 2, 0)), (_t(rng, (2, 3, 4)),))],
        "getitem": [("getitem", "(4, 3)[1:3]", lambda x: ops.getitem(x, slice(1, 3)), (_t(rng, (4, 3)),)),
                    ("getitem", "(4, 3)[:, 2]", lambda x: ops.getitem(x, (slice(None), 2)), (_t(rng, (4, 3)),)),
                    ("getitem", "(4, 3)[[0, 2, 0]]", lambda x: ops.getitem(x, np.array([0, 2, 0])), (_t(rng, (4, 3)),)),
                    ("getitem", "(4, 3)[rows, cols]",
                     lambda x: ops.getitem(x, (np.array([0, 1, 1, 3]), np.array([2, 0, 0, 1]))), (_t(rng, (4, 3)),))],
        "concatenate": [("concatenate", "(2, 3) (1, 3) axis 0", lambda a, b: ops.concatenate([a, b], 0),
                         (_t(rng, (2, 3)), _t(rng, (1, 3)))),
                        ("concatenate", "(2, 3) (2, 2) axis 1", lambda a, b: ops.concatenate([a, b], 1),
                         (_t(rng, (2, 3)), _t(rng, (2, 2))))],
        "stack": [("stack", "(2, 3) x 3 axis 1", lambda a, b, c: ops.stack([a, b, c], 1),
                   (_t(rng, (2, 3)), _t(rng, (2, 3)), _t(rng, (2, 3))))],
        "where": [("where", "(2, 3) (2, 3)", lambda a, b: ops.where(np.array([[1, 0, 1], [0, 0, 1]], bool), a, b),
                   (_t(rng, (2, 3)), _t(rng, (2, 3)))),
                  ("where", "(2, 3) (3,)", lambda a, b: ops.where(np.array([[1, 0, 1], [0, 0, 1]], bool), a, b),
                   (_t(rng, (2, 3)), _t(rng, (3,))))],
    }


def _nade_cases(seed):
    """fused.nade on binary, one-hot (K = 3) and real inputs, in natural and shuffled orderings."""
    nade_rng = np.random.default_rng(seed + 4)          # its own stream: the other cases' inputs stay put
    nade_x = [(nade_rng.random((3, 4, 1)) < 0.5).astype(np.float64),            # binary inputs
              np.eye(3)[nade_rng.integers(0, 3, (2, 4))],                        # one-hot, K = 3
              nade_rng.standard_normal((2, 5, 2))]                               # real features, K = 2
    return {"nade": [
        ("nade", f"x {x.shape} H 3 P {P}",
         lambda W, c, V, b, x=x, order=order: fused.nade(x, order, W, c, V, b),
         (_t(nade_rng, (x.shape[1], x.shape[2], 3)), _t(nade_rng, (3,)), _t(nade_rng, (x.shape[1], P, 3)),
          _t(nade_rng, (x.shape[1], P))))
        for x, order, P in [(nade_x[0], np.arange(4), 1), (nade_x[1], np.array([2, 0, 3, 1]), 3),
                            (nade_x[2], np.array([4, 1, 0, 3, 2]), 2)]]}


def _masked_matmul_cases(rng):
    """fused.masked_matmul with a MADE mask and a random one, through each of its kernels."""
    degrees_in, degrees_out = np.array([1, 3, 2, 2, 1]), np.array([2, 1, 3, 2])
    made_mask = (degrees_out[:, None] >= degrees_in[None, :]).astype(np.float64)     # (4, 5), a staircase
    other_mask = (rng.random((4, 5)) < 0.5).astype(np.float64)                       # no structure
    cases = [
        ("masked_matmul", f"(3, 5) (4, 5) {what} mask, {kernel}",
         lambda x, W, b, M=M, kernel=kernel: fused.masked_matmul(x, W, M, b, kernel=kernel),
         (_t(rng, (3, 5)), _t(rng, (4, 5)), _t(rng, (4,))))
        for what, M in [("MADE", made_mask), ("random", other_mask)] for kernel in ("numba", "numpy")
    ] + [("masked_matmul", "(2, 5) (4, 5) no bias, numba",
          lambda x, W: fused.masked_matmul(x, W, made_mask, kernel="numba"), (_t(rng, (2, 5)), _t(rng, (4, 5))))]
    # the same units numbered by degree: a staircase in place, for the blocked BLAS kernels
    in_place = (np.sort(degrees_out)[:, None] >= np.sort(degrees_in)[None, :]).astype(np.float64)
    cases += [
        ("masked_matmul", "(3, 5) (4, 5) sorted MADE mask, staircase",
         lambda x, W, b: fused.masked_matmul(x, W, in_place, b, kernel="staircase"),
         (_t(rng, (3, 5)), _t(rng, (4, 5)), _t(rng, (4,)))),
        ("masked_matmul", "(2, 5) (4, 5) sorted MADE mask, no bias, staircase",
         lambda x, W: fused.masked_matmul(x, W, in_place, kernel="staircase"), (_t(rng, (2, 5)), _t(rng, (4, 5))))]
    return {"masked_matmul": cases}


def _rnn_cases(rng):
    """fused.elman_rnn on token ids (a repeated id: its column sums gradients) and on dense inputs."""
    ids = np.array([[0, 3, 3, 1, 4], [2, 2, 0, 4, 1]])                # (B=2, T=5), vocabulary 5, id 3 repeats
    return {"elman_rnn": [
        ("elman_rnn", "ids (2, 5), V 5, H 3",
         lambda W_xh, W_hh, b, h0: fused.elman_rnn(ids, W_xh, W_hh, b, h0),
         (_t(rng, (3, 5)), _t(rng, (3, 3), low=-0.7, high=0.7), _t(rng, (3,)), _t(rng, (2, 3)))),
        ("elman_rnn", "dense x (2, 4, 2), H 3",
         lambda x, W_xh, W_hh, b, h0: fused.elman_rnn(x, W_xh, W_hh, b, h0),
         (_t(rng, (2, 4, 2)), _t(rng, (3, 2)), _t(rng, (3, 3), low=-0.7, high=0.7), _t(rng, (3,)),
          _t(rng, (2, 3))))]}


def _conv_cases(seed):
    """fused.conv2d over several shapes and kernel sizes, and restricted to the taps of masks A and B."""
    conv_rng = np.random.default_rng(seed + 7)          # its own stream: the other cases' inputs stay put
    cases = [
        ("conv2d", f"x {(B, C, H, W)} w {(O, C, kh, kw)}" + ("" if bias else " no bias"),
         (lambda x, w, b: fused.conv2d(x, w, b)) if bias else (lambda x, w: fused.conv2d(x, w)),
         (_t(conv_rng, (B, C, H, W)), _t(conv_rng, (O, C, kh, kw))) + ((_t(conv_rng, (O,)),) if bias else ()))
        for B, C, H, W, O, kh, kw, bias in [(1, 1, 3, 3, 1, 1, 1, True), (2, 2, 4, 5, 3, 3, 3, True),
                                            (2, 3, 5, 4, 2, 5, 5, True), (1, 2, 6, 6, 2, 7, 7, False),
                                            (3, 1, 4, 4, 2, 1, 3, True), (2, 2, 5, 5, 3, 3, 1, True)]]
    # the kernel restricted to the taps of mask A (raster index before the centre's) or B (up to it)
    cases += [
        ("conv2d", f"x {(B, C, H, W)} w {(O, C, k, k)} taps: mask {mask}",
         lambda x, w, b, taps=np.arange(k * k).reshape(k, k) < k * k // 2 + (mask == "B"):
             fused.conv2d(x, w, b, taps=taps),
         (_t(conv_rng, (B, C, H, W)), _t(conv_rng, (O, C, k, k)), _t(conv_rng, (O,))))
        for B, C, H, W, O, k, mask in [(2, 2, 4, 5, 3, 3, "A"), (1, 3, 5, 4, 2, 5, "B")]]
    return {"conv2d": cases}


def _attention_cases(rng):
    """The Transformer's fused ops: causal attention, layer norm, GELU."""
    return {
        "causal_attention": [
            ("causal_attention", f"q {sq} k,v {sk}", fused.causal_attention,
             (_t(rng, sq), _t(rng, sk), _t(rng, sk)))
            for sq, sk in [((3, 4), (3, 4)), ((2, 2, 4, 3), (2, 2, 4, 3)), ((2, 2, 3), (2, 5, 3))]],
        "layer_norm": [
            ("layer_norm", f"{s}", lambda x, g, b: fused.layer_norm(x, g, b),
             (_t(rng, s), _t(rng, s[-1:]), _t(rng, s[-1:])))
            for s in [(5,), (3, 4), (2, 3, 5)]],
        "gelu": _unary_cases("gelu", fused.gelu, rng),
    }


def _embedding_and_linear_cases(seed):
    """fused.embedding (a repeated id: its row sums gradients) and fused.linear, with and without a bias."""
    ids = np.array([[1, 3, 1], [4, 0, 1]])                  # id 1 three times: its row sums 3 gradients
    linear_rng = np.random.default_rng(seed + 9)
    return {
        "embedding": [("embedding", "W (5, 3) ids (2, 3)", lambda w: fused.embedding(w, ids),
                       (_t(np.random.default_rng(seed + 8), (5, 3)),))],
        "linear": [("linear", "x (4, 3) W (2, 3) b (2,)", fused.linear,
                    tuple(_t(linear_rng, s) for s in [(4, 3), (2, 3), (2,)])),
                   ("linear", "x (4, 3) W (2, 3) no bias", fused.linear,
                    tuple(_t(linear_rng, s) for s in [(4, 3), (2, 3)]))],
    }


def functional_cases(seed=0):
    rng = np.random.default_rng(seed)
    targets = np.array([2, 0, 1, 2])
    return [
        ("log_sigmoid", "(2, 3)", F.log_sigmoid, (_t(rng, (2, 3)),)),
        ("logsumexp", "(2, 3) axis=-1", F.logsumexp, (_t(rng, (2, 3)),)),
        ("logsumexp", "(2, 3) axis=0", lambda x: F.logsumexp(x, axis=0), (_t(rng, (2, 3)),)),
        ("softmax", "(2, 3)", F.softmax, (_t(rng, (2, 3)),)),
        ("log_softmax", "(2, 3)", F.log_softmax, (_t(rng, (2, 3)),)),
        ("binary_cross_entropy_with_logits", "(2, 3)",
         lambda z: F.binary_cross_entropy_with_logits(z, np.array([[0., 1, 1], [1, 0, 0]])), (_t(rng, (2, 3)),)),
        ("cross_entropy", "(4, 3)", lambda z: F.cross_entropy(z, targets), (_t(rng, (4, 3)),)),
        ("gelu", "(2, 3)", F.gelu, (_t(rng, (2, 3)),)),
    ]


def model_cases():
    """One case per model class in tinyar.models: the mean NLL of a small float64 model.

    Each model class provides `gradcheck_example()`: a small float64 instance and a batch x.
    """
    import tinyar.models as models
    cases = []
    for name in models.__all__:
        cls = getattr(models, name)
        model, x = cls.gradcheck_example()
        params = model.parameters()
        cases.append((name, f"{model.n_parameters()} parameters ({model.n_parameters(free=True)} free), x {x.shape}",
                      lambda *p, model=model, x=x: -model.log_prob(x).mean(), tuple(params)))
    return cases


def run_all(include_models=True):
    """Run every case; returns rows (name, shapes, max abs error, max rel error, passed, message)."""
    groups = [case for cases in op_cases().values() for case in cases] + functional_cases()
    if include_models:
        groups += model_cases()
    rows = []
    for name, shapes, fn, inputs in groups:
        try:
            result = gradcheck(fn, *inputs)
            rows.append((name, shapes, result["max_abs_error"], result["max_rel_error"], True, ""))
        except Exception as e:          # report every failure, keep going
            rows.append((name, shapes, float("nan"), float("nan"), False, f"{type(e).__name__}: {e}"))
    return rows
