"""demos/rnn_vs_attention.py: the recall task, the counted work per token, and the --quick run's figures.

Accuracies are those the demo's docstring states for its quick run (seeded); the measured
times are only checked to be there (tests never read the clock).
"""
import numpy as np
import pytest


def test_gap_sequences_put_the_key_first_and_last(load_demo):
    demo = load_demo("rnn_vs_attention")
    x = demo.gap_sequences(50, 7, np.random.default_rng(0))
    assert x.shape == (50, 10)
    assert np.array_equal(x[:, 0], x[:, -1]) and np.all(x[:, 0] < demo.N_KEYS)
    assert np.all((x[:, 1:8] >= demo.N_KEYS) & (x[:, 1:8] < demo.QUERY)) and np.all(x[:, 8] == demo.QUERY)


def test_multiply_adds_per_token_by_hand(load_demo):
    demo = load_demo("rnn_vs_attention")
    sizes = dict(K=2, H=3, L=1, C=2, d_mlp=4)
    # RNN: H^2 + K H = 9 + 6 per token at any length
    assert demo.multiply_adds_per_token("RNN", 5, **sizes) == 15
    # one position through the block: 4 C^2 + 2 C d_mlp = 32, the head C K = 4, attention 2 t C
    # cached: t = 1 -> 32 + 4 + 4 = 40, t = 2 -> 32 + 8 + 4 = 44; mean 42
    assert demo.multiply_adds_per_token("Transformer, key/value cache", 2, **sizes) == 42
    # no cache: t (32 + 4) + 2 t^2 C: t = 1 -> 40, t = 2 -> 72 + 16 = 88; mean 64
    assert demo.multiply_adds_per_token("Transformer, no cache", 2, **sizes) == 64


def test_rnn_vs_attention_demo_quick(tmp_path, capsys, load_demo):
    out = tmp_path / "rnn_vs_attention.png"
    result = load_demo("rnn_vs_attention").main(["--quick", "--out", str(out)])
    assert out.read_bytes()[:4] == b"\x89PNG"

    # (a) gap 2: both recall the key; gap 16 after 200 steps: the RNN at chance (1/4), attention exact
    assert result["gaps"] == [2, 16]
    rnn, attention = result["accuracy"]["RNN"], result["accuracy"]["Transformer"]
    assert rnn == pytest.approx([1.00, 0.23], abs=0.1)
    assert attention == pytest.approx([1.00, 1.00], abs=0.02)

    # (b) one time per length for each generator; the counted work: flat, linear, quadratic in T
    lengths, costs = result["lengths"], result["costs"]
    assert lengths == [8, 32]
    assert set(costs) == {"RNN", "Transformer, key/value cache", "Transformer, no cache"}
    for seconds, work in costs.values():
        assert len(seconds) == len(work) == len(lengths) and all(np.isfinite(seconds)) and min(seconds) > 0
    rnn_work, cached, uncached = (costs[name][1] for name in ("RNN", "Transformer, key/value cache",
                                                              "Transformer, no cache"))
    assert rnn_work[0] == rnn_work[1] < cached[0] < cached[1] < uncached[0] < uncached[1]
    assert uncached[1] / cached[1] > 2 * uncached[0] / cached[0]          # the gap widens with T
    printed = capsys.readouterr().out
    assert "gap 16: recall accuracy RNN" in printed and "multiply-adds" in printed
