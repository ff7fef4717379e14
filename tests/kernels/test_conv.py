"""The convolution kernels: the im2col reference, the shift-and-GEMM NumPy twin, its compiled
version (numba + BLAS) and the direct loops agree with each other and with the definition, with
and without taps; the fused op fused.conv2d passes gradcheck through each implementation; choose()
honours TINYAR_KERNELS; MaskedConv2d's taps give what the masked weight gives."""
import numba
import numpy as np
import pytest

from tinyar import fused, nn, ops
from tinyar.gradcheck import gradcheck
from tinyar.kernels import conv
from tinyar.tensor import Tensor

# (B, C, H, W, O, kh, kw): square and rectangular kernels, a kernel larger than the image, 1x1,
# and more input channels than conv.STACK_BELOW (one product per tap instead of gathered taps)
SHAPES = [(2, 3, 5, 6, 4, 3, 3), (1, 1, 4, 4, 2, 5, 5), (3, 2, 6, 5, 3, 1, 1),
          (2, 2, 3, 3, 2, 7, 7), (2, 3, 5, 4, 2, 1, 3), (1, 2, 4, 6, 3, 3, 5), (2, 20, 5, 4, 3, 3, 3)]
IMPLEMENTATIONS = list(conv.IMPLEMENTATIONS)


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
    if zeros:                                         # binary-like input: exercises the loops' skipped zero taps
        x = x * (rng.random(x.shape) < 0.5)
    w = rng.standard_normal((O, C, kh, kw))
    bias = rng.standard_normal(O)
    dy = rng.standard_normal((B, O, H, W))
    return [a.astype(dtype) for a in (x, w, bias, dy)]


def _some_taps(kh, kw, seed):
    """A random boolean (kh, kw) tap pattern with at least one tap on and, if it can, one off."""
    taps = np.random.default_rng(seed).random((kh, kw)) < 0.5
    taps.flat[0] = True
    if taps.size > 1:
        taps.flat[-1] = False
    return taps


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_definition(shape, impl):
    forward, _ = conv.IMPLEMENTATIONS[impl]
    x, w, bias, _ = _arrays(shape, np.float64)
    np.testing.assert_allclose(forward(x, w, bias), definition(x, w, bias), rtol=1e-12, atol=1e-12)
    taps = _some_taps(*shape[5:], seed=6)
    np.testing.assert_allclose(forward(x, w, bias, taps), definition(x, w * taps, bias), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_backward_matches_definition(impl):
    """dx, dw, dbias against the Jacobian of the definition, built column by column (it is linear)."""
    _, backward = conv.IMPLEMENTATIONS[impl]
    shape = (2, 2, 4, 3, 3, 3, 3)
    x, w, bias, dy = _arrays(shape, np.float64, seed=1)
    zero_bias = np.zeros_like(bias)
    dx = np.array([np.sum(dy * definition(e.reshape(x.shape), w, zero_bias)) for e in np.eye(x.size)])
    dw = np.array([np.sum(dy * definition(x, e.reshape(w.shape), zero_bias)) for e in np.eye(w.size)])
    got_dx, got_dw, got_db = backward(x, w, dy)
    np.testing.assert_allclose(got_dx, dx.reshape(x.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_dw, dw.reshape(w.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    # with taps: the gradients of conv(x, w * taps): dx of the restricted kernel, dw zero off the taps
    taps = nn.conv_mask(3, 3, "A") > 0
    got_dx, got_dw, _ = backward(x, w, dy, taps=taps)
    np.testing.assert_allclose(got_dx, backward(x, w * taps, dy)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_dw, dw.reshape(w.shape) * taps, rtol=1e-12, atol=1e-12)
    assert np.all(got_dw[:, :, ~taps] == 0)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_implementations_agree(shape, dtype, tol):
    """Every implementation against the im2col reference, forward and backward: all taps, some
    taps, and the causal masks A and B."""
    x, w, bias, dy = _arrays(shape, dtype, seed=2, zeros=True)
    kh, kw = shape[5:]
    for taps in (None, _some_taps(kh, kw, seed=7), nn.conv_mask(kh, kw, "A") > 0, nn.conv_mask(kh, kw, "B") > 0):
        y_ref = conv.conv2d_forward_im2col(x, w, bias, taps)
        grads_ref = conv.conv2d_backward_im2col(x, w, dy, taps=taps)
        for impl in IMPLEMENTATIONS:
            forward, backward = conv.IMPLEMENTATIONS[impl]
            y = forward(x, w, bias, taps)
            assert y.dtype == dtype and y.shape == (shape[0], shape[4], shape[2], shape[3]), impl
            np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol * np.abs(y_ref).max(), err_msg=impl)
            for g, g_ref in zip(backward(x, w, dy, taps=taps), grads_ref):
                assert g.dtype == dtype and g.shape == g_ref.shape, impl
                np.testing.assert_allclose(g, g_ref, rtol=tol, atol=tol * np.abs(g_ref).max(), err_msg=impl)


def test_compiled_and_twin_agree_on_pixelcnn_layers():
    """The compiled shift-and-GEMM kernels and their NumPy twin at the layer shapes of a PixelCNN
    on 8x8 images (masks A and B), float32; many blocks of rows, both lanes of work used."""
    rng = np.random.default_rng(8)
    for C, O, k, mask in [(1, 8, 7, "A"), (18, 18, 3, "B"), (18, 1, 1, "B")]:
        x = rng.standard_normal((16, C, 8, 8)).astype(np.float32)
        w = rng.standard_normal((O, C, k, k)).astype(np.float32)
        bias = rng.standard_normal(O).astype(np.float32)
        dy = rng.standard_normal((16, O, 8, 8)).astype(np.float32)
        taps = nn.conv_mask(k, k, mask) > 0
        y = conv.conv2d_forward_numba(x, w, bias, taps)
        y_ref = conv.conv2d_forward_numpy(x, w, bias, taps)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())
        for g, g_ref in zip(conv.conv2d_backward_numba(x, w, dy, taps=taps),
                            conv.conv2d_backward_numpy(x, w, dy, taps=taps)):
            np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5 * np.abs(g_ref).max())


def test_compiled_reuses_work_arrays_safely():
    """The compiled shift kernels reuse their work arrays between calls: calls with larger and smaller
    grids in between (whose pixels and borders fall on each other's rows), and a call on new
    values of the same shape, still give fresh results."""
    x, w, bias, dy = _arrays((3, 2, 6, 5, 4, 3, 3), np.float64, seed=9)
    first = conv.conv2d_forward_numba(x, w, bias), conv.conv2d_backward_numba(x, w, dy)
    for n, (H, W, kh, kw) in enumerate([(9, 7, 5, 3), (3, 4, 1, 1), (6, 5, 1, 5), (4, 4, 3, 3), (2, 3, 7, 7)]):
        xo, wo, bo, dyo = _arrays((2, 3, H, W, 3, kh, kw), np.float64, seed=n)
        np.testing.assert_allclose(conv.conv2d_forward_numba(xo, wo, bo), definition(xo, wo, bo),
                                   rtol=1e-12, atol=1e-12)
        conv.conv2d_backward_numba(xo, wo, dyo)
    np.testing.assert_array_equal(conv.conv2d_forward_numba(x, w, bias), first[0])
    for g, g_first in zip(conv.conv2d_backward_numba(x, w, dy), first[1]):
        np.testing.assert_array_equal(g, g_first)
    x2 = -2.0 * x                                                    # same shape, other values
    np.testing.assert_allclose(conv.conv2d_forward_numba(x2, w, bias), definition(x2, w, bias), rtol=1e-12, atol=1e-12)


def test_compiled_independent_of_thread_count():
    """Blocks are dealt to a fixed number of lanes: 1 or 2 numba threads give the same bits."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to compare")
    x, w, bias, dy = _arrays((8, 20, 8, 8, 6, 3, 3), np.float32, seed=10)
    before = numba.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            results.append([conv.conv2d_forward_numba(x, w, bias)] + list(conv.conv2d_backward_numba(x, w, dy)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_backward_without_dx(impl):
    _, backward = conv.IMPLEMENTATIONS[impl]
    x, w, _, dy = _arrays((2, 1, 5, 5, 3, 5, 5), np.float32, seed=5)
    dx, dw, db = backward(x, w, dy, need_dx=False)
    full = backward(x, w, dy)
    assert dx is None and full[0].shape == x.shape
    np.testing.assert_array_equal(dw, full[1])
    np.testing.assert_array_equal(db, full[2])


def test_no_taps_gives_the_bias():
    x, w, bias, dy = _arrays((2, 3, 4, 5, 2, 3, 3), np.float64, seed=11)
    none = np.zeros((3, 3), dtype=bool)
    for impl in IMPLEMENTATIONS:
        forward, backward = conv.IMPLEMENTATIONS[impl]
        np.testing.assert_array_equal(forward(x, w, bias, none), np.broadcast_to(bias[:, None, None], (2, 2, 4, 5)))
        dx, dw, _ = backward(x, w, dy, taps=none)
        assert not dx.any() and not dw.any(), impl


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(2, 2, 4, 5, 3, 3, 3), (1, 3, 5, 5, 2, 5, 5), (3, 1, 3, 4, 2, 1, 1),
                                   (2, 2, 4, 4, 2, 3, 1)])
def test_op_gradcheck(monkeypatch, impl, shape):
    monkeypatch.setattr(conv, "choose", lambda name="conv2d": conv.IMPLEMENTATIONS[impl])
    x, w, bias, _ = _arrays(shape, np.float64, seed=3)
    x, w, bias = (Tensor(a, requires_grad=True) for a in (x, w, bias))
    gradcheck(lambda x, w, b: fused.conv2d(x, w, b), x, w, bias)
    gradcheck(lambda x, w: fused.conv2d(x, w), x, w)
    taps = _some_taps(*shape[5:], seed=12)
    gradcheck(lambda x, w, b: fused.conv2d(x, w, b, taps=taps), x, w, bias)


def test_choose_honours_the_switch(monkeypatch):
    """choose() gives the compiled pair, and the NumPy twins under TINYAR_KERNELS=numpy; the fused
    op then computes exactly what the twin computes."""
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert conv.choose("conv2d") == (conv.conv2d_forward_numba, conv.conv2d_backward_numba)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert conv.choose("conv2d") == (conv.conv2d_forward_numpy, conv.conv2d_backward_numpy)
    x, w, bias, dy = _arrays((2, 3, 5, 4, 2, 3, 3), np.float32, seed=14)
    taps = nn.conv_mask(3, 3, "B") > 0
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, bias))
    y = fused.conv2d(xt, wt, bt, taps=taps)
    y.backward(dy)
    np.testing.assert_array_equal(y.data, conv.conv2d_forward_numpy(x, w, bias, taps))
    for got, want in zip((xt.grad, wt.grad, bt.grad), conv.conv2d_backward_numpy(x, w, dy, taps=taps)):
        np.testing.assert_array_equal(got, want)


def test_masked_conv_matches_masked_weight():
    """MaskedConv2d passes its mask as taps: the same output and gradients as conv(x, w * mask),
    and zero gradient for the masked-out weights."""
    rng = np.random.default_rng(13)
    for k, mask_type in [(3, "A"), (5, "B"), ((3, 5), "vertical"), ((1, 3), "A")]:
        layer = nn.MaskedConv2d(3, 4, k, mask_type=mask_type, rng=rng, dtype=np.float64)
        x = Tensor(rng.standard_normal((2, 3, 5, 6)), requires_grad=True)
        dy = rng.standard_normal((2, 4, 5, 6))
        layer(x).backward(dy)
        w = Tensor(layer.weight.data.copy(), requires_grad=True)
        x2 = Tensor(x.data.copy(), requires_grad=True)
        y2 = fused.conv2d(x2, w * Tensor(layer.mask), Tensor(layer.bias.data))
        y2.backward(dy)
        np.testing.assert_allclose(layer(x).data, y2.data, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(x.grad, x2.grad, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.weight.grad, w.grad, rtol=1e-12, atol=1e-12)
        assert np.all(layer.weight.grad[:, :, layer.mask == 0] == 0)


def test_op_float32_and_errors():
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    y = fused.conv2d(x, w)
    assert y.dtype == np.float32 and y.shape == (2, 4, 5, 5)
    y.sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.shape == (4, 3, 3, 3)
    with pytest.raises(ValueError, match="odd kernel"):
        fused.conv2d(x, Tensor(np.zeros((4, 3, 2, 3), np.float32)))
    with pytest.raises(ValueError, match="channels"):
        fused.conv2d(x, Tensor(np.zeros((4, 2, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        fused.conv2d(Tensor(np.zeros((3, 5, 5), np.float32)), w)
    with pytest.raises(TypeError, match="dtype"):
        fused.conv2d(x, Tensor(np.zeros((4, 3, 3, 3))))
    with pytest.raises(ValueError, match="taps"):
        fused.conv2d(x, w, taps=np.ones((3, 5), dtype=bool))
