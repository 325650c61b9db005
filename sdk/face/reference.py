"""The frontal reference face: mean mediapipe mesh of studio portraits, in world units.

mediapipe's canonical face model is not inside the 0.10.21 wheel, so gramcast ships its own: the
generalised-Procrustes mean of the 3D landmarks of the frontal studio portraits (London and Canada
sets), oriented as their mean head orientation (that defines "frontal"), made exactly left-right
symmetric, and placed in the world of ``gramcast.camera`` so that its frontal projection gives the
FFHQ-style crop (eye distance and eye-to-mouth rule of the FFHQ alignment script) and its nose tip
sits at z = ``NOSE_TIP_Z``. Rebuild with ``gramcast face-reference --data DIR``.
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from gramcast.camera import FOV_DEG
from gramcast.face.geometry import umeyama
from gramcast.face.landmarks import FIVE_POINT_GROUPS, NUM_LANDMARKS

__all__ = ["ReferenceFace", "project_world", "load_reference", "build_reference", "DEFAULT_REFERENCE_PATH", "NOSE_TIP_Z"]

DEFAULT_REFERENCE_PATH = Path(__file__).with_name("assets") / "reference_face.npz"
NOSE_TIP_Z = 0.08            # head centre near the origin: a real head is ~2.5 eye distances deep
NOSE_TIP = 1


@dataclass(frozen=True)
class ReferenceFace:
    """points: ``(468, 3)`` world units; mirror: ``(468,)`` index of each point's mirror partner."""

    points: np.ndarray
    mirror: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def five(self) -> np.ndarray:
        """``(5, 3)`` world positions of the alignment points."""
        return np.stack([self.points[list(g)].mean(axis=0) for g in FIVE_POINT_GROUPS])

    def template(self, size: int) -> np.ndarray:
        """``(5, 2)`` pixel positions of the 5 alignment points in an aligned ``size``² crop."""
        five = np.ascontiguousarray(self.five, np.float64)
        return _template_cached(five.tobytes(), int(size)).copy()

    def save(self, path: str | Path) -> None:
        from gramcast.media_io import atomic_output

        with atomic_output(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, points=self.points.astype(np.float32), mirror=self.mirror.astype(np.int32),
                         meta=np.array(json.dumps(self.meta)))


def project_world(points: np.ndarray, size: int, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """World points ``(N, 3)`` seen from pose ``(yaw, pitch)`` -> ``(N, 2)`` pixels of a size² image."""
    import torch

    from gramcast.camera import focal_length, pose_to_c2w

    c2w = pose_to_c2w(torch.tensor([[yaw, pitch]], dtype=torch.float64))[0].numpy()
    # camera.project_points in numpy: this runs per tracked frame, right after mediapipe, whose
    # worker threads still hold the cores; a torch op there waits ~2 ms for its own thread pool.
    cam = (np.asarray(points, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    f = focal_length(size)
    depth = -cam[:, 2]
    return np.stack([size / 2.0 + f * cam[:, 0] / depth, size / 2.0 - f * cam[:, 1] / depth], axis=1)


@lru_cache(maxsize=16)
def _template_cached(five: bytes, size: int) -> np.ndarray:
    return project_world(np.frombuffer(five, np.float64).reshape(5, 3), size)


@lru_cache(maxsize=4)
def load_reference(path: str | None = None) -> ReferenceFace:
    path = Path(path) if path else DEFAULT_REFERENCE_PATH
    with np.load(path, allow_pickle=False) as data:
        return ReferenceFace(points=data["points"].astype(np.float64), mirror=data["mirror"].astype(np.int64),
                             meta=json.loads(str(data["meta"])))


def _normalise(points: np.ndarray) -> np.ndarray:
    c = points - points.mean(axis=0)
    return c / np.sqrt((c ** 2).sum(axis=1).mean())


def generalised_procrustes(shapes: list[np.ndarray], iterations: int = 10) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean shape ``(N, 3)`` of similarity-aligned shapes, and each shape's rotation mean -> shape."""
    shapes = [_normalise(s) for s in shapes]
    mean = shapes[0]
    for _ in range(iterations):
        aligned = []
        for s in shapes:
            sc, r, t, _ = umeyama(s, mean)
            aligned.append(sc * s @ r.T + t)
        mean = _normalise(np.mean(aligned, axis=0))
    rotations = [umeyama(mean, s)[1] for s in shapes]
    return mean, rotations


def mean_rotation(rotations: list[np.ndarray]) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.sum(rotations, axis=0))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    return u @ d @ vt


def mirror_pairs(points: np.ndarray) -> np.ndarray:
    """Index of each point's left-right partner in a roughly frontal, centred face ``(N, 3)``."""
    flipped = points * np.array([-1.0, 1.0, 1.0])
    d = ((points[:, None, :] - flipped[None, :, :]) ** 2).sum(-1)
    pairs = d.argmin(axis=0)
    # make it an involution: points that disagree keep themselves
    bad = pairs[pairs] != np.arange(len(points))
    pairs[bad] = np.arange(len(points))[bad]
    return pairs


def symmetrise(points: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Exact left-right symmetry about x = 0, keeping the pitch of the input."""
    flipped = (points * np.array([-1.0, 1.0, 1.0]))[pairs]
    _, r, t, _ = umeyama(flipped, points)
    sym = 0.5 * (points + flipped @ r.T + t)
    # rotate the symmetry plane's normal onto x about the vertical, then centre it on x = 0
    diffs = sym - sym[pairs]
    keep = np.linalg.norm(diffs, axis=1) > 1e-6
    n = (diffs[keep] * np.sign(diffs[keep][:, :1])).mean(axis=0)
    yaw = math.atan2(n[2], n[0])
    c, s = math.cos(yaw), math.sin(yaw)
    rot_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    sym = sym @ rot_y.T
    sym[:, 0] -= sym[:, 0].mean()
    sym[:, 0] = 0.5 * (sym[:, 0] - sym[pairs, 0])
    sym[:, 1:] = 0.5 * (sym[:, 1:] + sym[pairs, 1:])
    return sym


def place_in_world(points: np.ndarray) -> np.ndarray:
    """Scale and shift a frontal face (any units, x right, y up, z to the viewer) into world units."""
    five = np.stack([points[list(g)].mean(axis=0) for g in FIVE_POINT_GROUPS])
    eye_avg = 0.5 * (five[0] + five[1])
    e2e = np.linalg.norm(five[1, :2] - five[0, :2])
    mouth_avg = 0.5 * (five[3] + five[4])
    e2m = np.linalg.norm(mouth_avg[:2] - eye_avg[:2])
    half_fov = math.tan(math.radians(FOV_DEG) / 2)
    centre = eye_avg + 0.1 * (mouth_avg - eye_avg)       # the FFHQ crop centre
    out = points - np.array([centre[0], centre[1], points[NOSE_TIP, 2]])
    scale = 1.0
    for _ in range(5):  # the crop side is measured at the eyes' depth, which depends on the scale
        z_eyes = NOSE_TIP_Z + scale * (eye_avg[2] - points[NOSE_TIP, 2])
        crop_side = 2.0 * max(2.0 * e2e, 1.8 * e2m)
        scale = 2.0 * half_fov * (1.0 - z_eyes) / crop_side
    world = out * scale
    world[:, 2] += NOSE_TIP_Z
    return world


def build_reference(image_paths: list[Path], progress: bool = True) -> ReferenceFace:
    """Detect one face per image (others are skipped) and build the reference from all of them."""
    from tqdm import tqdm

    from gramcast.face.landmarks import FaceMesh
    from gramcast.images import load_image

    shapes, used = [], []
    with FaceMesh(static=True, max_faces=2) as mesh:
        for path in tqdm(image_paths, desc="reference faces", disable=not progress):
            try:
                faces = mesh.detect(load_image(path))
            except Exception:
                continue
            if len(faces) == 1:
                shapes.append(faces[0].points)
                used.append(Path(path).parent.name + "/" + Path(path).name)
    if len(shapes) < 8:
        raise ValueError(f"only {len(shapes)} usable frontal portraits; the reference needs at least 8")
    mean, rotations = generalised_procrustes(shapes)
    mean = mean @ mean_rotation(rotations).T                # orient as the mean studio head
    pairs = mirror_pairs(mean - mean.mean(axis=0))
    sym = symmetrise(mean, pairs)
    world = place_in_world(sym)
    meta = {
        "what": "generalised-Procrustes mean of mediapipe face-mesh landmarks (468) of frontal studio "
                "portraits, oriented as their mean, symmetrised, placed in gramcast world units",
        "images": len(used), "sources": sorted({u.split("/")[0] for u in used}),
        "built": datetime.date.today().isoformat(), "nose_tip_z": NOSE_TIP_Z,
        "landmarks": NUM_LANDMARKS, "rebuild": "gramcast face-reference --data ../shared/data/faces",
    }
    return ReferenceFace(points=world, mirror=pairs, meta=meta)
