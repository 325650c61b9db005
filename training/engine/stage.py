"""What the training stages share besides the loop: the configuration base, mixed precision, the fixed
batch their image logs show, and the image grid they log."""
from __future__ import annotations

import dataclasses
import json
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from gramcast.errors import InvalidArgumentError

#: The least value of each numeric option and configuration field that has one: a flag (--batch-size 0)
#: and --set (batch_size=0) are checked against this one table.
LEAST = {"steps": 1, "batch_size": 1, "checkpoint_every": 1, "log_every": 1, "image_every": 1, "max_images": 1,
         "eval_every": 0, "fid_samples": 0, "fid_real_images": 1, "fid_batch": 1, "kid_subset_size": 1,
         "r1_every": 1, "d_channel_base": 1, "d_channel_max": 1, "delta_every": 0, "lr_decay_step": 0,
         "w_avg_samples": 1, "height_samples": 1}
#: Float fields that may be negative (every other one is a weight, a rate, a length or a count).
SIGNED = {"tau"}


def value_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for the field or option ``name`` (dotted for a nested field), or None."""
    leaf = name.rsplit(".", 1)[-1]
    if value is None or isinstance(value, (bool, str, dict)):
        return None
    if leaf == "betas":
        if len(value) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in value):
            return f"{name}={list(value)}: give two numbers in [0, 1), e.g. [0.9, 0.999]"
        return None
    if not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"{name}={value}: give a finite number"
    if leaf in LEAST and value < LEAST[leaf]:
        return f"{name}={value}: give {LEAST[leaf]} or more"
    if isinstance(value, float) and (leaf.startswith("lr") or leaf.startswith("ema_half_life")) and value <= 0:
        return f"{name}={value}: give a positive number"
    if isinstance(value, float) and leaf not in SIGNED and value < 0:
        return f"{name}={value}: give 0 or more"
    return None


def check_config(cfg, prefix: str = "") -> None:
    """Raise InvalidArgumentError naming the first field of ``cfg`` (nested configurations included)
    whose value its type allows but training cannot use (``batch_size=0``, ``betas=[0.1]``)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_config(value, f"{prefix}{f.name}.")
            continue
        problem = value_problem(prefix + f.name, value)
        if problem:
            raise InvalidArgumentError(problem)


@dataclass
class StageConfig:
    """Base of every stage's configuration: the options all stages share, named presets, and the
    JSON record ``Trainer`` keeps (``config.json``, the resume check). Subclasses add their fields
    and define ``presets()``."""

    flip: bool = True                  # random horizontal flips of the training crops
    seed: int = 0
    amp: bool = True                   # bf16 autocast on CUDA; ignored on CPU
    max_images: int | None = None      # use only the first N images of the dataset

    def __post_init__(self):
        check_config(self)

    @classmethod
    def presets(cls) -> dict[str, "StageConfig"]:
        """The named configurations (``tiny``, ``small``, ``paper``)."""
        raise NotImplementedError

    @classmethod
    def preset(cls, name: str):
        presets = cls.presets()
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return presets[name]

    def to_dict(self) -> dict:
        """The configuration as the JSON record holds it (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


def autocast(enabled: bool, device: torch.device):
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam as every stage uses it; on a GPU the fused implementation (one kernel per step for all
    parameters, where the default launches several per parameter tensor)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True if device.type == "cuda" else None)


def fixed_batch(data, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training images ``(n, 3, R, R)`` in [-1, 1] at their own poses ``(n, 2)``, unflipped:
    a fixed set, so what is measured or shown on it at different steps compares."""
    n = min(n, len(data))
    return data.images[:n].float().div(127.5).sub(1.0).to(device), data.poses[:n].to(device)


def image_grid(columns: list[torch.Tensor]) -> torch.Tensor:
    """Columns of ``(n, 3, R, R)`` images in [-1, 1] -> one ``(3, n·R, len(columns)·R)`` image in [0, 1]."""
    grid = torch.stack([c.float().clamp(-1, 1) for c in columns], 1)       # (n, cols, 3, R, R)
    n, k, _, r, _ = grid.shape
    grid = grid.permute(2, 0, 3, 1, 4).reshape(3, n * r, k * r)
    return (grid.cpu() + 1) / 2
