"""Stochastic gradient descent, gradient clipping and learning-rate schedules.

SGD with momentum mu, weight decay lambda and learning rate eta (lr), per parameter p
with gradient g (the same conventions as PyTorch's torch.optim.SGD), plus an L1 penalty
lambda_1 |p|_1 (not an option of PyTorch's SGD):

    g <- g + lambda p                       weight decay (L2 penalty lambda/2 |p|^2)
    g <- g + lambda_1 sign(p)               L1 penalty (its subgradient; sign(0) = 0)
    v <- mu v + g                           velocity (v = g on the first step)
    p <- p - eta v                          classical momentum
    p <- p - eta (g + mu v)                 Nesterov momentum

The L1 term is a subgradient step: it pulls a weight towards 0 but does not make it exactly
0 (a weight the data does not need ends up hovering within about eta lambda_1 of 0).

Every setting is checked where it enters (check_setting): a learning rate that is not a
finite positive number, momentum outside [0, 1), a negative weight decay or L1 weight, a clip norm
<= 0 would not fail loudly, they would train wrongly (clip -1 flips every gradient into
ascent, clip 0 freezes the model, momentum >= 1 lets the velocity grow without bound).
"""
from __future__ import annotations

import math

import numpy as np

from tinyar.checks import check_count, check_setting
from tinyar.kernels import sgd


class SGD:
    """Minibatch SGD with momentum, Nesterov momentum, weight decay and an L1 penalty over a list
    of Parameters.

    lr > 0, 0 <= momentum < 1, weight_decay >= 0 and l1 >= 0, all finite; anything else is a ValueError.
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, l1=0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: got an empty parameter list")
        self.lr = check_setting("SGD", "lr", lr, 0, low_allowed=False)
        self.momentum = check_setting("SGD", "momentum", momentum, 0, 1)
        self.weight_decay = check_setting("SGD", "weight_decay", weight_decay, 0)
        self.l1 = check_setting("SGD", "l1", l1, 0)
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        self.nesterov = nesterov
        self.velocity = [None] * len(self.params)
        self._scratch = [None] * len(self.params)    # per parameter: an array for lr * g, reused every step

    def step(self):
        """Update every parameter that has a gradient, by the equations of the module docstring."""
        for k, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data                    # g <- g + lambda p
            if self.l1:
                g = g + self.l1 * np.sign(p.data)                     # g <- g + lambda_1 sign(p)
            if self.momentum:
                v = self.velocity[k]
                if v is None:
                    v = self.velocity[k] = g.copy()                   # v = g on the first step
                elif self._momentum_in_one_pass(p, v, g):
                    continue                                          # the two updates, done by the kernel
                else:
                    v *= self.momentum                                # v <- mu v + g, in place
                    v += g                                            # (v is the optimizer's own array)
                g = g + self.momentum * v if self.nesterov else v     # Nesterov: g + mu v;  classical: v
            self._descend(k, p, g)                                    # p <- p - eta g

    def _descend(self, k, p, g):
        """p <- p - eta g, with eta g written into an array kept for this parameter (not a fresh one)."""
        update = self._scratch[k]
        if update is None or update.shape != p.shape or update.dtype != p.dtype:
            update = self._scratch[k] = np.empty_like(p.data)
        np.multiply(g, self.lr, out=update)
        p.data -= update

    def _momentum_in_one_pass(self, p, v, g):
        """Classical momentum after the first step, v <- mu v + g then p <- p - eta v, as one
        compiled pass over the arrays (kernels/sgd.py), with the same numbers as step()'s lines.
        Returns False, having done nothing, where step() does it itself: Nesterov momentum,
        TINYAR_KERNELS=numpy, or arrays the kernel does not take (kernels.sgd.choose)."""
        if self.nesterov:
            return False
        update = sgd.choose("sgd_momentum_update", p.data, v, g)
        if update is sgd.sgd_momentum_update_numpy:
            return False                                              # the twin is step()'s own lines
        update(p.data, v, g, p.dtype.type(self.lr), p.dtype.type(self.momentum))
        return True

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def state_dict(self):
        # copies both ways: step() updates the velocity in place
        return {f"velocity.{k}": v.copy() for k, v in enumerate(self.velocity) if v is not None}

    def load_state_dict(self, state):
        self.velocity = [None if state.get(f"velocity.{k}") is None else np.array(state[f"velocity.{k}"])
                         for k in range(len(self.params))]


def clip_grad_norm_(params, max_norm):
    """Scale all gradients by min(1, max_norm / ||g||), ||g|| the norm of all of them together.

    Returns ||g|| before clipping. max_norm must be a finite number > 0.
    """
    max_norm = check_setting("clip_grad_norm_", "max_norm", max_norm, 0, low_allowed=False)
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-12)
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * np.asarray(scale, dtype=p.grad.dtype)
    return total


class StepLR:
    """lr = base_lr * gamma^(floor(epoch / step_size)); call step() once per epoch."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        check_count("StepLR", "step_size", step_size)
        gamma = check_setting("StepLR", "gamma", gamma, 0, low_allowed=False)
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base_lr, self.epoch = optimizer.lr, 0

    def step(self):
        self.epoch += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.epoch // self.step_size)


class CosineLR:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_lr` at `total` steps.

    lr(t) = base_lr * (t + 1) / warmup                                        t < warmup
    lr(t) = min_lr + (base_lr - min_lr) (1 + cos(pi (t - warmup) / (total - warmup))) / 2
    """

    def __init__(self, optimizer, total, warmup=0, min_lr=0.0):
        check_count("CosineLR", "total", total)
        check_count("CosineLR", "warmup", warmup, at_least=0)
        min_lr = check_setting("CosineLR", "min_lr", min_lr, 0)
        if total <= warmup:
            raise ValueError(f"CosineLR: total ({total}) must exceed warmup ({warmup})")
        self.optimizer, self.total, self.warmup, self.min_lr = optimizer, total, warmup, min_lr
        self.base_lr, self.t = optimizer.lr, 0
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, t):
        if t < self.warmup:
            return self.base_lr * (t + 1) / self.warmup
        progress = min(1.0, (t - self.warmup) / (self.total - self.warmup))
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self):
        self.t += 1
        self.optimizer.lr = self.lr_at(self.t)
