"""Weight snapshots: a run's networks without optimiser state, small enough to carry between machines.

A lent GPU takes at most 64 MiB of files in and gives back files of at most 16 MiB, while a ``small``
GAN's full ``state.pt`` (G, G_ema, D and two Adam states in float32) is ~160 MiB. A snapshot keeps only
the networks (every module state dict of the stage, optimiser states dropped), in bfloat16 by default,
split into parts of at most ``part_mib``:

    gramcast-train snapshot runs/gan carry/gan            # carry/gan-00001-of-00003.safetensors, ...
    gramcast-train gan --config small ... --init-from carry/gan-00001-of-00003.safetensors

``--init-from`` loads the networks and the step into a fresh stage; the optimisers start afresh
(with the GAN's Adam β1 = 0 only the second-moment estimate is lost, and it re-warms within ~100
steps), so this is a warm start, not the exact resume ``--resume`` gives from ``state.pt``.
Parts are safetensors files (no pickle) with the stage, step, dtype and part count in each header.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from gramcast.errors import CheckpointError

__all__ = ["write_snapshot", "read_snapshot", "apply_snapshot", "SNAPSHOT_KIND"]

SNAPSHOT_KIND = "gramcast.training-snapshot"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_PART = re.compile(r"^(?P<prefix>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$")


def _module_states(stage_state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The entries of a stage state that are module state dicts (optimiser states excluded)."""
    return {k: v for k, v in stage_state.items()
            if isinstance(v, dict) and not k.startswith("opt") and v
            and all(isinstance(t, torch.Tensor) for t in v.values())}


def write_snapshot(run_dir: str | Path, prefix: str | Path, dtype: str = "bf16", part_mib: float = 15.0) -> list[Path]:
    """``run_dir/state.pt`` -> parts ``{prefix}-0000i-of-0000n.safetensors``, each <= ``part_mib``."""
    from safetensors import torch as st

    from gramcast.media_io import atomic_output
    from gramcast.training.engine.checkpoint import load_state

    if dtype not in _DTYPES:
        raise CheckpointError(f"unknown snapshot dtype {dtype!r}; choose from {', '.join(_DTYPES)}")
    state = load_state(Path(run_dir))
    if state is None:
        raise CheckpointError(f"{run_dir} has no state.pt: train (or let the run checkpoint) first")
    stage = state["stage"]
    tensors = {}
    for name, module_state in _module_states(stage).items():
        for k, t in module_state.items():
            t = t.detach().cpu()
            tensors[f"{name}/{k}"] = (t.to(_DTYPES[dtype]) if t.is_floating_point() else t).contiguous()
    scalars = {k: v for k, v in stage.items() if isinstance(v, (int, float, str, bool))}
    limit = int(part_mib * 2**20)
    parts: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if parts[-1] and size + nbytes > limit:
            parts.append({})
            size = 0
        parts[-1][key] = t
        size += nbytes
    written = []
    for i, part in enumerate(parts, 1):
        path = Path(f"{prefix}-{i:05d}-of-{len(parts):05d}.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": SNAPSHOT_KIND, "step": str(int(state["step"])), "dtype": dtype,
                "scalars": json.dumps(scalars), "config": state.get("config", "{}")}
        with atomic_output(path) as tmp:
            st.save_file(part, str(tmp), metadata=meta)
        written.append(path)
    return written


def read_snapshot(first_part: str | Path) -> tuple[int, dict[str, dict[str, torch.Tensor]], dict]:
    """Any part of a snapshot -> (step, {module: state dict}, scalars); checks that every part is there."""
    from safetensors import safe_open

    m = _PART.match(str(first_part))
    if m is None:
        raise CheckpointError(f"{first_part}: not a snapshot part (expected NAME-00001-of-0000N.safetensors, "
                              "as `gramcast-train snapshot` writes)")
    count = int(m["count"])
    modules: dict[str, dict[str, torch.Tensor]] = {}
    step, scalars = None, {}
    for i in range(1, count + 1):
        path = Path(f"{m['prefix']}-{i:05d}-of-{count:05d}.safetensors")
        if not path.is_file():
            raise CheckpointError(f"{path}: snapshot part {i} of {count} is missing; copy every part")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != SNAPSHOT_KIND:
                    raise CheckpointError(f"{path} is not a training snapshot (format {meta.get('format')!r})")
                for key in f.keys():
                    name, _, k = key.partition("/")
                    modules.setdefault(name, {})[k] = f.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors' own errors for cut or foreign files
            raise CheckpointError(f"{path} is not a readable snapshot part ({exc}): copy it again") from None
        if step is not None and int(meta["step"]) != step:
            raise CheckpointError(f"{path} is from step {meta['step']}, the other parts from {step}: "
                                  "the parts come from different snapshots")
        step, scalars = int(meta["step"]), json.loads(meta.get("scalars", "{}"))
    return int(step), modules, scalars


def apply_snapshot(stage, first_part: str | Path) -> int:
    """Load a snapshot's networks (cast to the stage's dtypes) and scalars into ``stage``; returns its step.

    The stage's optimiser states stay as they are (fresh), so this is a warm start.
    """
    step, modules, scalars = read_snapshot(first_part)
    current = stage.state_dict()
    mine = _module_states(current)
    for name, loaded in modules.items():
        if name not in mine:
            raise CheckpointError(f"{first_part}: the snapshot holds {name!r}, which this stage does not have: "
                                  "it was written by another stage")
        if set(loaded) != set(mine[name]):
            diff = sorted(set(loaded) ^ set(mine[name]))[:3]
            raise CheckpointError(f"{first_part}: {name} does not match this configuration ({diff}): "
                                  "use the same --config as the run that wrote it")
        for k, t in loaded.items():
            if t.shape != mine[name][k].shape:
                raise CheckpointError(f"{first_part}: {name}.{k} has shape {tuple(t.shape)}, this configuration "
                                      f"{tuple(mine[name][k].shape)}: use the same --config")
            current[name][k] = t.to(mine[name][k].dtype)
    current.update({k: v for k, v in scalars.items() if k in current})
    stage.load_state_dict(current)
    return step
