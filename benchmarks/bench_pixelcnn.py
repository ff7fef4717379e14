"""Forward + backward of the convolution and of a whole PixelCNN: tinyar's four implementations
and PyTorch, side by side.

    flock /tmp/tinyar-heavy.lock python benchmarks/bench_pixelcnn.py [--repeats 7] [--quick]
        [--only conv|models|sampling] [--default-malloc]

Part 1, one convolution y = conv(x, w) + b, then dx, dw, db (float32, batch 64), at the
layer shapes of a PixelCNN on 8x8 digits and on 28x28 images, each implementation of
kernels/conv.py against torch.nn.functional.conv2d with autograd:
  shift        shift-and-GEMM: numba blocks of rows over the cores, BLAS gemm per block (the default)
  shift NumPy  its NumPy twin: one whole-grid BLAS product per tap
  im2col       NumPy stride tricks + one BLAS product
  loops        the direct numba loops (one thread)
Plain rows use the whole kernel on both sides. "mask A"/"mask B" rows are the masked
convolutions the PixelCNN runs: tinyar gets the mask as `taps` and skips the masked-out
taps (the shift implementations skip their work; the others multiply w by the mask), PyTorch
convolves with w * mask (its whole kernel, as a PyTorch PixelCNN does). This table is the
measurement behind kernels/conv.py's choose().

Part 2, the whole model: the mean NLL of a batch of 64 binary images and its gradient
with respect to every parameter, for PixelCNN and GatedPixelCNN at their recipe's size
(32 channels, a 7x7 mask-A layer, four 3x3 layers), tinyar with each implementation
against the same network written in PyTorch (same weights and masks, the same loss checked).

Part 3, sampling: n images (64 by default, --samples) of H x H from PixelCNN and GatedPixelCNN
at their recipe's size (weights as initialised: the time does not depend on them), the cached
sampler (`sample(n)`, each position of each layer computed once) against the reference that
reruns the network over the rows so far for every pixel (`sample(n, cached=False)`). The
reference is timed on fewer images (--uncached-samples, 8 by default) and scaled up to n (its
cost grows about linearly in the batch); the row label says so. One timed run each.

Memory: a step allocates and frees arrays of a few megabytes; with glibc's default malloc,
freed memory at the top of the heap goes back to the OS and the next step faults it in again
page by page. The script first asks glibc (mallopt) to keep freed blocks of up to 32 MB, as
train.fit does in every training run (tinyar.keep_freed_memory), one setting for tinyar and
PyTorch, which share the process; --default-malloc leaves glibc's defaults.

Times are medians of --repeats runs after a warm-up run (numba compiles then). NumPy's BLAS
and PyTorch use both cores; the shift kernels use numba's threads (both cores) with BLAS
held to one thread each, and "shift 1T" the same on one numba thread; the loops use one core.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                                        # noqa: E402  (also puts the repo root on sys.path)

import numba                                         # noqa: E402
import numpy as np                                   # noqa: E402

from tinyar import keep_freed_memory, nn             # noqa: E402
from tinyar.kernels import conv                      # noqa: E402
from tinyar.models import GatedPixelCNN, PixelCNN    # noqa: E402

torch = common.optional_torch()                      # the PyTorch columns are optional
torch_F = torch.nn.functional if torch is not None else None
IMPLS = ["shift", "shift_1t", "shift_numpy", "im2col", "loops"]
NAMES = {"shift": "shift", "shift_1t": "shift 1T", "shift_numpy": "shift NumPy", "im2col": "im2col", "loops": "loops"}


def one_numba_thread(fn):
    """fn on one numba thread (the column "shift 1T": what shift gets when the other core is busy)."""
    def run():
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            fn()
        finally:
            numba.set_num_threads(before)
    return run


def median_ms(fn, repeats):
    return 1e3 * common.median_time(fn, repeats, warmup=1)


# ------------------------------------------------------------------ one convolution
def conv_row(B, C, O, H, k, mask, repeats, rng):
    x = rng.standard_normal((B, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((O, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = np.zeros(O, np.float32)
    dy = rng.standard_normal((B, O, H, H)).astype(np.float32)
    taps = None if mask is None else nn.conv_mask(k, k, mask) > 0

    def tinyar(impl):
        if impl == "shift_1t":
            return one_numba_thread(tinyar("shift"))
        forward, backward = conv.IMPLEMENTATIONS[impl]

        def run():
            forward(x, w, b, taps)
            backward(x, w, dy, taps=taps)
        return run
    what = f"x ({B},{C},{H},{H}) w ({O},{C},{k},{k})" + ("" if mask is None else f" mask {mask}")
    row = dict(shape=what, **{impl: median_ms(tinyar(impl), repeats) for impl in IMPLS})
    if torch is not None:
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        mt = None if mask is None else torch.tensor(nn.conv_mask(k, k, mask).astype(np.float32))
        dyt = torch.tensor(dy)

        def run_torch():
            y = torch_F.conv2d(xt, wt if mt is None else wt * mt, bt, padding=k // 2)
            y.backward(dyt)
            xt.grad = wt.grad = bt.grad = None
        row["torch"] = median_ms(run_torch, repeats)
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
        if impl == "shift_1t":
            return one_numba_thread(tinyar("shift"))

        def run():
            saved = conv.choose                          # fused.conv2d calls conv.choose(): make it pick impl
            conv.choose = lambda name="conv2d": conv.IMPLEMENTATIONS[impl]
            try:
                model.zero_grad()
                model.nll(x).backward()
            finally:
                conv.choose = saved
        return run
    row = dict(shape=f"{cls.__name__} {H}x{H}, {model.n_parameters():,} params",
               **{impl: median_ms(tinyar(impl), repeats) for impl in IMPLS})
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
        row["torch"] = median_ms(run_torch, repeats)
    return row


# ------------------------------------------------------------------ sampling
def sampling_row(cls, H, n, n_uncached):
    """Seconds for n samples of H x H, cached and (timed on n_uncached, scaled to n) uncached."""
    model = cls(H * H, image_shape=(H, H), rng=0, **cls.recipe["model"])
    model.log_prob(np.zeros((1, H * H), np.float32))         # warm-up: numba compiles the convolutions
    cached = common.median_time(lambda: model.sample(n, rng=0), 1, warmup=0)
    uncached = common.median_time(lambda: model.sample(n_uncached, rng=0, cached=False), 1, warmup=0)
    return dict(what=f"{cls.__name__} {H}x{H}, {n} samples (uncached: {n_uncached}, x {n / n_uncached:g})",
                cached=cached, uncached=uncached * n / n_uncached)


def print_sampling_table(rows):
    print("\nsampling: seconds for the samples (one run each)")
    print(f"| {'what':<62} | cached s | uncached s | uncached / cached |")
    print(f"|{'-' * 64}|----------|------------|-------------------|")
    for r in rows:
        print(f"| {r['what']:<62} | {r['cached']:8.2f} | {r['uncached']:10.2f} | {r['uncached'] / r['cached']:17.1f} |")


def print_table(title, rows):
    print(f"\n{title}")
    has_torch = "torch" in rows[0]
    head = f"| {'what':<46} |" + "".join(f" {NAMES[i] + ' ms':>14} |" for i in IMPLS) + (
        " PyTorch ms | shift / PyTorch | best NumPy / PyTorch |" if has_torch else "")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        line = f"| {r['shape']:<46} |" + "".join(f" {r[i]:14.2f} |" for i in IMPLS)
        if has_torch:
            numpy_best = min(r["shift_numpy"], r["im2col"])
            line += f" {r['torch']:10.2f} | {r['shift'] / r['torch']:15.2f} | {numpy_best / r['torch']:20.2f} |"
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description="PixelCNN benchmark: convolution and whole model, fwd + bwd.")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="8x8 rows only, 3 repeats")
    parser.add_argument("--samples", type=int, default=64, help="images per sampling row")
    parser.add_argument("--uncached-samples", type=int, default=8, help="images the uncached sampler is timed on")
    parser.add_argument("--only", choices=["conv", "models", "sampling"], help="one part of the benchmark")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc settings alone")
    args = parser.parse_args(argv)
    kept = not args.default_malloc and keep_freed_memory()
    repeats = 3 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    versions = f"NumPy {np.__version__}, numba {numba.__version__} ({numba.get_num_threads()} threads)" + (
        f", PyTorch {torch.__version__} ({torch.get_num_threads()} threads)" if torch is not None
        else ", PyTorch not installed")
    print(f"{platform.machine()}, Python {platform.python_version()}, {versions}; float32, batch 64; "
          f"median of {repeats}; load average {os.getloadavg()[0]:.1f}; malloc: "
          + ("freed blocks up to 32 MB kept (mallopt)" if kept else "glibc's defaults"))
    sizes = [8] if args.quick else [8, 28]
    conv_shapes = [(1, 32, 7, None), (32, 32, 3, None), (32, 32, 1, None), (64, 64, 3, None),
                   (1, 32, 7, "A"), (32, 32, 3, "B")]
    if args.only in (None, "conv"):
        rows = [conv_row(64, C, O, H, k, mask, repeats, rng) for H in sizes for C, O, k, mask in conv_shapes]
        print_table("conv2d forward + backward (dx, dw, db)", rows)
    if args.only in (None, "models"):
        rows = [model_row(cls, H, repeats, rng) for H in sizes for cls in (PixelCNN, GatedPixelCNN)]
        print_table("whole model: mean NLL of 64 binary images + gradient of every parameter", rows)
    if args.only in (None, "sampling"):
        rows = [sampling_row(cls, H, args.samples, min(args.uncached_samples, args.samples))
                for H in sizes for cls in (PixelCNN, GatedPixelCNN)]
        print_sampling_table(rows)


if __name__ == "__main__":
    main()
