"""FVSBN: the fully visible sigmoid belief network, one logistic regression per dimension.

    p(x) = prod_{k=1..D} p(x_{o_k} | x_{o_1}, ..., x_{o_{k-1}})          x in {0, 1}^D
    p(x_i = 1 | x_<i) = sigma(b_i + sum_{j<i} W_ij x_j)

where "<i" means "before i in the ordering o" (the natural order 0, 1, ..., D-1 by
default, any permutation if asked). In the natural order W is strictly
lower-triangular; in general W_ij may be non-zero only when j comes before i:

    M_ij = 1 if rank(j) < rank(i) else 0        (rank = position in the ordering)

    natural order, D = 4: M =  0 0 0 0
                               1 0 0 0
                               1 1 0 0
                               1 1 1 0

All D logits come from one masked matrix product, so the log-likelihood of a batch
is a single pass:

    logits = x (W * M)^T + b                                   (B, D)
    log p(x) = sum_i [x_i logits_i - softplus(logits_i)]       (Bernoulli, stably)

Parameters: W (D, D) and b (D,): D^2 + D stored (n_parameters()), of which D(D-1)/2 + D
= D(D+1)/2 are free, i.e. can change p(x) (n_parameters(free=True): W's masked-out entries
are stored but never used). D = 64: 4,160 stored, 2,080 free. O(D^2) either way.
Cost: log p(x) is O(D^2) per example (one matmul); a sample is D steps, the k-th a
dot product of length D: O(D^2) in all, but sequential.

Training: the class attribute `recipe`; the test likelihood it reaches, beside a PyTorch
FVSBN's, is in the README's results table (README.md, "Results").

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models (FVSBN).
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] B. Frey. Graphical models for machine learning and digital communication. MIT Press, 1998.
    [3] R. Neal. Connectionist learning of belief networks. Artificial Intelligence 56, 1992.
"""
from __future__ import annotations

import numpy as np

from tinyar import ops
from tinyar.distributions import Bernoulli
from tinyar.checks import check_n_samples
from tinyar.models.base import AutoregressiveModel, resolve_order
from tinyar.nn import Parameter
from tinyar.rng import as_rng
from tinyar.tensor import Tensor, no_grad


class FVSBN(AutoregressiveModel):
    """Fully visible sigmoid belief network over {0, 1}^D.

    n_dims:    D
    order:     None (natural), "random" (drawn from rng), or a permutation of 0..D-1
    init_std:  W ~ N(0, init_std^2) on its used (masked-in) entries; 0 = zero init
    """
    data_kind = "binary"
    recipe = dict(lr=0.03, momentum=0.9, batch_size=100, epochs=200, model=dict(init_std=0.0))
    # binarized MNIST (--data mnist): the best of the runs tried, with an L1 penalty (SGD's l1);
    # its figures are in the README
    recipes = {"mnist": dict(lr=0.03, momentum=0.9, batch_size=100, epochs=60, schedule="cosine", l1=1e-4,
                             model=dict(init_std=0.0))}

    def __init__(self, n_dims, order=None, init_std=0.0, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.n_dims = D = int(n_dims)
        if D < 1:
            raise ValueError(f"FVSBN: n_dims must be >= 1, got {n_dims}")
        self.order = resolve_order(order, D, rng)               # (D,)  o_k: the dimension at step k
        rank = np.empty(D, dtype=np.int64)
        rank[self.order] = np.arange(D)                          # rank[i]: the step at which x_i is drawn
        self.mask = (rank[None, :] < rank[:, None]).astype(dtype)   # (D, D)  M_ij = [rank j < rank i]
        self.W = Parameter(rng.standard_normal((D, D)) * init_std * self.mask, dtype=dtype)
        self.b = Parameter(np.zeros(D), dtype=dtype)
        self.config = dict(n_dims=D, order=self.order.tolist(), init_std=float(init_std),
                           dtype=np.dtype(dtype).name)

    def weight_masks(self):
        """W is used as W * M (n_parameters(free=True) counts M's D(D - 1)/2 ones)."""
        return {"W": self.mask}

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        cls.require_kind(dataset, "binary", "FVSBN", "use data.digits(form='binary')")
        return cls(dataset.n_dims, rng=rng, **kwargs)

    def logits(self, x):
        """(B, D) logits of p(x_i = 1 | x_<i), for every i at once."""
        M = Tensor(self.mask.astype(self.W.dtype, copy=False))
        return ops.matmul(x, ops.transpose(self.W * M)) + self.b    # (B, D)   x (W * M)^T + b

    def log_prob(self, x):
        """Tensor (B,): log p(x) = sum_i [x_i logits_i - softplus(logits_i)], all D logits from one matmul."""
        x = self.check_input(x)
        xt = Tensor(x.astype(self.W.dtype))                          # (B, D)
        return Bernoulli(self.logits(xt)).log_prob(x).sum(axis=1)    # (B,)

    def conditionals(self, x):
        """(B, D) array of p(x_i = 1 | x_<i) (no graph)."""
        x = self.check_input(x)
        with no_grad():
            return ops.stable_sigmoid(self.logits(Tensor(x.astype(self.W.dtype))).data)

    def sample(self, n, rng=None):
        """n samples (n, D), drawn in D steps along the ordering."""
        rng = as_rng(rng)
        n = check_n_samples(n, "FVSBN")
        W = self.W.data * self.mask                                  # (D, D)
        b = self.b.data
        x = np.zeros((n, self.n_dims), dtype=self.W.dtype)
        for i in self.order:
            p = ops.stable_sigmoid(x @ W[i] + b[i])                  # (n,)  sigma(b_i + sum_{j<i} W_ij x_j)
            x[:, i] = rng.random(n) < p
        return x

    @classmethod
    def gradcheck_example(cls):
        rng = np.random.default_rng(0)
        model = cls(5, order="random", init_std=0.5, rng=rng, dtype=np.float64)
        model.b.data[...] = rng.standard_normal(5)
        x = (rng.random((4, 5)) < 0.5).astype(np.float64)
        return model, x
