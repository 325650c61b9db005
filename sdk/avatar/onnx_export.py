"""The cached renderer as an ONNX model, and the onnxruntime back end of ``Renderer``.

``export_onnx(avatar, "me.onnx", resolution=256)`` writes ``render_cache`` traced by torch's TorchScript
exporter (``dynamo=False``, opset 17) for one output resolution, the avatar's height fields and textures
inside as constants:

* input ``poses``: ``(batch, 2)`` float32, (yaw, pitch) in radians (``gramcast.camera`` conventions);
* outputs ``rgb`` ``(batch, 3, H, W)`` in [-1, 1] premultiplied by alpha, ``alpha`` and ``depth``
  ``(batch, 1, H, W)``; the batch axis is dynamic.

The torch back end runs the same function, so the two agree to float rounding (tests/test_avatar_onnx.py
states the bound). The model's ``metadata_props`` say what it is: ``format`` (``gramcast-avatar-onnx``),
``format_version``, ``resolution``, ``settings``, ``layers`` (the avatar's) and ``drawn_layers`` (those not
transparent everywhere: the model holds only these), ``extent``, ``camera`` and the avatar's
``avatar_format``/``avatar_format_version``/``meta`` (JSON where structured), and ``compositing``: JSON
``{"path": "ordered" | "general" | "single", "order": [...], "pivot": ...}`` (the ordered O(L) path is
exported where the avatar's layers are verified non-crossing, as ``Renderer`` does; ``compositing=``
forces one, see ``gramcast.avatar.renderer.resolve_compositing``).

``OnnxRenderer`` renders with onnxruntime (CUDAExecutionProvider first where ``onnxruntime-gpu`` provides
it, else CPU), one cached InferenceSession per resolution, exported into memory on first use.
``Renderer(avatar, backend="onnx")`` uses it through ``run_onnx``.

Exporting needs neither the ``onnx`` nor the ``onnxscript`` package: where ``onnx`` is not installed,
the one exporter step that imports it (adding onnxscript custom functions, of which this model has
none) is skipped.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from gramcast import camera
from gramcast.avatar.avatar import FORMAT_NAME as AVATAR_FORMAT_NAME
from gramcast.avatar.avatar import FORMAT_VERSION as AVATAR_FORMAT_VERSION
from gramcast.avatar.avatar import Avatar, camera_conventions, meta_json
from gramcast.avatar.layer_hits import edge_search_samples
from gramcast.avatar.renderer import (CPU_CHUNK_LAYER_PIXELS, CachedRenderModule, CompositingPlan, RenderSettings,
                                     check_resolution, drawn_layers, resolve_compositing)
from gramcast.errors import GramcastError

__all__ = ["export_onnx", "export_onnx_bytes", "OnnxRenderer", "run_onnx", "read_metadata", "TORCH_THREADS",
           "FORMAT_NAME", "FORMAT_VERSION", "OPSET", "INPUT_NAMES", "OUTPUT_NAMES"]

FORMAT_NAME = "gramcast-avatar-onnx"
FORMAT_VERSION = 1
OPSET = 17                       # GridSample (bilinear, border, align_corners) needs 16
INPUT_NAMES = ["poses"]
OUTPUT_NAMES = ["rgb", "alpha", "depth"]

#: What a model's inputs and outputs mean (its ``metadata_props`` "inputs" / "outputs", ``gramcast export-onnx
#: --help``, README): enough to use the file from any language without gramcast.
INPUTS_DOC = ("poses (batch, 2) float32: yaw, pitch in radians. yaw > 0 moves the camera towards the subject's "
              "left (the head looks turned to its own right, the nose towards the image's left); pitch > 0 moves "
              "the camera up, looking down on the face; (0, 0) is frontal. There is no roll: rotate the image "
              "for it")
OUTPUTS_DOC = ("rgb (batch, 3, H, W) float32, colour in [-1, 1] premultiplied by alpha: 8-bit premultiplied "
               "RGB = (rgb + alpha) * 127.5, straight RGB = (rgb / alpha + 1) * 127.5 where alpha > 0; "
               "alpha (batch, 1, H, W) in [0, 1]; depth (batch, 1, H, W): distance along each pixel's ray from "
               "the camera (world units; the camera is 1 from the head's centre), alpha-weighted over the "
               "layers, meaningless where alpha is near 0")

_EXPORT_LOCK = threading.Lock()   # the exporter keeps global state; one export at a time
_BACKEND_LOCK = threading.Lock()  # makes a Renderer's OnnxRenderer once (no export under it)

#: ``OnnxRenderer(threads=TORCH_THREADS)``: each session takes torch's thread count when it is made.
TORCH_THREADS = "torch"


# ---------------------------------------------------------------------------------------------- export
@contextlib.contextmanager
def _exporter_without_onnx_package():
    """The TorchScript exporter imports ``onnx`` for one step only: inserting onnxscript custom
    functions into the model (it parses and re-serialises the model even when there are none). Our
    graph has only standard ops, so where ``onnx`` is absent that step is the identity."""
    if importlib.util.find_spec("onnx") is not None:
        yield
        return
    try:
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils
    except ImportError:   # another torch layout: let the exporter say what it needs
        yield
        return
    original = getattr(onnx_proto_utils, "_add_onnxscript_fn", None)
    if original is None:
        yield
        return
    onnx_proto_utils._add_onnxscript_fn = lambda model_bytes, custom_opsets: model_bytes
    try:
        yield
    finally:
        onnx_proto_utils._add_onnxscript_fn = original


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def add_metadata(model_bytes: bytes, props: dict[str, str]) -> bytes:
    """Append ``metadata_props`` entries (ModelProto field 14, StringStringEntryProto key = 1, value = 2)
    to a serialised ONNX model. Protobuf merges concatenated messages and appends repeated fields, so
    this is the model with these entries added (no ``onnx`` package needed)."""
    extra = b"".join(
        _length_delimited(14, _length_delimited(1, str(k).encode()) + _length_delimited(2, str(v).encode()))
        for k, v in props.items())
    return model_bytes + extra


def model_metadata(avatar: Avatar, resolution: int, settings: RenderSettings,
                   plan: CompositingPlan | None = None) -> dict[str, str]:
    from gramcast import __version__

    drawn = drawn_layers(avatar).num_layers
    path = "single" if drawn == 1 else ("ordered" if plan is not None else "general")
    # edge_samples as the model does it (0: off), whatever RenderSettings left to the avatar's layer count
    edge = edge_search_samples(settings, drawn)
    return {
        "format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "gramcast_version": __version__,
        "resolution": str(resolution), "layers": str(avatar.num_layers), "drawn_layers": str(drawn),
        "extent": repr(float(avatar.extent)),
        "settings": json.dumps({"lowres_factor": settings.lowres_factor, "steps": settings.steps,
                                "refine": settings.refine, "edge_samples": edge}),
        "camera": json.dumps(camera_conventions()),
        "inputs": INPUTS_DOC,
        "outputs": OUTPUTS_DOC,
        "avatar_format": AVATAR_FORMAT_NAME, "avatar_format_version": str(AVATAR_FORMAT_VERSION),
        "meta": meta_json(avatar.meta),
        "compositing": json.dumps({"path": path, **(plan.describe() if plan is not None else {})}),
    }


def export_onnx_bytes(avatar: Avatar, resolution: int = 256, settings: RenderSettings = RenderSettings(),
                      compositing="auto") -> bytes:
    """The serialised ONNX model of ``avatar`` rendered at ``resolution`` x ``resolution`` (see the module doc).
    ``avatar.meta`` that is not plain JSON (``gramcast.avatar.avatar.meta_json``) is an ``InvalidArgumentError``,
    before the export's seconds."""
    resolution = check_resolution(resolution)
    meta_json(avatar.meta)
    module = CachedRenderModule(avatar, resolution, settings, compositing).eval()
    example = torch.zeros(2, 2)
    example[1] = torch.tensor([0.3, -0.1])
    buf = io.BytesIO()
    with _EXPORT_LOCK, _exporter_without_onnx_package(), warnings.catch_warnings(), torch.no_grad():
        # tracer notes on constants (camera grids, the layer count) are expected: all are static
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        try:
            torch.onnx.export(module, (example,), buf, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                              dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)
        except Exception as exc:
            raise GramcastError(f"ONNX export failed ({type(exc).__name__}: {exc}); this torch "
                                f"({torch.__version__}) may lack the TorchScript exporter") from exc
    return add_metadata(buf.getvalue(), model_metadata(avatar, resolution, settings, module.plan))


def export_onnx(avatar: Avatar, path: str | Path, resolution: int = 256,
                settings: RenderSettings = RenderSettings(), compositing="auto") -> Path:
    """Write ``avatar``'s renderer at ``resolution`` to ``path`` (atomically: a reader never sees a
    half-written file). Returns the path."""
    from gramcast.media_io import atomic_output, check_output_path

    path = Path(path)
    check_output_path(path)                 # the folder, before any work
    model = export_onnx_bytes(avatar, resolution, settings, compositing)
    with atomic_output(path) as tmp:        # the temp file only for the write, not the seconds of export
        tmp.write_bytes(model)
    return path


# ------------------------------------------------------------------------------------------ onnxruntime
def require_onnxruntime():
    """The ``onnxruntime`` module, or a ``GramcastError`` that says how to get it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise GramcastError("the onnx back end needs onnxruntime: pip install onnxruntime "
                            "(or onnxruntime-gpu for CUDA), or use backend='torch'") from exc
    return onnxruntime


def default_providers(device: str | torch.device | None = "auto") -> list[str]:
    """CUDAExecutionProvider first where onnxruntime has it (unless ``device`` asks for the CPU), then CPU."""
    ort = require_onnxruntime()
    available = ort.get_available_providers()
    want_cuda = device is None or str(device) == "auto" or torch.device(device).type == "cuda"
    providers = ["CUDAExecutionProvider"] if want_cuda and "CUDAExecutionProvider" in available else []
    return providers + ["CPUExecutionProvider"]


def read_metadata(session) -> dict[str, str]:
    """The ``metadata_props`` of a loaded model (an ``InferenceSession``)."""
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxRenderer:
    """onnxruntime renders of one avatar.

    ``OnnxRenderer(avatar).render(poses, resolution)`` -> numpy ``(rgb, alpha, depth)``; one session per
    resolution, exported into memory on first use and kept, the ``MAX_SESSIONS`` used last (a session holds
    its model and onnxruntime's memory; a window resized through many sizes would otherwise keep them all).
    ``OnnxRenderer.from_file("me.onnx")`` serves an exported file (its one resolution). ``threads``:
    onnxruntime's intra-op threads (default: its own choice, the physical cores; ``TORCH_THREADS``:
    ``torch.get_num_threads()`` when each session is made). On the CPU a large batch runs in chunks of
    frames, as the torch back end does (onnxruntime keeps the memory of its largest call). Thread-safe:
    each resolution's session is built once, while the sessions already built (this renderer's and every
    other's) go on rendering, and onnxruntime sessions may run concurrently. ``compositing``: as
    ``Renderer``'s (checked once here).
    """

    #: Sessions (resolutions) kept per renderer.
    MAX_SESSIONS = 4

    def __init__(self, avatar: Avatar | None = None, settings: RenderSettings = RenderSettings(),
                 device: str | torch.device | None = "auto", providers: list[str] | None = None,
                 threads: int | str | None = None, compositing="auto"):
        self.ort = require_onnxruntime()
        # its own avatar object over the same arrays, as Renderer keeps: later assignments stay out
        self.avatar = avatar.snapshot() if avatar is not None else None
        self.settings = settings
        drawn = drawn_layers(avatar) if avatar is not None else None     # found once: the plan indexes them
        self.plan = resolve_compositing(drawn, compositing) if drawn is not None else None
        self.providers = list(providers) if providers else default_providers(device)
        self.threads = threads
        self._sessions: OrderedDict[int, object] = OrderedDict()     # least recently used first
        self._lock = threading.Lock()                # guards _sessions and _builds, held for no export
        self._builds: dict[int, threading.Lock] = {}  # one per resolution: its export runs once
        self._drawn = drawn.num_layers if drawn is not None else 1

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device | None = "auto",
                  providers: list[str] | None = None, threads: int | str | None = None) -> "OnnxRenderer":
        path = Path(path)
        if not path.is_file():
            raise GramcastError(f"ONNX model {path} does not exist: write one with `gramcast export-onnx AVATAR.gca -o {path}`")
        r = cls(None, device=device, providers=providers, threads=threads)
        try:
            session = r._new_session(path.read_bytes())
        except GramcastError:
            raise
        except Exception as exc:
            raise GramcastError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        meta = read_metadata(session)
        if meta.get("format") != FORMAT_NAME:
            raise GramcastError(f"{path} is an ONNX model but not a gramcast avatar renderer "
                                f"(format {meta.get('format')!r}); export one with `gramcast export-onnx`")
        r._sessions[int(meta["resolution"])] = session
        r._drawn = int(meta.get("drawn_layers", 1))
        return r

    def _new_session(self, model: bytes):
        opts = self.ort.SessionOptions()
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = torch.get_num_threads() if self.threads == TORCH_THREADS else self.threads
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3          # no per-node placement chatter
        return self.ort.InferenceSession(model, sess_options=opts, providers=self.providers)

    @property
    def resolutions(self) -> list[int]:
        return sorted(self._sessions)

    def session(self, resolution: int):
        """The InferenceSession for ``resolution`` (exported and built on first use)."""
        s = self._cached_session(resolution)
        if s is not None:
            return s
        if self.avatar is None:
            raise GramcastError(f"this ONNX model renders at {self.resolutions} pixels only, not {resolution}: "
                                f"export one at {resolution} (`gramcast export-onnx --resolution {resolution}`)")
        resolution = check_resolution(resolution)
        with self._lock:
            build = self._builds.setdefault(resolution, threading.Lock())
        # The export and build take seconds: only a second caller at this resolution waits for them (and then
        # takes their session); the sessions already built keep rendering meanwhile.
        with build:
            s = self._cached_session(resolution)
            if s is None:
                s = self._new_session(export_onnx_bytes(self.avatar, resolution, self.settings,
                                                        self.plan or "general"))
                with self._lock:
                    self._sessions[resolution] = s
                    while len(self._sessions) > self.MAX_SESSIONS:
                        self._sessions.popitem(last=False)
        return s

    def _cached_session(self, resolution: int):
        with self._lock:
            s = self._sessions.get(resolution)
            if s is not None:
                self._sessions.move_to_end(resolution)
            return s

    def render(self, poses, resolution: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """poses: ``(B, 2)`` (yaw, pitch) in radians (or one pair). Returns float32 rgb ``(B, 3, H, W)``
        (premultiplied), alpha and depth ``(B, 1, H, W)``. ``resolution`` may be left out for a model
        loaded from a file."""
        if resolution is None:
            if len(self._sessions) != 1 or self.avatar is not None:
                raise GramcastError("give the resolution to render at")
            resolution = self.resolutions[0]
        # the pose forms and refusals of the torch back end
        p = np.ascontiguousarray(camera.as_pose_tensor(poses, dtype=torch.float32).cpu().numpy())
        session = self.session(resolution)
        chunk = p.shape[0]
        if self.providers[0] == "CPUExecutionProvider":
            chunk = max(1, CPU_CHUNK_LAYER_PIXELS // (self._drawn * resolution * resolution))
        if chunk >= p.shape[0]:
            rgb, alpha, depth = session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: p})
            return rgb, alpha, depth
        parts = [session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: p[i:i + chunk]}) for i in range(0, p.shape[0], chunk)]
        rgb, alpha, depth = (np.concatenate(x) for x in zip(*parts))
        return rgb, alpha, depth


def run_onnx(renderer, poses: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Renderer.render`` on the onnx back end: the renderer's ``OnnxRenderer`` (made on first use,
    on the renderer's device) renders ``poses`` ``(B, 2)`` float32 at ``resolution``."""
    onnx = getattr(renderer, "_onnx", None)
    if onnx is None:
        with _BACKEND_LOCK:
            onnx = getattr(renderer, "_onnx", None)
            if onnx is None:
                # the process's torch threads (torch.set_num_threads, gramcast.torch_threads) bound
                # onnxruntime's too, as they are when each session is made, so that both back ends take
                # what the application allows
                onnx = OnnxRenderer(renderer.avatar, renderer.settings,
                                    device=getattr(renderer, "requested_device", "auto"),
                                    threads=TORCH_THREADS,
                                    compositing=getattr(renderer, "plan", None) or "general")
                renderer._onnx = onnx
    return onnx.render(poses, resolution)
