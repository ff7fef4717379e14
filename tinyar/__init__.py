"""tinyar: autoregressive generative models on a small NumPy autograd.

Reading order: tensor.py (the autograd), ops.py (each op and its derivative),
functional.py (stable composites), then any model in models/.
"""
from tinyar.tensor import Tensor, no_grad, detect_anomaly
from tinyar import ops, fused, functional
from tinyar.gradcheck import gradcheck, GradcheckError
from tinyar.train import save, load
from tinyar.kernels.runtime import keep_freed_memory

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "detect_anomaly", "ops", "fused", "functional", "gradcheck", "GradcheckError", "save", "load",
           "keep_freed_memory"]
