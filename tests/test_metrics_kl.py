"""metrics: Monte Carlo and exact KL (in nats and bits), the data-set view of MLE, ROC and AUROC."""
import math

import numpy as np
import pytest
from scipy.stats import rankdata

from tinyar import metrics
from tinyar.models import FVSBN, MADE, NADE, CategoricalMADE, CategoricalNADE, Transformer


def random_nade(D, seed, H=4):
    rng = np.random.default_rng(seed)
    m = NADE(D, n_hidden=H, order="random", rng=rng, dtype=np.float64)
    m.b.data[...] = rng.standard_normal(m.b.shape)
    m.W.data *= 3.0
    return m


def random_fvsbn(D, seed):
    rng = np.random.default_rng(seed)
    m = FVSBN(D, order="random", init_std=1.0, rng=rng, dtype=np.float64)
    m.b.data[...] = rng.standard_normal(D)
    return m


def random_made(D, seed):
    rng = np.random.default_rng(seed)
    m = MADE(D, n_hidden=[8], mask_seed=seed, order="random", rng=rng, dtype=np.float64)
    m._randomize_biases(rng)
    return m


def test_all_configurations_lists_every_value_once():
    x = metrics.all_configurations(3, 3)
    assert x.shape == (27, 3)
    assert x[5].tolist() == [0, 1, 2]                                # 5 = 0*9 + 1*3 + 2
    assert len(np.unique(x, axis=0)) == 27
    with pytest.raises(ValueError, match="max_configs"):
        metrics.all_configurations(17, 2)


@pytest.mark.parametrize("make", [random_nade, random_fvsbn, random_made])
def test_exact_log_probs_are_normalized(make):
    _, log_p = metrics.exact_log_probs(make(6, 1))
    assert abs(np.exp(log_p).sum() - 1.0) < 1e-10


def test_kl_of_a_model_with_itself_is_zero():
    p = random_nade(6, 0)
    assert abs(metrics.kl_exact(p, p)) < 1e-12
    est = metrics.kl_monte_carlo(p, p, n_samples=200, rng=0)
    assert est.value == 0.0 and est.stderr == 0.0 and est.n_samples == 200


def test_kl_is_nonnegative_on_random_pairs():
    makers = [random_nade, random_fvsbn, random_made]
    values = []
    for seed in range(6):
        p = makers[seed % 3](5, seed)
        q = makers[(seed + 1) % 3](5, 100 + seed)
        values.append(metrics.kl_exact(p, q))
    assert min(values) > 0.0                                        # different models: strictly positive
    # and asymmetric
    p, q = random_nade(5, 7), random_fvsbn(5, 8)
    assert abs(metrics.kl_exact(p, q) - metrics.kl_exact(q, p)) > 1e-3


@pytest.mark.parametrize("pair", ["binary", "categorical"])
def test_monte_carlo_kl_within_three_standard_errors_of_exact(pair):
    if pair == "binary":
        p, q = random_nade(8, 3), random_fvsbn(8, 4)
    else:
        rng = np.random.default_rng(5)
        p = CategoricalNADE(4, n_levels=3, n_hidden=4, order="random", rng=rng, dtype=np.float64)
        p.b.data[...] = 2 * rng.standard_normal(p.b.shape)
        q = CategoricalMADE(4, n_levels=3, n_hidden=[6], rng=rng, dtype=np.float64)
        q._randomize_biases(rng)
    exact = metrics.kl_exact(p, q)
    est = metrics.kl_monte_carlo(p, q, n_samples=4000, rng=11)
    assert exact > 0.05
    assert 0 < est.stderr < 0.2 * exact
    assert abs(est.value - exact) < 3 * est.stderr, (est, exact)


def test_monte_carlo_kl_standard_error_shrinks_like_one_over_sqrt_n():
    p, q = random_nade(8, 3), random_fvsbn(8, 4)
    small = metrics.kl_monte_carlo(p, q, n_samples=400, rng=1)
    large = metrics.kl_monte_carlo(p, q, n_samples=6400, rng=2)
    assert 2.5 < small.stderr / large.stderr < 6.0                  # sqrt(16) = 4


def test_kl_between_a_nade_and_a_transformer_scores_float_samples_as_ids():
    p = random_nade(4, 2)
    q = Transformer(2, max_len=4, n_layers=1, d_model=8, n_heads=2, d_mlp=8, rng=0, dtype=np.float64)
    exact = metrics.kl_exact(p, q)
    est = metrics.kl_monte_carlo(p, q, n_samples=3000, rng=3)
    assert abs(est.value - exact) < 3 * est.stderr


def test_exact_kl_and_entropy_skip_values_of_zero_probability():
    def made(seed, level_2_impossible):
        rng = np.random.default_rng(seed)
        m = CategoricalMADE(2, n_levels=3, n_hidden=[4], rng=rng, dtype=np.float64)
        m._randomize_biases(rng)
        if level_2_impossible:
            m.output.bias.data.reshape(2, 3)[:, 2] = -np.inf       # p(x_d = 2 | x_<d) = 0: log p(x) = -inf
        return m

    p, q = made(0, True), made(1, False)
    x, log_p = metrics.exact_log_probs(p)
    support = np.isfinite(log_p)
    assert support.sum() == 4 and np.exp(log_p[support]).sum() == pytest.approx(1.0)
    log_q = metrics.model_log_likelihoods(q, x)
    w = np.exp(log_p[support])
    assert metrics.kl_exact(p, q) == pytest.approx(np.sum(w * (log_p[support] - log_q[support])), rel=1e-12)
    assert metrics.entropy_exact(p) == pytest.approx(-np.sum(w * log_p[support]), rel=1e-12)
    assert metrics.kl_exact(q, p) == np.inf                          # q has mass where p has none


def independent_bits(probs):
    """An FVSBN with no weights: x_d ~ Bernoulli(probs[d]) independently."""
    m = FVSBN(len(probs), dtype=np.float64)
    m.b.data[...] = np.log(probs) - np.log1p(-np.asarray(probs))             # logit(p_d)
    return m


def test_kl_and_entropy_in_bits_are_nats_over_ln_2():
    a, b = np.array([0.1, 0.5, 0.8]), np.array([0.3, 0.5, 0.6])
    p, q = independent_bits(a), independent_bits(b)
    # by hand: KL of independent bits is the sum of KL(Bern(a_d) || Bern(b_d))
    nats = float(np.sum(a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))))
    assert metrics.kl_exact(p, q) == pytest.approx(nats, rel=1e-12)
    assert metrics.kl_exact(p, q, base=2) == pytest.approx(nats / math.log(2), rel=1e-12)
    assert metrics.kl_exact(p, q, base=math.e) == pytest.approx(nats, rel=1e-12)
    uniform = FVSBN(6, dtype=np.float64)                            # p(x) = 2^-6: exactly 6 bits
    assert metrics.entropy_exact(uniform, base=2) == pytest.approx(6.0, rel=1e-12)
    assert metrics.entropy_exact(uniform) == pytest.approx(6 * math.log(2), rel=1e-12)
    in_nats = metrics.kl_monte_carlo(p, q, n_samples=300, rng=4)
    in_bits = metrics.kl_monte_carlo(p, q, n_samples=300, rng=4, base=2)   # the same samples
    assert in_bits.value == pytest.approx(in_nats.value / math.log(2), rel=1e-12)
    assert in_bits.stderr == pytest.approx(in_nats.stderr / math.log(2), rel=1e-12)
    assert in_bits.n_samples == 300


@pytest.mark.parametrize("base, error", [(1, ValueError), (0.5, ValueError), (-2, ValueError),
                                         (float("nan"), ValueError), ("2", TypeError)])
def test_kl_refuses_a_base_that_is_not_above_one(base, error):
    p = independent_bits([0.2, 0.7])
    for call in (lambda: metrics.kl_exact(p, p, base=base), lambda: metrics.entropy_exact(p, base=base),
                 lambda: metrics.kl_monte_carlo(p, p, n_samples=5, rng=0, base=base)):
        with pytest.raises(error, match="base"):
            call()


def test_kl_exact_refuses_mismatched_spaces():
    with pytest.raises(ValueError, match="must agree"):
        metrics.kl_exact(random_nade(4, 0), random_nade(5, 0))


def test_mle_view_nll_is_entropy_plus_kl_to_the_empirical_distribution():
    D = 4
    data = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]], dtype=np.float64)
    # hand: p_hat = (1/2, 1/4, 1/4): H = 1/2 log 2 + 2 * 1/4 log 4 = 1.5 log 2
    assert math.isclose(metrics.empirical_entropy(data), 1.5 * math.log(2), rel_tol=1e-12)
    uniform = FVSBN(D, dtype=np.float64)                            # zero weights: p(x) = 2^-D
    view = metrics.mle_view(uniform, data)
    assert math.isclose(view.nll, D * math.log(2), rel_tol=1e-12)
    assert math.isclose(view.kl, (D - 1.5) * math.log(2), rel_tol=1e-12)
    assert view.n_distinct == 3 and view.n_examples == 4
    # against the KL computed from p_hat's definition, for a non-trivial model
    model = random_nade(D, 9)
    x, log_q = metrics.exact_log_probs(model)
    rows = {tuple(r): c / len(data) for r, c in zip(*np.unique(data, axis=0, return_counts=True))}
    p_hat = np.array([rows.get(tuple(r.astype(float)), 0.0) for r in x])
    on = p_hat > 0
    kl = float(np.sum(p_hat[on] * (np.log(p_hat[on]) - log_q[on])))
    view = metrics.mle_view(model, data)
    assert math.isclose(view.kl, kl, rel_tol=1e-10) and view.kl > 0
    assert math.isclose(view.nll, view.data_entropy + view.kl, rel_tol=1e-12)


def test_mle_view_refuses_continuous_data():
    with pytest.raises(ValueError, match="atoms"):
        metrics.mle_view(random_nade(4, 0), np.full((3, 4), 0.5))


def test_auroc_hand_computed_with_ties():
    # pairs (pos, neg): 4 beats 1, 2, 3 -> 3; 2 beats 1 -> 1, ties 2 -> 1/2, loses to 3 -> 0: 4.5 / 6
    assert metrics.auroc([1, 2, 3], [2, 4]) == 0.75
    fpr, tpr, thr = metrics.roc_curve([1, 2, 3], [2, 4])
    assert fpr.tolist() == [0, 0, 1 / 3, 2 / 3, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thr.tolist() == [np.inf, 4, 3, 2, 1]
    assert metrics.auroc([0, 0], [1, 1]) == 1.0
    assert metrics.auroc([1, 1], [0, 0]) == 0.0
    assert metrics.auroc([5, 5, 5], [5, 5]) == 0.5


def test_auroc_agrees_with_scipy_ranks_and_the_roc_area():
    rng = np.random.default_rng(0)
    neg = rng.integers(0, 8, 57).astype(float)                      # many ties
    pos = rng.integers(2, 10, 43).astype(float)
    ranks = rankdata(np.concatenate([neg, pos]))                    # scipy midranks
    expected = (ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    brute = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    value = metrics.auroc(neg, pos)
    assert abs(value - expected) < 1e-12 and abs(value - brute) < 1e-12
    np.testing.assert_array_equal(metrics.midranks(np.concatenate([neg, pos])), ranks)
    fpr, tpr, _ = metrics.roc_curve(neg, pos)
    assert abs(metrics.area_under_curve(fpr, tpr) - value) < 1e-12
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_auroc_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="at least one"):
        metrics.auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc([np.nan], [1.0])
