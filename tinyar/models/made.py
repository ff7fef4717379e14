"""MADE: an autoencoder whose weights are masked so that it is autoregressive.

    p(x) = prod_{i=1..D} p(x_{o_i} | x_{o_1}, ..., x_{o_{i-1}})         o: an ordering of the D dimensions

One pass of a masked feed-forward network gives every conditional at once [2]:

    h^0 = x                                      (B, D)      one-hot (B, D K) for K levels
    h^l = relu(h^{l-1} (W^l * M^l)^T + b^l)      (B, H_l)    l = 1..L
    out = h^L (V * M^V)^T + c  [+ x (A * M^A)^T]  (B, D)      or (B, D, K): K logits per dimension

    binary:          p(x_d = 1 | x_<d) = sigmoid(out_d)
    categorical:     p(x_d = k | x_<d) = softmax(out_d)_k

Parameters: W^l (H_l, H_{l-1}) with H_0 = D K, b^l (H_l,), V (D K, H_L), c (D K,), and
with direct connections A (D K, D K); K = 1 for binary data. Each masked product is
fused.masked_matmul (kernels/masked.py). Every entry of W^l, V and A is stored
(n_parameters()), but only those the current mask lets through can change p(x)
(n_parameters(free=True): the masks' nonzeros plus the biases). D = 64, one hidden layer
of 500: 64,564 stored, 32,564 free (a hidden unit of degree m keeps m inputs and D - m
outputs, so one hidden layer always has H D free weights; with two or more, the count
depends on the drawn degrees).

Masks from connectivity numbers (Germain et al. [2]). Every unit gets a degree m:
the largest number of leading dimensions (in the ordering) it may depend on.

    inputs      m^0(d) = position of d in the ordering, 1..D
    hidden      m^l(k) drawn uniformly from {min_k' m^{l-1}(k'), ..., D - 1}
    M^l[k, k'] = [m^l(k) >= m^{l-1}(k')]        a hidden unit sees units of lower or equal degree
    M^V[d, k]  = [m^0(d) >  m^L(k)]             output d sees only units of degree < m^0(d)
    M^A[d, d'] = [m^0(d) >  m^0(d')]            the optional direct input-to-output connections

So output d depends on x_d' only through paths of non-decreasing degree that start at
m^0(d') and end below m^0(d): only on the dimensions before d in the ordering.
D = 3 in natural order, one hidden layer of 4 units with degrees 1 2 1 2:

    m^0 = 1 2 3                 M^1 (4 x 3)     M^V (3 x 4)     M^V M^1 (3 x 3): paths from x_d' to out_d
    m^1 = 1 2 1 2    unit 1:    1 0 0   out 1:  0 0 0 0         0 0 0
                     unit 2:    1 1 0   out 2:  1 0 1 0         2 0 0     out 2 sees x_1
                     unit 3:    1 0 0   out 3:  1 1 1 1         4 2 0     out 3 sees x_1, x_2
                     unit 4:    1 1 0                           strictly lower triangular: autoregressive

A unit of degree D - 1 is the highest useful one (no output could use a higher one),
and a unit of degree below every unit of the layer before would see nothing: hence
the range of the draw.

Order- and connectivity-agnostic training [2]: with n_masks = N > 1, N masks are drawn
(each a random ordering and fresh connectivity numbers, from a seed in the config, so
that a saved model rebuilds them exactly); before_batch draws one per minibatch, so one set
of weights learns all N models. At test time ensemble_log_prob is the log-likelihood of
their uniform mixture,

    log p(x) = log (1/N) sum_k p_k(x) = logsumexp_k log p_k(x) - log N,

a normalized density since each p_k is. (Averaging the logits of masks with different
orderings is not: those logits condition on different sets of dimensions.)

Cost: log p(x) one pass, O(D H + H^2 (L - 1)) per example for D outputs; a sample D passes.

Training: each class's `recipe` attribute; the test likelihoods it reaches are in the
README's results table (README.md, "Results"). On binarized MNIST, `recipes["mnist"]`: one
wide hidden layer held back by weight decay, direct connections, and output biases that
start at the data's pixel marginals (start_at_marginals), which keeps the ReLU units alive
through the first large steps (README.md, "Binarized MNIST").

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models (MADE).
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: Masked autoencoder for
        distribution estimation. ICML 2015.
"""
from __future__ import annotations

import math

import numpy as np

from tinyar import fused, functional as F
from tinyar import ops
from tinyar.distributions import Bernoulli, Categorical
from tinyar.checks import check_n_samples
from tinyar.models.base import AutoregressiveModel, resolve_order
from tinyar.nn import MaskedLinear
from tinyar.rng import as_rng, importance_resample
from tinyar.tensor import Tensor, no_grad


def parse_sizes(text):
    """'500,500' -> [500, 500] (the --hidden flag); '' or '0' -> [] (no hidden layer)."""
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    sizes = [int(p) for p in parts]
    return [] if sizes == [0] else sizes


def made_degrees(n_dims, n_hidden, order, rng, sort_hidden=True):
    """Connectivity numbers: [m^0 (D,), m^1 (H_1,), ..., m^L (H_L,)] for one mask.

    m^0(d) = 1 + position of d in `order`; m^l(k) ~ U{min m^{l-1}, ..., D - 1}, numbered in
    increasing order if sort_hidden (which hidden unit is which is arbitrary; numbered so,
    every mask of a MADE in natural order is a staircase in its own order, a shape that
    kernels/masked.py skips work on).
    """
    m0 = np.empty(n_dims, dtype=np.int64)
    m0[order] = np.arange(1, n_dims + 1)
    degrees = [m0]
    for H in n_hidden:
        low = min(int(degrees[-1].min()), n_dims - 1)
        m = rng.integers(low, n_dims, size=H)                     # {low, ..., D - 1}
        degrees.append(np.sort(m) if sort_hidden else m)
    return degrees


def made_masks(degrees, direct):
    """The 0/1 masks of one MADE from its degrees: hidden layers, output layer, direct (or None).

    M^l = [m^l(k) >= m^{l-1}(k')] (H_l, H_{l-1}),   M^V = [m^0(d) > m^L(k)] (D, H_L),
    M^A = [m^0(d) > m^0(d')] (D, D). With no hidden layer M^V is M^A.
    """
    hidden = [(m[:, None] >= m_prev[None, :]) for m_prev, m in zip(degrees[:-1], degrees[1:])]
    output = degrees[0][:, None] > degrees[-1][None, :]
    direct_mask = degrees[0][:, None] > degrees[0][None, :] if direct and len(degrees) > 1 else None
    return hidden, output, direct_mask


class MADE(AutoregressiveModel):
    """MADE over binary vectors {0, 1}^D (CategoricalMADE: K levels per dimension).

    n_dims: D;  n_hidden: hidden layer sizes, e.g. [500] or [500, 500] (ReLU);
    direct: add direct input-to-output connections (masked, strictly lower triangular);
    order: None (natural for one mask, random for several), "natural", "random" or a
      permutation, for every mask; n_masks: N masks, drawn by before_batch;
    mask_seed: seed of the orderings and connectivity numbers (part of the config, so
      that a rebuilt model has the same masks); rng: seed or Generator of the weights;
    sort_hidden: number the hidden units by degree (made_degrees; False draws them as
      checkpoints of version 1 did, see upgrade_config).
    """
    data_kind = "binary"
    # `recipe`: its test NLL, and the reference's (`--lr 0.01 --schedule constant`), are in
    # README.md, "Results".
    recipe = dict(lr=0.02, momentum=0.9, batch_size=100, epochs=200, schedule="cosine",
                  model=dict(n_hidden=[500]))
    # binarized MNIST (--data mnist): a wide hidden layer held back by weight decay, direct
    # connections, output biases from the data (start_at_marginals); its validation NLL is in
    # README.md, "Binarized MNIST"
    recipes = {"mnist": dict(lr=0.03, momentum=0.9, weight_decay=1e-3, batch_size=100, epochs=30,
                             schedule="cosine", model=dict(n_hidden=[8000], direct=True, start_at_marginals=True))}
    n_levels = 2

    def __init__(self, n_dims, n_hidden=(500,), direct=False, order=None, n_masks=1, mask_seed=0, rng=None,
                 dtype=np.float32, sort_hidden=True):
        self._init_made(n_dims, 1, n_hidden, direct, order, n_masks, mask_seed, rng, dtype, sort_hidden)
        self.config = self._base_config()

    @classmethod
    def upgrade_config(cls, config, version):
        """Checkpoints before version 2 drew the hidden units' degrees unsorted: rebuild them so."""
        return dict(config, sort_hidden=config.get("sort_hidden", False)) if version < 2 else config

    def _init_made(self, n_dims, n_levels_in, n_hidden, direct, order, n_masks, mask_seed, rng, dtype,
                   sort_hidden):
        rng = as_rng(rng)
        n_hidden = parse_sizes(n_hidden) if not isinstance(n_hidden, (int, np.integer)) else [int(n_hidden)]
        if int(n_dims) < 1 or any(h < 1 for h in n_hidden) or int(n_masks) < 1:
            raise ValueError(f"{type(self).__name__}: need n_dims >= 1, hidden sizes >= 1 and n_masks >= 1; "
                             f"got n_dims={n_dims}, n_hidden={n_hidden}, n_masks={n_masks}")
        if isinstance(order, str) and order not in ("natural", "random"):
            raise ValueError(f"{type(self).__name__}: order must be None, 'natural', 'random' or a permutation, "
                             f"got {order!r}")
        self.n_dims, self.n_hidden, self.direct = int(n_dims), n_hidden, bool(direct)
        self.n_masks, self.mask_seed, self.sort_hidden = int(n_masks), int(mask_seed), bool(sort_hidden)
        self.order_spec = order if order is None or isinstance(order, str) else [int(v) for v in order]
        self._k = n_levels_in                        # input features (and output logits) per dimension
        D, K = self.n_dims, self._k
        sizes = [D * K] + n_hidden
        self.layers = [MaskedLinear(a, b, rng=rng, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:])]
        self.output = MaskedLinear(sizes[-1], D * K, rng=rng, dtype=dtype)
        self.skip = MaskedLinear(D * K, D * K, bias=False, rng=rng, dtype=dtype) if direct and n_hidden else None
        self._mask_cache = {}
        self.use_mask(0)

    def _base_config(self):
        return dict(n_dims=self.n_dims, n_hidden=list(self.n_hidden), direct=self.direct, order=self.order_spec,
                    n_masks=self.n_masks, mask_seed=self.mask_seed, dtype=self.dtype.name,
                    sort_hidden=self.sort_hidden)

    # --------------------------------------------------------------- the masks
    def draw_mask(self, index):
        """(ordering, degrees, (hidden masks, output mask, direct mask)) of mask `index`, from the seed."""
        rng = np.random.default_rng([self.mask_seed, index])
        spec = self.order_spec
        if spec is None:
            spec = "natural" if self.n_masks == 1 else "random"
        order = resolve_order(spec, self.n_dims, rng)
        degrees = made_degrees(self.n_dims, self.n_hidden, order, rng, self.sort_hidden)
        return order, degrees, made_masks(degrees, self.direct)

    def use_mask(self, index):
        """Make mask `index` (0..n_masks-1) the current one: its ordering and its masked layers."""
        index = int(index) % self.n_masks
        if index not in self._mask_cache:
            order, _, (hidden, output, direct) = self.draw_mask(index)
            K = self._k
            expand = (lambda m: np.repeat(np.repeat(m, K, axis=0), K, axis=1)) if K > 1 else (lambda m: m)
            hidden = [np.repeat(hidden[0], K, axis=1)] + hidden[1:] if hidden else []   # K inputs per dimension
            output = np.repeat(output, K, axis=0) if hidden else expand(output)           # K logits per dimension
            masks = hidden + [output] + ([expand(direct)] if direct is not None else [])
            layers = self.layers + [self.output] + ([self.skip] if self.skip is not None else [])
            structures = []
            for layer, mask in zip(layers, masks):
                layer.set_mask(mask)
                structures.append((layer.mask, layer.structure))
            self._mask_cache[index] = (order, structures)
        order, structures = self._mask_cache[index]
        layers = self.layers + [self.output] + ([self.skip] if self.skip is not None else [])
        for layer, (mask, structure) in zip(layers, structures):
            if mask.dtype != layer.weight.dtype:
                layer.set_mask(mask)
            else:
                layer.mask, layer.structure = mask, structure
        self.mask_index, self.order = index, order

    def before_batch(self, rng):
        """Called before each minibatch (train.fit): a mask drawn uniformly from the run's rng
        (so a resumed run, which restores the rng, draws the same masks)."""
        if self.n_masks > 1:
            self.use_mask(int(rng.integers(self.n_masks)))

    def before_eval(self):
        """Called by train.fit before validation and when it ends, and by train.evaluate: score
        under mask 0, the mask a reloaded checkpoint starts with (log_prob uses the current mask)."""
        self.use_mask(0)

    # ------------------------------------------------------------ the network
    def _features(self, x):
        """The network's input: x itself (binary), or one-hot (B, D K) for K levels."""
        return np.asarray(x, dtype=self.dtype)

    def forward(self, x):
        """The logits of every conditional under the current mask: (B, D), or (B, D, K)."""
        return self.network(Tensor(np.ascontiguousarray(self._features(x))))

    def network(self, h0):
        """The masked network on input features h0 (Tensor (B, D K)): logits (B, D) or (B, D, K)."""
        h = h0
        for layer in self.layers:
            h = ops.relu(layer(h))                                 # (B, H_l)
        out = self.output(h)                                       # (B, D K)
        if self.skip is not None:
            out = out + self.skip(h0)                              # direct connections
        return out if self._k == 1 else ops.reshape(out, (h0.shape[0], self.n_dims, self._k))

    def log_conditionals(self, x):
        """Tensor (B, D): log p(x_d | x_<d) for every dimension d, under the current mask."""
        x = self.check_input(x)
        return self._log_conditionals(self.forward(x), x)

    def _log_conditionals(self, logits, x):
        return fused.bernoulli_log_prob(logits, x)                   # x z - softplus(z); x checked by check_input

    def log_prob(self, x):
        """Tensor (B,): log p(x) = sum_d log p(x_d | x_<d) in nats, under the current mask."""
        return self.log_conditionals(x).sum(axis=1)

    def ensemble_log_prob(self, x, masks=None):
        """Tensor (B,): log (1/N) sum_k p_k(x) over the masks k in `masks` (default: all N).

        The log-mean-exp of each mask's log-likelihood: the mixture of N normalized models.
        """
        masks = range(self.n_masks) if masks is None else list(masks)
        if len(masks) == 0:
            raise ValueError(f"{type(self).__name__}.ensemble_log_prob: masks is empty; give at least one "
                             f"mask index in 0..{self.n_masks - 1} (or None for all {self.n_masks})")
        current = self.mask_index
        try:
            log_probs = []
            for k in masks:
                self.use_mask(k)
                log_probs.append(self.log_prob(x))                     # (B,)
        finally:
            self.use_mask(current)
        return F.logsumexp(ops.stack(log_probs, axis=0), axis=0) - math.log(len(log_probs))

    # --------------------------------------------------------------- sampling
    def _draw(self, logits_d, rng):
        """One value per row from the conditional whose logits are logits_d: (n,) or (n, K)."""
        return Bernoulli(logits_d).sample(rng)

    def _placeholder(self, x):
        return np.zeros(x.shape, dtype=self.dtype)

    def _fill(self, x, todo, rng):
        """Sample x[r, d] wherever todo[r, d], dimension by dimension along the current ordering.

        D passes (one per dimension that has something to draw), each conditioning on
        everything drawn or given before. Returns x and log p(x_d | x_<d) (n, D) of the result.
        """
        with no_grad():
            for d in self.order:
                rows = np.flatnonzero(todo[:, d])
                if len(rows) == 0:
                    continue
                logits = self.forward(x)                          # (n, D) or (n, D, K)
                x[rows, d] = self._draw(Tensor(logits.data[rows, d]), rng)
            return x, self._log_conditionals(self.forward(x), x).data

    def sample(self, n, rng=None, ensemble=False):
        """n samples (n, D) in the current mask's ordering, D network passes.

        ensemble=True: from the mixture of all N masks (each sample picks its mask uniformly).
        """
        rng = as_rng(rng)
        n = check_n_samples(n, type(self).__name__)
        if not ensemble or self.n_masks == 1:
            x = self._placeholder(np.empty((n, self.n_dims)))
            return self._fill(x, np.ones((n, self.n_dims), dtype=bool), rng)[0]
        which = rng.integers(0, self.n_masks, size=n)
        x = self._placeholder(np.empty((n, self.n_dims)))
        current = self.mask_index
        try:
            for k in range(self.n_masks):
                rows = np.flatnonzero(which == k)
                if len(rows):
                    self.use_mask(k)
                    x[rows] = self.sample(len(rows), rng)
        finally:
            self.use_mask(current)
        return x

    def complete(self, x, observed_mask, rng=None, n_proposals=64):
        """Fill in the unobserved dimensions of x (n, D) by sampling from p(x_unobserved | x_observed).

        observed_mask (n, D) bool: True where x holds a value to keep (other entries are ignored).
        Under the current mask's ordering: if in every row the observed dimensions come first,
        drawing the rest in order is exact. Otherwise sampling-importance-resampling: n_proposals
        completions per row drawn with the observed values clamped, weighted by
        p(x) / q(x_unobserved) = prod_{d observed} p(x_d | x_<d) (one more pass gives them all),
        one kept per row in proportion to its weight (exact as n_proposals -> infinity).
        """
        rng = as_rng(rng)
        observed = np.asarray(observed_mask, dtype=bool)
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        if observed.ndim == 1:
            observed = np.broadcast_to(observed, x.shape)
        if x.ndim != 2 or x.shape[1] != self.n_dims or observed.shape != x.shape:
            raise ValueError(f"{type(self).__name__}.complete: x and observed_mask must both be (n, {self.n_dims}), "
                             f"got {x.shape} and {observed.shape}")
        filled = np.where(observed, x, self._placeholder(x)).astype(self._placeholder(x).dtype)
        self.check_input(filled)                                   # observed values must be valid data
        n, D = x.shape
        rank = np.empty(D, dtype=np.int64)
        rank[self.order] = np.arange(D)
        last_observed = np.where(observed, rank[None, :], -1).max(axis=1)
        first_missing = np.where(~observed, rank[None, :], D).min(axis=1)
        if np.all(last_observed < first_missing):                  # observed first in every row: exact
            return self._fill(filled.copy(), ~observed, rng)[0]
        P = int(n_proposals)
        rows = np.repeat(np.arange(n), P)                          # (n P,)
        proposals, log_cond = self._fill(filled[rows].copy(), ~observed[rows], rng)
        log_w = np.where(observed[rows], log_cond, 0.0).sum(axis=1).reshape(n, P)
        return importance_resample(proposals.reshape(n, P, D), log_w, rng, f"{type(self).__name__}.complete")

    # ---------------------------------------------------------- construction
    @classmethod
    def for_dataset(cls, dataset, rng=None, start_at_marginals=False, **kwargs):
        """A MADE for the data set's D; start_at_marginals=True also sets the output biases from
        its training split (see the method start_at_marginals)."""
        if dataset.kind != cls.data_kind:
            raise ValueError(f"{cls.__name__} models {cls.data_kind} data; {dataset.name} is {dataset.kind}")
        model = cls(dataset.n_dims, rng=rng, **kwargs)
        if start_at_marginals:
            model.start_at_marginals(dataset.train)
        return model

    def start_at_marginals(self, x):
        """Set the output biases to the logits of the per-dimension means of x (B, D):

            c_d = log(q_d / (1 - q_d)),    q_d = mean_b x_bd clipped to [1e-3, 1 - 1e-3]

        so that, with the other terms of the logit small at initialisation (the hidden layer's
        V h and the direct connections' A x, from weights of order 1/sqrt(fan-in)),
        p(x_d = 1 | x_<d) starts near the data's marginal q_d rather than near 1/2. Starting at
        1/2 puts the loss far above that of independent pixels (on binarized MNIST about 543
        nats against 206), and the first steps' large gradients push many ReLU units below zero
        for every input, where they stay (a dead unit gets no gradient). An initialisation only:
        nothing of it is in the config, and a checkpoint keeps the trained biases."""
        if self.data_kind != "binary":
            raise TypeError(f"{type(self).__name__}.start_at_marginals: only for binary data (one logit per "
                            f"dimension); this model has {self._k} logits per dimension")
        x = self.check_input(x)
        if len(x) == 0:
            raise ValueError(f"{type(self).__name__}.start_at_marginals: x has no rows to take the means of")
        q = np.clip(x.mean(axis=0), 1e-3, 1 - 1e-3)
        self.output.bias.data[...] = np.log(q / (1 - q))

    def _randomize_biases(self, rng):
        """Nonzero biases, so that no ReLU sits exactly at its kink (for gradchecks)."""
        for layer in self.layers + [self.output]:
            layer.bias.data[...] = rng.uniform(-0.5, 0.5, layer.bias.shape)

    @classmethod
    def gradcheck_example(cls):
        rng = np.random.default_rng(0)
        model = cls(5, n_hidden=[6, 4], direct=True, n_masks=2, rng=rng, dtype=np.float64)
        model._randomize_biases(rng)
        model.use_mask(1)
        x = (rng.random((3, 5)) < 0.5).astype(np.float64)
        return model, x


class CategoricalMADE(MADE):
    """MADE over {0, ..., K-1}^D: each dimension enters one-hot (K inputs) and gets K logits,
    p(x_d = k | x_<d) = softmax(out_d)_k. All K inputs and all K outputs of a dimension share
    its degree m^0(d). Other arguments as MADE.
    """
    data_kind = "categorical"
    # `recipe`: weight decay and early stopping, as 17 levels overfit fast; its test NLL is in
    # README.md, "Results".
    recipes = {}                     # the binary MADE's MNIST recipe is not its own
    recipe = dict(lr=0.01, momentum=0.9, weight_decay=0.01, batch_size=100, epochs=60, patience=15,
                  model=dict(n_hidden=[500]))

    def __init__(self, n_dims, n_levels=17, n_hidden=(500,), direct=False, order=None, n_masks=1, mask_seed=0,
                 rng=None, dtype=np.float32, sort_hidden=True):
        if int(n_levels) < 2:
            raise ValueError(f"CategoricalMADE: need n_levels >= 2, got {n_levels}")
        self.n_levels = int(n_levels)
        self._init_made(n_dims, self.n_levels, n_hidden, direct, order, n_masks, mask_seed, rng, dtype,
                        sort_hidden)
        self.config = dict(self._base_config(), n_levels=self.n_levels)

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        if dataset.kind != cls.data_kind:
            raise ValueError(f"{cls.__name__} models categorical data; {dataset.name} is {dataset.kind}")
        return cls(dataset.n_dims, n_levels=dataset.n_levels, rng=rng, **kwargs)

    def _features(self, x):
        onehot = np.zeros((len(x), self.n_dims, self.n_levels), dtype=self.dtype)   # (B, D, K)
        np.put_along_axis(onehot, np.asarray(x, dtype=np.int64)[:, :, None], 1.0, axis=2)
        return onehot.reshape(len(x), self.n_dims * self.n_levels)

    def _log_conditionals(self, logits, x):
        return Categorical(logits).log_prob(x)                     # z_k - logsumexp(z)

    def _draw(self, logits_d, rng):
        return Categorical(logits_d).sample(rng)

    def _placeholder(self, x):
        return np.zeros(x.shape, dtype=np.int64)

    @classmethod
    def gradcheck_example(cls):
        rng = np.random.default_rng(1)
        model = cls(4, n_levels=3, n_hidden=[5], direct=True, n_masks=2, rng=rng, dtype=np.float64)
        model._randomize_biases(rng)
        x = rng.integers(0, 3, size=(3, 4))
        return model, x
