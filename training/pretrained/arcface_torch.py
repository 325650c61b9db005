"""ArcFace MobileFaceNet in torch: a differentiable identity network for training losses.

``ArcFaceTorch`` runs insightface's ``w600k_mbf.onnx`` (the file ``ArcFaceEmbedder`` runs with
onnxruntime, see ``identity``) with torch ops, so gradients reach the input images. The ONNX file is
decoded by ``onnx_reader`` (no ``onnx`` package: it cannot be installed next to mediapipe) and its
graph is executed node by node by ``OnnxInterpreter``, which supports exactly the small operator set
that convolutional embedders exported from PyTorch use (``SUPPORTED_OPS``); a graph with any other
operator is refused when it is loaded, naming the operators, rather than computed wrongly.

w600k_mbf.onnx (ir 6, opset 11, exported by PyTorch 1.8) is 98 nodes: 49 Conv, 34 PRelu, 12 Add,
Flatten, Gemm and a final BatchNormalization on the 512-D feature; 3.4 M float32 weights. The input
normalisation ``(x - 127.5) / 127.5`` is not in the graph: it takes [-1, 1] images, as our crops are.

    from gramcast.training.pretrained.arcface_torch import ArcFaceTorch
    net = ArcFaceTorch.from_cache().to(device)     # frozen weights (buffers), eval-only semantics
    emb = net(crops)                               # (B, 3, S, S) in [-1, 1] -> (B, 512), differentiable

``forward`` warps gramcast aligned crops (any square size S) onto ArcFace's 112² template with
``identity.warp_to_arcface`` (bilinear, differentiable) and returns the raw, *un-normalised*
embeddings; L2-normalise them for cosine similarity (``ReconstructionLoss`` does). Unlike
``ArcFaceEmbedder.embed_crops`` the warped input is not clamped to [-1, 1], so out-of-range pixels
still get gradients; for inputs in [-1, 1] the two agree (bilinear sampling stays in range).
``embed_aligned`` takes faces already aligned to ArcFace's template (112²).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gramcast.training.pretrained.fetch import _PINNED, PretrainedWeightsError, require_weights
from gramcast.training.pretrained.onnx_reader import OnnxFormatError, OnnxModel, OnnxNode, read_onnx

__all__ = ["ArcFaceTorch", "OnnxInterpreter", "UnsupportedOnnxError", "SUPPORTED_OPS"]


class UnsupportedOnnxError(PretrainedWeightsError):
    """The ONNX graph uses an operator or attribute the torch interpreter does not implement."""


# ------------------------------------------------------------------------------------- operators
# Each op is ``fn(node, inputs, static) -> outputs`` compiled once per node into a closure
# ``run(inputs: list[Tensor | None]) -> list[Tensor]``; attributes are checked at compile time so a
# graph that loads is a graph that runs. ``static`` gives the numpy value of a constant input (an
# initializer or a Constant node's output) or None, for inputs that must be known up front (shapes).

def _unsupported(node: OnnxNode, what: str) -> UnsupportedOnnxError:
    return UnsupportedOnnxError(f"ONNX node {node.name or '?'} ({node.op_type}): {what} is not supported "
                                "by gramcast's torch interpreter")


def _ints(node: OnnxNode, name: str, default):
    v = node.attr(name, default)
    return None if v is None else [int(x) for x in v]


def _compile_conv(node: OnnxNode, static, n_inputs) -> Callable:
    """Conv (1-3 spatial dims): inputs X (N, C, *D), W (M, C/group, *k), optional B (M,)."""
    w = static(node.inputs[1])
    if w is None:
        raise _unsupported(node, "a convolution weight computed at run time")
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        raise _unsupported(node, f"a {nd}-D convolution")
    auto_pad = node.attr("auto_pad", "NOTSET")
    kernel = _ints(node, "kernel_shape", None)
    if kernel is not None and list(kernel) != list(w.shape[2:]):
        raise OnnxFormatError(f"Conv {node.name!r}: kernel_shape {kernel} but weight {w.shape}")
    strides = _ints(node, "strides", [1] * nd)
    dilations = _ints(node, "dilations", [1] * nd)
    group = int(node.attr("group", 1))
    pads = _ints(node, "pads", [0] * (2 * nd))
    if auto_pad == "VALID":
        pads = [0] * (2 * nd)
    elif auto_pad != "NOTSET":
        raise _unsupported(node, f"auto_pad={auto_pad}")
    if len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise OnnxFormatError(f"Conv {node.name!r}: attributes do not match a {nd}-D kernel")
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    begin, end = pads[:nd], pads[nd:]
    if begin == end:            # symmetric: the convolution pads itself
        padding, pre_pad = tuple(begin), None
    else:                       # ONNX pads are (x1_begin, x2_begin, ..., x1_end, ...); F.pad wants last dim first
        padding = 0
        pre_pad = [p for i in reversed(range(nd)) for p in (begin[i], end[i])]

    def run(x: list) -> list:
        inp = x[0] if pre_pad is None else F.pad(x[0], pre_pad)
        return [conv(inp, x[1], x[2] if len(x) > 2 else None, tuple(strides), padding, tuple(dilations), group)]
    return run


def _compile_batchnorm(node: OnnxNode, static, n_inputs) -> Callable:
    """BatchNormalization in inference mode: X (N, C, *D), scale/B/mean/var (C,)."""
    if int(node.attr("training_mode", 0)) != 0 or len(node.outputs) > 1:
        raise _unsupported(node, "training-mode batch normalisation")
    if n_inputs != 5:
        raise OnnxFormatError(f"BatchNormalization {node.name!r} has {n_inputs} inputs, not 5")
    eps = float(node.attr("epsilon", 1e-5))

    def run(x: list) -> list:
        return [F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=eps)]
    return run


def _compile_prelu(node: OnnxNode, static, n_inputs) -> Callable:
    """PRelu: Y = X where X >= 0 else slope · X; slope broadcasts to X numpy-style (right-aligned)."""
    slope = static(node.inputs[1])
    # F.prelu (one fused kernel) applies a (C,) slope along dim 1; a slope shaped (C, 1, ..., 1) lines
    # up with dim 1 exactly when X has one more dimension than the slope.
    per_channel = slope is not None and (slope.size == 1 or
                                         (slope.ndim >= 1 and all(d == 1 for d in slope.shape[1:])))

    def run(x: list) -> list:
        inp, s = x
        if per_channel and (s.numel() == 1 or inp.dim() == s.dim() + 1):
            return [F.prelu(inp, s.reshape(-1))]
        return [torch.where(inp >= 0, inp, inp * s)]
    return run


def _compile_flatten(node: OnnxNode, static, n_inputs) -> Callable:
    """Flatten: (d0, ..., dn) -> (d0 ··· d(axis-1), d(axis) ··· dn)."""
    axis = int(node.attr("axis", 1))

    def run(x: list) -> list:
        t = x[0]
        a = axis + t.dim() if axis < 0 else axis
        lead = int(np.prod(t.shape[:a])) if a > 0 else 1
        return [t.reshape(lead, -1)]
    return run


def _compile_reshape(node: OnnxNode, static, n_inputs) -> Callable:
    """Reshape to a constant shape (0 copies the input's dim unless allowzero=1, -1 is inferred)."""
    shape = static(node.inputs[1])
    if shape is None:
        raise _unsupported(node, "a reshape to a shape computed at run time")
    shape = [int(s) for s in shape.reshape(-1)]
    allowzero = int(node.attr("allowzero", 0))

    def run(x: list) -> list:
        t = x[0]
        target = [t.shape[i] if (s == 0 and not allowzero) else s for i, s in enumerate(shape)]
        return [t.reshape(target)]
    return run


def _compile_gemm(node: OnnxNode, static, n_inputs) -> Callable:
    """Gemm: Y = alpha · A' B' + beta · C with A' = A or Aᵀ, B' = B or Bᵀ; A (M, K), B, C broadcast to (M, N)."""
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    linear = alpha == 1.0 and beta == 1.0 and not trans_a and trans_b   # a torch nn.Linear as exported

    def run(x: list) -> list:
        a, b = x[0], x[1]
        c = x[2] if len(x) > 2 else None
        if linear and (c is None or c.dim() == 1):
            return [F.linear(a, b, c)]
        y = (a.t() if trans_a else a) @ (b.t() if trans_b else b)
        if alpha != 1.0:
            y = alpha * y
        if c is not None:
            y = y + (beta * c if beta != 1.0 else c)
        return [y]
    return run


def _compile_constant(node: OnnxNode, static, n_inputs) -> Callable:
    raise AssertionError("Constant nodes are folded when the graph is loaded")


def _elementwise(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable:
    def compile_(node: OnnxNode, static, n_inputs) -> Callable:
        if n_inputs != 2:
            raise OnnxFormatError(f"{node.op_type} {node.name!r} has {n_inputs} inputs, not 2")
        return lambda x: [fn(x[0], x[1])]
    return compile_


def _unary(fn: Callable[[Tensor], Tensor]) -> Callable:
    return lambda node, static, n_inputs: (lambda x: [fn(x[0])])


_COMPILERS: dict[str, Callable] = {
    "Conv": _compile_conv,
    "BatchNormalization": _compile_batchnorm,
    "PRelu": _compile_prelu,
    "Relu": _unary(F.relu),
    "Identity": _unary(lambda t: t),
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _elementwise(torch.div),
    "Flatten": _compile_flatten,
    "Reshape": _compile_reshape,
    "Gemm": _compile_gemm,
    "MatMul": _elementwise(torch.matmul),
    "Constant": _compile_constant,
}
#: ONNX operators (standard domain) the interpreter runs; anything else is refused at load time
SUPPORTED_OPS = frozenset(_COMPILERS)
_FLOAT_TYPES = {1, 10, 11, 16}   # FLOAT, FLOAT16, DOUBLE (BFLOAT16 is not decoded): kept as float32


def _constant_value(node: OnnxNode) -> np.ndarray:
    """The tensor a Constant node produces (any of its value attributes)."""
    if len(node.attributes) != 1:
        raise OnnxFormatError(f"Constant {node.name!r} has attributes {sorted(node.attributes)}, expected one")
    (name, attr), = node.attributes.items()
    if name == "value":
        return attr.value.array
    if name in ("value_float", "value_floats"):
        return np.asarray(attr.value, np.float32)
    if name in ("value_int", "value_ints"):
        return np.asarray(attr.value, np.int64)
    raise _unsupported(node, f"a Constant given by {name!r}")


class OnnxInterpreter(nn.Module):
    """Runs an ONNX inference graph with torch ops: ``forward(*inputs) -> Tensor`` (or a tuple when the
    graph has several outputs), differentiable w.r.t. the inputs.

    Initializers and Constant outputs become buffers (floating point -> float32; integer -> int64),
    so the weights are frozen, follow ``.to(device)`` and appear in ``state_dict`` (under sanitised
    names: ONNX names may contain dots). Raises ``UnsupportedOnnxError`` naming every operator the
    graph uses outside ``SUPPORTED_OPS``, and ``OnnxFormatError`` for graphs that are not well formed
    (a node reading a value nobody produced, nodes out of topological order).
    """

    def __init__(self, model: OnnxModel):
        super().__init__()
        g = model.graph
        foreign = sorted({f"{n.domain}::{n.op_type}" for n in g.nodes if n.domain not in ("", "ai.onnx")})
        unknown = sorted({n.op_type for n in g.nodes if n.domain in ("", "ai.onnx")} - SUPPORTED_OPS)
        if foreign or unknown:
            raise UnsupportedOnnxError(
                f"the ONNX graph uses operators gramcast's torch interpreter does not implement: "
                f"{', '.join(unknown + foreign)} (supported: {', '.join(sorted(SUPPORTED_OPS))})")
        self.input_names = [v.name for v in g.inputs if v.name not in g.initializers]
        self.output_names = [v.name for v in g.outputs]
        if not self.input_names:
            raise OnnxFormatError("the ONNX graph has no runtime input")

        # constants: initializers, then Constant nodes (folded here, they need no run time work)
        consts: dict[str, np.ndarray] = {k: t.array for k, t in g.initializers.items()}
        const_types: dict[str, bool] = {k: t.data_type in _FLOAT_TYPES for k, t in g.initializers.items()}
        for n in g.nodes:
            if n.op_type == "Constant":
                value = _constant_value(n)
                consts[n.outputs[0]] = value
                const_types[n.outputs[0]] = value.dtype.kind == "f"
        used = {name for n in g.nodes if n.op_type != "Constant" for name in n.inputs if name}
        used |= set(self.output_names)
        self._buffer_of: dict[str, str] = {}
        for i, (name, arr) in enumerate(consts.items()):
            if name not in used:
                continue
            t = torch.from_numpy(np.ascontiguousarray(arr))
            t = t.float() if const_types[name] else (t.bool() if t.dtype == torch.bool else t.long())
            key = f"c{i}_" + "".join(ch if ch.isalnum() else "_" for ch in name)
            self.register_buffer(key, t)
            self._buffer_of[name] = key

        def static(name: str):
            return consts.get(name)

        # compile the nodes into closures, checking order and wiring
        available = set(self.input_names) | set(self._buffer_of)
        steps = []
        for n in g.nodes:
            if n.op_type == "Constant":
                continue
            ins = list(n.inputs)
            while ins and not ins[-1]:          # trailing "" = omitted optional inputs
                ins.pop()
            for name in ins:
                if name and name not in available:
                    raise OnnxFormatError(f"node {n.name!r} ({n.op_type}) reads {name!r}, which no earlier node, "
                                          "input or initializer produces")
                if not name:
                    raise _unsupported(n, "an omitted optional input before a given one")
            steps.append((n, ins, _COMPILERS[n.op_type](n, static, len(ins))))
            available.update(n.outputs)
        missing = [o for o in self.output_names if o not in available]
        if missing:
            raise OnnxFormatError(f"the graph's outputs {missing} are never computed")
        # drop each intermediate after its last reader, so peak memory does not grow with depth
        last_use: dict[str, int] = {}
        for k, (n, ins, _) in enumerate(steps):
            for name in ins:
                last_use[name] = k
        keep = set(self.output_names) | set(self._buffer_of)
        self._steps = [(n.op_type, ins, n.outputs, fn,
                        [name for name in set(ins) if last_use.get(name) == k and name not in keep])
                       for k, (n, ins, fn) in enumerate(steps)]

    @property
    def op_types(self) -> list[str]:
        return sorted({s[0] for s in self._steps})

    def forward(self, *inputs: Tensor):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"the graph takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(inputs)}")
        env: dict[str, Tensor] = {name: getattr(self, key) for name, key in self._buffer_of.items()}
        env.update(zip(self.input_names, inputs))
        for _op, ins, outs, fn, drop in self._steps:
            results = fn([env[name] for name in ins])
            env.update(zip(outs, results))
            for name in drop:
                del env[name]
        out = tuple(env[name] for name in self.output_names)
        return out[0] if len(out) == 1 else out


class ArcFaceTorch(nn.Module):
    """ArcFace MobileFaceNet (``w600k_mbf.onnx``) in torch: aligned crops -> ``(B, 512)`` embeddings.

    ``onnx_path``: the ``.onnx`` file; None: ``$GRAMCAST_ARCFACE`` or the cache (``fetch``).
    ``expected_sha256``: default the pinned sha of ``w600k_mbf.onnx``; None: no check (other ONNX
    embedders with a (B, 3, 112, 112) input and a supported operator set load too).
    ``matrix``: the ``(2, 3)`` crop -> 112² similarity for ``forward`` (default
    ``identity.arcface_from_crop(S)`` for our reference template, per crop size S).
    The weights are buffers (no parameters), so the module is frozen; gradients reach the images.
    Everything is float32 and follows ``.to(device)``.
    """

    def __init__(self, onnx_path: Path | str | None = None, *, expected_sha256=_PINNED,
                 matrix: np.ndarray | None = None):
        super().__init__()
        from gramcast.training.pretrained.identity import ARCFACE_SIZE

        self.path = require_weights("arcface", onnx_path, expected_sha256)
        model = read_onnx(self.path)
        self.net = OnnxInterpreter(model)
        if len(self.net.input_names) != 1 or len(self.net.output_names) != 1:
            raise PretrainedWeightsError(f"{self.path} has inputs {self.net.input_names} and outputs "
                                         f"{self.net.output_names}: not a single-input embedder")
        inp = next(v for v in model.graph.inputs if v.name == self.net.input_names[0])
        if inp.shape is not None and list(inp.shape[1:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            raise PretrainedWeightsError(f"{self.path} takes input {inp.shape}, not (B, 3, 112, 112): not ArcFace")
        out = model.graph.outputs[0]
        self.embedding_dim = int(out.shape[-1]) if out.shape and isinstance(out.shape[-1], int) else None
        self.matrix = None if matrix is None else np.asarray(matrix, np.float64)
        self.eval()

    @classmethod
    def from_cache(cls, path: Path | str | None = None, expected_sha256=_PINNED) -> "ArcFaceTorch":
        """The pinned ``w600k_mbf.onnx`` from ``path``, ``$GRAMCAST_ARCFACE`` or the cache; raises
        ``PretrainedWeightsError`` with the commands to install it when it is missing."""
        return cls(path, expected_sha256=expected_sha256)

    def embed_aligned(self, faces: Tensor) -> Tensor:
        """Faces aligned to ArcFace's template ``(B, 3, 112, 112)`` in [-1, 1] -> ``(B, D)`` raw embeddings."""
        if faces.dim() != 4 or faces.shape[1] != 3:
            raise ValueError(f"expected (B, 3, 112, 112) faces in [-1, 1], got {tuple(faces.shape)}")
        return self.net(faces.float())

    def forward(self, images: Tensor) -> Tensor:
        """gramcast aligned crops ``(B, 3, S, S)`` in [-1, 1] -> ``(B, D)`` raw (un-normalised) embeddings."""
        from gramcast.training.pretrained.identity import warp_to_arcface

        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"expected square crops (B, 3, S, S) in [-1, 1], got {tuple(images.shape)}")
        return self.embed_aligned(warp_to_arcface(images.float(), self.matrix))
