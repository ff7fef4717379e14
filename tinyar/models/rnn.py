"""Recurrent autoregressive models: a history vector updated along the ordering.

    p(x) = prod_{t=1}^{T} p(x_t | x_<t)

An Elman (tanh) RNN [1, 2] reads the sequence shifted right by one, behind a start
symbol <s>, and keeps in h everything it needs of the past:

    input     <s>   x_1   x_2   ...  x_{T-1}
    state     h_0   h_1   h_2   ...  h_{T-1}
    predicts  x_1   x_2   x_3   ...  x_T

    h_0 = tanh(W_xh[:, <s>] + b)                       (from a zero state, or a state carried over)
    h_t = tanh(W_xh[:, x_t] + W_hh h_{t-1} + b)        (H,)   column x_t of W_xh: an embedding lookup
    p(x_t | x_<t) = softmax(V h_{t-1} + c)[x_t]        RNN: characters / tokens, V (K, H)
    p(x_t = 1 | x_<t) = sigma(v . h_{t-1} + c)         PixelRNN: binary pixels in raster order

h_{t-1} summarises all of x_<t in a vector of fixed size H, however long the past:
the same weights serve every step, so one model scores sequences of any length.
The whole recurrence over T steps is one fused op (fused.elman_rnn; its kernels, with
backpropagation through time derived, in tinyar/kernels/rnn.py), so a 1,000-step
sequence is a single node of the graph. Each step back multiplies the gradient by
(1 - h_t^2) W_hh, so over many steps it vanishes or explodes [5] (demos/rnn_gradients.py).

Parameters: W_xh (H, K+1), W_hh (H, H), b (H,), V (K, H), c (K,): O(H^2 + K H),
independent of the length T (PixelRNN: W_xh (H, 3), v (1, H), c (1,)).
Cost: a likelihood evaluation is O(T (H^2 + K H)), but its T steps run one after
another (unlike MADE or a Transformer); a sample is the same T steps, each token
drawn before the next step can run.

Long text: truncated BPTT (train.fit(..., stream=True) on the
rows of data.text(), which `python -m tinyar train char-rnn` uses) cuts a long stream
into chunks of `seq_len` and carries the hidden state from one chunk to the next (as a
constant, so gradients stop at the chunk boundary but the forward values are exactly
those of the whole stream; log_prob_chunk). Gradient-norm clipping (optim.clip_grad_norm_)
keeps the occasional exploding gradient from wrecking a step.

References
[1] Course notes on autoregressive models: RNNs (history vector; sequential
    evaluation; vanishing and exploding gradients).
[2] J. Elman, "Finding structure in time", Cognitive Science 14, 1990.
[3] A. Karpathy, min-char-rnn.py (2015) and "The unreasonable effectiveness of
    recurrent neural networks".
[4] A. van den Oord, N. Kalchbrenner, K. Kavukcuoglu, "Pixel recurrent neural
    networks", ICML 2016.
[5] R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent
    neural networks", ICML 2013 (gradient clipping; vanishing/exploding gradients).
"""
from __future__ import annotations

import math

import numpy as np

from tinyar import functional as F
from tinyar import ops
from tinyar.distributions import Bernoulli, Categorical, check_categories
from tinyar.checks import check_n_samples, check_temperature
from tinyar.models.base import TokenModel
from tinyar.nn import ElmanRNN, Linear
from tinyar.rng import as_rng
from tinyar.tensor import Tensor, no_grad


class RNN(TokenModel):
    """A tanh-RNN language model over token ids 0..vocab_size-1 (characters of a text, as in [3]).

    vocab_size: K, the number of values a token takes (the characters of a text;
                also 2 or 17 for digits read as tokens)
    n_hidden:   H, the size of the history vector
    seq_len:    the default length of samples (and of the training rows)
    vocab:      optional list of K characters (id -> character): lets sample() take a
                prompt string and decode() turn ids back into text

    Sequences of ANY length can be scored: log_prob(x) for x (batch, T), any T >= 1.
    """

    # `recipe`: a character LM in chunks of 100 characters, lr per chunk, gradient norm clipped at 50;
    # bits/char against PyTorch's nn.RNN: README.md's results (details in benchmarks/README.md).
    recipe = {"lr": 0.005, "momentum": 0.9, "batch_size": 32, "epochs": 20, "clip": 50.0, "seq_len": 100,
              "model": {"n_hidden": 128}}

    def __init__(self, vocab_size, n_hidden=128, seq_len=64, vocab=None, rng=None, dtype=np.float32):
        if vocab_size < 2 or n_hidden < 1 or seq_len < 1:
            raise ValueError(f"RNN: need vocab_size >= 2, n_hidden >= 1, seq_len >= 1; "
                             f"got {vocab_size}, {n_hidden}, {seq_len}")
        rng = as_rng(rng)
        self._set_vocab(vocab_size, vocab)
        self.n_dims = int(seq_len)                        # default length of samples
        self.n_hidden = int(n_hidden)
        self.start = self.vocab_size                      # id of <s>: the last column of W_xh
        self.rnn = ElmanRNN(self.vocab_size + 1, n_hidden, rng=rng, dtype=dtype)
        self.head = Linear(n_hidden, self.vocab_size, rng=rng, dtype=dtype)   # V (K, H), c (K,)
        self.config = dict(vocab_size=self.vocab_size, n_hidden=self.n_hidden, seq_len=self.n_dims,
                           vocab=self.vocab, dtype=np.dtype(dtype).name)

    # ------------------------------------------------------------------ network
    def _check(self, x, chunk=False):
        """x as a (batch, T) int array of ids in 0..K-1, T >= 1, or a clear error."""
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"{type(self).__name__}: expected a batch of sequences of shape (batch, T), T >= 1, "
                             f"got shape {x.shape}" + ("; use x[None, :] for one sequence" if x.ndim == 1 else ""))
        return check_categories(x, self.vocab_size, type(self).__name__)

    def inputs(self, x, previous=None):
        """The network's input: x shifted right behind <s> (or behind `previous`, (B,) ids), (B, T)."""
        first = np.full(x.shape[0], self.start, np.int64) if previous is None else previous
        return np.concatenate([first[:, None], x[:, :-1]], axis=1)

    def _initial(self, B, state):
        """(h0 Tensor (B, H), previous ids (B,) or None) from a carried state or None."""
        if state is None:
            return Tensor(np.zeros((B, self.n_hidden), self.dtype)), None
        h, previous = state
        if h.shape != (B, self.n_hidden):
            raise ValueError(f"{type(self).__name__}: carried state has shape {h.shape}, expected {(B, self.n_hidden)}")
        return Tensor(np.asarray(h, self.dtype)), np.asarray(previous, np.int64)

    def hidden(self, x, state=None):
        """States (B, T, H): entry t is h_{t-1}, the summary of x_<t, from which x_t is predicted."""
        h0, previous = self._initial(x.shape[0], state)
        return self.rnn(self.inputs(x, previous), h0)                 # one fused op over all T steps

    def logits(self, x, state=None):
        """Logits (B, T, K) of p(x_t | x_<t) for every t."""
        x = self._check(x)
        return self._outputs(self.hidden(x, state))

    def _outputs(self, hidden):
        """The head on every state: (B, T, H) -> logits (B, T, K) (PixelRNN: (B, T, 1))."""
        B, T, H = hidden.shape
        n_out = self.head.weight.shape[0]                                 # not -1: B T may be 0
        return ops.reshape(self.head(ops.reshape(hidden, (B * T, H))), (B, T, n_out))

    def _log_prob_given_logits(self, logits, x):
        B, T = x.shape
        nll = F.cross_entropy(ops.reshape(logits, (B * T, self.vocab_size)), x.reshape(-1))   # (B T,)
        return -ops.sum_(ops.reshape(nll, (B, T)), axis=1)                                     # (B,)

    def log_prob_chunk(self, x, state=None):
        """log p(x | carried state) per row, and the state to carry into the next chunk.

        state: None (start of the stream: <s> from a zero state) or (h, last ids), as
        returned by the previous call. Returns (Tensor (B,), (h_T (B, H) array, x[:, -1])).
        The returned state is a plain array: gradients stop at the chunk boundary
        (truncated BPTT), forward values do not: summing over chunks gives log_prob of
        the whole stream.
        """
        x = self._check(x, chunk=True)
        h0, previous = self._initial(x.shape[0], state)
        hidden = self.rnn(self.inputs(x, previous), h0)               # (B, T, H), h_0..h_{T-1}
        logits = self._outputs(hidden)                                # (B, T, K)
        # carry h_{T-1} and x_T: the next chunk reads x_T first, from h_{T-1}, as the whole stream would
        return self._log_prob_given_logits(logits, x), (hidden.data[:, -1].copy(), x[:, -1].copy())

    def log_prob(self, x):
        """log p(x) = sum_t log p(x_t | x_<t), in nats: a Tensor (batch,)."""
        return self.log_prob_chunk(self._check(x))[0]

    def conditionals(self, x):
        """p(x_t = k | x_<t) for every t and k: an array (B, T, K) whose rows sum to 1."""
        with no_grad():
            return Categorical(self.logits(x)).probs()

    # ------------------------------------------------------------------ text
    def bits_per_char(self, stream, chunk=1000):
        """Average -log2 p(x_t | x_<t) over one long (n,) stream of ids, read chunk by chunk
        with the state carried across (exactly the log-likelihood of the whole stream)."""
        stream = np.asarray(stream).reshape(1, -1)
        if stream.shape[1] == 0:
            raise ValueError(f"{type(self).__name__}.bits_per_char: the stream is empty (no characters to score)")
        total, state = 0.0, None
        with no_grad():
            for s in range(0, stream.shape[1], chunk):
                logp, state = self.log_prob_chunk(stream[:, s:s + chunk], state)
                total += float(logp.data.sum())
        return -total / (stream.shape[1] * math.log(2))

    # ------------------------------------------------------------------ sampling
    def sample(self, n, rng=None, prompt=None, temperature=1.0, length=None):
        """n sequences drawn one token at a time: (n, len(prompt) + length) ids, prompt first.

        prompt:      a string (needs vocab), (t0,) ids for all rows, or (n, t0) ids; or None
        temperature: draw from softmax(logits / temperature): 1 is the model itself,
                     < 1 sharper (more conservative), > 1 flatter (more random)
        length:      tokens to generate after the prompt (default seq_len)
        """
        rng = as_rng(rng)
        n = check_n_samples(n, type(self).__name__)
        temperature = check_temperature(temperature, type(self).__name__)
        length = self.n_dims if length is None else int(length)
        if length < 0:
            raise ValueError(f"{type(self).__name__}: need length >= 0, got {length}")
        prefix = self.prompt_ids(prompt, n)
        t0 = prefix.shape[1]
        x = np.zeros((n, t0 + length), np.int64)
        x[:, :t0] = prefix
        with no_grad():
            # read <s> and the prompt in one fused pass; h = the state that predicts x_{t0+1}
            inputs = np.concatenate([np.full((n, 1), self.start, np.int64), prefix], axis=1)
            h = Tensor(self.rnn(inputs, Tensor(np.zeros((n, self.n_hidden), self.dtype))).data[:, -1])
            for t in range(t0, t0 + length):
                x[:, t] = self._draw(h, temperature, rng)
                h = self.rnn.step(x[:, t], h)                      # h_t = tanh(W_xh[:, x_t] + W_hh h_{t-1} + b)
        return x

    def _draw(self, h, temperature, rng):
        return Categorical(Tensor(self.head(h).data / temperature)).sample(rng)

    # ------------------------------------------------------------------ interface
    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        """Sized for a data.Dataset: vocab_size = n_levels, seq_len = n_dims, and its vocab."""
        if dataset.kind == "continuous":
            raise ValueError("RNN models discrete tokens; use text(), or digits(form='binary' or 'levels')")
        options = {**cls.recipe["model"], **kwargs}
        return cls(int(dataset.n_levels), seq_len=int(dataset.n_dims), vocab=getattr(dataset, "vocab", None),
                   rng=rng, **options)

    @classmethod
    def gradcheck_example(cls):
        model = cls(4, n_hidden=5, seq_len=6, rng=0, dtype=np.float64)
        x = np.random.default_rng(1).integers(0, 4, size=(3, 6))
        return model, x


class PixelRNN(RNN):
    """A tanh RNN over the D binary pixels of an image in raster order [4]: p(x_t = 1 | x_<t) = sigma(v . h_{t-1} + c).

    The inputs are one-hot pixels {0, 1} and a start symbol (the three columns of
    W_xh), as in the PyTorch reference: log_prob is the exact log-likelihood of an
    image in nats, comparable with NADE, MADE and the Transformer on the same split.
    n_dims: D (64 for the 8x8 digits);  n_hidden: H.
    """

    data_kind = "binary"
    # `recipe`: the PyTorch reference nn.RNN's (H = 256); test NLL against it: README.md's
    # results (details in benchmarks/README.md).
    recipe = {"lr": 0.001, "momentum": 0.9, "batch_size": 100, "epochs": 200,
              "model": {"n_hidden": 256}}

    def __init__(self, n_dims, n_hidden=256, rng=None, dtype=np.float32):
        if n_dims < 1 or n_hidden < 1:
            raise ValueError(f"PixelRNN: need n_dims >= 1 and n_hidden >= 1, got {n_dims} and {n_hidden}")
        rng = as_rng(rng)
        self.n_dims = int(n_dims)
        self.n_hidden = int(n_hidden)
        self.vocab_size = 2                                # pixel values as input ids 0, 1; <s> = 2
        self.vocab = None
        self.start = 2
        self.rnn = ElmanRNN(3, n_hidden, rng=rng, dtype=dtype)
        self.head = Linear(n_hidden, 1, rng=rng, dtype=dtype)       # v (1, H), c (1,)
        self.config = dict(n_dims=self.n_dims, n_hidden=self.n_hidden, dtype=np.dtype(dtype).name)

    def _check(self, x, chunk=False):
        """Whole images (batch, D) of 0/1 values; with chunk=True, any (batch, T) piece of them."""
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        if chunk and x.ndim == 2 and 1 <= x.shape[1] <= self.n_dims:
            return self.check_input(x, n_dims=x.shape[1]).astype(np.int64)
        return self.check_input(x).astype(np.int64)

    def _log_prob_given_logits(self, logits, x):
        B, T = x.shape
        return ops.sum_(Bernoulli(ops.reshape(logits, (B, T))).log_prob(x), axis=1)          # (B,)

    def log_prob(self, x):
        """log p(x) = sum_t log p(x_t | x_<t) over the D pixels, in nats: a Tensor (batch,)."""
        return self.log_prob_chunk(self._check(x))[0]

    def conditionals(self, x):
        """p(x_t = 1 | x_<t) for every pixel: an array (B, D)."""
        with no_grad():
            return ops.stable_sigmoid(self.logits(x).data[..., 0])

    def sample(self, n, rng=None, temperature=1.0):
        """n images (n, D) of 0/1 floats, drawn one pixel at a time in raster order."""
        x = super().sample(n, rng=rng, temperature=temperature, length=self.n_dims)
        return x.astype(self.dtype)

    def _draw(self, h, temperature, rng):
        return Bernoulli(Tensor(self.head(h).data[:, 0] / temperature)).sample(rng).astype(np.int64)

    def bits_per_char(self, stream, chunk=1000):
        raise TypeError("PixelRNN scores images: use log_prob(x) (nats per image)")

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        """Sized for a binary data.Dataset: n_dims = its D."""
        if dataset.kind != "binary":
            raise ValueError(f"PixelRNN models binary pixels; got a {dataset.kind!r} data set "
                             "(use digits(form='binary'), or RNN for tokens and levels)")
        options = {**cls.recipe["model"], **kwargs}
        return cls(int(dataset.n_dims), rng=rng, **options)

    @classmethod
    def gradcheck_example(cls):
        model = cls(6, n_hidden=5, rng=0, dtype=np.float64)
        x = np.random.default_rng(1).integers(0, 2, size=(3, 6)).astype(np.float64)
        return model, x

