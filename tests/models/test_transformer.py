"""The Transformer model: gradcheck of its loss, causality (Jacobian and perturbation),
normalization over all 2^10 sequences, the key/value cache, sampling, and errors."""
import itertools
import types

import numpy as np
import pytest

from tinyar import functional as F
from tinyar.cli import MODEL_OPTIONS
from tinyar.gradcheck import gradcheck
from tinyar.models import REGISTRY, Transformer
from tinyar.optim import SGD, clip_grad_norm_
from tinyar.tensor import Tensor, no_grad


def small(vocab_size=3, max_len=6, dtype=np.float64, **kw):
    options = dict(n_layers=2, d_model=8, n_heads=2, d_mlp=12, rng=0, dtype=dtype)
    options.update(kw)
    return Transformer(vocab_size, max_len=max_len, **options)


def test_gradcheck_of_the_loss_in_float64():
    model, x = Transformer.gradcheck_example()
    assert model.dtype == np.float64
    gradcheck(lambda *p: -model.log_prob(x).mean(), *model.parameters())


def test_gradcheck_composite_model_matches_fused_model():
    fused, plain = small(fused=True), small(fused=False)
    x = np.random.default_rng(0).integers(0, 3, (4, 6))
    np.testing.assert_allclose(fused.log_prob(x).data, plain.log_prob(x).data, atol=1e-12)
    for m in (fused, plain):
        m.nll(x).backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, atol=1e-12, err_msg=name)


def test_registry_interface_and_recipe():
    assert REGISTRY["transformer"] is Transformer
    assert Transformer.data_kind == "tokens"
    assert {"lr", "momentum", "batch_size", "epochs", "model"} <= set(Transformer.recipe)
    assert MODEL_OPTIONS["transformer"]                              # the command line's flags of the model
    for flag, (kwarg, parse, help_text) in MODEL_OPTIONS["transformer"].items():
        assert flag.startswith("--") and kwarg in Transformer(2, max_len=4).config and parse("4") == 4


def test_config_rebuilds_an_identical_model():
    m = small(vocab_size=5, max_len=7, dtype=np.float32)
    m2 = type(m)(**m.config)
    m2.load_state_dict(m.state_dict())
    x = np.random.default_rng(0).integers(0, 5, (3, 7))
    np.testing.assert_array_equal(m.log_prob(x).data, m2.log_prob(x).data)
    assert m2.dtype == np.float32


def test_for_dataset_sizes_the_model():
    ds = types.SimpleNamespace(kind="binary", n_dims=64, n_levels=2, name="digits")
    m = Transformer.for_dataset(ds, rng=0, d_model=16, n_heads=2, d_mlp=32)
    assert (m.vocab_size, m.max_len, m.config["d_model"]) == (2, 64, 16)
    with pytest.raises(ValueError, match="discrete"):
        Transformer.for_dataset(types.SimpleNamespace(kind="continuous", n_dims=64, n_levels=0))


# ----------------------------------------------------------------- causality
def test_jacobian_of_logits_wrt_later_inputs_is_exactly_zero():
    """d logits_t / d h_s = 0 exactly for s > t, where h is the embedded input sequence."""
    model = small()
    x = np.random.default_rng(1).integers(0, 3, (2, 6))
    with no_grad():
        h0 = model.token_embedding(model.inputs(x)).data + model.position_embedding(np.arange(6)).data
    rng = np.random.default_rng(2)
    for t in range(6):
        h = Tensor(h0.copy(), requires_grad=True)
        logits = model.from_embeddings(h)                             # (B, T, V)
        upstream = np.zeros(logits.shape)
        upstream[:, t] = rng.standard_normal((2, 3))
        logits.backward(upstream)
        assert np.all(h.grad[:, t + 1:] == 0.0), f"logits at {t} depend on a later input"
        assert np.all(np.abs(h.grad[:, :t + 1]).sum(axis=-1) > 0)


def test_perturbing_later_tokens_leaves_earlier_conditionals_unchanged():
    model = small(vocab_size=4, max_len=8)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (5, 8))
    base = F.log_softmax(model.logits(x), axis=-1).data            # (B, T, V)
    for i in range(8):
        x2 = x.copy()
        x2[:, i:] = (x2[:, i:] + rng.integers(1, 4, (5, 8 - i))) % 4  # change x_i and everything after it
        moved = F.log_softmax(model.logits(x2), axis=-1).data
        # p(x_t | x_<t) for t <= i sees none of the changes
        np.testing.assert_allclose(moved[:, :i + 1], base[:, :i + 1], rtol=0, atol=1e-13)
        if i + 1 < 8:
            assert np.abs(moved[:, i + 1:] - base[:, i + 1:]).max() > 1e-6


def test_normalization_over_all_binary_sequences_of_length_10():
    model = small(vocab_size=2, max_len=10, rng=4)
    everything = np.array(list(itertools.product([0, 1], repeat=10)))      # (1024, 10)
    logp = model.log_prob(everything).data
    total = F.logsumexp(Tensor(logp), axis=0).item()
    assert abs(total) < 1e-10
    shorter = model.log_prob(everything[:8, 7:]).data                     # all 8 sequences of length 3
    assert shorter.shape == (8,) and abs(F.logsumexp(Tensor(shorter), axis=0).item()) < 1e-10


# ------------------------------------------------------- cache and sampling
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_cached_logits_equal_uncached_logits(dtype, tol):
    model = small(vocab_size=7, max_len=12, dtype=dtype, rng=5, d_model=16, n_heads=4, d_mlp=32)
    x = np.random.default_rng(6).integers(0, 7, (3, 12))
    full = model.logits(x).data
    cached = model.cached_logits(x)
    assert cached.shape == full.shape == (3, 12, 7)
    np.testing.assert_allclose(cached, full, rtol=0, atol=tol)
    if dtype == np.float64:
        assert np.abs(cached - full).max() < 1e-6


def test_sampling_with_and_without_cache_draws_the_same_sequences():
    model = small(vocab_size=5, max_len=9, rng=7)
    a = model.sample(6, rng=11)
    b = model.sample(6, rng=11, use_cache=False)
    assert a.shape == (6, 9) and a.dtype.kind == "i" and a.min() >= 0 and a.max() < 5
    np.testing.assert_array_equal(a, b)
    prompt = a[:, :4]
    c = model.sample(6, rng=12, prompt=prompt)
    assert c.shape == (6, 9)                                          # the prompt, then up to max_len
    np.testing.assert_array_equal(c[:, :4], prompt)
    np.testing.assert_array_equal(c, model.sample(6, rng=12, prompt=prompt, use_cache=False))


def test_prompt_is_kept_and_the_continuation_is_conditioned_on_it():
    model = small(vocab_size=3, max_len=6, rng=1, vocab=["a", "b", "c"])
    for p in model.parameters():
        p.data *= 3                            # sharper conditionals: p(x_4 | "cab") = (0.91, 0.01, 0.08),
                                               # p(x_4 | "aaa") = (0.45, 0.39, 0.16)
    out = model.sample(4, rng=0, prompt="cab", length=2)
    assert out.shape == (4, 5)
    assert all(model.decode(row).startswith("cab") for row in out)     # kept verbatim
    np.testing.assert_array_equal(model.sample(2, prompt=[2, 0], length=0), [[2, 0], [2, 0]])
    # the token after the prompt follows p(x_4 | x_<4 = "cab"), not the unconditioned p(x_4)
    p_next = np.exp(model.log_prob(np.array([[2, 0, 1, k] for k in range(3)])).data
                    - model.log_prob(np.array([[2, 0, 1]])).data)     # p(x_4 = k | "cab"), sums to 1
    np.testing.assert_allclose(p_next.sum(), 1.0, atol=1e-12)
    draws = model.sample(6000, rng=1, prompt="cab", length=1)[:, 3]
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 6000, p_next, atol=0.02)
    with pytest.raises(ValueError, match="vocabulary"):
        model.sample(1, prompt="xyz")
    with pytest.raises(ValueError, match="max_len=6"):
        model.sample(1, prompt="cab", length=4)                       # 3 + 4 tokens > max_len


def test_sample_frequencies_match_the_model_probabilities():
    model = small(vocab_size=2, max_len=3, rng=8)
    everything = np.array(list(itertools.product([0, 1], repeat=3)))
    p = np.exp(model.log_prob(everything).data)
    s = model.sample(20000, rng=9)
    counts = np.array([np.all(s == row, axis=1).sum() for row in everything])
    expected = 20000 * p
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 24.3                                                 # chi-square, 7 dof, p = 0.001


def test_low_temperature_samples_are_greedy_and_high_temperature_flattens():
    model = small(vocab_size=4, max_len=6, rng=9)
    greedy = np.zeros((1, 6), dtype=np.int64)
    for t in range(6):                                                # argmax decoding, uncached
        greedy[0, t] = np.argmax(model.logits(greedy).data[0, t])
    cold = model.sample(5, rng=1, temperature=1e-4)
    np.testing.assert_array_equal(cold, np.repeat(greedy, 5, axis=0))
    hot = model.sample(4000, rng=2, temperature=50.0)
    np.testing.assert_allclose(np.bincount(hot[:, 0], minlength=4) / 4000, 0.25, atol=0.03)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=0.0)


# -------------------------------------------------------------------- errors
def test_sequence_longer_than_the_positional_table_is_a_clear_error():
    model = small(max_len=6)
    with pytest.raises(ValueError, match="longer than the positional table"):
        model.log_prob(np.zeros((2, 7), dtype=np.int64))
    with pytest.raises(ValueError, match="max_len=6"):
        model.sample(2, length=7)
    with pytest.raises(ValueError, match="positional table"):
        model.forward(np.zeros((1, 2), dtype=np.int64), start=5)


def test_bad_inputs_get_clear_errors():
    model = small(vocab_size=3)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model.log_prob(np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="non-integer"):
        model.log_prob(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"x\[None, :\]"):
        model.log_prob(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="length 0"):
        model.log_prob(np.zeros((2, 0), dtype=np.int64))


def test_learns_a_deterministic_pattern():
    """SGD on sequences 0 1 2 0 1 2 ... (two phases) drives the NLL near log 3 (the first token)."""
    model = small(vocab_size=3, max_len=6, dtype=np.float32, rng=10, d_model=16, d_mlp=32)
    x = np.array([[0, 1, 2, 0, 1, 2], [1, 2, 0, 1, 2, 0], [2, 0, 1, 2, 0, 1]] * 4)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    start = model.nll(x).item()
    for _ in range(150):
        opt.zero_grad()
        loss = model.nll(x)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    assert start > 5.0 and model.nll(x).item() < np.log(3) + 0.1

