"""GRAM checkpoints: safetensors (no pickle) with a JSON header: format, version, config, model id.

Saving is atomic (``media_io.atomic_output``: temp file in the same folder, then rename): a crash leaves the old file or none,
never a partial one. Loading validates the header, the configuration, every tensor's name, shape and
dtype, finiteness, and the content hash (``model_id``), and raises CheckpointError saying what is
wrong and what to do. The model is built on the meta device and the loaded tensors are assigned, so
a paper-size checkpoint is not first initialised at random.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from gramcast.errors import CheckpointError

FORMAT_VERSION = 1
KIND = "gramcast.gram-generator"


def model_id(state: dict[str, torch.Tensor]) -> str:
    """A short content hash of the weights (names an avatar's source model; detects corruption)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(model, path: str | Path) -> str:
    """Write ``model`` (a GRAMModel) to ``path`` atomically. Returns its model id."""
    from safetensors import torch as st

    from gramcast.media_io import atomic_output

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    mid = model_id(state)
    meta = {"format": KIND, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(model.config.to_dict()), "model_id": mid}
    with atomic_output(path) as tmp:
        st.save_file(state, str(tmp), metadata=meta)
    return mid


def read_header(path: str | Path) -> dict[str, str]:
    """The checkpoint's metadata after checking that it is a gramcast generator of a version we read."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; train one with `gramcast-train gan` "
                              "or check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign or cut files
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); it may be "
                              "truncated or another kind of file: copy or export it again") from None
    if meta.get("format") != KIND:
        raise CheckpointError(f"{path} is not a gramcast GRAM generator checkpoint (format "
                              f"{meta.get('format')!r}, expected {KIND!r}); pass a generator file")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        newer = str(version).isdigit() and int(version) > FORMAT_VERSION
        hint = "upgrade gramcast to read it" if newer else "re-export it with this gramcast"
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; this gramcast reads "
                              f"version {FORMAT_VERSION}: {hint}")
    return meta


def load_model(path: str | Path, device="auto"):
    """Read, validate and return a GRAMModel in eval mode on ``device``."""
    from safetensors.torch import load_file

    from gramcast.device import resolve_device
    from gramcast.model.config import GRAMConfig
    from gramcast.model.gram import GRAMModel

    meta = read_header(path)
    try:
        config = GRAMConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad model configuration in the header ({exc}); the file was "
                              "written by another tool or version: re-export it") from None
    with torch.device("meta"):
        model = GRAMModel(config)  # shapes only, no memory, no random init
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: the tensor data cannot be read ({exc}); the file is corrupt: "
                              "copy or export it again") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)}/{state[k].dtype} (expected {tuple(expected[k].shape)}/"
             f"{expected[k].dtype})" for k in sorted(set(expected) & set(state))
             if expected[k].shape != state[k].shape or expected[k].dtype != state[k].dtype]
    if missing or extra or wrong:
        raise CheckpointError(f"{path} does not match the configuration in its header: missing {missing[:3]}, "
                              f"unexpected {extra[:3]}, wrong shape/dtype {wrong[:3]}; it was written by "
                              "a different model version: re-export it")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights in {bad[:3]}: the training run diverged; "
                              "use an earlier checkpoint")
    if "model_id" in meta and model_id(state) != meta["model_id"]:
        raise CheckpointError(f"{path}: the weights do not match the content hash in the header "
                              f"({meta['model_id']}); the file is corrupt: copy or export it again")
    model.load_state_dict(state, assign=True)
    return model.to(resolve_device(device)).eval()
