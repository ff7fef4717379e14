"""PixelCNN and GatedPixelCNN sampling: the cached sampler against the reference that reruns the
network for every pixel, and completion of observed sets that are not a raster prefix."""
import itertools

import numpy as np
import pytest

from tests.models.test_pixelcnn import _small
from tinyar.models import GatedPixelCNN, PixelCNN

MODELS = [PixelCNN, GatedPixelCNN]


def _strong(model, factor=3.0):
    """Every weight and bias scaled up: conditionals far from constant, strong dependences between pixels."""
    for p in model.parameters():
        p.data *= factor
    return model


def _model_5x6(cls, n_levels):
    """A float64 model of 5x6 images, a 5x5 first kernel and two 3x3 layers, weights moved off their init."""
    model = _small(cls, image_shape=(5, 6), n_levels=n_levels, n_layers=2, seed=11, first_kernel_size=5)
    return _strong(model, 1.5)


# --------------------------------------------------------------------- cached = reference
@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("n_levels", [2, 4])
def test_cached_sampler_draws_the_same_samples(cls, n_levels):
    model = _model_5x6(cls, n_levels)
    reference = model.sample(20, rng=np.random.default_rng(3), cached=False)
    cached = model.sample(20, rng=np.random.default_rng(3))                 # the default path
    np.testing.assert_array_equal(cached, reference)
    assert len(np.unique(cached)) == n_levels                              # every level drawn: not a trivial image
    assert len({tuple(row) for row in cached}) == 20                       # and 20 different images


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("n_levels", [2, 4])
def test_cached_conditionals_equal_one_pass(cls, n_levels):
    """p(x_i | x_<i) computed position by position through the cache, against the one-pass forward."""
    model = _model_5x6(cls, n_levels)
    x = np.random.default_rng(4).integers(0, n_levels, (6, 30))
    one_pass = model.conditionals(x)
    cached = model.conditionals(x, cached=True)
    assert cached.shape == one_pass.shape == ((6, 30) if n_levels == 2 else (6, 30, n_levels))
    np.testing.assert_allclose(cached, one_pass, rtol=0, atol=1e-10)
    assert one_pass.std() > 0.05                                           # conditionals that vary


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("n_levels", [2, 4])
def test_cached_complete_equals_reference(cls, n_levels):
    """Completions of the top two rows (a raster prefix) and of the left three columns (not one:
    importance resampling), cached and uncached, from the same seed."""
    model = _model_5x6(cls, n_levels)
    x = np.random.default_rng(5).integers(0, n_levels, (8, 30))
    top_rows = np.arange(30) < 12
    left_columns = np.tile(np.arange(6) < 3, 5)
    for observed in (top_rows, left_columns):
        reference = model.complete(x, observed, rng=7, n_proposals=4, cached=False)
        cached = model.complete(x, observed, rng=7, n_proposals=4)
        np.testing.assert_array_equal(cached, reference)
        np.testing.assert_array_equal(cached[:, observed], x[:, observed])
        assert np.any(cached[:, ~observed] != x[:, ~observed])


def test_float32_cached_conditionals_close():
    """The default dtype: the cache adds in another order, so float32 rounding only (~1e-6)."""
    model = PixelCNN(30, image_shape=(5, 6), n_channels=8, n_layers=2, rng=0)
    x = (np.random.default_rng(6).random((4, 30)) < 0.5).astype(np.float32)
    np.testing.assert_allclose(model.conditionals(x, cached=True), model.conditionals(x), rtol=0, atol=1e-5)


# ------------------------------------------------------- completion of any observed set
def _exact_and_naive(model, x_observed, observed):
    """Over every value of the unobserved pixels (binary): the exact p(x_u | x_o), and the distribution
    of drawing them in raster order without looking at observed pixels after them,
    prod_{i unobserved} p(x_i | x_<i)."""
    D = model.n_dims
    fills = np.array(list(itertools.product([0.0, 1.0], repeat=int((~observed).sum()))))   # (2^u, u)
    images = np.tile(x_observed, (len(fills), 1))
    images[:, ~observed] = fills
    exact = np.exp(model.log_prob(images).data)
    p_one = model.conditionals(images)                                              # (2^u, D)
    log_cond = np.log(np.where(images == 1, p_one, 1 - p_one))
    naive = np.exp(log_cond[:, ~observed].sum(axis=1))
    assert images.shape[1] == D and abs(naive.sum() - 1) < 1e-10
    return images, exact / exact.sum(), naive


@pytest.mark.parametrize("cls, seed, factor", [(PixelCNN, 3, 3.0), (GatedPixelCNN, 2, 2.5)])
def test_complete_non_prefix_matches_exact_conditional(cls, seed, factor):
    """A 2x3 image with pixels 1 and 5 observed (pixel 5 after unobserved ones): the completions'
    frequencies over the 16 fillings against the exact conditional, Pearson's chi-square with 15
    degrees of freedom below 37.70 (p = 0.001). Drawing in raster order alone (no resampling)
    follows another distribution, which this test rejects: its expected chi-square is 5 times
    the threshold or more (a model with strong dependences: seed and scale chosen for that)."""
    model = _strong(_small(cls, image_shape=(2, 3), n_layers=1, seed=seed, n_channels=4), factor)
    observed = np.array([False, True, False, False, False, True])
    x = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    images, exact, naive = _exact_and_naive(model, x, observed)
    n = 2000
    done = model.complete(np.tile(x, (n, 1)), observed, rng=np.random.default_rng(8), n_proposals=64)
    np.testing.assert_array_equal(done[:, observed], np.tile(x[observed], (n, 1)))
    counts = np.array([np.sum(np.all(done == image, axis=1)) for image in images])
    assert counts.sum() == n and n * exact.min() > 5
    assert np.sum((counts - n * exact) ** 2 / (n * exact)) < 37.70, (counts, n * exact)
    assert n * np.sum((naive - exact) ** 2 / exact) > 5 * 37.70                  # the test has power


def test_complete_non_prefix_categorical():
    """The same for 3 levels on a 1x3 image observing pixel 2 only (x_2 = 2): 9 fillings,
    chi-square with 8 degrees of freedom below 26.12 (p = 0.001); ignoring x_2, the completions
    would follow the marginal p(x_0, x_1), which this test rejects."""
    model = _strong(_small(GatedPixelCNN, image_shape=(1, 3), n_levels=3, n_layers=1, seed=1, n_channels=4), 2.0)
    fills = np.array(list(itertools.product(range(3), repeat=2)))             # (9, 2)

    def joint(x_2):                                                            # p(x_0, x_1, x_2) over the fillings
        return np.exp(model.log_prob(np.hstack([fills, np.full((9, 1), x_2)])).data)
    exact = joint(2) / joint(2).sum()
    marginal = joint(0) + joint(1) + joint(2)
    n = 3000
    done = model.complete(np.tile([0, 0, 2], (n, 1)), np.array([False, False, True]),
                          rng=np.random.default_rng(9), n_proposals=64)
    counts = np.array([np.sum(np.all(done[:, :2] == f, axis=1)) for f in fills])
    assert counts.sum() == n and np.all(done[:, 2] == 2) and n * exact.min() > 5
    assert np.sum((counts - n * exact) ** 2 / (n * exact)) < 26.12, (counts, n * exact)
    assert n * np.sum((marginal - exact) ** 2 / exact) > 5 * 26.12                 # the test has power


@pytest.mark.parametrize("cls", MODELS)
def test_complete_bad_input(cls):
    model = _small(cls, image_shape=(2, 2), n_layers=1)
    with pytest.raises(ValueError, match=r"observed_mask must be \(D,\)"):
        model.complete(np.zeros((3, 4)), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="binary"):
        model.complete(np.full((3, 4), 0.5), np.array([True, False, False, True]))
