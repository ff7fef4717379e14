"""The output distributions of autoregressive conditionals, with stable log-probabilities.

Each is parameterised by unconstrained Tensors (logits, means, log-scales) so
that no exp or log of a probability is ever taken in a way that can overflow:

  Bernoulli(z):     log p(x) = x z - softplus(z)                 x in {0, 1}
                    (= x log sigma(z) + (1 - x) log(1 - sigma(z)), since log sigma(z) = z - softplus(z))
  Categorical(z):   log p(k) = z_k - logsumexp(z)                k in {0, ..., K - 1}
  MixtureOfGaussians(w, mu, log s):
                    log p(x) = logsumexp_m [ log_softmax(w)_m + log N(x; mu_m, s_m^2) ]
                    log N(x; mu, s^2) = -(x - mu)^2 / (2 s^2) - log s - log(2 pi) / 2

`log_prob` checks that its values lie in the support and says so clearly when
they do not (a Bernoulli given 0.5, a category out of range, NaN): a density
model must never return a silent wrong answer for an input it cannot score.
`sample` draws with NumPy from the current parameter values (no graph).
"""
from __future__ import annotations

import math

import numpy as np

from tinyar import fused, functional as F
from tinyar import ops
from tinyar.rng import as_rng
from tinyar.tensor import Tensor


def _values(x):
    return np.asarray(x.data if isinstance(x, Tensor) else x)


def check_binary(x, name="Bernoulli"):
    """x as an array, after checking that every value is 0 or 1."""
    x = _values(x)
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise ValueError(f"{name}: input contains NaN")
    if x.dtype == bool:
        return x
    binary = (x == 0) | (x == 1)                      # (faster than np.isin for the two values)
    if not binary.all():
        bad = x[~binary].flat[0]
        raise ValueError(f"{name}: expected binary values in {{0, 1}}, got {bad!r} "
                         "(binarize first, e.g. data.digits(form='binary'))")
    return x


def check_categories(k, n_categories, name="Categorical"):
    """k as an integer array, after checking every value is an integer in 0..K-1."""
    k = _values(k)
    if k.dtype.kind == "f":
        if np.isnan(k).any():
            raise ValueError(f"{name}: input contains NaN")
        if not np.isfinite(k).all():                  # inf == round(inf): it would pass the next check
            raise ValueError(f"{name}: input contains inf; expected integer categories 0..{n_categories - 1}")
        if not (k == np.round(k)).all():
            raise ValueError(f"{name}: expected integer categories 0..{n_categories - 1}, got non-integer values")
    elif k.dtype.kind not in "iub":
        raise TypeError(f"{name}: expected integer categories, got dtype {k.dtype}")
    if k.size and (k.min() < 0 or k.max() >= n_categories):
        raise ValueError(f"{name}: expected categories in 0..{n_categories - 1}, "
                         f"got values in {k.min()}..{k.max()}")
    return k.astype(np.int64, copy=False)


def check_real(x, name="MixtureOfGaussians"):
    """x as a float array, after checking that it is finite."""
    x = _values(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{name}: input contains NaN or inf")
    return x


class Bernoulli:
    """p(x = 1) = sigma(logits)."""

    def __init__(self, logits):
        self.logits = logits

    def log_prob(self, x):
        x = check_binary(x)
        return fused.bernoulli_log_prob(self.logits, x)                  # x z - softplus(z), one node

    def probs(self):
        return ops.stable_sigmoid(self.logits.data)

    def sample(self, rng=None):
        rng = as_rng(rng)
        return (rng.random(self.logits.shape) < self.probs()).astype(self.logits.dtype)


class Categorical:
    """p(k) = softmax(logits)_k over the last axis."""

    def __init__(self, logits):
        self.logits = logits

    def log_prob(self, k):
        K = self.logits.shape[-1]
        k = check_categories(k, K)
        return -F.cross_entropy(self.logits, k)                      # z_k - logsumexp(z)

    def probs(self):
        z = self.logits.data
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def sample(self, rng=None):
        """One category per row, by inverting the cumulative distribution."""
        rng = as_rng(rng)
        cdf = np.cumsum(self.probs(), axis=-1)
        u = rng.random(cdf.shape[:-1] + (1,)) * cdf[..., -1:]
        return np.minimum((u > cdf).sum(axis=-1), cdf.shape[-1] - 1)


class MixtureOfGaussians:
    """p(x) = sum_m softmax(weight_logits)_m N(x; means_m, exp(log_scales_m)^2), over the last axis."""

    def __init__(self, weight_logits, means, log_scales):
        self.weight_logits, self.means, self.log_scales = weight_logits, means, log_scales

    def log_prob(self, x):
        x = check_real(x)
        x = Tensor(x.astype(self.means.dtype)[..., None])                # (..., 1) against (..., M)
        z = (x - self.means) * ops.exp(-self.log_scales)                 # (x - mu) / s
        log_normal = -0.5 * z * z - self.log_scales - 0.5 * math.log(2 * math.pi)
        return F.logsumexp(F.log_softmax(self.weight_logits) + log_normal, axis=-1)

    def sample(self, rng=None):
        rng = as_rng(rng)
        component = Categorical(self.weight_logits).sample(rng)[..., None]
        mu = np.take_along_axis(self.means.data, component, axis=-1)[..., 0]
        s = np.exp(np.take_along_axis(self.log_scales.data, component, axis=-1)[..., 0])
        return mu + s * rng.standard_normal(mu.shape)
