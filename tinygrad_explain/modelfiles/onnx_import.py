"""ONNX import: a classifier exported to ONNX becomes a :class:`~tinygrad_explain.core.graph.GraphNetwork`.

    model = te.load_model("resnet18.onnx")                      # or
    model = te.onnx_import.load_onnx("resnet18.onnx", mean=[...], std=[...])
    te.onnx_import.convert_onnx("resnet18.onnx", "resnet18.h5", mean=..., std=...)

The file is read with the ``onnx`` package (no hand-written protobuf) as data:
nothing in it is executed.  Before any weight is converted to an array the
reader refuses, with one line naming the file and the node or tensor,

* a file over :data:`MAX_FILE_BYTES` or one that is not a regular file;
* tensors whose data lives outside the file (external data);
* a declared tensor over the parameter limit (``max_parameters``, as for the
  model file: :data:`tinygrad_explain.modelfiles.modelfile.MAX_PARAMETERS` or
  ``TGE_MAX_PARAMETERS``), or all of them together over it, and raw data whose
  length does not match its declared shape (a truncated tensor);
* every unsupported op, all named at once: ``unsupported ONNX ops: Resize
  (node '/up/Resize'), Sigmoid (node 's1')``.

Supported ops (what ``torch.onnx.export(dynamo=False)``, opsets 13-17, emits for
VGG-BN, ResNet, MobileNetV2, SqueezeNet and GoogLeNet), and what each becomes:

=====================  =====================================================
Conv                   ``conv`` (square kernels, equal strides, symmetric pads, groups)
BatchNormalization     folded into the convolution before it when that
                       convolution's output is read by this node only (the
                       weights become ``w * gamma / sqrt(var + eps)``,
                       ``(b - mean) * gamma / sqrt(var + eps) + beta``); else a
                       ``batchnorm`` node
Relu, Clip             ``relu``; ``relu6`` (Clip 0..6); ``clip`` (other bounds)
MaxPool, AveragePool   ``maxpool`` / ``avgpool`` (pads, ceil_mode, count_include_pad)
GlobalAveragePool      ``global_avgpool``
Add                    ``add`` (two computed inputs of one shape); a constant
                       added to a MatMul's output is its bias
Concat                 ``concat`` along channels
Flatten, Reshape       ``flatten`` (Reshape only of the flatten kind: (N, -1))
Gemm, MatMul           ``linear`` (MatMul by a constant matrix; + Add of a constant)
Dropout, Identity      nothing (the node's output is its input)
Constant, Shape,       folded: evaluated at load time where their inputs are
Gather, Unsqueeze,     constants or shapes (torch's ``x.view(x.size(0), -1)``
Squeeze, Cast, Concat  chain); anything else refused
=====================  =====================================================

Node names.  The te node's name is the torch module path the exporter wrote
into the ONNX node name: ``/layer4/layer4.1/relu_1/Relu`` -> ``layer4.1.relu_1``
(the scope segments, each nested name replacing its parent's, joined by dots;
the op type dropped; ``_1`` is the exporter's mark of a module's second call),
``/layer1/layer1.0/Add`` -> ``layer1.0.add`` and ``/Flatten`` -> ``flatten``
(a functional op: its scope plus the op type in lower case).  A folded batch
norm leaves the convolution's name.  Names from other exporters keep their
text with "/" turned into "."; an empty name becomes the op type; a name taken
twice gets ``_2``, ``_3``...

Preprocessing is not in an ONNX file: give ``mean``, ``std``, ``channel_order``,
``pixel_scale``, ``resize``, ``crop`` (as for the AlexNet converters,
docs/converters.md), or read them back from a model file written by
:func:`convert_onnx`.  ``class_names`` likewise (1000 outputs get ImageNet's).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.graph import INPUT, Add, Concat, GraphNetwork
from .format import MAX_ACTIVATIONS, ModelFileError, check_regular_file, parameter_limit

#: ONNX files larger than this are refused before parsing (protobuf's own limit is 2 GiB)
MAX_FILE_BYTES = 2 ** 31 - 1
#: the ONNX ops this reader knows (see the module docstring for what each becomes)
SUPPORTED_OPS = ("Conv", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "Add", "Concat", "Flatten", "Reshape", "Gemm", "MatMul", "Dropout", "Identity",
                 "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast")
_FOLDABLE = ("Constant", "Identity", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Concat")
#: stands for the batch size in a folded shape (``Shape`` of a computed value)
_BATCH = -(2 ** 40)


class OnnxImportError(ModelFileError):
    """An ONNX file this reader refuses (unsupported, unsafe or malformed)."""


def _dtype_sizes():
    from onnx import TensorProto as TP
    return {TP.FLOAT: 4, TP.DOUBLE: 8, TP.FLOAT16: 2, TP.INT64: 8, TP.INT32: 4, TP.INT8: 1, TP.UINT8: 1,
            TP.BOOL: 1}


def _declared_size(t, path, what):
    """Number of elements of TensorProto ``t`` from its dims, checked (nothing allocated)."""
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise OnnxImportError(f"{path}: {what} {t.name!r} has a negative dimension {dims}")
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _check_tensor(t, path, what, limit):
    """Refuse external data, an unknown type, a size over ``limit`` or a length that does
    not match the declared shape -- before ``t`` is turned into an array."""
    from onnx import TensorProto as TP
    if t.data_location == TP.EXTERNAL or len(t.external_data):
        where = {e.key: e.value for e in t.external_data}.get("location", "?")
        raise OnnxImportError(f"{path}: {what} {t.name!r} keeps its data in an external file ({where!r}); "
                              "only self-contained ONNX files are read")
    sizes = _dtype_sizes()
    if t.data_type not in sizes:
        raise OnnxImportError(f"{path}: {what} {t.name!r} has data type {TP.DataType.Name(t.data_type)}, "
                              "not a number type this reader knows")
    n = _declared_size(t, path, what)
    if n > limit:
        raise OnnxImportError(f"{path}: {what} {t.name!r} declares {n:,} values {list(t.dims)}, more than the "
                              f"limit {limit:,} (pass max_parameters= or set TGE_MAX_PARAMETERS to allow it)")
    if t.HasField("raw_data"):
        if len(t.raw_data) != n * sizes[t.data_type]:
            raise OnnxImportError(f"{path}: {what} {t.name!r} has {len(t.raw_data)} bytes of data for shape "
                                  f"{list(t.dims)} ({n * sizes[t.data_type]} expected): truncated or damaged")
    else:
        field = {TP.FLOAT: "float_data", TP.DOUBLE: "double_data", TP.INT64: "int64_data"}.get(
            t.data_type, "int32_data")
        if len(getattr(t, field)) != n:
            raise OnnxImportError(f"{path}: {what} {t.name!r} has {len(getattr(t, field))} values for shape "
                                  f"{list(t.dims)} ({n} expected)")
    return n


def _array(t, path, what, limit):
    from onnx import numpy_helper
    _check_tensor(t, path, what, limit)
    try:
        a = numpy_helper.to_array(t)
    except (ValueError, TypeError) as e:
        raise OnnxImportError(f"{path}: {what} {t.name!r} cannot be read ({e})") from None
    if a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.isfinite(a.astype(np.float64)).all():
                raise OnnxImportError(f"{path}: {what} {t.name!r} contains NaN or Inf")
    return a


def module_path(onnx_name: str) -> str:
    """The torch module path in an exporter's node name: "/layer4/layer4.1/relu_1/Relu"
    -> "layer4.1.relu_1" (the op type, the last segment, is dropped; "" at the root)."""
    segs = [s for s in onnx_name.split("/") if s][:-1]
    path = []
    for s in segs:
        if path and s.startswith(path[-1] + "."):
            path[-1] = s
        else:
            path.append(s)
    return ".".join(path)


def node_name(node, taken: set) -> str:
    """The te node name of ONNX node ``node`` (module docstring, "Node names")."""
    raw, op = node.name, node.op_type
    if raw.startswith("/"):
        path = module_path(raw)
        if not path:
            base = op.lower()
        elif op in ("Add", "Concat", "Flatten", "Reshape"):
            base = f"{path}.{op.lower()}"
        else:
            base = path
    else:
        base = re.sub(r"\s+", "_", raw.replace("/", ".")).strip(".") or op.lower()
    if base == INPUT:
        base = f"{base}_{op.lower()}"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def read_onnx(path: str | os.PathLike, max_parameters: int | None = None,
              input_size: Sequence[int] | None = None):
    """Parse ``path`` with the onnx package and check it (module docstring) without
    converting any weight; returns the ``onnx.ModelProto``."""
    import onnx
    path = Path(path)
    check_regular_file(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise OnnxImportError(f"{path}: {size:,} bytes, more than an ONNX file can hold ({MAX_FILE_BYTES:,})")
    limit = parameter_limit(max_parameters)
    if size > 8 * limit + (64 << 20):
        raise OnnxImportError(f"{path}: {size:,} bytes, more than {limit:,} parameters could take "
                              "(pass max_parameters= or set TGE_MAX_PARAMETERS to allow it)")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:          # the protobuf decoder's errors have no common base
        raise OnnxImportError(f"{path}: not a readable ONNX file ({type(e).__name__}: {str(e)[:200]})") from None
    g = model.graph
    if not len(g.node):
        raise OnnxImportError(f"{path}: the ONNX graph has no nodes (not an ONNX model?)")
    bad = [f"{n.op_type} (node {n.name!r})" for n in g.node
           if n.op_type not in SUPPORTED_OPS or n.domain not in ("", "ai.onnx")]
    if bad:
        raise OnnxImportError(f"{path}: unsupported ONNX ops: {', '.join(bad)}; this reader knows "
                              f"{', '.join(SUPPORTED_OPS)}")
    total = 0
    for t in g.initializer:
        total += _check_tensor(t, path, "initializer", limit)
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                total += _check_tensor(a.t, path, f"node {n.name!r} attribute", limit)
            if len(a.graphs) or a.HasField("g"):
                raise OnnxImportError(f"{path}: node {n.name!r} ({n.op_type}) holds a subgraph")
    if total > limit:
        raise OnnxImportError(f"{path}: the tensors hold {total:,} values, more than the limit {limit:,} "
                              "(pass max_parameters= or set TGE_MAX_PARAMETERS to allow it)")
    return model


def _input_shape(model, path, input_size):
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxImportError(f"{path}: the graph has {len(inputs)} inputs {[i.name for i in inputs]}; "
                              "an image classifier has one")
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise OnnxImportError(f"{path}: input {inp.name!r} has rank {len(dims)}; expected images (N, C, H, W)")
    chw = list(dims[1:])
    if input_size is not None:
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        chw[1:] = [int(h), int(w)]
    if any(v is None or v <= 0 for v in chw):
        raise OnnxImportError(f"{path}: input {inp.name!r} has shape {dims} with unknown sizes; "
                              "give input_size=(H, W)")
    if int(np.prod(chw, dtype=np.float64)) > MAX_ACTIVATIONS:
        raise OnnxImportError(f"{path}: input shape {chw} has more than {MAX_ACTIVATIONS:,} values per image")
    return inp.name, tuple(int(v) for v in chw)


def _square(v, what, where):
    """One int from an ONNX pair (kernel, stride) that must be equal in both axes."""
    v = [int(a) for a in v]
    if len(v) != 2 or v[0] != v[1]:
        raise OnnxImportError(f"{where}: {what} {v} is not square; only square kernels/strides are supported")
    return v[0]


def _pads(a, where):
    p = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise OnnxImportError(f"{where}: auto_pad {a['auto_pad']!r} is not supported (export with explicit pads)")
    if len(p) != 4 or len(set(p)) != 1:
        raise OnnxImportError(f"{where}: pads {p} are not the same on every side; not supported")
    if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
        raise OnnxImportError(f"{where}: dilations {list(a['dilations'])} are not supported")
    return p[0]


def build_graph(model, path="<onnx>", max_parameters=None, input_size=None, fold_batch_norm=True):
    """(nodes [(name, layer, inputs)], state {key: array}, input_shape) from a checked
    ``onnx.ModelProto`` (:func:`read_onnx`): the te graph, its weights folded and named."""
    from ..core.models import layer_output_shape
    limit = parameter_limit(max_parameters)
    g = model.graph
    in_name, input_shape = _input_shape(model, path, input_size)
    const = {t.name: _array(t, path, "initializer", limit) for t in g.initializer}
    src = {in_name: INPUT}                   # ONNX value -> te node (or INPUT)
    shape = {INPUT: input_shape}             # te node -> output shape (no batch)
    nodes, state, taken, kind = [], {}, set(), {}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    for o in g.output:
        readers[o.name] = readers.get(o.name, 0) + 1

    def add(onnx_node, layer, ins, params=None):
        name = node_name(onnx_node, taken)
        where = f"{path}: node {onnx_node.name!r} ({onnx_node.op_type})"
        try:
            if getattr(layer, "merge", False):
                s = tuple(layer.out_shape(*[shape[i] for i in ins]))
            else:
                s = layer_output_shape(name, layer, shape[ins[0]], input_shape)
        except (ValueError, IndexError) as e:
            raise OnnxImportError(f"{where}: {e}") from None
        if int(np.prod(s, dtype=np.float64)) > MAX_ACTIVATIONS:
            raise OnnxImportError(f"{where}: would output {list(s)}, more than {MAX_ACTIVATIONS:,} values per image")
        shape[name] = s
        nodes.append((name, layer, list(ins)))
        kind[name] = (onnx_node.op_type, onnx_node.output[0])     # what made it, and its ONNX output
        for k, v in (params or {}).items():
            state[f"{name}.{k}"] = np.asarray(v, np.float32)
        src[onnx_node.output[0]] = name
        return name

    for n in g.node:
        where = f"{path}: node {n.name!r} ({n.op_type})"
        try:
            _convert_node(n, where, path, const, src, shape, kind, state, readers, outputs, add, fold_batch_norm)
        except OnnxImportError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
                ZeroDivisionError) as e:          # a layer refusing its arguments, a malformed attribute
            raise OnnxImportError(f"{where}: {type(e).__name__}: {e.args[0] if e.args else e}") from None
    nodes, state = _finish(g, path, src, nodes, state)
    return nodes, state, input_shape


def _convert_node(n, where, path, const, src, shape, kind, state, readers, outputs, add, fold_batch_norm):
    """Turn ONNX node ``n`` into te nodes (``add``), a folded constant or an alias."""
    from ..core import nn
    op, a = n.op_type, _attrs(n)
    ins = list(n.input)
    dyn = [i for i in ins if i and i in src]
    if op in _FOLDABLE and not (dyn and op in ("Identity", "Concat")) and op != "Shape":
        const[n.output[0]] = _fold(n, a, ins, const, where)
        return
    if op == "Shape":
        if ins[0] in src:
            const[n.output[0]] = np.array((_BATCH,) + shape[src[ins[0]]], np.int64)
        elif ins[0] in const:
            const[n.output[0]] = np.array(const[ins[0]].shape, np.int64)
        else:
            raise OnnxImportError(f"{where}: input {ins[0]!r} is not defined before this node")
        return
    if not dyn:
        raise OnnxImportError(f"{where}: no input is computed from the image (constant subgraphs of this "
                              "op are not folded)")
    x = src[ins[0]] if ins[0] in src else None
    if x is None:
        raise OnnxImportError(f"{where}: its first input {ins[0]!r} is not computed from the image")

    def cst(k, what):
        if k >= len(ins) or not ins[k]:
            return None
        if ins[k] not in const:
            raise OnnxImportError(f"{where}: {what} ({ins[k]!r}) must be a constant")
        return const[ins[k]]

    if op in ("Identity", "Dropout"):
        if op == "Dropout" and (len(n.output) > 1 and readers.get(n.output[1])
                                or len(ins) > 2 and ins[2] and bool(np.any(cst(2, "training_mode")))):
            raise OnnxImportError(f"{where}: in training mode or its mask is used (a training graph); "
                                  "export in eval mode")
        src[n.output[0]] = x
    elif op == "Conv":
        w, b = cst(1, "the weight"), cst(2, "the bias")
        if w is None or w.ndim != 4:
            raise OnnxImportError(f"{where}: the weight must be a constant (O, I/groups, kH, kW)")
        k = _square(a.get("kernel_shape", w.shape[2:]), "kernel_shape", where)
        if tuple(w.shape[2:]) != (k, k):
            raise OnnxImportError(f"{where}: kernel_shape {k} does not match the weight {list(w.shape)}")
        s = _square(a.get("strides", [1, 1]), "strides", where)
        groups = int(a.get("group", 1))
        layer = nn.Conv2d(w.shape[1] * groups, w.shape[0], k, s, _pads(a, where), groups=groups)
        add(n, layer, [x], {"weight": w, "bias": np.zeros(w.shape[0]) if b is None else b})
    elif op == "BatchNormalization":
        if int(a.get("training_mode", 0)):
            raise OnnxImportError(f"{where}: training_mode=1 (a training graph); export in eval mode")
        gamma, beta, mean, var = (cst(k, w) for k, w in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        if any(v is None for v in (gamma, beta, mean, var)):
            raise OnnxImportError(f"{where}: scale, B, mean and var must all be constants")
        eps = float(a.get("epsilon", 1e-5))
        # fold only where BN reads the conv's own output and nothing else does (not through an Identity)
        if fold_batch_norm and kind.get(x) == ("Conv", ins[0]) and readers.get(ins[0]) == 1 \
                and ins[0] not in outputs:
            w, b = nn.fold_batch_norm(state[f"{x}.weight"], state[f"{x}.bias"], mean, var, gamma, beta, eps)
            state[f"{x}.weight"], state[f"{x}.bias"] = np.asarray(w, np.float32), np.asarray(b, np.float32)
            kind[x] = ("Conv+BatchNormalization", n.output[0])
            src[n.output[0]] = x
        else:
            c = shape[x][0] if shape[x] else 0
            add(n, nn.BatchNorm2d(c, eps=eps), [x],
                {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var})
    elif op == "Relu":
        add(n, nn.ReLU(), [x])
    elif op == "Clip":
        lo, hi = (cst(1, "min"), cst(2, "max")) if len(ins) > 1 else (a.get("min"), a.get("max"))
        lo = -np.inf if lo is None else float(np.asarray(lo))
        hi = np.inf if hi is None else float(np.asarray(hi))
        if lo == 0 and hi == 6:
            add(n, nn.ReLU6(), [x])
        elif lo == 0 and hi == np.inf:
            add(n, nn.ReLU(), [x])
        else:
            add(n, nn.Clip(lo, hi), [x])
    elif op in ("MaxPool", "AveragePool"):
        if int(a.get("storage_order", 0)) or len(n.output) > 1 and readers.get(n.output[1]):
            raise OnnxImportError(f"{where}: indices output / storage_order are not supported")
        k = _square(a["kernel_shape"], "kernel_shape", where)
        s = _square(a.get("strides", [1, 1]), "strides", where)
        p, ceil = _pads(a, where), bool(a.get("ceil_mode", 0))
        if op == "MaxPool":
            layer = nn.MaxPool2d(k, s, p, ceil_mode=ceil)
        else:
            layer = nn.AvgPool2d(k, s, p, count_include_pad=bool(a.get("count_include_pad", 0)), ceil_mode=ceil)
        add(n, layer, [x])
    elif op == "GlobalAveragePool":
        add(n, nn.GlobalAvgPool2d(), [x])
    elif op in ("Flatten", "Reshape"):
        s = shape[x]
        if op == "Flatten":
            if int(a.get("axis", 1)) != 1:
                raise OnnxImportError(f"{where}: axis {a.get('axis')} (only axis=1, keeping the batch)")
        else:
            t = cst(1, "the target shape")
            if t is None:
                raise OnnxImportError(f"{where}: the target shape must be a constant")
            t = [int(v) for v in np.asarray(t).reshape(-1)]
            if not (len(t) == 2 and t[0] in (0, -1, 1, _BATCH) and t[1] in (-1, int(np.prod(s)))):
                shown = ["N" if v == _BATCH else v for v in t]
                raise OnnxImportError(f"{where}: a Reshape to {shown} of a {list(s)} map; only the flatten "
                                      "kind (N, -1) is supported")
        if len(s) == 1:
            src[n.output[0]] = x
        else:
            add(n, nn.Flatten(), [x])
    elif op in ("Gemm", "MatMul"):
        w = cst(1, "the weight")
        if w is None or w.ndim != 2 or len(shape[x]) != 1:
            raise OnnxImportError(f"{where}: only (N, F) times a constant matrix is supported")
        if op == "Gemm":
            if int(a.get("transA", 0)):
                raise OnnxImportError(f"{where}: transA=1 is not supported")
            w = w if int(a.get("transB", 0)) else w.T
            w = w * float(a.get("alpha", 1.0))
            b, O = cst(2, "C"), w.shape[0]
            if b is not None:
                b = np.asarray(b, np.float64)
                b = float(a.get("beta", 1.0)) * np.broadcast_to(b.reshape(-1) if b.size == O else b, (O,))
            else:
                b = np.zeros(O)
        else:
            w, b = w.T, np.zeros(w.shape[1])
        add(n, nn.Linear(w.shape[1], w.shape[0]), [x], {"weight": w, "bias": b})
    elif op == "Add":
        other = [i for i in ins if i not in src]
        if not other:
            if len(set(ins)) != len(ins):
                raise OnnxImportError(f"{where}: adds a value to itself; not supported")
            add(n, Add(), [src[i] for i in ins])
        else:
            b = const.get(other[0])
            if b is None:
                raise OnnxImportError(f"{where}: input {other[0]!r} is neither computed nor a constant")
            xn = src[dyn[0]]
            if kind.get(xn) == ("MatMul", dyn[0]) and readers.get(dyn[0]) == 1 and b.size == shape[xn][0]:
                state[f"{xn}.bias"] = state[f"{xn}.bias"] + np.asarray(b, np.float32).reshape(-1)
                kind[xn] = ("MatMul+Add", n.output[0])
                src[n.output[0]] = xn
            else:
                raise OnnxImportError(f"{where}: adds a constant to something other than a MatMul's "
                                      "output; not supported")
    elif op == "Concat":
        if any(i not in src for i in ins):
            raise OnnxImportError(f"{where}: concatenates computed values with constants; not supported")
        axis = int(a.get("axis", 1))
        if axis not in (1, -3) or len(shape[src[ins[0]]]) != 3:
            raise OnnxImportError(f"{where}: only concatenation of maps along channels (axis 1) is "
                                  f"supported, got axis {axis}")
        add(n, Concat(), [src[i] for i in ins])
    else:                                # a shape op on a computed value
        raise OnnxImportError(f"{where}: reads a computed value ({dyn[0]!r}); only constants and shapes "
                              "can go through it")


def _finish(g, path, src, nodes, state):
    """Keep the nodes the one output depends on; (nodes, state)."""
    outs = [o.name for o in g.output]
    if len(outs) != 1:
        raise OnnxImportError(f"{path}: the graph has {len(outs)} outputs {outs}; a classifier has one")
    if outs[0] not in src or src[outs[0]] == INPUT:
        raise OnnxImportError(f"{path}: the output {outs[0]!r} is not computed from the input image")
    last = src[outs[0]]
    # keep the nodes the output depends on (dropping, e.g., what only fed a Shape)
    need, todo = set(), [last]
    ins_of = {name: ins for name, _, ins in nodes}
    while todo:
        v = todo.pop()
        if v == INPUT or v in need:
            continue
        need.add(v)
        todo.extend(ins_of[v])
    nodes = [t for t in nodes if t[0] in need]
    if nodes[-1][0] != last:
        raise OnnxImportError(f"{path}: the output node {last!r} is not the last node in the file's order")
    state = {k: v for k, v in state.items() if k.rsplit(".", 1)[0] in need}
    return nodes, state


def _fold(n, a, ins, const, where):
    """Evaluate a constant node (Constant, Identity, Gather, Unsqueeze, Squeeze, Cast, Concat)."""
    op = n.op_type
    if op == "Constant":
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in a:
                v = a[key]
                if key == "value":
                    from onnx import numpy_helper
                    return numpy_helper.to_array(v)
                return np.asarray(v, np.float32 if "float" in key else np.int64)
        raise OnnxImportError(f"{where}: a Constant without a numeric value ({sorted(a)})")
    vals = []
    for i in ins:
        if i and i not in const:
            raise OnnxImportError(f"{where}: input {i!r} is not a constant; this op is only folded")
        vals.append(const.get(i) if i else None)
    try:
        if op == "Identity":
            return vals[0]
        if op == "Gather":
            return np.take(vals[0], vals[1].astype(np.int64), axis=int(a.get("axis", 0)))
        if op in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes") if "axes" in a else (None if len(vals) < 2 or vals[1] is None else vals[1])
            x = vals[0]
            if op == "Squeeze":
                return np.squeeze(x, axis=None if axes is None else tuple(int(v) for v in np.ravel(axes)))
            for ax in sorted(int(v) % (x.ndim + len(np.ravel(axes))) for v in np.ravel(axes)):
                x = np.expand_dims(x, ax)
            return x
        if op == "Cast":
            from onnx import helper
            return vals[0].astype(helper.tensor_dtype_to_np_dtype(int(a["to"])))
        if op == "Concat":
            return np.concatenate([np.atleast_1d(v) for v in vals], axis=int(a.get("axis", 0)))
    except (ValueError, TypeError, IndexError, KeyError, np.exceptions.AxisError) as e:
        raise OnnxImportError(f"{where}: cannot fold ({type(e).__name__}: {e})") from None
    raise OnnxImportError(f"{where}: not foldable")


def load_onnx(path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              channel_order: str | None = None, pixel_scale: float | None = None, resize: int | None = None,
              crop: int | None = None, input_size: int | Sequence[int] | None = None,
              max_parameters: int | None = None, fold_batch_norm: bool = True, device: str = "cpu") -> GraphNetwork:
    """An ONNX classifier as a GraphNetwork (module docstring: what is read, what is
    refused, how nodes are named).  Preprocessing and class names as for ``save_model``;
    ``input_size`` (H, W) where the file leaves the image size open.  ``fold_batch_norm=False``
    keeps every BatchNormalization as a ``batchnorm`` node (the file's own numbers, for
    float64 comparisons; folding rounds the folded weights to float32).  Every problem
    raises :class:`OnnxImportError` (a ``ModelFileError``) naming the file and the node."""
    from ..core.nn import weights_to_be_loaded
    from ..data.image import preprocessing_of
    from ..data.imagenet import IMAGENET_CLASSES
    path = Path(path)
    model = read_onnx(path, max_parameters, input_size)
    with weights_to_be_loaded():           # every weight is loaded from the file below
        nodes, state, input_shape = build_graph(model, path, max_parameters, input_size, fold_batch_norm)
        pre = {k: v for k, v in (("mean", mean), ("std", std), ("channel_order", channel_order),
                                 ("pixel_scale", pixel_scale), ("resize", resize), ("crop", crop)) if v is not None}
        pre = {k: (list(map(float, v)) if k in ("mean", "std") else v) for k, v in pre.items()}
        for k in ("mean", "std"):
            if k in pre and len(pre[k]) != input_shape[0]:
                raise OnnxImportError(f"{path}: {k} has {len(pre[k])} values; the network takes "
                                      f"{input_shape[0]} input channels (give one per channel)")
        try:
            net = GraphNetwork(nodes, input_shape, preprocessing=pre)
        except ValueError as e:
            raise OnnxImportError(f"{path}: {e}") from None
    if class_names is None and net.num_classes == len(IMAGENET_CLASSES):
        class_names = IMAGENET_CLASSES
    if class_names is not None:
        if len(class_names) != net.num_classes:
            raise OnnxImportError(f"{path}: {len(class_names)} class names for {net.num_classes} outputs")
        net.class_names = list(class_names)
    try:
        from types import SimpleNamespace
        preprocessing_of(SimpleNamespace(preprocessing=pre, input_shape=input_shape))
        net.load_state_dict(state)
    except (KeyError, ValueError) as e:
        raise OnnxImportError(f"{path}: {e.args[0] if e.args else e}") from None
    net.path = str(path)
    return net.to(device) if device != "cpu" else net


def convert_onnx(in_path: str | os.PathLike, out_path: str | os.PathLike, **kw) -> GraphNetwork:
    """ONNX file -> model file (``te.save_model``), preprocessing and class names stored;
    keywords as :func:`load_onnx`.  Returns the model."""
    from ..core.safe_io import check_output
    from .format import save_model
    src = os.fspath(in_path)
    out = check_output(out_path, inputs=[src], need_folder=False)
    net = load_onnx(src, **kw)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, out)
    net.path = str(out)
    return net


def cli(argv: list[str] | None = None, prog: str | None = None) -> int:
    """scripts/convert_onnx.py: ``INPUT.onnx OUTPUT.h5 [--mean --std ...]``; expected
    problems print one line and return exit code 2."""
    import argparse
    import sys
    ap = argparse.ArgumentParser(prog=prog, description="Convert an ONNX image classifier to a tinygrad-explain "
                                 "model file.")
    ap.add_argument("input", help="ONNX file (self-contained; e.g. from torch.onnx.export)")
    ap.add_argument("output", help="HDF5 model file to write")
    ap.add_argument("--imagenet", action="store_true",
                    help="torchvision's ImageNet preprocessing (mean/std, RGB, resize 256, crop 224)")
    ap.add_argument("--mean", type=float, nargs="+", help="per-channel mean (after pixel_scale)")
    ap.add_argument("--std", type=float, nargs="+", help="per-channel std")
    ap.add_argument("--channel-order", choices=("RGB", "BGR"))
    ap.add_argument("--pixel-scale", type=float, help="1.0 (pixels in [0, 1], default) or 255.0")
    ap.add_argument("--resize", type=int, help="resize the shorter side first (0 = warp to the input size)")
    ap.add_argument("--crop", type=int, help="centre crop after resizing")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                    help="image size where the ONNX input leaves it open")
    ap.add_argument("--class-names", help="text file, one class name a line")
    ap.add_argument("--max-parameters", type=int, help="largest parameter count accepted")
    args = ap.parse_args(argv)
    kw = dict(mean=args.mean, std=args.std, channel_order=args.channel_order, pixel_scale=args.pixel_scale,
              resize=args.resize, crop=args.crop, input_size=args.input_size, max_parameters=args.max_parameters)
    if args.imagenet:
        from ..data.imagenet import TORCHVISION_PREPROCESSING
        for k, v in TORCHVISION_PREPROCESSING.items():
            kw[k] = kw.get(k) if kw.get(k) is not None else (list(v) if isinstance(v, tuple) else v)
    try:
        if args.class_names:
            kw["class_names"] = _read_class_names(args.class_names)
        net = convert_onnx(args.input, args.output, **kw)
    except (ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{ap.prog}: error: {msg}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(net.layer_names)} nodes, input {net.input_shape}, {net.num_classes} classes")
    return 0


def _read_class_names(path) -> list[str]:
    """One class name a line from a UTF-8 text file (at most 10 MB, a regular file)."""
    from ..core.safe_io import regular_file_problem
    problem = regular_file_problem(path)
    if problem:
        raise ValueError(f"{path}: not a regular file ({problem})")
    if os.path.getsize(path) > 10 << 20:
        raise ValueError(f"{path}: more than 10 MB; not a list of class names")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
