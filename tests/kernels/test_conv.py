"""The convolution kernels: im2col and numba agree with each other and with the definition;
the fused op ops.conv2d passes gradcheck through either implementation."""
import numpy as np
import pytest

from tinyar import ops
from tinyar.gradcheck import gradcheck
from tinyar.kernels import conv
from tinyar.tensor import Tensor

# (B, C, H, W, O, kh, kw): square and rectangular kernels, a kernel larger than the image, 1x1
SHAPES = [(2, 3, 5, 6, 4, 3, 3), (1, 1, 4, 4, 2, 5, 5), (3, 2, 6, 5, 3, 1, 1),
          (2, 2, 3, 3, 2, 7, 7), (2, 3, 5, 4, 2, 1, 3), (1, 2, 4, 6, 3, 3, 5)]


def definition(x, w, bias):
    """y[b,o,i,j] = bias[o] + sum_{c,u,v} w[o,c,u,v] x[b,c,i+u-ph,j+v-pw], zero outside x: plain loops."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    y = np.zeros((B, O, H, W))
    for b, o, i, j in np.ndindex(B, O, H, W):
        y[b, o, i, j] = bias[o]
        for c, u, v in np.ndindex(C, kh, kw):
            ii, jj = i + u - kh // 2, j + v - kw // 2
            if 0 <= ii < H and 0 <= jj < W:
                y[b, o, i, j] += w[o, c, u, v] * x[b, c, ii, jj]
    return y


def _arrays(shape, dtype, seed=0, zeros=False):
    B, C, H, W, O, kh, kw = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W))
    if zeros:                                         # binary-like input: exercises the skipped zero taps
        x = x * (rng.random(x.shape) < 0.5)
    w = rng.standard_normal((O, C, kh, kw))
    bias = rng.standard_normal(O)
    dy = rng.standard_normal((B, O, H, W))
    return [a.astype(dtype) for a in (x, w, bias, dy)]


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_definition(shape):
    x, w, bias, _ = _arrays(shape, np.float64)
    expected = definition(x, w, bias)
    np.testing.assert_allclose(conv.conv2d_forward_numpy(x, w, bias), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.conv2d_forward_numba(x, w, bias), expected, rtol=1e-12, atol=1e-12)


def test_backward_matches_definition():
    """dx, dw, dbias against the Jacobian of the definition, built column by column (it is linear)."""
    shape = (2, 2, 4, 3, 3, 3, 3)
    x, w, bias, dy = _arrays(shape, np.float64, seed=1)
    zero_bias = np.zeros_like(bias)
    dx = np.array([np.sum(dy * definition(e.reshape(x.shape), w, zero_bias)) for e in np.eye(x.size)])
    dw = np.array([np.sum(dy * definition(x, e.reshape(w.shape), zero_bias)) for e in np.eye(w.size)])
    for backward in (conv.conv2d_backward_numpy, conv.conv2d_backward_numba):
        got_dx, got_dw, got_db = backward(x, w, dy)
        np.testing.assert_allclose(got_dx, dx.reshape(x.shape), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_dw, dw.reshape(w.shape), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_numba_and_numpy_agree(shape, dtype, tol):
    x, w, bias, dy = _arrays(shape, dtype, seed=2, zeros=True)
    y_np = conv.conv2d_forward_numpy(x, w, bias)
    y_nb = conv.conv2d_forward_numba(x, w, bias)
    assert y_np.dtype == y_nb.dtype == dtype and y_nb.shape == (shape[0], shape[4], shape[2], shape[3])
    scale = np.abs(y_np).max()
    np.testing.assert_allclose(y_nb, y_np, rtol=tol, atol=tol * scale)
    for g_np, g_nb in zip(conv.conv2d_backward_numpy(x, w, dy), conv.conv2d_backward_numba(x, w, dy)):
        assert g_nb.dtype == dtype and g_nb.shape == g_np.shape
        np.testing.assert_allclose(g_nb, g_np, rtol=tol, atol=tol * np.abs(g_np).max())


@pytest.mark.parametrize("backward", [conv.conv2d_backward_numpy, conv.conv2d_backward_numba])
def test_backward_without_dx(backward):
    x, w, _, dy = _arrays((2, 1, 5, 5, 3, 5, 5), np.float32, seed=5)
    dx, dw, db = backward(x, w, dy, need_dx=False)
    full = backward(x, w, dy)
    assert dx is None and full[0].shape == x.shape
    np.testing.assert_array_equal(dw, full[1])
    np.testing.assert_array_equal(db, full[2])


@pytest.mark.parametrize("impl", ["im2col", "numba"])
@pytest.mark.parametrize("shape", [(2, 2, 4, 5, 3, 3, 3), (1, 3, 5, 5, 2, 5, 5), (3, 1, 3, 4, 2, 1, 1),
                                   (2, 2, 4, 4, 2, 3, 1)])
def test_op_gradcheck(monkeypatch, impl, shape):
    monkeypatch.setattr(conv, "DEFAULT", impl)
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    x, w, bias, _ = _arrays(shape, np.float64, seed=3)
    x, w, bias = (Tensor(a, requires_grad=True) for a in (x, w, bias))
    gradcheck(lambda x, w, b: ops.conv2d(x, w, b), x, w, bias)
    gradcheck(lambda x, w: ops.conv2d(x, w), x, w)


def test_switch_to_numpy(monkeypatch):
    monkeypatch.setattr(conv, "DEFAULT", "numba")
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert conv.implementation() == (conv.conv2d_forward_numba, conv.conv2d_backward_numba)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert conv.implementation() == (conv.conv2d_forward_numpy, conv.conv2d_backward_numpy)


def test_op_float32_and_errors():
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    y = ops.conv2d(x, w)
    assert y.dtype == np.float32 and y.shape == (2, 4, 5, 5)
    y.sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.shape == (4, 3, 3, 3)
    with pytest.raises(ValueError, match="odd kernel"):
        ops.conv2d(x, Tensor(np.zeros((4, 3, 2, 3), np.float32)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d(x, Tensor(np.zeros((4, 2, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        ops.conv2d(Tensor(np.zeros((3, 5, 5), np.float32)), w)
    with pytest.raises(TypeError, match="dtype"):
        ops.conv2d(x, Tensor(np.zeros((4, 3, 3, 3))))
