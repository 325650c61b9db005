"""A small, strict reader of ONNX model files: protobuf wire format -> dataclasses + numpy arrays.

gramcast cannot install the ``onnx`` package (its protobuf requirement conflicts with mediapipe's pin),
and onnxruntime does not expose a model's graph or weights. This module decodes the subset of
``onnx.proto`` (IR versions 3-10) that an inference graph needs:

* ``ModelProto``: ir_version (1), producer_name (2), producer_version (3), graph (7), opset_import (8)
* ``GraphProto``: node (1), name (2), initializer (5), input (11), output (12)
* ``NodeProto``: input (1), output (2), name (3), op_type (4), attribute (5), domain (7)
* ``AttributeProto``: name (1), f (2), i (3), s (4), t (5), g (6), floats (7), ints (8), strings (9),
  tensors (10), graphs (11), type (20)
* ``TensorProto``: dims (1), data_type (2), float_data (4), int32_data (5), int64_data (7), name (8),
  raw_data (9), double_data (10), uint64_data (11), data_location (14)
* ``ValueInfoProto`` name (1), type (2) -> ``TypeProto.tensor_type`` (1) -> elem_type (1), shape (2)
  -> ``TensorShapeProto.dim`` (1) -> dim_value (1) / dim_param (2)

Every other field is skipped after its wire format is checked, as protobuf readers do. Anything the
reader cannot represent faithfully (external tensor data, sparse initializers, segmented tensors,
string tensors, unknown data types) raises ``OnnxFormatError`` instead of returning something wrong,
and so does any malformed input: truncated varints or payloads, impossible wire types, a
length that runs past its message, a tensor whose data does not match its dims, a model without a
graph. ``OnnxFormatError`` is a ``PretrainedWeightsError``, so callers that load weights report it
the same way as a missing or damaged weight file::

    model = read_onnx("~/.cache/gramcast/arcface_w600k_mbf.onnx")
    model.graph.nodes[0].op_type, model.graph.initializers["fc1.weight"].shape
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gramcast.training.pretrained.fetch import PretrainedWeightsError

__all__ = ["OnnxFormatError", "OnnxTensor", "OnnxAttribute", "OnnxNode", "OnnxValueInfo", "OnnxGraph",
           "OnnxModel", "read_onnx", "parse_model", "parse_tensor", "TENSOR_DTYPES"]


class OnnxFormatError(PretrainedWeightsError):
    """The bytes are not an ONNX model this reader can represent (truncated, foreign or unsupported)."""


# ------------------------------------------------------------------------------------- wire format
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5   # wire types; 3 and 4 (groups) are not used by onnx.proto
_WIRE_NAMES = {_VARINT: "varint", _I64: "64-bit", _LEN: "length-delimited", _I32: "32-bit"}


def _read_varint(buf: memoryview, pos: int, end: int, where: str) -> tuple[int, int]:
    """Unsigned varint at ``pos`` -> (value, next position). At most 10 bytes (64 bits)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise OnnxFormatError(f"truncated varint in {where} at byte {start}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise OnnxFormatError(f"varint longer than 10 bytes in {where} at byte {start}")
    if result >= 1 << 64:
        raise OnnxFormatError(f"varint exceeds 64 bits in {where} at byte {start}")
    return result, pos


def _signed64(v: int) -> int:
    """Two's-complement reinterpretation of a 64-bit varint (int32/int64 fields sign-extend to 64)."""
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class _Field:
    number: int
    wire: int
    value: Any          # int for varint / fixed; memoryview for length-delimited
    offset: int         # absolute byte offset of the payload, for error messages


def _fields(buf: memoryview, start: int, end: int, where: str):
    """Yield the fields of the message occupying ``buf[start:end]``, checking the wire format."""
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos, end, where)
        number, wire = key >> 3, key & 7
        if number == 0 or number > (1 << 29) - 1:
            raise OnnxFormatError(f"invalid field number {number} in {where} at byte {pos}: not a protobuf message")
        if wire == _VARINT:
            value, nxt = _read_varint(buf, pos, end, where)
        elif wire == _I64:
            nxt = pos + 8
            if nxt > end:
                raise OnnxFormatError(f"truncated 64-bit field {number} in {where} at byte {pos}")
            value = buf[pos:nxt]
        elif wire == _I32:
            nxt = pos + 4
            if nxt > end:
                raise OnnxFormatError(f"truncated 32-bit field {number} in {where} at byte {pos}")
            value = buf[pos:nxt]
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos, end, where)
            nxt = pos + length
            if nxt > end:
                raise OnnxFormatError(f"field {number} of {where} claims {length} bytes at byte {pos}, "
                                      f"only {end - pos} remain: truncated or not an ONNX file")
            value = buf[pos:nxt]
        else:   # groups (3, 4) are not used by onnx.proto; 6 and 7 do not exist
            raise OnnxFormatError(f"wire type {wire} (field {number}) in {where} at byte {pos}: "
                                  "not an ONNX protobuf")
        yield _Field(number, wire, value, pos)
        pos = nxt


def _expect(f: _Field, wire: int, name: str, where: str) -> None:
    if f.wire != wire:
        raise OnnxFormatError(f"{where}.{name} (field {f.number}) has wire type {_WIRE_NAMES.get(f.wire, f.wire)}, "
                              f"expected {_WIRE_NAMES[wire]}: not an ONNX file")


def _string(f: _Field, name: str, where: str) -> str:
    _expect(f, _LEN, name, where)
    try:
        return bytes(f.value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxFormatError(f"{where}.{name} is not UTF-8 ({exc}): not an ONNX file") from exc


def _int(f: _Field, name: str, where: str) -> int:
    _expect(f, _VARINT, name, where)
    return _signed64(f.value)


def _packed_varints(f: _Field, name: str, where: str, signed: bool = True) -> list[int]:
    """A repeated integer field occurrence: packed (one length-delimited run) or a single varint."""
    if f.wire == _VARINT:
        return [_signed64(f.value) if signed else f.value]
    _expect(f, _LEN, name, where)
    buf, out, pos, end = f.value, [], 0, len(f.value)
    while pos < end:
        v, pos = _read_varint(buf, pos, end, f"{where}.{name}")
        out.append(_signed64(v) if signed else v)
    return out


def _packed_fixed(f: _Field, name: str, where: str, fmt: str) -> np.ndarray:
    """A repeated float/double field occurrence: packed run or a single fixed-width value."""
    size = np.dtype(fmt).itemsize
    if f.wire == (_I32 if size == 4 else _I64):
        return np.frombuffer(bytes(f.value), fmt)
    _expect(f, _LEN, name, where)
    if len(f.value) % size:
        raise OnnxFormatError(f"{where}.{name}: {len(f.value)} bytes is not a whole number of {size}-byte values")
    return np.frombuffer(bytes(f.value), fmt)


# ------------------------------------------------------------------------------------- messages
#: ONNX TensorProto.DataType -> numpy little-endian dtype (the types this reader decodes)
TENSOR_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2",
                 11: "<f8", 12: "<u4", 13: "<u8"}
_DTYPE_NAMES = {0: "UNDEFINED", 8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16"}


@dataclass
class OnnxTensor:
    """An initializer or constant: ``array`` has shape ``dims`` and the dtype of ``data_type``."""
    name: str
    dims: tuple[int, ...]
    data_type: int
    array: np.ndarray


@dataclass
class OnnxAttribute:
    """``value``: float, int, str, OnnxTensor, OnnxGraph, or a list of one of these (by ``type``)."""
    name: str
    type: int
    value: Any


@dataclass
class OnnxNode:
    op_type: str
    inputs: list[str]          # "" marks an omitted optional input
    outputs: list[str]
    name: str = ""
    domain: str = ""           # "" and "ai.onnx" are the standard operator set
    attributes: dict[str, OnnxAttribute] = field(default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        a = self.attributes.get(name)
        return default if a is None else a.value


@dataclass
class OnnxValueInfo:
    """A graph input/output: ``shape`` entries are ints, symbolic names (str) or None (unknown)."""
    name: str
    elem_type: int | None = None
    shape: tuple[int | str | None, ...] | None = None


@dataclass
class OnnxGraph:
    name: str
    nodes: list[OnnxNode]
    initializers: dict[str, OnnxTensor]
    inputs: list[OnnxValueInfo]        # may include initializers (IR < 4 lists them as inputs too)
    outputs: list[OnnxValueInfo]

    @property
    def op_types(self) -> set[str]:
        return {n.op_type for n in self.nodes}


@dataclass
class OnnxModel:
    ir_version: int
    graph: OnnxGraph
    opset_imports: dict[str, int]      # domain ("" = standard) -> version
    producer_name: str = ""
    producer_version: str = ""


def parse_tensor(buf: memoryview, where: str = "TensorProto") -> OnnxTensor:
    """Decode one ``TensorProto`` message (its bytes) into an ``OnnxTensor`` (data copied)."""
    dims: list[int] = []
    data_type = None
    name = ""
    raw = None
    floats, doubles, ints32, ints64, uints64 = [], [], [], [], []
    for f in _fields(buf, 0, len(buf), where):
        n = f.number
        if n == 1:
            dims += _packed_varints(f, "dims", where)
        elif n == 2:
            data_type = _int(f, "data_type", where)
        elif n == 3:
            raise OnnxFormatError(f"{where} {name!r} is a segment of a larger tensor: not supported")
        elif n == 4:
            floats.append(_packed_fixed(f, "float_data", where, "<f4"))
        elif n == 5:
            ints32 += _packed_varints(f, "int32_data", where)
        elif n == 6:
            raise OnnxFormatError(f"{where} {name!r} holds strings: not supported")
        elif n == 7:
            ints64 += _packed_varints(f, "int64_data", where)
        elif n == 8:
            name = _string(f, "name", where)
        elif n == 9:
            _expect(f, _LEN, "raw_data", where)
            raw = f.value
        elif n == 10:
            doubles.append(_packed_fixed(f, "double_data", where, "<f8"))
        elif n == 11:
            uints64 += _packed_varints(f, "uint64_data", where, signed=False)
        elif n == 13:
            raise OnnxFormatError(f"{where} {name!r} stores its data in an external file: not supported")
        elif n == 14:
            if _int(f, "data_location", where) != 0:
                raise OnnxFormatError(f"{where} {name!r} stores its data in an external file: not supported")
    label = f"{where} {name!r}" if name else where
    if data_type is None:
        raise OnnxFormatError(f"{label} has no data_type")
    if data_type not in TENSOR_DTYPES:
        raise OnnxFormatError(f"{label} has data type {_DTYPE_NAMES.get(data_type, data_type)}: not supported")
    if any(d < 0 for d in dims):
        raise OnnxFormatError(f"{label} has negative dims {dims}")
    dtype = np.dtype(TENSOR_DTYPES[data_type])
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise OnnxFormatError(f"{label}: {len(raw)} bytes of raw_data for dims {dims} of {dtype} "
                                  f"({count * dtype.itemsize} expected): truncated or damaged")
        arr = np.frombuffer(bytes(raw), dtype)
    else:
        # the typed fields; which one is used depends on data_type (onnx.proto's comments)
        if data_type == 1:
            arr = np.concatenate(floats) if floats else np.zeros(0, dtype)
        elif data_type == 11:
            arr = np.concatenate(doubles) if doubles else np.zeros(0, dtype)
        elif data_type == 7:
            arr = np.array(ints64, np.int64)
        elif data_type in (12, 13):
            arr = np.array(uints64, np.uint64).astype(dtype)
        elif data_type == 10:   # float16 bit patterns carried in int32_data
            arr = np.array(ints32, np.int64).astype(np.uint16).view(np.float16)
        else:                   # int32, int16, int8, uint16, uint8, bool in int32_data
            arr = np.array(ints32, np.int64).astype(dtype)
        if arr.size != count:
            raise OnnxFormatError(f"{label}: {arr.size} values for dims {dims} ({count} expected)")
    return OnnxTensor(name, tuple(dims), data_type, arr.astype(dtype, copy=True).reshape(dims))


def _parse_attribute(buf: memoryview, where: str) -> OnnxAttribute:
    name, atype = "", None
    f_val = i_val = s_val = t_val = g_val = None
    floats: list[np.ndarray] = []
    ints: list[int] = []
    strings: list[str] = []
    tensors: list[OnnxTensor] = []
    graphs: list[OnnxGraph] = []
    for f in _fields(buf, 0, len(buf), where):
        n = f.number
        if n == 1:
            name = _string(f, "name", where)
        elif n == 2:
            _expect(f, _I32, "f", where)
            f_val = float(struct.unpack("<f", f.value)[0])
        elif n == 3:
            i_val = _int(f, "i", where)
        elif n == 4:
            s_val = _string(f, "s", where)
        elif n == 5:
            _expect(f, _LEN, "t", where)
            t_val = parse_tensor(f.value, f"{where} {name!r}.t")
        elif n == 6:
            _expect(f, _LEN, "g", where)
            g_val = _parse_graph(f.value, f"{where} {name!r}.g")
        elif n == 7:
            floats.append(_packed_fixed(f, "floats", where, "<f4"))
        elif n == 8:
            ints += _packed_varints(f, "ints", where)
        elif n == 9:
            strings.append(_string(f, "strings", where))
        elif n == 10:
            _expect(f, _LEN, "tensors", where)
            tensors.append(parse_tensor(f.value, f"{where} {name!r}.tensors"))
        elif n == 11:
            _expect(f, _LEN, "graphs", where)
            graphs.append(_parse_graph(f.value, f"{where} {name!r}.graphs"))
        elif n in (22, 23):
            raise OnnxFormatError(f"attribute {name!r}: sparse tensors are not supported")
        elif n == 20:
            atype = _int(f, "type", where)
    if not name:
        raise OnnxFormatError(f"{where} without a name")
    if atype is None or atype == 0:
        # IR version 1 had no discriminator: infer it from the one field that is set
        present = [(1, f_val), (2, i_val), (3, s_val), (4, t_val), (5, g_val), (6, floats), (7, ints),
                   (8, strings), (9, tensors), (10, graphs)]
        present = [t for t, v in present if v not in (None, [])]
        if len(present) != 1:
            raise OnnxFormatError(f"attribute {name!r} has no type and {len(present)} value fields")
        atype = present[0]
    values = {1: f_val, 2: i_val, 3: s_val, 4: t_val, 5: g_val,
              6: [float(x) for a in floats for x in a], 7: ints, 8: strings, 9: tensors, 10: graphs}
    if atype not in values:
        raise OnnxFormatError(f"attribute {name!r} has type {atype}: not supported")
    value = values[atype]
    if value is None:
        # proto2 scalars may be omitted when they equal the default (0, "", ...)
        value = {1: 0.0, 2: 0, 3: ""}.get(atype)
        if value is None:
            raise OnnxFormatError(f"attribute {name!r} of type {atype} has no value")
    return OnnxAttribute(name, atype, value)


def _parse_node(buf: memoryview, where: str) -> OnnxNode:
    node = OnnxNode(op_type="", inputs=[], outputs=[])
    for f in _fields(buf, 0, len(buf), where):
        n = f.number
        if n == 1:
            node.inputs.append(_string(f, "input", where))
        elif n == 2:
            node.outputs.append(_string(f, "output", where))
        elif n == 3:
            node.name = _string(f, "name", where)
        elif n == 4:
            node.op_type = _string(f, "op_type", where)
        elif n == 5:
            _expect(f, _LEN, "attribute", where)
            a = _parse_attribute(f.value, f"attribute of node {node.name or node.op_type!r}")
            node.attributes[a.name] = a
        elif n == 7:
            node.domain = _string(f, "domain", where)
    if not node.op_type:
        raise OnnxFormatError(f"{where} {node.name!r} has no op_type")
    if not node.outputs:
        raise OnnxFormatError(f"{where} {node.name or node.op_type!r} has no outputs")
    return node


def _parse_shape(buf: memoryview, where: str) -> tuple[int | str | None, ...]:
    dims: list[int | str | None] = []
    for f in _fields(buf, 0, len(buf), where):
        if f.number == 1:
            _expect(f, _LEN, "dim", where)
            d: int | str | None = None
            for g in _fields(f.value, 0, len(f.value), where + ".dim"):
                if g.number == 1:
                    d = _int(g, "dim_value", where)
                elif g.number == 2:
                    d = _string(g, "dim_param", where)
            dims.append(d)
    return tuple(dims)


def _parse_value_info(buf: memoryview, where: str) -> OnnxValueInfo:
    info = OnnxValueInfo(name="")
    for f in _fields(buf, 0, len(buf), where):
        if f.number == 1:
            info.name = _string(f, "name", where)
        elif f.number == 2:
            _expect(f, _LEN, "type", where)
            for g in _fields(f.value, 0, len(f.value), where + ".type"):
                if g.number == 1:          # tensor_type; sequences and maps stay untyped here
                    _expect(g, _LEN, "tensor_type", where)
                    for h in _fields(g.value, 0, len(g.value), where + ".tensor_type"):
                        if h.number == 1:
                            info.elem_type = _int(h, "elem_type", where)
                        elif h.number == 2:
                            _expect(h, _LEN, "shape", where)
                            info.shape = _parse_shape(h.value, where + ".shape")
    if not info.name:
        raise OnnxFormatError(f"{where} without a name")
    return info


def _parse_graph(buf: memoryview, where: str = "GraphProto") -> OnnxGraph:
    graph = OnnxGraph(name="", nodes=[], initializers={}, inputs=[], outputs=[])
    for f in _fields(buf, 0, len(buf), where):
        n = f.number
        if n == 1:
            _expect(f, _LEN, "node", where)
            graph.nodes.append(_parse_node(f.value, f"node {len(graph.nodes)}"))
        elif n == 2:
            graph.name = _string(f, "name", where)
        elif n == 5:
            _expect(f, _LEN, "initializer", where)
            t = parse_tensor(f.value, "initializer")
            if not t.name:
                raise OnnxFormatError(f"initializer {len(graph.initializers)} of {where} has no name")
            if t.name in graph.initializers:
                raise OnnxFormatError(f"initializer {t.name!r} appears twice in {where}")
            graph.initializers[t.name] = t
        elif n == 15:
            raise OnnxFormatError(f"{where} has sparse initializers: not supported")
        elif n == 11:
            _expect(f, _LEN, "input", where)
            graph.inputs.append(_parse_value_info(f.value, f"{where}.input"))
        elif n == 12:
            _expect(f, _LEN, "output", where)
            graph.outputs.append(_parse_value_info(f.value, f"{where}.output"))
        elif n in (3, 4):   # deprecated string lists from IR 1: we cannot interpret them
            raise OnnxFormatError(f"{where} uses the pre-release field {n}: not supported")
    return graph


def parse_model(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> OnnxModel:
    """Decode a serialised ``ModelProto``. Raises ``OnnxFormatError`` naming ``source``."""
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    if len(buf) == 0:
        raise OnnxFormatError(f"{source} is empty: not an ONNX model")
    ir_version = None
    graph = None
    opsets: dict[str, int] = {}
    producer = producer_version = ""
    try:
        for f in _fields(buf, 0, len(buf), "ModelProto"):
            n = f.number
            if n == 1:
                ir_version = _int(f, "ir_version", "ModelProto")
            elif n == 2:
                producer = _string(f, "producer_name", "ModelProto")
            elif n == 3:
                producer_version = _string(f, "producer_version", "ModelProto")
            elif n == 7:
                _expect(f, _LEN, "graph", "ModelProto")
                if graph is not None:
                    raise OnnxFormatError("ModelProto has two graphs")
                graph = _parse_graph(f.value)
            elif n == 8:
                _expect(f, _LEN, "opset_import", "ModelProto")
                domain, version = "", None
                for g in _fields(f.value, 0, len(f.value), "OperatorSetIdProto"):
                    if g.number == 1:
                        domain = _string(g, "domain", "OperatorSetIdProto")
                    elif g.number == 2:
                        version = _int(g, "version", "OperatorSetIdProto")
                if version is None:
                    raise OnnxFormatError(f"opset_import for domain {domain!r} has no version")
                opsets[domain] = version
    except OnnxFormatError as exc:
        raise OnnxFormatError(f"{source}: {exc}") from None
    except RecursionError:   # subgraphs nest through attributes; a hostile file could nest them endlessly
        raise OnnxFormatError(f"{source}: subgraphs nested too deeply to be a real model") from None
    if ir_version is None or graph is None:
        raise OnnxFormatError(f"{source} is not an ONNX model (no {'ir_version' if ir_version is None else 'graph'})")
    if not 1 <= ir_version <= 64:
        raise OnnxFormatError(f"{source} declares ONNX IR version {ir_version}: not an ONNX model")
    if ir_version >= 3 and not opsets:   # IR 3 introduced opset_import and made it mandatory
        raise OnnxFormatError(f"{source} has no opset_import: truncated, or not an ONNX model")
    if not graph.nodes or not graph.outputs:
        raise OnnxFormatError(f"{source}: the graph has no {'nodes' if not graph.nodes else 'outputs'}")
    return OnnxModel(ir_version, graph, opsets, producer, producer_version)


def read_onnx(path: Path | str) -> OnnxModel:
    """Read and decode an ``.onnx`` file (weights must be inside it, not in external files)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnnxFormatError(f"cannot read {path}: {exc}") from exc
    return parse_model(data, str(path))
