"""``Avatar``: the baked manifold cache of one identity, and its versioned ``.gca`` file.

A ``.gca`` file is a safetensors container (no pickle): float16 arrays ``heights`` ``(L, G, G)``
(the z of each manifold over the orthographic grid; row 0 is y = +extent) and ``textures``
``(L, 4, T, T)`` (rgb in [-1, 1], opacity in [0, 1]), and a metadata header with the format name and
version, the camera conventions it was baked for, the grid extent and the enrollment record (``meta``,
a JSON object). The same avatar is the same bytes. Heights are finite and within float16's range.
Loading checks all of it, the arrays' values included; an avatar that breaks a rule is refused when it
is made and when it is written, before anything is written.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast import camera
from gramcast.checks import is_finite
from gramcast.errors import AvatarFormatError, InvalidArgumentError

__all__ = ["Avatar", "AvatarLimits", "FORMAT_NAME", "FORMAT_VERSION", "camera_conventions", "meta_json",
           "texels_shown", "COLOUR_RANGE", "OPACITY_RANGE", "HEIGHT_LIMIT", "RANGE_SLACK"]

FORMAT_NAME = "gramcast-avatar"
FORMAT_VERSION = 1

#: What a texture's colour channels and its opacity channel hold.
COLOUR_RANGE = (-1.0, 1.0)
OPACITY_RANGE = (0.0, 1.0)
#: How far past those ranges a value may lie: a producer's float32 arithmetic can land a hair outside
#: (one float16 step above 1 is 1 + 2^-10), and no render can tell.
RANGE_SLACK = 2.0 ** -10
#: The largest height magnitude a file holds: float16's largest finite value (beyond it, infinity).
HEIGHT_LIMIT = 65504.0


def camera_conventions() -> dict:
    return {"fov_deg": camera.FOV_DEG, "radius": camera.CAMERA_RADIUS, "near": camera.RAY_NEAR,
            "far": camera.RAY_FAR, "up": "+y", "forward": "+z"}


def meta_json(meta) -> str:
    """``meta`` as the JSON text an avatar's file (and its ONNX export) stores, or an ``InvalidArgumentError``
    where it is not plain JSON: a dict with str keys all the way down, holding str, int, float (finite),
    bool, None, lists and dicts. The one rule of every writer, so that what is written reads back equal."""
    if not isinstance(meta, dict):
        raise InvalidArgumentError(f"an avatar's meta must be a dict (a JSON object), got {type(meta).__name__}")
    bad_keys = _non_str_keys(meta)
    if bad_keys:
        raise InvalidArgumentError(f"an avatar's meta must have str keys (JSON's), found {bad_keys[0]!r}")
    try:
        return json.dumps(meta, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"an avatar's meta must be plain JSON (str, int, float, bool, None, lists, "
                                   f"dicts; no NaN or infinity): {exc}; convert numpy values with float(), "
                                   "int() or .tolist()") from None


def _non_str_keys(value) -> list:
    """The dict keys anywhere in ``value`` that are not str (JSON would turn them into strings)."""
    if isinstance(value, dict):
        return [k for k in value if not isinstance(k, str)] + [b for v in value.values() for b in _non_str_keys(v)]
    if isinstance(value, (list, tuple)):
        return [b for v in value for b in _non_str_keys(v)]
    return []


@dataclass(eq=False)
class Avatar:
    """heights ``(L, G, G)``, textures ``(L, 4, T, T)`` (float32 in memory; numpy arrays and other real dtypes
    are converted), extent (world half-side of the grids), and ``meta``: method, model id, source image size,
    input pose, creation time, ... (plain JSON, see ``meta_json``). Colour in ``COLOUR_RANGE``, opacity in
    ``OPACITY_RANGE`` (each within ``RANGE_SLACK``), heights finite within ``HEIGHT_LIMIT``: anything else is
    an ``InvalidArgumentError``.

    Two avatars are equal only if they are the same object (comparing arrays elementwise has no one answer),
    so an avatar can be a dict key. Changing the arrays in place after a ``Renderer`` is made of the avatar is
    not supported: make a new renderer."""

    heights: Tensor
    textures: Tensor
    extent: float
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.heights = _float_tensor("heights", self.heights)
        self.textures = _float_tensor("textures", self.textures)
        meta_json(self.meta)
        problems = _check_arrays(self.heights, self.textures, self.extent)
        if problems:
            raise InvalidArgumentError("invalid avatar: " + "; ".join(problems))
        self.extent = float(self.extent)

    @classmethod
    def _checked(cls, heights: Tensor, textures: Tensor, extent: float, meta: dict) -> "Avatar":
        """An avatar of arrays the caller has checked already (``_check_arrays``), made without a second pass."""
        avatar = cls.__new__(cls)
        avatar.heights, avatar.textures, avatar.extent, avatar.meta = heights, textures, float(extent), meta
        return avatar

    def snapshot(self) -> "Avatar":
        """A new avatar over the same arrays (no copy) with its own copy of ``meta``: assigning another array
        to either one's attribute leaves the other as it was (changing an array in place changes both)."""
        return self._checked(self.heights, self.textures, self.extent, copy.deepcopy(self.meta))

    @property
    def num_layers(self) -> int:
        return self.heights.shape[0]

    @property
    def geometry_resolution(self) -> int:
        return self.heights.shape[-1]

    @property
    def texture_resolution(self) -> int:
        return self.textures.shape[-1]

    def content_radius(self) -> float:
        """How far from the origin the farthest point a render of this avatar can show may lie (world units):
        0.0 where nothing is opaque anywhere.

        A shown point lies on a layer's height field over a cell of its grid that holds, or borders, a texel
        with any opacity (a bilinear lookup reaches one texel beyond). Over a cell the height is bilinear, so
        |h| is largest at a corner, as is x² + y²: the cell's corners bound its points' distance. Layer by
        layer, so that no array of every layer's texels is made beside the textures."""
        alpha = self.textures[:, 3]                                                    # (L, T, T)
        shown = [i for i in range(self.num_layers) if bool((alpha[i] > 0).any())]
        if not shown:
            return 0.0
        n_g, n_t, e = self.geometry_resolution, self.texture_resolution, float(self.extent)
        if n_g < 2 or n_t < 2:     # no cells to bound: the grid's corners and the highest point
            return math.hypot(e * math.sqrt(2.0), float(self.heights.abs().max()))
        # each texel row (column) lies in this grid cell row (column)
        to_cell = (torch.arange(n_t) * ((n_g - 1) / max(n_t - 1, 1))).long().clamp_(max=n_g - 2)
        coords = torch.linspace(-e, e, n_g, dtype=torch.float64)
        xy2 = _corner_max(coords[None, :] ** 2 + coords[:, None] ** 2)                 # (G-1, G-1)
        return math.sqrt(max(_reach2(self.heights[i].cpu(), alpha[i].cpu(), xy2, to_cell) for i in shown))

    def describe(self) -> dict:
        """What ``gramcast info`` prints: the format, the arrays' sizes, the extent, then ``meta``'s entries
        (where one has the name of a field above, the field's own value stands)."""
        fields = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "layers": self.num_layers,
                  "geometry_resolution": self.geometry_resolution, "texture_resolution": self.texture_resolution,
                  "extent": self.extent}
        return {**fields, **{k: v for k, v in self.meta.items() if k not in fields}}

    # ------------------------------------------------------------------ file
    def _file_parts(self) -> list:
        """The ``.gca`` file's bytes in pieces: length, header, each array's data (buffers, not copies).
        safetensors' layout, written here because the library writes its metadata in hash order, which
        changes from call to call, and the same avatar must be the same bytes. Checked first (attributes may
        have been assigned since the avatar was made): an ``InvalidArgumentError`` before anything is written."""
        heights, textures = _float_tensor("heights", self.heights), _float_tensor("textures", self.textures)
        problems = _check_arrays(heights, textures, self.extent)
        if problems:
            raise InvalidArgumentError("cannot write this avatar: " + "; ".join(problems))
        metadata = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
                    "extent": repr(float(self.extent)), "camera": json.dumps(camera_conventions()),
                    "meta": meta_json(self.meta)}
        header, data, offset = {"__metadata__": metadata}, [], 0
        for name, values in (("heights", heights), ("textures", textures)):
            array = values.detach().to("cpu", torch.float16).contiguous().numpy().astype("<f2", copy=False)
            header[name] = {"dtype": "F16", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
            data.append(memoryview(array.reshape(-1).view(np.uint8)))
            offset += array.nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)          # as safetensors pads it: the arrays start 8-byte aligned
        return [struct.pack("<Q", len(text)), text, *data]

    def save(self, path: str | Path) -> None:
        """Write atomically: a reader never sees a half-written file. A place that cannot be written (no such
        folder, no permission, a read-only file system, a protected file) is an ``OutputPathError`` naming
        ``path``, and leaves nothing behind. An avatar that breaks the rules above (arrays assigned since it was
        made, ``meta`` changed) is an ``InvalidArgumentError``, before anything is written."""
        from gramcast.media_io import atomic_output

        path = _path_argument(path, "Avatar.save", "")
        parts = self._file_parts()
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            for part in parts:
                fh.write(part)

    def to_bytes(self) -> bytes:
        """The ``.gca`` file's bytes (what ``save`` writes), e.g. to hand an avatar to a client to keep."""
        return b"".join(self._file_parts())

    @classmethod
    def from_bytes(cls, data: bytes, label: str = "the avatar", limits: "AvatarLimits | None" = None) -> "Avatar":
        """``load`` for a ``.gca`` file's bytes (e.g. sent by a client), validated as a file is; ``limits``
        also bounds its size, for bytes from someone else (each problem an ``AvatarFormatError``)."""
        import tempfile

        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AvatarFormatError(f"{label} must be the bytes of a .gca file, got {type(data).__name__}")
        if not data:
            raise AvatarFormatError(f"{label} is empty: send the bytes of a .gca file")
        with tempfile.TemporaryDirectory(prefix="gramcast-avatar-") as folder:
            path = Path(folder) / "avatar.gca"
            path.write_bytes(bytes(data))
            avatar = cls._read(path, label)
        if limits is not None:
            limits.check(avatar, label)
        return avatar

    @classmethod
    def load(cls, path: str | Path) -> "Avatar":
        """Read and validate a ``.gca`` file (a path, or a file object opened for binary reading); every
        problem with the file is an ``AvatarFormatError`` that says what."""
        if hasattr(path, "read"):
            return cls._load_file_object(path)
        path = Path(_path_argument(path, "Avatar.load", " or a file object opened with 'rb'"))
        if path.is_dir():
            raise AvatarFormatError(f"{path} is a folder, not an avatar file: give the path of a .gca file")
        if not path.is_file():
            raise AvatarFormatError(f"avatar file {path} does not exist: enroll one with `gramcast enroll PHOTO -o {path}`")
        return cls._read(path, str(path))

    @classmethod
    def _load_file_object(cls, fh) -> "Avatar":
        data = fh.read()
        label = str(getattr(fh, "name", "the avatar file"))
        if isinstance(data, str):
            raise InvalidArgumentError(f"{label} is open as text: open the .gca file with open(path, 'rb')")
        return cls.from_bytes(data, label)

    @classmethod
    def _read(cls, file: Path, path: str) -> "Avatar":
        """The validated avatar in ``file``; messages name it ``path``."""
        header, tensors = _read_safetensors(file, path)
        _check_format(header, path)
        missing = {"heights", "textures"} - set(tensors)
        if missing:
            raise AvatarFormatError(f"{path} lacks the arrays {sorted(missing)}: it is damaged; enroll again")
        extent, meta = _read_header(header, path)
        heights, textures = tensors["heights"], tensors["textures"]
        if heights.dtype != torch.float16 or textures.dtype != torch.float16:
            raise AvatarFormatError(f"{path}: arrays must be float16, found {heights.dtype}, {textures.dtype}")
        problems = _check_arrays(heights, textures, extent)       # float16 holds every value float32 would
        if problems:
            raise AvatarFormatError(f"{path} is damaged: " + "; ".join(problems))
        return cls._checked(heights.float(), textures.float(), extent, meta)


def _read_safetensors(file: Path, path: str) -> tuple[dict, dict[str, Tensor]]:
    """The header and the ``heights`` / ``textures`` arrays (those present) of a safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in set(fh.keys()) & {"heights", "textures"}}
    except Exception as exc:  # safetensors raises several types for foreign/truncated data
        raise AvatarFormatError(f"{path} is not a readable gramcast avatar (.gca) file: it is truncated, "
                                f"corrupt or of another format ({type(exc).__name__}: {exc}); "
                                "enroll the avatar again") from exc
    return header, tensors


def _check_format(header: dict, path: str) -> None:
    if header.get("format") != FORMAT_NAME:
        raise AvatarFormatError(f"{path} is a safetensors file but not a gramcast avatar "
                                f"(format {header.get('format')!r}); pass a .gca written by `gramcast enroll`")
    try:
        version = int(header.get("format_version", ""))
    except ValueError:
        raise AvatarFormatError(f"{path} has no valid format version ({header.get('format_version')!r})") from None
    if version > FORMAT_VERSION:
        raise AvatarFormatError(f"{path} uses avatar format {version}, newer than this gramcast reads "
                                f"(up to {FORMAT_VERSION}): upgrade gramcast")
    if version < 1:
        raise AvatarFormatError(f"{path} has an unknown avatar format version {version}")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _read_header(header: dict, path: str) -> tuple[float, dict]:
    """The extent and meta of a ``.gca`` header whose camera conventions are ours."""
    try:
        extent = float(header["extent"])
        cam = json.loads(header["camera"])
        meta = json.loads(header.get("meta", "{}"), parse_constant=_refuse_constant)
    except (KeyError, ValueError) as exc:
        raise AvatarFormatError(f"{path} has a damaged header ({exc}); enroll again") from exc
    for name, value in (("camera", cam), ("meta", meta)):
        if not isinstance(value, dict):
            raise AvatarFormatError(f"{path} has a damaged header: its {name} is {type(value).__name__}, not a "
                                    "JSON object; enroll again")
    ours = camera_conventions()
    diff = {k: (cam.get(k), v) for k, v in ours.items() if cam.get(k) != v}
    if diff:
        raise AvatarFormatError(f"{path} was baked for other camera conventions {diff} (file, ours); "
                                "re-enroll with this gramcast")
    return extent, meta


@dataclass(frozen=True)
class AvatarLimits:
    """How large an avatar from someone else may be (its layers and grid sides), so that one upload cannot
    take a server's memory or every frame's time. The defaults hold every avatar gramcast makes."""

    max_layers: int = 64
    max_geometry_resolution: int = 512
    max_texture_resolution: int = 1024

    def check(self, avatar: "Avatar", label: str = "the avatar") -> None:
        too_big = [f"{what} {value} (at most {most})" for what, value, most in (
            ("layers", avatar.num_layers, self.max_layers),
            ("geometry grid", avatar.geometry_resolution, self.max_geometry_resolution),
            ("texture side", avatar.texture_resolution, self.max_texture_resolution)) if value > most]
        if too_big:
            raise AvatarFormatError(f"{label} is larger than this server takes: " + ", ".join(too_big))


def _path_argument(path, what: str, alternatives: str) -> str | os.PathLike:
    """``path`` (str, bytes or os.PathLike) as str or os.PathLike, or an ``InvalidArgumentError`` naming ``what``
    took it. Not a Path yet: that drops a trailing separator, which the output checks refuse."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"{what} takes the path of a .gca file (a str or pathlib.Path){alternatives}, "
                                   f"got {type(path).__name__}")
    return path


def _float_tensor(name: str, values) -> Tensor:
    """An avatar's array as a float32 tensor (numpy arrays and other real dtypes converted)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        values = torch.from_numpy(np.array(values, dtype=np.float32))     # a copy: writable, positive strides
    if not torch.is_tensor(values):
        raise InvalidArgumentError(f"invalid avatar: {name} must be a torch tensor or a numpy array of real "
                                   f"numbers, got {type(values).__name__}")
    if values.dtype == torch.bool or values.is_complex():
        raise InvalidArgumentError(f"invalid avatar: {name} must hold real numbers, got {values.dtype}")
    return values if values.dtype == torch.float32 else values.float()


def _check_arrays(heights: Tensor, textures: Tensor, extent) -> list[str]:
    p = []
    if heights.ndim != 3 or heights.shape[1] != heights.shape[2] or heights.shape[1] < 1:
        p.append(f"heights must be (L, G, G) with G >= 1, got {tuple(heights.shape)}")
    if textures.ndim != 4 or textures.shape[1] != 4 or textures.shape[2] != textures.shape[3] or textures.shape[2] < 1:
        p.append(f"textures must be (L, 4, T, T) with T >= 1, got {tuple(textures.shape)}")
    if not p and heights.shape[0] != textures.shape[0]:
        p.append(f"{heights.shape[0]} height fields but {textures.shape[0]} textures")
    if not p and heights.shape[0] < 1:
        p.append("no layers")
    if not (is_finite(extent) and 0.0 < extent < 1.0):
        p.append(f"grid extent {extent!r} must be a number in (0, 1) world units")
    return p or _value_problems(heights, textures)


def _value_problems(heights: Tensor, textures: Tensor) -> list[str]:
    """What is out of range in well-shaped arrays: one min/max pass over each (NaN propagates into both)."""
    p = []
    for name, values, (lo, hi), slack in (
            ("heights", heights, (-HEIGHT_LIMIT, HEIGHT_LIMIT), 0.0),
            ("colour (textures[:, :3])", textures[:, :3], COLOUR_RANGE, RANGE_SLACK),
            ("opacity (textures[:, 3])", textures[:, 3], OPACITY_RANGE, RANGE_SLACK)):
        low, high = (float(v) for v in torch.aminmax(values))
        if not (math.isfinite(low) and math.isfinite(high)):
            p.append(f"non-finite values in {name}")
        elif low < lo - slack or high > hi + slack:
            p.append(f"{name} holds values in [{low:.6g}, {high:.6g}], outside [{lo:g}, {hi:g}]")
    return p


def texels_shown(alpha: Tensor) -> Tensor:
    """Where a layer can show, ``(..., T, T)`` bool of its opacity ``(..., T, T)``: alpha > 0 at the texel or
    at a neighbouring one (a bilinear lookup between texels reaches them)."""
    shape = alpha.shape
    lends = F.max_pool2d((alpha > 0).float().reshape(-1, 1, *shape[-2:]), 3, 1, 1)
    return lends.reshape(shape) > 0


def _corner_max(values: Tensor) -> Tensor:
    """``(G, G)`` -> ``(G-1, G-1)``: each grid cell's largest value over its four corners."""
    return F.max_pool2d(values[None, None], 2, 1)[0, 0]


def _reach2(heights: Tensor, alpha: Tensor, xy2: Tensor, to_cell: Tensor) -> float:
    """The largest squared distance from the origin of a point one layer can show (``Avatar.content_radius``):
    heights ``(G, G)``, alpha ``(T, T)`` with some opacity, ``xy2`` ``(G-1, G-1)`` each cell's largest
    x² + y², ``to_cell`` ``(T,)`` the cell row (column) of each texel row (column)."""
    n_cells = xy2.shape[0]
    # texels that can lend opacity to a lookup, then the cells they lie in (row and column sums of a
    # block: no list of texels), widened by a cell
    lends = texels_shown(alpha).float()                                                # (T, T)
    by_col = torch.zeros(alpha.shape[0], n_cells, dtype=lends.dtype).index_add_(1, to_cell, lends)
    cells = torch.zeros(n_cells, n_cells, dtype=lends.dtype).index_add_(0, to_cell, by_col) > 0
    cells = F.max_pool2d(cells.float()[None, None], 3, 1, 1)[0, 0] > 0
    return float((xy2 + _corner_max(heights.double() ** 2))[cells].max())


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
