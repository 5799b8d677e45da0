"""Read (and, for tests, write) Caffe ``.caffemodel`` weights -- no protobuf needed.

The protobuf wire format in one page
------------------------------------
A protobuf message is a flat sequence of *fields*.  Each field starts with a
**varint key** ``(field_number << 3) | wire_type``, then the value:

==========  ==========================  =================================
wire type   value encoding              used here for
==========  ==========================  =================================
0 VARINT    base-128 varint             enums, int32/int64/uint64
1 I64       8 bytes little-endian       double
2 LEN       varint length + bytes       strings, sub-messages, packed arrays
5 I32       4 bytes little-endian       float
==========  ==========================  =================================

A *varint* stores 7 bits per byte, least significant group first; the top
bit of each byte says "more bytes follow".  Repeated numeric fields are
either *packed* (one LEN field holding the values back to back) or
*unpacked* (the field repeated, one value each) -- a reader must accept both.
Unknown fields are skipped using their wire type, which is what makes the
format forward compatible and lets this reader ignore everything in
``caffe.proto`` except the weights.

The part of ``caffe.proto`` we need
-----------------------------------
::

    message NetParameter {
      optional string name = 1;
      repeated V1LayerParameter layers = 2;   // old (V1) nets, e.g. bvlc_alexnet
      repeated LayerParameter layer = 100;    // current (V2) nets
    }
    message LayerParameter   { optional string name = 1; optional string type = 2;
                               repeated BlobProto blobs = 7; }
    message V1LayerParameter { optional string name = 4; optional LayerType type = 5;
                               repeated BlobProto blobs = 6; }
    message BlobProto {
      optional BlobShape shape = 7;
      repeated float data = 5 [packed = true];
      repeated double double_data = 8 [packed = true];
      optional int32 num = 1; optional int32 channels = 2;   // legacy 4-D shape
      optional int32 height = 3; optional int32 width = 4;
    }
    message BlobShape { repeated int64 dim = 1 [packed = true]; }

For a convolution the blobs are ``[weight (O, I/groups, kH, kW), bias (O,)]``;
for an InnerProduct ``[weight (out, in), bias (out,)]`` -- the same layouts
as PyTorch.  Blobs written with the legacy fields have 4-D shapes padded with
leading ones, e.g. an fc weight is ``(1, 1, out, in)`` and a bias
``(1, 1, 1, out)``; :func:`load_caffemodel` returns them as stored and the
converter reshapes by element count.

Public API: :func:`load_caffemodel`, :func:`read_caffemodel_layers`,
:func:`encode_caffemodel` (test helper).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..core.safe_io import regular_file_problem

__all__ = [
    "CaffeLayer",
    "load_caffemodel",
    "parse_caffemodel",
    "read_caffemodel_layers",
    "encode_caffemodel",
    "V1_LAYER_TYPES",
]

# V1LayerParameter.LayerType enum values (caffe.proto) for the names we print.
V1_LAYER_TYPES = {
    0: "None", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data",
    6: "Dropout", 7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output",
    11: "Im2col", 12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise",
    26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData",
    30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN",
    35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}
_V1_TYPE_IDS = {v: k for k, v in V1_LAYER_TYPES.items()}

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type and parameter blobs."""
    name: str
    type: str
    blobs: list = field(default_factory=list)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------
def _read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at ``buf[pos]``; return (value, new_pos)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise ValueError(f"truncated varint at byte offset {start}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"varint longer than 10 bytes at byte offset {start}")


def _iter_fields(buf, pos: int, end: int):
    """Yield ``(field_number, wire_type, value, value_offset)`` for one message.

    ``value`` is an int for VARINT/I64/I32 (raw bits) and a ``(start, stop)``
    slice of ``buf`` for LEN fields, so big payloads are never copied here.
    Offsets are absolute positions in the file, for error messages.
    """
    while pos < end:
        key_at = pos
        key, pos = _read_varint(buf, pos, end)
        fnum, wt = key >> 3, key & 7
        if fnum == 0:
            raise ValueError(f"invalid field number 0 at byte offset {key_at}")
        if wt == VARINT:
            val, pos = _read_varint(buf, pos, end)
            yield fnum, wt, val, key_at
        elif wt == I64:
            if pos + 8 > end:
                raise ValueError(f"truncated 64-bit field {fnum} at byte offset {pos}")
            yield fnum, wt, int.from_bytes(buf[pos:pos + 8], "little"), key_at
            pos += 8
        elif wt == I32:
            if pos + 4 > end:
                raise ValueError(f"truncated 32-bit field {fnum} at byte offset {pos}")
            yield fnum, wt, int.from_bytes(buf[pos:pos + 4], "little"), key_at
            pos += 4
        elif wt == LEN:
            n, pos = _read_varint(buf, pos, end)
            if pos + n > end:
                raise ValueError(f"field {fnum} at byte offset {key_at} claims {n} bytes but "
                                 f"only {end - pos} remain (truncated file?)")
            yield fnum, wt, (pos, pos + n), key_at
            pos += n
        elif wt == SGROUP:
            pos = _skip_group(buf, pos, end, fnum, key_at)
        else:
            raise ValueError(f"invalid wire type {wt} for field {fnum} at byte offset {key_at}")


def _skip_group(buf, pos, end, fnum, key_at):
    """Skip a (deprecated) group: fields until the matching END_GROUP key.

    Iterative (a stack of open groups), so a file of a million nested
    groups is a clear error or a skip, never Python's recursion limit."""
    open_groups = [(fnum, key_at)]
    while open_groups:
        if pos >= end:
            raise ValueError(f"unterminated group {open_groups[-1][0]} starting at byte offset "
                             f"{open_groups[-1][1]}")
        k_at = pos
        key, pos = _read_varint(buf, pos, end)
        f, wt = key >> 3, key & 7
        if wt == EGROUP:
            if f != open_groups[-1][0]:
                raise ValueError(f"mismatched end-group at byte offset {k_at}")
            open_groups.pop()
            continue
        if wt == VARINT:
            _, pos = _read_varint(buf, pos, end)
        elif wt == I64:
            pos += 8
        elif wt == I32:
            pos += 4
        elif wt == LEN:
            n, pos = _read_varint(buf, pos, end)
            pos += n
        elif wt == SGROUP:
            open_groups.append((f, k_at))
        else:
            raise ValueError(f"invalid wire type {wt} at byte offset {k_at}")
        if pos > end:
            raise ValueError(f"truncated group {open_groups[-1][0] if open_groups else fnum} starting at "
                             f"byte offset {key_at}")
    return pos


def _expect(wt, want, fnum, at, what):
    if wt not in want:
        raise ValueError(f"{what}: field {fnum} at byte offset {at} has wire type {wt}, "
                         f"expected {' or '.join(map(str, want))}")


def _packed_varints(buf, start, stop):
    vals, pos = [], start
    while pos < stop:
        v, pos = _read_varint(buf, pos, stop)
        vals.append(v)
    return vals


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_blob_shape(buf, start, stop):
    dims = []
    for fnum, wt, val, at in _iter_fields(buf, start, stop):
        if fnum == 1:
            _expect(wt, (VARINT, LEN), fnum, at, "BlobShape.dim")
            if wt == LEN:
                dims.extend(_signed64(v) for v in _packed_varints(buf, *val))
            else:
                dims.append(_signed64(val))
    return tuple(dims)


def _packed(buf, span, at, dtype, what):
    """A packed repeated float/double field spanning bytes [a, b) as a NumPy view."""
    a, b = span
    size = np.dtype(dtype).itemsize
    if (b - a) % size:
        raise ValueError(f"packed {what} data at byte offset {at} has {b - a} bytes, not a multiple of {size}")
    return np.frombuffer(buf, dtype=dtype, count=(b - a) // size, offset=a)


def _parse_blob(buf, start, stop) -> np.ndarray:
    """BlobProto -> ndarray (float32, or float64 if only double_data is present)."""
    shape = None
    legacy = {}
    chunks, scalars = [], []          # float data: packed chunks / unpacked values
    dchunks, dscalars = [], []        # double data
    # field -> (name, wire type of one unpacked value, dtype, what, packed chunks, unpacked values)
    values = {5: ("data", I32, "<f4", "float", chunks, scalars),
              8: ("double_data", I64, "<f8", "double", dchunks, dscalars)}
    for fnum, wt, val, at in _iter_fields(buf, start, stop):
        if fnum == 7:
            _expect(wt, (LEN,), fnum, at, "BlobProto.shape")
            shape = _parse_blob_shape(buf, *val)
        elif fnum in values:
            name, one, dtype, what, packed, unpacked = values[fnum]
            _expect(wt, (LEN, one), fnum, at, f"BlobProto.{name}")
            if wt == LEN:
                packed.append(_packed(buf, val, at, dtype, what))
            else:
                unpacked.append(val)
        elif fnum in (1, 2, 3, 4):
            _expect(wt, (VARINT,), fnum, at, "BlobProto legacy dim")
            legacy[fnum] = _signed64(val)
        # 6 (diff), 9 (double_diff) and unknown fields: ignored
    if scalars:
        chunks.append(np.array(scalars, dtype=np.uint32).view("<f4"))
    if dscalars:
        dchunks.append(np.array(dscalars, dtype=np.uint64).view("<f8"))
    # astype copies, so the result never aliases (or keeps alive) the file buffer.
    if chunks:
        data = (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)).astype(np.float32)
    elif dchunks:
        data = (dchunks[0] if len(dchunks) == 1 else np.concatenate(dchunks)).astype(np.float64)
    else:
        data = np.zeros(0, np.float32)
    if shape is None:
        if legacy:
            shape = tuple(legacy.get(i, 1) for i in (1, 2, 3, 4))
        else:
            shape = (data.size,)
    count = math.prod(shape)                              # exact (Python ints): no int64 wrap-around
    if any(d < 0 for d in shape) or count != data.size:
        raise ValueError(f"blob at byte offset {start} has shape {shape} ({count} values) but {data.size} "
                         "data values")
    return data.reshape(shape)


def _parse_layer(buf, start, stop, v1: bool) -> CaffeLayer:
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    name, ltype, blobs = "", "", []
    for fnum, wt, val, at in _iter_fields(buf, start, stop):
        if fnum == name_f:
            _expect(wt, (LEN,), fnum, at, "layer name")
            name = _utf8(buf, val, at)
        elif fnum == type_f:
            if v1:
                _expect(wt, (VARINT,), fnum, at, "V1 layer type")
                ltype = V1_LAYER_TYPES.get(val, f"V1 type {val}")
            else:
                _expect(wt, (LEN,), fnum, at, "layer type")
                ltype = _utf8(buf, val, at)
        elif fnum == blobs_f:
            _expect(wt, (LEN,), fnum, at, "layer blobs")
            blobs.append(_parse_blob(buf, *val))
    return CaffeLayer(name, ltype, blobs)


def _utf8(buf, span, at):
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"string field at byte offset {at} is not valid UTF-8") from None


def parse_caffemodel(data) -> list[CaffeLayer]:
    """Parse NetParameter bytes into a list of :class:`CaffeLayer` (file order).

    Both the V2 ``layer`` (field 100) and the V1 ``layers`` (field 2) lists
    are read; a file normally has only one of them.  Malformed input raises
    ``ValueError`` naming the byte offset where parsing failed.
    """
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    layers = []
    for fnum, wt, val, at in _iter_fields(buf, 0, len(buf)):
        if fnum in (2, 100):
            _expect(wt, (LEN,), fnum, at, "NetParameter.layer(s)")
            layers.append(_parse_layer(buf, *val, v1=(fnum == 2)))
    return layers


def read_caffemodel_layers(path) -> list[CaffeLayer]:
    """Read a ``.caffemodel`` file into a list of :class:`CaffeLayer`."""
    path = os.fspath(path)
    problem = regular_file_problem(path)                 # FileNotFoundError names the path
    if problem:
        raise ValueError(f"{path}: not a regular file ({problem})")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"{path}: empty file, not a caffemodel")
    try:
        return parse_caffemodel(data)
    except ValueError as e:
        raise ValueError(f"{path}: not a valid caffemodel: {e}") from None


def load_caffemodel(path) -> dict[str, list[np.ndarray]]:
    """``{layer_name: [blob0, blob1, ...]}`` for every layer that has blobs.

    For conv/fc layers blob 0 is the weight and blob 1 the bias.  Layers
    without parameters (ReLU, pooling, ...) are left out.  If a name occurs
    twice (e.g. a train and a test copy of a layer), the first is kept.

    >>> w = load_caffemodel("bvlc_alexnet.caffemodel")      # doctest: +SKIP
    >>> [b.shape for b in w["conv2"]]                       # doctest: +SKIP
    [(256, 48, 5, 5), (1, 1, 1, 256)]
    """
    out: dict[str, list[np.ndarray]] = {}
    for layer in read_caffemodel_layers(path):
        if layer.blobs and layer.name not in out:
            out[layer.name] = layer.blobs
    return out


# ---------------------------------------------------------------------------
# Encoding (used by the tests to build synthetic caffemodels)
# ---------------------------------------------------------------------------
def _varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64          # negative int64 -> 10-byte two's complement varint
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(fnum: int, wt: int) -> bytes:
    return _varint((fnum << 3) | wt)


def _len_field(fnum: int, payload: bytes) -> bytes:
    return _key(fnum, LEN) + _varint(len(payload)) + payload


def _sub(fnum: int, parts: list) -> list:
    """A LEN field whose payload is the concatenation of ``parts`` -- kept as a
    list, so big float payloads are copied once, by the final ``b"".join``."""
    return [_key(fnum, LEN), _varint(sum(len(p) for p in parts)), *parts]


def _encode_blob(arr, legacy_shape: bool, packed: bool, double: bool) -> list:
    arr = np.asarray(arr)
    out = []
    if legacy_shape:
        if arr.ndim > 4:
            raise ValueError("legacy blob shape holds at most 4 dims")
        dims = (1,) * (4 - arr.ndim) + arr.shape
        for fnum, d in zip((1, 2, 3, 4), dims):
            out.append(_key(fnum, VARINT) + _varint(int(d)))
    else:
        dims = b"".join(_varint(int(d)) for d in arr.shape)
        out.append(_len_field(7, _len_field(1, dims) if arr.ndim else b""))
    fnum, wt, dt = (8, I64, "<f8") if double else (5, I32, "<f4")
    flat = arr.ravel().astype(dt)
    if packed:
        out += _sub(fnum, [flat.tobytes()])
    else:
        key = _key(fnum, wt)
        out.append(b"".join(key + v.tobytes() for v in flat))
    return out


def encode_caffemodel(layers, v1: bool = False, legacy_shape: bool = False,
                      packed: bool = True, double: bool = False, net_name: str = "net") -> bytes:
    """Serialize ``layers`` as a NetParameter (the inverse of :func:`parse_caffemodel`).

    ``layers``: iterable of ``(name, type, blobs)`` or :class:`CaffeLayer`;
    ``type`` is a string such as ``"Convolution"`` (mapped to the V1 enum when
    ``v1``).  ``legacy_shape`` writes num/channels/height/width instead of
    ``BlobShape``; ``packed=False`` writes one field per float; ``double``
    writes ``double_data``.  A test helper -- real files come from Caffe.
    """
    out = [_len_field(1, net_name.encode())]
    for layer in layers:
        if isinstance(layer, CaffeLayer):
            name, ltype, blobs = layer.name, layer.type, layer.blobs
        else:
            name, ltype, blobs = layer
        if v1:
            body = [_len_field(4, name.encode()),
                    _key(5, VARINT) + _varint(_V1_TYPE_IDS.get(ltype, 0))]
            blob_field = 6
        else:
            body = [_len_field(1, name.encode()), _len_field(2, ltype.encode())]
            blob_field = 7
        for b in blobs:
            body += _sub(blob_field, _encode_blob(b, legacy_shape, packed, double))
        out += _sub(2 if v1 else 100, body)
    return b"".join(out)
