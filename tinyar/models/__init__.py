"""Every autoregressive model of tinyar, each exported by its plain name.

All share one interface (models/base.py): log_prob(x) -> Tensor (batch,) in nats,
sample(n, rng) -> np.ndarray, parameters(), state_dict(), load_state_dict(),
for_dataset(dataset), and gradcheck_example() -> (a small float64 model, a batch).

REGISTRY maps the command line's model names (python -m tinyar train NAME) to classes.
"""
__all__ = []
REGISTRY = {}

# ==== FVSBN ====
from tinyar.models.fvsbn import FVSBN
__all__ += ["FVSBN"]
REGISTRY.update({"fvsbn": FVSBN})
# ==== NADE, CategoricalNADE, RNADE ====
from tinyar.models.nade import NADE, CategoricalNADE, RNADE  # noqa: E402
__all__ += ["NADE", "CategoricalNADE", "RNADE"]
REGISTRY.update({"nade": NADE, "nade-categorical": CategoricalNADE, "rnade": RNADE})
# ==== MADE ====
from tinyar.models.made import MADE, CategoricalMADE  # noqa: E402
__all__ += ["MADE", "CategoricalMADE"]
REGISTRY.update({"made": MADE, "made-categorical": CategoricalMADE})
# ==== RNN ====
from tinyar.models.rnn import RNN, PixelRNN  # noqa: E402
__all__ += ["RNN", "PixelRNN"]
REGISTRY.update({"char-rnn": RNN, "pixel-rnn": PixelRNN})
# ==== Transformer ====
from tinyar.models.transformer import Transformer  # noqa: E402
__all__ += ["Transformer"]
REGISTRY.update({"transformer": Transformer})
# ==== PixelCNN, GatedPixelCNN ====
from tinyar.models.pixelcnn import PixelCNN, GatedPixelCNN, ColourPixelCNN  # noqa: E402
__all__ += ["PixelCNN", "GatedPixelCNN", "ColourPixelCNN"]
REGISTRY.update({"pixelcnn": PixelCNN, "gated-pixelcnn": GatedPixelCNN, "pixelcnn-colour": ColourPixelCNN})
