"""Every autoregressive model of tinyar, each exported by its plain name.

All share one interface (models/base.py): log_prob(x) -> Tensor (batch,) in nats,
sample(n, rng) -> np.ndarray, parameters(), state_dict(), load_state_dict(),
for_dataset(dataset), and gradcheck_example() -> (a small float64 model, a batch).

REGISTRY maps the command line's model names (python -m tinyar train NAME) to classes.
"""
__all__ = []
REGISTRY = {}

# ==== FVSBN ====
# ==== NADE, CategoricalNADE, RNADE ====
# ==== MADE ====
# ==== RNN ====
# ==== Transformer ====
# ==== PixelCNN, GatedPixelCNN ====
