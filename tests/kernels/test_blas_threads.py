"""runtime.single_thread_numba_blas: SciPy's BLAS (the one numba's np.dot calls) on one thread inside, restored after."""
import numpy as np
import pytest

from tinyar.kernels import runtime
from tinyar.kernels import rnn as K

threadpoolctl = pytest.importorskip("threadpoolctl")


def scipy_blas_threads():
    return [lib.get_num_threads() for lib in runtime._scipy_blas_controllers()]


def test_holds_scipy_blas_to_one_thread_and_restores_it():
    libs = runtime._scipy_blas_controllers()
    if not libs:
        pytest.skip("SciPy shares NumPy's BLAS here: one pool, nothing to hold")
    for lib in libs:
        lib.set_num_threads(2)
    with runtime.single_thread_numba_blas():
        assert scipy_blas_threads() == [1] * len(libs)
    assert scipy_blas_threads() == [2] * len(libs)
    with pytest.raises(RuntimeError):                  # restored on an error too
        with runtime.single_thread_numba_blas():
            raise RuntimeError("inside")
    assert scipy_blas_threads() == [2] * len(libs)


def test_numpy_blas_is_not_touched_when_scipy_has_its_own():
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_info
    numpy_libs = [lib for lib in threadpool_info() if "numpy" in (lib.get("filepath") or "")]
    if not numpy_libs or any("numpy" in (lib.filepath or "") for lib in runtime._scipy_blas_controllers()):
        pytest.skip("NumPy's BLAS is not found, or SciPy shares it here")
    before = [lib["num_threads"] for lib in numpy_libs]
    with runtime.single_thread_numba_blas():
        inside = [lib["num_threads"] for lib in threadpool_info() if "numpy" in (lib.get("filepath") or "")]
    assert inside == before


def test_rnn_kernels_restore_the_thread_count_and_agree_with_the_twins():
    before = scipy_blas_threads()
    rng = np.random.default_rng(0)
    u = rng.normal(size=(5, 3, 4)).astype(np.float64)
    W = rng.normal(size=(4, 4)) * 0.5
    h0 = rng.normal(size=(3, 4))
    h = K.elman_forward_numba(u, W, h0)
    np.testing.assert_allclose(h, K.elman_forward_numpy(u, W, h0), rtol=1e-12)
    dh = rng.normal(size=h.shape)
    for got, want in zip(K.elman_backward_numba(W, h0, h, dh), K.elman_backward_numpy(W, h0, h, dh)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert scipy_blas_threads() == before


def test_overlapping_blocks_restore_the_count():
    """Blocks that overlap without nesting (as in two Python threads: A opens, B opens, A closes,
    B closes): one thread inside until the last one closes, then the count before the first.
    (A save and restore per block would end at 1: B saved A's 1.)"""
    libs = runtime._scipy_blas_controllers()
    if not libs:
        pytest.skip("SciPy shares NumPy's BLAS here")
    for lib in libs:
        lib.set_num_threads(2)
    a, b = runtime.single_thread_numba_blas(), runtime.single_thread_numba_blas()
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert scipy_blas_threads() == [1] * len(libs)           # B is still inside
    b.__exit__(None, None, None)
    assert scipy_blas_threads() == [2] * len(libs)
    with runtime.single_thread_numba_blas():                   # nested
        with runtime.single_thread_numba_blas():
            pass
        assert scipy_blas_threads() == [1] * len(libs)
    assert scipy_blas_threads() == [2] * len(libs)


def test_numba_threads_at_most_caps_the_count_and_restores_it():
    import numba
    before = numba.get_num_threads()
    with runtime.numba_threads_at_most(1):
        assert numba.get_num_threads() == 1
    with runtime.numba_threads_at_most(64):
        assert numba.get_num_threads() == before              # never more than numba had
    with pytest.raises(RuntimeError):
        with runtime.numba_threads_at_most(1):
            raise RuntimeError("inside")
    assert numba.get_num_threads() == before
