"""GRAM checkpoints: safetensors (no pickle) with a JSON header: format, kind, config, model id.

Saving is atomic (temp file + rename). Loading validates the header and every tensor's shape
against the configuration it names, and raises CheckpointError saying what is wrong.
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
    """A short content hash of the weights (names an avatar's source model)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(model, path: str | Path) -> None:
    from safetensors.torch import save_file

    from gramcast.media_io import atomic_output

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": KIND, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(model.config.to_dict()), "model_id": model_id(state)}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def read_header(path: str | Path) -> dict:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; train one with `gramcast-train gan`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign or cut files
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); "
                              "it may be truncated or another kind of file") from None
    if meta.get("format") != KIND:
        raise CheckpointError(f"{path} is not a gramcast GRAM generator checkpoint (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        hint = "upgrade gramcast" if str(version).isdigit() and int(version) > FORMAT_VERSION else "re-export it"
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; this gramcast reads "
                              f"{FORMAT_VERSION}: {hint}")
    return meta


def load_model(path: str | Path, device="auto"):
    from safetensors.torch import load_file

    from gramcast.device import resolve_device
    from gramcast.model.config import GRAMConfig
    from gramcast.model.gram import GRAMModel

    meta = read_header(path)
    try:
        config = GRAMConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad model configuration in the header ({exc})") from None
    model = GRAMModel(config)
    state = load_file(str(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise CheckpointError(f"{path} does not match its configuration: missing {missing[:3]}, "
                              f"unexpected {extra[:3]}, wrong shape {wrong[:3]}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights in {bad[:3]}: the training run diverged")
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()
