"""Every differentiable operation: forward and backward side by side.

One card per op: the table ``CARDS`` below (Function -> naive reference -> CPU
kernel -> CUDA source -> gradcheck test), checked against the code by
tests/test_op_cards.py.  Each op has one *stem*, the name of its functional form
(``te.max_pool2d``), used at every level --

  naive reference   ``naive.<stem>_forward`` / ``naive.<stem>_backward``: the formula, one loop at a time
  CPU kernel        ``kernels/<stem>.py``: Numba loops; namespace ``kernels.<stem>`` with ``forward`` and
                    ``backward`` (``backward_input`` / ``backward_weight`` / ``backward_params`` where
                    the gradients are computed apart)
  CUDA source       ``kernels/<stem>.cu``: templates ``<stem>_forward<T>``, ``<stem>_backward*<T>``,
                    wrapped in ``kernels/gpu.py`` as the namespace ``gpu.<stem>`` with the CPU signatures
  Function          here, PyTorch's class name for the op (``MaxPool2d``)

The exceptions are named on their cards: convolution is built from the data
movement kernels ``im2col`` and ``layout`` and a BLAS product (its depthwise
case has loops of its own, ``depthwise_conv2d``); ``avg_pool2d`` also holds the
adaptive pooling (``adaptive_forward`` / ``adaptive_backward``: the same window
loops); LRN's stem is ``lrn`` (Caffe's name and the model file's layer type; the
functional is PyTorch's ``local_response_norm``).  Ops with no kernel are array
code (NumPy or CuPy) in the Function itself, which is then its own reference.

The switch between the versions.  ``B = K.backend(x)`` is the one switch: it
returns the Numba kernels for a NumPy array and their CUDA twins for a CuPy
array (``kernels/__init__.py``); every op calls ``B.<stem>.<function>(...)`` and
nothing else picks a backend.  The naive references are never picked at run
time: the tests (tests/test_naive.py, tests/test_op_cards.py) and
``walkthrough.py`` call them beside the fast versions.  Max-pooling records its
switches (the winner of each window) in one format at all three levels: the
flat index h*W + w in the (H, W) plane, int32, the first maximum on ties.

Shapes (the one statement of them; naive.py and kernels/interface.py use the
same letters): N batch, C/O input/output channels, H/W height/width, OH/OW the
output's, L = OH*OW, k kernel size, s stride, p padding (a pair (height, width)
where the op takes one); images (N, C, H, W), conv weights (O, C/G, kh, kw) for
G groups, linear weights (out, in).  Each backward receives g = dL/d(output) and
returns dL/d(input) for each input that needs it (``self.needs_grad``), None for
the others -- so with frozen weights no weight gradient is ever computed.

The heavy loops live in the hand-written kernels (:mod:`tinygrad_explain.kernels`);
matrix products go through NumPy's BLAS.

Devices.  An op runs where its input arrays live: ``xp = _xp(x)`` is NumPy or
CuPy (array constructors, matmul -> BLAS or cuBLAS) and ``B = K.backend(x)``
the Numba or the CUDA kernels (same wrappers, same signatures).  Inputs on
different devices are refused (``Function.apply``); nothing is copied between
host and device behind the caller's back.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import ArrayLike

from .. import kernels as K
from . import engine
from .engine import Array, Function, Tensor
from .engine import array_module as _xp

Size2 = int | tuple[int, int]        # a size or stride: one int for both sides, or (height, width)
Axis = int | tuple[int, ...] | None
Grads = tuple[Array | None, ...]     # one gradient per tensor input, None where none is needed


@dataclass(frozen=True)
class Card:
    """One op's versions: the Function here; its naive reference ``naive.<naive>_forward`` /
    ``_backward`` (None: the Function's array code is its own reference); the CPU kernel
    modules it calls, ``kernels/<name>.py``, and the CUDA sources of their GPU twins,
    ``kernels/<name>`` (space-separated; "" for none); the test in tests/ that gradchecks its
    backward in float64."""
    function: str
    naive: str | None
    cpu: str
    cuda: str
    gradcheck: str


CARDS: tuple[Card, ...] = tuple(Card(*row) for row in (
    # Function            naive reference        CPU kernels   CUDA sources     gradcheck test
    ("Conv2d",            "conv2d",              "im2col layout depthwise_conv2d",
     "im2col.cu layout.cu depthwise_conv2d.cu",                                 "test_conv2d_gradcheck"),
    ("Linear",            "linear",              "linear",     "",              "test_linear_forward_and_gradcheck"),
    ("ReLU",              "relu",                "relu",       "relu.cu",       "test_relu_gradcheck_backprop"),
    ("Clip",              "clip",                "clip",       "clip.cu",       "test_clip_equals_torch_hardtanh"),
    ("MaxPool2d",         "max_pool2d",          "max_pool2d", "max_pool2d.cu", "test_max_pool2d_gradcheck"),
    ("AvgPool2d",         "avg_pool2d",          "avg_pool2d", "avg_pool2d.cu", "test_avg_pool2d_gradcheck"),
    ("AdaptiveAvgPool2d", "adaptive_avg_pool2d", "avg_pool2d", "avg_pool2d.cu", "test_adaptive_avg_pool2d"),
    ("LocalResponseNorm", "lrn",                 "lrn",        "lrn.cu",        "test_lrn_gradcheck"),
    ("BatchNorm",         "batch_norm",          "batch_norm", "batch_norm.cu", "test_batch_norm_equals_torch"),
    ("Concat",            "concat",              "",           "",              "test_concat_equals_torch"),
    # array code only (NumPy / CuPy in the Function, its own reference)
    ("Sigmoid",           None,                  "",           "",              "test_sigmoid_silu_equal_torch"),
    ("SiLU",              None,                  "",           "",              "test_sigmoid_silu_equal_torch"),
    ("Upsample",          None,                  "",           "",              "test_upsample_nearest"),
    ("Dropout", None, "", "", "test_dropout_train_gradcheck_with_fixed_seed"),
    ("Reshape",           None,                  "",           "",              "test_flatten_and_reshape"),
    ("Exp",               None,                  "",           "",              "test_exp_and_log"),
    ("Log",               None,                  "",           "",              "test_exp_and_log"),
    ("Max",               None,                  "",           "",              "test_max_over_an_axis"),
    ("LogSumExp",         None,                  "",           "",              "test_logsumexp"),
    ("Softmax",           None,                  "",           "",              "test_softmax"),
    ("LogSoftmax",        None,                  "",           "",              "test_log_softmax"),
    ("CrossEntropy",      None,                  "",           "",              "test_cross_entropy"),
    ("Add",               None,                  "",           "",              "test_binary_ops_broadcast"),
    ("Mul",               None,                  "",           "",              "test_binary_ops_broadcast"),
    ("Pow",               None,                  "",           "",              "test_pow"),
    ("Abs",               None,                  "",           "",              "test_abs"),
    ("Sum",               None,                  "",           "",              "test_sum_and_mean"),
    ("Index",             None,                  "",           "",              "test_indexing"),
    # the image priors and maps of the optimisation-based explainers (explain/)
    ("AlphaNorm",         None,                  "",           "",              "test_regularizer_gradients"),
    ("TotalVariation",    None,                  "",           "",              "test_regularizer_gradients"),
    ("Roll",              None,                  "",           "",              "test_roll_backward_is_its_inverse"),
    ("Resample", None, "", "", "test_scale_and_rotation_backward_is_the_adjoint"),
    ("ColourMix", None, "", "", "test_colour_mix_backward_is_the_transpose"),
    ("FourierImage",      None,                  "",           "",              "test_fourier_backward_is_the_adjoint"),
    ("TakeRows",          None,                  "",           "",              "test_take_and_put_rows"),
    ("PutRows",           None,                  "",           "",              "test_take_and_put_rows"),
))


def pair(v: Size2) -> tuple[int, int]:
    """``v`` as (height, width): one int for both sides, or the pair itself."""
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def scalar_like(v: float, like: Array) -> Array:
    """The constant v in like's dtype, for arithmetic with the array ``like``: a 0-d
    NumPy array on the CPU, a NumPy scalar on the GPU (CuPy passes it to the kernel
    by value; it refuses 0-d NumPy arrays)."""
    return np.asarray(v, like.dtype) if _xp(like) is np else like.dtype.type(v)


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------
class Conv2d(Function):
    """2-D convolution (cross-correlation) as im2col + one matrix product per group.

    x (N, C, H, W), w (O, C/G, kh, kw), b (O,) -> y (N, O, OH, OW),
    OH = (H + 2*ph - kh) // sh + 1, L = OH*OW, R = C/G*kh*kw.
        col = im2col(x)                      (C*kh*kw, N*L)
        y_rows[g] = w[g] @ col[g] + b        (O/G, N*L) per group g
    Chain rule:
        dcol[g] = w[g].T @ dy_rows[g];  dx = col2im(dcol)
        dw[g]   = dy_rows[g] @ col[g].T
        db      = sum of dy over n, i, j

    The steps carry the names of Caffe's ``BaseConvolutionLayer``:
    ``forward_gemm`` (y_rows = w @ col), ``forward_bias`` (+ b, fused here with
    the change from rows to NCHW layout), ``backward_gemm`` (dcol = w.T @ dy_rows,
    the gradient to the input), ``weight_gemm`` (dw += dy_rows @ col.T) and
    ``backward_bias`` (db).  ``forward`` and ``backward`` only cut the batch
    into chunks and hand out buffers.

    On the CPU, the images of a batch are handed out to the threads one at a
    time (``kernels/threads.py``), and each image is one im2col and one GEMM
    on one BLAS thread, written straight into its output (no layout change):
    whole images per thread, as PyTorch's oneDNN does, and the same bits on
    any thread count.  One image uses the kernels' and the BLAS's threads.
    Otherwise (training, the GPU) the batch is processed in chunks of images
    whose ``col`` fits a few MB (reused scratch buffers, cache-friendly); for
    one image the GEMM writes straight into the output.  When the weight
    gradient will be needed (training), each chunk's ``col`` is kept for
    backward; otherwise (input gradients only, as the explainers need) it is
    not, and a backward that still needs it recomputes it chunk by chunk (as
    Caffe does).  On the
    GPU the budget is larger (``GPU_COL_BUDGET``): a whole AlexNet batch of
    32 is one im2col and one cuBLAS GEMM per group.  On the CPU, an image whose
    col alone would exceed ``COL_BUDGET`` (VGG16's first layers: 115 MB) is
    processed in bands of output rows, forward and backward to the input
    (``_bands``; im2col / col2im of a band), so the scratch memory stays bounded.

    Groups: weight (O, C/G, kh, kw); group g's output channels [g*O/G, (g+1)*O/G)
    read input channels [g*C/G, (g+1)*C/G) -- one GEMM per group (AlexNet's G = 2).
    Depthwise (G = C, weight (m*C, 1, kh, kw), MobileNetV2's m = 1) has its own
    loops instead of C one-row GEMMs (``is_depthwise``, kernels/depthwise_conv2d.py; the
    chain rule is written there).
    """

    COL_BUDGET = 1 << 21        # floats of im2col per chunk (8 MB in float32)
    GPU_COL_BUDGET = 1 << 26    # on the GPU (256 MB in float32)

    def _geometry(self, x_shape, w_shape, xp=np):
        N, C, H, W = x_shape
        O, Cg, kh, kw = w_shape
        oh = K.im2col.out_size(H, kh, self.stride[0], self.padding[0])
        ow = K.im2col.out_size(W, kw, self.stride[1], self.padding[1])
        R = Cg * kh * kw
        budget = self.COL_BUDGET if xp is np else self.GPU_COL_BUDGET
        step = max(1, min(N, budget // (self.groups * R * oh * ow)))
        return oh, ow, R, O // self.groups, step

    # ---- the steps ----------------------------------------------------------
    def _pointwise(self, n, kh, kw):
        """A 1x1 convolution, stride 1, no padding, on one image: its col is the image itself
        (C, H*W) -- no im2col copy, and dx is written by the GEMM, no col2im (ResNet's and
        MobileNet's 1x1 layers)."""
        return n == 1 and kh == kw == 1 and self.stride == (1, 1) and self.padding == (0, 0)

    def _bands(self, GR, kh, kw, oh, ow):
        """Bands (i0, i1) of output rows whose col fits COL_BUDGET, for one image on the CPU
        whose whole col would not (VGG's first layers: 115 MB each); None: the whole image."""
        if self._pointwise(1, kh, kw) or GR * oh * ow <= self.COL_BUDGET:
            return None
        band = max(1, self.COL_BUDGET // (GR * ow))
        return [(i0, min(oh, i0 + band)) for i0 in range(0, oh, band)]

    def _im2col(self, B, x, kh, kw, out):
        """col (C*kh*kw, n*L) of a chunk x (n, C, H, W), written into ``out`` (a view of a
        contiguous x itself for a 1x1 convolution on one image, ``_pointwise``)."""
        if self._pointwise(x.shape[0], kh, kw):
            return x.reshape(x.shape[1], -1)
        return B.im2col.im2col(x, kh, kw, self.stride, self.padding, out=out)

    @staticmethod
    def forward_gemm(xp: ModuleType, wg: Array, col: Array, rows: Array) -> None:
        """rows[g] = w[g] @ col[g] for each group: wg (G, O/G, R), col (G*R, n*L) -> rows (O, n*L)."""
        G, Og, R = wg.shape
        for g in range(G):
            xp.matmul(wg[g], col[g * R:(g + 1) * R], out=rows[g * Og:(g + 1) * Og])

    @staticmethod
    def forward_bias(B: ModuleType, rows: Array, b: Array | None, y: Array) -> None:
        """y (n, O, L) = rows (O, n*L) + b (O,), the layout change and the bias in one pass."""
        B.layout.rows_to_nchw(rows, b, y)

    @staticmethod
    def backward_gemm(xp: ModuleType, wg: Array, grows: Array, dcol: Array) -> None:
        """dcol[g] = w[g].T @ dy_rows[g]: grows (O, n*L) -> dcol (G*R, n*L), the input side."""
        G, Og, R = wg.shape
        for i in range(G):
            xp.matmul(wg[i].T, grows[i * Og:(i + 1) * Og], out=dcol[i * R:(i + 1) * R])

    @staticmethod
    def weight_gemm(grows: Array, col: Array, dw: Array) -> None:
        """dw[g] += dy_rows[g] @ col[g].T: grows (O, n*L), col (G*R, n*L) -> dw (G, O/G, R)."""
        G, Og, R = dw.shape
        for i in range(G):
            dw[i] += grows[i * Og:(i + 1) * Og] @ col[i * R:(i + 1) * R].T

    @staticmethod
    def backward_bias(B: ModuleType, g: Array) -> Array:
        """db (O,) = sum of g (N, O, L) over n and l."""
        return B.layout.bias_grad(g)

    @staticmethod
    def is_depthwise(x_shape: tuple, w_shape: tuple, groups: int) -> bool:
        """groups = C > 1 input channels, one input channel per filter: the depthwise kernels
        (kernels/depthwise_conv2d.py) instead of C one-row GEMMs."""
        return groups > 1 and groups == x_shape[1] and w_shape[1] == 1

    # ---- forward and backward: chunks and buffers ---------------------------
    def forward(self, x: Array, w: Array, b: Array | None = None, stride: Size2 = 1, padding: Size2 = 0,
                groups: int = 1) -> Array:
        xp, B = _xp(x), K.backend(x)
        self.stride, self.padding, self.groups = pair(stride), pair(padding), int(groups)
        self.depthwise = self.is_depthwise(x.shape, w.shape, self.groups)
        if self.depthwise:
            if any(self.needs_grad):
                self.x, self.w = x, w
            return B.depthwise_conv2d.forward(x, w, b, self.stride, self.padding)
        N, G, (O, _, kh, kw) = x.shape[0], self.groups, w.shape
        oh, ow, R, Og, step = self._geometry(x.shape, w.shape, xp)
        L = oh * ow
        x = xp.ascontiguousarray(x)
        wg = w.reshape(G, Og, R).astype(x.dtype, copy=False)
        y = xp.empty((N, O, L), dtype=x.dtype)
        # When the weight gradient will be needed (training), keep each chunk's
        # col for backward instead of recomputing it there.
        self.cols = [] if len(self.needs_grad) > 1 and self.needs_grad[1] else None

        def run_bands(n0, bands):       # one image, band by band of output rows
            for i0, i1 in bands:
                shape = (G * R, (i1 - i0) * ow)
                col = B.im2col.im2col(x[n0:n0 + 1], kh, kw, self.stride, self.padding,
                                      out=B.workspace.get("col", shape, x.dtype), rows=(i0, i1))
                rows = B.workspace.get("rows", (O, shape[1]), x.dtype)
                self.forward_gemm(xp, wg, col, rows)
                out = y[n0, :, i0 * ow:i1 * ow]
                if b is None:
                    out[...] = rows
                else:                   # rows + b, as forward_bias adds it
                    np.add(rows, b.astype(x.dtype, copy=False)[:, None], out=out)

        def run(a, z, step=step, bands=None):   # images [a, z), chunk by chunk
            for n0 in range(a, z, step):
                if bands is not None:
                    run_bands(n0, bands)
                    continue
                n1 = min(z, n0 + step)
                shape = (G * R, (n1 - n0) * L)
                col = self._im2col(B, x[n0:n1], kh, kw, B.workspace.get("col", shape, x.dtype)
                                   if self.cols is None else xp.empty(shape, x.dtype))
                if self.cols is not None:
                    self.cols.append(col)
                rows = y[n0].reshape(O, L) if n1 - n0 == 1 else B.workspace.get("rows", (O, (n1 - n0) * L), x.dtype)
                self.forward_gemm(xp, wg, col, rows)
                self.forward_bias(B, rows, b, y[n0:n1])
        if self.cols is None and xp is np:
            # the images handed out to the threads one by one (kernels/threads.py)
            bands = self._bands(G * R, kh, kw, oh, ow)
            K.threads.over_batch(lambda a, z: run(a, z, 1, bands), N, O * R * L)
        else:
            run(0, N)                           # training keeps the cols in order; the GPU takes chunks
        if any(self.needs_grad):
            self.x, self.w = x, w
        return y.reshape(N, O, oh, ow)

    def backward(self, g: Array) -> Grads:
        if self.depthwise:
            return self._backward_depthwise(g)
        xp, B = _xp(g), K.backend(g)
        x, w, G = self.x, self.w, self.groups
        N, (O, _, kh, kw) = x.shape[0], w.shape
        oh, ow, R, Og, step = self._geometry(x.shape, w.shape, xp)
        L = oh * ow
        g = xp.ascontiguousarray(g).reshape(N, O, L)
        need_x, need_w = self.needs_grad[0], self.needs_grad[1]
        need_b = len(self.needs_grad) > 2 and self.needs_grad[2]
        wg = w.reshape(G, Og, R).astype(g.dtype, copy=False)
        dx = xp.zeros(x.shape, dtype=g.dtype) if need_x else None
        dw = xp.zeros((G, Og, R), dtype=g.dtype) if need_w else None
        cols, self.cols = self.cols, None

        def run_bands(n0, bands):       # dx of one image, band by band of output rows
            for i0, i1 in bands:
                dcol = B.workspace.get("col", (G * R, (i1 - i0) * ow), g.dtype)
                self.backward_gemm(xp, wg, g[n0, :, i0 * ow:i1 * ow], dcol)
                B.im2col.col2im(dcol, (1,) + x.shape[1:], kh, kw, self.stride, self.padding,
                                out=dx[n0:n0 + 1], rows=(i0, i1))

        def run(a, z, step=step, bands=None):   # images [a, z), chunk by chunk
            for k, n0 in enumerate(range(a, z, step)):
                if bands is not None:
                    run_bands(n0, bands)
                    continue
                n1 = min(z, n0 + step)
                grows = B.layout.nchw_to_rows(g[n0:n1], B.workspace.get("grows", (O, (n1 - n0) * L), g.dtype)
                                              if n1 - n0 > 1 else None)
                if need_x and self._pointwise(n1 - n0, kh, kw):
                    self.backward_gemm(xp, wg, grows, dx[n0].reshape(G * R, L))
                elif need_x:
                    # dcol in forward's "col" buffer: col2im has consumed it before a weight
                    # gradient recomputes col there (one buffer of this size per thread, not two)
                    dcol = B.workspace.get("col", (G * R, (n1 - n0) * L), g.dtype)
                    self.backward_gemm(xp, wg, grows, dcol)
                    B.im2col.col2im(dcol, (n1 - n0,) + x.shape[1:], kh, kw, self.stride, self.padding,
                                    out=dx[n0:n1])
                if need_w:
                    col = cols[k] if cols else self._im2col(B, x[n0:n1], kh, kw,
                                                            B.workspace.get("col", (G * R, (n1 - n0) * L), x.dtype))
                    self.weight_gemm(grows, col, dw)
        if need_w or xp is not np:
            run(0, N)                           # one dw accumulated chunk by chunk; the GPU takes chunks
        else:
            bands = self._bands(G * R, kh, kw, oh, ow) if need_x else None
            K.threads.over_batch(lambda a, z: run(a, z, 1, bands), N, O * R * L)     # as in forward
        db = self.backward_bias(B, g) if need_b else None
        if dw is not None:
            dw = dw.reshape(w.shape).astype(w.dtype, copy=False)
        return dx, dw, db

    def _backward_depthwise(self, g: Array) -> Grads:
        """The chain rule of kernels/depthwise_conv2d.py: dx and dw by its loops, db = sum of g."""
        B, x, w = K.backend(g), self.x, self.w
        need = tuple(self.needs_grad) + (False,) * (3 - len(self.needs_grad))
        dx = B.depthwise_conv2d.backward_input(g, w, x.shape, self.stride, self.padding) if need[0] else None
        dw = (B.depthwise_conv2d.backward_weight(g, x, w.shape, self.stride, self.padding).astype(w.dtype, copy=False)
              if need[1] else None)
        db = self.backward_bias(B, g.reshape(g.shape[0], g.shape[1], -1)) if need[2] else None
        return dx, dw, db


class Linear(Function):
    """Fully connected layer.  x (N, in), w (out, in), b (out,) -> y = x @ w.T + b.
    Chain rule:  dx = g @ w;   dw = g.T @ x;   db = sum_n g.

    Up to ``SKINNY_MAX_ROWS`` rows on the CPU, y comes from the kernel that
    streams the weight once for all rows (kernels/linear.py; each sum in the
    naive order).  It reads the weight transposed, Wt: ``packed()``, if given,
    returns (Wt, None) -- for ``nn.Linear``'s frozen weight the array that
    weight is held in, no copy -- or, for bfloat16 storage, (Wt, W) in bfloat16
    bits -- or None (then BLAS, as above the crossover and on the GPU).  dx
    comes from ``kernels.linear.backward``: the same kernel on a C-contiguous W
    (or the bfloat16 W), BLAS on a W held as Wt.T.  dw stays a GEMM.  A BLAS product
    below ``BLAS_PARALLEL_MIN`` multiply-adds runs on one BLAS thread
    (``kernels.threads.blas_threads_for``)."""

    SKINNY_MAX_ROWS = 32        # the measured BLAS crossover (scripts/bench_cpu.py --fc)

    def _skinny(self, a):
        return _xp(a) is np and a.ndim == 2 and a.shape[0] <= self.SKINNY_MAX_ROWS

    def forward(self, x: Array, w: Array, b: Array | None = None,
                packed: Callable[[], tuple | None] | None = None) -> Array:
        copies = packed() if packed is not None and self._skinny(x) else None
        wt, self.wb = copies if copies is not None else (None, None)
        if wt is not None and not (wt.dtype == x.dtype or (wt.dtype == np.uint16 and x.dtype == np.float32)):
            wt = self.wb = None
        if wt is not None:
            y = K.linear.forward(x, wt, b)
        else:
            with K.threads.blas_threads_for(x.shape[0] * w.size):
                y = x @ w.T.astype(x.dtype, copy=False)
            if b is not None:
                y += b
        if any(self.needs_grad):
            self.x = x if self.needs_grad[1] else None
            self.w = w
        return y

    def backward(self, g: Array) -> Grads:
        dx = None
        if self.needs_grad[0]:
            if self.wb is not None and self._skinny(g):
                dx = K.linear.backward(g, self.wb)
            else:
                w = self.w.astype(g.dtype, copy=False)
                if self._skinny(g):
                    dx = K.linear.backward(g, w)
                else:
                    with K.threads.blas_threads_for(g.shape[0] * w.size):
                        dx = g @ w
        dw = None
        if self.needs_grad[1]:
            with K.threads.blas_threads_for(g.shape[0] * self.w.size):
                dw = (g.T @ self.x).astype(self.w.dtype, copy=False)
        db = g.sum(0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        return dx, dw, db


class ReLU(Function):
    """y = max(x, 0) (NaN stays NaN).  Backward follows the engine's current rule
    (``te.relu_backward``), looked up in the one table ``engine.RELU_MASKS``:
        dx = g * [x > 0 if mask_x] * [g > 0 if mask_g]
    backprop masks by x, deconvnet by g, guided by both."""

    def forward(self, x: Array) -> Array:
        y = K.backend(x).relu.forward(x)
        self.y = y
        return y

    def backward(self, g: Array) -> Array:
        mask_x, mask_g = engine.RELU_MASKS[engine.current_relu_rule()]
        return K.backend(g).relu.backward(self.y, g, mask_x, mask_g)


class MaxPool2d(Function):
    """Max-pooling, k x k windows, stride s, padding p; switches recorded in forward.
    x (N, C, H, W) -> y (N, C, OH, OW).   dx[argmax of window] += dy.
    Padded positions never win (as -inf); ``ceil_mode`` rounds the output size up
    (PyTorch's rule, ``kernels.im2col.out_size``), the windows that then hang off
    the end count only their pixels inside the input."""

    def forward(self, x: Array, kernel_size: int = 3, stride: int = 2, padding: int = 0,
                ceil_mode: bool = False) -> Array:
        self.window = (int(kernel_size), int(stride), int(padding))
        y, switch = K.backend(x).max_pool2d.forward(x, *self.window, ceil_mode=bool(ceil_mode))
        self.switch, self.x_shape = switch, x.shape
        return y

    def backward(self, g: Array) -> Array:
        return K.backend(g).max_pool2d.backward(g, self.switch, self.x_shape, self.window)


class LocalResponseNorm(Function):
    """Across-channel LRN: y = x * (k + alpha/size * sum_window x^2)^(-beta).
    See kernels/lrn.py for the backward formula."""

    def forward(self, x: Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Array:
        self.p = (int(size), float(alpha), float(beta))
        y, scale = K.backend(x).lrn.forward(x, int(size), float(alpha), float(beta), float(k))
        if any(self.needs_grad):
            self.x, self.y, self.scale = x, y, scale
        return y

    def backward(self, g: Array) -> Array:
        return K.backend(g).lrn.backward(self.x, self.y, self.scale, g, *self.p)


class AdaptiveAvgPool2d(Function):
    """x (N, C, H, W) -> (N, C, OH, OW), each cell the mean of its adaptive window."""

    def forward(self, x: Array, output_size: Size2 = (6, 6)) -> Array:
        self.x_shape = x.shape
        out_hw = pair(output_size)
        if x.shape[2:] == out_hw:
            self.identity = True
            return x
        self.identity = False
        return K.backend(x).avg_pool2d.adaptive_forward(x, out_hw)

    def backward(self, g: Array) -> Array:
        return g if self.identity else K.backend(g).avg_pool2d.adaptive_backward(g, self.x_shape)


class AvgPool2d(Function):
    """Average pooling, k x k windows, stride s, padding p (PyTorch's ``avg_pool2d``):
        y[n, c, i, j] = sum of x over the window's pixels inside the input / divisor
    divisor = the window's size within the padded input (``count_include_pad``: the
    padding counts as zeros) or the number of its pixels inside the input; with
    ``ceil_mode`` the last windows may hang off the padded input, and that part
    counts for neither (kernels/avg_pool2d.py).
    Chain rule: dx[n, c, h, w] = sum over the windows (i, j) holding (h, w) of
    g[n, c, i, j] / divisor(i, j)."""

    def forward(self, x: Array, kernel_size: int = 2, stride: int | None = None, padding: int = 0,
                count_include_pad: bool = True, ceil_mode: bool = False) -> Array:
        k = int(kernel_size)
        self.window = (k, k if stride is None else int(stride), int(padding), bool(ceil_mode),
                       bool(count_include_pad))
        self.x_shape = x.shape
        return K.backend(x).avg_pool2d.forward(x, *self.window)

    def backward(self, g: Array) -> Array:
        return K.backend(g).avg_pool2d.backward(g, self.x_shape, *self.window)


class BatchNorm(Function):
    """Inference batch normalisation of x (N, C, H, W) (or (N, C)) with fixed statistics:
        y = (x - mean) * s + bias,   s = weight / sqrt(var + eps)     (per channel c)
    mean and var are constants (the running statistics), weight and bias inputs.
    Chain rule (xhat = (x - mean) / sqrt(var + eps)):
        dx = g * s;   dweight = sum_{n, h, w} g * xhat;   dbias = sum_{n, h, w} g
    s and 1 / sqrt(var + eps) are computed in float64 and applied in x's dtype, one
    pass per array (kernels/batch_norm.py).  A batch norm right after a convolution
    is better folded into it at load time (``nn.fold_batch_norm``): then it costs
    nothing."""

    def forward(self, x: Array, weight: Array, bias: Array, mean: Array | None = None, var: Array | None = None,
                eps: float = 1e-5) -> Array:
        xp = _xp(x)
        inv = 1.0 / xp.sqrt(xp.asarray(var, dtype=np.float64) + float(eps))
        self.scale = (xp.asarray(weight, dtype=np.float64) * inv).astype(x.dtype)
        self.mean = xp.ascontiguousarray(xp.asarray(mean, dtype=x.dtype))
        y = K.backend(x).batch_norm.forward(x, self.mean, self.scale, xp.ascontiguousarray(bias.astype(x.dtype)))
        if len(self.needs_grad) > 1 and (self.needs_grad[1] or self.needs_grad[2]):
            self.x, self.inv, self.w_dtype = x, inv.astype(x.dtype), weight.dtype
        return y

    def backward(self, g: Array) -> Grads:
        B = K.backend(g)
        dx = B.batch_norm.backward_input(g, self.scale) if self.needs_grad[0] else None
        dw = db = None
        if self.needs_grad[1] or self.needs_grad[2]:
            dw, db = B.batch_norm.backward_params(g, self.x, self.mean, self.inv)
            dw = dw.astype(self.w_dtype, copy=False) if self.needs_grad[1] else None
            db = db if self.needs_grad[2] else None
        return dx, dw, db


class Concat(Function):
    """y = the inputs joined along ``axis`` (GoogLeNet's inception, SqueezeNet's fire).
    Chain rule: each input's gradient is its slice of g."""

    def forward(self, *arrays: Array, axis: int = 1) -> Array:
        self.axis = axis
        self.bounds = np.cumsum([0] + [a.shape[axis] for a in arrays])
        return _xp(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g: Array) -> Grads:
        xp, idx = _xp(g), [slice(None)] * g.ndim
        out = []
        for i, need in enumerate(self.needs_grad):
            idx[self.axis] = slice(int(self.bounds[i]), int(self.bounds[i + 1]))
            out.append(xp.ascontiguousarray(g[tuple(idx)]) if need else None)
        return tuple(out)


class Clip(Function):
    """y = min(max(x, lo), hi) (ReLU6: lo = 0, hi = 6; NaN stays NaN).  Backward: the
    engine's ReLU rule (``te.relu_backward``, ``engine.RELU_MASKS``) acts at the LOWER
    bound, the upper bound always gates like the true gradient:
        backprop   dx = g * [lo < x < hi]
        deconvnet  dx = relu(g) * [x < hi]
        guided     dx = g * [x > lo] * [x < hi] * [g > 0]
    (kernels/clip.py; at x = lo or x = hi exactly, no gradient, as PyTorch's hardtanh)."""

    def forward(self, x: Array, lo: float = 0.0, hi: float = 6.0) -> Array:
        self.lo, self.hi = lo, hi
        self.y = K.backend(x).clip.forward(x, lo, hi)
        return self.y

    def backward(self, g: Array) -> Array:
        mask_x, mask_g = engine.RELU_MASKS[engine.current_relu_rule()]
        return K.backend(g).clip.backward(self.y, g, self.lo, self.hi, mask_x, mask_g)


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed as exp(min(x, 0)) / (1 + exp(-|x|)) (no overflow).
    Chain rule: dx = g * y * (1 - y)."""

    def forward(self, x: Array) -> Array:
        xp = _xp(x)
        self.y = xp.exp(xp.minimum(x, 0)) / (1 + xp.exp(-xp.abs(x)))
        return self.y

    def backward(self, g: Array) -> Array:
        return g * self.y * (1 - self.y)


class SiLU(Function):
    """y = x * sigmoid(x) (swish).  Chain rule: dx = g * s * (1 + x * (1 - s)), s = sigmoid(x)."""

    def forward(self, x: Array) -> Array:
        xp = _xp(x)
        self.x, self.s = x, xp.exp(xp.minimum(x, 0)) / (1 + xp.exp(-xp.abs(x)))
        return x * self.s

    def backward(self, g: Array) -> Array:
        return g * self.s * (1 + self.x * (1 - self.s))


class Upsample(Function):
    """Nearest-neighbour upsampling by an integer factor s:
    x (N, C, H, W) -> y (N, C, s*H, s*W),  y[n, c, i, j] = x[n, c, i // s, j // s].
    Backward: each input cell fed s*s outputs, so dx[n, c, h, w] = sum of g over its
    s x s block.  (The learned inversion decoders, explain/decoder.py, bring their 32 x 32
    read-out to the image size with it.)"""

    def forward(self, x: Array, factor: int = 2) -> Array:
        s = self.s = int(factor)
        N, C, H, W = x.shape
        y = _xp(x).empty((N, C, H * s, W * s), x.dtype)
        for a in range(s):                  # s*s strided copies: y[..., a::s, b::s] = x
            for b in range(s):
                y[:, :, a::s, b::s] = x
        return y

    def backward(self, g: Array) -> Array:
        s = self.s
        dx = g[:, :, 0::s, 0::s].copy()
        for a in range(s):                  # s*s strided adds (a reduce over two strided
            for b in range(s):              # axes of a 6-d view is several times slower)
                if a or b:
                    dx += g[:, :, a::s, b::s]
        return dx


class Dropout(Function):
    """Training: y = x * m / (1 - p), m ~ Bernoulli(1 - p) from the engine's seeded
    generator; evaluation: y = x.  Backward: dx = g * m / (1 - p).
    The keep/drop draw is always made on the host, so a seed gives the same masks on
    the CPU and the GPU; on the GPU the boolean mask (one byte per element) is then
    copied to the device once per forward."""

    def forward(self, x: Array, p: float = 0.5, training: bool = False) -> Array:
        if not training or p == 0:
            self.mask = None
            return x
        keep = engine.rng().random(x.shape) >= p
        self.mask = _xp(x).asarray(keep).astype(x.dtype) / scalar_like(1 - p, x)
        return x * self.mask

    def backward(self, g: Array) -> Array:
        return g if self.mask is None else g * self.mask


class Reshape(Function):
    """y = x viewed with a new shape; dx = g viewed with the old one."""

    def forward(self, x: Array, shape: tuple[int, ...] | None = None) -> Array:
        self.x_shape = x.shape
        return x.reshape(shape)

    def backward(self, g: Array) -> Array:
        return g.reshape(self.x_shape)


# --------------------------------------------------------------------------
# exp, log, max, and the softmax family
# --------------------------------------------------------------------------
def _logsumexp(s, axis=-1):
    """log sum_j exp(s_j) over ``axis`` (kept as size 1), as m + log sum_j exp(s_j - m)
    with m = max_j s_j: every exp(s_j - m) <= 1, so nothing overflows.  The one home of
    this formula (softmax, logsumexp, log_softmax and cross_entropy all use it).  A row
    of -inf gives -inf, a row holding +inf gives +inf, a NaN gives NaN."""
    xp = _xp(s)
    m = s.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    return m + xp.log(xp.exp(s - m).sum(axis=axis, keepdims=True))


class Exp(Function):
    """y = exp(x).  Chain rule: dx = g * exp(x) = g * y."""

    def forward(self, x: Array) -> Array:
        self.y = _xp(x).exp(x)
        return self.y

    def backward(self, g: Array) -> Array:
        return g * self.y


class Log(Function):
    """y = log(x), natural logarithm (x <= 0 gives -inf / NaN, as NumPy).
    Chain rule: dx = g / x."""

    def forward(self, x: Array) -> Array:
        self.x = x
        return _xp(x).log(x)

    def backward(self, g: Array) -> Array:
        return g / self.x


class Max(Function):
    """y = max of x over ``axis`` (an int, a tuple, or None for all axes).
    Chain rule, with the subgradient at ties stated: the maximum is a piecewise-linear
    function whose derivative is 1 at the one maximal entry; where k entries tie for
    the maximum, each gets 1/k of g (the average of the one-hot subgradients: the
    result is symmetric in the tied entries, and summing over them gives g, as for
    PyTorch's ``amax``):
        dx = g * [x == y] / #{x == y}      (y and g broadcast back over ``axis``)"""

    def forward(self, x: Array, axis: Axis = None, keepdims: bool = False) -> Array:
        self.x, self.axis = x, axis
        self.y = x.max(axis=axis, keepdims=True)
        return self.y if keepdims else self.y.reshape(_reduced_shape(x.shape, axis))

    def backward(self, g: Array) -> Array:
        tie = self.x == self.y
        count = tie.sum(axis=self.axis, keepdims=True)
        return tie * (g.reshape(self.y.shape) / count)


def _reduced_shape(shape, axis):
    """``shape`` without the ``axis`` axes (all of them for None)."""
    if axis is None:
        return ()
    axes = {a % len(shape) for a in np.atleast_1d(axis)}
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class LogSumExp(Function):
    """y = log sum_j exp(s_j) over ``axis`` (``_logsumexp``: the max subtracted first).
    Chain rule: dy/ds_j = exp(s_j) / sum_k exp(s_k) = softmax(s)_j, so ds = g * softmax(s)."""

    def forward(self, s: Array, axis: Axis = -1, keepdims: bool = False) -> Array:
        lse = _logsumexp(s, axis)
        self.p, self.kept = _xp(s).exp(s - lse), lse.shape
        return lse if keepdims else lse.reshape(_reduced_shape(s.shape, axis))

    def backward(self, g: Array) -> Array:
        return self.p * g.reshape(self.kept)


class Softmax(Function):
    """p_i = exp(s_i) / sum_j exp(s_j) = exp(s_i - logsumexp(s)) over ``axis``.
    Chain rule: dp_i/ds_j = p_i ([i == j] - p_j), so ds = p * (g - sum_i g_i p_i)."""

    def forward(self, s: Array, axis: int = -1) -> Array:
        self.axis = axis
        self.p = _xp(s).exp(s - _logsumexp(s, axis))
        return self.p

    def backward(self, g: Array) -> Array:
        return self.p * (g - (g * self.p).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y_i = s_i - logsumexp(s) over ``axis`` (log of the softmax, without its underflow).
    Chain rule: dy_i/ds_j = [i == j] - softmax(s)_j, so ds = g - softmax(s) * sum_i g_i,
    softmax(s) = exp(y)."""

    def forward(self, s: Array, axis: int = -1) -> Array:
        self.axis = axis
        self.y = s - _logsumexp(s, axis)
        return self.y

    def backward(self, g: Array) -> Array:
        return g - _xp(g).exp(self.y) * g.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    """Mean cross-entropy of log-softmax(scores) (N, K) against integer labels (N,).
    L = -1/N sum_n log softmax(s_n)[y_n] = 1/N sum_n (logsumexp(s_n) - s_n[y_n]);
    chain rule: dL/ds = (softmax(s) - onehot(y)) / N, times the incoming g.
    On the GPU, labels given as a host array are checked there and copied to the
    device once (N integers)."""

    def forward(self, s: Array, labels: Tensor | ArrayLike | None = None) -> Array:
        xp = _xp(s)
        labels = labels.data if isinstance(labels, Tensor) else labels
        labels = labels if _xp(labels) is not np else np.asarray(labels)
        if labels.shape != s.shape[:1] or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be {s.shape[0]} integers, got {labels.dtype} array of shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= s.shape[1]):
            raise ValueError(f"labels must be in [0, {s.shape[1]}), got values {labels.min()}..{labels.max()}")
        labels = xp.asarray(labels)
        logp = s - _logsumexp(s, -1)
        n = s.shape[0]
        self.p, self.labels = xp.exp(logp), labels
        return xp.asarray(-logp[xp.arange(n), labels].mean(), dtype=s.dtype)

    def backward(self, g: Array) -> Array:
        d = self.p.copy()
        d[_xp(d).arange(d.shape[0]), self.labels] -= 1
        return d * (g / d.shape[0])


# --------------------------------------------------------------------------
# Elementwise and reductions (for losses and image regularisers)
# --------------------------------------------------------------------------
def _unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, back to ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdims=True)
    return g


class Add(Function):
    """y = a + b (broadcasting).  da = g, db = g (summed over broadcast axes)."""

    def forward(self, a: Array, b: Array) -> Array:
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g: Array) -> Grads:
        return (_unbroadcast(g, self.shapes[0]) if self.needs_grad[0] else None,
                _unbroadcast(g, self.shapes[1]) if self.needs_grad[1] else None)


class Mul(Function):
    """y = a * b (broadcasting).  da = g * b, db = g * a."""

    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a * b

    def backward(self, g: Array) -> Grads:
        return (_unbroadcast(g * self.b, self.a.shape) if self.needs_grad[0] else None,
                _unbroadcast(g * self.a, self.b.shape) if self.needs_grad[1] else None)


class Pow(Function):
    """y = x ** p for a constant p.  dx = g * p * x ** (p - 1)."""

    def forward(self, x: Array, p: float = 2.0) -> Array:
        self.x, self.pw = x, p
        return x ** scalar_like(p, x)

    def backward(self, g: Array) -> Array:
        p = self.pw
        return g * (scalar_like(p, g) * self.x ** scalar_like(p - 1, self.x))


class Abs(Function):
    """y = |x|.  dx = g * sign(x) (0 at x = 0)."""

    def forward(self, x: Array) -> Array:
        self.x = x
        return _xp(x).abs(x)

    def backward(self, g: Array) -> Array:
        return g * _xp(g).sign(self.x)


class Sum(Function):
    """y = sum of x over ``axis`` (all axes by default).  dx = g broadcast back."""

    def forward(self, x: Array, axis: Axis = None, keepdims: bool = False) -> Array:
        self.x_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return _xp(x).asarray(x.sum(axis=axis, keepdims=keepdims))

    def backward(self, g: Array) -> Array:
        xp = _xp(g)
        if self.axis is not None and not self.keepdims:
            g = xp.expand_dims(g, self.axis)
        return xp.broadcast_to(g, self.x_shape).copy()


def _index_on(xp, idx):
    """``idx`` with its integer/boolean arrays on xp's device (CuPy takes no NumPy index
    arrays): index arrays are small and are copied to the GPU once per call."""
    if xp is np:
        return idx
    move = lambda i: xp.asarray(i) if isinstance(i, (np.ndarray, list)) else i  # noqa: E731
    return tuple(move(i) for i in idx) if isinstance(idx, tuple) else move(idx)


def _repeats_possible(idx):
    """True if ``idx`` holds an integer index array (which may pick an element twice)."""
    parts = idx if isinstance(idx, tuple) else (idx,)
    return any(getattr(i, "dtype", None) is not None and i.dtype.kind in "iu" and getattr(i, "ndim", 0) > 0
               for i in parts)


class Index(Function):
    """y = x[idx] (any NumPy index).  dx = zeros with g scattered (added) back at idx."""

    def forward(self, x: Array, idx: object = None) -> Array:   # idx: any NumPy index
        xp = _xp(x)
        self.x_shape, self.idx = x.shape, _index_on(xp, idx)
        return xp.asarray(x[self.idx])

    def backward(self, g: Array) -> Array:
        xp = _xp(g)
        dx = xp.zeros(self.x_shape, dtype=g.dtype)
        if _repeats_possible(self.idx):
            xp.add.at(dx, self.idx, g)      # an element picked twice gets both gradients
        else:                               # no element is picked twice (slices, masks): one buffered
            dx[self.idx] += g               # 0 + g, as add.at computes it, without its per-element loop
        return dx


# --------------------------------------------------------------------------
# Image priors, image maps and row selection of the optimisation-based
# explainers (explain/regularizers.py, transforms.py, inversion.py use them)
# --------------------------------------------------------------------------
class AlphaNorm(Function):
    """y_n = 1/(H W) sum_{c,i,j} |x_ncij / B|^alpha.
    dy_n/dx = alpha / (H W B) * sign(x) |x/B|^(alpha-1)."""

    def forward(self, x: Array, alpha: float = 6.0, scale: float = 1.0) -> Array:
        N, C, H, W = x.shape
        self.x, self.alpha, self.scale, self.hw = x, float(alpha), float(scale), float(H * W)
        u = _xp(x).abs(x / scalar_like(self.scale, x))
        return (u ** scalar_like(self.alpha, x)).reshape(N, -1).sum(1) / scalar_like(self.hw, x)

    def backward(self, g: Array) -> Array:
        x, a, B = self.x, self.alpha, self.scale
        xp = _xp(x)
        u = x / scalar_like(B, x)
        d = xp.sign(u) * xp.abs(u) ** scalar_like(a - 1, x) * scalar_like(a / (B * self.hw), x)
        return (g.reshape(-1, 1, 1, 1) * d).astype(x.dtype, copy=False)


class TotalVariation(Function):
    """y_n = 1/(H W) sum_{c,i<H-1,j<W-1} ((dh^2 + dv^2) / V^2)^(beta/2),
    dh = x[i, j+1] - x[i, j],  dv = x[i+1, j] - x[i, j].
    With s = (dh^2 + dv^2)/V^2 and a = beta (s + eps)^(beta/2 - 1) / (V^2 H W):
    dy/dx[i, j+1] += a dh,  dy/dx[i+1, j] += a dv,  dy/dx[i, j] -= a (dh + dv).
    ``eps`` (only used for beta < 2) keeps the gradient finite where the image is flat."""

    def forward(self, x: Array, beta: float = 2.0, scale: float = 1.0, eps: float = 1e-8) -> Array:
        N, C, H, W = x.shape
        c = x[:, :, :-1, :-1]
        dh = x[:, :, :-1, 1:] - c
        dv = x[:, :, 1:, :-1] - c
        v2 = scalar_like(float(scale) ** 2, x)
        s = (dh * dh + dv * dv) / v2
        self.beta, self.hw, self.v2 = float(beta), float(H * W), v2
        self.shape, self.dh, self.dv = x.shape, dh, dv
        if self.beta == 2.0:
            self.s = None
            val = s
        else:
            self.s = s + scalar_like(eps, x)
            val = self.s ** scalar_like(self.beta / 2, x)
        return val.reshape(N, -1).sum(1) / scalar_like(self.hw, x)

    def backward(self, g: Array) -> Array:
        dt, xp = self.dh.dtype, _xp(self.dh)
        a = scalar_like(self.beta / (self.v2 * self.hw), self.dh) * g.reshape(-1, 1, 1, 1).astype(dt)
        if self.s is not None:
            a = a * self.s ** scalar_like(self.beta / 2 - 1, self.dh)
        ah, av = a * self.dh, a * self.dv
        dx = xp.zeros(self.shape, dt)
        dx[:, :, :-1, 1:] += ah
        dx[:, :, 1:, :-1] += av
        dx[:, :, :-1, :-1] -= ah + av
        return dx


class Roll(Function):
    """y = x shifted by (dy, dx) pixels with wrap-around (a permutation);
    its adjoint is its inverse, the roll by (-dy, -dx)."""

    def forward(self, x: Array, dy: int = 0, dx: int = 0) -> Array:
        self.dy, self.dx = int(dy), int(dx)
        return _xp(x).roll(x, (self.dy, self.dx), axis=(2, 3))

    def backward(self, g: Array) -> Array:
        return _xp(g).roll(g, (-self.dy, -self.dx), axis=(2, 3))


class Resample(Function):
    """Bilinear resampling with fixed taps: y[n, c, q] = sum_k w[k, q] x[n, c, idx[k, q]].

    ``idx`` (4, Hout*Wout) int flat input positions and ``w`` (4, Hout*Wout) their
    bilinear weights (see :func:`affine_taps`, :func:`resize_taps`).  Backward, the
    adjoint: dx[n, c, idx[k, q]] += w[k, q] dy[n, c, q] (a float64 bincount per plane)."""

    def forward(self, x: Array, idx: Array | None = None, w: Array | None = None,
                out_hw: tuple[int, int] | None = None) -> Array:
        N, C, H, W = x.shape
        xp = _xp(x)
        self.in_shape, self.idx, self.w = x.shape, idx, w.astype(x.dtype, copy=False)
        flat = x.reshape(N, C, H * W)
        y = xp.take(flat, idx[0], axis=2) * self.w[0]         # (N, C, Q), the taps added in order k = 0..3
        for k in range(1, 4):
            y += xp.take(flat, idx[k], axis=2) * self.w[k]
        return y.reshape(N, C, *out_hw)

    def backward(self, g: Array) -> Array:
        N, C, H, W = self.in_shape
        xp = _xp(g)
        nc, q = N * C, self.idx.shape[1]
        gq = (g.reshape(nc, 1, q) * self.w).reshape(nc, 4 * q).astype(np.float64)    # (NC, 4 Q)
        at = self.idx.reshape(-1)
        dx = xp.empty((nc, H * W), g.dtype)
        for i in range(nc):                                    # one bincount per image plane
            dx[i] = xp.bincount(at, weights=gq[i], minlength=H * W)
        return dx.reshape(self.in_shape)


class ColourMix(Function):
    """y[n, i] = sum_j M[i, j] x[n, j]: mixes the channels of every pixel.
    Backward: dx[n, j] = sum_i M[i, j] dy[n, i] (M^T)."""

    def forward(self, x: Array, M: Array | None = None) -> Array:
        self.M = M.astype(x.dtype, copy=False)
        return _xp(x).einsum("ij,njhw->nihw", self.M, x)

    def backward(self, g: Array) -> Array:
        return _xp(g).einsum("ij,nihw->njhw", self.M, g)


class FourierImage(Function):
    """x = irfft2(w * (p[..., 0] + i p[..., 1]), s=(H, W), norm="ortho"):
    p (N, C, H, W//2+1, 2) -> x (N, C, H, W), ``w`` (H, W//2+1) the frequency scaling.

    Backward (the real-linear adjoint of irfft2): with G = rfft2(dx, norm="ortho") * c * w,
    where c = 2 for the columns 0 < k < W/2 (which irfft2 counts twice, once for the
    conjugate half) and 1 for k = 0 and k = W/2: dp = (Re G, Im G)."""

    def forward(self, p: Array, w: Array | None = None, hw: tuple[int, int] | None = None) -> Array:
        xp = _xp(p)
        self.w, self.hw = w, tuple(hw)
        z = (p[..., 0] + 1j * p[..., 1]) * w
        return xp.fft.irfft2(z, s=self.hw, axes=(2, 3), norm="ortho").astype(p.dtype, copy=False)

    def backward(self, g: Array) -> Array:
        xp = _xp(g)
        G = xp.fft.rfft2(g, axes=(2, 3), norm="ortho") * (rfft_column_counts(self.hw, xp) * self.w)
        return xp.stack([G.real, G.imag], axis=-1).astype(g.dtype, copy=False)


def rfft_column_counts(hw: tuple[int, int], xp: ModuleType = np) -> Array:
    """How often irfft2 counts each rfft2 column of a (H, W) image: 2 for 0 < k < W/2 (the
    column and its conjugate), 1 for k = 0 and k = W/2 (``FourierImage``; the frequency
    scaling of explain/transforms.py)."""
    H, W = hw
    c = np.full(W // 2 + 1, 2.0)
    c[0] = 1.0
    if W % 2 == 0:
        c[-1] = 1.0
    return xp.asarray(c)


class TakeRows(Function):
    """y = x[rows] (``rows`` distinct indices along the batch axis).  dx = zeros with dx[rows] = g."""

    def forward(self, x: Array, rows: np.ndarray | None = None) -> Array:
        self.shape, self.rows = x.shape, _index_on(_xp(x), np.asarray(rows))
        return x[self.rows]

    def backward(self, g: Array) -> Array:
        dx = _xp(g).zeros(self.shape, g.dtype)
        dx[self.rows] = g
        return dx


class PutRows(Function):
    """y (n, ...) = zeros with y[rows] = x: the adjoint of TakeRows.  dx = g[rows]."""

    def forward(self, x: Array, rows: np.ndarray | None = None, n: int = 0) -> Array:
        self.rows = _index_on(_xp(x), np.asarray(rows))
        y = _xp(x).zeros((n,) + x.shape[1:], x.dtype)
        y[self.rows] = x
        return y

    def backward(self, g: Array) -> Array:
        return g[self.rows]


# --------------------------------------------------------------------------
# Functional API and Tensor operators
# --------------------------------------------------------------------------
def _const(v, like: Tensor) -> Tensor:
    """A constant operand in like's dtype.  Next to a GPU tensor, a scalar is made on
    the GPU (a fill, no copy); an array stays where it is (a host array next to a GPU
    tensor is then refused by Function.apply: move it explicitly)."""
    if isinstance(v, Tensor):
        return v
    xp = _xp(like.data)
    if xp is not np and _xp(v) is np and np.ndim(v) == 0:
        return Tensor(xp.full((), np.asarray(v, dtype=like.dtype)[()], dtype=like.dtype))
    return Tensor(_xp(v).asarray(v, dtype=like.dtype))


def _int(name, v, lo, op):
    """v as an int >= lo, or a one-line ValueError naming ``op`` and ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{op}: {name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _square(name, v, lo, op):
    """An int, or a pair of equal ints (the pooling kernels take square windows)."""
    if not np.isscalar(v):
        v = tuple(v)
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"{op}: {name} must be one integer or a pair of equal integers, got {v!r}")
        v = v[0]
    return _int(name, v, lo, op)


def _check_pool(op, x, k, s, p, ceil_mode):
    """Validate a pooling window on x (N, C, H, W); return the output size (OH, OW)."""
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W), got shape {x.shape}")
    if 2 * p > k:
        raise ValueError(f"{op}: padding {p} must be at most half of kernel_size {k}")
    out = tuple(K.im2col.out_size(n, k, s, p, ceil_mode) for n in x.shape[2:])
    if min(out) < 1:
        raise ValueError(f"{op}: kernel_size {k} (padding {p}) is larger than the {x.shape[2]}x{x.shape[3]} input")
    return out


def conv2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: Size2 = 1, padding: Size2 = 0,
           groups: int = 1, dilation: Size2 = 1) -> Tensor:
    """Convolution (cross-correlation), w (O, C/groups, kh, kw); ``groups`` = C with one
    input channel per filter is a depthwise convolution.  Dilation is not supported
    (only 1)."""
    if pair(dilation) != (1, 1):
        raise ValueError(f"conv2d: dilation {dilation!r} is not supported (only 1)")
    groups = _int("groups", groups, 1, "conv2d")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d: need x (N, C, H, W) and w (O, C/groups, kh, kw), got {x.shape} and {w.shape}")
    C, O = x.shape[1], w.shape[0]
    if C % groups or O % groups or w.shape[1] * groups != C:
        raise ValueError(f"conv2d: weight {w.shape} with groups={groups} does not fit {C} input channels "
                         f"(need C and O divisible by groups, w.shape[1] = C/groups)")
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"conv2d: bias shape {b.shape} is not ({O},)")
    args = (x, w) if b is None else (x, w, b)
    return Conv2d.apply(*args, stride=stride, padding=padding, groups=groups)


def linear(x: Tensor, w: Tensor, b: Tensor | None = None,
           packed: Callable[[], tuple | None] | None = None) -> Tensor:
    """``packed``: optional callable returning w's copies for the kernel (see ``Linear``)."""
    return Linear.apply(*((x, w) if b is None else (x, w, b)), packed=packed)


def relu(x: Tensor) -> Tensor:
    return ReLU.apply(x)


def max_pool2d(x: Tensor, kernel_size: int = 3, stride: int = 2, padding: int = 0,
               ceil_mode: bool = False) -> Tensor:
    """Max-pooling; padded positions never win; ``ceil_mode`` as PyTorch's (see ``MaxPool2d``)."""
    k, s = _square("kernel_size", kernel_size, 1, "max_pool2d"), _square("stride", stride, 1, "max_pool2d")
    p = _square("padding", padding, 0, "max_pool2d")
    _check_pool("max_pool2d", x, k, s, p, ceil_mode)
    return MaxPool2d.apply(x, kernel_size=k, stride=s, padding=p, ceil_mode=bool(ceil_mode))


def avg_pool2d(x: Tensor, kernel_size: int, stride: int | None = None, padding: int = 0,
               count_include_pad: bool = True, ceil_mode: bool = False) -> Tensor:
    """Average pooling with PyTorch's ``avg_pool2d`` semantics (see ``AvgPool2d``);
    ``stride`` defaults to ``kernel_size``."""
    k = _square("kernel_size", kernel_size, 1, "avg_pool2d")
    s = k if stride is None else _square("stride", stride, 1, "avg_pool2d")
    p = _square("padding", padding, 0, "avg_pool2d")
    _check_pool("avg_pool2d", x, k, s, p, ceil_mode)
    return AvgPool2d.apply(x, kernel_size=k, stride=s, padding=p, count_include_pad=bool(count_include_pad),
                           ceil_mode=bool(ceil_mode))


def global_avg_pool2d(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, 1, 1), the mean of each plane: adaptive pooling to 1 x 1."""
    return AdaptiveAvgPool2d.apply(x, output_size=(1, 1))


def batch_norm(x: Tensor, mean: ArrayLike, var: ArrayLike, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Inference batch norm (see ``BatchNorm``): mean, var (C,) constants (arrays or
    Tensors, no gradient); weight, bias (C,) Tensors (None: 1 and 0)."""
    C = x.shape[1] if x.ndim >= 2 else -1
    mean, var = (v.data if isinstance(v, Tensor) else v for v in (mean, var))
    weight = Tensor(_xp(x.data).ones(C, x.dtype)) if weight is None else weight
    bias = Tensor(_xp(x.data).zeros(C, x.dtype)) if bias is None else bias
    for name, v in (("mean", mean), ("var", var), ("weight", weight), ("bias", bias)):
        shape = tuple(v.shape) if hasattr(v, "shape") else np.shape(v)
        if shape != (C,):
            raise ValueError(f"batch_norm: {name} has shape {shape}, expected ({C},) for an input of shape {x.shape}")
    if not float(eps) > 0:
        raise ValueError(f"batch_norm: eps must be > 0, got {eps!r}")
    return BatchNorm.apply(x, weight, bias, mean=mean, var=var, eps=float(eps))


def concat(tensors: Sequence[Tensor], axis: int = 1) -> Tensor:
    """Join tensors of one dtype and equal shapes but for ``axis``; each gets its slice of the gradient."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat: no tensors given")
    shapes = [tuple(t.shape) for t in tensors]
    nd = len(shapes[0])
    if not -nd <= axis < nd:
        raise ValueError(f"concat: axis {axis} out of range for {nd}-d tensors")
    axis %= nd
    if any(len(s) != nd or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes):
        raise ValueError(f"concat: shapes {shapes} differ outside axis {axis}")
    if len({np.dtype(t.dtype) for t in tensors}) > 1:
        raise ValueError(f"concat: dtypes differ ({', '.join(str(t.dtype) for t in tensors)})")
    return Concat.apply(*tensors, axis=axis)


def clip(x: Tensor, lo: float | None = 0.0, hi: float | None = 6.0) -> Tensor:
    """min(max(x, lo), hi); None is no bound.  The ReLU rules act at the lower bound (see ``Clip``)."""
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    if not lo <= hi:
        raise ValueError(f"clip: need lo <= hi, got lo={lo}, hi={hi}")
    return Clip.apply(x, lo=lo, hi=hi)


def relu6(x: Tensor) -> Tensor:
    """clip(x, 0, 6) (MobileNetV2)."""
    return Clip.apply(x, lo=0.0, hi=6.0)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(x)


def silu(x: Tensor) -> Tensor:
    return SiLU.apply(x)


def mul(a: Tensor, b: Tensor) -> Tensor:
    """a * b with broadcasting (``Mul``): e.g. squeeze-and-excitation's x (N, C, H, W) * s (N, C, 1, 1)."""
    return Mul.apply(a, b)


def add(a: Tensor, b: Tensor) -> Tensor:
    """a + b with broadcasting (``Add``): a residual connection's x + f(x)."""
    return Add.apply(a, b)


def local_response_norm(x: Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> Tensor:
    return LocalResponseNorm.apply(x, size=size, alpha=alpha, beta=beta, k=k)


def adaptive_avg_pool2d(x: Tensor, output_size: Size2) -> Tensor:
    return AdaptiveAvgPool2d.apply(x, output_size=output_size)


def dropout(x: Tensor, p: float = 0.5, training: bool = False) -> Tensor:
    return Dropout.apply(x, p=p, training=training)


def flatten(x: Tensor) -> Tensor:
    return Reshape.apply(x, shape=(x.shape[0], -1))


def unflatten(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(N, F) -> (N, *shape), F = prod(shape)."""
    return Reshape.apply(x, shape=(x.shape[0],) + tuple(shape))


def upsample(x: Tensor, factor: int = 2) -> Tensor:
    return Upsample.apply(x, factor=factor)


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


def amax(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``; ties share the gradient equally (see ``Max``)."""
    return Max.apply(x, axis=axis, keepdims=keepdims)


def logsumexp(x: Tensor, axis: Axis = -1, keepdims: bool = False) -> Tensor:
    return LogSumExp.apply(x, axis=axis, keepdims=keepdims)


def softmax(x: Tensor | np.ndarray, axis: int = -1) -> Tensor:
    """Softmax over ``axis``.  Also the package's softmax of plain arrays:
    ``softmax(scores).numpy()`` (an array input records no graph)."""
    return Softmax.apply(x, axis=axis)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(scores: Tensor, labels: Tensor | ArrayLike) -> Tensor:
    return CrossEntropy.apply(scores, labels=labels)


def _sub(a, b):
    return Add.apply(a, Mul.apply(_const(b, a), _const(-1.0, a)))


def _abs(a: Tensor) -> Tensor:
    return Abs.apply(a)


def _sum(a: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def _mean(a: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """The sum over ``axis`` times 1 / (the number of elements summed)."""
    n = a.data.size if axis is None else np.prod([a.shape[i] for i in np.atleast_1d(axis)])
    return Sum.apply(a, axis=axis, keepdims=keepdims) * (1.0 / n)


def _reshape(a: Tensor, *shape: int | tuple[int, ...]) -> Tensor:
    """``a.reshape(2, 3)`` or ``a.reshape((2, 3))``."""
    return Reshape.apply(a, shape=shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)


Tensor.__add__ = lambda a, b: Add.apply(a, _const(b, a))
Tensor.__radd__ = lambda a, b: Add.apply(_const(b, a), a)
Tensor.__sub__ = _sub
Tensor.__rsub__ = lambda a, b: _sub(_const(b, a), a)
Tensor.__neg__ = lambda a: Mul.apply(a, _const(-1.0, a))
Tensor.__mul__ = lambda a, b: Mul.apply(a, _const(b, a))
Tensor.__rmul__ = lambda a, b: Mul.apply(_const(b, a), a)
Tensor.__truediv__ = lambda a, b: (Mul.apply(a, _const(1.0 / b, a)) if np.isscalar(b)
                                   else Mul.apply(a, Pow.apply(_const(b, a), p=-1.0)))
Tensor.__rtruediv__ = lambda a, b: Mul.apply(_const(b, a), Pow.apply(a, p=-1.0))
Tensor.__pow__ = lambda a, p: Pow.apply(a, p=float(p))
Tensor.__getitem__ = lambda a, idx: Index.apply(a, idx=idx.data if isinstance(idx, Tensor) else idx)
Tensor.abs = _abs
Tensor.exp = exp
Tensor.log = log
Tensor.max = amax
Tensor.logsumexp = logsumexp
Tensor.softmax = softmax
Tensor.log_softmax = log_softmax
Tensor.sum = _sum
Tensor.mean = _mean
Tensor.reshape = _reshape
Tensor.relu = relu
Tensor.clip = clip
Tensor.sigmoid = sigmoid
