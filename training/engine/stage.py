"""What the training stages share besides the loop: the configuration base, mixed precision, the fixed
batch their image logs show, and the image grid they log."""
from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch


@dataclass
class StageConfig:
    """Base of every stage's configuration: the options all stages share, named presets, and the
    JSON record ``Trainer`` keeps (``config.json``, the resume check). Subclasses add their fields
    and define ``presets()``."""

    flip: bool = True                  # random horizontal flips of the training crops
    seed: int = 0
    amp: bool = True                   # bf16 autocast on CUDA; ignored on CPU
    max_images: int | None = None      # use only the first N images of the dataset

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
