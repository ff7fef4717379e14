"""The recurrent models: char-RNN (RNN) and PixelRNN (and, beside the char-RNN, the Transformer through the CLI's --prompt)."""
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from tinyar import ops
from tinyar.gradcheck import gradcheck
from tinyar.models import REGISTRY, PixelRNN, RNN
from tinyar.tensor import Tensor

ROOT = Path(__file__).resolve().parents[2]


def _all_sequences(K, T):
    return np.array(list(itertools.product(range(K), repeat=T)))


@pytest.mark.parametrize("cls", [RNN, PixelRNN])
def test_gradcheck_of_the_loss(cls):
    model, x = cls.gradcheck_example()
    assert model.dtype == np.float64
    result = gradcheck(lambda *p: -model.log_prob(x).mean(), *model.parameters())
    assert result["max_rel_error"] < 1e-5


def test_pixel_rnn_sums_to_one_over_all_2_to_the_10_images():
    model = PixelRNN(10, n_hidden=7, rng=3, dtype=np.float64)
    x = _all_sequences(2, 10).astype(np.float64)                            # (1024, 10)
    p = np.exp(model.log_prob(x).data)
    assert p.shape == (1024,)
    assert abs(p.sum() - 1.0) < 1e-10
    assert p.max() < 0.5                                                     # not a degenerate model


def test_language_model_next_char_distributions_sum_to_one():
    model = RNN(6, n_hidden=9, rng=1, dtype=np.float64)
    x = np.random.default_rng(0).integers(0, 6, (4, 11))
    c = model.conditionals(x)                                                # (4, 11, 6)
    assert c.shape == (4, 11, 6)
    np.testing.assert_allclose(c.sum(axis=-1), 1.0, rtol=1e-12)
    # and log_prob is their product along the sequence
    picked = np.take_along_axis(c, x[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(model.log_prob(x).data, np.log(picked).sum(axis=1), rtol=1e-10)
    # exact normalisation over all 4^4 sequences of length 4 (vocabulary 4)
    small = RNN(4, n_hidden=5, rng=2, dtype=np.float64)
    assert abs(np.exp(small.log_prob(_all_sequences(4, 4)).data).sum() - 1.0) < 1e-10


@pytest.mark.parametrize("cls,kw", [(RNN, dict(vocab_size=5)), (PixelRNN, dict(n_dims=12))])
def test_autoregressive_property(cls, kw):
    """Changing x_i moves no conditional p(x_t | x_<t) for t <= i; it does move later ones."""
    model = cls(**kw, n_hidden=8, rng=0, dtype=np.float64)
    K = 5 if cls is RNN else 2
    rng = np.random.default_rng(4)
    x = rng.integers(0, K, (1, 12))
    base = model.conditionals(x)
    for i in [0, 5, 11]:
        y = x.copy()
        y[0, i] = (y[0, i] + 1) % K
        moved = model.conditionals(y)
        np.testing.assert_array_equal(moved[:, :i + 1], base[:, :i + 1])    # t <= i: untouched (exactly)
        if i < 11:
            assert np.abs(moved[:, i + 1:] - base[:, i + 1:]).max() > 1e-6


@pytest.mark.parametrize("cls,kw", [(RNN, dict(vocab_size=5)), (PixelRNN, dict(n_dims=30))])
def test_truncated_bptt_with_carried_state_equals_the_whole_sequence(cls, kw):
    model = cls(**kw, n_hidden=6, rng=0, dtype=np.float64)
    K = 5 if cls is RNN else 2
    x = np.random.default_rng(5).integers(0, K, (3, 30))
    whole = model.log_prob(x).data
    total, state = 0.0, None
    for s, e in [(0, 7), (7, 8), (8, 20), (20, 30)]:                          # chunks of 7, 1, 12, 10
        logp, state = model.log_prob_chunk(x[:, s:e], state)
        total = total + logp.data
    np.testing.assert_allclose(total, whole, rtol=1e-12)
    # without the carried state each chunk is read from <s> again: different numbers
    restart = sum(model.log_prob_chunk(x[:, s:e])[0].data for s, e in [(0, 7), (7, 30)])
    assert np.abs(restart - whole).max() > 1e-3


def test_truncated_bptt_gradient_stops_at_the_chunk_boundary():
    """The carried state is a constant: chunk 2's gradient equals that of a model started from it."""
    model = RNN(4, n_hidden=5, rng=0, dtype=np.float64)
    x = np.random.default_rng(6).integers(0, 4, (2, 10))
    _, state = model.log_prob_chunk(x[:, :5])
    logp, _ = model.log_prob_chunk(x[:, 5:], state)
    assert isinstance(state[0], np.ndarray)
    (-logp.sum()).backward()
    g = model.rnn.W_hh.grad.copy()
    model.zero_grad()
    whole = model.log_prob(x)
    (-whole.sum()).backward()
    assert np.abs(model.rnn.W_hh.grad - g).max() > 1e-6                       # full BPTT reaches further back


def test_samples_follow_the_model():
    """Empirical frequencies of 20,000 samples of length 2 match the model's own probabilities."""
    model = RNN(3, n_hidden=4, rng=7, dtype=np.float64)
    model.head.weight.data *= 4                                               # a peaked, non-uniform model
    s = model.sample(20000, rng=1, length=2)
    assert s.shape == (20000, 2)
    seqs = _all_sequences(3, 2)
    p = np.exp(model.log_prob(seqs).data)
    freq = np.array([np.mean((s == q).all(axis=1)) for q in seqs])
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / 20000)

    pix = PixelRNN(3, n_hidden=4, rng=2, dtype=np.float64)
    pix.head.weight.data *= 4
    s = pix.sample(20000, rng=3)
    assert s.shape == (20000, 3) and set(np.unique(s)) <= {0.0, 1.0}
    seqs = _all_sequences(2, 3).astype(np.float64)
    p = np.exp(pix.log_prob(seqs).data)
    freq = np.array([np.mean((s == q).all(axis=1)) for q in seqs])
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / 20000)


def test_sampling_with_prompt_and_temperature():
    vocab = list("abcd")
    model = RNN(4, n_hidden=6, seq_len=5, vocab=vocab, rng=0)
    out = model.sample(3, rng=0, prompt="cab", length=4)
    assert out.shape == (3, 7)
    assert all(model.decode(row).startswith("cab") for row in out)
    # the first sampled character follows p(. | "cab")
    p_next = model.conditionals(model.encode("cabd")[None])[0, 3]
    draws = model.sample(4000, rng=1, prompt="cab", length=1)[:, 3]
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, p_next, atol=0.04)
    # a very low temperature is greedy decoding: always the most likely character
    cold = model.sample(50, rng=2, prompt="cab", length=1, temperature=1e-4)[:, 3]
    assert np.all(cold == np.argmax(p_next))
    # a high temperature flattens the distribution towards uniform
    hot = model.sample(4000, rng=3, prompt="cab", length=1, temperature=50.0)[:, 3]
    assert np.abs(np.bincount(hot, minlength=4) / 4000 - 0.25).max() < 0.04
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        model.sample(1, prompt="xyz")
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, temperature=float("nan"))                     # NaN <= 0 is False: not a pass


@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_pixel_rnn_temperature_divides_the_logit(temperature):
    """With every logit z = 1 (v = 0, c = 1), each pixel is drawn from sigma(z / T): its frequency of 1s
    is sigma(2) = 0.881 at T = 0.5 and sigma(1/3) = 0.583 at T = 3 (sigma(z T) would give 0.622, 0.953)."""
    pix = PixelRNN(4, n_hidden=5, rng=0, dtype=np.float64)
    pix.head.weight.data[...] = 0.0
    pix.head.bias.data[...] = 1.0
    np.testing.assert_allclose(pix.conditionals(np.zeros((1, 4))), 1 / (1 + np.exp(-1.0)))   # T = 1: sigma(z)
    ones = pix.sample(2000, rng=4, temperature=temperature).mean()                  # over 8,000 pixels
    expected = 1 / (1 + np.exp(-1.0 / temperature))
    assert abs(ones - expected) < 4 * np.sqrt(expected * (1 - expected) / 8000)


def test_bits_per_char_of_an_empty_stream_is_a_clear_error():
    model = RNN(4, n_hidden=6, seq_len=5, rng=0)
    assert model.bits_per_char(np.array([0, 1, 2])) > 0
    with pytest.raises(ValueError, match="stream is empty"):          # not a 0/0 NaN with a warning
        model.bits_per_char(np.array([], dtype=np.int64))


def test_config_rebuilds_the_same_model():
    for model, x in [(RNN(5, n_hidden=6, seq_len=9, vocab=list("abcde"), rng=1), np.array([[0, 1, 4, 2]])),
                     (PixelRNN(8, n_hidden=5, rng=2), np.array([[0, 1, 1, 0, 1, 0, 0, 1.0]]))]:
        twin = type(model)(**model.config)
        assert twin.log_prob(x).data[0] != model.log_prob(x).data[0]             # other initial weights
        twin.load_state_dict(model.state_dict())
        np.testing.assert_array_equal(twin.log_prob(x).data, model.log_prob(x).data)
        assert twin.config == model.config


def test_registry_names_and_bad_inputs():
    assert REGISTRY["char-rnn"] is RNN and REGISTRY["pixel-rnn"] is PixelRNN
    lm = RNN(4, n_hidden=3)
    with pytest.raises(ValueError, match="0..3"):
        lm.log_prob(np.array([[0, 4]]))
    with pytest.raises(ValueError, match="x\\[None, :\\]"):
        lm.log_prob(np.array([0, 1]))
    pix = PixelRNN(4, n_hidden=3)
    with pytest.raises(ValueError, match="binary"):
        pix.log_prob(np.array([[0, 0.5, 1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        pix.log_prob(np.zeros((2, 5)))


def test_for_dataset_picks_sizes():
    from tinyar.data import Dataset
    d = Dataset("toy", "tokens", np.zeros((4, 6), np.int64), np.zeros((2, 6), np.int64),
                np.zeros((2, 6), np.int64), n_dims=6, n_levels=3, vocab=list("xyz"))
    m = RNN.for_dataset(d, rng=0, n_hidden=5)
    assert (m.vocab_size, m.n_hidden, m.n_dims, m.vocab) == (3, 5, 6, list("xyz"))
    with pytest.raises(ValueError, match="binary"):
        PixelRNN.for_dataset(d)


def test_gradient_demo_runs_quickly(tmp_path):
    """demos/rnn_gradients.py --quick: the tanh RNN's gradient vanishes, with large W_hh it
    explodes, and the LSTM with open forget gates keeps it."""
    spec = importlib.util.spec_from_file_location("rnn_gradients", ROOT / "demos" / "rnn_gradients.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    curves = demo.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "rnn_gradients.png").stat().st_size > 1000
    vanish, explode = curves["tanh RNN, default init"], curves["tanh RNN, W_hh = 2 x orthogonal"]
    lstm1, lstm3 = curves["LSTM, forget bias 1"], curves["LSTM, forget bias 3"]
    assert len(vanish) == 30
    assert vanish[29] < 1e-4 * vanish[0] and np.all(np.diff(vanish[5:]) < 0)
    assert explode[29] > 10 * explode[0]
    assert lstm3[29] > 0.1 * lstm3[1] and lstm3[29] > 1e3 * vanish[29] and lstm1[29] < lstm3[29]


@pytest.mark.parametrize("model_flags", [["char-rnn", "--epochs", "2", "--hidden", "16"],
                                         ["transformer", "--epochs", "1", "--layers", "1", "--d-model", "8",
                                          "--heads", "2", "--d-mlp", "16"]], ids=["char-rnn", "transformer"])
def test_cli_train_a_text_model_and_sample_with_a_prompt(tmp_path, capsys, model_flags):
    from tinyar.cli import main
    text = tmp_path / "abc.txt"
    text.write_text("the cat sat on the mat. " * 120)
    run = tmp_path / "run"
    assert main(["train", *model_flags, "--text", str(text), "--seq-len", "24",
                 "--out", str(run), "--no-progress"]) in (0, None)
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "the c", "--temperature", "0.5", "--n", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("the c") >= 3                                        # every sample starts with the prompt
    with pytest.raises(SystemExit, match="vocabulary"):
        main(["sample", str(run), "--prompt", "XYZ", "--n", "1"])


def test_lstm_cell_gradcheck_and_memory():
    """The gated cell (nn.LSTMCell, primitive ops only) passes gradcheck over 4 steps, ids and vectors."""
    from tinyar.nn import LSTMCell
    cell = LSTMCell(3, 4, rng=0, dtype=np.float64)
    ids = np.array([[0, 2, 1, 2], [1, 1, 0, 2]])
    last = lambda hs: ops.sum_(hs[-1] * hs[-1])
    assert gradcheck(lambda *p: last(cell.unrolled(ids)), *cell.parameters())["max_rel_error"] < 1e-5
    x = Tensor(np.random.default_rng(0).standard_normal((2, 4, 3)), requires_grad=True)
    assert gradcheck(lambda x: last(cell.unrolled(x)), x)["max_rel_error"] < 1e-5
