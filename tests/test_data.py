"""Data sets: the digits split, MNIST loaders (on tiny files written here), text, user arrays, batches."""
import gzip
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from tinyar import data
from tinyar.models import FVSBN


# --------------------------------------------------------------------- digits
def test_digits_split_is_exactly_the_documented_one():
    from sklearn.datasets import load_digits
    images = load_digits().images.reshape(1797, 64)
    perm = np.random.default_rng(0).permutation(1797)
    d = data.digits("levels")
    assert (len(d.train), len(d.valid), len(d.test)) == (1200, 297, 300)
    np.testing.assert_array_equal(d.train, images[perm[:1200]])
    np.testing.assert_array_equal(d.valid, images[perm[1200:1497]])
    np.testing.assert_array_equal(d.test, images[perm[1497:]])
    assert d.kind == "categorical" and d.n_levels == 17 and d.n_dims == 64 and d.image_shape == (8, 8)
    assert d.train.min() == 0 and d.train.max() == 16
    np.testing.assert_array_equal(d.labels["test"], load_digits().target[perm[1497:]])


def test_digits_binary_and_continuous_forms():
    levels = data.digits("levels")
    binary = data.digits()
    assert binary.kind == "binary" and binary.n_levels == 2 and binary.train.dtype == np.float32
    np.testing.assert_array_equal(binary.test, (levels.test >= 8).astype(np.float32))
    assert 0.25 < binary.train.mean() < 0.4
    cont = data.digits("continuous")
    assert cont.kind == "continuous" and cont.n_levels is None
    for split in ("train", "valid", "test"):
        y = cont.split(split)
        assert y.min() >= 0 and y.max() < 1
        np.testing.assert_array_equal(np.floor(y.astype(np.float64) * 17).astype(int), levels.split(split))
    np.testing.assert_array_equal(data.digits("continuous").train, cont.train)      # seeded
    assert not np.array_equal(data.digits("continuous", seed=1).train, cont.train)
    with pytest.raises(ValueError, match="form must be"):
        data.digits("grey")
    with pytest.raises(ValueError, match="unknown split"):
        binary.split("validation")


# ---------------------------------------------------------------------- MNIST
def write_amat(folder, rng, rows):
    arrays = {}
    for split, n in rows.items():
        x = (rng.random((n, 784)) < 0.3).astype(int)
        np.savetxt(folder / f"binarized_mnist_{split}.amat", x, fmt="%d")
        arrays[split] = x
    return arrays


def test_binarized_mnist_from_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYAR_DATA", str(tmp_path))
    assert data.data_home() == tmp_path
    rows = {"train": 5, "valid": 3, "test": 2}
    arrays = write_amat(tmp_path, np.random.default_rng(0), rows)

    def no_network(*args, **kwargs):
        raise AssertionError("the loader must not touch the network when the files are there")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    d = data.binarized_mnist(rows=rows)
    assert d.kind == "binary" and d.n_dims == 784 and d.image_shape == (28, 28)
    for split in rows:
        np.testing.assert_array_equal(d.split(split), arrays[split])
    assert (tmp_path / "binarized_mnist.npz").exists()           # cached: a second load reads the .npz
    for split in rows:
        (tmp_path / f"binarized_mnist_{split}.amat").unlink()
    np.testing.assert_array_equal(data.binarized_mnist(rows=rows).train, arrays["train"])


def test_binarized_mnist_checks_what_it_reads(tmp_path):
    rows = {"train": 5, "valid": 3, "test": 2}
    write_amat(tmp_path, np.random.default_rng(0), dict(rows, test=1))
    with pytest.raises(ValueError, match="expected 2 rows of 784"):
        data.binarized_mnist(root=tmp_path, rows=rows, download=False)
    np.savetxt(tmp_path / "binarized_mnist_test.amat", np.full((2, 784), 0.5), fmt="%.1f")
    with pytest.raises(ValueError, match="0/1"):
        data.binarized_mnist(root=tmp_path, rows=rows, download=False)


def test_binarized_mnist_offline_gets_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="offline.*TINYAR_DATA"):
        data.binarized_mnist(root=tmp_path)
    assert list(tmp_path.iterdir()) == []                         # no partial file left behind
    with pytest.raises(FileNotFoundError, match="download=False"):
        data.binarized_mnist(root=tmp_path, download=False)


def write_idx(path, array, compress=False):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def make_mnist_folder(folder, rng, compress=False):
    suffix = ".gz" if compress else ""
    train = rng.integers(0, 256, (12, 4, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", train, compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test, compress)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, 12, dtype=np.uint8), compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, 5, dtype=np.uint8), compress)
    return train, test


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_loader(tmp_path, compress):
    train, test = make_mnist_folder(tmp_path, np.random.default_rng(1), compress)
    np.testing.assert_array_equal(data.read_idx(tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if compress else ""))),
                                  test)
    d = data.mnist_idx(tmp_path, n_valid=2)
    assert d.kind == "binary" and d.image_shape == (4, 3) and d.n_dims == 12
    assert (len(d.train), len(d.valid), len(d.test)) == (10, 2, 5)
    np.testing.assert_array_equal(d.train, (train[:10].reshape(10, 12) / 255 > 0.5))
    np.testing.assert_array_equal(d.test, (test.reshape(5, 12) / 255 > 0.5))
    assert d.labels["valid"].shape == (2,)
    a = data.mnist_idx(tmp_path, binarization="sample", seed=3, n_valid=2)
    b = data.mnist_idx(tmp_path, binarization="sample", seed=3, n_valid=2)
    c = data.mnist_idx(tmp_path, binarization="sample", seed=4, n_valid=2)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)
    assert set(np.unique(a.train)) <= {0.0, 1.0}
    levels = data.mnist_idx(tmp_path, binarization=None, n_valid=2)
    assert levels.kind == "categorical" and levels.n_levels == 256
    np.testing.assert_array_equal(levels.test, test.reshape(5, 12))


def test_sampled_binarization_has_the_right_mean():
    x = data.binarize(np.full((200, 50), 0.3), "sample", seed=0)
    assert abs(x.mean() - 0.3) < 0.01
    with pytest.raises(ValueError, match="threshold' or 'sample"):
        data.binarize(x, "round")


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.read_idx(tmp_path / "nothing")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((3, 2, 2), dtype=np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "cut")
    (tmp_path / "cut-header").write_bytes((tmp_path / "ok").read_bytes()[:9])   # 3 sizes need 16 bytes
    with pytest.raises(ValueError, match="header truncated"):                    # not a struct.error
        data.read_idx(tmp_path / "cut-header")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        data.mnist_idx(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.mnist_idx(tmp_path)


# ----------------------------------------------------------------------- text
def test_default_text_corpus_needs_no_download():
    d = data.text(seq_len=32)
    assert d.kind == "tokens" and d.n_dims == 32 and d.n_levels == len(d.vocab) and d.image_shape is None
    assert len(d.train) > 1000 and len(d.valid) > 50 and len(d.test) > 50
    assert d.vocab == sorted(d.vocab) and " " in d.vocab and "e" in d.vocab
    name, corpus = data.default_corpus()
    assert len(corpus) > 100_000
    assert data.decode(d.train[0], d.vocab) == corpus[:32]
    assert d.train.max() < d.n_levels and d.train.dtype == np.int64


def test_text_from_a_file(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("abcab" * 40, encoding="utf-8")             # 200 characters
    d = data.text(path, seq_len=5)
    assert d.vocab == ["a", "b", "c"] and d.name == "text:poem.txt"
    assert (len(d.train), len(d.valid), len(d.test)) == (36, 2, 2)      # 180 / 10 / 10 characters
    assert data.decode(d.train[1], d.vocab) == "abcab"
    np.testing.assert_array_equal(d.valid[0], [0, 1, 2, 0, 1])


def test_text_split_bounds_never_pass_the_end(tmp_path):
    path = tmp_path / "t.txt"
    for n in (70, 110):                         # rounding each split alone gave bounds summing to n + 1
        path.write_text("".join(chr(0x100 + i) for i in range(n)))     # n distinct characters: id = position
        d = data.text(path, seq_len=2)
        parts = [split.ravel() for split in (d.train, d.valid, d.test)]
        assert all(len(p) > 0 and np.array_equal(p, np.arange(p[0], p[0] + len(p))) for p in parts)
        assert parts[0][0] == 0 and parts[0][-1] < parts[1][0] and parts[1][-1] < parts[2][0]
        assert parts[2][-1] >= n - 2 and parts[1][0] == round(0.9 * n)    # at most a tail of seq_len - 1 dropped


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.text(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError):
        data.text(tmp_path)
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(ValueError, match="too few"):
        data.text(tmp_path / "short.txt", seq_len=8)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 100)
    with pytest.raises(ValueError, match="not UTF-8"):
        data.text(tmp_path / "latin1.txt")
    (tmp_path / "ok.txt").write_text("abc" * 100)
    with pytest.raises(ValueError, match="not in the given vocabulary"):
        data.text(tmp_path / "ok.txt", vocab=["a", "b"])


# ---------------------------------------------------------------- user arrays
def test_user_npy_is_shuffled_and_split(tmp_path):
    x = (np.random.default_rng(0).random((50, 16)) < 0.5).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    d = data.from_array(tmp_path / "x.npy")
    assert d.kind == "binary" and d.n_dims == 16 and d.image_shape == (4, 4)
    assert (len(d.train), len(d.valid), len(d.test)) == (40, 5, 5)
    together = np.concatenate([d.train, d.valid, d.test])
    perm = np.random.default_rng(0).permutation(50)
    np.testing.assert_array_equal(together, x[perm])


def test_user_npz_with_splits_images_and_kinds(tmp_path):
    rng = np.random.default_rng(0)
    splits = {s: rng.integers(0, 5, (n, 3, 2)) for s, n in (("train", 6), ("valid", 2), ("test", 3))}
    np.savez(tmp_path / "levels.npz", **splits)
    d = data.from_array(tmp_path / "levels.npz")
    assert d.kind == "categorical" and d.n_levels == int(max(a.max() for a in splits.values())) + 1
    assert d.image_shape == (3, 2) and d.n_dims == 6
    np.testing.assert_array_equal(d.valid, splits["valid"].reshape(2, 6))
    np.savez(tmp_path / "one.npz", anything=rng.standard_normal((10, 3)))
    d = data.from_array(tmp_path / "one.npz")
    assert d.kind == "continuous" and d.image_shape is None and len(d.train) == 8


@pytest.mark.parametrize("array, message", [
    (np.zeros(10), r"shape \(n_examples, D\)"),
    (np.zeros((2, 2, 2, 2)), r"shape \(n_examples, D\)"),
    (np.array([[0.0, np.nan], [1.0, 0.0], [0, 1]]), "NaN"),
    (np.array([[0.0, np.inf], [1.0, 0.0], [0, 1]]), "inf"),
    (np.array([["a", "b"]]), "expected numbers"),
    (np.array([[0, -1], [2, 3], [1, 1]]), "bad.npy: integer data with negative values"),
])
def test_user_array_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises((ValueError, TypeError), match=message):
        data.from_array(tmp_path / "bad.npy")


def test_user_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.from_array(tmp_path / "none.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match=".npy or .npz"):
        data.from_array(tmp_path / "x.csv")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="cannot read"):
        data.from_array(tmp_path / "broken.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 2)), b=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="'train', 'valid', 'test' or a single array"):
        data.from_array(tmp_path / "two.npz")
    np.savez(tmp_path / "mixed.npz", train=np.zeros((4, 2)), valid=np.zeros((2, 3)), test=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="different example shapes"):
        data.from_array(tmp_path / "mixed.npz")


# -------------------------------------------------------- data against models
def test_non_binary_data_for_a_bernoulli_model():
    levels = data.digits("levels")
    with pytest.raises(ValueError, match=r"Bernoulli \(binary\) model needs values in \{0, 1\}, found 1"):
        data.check_fits(levels, FVSBN(64))
    with pytest.raises(ValueError, match="D = 10 dimensions"):
        data.check_fits(data.digits(), FVSBN(10))
    data.check_fits(data.digits(), FVSBN(64))                  # fits: no error
    with pytest.raises(ValueError, match="integer values"):
        data.check_fits_kind(np.array([0.5]), "categorical")
    with pytest.raises(ValueError, match="only 17 levels"):
        data.check_fits_kind(np.array([17]), "categorical", n_levels=17)
    with pytest.raises(ValueError, match="NaN"):
        data.check_fits_kind(np.array([np.nan]), "continuous")


def test_from_spec():
    assert data.from_spec("digits", "binary").kind == "binary"
    assert data.from_spec("digits", "categorical").kind == "categorical"
    assert data.from_spec("digits", "continuous").kind == "continuous"
    assert data.from_spec("digits-levels").n_levels == 17
    assert data.from_spec("text", "tokens", seq_len=16).n_dims == 16
    with pytest.raises(ValueError, match="unknown data set"):
        data.from_spec("cifar")


# -------------------------------------------------------------------- batches
def test_batches_are_seeded_and_cover_every_row_once():
    x = np.arange(23)[:, None]
    a = list(data.batches(x, 5, np.random.default_rng(0)))
    b = list(data.batches(x, 5, np.random.default_rng(0)))
    c = list(data.batches(x, 5, np.random.default_rng(1)))
    assert [len(t) for t in a] == [5, 5, 5, 5, 3]
    assert all(np.array_equal(s, t) for s, t in zip(a, b))
    assert not all(np.array_equal(s, t) for s, t in zip(a, c))
    assert sorted(np.concatenate(a)[:, 0].tolist()) == list(range(23))
    assert [len(t) for t in data.batches(x, 5, 0, drop_last=True)] == [5] * 4
    np.testing.assert_array_equal(np.concatenate(list(data.batches(x, 4, shuffle=False))), x)
    with pytest.raises(ValueError, match="batch_size"):
        list(data.batches(x, 0))


def test_default_corpus_falls_back_to_stdlib_docstrings(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)        # as if Python shipped no pydoc_data
    name, corpus = data.default_corpus()
    assert name == "stdlib docstrings" and len(corpus) > 10_000
    import json as json_module
    assert json_module.__doc__ in corpus


def test_stream_batches_continue_row_by_row():
    from tinyar.data import stream_batches
    rows = np.arange(11)[:, None] * np.ones((1, 2), int)              # row r holds r
    got = [x[:, 0].tolist() for x in stream_batches(rows, 3)]
    assert got == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]                    # rows 9, 10 left out
    assert [x[:, 0].tolist() for x in stream_batches(rows[:2], 5)] == [[0, 1]]   # fewer rows than streams


def test_parallel_streams_cut_one_stream_into_contiguous_rows():
    assert data.parallel_streams(np.arange(10), 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ValueError, match="too few"):
        data.parallel_streams(np.arange(5), 3)
