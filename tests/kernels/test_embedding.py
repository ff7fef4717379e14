"""The scatter-add behind every table lookup (tinyar/kernels/embedding.py): the loop against its NumPy twin."""
import numpy as np
import pytest

from tinyar.kernels import embedding as K

TOL = {np.float32: dict(rtol=1e-6, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embedding_backward_scatter_adds_rows(dtype):
    rng = np.random.default_rng(9)
    ids = rng.integers(0, 6, 40)                                   # 40 picks of 6 rows: many repeats
    ids[:3] = 2                                                    # and row 2 at least three times
    dy = rng.standard_normal((40, 4)).astype(dtype)
    dW = K.embedding_backward_numba(ids, dy, 7)                    # row 6 is never picked
    assert dW.dtype == dtype and dW.shape == (7, 4)
    np.testing.assert_allclose(dW, K.embedding_backward_numpy(ids, dy, 7), **TOL[dtype])
    np.testing.assert_allclose(dW[2], dy[ids == 2].sum(axis=0), **TOL[dtype])
    assert np.all(dW[6] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_backward_of_time_major_ids_as_the_rnn_calls_it(dtype):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 5, size=(30, 4))                         # (T, B)
    ids[:, 0] = 2                                                  # many repeats of one id
    da = rng.standard_normal((30, 4, 6)).astype(dtype)             # (T, B, H)
    got = K.embedding_backward_numba(ids.reshape(-1), da.reshape(-1, 6), 7)
    want = K.embedding_backward_numpy(ids.reshape(-1), da.reshape(-1, 6), 7)
    assert got.shape == (7, 6) and got.dtype == dtype
    np.testing.assert_allclose(got, want, **TOL[dtype])
    np.testing.assert_allclose(got[2], da[ids == 2].sum(axis=0), **TOL[dtype])
    assert np.all(got[5:] == 0)                                    # ids 5, 6 never occur


def test_switch_selects_the_numpy_twin(monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    assert K.choose("embedding_backward") is K.embedding_backward_numpy
    monkeypatch.setenv("TINYAR_KERNELS", "numba")
    assert K.choose("embedding_backward") is K.embedding_backward_numba
