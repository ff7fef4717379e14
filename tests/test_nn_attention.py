"""The Transformer's layers: nn.Embedding, nn.LayerNorm, GELU, and the causal self-attention,
MLP and Block of models/transformer.py.

Gradchecks in float64; the fused ops (fused.causal_attention, fused.layer_norm,
fused.gelu) against the same functions built from primitives; causality of the
attention by its exact Jacobian; the key/value cache against a full pass.
"""
import numpy as np
import pytest

from tinyar import fused, functional as F
from tinyar import nn, ops
from tinyar.models.transformer import Block, CausalSelfAttention, causal_attention_composite
from tinyar.gradcheck import gradcheck
from tinyar.tensor import Tensor, no_grad


def _t(rng, shape, scale=1.0):
    return Tensor(scale * rng.standard_normal(shape), requires_grad=True)


# ---------------------------------------------------------------- gradchecks
@pytest.mark.parametrize("shape_q, shape_k", [((2, 3, 5, 4), (2, 3, 5, 4)), ((1, 2, 2, 3), (1, 2, 6, 3))])
def test_gradcheck_fused_causal_attention(shape_q, shape_k):
    rng = np.random.default_rng(0)
    gradcheck(fused.causal_attention, _t(rng, shape_q), _t(rng, shape_k), _t(rng, shape_k))


def test_gradcheck_composite_causal_attention():
    rng = np.random.default_rng(1)
    gradcheck(causal_attention_composite, _t(rng, (2, 2, 4, 3)), _t(rng, (2, 2, 4, 3)), _t(rng, (2, 2, 4, 3)))


@pytest.mark.parametrize("one_op", [True, False])
def test_gradcheck_layer_norm(one_op):
    rng = np.random.default_rng(2)
    ln = nn.LayerNorm(5, fused=one_op, dtype=np.float64)
    ln.gamma.data[:] = rng.uniform(0.5, 1.5, 5)
    ln.beta.data[:] = rng.standard_normal(5)
    x = _t(rng, (2, 3, 5))
    gradcheck(lambda x, g, b: ln(x), x, ln.gamma, ln.beta)


@pytest.mark.parametrize("gelu", [fused.gelu, F.gelu])
def test_gradcheck_gelu(gelu):
    rng = np.random.default_rng(3)
    gradcheck(gelu, _t(rng, (3, 4), scale=2.0))


@pytest.mark.parametrize("one_op", [True, False])
def test_gradcheck_attention_layer_and_block(one_op):
    rng = np.random.default_rng(4)
    block = Block(8, 2, 12, fused=one_op, rng=5, dtype=np.float64)
    x = _t(rng, (2, 4, 8))
    gradcheck(lambda x, *p: block(x), x, *block.parameters())


# -------------------------------------------------------- fused == composite
def test_fused_attention_equals_composite_values_and_gradients():
    rng = np.random.default_rng(6)
    data = [rng.standard_normal(s) for s in [(2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 4)]]   # Tq = 5 < Tk = 7
    grads = []
    for attend in (fused.causal_attention, causal_attention_composite):
        q, k, v = (Tensor(a.copy(), requires_grad=True) for a in data)
        y = attend(q, k, v)
        y.backward(np.cos(np.arange(y.size)).reshape(y.shape))
        grads.append((y.data, q.grad, k.grad, v.grad))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fused_layer_norm_and_gelu_equal_composites():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6)) * 3 + 1
    one_op, plain = nn.LayerNorm(6, fused=True, dtype=np.float64), nn.LayerNorm(6, fused=False, dtype=np.float64)
    np.testing.assert_allclose(one_op(Tensor(x)).data, plain(Tensor(x)).data, atol=1e-12)
    y = one_op(Tensor(x)).data
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)          # normalised rows
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-4)           # var / (var + eps)
    np.testing.assert_allclose(fused.gelu(Tensor(x)).data, F.gelu(Tensor(x)).data, atol=1e-12)
    # GELU's known values: 0 at 0, ~x for large x, ~0 for very negative x, 0.8412 at 1 (tanh form)
    g = fused.gelu(Tensor(np.array([0.0, 1.0, 10.0, -10.0]))).data
    np.testing.assert_allclose(g, [0.0, 0.841192, 10.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_op_equals_the_linear_layer(bias):
    rng = np.random.default_rng(12)
    layer = nn.Linear(5, 3, bias=bias, rng=0, dtype=np.float64)
    if bias:
        layer.bias.data[:] = rng.standard_normal(3)
    x_data, dy = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    results = []
    for forward in (lambda x: fused.linear(x, layer.weight, layer.bias), layer):   # fused op, then matmul + add
        layer.zero_grad()
        x = Tensor(x_data, requires_grad=True)
        y = forward(x)
        y.backward(dy)
        results.append([y.data, x.grad, layer.weight.grad] + ([layer.bias.grad] if bias else []))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][0], x_data @ layer.weight.data.T + (layer.bias.data if bias else 0))
    x32 = Tensor(x_data.astype(np.float32))
    w32 = Tensor(layer.weight.data.astype(np.float32), requires_grad=True)
    assert fused.linear(x32, w32).dtype == np.float32
    with pytest.raises(ValueError, match=r"x \(N, in\) and W \(out, in\)"):
        fused.linear(Tensor(np.zeros((4, 4))), layer.weight)


def test_fused_attention_float32_keeps_dtype_and_matches_float64():
    rng = np.random.default_rng(8)
    data = [rng.standard_normal((2, 2, 6, 4)) for _ in range(3)]
    y64 = fused.causal_attention(*(Tensor(a) for a in data)).data
    y32 = fused.causal_attention(*(Tensor(a.astype(np.float32)) for a in data)).data
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, atol=1e-5)


# ----------------------------------------------------------------- causality
def test_attention_weights_are_lower_triangular_rows_summing_to_one():
    rng = np.random.default_rng(9)
    attn = CausalSelfAttention(8, 2, rng=0, dtype=np.float64)
    P = attn.weights(Tensor(rng.standard_normal((3, 5, 8))))              # (B, H, T, T)
    assert P.shape == (3, 2, 5, 5)
    assert np.all(P[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0.0)
    np.testing.assert_allclose(P.sum(axis=-1), 1.0, atol=1e-12)
    assert np.all(P[..., 0, 0] == 1.0)                                    # the first position sees only itself
    assert np.all(P[..., np.tril_indices(5)[0], np.tril_indices(5)[1]] > 0)


@pytest.mark.parametrize("one_op", [True, False])
def test_attention_jacobian_is_exactly_zero_for_future_inputs(one_op):
    """d y_t / d x_s = 0 exactly for s > t (and not for s <= t), by reverse mode, row by row."""
    rng = np.random.default_rng(10)
    B, T, C = 2, 6, 8
    block = Block(C, 2, 16, fused=one_op, rng=1, dtype=np.float64)
    x = Tensor(rng.standard_normal((B, T, C)), requires_grad=True)
    for t in range(T):
        x.grad = None
        y = block(x)
        upstream = np.zeros(y.shape)
        upstream[:, t] = rng.standard_normal((B, C))
        y.backward(upstream)
        assert np.all(x.grad[:, t + 1:] == 0.0), f"output {t} depends on a later input"
        assert np.all(np.abs(x.grad[:, :t + 1]).sum(axis=-1) > 0), f"output {t} ignores an earlier input"


def test_attention_perturbing_later_positions_leaves_earlier_outputs():
    rng = np.random.default_rng(11)
    attn = CausalSelfAttention(8, 4, rng=2, dtype=np.float64)
    x = rng.standard_normal((2, 7, 8))
    y = attn(Tensor(x)).data
    x2 = x.copy()
    x2[:, 4:] += rng.standard_normal((2, 3, 8))
    y2 = attn(Tensor(x2)).data
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    assert np.abs(y[:, 4:] - y2[:, 4:]).min() > 0


def test_key_value_cache_matches_full_pass():
    """Feeding 2 positions, then 1 at a time, through the cache gives the full pass's outputs."""
    rng = np.random.default_rng(12)
    block = Block(8, 2, 16, rng=3, dtype=np.float64)
    x = rng.standard_normal((3, 6, 8))
    full = block(Tensor(x)).data
    cache = {}
    with no_grad():
        parts = [block(Tensor(x[:, :2]), cache=cache).data]
        parts += [block(Tensor(x[:, t:t + 1]), cache=cache).data for t in range(2, 6)]
    assert cache["k"].shape == (3, 2, 6, 4)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-12)


def test_key_value_cache_is_refused_while_gradients_are_on():
    """The cache stores plain arrays: with a graph being built, gradients would silently miss them."""
    block = Block(8, 2, 16, rng=3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((1, 3, 8))
    cache = {}
    with pytest.raises(RuntimeError, match="no_grad"):
        block(Tensor(x), cache=cache)
    assert cache == {}                                              # nothing was stored


# ----------------------------------------------------------------- embedding
def test_embedding_scatter_adds_repeated_ids():
    emb = nn.Embedding(5, 3, rng=0, dtype=np.float64)
    ids = np.array([[1, 3, 1], [1, 0, 4]])
    y = emb(ids)
    np.testing.assert_array_equal(y.data[0, 0], emb.weight.data[1])
    y.backward(np.ones((2, 3, 3)))
    np.testing.assert_array_equal(emb.weight.grad[:, 0], [1, 3, 0, 1, 1])   # id 1 used three times
    gradcheck(lambda w: emb(ids) * emb(ids), emb.weight)


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
def test_embedding_op_equals_getitem_values_and_gradients(kernels, monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", kernels)
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 5, (3, 4))
    dy = rng.standard_normal((3, 4, 2))
    table = rng.standard_normal((6, 2))                               # row 5 is never picked
    results = []
    for lookup in (fused.embedding, ops.getitem):                        # getitem's VJP: np.add.at
        w = Tensor(table, requires_grad=True)
        y = lookup(w, ids)
        y.backward(dy)
        results.append((y.data, w.grad))
    (y_op, dw_op), (y_getitem, dw_getitem) = results
    np.testing.assert_array_equal(y_op, y_getitem)
    np.testing.assert_allclose(dw_op, dw_getitem, rtol=1e-12, atol=1e-12)
    assert np.all(dw_op[5] == 0) and np.any(dw_op[:5] != 0)
    with pytest.raises(IndexError, match=r"0\.\.5"):
        fused.embedding(w, np.array([6]))
    with pytest.raises(TypeError, match="integer ids"):
        fused.embedding(w, np.array([0.0]))


def test_embedding_and_layers_reject_bad_input():
    emb = nn.Embedding(5, 3)
    with pytest.raises(IndexError, match=r"0\.\.4"):
        emb(np.array([[0, 5]]))
    with pytest.raises(TypeError, match="integer ids"):
        emb(np.array([[0.5]]))
    with pytest.raises(ValueError, match="divisible"):
        CausalSelfAttention(10, 3)
    with pytest.raises(ValueError, match="features"):
        nn.LayerNorm(4)(Tensor(np.zeros((2, 5), np.float32)))
    with pytest.raises(ValueError, match="Tq <= Tk"):
        fused.causal_attention(Tensor(np.zeros((1, 4, 2))), Tensor(np.zeros((1, 3, 2))), Tensor(np.zeros((1, 3, 2))))


def test_attention_layers_say_what_shape_they_expect():
    flat = Tensor(np.ones((4, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"CausalSelfAttention: expected input of shape \(batch, time, 8\)"):
        CausalSelfAttention(8, 2, rng=0)(flat)
    with pytest.raises(ValueError, match=r"Block: expected input of shape \(batch, time, 8\)"):
        Block(8, 2, 16, rng=0)(flat)
