"""NADE, CategoricalNADE, RNADE: gradients, normalization, the autoregressive property,
samples that match the model, completion, order-agnostic ensembles, extreme weights,
checkpoint round trips and input checks."""
import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from tinyar import data, no_grad, optim
from tinyar.gradcheck import gradcheck
from tinyar.models import REGISTRY, CategoricalNADE, NADE, RNADE

MODELS = [NADE, CategoricalNADE, RNADE]


def log_prob(model, x, **kw):
    with no_grad():
        return model.log_prob(x, **kw).data


def random_nade(D=10, H=6, seed=0, **kw):
    """A binary NADE with non-zero biases, in float64."""
    rng = np.random.default_rng(seed)
    model = NADE(D, n_hidden=H, rng=rng, dtype=np.float64, **kw)
    model.W.data *= 3.0
    model.b.data[...] = rng.standard_normal(model.b.shape)
    model.c.data[...] = rng.standard_normal(model.c.shape)
    return model


def random_categorical(D=6, K=3, H=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    model = CategoricalNADE(D, n_levels=K, n_hidden=H, rng=rng, dtype=np.float64, **kw)
    model.W.data *= 3.0
    model.b.data[...] = rng.standard_normal(model.b.shape)
    return model


def random_rnade(D=2, H=4, M=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    model = RNADE(D, n_hidden=H, n_components=M, log_scale_min=-2.0, log_scale_max=0.5, rng=rng,
                  dtype=np.float64, **kw)
    model.W.data *= 2.0
    model.b.data[...] += rng.standard_normal(model.b.shape)
    return model


def all_binary(D):
    return np.array(list(itertools.product([0.0, 1.0], repeat=D)))


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("cls", MODELS)
def test_gradcheck_of_the_loss(cls):
    model, x = cls.gradcheck_example()
    result = gradcheck(lambda *params: -model.log_prob(x).mean(), *model.parameters())
    assert result["max_rel_error"] < 1e-4


# -------------------------------------------------------------- normalization
@pytest.mark.parametrize("order, mask_inputs", [(None, False), ("random", False), ("random", True)])
def test_nade_sums_to_one_over_all_binary_vectors(order, mask_inputs):
    model = random_nade(D=10, order=order, mask_inputs=mask_inputs)
    p = np.exp(log_prob(model, all_binary(10)))
    assert p.shape == (1024,)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-10)


@pytest.mark.parametrize("mask_inputs", [False, True])
def test_categorical_nade_sums_to_one_over_all_inputs(mask_inputs):
    model = random_categorical(D=6, K=3, order="random", mask_inputs=mask_inputs)
    x = np.array(list(itertools.product(range(3), repeat=6)))
    p = np.exp(log_prob(model, x))
    assert p.shape == (729,)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-10)


def test_rnade_density_integrates_to_one_in_one_dimension():
    model = random_rnade(D=1)
    density = lambda t: float(np.exp(log_prob(model, np.array([[t]])))[0])
    total, err = integrate.quad(density, -np.inf, np.inf, limit=200)
    assert abs(total - 1.0) < 1e-6


def test_rnade_density_integrates_to_one_in_two_dimensions():
    """Outer: adaptive quad over x_1 (first in the ordering); inner: Simpson's rule over x_0 on a
    fine grid, the model evaluated on the whole grid in one batch."""
    model = random_rnade(D=2, order=[1, 0])
    grid = np.linspace(-15, 15, 6001)                          # spacing 0.005; every scale >= e^-2

    def inner(t1):
        x = np.stack([grid, np.full_like(grid, t1)], axis=1)
        return integrate.simpson(np.exp(log_prob(model, x)), x=grid)
    total, err = integrate.quad(inner, -15, 15, epsabs=1e-9, limit=200)
    assert abs(total - 1.0) < 1e-6


# ---------------------------------------------------- autoregressive property
@pytest.mark.parametrize("make, changed", [
    (lambda: random_nade(D=7, order="random", seed=1), lambda x, d: 1.0 - x[:, d]),
    (lambda: random_categorical(D=6, K=4, order="random", seed=1), lambda x, d: (x[:, d] + 1) % 4),
    (lambda: random_rnade(D=5, order="random", seed=1), lambda x, d: x[:, d] + 0.7),
])
def test_conditionals_only_see_earlier_dimensions(make, changed):
    model = make()
    rng = np.random.default_rng(0)
    x = model.sample(4, rng=rng)
    before = log_prob_conditionals(model, x)
    for step, d in enumerate(model.order):
        x2 = x.copy()
        x2[:, d] = changed(x, d)
        after = log_prob_conditionals(model, x2)
        earlier_or_same = model.order[:step + 1]
        later = model.order[step + 1:]
        np.testing.assert_array_equal(after[:, earlier_or_same[:-1]], before[:, earlier_or_same[:-1]])
        assert not np.allclose(after[:, d], before[:, d])            # its own conditional moves
        if len(later):
            assert not np.allclose(after[:, later], before[:, later])   # and later ones do depend on it


def log_prob_conditionals(model, x, order=None):
    with no_grad():
        return model.log_conditionals(x, order=order).data


def test_log_prob_is_the_sum_of_the_conditionals_and_follows_the_given_ordering():
    model = random_nade(D=6, seed=2)
    x = all_binary(6)[::5]
    np.testing.assert_allclose(log_prob(model, x), log_prob_conditionals(model, x).sum(axis=1), rtol=1e-12)
    other = np.array([5, 3, 1, 0, 2, 4])
    p_other = np.exp(log_prob(model, all_binary(6), order=other))
    np.testing.assert_allclose(p_other.sum(), 1.0, rtol=1e-10)             # another ordering: another model
    assert not np.allclose(log_prob(model, x, order=other), log_prob(model, x))


# ------------------------------------------------------------------- sampling
def chi_square_p(samples_as_index, probs):
    counts = np.bincount(samples_as_index, minlength=len(probs))
    return stats.chisquare(counts, probs * counts.sum()).pvalue


@pytest.mark.parametrize("kernels_env, mask_inputs", [("numba", False), ("numpy", False), ("numba", True)])
def test_nade_sample_frequencies_match_the_model(kernels_env, mask_inputs, monkeypatch):
    monkeypatch.setenv("TINYAR_KERNELS", kernels_env)
    model = random_nade(D=3, H=4, order=[2, 0, 1], seed=3, mask_inputs=mask_inputs)
    if mask_inputs:
        model.W.data[:, 1] = 2.0 * np.random.default_rng(0).standard_normal(model.W.data[:, 1].shape)
    probs = np.exp(log_prob(model, all_binary(3)))
    x = model.sample(200_000, rng=np.random.default_rng(0))
    assert x.shape == (200_000, 3) and set(np.unique(x)) == {0.0, 1.0}
    index = (x @ np.array([4, 2, 1])).astype(int)                      # row of all_binary(3)
    assert chi_square_p(index, probs) > 1e-3


@pytest.mark.parametrize("mask_inputs", [False, True])
def test_categorical_nade_sample_frequencies_match_the_model(mask_inputs):
    model = random_categorical(D=3, K=3, H=4, order="random", seed=4, mask_inputs=mask_inputs)
    x_all = np.array(list(itertools.product(range(3), repeat=3)))
    probs = np.exp(log_prob(model, x_all))
    x = model.sample(200_000, rng=np.random.default_rng(1))
    assert x.dtype == np.int64
    assert chi_square_p(x @ np.array([9, 3, 1]), probs) > 1e-3


def test_rnade_samples_follow_its_density():
    """D = 1: the samples' distribution is the mixture itself (Kolmogorov-Smirnov)."""
    model = random_rnade(D=1, M=3, seed=5)
    with no_grad():
        logits, mu, log_s = (t.data[0, 0] for t in model.mixture(model.outputs(np.zeros((1, 1)))))
    pi = np.exp(logits - logits.max())
    pi /= pi.sum()
    cdf = lambda t: np.sum(pi * stats.norm.cdf((np.asarray(t)[..., None] - mu) / np.exp(log_s)), axis=-1)
    x = model.sample(20_000, rng=np.random.default_rng(2))[:, 0]
    assert stats.kstest(x, cdf).pvalue > 1e-3


@pytest.mark.parametrize("mask_inputs", [False, True])
def test_rnade_two_dimensional_samples_have_the_model_mean(mask_inputs):
    model = random_rnade(D=2, order=[1, 0], seed=6, mask_inputs=mask_inputs)
    grid = np.linspace(-12, 12, 601)
    T0, T1 = np.meshgrid(grid, grid, indexing="ij")
    p = np.exp(log_prob(model, np.stack([T0.ravel(), T1.ravel()], axis=1))).reshape(T0.shape)
    cell = (grid[1] - grid[0]) ** 2
    mean = np.array([(T0 * p).sum() * cell, (T1 * p).sum() * cell])
    x = model.sample(20_000, rng=np.random.default_rng(3))
    se = x.std(axis=0) / math.sqrt(len(x))
    assert np.all(np.abs(x.mean(axis=0) - mean) < 5 * se)


@pytest.mark.parametrize("cls", MODELS)
def test_sampling_is_seeded_and_the_same_on_both_paths(cls, monkeypatch):
    model, _ = cls.gradcheck_example()
    a = model.sample(50, rng=7)
    b = model.sample(50, rng=7)
    np.testing.assert_array_equal(a, b)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    np.testing.assert_allclose(model.sample(50, rng=7), a, rtol=1e-12, atol=1e-12)
    assert not np.array_equal(model.sample(50, rng=8), a)


# ----------------------------------------------------------------- completion
def exact_conditional(model, observed_values, observed_dims, order=None):
    """p(all binary x with x[observed_dims] = observed_values), normalized: the exact conditional."""
    x_all = all_binary(model.n_dims)
    keep = np.all(x_all[:, observed_dims] == observed_values, axis=1)
    p = np.exp(log_prob(model, x_all[keep], order=order))
    return x_all[keep], p / p.sum()


def test_completion_of_an_order_agnostic_nade_is_exact_under_observed_first_ordering():
    model = random_nade(D=4, H=5, seed=7, order_agnostic=True, mask_inputs=True)
    observed = np.zeros((100_000, 4), dtype=bool)
    observed[:, [1, 3]] = True
    x = np.zeros((100_000, 4))
    x[:, 1], x[:, 3] = 1.0, 0.0
    out = model.complete(x, observed, rng=np.random.default_rng(0))
    assert np.all(out[:, 1] == 1.0) and np.all(out[:, 3] == 0.0)
    # the ordering used: observed dimensions first (in the model's order), then the rest
    rank = np.argsort(model.order)
    order = sorted([1, 3], key=lambda d: rank[d]) + sorted([0, 2], key=lambda d: rank[d])
    support, p = exact_conditional(model, [1.0, 0.0], [1, 3], order=order)
    counts = np.array([np.sum(np.all(out == s, axis=1)) for s in support])
    assert counts.sum() == len(out)                                # every completion is in the support
    assert stats.chisquare(counts, p * counts.sum()).pvalue > 1e-3


def test_completion_of_a_fixed_ordering_nade_resamples_towards_the_true_conditional():
    """Observed dimension last in the ordering: sampling-importance-resampling still recovers
    p(x_0, x_1, x_2 | x_3) closely (exactly in the limit of many proposals)."""
    model = random_nade(D=4, H=5, seed=8)                        # natural order 0, 1, 2, 3
    n = 10_000
    observed = np.zeros((n, 4), dtype=bool)
    observed[:, 3] = True
    x = np.ones((n, 4))
    out = model.complete(x, observed, rng=np.random.default_rng(1), n_proposals=100)
    support, p = exact_conditional(model, [1.0], [3])
    freq = np.array([np.mean(np.all(out == s, axis=1)) for s in support])
    assert np.all(out[:, 3] == 1.0)
    assert 0.5 * np.abs(freq - p).sum() < 0.03                   # total variation


def two_dim_nade(v, b1):
    """NADE(2, H = 1), order 0, 1: p(x_0 = 1) = 1/2; h = sigma(100 x_0) (exactly 1/2 or 1 in float64)
    and logit_1 = b1 + v h. Given x_1 = 0, the posterior odds of x_0 = 1 are
    e^-softplus(b1 + v) / e^-softplus(b1 + v/2), i.e. e^(-v/2) when b1 is large."""
    model = NADE(2, n_hidden=1, rng=0, dtype=np.float64)
    for p in (model.W, model.c, model.V, model.b):
        p.data[...] = 0.0
    model.W.data[0, 0, 0] = 100.0
    model.V.data[1, 0, 0] = v
    model.b.data[1, 0] = b1
    return model


@pytest.mark.parametrize("kernels_env", ["numba", "numpy"])
def test_completion_is_right_when_the_observed_value_is_extremely_unlikely(kernels_env, monkeypatch):
    """x_1 = 0 observed after x_0 with logit_1 of 40..800: every proposal's log-weight is far below
    -37, where log1p(-sigma(logit)) would be -inf (and the weights NaN)."""
    monkeypatch.setenv("TINYAR_KERNELS", kernels_env)
    n = 4000
    x = np.zeros((n, 2))
    observed = np.array([[False, True]] * n)
    # logit_1 = 40 (x_0 = 0) or 60 (x_0 = 1): P(x_0 = 1 | x_1 = 0) = sigma(-20) = 2e-9
    out = two_dim_nade(40.0, 20.0).complete(x, observed, rng=np.random.default_rng(0))
    assert np.all(out[:, 1] == 0) and out[:, 0].mean() < 1e-3
    # logit_1 = 800 + v/2 or 800 + v: P(x_0 = 1 | x_1 = 0) = 1 / (1 + e^(v/2)) = 0.3 (SIR with 64
    # proposals: 0.3026 expected; sampling sd 0.007)
    v = 2.0 * math.log(7.0 / 3.0)
    out = two_dim_nade(v, 800.0).complete(x, observed, rng=np.random.default_rng(1))
    assert np.all(out[:, 1] == 0) and abs(out[:, 0].mean() - 0.3) < 0.03


@pytest.mark.parametrize("kernels_env", ["numba", "numpy"])
def test_completion_refuses_rows_whose_observed_values_are_impossible(kernels_env, monkeypatch):
    """logit_1 = +inf: p(x_1 = 0) = 0 whatever x_0, every weight is 0; a clear error, not proposal 0."""
    monkeypatch.setenv("TINYAR_KERNELS", kernels_env)
    model = two_dim_nade(0.0, np.inf)
    observed = np.array([[False, True], [False, True]])
    with pytest.raises(ValueError, match=r"rows \[1\] the observed values have probability 0"):
        model.complete(np.array([[0.0, 1.0], [0.0, 0.0]]), observed, rng=np.random.default_rng(0))
    out = model.complete(np.array([[0.0, 1.0]]), observed[:1], rng=np.random.default_rng(0))
    assert out[0, 1] == 1.0                                      # x_1 = 1 has probability 1: fine


@pytest.mark.parametrize("make", [lambda: random_categorical(D=5, K=4, seed=9, order_agnostic=True),
                                  lambda: random_rnade(D=5, seed=9)])
def test_completion_keeps_observed_values_and_fills_the_rest(make):
    model = make()
    rng = np.random.default_rng(0)
    x = model.sample(30, rng=rng)
    observed = rng.random(x.shape) < 0.5
    out = model.complete(np.where(observed, x, 0), observed, rng=rng)
    np.testing.assert_array_equal(out[observed], x[observed])
    assert out.shape == x.shape and np.all(np.isfinite(out))
    assert not np.array_equal(out[~observed], x[~observed])
    with pytest.raises(ValueError, match="observed_mask"):
        model.complete(x, observed[:, :3], rng=rng)


# ------------------------------------------------------------- order-agnostic
def test_before_batch_draws_a_new_ordering_only_when_order_agnostic():
    fixed = random_nade(D=6)
    fixed.before_batch(np.random.default_rng(0))
    np.testing.assert_array_equal(fixed.order, np.arange(6))
    agnostic = random_nade(D=6, order_agnostic=True)
    agnostic.before_batch(np.random.default_rng(0))
    first = agnostic.order.copy()
    assert sorted(first) == list(range(6)) and not np.array_equal(first, np.arange(6))
    agnostic.before_batch(np.random.default_rng(1))
    assert not np.array_equal(agnostic.order, first)
    assert agnostic.config["order"] == list(range(6))        # the model's own ordering stays in config
    agnostic.before_eval()                                   # scoring returns to it
    np.testing.assert_array_equal(agnostic.order, np.arange(6))


def test_ensemble_is_the_log_mean_exp_of_orderings_and_normalized():
    model = random_nade(D=8, seed=10, order_agnostic=True)
    x_all = all_binary(8)
    with no_grad():
        ensemble = model.ensemble_log_prob(x_all, n_orderings=5, rng=3).data
    rng = np.random.default_rng(3)
    orders = [rng.permutation(8) for _ in range(5)]
    singles = np.stack([log_prob(model, x_all, order=o) for o in orders])
    np.testing.assert_allclose(ensemble, np.log(np.exp(singles).mean(axis=0)), rtol=1e-12)
    np.testing.assert_allclose(np.exp(ensemble).sum(), 1.0, rtol=1e-10)


def test_ensemble_log_prob_is_differentiable():
    model = random_nade(D=4, H=3, seed=11)
    x = all_binary(4)[::3]
    result = gradcheck(lambda *params: -model.ensemble_log_prob(x, n_orderings=3, rng=0).mean(),
                       *model.parameters())
    assert result["max_rel_error"] < 1e-4


def test_order_agnostic_training_learns_every_ordering():
    """A few hundred SGD steps with fresh orderings: the NLL falls under orderings never seen."""
    from tinyar.optim import SGD
    rng = np.random.default_rng(0)
    x = (rng.random((200, 8)) < np.linspace(0.1, 0.9, 8)).astype(np.float32)
    x[:, 4:] = x[:, :4]                                           # strongly dependent dimensions
    model = NADE(8, n_hidden=16, order_agnostic=True, rng=0)
    unseen = np.random.default_rng(99).permutation(8)
    start = -log_prob(model, x, order=unseen).mean()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(300):
        model.before_batch(rng)
        opt.zero_grad()
        model.nll(x[rng.integers(0, 200, 50)]).backward()
        opt.step()
    end = -log_prob(model, x, order=unseen).mean()
    assert end < start - 1.5


# ----------------------------------------------------------- extreme weights
@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_weights_give_finite_log_likelihoods_and_gradients(cls, dtype):
    model, x = cls.gradcheck_example()
    model.astype(dtype)
    rng = np.random.default_rng(0)
    for p in (model.W, model.c, model.V):
        p.data[...] = (1e3 * np.sign(rng.standard_normal(p.shape))).astype(dtype)   # pre-activations ~ +-1e3
    model.zero_grad()
    lp = model.log_prob(x)
    assert lp.dtype == dtype and np.all(np.isfinite(lp.data))
    (-lp.mean()).backward()
    for p in model.parameters():
        assert p.grad is not None and np.all(np.isfinite(p.grad))


# --------------------------------------------------- checkpoints, data, errors
@pytest.mark.parametrize("cls", MODELS)
def test_config_rebuilds_an_identical_model(cls):
    import json
    model, x = cls.gradcheck_example()
    model.before_batch(np.random.default_rng(0))
    clone = type(model)(**json.loads(json.dumps(model.config)))
    clone.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(log_prob(clone, x), log_prob(model, x))
    np.testing.assert_array_equal(clone.sample(5, rng=1), model.sample(5, rng=1))


@pytest.mark.parametrize("cls", MODELS)
def test_numba_and_numpy_paths_give_the_same_log_prob(cls, monkeypatch):
    model, x = cls.gradcheck_example()
    model.astype(np.float32)
    fast = log_prob(model, x)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    np.testing.assert_allclose(log_prob(model, x), fast, rtol=1e-5, atol=1e-5)


def test_for_dataset_sizes_the_models_and_refuses_the_wrong_kind():
    binary, levels, continuous = (data.digits(form=f) for f in ("binary", "levels", "continuous"))
    assert NADE.for_dataset(binary, n_hidden=7).W.shape == (64, 1, 7)
    assert NADE.for_dataset(binary, n_hidden=7, mask_inputs=True).W.shape == (64, 2, 7)
    cat = CategoricalNADE.for_dataset(levels, n_hidden=7)
    assert cat.n_levels == 17 and cat.V.shape == (64, 17, 7)
    assert RNADE.for_dataset(continuous, n_hidden=7, n_components=2).V.shape == (64, 6, 7)
    with pytest.raises(ValueError, match="binary"):
        NADE.for_dataset(levels)
    with pytest.raises(ValueError, match="categorical"):
        CategoricalNADE.for_dataset(binary)
    with pytest.raises(ValueError, match="continuous"):
        RNADE.for_dataset(binary)
    assert REGISTRY["nade"] is NADE and REGISTRY["nade-categorical"] is CategoricalNADE
    assert REGISTRY["rnade"] is RNADE


def two_clusters(n, seed):
    """1-D data: half the points near -2, half near +2 (sd 0.3)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, 1)) < 0.5, -2.0, 2.0) + 0.3 * rng.standard_normal((n, 1))


def test_rnade_for_dataset_starts_with_components_spread_over_the_data():
    train = two_clusters(1000, seed=0)
    dataset = data.Dataset("two-clusters", "continuous", train, train[:10], train[:10], n_dims=1)
    model = RNADE.for_dataset(dataset, n_hidden=8, n_components=4, rng=0)
    r0, r1 = np.quantile(train, [0.01, 0.99])
    np.testing.assert_allclose(model.b.data[0, 4:8], r0 + (np.arange(4) + 0.5) * (r1 - r0) / 4, rtol=1e-6)
    lo, hi = model.log_scale_min, model.log_scale_max
    log_s = lo + (hi - lo) / (1 + np.exp(-model.b.data[0, 8:].astype(np.float64)))      # bias part of log s
    np.testing.assert_allclose(np.exp(log_s), (r1 - r0) / 8, rtol=1e-5)
    clone = RNADE(**model.config)                     # the init comes back from config alone
    for a, b in zip(clone.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_rnade_separates_two_clusters_that_one_gaussian_cannot_fit():
    """SGD from the default initialisation must use several components, not one broad Gaussian.

    Components that start far from every data point get no responsibility, hence no gradient;
    then the widest one takes all the data, and the fit is no better than a single Gaussian,
    whose best mean log-likelihood is -log(2 pi e var) / 2. The two clusters allow ~1.2 nats more.
    """
    train = two_clusters(1000, seed=0)
    dataset = data.Dataset("two-clusters", "continuous", train, train[:10], train[:10], n_dims=1)
    best_single_gaussian = -0.5 * math.log(2 * math.pi * math.e * train.var())          # about -2.12
    recipe = RNADE.recipe
    rng = np.random.default_rng(1)
    for seed in range(2):
        model = RNADE.for_dataset(dataset, n_hidden=20, n_components=5, rng=seed, dtype=np.float64)
        optimizer = optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"])
        for _ in range(300):
            optimizer.zero_grad()
            model.nll(train[rng.integers(0, len(train), 100)]).backward()
            optim.clip_grad_norm_(model.parameters(), recipe["clip"])
            optimizer.step()
        mean_log_lik = log_prob(model, train).mean()
        assert mean_log_lik > best_single_gaussian + 0.8, (seed, mean_log_lik, best_single_gaussian)


def test_bad_inputs_get_clear_errors():
    nade, x = NADE.gradcheck_example()
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        nade.log_prob(np.full((2, 5), 0.5))
    with pytest.raises(ValueError, match="expected shape"):
        nade.log_prob(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="order must be a permutation"):
        nade.log_prob(x, order=[0, 1, 2, 3, 3])
    cat, _ = CategoricalNADE.gradcheck_example()
    with pytest.raises(ValueError, match="0..2"):
        cat.log_prob(np.full((1, 4), 3))
    rnade, _ = RNADE.gradcheck_example()
    with pytest.raises(ValueError, match="NaN"):
        rnade.log_prob(np.full((1, 4), np.nan))
    rnade32 = RNADE(4, n_hidden=3, rng=0)                          # float32: data beyond |x| = 1e3 refused
    assert np.isfinite(log_prob(rnade32, np.full((1, 4), -1e3))).all()
    with pytest.raises(ValueError, match="float32 gradients lose precision"):
        rnade32.log_prob(np.array([[0.0, 0.5, -1.5e3, 1.0]]))
    assert np.isfinite(log_prob(rnade, np.full((1, 4), 1e6))).all()       # float64: any finite data
    with pytest.raises(ValueError, match="n_hidden"):
        NADE(5, n_hidden=0)
    with pytest.raises(ValueError, match="log_scale_min"):
        RNADE(3, log_scale_min=1.0, log_scale_max=0.0)


def test_gradcheck_with_mask_inputs():
    model = random_nade(D=5, H=3, seed=13, order="random", mask_inputs=True)
    model.W.data[:, 1] = np.random.default_rng(1).standard_normal(model.W.data[:, 1].shape)
    x = all_binary(5)[::7]
    result = gradcheck(lambda *params: -model.log_prob(x).mean(), *model.parameters())
    assert result["max_rel_error"] < 1e-4
