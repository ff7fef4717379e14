"""The models under misuse: each bad argument gets a clear error naming what was expected and
what came, and the edge cases that are not errors (no samples, an empty batch) work."""
import numpy as np
import pytest

from tinyar.models import REGISTRY, CategoricalMADE, CategoricalNADE, MADE, NADE, PixelRNN, RNN, Transformer
from tinyar.checks import check_n_samples, check_temperature


def small_text_models():
    """The three samplers that take a temperature, each small."""
    return [Transformer(3, max_len=5, n_layers=1, d_model=8, n_heads=2, d_mlp=8, rng=0),
            RNN(3, n_hidden=4, seq_len=5, rng=0),
            PixelRNN(5, n_hidden=4, rng=0)]


# ---------------------------------------------------------------- temperature
@pytest.mark.parametrize("model", small_text_models(), ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 0.0, -1.0, np.float32("nan")])
def test_every_sampler_refuses_a_temperature_that_is_not_finite_and_positive(model, temperature):
    with pytest.raises(ValueError, match=rf"{type(model).__name__}: need temperature > 0 \(a finite number\), got temperature="):
        model.sample(2, rng=0, temperature=temperature)


@pytest.mark.parametrize("model", small_text_models(), ids=lambda m: type(m).__name__)
def test_a_temperature_that_is_not_a_number_is_a_type_error(model):
    with pytest.raises(TypeError, match="temperature must be a number, got '0.5'"):
        model.sample(2, rng=0, temperature="0.5")


def test_check_temperature_returns_the_number_as_a_float():
    assert check_temperature(2, "M") == 2.0 and type(check_temperature(np.float32(0.5), "M")) is float
    with pytest.raises(TypeError, match="got True"):
        check_temperature(True, "M")


# ---------------------------------------------------------------- the number of samples
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_takes_only_a_non_negative_int_number_of_samples(name):
    model, x = REGISTRY[name].gradcheck_example()
    who = type(model).__name__
    for bad in (2.5, "3", None, True):
        with pytest.raises(TypeError, match=f"{who}.sample: n must be a whole number, got"):
            model.sample(bad, rng=0)
    with pytest.raises(ValueError, match=f"{who}.sample: need n >= 0, got n=-1"):
        model.sample(-1, rng=0)
    assert model.sample(0, rng=0).shape[0] == 0
    assert model.sample(np.int64(2), rng=0).shape[0] == 2


def test_check_n_samples_returns_a_plain_int():
    assert check_n_samples(np.int32(3), "M") == 3 and type(check_n_samples(np.int32(3), "M")) is int


# ---------------------------------------------------------------- inputs
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_scores_an_empty_batch_as_an_empty_array(name):
    model, x = REGISTRY[name].gradcheck_example()
    log_p = model.log_prob(np.asarray(x)[:0])
    assert log_p.shape == (0,)


@pytest.mark.parametrize("name", sorted(n for n, cls in REGISTRY.items() if cls.data_kind == "binary"))
def test_binary_models_refuse_complex_input(name):
    model, x = REGISTRY[name].gradcheck_example()
    x = np.asarray(x).astype(np.complex128)                        # 0 and 1 as 0+0j and 1+0j
    with pytest.raises(TypeError, match="expected real values, got complex dtype complex128"):
        model.log_prob(x)


@pytest.mark.parametrize("model", [
    CategoricalNADE(4, n_levels=17, n_hidden=3, rng=0),
    CategoricalMADE(4, n_levels=17, n_hidden=[5], rng=0),
    Transformer(17, max_len=4, n_layers=1, d_model=8, n_heads=2, d_mlp=8, rng=0),
    RNN(17, n_hidden=4, seq_len=4, rng=0),
], ids=lambda m: type(m).__name__)
def test_a_float_id_out_of_range_is_reported_as_the_value_given(model):
    x = np.array([[0.0, 3.0, 1e20, 16.0]])
    with pytest.raises(ValueError, match=r"0\.\.16, got values in 0(\.0)?\.\.1e\+20"):
        model.log_prob(x)


# ---------------------------------------------------------------- ensembles
def test_an_ensemble_of_no_member_is_a_clear_error():
    nade = NADE(4, n_hidden=3, rng=0)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"NADE.ensemble_log_prob: need n_orderings >= 1, got n_orderings={bad}"):
            nade.ensemble_log_prob(np.zeros((2, 4)), n_orderings=bad)
    with pytest.raises(TypeError, match="NADE.ensemble_log_prob: n_orderings must be a whole number, got 2.5"):
        nade.ensemble_log_prob(np.zeros((2, 4)), n_orderings=2.5)
    assert nade.ensemble_log_prob(np.zeros((2, 4)), n_orderings=1).shape == (2,)
    made = MADE(4, n_hidden=[5], n_masks=3, rng=0)
    with pytest.raises(ValueError, match=r"MADE.ensemble_log_prob: masks is empty; .* 0\.\.2"):
        made.ensemble_log_prob(np.zeros((2, 4)), masks=[])


@pytest.mark.parametrize("model", small_text_models()[:2], ids=lambda m: type(m).__name__)
def test_a_negative_length_is_a_clear_error(model):
    with pytest.raises(ValueError, match=f"{type(model).__name__}: .*length >= 0") as error:
        model.sample(2, rng=0, length=-1)
    assert "-1" in str(error.value)
    assert model.sample(2, rng=0, length=0).shape == (2, 0)
