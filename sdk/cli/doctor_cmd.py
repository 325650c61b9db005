"""``gramcast doctor``: what this installation can use (devices, back ends, bundled assets)."""
from __future__ import annotations

import importlib


def register(sub) -> None:
    p = sub.add_parser("doctor", help="show versions, devices and optional back ends")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from gramcast import __version__
    from gramcast.device import resolve_device

    print(f"gramcast {__version__}")
    print(f"torch {torch.__version__}; default device: {resolve_device('auto')}")
    for mod in ("numpy", "onnxruntime", "mediapipe", "cv2", "av", "aiortc", "websockets", "msgpack"):
        try:
            m = importlib.import_module(mod)
            print(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception as exc:  # an optional back end that is absent is not an error here
            print(f"{mod} unavailable ({type(exc).__name__}: {exc})")
    return 0
