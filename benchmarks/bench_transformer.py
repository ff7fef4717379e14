"""Transformer speed: forward + backward of a small GPT against PyTorch, and KV-cached sampling.

    python benchmarks/bench_transformer.py [--default-malloc]     (under a minute; run alone:
    flock /tmp/tinyar-heavy.lock python benchmarks/bench_transformer.py)
    python benchmarks/bench_transformer.py --fresh tinyar|torch|torch-sdpa --threads 1|2 [--blas 1|2]
                                                        (one side's model step alone, see below)
    python benchmarks/bench_transformer.py --pixels [--fresh ...]
                                                        (the same at 784 pixels, see below)

1. Causal attention alone, forward + backward, q, k, v of shape (B, H, T, d) = (32, 4, 128, 32):
   the fused op with numba kernels, the same op on its NumPy twins, the op built from
   primitives (models.transformer.causal_attention_composite), and PyTorch (masked softmax; and
   scaled_dot_product_attention).
2. The whole model, forward + backward of the mean NLL: 2 blocks, 4 heads, d_model 128,
   MLP 512, B = 32, T = 128, vocabulary 96, float32. Same variants, and on 2 threads tinyar
   with NumPy's BLAS held to one thread (numba's kernels keep two).
3. Sampling 256 tokens for 8 sequences: with the key/value cache (O(t) per new token)
   against recomputing the whole prefix at every step (O(t^2)).

Tables 1 and 2 run twice: with BLAS, numba and PyTorch on 1 thread, then on 2 (threadpoolctl,
which scikit-learn installs, and numba.set_num_threads). The load average
is printed: on a shared machine, other processes' threads distort the 2-thread figures most.

Memory. A step allocates and frees ~100 MB of arrays of up to 8 MB. By default glibc's
malloc returns freed memory at the top of its heap to the OS, and the next step then
faults it back in page by page (~20,000 page faults, 30-45 ms per tinyar step; PyTorch
pays too) -- unless some earlier free of a big block has raised glibc's thresholds,
so the same code runs fast or slow depending on the process's history. The script
therefore first asks glibc (mallopt) to keep freed blocks of up to 32 MB for reuse, as
train.fit does in every training run (tinyar.keep_freed_memory), the same setting for
tinyar and PyTorch, which share this process; --default-malloc
leaves glibc's defaults. The model table prints the page faults per step. --fresh SIDE
times only that side's model step (torch: masked softmax; torch-sdpa:
scaled_dot_product_attention), first thing in a process with glibc's defaults: what a
program that does nothing else gets (run it once per side and thread count), and the
step's peak memory above what the process held before it; --blas N holds BLAS to N
threads instead of --threads (tinyar's numba kernels keep --threads).

--pixels: the shapes of the Transformer over binarized MNIST's 28x28 pixels in raster
order, the default model (2 blocks, 4 heads, d_model 64, MLP 256) on binary tokens, B = 20,
T = 784 (attention alone: (B, H, T, d) = (20, 4, 784, 16)); sampling is left out.

Medians of repeated runs after a warm-up (numba compiles on the first call).
"""
from __future__ import annotations

import functools
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                                       # noqa: E402  (also puts the repo root on sys.path)
from common import kernels                          # noqa: E402

import numpy as np                                  # noqa: E402

from tinyar import fused, keep_freed_memory, ops           # noqa: E402
from tinyar.models import Transformer               # noqa: E402
from tinyar.models.transformer import causal_attention_composite   # noqa: E402
from tinyar.tensor import Tensor                    # noqa: E402

torch = common.optional_torch()                     # the PyTorch columns are optional

B, H, T, C, D_MLP, V, LAYERS = 32, 4, 128, 128, 512, 96, 2
PIXELS = dict(B=20, H=4, T=784, C=64, D_MLP=256, V=2, LAYERS=2)      # --pixels: binarized MNIST's shapes


median_time = functools.partial(common.median_time, repeat=7, warmup=2)


def timed_with_faults(step, repeat=7, warmup=2):
    """(median seconds, minor page faults per call) of step()."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = median_time(step, repeat=repeat, warmup=warmup)
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (repeat + warmup)


# ---------------------------------------------------------------- attention only
def tinyar_attention_step(attend, q, k, v, dy):
    def step():
        qt, kt, vt = (Tensor(a, requires_grad=True) for a in (q, k, v))
        attend(qt, kt, vt).backward(dy)
    return step


def torch_attention_step(q, k, v, dy, sdpa):
    q, k, v, dy = (torch.from_numpy(a) for a in (q, k, v, dy))
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)

    def step():
        qt, kt, vt = (a.clone().requires_grad_() for a in (q, k, v))
        if sdpa:
            y = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
        else:
            S = (qt @ kt.transpose(-1, -2)) / (qt.shape[-1] ** 0.5)
            y = torch.softmax(S.masked_fill(mask, float("-inf")), dim=-1) @ vt
        y.backward(dy)
    return step


# ------------------------------------------------------------------- whole model
def tinyar_model_step(model, x):
    def step():
        model.zero_grad()
        model.nll(x).backward()
    return step


def torch_model(sdpa):
    """The same network in PyTorch: pre-LN blocks, learned positions, start token, tanh GELU."""
    F = torch.nn.functional

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(C), torch.nn.LayerNorm(C)
            self.qkv, self.proj = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C)
            self.fc1, self.fc2 = torch.nn.Linear(C, D_MLP), torch.nn.Linear(D_MLP, C)
            self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, H, c // H).permute(2, 0, 3, 1, 4)   # (B, H, T, d) each
            if sdpa:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                S = (q @ k.transpose(-1, -2)) / (c // H) ** 0.5
                y = torch.softmax(S.masked_fill(self.mask, float("-inf")), dim=-1) @ v
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class GPT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = torch.nn.Embedding(V + 1, C), torch.nn.Embedding(T, C)
            self.blocks = torch.nn.ModuleList([Block() for _ in range(LAYERS)])
            self.ln_f, self.head = torch.nn.LayerNorm(C), torch.nn.Linear(C, V)

        def nll(self, x):
            inputs = torch.cat([torch.full((x.shape[0], 1), V), x[:, :-1]], dim=1)
            h = self.tok(inputs) + self.pos(torch.arange(x.shape[1]))
            for block in self.blocks:
                h = block(h)
            logits = self.head(self.ln_f(h))
            return F.cross_entropy(logits.reshape(-1, V), x.reshape(-1), reduction="sum") / x.shape[0]

    return GPT()


def torch_model_step(model, x):
    x = torch.from_numpy(x)

    def step():
        model.zero_grad()
        model.nll(x).backward()
    return step


def table(title, rows, reference, faults=None):
    """rows: (name, seconds); faults: optional {name: page faults per step}, printed as a column."""
    print(f"\n{title}")
    print(f"{'what':<44} {'median ms':>10} {'x ' + reference:>12}" + ("  faults/step" if faults else ""))
    ref = dict(rows).get(reference)
    for name, seconds in rows:
        ratio = f"{seconds / ref:12.2f}" if ref else f"{'':>12}"
        print(f"{name:<44} {seconds * 1e3:10.1f} {ratio}" + (f" {faults[name]:12,.0f}" if faults else ""))


def compare(threads, rng):
    """Tables 1 and 2 with BLAS, numba (and PyTorch) limited to `threads` threads."""
    print(f"\n=== {threads} thread{'s' if threads > 1 else ''} (BLAS, numba and PyTorch) ===")
    set_numba_threads(threads)
    if torch:
        torch.set_num_threads(threads)
    # 1. attention alone
    q, k, v, dy = (rng.standard_normal((B, H, T, C // H)).astype(np.float32) for _ in range(4))
    rows = []
    with kernels("numba"):
        rows.append(("tinyar fused op, numba kernels",
                     median_time(tinyar_attention_step(fused.causal_attention, q, k, v, dy))))
    with kernels("numpy"):
        rows.append(("tinyar fused op, NumPy twins",
                     median_time(tinyar_attention_step(fused.causal_attention, q, k, v, dy))))
    rows.append(("tinyar from primitives",
                 median_time(tinyar_attention_step(causal_attention_composite, q, k, v, dy))))
    if torch:
        rows.append(("PyTorch, masked softmax", median_time(torch_attention_step(q, k, v, dy, sdpa=False))))
        rows.append(("PyTorch, scaled_dot_product_attention",
                     median_time(torch_attention_step(q, k, v, dy, sdpa=True))))
    table(f"causal attention, forward + backward, q, k, v (B, H, T, d) = ({B}, {H}, {T}, {C // H}), float32",
          rows, "PyTorch, masked softmax" if torch else "tinyar fused op, numba kernels")

    # 2. the whole model
    x = rng.integers(0, V, (B, T))
    options = dict(max_len=T, n_layers=LAYERS, d_model=C, n_heads=H, d_mlp=D_MLP, rng=0)
    one_op, plain = Transformer(V, fused=True, **options), Transformer(V, fused=False, **options)
    runs = []
    with kernels("numba"):
        runs.append(("tinyar, fused ops on numba kernels", timed_with_faults(tinyar_model_step(one_op, x))))
        if isinstance(threads, int) and threads > 1:    # NumPy's BLAS on one thread, numba's kernels on two
            from threadpoolctl import threadpool_limits
            with threadpool_limits(limits=1, user_api="blas"):
                runs.append(("tinyar, numba kernels, NumPy's BLAS on 1", timed_with_faults(tinyar_model_step(one_op, x))))
    with kernels("numpy"):
        runs.append(("tinyar, fused ops on NumPy twins", timed_with_faults(tinyar_model_step(one_op, x))))
    runs.append(("tinyar, every layer from primitives", timed_with_faults(tinyar_model_step(plain, x), repeat=3)))
    if torch:
        torch.manual_seed(0)
        runs.append(("PyTorch, masked softmax", timed_with_faults(torch_model_step(torch_model(False), x))))
        runs.append(("PyTorch, scaled_dot_product_attention",
                     timed_with_faults(torch_model_step(torch_model(True), x))))
    table(f"Transformer forward + backward: {LAYERS} blocks, {H} heads, d_model {C}, MLP {D_MLP}, "
          f"B {B}, T {T}, V {V}, float32", [(name, seconds) for name, (seconds, _) in runs],
          "PyTorch, masked softmax" if torch else "tinyar, fused ops on numba kernels",
          faults={name: faults for name, (_, faults) in runs})


def set_numba_threads(threads):
    """numba's threads for the compiled kernels (attention runs on them), at most the pool's size."""
    import numba
    if isinstance(threads, int):                        # not "default" (no threadpoolctl)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def fresh(side, threads, blas):
    """The whole-model step of one side alone, first thing in this process, glibc's default malloc;
    BLAS on `blas` threads."""
    from threadpoolctl import threadpool_limits
    x = np.random.default_rng(0).integers(0, V, (B, T))
    if side == "tinyar":
        set_numba_threads(threads)
        step = tinyar_model_step(Transformer(V, max_len=T, n_layers=LAYERS, d_model=C, n_heads=H,
                                             d_mlp=D_MLP, rng=0), x)
    else:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        step = torch_model_step(torch_model(side == "torch-sdpa"), x)
    with threadpool_limits(limits=blas, user_api="blas"):
        seconds, faults = timed_with_faults(step, repeat=11, warmup=3)
        common.reset_peak()
        before = common.status_bytes("VmRSS")
        step()
        extra = common.status_bytes("VmHWM") - before
    print(f"{side}, model step alone in a fresh process, {threads} thread(s), BLAS on {blas}, glibc's default malloc, "
          f"B {B}, T {T}, d_model {C}: {seconds * 1e3:.1f} ms, {faults:,.0f} page faults per step, "
          f"peak memory of a step {extra / 2**20:,.0f} MiB above the {before / 2**20:,.0f} MiB held before it")


def main():
    if "--pixels" in sys.argv:
        globals().update(PIXELS)                        # every function reads the shapes at call time
    if "--fresh" in sys.argv:
        side = sys.argv[sys.argv.index("--fresh") + 1]
        threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
        blas = int(sys.argv[sys.argv.index("--blas") + 1]) if "--blas" in sys.argv else threads
        if side not in ("tinyar", "torch", "torch-sdpa") or (side != "tinyar" and not torch):
            raise SystemExit(f"--fresh: expected tinyar, torch or torch-sdpa (PyTorch installed), got {side!r}")
        return fresh(side, threads, blas)
    rng = np.random.default_rng(0)
    kept = "--default-malloc" not in sys.argv and keep_freed_memory()
    print(f"NumPy {np.__version__}, " + (f"PyTorch {torch.__version__}" if torch else "PyTorch not installed")
          + f", {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; malloc: "
          + ("freed blocks up to 32 MB kept (mallopt)" if kept else "glibc's defaults"))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                                 # comes with scikit-learn; without it: default threads
        threadpool_limits = None
    for threads in ([1, 2] if threadpool_limits else [None]):
        if threadpool_limits:
            with threadpool_limits(limits=threads, user_api="blas"):
                compare(threads, rng)
        else:
            compare(torch.get_num_threads() if torch else "default", rng)
    if "--pixels" in sys.argv:
        return print(f"\nload average {os.getloadavg()[0]:.1f} at the end")

    # 3. sampling
    n, length = 8, 256
    options = dict(n_layers=LAYERS, d_model=C, n_heads=H, d_mlp=D_MLP, rng=0)
    sampler = Transformer(V, max_len=length, **options)
    rows = [("sample with the key/value cache", median_time(lambda: sampler.sample(n, rng=1), repeat=3, warmup=1)),
            ("sample, recomputing the prefix every step",
             median_time(lambda: sampler.sample(n, rng=1, use_cache=False), repeat=1, warmup=0))]
    same = np.array_equal(sampler.sample(n, rng=1), sampler.sample(n, rng=1, use_cache=False))
    table(f"sampling {n} sequences of {length} tokens (same model, max_len {length}, default threads); "
          f"identical samples: {same}", rows, "sample with the key/value cache")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
