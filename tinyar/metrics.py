"""How well a model fits: negative log-likelihood in nats and in bits per dimension.

    NLL       = -(1/N) sum_n log p(x_n)            nats per example
    bits/dim  = NLL / (D ln 2)                     bits per dimension

The NLL on held-out data estimates the cross-entropy H(p_data, p_theta) =
H(p_data) + KL(p_data || p_theta): lower is better, and the difference between two
models' NLLs on the same data is the difference of their KLs to the data [1].

For a density on dequantized data (x + u) / K with u ~ U[0, 1) (data.digits(form=
"continuous")), NLL + D log K upper-bounds the NLL of the K-level discrete data
(Jensen: -log P(x) <= E_u[-log p((x + u) / K)] + D log K):
pass `dequantized_levels=K` to bits_per_dim to report it on that scale.

KL divergence between two models p and q of the same space:

    KL(p || q) = E_{x ~ p}[log p(x) - log q(x)]  >= 0,  = 0 iff p = q

  Why >= 0 (Jensen's inequality, log being concave):
      -KL(p || q) = E_p[log q(x)/p(x)] <= log E_p[q(x)/p(x)] = log sum_x q(x) = log 1 = 0,
      with equality only when q/p is constant, i.e. q = p. The bound holds for the
      expectation, not for a finite-sample average: a Monte Carlo estimate can come out
      negative (demos/mle_is_kl.py counts how often) while its mean cannot.
  In bits: KL / ln 2 (pass base=2) is the expected number of extra bits needed to code
      x ~ p with a code built for q instead of p (ln 2 nats = 1 bit).

  Monte Carlo (kl_monte_carlo): draw x_1..x_N from p, f_n = log p(x_n) - log q(x_n);
      KL ~ mean(f),  standard error = std(f) / sqrt(N)   (unbiased; the error falls as 1/sqrt(N)).
      Works for any two models that score the same values, whatever D, because an
      autoregressive model gives both exact samples and exact log-likelihoods.
  Exact (kl_exact): for small spaces (K^D <= max_configs, e.g. D <= 16 binary), sum over
      every x in {0..K-1}^D of p(x) (log p(x) - log q(x)): the truth to check the estimator.

The data-set view of maximum likelihood (mle_view). Training minimises

    L(theta) = -(1/N) sum_n log p_theta(x_n) = -E_{x ~ p_hat}[log p_theta(x)]

where p_hat is the empirical distribution of the N training rows (each row mass 1/N;
repeated rows add up). Because

    KL(p_hat || p_theta) = E_{p_hat}[log p_hat(x)] - E_{p_hat}[log p_theta(x)]
                         = -H(p_hat) + L(theta),

and H(p_hat) does not depend on theta, minimising the NLL is minimising the KL from the
data to the model, up to the data's entropy: L(theta) = H(p_hat) + KL(p_hat || p_theta)
>= H(p_hat). On discrete data H(p_hat) = -sum_x c(x)/N log(c(x)/N) over the distinct rows
(c(x) their counts); it is log N when every row is distinct, so the NLL can only reach
log N by putting all the mass on the training rows: the overfitting limit, which held-out
NLL exposes. The same identity with the true p_data in place of p_hat is the population
view: the test NLL is a Monte Carlo estimate of H(p_data) + KL(p_data || p_theta).
(On continuous data p_hat has atoms and KL(p_hat || p_theta) is infinite against any
density; the identity then holds only for the population version.)

ROC and AUROC (roc_curve, auroc) for a score meant to be high on "positives" (e.g.
anomalies, scored by bits per dimension = -log p(x) / (D ln 2)) and low on "negatives"
(clean data):

    AUROC = P(s_pos > s_neg) + 1/2 P(s_pos = s_neg)      (pairs drawn independently)
          = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)     (Mann-Whitney U)

with R_pos the sum of the positives' ranks in the pooled scores, tied scores sharing the
mean of their ranks (midranks). 1 = a perfect detector, 0.5 = chance, below 0.5 = the
score ranks the "anomalies" as more normal than the data (see detect.py's caveat).

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from tinyar.checks import check_count, check_setting
from tinyar.tensor import no_grad


def log_likelihoods(model, x, batch_size=1000):
    """log p(x_n) for every row of x, in nats, as a float64 array (no graph is built)."""
    return _by_batches(model.log_prob, x, check_count("log_likelihoods", "batch_size", batch_size))


def _by_batches(log_prob, x, batch_size):
    """log_prob(rows) over the rows of x, batch_size rows at a time, as one float64 array (no graph)."""
    x = np.asarray(x)
    out = np.empty(len(x), dtype=np.float64)
    with no_grad():
        for start in range(0, len(x), batch_size):
            out[start:start + batch_size] = log_prob(x[start:start + batch_size]).data
    return out


def has_ensemble(model):
    """True for models whose test-time ensemble is worth reporting: order-agnostic NADE
    (log-mean-exp over orderings) and MADE with several masks (over masks)."""
    return hasattr(model, "ensemble_log_prob") and (getattr(model, "order_agnostic", False)
                                                    or getattr(model, "n_masks", 1) > 1)


def ensemble_nll(model, x, batch_size=1000):
    """Mean -log of the model's ensemble likelihood, log (1/N) sum_k p_k(x), in nats per example.

    Every batch uses the same N members (the models draw their orderings from a fixed seed).
    """
    batch_size = check_count("ensemble_nll", "batch_size", batch_size)
    return float(-_by_batches(model.ensemble_log_prob, _some_rows(x, "ensemble_nll"), batch_size).mean())


def nll(model, x, batch_size=1000):
    """Mean negative log-likelihood of the rows of x, in nats per example."""
    batch_size = check_count("nll", "batch_size", batch_size)
    return float(-log_likelihoods(model, _some_rows(x, "nll"), batch_size).mean())


def _some_rows(x, where):
    """x as an array with at least one row; else a ValueError (a mean over no rows is not a number)."""
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{where}: x has no rows (shape {x.shape}); the mean log-likelihood of no "
                         "examples is not a number")
    return x


def bits_per_dim(nll_nats, n_dims, dequantized_levels=None):
    """NLL in nats per example -> bits per dimension: nll / (D ln 2).

    dequantized_levels=K: the NLL is of a density on (x + u) / K; report the discrete
    K-level data's bound (nll + D log K) / (D ln 2) instead.
    """
    if dequantized_levels is not None:
        nll_nats = nll_nats + n_dims * math.log(dequantized_levels)
    return nll_nats / (n_dims * math.log(2))


# ---------------------------------------- KL divergence, the data-set view of MLE, ROC and AUROC

KLEstimate = namedtuple("KLEstimate", ["value", "stderr", "n_samples"])
MLEView = namedtuple("MLEView", ["nll", "data_entropy", "kl", "n_distinct", "n_examples"])


def as_model_input(model, x):
    """x converted to the dtype `model` scores: integers for categorical and token models,
    the model's float type for binary and continuous ones (so samples of one model can be
    scored by another of the same space, e.g. a NADE's float 0/1 by a Transformer's ids)."""
    x = np.asarray(x)
    if model.data_kind in ("categorical", "tokens"):
        if x.dtype.kind == "f":
            if not np.all(x == np.round(x)):
                raise ValueError(f"{type(model).__name__} scores integer values; got non-integer floats")
            x = x.astype(np.int64)
        return x
    return x.astype(model.dtype, copy=False)


def model_log_likelihoods(model, x, batch_size=1000):
    """log p(x_n) in nats (float64), after as_model_input (any tinyar model)."""
    batch_size = check_count("model_log_likelihoods", "batch_size", batch_size)
    return log_likelihoods(model, as_model_input(model, x), batch_size)


def kl_monte_carlo(p, q, n_samples=1000, rng=None, batch_size=1000, base=None):
    """KL(p || q) ~ (1/N) sum_n [log p(x_n) - log q(x_n)], x_n ~ p, with its standard error.

    p, q: any two tinyar models of the same values (p must have sample(n, rng)).
    Returns KLEstimate(value, stderr, n_samples) in nats; stderr = std(f) / sqrt(N).
    base=2: value and stderr in bits (both divided by ln 2); any base b > 1 divides by ln b.
    The estimate is unbiased, so its expectation is KL >= 0, but one estimate can be < 0.
    """
    from tinyar.rng import as_rng
    batch_size = check_count("kl_monte_carlo", "batch_size", batch_size)
    per_nat = _per_nat("kl_monte_carlo", base)
    rng = as_rng(rng)
    n_samples = int(n_samples)
    if n_samples < 2:
        raise ValueError(f"kl_monte_carlo: need n_samples >= 2 for a standard error, got {n_samples}")
    with no_grad():
        x = p.sample(n_samples, rng=rng)                                       # (N, D) x_n ~ p
    f = model_log_likelihoods(p, x, batch_size) - model_log_likelihoods(q, x, batch_size)   # (N,)
    stderr = f.std(ddof=1) / math.sqrt(n_samples)
    return KLEstimate(float(f.mean()) * per_nat, float(stderr) * per_nat, n_samples)


def _per_nat(where, base):
    """1 / ln(base): the factor that turns nats into units of log base `base` (None: nats, 2: bits)."""
    if base is None:
        return 1.0
    return 1.0 / math.log(check_setting(where, "base", base, 1, low_allowed=False))


def all_configurations(n_dims, n_levels=2, max_configs=2 ** 16):
    """Every x in {0..K-1}^D as a (K^D, D) int array, in lexicographic order (x_0 most significant)."""
    n_dims, n_levels = int(n_dims), int(n_levels)
    if n_levels ** n_dims > max_configs:
        raise ValueError(f"all_configurations: K^D = {n_levels}^{n_dims} = {n_levels ** n_dims} values are more "
                         f"than max_configs = {max_configs}; exact sums need a small space (e.g. D <= 16 binary)")
    digits = np.arange(n_levels ** n_dims)[:, None] // n_levels ** np.arange(n_dims - 1, -1, -1)[None, :]
    return digits % n_levels                                                    # (K^D, D)


def _space(model):
    K = 2 if model.data_kind == "binary" else getattr(model, "n_levels", None)
    if model.data_kind == "continuous" or K is None:
        raise ValueError(f"{type(model).__name__} models continuous values: its space cannot be enumerated "
                         "(use kl_monte_carlo)")
    return int(model.n_dims), int(K)


def exact_log_probs(model, max_configs=2 ** 16, batch_size=4096):
    """(all x (K^D, D), log p(x) (K^D,)) over the model's whole discrete space."""
    batch_size = check_count("exact_log_probs", "batch_size", batch_size)
    D, K = _space(model)
    x = all_configurations(D, K, max_configs)
    return x, model_log_likelihoods(model, x, batch_size)


def kl_exact(p, q, max_configs=2 ** 16, base=None):
    """KL(p || q) = sum_x p(x) (log p(x) - log q(x)) by enumerating all K^D values (nats).

    p and q must model the same discrete space (same D and K); K^D <= max_configs.
    base=2: in bits, KL / ln 2, the extra bits per x of coding p's values with q's code.
    KL >= 0 by Jensen (log is concave): -KL = E_p[log q/p] <= log E_p[q/p] = log 1 = 0.
    """
    per_nat = _per_nat("kl_exact", base)
    if _space(p) != _space(q):
        raise ValueError(f"kl_exact: p models (D, K) = {_space(p)}, q models {_space(q)}; they must agree")
    x, log_p = exact_log_probs(p, max_configs)
    log_q = model_log_likelihoods(q, x)
    w = np.exp(log_p)                                                           # p(x)
    with np.errstate(invalid="ignore"):
        terms = np.where(w > 0, w * (log_p - log_q), 0.0)                       # 0 log 0 = 0, not NaN
    return float(np.sum(terms)) * per_nat


def entropy_exact(p, max_configs=2 ** 16, base=None):
    """H(p) = -sum_x p(x) log p(x) by enumeration (nats; base=2: bits, H / ln 2)."""
    per_nat = _per_nat("entropy_exact", base)
    _, log_p = exact_log_probs(p, max_configs)
    w = np.exp(log_p)                                                           # p(x)
    with np.errstate(invalid="ignore"):
        return float(-np.sum(np.where(w > 0, w * log_p, 0.0))) * per_nat       # 0 log 0 = 0, not NaN


def empirical_entropy(x):
    """H(p_hat) of the empirical distribution of the rows of x (discrete data), in nats.

    p_hat(x) = c(x) / N for each distinct row x seen c(x) times: -sum c/N log(c/N).
    """
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("empirical_entropy: no examples")
    _, counts = np.unique(x.reshape(len(x), -1), axis=0, return_counts=True)
    freq = counts / len(x)
    return float(-np.sum(freq * np.log(freq)))


def mle_view(model, x, batch_size=1000):
    """The data-set view of MLE on the rows of x (discrete data): MLEView(nll, data_entropy, kl, ...).

        nll          -(1/N) sum_n log p_theta(x_n)      the MLE objective (nats per example)
        data_entropy H(p_hat)                            independent of theta
        kl           KL(p_hat || p_theta) = nll - H(p_hat) >= 0
        n_distinct, n_examples                           distinct rows, rows

    Why: with p_hat(x) = c(x) / N the empirical distribution of the rows,
        KL(p_hat || p_theta) = sum_x p_hat(x) log p_hat(x) - sum_x p_hat(x) log p_theta(x)
                             = -H(p_hat) - (1/N) sum_n log p_theta(x_n)  =  nll - H(p_hat),
    so the NLL that training minimises is the KL from the data to the model plus a constant,
    the data's entropy: the best possible NLL on x is H(p_hat) (<= log N, reached only by a
    model that puts all its mass on the rows of x). On held-out rows the NLL estimates
    H(p_data) + KL(p_data || p_theta) instead (Monte Carlo over the data set).
    """
    batch_size = check_count("mle_view", "batch_size", batch_size)
    x = _some_rows(x, "mle_view")
    if model.data_kind == "continuous" or (x.dtype.kind == "f" and not np.all(x == np.round(x))):
        raise ValueError("mle_view: the empirical distribution of continuous data has atoms, so "
                         "KL(p_hat || p_theta) is infinite for a density; use discrete data")
    value = float(-model_log_likelihoods(model, x, batch_size).mean())
    H = empirical_entropy(x)
    n_distinct = len(np.unique(x.reshape(len(x), -1), axis=0))
    return MLEView(value, H, value - H, n_distinct, len(x))


def midranks(values):
    """Ranks 1..n of `values` (1 = smallest), tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(values).any():
        raise ValueError("midranks: scores contain NaN")
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # a tie group runs from start to end (exclusive) in sorted order; its ranks start+1..end average (start+1+end)/2
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    group_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def _two_sets(negatives, positives):
    negatives = np.asarray(negatives, dtype=np.float64).reshape(-1)
    positives = np.asarray(positives, dtype=np.float64).reshape(-1)
    if len(negatives) == 0 or len(positives) == 0:
        raise ValueError(f"need at least one negative and one positive score, got {len(negatives)} and {len(positives)}")
    if np.isnan(negatives).any() or np.isnan(positives).any():
        raise ValueError("scores contain NaN")
    return negatives, positives


def auroc(negatives, positives):
    """Area under the ROC curve: P(s_pos > s_neg) + 1/2 P(s_pos = s_neg), by midranks.

    negatives: scores of the "normal" set; positives: of the set to flag (higher = flagged).
    """
    negatives, positives = _two_sets(negatives, positives)
    n_neg, n_pos = len(negatives), len(positives)
    ranks = midranks(np.concatenate([negatives, positives]))
    U = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2.0                # pairs with s_pos > s_neg, ties 1/2
    return float(U / (n_pos * n_neg))


def roc_curve(negatives, positives):
    """The ROC curve: (false positive rates, true positive rates, thresholds), from (0, 0) to (1, 1).

    Point k flags every score >= thresholds[k] (thresholds: the distinct scores, high to
    low; the first point, threshold +inf, flags nothing). A tie between a positive and a
    negative moves both rates at once (a diagonal step), so the trapezoid area under the
    curve equals auroc(negatives, positives).
    """
    negatives, positives = _two_sets(negatives, positives)
    scores = np.concatenate([negatives, positives])
    is_pos = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    last_of_group = np.r_[scores[1:] != scores[:-1], True]                 # cut only between distinct scores
    tp = np.cumsum(is_pos)[last_of_group]
    fp = np.cumsum(1 - is_pos)[last_of_group]
    fpr = np.r_[0.0, fp / len(negatives)]
    tpr = np.r_[0.0, tp / len(positives)]
    thresholds = np.r_[np.inf, scores[last_of_group]]
    return fpr, tpr, thresholds


def area_under_curve(x, y):
    """Trapezoid area under the piecewise-linear curve through (x_k, y_k)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
