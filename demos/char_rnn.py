"""A character-level tanh RNN trained on text by truncated BPTT, then sampled.

The corpus (data.text(): Python's bundled language reference, ~465,000 characters,
103 distinct; or --text FILE) is read as one stream: its first 90% trains, the
last 5% (the held-out tail) is scored. Training cuts the stream into 32 parallel
streams and walks them 100 characters at a time, carrying the hidden state from
chunk to chunk (train.fit_stream), with the recipe of models.RNN: SGD,
momentum 0.9, lr 0.005 per chunk, global gradient norm clipped at 50, 20 epochs.

Prints bits per character on the held-out tail after each epoch (scored as one
unbroken stream: the exact log-likelihood of the tail), then samples at two
temperatures from a prompt. Expect about 2.1 bits/char on the tail after 20
epochs (a PyTorch nn.RNN of the same size and recipe: 2.10; benchmarks/README.md),
in 40 s to a minute on one core.

    python demos/char_rnn.py [--epochs 20] [--hidden 128] [--text FILE] [--prompt "The "] [--out model.npz]
                             [--png char_rnn.png] [--quick]

Also writes the two samples as a picture (--png; default char_rnn.png). --quick: 1 epoch
on the first 20,000 characters with H = 32 and 100 sampled characters (a few seconds, for
the tests; expect ~3.5 bits/char).
"""
from __future__ import annotations

import argparse

import numpy as np

from tinyar import data
from tinyar.models import RNN
from tinyar.optim import SGD
from tinyar.train import fit_stream


def main(argv=None):
    recipe = RNN.recipe
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=recipe["epochs"])
    parser.add_argument("--hidden", type=int, default=recipe["model"]["n_hidden"])
    parser.add_argument("--lr", type=float, default=recipe["lr"])
    parser.add_argument("--text", default=None, help="a UTF-8 text file (default: the bundled corpus)")
    parser.add_argument("--prompt", default="The ")
    parser.add_argument("--length", type=int, default=400, help="characters to sample after the prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save the trained model here (tinyar.train.save)")
    parser.add_argument("--png", default="char_rnn.png", help="picture of the samples")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 20,000 characters, H = 32 (for the tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.hidden, args.length = 1, 32, 100

    seq_len, batch_size = recipe["seq_len"], recipe["batch_size"]
    corpus = data.text(args.text, seq_len=seq_len)
    print(corpus.describe())
    model = RNN(corpus.n_levels, n_hidden=args.hidden, seq_len=seq_len, vocab=corpus.vocab, rng=args.seed)
    optimizer = SGD(model.parameters(), lr=args.lr, momentum=recipe["momentum"])
    train_ids = corpus.train.reshape(-1)[:20000] if args.quick else corpus.train.reshape(-1)
    fit_stream(model, train_ids, optimizer, seq_len=seq_len, batch_size=batch_size,
               epochs=args.epochs, clip=recipe["clip"], valid_ids=corpus.valid.reshape(-1))
    test_bpc = model.bits_per_char(corpus.test.reshape(-1))
    print(f"held-out tail: {test_bpc:.4f} bits/char ({corpus.test.size} characters)")
    rng = np.random.default_rng(args.seed)
    lines = []
    for temperature in (1.0, 0.7):
        text = model.decode(model.sample(1, rng=rng, prompt=args.prompt, temperature=temperature,
                                         length=args.length)[0])
        print(f"\n--- temperature {temperature}, prompt {args.prompt!r}\n{text}")
        lines += [f"--- temperature {temperature}"] + [text[i:i + 100] for i in range(0, len(text), 100)]
    from tinyar.plot import text_samples
    text_samples(lines, args.png, title=f"char-RNN samples ({test_bpc:.2f} bits/char on the held-out tail)")
    print(f"\nwrote {args.png}")
    if args.out:
        from tinyar.train import save
        save(model, args.out)
        print(f"\nwrote {args.out}")
    return test_bpc


if __name__ == "__main__":
    main()
