"""What every tinyar model shares: the interface, input checks and its constructor record.

A model of vectors x in R^D (or {0,1}^D, or {0..K-1}^D) defines

    log_prob(x)      Tensor (batch,): log p(x) = sum_i log p(x_i | x_<i), in nats
    sample(n, rng)   np.ndarray (n, D), drawn one dimension at a time in the model's order

and, for the gradcheck table, the classmethod gradcheck_example() -> (small float64
model, batch). A model of token sequences (TokenModel: the RNN, the Transformer) takes
(batch, T) integer ids instead, and may carry a vocabulary to encode a prompt string.

`config` holds the constructor's arguments, so that a checkpoint (train.py) can
rebuild the model by calling the class with them; every model sets it at the end
of its __init__.

`data_kind` says what values the model scores: "binary" ({0, 1}), "categorical"
(0..n_levels-1), "continuous" (real numbers) or "tokens" (ids 0..vocab_size-1).
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

import numpy as np

from tinyar.distributions import check_binary, check_categories, check_real
from tinyar.nn import Module
from tinyar.tensor import Tensor


class AutoregressiveModel(Module, metaclass=ABCMeta):
    """The interface; a model class that leaves an abstract method undefined cannot be built."""
    data_kind = "binary"
    config: dict
    default_data = None   # the command line's --data when none is given (None: digits, or text)
    recipe: dict = {}     # the default recipe: the 8x8 digits (the text, for a character model)
    recipes: dict = {}    # recipes for other data sets, by name, e.g. {"mnist": {...}}

    @classmethod
    def recipe_names(cls):
        """The names `recipe_named` takes: "default", then the keys of `recipes`."""
        return ["default", *cls.recipes]

    @classmethod
    def recipe_for_data(cls, spec):
        """The name of the recipe for the data set `spec` (a --data value): "mnist" for
        binarized MNIST (mnist, mnist-idx:FOLDER) when the class has one, else "default"."""
        spec = str(spec)
        name = "mnist" if spec == "mnist" or spec.startswith("mnist-idx:") else None
        return name if name in cls.recipes else "default"

    @classmethod
    def recipe_named(cls, name="default"):
        """The recipe called `name`: "default" is `recipe`, any other a key of `recipes`."""
        if name == "default":
            return cls.recipe
        if name not in cls.recipes:
            raise ValueError(f"{cls.__name__} has no recipe {name!r}: expected one of {cls.recipe_names()}")
        return cls.recipes[name]

    @abstractmethod
    def log_prob(self, x):
        """Tensor (batch,): log p(x) = sum_i log p(x_i | x_<i), in nats."""

    @abstractmethod
    def sample(self, n, rng=None):
        """np.ndarray (n, D): samples drawn one dimension at a time in the model's order."""

    @classmethod
    @abstractmethod
    def gradcheck_example(cls):
        """(a small float64 model, a batch x) for the gradcheck table (tinyar/gradcheck_cases.py)."""

    def before_batch(self, rng):
        """Called by train.fit before each minibatch: order-agnostic models draw a new
        ordering or mask here (rng: the training run's np.random.Generator)."""

    def before_eval(self):
        """Called by train.fit before each validation and when it ends, and by train.evaluate:
        a model that switches members during training (MADE's masks) goes back to a fixed one,
        so that its score does not depend on the last minibatch."""

    @classmethod
    @abstractmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        """A model sized for a data.Dataset (its n_dims, n_levels or vocabulary)."""

    @classmethod
    def require_kind(cls, dataset, kind, name, hint):
        """A clear error unless the data set holds `kind` data (binary, categorical, ...)."""
        if dataset.kind != kind:
            raise ValueError(f"{name} models {kind} data; {dataset.name} is {dataset.kind} ({hint})")

    @classmethod
    def upgrade_config(cls, config, version):
        """The constructor arguments of a checkpoint written by tinyar's checkpoint `version`,
        made to rebuild the same model today (train.read_checkpoint). Default: unchanged."""
        return config

    def nll(self, x):
        """Mean negative log-likelihood over the batch, in nats: the training loss."""
        return -self.log_prob(x).mean()

    @property
    def dtype(self):
        return self.parameters()[0].dtype

    def check_input(self, x, n_dims=None, n_levels=None):
        """x as a (batch, D) array of the values this model scores, or a clear error.

        n_dims defaults to self.n_dims; n_levels (categorical data) to self.n_levels.
        """
        name = type(self).__name__
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        n_dims = self.n_dims if n_dims is None else n_dims
        if x.ndim == 1 and x.shape[0] == n_dims:
            raise ValueError(f"{name}: expected a batch of shape (batch, {n_dims}), got a single vector "
                             f"of shape {x.shape}; use x[None, :]")
        if x.ndim != 2 or x.shape[1] != n_dims:
            raise ValueError(f"{name}: expected shape (batch, {n_dims}), got {x.shape}")
        if x.dtype.kind == "c":                            # 1+0j == 1 would pass the value checks below
            raise TypeError(f"{name}: expected real values, got complex dtype {x.dtype}")
        if self.data_kind == "binary":
            return check_binary(x, name)
        if self.data_kind in ("categorical", "tokens"):
            K = self.n_levels if n_levels is None else n_levels
            return check_categories(x, K, name)
        return check_real(x, name)


class TokenModel(AutoregressiveModel):
    """A model of token sequences (batch, T), ids 0..vocab_size-1, with an optional vocabulary.

    `vocab` (a list of vocab_size strings, id -> character, or None) lets encode() turn a
    prompt string into ids and decode() turn ids back into text. Subclasses call
    _set_vocab(vocab_size, vocab) and define _check(x), the check of a (batch, T) id array.
    """
    data_kind = "tokens"
    vocab = None

    def _set_vocab(self, vocab_size, vocab):
        """self.vocab_size, self.n_levels (the values a token takes) and self.vocab (strings)."""
        if vocab is not None and len(vocab) != vocab_size:
            raise ValueError(f"{type(self).__name__}: vocab has {len(vocab)} entries, "
                             f"expected vocab_size = {vocab_size}")
        self.vocab_size = self.n_levels = int(vocab_size)
        self.vocab = None if vocab is None else [str(c) for c in vocab]

    def encode(self, text):
        """A string as an (n,) array of ids (needs the model's vocab)."""
        name = type(self).__name__
        if self.vocab is None:
            raise ValueError(f"{name}: this model has no vocab (build it with vocab=dataset.vocab); pass ids instead")
        index = {c: k for k, c in enumerate(self.vocab)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"{name}: characters {unknown[:10]} are not in the model's vocabulary")
        return np.array([index[c] for c in text], dtype=np.int64)

    def decode(self, ids):
        """A row of ids as a string (needs the model's vocab)."""
        if self.vocab is None:
            raise ValueError(f"{type(self).__name__}: this model has no vocab to decode with")
        return "".join(self.vocab[int(k)] for k in np.asarray(ids).reshape(-1))

    def prompt_ids(self, prompt, n):
        """The prompt of sample(n, prompt=...) as (n, t0) ids: from a string (needs vocab),
        (t0,) ids shared by all rows, (n, t0) ids, or None / empty (t0 = 0)."""
        if prompt is None or len(prompt) == 0:
            return np.zeros((n, 0), np.int64)
        ids = self.encode(prompt) if isinstance(prompt, str) else np.asarray(prompt)
        ids = np.broadcast_to(ids, (n, ids.shape[-1])) if ids.ndim == 1 else ids
        if ids.shape[0] != n:
            raise ValueError(f"{type(self).__name__}: prompt has {ids.shape[0]} rows, expected {n}")
        return self._check(ids).copy()


def resolve_order(order, n_dims, rng):
    """The ordering of the dimensions as an int array: None -> natural, "random" -> a
    permutation drawn from rng, or a given permutation (checked)."""
    if order is None or (isinstance(order, str) and order == "natural"):
        return np.arange(n_dims)
    if isinstance(order, str) and order == "random":
        return rng.permutation(n_dims)
    order = np.asarray(order)
    if order.shape != (n_dims,) or not np.array_equal(np.sort(order), np.arange(n_dims)):
        raise ValueError(f"order must be a permutation of 0..{n_dims - 1}, got {order.tolist()}")
    return order.astype(np.int64)
