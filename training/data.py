"""Training data: aligned face crops with their poses, and the pose distribution to render from.

A dataset is a folder written by ``gramcast prepare-faces`` (see ``gramcast.face.prepare`` for the
layout), or the same packed into one ``.zip`` by ``gramcast-train pack-dataset`` (to carry to a GPU
machine). Images are decoded once into a uint8 tensor in memory (a prepared LFW at 128² is ~480 MB;
use ``max_images`` or a smaller size for quick runs). Sampling is driven by an explicit
``torch.Generator`` so that every step's batch is reproducible.
"""
from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gramcast.device import host_to_device
from gramcast.errors import InvalidArgumentError

log = logging.getLogger(__name__)

MANIFEST = "poses.json"


@dataclass
class FaceRecord:
    image: str      # path relative to the dataset root
    yaw: float
    pitch: float
    person: str = ""


def _read_bytes(root: Path, name: str) -> bytes | None:
    """A file of a dataset folder or of a packed ``.zip`` dataset (None when absent)."""
    root = Path(root)
    if root.suffix == ".zip" and root.is_file():
        with open_zip(root) as zf:
            return _zip_member(zf, name)
    path = root / name
    return path.read_bytes() if path.exists() else None


def open_zip(path: Path) -> zipfile.ZipFile:
    """A packed dataset, opened; a file that is no zip (or a cut one) is an InvalidArgumentError."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidArgumentError(f"{path}: not a readable .zip dataset ({exc}); pack it again with "
                                   "`gramcast-train pack-dataset`, or give the prepared folder") from None


def read_manifest(root: Path) -> list[FaceRecord]:
    """Records of a prepared dataset folder or packed .zip (``poses.json``: {"items": [{image, yaw, pitch, person}]})."""
    if Path(root).is_file() and Path(root).suffix != ".zip":
        raise InvalidArgumentError(f"{root} is a file: give a folder written by `gramcast prepare-faces`, or "
                                   "its .zip from `gramcast-train pack-dataset`")
    raw = _read_bytes(root, MANIFEST)
    if raw is None:
        raise FileNotFoundError(f"{Path(root) / MANIFEST} not found: prepare the folder with "
                                f"`gramcast prepare-faces SRC {root}`")
    try:
        return parse_manifest(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:100]
        raise InvalidArgumentError(f"{Path(root) / MANIFEST} is malformed ({why}): prepare the dataset again "
                                   f"with `gramcast prepare-faces`") from None


def parse_manifest(data) -> list[FaceRecord]:
    """The records of a parsed ``poses.json`` (a dict with "items", or the bare list)."""
    items = data["items"] if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("'items' is not a list")
    return [FaceRecord(image=str(it["image"]), yaw=float(it["yaw"]), pitch=float(it["pitch"]),
                       person=str(it.get("person", ""))) for it in items]


def _zip_member(zf: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        return zf.read(name)
    except KeyError:
        return None


def _file_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _decode_bytes(data: bytes, resolution: int, name: str) -> tuple[np.ndarray, int]:
    """The image ``(resolution, resolution, 3)`` RGB uint8, and its side as stored."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidArgumentError(f"{name}: cannot read this training image (damaged, or not an image); "
                                   "replace it, or prepare the dataset again with `gramcast prepare-faces`")
    stored = min(bgr.shape[:2])
    if bgr.shape[0] != resolution or bgr.shape[1] != resolution:
        bgr = cv2.resize(bgr, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return bgr[..., ::-1].copy(), stored


class FaceDataset:
    """All images of a prepared folder at ``resolution``, with their (yaw, pitch)."""

    def __init__(self, root: Path, resolution: int, max_images: int | None = None,
                 people: set[str] | None = None):
        self.root = Path(root)
        records = read_manifest(self.root)
        if people is not None:
            records = [r for r in records if r.person in people]
        if max_images is not None:
            records = records[:max_images]
        if not records:
            raise InvalidArgumentError(f"{self.root}: the dataset holds no images{' to use' if people else ''}; "
                                       "prepare it with `gramcast prepare-faces` from photos with faces in them")
        self.records = records
        if self.root.suffix == ".zip":
            with open_zip(self.root) as zf:
                decoded = [self._decode(_zip_member(zf, r.image), r.image, resolution) for r in records]
        else:
            decoded = [self._decode(_file_bytes(self.root / r.image), r.image, resolution) for r in records]
        arrays, stored = zip(*decoded)
        #: the smallest side of the dataset's images as stored (``resolution``: none were enlarged)
        self.stored_size = min(stored)
        if self.stored_size < resolution:
            # trains, but on blurred faces: the model at that size learns what enlarging left
            log.warning("%s holds %d px images; this model trains at %d px, so they are enlarged (blurred): "
                        "prepare the photos at --size %d for a sharp model", self.root, self.stored_size,
                        resolution, resolution)
        self.images = torch.from_numpy(np.stack(arrays))
        self.images = self.images.permute(0, 3, 1, 2).contiguous()  # (N, 3, R, R) uint8
        self.poses = torch.tensor([[r.yaw, r.pitch] for r in records], dtype=torch.float32)

    def _decode(self, data: bytes | None, name: str, resolution: int) -> np.ndarray:
        if data is None:
            raise InvalidArgumentError(f"{self.root}/{name}: listed in {MANIFEST} but missing; copy the dataset "
                                       "again, or prepare it again with `gramcast prepare-faces`")
        return _decode_bytes(data, resolution, f"{self.root}/{name}")

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, batch: int, generator: torch.Generator, flip: bool = True,
               device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch: images (B, 3, R, R) in [-1, 1] and poses (B, 2).

        A horizontal flip mirrors the viewpoint too: yaw changes sign, pitch stays.
        """
        idx = torch.randint(len(self), (batch,), generator=generator)
        imgs = self.images[idx].float().div(127.5).sub(1.0)
        poses = self.poses[idx].clone()
        if flip:
            mask = torch.rand(batch, generator=generator) < 0.5
            imgs[mask] = imgs[mask].flip(-1)
            poses[mask, 0] = -poses[mask, 0]
        return host_to_device(imgs, device), host_to_device(poses, device)


class PoseSampler:
    """Camera poses for the generator, drawn from the dataset's own pose distribution.

    Resamples the measured poses (mirrored half of the time, as the data is augmented) and adds a
    little Gaussian jitter so the generator also sees the poses in between.
    """

    def __init__(self, poses: torch.Tensor, jitter: float = 0.02, mirror: bool = True):
        self.poses = poses.float()
        self.jitter, self.mirror = jitter, mirror

    def sample(self, batch: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
        idx = torch.randint(len(self.poses), (batch,), generator=generator)
        poses = self.poses[idx].clone()
        if self.mirror:
            sign = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
            poses[:, 0] *= sign
        poses += self.jitter * torch.randn(poses.shape, generator=generator)
        return host_to_device(poses, device)

    def stats(self) -> dict[str, float]:
        p = self.poses
        return {"yaw_mean": float(p[:, 0].mean()), "yaw_std": float(p[:, 0].std()),
                "pitch_mean": float(p[:, 1].mean()), "pitch_std": float(p[:, 1].std())}


def resize_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, R, R) with area averaging (for D inputs at another size)."""
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="area")


def pack_dataset(src: Path, out: Path, size: int | None = None, quality: int = 90,
                 exclude_people: set[str] | None = None) -> int:
    """Pack a prepared folder into one .zip (re-encoded at ``size`` and JPEG ``quality``), leaving out
    the photos of ``exclude_people`` (e.g. a validation split). Returns the number of items packed."""
    import cv2

    from gramcast.media_io import atomic_output

    records = [r for r in read_manifest(src) if not exclude_people or r.person not in exclude_people]
    manifest = json.loads(_read_bytes(src, MANIFEST))
    if exclude_people:
        items = manifest["items"] if isinstance(manifest, dict) else manifest
        kept = [it for it in items if str(it.get("person", "")) not in exclude_people]
        manifest = {**manifest, "items": kept, "excluded_people": sorted(exclude_people)} \
            if isinstance(manifest, dict) else kept
    with atomic_output(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for r in records:
                data = _read_bytes(src, r.image)
                if data is None:
                    raise FileNotFoundError(f"{Path(src) / r.image}: listed in {MANIFEST} but missing")
                if size is not None or quality < 95:
                    rgb = _decode_bytes(data, size, r.image)[0] if size else None
                    bgr = (rgb[..., ::-1] if rgb is not None else
                           cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
                    data = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
                zf.writestr(r.image, data)
            if size:
                manifest["size"] = size
            zf.writestr(MANIFEST, json.dumps(manifest))
    return len(records)
