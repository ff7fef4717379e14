"""MADE: masks, the autoregressive property, normalization, gradients, sampling, completion."""
import itertools

import numpy as np
import pytest

from tinyar import gradcheck_cases, train
from tinyar.gradcheck import gradcheck
from tinyar.models import REGISTRY, CategoricalMADE, MADE
from tinyar.models.made import made_degrees, made_masks, parse_sizes
from tinyar.nn import MaskedLinear
from tinyar.tensor import Tensor, no_grad


def all_inputs(D, K=2):
    return np.array(list(itertools.product(range(K), repeat=D)))


def chi_square_p(counts, probs):
    from scipy.stats import chisquare
    expected = probs * counts.sum()
    return chisquare(counts, expected).pvalue


# ------------------------------------------------------------------------ masks
def test_degrees_and_masks_follow_the_connectivity_rules():
    rng = np.random.default_rng(0)
    order = np.array([2, 0, 3, 1])
    degrees = made_degrees(4, [7, 5], order, rng)
    np.testing.assert_array_equal(degrees[0], [2, 4, 1, 3])           # m^0(d) = 1 + position of d
    for prev, m in zip(degrees[:-1], degrees[1:]):
        assert m.min() >= min(prev.min(), 3) and m.max() <= 3            # U{min m^{l-1}, ..., D - 1}
    hidden, output, direct = made_masks(degrees, direct=True)
    np.testing.assert_array_equal(hidden[0], degrees[1][:, None] >= degrees[0][None, :])
    np.testing.assert_array_equal(output, degrees[0][:, None] > degrees[2][None, :])
    # direct connections: output d sees input d' iff d' comes earlier in the ordering
    np.testing.assert_array_equal(direct, np.array([[0, 0, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]]))
    # the number of paths from input d' to output d is 0 unless d' precedes d
    paths = output.astype(int) @ hidden[1].astype(int) @ hidden[0].astype(int)
    assert np.all(paths[degrees[0][:, None] <= degrees[0][None, :]] == 0)


def test_docstring_picture_is_right():
    degrees = [np.array([1, 2, 3]), np.array([1, 2, 1, 2])]
    hidden, output, _ = made_masks(degrees, direct=False)
    np.testing.assert_array_equal(hidden[0], [[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(output, [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(output.astype(int) @ hidden[0].astype(int), [[0, 0, 0], [2, 0, 0], [4, 2, 0]])


def test_masks_are_resampled_and_drawn_from_the_runs_rng():
    m = MADE(6, n_hidden=[10], n_masks=3, rng=0, dtype=np.float64)
    orders = [m.draw_mask(k)[0] for k in range(3)]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert m.mask_index == 0
    rng = np.random.default_rng(5)
    seen = []
    for _ in range(30):
        m.before_batch(rng)
        seen.append(m.mask_index)
        np.testing.assert_array_equal(m.order, orders[m.mask_index])
    assert seen == np.random.default_rng(5).integers(3, size=30).tolist()    # the rng alone decides
    assert set(seen) == {0, 1, 2}
    m.before_eval()
    assert m.mask_index == 0
    single = MADE(6, n_hidden=[10], rng=0)
    np.testing.assert_array_equal(single.order, np.arange(6))           # one mask: natural order
    assert not np.array_equal(MADE(6, n_hidden=[10], order="random", rng=0).order, np.arange(6))
    fixed = MADE(6, n_hidden=[10], order="natural", n_masks=2, rng=0)   # connectivity-agnostic only
    np.testing.assert_array_equal(fixed.draw_mask(1)[0], np.arange(6))
    assert not np.array_equal(fixed.draw_mask(0)[1][1], fixed.draw_mask(1)[1][1])


def test_masked_linear_validates_its_mask():
    layer = MaskedLinear(3, 2, rng=0)
    with pytest.raises(ValueError, match="shape"):
        layer.set_mask(np.ones((3, 2)))
    with pytest.raises(ValueError, match="0 and 1"):
        layer.set_mask(np.full((2, 3), 0.5))
    layer.set_mask(np.array([[1, 0, 0], [1, 1, 0]]))
    y = layer(Tensor(np.array([[1.0, 2.0, 3.0]], dtype=np.float32)))
    W = layer.weight.data
    np.testing.assert_allclose(y.data, [[W[0, 0], W[1, 0] + 2 * W[1, 1]]], rtol=1e-6)


# --------------------------------------------------------- autoregressive property
MODELS = [
    lambda: MADE(6, n_hidden=[12, 9], direct=True, n_masks=4, rng=0, dtype=np.float64),
    lambda: MADE(6, n_hidden=[40], direct=False, n_masks=3, mask_seed=5, rng=1, dtype=np.float64),
    lambda: CategoricalMADE(5, n_levels=3, n_hidden=[15, 15], direct=True, n_masks=3, rng=2, dtype=np.float64),
]


def _random_inputs(model, n, rng):
    K = model.n_levels
    return rng.integers(0, K, size=(n, model.n_dims))


@pytest.mark.parametrize("make", MODELS)
def test_autoregressive_by_perturbation(make):
    model = make()
    rng = np.random.default_rng(0)
    for k in range(model.n_masks):
        model.use_mask(k)
        x = _random_inputs(model, 8, rng)
        with no_grad():
            base = model.forward(x).data
            for pos, d in enumerate(model.order):
                changed = x.copy()
                changed[:, d] = (changed[:, d] + 1) % model.n_levels     # change x_d only
                out = model.forward(changed).data
                before = model.order[:pos + 1]                              # d and everything before d
                after = model.order[pos + 1:]
                np.testing.assert_array_equal(out[:, before], base[:, before])
                if len(after):
                    assert np.abs(out[:, after] - base[:, after]).max() > 1e-6


@pytest.mark.parametrize("make", MODELS)
def test_autoregressive_by_jacobian(make):
    """d logits_d / d x_d' is zero for d' at or after d in the ordering, nonzero for some d' before."""
    model = make()
    rng = np.random.default_rng(1)
    D, K = model.n_dims, model._k
    for k in range(model.n_masks):
        model.use_mask(k)
        h0 = Tensor(model._features(_random_inputs(model, 16, rng)), requires_grad=True)
        rank = np.empty(D, dtype=np.int64)
        rank[model.order] = np.arange(D)
        for d in range(D):
            h0.grad = None
            logits = model.network(h0)
            upstream = np.zeros(logits.shape)
            upstream[:, d] = 1.0
            logits.backward(upstream)
            g = np.abs(h0.grad).reshape(16, D, K).sum(axis=(0, 2))          # (D,): sensitivity to each x_d'
            assert np.all(g[rank >= rank[d]] == 0.0), f"mask {k}: output {d} sees a later input"
            if rank[d] > 0:
                assert g[rank < rank[d]].max() > 0.0, f"mask {k}: output {d} sees nothing before it"


# ------------------------------------------------------------------ normalization
def test_normalized_over_all_binary_inputs_single_and_ensemble():
    model = MADE(10, n_hidden=[20, 16], direct=True, n_masks=3, rng=0, dtype=np.float64)
    x = all_inputs(10)                                                       # (1024, 10)
    with no_grad():
        per_mask = []
        for k in range(3):
            model.use_mask(k)
            lp = model.log_prob(x).data
            per_mask.append(lp)
            assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-10)
        ens = model.ensemble_log_prob(x).data
        assert model.mask_index == 2                                         # left as it was
    assert np.exp(ens).sum() == pytest.approx(1.0, abs=1e-10)
    assert np.abs(per_mask[0] - per_mask[1]).max() > 1e-3                  # the masks are different models
    # log-mean-exp of the masks' likelihoods, not anything else
    np.testing.assert_allclose(ens, np.log(np.mean(np.exp(per_mask), axis=0)), rtol=1e-12)


def test_normalized_categorical_k3_d6():
    model = CategoricalMADE(6, n_levels=3, n_hidden=[16], direct=True, n_masks=2, rng=0, dtype=np.float64)
    x = all_inputs(6, 3)                                                     # (729, 6)
    with no_grad():
        for k in range(2):
            model.use_mask(k)
            assert np.exp(model.log_prob(x).data).sum() == pytest.approx(1.0, abs=1e-10)
        assert np.exp(model.ensemble_log_prob(x).data).sum() == pytest.approx(1.0, abs=1e-10)


def test_normalized_float32_with_numba_kernels():
    model = MADE(8, n_hidden=[30, 30], n_masks=2, rng=0)                   # float32
    with no_grad():
        assert np.exp(model.ensemble_log_prob(all_inputs(8)).data.astype(np.float64)).sum() == \
            pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cls", [MADE, CategoricalMADE])
def test_gradcheck_loss(cls):
    model, x = cls.gradcheck_example()
    for k in range(model.n_masks):
        model.use_mask(k)
        gradcheck(lambda *p: model.nll(x), *model.parameters())


def test_gradcheck_ensemble_log_prob():
    model, x = MADE.gradcheck_example()
    gradcheck(lambda *p: -model.ensemble_log_prob(x).mean(), *model.parameters())


def test_model_cases_include_made():
    names = [c[0] for c in gradcheck_cases.model_cases()]
    assert "MADE" in names and "CategoricalMADE" in names


def test_masked_out_weights_do_not_move():
    model = MADE(5, n_hidden=[7], rng=0, dtype=np.float64)
    x = (np.random.default_rng(0).random((4, 5)) < 0.5).astype(float)
    model.nll(x).backward()
    layer = model.layers[0]
    assert np.all(layer.weight.grad[layer.mask == 0] == 0.0)
    assert np.abs(layer.weight.grad[layer.mask == 1]).max() > 0.0


# ----------------------------------------------------------------------- sampling
def _probs(model, D, K=2, ensemble=False):
    x = all_inputs(D, K)
    with no_grad():
        lp = model.ensemble_log_prob(x) if ensemble else model.log_prob(x)
    return x, np.exp(lp.data)


def _counts(x_all, samples, K):
    codes = samples.astype(np.int64) @ (K ** np.arange(x_all.shape[1])[::-1])
    return np.bincount(codes, minlength=len(x_all))


def test_samples_match_the_model_d3():
    model = MADE(3, n_hidden=[6], direct=True, order="random", rng=3, dtype=np.float64)
    for layer in model.layers + [model.output]:
        layer.weight.data *= 4.0                                           # a peaked, non-uniform model
    x_all, p = _probs(model, 3)
    samples = model.sample(20000, rng=np.random.default_rng(0))
    assert set(np.unique(samples)) <= {0.0, 1.0}
    assert chi_square_p(_counts(x_all, samples, 2), p) > 1e-3
    uniform = np.full(8, 1 / 8)
    assert chi_square_p(_counts(x_all, samples, 2), uniform) < 1e-6         # the test can fail


def test_ensemble_samples_match_the_mixture_d3():
    model = MADE(3, n_hidden=[6], n_masks=3, rng=4, dtype=np.float64)
    for layer in model.layers + [model.output]:
        layer.weight.data *= 4.0
    x_all, p = _probs(model, 3, ensemble=True)
    samples = model.sample(20000, rng=np.random.default_rng(1), ensemble=True)
    assert chi_square_p(_counts(x_all, samples, 2), p) > 1e-3


def test_categorical_samples_match_the_model_d3():
    model = CategoricalMADE(3, n_levels=3, n_hidden=[8], rng=5, dtype=np.float64)
    for layer in model.layers + [model.output]:
        layer.weight.data *= 3.0
    x_all, p = _probs(model, 3, K=3)
    samples = model.sample(20000, rng=np.random.default_rng(2))
    assert samples.dtype.kind == "i"
    assert chi_square_p(_counts(x_all, samples, 3), p) > 1e-3


@pytest.mark.parametrize("observed_first", [True, False])
def test_complete_samples_the_conditional(observed_first):
    model = MADE(3, n_hidden=[6], direct=True, rng=6, dtype=np.float64)     # natural order
    for layer in model.layers + [model.output]:
        layer.weight.data *= 4.0
    x_all, p = _probs(model, 3)
    d = 0 if observed_first else 2                                          # observe x_0 = 1, or x_2 = 1
    keep = x_all[:, d] == 1
    conditional = np.where(keep, p, 0.0) / p[keep].sum()
    n = 4000
    x = np.zeros((n, 3))
    x[:, d] = 1.0
    observed = np.zeros((n, 3), dtype=bool)
    observed[:, d] = True
    out = model.complete(x, observed, rng=np.random.default_rng(3), n_proposals=200)
    assert np.all(out[:, d] == 1.0)
    freq = _counts(x_all, out, 2) / n
    assert 0.5 * np.abs(freq - conditional).sum() < 0.04                   # total variation
    assert np.abs(freq - p).sum() > 0.1 or np.abs(conditional - p).sum() < 0.1


# ------------------------------------------------------------ config, save, errors
@pytest.mark.parametrize("cls,kw", [(MADE, dict(n_hidden=[9, 7], direct=True, n_masks=3, mask_seed=11)),
                                    (CategoricalMADE, dict(n_levels=4, n_hidden=[9], n_masks=2, order="random"))])
def test_rebuild_from_config_and_checkpoint(cls, kw, tmp_path):
    model = cls(5, rng=7, **kw)
    x = np.random.default_rng(0).integers(0, model.n_levels, size=(6, 5))
    clone = type(model)(**model.config)
    clone.load_state_dict(model.state_dict())
    for k in range(model.n_masks):
        model.use_mask(k)
        clone.use_mask(k)
        np.testing.assert_array_equal(model.order, clone.order)
        np.testing.assert_array_equal(model.log_prob(x).data, clone.log_prob(x).data)
    train.save(model, tmp_path / "made.npz")
    loaded = train.load(tmp_path / "made.npz")
    np.testing.assert_allclose(loaded.ensemble_log_prob(x).data, model.ensemble_log_prob(x).data, rtol=1e-6)


def test_bad_input_is_a_clear_error():
    model = MADE(4, n_hidden=[5], rng=0)
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(np.full((2, 4), 0.5))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        model.log_prob(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="categories"):
        CategoricalMADE(4, n_levels=3, n_hidden=[5], rng=0).log_prob(np.full((2, 4), 3))
    with pytest.raises(ValueError, match="order"):
        MADE(4, order="reversed")
    with pytest.raises(ValueError, match="n_masks"):
        MADE(4, n_masks=0)


def test_registry_and_cli_options():
    from tinyar.cli import MODEL_OPTIONS
    assert REGISTRY["made"] is MADE and REGISTRY["made-categorical"] is CategoricalMADE
    kwarg, parse, _ = MODEL_OPTIONS["made"]["--hidden"]
    assert kwarg == "n_hidden" and parse("500,500") == [500, 500]
    assert MODEL_OPTIONS["made"]["--masks"][0] == "n_masks"
    assert parse_sizes("0") == []
    model = MADE(4, n_hidden=parse("3,2"), n_masks=2)
    assert [layer.weight.shape for layer in model.layers] == [(3, 4), (2, 3)]


def test_cli_trains_made_with_hidden_and_masks(tmp_path):
    from tinyar.cli import main
    code = main(["train", "made", "--hidden", "8,8", "--masks", "2", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress", "--n-samples", "4"])
    assert code in (0, None)
    loaded = train.load(tmp_path / "run" / "model.npz")
    assert isinstance(loaded, MADE) and loaded.n_hidden == [8, 8] and loaded.n_masks == 2


def test_categorical_complete_keeps_observed_values():
    model = CategoricalMADE(4, n_levels=3, n_hidden=[8], n_masks=2, rng=0, dtype=np.float64)
    x = np.array([[2, 0, 1, 0], [1, 1, 0, 2]])
    observed = np.array([[True, False, True, False], [False, False, False, True]])
    out = model.complete(x, observed, rng=np.random.default_rng(0), n_proposals=8)
    assert out.dtype.kind == "i" and out.shape == (2, 4)
    np.testing.assert_array_equal(out[observed], x[observed])
    assert out.min() >= 0 and out.max() <= 2
    with pytest.raises(ValueError, match="categories"):
        model.complete(np.full((2, 4), 5), observed)


def test_a_checkpoint_from_before_sorted_hidden_units_rebuilds_its_own_masks(tmp_path):
    """Checkpoints of version 1 drew hidden degrees unsorted; the masks are rebuilt from the
    config, so loading one must not silently switch to sorted degrees (another model)."""
    import json
    old = MADE(6, n_hidden=[8], rng=0, sort_hidden=False, dtype=np.float64)
    train.save(old, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    record = json.loads(str(arrays["__tinyar__"]))
    record["version"] = 1
    del record["config"]["sort_hidden"]                      # as version 1 wrote it
    arrays["__tinyar__"] = np.array(json.dumps(record))
    np.savez(tmp_path / "v1.npz", **arrays)
    loaded = train.load(tmp_path / "v1.npz")
    x = np.array(list(itertools.product([0.0, 1.0], repeat=6)))
    assert loaded.config["sort_hidden"] is False
    np.testing.assert_allclose(loaded.log_prob(x).data, old.log_prob(x).data, rtol=1e-12)
    today = MADE(6, n_hidden=[8], rng=0, dtype=np.float64)     # the same seeds, sorted: other masks
    assert not all(np.array_equal(a.mask, b.mask) for a, b in zip(today.layers, old.layers))


def test_start_at_marginals_sets_the_output_biases_to_the_logits_of_the_data_means():
    from tinyar.data import Dataset
    x = np.zeros((4, 5))
    x[:, 1] = 1                                   # always on: clipped to 1 - 1e-3
    x[:3, 2] = 1                                  # on in 3 of 4 rows
    x[:1, 3] = 1                                  # 1 of 4
    dataset = Dataset("tiny", "binary", x, 1 - x, np.ones_like(x), n_dims=5)     # the means of train only
    model = MADE.for_dataset(dataset, rng=0, n_hidden=[7], start_at_marginals=True)
    q = np.array([1e-3, 1 - 1e-3, 0.75, 0.25, 1e-3])
    np.testing.assert_allclose(model.output.bias.data, np.log(q / (1 - q)), rtol=1e-6)
    assert "start_at_marginals" not in model.config                 # an initialisation, not part of the model
    plain = MADE.for_dataset(dataset, rng=0, n_hidden=[7])
    np.testing.assert_array_equal(plain.output.bias.data, 0.0)
    np.testing.assert_array_equal(plain.layers[0].weight.data, model.layers[0].weight.data)   # same draw otherwise


@pytest.mark.parametrize("direct", [False, True])
def test_start_at_marginals_is_the_independent_pixels_model_when_the_other_terms_are_zero(direct):
    """With the hidden layer's share (V) and the direct connections (A) set to zero, log p(x)
    is exactly the independent-Bernoulli log-likelihood of the data means: the model the
    method starts training near."""
    rng = np.random.default_rng(0)
    x = (rng.random((200, 6)) < np.linspace(0.1, 0.9, 6)).astype(np.float64)
    model = MADE(6, n_hidden=[8], direct=direct, rng=0, dtype=np.float64)
    model.start_at_marginals(x)
    model.output.weight.data[...] = 0.0
    if direct:
        model.skip.weight.data[...] = 0.0
    q = x.mean(axis=0)
    expected = (x * np.log(q) + (1 - x) * np.log(1 - q)).sum(axis=1)
    np.testing.assert_allclose(model.log_prob(x).data, expected, rtol=1e-10)


def test_start_at_marginals_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="no rows"):
        MADE(4, n_hidden=[5], rng=0).start_at_marginals(np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"expected shape \(batch, 4\)"):
        MADE(4, n_hidden=[5], rng=0).start_at_marginals(np.zeros((3, 5)))
    with pytest.raises(TypeError, match="only for binary data"):
        CategoricalMADE(4, n_levels=3, n_hidden=[5], rng=0).start_at_marginals(np.zeros((3, 4)))


@pytest.mark.parametrize("flags, direct, marginals", [
    ([], True, True),                                                   # the mnist recipe as it is
    (["--no-direct"], False, True),
    (["--no-start-at-marginals"], True, False),
])
def test_the_mnist_recipe_switches_turn_off_with_their_no_flags(flags, direct, marginals):
    from tinyar.cli import build_parser, recipe_from_args
    args = build_parser("made").parse_args(["train", "made", "--recipe", "mnist", *flags])
    model = recipe_from_args(MADE, args, "mnist")["model"]
    assert model["direct"] is direct and model["start_at_marginals"] is marginals
