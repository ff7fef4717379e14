"""metrics: batch sizes and empty inputs get one clear error; batching never changes a number."""
import numpy as np
import pytest

from tinyar import metrics
from tinyar.models import NADE

D = 5


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    m = NADE(D, n_hidden=4, order_agnostic=True, rng=rng, dtype=np.float64)
    m.b.data[...] = rng.standard_normal(m.b.shape)
    return m


@pytest.fixture(scope="module")
def x():
    return (np.random.default_rng(1).random((7, D)) < 0.5).astype(np.float64)


CALLS = {   # every metrics function that takes a batch_size, called with a given one
    "log_likelihoods": lambda m, x, b: metrics.log_likelihoods(m, x, batch_size=b),
    "model_log_likelihoods": lambda m, x, b: metrics.model_log_likelihoods(m, x, batch_size=b),
    "nll": lambda m, x, b: metrics.nll(m, x, batch_size=b),
    "ensemble_nll": lambda m, x, b: metrics.ensemble_nll(m, x, batch_size=b),
    "mle_view": lambda m, x, b: metrics.mle_view(m, x, batch_size=b),
    "exact_log_probs": lambda m, x, b: metrics.exact_log_probs(m, batch_size=b),
    "kl_monte_carlo": lambda m, x, b: metrics.kl_monte_carlo(m, m, n_samples=10, rng=0, batch_size=b),
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("bad", [0, -1, -5])
def test_a_batch_size_below_one_is_a_value_error_naming_the_function(model, x, name, bad):
    with pytest.raises(ValueError, match=rf"^{name}: need batch_size >= 1, got batch_size={bad}$"):
        CALLS[name](model, x, bad)


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("bad", [2.5, "10", True, None])
def test_a_batch_size_that_is_not_a_whole_number_is_a_type_error(model, x, name, bad):
    with pytest.raises(TypeError, match=rf"^{name}: batch_size must be a whole number, got {bad!r}$"):
        CALLS[name](model, x, bad)


@pytest.mark.parametrize("name", ["log_likelihoods", "model_log_likelihoods", "nll", "ensemble_nll", "mle_view"])
def test_every_batch_size_gives_the_same_numbers(model, x, name):
    """7 rows in batches of 1, 3 (a short last batch), 7 and 1000 (one batch): every row scored once."""
    results = [CALLS[name](model, x, b) for b in (1, 3, 7, 1000)]
    for result in results[1:]:
        np.testing.assert_allclose(np.asarray(result, dtype=float), np.asarray(results[0], dtype=float),
                                   rtol=1e-12)
    assert np.isfinite(np.asarray(results[0], dtype=float)).all()


def test_log_likelihoods_fills_every_row(model, x):
    expected = np.array([model.log_prob(row[None]).data[0] for row in x])
    np.testing.assert_allclose(metrics.log_likelihoods(model, x, batch_size=2), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["nll", "ensemble_nll", "mle_view"])
def test_the_mean_over_no_rows_is_refused(model, name):
    with pytest.raises(ValueError, match=rf"^{name}: x has no rows \(shape \(0, 5\)\); the mean log-likelihood"):
        CALLS[name](model, np.zeros((0, D)), 1000)


def test_log_likelihoods_of_no_rows_are_an_empty_array(model):
    """Per-row values of no rows are fine (an empty array); only their mean is undefined."""
    assert metrics.log_likelihoods(model, np.zeros((0, D))).shape == (0,)
