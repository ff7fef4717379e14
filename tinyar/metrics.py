"""How well a model fits: negative log-likelihood in nats and in bits per dimension.

    NLL       = -(1/N) sum_n log p(x_n)            nats per example
    bits/dim  = NLL / (D ln 2)                     bits per dimension

The NLL on held-out data estimates the cross-entropy H(p_data, p_theta) =
H(p_data) + KL(p_data || p_theta): lower is better, and the difference between two
models' NLLs on the same data is the difference of their KLs to the data [1].

For a density on dequantized data (x + u) / K with u ~ U[0, 1) (data.digits(form=
"continuous")), NLL + D log K upper-bounds the NLL of the K-level discrete data
(Jensen: -log P(x) <= E_u[-log p((x + u) / K)] + D log K):
pass `dequantized_levels=K` to bits_per_dim to report it on that scale.

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
"""
from __future__ import annotations

import math

import numpy as np

from tinyar.tensor import no_grad


def log_likelihoods(model, x, batch_size=1000):
    """log p(x_n) for every row of x, in nats, as a float64 array (no graph is built)."""
    x = np.asarray(x)
    out = np.empty(len(x), dtype=np.float64)
    with no_grad():
        for start in range(0, len(x), batch_size):
            out[start:start + batch_size] = model.log_prob(x[start:start + batch_size]).data
    return out


def nll(model, x, batch_size=1000):
    """Mean negative log-likelihood of the rows of x, in nats per example."""
    if len(x) == 0:
        raise ValueError("nll: no examples")
    return float(-log_likelihoods(model, x, batch_size).mean())


def bits_per_dim(nll_nats, n_dims, dequantized_levels=None):
    """NLL in nats per example -> bits per dimension: nll / (D ln 2).

    dequantized_levels=K: the NLL is of a density on (x + u) / K; report the discrete
    K-level data's bound (nll + D log K) / (D ln 2) instead.
    """
    if dequantized_levels is not None:
        nll_nats = nll_nats + n_dims * math.log(dequantized_levels)
    return nll_nats / (n_dims * math.log(2))
