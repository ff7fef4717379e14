"""A decoder-only Transformer (GPT-style): causal self-attention over the whole context.

    p(x) = prod_{t=1}^{T} p(x_t | x_<t),   x_t in {0, ..., V-1}

The network reads the sequence shifted right by one, behind a start token <s>
(id V of the input table), so that the output at position t has seen exactly x_<t:

    input    <s>  x_1  x_2  ...  x_{T-1}
    predicts x_1  x_2  x_3  ...  x_T

The network, with h (T, C) the residual stream of one sequence, C = d_model, and the
weights stored as Linear layers store them (W (out, in), applied as x W^T + b):

    h_0 = E[input_t] + P[t]                                 token and learned position embeddings
    a   = LN_1(h_{l-1})                                     block l = 1..L, pre-LayerNorm:
    h'  = h_{l-1} + Attn(a)                                   causal self-attention, then
    h_l = h' + GELU(LN_2(h') W_1^T + b_1) W_2^T + b_2         an MLP on each position alone
    p(x_t | x_<t) = softmax(LN_f(h_L[t]) W_out^T + b_out)   (V,)

Attn(a) = concat_h(P_h v_h) W_o^T + b_o, over n_heads heads of d = C / n_heads dimensions:

    q_h, k_h, v_h = columns h d .. (h+1) d - 1 of a W_q^T + b_q, a W_k^T + b_k, a W_v^T + b_v   (T, d)
    S_h = q_h k_h^T / sqrt(d),   S_ts = -inf for s > t                                      (T, T)
    P_h = softmax(S_h) over s: row t sums to 1 over s <= t

Causality comes from that mask alone (everything else acts on each position on its own):
query t sees keys s <= t. For T = 4 (1 = may attend, 0 = -inf):

    query t \\ key s   0 1 2 3
          0           1 0 0 0
          1           1 1 0 0
          2           1 1 1 0
          3           1 1 1 1

Data. Characters of a text (data.text(), V = vocabulary size), or the 64 pixels of
an 8x8 digit in raster order as tokens: binary (V = 2) or 17 intensity levels
(V = 17). On digits log_prob sums the 64 conditionals, in nats per image,
comparable with NADE, MADE and the RNN.

Parameters: E (V+1, C), P (max_len, C); per block W_q, W_k, W_v, W_o (C, C), W_1 (d_mlp, C),
W_2 (C, d_mlp), their biases and two LayerNorms' gamma, beta (C,): 4 C^2 + 2 C d_mlp weights;
then LN_f's gamma, beta, and W_out (V, C), b_out (V,).

Cost. One likelihood evaluation of a length-T sequence: O(L (T C^2 + T C d_mlp + T^2 C))
-- the T^2 C term is attention, all positions in parallel. One sample: T steps; with
the key/value cache step t costs O(L (C^2 + C d_mlp + t C)), so O(L T^2 C) in all,
instead of O(L T^3 C) when every step recomputes the prefix. Memory kept for the
backward pass: the (T, T) probabilities of every head and block when attention is built
from primitives; with fused.causal_attention one number per row (T per head), the
probabilities being recomputed in the backward.

References
[1] Course notes on autoregressive models (the Transformer as the state of the art).
[2] A. Vaswani et al., "Attention is all you need", NeurIPS 2017.
[3] A. Radford et al., "Language models are unsupervised multitask learners" (GPT-2), 2019:
    pre-LayerNorm blocks, learned positions, N(0, 0.02) embeddings.
[4] J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer normalization", arXiv:1607.06450, 2016.
[5] D. Hendrycks, K. Gimpel, "Gaussian error linear units (GELUs)", arXiv:1606.08415, 2016.
"""
from __future__ import annotations

import numpy as np

from tinyar import fused, functional as F
from tinyar import ops
from tinyar.distributions import Categorical, check_categories
from tinyar.kernels.attention import causal_mask, causal_softmax_forward_numpy
from tinyar.checks import check_n_samples, check_temperature
from tinyar.models.base import TokenModel
from tinyar.nn import Embedding, LayerNorm, Linear, Module
from tinyar.rng import as_rng
from tinyar.tensor import Tensor, is_grad_enabled, no_grad


# ==== the layers: attention, MLP, block ====
def causal_attention_composite(q, k, v):
    """softmax(q k^T / sqrt(d) + causal mask) v from primitives (no hand-written derivative).

    q: (B, H, Tq, d), k and v: (B, H, Tk, d) with Tq <= Tk; query i sits at
    position i + Tk - Tq and sees keys j <= i + Tk - Tq. The same function as
    fused.causal_attention, which has a hand-written VJP; tests compare the two.
    """
    Tq, Tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / np.sqrt(d))   # (B, H, Tq, Tk)
    future = causal_mask(Tq, Tk, Tk - Tq)                                        # (Tq, Tk) True above the diagonal
    scores = ops.where(future, -np.inf, scores)                                  # (B, H, Tq, Tk)
    P = F.softmax(scores, axis=-1)                                               # (B, H, Tq, Tk)
    return ops.matmul(P, v)                                                      # (B, H, Tq, d)


def _linear(layer, x, use_fused):
    """layer(x) for a Linear layer and x (N, in): with use_fused as the one op fused.linear
    (bias added in place), else as Linear's matmul and add. Same numbers."""
    return fused.linear(x, layer.weight, layer.bias) if use_fused else layer(x)


def _check_sequence_batch(x, d_model, layer):
    """Attention layers take x of shape (B, T, d_model): say so, instead of failing inside."""
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{layer}: expected input of shape (batch, time, {d_model}), got {x.shape}")


class CausalSelfAttention(Module):
    """Multi-head self-attention in which position t attends only to positions s <= t.

    For each head h, with d = d_model / n_heads:
        q = x Wq_h, k = x Wk_h, v = x Wv_h                    (B, T, d) each
        S = q k^T / sqrt(d),  S_ts = -inf for s > t            (B, T, T)   (the mask: module docstring)
        P = softmax(S) over s (row t sums to 1 over s <= t)
        y_h = P v                                              (B, T, d)
    and y = concat_h(y_h) Wo + bo. `fused=True` computes S, softmax and P v as the one op
    fused.causal_attention; `fused=False` as causal_attention_composite, from primitives.

    All heads and all positions are computed at once with batched matmuls
    (no Python loop over T or over heads): O(T^2 d_model) per sequence.

    Key/value cache (sampling): `cache` is a dict that keeps k and v of the
    positions seen so far. Given only the new positions x (B, n, C), the layer
    appends their k and v and lets the new queries attend to all cached keys:
    O(T d_model) per new token instead of O(T^2 d_model) for a recomputation.
    The cache builds no graph: it is refused unless gradients are off (no_grad).
    """

    def __init__(self, d_model, n_heads, fused=True, rng=None, dtype=np.float32):
        if d_model % n_heads:
            raise ValueError(f"CausalSelfAttention: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        rng = as_rng(rng)
        self.d_model = d_model
        self.n_heads = n_heads
        self.query = Linear(d_model, d_model, rng=rng, dtype=dtype)    # all heads' Wq side by side
        self.key = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.value = Linear(d_model, d_model, rng=rng, dtype=dtype)
        self.proj = Linear(d_model, d_model, rng=rng, dtype=dtype)     # Wo
        self.fused = fused

    def _heads(self, x):
        """q, k, v of x (B, T, C), each (B, H, T, d)."""
        B, T, C = x.shape
        H = self.n_heads
        x2 = ops.reshape(x, (B * T, C))                           # (B T, C)
        split = []
        for layer in (self.query, self.key, self.value):
            a = ops.reshape(_linear(layer, x2, self.fused), (B, T, H, C // H))   # (B, T, H, d)
            split.append(ops.transpose(a, (0, 2, 1, 3)))          # (B, H, T, d)
        return split

    def forward(self, x, cache=None):
        _check_sequence_batch(x, self.d_model, "CausalSelfAttention")
        B, T, C = x.shape
        q, k, v = self._heads(x)                                  # (B, H, T, d)
        if cache is not None:
            k, v = self._extend_cache(cache, k, v)                # (B, H, Tk, d): the cached positions first
        attend = fused.causal_attention if self.fused else causal_attention_composite
        y = attend(q, k, v)                                       # (B, H, T, d)
        y = ops.transpose(y, (0, 2, 1, 3))                        # (B, T, H, d)
        y = ops.reshape(y, (B * T, C))                            # (B T, C)
        return ops.reshape(_linear(self.proj, y, self.fused), (B, T, C))   # (B, T, C)

    @staticmethod
    def _extend_cache(cache, k, v):
        """Prepend the cached keys and values to the new ones (plain arrays, no graph) and store the result."""
        if is_grad_enabled():
            raise RuntimeError("CausalSelfAttention: the key/value cache holds plain arrays, so no gradient "
                               "would reach the cached positions; use the cache under tensor.no_grad() "
                               "(sampling), or call without cache to train")
        if "k" in cache:
            k = Tensor(np.concatenate([cache["k"], k.data], axis=2))   # (B, H, Tk, d)
            v = Tensor(np.concatenate([cache["v"], v.data], axis=2))   # (B, H, Tk, d)
        cache["k"], cache["v"] = k.data, v.data
        return k, v

    def weights(self, x):
        """The attention probabilities P of every head, as an array (B, H, T, T) (no graph)."""
        q, k, _ = self._heads(x)
        d = q.shape[-1]
        S = q.data @ np.swapaxes(k.data, -1, -2) / np.sqrt(d)    # (B, H, T, T)
        return causal_softmax_forward_numpy(S, 0)                 # (B, H, T, T), the kernel's twin


class MLP(Module):
    """y = GELU(x W1^T + b1) W2^T + b2, applied to each position on its own.

    GELU(a) = a Phi(a) in its tanh form (functional.gelu); `fused=True` uses
    fused.gelu, the same function as one op with a hand-written VJP, and fused.linear
    for the two layers.
    """

    def __init__(self, d_model, d_hidden, fused=True, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.fc1 = Linear(d_model, d_hidden, rng=rng, dtype=dtype)
        self.fc2 = Linear(d_hidden, d_model, rng=rng, dtype=dtype)
        self.fused = fused

    def forward(self, x):
        if not self.fused:
            return self.fc2(F.gelu(self.fc1(x)))                  # (..., d_model)
        x2 = x if x.ndim == 2 else ops.reshape(x, (-1, x.shape[-1]))                  # (N, d_model)
        y = _linear(self.fc2, fused.gelu(_linear(self.fc1, x2, True)), True)          # (N, d_model)
        return y if x.ndim == 2 else ops.reshape(y, x.shape)                          # (..., d_model)


class Block(Module):
    """A pre-LayerNorm residual block:  x <- x + attn(LN1(x));  x <- x + MLP(LN2(x)).

    The residual stream x is never normalised itself, so the gradient reaches
    the embeddings along an identity path through every block.
    """

    def __init__(self, d_model, n_heads, d_mlp, fused=True, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.ln1 = LayerNorm(d_model, fused=fused, dtype=dtype)
        self.attn = CausalSelfAttention(d_model, n_heads, fused=fused, rng=rng, dtype=dtype)
        self.ln2 = LayerNorm(d_model, fused=fused, dtype=dtype)
        self.mlp = MLP(d_model, d_mlp, fused=fused, rng=rng, dtype=dtype)

    def forward(self, x, cache=None):
        _check_sequence_batch(x, self.attn.d_model, "Block")
        B, T, C = x.shape
        x = x + self.attn(self.ln1(x), cache=cache)               # (B, T, C)
        h = self.ln2(ops.reshape(x, (B * T, C)))                  # (B T, C)
        return x + ops.reshape(self.mlp(h), (B, T, C))            # (B, T, C)


# ==== the model ====
class Transformer(TokenModel):
    """Decoder-only Transformer over token ids 0..vocab_size-1, sequences up to max_len.

    vocab_size: V, the number of values a token takes (2 for binary pixels, 17
                for digit intensities, the character vocabulary for text)
    max_len:    length of the positional table: the longest sequence scored or sampled
    n_layers, d_model, n_heads, d_mlp: L blocks of width d_model, n_heads heads
                of d_model / n_heads dimensions, an MLP of d_mlp GELU units
    fused:      use the fused ops (fused.causal_attention, fused.layer_norm, fused.gelu,
                fused.linear); False builds them from primitives (slower, the same numbers up to rounding)
    vocab:      optional list of V characters (id -> character): lets sample() take a
                prompt string and decode() turn ids back into text
    """

    # `recipe`: SGD with momentum, the global gradient norm clipped at 1, warm-up then cosine decay;
    # its test NLL and bits/char are in README.md's results (details in benchmarks/README.md).
    recipe = {"lr": 0.01, "momentum": 0.9, "batch_size": 20, "epochs": 100, "clip": 1.0, "warmup": 200,
              "model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_mlp": 256}}

    def __init__(self, vocab_size, max_len=64, n_layers=2, d_model=64, n_heads=4, d_mlp=256,
                 fused=True, vocab=None, rng=None, dtype=np.float32):
        if vocab_size < 2 or max_len < 1:
            raise ValueError(f"Transformer: need vocab_size >= 2 and max_len >= 1, got {vocab_size} and {max_len}")
        rng = as_rng(rng)
        self._set_vocab(vocab_size, vocab)
        self.n_dims = int(max_len)                       # default length of samples
        self.max_len = int(max_len)
        self.start = self.vocab_size                     # id of the start token <s> in the input table
        self.fused = bool(fused)
        self.token_embedding = Embedding(vocab_size + 1, d_model, rng=rng, dtype=dtype)
        self.position_embedding = Embedding(max_len, d_model, rng=rng, dtype=dtype)
        self.blocks = [Block(d_model, n_heads, d_mlp, fused=fused, rng=rng, dtype=dtype) for _ in range(n_layers)]
        self.ln_f = LayerNorm(d_model, fused=fused, dtype=dtype)
        self.head = Linear(d_model, vocab_size, rng=rng, dtype=dtype)
        self.config = dict(vocab_size=self.vocab_size, max_len=self.max_len, n_layers=int(n_layers),
                           d_model=int(d_model), n_heads=int(n_heads), d_mlp=int(d_mlp), fused=bool(fused),
                           vocab=self.vocab, dtype=np.dtype(dtype).name)

    # ------------------------------------------------------------------ network
    def _check(self, x):
        """x as a (batch, T) int array of ids in 0..V-1 with T <= max_len, or a clear error."""
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        if x.ndim != 2:
            raise ValueError(f"Transformer: expected a batch of sequences of shape (batch, T), got shape {x.shape}"
                             + ("; use x[None, :] for one sequence" if x.ndim == 1 else ""))
        if x.shape[1] == 0:
            raise ValueError("Transformer: got sequences of length 0; expected at least one token")
        if x.shape[1] > self.max_len:
            raise ValueError(f"Transformer: sequence of length {x.shape[1]} is longer than the positional table "
                             f"(max_len={self.max_len}); build the model with a larger max_len")
        return check_categories(x, self.vocab_size, "Transformer")

    def forward(self, ids, caches=None, start=0):
        """Logits (B, n, V) for input ids (B, n) at positions start..start+n-1.

        ids are input tokens (0..V, V being <s>). With `caches` (one dict per
        block, from new_cache()) the blocks attend also to the cached earlier
        positions and append the new ones: used by sampling, under no_grad.
        """
        B, n = ids.shape
        if start + n > self.max_len:
            raise ValueError(f"Transformer: position {start + n - 1} is beyond the positional table "
                             f"(max_len={self.max_len})")
        h = self.token_embedding(ids) + self.position_embedding.weight[start:start + n]        # (B, n, C)
        return self.from_embeddings(h, caches)

    def from_embeddings(self, h, caches=None):
        """Logits (B, n, V) from the embedded inputs h (B, n, C): the blocks, LN and the head.

        (Split from forward() so that tests can differentiate with respect to h.)
        """
        B, n, C = h.shape
        for l, block in enumerate(self.blocks):
            h = block(h, cache=None if caches is None else caches[l])                           # (B, n, C)
        h = self.ln_f(ops.reshape(h, (B * n, C)))                                               # (B n, C)
        logits = _linear(self.head, h, self.fused)                                              # (B n, V)
        return ops.reshape(logits, (B, n, self.vocab_size))                                     # (B, n, V)

    def inputs(self, x):
        """The network's input: x shifted right behind the start token, (B, T)."""
        start = np.full((x.shape[0], 1), self.start, dtype=np.int64)
        return np.concatenate([start, x[:, :-1]], axis=1)                                       # (B, T)

    def logits(self, x):
        """Logits (B, T, V) of p(x_t | x_<t) for every t, in one parallel pass."""
        x = self._check(x)
        return self.forward(self.inputs(x))

    def log_prob(self, x):
        """log p(x) = sum_t log p(x_t | x_<t), in nats: a Tensor (batch,)."""
        x = self._check(x)
        B, T = x.shape
        logits = self.forward(self.inputs(x))                                                   # (B, T, V)
        nll = F.cross_entropy(ops.reshape(logits, (B * T, self.vocab_size)), x.reshape(-1))     # (B T,)
        return -ops.sum_(ops.reshape(nll, (B, T)), axis=1)                                      # (B,)

    def attention_maps(self, x):
        """Attention probabilities of every block and head for sequences x (B, T):
        a list of L arrays (B, H, T, T); row t is query position t (predicting x_t)."""
        x = self._check(x)
        B, T = x.shape
        maps = []
        with no_grad():
            h = self.token_embedding(self.inputs(x)) + self.position_embedding.weight[:T]
            for block in self.blocks:
                maps.append(block.attn.weights(block.ln1(h)))
                h = block(h)
        return maps

    # ------------------------------------------------------------------ sampling
    def new_cache(self):
        """An empty key/value cache: one dict per block."""
        return [{} for _ in self.blocks]

    def sample(self, n, rng=None, prompt=None, temperature=1.0, length=None, use_cache=True):
        """n sequences drawn one token at a time: (n, len(prompt) + length) ids, prompt first.

        prompt:      a string (needs vocab), (t0,) ids for all rows, or (n, t0) ids; or None.
                     Kept as given; the tokens after it are drawn conditioned on it.
        temperature: draw from softmax(logits / temperature): 1 is the model itself,
                     < 1 sharper, > 1 flatter
        length:      tokens to generate after the prompt (default: up to the end of the
                     positional table, max_len - len(prompt)); len(prompt) + length <= max_len
        use_cache:   False recomputes the whole prefix at every step (for the benchmark and
                     the tests; same distribution, O(T) times the work)
        """
        rng = as_rng(rng)
        n = check_n_samples(n, "Transformer")
        temperature = check_temperature(temperature, "Transformer")
        prompt = self.prompt_ids(prompt, n)                                                     # (n, t0)
        t0 = prompt.shape[1]
        length = self.max_len - t0 if length is None else int(length)
        if length < 0 or t0 + length > self.max_len:
            raise ValueError(f"Transformer: cannot sample {length} tokens after a prompt of {t0}; need length >= 0 "
                             f"and len(prompt) + length <= max_len={self.max_len}")
        T = t0 + length
        x = np.zeros((n, T), dtype=np.int64)
        x[:, :t0] = prompt
        with no_grad():
            if use_cache and length > 0:           # run <s> and the prompt once, filling the cache
                caches = self.new_cache()
                logits = self.forward(self.inputs(x[:, :t0 + 1]), caches, start=0)[:, -1]      # (n, V)
            for t in range(t0, T):
                if not use_cache:
                    logits = self.forward(self.inputs(x[:, :t + 1]))[:, -1]                   # (n, V)
                x[:, t] = Categorical(Tensor(logits.data / temperature)).sample(rng)
                if use_cache and t + 1 < T:
                    logits = self.forward(x[:, t:t + 1], caches, start=t + 1)[:, -1]          # (n, V)
        return x

    def cached_logits(self, x):
        """Logits (B, T, V) computed one token at a time through the key/value cache
        (the path sample() takes); equal to logits(x) up to rounding."""
        x = self._check(x)
        inputs = self.inputs(x)
        caches = self.new_cache()
        with no_grad():
            steps = [self.forward(inputs[:, t:t + 1], caches, start=t).data[:, 0] for t in range(x.shape[1])]
        return np.stack(steps, axis=1)                                                           # (B, T, V)

    # ------------------------------------------------------------------ interface
    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        """Sized for a data.Dataset: vocab_size = its n_levels, max_len = its n_dims, and its vocab."""
        if dataset.kind == "continuous":
            raise ValueError("Transformer models discrete tokens; use digits(form='binary' or 'levels') or text()")
        options = {**cls.recipe["model"], **kwargs}
        return cls(int(dataset.n_levels), max_len=int(dataset.n_dims), vocab=getattr(dataset, "vocab", None),
                   rng=rng, **options)

    @classmethod
    def gradcheck_example(cls):
        model = cls(3, max_len=5, n_layers=2, d_model=8, n_heads=2, d_mlp=12, rng=0, dtype=np.float64)
        x = np.random.default_rng(1).integers(0, 3, size=(2, 5))
        return model, x
