"""What the benchmarks share: waiting for the device before reading a clock, the data folder and quiet native
logs of the ones that enroll photos, and, last, printing the result as one JSON line and optionally writing it
to a file."""
from __future__ import annotations

import json
from pathlib import Path

import torch

#: The data folder beside the checkout (``../shared/data/faces``), the quality benchmarks' default.
FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def sync(dev: torch.device) -> None:
    """Wait for the work queued on ``dev`` (a GPU runs asynchronously; a clock read must come after it)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def emit(result: dict, path: Path | None, indent: int = 2) -> None:
    print(json.dumps(result))
    if path:
        Path(path).write_text(json.dumps(result, indent=indent))


def run_quietly(run) -> None:
    """``run()`` with mediapipe's and TensorFlow Lite's native log lines kept off stderr."""
    from gramcast.cli.native_logs import filtered_stderr

    with filtered_stderr():
        run()
