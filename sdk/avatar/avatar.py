"""``Avatar``: the baked manifold cache of one identity, and its versioned ``.gca`` file.

A ``.gca`` file is a safetensors container (no pickle): float16 arrays ``heights`` ``(L, G, G)``
(the z of each manifold over the orthographic grid; row 0 is y = +extent) and ``textures``
``(L, 4, T, T)`` (rgb in [-1, 1], opacity in [0, 1]), and a metadata header with the format name and
version, the camera conventions it was baked for, the grid extent and the enrollment record.
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast import camera
from gramcast.errors import AvatarFormatError, InvalidArgumentError

__all__ = ["Avatar", "AvatarLimits", "FORMAT_NAME", "FORMAT_VERSION", "camera_conventions"]

FORMAT_NAME = "gramcast-avatar"
FORMAT_VERSION = 1


def camera_conventions() -> dict:
    return {"fov_deg": camera.FOV_DEG, "radius": camera.CAMERA_RADIUS, "near": camera.RAY_NEAR,
            "far": camera.RAY_FAR, "up": "+y", "forward": "+z"}


@dataclass
class Avatar:
    """heights ``(L, G, G)``, textures ``(L, 4, T, T)`` (float32 in memory), extent (world half-side of
    the grids), and ``meta``: method, model id, source image size, input pose, creation time, ..."""

    heights: Tensor
    textures: Tensor
    extent: float
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _check_arrays(self.heights, self.textures, self.extent)
        if problems:
            raise InvalidArgumentError("invalid avatar: " + "; ".join(problems))

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
        |h| is largest at a corner, as is x² + y²: the cell's corners bound its points' distance."""
        alpha = self.textures[:, 3]                                                    # (L, T, T)
        if not bool((alpha > 0).any()):
            return 0.0
        n_g, n_t, e = self.geometry_resolution, self.texture_resolution, float(self.extent)
        if n_g < 2 or n_t < 2:     # no cells to bound: the grid's corners and the highest point
            return math.hypot(e * math.sqrt(2.0), float(self.heights.abs().max()))
        # texels that can lend opacity to a lookup, then the grid cells they lie in, widened by a cell
        lends = F.max_pool2d((alpha > 0).float()[:, None], 3, 1, 1)[:, 0] > 0
        layer, row, col = torch.nonzero(lends, as_tuple=True)
        to_cell = (n_g - 1) / max(n_t - 1, 1)
        cells = torch.zeros(self.num_layers, max(n_g - 1, 1), max(n_g - 1, 1))
        cells[layer, (row * to_cell).long().clamp_(max=n_g - 2), (col * to_cell).long().clamp_(max=n_g - 2)] = 1.0
        cells = F.max_pool2d(cells[:, None], 3, 1, 1)[:, 0] > 0
        # each cell's largest x² + y² and h² over its four corners
        coords = torch.linspace(-e, e, n_g, dtype=torch.float64)
        xy2 = coords[None, :] ** 2 + coords[:, None] ** 2                              # (G, G)
        h2 = self.heights.double() ** 2                                                # (L, G, G)
        corner_max = lambda g: F.max_pool2d(g[:, None], 2, 1)[:, 0]                    # noqa: E731
        r2 = corner_max(xy2[None]) + corner_max(h2)                                    # (L, G-1, G-1)
        return math.sqrt(float(r2[cells].max()))

    def describe(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "layers": self.num_layers,
                "geometry_resolution": self.geometry_resolution, "texture_resolution": self.texture_resolution,
                "extent": self.extent, **self.meta}

    # ------------------------------------------------------------------ file
    def _contents(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
                  "extent": repr(float(self.extent)), "camera": json.dumps(camera_conventions()),
                  "meta": json.dumps(self.meta)}
        tensors = {"heights": self.heights.detach().to("cpu", torch.float16).contiguous(),
                   "textures": self.textures.detach().to("cpu", torch.float16).contiguous()}
        return tensors, header

    def save(self, path: str | Path) -> None:
        """Write atomically: a reader never sees a half-written file. A place that cannot be written (no such
        folder, no permission, a read-only file system, a protected file) is an ``OutputPathError`` naming
        ``path``, and leaves nothing behind."""
        from safetensors.torch import save_file

        from gramcast.media_io import atomic_output

        tensors, header = self._contents()
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)

    def to_bytes(self) -> bytes:
        """The ``.gca`` file's bytes (what ``save`` writes), e.g. to hand an avatar to a client to keep."""
        from safetensors.torch import save

        tensors, header = self._contents()
        return save(tensors, metadata=header)

    @classmethod
    def from_bytes(cls, data: bytes, label: str = "the avatar", limits: "AvatarLimits | None" = None) -> "Avatar":
        """``load`` for a ``.gca`` file's bytes (e.g. sent by a client), validated as a file is; ``limits``
        also bounds its size, for bytes from someone else (each problem an ``AvatarFormatError``)."""
        import tempfile

        if not isinstance(data, (bytes, bytearray, memoryview)) or not data:
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
        """Read and validate a ``.gca`` file; every problem is an ``AvatarFormatError`` that says what."""
        path = Path(path)
        if not path.is_file():
            raise AvatarFormatError(f"avatar file {path} does not exist: enroll one with `gramcast enroll PHOTO -o {path}`")
        return cls._read(path, str(path))

    @classmethod
    def _read(cls, file: Path, path: str) -> "Avatar":
        """The validated avatar in ``file``; messages name it ``path``."""
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as fh:
                header = fh.metadata() or {}
                keys = set(fh.keys())
                tensors = {k: fh.get_tensor(k) for k in keys & {"heights", "textures"}}
        except Exception as exc:  # safetensors raises several types for foreign/truncated data
            raise AvatarFormatError(f"{path} is not a readable gramcast avatar (.gca) file: it is truncated, "
                                    f"corrupt or of another format ({type(exc).__name__}: {exc}); "
                                    "enroll the avatar again") from exc
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
        missing = {"heights", "textures"} - keys
        if missing:
            raise AvatarFormatError(f"{path} lacks the arrays {sorted(missing)}: it is damaged; enroll again")
        try:
            extent = float(header["extent"])
            cam = json.loads(header["camera"])
            meta = json.loads(header.get("meta", "{}"))
        except (KeyError, ValueError) as exc:
            raise AvatarFormatError(f"{path} has a damaged header ({exc}); enroll again") from exc
        ours = camera_conventions()
        diff = {k: (cam.get(k), v) for k, v in ours.items() if cam.get(k) != v}
        if diff:
            raise AvatarFormatError(f"{path} was baked for other camera conventions {diff} (file, ours); "
                                    "re-enroll with this gramcast")
        heights, textures = tensors["heights"], tensors["textures"]
        if heights.dtype != torch.float16 or textures.dtype != torch.float16:
            raise AvatarFormatError(f"{path}: arrays must be float16, found {heights.dtype}, {textures.dtype}")
        problems = _check_arrays(heights.float(), textures.float(), extent)
        if problems:
            raise AvatarFormatError(f"{path} is damaged: " + "; ".join(problems))
        return cls(heights.float(), textures.float(), extent, meta)


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


def _check_arrays(heights: Tensor, textures: Tensor, extent: float) -> list[str]:
    p = []
    if heights.ndim != 3 or heights.shape[1] != heights.shape[2]:
        p.append(f"heights must be (L, G, G), got {tuple(heights.shape)}")
    if textures.ndim != 4 or textures.shape[1] != 4 or textures.shape[2] != textures.shape[3]:
        p.append(f"textures must be (L, 4, T, T), got {tuple(textures.shape)}")
    if not p and heights.shape[0] != textures.shape[0]:
        p.append(f"{heights.shape[0]} height fields but {textures.shape[0]} textures")
    if not p and heights.shape[0] < 1:
        p.append("no layers")
    if not (math.isfinite(extent) and 0.0 < extent < 1.0):
        p.append(f"grid extent {extent} outside (0, 1) world units")
    if not p and not (torch.isfinite(heights).all() and torch.isfinite(textures).all()):
        p.append("non-finite values in the arrays")
    return p


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
