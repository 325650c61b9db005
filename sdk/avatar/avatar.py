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
from torch import Tensor

from gramcast import camera
from gramcast.errors import AvatarFormatError

__all__ = ["Avatar", "FORMAT_NAME", "FORMAT_VERSION", "camera_conventions"]

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
            raise ValueError("invalid avatar: " + "; ".join(problems))

    @property
    def num_layers(self) -> int:
        return self.heights.shape[0]

    @property
    def geometry_resolution(self) -> int:
        return self.heights.shape[-1]

    @property
    def texture_resolution(self) -> int:
        return self.textures.shape[-1]

    def describe(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "layers": self.num_layers,
                "geometry_resolution": self.geometry_resolution, "texture_resolution": self.texture_resolution,
                "extent": self.extent, **self.meta}

    # ------------------------------------------------------------------ file
    def save(self, path: str | Path) -> None:
        """Write atomically: a reader never sees a half-written file."""
        from safetensors.torch import save_file

        from gramcast.media_io import atomic_output

        header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
                  "extent": repr(float(self.extent)), "camera": json.dumps(camera_conventions()),
                  "meta": json.dumps(self.meta)}
        tensors = {"heights": self.heights.detach().to("cpu", torch.float16).contiguous(),
                   "textures": self.textures.detach().to("cpu", torch.float16).contiguous()}
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)

    @classmethod
    def load(cls, path: str | Path) -> "Avatar":
        """Read and validate a ``.gca`` file; every problem is an ``AvatarFormatError`` that says what."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise AvatarFormatError(f"avatar file {path} does not exist: enroll one with `gramcast enroll PHOTO -o {path}`")
        try:
            with safe_open(str(path), framework="pt") as fh:
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
