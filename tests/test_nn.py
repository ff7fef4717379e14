"""Module, Parameter and Linear: finding parameters, state dicts, the layer's math."""
import numpy as np
import pytest

from tinyar import Tensor, gradcheck
from tinyar.nn import Linear, Module, Parameter


class Tree(Module):
    """Parameters directly, in a list of modules, in a dict, in a tuple, nested, and shared."""

    def __init__(self):
        self.scale = Parameter(np.ones(2))
        self.layers = [Linear(3, 4, rng=0), Linear(4, 2, bias=False, rng=1)]
        self.heads = {"mu": Linear(2, 1, rng=2), "extra": [Parameter(np.zeros((2, 2)))]}
        self.pair = (Parameter(np.full(3, 2.0)), Parameter(np.full(1, 3.0)))
        self.tied = self.scale                      # the same Parameter under a second name
        self.buffer = Tensor(np.ones(5))            # a plain Tensor is not a parameter
        self.name = "tree"

    def forward(self, x):
        return self.layers[1](self.layers[0](x)) * self.scale


def test_parameters_are_found_through_attributes_lists_dicts_and_tuples():
    tree = Tree()
    names = [name for name, _ in tree.named_parameters()]
    assert names == ["scale", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                     "heads.mu.weight", "heads.mu.bias", "heads.extra.0", "pair.0", "pair.1"]
    params = tree.parameters()
    assert len(params) == 9 and len({id(p) for p in params}) == 9   # the tied one counted once
    assert tree.n_parameters() == 2 + 12 + 4 + 8 + 2 + 1 + 4 + 3 + 1
    assert all(isinstance(p, Parameter) and p.requires_grad for p in params)


def test_zero_grad_clears_every_parameter():
    tree = Tree()
    tree(Tensor(np.ones((5, 3), np.float32))).sum().backward()
    assert tree.layers[0].weight.grad is not None and tree.scale.grad is not None
    tree.zero_grad()
    assert all(p.grad is None for p in tree.parameters())


def test_state_dict_round_trip_into_a_fresh_module():
    a, b = Tree(), Tree()
    for p in a.parameters():
        p.data[...] = np.random.default_rng(p.size).standard_normal(p.shape)
    state = a.state_dict()
    assert set(state) == {name for name, _ in a.named_parameters()}
    b.load_state_dict(state)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    state["scale"][...] = 99.0                          # the state holds copies, not the live arrays
    assert not np.any(a.scale.data == 99.0)


def test_load_state_dict_names_a_missing_key():
    tree = Tree()
    state = tree.state_dict()
    del state["layers.1.weight"]
    with pytest.raises(KeyError, match=r"missing.*layers\.1\.weight"):
        Tree().load_state_dict(state)


def test_load_state_dict_names_an_unexpected_key():
    state = Tree().state_dict()
    state["layers.2.weight"] = np.zeros((1, 1))
    with pytest.raises(KeyError, match=r"unexpected.*layers\.2\.weight"):
        Tree().load_state_dict(state)


def test_load_state_dict_names_a_shape_mismatch():
    state = Tree().state_dict()
    state["heads.mu.weight"] = np.zeros((2, 1))
    with pytest.raises(ValueError, match=r"heads\.mu\.weight.*\(1, 2\).*\(2, 1\)"):
        Tree().load_state_dict(state)


def test_linear_computes_x_w_transpose_plus_b():
    layer = Linear(3, 2, rng=0)
    assert layer.weight.shape == (2, 3) and layer.bias.shape == (2,)
    assert layer.weight.dtype == np.float32
    bound = 1 / np.sqrt(3)
    assert np.all(np.abs(layer.weight.data) <= bound)
    layer.bias.data[...] = [0.5, -1.0]
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    y = layer(Tensor(x))
    assert y.shape == (4, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y.data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    np.testing.assert_allclose(Linear(3, 2, bias=False, rng=0)(Tensor(x)).data, x @ layer.weight.data.T, rtol=1e-6)


def test_linear_on_batched_inputs_and_its_gradients():
    layer = Linear(3, 2, rng=0, dtype=np.float64)
    x = Tensor(np.random.default_rng(2).standard_normal((2, 4, 3)), requires_grad=True)
    assert layer(x).shape == (2, 4, 2)
    result = gradcheck(lambda x, w, b: layer(x), x, layer.weight, layer.bias)
    assert result["max_abs_error"] < 1e-8


def test_linear_on_1d_and_3d_inputs_matches_2d():
    layer = Linear(3, 2, rng=0, dtype=np.float64)
    layer.bias.data[...] = [0.5, -1.0]
    x = np.random.default_rng(3).standard_normal((2, 4, 3))
    expected = x @ layer.weight.data.T + layer.bias.data
    np.testing.assert_allclose(layer(Tensor(x)).data, expected, rtol=1e-12)
    np.testing.assert_allclose(layer(x[0, 0]).data, expected[0, 0], rtol=1e-12)      # a plain 1-D array
    assert layer(Tensor(np.ones((0, 5, 3)))).shape == (0, 5, 2)
    x2 = Tensor(x[0], requires_grad=True)
    assert gradcheck(lambda x, w, b: layer(x), x2, layer.weight, layer.bias)["max_abs_error"] < 1e-8


def test_linear_names_a_wrong_number_of_features():
    with pytest.raises(ValueError, match=r"3 features.*\(4, 5\)"):
        Linear(3, 2)(Tensor(np.ones((4, 5), np.float32)))


def test_same_seed_same_weights_and_astype():
    a, b = Linear(5, 4, rng=7), Linear(5, 4, rng=7)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, Linear(5, 4, rng=8).weight.data)
    a.astype(np.float64)
    assert a.weight.dtype == np.float64 and a.bias.dtype == np.float64
    np.testing.assert_allclose(a.weight.data, b.weight.data)


def test_parameter_copies_its_data():
    data = np.ones(3)
    p = Parameter(data)
    p.data[0] = 5.0
    assert data[0] == 1.0
    q = Parameter(p)                                        # from another Tensor
    assert q.requires_grad and q.dtype == np.float64
    np.testing.assert_array_equal(q.data, [5.0, 1.0, 1.0])
    assert Parameter([1, 2], dtype=np.float32).dtype == np.float32


def test_a_module_without_forward_and_an_incomplete_model_get_clear_errors():
    from tinyar.models.base import AutoregressiveModel

    class Bag(Module):
        pass

    with pytest.raises(TypeError, match="Bag cannot be called: it defines no forward"):
        Bag()(1)

    class HalfAModel(AutoregressiveModel):         # no sample, gradcheck_example, for_dataset
        def log_prob(self, x):
            return x

    with pytest.raises(TypeError, match="abstract"):
        HalfAModel()
