"""NADE, categorical NADE and RNADE: one hidden layer per conditional, with shared weights.

    p(x) = prod_{i=1..D} p(x_{o_i} | x_{o_1}, ..., x_{o_{i-1}})         o: an ordering of the D dimensions

Each conditional has its own hidden layer h_i, but all of them share W and c, so that
each pre-activation is the previous one plus one column [1, 2]:

    a_1     = c                                   (H,)
    h_i     = sigmoid(a_i)                        (H,)    sees only x_{o_<i}
    a_{i+1} = a_i + W[:, o_i] x_{o_i}             O(H) per step: O(D H) for the whole likelihood,
                                                  instead of O(D^2 H) for D separate networks

and the output layer gives the parameters of p(x_{o_i} | x_{o_<i}) from h_i:

    NADE (binary):          p(x_d = 1 | x_<d) = sigmoid(b_d + V_d . h)           1 logit per dimension
    CategoricalNADE (K):    p(x_d = k | x_<d) = softmax(b_d + V_d h)_k           K logits; x_d enters
                                                                                 a as W[:, d, x_d]
    RNADE [3] (continuous): p(x_d | x_<d) = sum_m pi_m N(x_d; mu_m, s_m^2),     3 M numbers:
                            pi = softmax(logits), mu, and log s kept in           weight logits, means,
                            [log s_min, log s_max] by log s = lo + (hi - lo) sigmoid(raw)   raw scales

Parameter shapes (K input features per dimension: 1 for NADE and RNADE, the K levels
one-hot for CategoricalNADE; P output numbers: 1, K or 3 M):

    W (D, K, H)   W[d] is the notes' column W[:, d], stored as a row so that it is contiguous
    c (H,)        V (D, P, H)        b (D, P)

The whole recursion is one fused op, fused.nade. Its loop, line for line the equations
above, is nade_forward_numpy in tinyar/kernels/nade.py, next to the backward pass derived
step by step; log_prob is a few lines: the op gives every conditional's parameters,
tinyar.distributions scores them stably.

Cost: log p(x) O(D H (K + P)) per example; a sample the same, in D sequential steps.

Order-agnostic training [4]: with order_agnostic=True, before_batch draws a fresh random
ordering for every minibatch (train.fit calls it), so the one set of weights learns the
conditionals of every ordering; at test time ensemble_log_prob averages the likelihoods of
several orderings (log-mean-exp: a mixture of the D! models, itself a normalized density),
and complete() can condition on any observed set by choosing an ordering that visits the
observed dimensions first. mask_inputs=True adds the mask input of [4]: every visited
dimension d also adds a learned column U[:, d] (a_{i+1} = a_i + W[:, d] x_d + U[:, d]; stored
as one more input row of W[d], whose feature is always 1), so that h can tell x_d = 0 from
"x_d not seen yet", which a model trained on every ordering needs.

Training: each class's `recipe` attribute; the test likelihoods it reaches are in the
README's results table (README.md, "Results").

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models (NADE).
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] H. Larochelle, I. Murray. The neural autoregressive distribution estimator. AISTATS 2011.
    [3] B. Uria, I. Murray, H. Larochelle. RNADE: the real-valued neural autoregressive
        density-estimator. NeurIPS 2013.
    [4] B. Uria, I. Murray, H. Larochelle. A deep and tractable density estimator. ICML 2014.
"""
from __future__ import annotations

import math

import numpy as np

from tinyar import fused, functional as F
from tinyar import ops
from tinyar.distributions import Bernoulli, Categorical, MixtureOfGaussians
from tinyar.kernels import nade as nade_kernels
from tinyar.checks import check_count, check_n_samples
from tinyar.models.base import AutoregressiveModel, resolve_order
from tinyar.nn import Parameter
from tinyar.rng import as_rng, importance_resample
from tinyar.tensor import Tensor


class NADE(AutoregressiveModel):
    """NADE over binary vectors {0, 1}^D:  p(x_d = 1 | x_<d) = sigmoid(b_d + V_d . h).

    n_dims: D;  n_hidden: H;  order: None (natural), "random" (drawn from rng) or a permutation;
    order_agnostic: draw a new ordering per minibatch (before_batch) [4];
    mask_inputs: each visited dimension also adds a learned column (the mask input of [4]).

    This class also holds what the three NADEs share (parameters, orderings, the fused op,
    sampling, completion). CategoricalNADE and RNADE subclass it and replace the three
    methods that depend on the kind of data: _features(x), the (B, D, K) inputs of the
    recursion; _log_conditionals(out, x), the distribution of each dimension given its
    parameters; and _draw(order, rng, x_obs, observed), the sampler.
    """
    data_kind = "binary"
    recipe = dict(lr=0.03, momentum=0.9, batch_size=100, epochs=200, model=dict(n_hidden=100))
    # binarized MNIST (--data mnist): H = 500 as in the NADE paper; its figures are in the README
    recipes = {"mnist": dict(lr=0.03, momentum=0.9, batch_size=100, epochs=30, schedule="cosine",
                             model=dict(n_hidden=500))}

    def __init__(self, n_dims, n_hidden=100, order=None, order_agnostic=False, mask_inputs=False, rng=None,
                 dtype=np.float32):
        self._init_parameters(n_dims, n_hidden, 1, 1, order, order_agnostic, mask_inputs, rng, dtype)
        self.config = self._base_config()

    def _init_parameters(self, n_dims, n_hidden, n_inputs, n_outputs, order, order_agnostic, mask_inputs, rng,
                         dtype):
        """W (D, K, H), c (H,), V (D, P, H), b (D, P) for K = n_inputs, P = n_outputs, and the ordering."""
        rng = as_rng(rng)
        self.mask_inputs = bool(mask_inputs)
        n_inputs += int(self.mask_inputs)                                          # + the mask input's row
        self.n_dims = D = int(n_dims)
        self.n_hidden = H = int(n_hidden)
        if D < 1 or H < 1:
            raise ValueError(f"{type(self).__name__}: n_dims and n_hidden must be >= 1, got {n_dims}, {n_hidden}")
        self.order_agnostic = bool(order_agnostic)
        self.order = resolve_order(order, D, rng)                                  # (D,)  o_i = order[i]
        self.W = Parameter(rng.standard_normal((D, n_inputs, H)) / math.sqrt(D), dtype=dtype)   # W ~ N(0, 1/D)
        self.c = Parameter(np.zeros(H), dtype=dtype)
        self.V = Parameter(rng.standard_normal((D, n_outputs, H)) / math.sqrt(H), dtype=dtype)  # V ~ N(0, 1/H)
        self.b = Parameter(np.zeros((D, n_outputs)), dtype=dtype)

    def _base_config(self):
        return dict(n_dims=self.n_dims, n_hidden=self.n_hidden, order=self.order.tolist(),
                    order_agnostic=self.order_agnostic, mask_inputs=self.mask_inputs,
                    dtype=np.dtype(self.W.dtype).name)

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        cls.require_kind(dataset, "binary", "NADE", "use data.digits(form='binary'), or nade-categorical / rnade")
        return cls(dataset.n_dims, rng=rng, **kwargs)

    # ---------------------------------------------------------------- likelihood
    def log_prob(self, x, order=None):
        """Tensor (B,): log p(x) = sum_d log p(x_d | x_<d), in nats (the model's ordering, or `order`).

        The recursion's loop over the D dimensions is one graph node, fused.nade: read it in
        tinyar/kernels/nade.py, nade_forward_numpy, the NumPy twin written like the equations
        (a_1 = c; h_i = sigmoid(a_i); logit = b_d + V_d h_i; a_{i+1} = a_i + W[:, d] x_d).
        """
        return self.log_conditionals(x, order).sum(axis=1)

    def log_conditionals(self, x, order=None):
        """Tensor (B, D): log p(x_d | x_<d) for every dimension d (in the given or the model's ordering)."""
        x = self.check_input(x)
        return self._log_conditionals(self.outputs(x, order), x)

    def outputs(self, x, order=None):
        """Every conditional's parameters, out (B, D, P), for checked data x (B, D)."""
        order = self.order if order is None else resolve_order(order, self.n_dims, None)
        return fused.nade(self._features(x), order, self.W, self.c, self.V, self.b)

    def _features(self, x):
        return self._with_mask(x.astype(self.W.dtype)[:, :, None])      # (B, D, 1)  x_d itself

    def _with_mask(self, features):
        """Append the mask input (a 1 for every dimension: it enters a only once d is visited)."""
        if not self.mask_inputs:
            return features
        ones = np.ones(features.shape[:2] + (1,), dtype=features.dtype)
        return np.concatenate([features, ones], axis=2)                         # (B, D, K + 1)

    def _log_conditionals(self, out, x):
        logits = ops.reshape(out, x.shape)                              # (B, D)
        return Bernoulli(logits).log_prob(x)                            # x z - softplus(z)

    def ensemble_log_prob(self, x, n_orderings=16, rng=None):
        """Tensor (B,): log (1/N) sum_{k=1..N} p(x | ordering k), N orderings drawn from rng.

        Each ordering's NADE is a normalized model, so their average is one too.
        """
        rng = as_rng(rng)
        n_orderings = check_count(f"{type(self).__name__}.ensemble_log_prob", "n_orderings", n_orderings)
        orders = [rng.permutation(self.n_dims) for _ in range(n_orderings)]
        log_probs = ops.stack([self.log_prob(x, order=o) for o in orders], axis=0)    # (N, B)
        return F.logsumexp(log_probs, axis=0) - math.log(len(orders))

    # ------------------------------------------------------------------ sampling
    def sample(self, n, rng=None):
        """n samples (n, D), drawn one dimension at a time along the model's ordering."""
        rng = as_rng(rng)
        n = check_n_samples(n, type(self).__name__)
        order = np.broadcast_to(self.order, (n, self.n_dims))
        observed = np.zeros((n, self.n_dims), dtype=bool)
        x, _ = self._draw(np.ascontiguousarray(order), rng, np.zeros((n, self.n_dims)), observed)
        return x

    def _draw(self, order, rng, x_obs, observed):
        """Samples (n, D) along each row's ordering, keeping the observed values, and their log-weights (n,)."""
        u = rng.random(order.shape)                                     # (n, D) uniforms
        sampler = nade_kernels.choose("sample_bernoulli")               # x_d = [u < p(x_d = 1 | x_<d)]
        return sampler(order, *self._kernel_arrays(), u, np.ascontiguousarray(x_obs, dtype=self.W.dtype),
                       np.ascontiguousarray(observed))

    def _kernel_arrays(self):
        return [np.ascontiguousarray(p.data) for p in (self.W, self.c, self.V, self.b)]

    def complete(self, x, observed_mask, rng=None, n_proposals=64):
        """Fill in the unobserved dimensions of x (n, D) by sampling from p(x_unobserved | x_observed).

        observed_mask (n, D) bool: True where x holds a value to keep (other entries of x are ignored).
        - order-agnostic model: each row uses an ordering that visits its observed dimensions
          first (in the model's relative order), so the sample is exact under that ordering.
        - fixed ordering: exact if the observed dimensions come first in every row; otherwise
          sampling-importance-resampling: n_proposals completions per row drawn with the observed
          values clamped, one kept with probability proportional to the likelihood of the
          observed values that came after sampled ones (exact as n_proposals -> infinity).
          A row whose observed values have probability 0 (log-weight -inf) under every proposal
          raises a ValueError rather than returning an arbitrary proposal.
        """
        rng = as_rng(rng)
        observed = np.asarray(observed_mask, dtype=bool)
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        if observed.shape != x.shape or x.ndim != 2 or x.shape[1] != self.n_dims:
            raise ValueError(f"{type(self).__name__}.complete: x and observed_mask must both be (n, {self.n_dims}), "
                             f"got {x.shape} and {observed.shape}")
        filled = np.where(observed, x, self._placeholder(x))
        self.check_input(filled)                                       # observed values must be valid data
        n, D = x.shape
        rank = np.empty(D, dtype=np.int64)
        rank[self.order] = np.arange(D)
        # per row: observed dimensions first (by their rank in the model's ordering), then the rest
        key = np.where(observed, 0, D) + rank[None, :]                  # (n, D)
        first_observed = np.argsort(key, axis=1, kind="stable")         # (n, D)
        if self.order_agnostic:
            out, _ = self._draw(np.ascontiguousarray(first_observed), rng, filled, observed)
            return out
        order = np.broadcast_to(self.order, (n, D))
        if np.array_equal(first_observed, order):                       # observed dims already come first
            out, _ = self._draw(np.ascontiguousarray(order), rng, filled, observed)
            return out
        P = int(n_proposals)
        rows = np.repeat(np.arange(n), P)                                # (n P,)
        proposals, log_w = self._draw(np.ascontiguousarray(np.broadcast_to(self.order, (n * P, D))), rng,
                                      filled[rows], observed[rows])
        return importance_resample(proposals.reshape(n, P, D), log_w.reshape(n, P), rng,
                                   f"{type(self).__name__}.complete")

    def _placeholder(self, x):
        return np.zeros_like(x)

    # ----------------------------------------------------------------- orderings
    def set_order(self, order):
        """Use this ordering from now on (also recorded in config, so a checkpoint keeps it)."""
        self.order = resolve_order(order, self.n_dims, None)
        self.config["order"] = self.order.tolist()

    def before_batch(self, rng):
        """Order-agnostic training: a fresh random ordering for every minibatch.

        Only self.order changes; config keeps the model's own ordering, so a checkpoint
        (and a resumed run) is the same model whichever ordering the last batch drew.
        """
        if self.order_agnostic:
            self.order = rng.permutation(self.n_dims)

    def before_eval(self):
        """Score in the model's own ordering (config["order"]), as a reloaded checkpoint does."""
        self.order = np.asarray(self.config["order"], dtype=np.int64)

    @classmethod
    def gradcheck_example(cls):
        rng = np.random.default_rng(0)
        model = cls(5, n_hidden=4, order="random", rng=rng, dtype=np.float64)
        model.b.data[...] = rng.standard_normal(model.b.shape)
        model.c.data[...] = rng.standard_normal(model.c.shape)
        x = (rng.random((4, 5)) < 0.5).astype(np.float64)
        return model, x


class CategoricalNADE(NADE):
    """NADE over {0, ..., K-1}^D:  p(x_d = k | x_<d) = softmax(b_d + V_d h)_k.

    x_d enters the recursion one-hot: a_{i+1} = a_i + W[:, d, x_d] (one column per level).
    n_levels: K (17 for the digits' intensities 0..16, 256 for 8-bit images).
    """
    data_kind = "categorical"
    recipes = {}                     # the binary NADE's MNIST recipe is not theirs
    recipe = dict(lr=0.03, momentum=0.9, batch_size=100, epochs=200, weight_decay=0.003, model=dict(n_hidden=100))

    def __init__(self, n_dims, n_levels=17, n_hidden=100, order=None, order_agnostic=False, mask_inputs=False,
                 rng=None, dtype=np.float32):
        self.n_levels = int(n_levels)
        if self.n_levels < 2:
            raise ValueError(f"CategoricalNADE: n_levels must be >= 2, got {n_levels}")
        self._init_parameters(n_dims, n_hidden, self.n_levels, self.n_levels, order, order_agnostic, mask_inputs,
                              rng, dtype)
        self.config = dict(self._base_config(), n_levels=self.n_levels)

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        if dataset.kind != "categorical":
            raise ValueError(f"CategoricalNADE models categorical data; {dataset.name} is {dataset.kind} "
                             "(use data.digits(form='levels'))")
        return cls(dataset.n_dims, n_levels=dataset.n_levels, rng=rng, **kwargs)

    def _features(self, x):
        return self._with_mask(np.eye(self.n_levels, dtype=self.W.dtype)[x])    # (B, D, K)  one-hot of x_d

    def _log_conditionals(self, out, x):
        return Categorical(out).log_prob(x)                             # (B, D)  z_k - logsumexp(z)

    def _draw(self, order, rng, x_obs, observed):
        u = rng.random(order.shape)
        sampler = nade_kernels.choose("sample_categorical")             # the first k with u < cdf_k
        return sampler(order, *self._kernel_arrays(), u, np.ascontiguousarray(x_obs, dtype=np.int64),
                       np.ascontiguousarray(observed))

    @classmethod
    def gradcheck_example(cls):
        rng = np.random.default_rng(1)
        model = cls(4, n_levels=3, n_hidden=3, order="random", rng=rng, dtype=np.float64)
        model.b.data[...] = rng.standard_normal(model.b.shape)
        x = rng.integers(0, 3, (3, 4))
        return model, x


class RNADE(NADE):
    """NADE over R^D with a mixture of M Gaussians per conditional [3].

    p(x_d | x_<d) = sum_m pi_m N(x_d; mu_m, s_m^2), from out_d = b_d + V_d h (3 M numbers):
        pi = softmax(out_d[:M]),   mu = out_d[M:2M],   log s = lo + (hi - lo) sigmoid(out_d[2M:])
    with [lo, hi] = [log_scale_min, log_scale_max]: every scale stays positive and bounded,
    so no component can collapse onto one data point (an unbounded likelihood). The bounds
    follow the data (log_scale_bounds; for_dataset passes them, config keeps them):
        hi = log(e (r1 - r0))       e sqrt(12) ~ 9 times the widest Gaussian the data's range
                                    [r0, r1] calls for (one over all of it: s = (r1 - r0) / sqrt(12))
        lo = log(delta / sqrt(12))  for data dequantized from levels delta apart (x = (k + u) delta):
                                    the standard deviation of the noise u delta within one level.
    A narrower component would fit that noise, not the data, and its gradients, which grow as
    1 / s^2, make SGD jump (validation NLL up and down by several nats from one epoch to the
    next). Without levels, lo = hi - 8 (on [0, 1]: [-7, 1]).

    Initialisation (init_range = [r0, r1], the data's range; for_dataset takes the 1% and 99%
    quantiles of the training values): every conditional starts as M Gaussians evenly spaced
    over the range, each as wide as half the spacing, through the output biases b_d
        mu_m = r0 + (m + 1/2) (r1 - r0) / M,     s_m = (r1 - r0) / (2 M),     m = 0..M-1
    (V h adds random offsets around these). Each component then starts near data of its
    own and gets its own gradient. Components far from all the data would get almost no
    responsibility, hence no gradient: with the data outside the range, the widest component
    takes every point, grows, and the model ends as one broad Gaussian per conditional.

    Densities and the discrete scale: data.digits(form="continuous") gives y = (k + u) / 17 with
    k the 17-level image and u ~ U[0, 1)^D. For any density p on [0, 1]^D, the probability of
    the bin of k is P(k) = int_bin p(y) dy = 17^-D E_u[p((k + u) / 17)] >= 17^-D exp(E_u log p)
    (Jensen), so -log P(k) <= -log p(y) + D log 17 on average over u: a density NLL in nats
    plus 64 log 17 = 181.3 nats bounds the NLL of the discrete images, and bits per dimension
    on the discrete scale are (NLL + D log 17) / (D log 2).
    """
    data_kind = "continuous"
    # small steps, decayed to 0 (cosine): the gradients grow as 1 / s^2 for a component's scale s
    recipes = {}                     # the binary NADE's MNIST recipe is not theirs
    recipe = dict(lr=0.002, momentum=0.9, batch_size=100, epochs=200, clip=10.0, schedule="cosine",
                  model=dict(n_hidden=100, n_components=5))

    def __init__(self, n_dims, n_hidden=100, n_components=5, log_scale_min=None, log_scale_max=None, order=None,
                 order_agnostic=False, mask_inputs=False, init_range=(0.0, 1.0), rng=None, dtype=np.float32):
        self.n_components = M = int(n_components)
        default_lo, default_hi = self.log_scale_bounds(init_range)             # (checks init_range)
        self.init_range = r0, r1 = [float(v) for v in init_range]
        lo = default_lo if log_scale_min is None else float(log_scale_min)
        hi = default_hi if log_scale_max is None else float(log_scale_max)
        self.log_scale_min, self.log_scale_max = lo, hi
        if M < 1 or not lo < hi:
            raise ValueError(f"RNADE: need n_components >= 1 and log_scale_min < log_scale_max, "
                             f"got {n_components}, {lo}, {hi}")
        rng = as_rng(rng)
        self._init_parameters(n_dims, n_hidden, 1, 3 * M, order, order_agnostic, mask_inputs, rng, dtype)
        # output biases: mu_m = r0 + (m + 1/2) (r1 - r0) / M and s_m = (r1 - r0) / (2 M) (see the class
        # docstring); the scale's bias inverts log s = lo + (hi - lo) sigmoid(raw), kept inside (lo, hi)
        spacing = (r1 - r0) / M
        self.b.data[:, M:2 * M] = r0 + (np.arange(M) + 0.5) * spacing
        t = np.clip((math.log(spacing / 2) - lo) / (hi - lo), 0.01, 0.99)     # sigmoid(raw) = t
        self.b.data[:, 2 * M:] = math.log(t / (1 - t))                          # raw = logit(t)
        self.config = dict(self._base_config(), n_components=M, log_scale_min=lo, log_scale_max=hi,
                           init_range=[r0, r1])

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        if dataset.kind != "continuous":
            raise ValueError(f"RNADE models continuous data; {dataset.name} is {dataset.kind} "
                             "(use data.digits(form='continuous'))")
        # the components start spread over the training data (quantiles: a few outliers do not stretch it)
        r0, r1 = np.quantile(np.asarray(dataset.train, dtype=np.float64), [0.01, 0.99])
        if not r0 < r1:                                         # (nearly) constant data: any small interval
            r0, r1 = r0 - 0.5, r1 + 0.5
        kwargs.setdefault("init_range", [float(r0), float(r1)])
        levels = getattr(dataset, "dequantized_levels", None)        # x = (k + u) / K: levels 1 / K apart
        lo, hi = cls.log_scale_bounds(kwargs["init_range"], 1.0 / levels if levels else None)
        kwargs.setdefault("log_scale_min", lo)
        kwargs.setdefault("log_scale_max", hi)
        return cls(dataset.n_dims, rng=rng, **kwargs)

    @staticmethod
    def log_scale_bounds(data_range, level_spacing=None):
        """(lo, hi) for log s, from the data's range [r0, r1] and the spacing delta of its levels
        (dequantized data; None: none): hi = log(e (r1 - r0)), lo = log(delta / sqrt(12)), or
        hi - 8 without levels (the class docstring says why)."""
        r0, r1 = (float(v) for v in data_range)
        if not (math.isfinite(r0) and math.isfinite(r1) and r0 < r1):
            raise ValueError(f"RNADE: init_range must be two finite numbers low < high, got {data_range}")
        hi = math.log(r1 - r0) + 1.0
        lo = hi - 8.0 if level_spacing is None else math.log(level_spacing / math.sqrt(12.0))
        if not lo < hi:
            raise ValueError(f"RNADE: levels {level_spacing:g} apart leave no scales inside the data's range "
                             f"[{r0:g}, {r1:g}] (need delta / sqrt(12) < e (r1 - r0))")
        return lo, hi

    # Float32 data beyond this magnitude are refused: the backward recomputes each a_i by
    # subtraction from later, larger pre-activations, so float32 gradients lose precision as |x|
    # grows (kernels/nade.py; the measured errors are in benchmarks/README.md, "NADE").
    MAX_ABS_FLOAT32 = 1e3

    def check_input(self, x, n_dims=None, n_levels=None):
        """x checked as finite real data (batch, D); in float32, also |x| <= MAX_ABS_FLOAT32."""
        x = super().check_input(x, n_dims, n_levels)
        if self.W.dtype == np.float32 and x.size and float(np.abs(x).max()) > self.MAX_ABS_FLOAT32:
            raise ValueError(f"RNADE: float32 model, but the data reach |x| = {float(np.abs(x).max()):.3g} > "
                             f"{self.MAX_ABS_FLOAT32:g}, where float32 gradients lose precision (the "
                             "backward recomputes the pre-activations by subtraction); rescale the data "
                             "to order 1, or build the model with dtype=np.float64")
        return x

    def mixture(self, out):
        """(weight logits, means, log scales), each (B, D, M), from out (B, D, 3 M)."""
        M = self.n_components
        lo, hi = self.log_scale_min, self.log_scale_max
        log_s = lo + (hi - lo) * ops.sigmoid(out[:, :, 2 * M:])         # in [lo, hi]
        return out[:, :, :M], out[:, :, M:2 * M], log_s

    def _log_conditionals(self, out, x):
        return MixtureOfGaussians(*self.mixture(out)).log_prob(x)      # (B, D)  logsumexp over m

    def _draw(self, order, rng, x_obs, observed):
        u = rng.random(order.shape)                                     # component choice
        z = rng.standard_normal(order.shape)                            # N(0, 1) for x = mu + s z
        sampler = nade_kernels.choose("sample_mog")
        return sampler(order, *self._kernel_arrays(), u, z, np.ascontiguousarray(x_obs, dtype=self.W.dtype),
                       np.ascontiguousarray(observed), self.log_scale_min, self.log_scale_max)

    @classmethod
    def gradcheck_example(cls):
        rng = np.random.default_rng(2)
        model = cls(4, n_hidden=3, n_components=2, order="random", rng=rng, dtype=np.float64)
        model.b.data[...] += 0.3 * rng.standard_normal(model.b.shape)
        x = rng.random((3, 4))
        return model, x
