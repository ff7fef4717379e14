"""The one-pass SGD-momentum kernel (numba) gives exactly the NumPy twin's numbers, and optim.SGD uses it."""
import numpy as np
import pytest

from tinyar.kernels import sgd
from tinyar.optim import SGD
from tinyar.tensor import Tensor


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (13, 9), (3, 4, 5)])
def test_kernel_equals_twin_exactly(dtype, shape):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    p, v, g = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    lr, mu = dtype(0.01), dtype(0.9)
    p1, v1, p2, v2 = p.copy(), v.copy(), p.copy(), v.copy()
    sgd.sgd_momentum_update_numba(p1, v1, g, lr, mu)
    sgd.sgd_momentum_update_numpy(p2, v2, g, lr, mu)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(v2, mu * v + g, rtol=1e-6)              # the equations themselves
    np.testing.assert_allclose(p2, p - lr * (mu * v + g), rtol=1e-5, atol=1e-7)


def test_choose_takes_the_loop_only_for_contiguous_arrays_of_one_dtype(monkeypatch):
    a = np.zeros((4, 3), np.float32)
    assert sgd.choose("sgd_momentum_update", a, a.copy(), a.copy()) is sgd.sgd_momentum_update_numba
    assert sgd.choose("sgd_momentum_update", a, a.copy(), a.T.copy().T) is sgd.sgd_momentum_update_numpy
    assert sgd.choose("sgd_momentum_update", a, a.copy(), a.astype(np.float64)) is sgd.sgd_momentum_update_numpy
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert sgd.choose("sgd_momentum_update", a, a.copy(), a.copy()) is sgd.sgd_momentum_update_numpy


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
def test_sgd_momentum_steps_match_the_formula(kernels, monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", kernels)
    rng = np.random.default_rng(3)
    w = Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.5)
    p, v = w.data.copy(), None
    for _ in range(3):
        g = rng.standard_normal((4, 3)).astype(np.float32)
        w.grad = g.copy()
        opt.step()
        v = g.copy() if v is None else np.float32(0.5) * v + g
        p = p - np.float32(0.1) * v
        np.testing.assert_array_equal(opt.velocity[0], v)
        np.testing.assert_array_equal(w.data, p)
