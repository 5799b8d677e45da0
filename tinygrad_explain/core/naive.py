"""Naive reference versions of every layer op: the formula, one loop at a time.

The fast kernels (``kernels/``: im2col + GEMM convolution, Numba loops for
pooling, LRN, ReLU, batch norm) are written for speed; the functions here are written
to be read.  Each one is plain NumPy that follows its formula with a loop over
output positions (or channels), forward and backward side by side, so that a
student can check the fast kernel against the definition -- the tests and
``scripts/walkthrough.py`` do exactly that::

    y_fast = te.conv2d(te.Tensor(x), te.Tensor(w), te.Tensor(b), 1, 1).numpy()
    y_naive = te.naive.conv2d_forward(x, w, b, stride=1, padding=1)

Names and shapes follow the op cards at the top of :mod:`tinygrad_explain.core.ops`
(the one statement of both): ``<stem>_forward`` / ``<stem>_backward`` here,
``kernels/<stem>.py`` and ``kernels/<stem>.cu`` for the fast versions, the same
arguments in the same order where the versions share them.  Every backward
takes ``g`` = dL/d(output) and returns dL/d(input) (and the parameters'
gradients where the op has parameters).
These loops are slow (seconds for an AlexNet layer): use them on small inputs.
"""
from __future__ import annotations

import numpy as np


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def _out(size, k, s, p, ceil_mode=False):
    """Output length; ``ceil_mode``: rounded up, but the last window must start inside
    the input or its left padding (PyTorch's rule)."""
    if not ceil_mode:
        return (size + 2 * p - k) // s + 1
    n = -(-(size + 2 * p - k) // s) + 1
    return n - 1 if (n - 1) * s >= size + p else n


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
def conv2d_forward(x, w, b=None, stride=1, padding=0, groups=1):
    """y[n, o, i, j] = b[o] + sum_{c, a, d} x_pad[n, g*Cg + c, i*sh + a, j*sw + d] * w[o, c, a, d]

    where g = o // (O / groups) is output channel o's group and Cg = C / groups."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = _out(H, kh, sh, ph), _out(W, kw, sw, pw)
    y = np.zeros((N, O, oh, ow), dtype=np.result_type(x, w))
    Og = O // groups
    for o in range(O):
        g = o // Og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * Cg:(g + 1) * Cg, i * sh:i * sh + kh, j * sw:j * sw + kw]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
        if b is not None:
            y[:, o] += b[o]
    return y


def conv2d_backward(g, x, w, stride=1, padding=0, groups=1):
    """The chain rule through the sum above, one output position at a time:

        dx_pad[n, g*Cg:, window(i, j)] += g[n, o, i, j] * w[o]
        dw[o]                          += sum_n g[n, o, i, j] * x_pad[n, g*Cg:, window(i, j)]
        db[o]                           = sum_{n, i, j} g[n, o, i, j]

    Returns (dx, dw, db); dx drops the padding again."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp, dtype=np.result_type(g, w))
    dw = np.zeros_like(w, dtype=np.result_type(g, x))
    Og = O // groups
    for o in range(O):
        c0 = (o // Og) * Cg
        for i in range(g.shape[2]):
            for j in range(g.shape[3]):
                rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
                go = g[:, o, i, j][:, None, None, None]
                dxp[:, c0:c0 + Cg, rows, cols] += go * w[o]
                dw[o] += (go * xp[:, c0:c0 + Cg, rows, cols]).sum(axis=0)
    dx = dxp[:, :, ph:ph + H, pw:pw + W]
    return dx, dw, g.sum(axis=(0, 2, 3))


# --------------------------------------------------------------------------
# fully connected
# --------------------------------------------------------------------------
def linear_forward(x, w, b=None):
    """y[n, o] = b[o] + sum_k x[n, k] * w[o, k]"""
    N, F = x.shape
    y = np.zeros((N, w.shape[0]), dtype=np.result_type(x, w))
    for o in range(w.shape[0]):
        y[:, o] = (x * w[o]).sum(axis=1) + (b[o] if b is not None else 0)
    return y


def linear_backward(g, x, w):
    """dx[n, k] = sum_o g[n, o] w[o, k];  dw[o, k] = sum_n g[n, o] x[n, k];  db[o] = sum_n g[n, o]"""
    dx = np.zeros(x.shape, dtype=np.result_type(g, w))
    dw = np.zeros(w.shape, dtype=np.result_type(g, x))
    for o in range(w.shape[0]):
        dx += g[:, o:o + 1] * w[o]
        dw[o] = (g[:, o:o + 1] * x).sum(axis=0)
    return dx, dw, g.sum(axis=0)


# --------------------------------------------------------------------------
# ReLU and its three backward rules
# --------------------------------------------------------------------------
def relu_forward(x):
    """y = max(x, 0)"""
    return np.where(x > 0, x, np.zeros_like(x))


def relu_backward(g, x, rule="backprop"):
    """What a ReLU passes back, as the lecture's slide writes it:

        backprop   dx = g * [x > 0]             (the true gradient)
        deconvnet  dx = g * [g > 0]             (Zeiler & Fergus 2014)
        guided     dx = g * [x > 0] * [g > 0]   (Springenberg et al. 2015)
    """
    if rule == "backprop":
        keep = x > 0
    elif rule == "deconvnet":
        keep = g > 0
    elif rule == "guided":
        keep = (x > 0) & (g > 0)
    else:
        raise ValueError(f"unknown ReLU rule {rule!r}")
    return np.where(keep, g, np.zeros_like(g))


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
def max_pool2d_forward(x, k=3, s=2, p=0, ceil_mode=False):
    """y[n, c, i, j] = max over the window of x_pad[n, c, i*s + a, j*s + b] (padding = -inf;
    with ``ceil_mode`` the last windows may hang off the end: only their pixels inside x count).

    Also returns the switches, in the kernels' format: for each output, the flat index
    r*W + q in the (H, W) plane of the window's maximum (row r, column q), the first one
    in row-major order on ties; int32 (N, C, OH, OW)."""
    N, C, H, W = x.shape
    oh, ow = _out(H, k, s, p, ceil_mode), _out(W, k, s, p, ceil_mode)
    y = np.empty((N, C, oh, ow), dtype=x.dtype)
    switch = np.empty((N, C, oh, ow), dtype=np.int32)
    for n in range(N):
        for c in range(C):
            for i in range(oh):
                for j in range(ow):
                    h0, w0 = max(i * s - p, 0), max(j * s - p, 0)
                    win = x[n, c, h0:min(i * s - p + k, H), w0:min(j * s - p + k, W)]
                    a = int(np.argmax(win))              # first maximum in row-major order
                    r, q = divmod(a, win.shape[1])
                    y[n, c, i, j] = win[r, q]
                    switch[n, c, i, j] = (h0 + r) * W + (w0 + q)
    return y, switch


def max_pool2d_backward(g, switch, x_shape, window=None):
    """dx[n, c, switch[n, c, i, j]] += g[n, c, i, j]: each output's gradient goes to the
    input that won its window; overlapping windows (3x3 stride 2) add up.  ``window``
    (k, s, p) is not needed (the switches say where), as in the kernels."""
    dx = np.zeros(x_shape, dtype=g.dtype)
    N, C, oh, ow = g.shape
    W = x_shape[3]
    for n in range(N):
        for c in range(C):
            for i in range(oh):
                for j in range(ow):
                    r, q = divmod(int(switch[n, c, i, j]), W)
                    dx[n, c, r, q] += g[n, c, i, j]
    return dx


# --------------------------------------------------------------------------
# local response normalisation (across channels)
# --------------------------------------------------------------------------
def _lrn_window(c, C, size):
    """Channels summed for output channel c: [c - size//2, c + (size-1)//2] (PyTorch / Caffe)."""
    return max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """y[:, c] = x[:, c] * s[:, c]^(-beta),  s[:, c] = k + alpha/size * sum_{c' in window(c)} x[:, c']^2"""
    C = x.shape[1]
    y = np.empty_like(x)
    for c in range(C):
        lo, hi = _lrn_window(c, C, size)
        y[:, c] = x[:, c] * (k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)) ** -beta
    return y


def lrn_backward(g, x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """y_c depends on x_c directly and on every x_c' in its window through s_c:

        dx[:, c'] = g[:, c'] * s[:, c']^(-beta)
                    - 2 * alpha * beta / size * x[:, c']
                      * sum_{c: c' in window(c)} g[:, c] * x[:, c] * s[:, c]^(-beta-1)
    """
    C = x.shape[1]
    s = np.empty_like(x)
    for c in range(C):
        lo, hi = _lrn_window(c, C, size)
        s[:, c] = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
    dx = g * s ** -beta
    for c in range(C):                                  # output channel c feeds back to its window
        lo, hi = _lrn_window(c, C, size)
        dx[:, lo:hi] -= 2 * alpha * beta / size * x[:, lo:hi] * (g[:, c] * x[:, c] * s[:, c] ** (-beta - 1))[:, None]
    return dx


# --------------------------------------------------------------------------
# adaptive average pooling
# --------------------------------------------------------------------------
def _adaptive_window(i, size, out):
    """PyTorch's adaptive window for output cell i: [floor(i*size/out), ceil((i+1)*size/out))."""
    return (i * size) // out, -(-((i + 1) * size) // out)


def adaptive_avg_pool2d_forward(x, out_hw):
    """y[n, c, i, j] = mean of x[n, c] over output cell (i, j)'s window"""
    N, C, H, W = x.shape
    OH, OW = out_hw
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        h0, h1 = _adaptive_window(i, H, OH)
        for j in range(OW):
            w0, w1 = _adaptive_window(j, W, OW)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def adaptive_avg_pool2d_backward(g, x_shape):
    """Each input in cell (i, j)'s window gets g[n, c, i, j] / (window size); windows may overlap."""
    N, C, H, W = x_shape
    OH, OW = g.shape[2:]
    dx = np.zeros(x_shape, dtype=g.dtype)
    for i in range(OH):
        h0, h1 = _adaptive_window(i, H, OH)
        for j in range(OW):
            w0, w1 = _adaptive_window(j, W, OW)
            dx[:, :, h0:h1, w0:w1] += g[:, :, i, j][:, :, None, None] / ((h1 - h0) * (w1 - w0))
    return dx


# --------------------------------------------------------------------------
# average pooling (PyTorch's avg_pool2d) and batch normalisation
# --------------------------------------------------------------------------
def _avg_pool_parts(x_shape, k, s, p, ceil_mode, count_include_pad):
    """For each output cell: the window as slices of the zero-padded input and its divisor.

    The window is rows [i*s, i*s + k) of the padded input (H + 2p rows), cut at its
    end (a ceil_mode window may hang off it).  The divisor counts the cells of that cut
    window (``count_include_pad``: padding counts as zeros) or only those inside x."""
    N, C, H, W = x_shape
    inside = np.pad(np.ones((H, W)), p)                     # 1 on x, 0 on the padding
    for i in range(_out(H, k, s, p, ceil_mode)):
        for j in range(_out(W, k, s, p, ceil_mode)):
            rows, cols = slice(i * s, min(i * s + k, H + 2 * p)), slice(j * s, min(j * s + k, W + 2 * p))
            win = inside[rows, cols]
            yield i, j, rows, cols, (win.size if count_include_pad else win.sum())


def avg_pool2d_forward(x, k, s=None, p=0, ceil_mode=False, count_include_pad=True):
    """y[n, c, i, j] = sum of x_pad[n, c, window(i, j)] / divisor(i, j)   (x_pad: zero padding)"""
    s = k if s is None else s
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.empty((N, C, _out(H, k, s, p, ceil_mode), _out(W, k, s, p, ceil_mode)), dtype=x.dtype)
    for i, j, rows, cols, div in _avg_pool_parts(x.shape, k, s, p, ceil_mode, count_include_pad):
        y[:, :, i, j] = xp[:, :, rows, cols].sum(axis=(2, 3)) / div
    return y


def avg_pool2d_backward(g, x_shape, k, s=None, p=0, ceil_mode=False, count_include_pad=True):
    """dx_pad[n, c, window(i, j)] += g[n, c, i, j] / divisor(i, j); dx drops the padding."""
    s = k if s is None else s
    N, C, H, W = x_shape
    dxp = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=g.dtype)
    for i, j, rows, cols, div in _avg_pool_parts(x_shape, k, s, p, ceil_mode, count_include_pad):
        dxp[:, :, rows, cols] += g[:, :, i, j][:, :, None, None] / div
    return dxp[:, :, p:p + H, p:p + W]


def batch_norm_forward(x, mean, var, weight, bias, eps=1e-5):
    """y[:, c] = (x[:, c] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]"""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        y[:, c] = (x[:, c] - mean[c]) / np.sqrt(var[c] + eps) * weight[c] + bias[c]
    return y


def batch_norm_backward(g, x, mean, var, weight, eps=1e-5):
    """dx[:, c] = g[:, c] * weight[c] / sqrt(var[c] + eps)
    dweight[c] = sum g[:, c] * (x[:, c] - mean[c]) / sqrt(var[c] + eps);  dbias[c] = sum g[:, c]"""
    dx, dw, db = np.empty_like(g), np.empty(x.shape[1], g.dtype), np.empty(x.shape[1], g.dtype)
    for c in range(x.shape[1]):
        sd = np.sqrt(var[c] + eps)
        dx[:, c] = g[:, c] * weight[c] / sd
        dw[c] = (g[:, c] * (x[:, c] - mean[c]) / sd).sum()
        db[c] = g[:, c].sum()
    return dx, dw, db


# --------------------------------------------------------------------------
# concatenation, clip / ReLU6
# --------------------------------------------------------------------------
def concat_forward(xs, axis=1):
    """y = the arrays one after the other along ``axis``"""
    return np.concatenate(xs, axis=axis)


def concat_backward(g, sizes, axis=1):
    """Input k's gradient: the k-th block of g along ``axis`` (``sizes``: the inputs' lengths there)."""
    out, start = [], 0
    for n in sizes:
        out.append(np.take(g, range(start, start + n), axis=axis))
        start += n
    return out


def clip_forward(x, lo=0.0, hi=6.0):
    """y = lo where x < lo, hi where x > hi, x elsewhere"""
    return np.where(x < lo, lo, np.where(x > hi, hi, x)).astype(x.dtype)


def clip_backward(g, x, lo=0.0, hi=6.0, rule="backprop"):
    """The ReLU rules act at the lower bound; the upper bound gates like the gradient:

        backprop   dx = g * [lo < x < hi]
        deconvnet  dx = relu(g) * [x < hi]
        guided     dx = g * [x > lo] * [x < hi] * [g > 0]
    """
    if rule == "backprop":
        keep = (x > lo) & (x < hi)
    elif rule == "deconvnet":
        keep = (g > 0) & (x < hi)
    elif rule == "guided":
        keep = (x > lo) & (x < hi) & (g > 0)
    else:
        raise ValueError(f"unknown ReLU rule {rule!r}")
    return np.where(keep, g, np.zeros_like(g))
