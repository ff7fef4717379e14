"""A two-layer MLP classifier on scikit-learn's digits, trained 20 SGD steps with
tinyar, against the same network's forward and backward pass written by hand in
NumPy: losses, gradients and weights agree to 1e-9 at every step (float64)."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tinyar import Tensor, functional as F, ops
from tinyar.nn import Linear, Module
from tinyar.optim import SGD

LR, MOMENTUM, BATCH, STEPS, HIDDEN = 0.3, 0.9, 64, 20, 32


class MLP(Module):
    def __init__(self, rng):
        self.hidden = Linear(64, HIDDEN, rng=rng, dtype=np.float64)
        self.out = Linear(HIDDEN, 10, rng=rng, dtype=np.float64)
        self.out.bias.data[...] = rng.uniform(-0.1, 0.1, 10)     # non-zero, to test the bias paths too

    def forward(self, x):
        return self.out(ops.relu(self.hidden(x)))


def numpy_step(W1, b1, W2, b2, x, y):
    """Loss and gradients of mean cross-entropy of softmax(relu(x W1^T + b1) W2^T + b2), by hand."""
    B = len(x)
    a = x @ W1.T + b1                                  # (B, H)
    h = np.maximum(a, 0.0)                             # (B, H)
    z = h @ W2.T + b2                                  # (B, 10)
    m = z.max(axis=1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(B), y].mean()
    dz = np.exp(logp)                                  # dL/dz = (softmax(z) - onehot(y)) / B
    dz[np.arange(B), y] -= 1.0
    dz /= B
    dW2, db2 = dz.T @ h, dz.sum(axis=0)
    dh = dz @ W2                                       # (B, H)
    da = dh * (a > 0)                                  # relu'
    dW1, db1 = da.T @ x, da.sum(axis=0)
    return loss, [dW1, db1, dW2, db2]


def test_mlp_matches_hand_written_numpy_step_by_step():
    digits = load_digits()
    X, Y = digits.data / 16.0, digits.target
    rng = np.random.default_rng(0)
    model = MLP(rng)
    params = [model.hidden.weight, model.hidden.bias, model.out.weight, model.out.bias]
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    weights = [p.data.copy() for p in params]           # the NumPy copy of the network
    velocity = [np.zeros_like(w) for w in weights]
    opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    losses = []
    for step in range(STEPS):
        idx = rng.choice(len(X), BATCH, replace=False)
        x, y = X[idx], Y[idx]

        opt.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), y).mean()
        loss.backward()
        opt.step()

        np_loss, grads = numpy_step(*weights, x, y)
        for k, g in enumerate(grads):                   # v <- mu v + g;  w <- w - lr v
            velocity[k] = MOMENTUM * velocity[k] + g
            weights[k] = weights[k] - LR * velocity[k]

        assert loss.item() == pytest.approx(np_loss, abs=1e-9), f"step {step}: loss"
        for p, g, w in zip(params, grads, weights):
            assert np.max(np.abs(p.grad - g)) < 1e-9, f"step {step}: gradient of shape {p.shape}"
            assert np.max(np.abs(p.data - w)) < 1e-9, f"step {step}: weights of shape {p.shape}"
        losses.append(np_loss)

    assert losses[0] > 2.0                              # about log 10 at the start
    assert np.mean(losses[-5:]) < 0.6 * losses[0]       # and it learns
