"""Anomaly and adversarial-input detection with exact likelihoods, and PixelDefend-style purification.

A density model p_theta trained on digits gives every input a number, its bits per
dimension b(x) = -log p_theta(x) / (D ln 2). Inputs unlike the training data (noise,
inputs crafted against a classifier) should get a higher b(x): thresholding b(x) is a
detector, and its ROC curve over a clean set and a suspicious set measures how well it
separates them (metrics.roc_curve, metrics.auroc) [1, 2].

This module holds the pieces:

  Classifier, train_classifier   a small MLP p(y | x) = softmax(W_2 relu(W_1 s x + b_1) + b_2)
                                 trained with tinyar (s scales the input to [0, 1])
  flip_attack                    binary images: flip the k pixels that raise the classifier's
                                 loss L most, to first order. Flipping x_j changes it by
                                 (1 - 2 x_j), so the predicted change in L is
                                     gain_j = (1 - 2 x_j) dL/dx_j         (sign-aware),
                                 one pixel per step, the gradient recomputed after each flip
  fgsm                           17-level and continuous images: the fast gradient sign step
                                 x' = clip(x + eps sign(dL/dx)) (eps in levels for integer images)
  random_flips, random_sign_noise   the same amount of change in random directions (a baseline)
  bits_per_dim, detection_table  scores and AUROC of clean against each other set, per model
  purify_pixeldefend             PixelDefend's purification [2, Algorithm 1]: one pass along the
                                 model's ordering, each pixel set to its most likely value given
                                 the pixels already purified, within eps of the input (L-infinity)
  purify_greedy                  a variant under an L0 budget: greedy likelihood ascent, one pixel
                                 per step (the single change that raises log p most: a flip for
                                 binary images, where an eps ball of one level allows any value),
                                 at most `budget` pixels; each step scores every candidate change
  p_values                       the detection test of [2]: an input's bits/dim ranked against
                                 the training data's, as a p-value
  ood_sets, caveat_table         the caveat: inputs that are out of distribution yet scored as
                                 likely, or likelier than the data (the average digit, a blank
                                 page of 17-level pixels, mirrored digits): likelihood is not
                                 typicality [3]

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] Y. Song, T. Kim, S. Nowozin, S. Ermon, N. Kushman. PixelDefend: leveraging generative
        models to understand and defend against adversarial examples. ICLR 2018.
    [3] E. Nalisnick, A. Matsukawa, Y. W. Teh, D. Gorur, B. Lakshminarayanan. Do deep generative
        models know what they don't know? ICLR 2019.
"""
from __future__ import annotations

import math

import numpy as np

from tinyar import functional as F
from tinyar import metrics, ops, queries
from tinyar.nn import Linear, Module
from tinyar.optim import SGD
from tinyar.rng import as_rng
from tinyar.tensor import Tensor, no_grad


# ---------------------------------------------------------------- the classifier
class Classifier(Module):
    """An MLP over flattened images: logits = W_2 relu(W_1 (s x) + b_1) + b_2.

    n_inputs: D; n_classes: 10 for digits; n_hidden: H; input_scale: s (1/16 for the
    17 levels 0..16, 1 for binary and continuous images).
    """

    def __init__(self, n_inputs, n_classes=10, n_hidden=64, input_scale=1.0, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.n_inputs, self.n_classes, self.input_scale = int(n_inputs), int(n_classes), float(input_scale)
        self.hidden = Linear(self.n_inputs, int(n_hidden), rng=rng, dtype=dtype)
        self.out = Linear(int(n_hidden), self.n_classes, rng=rng, dtype=dtype)

    def logits(self, x):
        """(B, n_classes) logits for images x (array or Tensor (B, D))."""
        if not isinstance(x, Tensor):
            x = Tensor(np.asarray(x, dtype=self.hidden.weight.dtype))
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"Classifier: expected inputs of shape (batch, {self.n_inputs}), got {x.shape}")
        return self.out(ops.relu(self.hidden(x * self.input_scale)))            # (B, C)

    def loss(self, x, y):
        """Mean cross-entropy -(1/B) sum_b log p(y_b | x_b), a scalar Tensor."""
        return F.cross_entropy(self.logits(x), np.asarray(y, dtype=np.int64)).mean()

    def predict(self, x):
        with no_grad():
            return np.argmax(self.logits(x).data, axis=1)

    def accuracy(self, x, y):
        return float(np.mean(self.predict(x) == np.asarray(y)))

    def input_gradient(self, x, y):
        """dL/dx (B, D) of each example's own loss L_b = -log p(y_b | x_b) (float64)."""
        xt = Tensor(np.asarray(x, dtype=self.hidden.weight.dtype), requires_grad=True)
        F.cross_entropy(self.logits(xt), np.asarray(y, dtype=np.int64)).sum().backward()
        return xt.grad.astype(np.float64)


def train_classifier(x, y, n_hidden=64, input_scale=1.0, epochs=40, lr=0.05, momentum=0.9, batch_size=50,
                     weight_decay=1e-4, rng=0):
    """A Classifier trained by minibatch SGD on images x (N, D) and labels y (N,)."""
    rng = as_rng(rng)
    x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
    model = Classifier(x.shape[1], int(y.max()) + 1, n_hidden, input_scale, rng=rng)
    opt = SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(int(epochs)):
        perm = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            opt.zero_grad()
            model.loss(x[idx], y[idx]).backward()
            opt.step()
    return model


# ------------------------------------------------------------------- the attacks
def _check_budget(k, x, name):
    """k as an int, after checking it is a number of distinct pixels in 0..D."""
    D = x.shape[-1]
    if int(k) != k or not 0 <= k <= D:
        raise ValueError(f"{name}: k must be a whole number of distinct pixels in 0..{D} (D = {D}), got {k}")
    return int(k)


def flip_attack(classifier, x, y, k):
    """Binary images x (B, D): flip k pixels per image, one per step, each time the pixel
    (not yet flipped) with the largest predicted loss increase gain_j = (1 - 2 x_j) dL/dx_j."""
    x = np.asarray(x, dtype=np.float64).copy()
    k = _check_budget(k, x, "flip_attack")
    flipped = np.zeros(x.shape, dtype=bool)
    rows = np.arange(len(x))
    for _ in range(k):
        gain = (1.0 - 2.0 * x) * classifier.input_gradient(x, y)               # (B, D) first-order dL per flip
        gain[flipped] = -np.inf
        j = np.argmax(gain, axis=1)                                             # (B,)
        x[rows, j] = 1.0 - x[rows, j]
        flipped[rows, j] = True
    return x.astype(np.float32)


def fgsm(classifier, x, y, eps, low=0.0, high=1.0, integer=False):
    """Fast gradient sign step x' = clip(x + eps sign(dL/dx), low, high) [Goodfellow et al. 2015].

    integer=True (the 17 levels): eps is a whole number of levels and x' stays integer.
    """
    g = classifier.input_gradient(x, y)
    x_adv = np.clip(np.asarray(x, dtype=np.float64) + eps * np.sign(g), low, high)
    return np.round(x_adv).astype(np.int64) if integer else x_adv.astype(np.float32)


def random_flips(x, k, rng=None):
    """Binary images with k distinct pixels per image flipped at random (the attack's budget, no aim)."""
    rng = as_rng(rng)
    x = np.asarray(x, dtype=np.float32).copy()
    k = _check_budget(k, x, "random_flips")
    j = np.argsort(rng.random(x.shape), axis=1)[:, :k]                         # k distinct pixels per row
    rows = np.arange(len(x))[:, None]
    x[rows, j] = 1.0 - x[rows, j]
    return x


def random_sign_noise(x, eps, low=0.0, high=1.0, integer=False, rng=None):
    """x + eps s with random signs s in {-1, +1}, clipped: FGSM's change without its direction."""
    rng = as_rng(rng)
    x_noisy = np.clip(np.asarray(x, dtype=np.float64) + eps * rng.choice([-1.0, 1.0], size=np.shape(x)), low, high)
    return np.round(x_noisy).astype(np.int64) if integer else x_noisy.astype(np.float32)


# ----------------------------------------------------------------- detection
def bits_per_dim(model, x, batch_size=1000):
    """b(x) = -log p(x) / (D ln 2) for every row (float64): the anomaly score, higher = stranger."""
    x = np.asarray(x)
    return -metrics.model_log_likelihoods(model, x, batch_size) / (x.shape[1] * math.log(2))


def p_values(scores, reference):
    """One-sided p-values of anomaly scores against scores of data from the training distribution [2].

    p(x) = (1 + #{r in reference : r >= s(x)}) / (1 + N),   N = len(reference)

    Under the hypothesis that x comes from the same distribution as the reference set, its
    score is equally likely to fall at any rank among them, so p(x) is the probability of a
    score at least as extreme as s(x) (never 0: x itself counts). Small p-values flag x; with
    bits/dim as the score, p < 0.05 rejects at the 5% level. scores (M,), reference (N,) -> (M,).
    """
    reference = np.sort(np.asarray(reference, dtype=np.float64))
    scores = np.asarray(scores, dtype=np.float64)
    if reference.ndim != 1 or len(reference) == 0 or not np.isfinite(reference).all():
        raise ValueError(f"p_values: the reference scores must be a non-empty 1-D array of finite numbers, "
                         f"got shape {reference.shape}")
    at_least = len(reference) - np.searchsorted(reference, scores, side="left")   # #{r >= s}
    return (1.0 + at_least) / (1.0 + len(reference))


def detection_table(models, clean, others):
    """{set name: {model name: AUROC of clean (negatives) against that set (positives)}}, by bits/dim.

    models: {name: density model}; clean: (N, D); others: {name: (M, D)}.
    """
    clean_scores = {m: bits_per_dim(model, clean) for m, model in models.items()}
    return {s: {m: metrics.auroc(clean_scores[m], bits_per_dim(model, x)) for m, model in models.items()}
            for s, x in others.items()}


def markdown_table(table, corner="set", fmt="{:.3f}"):
    """A {row: {column: value}} dict as a Markdown table."""
    rows = list(table)
    cols = list(next(iter(table.values())))
    lines = ["| " + " | ".join([corner] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        lines.append("| " + " | ".join([r] + [fmt.format(table[r][c]) for c in cols]) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------- purification
def _candidates(x_now, x_orig, kind, eps, n_levels):
    """All single-pixel changes of each row: (pixel index (C,), new value (B, C)) with C candidates
    per row; invalid ones (outside the eps ball or the value range, or no change) get NaN."""
    B, D = x_now.shape
    if kind == "binary":
        return np.arange(D), 1.0 - x_now                                           # flip each pixel
    if kind == "categorical":
        deltas = [d for d in range(-int(eps), int(eps) + 1)]
        low, high = 0, n_levels - 1
    else:
        deltas = [-eps, 0.0, eps]
        low, high = 0.0, np.nextafter(1.0, 0.0)
    pixels = np.tile(np.arange(D), len(deltas))                                    # (C,) = (len(deltas) D,)
    values = np.concatenate([x_orig + d for d in deltas], axis=1).astype(np.float64)   # (B, C) around the input
    bad = (values < low) | (values > high) | (values == np.tile(x_now, len(deltas)))
    values[bad] = np.nan
    return pixels, values


def purify_greedy(model, x, budget, eps=None, stop_at=None, batch_size=4096):
    """Greedy likelihood ascent: raise log p(x) by changing at most `budget` pixels (an L0 budget).

    Each step evaluates every allowed single-pixel change of every row and applies the one
    that raises log p most (rows that no change improves stop). Allowed changes: a flip
    (binary models); a value within eps levels of the ORIGINAL input (categorical); x_j or
    x_j +- eps of the original (continuous).
    stop_at: a log-likelihood (nats; scalar or per row) at which a row counts as clean and
    is left alone, e.g. a low quantile of the clean validation set's log p: inputs the
    detector would not flag are not changed (None: always use the whole budget).
    Returns (purified x, pixels changed per row).
    """
    kind = _kind(model)
    if kind != "binary" and eps is None:
        raise ValueError(f"purify_greedy: a {kind} model needs eps (how far a pixel may move from the input)")
    x0 = np.asarray(x).astype(np.float64)
    x_now = x0.copy()
    n_levels = getattr(model, "n_levels", None)
    logp = metrics.model_log_likelihoods(model, x_now)
    stop_at = np.full(len(x0), np.inf) if stop_at is None else np.broadcast_to(np.asarray(stop_at, float), len(x0))
    active = logp < stop_at
    for _ in range(int(budget)):
        rows = np.flatnonzero(active)
        if len(rows) == 0:
            break
        pixels, values = _candidates(x_now[rows], x0[rows], kind, eps, n_levels)   # (C,), (r, C)
        r, C = values.shape
        trial = np.repeat(x_now[rows], C, axis=0).reshape(r, C, -1)                # (r, C, D)
        valid = ~np.isnan(values)
        trial[:, np.arange(C), pixels] = np.where(valid, values, trial[:, np.arange(C), pixels])
        scores = np.full((r, C), -np.inf)
        flat = trial[valid]                                                        # only valid candidates
        scores[valid] = metrics.model_log_likelihoods(model, _typed(model, kind, flat), batch_size)
        best = np.argmax(scores, axis=1)                                           # (r,)
        gain = scores[np.arange(r), best] - logp[rows]
        better = gain > 1e-9
        upd = rows[better]
        x_now[upd] = trial[np.flatnonzero(better), best[better]]
        logp[upd] = scores[np.flatnonzero(better), best[better]]
        active[rows[~better]] = False
        active &= logp < stop_at
    changed = (x_now != x0).sum(axis=1)
    return _typed(model, kind, x_now), changed


def purify_pixeldefend(model, x, eps):
    """PixelDefend's purification [2, Algorithm 1]: one pass along the model's ordering.

    For each dimension d in the model's order (raster order for images), with the
    dimensions before d already purified:
        R_d  = { v : |v - x_d| <= eps, v a valid value }          the eps ball (L-infinity) around the input
        x'_d = argmax_{v in R_d} p(x_d = v | x'_<d)                 the most likely value in the ball
    D conditional evaluations in all, each over every candidate value of every row at once.
    For K-level images (categorical models) eps is a whole number of levels; for binary
    images eps = 0 leaves x as it is and eps >= 1 sets each pixel to its most likely value.
    Returns the purified x, of the model's input type.
    """
    kind = _kind(model)
    if kind == "continuous":
        raise ValueError("purify_pixeldefend: Algorithm 1 picks among discrete values; for a model of "
                         "continuous data use purify_greedy")
    if eps is None or int(eps) != eps or eps < 0:
        raise ValueError(f"purify_pixeldefend: eps must be a whole number of levels >= 0, got {eps}")
    x0 = np.asarray(x)
    if x0.ndim != 2:
        raise ValueError(f"purify_pixeldefend: expected images of shape (n, D), got {x0.shape}")
    n_levels = 2 if kind == "binary" else int(model.n_levels)
    offsets = np.arange(-int(eps), int(eps) + 1)                                    # (C,)
    x_now = _typed(model, kind, x0.astype(np.float64))
    n, C = len(x_now), len(offsets)
    for d in queries.ordering(model, x0.shape[1]):
        values = np.rint(x0[:, d:d + 1].astype(np.float64)) + offsets             # (n, C) the ball around x_d
        allowed = (values >= 0) & (values <= n_levels - 1)
        trial = np.repeat(x_now, C, axis=0)                                         # (n C, D)
        trial[:, d] = np.where(allowed, values, 0).reshape(-1)
        log_p = queries.log_conditionals(model, trial)[:, d].reshape(n, C)          # log p(x_d = v | x'_<d)
        log_p[~allowed] = -np.inf
        x_now[:, d] = values[np.arange(n), np.argmax(log_p, axis=1)]
    return x_now


def _kind(model):
    """'binary', 'categorical' or 'continuous': the kind of values the model scores."""
    if model.data_kind == "tokens":
        return "binary" if model.n_levels == 2 else "categorical"
    return model.data_kind


def _typed(model, kind, x):
    if kind == "categorical":
        return np.round(x).astype(np.int64)
    return x.astype(np.float32)


# ------------------------------------------------------------------ the caveat
def bars(n, image_shape=(8, 8), rng=None):
    """A different data set: images holding one full horizontal or vertical bar (binary)."""
    rng = as_rng(rng)
    H, W = image_shape
    x = np.zeros((n, H, W), dtype=np.float32)
    for i in range(n):
        if rng.random() < 0.5:
            x[i, rng.integers(H), :] = 1
        else:
            x[i, :, rng.integers(W)] = 1
    return x.reshape(n, H * W)


def ood_sets(clean, kind="binary", n_levels=17, rng=None, image_shape=(8, 8), train=None):
    """Out-of-distribution sets for the caveat, each with len(clean) rows (same value type):

    blank        every pixel 0 (a blank page)
    inverted     1 - x (binary), K - 1 - x (levels), 1 - x (continuous)
    mirrored     each image flipped left-right: not digits, built from digit strokes
    upside-down  each image flipped top to bottom
    bars         a different data set: one full horizontal or vertical bar per image
    noise        uniform over the values
    average      (needs train) the per-pixel mean of the training images, rounded to the
                 form's values: one image, repeated; no digit of any class
    two-tone     (levels only) a different data set: the digits at only two intensities, 0 and K - 1
    """
    rng = as_rng(rng)
    clean = np.asarray(clean)
    n, D = clean.shape
    H, W = image_shape
    if kind == "binary":
        top, noise = 1.0, (rng.random((n, D)) < 0.5)
    elif kind == "categorical":
        top, noise = n_levels - 1, rng.integers(0, n_levels, (n, D))
    else:
        top, noise = 1.0 - 1e-6, rng.random((n, D))
    images = clean.reshape(n, H, W)
    sets = {"blank": np.zeros_like(clean), "inverted": top - clean,
            "mirrored": images[:, :, ::-1].reshape(n, D), "upside-down": images[:, ::-1, :].reshape(n, D),
            "bars": bars(n, image_shape, rng) * (0.9 if kind == "continuous" else top), "noise": noise}
    if train is not None:
        mean = np.asarray(train, dtype=np.float64).mean(axis=0)
        average = np.round(mean) if kind != "continuous" else mean
        sets["average"] = np.tile(average, (n, 1))
    if kind == "categorical":
        sets["two-tone"] = np.where(clean >= n_levels // 2, n_levels - 1, 0)
    return {name: np.asarray(x).astype(clean.dtype) for name, x in sets.items()}


def caveat_table(models, clean, sets):
    """{set: {model: (mean bits/dim, fraction scored likelier than the median clean input, AUROC)}}.

    An AUROC near 1 means the likelihood flags the set; near 0 (with a high fraction) means the
    model finds the set MORE likely than the data it was trained on.
    """
    out = {}
    clean_scores = {m: bits_per_dim(model, clean) for m, model in models.items()}
    for s, x in sets.items():
        out[s] = {}
        for m, model in models.items():
            scores = bits_per_dim(model, x)
            out[s][m] = (float(scores.mean()), float(np.mean(scores < np.median(clean_scores[m]))),
                         metrics.auroc(clean_scores[m], scores))
    out["clean"] = {m: (float(v.mean()), float(np.mean(v < np.median(v))), metrics.auroc(v, v))
                    for m, v in clean_scores.items()}
    return out
