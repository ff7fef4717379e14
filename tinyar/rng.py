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
