"""Forward + backward of the convolution and of a whole PixelCNN: im2col, numba and PyTorch, side by side.

    flock /tmp/tinyar-heavy.lock python benchmarks/bench_pixelcnn.py [--repeats 5] [--quick]

Part 1, one convolution y = conv(x, w) + b, then dx, dw, db (float32, batch 64), at the
layer shapes of a PixelCNN on 8x8 digits and on 28x28 images: the im2col twin
(NumPy stride tricks + one BLAS matrix product), the numba loops, and
torch.nn.functional.conv2d with autograd. This table chooses kernels/conv.py's DEFAULT.

Part 2, the whole model: the mean NLL of a batch of 64 binary images and its gradient
with respect to every parameter, for PixelCNN and GatedPixelCNN at their recipe's size
(32 channels, a 7x7 mask-A layer, four 3x3 layers), tinyar with each convolution
against the same network written in PyTorch (same weights and masks).

Times are the fastest of --repeats runs after one warm-up run (numba compiles then): on a
shared machine the minimum is the least disturbed estimate. NumPy's BLAS and PyTorch use
every core; the numba loops use one; the column "im2col 1T" limits BLAS to one thread
(threadpoolctl), which is what im2col gets when other processes keep the cores busy:
a multi-threaded BLAS then waits on its own threads and can be several times slower.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                                        # noqa: E402  (also puts the repo root on sys.path)

import numpy as np                                   # noqa: E402
from threadpoolctl import threadpool_limits          # noqa: E402

from tinyar.kernels import conv                      # noqa: E402
from tinyar.models import GatedPixelCNN, PixelCNN    # noqa: E402

torch = common.optional_torch()                      # the PyTorch columns are optional
torch_F = torch.nn.functional if torch is not None else None


def best_ms(fn, repeats):
    fn()                                             # warm-up (and numba's compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.min(times))


def one_blas_thread(fn):
    def run():
        with threadpool_limits(limits=1, user_api="blas"):
            fn()
    return run


# ------------------------------------------------------------------ one convolution
def conv_row(B, C, O, H, k, repeats, rng):
    x = rng.standard_normal((B, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((O, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = np.zeros(O, np.float32)
    dy = rng.standard_normal((B, O, H, H)).astype(np.float32)

    def tinyar(forward, backward):
        def run():
            forward(x, w, b)
            backward(x, w, dy)
        return run
    im2col = tinyar(conv.conv2d_forward_numpy, conv.conv2d_backward_numpy)
    row = dict(shape=f"x ({B},{C},{H},{H}) w ({O},{C},{k},{k})", im2col=best_ms(im2col, repeats),
               im2col_1t=best_ms(one_blas_thread(im2col), repeats),
               numba=best_ms(tinyar(conv.conv2d_forward_numba, conv.conv2d_backward_numba), repeats))
    if torch is not None:
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        dyt = torch.tensor(dy)

        def run_torch():
            y = torch_F.conv2d(xt, wt, bt, padding=k // 2)
            y.backward(dyt)
            xt.grad = wt.grad = bt.grad = None
        row["torch"] = best_ms(run_torch, repeats)
    return row


# ------------------------------------------------------------------ the whole model
class TorchMaskedConv(object):
    """The same masked convolution in PyTorch, holding a copy of a tinyar MaskedConv2d's weights."""

    def __init__(self, layer):
        self.weight = torch.tensor(layer.weight.data.copy(), requires_grad=True)
        self.bias = torch.tensor(layer.bias.data.copy(), requires_grad=True)
        self.mask = torch.tensor(layer.mask.copy())
        self.padding = (layer.mask.shape[0] // 2, layer.mask.shape[1] // 2)

    def __call__(self, x):
        return torch_F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def torch_model(model):
    """A function image (B, 1, H, W) -> logits (B, 1, H, W): the same network as `model`, in PyTorch."""
    out_hidden, out_logits = TorchMaskedConv(model.out_hidden), TorchMaskedConv(model.out_logits)
    head = lambda h: out_logits(torch.relu(out_hidden(torch.relu(h))))        # noqa: E731
    if isinstance(model, PixelCNN):
        conv_in = TorchMaskedConv(model.conv_in)
        layers = [TorchMaskedConv(layer) for layer in model.layers]

        def forward(x):
            h = conv_in(x)
            for layer in layers:
                h = h + layer(torch.relu(h))
            return head(h)
        return forward
    gated = [(TorchMaskedConv(l.vertical), TorchMaskedConv(l.horizontal), TorchMaskedConv(l.vertical_to_horizontal),
              TorchMaskedConv(l.horizontal_out), l.first, l.n_channels) for l in model.layers]

    def forward(x):
        v = h = x
        for vertical, horizontal, v_to_h, h_out, first, C in gated:
            zv = vertical(v)
            shifted = torch_F.pad(zv, (0, 0, 1, 0))[:, :, :-1, :]
            zh = horizontal(h) + v_to_h(shifted)
            h_next = h_out(torch.tanh(zh[:, :C]) * torch.sigmoid(zh[:, C:]))
            h = h_next if first else h_next + h
            v = torch.tanh(zv[:, :C]) * torch.sigmoid(zv[:, C:])
        return head(h)
    return forward


def model_row(cls, H, repeats, rng):
    model = cls(H * H, image_shape=(H, H), rng=0, **cls.recipe["model"])
    x = (rng.random((64, H * H)) < 0.3).astype(np.float32)

    def tinyar(impl):
        def run():
            saved = conv.DEFAULT
            conv.DEFAULT = impl
            try:
                model.zero_grad()
                model.nll(x).backward()
            finally:
                conv.DEFAULT = saved
        return run
    row = dict(shape=f"{cls.__name__} {H}x{H}, {model.n_parameters():,} params",
               im2col=best_ms(tinyar("im2col"), repeats), im2col_1t=best_ms(one_blas_thread(tinyar("im2col")), repeats),
               numba=best_ms(tinyar("numba"), repeats))
    if torch is not None:
        forward = torch_model(model)
        xt = torch.tensor(x.reshape(64, 1, H, H))
        # same loss: the same numbers as tinyar's
        with torch.no_grad():
            ours = float(model.nll(x).data)
            theirs = float(torch_F.binary_cross_entropy_with_logits(forward(xt), xt, reduction="sum") / 64)
        assert abs(ours - theirs) < 1e-3 * abs(ours), (ours, theirs)

        def run_torch():
            loss = torch_F.binary_cross_entropy_with_logits(forward(xt), xt, reduction="sum") / 64
            loss.backward()
        row["torch"] = best_ms(run_torch, repeats)
    return row


def print_table(title, rows):
    print(f"\n{title}")
    has_torch = "torch" in rows[0]
    head = f"| {'what':<44} | im2col ms | im2col 1T ms | numba ms |" + (
        " PyTorch ms | im2col / PyTorch | im2col 1T / PyTorch | numba / PyTorch |" if has_torch else "")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        line = f"| {r['shape']:<44} | {r['im2col']:9.2f} | {r['im2col_1t']:12.2f} | {r['numba']:8.2f} |"
        if has_torch:
            line += (f" {r['torch']:10.2f} | {r['im2col'] / r['torch']:16.2f} | "
                     f"{r['im2col_1t'] / r['torch']:19.2f} | {r['numba'] / r['torch']:15.2f} |")
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description="PixelCNN benchmark: convolution and whole model, fwd + bwd.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="8x8 rows only, 2 repeats")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    versions = f"NumPy {np.__version__}" + (f", PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
                                            if torch is not None else ", PyTorch not installed")
    print(f"{platform.machine()}, Python {platform.python_version()}, {versions}; float32, batch 64; "
          f"fastest of {repeats}")
    sizes = [8] if args.quick else [8, 28]
    conv_shapes = [(1, 32, 7), (32, 32, 3), (32, 32, 1), (64, 64, 3)]
    rows = [conv_row(64, C, O, H, k, repeats, rng) for H in sizes for C, O, k in conv_shapes]
    print_table("conv2d forward + backward (dx, dw, db)", rows)
    rows = [model_row(cls, H, repeats, rng) for H in sizes for cls in (PixelCNN, GatedPixelCNN)]
    print_table("whole model: mean NLL of 64 binary images + gradient of every parameter", rows)


if __name__ == "__main__":
    main()
