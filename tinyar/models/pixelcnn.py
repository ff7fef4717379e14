"""PixelCNN and Gated PixelCNN: masked convolutions over an image, all conditionals in one pass.

    p(x) = prod_{i=1..D} p(x_i | x_<i),       "<i": before pixel i in raster order
                                             (rows top to bottom, each row left to right)

An H x W image x (D = H W pixels, one channel, passed flattened as (batch, D)) goes
through a stack of convolutions whose kernels are masked (nn.MaskedConv2d) so that the
output at pixel i sees only the pixels before i: mask A in the first layer (the centre
tap excluded: x_i itself stays hidden), mask B afterwards (the centre included: the
features at i already exclude x_i). Every pixel's conditional comes out of one forward
pass; a convolution shares its weights over positions and looks locally, the inductive
bias that suits images [1, 2].

    raster order, 4x4     mask A (3x3)   mask B (3x3)
     1  2  3  4           1 1 1          1 1 1
     5  6  7  8           1 0 0          1 1 0
     9 10 11 12           0 0 0          0 0 0
    13 14 15 16

  PixelCNN [2]: h_0 = conv_A(x) (a large first kernel, 7x7 by default), then L residual
      layers h_l = h_{l-1} + conv_B(relu(h_{l-1})) (3x3), then two 1x1 layers:
      logits = conv_1x1(relu(conv_1x1(relu(h_L)))).
      Receptive field of output pixel (i, j), with a k1 x k1 first kernel and k x k later
      ones: rows up to k1//2 + L k//2 above, and on row i as many pixels to the left.
      The blind spot: with 3x3 masks, stacking never reaches the pixels above and to the
      right beyond the first layer's reach, e.g. (i-1, j+2) for output (i, j): the
      receptive field is a staircase with a wedge missing (demos/receptive_field.py).

  GatedPixelCNN [3]: two stacks. The vertical stack v sees every pixel in the rows
      above (a k x k kernel on rows <= the centre's, whose output is shifted down by one
      row before the horizontal stack reads it); the horizontal stack h sees the pixels
      to the left on the current row (a 1 x k kernel, mask A in the first layer, B
      after). Together they cover everything above and left: no blind spot. Each layer
      gates with y = tanh(a) * sigmoid(g):
          [a_v, g_v] = conv_vertical(v)                                   (B, 2C, H, W)
          v'         = tanh(a_v) * sigmoid(g_v)
          [a_h, g_h] = conv_horizontal(h) + conv_1x1(shift_down([a_v, g_v]))
          h'         = h + conv_1x1(tanh(a_h) * sigmoid(g_h))             (no residual in layer 1)
      then logits = conv_1x1(relu(conv_1x1(relu(h_L)))).

Outputs: one logit per pixel, p(x_i = 1 | x_<i) = sigma(logit_i), for binary images
(n_levels = 2); K logits per pixel, p(x_i = k | x_<i) = softmax_k, for K-level images
(the 17 intensities of the digits). The network's input is x / (K - 1), in [0, 1].

Parameters (weights (C_out, C_in, kh, kw), a bias (C_out,) each; n_outputs = 1 or K):
    PixelCNN       conv_in (C, 1, k1, k1) mask A; L layers (C, C, k, k) mask B
    GatedPixelCNN  per layer: vertical (2C, C_in, k, k), horizontal (2C, C_in, 1, k),
                   vertical_to_horizontal (2C, 2C, 1, 1), horizontal_out (C, C, 1, 1);
                   C_in = 1 and k = k1 in the first layer, C_in = C and k after
    both           out_hidden (C, C, 1, 1), out_logits (n_outputs, C, 1, 1)
O(C^2 k^2 L) in all, independent of the image size.
Cost: log p(x) is one pass, O(D C^2 k^2 L) per image; a sample needs D passes (one per
pixel, each over the rows so far), O(D^2 C^2 k^2 L): sampling is the slow direction.

Training: the classes' `recipe` (SGD with Nesterov momentum, a cosine schedule); the test
NLLs it reaches are in the README's table of results.

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] A. van den Oord, N. Kalchbrenner, K. Kavukcuoglu. Pixel recurrent neural networks. ICML 2016.
    [3] A. van den Oord, N. Kalchbrenner, O. Vinyals, L. Espeholt, A. Graves, K. Kavukcuoglu.
        Conditional image generation with PixelCNN decoders. NeurIPS 2016.
"""
from __future__ import annotations

import math
from abc import abstractmethod

import numpy as np

from tinyar import ops
from tinyar.distributions import Bernoulli, Categorical
from tinyar.models.base import AutoregressiveModel
from tinyar.nn import MaskedConv2d, Module
from tinyar.rng import as_rng
from tinyar.tensor import Tensor, no_grad


def _image_shape(n_dims, image_shape, name):
    if image_shape is None:
        side = math.isqrt(n_dims)
        if side * side != n_dims:
            raise ValueError(f"{name}: n_dims = {n_dims} is not a square; give image_shape=(height, width)")
        return (side, side)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 2 or image_shape[0] * image_shape[1] != n_dims:
        raise ValueError(f"{name}: image_shape {image_shape} does not hold n_dims = {n_dims} pixels")
    return image_shape


class _ImageModel(AutoregressiveModel):
    """What PixelCNN and GatedPixelCNN share: the constructor, the input and output ends,
    log_prob and sampling.

    A subclass builds its masked stack in `build_stack` and defines `features(x)`: (B, 1, H, W)
    input -> (B, C, H, W), causal in raster order (output pixel i depends only on input pixels
    before i); its `gradcheck_size` sizes the model of the gradcheck table.
    """
    data_kind = "binary"

    def __init__(self, n_dims, image_shape=None, n_levels=2, n_channels=32, n_layers=4, kernel_size=3,
                 first_kernel_size=7, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        name = type(self).__name__
        self.n_dims = int(n_dims)
        self.image_shape = _image_shape(self.n_dims, image_shape, name)
        self.n_levels = int(n_levels)
        if self.n_levels < 2:
            raise ValueError(f"{name}: n_levels must be >= 2, got {n_levels}")
        self.data_kind = "binary" if self.n_levels == 2 else "categorical"
        self.n_outputs = 1 if self.n_levels == 2 else self.n_levels     # logits per pixel
        self._dtype = np.dtype(dtype)
        C = int(n_channels)
        self.build_stack(C, int(n_layers), kernel_size, first_kernel_size, rng, dtype)
        self.out_hidden = MaskedConv2d(C, C, 1, mask_type="B", rng=rng, dtype=dtype)
        self.out_logits = MaskedConv2d(C, self.n_outputs, 1, mask_type="B", rng=rng, dtype=dtype)
        self.config = dict(n_dims=self.n_dims, image_shape=list(self.image_shape), n_levels=self.n_levels,
                           n_channels=C, n_layers=int(n_layers), kernel_size=int(kernel_size),
                           first_kernel_size=int(first_kernel_size), dtype=self._dtype.name)

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        if dataset.kind not in ("binary", "categorical") or dataset.image_shape is None:
            raise ValueError(f"{cls.__name__} models binary or K-level images; {dataset.name} is "
                             f"{dataset.kind} with image_shape {dataset.image_shape}")
        kwargs.setdefault("n_levels", 2 if dataset.kind == "binary" else dataset.n_levels)
        return cls(dataset.n_dims, image_shape=dataset.image_shape, rng=rng, **kwargs)

    @classmethod
    def gradcheck_example(cls):
        """A float64 model of 3x4 images, 3x3 kernels and the subclass's gradcheck_size (with its
        seed), its weights and biases moved off their initial values; and 3 binary images."""
        size = dict(cls.gradcheck_size)
        rng = np.random.default_rng(size.pop("seed"))
        model = cls(12, image_shape=(3, 4), kernel_size=3, first_kernel_size=3, rng=rng, dtype=np.float64, **size)
        for p in model.parameters():                                     # non-zero biases too
            p.data[...] += 0.1 * rng.standard_normal(p.shape)
        x = (rng.random((3, 12)) < 0.5).astype(np.float64)
        return model, x

    # ------------------------------------------------------------ the network
    @abstractmethod
    def build_stack(self, C, n_layers, kernel_size, first_kernel_size, rng, dtype):
        """Create the masked layers (C channels) between the image and the two 1x1 output layers."""

    @abstractmethod
    def features(self, image):
        """(B, 1, H', W') network input -> (B, C, H', W') features: the masked stack of each subclass."""

    def logits_image(self, image):
        """(B, 1, H', W') network input -> (B, n_outputs, H', W') logits, for any H' (rows so far)."""
        h = self.features(image)                                         # (B, C, H', W')
        return self.out_logits(ops.relu(self.out_hidden(ops.relu(h))))  # (B, n_outputs, H', W')

    def forward(self, x):
        """Logits of every conditional from the network input x / (K - 1) as a Tensor (B, D):
        (B, D) for binary images, (B, D, K) for K levels. Used by log_prob, and by the
        causality tests and the receptive-field demo (which differentiate it by its input)."""
        B = x.shape[0]
        H, W = self.image_shape
        z = self.logits_image(ops.reshape(x, (B, 1, H, W)))              # (B, n_outputs, H, W)
        if self.n_outputs == 1:
            return ops.reshape(z, (B, self.n_dims))                      # (B, D)
        z = ops.transpose(z, (0, 2, 3, 1))                               # (B, H, W, K)
        return ops.reshape(z, (B, self.n_dims, self.n_levels))           # (B, D, K)

    def _input(self, x):
        return Tensor((x / (self.n_levels - 1)).astype(self.dtype))      # values in [0, 1]

    def log_prob(self, x):
        x = self.check_input(x)
        logits = self.forward(self._input(x))
        if self.n_outputs == 1:
            return Bernoulli(logits).log_prob(x).sum(axis=1)             # (B,)
        return Categorical(logits).log_prob(x).sum(axis=1)               # (B,)

    def sample(self, n, rng=None):
        """n images (n, D), drawn pixel by pixel in raster order."""
        return self._draw(np.zeros((n, self.n_dims), dtype=np.int64), np.zeros(self.n_dims, dtype=bool), rng)

    def complete(self, x, observed_mask, rng=None):
        """x with its unobserved pixels drawn in raster order, each from p(x_i | x_<i) given the
        pixels before it (observed or already drawn). Exact samples of p(unobserved | observed)
        when the observed pixels all come first (e.g. the top rows); otherwise observed pixels
        after i cannot inform x_i (the model's conditionals only look back).

        x: (n, D) values; observed_mask: (D,) or (n, D) booleans, True where x is kept.
        """
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        observed_mask = np.asarray(observed_mask, dtype=bool)
        if observed_mask.shape not in (x.shape, x.shape[-1:]):
            raise ValueError(f"{type(self).__name__}.complete: observed_mask must be (D,) or x's shape {x.shape}, "
                             f"got {observed_mask.shape}")
        x = self.check_input(np.where(observed_mask, x, 0)).astype(np.int64)   # unobserved entries: ignored
        observed_mask = np.broadcast_to(observed_mask, x.shape)
        return self._draw(x, observed_mask, rng)

    def _draw(self, x, observed, rng):
        """Fill the pixels of x (n, D) where `observed` is False, in raster order.

        The logits of row r depend only on rows 0..r (causality), so pixel (r, c) needs the
        network run over those rows only.
        """
        rng = as_rng(rng)
        n = x.shape[0]
        H, W = self.image_shape
        levels = x.reshape(n, H, W).copy()                                # (n, H, W) integer levels
        observed = np.broadcast_to(observed, x.shape).reshape(n, H, W)
        canvas = (levels / (self.n_levels - 1)).astype(self.dtype)[:, None]   # (n, 1, H, W) network input
        with no_grad():
            for r in range(H):
                for c in range(W):
                    todo = ~observed[:, r, c]
                    if not todo.any():
                        continue
                    z = self.logits_image(Tensor(canvas[:, :, :r + 1, :])).data[:, :, r, c]   # (n, n_outputs)
                    if self.n_outputs == 1:
                        k = Bernoulli(Tensor(z[:, 0])).sample(rng).astype(np.int64)
                    else:
                        k = Categorical(Tensor(z)).sample(rng)
                    levels[todo, r, c] = k[todo]
                    canvas[todo, 0, r, c] = k[todo] / (self.n_levels - 1)
        out = levels.reshape(n, self.n_dims)
        return out.astype(self.dtype) if self.n_outputs == 1 else out

    def conditionals(self, x):
        """p(x_i = 1 | x_<i) as (B, D) for binary images, or the (B, D, K) probabilities (no graph)."""
        x = self.check_input(x)
        with no_grad():
            logits = self.forward(self._input(x))
        return Bernoulli(logits).probs() if self.n_outputs == 1 else Categorical(logits).probs()


class PixelCNN(_ImageModel):
    """PixelCNN [2]: a mask-A convolution, residual mask-B layers with ReLU, two 1x1 layers.

    n_dims:             D = H W pixels
    image_shape:        (H, W); None = square
    n_levels:           2 (binary, Bernoulli outputs) or K (categorical outputs, K logits)
    n_channels:         C feature maps in every layer
    n_layers:           residual mask-B layers after the first
    kernel_size:        k of the mask-B layers
    first_kernel_size:  k of the mask-A layer
    """
    recipe = dict(lr=0.02, momentum=0.9, nesterov=True, batch_size=50, epochs=20, clip=10.0, schedule="cosine",
                  model=dict(n_channels=32, n_layers=4, kernel_size=3, first_kernel_size=7))
    gradcheck_size = dict(seed=0, n_channels=3, n_layers=2)

    def build_stack(self, C, n_layers, kernel_size, first_kernel_size, rng, dtype):
        self.conv_in = MaskedConv2d(1, C, first_kernel_size, mask_type="A", rng=rng, dtype=dtype)
        self.layers = [MaskedConv2d(C, C, kernel_size, mask_type="B", rng=rng, dtype=dtype)
                       for _ in range(n_layers)]

    def features(self, image):
        h = self.conv_in(image)                                          # (B, C, H, W)   mask A
        for conv in self.layers:
            h = h + conv(ops.relu(h))                                    # (B, C, H, W)   h + conv_B(relu(h))
        return h


class GatedLayer(Module):
    """One layer of the gated PixelCNN: (v, h) -> (v', h'), C channels each (see the module docstring).

    first: the layer that reads the image (horizontal mask A, no residual connection).
    """

    def __init__(self, in_channels, n_channels, kernel_size, first=False, rng=None, dtype=np.float32):
        C = n_channels
        self.first = first
        self.vertical = MaskedConv2d(in_channels, 2 * C, (kernel_size, kernel_size), "vertical", rng=rng, dtype=dtype)
        self.horizontal = MaskedConv2d(in_channels, 2 * C, (1, kernel_size), "A" if first else "B", rng=rng,
                                       dtype=dtype)
        self.vertical_to_horizontal = MaskedConv2d(2 * C, 2 * C, 1, "B", rng=rng, dtype=dtype)
        self.horizontal_out = MaskedConv2d(C, C, 1, "B", rng=rng, dtype=dtype)
        self.n_channels = C

    @staticmethod
    def gate(z, C):
        """tanh(a) * sigmoid(g) for z = [a, g] along the channels."""
        return ops.tanh(z[:, :C]) * ops.sigmoid(z[:, C:])

    @staticmethod
    def shift_down(z):
        """z moved down one row (a row of zeros on top): row i then holds what saw rows <= i - 1."""
        B, C, H, W = z.shape
        zeros = Tensor(np.zeros((B, C, 1, W), dtype=z.dtype))
        return ops.concatenate([zeros, z[:, :, :H - 1, :]], axis=2)       # (B, C, H, W)

    def forward(self, v, h):
        C = self.n_channels
        zv = self.vertical(v)                                            # (B, 2C, H, W)  sees rows <= i
        zh = self.horizontal(h) + self.vertical_to_horizontal(self.shift_down(zv))   # rows < i, and left on row i
        h_next = self.horizontal_out(self.gate(zh, C))                   # (B, C, H, W)
        if not self.first:
            h_next = h_next + h
        return self.gate(zv, C), h_next


class GatedPixelCNN(_ImageModel):
    """Gated PixelCNN [3]: vertical and horizontal stacks with gated activations, no blind spot.

    Arguments as PixelCNN; n_layers counts the gated layers after the first.
    """
    recipe = dict(lr=0.02, momentum=0.9, nesterov=True, batch_size=50, epochs=40, clip=10.0, schedule="cosine",
                  model=dict(n_channels=32, n_layers=4, kernel_size=3, first_kernel_size=7))
    gradcheck_size = dict(seed=1, n_channels=2, n_layers=1)

    def build_stack(self, C, n_layers, kernel_size, first_kernel_size, rng, dtype):
        self.layers = [GatedLayer(1, C, first_kernel_size, first=True, rng=rng, dtype=dtype)]
        self.layers += [GatedLayer(C, C, kernel_size, rng=rng, dtype=dtype) for _ in range(n_layers)]

    def features(self, image):
        v, h = image, image
        for layer in self.layers:
            v, h = layer(v, h)                                           # (B, C, H, W) each
        return h
