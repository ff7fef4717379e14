"""FVSBN: normalization, the autoregressive property, gradients, sampling, checkpoints, bad input."""
import itertools

import numpy as np
import pytest
from scipy import stats

import tinyar
from tinyar.gradcheck import gradcheck
from tinyar.models import FVSBN, REGISTRY


def all_binary(D):
    return np.array(list(itertools.product([0.0, 1.0], repeat=D)))          # (2^D, D)


def random_model(D, order=None, seed=0):
    rng = np.random.default_rng(seed)
    model = FVSBN(D, order=order, init_std=0.8, rng=rng, dtype=np.float64)
    model.b.data[...] = rng.standard_normal(D)
    return model


@pytest.mark.parametrize("order", [None, "random"])
def test_probabilities_of_all_inputs_sum_to_one(order):
    model = random_model(10, order)
    log_p = model.log_prob(all_binary(10)).data
    assert log_p.shape == (1024,)
    assert abs(np.exp(log_p).sum() - 1.0) < 1e-10
    assert np.exp(log_p).std() > 1e-4                 # not the uniform distribution of a zero model


def test_zero_model_is_uniform():
    model = FVSBN(6, dtype=np.float64)
    np.testing.assert_allclose(model.log_prob(all_binary(6)).data, -6 * np.log(2), atol=1e-12)


@pytest.mark.parametrize("order", [None, "random"])
def test_autoregressive_property(order):
    D = 8
    model = random_model(D, order, seed=1)
    rng = np.random.default_rng(2)
    x = (rng.random((5, D)) < 0.5).astype(np.float64)
    p = model.conditionals(x)
    for k in range(D):
        later = model.order[k:]                         # x_{o_k} and everything after it
        y = x.copy()
        y[:, later] = 1.0 - y[:, later]
        q = model.conditionals(y)
        before_or_at = model.order[:k + 1]              # p(x_{o_j} | x_{o_<j}) for j <= k sees only x_{o_<k}
        np.testing.assert_array_equal(p[:, before_or_at], q[:, before_or_at])
        if k + 1 < D:
            assert np.abs(p[:, model.order[k + 1:]] - q[:, model.order[k + 1:]]).max() > 1e-6


def test_weights_stay_strictly_lower_triangular_in_the_ordering():
    model = random_model(6, "random", seed=3)
    rank = np.argsort(model.order)
    W = model.W.data
    allowed = rank[None, :] < rank[:, None]
    assert np.all(W[~allowed] == 0) and np.all(W[allowed] != 0)
    natural = random_model(6, None)
    assert np.all(np.triu(natural.W.data) == 0)


def test_gradcheck_of_the_loss():
    model, x = FVSBN.gradcheck_example()
    result = gradcheck(lambda W, b: model.nll(x), model.W, model.b)
    assert result["max_abs_error"] < 1e-6


def test_sample_frequencies_match_exact_probabilities():
    model = random_model(3, "random", seed=4)
    samples = model.sample(200_000, rng=np.random.default_rng(5))
    assert samples.shape == (200_000, 3) and set(np.unique(samples)) <= {0.0, 1.0}
    codes = (samples @ np.array([4, 2, 1])).astype(int)
    observed = np.bincount(codes, minlength=8)
    expected = np.exp(model.log_prob(all_binary(3)).data) * len(samples)        # same code order
    assert abs(expected.sum() - len(samples)) < 1e-6
    _, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-3
    # the test has power: the same counts against a slightly different model fail it
    other = random_model(3, "random", seed=4)
    other.b.data += 0.05
    wrong = np.exp(other.log_prob(all_binary(3)).data) * len(samples)
    assert stats.chisquare(observed, wrong)[1] < 1e-3


def test_sample_is_seeded():
    model = random_model(5)
    a = model.sample(50, rng=np.random.default_rng(0))
    b = model.sample(50, rng=np.random.default_rng(0))
    c = model.sample(50, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_config_rebuilds_an_identical_model(tmp_path):
    model = random_model(7, "random", seed=6)
    clone = type(model)(**model.config)
    clone.load_state_dict(model.state_dict())
    x = (np.random.default_rng(0).random((4, 7)) < 0.5).astype(np.float64)
    np.testing.assert_array_equal(clone.log_prob(x).data, model.log_prob(x).data)
    tinyar.save(model, tmp_path / "m.npz")
    loaded = tinyar.load(tmp_path / "m.npz")
    assert isinstance(loaded, FVSBN) and loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded.order, model.order)
    np.testing.assert_array_equal(loaded.log_prob(x).data, model.log_prob(x).data)


def test_registry_and_recipe():
    assert REGISTRY["fvsbn"] is FVSBN
    assert FVSBN.recipe["lr"] == 0.03 and FVSBN.recipe["momentum"] == 0.9
    assert FVSBN.recipe["batch_size"] == 100 and FVSBN.recipe["epochs"] == 200
    model = FVSBN(4, **FVSBN.recipe["model"])
    assert np.all(model.W.data == 0) and np.all(model.b.data == 0)


def test_for_dataset():
    from tinyar import data
    model = FVSBN.for_dataset(data.digits())
    assert model.n_dims == 64 and model.dtype == np.float32
    with pytest.raises(ValueError, match="binary"):
        FVSBN.for_dataset(data.digits("levels"))


@pytest.mark.parametrize("x, message", [
    (np.full((2, 4), 0.5), "binary values"),
    (np.array([[0.0, 1.0, np.nan, 0.0]]), "NaN"),
    (np.zeros((2, 5)), r"shape \(batch, 4\)"),
    (np.zeros(4), "single vector"),
    (np.zeros((2, 2, 2)), r"shape \(batch, 4\)"),
    (np.array([[0, 2, 1, 0]]), "binary values"),
])
def test_bad_input_gets_a_clear_error(x, message):
    model = FVSBN(4)
    with pytest.raises(ValueError, match=message):
        model.log_prob(x)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="n_dims"):
        FVSBN(0)
    with pytest.raises(ValueError, match="permutation"):
        FVSBN(3, order=[0, 0, 1])
