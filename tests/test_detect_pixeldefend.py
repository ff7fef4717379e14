"""PixelDefend's purification (Algorithm 1) and its p-values (tinyar/detect.py).

Algorithm 1 is checked against a brute-force version that reads each conditional
p(x_d = v | x'_<d) off the exact joint distribution of a tiny model (all K^D inputs)."""
import itertools

import numpy as np
import pytest

from tinyar import detect
from tinyar.models import NADE, RNADE, CategoricalNADE, PixelCNN


def _joint(model, D, K):
    grid = np.array(list(itertools.product(range(K), repeat=D)))            # (K^D, D)
    x = grid if K > 2 else grid.astype(np.float32)
    return grid, np.exp(model.log_prob(x).data.astype(np.float64))         # p of every input


def _brute_force_purify(model, x, eps, D, K, order):
    """Algorithm 1 with each conditional summed out of the exact joint."""
    grid, p = _joint(model, D, K)
    out = np.array(x, dtype=np.int64)
    for row in out:
        original = row.copy()
        for i, d in enumerate(order):
            before = order[:i]
            match = np.all(grid[:, before] == row[before], axis=1) if i else np.ones(len(grid), bool)
            best, best_p = None, -1.0
            for v in range(K):
                if abs(v - original[d]) <= eps:
                    mass = p[match & (grid[:, d] == v)].sum()                # proportional to p(x_d = v | x'_<d)
                    if mass > best_p:
                        best, best_p = v, mass
            row[d] = best
    return out


@pytest.mark.parametrize("eps", [1, 2])
def test_algorithm_1_matches_brute_force_on_a_categorical_nade(eps):
    D, K = 4, 5
    model = CategoricalNADE(D, n_levels=K, n_hidden=6, order=[2, 0, 3, 1], rng=3, dtype=np.float64)
    for p in model.parameters():                                           # a peaked, non-uniform model
        p.data *= 4
    x = np.random.default_rng(0).integers(0, K, size=(12, D))
    got = detect.purify_pixeldefend(model, x, eps)
    want = _brute_force_purify(model, x, eps, D, K, [2, 0, 3, 1])
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - x).max() <= eps and (got >= 0).all() and (got < K).all()
    assert (got != x).any()                                                # it did change something


def test_algorithm_1_on_binary_images_picks_each_most_likely_pixel_and_eps_0_changes_nothing():
    D = 5
    model = NADE(D, n_hidden=4, rng=1, dtype=np.float64)
    for p in model.parameters():
        p.data *= 3
    x = (np.random.default_rng(2).random((10, D)) < 0.5).astype(np.float32)
    np.testing.assert_array_equal(detect.purify_pixeldefend(model, x, 0), x)
    got = detect.purify_pixeldefend(model, x, 1)
    np.testing.assert_array_equal(got, _brute_force_purify(model, x, 1, D, 2, list(range(D))))


def test_algorithm_1_follows_a_pixelcnn_in_raster_order():
    model = PixelCNN(9, image_shape=(3, 3), n_levels=3, n_channels=4, n_layers=2, rng=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    for p in model.parameters():                                           # its output layer starts at zero:
        p.data += rng.normal(scale=0.7, size=p.shape)                      # move off the uniform model (ties)
    x = rng.integers(0, 3, size=(6, 9))
    got = detect.purify_pixeldefend(model, x, 1)
    np.testing.assert_array_equal(got, _brute_force_purify(model, x, 1, 9, 3, list(range(9))))


def test_algorithm_1_refuses_continuous_models_and_bad_eps():
    with pytest.raises(ValueError, match="discrete values"):
        detect.purify_pixeldefend(RNADE(3, n_hidden=4, rng=0), np.zeros((2, 3), np.float32), 1)
    model = CategoricalNADE(3, n_levels=4, n_hidden=4, rng=0)
    for eps in (-1, 0.5, None):
        with pytest.raises(ValueError, match="eps must be a whole number"):
            detect.purify_pixeldefend(model, np.zeros((2, 3), np.int64), eps)


def test_p_values_count_the_reference_scores_at_least_as_large():
    reference = np.array([3.0, 1.0, 4.0, 2.0])
    np.testing.assert_allclose(detect.p_values([0.0, 2.0, 2.5, 5.0], reference), [1.0, 4 / 5, 3 / 5, 1 / 5])
    # a score drawn from the reference distribution is uniform over ranks: P(p <= a) ~ a
    rng = np.random.default_rng(0)
    p = detect.p_values(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.015 and abs(np.mean(p <= 0.5) - 0.5) < 0.03
    with pytest.raises(ValueError, match="non-empty 1-D array of finite"):
        detect.p_values([1.0], [])
