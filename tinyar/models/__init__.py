"""Every autoregressive model of tinyar, each exported by its plain name.

All share one interface (see the README): log_prob(x) -> Tensor (batch,) in nats,
sample(n, rng) -> np.ndarray, parameters(), state_dict(), load_state_dict(),
and gradcheck_example() -> (a small float64 model, a batch) for the gradcheck table.
"""
__all__ = []
