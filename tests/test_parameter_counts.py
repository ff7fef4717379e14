"""Parameter counts: stored (every entry) and free (only what a mask lets through),
n_parameters() and n_parameters(free=True), for every masked model, counted independently."""
import numpy as np

from tinyar.models import FVSBN, CategoricalMADE, GatedPixelCNN, MADE, NADE, PixelCNN, Transformer
from tinyar.nn import Linear, MaskedLinear, Module, Parameter


def test_fvsbn_d64_stores_4160_parameters_of_which_2080_are_free():
    model = FVSBN(64)
    assert model.n_parameters() == 64 * 64 + 64 == 4160                       # W (D, D) and b (D,)
    assert model.n_parameters(free=True) == 64 * 63 // 2 + 64 == 2080         # W strictly lower triangular, b
    assert FVSBN(5, order=[3, 1, 4, 0, 2]).n_parameters(free=True) == 10 + 5   # any ordering: D(D-1)/2 + D


def test_made_free_count_is_the_nonzeros_of_its_masks_plus_the_biases():
    model = MADE(64, n_hidden=[500], rng=0)
    _, _, (hidden, output, _) = model.draw_mask(0)                            # the masks, from the degrees
    connected = hidden[0].sum() + output.sum()
    assert model.n_parameters() == 500 * 64 + 500 + 64 * 500 + 64 == 64564
    assert model.n_parameters(free=True) == connected + 500 + 64 == 32564


def test_categorical_made_with_direct_connections_counts_k_inputs_and_k_outputs_per_dimension():
    D, K, H = 5, 3, [6, 4]
    model = CategoricalMADE(D, n_levels=K, n_hidden=H, direct=True, rng=0)
    _, _, (hidden, output, direct) = model.draw_mask(0)
    weights = hidden[0].sum() * K + hidden[1].sum() + output.sum() * K + direct.sum() * K * K
    biases = H[0] + H[1] + D * K                                              # the direct layer has none
    assert model.n_parameters(free=True) == weights + biases
    assert model.n_parameters() == D * K * H[0] + H[0] * H[1] + H[1] * D * K + (D * K) ** 2 + biases


def test_pixelcnn_free_count_leaves_out_the_dead_taps():
    """3x3 mask A keeps 4 taps, 3x3 mask B 5, a 1x1 mask B its one tap."""
    model = PixelCNN(16, n_channels=2, n_layers=1, kernel_size=3, first_kernel_size=3, rng=0)
    stored = (2 * 1 * 9 + 2) + (2 * 2 * 9 + 2) + (2 * 2 + 2) + (1 * 2 + 1)   # conv_in, layer, out_hidden, out_logits
    free = (2 * 1 * 4 + 2) + (2 * 2 * 5 + 2) + (2 * 2 + 2) + (1 * 2 + 1)
    assert (model.n_parameters(), model.n_parameters(free=True)) == (stored, free) == (67, 41)


def test_gated_pixelcnn_free_count_uses_each_stacks_mask():
    """The vertical 3x3 stack keeps its top two rows (6 taps), the 1x3 horizontal mask A one tap."""
    model = GatedPixelCNN(16, n_channels=1, n_layers=0, first_kernel_size=3, rng=0)
    stored = (2 * 9 + 2) + (2 * 3 + 2) + (2 * 2 + 2) + (1 + 1) + (1 + 1) + (1 + 1)
    free = (2 * 6 + 2) + (2 * 1 + 2) + (2 * 2 + 2) + (1 + 1) + (1 + 1) + (1 + 1)
    assert (model.n_parameters(), model.n_parameters(free=True)) == (stored, free) == (40, 30)


def test_models_without_masks_have_every_parameter_free():
    for model in (NADE(10, n_hidden=4), Transformer(3, max_len=4, n_layers=1, d_model=8, n_heads=2, d_mlp=8)):
        assert model.n_parameters(free=True) == model.n_parameters() > 0


def test_a_shared_masked_weight_counts_once_and_a_custom_mask_is_honoured():
    class Tied(Module):
        def __init__(self):
            self.a = MaskedLinear(3, 2, rng=0)
            self.a.set_mask(np.array([[1, 0, 0], [1, 1, 0]]))
            self.b = self.a                                          # the same layer twice
            self.plain = Linear(2, 2, rng=0)
            self.scale = Parameter(np.ones((2, 2)))

        def weight_masks(self):
            return {"scale": np.array([1, 0])}                       # broadcast over rows: 2 of 4 used

    tied = Tied()
    assert tied.n_parameters() == (6 + 2) + (4 + 2) + 4
    assert tied.n_parameters(free=True) == (3 + 2) + (4 + 2) + 2
