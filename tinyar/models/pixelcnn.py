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
      Receptive field of output pixel (i, j), with a k1 x k1 first kernel (p1 = k1 // 2)
      and L later k x k ones (p = k // 2): rows up to R = p1 + L p above, and on row i
      the R pixels to the left; t rows above (1 <= t <= R), columns j - R .. j + r(t),
          r(t) = max(p1 + p min(L, t - 1),  p min(L, t) - 1).
      Why: t = v + u, mask A climbing v rows and the L mask-B layers u rows. A mask-B
      layer climbs 0..p rows and moves right (by up to p) only on a step that climbs
      (on its centre row it stops at the centre), so u rows in L layers reach
      p min(L, u) to the right. Mask A climbs v = 1..p1 rows reaching p1 to the right
      (best at v = 1: the first term), or stays on the row reaching only left of the
      centre (the second term, the larger one only when p > p1 + 1).
      The blind spot is the rest of that window: t rows above, columns j + r(t) + 1 ..
      j + R (blind_spot_offsets lists them; demos/receptive_field.py draws them). For
      the default model (7x7 mask A, four 3x3 layers: R = 7, r(t) = 3 + min(4, t - 1))
      10 pixels are blind, the nearest being (i-1, j+4), e.g. (4, 6) for output (5, 2);
      with a 3x3 first layer the nearest is (i-1, j+2).

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
Cost: log p(x) is one pass, O(D C^2 k^2 L) per image. Sampling goes pixel by pixel:
rerunning the network over the rows so far for each pixel costs D passes, O(D^2 C^2 k^2 L)
(`sample(n, cached=False)`, the readable reference). But a layer's output at (r, c) depends
only on the pixels before (r, c) (the gated vertical stack's row r on rows <= r, read from row
r + 1 on): once they are drawn it is final. The cached sampler (the default) keeps each layer's
maps and computes each position of each layer once, when its turn comes (`raster_features`):
O(D C^2 k^2 L) per image, the cost of one log p(x), as in fast PixelCNN generation [4]. The
same conditionals (up to rounding) and the same random numbers: the same samples for a seed.

Training: the classes' `recipe` (SGD with Nesterov momentum, a cosine schedule); the test
NLLs it reaches are in the README's table of results.

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] A. van den Oord, N. Kalchbrenner, K. Kavukcuoglu. Pixel recurrent neural networks. ICML 2016.
    [3] A. van den Oord, N. Kalchbrenner, O. Vinyals, L. Espeholt, A. Graves, K. Kavukcuoglu.
        Conditional image generation with PixelCNN decoders. NeurIPS 2016.
    [4] P. Ramachandran, T. L. Paine, P. Khorrami, M. Babaeizadeh, S. Chang, Y. Zhang,
        M. Hasegawa-Johnson, R. Campbell, T. Huang. Fast generation for convolutional
        autoregressive models. ICLR 2017 workshop.
"""
from __future__ import annotations

import itertools
import math
from abc import abstractmethod

import numpy as np

from tinyar import ops
from tinyar.checks import check_n_samples
from tinyar.distributions import Bernoulli, Categorical
from tinyar.kernels.runtime import one_blas_thread
from tinyar.models.base import AutoregressiveModel
from tinyar.nn import MaskedConv2d, Module
from tinyar.queries import is_prefix, log_conditionals
from tinyar.rng import as_rng, importance_resample
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


def blind_spot_offsets(first_kernel_size, kernel_size, n_layers):
    """The blind spot of a PixelCNN (the rule in the module docstring): offsets (-t, dx) from an
    output pixel (i, j) to the input pixels (i - t, j + dx) it never sees although they come
    before it and lie within its reach R = p1 + L p, t rows above: r(t) < dx <= R. In raster order."""
    p1, p, L = first_kernel_size // 2, kernel_size // 2, int(n_layers)
    R = p1 + L * p

    def reach_right(t):                                                  # r(t)
        return max(p1 + p * min(L, t - 1), p * min(L, t) - 1)
    return [(-t, dx) for t in range(R, 0, -1) for dx in range(reach_right(t) + 1, R + 1)]


def _window(maps, r, c, kh, kw):
    """maps[:, :, r - kh//2 .. r + kh//2, c - kw//2 .. c + kw//2] as (n, C, kh, kw): the inputs one
    output position of a kh x kw convolution reads, zeros outside the image ("same" padding)."""
    n, C, H, W = maps.shape
    top, left = r - kh // 2, c - kw // 2
    window = np.zeros((n, C, kh, kw), dtype=maps.dtype)
    r0, r1, c0, c1 = max(top, 0), min(top + kh, H), max(left, 0), min(left + kw, W)
    window[:, :, r0 - top:r1 - top, c0 - left:c1 - left] = maps[:, :, r0:r1, c0:c1]
    return window


def _conv_at(conv, maps, r, c):
    """One output position of a MaskedConv2d: y[:, :, r, c] = sum_taps (w * mask) . window + b, (n, C_out)."""
    kh, kw = conv.mask.shape
    w = conv.weight.data * conv.mask                                     # (C_out, C_in, kh, kw)
    return np.tensordot(_window(maps, r, c, kh, kw), w, axes=([1, 2, 3], [1, 2, 3])) + conv.bias.data


def _pointwise(conv, h):
    """A 1x1 MaskedConv2d at one position: h (n, C_in) -> (n, C_out)."""
    return h @ conv.weight.data[:, :, 0, 0].T + conv.bias.data


class _ImageModel(AutoregressiveModel):
    """What PixelCNN and GatedPixelCNN share: the constructor, the input and output ends,
    log_prob and sampling.

    A subclass builds its masked stack in `build_stack` and defines `features(x)`: (B, 1, H, W)
    input -> (B, C, H, W), causal in raster order (output pixel i depends only on input pixels
    before i), and `raster_features`, the same features position by position for the cached
    sampler; its `gradcheck_size` sizes the model of the gradcheck table.
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

    def sample(self, n, rng=None, cached=True):
        """n images (n, D), drawn pixel by pixel in raster order.

        cached=True: every layer's maps are kept and each position of each layer is computed
        once, when the pixels it depends on are drawn (raster_features): O(D C^2 k^2 L) per
        image, k^2 the window one output position reads.
        cached=False: the reference, the network rerun over the rows so far for every pixel,
        O(D^2 C^2 k^2 L). Both draw the same random numbers: the same seed, the same images.
        """
        n = check_n_samples(n, type(self).__name__)
        return self._draw(np.zeros((n, self.n_dims), dtype=np.int64), np.zeros(self.n_dims, dtype=bool), rng,
                          cached)

    def complete(self, x, observed_mask, rng=None, n_proposals=64, cached=True):
        """x with its unobserved pixels drawn from p(x_unobserved | x_observed).

        x: (n, D) values; observed_mask: (D,) or (n, D) booleans, True where x is kept (the
        other entries of x are ignored); cached: as in `sample`.
        - The observed pixels come first in raster order in every row (e.g. the top rows):
          drawing the others in raster order from p(x_i | x_<i) is exact.
        - Otherwise p(x_i | x_<i) cannot see the observed pixels after i, so sampling-
          importance-resampling: n_proposals completions per row drawn that way (observed
          values clamped), weighted by w = p(x) / q(x_unobserved) = prod_{i observed} p(x_i | x_<i)
          (one more pass), one kept per row with probability proportional to w (exact as
          n_proposals -> infinity).
        """
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        observed_mask = np.asarray(observed_mask, dtype=bool)
        if observed_mask.shape not in (x.shape, x.shape[-1:]):
            raise ValueError(f"{type(self).__name__}.complete: observed_mask must be (D,) or x's shape {x.shape}, "
                             f"got {observed_mask.shape}")
        x = self.check_input(np.where(observed_mask, x, 0)).astype(np.int64)   # unobserved entries: ignored
        observed = np.broadcast_to(observed_mask, x.shape)
        rng = as_rng(rng)
        if is_prefix(observed, np.arange(self.n_dims)).all():
            return self._draw(x, observed, rng, cached)
        n, P = x.shape[0], int(n_proposals)
        rows = np.repeat(np.arange(n), P)                                    # (n P,)
        proposals = self._draw(x[rows], observed[rows], rng, cached)          # (n P, D)
        log_w = np.where(observed[rows], log_conditionals(self, proposals), 0.0).sum(axis=1)   # log w, (n P,)
        return importance_resample(proposals.reshape(n, P, self.n_dims), log_w.reshape(n, P), rng,
                                   f"{type(self).__name__}.complete")

    def _draw(self, x, observed, rng, cached=True):
        """Fill the pixels of x (n, D) where `observed` is False, in raster order, from the
        logits of the cached path (_cached_logits) or of the reference (_rerun_logits)."""
        rng = as_rng(rng)
        n = x.shape[0]
        H, W = self.image_shape
        levels = x.reshape(n, H, W).copy()                                # (n, H, W) integer levels
        observed = np.broadcast_to(observed, x.shape).reshape(n, H, W)
        canvas = (levels / (self.n_levels - 1)).astype(self.dtype)[:, None]   # (n, 1, H, W) network input
        needed = ~observed.all(axis=0)                                    # (H, W) pixels some row draws
        pixels = self._cached_logits(canvas) if cached else self._rerun_logits(canvas, needed)
        with no_grad(), one_blas_thread(on=cached):                       # small products (kernels/runtime.py)
            for (r, c), z in pixels:                                      # z (n, n_outputs): logits of (r, c)
                todo = ~observed[:, r, c]
                if not todo.any():
                    continue
                if self.n_outputs == 1:
                    k = Bernoulli(Tensor(z[:, 0])).sample(rng).astype(np.int64)
                else:
                    k = Categorical(Tensor(z)).sample(rng)
                levels[todo, r, c] = k[todo]
                canvas[todo, 0, r, c] = k[todo] / (self.n_levels - 1)     # read by the pixels after (r, c)
        out = levels.reshape(n, self.n_dims)
        return out.astype(self.dtype) if self.n_outputs == 1 else out

    def _rerun_logits(self, canvas, needed):
        """The reference: ((r, c), logits (n, n_outputs)) for each needed pixel in raster order, the
        network rerun over rows 0..r each time (by causality they are all the logits of row r need)."""
        H, W = self.image_shape
        for r, c in itertools.product(range(H), range(W)):
            if needed[r, c]:
                yield (r, c), self.logits_image(Tensor(canvas[:, :, :r + 1, :])).data[:, :, r, c]

    def _cached_logits(self, canvas):
        """((r, c), logits (n, n_outputs)) for every pixel in raster order, from raster_features:
        logits = conv_1x1(relu(conv_1x1(relu(h_L)))) at (r, c)."""
        for pixel, h in self.raster_features(canvas):
            yield pixel, _pointwise(self.out_logits, np.maximum(_pointwise(self.out_hidden, np.maximum(h, 0)), 0))

    @abstractmethod
    def raster_features(self, canvas):
        """Yield ((r, c), h_L[:, :, r, c] as (n, C)) for every pixel in raster order, reading canvas
        (n, 1, H, W) as it stands when (r, c) comes (its pixels before (r, c) final by then)."""

    def conditionals(self, x, cached=False):
        """p(x_i = 1 | x_<i) as (B, D) for binary images, or the (B, D, K) probabilities (no graph).

        cached=True: the same numbers computed position by position, as the cached sampler does
        (raster_features): a check that the cache computes the network.
        """
        x = self.check_input(x)
        with no_grad():
            if cached:
                canvas = self._input(x).data.reshape(x.shape[0], 1, *self.image_shape)   # (B, 1, H, W)
                z = np.stack([z for _, z in self._cached_logits(canvas)], axis=1)          # (B, D, n_outputs)
                logits = Tensor(z[:, :, 0] if self.n_outputs == 1 else z)
            else:
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
    # binarized MNIST (--data mnist): three times the depth, reaching R = 3 + 12 = 15 rows above
    # a pixel (its blind spot grows with it: 12 + 11 + ... + 1 = 78 pixels). Its validation NLL
    # is in README.md, "Binarized MNIST"; its time per epoch in benchmarks/README.md.
    recipes = {"mnist": dict(recipe, epochs=15, model=dict(recipe["model"], n_layers=12))}
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

    def raster_features(self, canvas):
        """h_L at each pixel in raster order, each layer computed at (r, c) only: its masks read
        positions up to (r, c), all computed already (see _ImageModel.raster_features)."""
        n, _, H, W = canvas.shape
        relu_maps = [np.zeros((n, conv.weight.shape[1], H, W), canvas.dtype) for conv in self.layers]
        for r, c in itertools.product(range(H), range(W)):
            h = _conv_at(self.conv_in, canvas, r, c)                     # (n, C)  h_0 = conv_A(x) at (r, c)
            for conv, relu_h in zip(self.layers, relu_maps):
                relu_h[:, :, r, c] = np.maximum(h, 0)                    # relu(h_{l-1}), kept for later positions
                h = h + _conv_at(conv, relu_h, r, c)                     # h_l = h_{l-1} + conv_B(relu(h_{l-1}))
            yield (r, c), h


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

    def raster_features(self, canvas):
        """h_L at each pixel in raster order (see _ImageModel.raster_features).

        The vertical stack of row r - 1 sees rows <= r - 1 only: final once they are drawn, it is
        computed whole (_vertical_row) before row r starts, whose horizontal stack reads it through
        shift_down. The horizontal stack at (r, c) reads row r up to c: computed once, at (r, c).
        """
        n, _, H, W = canvas.shape
        C = self.layers[0].n_channels
        v_in = [canvas] + [np.zeros((n, C, H, W), canvas.dtype) for _ in self.layers[1:]]   # v_{l-1}, read by layer l
        h_in = [canvas] + [np.zeros((n, C, H, W), canvas.dtype) for _ in self.layers[1:]]   # h_{l-1}, read by layer l
        zv_above = [np.zeros((n, 2 * C, W), canvas.dtype) for _ in self.layers]   # [a_v, g_v] of row r - 1 (0 on row 0)
        for r in range(H):
            if r > 0:
                self._vertical_row(r - 1, v_in, zv_above)
            for c in range(W):
                for l, layer in enumerate(self.layers):
                    zh = _conv_at(layer.horizontal, h_in[l], r, c) + _pointwise(layer.vertical_to_horizontal,
                                                                                zv_above[l][:, :, c])   # (n, 2C)
                    h = _pointwise(layer.horizontal_out, layer.gate(Tensor(zh), C).data)             # (n, C)
                    h = h if layer.first else h + h_in[l][:, :, r, c]                                # residual
                    if l + 1 < len(self.layers):
                        h_in[l + 1][:, :, r, c] = h
                yield (r, c), h

    def _vertical_row(self, r, v_in, zv_above):
        """Row r of every layer's vertical stack: [a_v, g_v] into zv_above[l] (n, 2C, W), and
        v = tanh(a_v) * sigmoid(g_v) into row r of the next layer's input v_in[l + 1]."""
        C = self.layers[0].n_channels
        for l, layer in enumerate(self.layers):
            for c in range(v_in[l].shape[3]):
                zv_above[l][:, :, c] = _conv_at(layer.vertical, v_in[l], r, c)
            if l + 1 < len(self.layers):
                v_in[l + 1][:, :, r, :] = layer.gate(Tensor(zv_above[l]), C).data


# ==== ColourPixelCNN: RGB images, the masks ordering the channels too ====
class ColourPixelCNN(AutoregressiveModel):
    """PixelCNN [2] for colour images: K logits for each of R, G, B at every pixel, with masks
    that order the three channels of a pixel as well as the pixels.

        p(x) = prod_{i=1..HW} p(R_i | x_<i) p(G_i | R_i, x_<i) p(B_i | R_i, G_i, x_<i)

    x_<i: all three channels of the pixels before i in raster order. An example is a row of
    D = 3 H W values in 0..K-1 listed in that same order, R, G, B of pixel 0, then of pixel 1,
    ... (channel-last, as data.photo_patches lays them out), so this is the chain rule
    p(x) = prod_d p(x_d | x_<d) over the D subpixels. Each conditional is a softmax over the
    K levels (256 for 8-bit photographs).

    Masks. The C channels of every layer are split into three groups of C/3 (the R, G and B
    groups; the image's own 3 channels are one per group). Off the centre tap a kernel keeps
    the spatial mask of PixelCNN (rows above, the left part of the centre row). At the centre
    tap it orders the groups (nn.conv_mask with channel groups): output group g sees input
    groups < g under mask A (the first layer) and <= g under mask B (every later layer). For
    a 3x3 kernel, the taps from each input group to each output group:

                    mask A: from R   from G   from B      mask B: from R   from G   from B
        to R                1 1 1    1 1 1    1 1 1               1 1 1    1 1 1    1 1 1
                            1 0 0    1 0 0    1 0 0               1 1 0    1 0 0    1 0 0
                            0 0 0    0 0 0    0 0 0               0 0 0    0 0 0    0 0 0
        to G                1 1 1    1 1 1    1 1 1               1 1 1    1 1 1    1 1 1
                            1 1 0    1 0 0    1 0 0               1 1 0    1 1 0    1 0 0
                            0 0 0    0 0 0    0 0 0               0 0 0    0 0 0    0 0 0
        to B                1 1 1    1 1 1    1 1 1               1 1 1    1 1 1    1 1 1
                            1 1 0    1 1 0    1 0 0               1 1 0    1 1 0    1 1 0
                            0 0 0    0 0 0    0 0 0               0 0 0    0 0 0    0 0 0

    Why this is causal: after the mask-A layer the group-g features at pixel i see the pixels
    before i and the channels < g of pixel i (R's group sees none of pixel i, G's sees R_i,
    B's sees R_i and G_i). A mask-B layer keeps this, as group g reads only groups <= g at the
    centre, and so do the residual sums (group g plus group g). The logits of channel g come
    out of group g of the last layer: p(G_i | ...) sees R_i, never G_i or B_i.

    Network: h_0 = conv_A(x / (K - 1)) (k1 x k1, 3 -> C), L residual layers
    h_l = h_{l-1} + conv_B(relu(h_{l-1})) (k x k), then two 1x1 mask-B layers to 3 K logits
    per pixel, the R logits first, then G, then B (each its output group).

    Parameters (weights (C_out, C_in, kh, kw) and a bias (C_out,) each):
        conv_in (C, 3, k1, k1);  L layers (C, C, k, k);  out_hidden (C, C, 1, 1);
        out_logits (3K, C, 1, 1)
    Cost: log p(x) is one pass, O(HW (C^2 k^2 L + 3 K C)) per image; a sample needs D = 3 H W
    passes (one per subpixel, each over the rows so far): sampling is the slow direction.

    n_dims:       D = 3 H W
    image_shape:  (H, W) or (H, W, 3); None = square
    n_levels:     K levels per channel (256 for 8-bit colour)
    n_channels:   C feature maps per layer, a multiple of 3
    n_layers, kernel_size, first_kernel_size: as PixelCNN
    """
    data_kind = "categorical"
    default_data = "photos"
    # `recipe`: the sizes and learning rate of demos/colour_patches.py (no clipping: the loss sums
    # 192 softmaxes, and a clipped step would barely move each one)
    recipe = dict(lr=0.003, momentum=0.9, nesterov=True, batch_size=50, epochs=20, schedule="cosine",
                  model=dict(n_channels=24, n_layers=2, kernel_size=3, first_kernel_size=5))

    def __init__(self, n_dims, image_shape=None, n_levels=256, n_channels=48, n_layers=4, kernel_size=3,
                 first_kernel_size=7, rng=None, dtype=np.float32):
        rng = as_rng(rng)
        self.n_dims = int(n_dims)
        self.image_shape = self._colour_shape(self.n_dims, image_shape)
        self.n_levels = int(n_levels)
        C = int(n_channels)
        if self.n_levels < 2 or C < 3 or C % 3:
            raise ValueError(f"ColourPixelCNN: need n_levels >= 2 and n_channels a multiple of 3, "
                             f"got n_levels {n_levels}, n_channels {n_channels}")
        conv = dict(rng=rng, dtype=dtype, n_groups=3)
        self.conv_in = MaskedConv2d(3, C, first_kernel_size, "A", **conv)
        self.layers = [MaskedConv2d(C, C, kernel_size, "B", **conv) for _ in range(int(n_layers))]
        self.out_hidden = MaskedConv2d(C, C, 1, "B", **conv)
        self.out_logits = MaskedConv2d(C, 3 * self.n_levels, 1, "B", **conv)
        self.config = dict(n_dims=self.n_dims, image_shape=list(self.image_shape), n_levels=self.n_levels,
                           n_channels=C, n_layers=int(n_layers), kernel_size=int(kernel_size),
                           first_kernel_size=int(first_kernel_size), dtype=np.dtype(dtype).name)

    @staticmethod
    def _colour_shape(n_dims, image_shape):
        """(H, W, 3) from (H, W), (H, W, 3) or None (square), checked against n_dims = 3 H W."""
        if image_shape is None:
            side = math.isqrt(n_dims // 3)
            image_shape = (side, side)
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) == 2:
            image_shape += (3,)
        if len(image_shape) != 3 or image_shape[2] != 3 or 3 * image_shape[0] * image_shape[1] != n_dims:
            raise ValueError(f"ColourPixelCNN: image_shape {image_shape} does not hold n_dims = {n_dims} "
                             "values (3 per pixel); give image_shape=(height, width)")
        return image_shape

    @classmethod
    def for_dataset(cls, dataset, rng=None, **kwargs):
        shape = dataset.image_shape
        if dataset.kind != "categorical" or shape is None or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"ColourPixelCNN models K-level colour images (image_shape (H, W, 3)); "
                             f"{dataset.name} is {dataset.kind} with image_shape {shape} (try data.photo_patches)")
        kwargs.setdefault("n_levels", dataset.n_levels)
        return cls(dataset.n_dims, image_shape=shape, rng=rng, **kwargs)

    @classmethod
    def gradcheck_example(cls):
        """A float64 model of 2x2 colour images with 3 levels (C = 3, one residual layer, 3x3
        kernels), its weights and biases moved off their initial values; and 3 images."""
        rng = np.random.default_rng(2)
        model = cls(12, image_shape=(2, 2), n_levels=3, n_channels=3, n_layers=1, kernel_size=3,
                    first_kernel_size=3, rng=rng, dtype=np.float64)
        for p in model.parameters():
            p.data[...] += 0.1 * rng.standard_normal(p.shape)
        return model, rng.integers(0, 3, (3, 12))

    # ------------------------------------------------------------ the network
    def logits_image(self, image):
        """(B, 3, H', W') network input -> (B, 3, K, H', W') logits, for any H' (rows so far)."""
        h = self.conv_in(image)                                          # (B, C, H', W')   mask A
        for conv in self.layers:
            h = h + conv(ops.relu(h))                                    # (B, C, H', W')   mask B
        z = self.out_logits(ops.relu(self.out_hidden(ops.relu(h))))     # (B, 3K, H', W')  R, G, B blocks
        B, _, rows, W = z.shape
        return ops.reshape(z, (B, 3, self.n_levels, rows, W))            # (B, 3, K, H', W')

    def forward(self, x):
        """Logits of every conditional, a Tensor (B, D, K), from the network input x / (K - 1)
        given as (B, D) in the data's layout (pixel by pixel, R, G, B at each)."""
        B = x.shape[0]
        H, W, _ = self.image_shape
        image = ops.transpose(ops.reshape(x, (B, H, W, 3)), (0, 3, 1, 2))    # (B, 3, H, W)
        z = ops.transpose(self.logits_image(image), (0, 3, 4, 1, 2))        # (B, H, W, 3, K)
        return ops.reshape(z, (B, self.n_dims, self.n_levels))               # (B, D, K)

    def log_prob(self, x):
        x = self.check_input(x)
        logits = self.forward(Tensor((x / (self.n_levels - 1)).astype(self.dtype)))
        return Categorical(logits).log_prob(x).sum(axis=1)               # (B,)  sum_d log p(x_d | x_<d)

    def conditionals(self, x):
        """p(x_d = k | x_<d) for every subpixel d, as (B, D, K) probabilities (no graph)."""
        x = self.check_input(x)
        with no_grad():
            logits = self.forward(Tensor((x / (self.n_levels - 1)).astype(self.dtype)))
        return Categorical(logits).probs()

    def sample(self, n, rng=None):
        """n images (n, D): raster order over the pixels, R, G, B in turn within each pixel; a
        subpixel's logits come from the network run over the rows so far."""
        n, rng = check_n_samples(n, type(self).__name__), as_rng(rng)
        H, W, _ = self.image_shape
        levels = np.zeros((n, H, W, 3), dtype=np.int64)
        if n == 0:
            return levels.reshape(0, self.n_dims)
        canvas = np.zeros((n, 3, H, W), dtype=self.dtype)                 # the network input, x / (K - 1)
        with no_grad():
            for r in range(H):
                for c in range(W):
                    for channel in range(3):                               # R, then G (sees R), then B
                        z = self.logits_image(Tensor(canvas[:, :, :r + 1])).data[:, channel, :, r, c]  # (n, K)
                        k = Categorical(Tensor(z)).sample(rng)
                        levels[:, r, c, channel] = k
                        canvas[:, channel, r, c] = k / (self.n_levels - 1)
        return levels.reshape(n, self.n_dims)
