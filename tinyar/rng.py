"""One helper shared by every layer that draws random numbers."""
import numpy as np


def as_rng(rng=None):
    """An np.random.Generator from a seed, a Generator (returned as is), or None (seed 0).

    None means seed 0, not a fresh entropy seed: tinyar is deterministic unless
    the caller asks otherwise.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng: expected a seed (int), an np.random.Generator or None, got {type(rng).__name__}")


def importance_resample(proposals, log_w, rng, who="complete"):
    """Keep one of P proposals per row, with probability proportional to its weight w = e^log_w.

    proposals (n, P, D), log_w (n, P) -> (n, D). The last step of sampling-importance-
    resampling: as P grows, the kept proposal is a draw from the target distribution.
    Rows whose weights are all 0 (or NaN) have nothing to pick from: a clear error.
    """
    n, P = log_w.shape
    top = log_w.max(axis=1, keepdims=True)                                    # (n, 1)
    bad = ~np.isfinite(top[:, 0]) | np.isnan(log_w).any(axis=1)
    if bad.any():
        raise ValueError(f"{who}: in rows {np.flatnonzero(bad)[:10].tolist()} the observed values have "
                         f"probability 0 (or NaN) under all {P} proposals, so no completion can be chosen; "
                         "the observed values are impossible under the model, or its parameters are not "
                         "finite (try an order-agnostic model, which needs no resampling, or more n_proposals)")
    w = np.exp(log_w - top)                                                   # (n, P), the largest is 1
    u = rng.random((n, 1)) * w.sum(axis=1, keepdims=True)                     # a point in [0, sum w)
    pick = (u >= np.cumsum(w, axis=1)).sum(axis=1)                            # the proposal whose interval holds it
    return proposals[np.arange(n), np.minimum(pick, P - 1)]
