"""RNN against attention, measured: a long-range dependency, and the cost of generating.

The notes list the RNN's pros and cons against attention [1]: one history vector h_t must
carry everything the future needs, and gradients through many steps vanish, but
generation is cheap (one step of O(H^2) per token, whatever came before). Attention looks
back at every earlier position directly, at a price that grows with the context. Two
measurements, in one figure (rnn_vs_attention.png, three panels):

(a) Remembering across a gap. Sequences k, f_1, ..., f_G, ?, k: a key k (one of 4 tokens),
    G filler tokens drawn at random (4 others), a query mark ?, then the key again. Only
    the last token is predictable, and only from the first one, G + 2 steps back. For each
    gap G an Elman RNN (H = 96: 11,145 parameters) and a Transformer (1 block, d_model 32,
    2 heads, an MLP of 64: 9,225 + 32 (G + 3) parameters, for the positions) are trained
    with the same budget (SGD, momentum 0.9, lr 0.05, gradient norm clipped at 1, the same
    number of minibatches of 32 fresh sequences) and scored on 500 fresh sequences by how
    often the most likely last token is the key (chance: 1/4).
(b) The cost of generating T tokens, per token, one sequence at a time: the RNN (H = 128,
    one recurrence step per token), and the Transformer (2 blocks, d_model C = 64, 4 heads,
    an MLP of 256) re-running the whole prefix for each token (no cache) or with its
    key/value cache (each new token attends to the stored keys). Measured: the median over
    repeats, after a warm-up, of the time per token (printed and plotted; it depends on the
    machine). Counted: the multiply-adds of the matrix products per token, averaged over
    t = 1..T: the RNN's H^2 + K H whatever t; with the cache L (4 C^2 + 2 C d_mlp + 2 t C)
    + C K, growing with t only through attention; without it t times the per-position work
    plus 2 t^2 C per block in attention.

The full run (1,500 minibatches, gaps 2, 8, 16, 32; T = 16, 32, 64, 128, 256, 5 repeats),

    python demos/rnn_vs_attention.py --out rnn_vs_attention.png

prints recall accuracies RNN 1.00, 1.00, 1.00, 0.28 and Transformer 1.00, 1.00, 1.00,
1.00: the RNN learns the key across 16 fillers within the budget and is at chance across
32, where attention, which reads the key's position directly, is exact. Counted per token at
T = 16 ... 256: RNN 24,576 at every T; cached Transformer 104,576 rising to 135,296;
uncached 894,336 rising to 18,783,616 (139 times the cached work at T = 256).
The measured times follow the counts only roughly: at these sizes most of a step's time
is the fixed cost of its calls, so the RNN's time per token (the lowest) and the cached
Transformer's stay flat as T grows, while the uncached Transformer's, level with the
cached one at T = 16, grows to several times it from T = 64 on (the printed table and the
middle panel; the times depend on the machine and on its load).

The quick run (200 minibatches, gaps 2 and 16; T = 8 and 32, one repeat),

    python demos/rnn_vs_attention.py --quick --out rnn_vs_attention.png

prints RNN 1.00 and 0.23, Transformer 1.00 and 1.00 (with less training the RNN is
already at chance across 16 fillers), and counted per token RNN 24,576, cached 103,552 and 106,624,
uncached 467,328 and 1,781,120.

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from tinyar.models import RNN, Transformer
from tinyar.optim import SGD, clip_grad_norm_
from tinyar.tensor import no_grad

N_KEYS, N_FILLERS = 4, 4
QUERY = N_KEYS + N_FILLERS                    # the query mark: "now recall the key"
VOCAB = N_KEYS + N_FILLERS + 1


# ---- (a) remembering across a gap ----
def gap_sequences(n, gap, rng):
    """(n, gap + 3) ids: a key in 0..3, gap fillers in 4..7, the query mark 8, the key again."""
    keys = rng.integers(0, N_KEYS, n)
    fillers = rng.integers(N_KEYS, N_KEYS + N_FILLERS, (n, gap))
    return np.column_stack([keys, fillers, np.full(n, QUERY), keys])


def make_models(gap, seed):
    """An RNN and a Transformer of about the same size (11,145 and 9,225 + 32 (gap + 3) parameters)."""
    T = gap + 3
    return {"RNN": RNN(VOCAB, n_hidden=96, seq_len=T, rng=seed),
            "Transformer": Transformer(VOCAB, max_len=T, n_layers=1, d_model=32, n_heads=2, d_mlp=64, rng=seed)}


def train(model, gap, steps, seed, batch_size=32, lr=0.05):
    """The same budget for both: `steps` minibatches of fresh sequences, SGD with momentum, norm clipped at 1."""
    rng = np.random.default_rng(seed)
    opt = SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        model.nll(gap_sequences(batch_size, gap, rng)).backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model


def recall(model, gap, seed, n=500):
    """The share of fresh sequences whose most likely last token is the key."""
    x = gap_sequences(n, gap, np.random.default_rng(seed + 1000))
    with no_grad():
        last = model.logits(x).data[:, -1]                    # (n, V): p(x_T | x_<T) up to normalization
    return float(np.mean(np.argmax(last, axis=1) == x[:, 0]))


# ---- (b) the cost of generating ----
def per_token_seconds(generate, length, repeats):
    """Median over `repeats` runs (after one warm-up) of the seconds per token of generate(length)."""
    generate(length)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(length)
        times.append((time.perf_counter() - t0) / length)
    return float(np.median(times))


def multiply_adds_per_token(name, length, K, H, L, C, d_mlp):
    """Multiply-adds of the matrix products per generated token, averaged over tokens t = 1..length.

    RNN: W_hh h and the head V h, H^2 + K H per token, whatever t. Transformer, token t:
    with the cache one position through L blocks (4 C^2 + 2 C d_mlp) and attention over t
    keys (2 t C), then the head (C K); without it the whole prefix of t positions each
    time: t times the per-position work and 2 t^2 C in attention.
    """
    t = np.arange(1, length + 1)
    if name == "RNN":
        work = np.full(t.shape, H * H + K * H)
    elif name == "Transformer, key/value cache":
        work = L * (4 * C * C + 2 * C * d_mlp + 2 * t * C) + C * K
    else:
        work = t * (L * (4 * C * C + 2 * C * d_mlp) + C * K) + L * 2 * t * t * C
    return float(work.mean())


def generation_costs(lengths, repeats, seed, K=64, H=128, L=2, C=64, d_mlp=256):
    """{name: (seconds per token, multiply-adds per token) at each length}, for one sequence at a time."""
    rnn = RNN(K, n_hidden=H, seq_len=max(lengths), rng=seed)
    tf = Transformer(K, max_len=max(lengths), n_layers=L, d_model=C, n_heads=4, d_mlp=d_mlp, rng=seed)
    samplers = {"RNN": lambda n: rnn.sample(1, rng=seed, length=n),
                "Transformer, key/value cache": lambda n: tf.sample(1, rng=seed, length=n, use_cache=True),
                "Transformer, no cache": lambda n: tf.sample(1, rng=seed, length=n, use_cache=False)}
    return {name: ([per_token_seconds(fn, n, repeats) for n in lengths],
                   [multiply_adds_per_token(name, n, K, H, L, C, d_mlp) for n in lengths])
            for name, fn in samplers.items()}


def figure(gaps, accuracy, lengths, costs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for name, values in accuracy.items():
        axes[0].plot(gaps, values, "o-", label=name)
    axes[0].axhline(1 / N_KEYS, color="grey", ls=":", label="chance")
    axes[0].set(xlabel="gap G (fillers between the key and its recall)", ylabel="recall accuracy", ylim=(0, 1.05),
                title="(a) remembering across a gap")
    axes[0].legend(fontsize=8)
    for name, (seconds, work) in costs.items():
        axes[1].plot(lengths, np.array(seconds) * 1e3, "o-", label=name)
        axes[2].plot(lengths, work, "o-", label=name)
    axes[1].set(ylabel="ms per token (median)", title="(b) cost of generating: measured")
    axes[2].set(ylabel="multiply-adds per token", title="(b) cost of generating: counted")
    for ax in axes[1:]:
        ax.set(xlabel="tokens generated T", xscale="log", yscale="log")
        ax.set_xticks(lengths, [str(n) for n in lengths], minor=False)
        ax.minorticks_off()
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two gaps, few steps, short sequences (for the tests)")
    parser.add_argument("--out", default="rnn_vs_attention.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    gaps = [2, 16] if args.quick else [2, 8, 16, 32]
    steps = 200 if args.quick else 1500
    lengths = [8, 32] if args.quick else [16, 32, 64, 128, 256]
    accuracy = {"RNN": [], "Transformer": []}
    for gap in gaps:
        models = make_models(gap, args.seed)
        for name, model in models.items():
            accuracy[name].append(recall(train(model, gap, steps, args.seed), gap, args.seed))
        print(f"gap {gap:>2}: recall accuracy RNN {accuracy['RNN'][-1]:.2f}, "
              f"Transformer {accuracy['Transformer'][-1]:.2f}  (parameters "
              f"{models['RNN'].n_parameters():,} and {models['Transformer'].n_parameters():,})")
    costs = generation_costs(lengths, 1 if args.quick else 5, args.seed)
    print(f"per generated token at T = {lengths}: ms (median), then multiply-adds")
    for name, (seconds, work) in costs.items():
        print(f"  {name:<30}" + ", ".join(f"{1e3 * s:.3f}" for s in seconds) + "   |   "
              + ", ".join(f"{w:,.0f}" for w in work))
    figure(gaps, accuracy, lengths, costs, args.out)
    print(f"wrote {args.out}")
    return dict(gaps=gaps, accuracy=accuracy, lengths=lengths, costs=costs)


if __name__ == "__main__":
    main()
