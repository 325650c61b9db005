"""Training-state checkpoints: everything needed to continue a run exactly.

Files are written atomically (temp file + rename) and read with ``torch.load(weights_only=True)``,
so a checkpoint can hold tensors, numbers, strings, lists and dicts but never runs code on load.
Only rank 0 writes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gramcast.errors import CheckpointError
from gramcast.media_io import atomic_output

STATE_FILE = "state.pt"
FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_state(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``run_dir/state.pt``; ``state`` holds state_dicts, the step and the config."""
    path = Path(run_dir) / STATE_FILE
    atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)
    return path


def load_state(run_dir: Path, map_location="cpu") -> dict[str, Any] | None:
    """The saved state, or None when the run has none yet. A file that does not read back as a
    training state (cut short, emptied, overwritten) is a CheckpointError saying what to do."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises a different type for each way a file is damaged
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise damaged(path, first if 0 < len(first) <= 100 else type(exc).__name__) from None
    if not isinstance(state, dict) or not isinstance(state.get("stage"), dict) or "step" not in state:
        raise damaged(path, "not a training state")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has training-state format {state.get('format_version')!r}; "
                              f"this gramcast reads {FORMAT_VERSION}. Start a new run directory.")
    return state


def damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged ({why[:120]}): start afresh with another --out (or delete it), "
                           "or restore it from a copy")
