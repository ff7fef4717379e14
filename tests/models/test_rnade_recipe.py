"""RNADE's scale bounds follow the data, and its default recipe trains stably: the validation NLL
falls epoch after epoch, and the numba kernels and the NumPy twins end where each other end."""
import math

import numpy as np
import pytest

from tinyar import data, metrics, train
from tinyar.models import RNADE


def digits():
    return data.digits("continuous")


def without_levels(dataset, factor=1.0):
    """The same values times `factor`, as plain continuous data (no dequantized_levels)."""
    return data.Dataset(dataset.name, "continuous", *(factor * x for x in (dataset.train, dataset.valid, dataset.test)),
                        n_dims=dataset.n_dims)


def initial_scales(model):
    """exp(log s) of every component at the initial output biases, (D, M)."""
    M, lo, hi = model.n_components, model.log_scale_min, model.log_scale_max
    return np.exp(lo + (hi - lo) / (1 + np.exp(-model.b.data[:, 2 * M:].astype(np.float64))))


def test_scale_bounds_come_from_the_levels_and_the_range_of_the_data():
    dataset = digits()
    model = RNADE.for_dataset(dataset, n_hidden=4, rng=0)
    r0, r1 = model.init_range
    assert model.log_scale_min == pytest.approx(math.log(1 / 17 / math.sqrt(12)))          # -4.07
    assert model.log_scale_max == pytest.approx(math.log(r1 - r0) + 1)
    # without levels: scales from e^-7 to e times the range ([-7, 1] on [0, 1])
    assert RNADE.for_dataset(without_levels(dataset), n_hidden=4).log_scale_min == pytest.approx(math.log(r1 - r0) - 7)
    assert (RNADE(3).log_scale_min, RNADE(3).log_scale_max) == (-7.0, 1.0)


def test_data_on_0_to_255_start_as_wide_as_the_docstring_says():
    """Each component starts (r1 - r0) / (2 M) wide whatever the data's units; rescaling the data
    moves both bounds by log 255."""
    small, large = without_levels(digits()), without_levels(digits(), 255.0)
    model_small = RNADE.for_dataset(small, n_hidden=4, rng=0)
    model_large = RNADE.for_dataset(large, n_hidden=4, rng=0)
    r0, r1 = model_large.init_range
    np.testing.assert_allclose(initial_scales(model_large), (r1 - r0) / (2 * 5), rtol=1e-5)
    assert (r1 - r0) / 10 > 20                                      # far above e = exp(1)
    assert model_large.log_scale_min - model_small.log_scale_min == pytest.approx(math.log(255.0))
    assert model_large.log_scale_max - model_small.log_scale_max == pytest.approx(math.log(255.0))


def test_the_bounds_are_in_the_config_and_a_checkpoint_reloads_the_same_model(tmp_path):
    model = RNADE.for_dataset(digits(), n_hidden=6, rng=1)
    assert model.config["log_scale_min"] == model.log_scale_min
    assert model.config["log_scale_max"] == model.log_scale_max
    train.save(model, tmp_path / "model.npz")
    loaded = train.load(tmp_path / "model.npz")
    assert (loaded.log_scale_min, loaded.log_scale_max) == (model.log_scale_min, model.log_scale_max)
    x = digits().test[:10]
    assert metrics.nll(loaded, x) == metrics.nll(model, x)
    old = RNADE(**dict(model.config, log_scale_min=-7.0, log_scale_max=1.0))       # explicit bounds are kept
    assert (old.log_scale_min, old.log_scale_max) == (-7.0, 1.0)


def test_bounds_that_leave_no_room_get_a_clear_error():
    with pytest.raises(ValueError, match="levels 10 apart leave no scales"):
        RNADE.log_scale_bounds([0.0, 0.5], level_spacing=10.0)
    with pytest.raises(ValueError, match="init_range must be two finite numbers"):
        RNADE(3, init_range=[1.0, 1.0])


def recipe_curve(monkeypatch, kernels, epochs, n_train=None, recipe=None):
    """The validation NLLs over the first `epochs` epochs of `recipe` (default: RNADE.recipe: its
    lr, momentum, clip, batch size, model size, and its schedule over ITS epochs) on the digits,
    trained on the first n_train images (None: all), on the numba kernels or the NumPy twins."""
    monkeypatch.setenv("TINYAR_KERNELS", kernels)
    dataset, recipe = digits(), recipe or RNADE.recipe
    train_x = dataset.train[:n_train]
    model = RNADE.for_dataset(dataset, rng=np.random.default_rng(0), **recipe["model"])
    optimizer, schedule = train.make_optimizer(model, recipe, len(train_x))
    history = train.fit(model, train_x, dataset.valid, optimizer, epochs=epochs,
                        batch_size=recipe["batch_size"], clip=recipe.get("clip"), schedule=schedule,
                        progress=False, log=lambda message: None)
    return [entry["valid_nll"] for entry in history["epochs"]]


def test_the_validation_nll_falls_every_epoch_at_the_start_of_the_recipe(monkeypatch):
    """The first 6 of the recipe's 200 epochs on the digits (72 steps at nearly the full learning
    rate): the validation NLL falls every epoch (tolerance 0), by over 40 nats in all."""
    curve = recipe_curve(monkeypatch, "numba", epochs=6)
    assert all(later < earlier for earlier, later in zip(curve, curve[1:])), curve
    assert curve[-1] < curve[0] - 40, curve


def test_the_numba_kernels_and_the_numpy_twins_end_the_recipe_together(monkeypatch):
    """The recipe on a small budget (6 epochs, its schedule over those 6, on 600 images): the two
    paths, whose log-likelihoods differ in the last digits of float32, end within 0.05 nats."""
    recipe = dict(RNADE.recipe, epochs=6)
    compiled = recipe_curve(monkeypatch, "numba", epochs=6, n_train=600, recipe=recipe)
    twins = recipe_curve(monkeypatch, "numpy", epochs=6, n_train=600, recipe=recipe)
    assert abs(compiled[-1] - twins[-1]) < 0.05, (compiled, twins)
    assert compiled[-1] < compiled[0] - 10, compiled                      # and it did learn
