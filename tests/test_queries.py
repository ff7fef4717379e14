"""queries: completion keeps the observed values and samples the rest from the right
conditionals (chi-square on tiny D); the observed part's log-probability; clear errors."""
import numpy as np
import pytest
from scipy.stats import chisquare

from tinyar import metrics, queries
from tinyar.models import (FVSBN, MADE, NADE, RNADE, CategoricalNADE, GatedPixelCNN, PixelCNN, PixelRNN,
                           Transformer)


def _exact_conditional(log_joint, configs, x_row, observed):
    """p(x_U | x_O) over the configurations that agree with x_row on the observed dims."""
    keep = np.all(configs[:, observed] == x_row[observed], axis=1)
    p = np.exp(log_joint[keep] - log_joint[keep].max())
    return configs[keep], p / p.sum()


def _chi_square(samples, support, probs):
    """p-value of the sample counts over `support` (rows) against probs; every sample must be in support."""
    index = {tuple(r): k for k, r in enumerate(support.astype(np.int64))}
    counts = np.zeros(len(support))
    for r in samples.astype(np.int64):
        counts[index[tuple(r)]] += 1                                  # KeyError: an observed value changed
    return chisquare(counts, probs * len(samples)).pvalue


def _fvsbn():
    rng = np.random.default_rng(0)
    m = FVSBN(5, order=[3, 0, 4, 1, 2], init_std=1.5, rng=rng, dtype=np.float64)
    m.b.data[...] = rng.standard_normal(5)
    return m


def _oa_nade():
    rng = np.random.default_rng(1)
    m = NADE(5, n_hidden=4, order_agnostic=True, rng=rng, dtype=np.float64)
    m.W.data *= 4
    m.b.data[...] = rng.standard_normal(m.b.shape)
    return m


N = 3000


def test_prefix_completion_of_fvsbn_matches_the_exact_conditional():
    m = _fvsbn()
    configs, log_joint = metrics.exact_log_probs(m)
    observed = np.zeros(5, bool)
    observed[[3, 0]] = True                                           # the first two in its ordering
    x = np.tile(np.array([[1, 0, 0, 0, 1]], np.float64), (N, 1))
    out = queries.complete(m, x, observed, rng=0)
    assert np.all(out[:, observed] == x[:, observed])
    support, probs = _exact_conditional(log_joint, configs, x[0], observed)
    assert len(support) == 8
    assert _chi_square(out, support, probs) > 1e-3
    # and a wrong target is rejected by the same test: the model's unconditional marginal of x_U
    # (support rows run over (x_1, x_2, x_4) lexicographically, as this reshape does)
    wrong = np.exp(log_joint.reshape(2, 2, 2, 2, 2)).sum(axis=(0, 3)).reshape(-1)   # p(x_1, x_2, x_4)
    assert _chi_square(out, support, wrong) < 1e-6


def test_order_agnostic_nade_completes_any_observed_set_from_its_observed_first_conditional():
    m = _oa_nade()
    observed = np.array([False, True, False, True, True])            # not a prefix of its natural order
    x = np.tile(np.array([[0, 1, 0, 0, 1]], np.float64), (N, 1))
    out = queries.complete(m, x, observed, rng=1)
    assert np.all(out[:, observed] == x[:, observed])
    order = queries.observed_first_order(m, observed)
    assert order.tolist() == [1, 3, 4, 0, 2]
    configs = metrics.all_configurations(5, 2)
    log_joint = m.log_prob(configs.astype(np.float64), order=order).data     # the model under that ordering
    support, probs = _exact_conditional(log_joint, configs, x[0], observed)
    assert _chi_square(out, support, probs) > 1e-3
    # log p(x_O) = log sum_{x_U} p(x) under that ordering
    lp = queries.log_prob_observed(m, x[:2], observed)
    keep = np.all(configs[:, observed] == x[0, observed], axis=1)
    assert np.allclose(lp, np.log(np.exp(log_joint[keep]).sum()), atol=1e-10)


def test_categorical_order_agnostic_completion_per_row_sets():
    rng = np.random.default_rng(2)
    m = CategoricalNADE(3, n_levels=3, n_hidden=4, order_agnostic=True, rng=rng, dtype=np.float64)
    m.b.data[...] = 2 * rng.standard_normal(m.b.shape)
    x = np.tile(np.array([[2, 0, 1]]), (2 * N, 1))
    observed = np.zeros((2 * N, 3), bool)
    observed[:N, 2] = True                                            # first half: observe x_2
    observed[N:, 0] = True                                            # second half: observe x_0
    out = queries.complete(m, x, observed, rng=3)
    assert out.dtype.kind == "i" and np.all(out[observed] == x[observed])
    configs = metrics.all_configurations(3, 3)
    for half, dim in ((slice(0, N), 2), (slice(N, 2 * N), 0)):
        obs = np.zeros(3, bool)
        obs[dim] = True
        log_joint = m.log_prob(configs, order=queries.observed_first_order(m, obs)).data
        support, probs = _exact_conditional(log_joint, configs, x[0], obs)
        assert _chi_square(out[half], support, probs) > 1e-3


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer", "pixelrnn", "made"])
def test_prefix_completion_of_raster_and_sequence_models(kind):
    rng = np.random.default_rng(4)
    if kind == "pixelcnn":
        m = PixelCNN(4, image_shape=(2, 2), n_channels=4, n_layers=1, first_kernel_size=3, rng=rng, dtype=np.float64)
        m.out_logits.bias.data[...] = 0.7
    elif kind == "transformer":
        m = Transformer(2, max_len=4, n_layers=1, d_model=8, n_heads=2, d_mlp=8, rng=rng, dtype=np.float64)
    elif kind == "pixelrnn":
        m = PixelRNN(4, n_hidden=6, rng=rng, dtype=np.float64)
    else:
        m = MADE(4, n_hidden=[8], order=[2, 0, 3, 1], rng=rng, dtype=np.float64)
        m._randomize_biases(rng)
    order = queries.ordering(m, 4)
    observed = np.zeros(4, bool)
    observed[order[:2]] = True
    x = np.zeros((N, 4), np.int64)
    x[:, order[0]], x[:, order[1]] = 1, 0
    out = queries.complete(m, x, observed, rng=5)
    assert np.all(out[:, observed] == x[:, observed])
    configs, log_joint = metrics.exact_log_probs(m)
    support, probs = _exact_conditional(log_joint, configs, x[0], observed)
    assert _chi_square(out, support, probs) > 1e-3
    lp = queries.log_prob_observed(m, x[:1], observed)
    keep = np.all(configs[:, observed] == x[0, observed], axis=1)
    assert np.allclose(lp, np.log(np.exp(log_joint[keep]).sum()), atol=1e-9)


def test_prefix_only_models_refuse_other_observed_sets_clearly():
    m = _fvsbn()                                                      # ordering 3, 0, 4, 1, 2
    observed = np.array([True, False, False, False, False])          # x_0 without x_3 before it
    with pytest.raises(ValueError, match="prefix of its ordering.*dimension 3"):
        queries.complete(m, np.zeros((2, 5)), observed)
    with pytest.raises(ValueError, match="order-agnostic NADE"):
        queries.log_prob_observed(m, np.zeros((2, 5)), observed)
    cnn = GatedPixelCNN(16, n_channels=4, n_layers=1)
    left = queries.mask_left(16, (4, 4), 2)
    with pytest.raises(ValueError, match="raster|prefix"):
        queries.complete(cnn, np.zeros((1, 16)), left)
    top = queries.mask_top(16, (4, 4), 2)
    assert queries.complete(cnn, np.ones((1, 16)), top)[0, :8].tolist() == [1.0] * 8
    assert not queries.supports_any_observed_set(m) and queries.supports_any_observed_set(_oa_nade())
    assert "any observed set" in queries.describe_support(_oa_nade())


def test_made_ensemble_completion_samples_the_mixture_conditional():
    rng = np.random.default_rng(7)
    m = MADE(4, n_hidden=[8], n_masks=3, mask_seed=3, rng=rng, dtype=np.float64)
    m._randomize_biases(rng)
    for layer in m.layers + [m.output]:
        layer.weight.data *= 3
    configs = metrics.all_configurations(4, 2).astype(np.float64)
    p_k = []
    for k in range(3):
        m.use_mask(k)
        p_k.append(np.exp(m.log_prob(configs).data))
    m.use_mask(0)
    log_mix = np.log(np.mean(p_k, axis=0))                            # the ensemble p(x) = (1/N) sum_k p_k(x)
    assert abs(np.exp(log_mix).sum() - 1) < 1e-10
    observed = np.array([False, True, False, True])
    x = np.tile(np.array([[0, 1, 0, 0]], np.float64), (2000, 1))
    out = queries.complete(m, x, observed, rng=8, n_proposals=64)
    assert np.all(out[:, observed] == x[:, observed])
    support, probs = _exact_conditional(log_mix, configs, x[0], observed)
    assert _chi_square(out, support, probs) > 1e-3
    assert m.mask_index == 0                                           # the current mask is put back


def test_made_ensemble_accepts_any_set_and_keeps_observed_values():
    m = MADE(6, n_hidden=[10], n_masks=4, rng=0)
    assert queries.supports_any_observed_set(m)
    x = np.ones((5, 6), np.float32)
    observed = queries.mask_left(6, (2, 3), 1)                        # dims 0 and 3
    out = queries.complete(m, x, observed, rng=0, n_proposals=8)
    assert out.shape == (5, 6) and np.all(out[:, observed] == 1)
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_log_prob_observed_edges_equal_log_prob_and_zero():
    for m in (_fvsbn(), _oa_nade()):
        x = (np.random.default_rng(6).random((4, 5)) < 0.5).astype(np.float64)
        full = queries.log_prob_observed(m, x, np.ones(5, bool))
        order = queries.observed_first_order(m, np.ones(5, bool))
        ref = m.log_prob(x, order=order).data if hasattr(m, "outputs") else m.log_prob(x).data
        np.testing.assert_allclose(full, ref, atol=1e-10)
        np.testing.assert_allclose(queries.log_prob_observed(m, x, np.zeros(5, bool)), 0.0, atol=1e-12)


def test_order_agnostic_marginal_with_several_orderings_is_a_log_mean():
    m = _oa_nade()
    x = np.array([[1, 0, 1, 1, 0]], np.float64)
    observed = np.array([True, False, True, False, False])
    one = queries.log_prob_observed(m, x, observed, n_orderings=1)
    many = queries.log_prob_observed(m, x, observed, n_orderings=8, rng=0)
    # both are log-probabilities of one event under normalized models: negative, and close for a 2-dim marginal
    assert one[0] < 0 and many[0] < 0 and abs(one[0] - many[0]) < 2.0
    assert one[0] != many[0]


def test_rnade_completion_keeps_observed_reals():
    m = RNADE(6, n_hidden=4, n_components=2, order_agnostic=True, rng=0)
    x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    observed = np.array([False, True, False, True, False, True])
    out = queries.complete(m, x, observed, rng=0)
    assert np.all(out[:, observed] == x[:, observed]) and np.all(out[:, ~observed] != x[:, ~observed])


def test_complete_returns_the_samplers_output_untouched():
    """No overwrite of the observed values after sampling: the "observed kept" asserts above
    check each model's own sampler (a sampler that lost them would be caught)."""
    m = _oa_nade()
    m.complete = lambda x, observed, rng=None: np.zeros_like(x)      # a broken sampler
    out = queries.complete(m, np.ones((2, 5)), np.array([True, True, False, False, False]), rng=0)
    np.testing.assert_array_equal(out, np.zeros((2, 5)))
