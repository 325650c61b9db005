"""What every benchmark does last: print its result as one JSON line and optionally write it to a file."""
from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, path: Path | None, indent: int = 2) -> None:
    print(json.dumps(result))
    if path:
        Path(path).write_text(json.dumps(result, indent=indent))
