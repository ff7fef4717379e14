"""Data sets and minibatches.

Every loader returns a `Dataset`: three arrays (train, valid, test) of examples,
one per row, and what a model needs to know about them:

    kind         "binary" ({0, 1}), "categorical" (0..n_levels-1), "continuous" (reals)
                 or "tokens" (ids 0..n_levels-1 of a vocabulary)
    n_dims       D, the number of dimensions of an example (or a sequence's length T)
    n_levels     2 for binary, K for categorical, the vocabulary size for tokens
    image_shape  (H, W) when an example is an image flattened row by row; (H, W, 3) for a colour
                 image flattened pixel by pixel with R, G, B at each pixel; else None
    vocab        the characters of a text data set (id -> character), else None

Loaders:

    digits(form)          the UCI handwritten digits shipped with scikit-learn (offline):
                          1,797 images of 8x8 with intensities 0..16, in a fixed split
    photo_patches()       8x8 colour patches (R, G, B of 0..255) of the two photographs shipped
                          with scikit-learn (offline), split by position in the photos
    binarized_mnist()     the fixed binarization of MNIST of Larochelle & Murray (2011) [2],
                          downloaded once into a cache folder (TINYAR_DATA)
    mnist_idx(folder)     MNIST from the IDX files a user already has, binarized by a
                          threshold or by sampling with a seed
    text(path, seq_len)   the characters of a text file as integer ids; with no path, the
                          English documentation that ships inside Python's standard library
    from_array(path)      a user's own .npy / .npz array

and the minibatch iterators of train.fit: `batches(x, batch_size, rng)` (a seeded shuffle),
`stream_batches` and `parallel_streams` (pieces of parallel streams, for truncated BPTT).

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] H. Larochelle, I. Murray. The neural autoregressive distribution estimator. AISTATS 2011.
    [3] E. Alpaydin, C. Kaynak. Optical recognition of handwritten digits. UCI ML repository, 1998.
    [4] scikit-learn, sklearn.datasets.load_sample_images: china.jpg and flower.jpg (CC BY 2.0).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyar.rng import as_rng

KINDS = ("binary", "categorical", "continuous", "tokens")


@dataclass
class Dataset:
    """Three splits of examples (one per row) and what a model needs to know about them."""
    name: str
    kind: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    n_dims: int
    n_levels: int | None = None
    image_shape: tuple | None = None      # (H, W), or (H, W, 3) for colour images
    vocab: list | None = None
    labels: dict | None = field(default=None, repr=False)    # split -> class labels, when known
    dequantized_levels: int | None = None     # K when the values are (x + u) / K of K-level data
    stream: bool = False       # the rows of each split are consecutive pieces of one stream (text())

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Dataset: kind must be one of {KINDS}, got {self.kind!r}")
        for split in ("train", "valid", "test"):
            x = getattr(self, split)
            if x.ndim != 2 or x.shape[1] != self.n_dims:
                raise ValueError(f"Dataset {self.name}: the {split} split should have shape (n, {self.n_dims}), "
                                 f"got {x.shape}")

    def split(self, name):
        """The array of one split: 'train', 'valid' or 'test'."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}: expected 'train', 'valid' or 'test'")
        return getattr(self, name)

    def describe(self):
        """The data set in one line, e.g. for a run's log."""
        levels = f", {self.n_levels} levels" if self.kind in ("categorical", "tokens") else ""
        return (f"{self.name}: {self.kind}, D = {self.n_dims}{levels}; "
                f"{len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test")


# --------------------------------------------------------------------- digits
DIGITS_SPLIT = (1200, 297, 300)


def digits_split(n=1797):
    """Row indices of the fixed split: rows shuffled by np.random.default_rng(0).permutation(1797),
    then the first 1,200 train, the next 297 valid, the last 300 test."""
    perm = np.random.default_rng(0).permutation(n)
    a, b = DIGITS_SPLIT[0], DIGITS_SPLIT[0] + DIGITS_SPLIT[1]
    return perm[:a], perm[a:b], perm[b:]


def digits(form="binary", seed=0):
    """The 8x8 handwritten digits of scikit-learn [3] (intensities 0..16), in the fixed split.

    form="binary"      x >= 8, as float32 0/1 (kind "binary")
    form="levels"      the 17 integer intensities 0..16 (kind "categorical", n_levels 17)
    form="continuous"  dequantized (x + u) / 17 with u ~ U[0, 1) drawn with `seed`, in [0, 1)
                       (kind "continuous"); a density on it, plus D log 17, is a probability
                       of the 17-level images
    """
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = bunch.images.reshape(len(bunch.images), 64).astype(np.int64)     # (1797, 64), 0..16
    y = bunch.target.astype(np.int64)
    if form == "binary":
        values, kind, levels = (x >= 8).astype(np.float32), "binary", 2
    elif form == "levels":
        values, kind, levels = x, "categorical", 17
    elif form == "continuous":
        u = np.random.default_rng(seed).random(x.shape)
        values, kind, levels = ((x + u) / 17.0).astype(np.float32), "continuous", None
    else:
        raise ValueError(f"digits: form must be 'binary', 'levels' or 'continuous', got {form!r}")
    train, valid, test = digits_split(len(x))
    return Dataset(f"digits-{form}", kind, values[train], values[valid], values[test], n_dims=64,
                   n_levels=levels, image_shape=(8, 8), dequantized_levels=17 if form == "continuous" else None,
                   labels={"train": y[train], "valid": y[valid], "test": y[test]})


# ------------------------------------------------------------ colour photographs
PHOTO_SPLIT = (0.8, 0.1, 0.1)          # fractions of each photograph's regions: train, valid, test


def sample_photos():
    """The two colour photographs that scikit-learn ships (china.jpg, flower.jpg), each a
    (427, 640, 3) uint8 array (R, G, B of 0..255); decoded by Pillow, which matplotlib needs anyway."""
    from sklearn.datasets import load_sample_images
    return [np.asarray(image) for image in load_sample_images().images]


def photo_patch_positions(photo_shapes, patch_size=8, region=4, seed=0):
    """Where the patches of each split sit: {split: (n, 3) int array of (photo, top, left)}.

    Each photograph is cut into a grid of non-overlapping patch_size x patch_size patches
    (a grid of 8x8 patches over 427 x 640 pixels: 53 x 80 patches; the last rows and columns that do
    not fill a patch are dropped). The grid is grouped into regions of region x region patches
    (32 x 32 pixels by default), and each region goes whole to one split: a permutation of
    each photograph's regions drawn from np.random.default_rng(seed) gives the first 80% to
    train, the next 10% to valid, the rest to test. No pixel belongs to two patches, so the
    splits share none, and a test patch's neighbours are mostly test patches too.
    Within a split the patches come in order of photo, row, column.
    """
    rng = np.random.default_rng(seed)
    chosen = {"train": [], "valid": [], "test": []}
    for k, (height, width) in enumerate(photo_shapes):
        rows, cols = np.meshgrid(np.arange(height // patch_size), np.arange(width // patch_size), indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()                            # the grid, in raster order
        regions = (rows // region) * (cols.max() // region + 1) + cols // region
        order = rng.permutation(regions.max() + 1)                         # regions in a seeded order
        bounds = np.round(np.cumsum(PHOTO_SPLIT)[:2] * len(order)).astype(np.int64)
        split_of_region = np.empty(len(order), dtype=np.int64)
        for s, part in enumerate(np.split(order, bounds)):
            split_of_region[part] = s
        for s, name in enumerate(chosen):
            keep = split_of_region[regions] == s
            chosen[name].append(np.stack([np.full(keep.sum(), k), rows[keep] * patch_size,
                                          cols[keep] * patch_size], axis=1))
    return {name: np.concatenate(parts) for name, parts in chosen.items()}


def photo_patches(patch_size=8, levels=256, region=4, seed=0):
    """Colour patches cut from the two photographs scikit-learn ships, no download [4].

    Rows of D = 3 patch_size^2 values in 0..levels-1, laid out channel-last: raster over the
    pixels (rows top to bottom, each left to right) with R, G, B at each pixel,

        x[n, 3 (r W + c) + ch] = channel ch (0 R, 1 G, 2 B) of pixel (r, c),

    so x.reshape(n, H, W, 3) is the patch, and an autoregressive model in the order of the
    columns predicts R, then G, then B of each pixel before the next pixel. The split is by
    position (photo_patch_positions): 8,480 patches of 8x8, about 80 / 10 / 10% train / valid /
    test. levels = K < 256 quantizes each value v to floor(v K / 256) (e.g. K = 4 for tests
    that enumerate). Kind "categorical", n_levels K, image_shape (H, W, 3).
    """
    patch_size, levels, region = int(patch_size), int(levels), int(region)
    if not 2 <= levels <= 256:
        raise ValueError(f"photo_patches: levels must be in 2..256, got {levels}")
    if not 1 <= patch_size <= 64 or region < 1:
        raise ValueError(f"photo_patches: need 1 <= patch_size <= 64 and region >= 1, got patch_size "
                         f"{patch_size}, region {region}")
    photos = sample_photos()
    positions = photo_patch_positions([p.shape[:2] for p in photos], patch_size, region, seed)
    splits = {}
    for name, where in positions.items():
        patches = [photos[k][top:top + patch_size, left:left + patch_size] for k, top, left in where]
        x = np.stack(patches).reshape(len(where), 3 * patch_size ** 2).astype(np.int64)   # (n, H W 3)
        splits[name] = x * levels // 256                                  # 0..levels-1
    return Dataset(f"photos-{patch_size}x{patch_size}" + ("" if levels == 256 else f"-{levels}levels"),
                   "categorical", splits["train"], splits["valid"], splits["test"],
                   n_dims=3 * patch_size ** 2, n_levels=levels, image_shape=(patch_size, patch_size, 3))


# ---------------------------------------------------------------------- MNIST
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
BINARIZED_MNIST_ROWS = {"train": 50000, "valid": 10000, "test": 10000}


def data_home():
    """The cache folder for downloads: $TINYAR_DATA, else $XDG_CACHE_HOME/tinyar, else ~/.cache/tinyar."""
    if os.environ.get("TINYAR_DATA"):
        return Path(os.environ["TINYAR_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tinyar"


def _download(url, path):
    """Fetch url into path (through a temporary file, so a failed download leaves nothing)."""
    import urllib.error
    import urllib.request
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {url} ({e}). You seem to be offline. Download the file by other means "
            f"and put it at {path} (the cache folder is set by the environment variable TINYAR_DATA), "
            "or use --data digits, which needs no download.") from None
    os.replace(tmp, path)


def _read_amat(path, n_rows):
    """A .amat file of binarized MNIST: one image per line, 784 values 0 or 1 separated by spaces."""
    x = np.loadtxt(path, dtype=np.float32, ndmin=2)
    if x.shape != (n_rows, 784):
        raise ValueError(f"{path}: expected {n_rows} rows of 784 values, got shape {x.shape}; "
                         "the file is incomplete or not binarized MNIST (delete it to download again)")
    if not np.isin(x, (0, 1)).all():
        raise ValueError(f"{path}: expected only 0/1 values, the file is not binarized MNIST")
    return x


def binarized_mnist(download=True, root=None, rows=None):
    """The fixed binarization of MNIST of [2]: 50,000 train / 10,000 valid / 10,000 test, 28x28.

    The three .amat files are downloaded once into `root` (default data_home(), set by
    TINYAR_DATA), verified (row count, 784 binary values per row), and cached as one .npz
    (binarized_mnist.npz) for fast later loads. download=False raises FileNotFoundError when
    the files are not there. `rows` overrides the expected row counts (for tests' tiny files).
    """
    root = Path(root) if root is not None else data_home()
    rows = dict(BINARIZED_MNIST_ROWS, **(rows or {}))
    cache = root / "binarized_mnist.npz"
    if cache.exists():
        with np.load(cache) as f:
            splits = {s: f[s] for s in ("train", "valid", "test")}
    else:
        splits = {}
        for split in ("train", "valid", "test"):
            path = root / f"binarized_mnist_{split}.amat"
            if not path.exists():
                if not download:
                    raise FileNotFoundError(f"binarized MNIST: {path} not found (download=False); "
                                            f"it is at {BINARIZED_MNIST_URL}{path.name}")
                _download(BINARIZED_MNIST_URL + path.name, path)
            splits[split] = _read_amat(path, rows[split])
        tmp = root / "binarized_mnist.part.npz"
        np.savez_compressed(tmp, **splits)
        os.replace(tmp, cache)
    return Dataset("binarized-mnist", "binary", splits["train"], splits["valid"], splits["test"],
                   n_dims=784, n_levels=2, image_shape=(28, 28))


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """An IDX file (the format of the MNIST distribution, optionally gzipped) as an array.

    Layout: two zero bytes, a type code (0x08 = unsigned byte, ...), the number of
    dimensions n, n big-endian int32 sizes, then the values in C order.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, n = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * n:
        raise ValueError(f"{path}: IDX header truncated: {n} dimension sizes need {4 + 4 * n} bytes, "
                         f"the file holds {len(raw)}")
    shape = struct.unpack(f">{n}i", raw[4:4 + 4 * n])
    body = raw[4 + 4 * n:]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes of data), "
                         f"the file holds {len(body)} bytes (truncated?)")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"MNIST IDX: no {stem} (or {stem}.gz) in {folder}")


def binarize(images, method="threshold", threshold=0.5, seed=0):
    """Intensities in [0, 1] -> {0, 1}: x > threshold, or x_i ~ Bernoulli(intensity) drawn with `seed`."""
    if method == "threshold":
        return (images > threshold).astype(np.float32)
    if method == "sample":
        return (np.random.default_rng(seed).random(images.shape) < images).astype(np.float32)
    raise ValueError(f"binarize: method must be 'threshold' or 'sample', got {method!r}")


def mnist_idx(folder, binarization="threshold", threshold=0.5, seed=0, n_valid=10000):
    """MNIST from the four IDX files a user has (train-images-idx3-ubyte[.gz], t10k-...).

    Intensities are scaled to [0, 1] and binarized (see `binarize`; binarization=None keeps
    the 256 levels as kind "categorical"). The last `n_valid` training images are the
    validation split, the t10k files the test split.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST IDX: folder not found: {folder}")
    train = read_idx(_find(folder, "train-images-idx3-ubyte"))
    test = read_idx(_find(folder, "t10k-images-idx3-ubyte"))
    if train.ndim != 3 or test.ndim != 3 or train.shape[1:] != test.shape[1:]:
        raise ValueError(f"MNIST IDX: expected images of shape (n, H, W), got {train.shape} and {test.shape}")
    if not 0 < n_valid < len(train):
        raise ValueError(f"MNIST IDX: n_valid must be in 1..{len(train) - 1}, got {n_valid}")
    labels = None
    try:
        ytr = read_idx(_find(folder, "train-labels-idx1-ubyte")).astype(np.int64)
        yte = read_idx(_find(folder, "t10k-labels-idx1-ubyte")).astype(np.int64)
        labels = {"train": ytr[:-n_valid], "valid": ytr[-n_valid:], "test": yte}
    except FileNotFoundError:
        pass
    shape = train.shape[1:]
    flat = lambda a: a.reshape(len(a), -1)
    if binarization is None:
        x_tr, x_te, kind, levels = flat(train).astype(np.int64), flat(test).astype(np.int64), "categorical", 256
    else:
        # one draw over train and test, so that a seed fixes the whole data set
        x = binarize(np.concatenate([flat(train), flat(test)]) / 255.0, binarization, threshold, seed)
        x_tr, x_te, kind, levels = x[:len(train)], x[len(train):], "binary", 2
    return Dataset(f"mnist-{binarization or 'levels'}", kind, x_tr[:-n_valid], x_tr[-n_valid:], x_te,
                   n_dims=int(np.prod(shape)), n_levels=levels, image_shape=tuple(shape), labels=labels)


# ----------------------------------------------------------------------- text
def default_corpus():
    """(name, text): English documentation that ships inside Python's standard library.

    First choice: pydoc_data.topics, the ~460,000 characters of the language reference
    that `help()` shows, joined in sorted topic order. Fallback (a Python built without
    pydoc_data): the docstrings of a fixed list of standard-library modules.
    """
    try:
        from pydoc_data.topics import topics
        return "pydoc_data.topics", "\n\n".join(topics[k] for k in sorted(topics))
    except ImportError:
        pass
    import importlib
    docs = []
    for name in ("argparse", "collections", "csv", "dataclasses", "decimal", "difflib", "doctest", "email",
                 "fractions", "functools", "heapq", "inspect", "json", "logging", "pickle", "re",
                 "string", "subprocess", "textwrap", "typing", "unittest", "urllib", "zipfile"):
        try:
            doc = importlib.import_module(name).__doc__
        except ImportError:
            continue
        if doc:
            docs.append(doc)
    text = "\n\n".join(docs)
    if len(text) < 10000:
        raise RuntimeError("text: this Python ships neither pydoc_data nor module docstrings (-OO?); "
                           "pass a text file: data.text(path) or --text FILE")
    return "stdlib docstrings", text


def text(path=None, seq_len=64, vocab=None, splits=(0.9, 0.05, 0.05)):
    """The characters of a text as integer ids, cut into sequences of `seq_len`.

    The stream of ids is split in order (first 90% train, next 5% valid, last 5% test, so no
    sequence straddles two splits), then each split is cut into non-overlapping rows of
    seq_len ids (the tail that does not fill a row is dropped). The vocabulary is the sorted
    set of characters of the whole text, unless `vocab` (a list of characters) is given.
    """
    if path is None:
        name, content = default_corpus()
    else:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"text: file not found: {path}")
        if path.is_dir():
            raise IsADirectoryError(f"text: expected a text file, got the folder {path}")
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"text: {path} is not UTF-8 text ({e})") from None
        name = path.name
    if seq_len < 2:
        raise ValueError(f"text: seq_len must be at least 2, got {seq_len}")
    vocab = sorted(set(content)) if vocab is None else list(vocab)
    index = {c: k for k, c in enumerate(vocab)}
    unknown = set(content) - set(index)
    if unknown:
        raise ValueError(f"text: characters {sorted(unknown)[:10]} are not in the given vocabulary")
    ids = np.fromiter((index[c] for c in content), dtype=np.int64, count=len(content))
    # round the cumulative fractions (not each split), so the bounds never pass the end of the text
    bounds = np.minimum(np.round(np.cumsum([0, *splits]) * len(ids)).astype(np.int64), len(ids))
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = (b - a) // seq_len
        parts.append(ids[a:a + rows * seq_len].reshape(rows, seq_len))
    if min(len(p) for p in parts) == 0:
        raise ValueError(f"text: {name} has {len(content)} characters, too few for a train, valid and "
                         f"test sequence each of seq_len {seq_len}; use a longer text or a shorter seq_len")
    return Dataset(f"text:{name}", "tokens", *parts, n_dims=seq_len, n_levels=len(vocab), vocab=vocab,
                   stream=True)


def decode(ids, vocab):
    """A row of ids as a string."""
    return "".join(vocab[int(i)] for i in ids)


# ----------------------------------------------------------------- user arrays
def infer_kind(x):
    """'binary' if every value is 0 or 1, 'categorical' if they are non-negative integers, else 'continuous'."""
    if np.isin(x, (0, 1)).all():
        return "binary"
    if x.dtype.kind in "iub" or (x == np.round(x)).all():
        if x.min() < 0:
            raise ValueError("integer data with negative values: expected categories 0..K-1")
        return "categorical"
    return "continuous"


def check_array(x, source="array"):
    """A float or integer (n, D) or (n, H, W) array, finite, or a clear error."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{source}: expected numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 3) or x.shape[0] == 0 or x.size == 0:
        raise ValueError(f"{source}: expected an array of shape (n_examples, D) or (n_examples, H, W), "
                         f"got shape {x.shape}")
    if x.dtype.kind == "f":
        if np.isnan(x).any():
            row = int(np.isnan(x).reshape(len(x), -1).any(axis=1).argmax())
            raise ValueError(f"{source}: contains NaN (first in row {row})")
        if not np.isfinite(x).all():
            raise ValueError(f"{source}: contains inf")
    return x


def _as_dataset(name, arrays, kind=None):
    """A Dataset from a dict split -> array (each (n, D) or (n, H, W))."""
    shapes = {s: a.shape[1:] for s, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{name}: the splits have different example shapes {shapes}")
    shape = shapes["train"]
    flat = {s: a.reshape(len(a), -1) for s, a in arrays.items()}
    everything = np.concatenate(list(flat.values()))
    try:
        kind = kind or infer_kind(everything)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if kind == "binary":
        check_fits_kind(everything, "binary", name)
        flat = {s: a.astype(np.float32) for s, a in flat.items()}
        levels = 2
    elif kind in ("categorical", "tokens"):
        check_fits_kind(everything, "categorical", name)
        flat = {s: a.astype(np.int64) for s, a in flat.items()}
        levels = int(everything.max()) + 1
    else:
        flat = {s: a.astype(np.float32) for s, a in flat.items()}
        levels = None
    D = flat["train"].shape[1]
    if len(shape) == 2:
        image_shape = tuple(int(s) for s in shape)
    elif kind != "tokens" and int(round(np.sqrt(D))) ** 2 == D and D > 1:
        side = int(round(np.sqrt(D)))
        image_shape = (side, side)
    else:
        image_shape = None
    return Dataset(name, kind, flat["train"], flat["valid"], flat["test"], n_dims=D, n_levels=levels,
                   image_shape=image_shape)


def from_array(path, kind=None, seed=0, splits=(0.8, 0.1, 0.1)):
    """A user's .npy or .npz array as a Dataset.

    .npz with keys 'train', 'valid', 'test': those splits. Any other .npz must hold one array;
    a .npy holds one array. One array is shuffled with `seed` and split by `splits`.
    An array is (n, D) or (n, H, W) (images, flattened row by row). kind is inferred when None:
    'binary' if all values are 0/1, 'categorical' for non-negative integers, else 'continuous'.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: expected a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:           # numpy raises several types for a damaged file
        raise ValueError(f"{path}: cannot read it as a NumPy file ({type(e).__name__}: {e})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if {"train", "valid", "test"} <= set(keys):
                arrays = {s: check_array(loaded[s], f"{path}[{s}]") for s in ("train", "valid", "test")}
                return _as_dataset(path.name, arrays, kind)
            if len(keys) != 1:
                raise ValueError(f"{path}: expected keys 'train', 'valid', 'test' or a single array, "
                                 f"got keys {keys}")
            x = loaded[keys[0]]
    else:
        x = loaded
    x = check_array(x, str(path))
    if len(x) < 3:
        raise ValueError(f"{path}: need at least 3 examples to split, got {len(x)}")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = max(1, int(round(splits[0] * len(x))))
    n_valid = max(1, int(round(splits[1] * len(x))))
    n_train = min(n_train, len(x) - 2)
    parts = np.split(x[perm], [n_train, n_train + n_valid])
    return _as_dataset(path.name, dict(zip(("train", "valid", "test"), parts)), kind)


# ------------------------------------------------------------ fit to a model
def check_fits_kind(x, kind, source="data", n_levels=None):
    """Check that the values of x are ones a model of `kind` can score; a clear error if not."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise ValueError(f"{source}: contains NaN")
    if kind == "binary":
        if not np.isin(x, (0, 1)).all():
            bad = x[~np.isin(x, (0, 1))].flat[0].item()
            raise ValueError(f"{source}: a Bernoulli (binary) model needs values in {{0, 1}}, found {bad!r}; "
                             "binarize the data first (e.g. data.digits(form='binary'), data.binarize)")
    elif kind in ("categorical", "tokens"):
        if x.dtype.kind == "f" and not (x == np.round(x)).all():
            raise ValueError(f"{source}: a categorical model needs integer values, found non-integers "
                             f"such as {x[x != np.round(x)].flat[0].item()!r}")
        if x.size and x.min() < 0:
            raise ValueError(f"{source}: a categorical model needs values >= 0, found {x.min().item()}")
        if n_levels is not None and x.size and x.max() >= n_levels:
            raise ValueError(f"{source}: values go up to {x.max().item()}, the model has only {n_levels} levels")
    elif kind == "continuous":
        if not np.isfinite(x).all():
            raise ValueError(f"{source}: contains inf")
    else:
        raise ValueError(f"unknown data kind {kind!r}: expected one of {KINDS}")


def check_fits(dataset, model):
    """A clear error unless every split of `dataset` has the size and values that `model` scores
    (`model` a model, or a model class: then only the kind of values is checked)."""
    kind = model.data_kind
    n_dims = getattr(model, "n_dims", None) if not isinstance(model, type) else None
    n_levels = None if isinstance(model, type) else \
        getattr(model, "n_levels", None) or getattr(model, "vocab_size", None)
    if kind != "tokens" and n_dims is not None and n_dims != dataset.n_dims:
        raise ValueError(f"{type(model).__name__} models D = {n_dims} dimensions, "
                         f"the data set {dataset.name} has D = {dataset.n_dims}")
    for split in ("train", "valid", "test"):
        check_fits_kind(dataset.split(split), kind, f"{dataset.name} ({split})", n_levels)


# ------------------------------------------------------ the command line's --data
# `--data digits` gives each model the form it scores; token models (RNN, Transformer) get the
# binarized digits too, so that every model's figure on the digits is on the same data.
DIGITS_FORM = {"binary": "binary", "categorical": "levels", "continuous": "continuous", "tokens": "binary"}


def from_spec(spec, data_kind="binary", text_path=None, seq_len=64, seed=0):
    """The data set a command line names (python -m tinyar train MODEL --data SPEC):

    digits                 the digits, in the form the model scores (binary for a Bernoulli
                           or token model, the 17 levels for a categorical one, dequantized
                           for a continuous one)
    digits-binary, digits-levels, digits-continuous    one form explicitly
    photos                 8x8 colour patches of the photographs in scikit-learn, 256 levels
                           (photo_patches); photos-K: quantized to K levels (e.g. photos-4)
    mnist                  binarized MNIST (downloaded once, see binarized_mnist)
    mnist-idx:FOLDER       MNIST from IDX files in FOLDER, binarized at 0.5
    text                   characters of text_path (default: Python's bundled documentation)
    PATH.npy, PATH.npz     a user's array (see from_array)
    """
    spec = str(spec)
    if spec == "digits":
        if data_kind not in DIGITS_FORM:
            raise ValueError(f"unknown data kind {data_kind!r}: expected one of {KINDS}")
        return digits(DIGITS_FORM[data_kind], seed=seed)
    if spec.startswith("digits-"):
        return digits(spec[len("digits-"):], seed=seed)
    if spec == "photos":
        return photo_patches()
    if spec.startswith("photos-") and spec[len("photos-"):].isdigit():
        return photo_patches(levels=int(spec[len("photos-"):]))
    if spec == "mnist":
        return binarized_mnist()
    if spec.startswith("mnist-idx:"):
        return mnist_idx(spec[len("mnist-idx:"):], seed=seed)
    if spec == "text":
        return text(text_path, seq_len=seq_len)
    if spec.endswith((".npy", ".npz")):
        return from_array(spec, seed=seed)
    raise ValueError(f"unknown data set {spec!r}: expected digits, digits-binary, digits-levels, "
                     "digits-continuous, photos, photos-K (K levels), mnist, mnist-idx:FOLDER, text, or a PATH.npy / PATH.npz file")


# ----------------------------------------------------------------- minibatches
def batches(x, batch_size, rng=None, shuffle=True, drop_last=False):
    """Yield minibatches of the rows of x: a fresh permutation drawn from rng on each call.

    The same rng state gives the same batches, so a seeded run is reproducible.
    """
    n = len(x)
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
    order = as_rng(rng).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield x[order[start:start + batch_size]]


def stream_batches(x, batch_size):
    """Minibatches for truncated BPTT, when the rows of x are consecutive pieces of one stream.

    The n rows become batch_size parallel streams of m = n // batch_size rows each
    (stream b: rows b m .. b m + m - 1, a contiguous stretch of the text), and minibatch k
    holds row k of every stream, so that minibatch k + 1 continues minibatch k row by row:

        minibatch:     0        1        ...   m-1
        stream 0:    row 0    row 1      ...   row m-1
        stream 1:    row m    row m+1    ...   row 2m-1
        stream b:    row bm   row bm+1   ...   row bm+m-1

    The last n - batch_size m rows are left out (fewer rows than batch_size: one stream each).
    """
    n = len(x)
    if batch_size < 1:
        raise ValueError(f"stream_batches: batch_size must be >= 1, got {batch_size}")
    if n == 0:
        raise ValueError("stream_batches: no rows to read")
    batch_size = min(batch_size, n)
    m = n // batch_size
    rows = np.arange(batch_size * m).reshape(batch_size, m)          # rows[b, k]: row k of stream b
    for k in range(m):
        yield x[rows[:, k]]


def parallel_streams(ids, batch_size):
    """One long (n,) stream of ids as batch_size parallel streams, an array (batch_size, n // batch_size):
    row b is the b-th contiguous stretch, so that piece k of row b continues piece k-1 of row b."""
    ids = np.asarray(ids).reshape(-1)
    n = len(ids) // batch_size
    if n < 2:
        raise ValueError(f"parallel_streams: {len(ids)} ids are too few for {batch_size} parallel streams")
    return ids[:n * batch_size].reshape(batch_size, n)


def fingerprint(x):
    """A short hash of an array (shape, dtype and bytes), to record which data a run saw."""
    h = hashlib.sha256(json.dumps([list(x.shape), str(x.dtype)]).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:16]
