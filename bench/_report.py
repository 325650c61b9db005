"""What the benchmarks share: waiting for the device before reading a clock, and, last, printing the result
as one JSON line and optionally writing it to a file."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def sync(dev: torch.device) -> None:
    """Wait for the work queued on ``dev`` (a GPU runs asynchronously; a clock read must come after it)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def emit(result: dict, path: Path | None, indent: int = 2) -> None:
    print(json.dumps(result))
    if path:
        Path(path).write_text(json.dumps(result, indent=indent))
