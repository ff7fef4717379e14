"""Conditional queries: complete a partly observed input, and score the observed part.

An autoregressive model p(x) = prod_k p(x_{o_k} | x_{o_<k}) answers two queries exactly
when the observed dimensions O come first in its ordering o (a prefix: O = {o_1..o_m}):

    completion   x_U ~ p(x_U | x_O): draw the rest in order, each x_{o_k} (k > m) from
                 p(x_{o_k} | x_{o_<k}) with the observed values and the values drawn so far
                 as context. Since p(x) = p(x_O) p(x_U | x_O) and the first m factors are
                 p(x_O), the remaining factors are exactly p(x_U | x_O).
    marginal     log p(x_O) = sum_{k <= m} log p(x_{o_k} | x_{o_<k}): the first m terms of the
                 chain rule, which do not involve the unobserved values at all.

For any other observed set, p(x_O) = sum over every x_U of p(x): K^|U| terms. Which sets
each model supports here (a model that cannot answer raises a ValueError that says why):

    model                                   observed sets
    FVSBN, NADE, CategoricalNADE, RNADE     prefixes of model.order
    MADE, CategoricalMADE (one mask)        prefixes of model.order (the current mask's)
    PixelCNN, GatedPixelCNN, PixelRNN       prefixes of the raster order: the top rows, then a
                                            partial row from its left (e.g. the top half)
    RNN, Transformer (token sequences)      prefixes of the sequence
    NADE family with order_agnostic=True    ANY set: the model was trained on every ordering,
                                            so it uses an ordering that puts O first [2]
    MADE ensemble (n_masks > 1)             ANY set for completion, from the ensemble's
                                            mixture p(x) = (1/N) sum_k p_k(x), by sampling-
                                            importance-resampling (complete_made_ensemble;
                                            exact as n_proposals -> infinity). Marginals only
                                            for prefixes of the current mask's ordering.

Each row of x may have its own observed set (observed_mask (n, D)), or all rows one
((D,) mask). Values of x where the mask is False are ignored.

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] B. Uria, I. Murray, H. Larochelle. A deep and tractable density estimator. ICML 2014.
"""
from __future__ import annotations

import numpy as np

from tinyar.distributions import Bernoulli, Categorical
from tinyar.metrics import as_model_input
from tinyar.rng import as_rng, importance_resample
from tinyar.tensor import Tensor, no_grad


# ------------------------------------------------------------ which model, which sets
def _is_order_agnostic_nade(model):
    return bool(getattr(model, "order_agnostic", False)) and hasattr(model, "_draw") and hasattr(model, "outputs")


def _is_made(model):
    return hasattr(model, "n_masks") and hasattr(model, "use_mask")


def supports_any_observed_set(model):
    """True when `complete` accepts any observed set: order-agnostic NADEs and MADE ensembles."""
    return _is_order_agnostic_nade(model) or (_is_made(model) and model.n_masks > 1)


def describe_support(model):
    """One line: which observed sets `complete` and `log_prob_observed` accept for this model."""
    name = type(model).__name__
    if _is_order_agnostic_nade(model):
        return f"{name} (order-agnostic): any observed set, for completion and for log p(x_observed)"
    if _is_made(model) and model.n_masks > 1:
        return (f"{name} ensemble of {model.n_masks} masks: completion of any observed set from the mixture of "
                "its masks (importance-resampled); log p(x_observed) for prefixes of the current mask's ordering")
    return f"{name}: observed sets that are a prefix of its ordering (the first k dimensions drawn), exactly"


def ordering(model, n_dims=None):
    """The model's ordering as an int array: model.order if it has one, else the natural
    (raster / sequence) order 0..D-1."""
    D = model.n_dims if n_dims is None else int(n_dims)
    order = getattr(model, "order", None)
    if order is None:
        return np.arange(D)
    order = np.asarray(order, dtype=np.int64)
    if len(order) != D:
        raise ValueError(f"{type(model).__name__} has an ordering of {len(order)} dimensions, got inputs of {D}")
    return order


def _observed(x, observed_mask):
    x = np.asarray(x.data if isinstance(x, Tensor) else x)
    if x.ndim != 2:
        raise ValueError(f"expected x of shape (n, D), got {x.shape}" + ("; use x[None, :]" if x.ndim == 1 else ""))
    observed = np.asarray(observed_mask, dtype=bool)
    if observed.shape not in (x.shape, x.shape[1:]):
        raise ValueError(f"observed_mask must have shape {x.shape[1:]} or {x.shape}, got {observed.shape}")
    return x, np.broadcast_to(observed, x.shape).copy()


def is_prefix(observed, order):
    """(n,) bool: in each row, do the observed dimensions come first in `order`?"""
    D = len(order)
    rank = np.empty(D, dtype=np.int64)
    rank[order] = np.arange(D)
    last_observed = np.where(observed, rank[None, :], -1).max(axis=1)
    first_missing = np.where(~observed, rank[None, :], D).min(axis=1)
    return last_observed < first_missing


def check_prefix(model, observed):
    """Raise a ValueError that says which row breaks the rule unless every row's observed set
    is a prefix of the model's ordering."""
    order = ordering(model, observed.shape[1])
    ok = is_prefix(observed, order)
    if ok.all():
        return
    r = int(np.flatnonzero(~ok)[0])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    missing = int(order[min(rank[d] for d in np.flatnonzero(~observed[r]))])
    later = [int(d) for d in np.flatnonzero(observed[r]) if rank[d] > rank[missing]]
    raise ValueError(
        f"{type(model).__name__} can condition only on a prefix of its ordering: in row {r}, dimension "
        f"{missing} (position {rank[missing]} of the ordering) is unobserved while dimension {later[0]} "
        f"(position {rank[later[0]]}) after it is observed, so p(x_{later[0]} | ...) would need a sum over "
        f"x_{missing}. Observe a prefix (e.g. the top rows of an image for raster-order models), or use "
        f"an order-agnostic NADE (order_agnostic=True) or a MADE ensemble (n_masks > 1) for any observed set. "
        f"[{describe_support(model)}]")


# -------------------------------------------------------- conditionals of any model
def _logits(model, x):
    """Logits of every conditional, (B, D) (Bernoulli) or (B, D, K) (categorical), for the
    models without log_conditionals: FVSBN, PixelCNN, GatedPixelCNN, PixelRNN, RNN, Transformer."""
    if hasattr(model, "mask") and hasattr(model, "logits") and hasattr(model, "W"):          # FVSBN
        x = model.check_input(x)
        return model.logits(Tensor(x.astype(model.dtype)))                                  # (B, D)
    if hasattr(model, "logits_image"):                                                      # PixelCNNs
        x = model.check_input(x)
        return model.forward(model._input(x))                                               # (B, D) / (B, D, K)
    if hasattr(model, "logits"):                                                            # RNNs, Transformer
        z = model.logits(x)                                                                 # (B, T, K) / (B, T, 1)
        return z.reshape(z.shape[:2]) if z.shape[-1] == 1 else z
    raise TypeError(f"{type(model).__name__}: no way to read its conditionals (expected log_conditionals or logits)")


def log_conditionals(model, x):
    """(B, D) float64 array: log p(x_d | x_<d) for every dimension d of every row, in nats,
    "<d" meaning before d in the model's ordering. Their row sums are log p(x)."""
    x = as_model_input(model, x)
    with no_grad():
        if hasattr(model, "log_conditionals"):                      # NADE family, MADE (current mask)
            return np.asarray(model.log_conditionals(x).data, dtype=np.float64)
        z = _logits(model, x)
        dist = Bernoulli(z) if z.ndim == 2 else Categorical(z)
        return np.asarray(dist.log_prob(x).data, dtype=np.float64)


def _draw_dimension(model, x, d, rows, rng):
    """Values for x[rows, d] drawn from p(x_d | x_<d) given the current rows of x."""
    z = _logits(model, x[rows]).data[:, d]                          # (r,) or (r, K)
    if z.ndim == 1:
        return Bernoulli(Tensor(z)).sample(rng)
    return Categorical(Tensor(z)).sample(rng)


def _complete_in_order(model, x, observed, rng):
    """Draw every unobserved x_d along the model's ordering (D passes, one per position)."""
    x = x.copy()
    with no_grad():
        for d in ordering(model, x.shape[1]):
            rows = np.flatnonzero(~observed[:, d])
            if len(rows):
                x[rows, d] = _draw_dimension(model, x, d, rows, rng)
    return x


# ------------------------------------------------------------------------ queries
def complete(model, x, observed_mask, rng=None, n_proposals=256):
    """x with its unobserved entries drawn from p(x_unobserved | x_observed); observed kept.

    model: any tinyar model of vectors or sequences (see the module docstring for which
    observed sets each accepts); x (n, D); observed_mask (D,) or (n, D) booleans, True
    where x holds a value to keep. n_proposals: only for a MADE ensemble (importance
    resampling, complete_made_ensemble). Returns an (n, D) array in the model's value type.
    """
    rng = as_rng(rng)
    x, observed = _observed(x, observed_mask)
    placeholder = np.where(observed, x, 0)
    filled = as_model_input(model, placeholder)
    if supports_any_observed_set(model):
        if _is_made(model):
            out = complete_made_ensemble(model, filled, observed, rng, n_proposals)
        else:
            out = model.complete(filled, observed, rng=rng)
    else:
        check_prefix(model, observed)
        if hasattr(model, "complete"):                               # NADE, MADE, PixelCNNs: their own sampler
            out = model.complete(filled, observed, rng=rng)
        else:                                                        # FVSBN, PixelRNN, RNN, Transformer
            out = _complete_in_order(model, filled, observed, rng)
    return as_model_input(model, out)                                # every sampler keeps the observed values


def _logsumexp(a, axis=0):
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


def complete_made_ensemble(model, x, observed, rng=None, n_proposals=256):
    """Completion from a MADE ensemble's mixture p(x) = (1/N) sum_k p_k(x), any observed set.

    Sampling-importance-resampling. Per row, n_proposals completions: each picks a mask k
    uniformly and draws the unobserved dims along k's ordering with the observed values
    clamped (MADE._fill), so it has density q_k(x_U) = prod_{d in U} p_k(x_d | x_<d) and
    the proposal is the mixture q = (1/N) sum_k q_k. The weight of a proposal is

        w = p(x_O, x_U) / q(x_U) = sum_k p_k(x) / sum_k q_k(x_U)     (N passes score it)

    and one proposal per row is kept with probability proportional to w: a draw from
    p(x_U | x_O) as n_proposals -> infinity (exact for any n_proposals if all weights agree).
    """
    rng = as_rng(rng)
    n, D = x.shape
    P, N = int(n_proposals), model.n_masks
    rows = np.repeat(np.arange(n), P)                                            # (n P,)
    proposals, todo = x[rows].copy(), ~observed[rows]
    which = rng.integers(0, N, size=n * P)                                       # each proposal's mask
    log_p, log_q = np.empty((N, n * P)), np.empty((N, n * P))
    current = model.mask_index
    try:
        for k in range(N):
            picked = np.flatnonzero(which == k)
            if len(picked):
                model.use_mask(k)
                proposals[picked] = model._fill(proposals[picked].copy(), todo[picked], rng)[0]
        for k in range(N):
            model.use_mask(k)
            logc = log_conditionals(model, proposals)                            # (n P, D) under mask k
            log_p[k] = logc.sum(axis=1)                                          # log p_k(x)
            log_q[k] = np.where(todo, logc, 0.0).sum(axis=1)                     # log q_k(x_U)
    finally:
        model.use_mask(current)
    log_w = (_logsumexp(log_p) - _logsumexp(log_q)).reshape(n, P)
    return importance_resample(proposals.reshape(n, P, D), log_w, rng, "complete_made_ensemble")


def observed_first_order(model, observed_row):
    """An ordering that visits the observed dimensions of one row first, each group in the
    model's own relative order (what the order-agnostic NADE's complete() uses)."""
    order = ordering(model, len(observed_row))
    D = len(order)
    rank = np.empty(D, dtype=np.int64)
    rank[order] = np.arange(D)
    return np.argsort(np.where(observed_row, 0, D) + rank, kind="stable")


def log_prob_observed(model, x, observed_mask, n_orderings=1, rng=None):
    """log p(x_observed) in nats for every row, (n,) float64: the marginal of the observed part.

    Prefix of the ordering (every model): the first terms of the chain rule.
    Order-agnostic NADE, any set: the same sum under an ordering that puts the observed
    dimensions first; with n_orderings > 1, the log-mean-exp over that many orderings with
    the observed dimensions first in random order (the marginal of the mixture of those
    orderings' models, as in ensemble_log_prob). Observing nothing gives 0 (= log 1).
    """
    x, observed = _observed(x, observed_mask)
    filled = as_model_input(model, np.where(observed, x, 0))
    if not _is_order_agnostic_nade(model):
        check_prefix(model, observed)
        return np.where(observed, log_conditionals(model, filled), 0.0).sum(axis=1)
    rng = as_rng(rng)
    n_orderings = int(n_orderings)
    if n_orderings < 1:
        raise ValueError(f"log_prob_observed: n_orderings must be >= 1, got {n_orderings}")
    out = np.empty(len(x))
    patterns, which = np.unique(observed, axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    with no_grad():
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(which == p)
            obs_dims, rest = np.flatnonzero(pattern), np.flatnonzero(~pattern)
            terms = []
            for k in range(n_orderings):
                if k == 0:
                    order = observed_first_order(model, pattern)
                else:
                    order = np.concatenate([rng.permutation(obs_dims), rng.permutation(rest)])
                logc = np.asarray(model.log_conditionals(filled[rows], order=order).data, dtype=np.float64)
                terms.append(logc[:, obs_dims].sum(axis=1))                     # (r,)
            terms = np.stack(terms)                                             # (N, r)
            top = terms.max(axis=0)
            out[rows] = top + np.log(np.exp(terms - top).mean(axis=0))          # log (1/N) sum_k p_k(x_O)
    return out


def mask_top(n_dims, image_shape, n_rows):
    """(D,) bool mask observing the top n_rows rows of an image (a raster-order prefix)."""
    H, W = image_shape
    if H * W != n_dims or not 0 <= n_rows <= H:
        raise ValueError(f"mask_top: need 0 <= n_rows <= {H} for an image of shape {image_shape} (D = {n_dims})")
    mask = np.zeros((H, W), dtype=bool)
    mask[:n_rows] = True
    return mask.reshape(-1)


def mask_left(n_dims, image_shape, n_cols):
    """(D,) bool mask observing the left n_cols columns (not a raster prefix: needs an
    order-agnostic model)."""
    H, W = image_shape
    if H * W != n_dims or not 0 <= n_cols <= W:
        raise ValueError(f"mask_left: need 0 <= n_cols <= {W} for an image of shape {image_shape} (D = {n_dims})")
    mask = np.zeros((H, W), dtype=bool)
    mask[:, :n_cols] = True
    return mask.reshape(-1)


__all__ = ["complete", "complete_made_ensemble", "log_prob_observed", "log_conditionals", "supports_any_observed_set", "describe_support",
           "ordering", "is_prefix", "check_prefix", "observed_first_order", "mask_top", "mask_left"]
