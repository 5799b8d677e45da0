"""The kernel interface: what a backend must offer, declared in one place.

A backend is a module with one namespace per op (``B.relu``, ``B.max_pool2d``,
...), each holding plain functions.  :mod:`tinygrad_explain.core.ops` reaches the
kernels only as ``B = kernels.backend(x); B.<namespace>.<function>(...)``, so
this table is everything ``ops`` needs from a backend.  Two backends exist:

* the CPU package itself (``kernels/<stem>.py``: Numba loops, NumPy arrays);
* ``kernels/gpu.py`` (``kernels/<stem>.cu``: CUDA through CuPy, CuPy arrays).

To add a backend, offer every namespace below that is not ``cpu_only`` with
functions of these signatures (parameter names included: the ops pass some of
them by keyword) and the same return conventions; ``missing(module)`` lists
what is absent or differs, and ``tests/test_kernel_interface.py`` runs it on
both backends.  To add a kernel, add its entry here first.

Ownership (the ``owns`` column): "new" -- the function allocates the array it
returns, and the caller owns it; "out" -- the function writes into the
caller's ``out`` argument (allocating only when ``out`` is None); "view" -- the
result may share memory with an argument; "scratch" -- the array lives in the
thread's workspace and is valid only until the next ``get`` of the same name.
Names and shapes: a namespace is its op's stem (``max_pool2d``), and the letters
below are those of the op cards at the top of :mod:`tinygrad_explain.core.ops`, which
state them once.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Kernel:
    params: str        # the parameter list, exactly as in the CPU wrapper
    does: str          # shapes in -> shapes out
    owns: str          # "new", "out", "view", "scratch" or "-" (no array returned)


@dataclass(frozen=True)
class Namespace:
    functions: dict    # name -> Kernel
    cpu_only: bool = False
    why: str = ""


INTERFACE = {
    "im2col": Namespace({
        "out_size": Kernel("size, k, s, p, ceil_mode=False", "output length of a window: floor mode "
                           "(size + 2p - k) // s + 1, or PyTorch's ceil_mode rule for pooling", "-"),
        "im2col": Kernel("x, kh, kw, stride, padding, out=None, rows=None",
                         "x (N, C, H, W) -> col (C*kh*kw, N*L); stride, padding are pairs; rows = (i0, i1): "
                         "only that band of output rows", "out"),
        "col2im": Kernel("col, x_shape, kh, kw, stride, padding, out=None, rows=None",
                         "col (C*kh*kw, N*L) -> dx (N, C, H, W), overlapping windows summed into a "
                         "zero-filled ``out``; rows as in im2col", "out"),
    }),
    "layout": Namespace({
        "rows_to_nchw": Kernel("rows, bias, out", "rows (O, N*L) + bias (O,) or None -> out (N, O, L)", "out"),
        "nchw_to_rows": Kernel("dy, out=None", "dy (N, O, L) -> rows (O, N*L); a view of dy when N = 1", "view"),
        "bias_grad": Kernel("dy", "dy (N, O, L) -> db (O,), summed over n and l", "new"),
    }),
    "relu": Namespace({
        "forward": Kernel("x", "x (any shape) -> y = max(x, 0) (NaN passes)", "new"),
        "backward": Kernel("y, g, mask_x, mask_g", "saved y, upstream g -> dx = g * [y>0 if mask_x] * [g>0 if "
                           "mask_g] (engine.RELU_MASKS gives the masks of each rule)", "new"),
    }),
    "clip": Namespace({
        "forward": Kernel("x, lo, hi", "x (any shape) -> y = min(max(x, lo), hi) (NaN passes)", "new"),
        "backward": Kernel("y, g, lo, hi, mask_x, mask_g", "saved y, upstream g -> dx = g * [y>lo if mask_x] * "
                           "[g>0 if mask_g] * [y<hi] (the ReLU rules at the lower bound)", "new"),
    }),
    "depthwise_conv2d": Namespace({
        "forward": Kernel("x, w, b, stride, padding", "x (N, C, H, W), w (m*C, 1, kh, kw), b (m*C,) or None -> "
                          "y (N, m*C, OH, OW); stride, padding are pairs", "new"),
        "backward_input": Kernel("g, w, x_shape, stride, padding", "g (N, m*C, OH, OW) -> dx (x_shape)", "new"),
        "backward_weight": Kernel("g, x, w_shape, stride, padding", "g, x -> dw (w_shape) in g's dtype", "new"),
    }),
    "batch_norm": Namespace({
        "forward": Kernel("x, mean, scale, bias", "x (N, C, ...), per-channel (C,) constants -> y = (x - mean) * "
                          "scale + bias", "new"),
        "backward_input": Kernel("g, scale", "g (N, C, ...) -> dx = g * scale", "new"),
        "backward_params": Kernel("g, x, mean, inv", "-> (dweight, dbias) (C,): sums of g * (x - mean) * inv "
                                  "and of g", "new"),
    }),
    "max_pool2d": Namespace({
        "forward": Kernel("x, k, s, p, ceil_mode=False", "x (N, C, H, W) -> (y (N, C, OH, OW), switch int32 "
                          "(N, C, OH, OW): the flat index in the H*W plane of each maximum)", "new"),
        "backward": Kernel("g, switch, x_shape, window=None", "g (N, C, OH, OW) -> dx (x_shape), each gradient "
                           "to its switch; window = (k, s, p)", "new"),
    }),
    "lrn": Namespace({
        "forward": Kernel("x, size, alpha, beta, k", "x (N, C, H, W) -> (y, saved): saved is whatever backward "
                          "needs (the CPU keeps scale and scale^-beta)", "new"),
        "backward": Kernel("x, y, saved, g, size, alpha, beta", "g (N, C, H, W) -> dx (N, C, H, W)", "new"),
    }),
    "avg_pool2d": Namespace({
        "forward": Kernel("x, k, s, p, ceil_mode=False, count_include_pad=True",
                          "x (N, C, H, W) -> y (N, C, OH, OW), k x k windows (PyTorch's avg_pool2d)", "new"),
        "backward": Kernel("g, x_shape, k, s, p, ceil_mode=False, count_include_pad=True",
                           "g (N, C, OH, OW) -> dx (x_shape), each window's mean spread back", "new"),
        "adaptive_forward": Kernel("x, out_hw", "x (N, C, H, W) -> y (N, C, *out_hw), adaptive average windows",
                                   "new"),
        "adaptive_backward": Kernel("g, x_shape", "g (N, C, *out_hw) -> dx (x_shape), each window's mean spread "
                                    "back", "new"),
    }),
    "workspace": Namespace({
        "get": Kernel("name, shape, dtype", "an uninitialised array backed by this thread's buffer ``name``",
                      "scratch"),
        "clear": Kernel("", "free this thread's buffers", "-"),
    }),
    "threads": Namespace({
        "over_batch": Kernel("fn, n, work=0", "fn(i, i + 1) for each image i of range(n), handed out to the "
                             "threads, the BLAS on one thread; fn writes only images [n0, n1); one image: fn(0, 1), "
                             "the BLAS on one thread if work (multiply-adds) < BLAS_PARALLEL_MIN", "-"),
        "blas_threads_for": Kernel("work", "a context manager: inside, the BLAS on one thread if work "
                                   "(multiply-adds) < BLAS_PARALLEL_MIN, else on its threads as they are", "-"),
    }, cpu_only=True, why="on the GPU one launch takes the whole batch (ops run their chunks there)"),
    "linear": Namespace({
        "pack": Kernel("w, dtype=None, out=None", "weight (O, K) -> the forward layout (K, O), contiguous "
                       "(dtype \"bfloat16\": bfloat16 bits in uint16; out: write into it)", "new"),
        "in_forward_layout": Kernel("w", "whether w (O, K) is the view Wt.T of a contiguous Wt", "new"),
        "to_bfloat16": Kernel("w", "float32 array -> bfloat16 bits (uint16), rounded to nearest even", "new"),
        "forward": Kernel("x, wt, b=None", "x (N, K), packed wt (K, O) -> y (N, O) (+ b), for a few rows", "new"),
        "backward": Kernel("g, w", "g (N, O), w (O, K) (or its bfloat16 bits) -> dx (N, K), for a few rows (BLAS on "
                          "a w in the forward layout)", "new"),
    }, cpu_only=True, why="on the GPU cuBLAS serves every batch size (ops use xp.matmul there)"),
    "adam": Namespace({
        "step": Kernel("w, g, m, v, lr, b1, b2, eps, weight_decay, decoupled, t",
                       "one Adam/AdamW update of w, m, v in place (all one shape)", "-"),
    }, cpu_only=True, why="the GPU update is CuPy element-wise code in the optimiser"),
}


def _params(fn) -> str:
    return ", ".join(str(p) for p in inspect.signature(fn).parameters.values())


def missing(backend, gpu: bool = False) -> list[str]:
    """What ``backend`` lacks of the interface: one line per absent namespace or
    function, or per signature that differs from the declared one.  ``gpu=True``
    skips the CPU-only namespaces.  An empty list: the backend is complete."""
    problems = []
    for ns_name, ns in INTERFACE.items():
        if gpu and ns.cpu_only:
            continue
        ns_obj = getattr(backend, ns_name, None)
        if ns_obj is None:
            problems.append(f"{backend.__name__}: no namespace {ns_name!r}")
            continue
        for fn_name, k in ns.functions.items():
            fn = getattr(ns_obj, fn_name, None)
            if not callable(fn):
                problems.append(f"{backend.__name__}: no function {ns_name}.{fn_name}({k.params})")
            elif _params(fn) != k.params:
                problems.append(f"{backend.__name__}: {ns_name}.{fn_name}({_params(fn)}) differs from the "
                                f"interface's ({k.params})")
    return problems
