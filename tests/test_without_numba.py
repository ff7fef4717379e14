"""tinyar without numba: it imports, trains on the NumPy twins, gets their numbers, and says once why.

A subprocess hides numba from the import system (sys.modules["numba"] = None makes `import
numba` raise ImportError, as on a Python that numba does not support yet), trains a tiny NADE,
MADE and PixelCNN with SGD with momentum, and prints their log-likelihoods; this process does
the same with numba installed and TINYAR_KERNELS=numpy. Both run the same twins in the same
order, so the numbers agree.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tinyar.kernels import NUMBA_MISSING

ROOT = Path(__file__).resolve().parent.parent
HIDE_NUMBA = "import sys; sys.modules['numba'] = None"


def tiny_training():
    """Train a NADE, a MADE and a PixelCNN on 4x4 binary images for 3 SGD-momentum steps each;
    {model name: the log-likelihoods of the batch after training}, and whether numba is in use."""
    from tinyar import kernels
    from tinyar.models.made import MADE
    from tinyar.models.nade import NADE
    from tinyar.models.pixelcnn import PixelCNN
    from tinyar.optim import SGD

    x = (np.random.default_rng(0).random((8, 16)) < 0.4).astype(np.float32)
    models = {"NADE": NADE(16, n_hidden=8, rng=1),
              "MADE": MADE(16, n_hidden=(12,), rng=2),
              "PixelCNN": PixelCNN(16, image_shape=(4, 4), n_channels=4, n_layers=2, rng=3)}
    log_likelihoods = {}
    for name, model in models.items():
        optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            model.nll(x).backward()
            optimizer.step()
        log_likelihoods[name] = model.log_prob(x).data.astype(float).tolist()
    return {"use_numba": kernels.use_numba(), "log_likelihoods": log_likelihoods}


def run_without_numba(code):
    """(stdout, stderr) of the Python `code` run in a fresh interpreter that cannot import numba
    (and without TINYAR_KERNELS, so that nothing but the missing numba picks the twins)."""
    env = {key: value for key, value in os.environ.items() if key != "TINYAR_KERNELS"}
    done = subprocess.run([sys.executable, "-c", f"{HIDE_NUMBA}\n{code}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_without_numba_tinyar_trains_on_the_twins_and_says_so_once(monkeypatch):
    stdout, stderr = run_without_numba("import json\nfrom tests.test_without_numba import tiny_training\n"
                                       "print(json.dumps(tiny_training()))")
    without = json.loads(stdout.strip().splitlines()[-1])
    assert without["use_numba"] is False

    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    twins = tiny_training()
    assert set(without["log_likelihoods"]) == {"NADE", "MADE", "PixelCNN"}
    for name, expected in twins["log_likelihoods"].items():
        got = np.array(without["log_likelihoods"][name])
        assert got.shape == (8,) and np.all(got < 0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=name)

    first_line = NUMBA_MISSING.split("(")[0]
    assert stderr.count(first_line) == 1, stderr
    assert "pip install numba" in stderr and "benchmarks/README.md" in stderr


def test_without_numba_every_kernel_module_imports_and_chooses_its_twin():
    stdout, stderr = run_without_numba(
        "import numpy as np\n"
        "from tinyar.kernels import attention, conv, embedding, masked, nade, rnn, sgd\n"
        "a = np.zeros(3, np.float32)\n"
        "chosen = [nade.choose('nade'), rnn.choose('elman'), conv.choose('conv2d'), attention.choose('gelu'),\n"
        "          (embedding.choose('embedding_backward'),), (sgd.choose('sgd_momentum_update', a, a, a),),\n"
        "          (masked.choose('mask_structure'),)]\n"
        "print(sorted({f.__name__.rsplit('_', 1)[-1] for pair in chosen for f in pair}))\n")
    assert stdout.split() == ["['numpy']"]
    assert stderr.count("numba is not installed") == 1


def test_without_numba_a_forced_compiled_kernel_runs_as_plain_python():
    """kernel="staircase" and kernel="numba" run their loops uncompiled (BLAS still called through
    ctypes) and give the twin's product."""
    stdout, _ = run_without_numba(
        "import numpy as np\n"
        "from tinyar import fused\n"
        "from tinyar.models.made import made_degrees, made_masks\n"
        "degrees = made_degrees(5, [6], np.arange(5), np.random.default_rng(0))\n"
        "M = made_masks(degrees, direct=False)[0][0].astype(float)\n"
        "rng = np.random.default_rng(1)\n"
        "x, W, b = rng.standard_normal((3, 5)), rng.standard_normal((6, 5)), rng.standard_normal(6)\n"
        "y = {k: fused.masked_matmul(x, W, M, b, kernel=k).data for k in ('staircase', 'numba', 'numpy')}\n"
        "print(float(np.abs(y['staircase'] - y['numpy']).max()), float(np.abs(y['numba'] - y['numpy']).max()),\n"
        "      float(np.abs(y['numpy'] - (x @ (W * M).T + b)).max()))\n")
    assert all(float(gap) < 1e-12 for gap in stdout.split()), stdout


def test_without_numba_the_attention_and_linear_kernels_run_as_plain_python():
    """causal_attention_*_numba and linear_*_numba called directly (no numba): the twins' numbers."""
    stdout, _ = run_without_numba(
        "import numpy as np\n"
        "from tinyar.kernels import attention as K\n"
        "rng = np.random.default_rng(0)\n"
        "q, k, v, dy = (rng.standard_normal((2, 5, 3)) for _ in range(4))\n"
        "y, L = K.causal_attention_forward_numba(q, k, v)\n"
        "y2, L2 = K.causal_attention_forward_numpy(q, k, v)\n"
        "g = K.causal_attention_backward_numba(q, k, v, L, dy)\n"
        "g2 = K.causal_attention_backward_numpy(q, k, v, L2, dy)\n"
        "from tinyar.kernels import linear as KL\n"
        "x, W, d = rng.standard_normal((600, 4)), rng.standard_normal((3, 4)), rng.standard_normal((600, 3))\n"
        "lin = (KL.linear_forward_numba(x, W, None),) + KL.linear_backward_numba(d, x, W)\n"
        "twin = (KL.linear_forward_numpy(x, W, None),) + KL.linear_backward_numpy(d, x, W)\n"
        "print(max(float(np.abs(a - b).max()) for a, b in zip((y, L) + g + lin, (y2, L2) + g2 + twin)))\n")
    assert float(stdout) < 1e-12, stdout


def test_cython_function_address_is_the_one_numba_finds():
    from numba.extending import get_cython_function_address

    from tinyar.kernels.runtime import cython_function_address
    for name in ("sgemm", "dgemm"):
        assert cython_function_address("scipy.linalg.cython_blas", name) == \
            get_cython_function_address("scipy.linalg.cython_blas", name)
