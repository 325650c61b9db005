"""Pure geometry for faces: similarity fits, rotations to poses, 2D similarity matrices.

Point sets follow the camera-space convention of ``gramcast.camera``: x right, y up, z towards the
viewer. 2D matrices act on continuous pixel coordinates (a pixel centre sits at ``index + 0.5``),
``(u, v)`` with v pointing down, as ``(2, 3)`` affine matrices.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "umeyama", "similarity_2d", "rotation_to_pose", "rotation_from_pose", "similarity_params",
    "similarity_from_params", "to_index_matrix", "invert_affine", "apply_affine",
]


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares similarity ``dst ≈ s R src + t`` (Umeyama 1991), never a reflection.

    src, dst: ``(N, D)``. Returns ``(s, R (D, D), t (D,), rms)`` where ``rms`` is the residual's root
    mean square in ``dst`` units.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(src.shape[1])
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = (u * d) @ vt
    var_s = (w * (xs ** 2).sum(1)).sum()
    scale = float((sig * d).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    resid = dst - (scale * src @ rot.T + t)
    rms = float(np.sqrt((w * (resid ** 2).sum(1)).sum()))
    return scale, rot, t, rms


def similarity_2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(2, 3)`` similarity that maps ``src`` ``(N, 2)`` onto ``dst`` ``(N, 2)`` in least squares."""
    s, r, t, _ = umeyama(src, dst)
    return np.hstack([s * r, t[:, None]])


def rotation_to_pose(rot: np.ndarray) -> tuple[float, float]:
    """Head rotation -> the camera ``(yaw, pitch)`` of ``gramcast.camera`` that sees the same view.

    rot: ``(3, 3)`` mapping head-frame vectors to camera space (both x right, y up, z to the viewer
    when frontal). The camera sits along the head-frame direction ``rot.T @ e_z``.
    """
    back = rot[2]
    yaw = math.atan2(back[0], back[2])
    pitch = math.asin(max(-1.0, min(1.0, back[1])))
    return yaw, pitch


def rotation_from_pose(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Inverse of ``rotation_to_pose`` (plus an in-image roll, counter-clockwise as displayed)."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    back = np.array([sy * cp, sp, cy * cp])
    right = np.array([cy, 0.0, -sy])
    up = np.cross(back, right)
    c2w_rot = np.stack([right, up, back], axis=1)            # columns: camera axes in the head frame
    cr, sr = math.cos(roll), math.sin(roll)
    # counter-clockwise on screen = a positive turn about the camera's z axis (towards the viewer)
    roll_cam = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return roll_cam @ c2w_rot.T


def similarity_params(matrix: np.ndarray) -> tuple[float, float, float, float]:
    """``(2, 3)`` similarity -> ``(scale, roll, tx, ty)``; roll is counter-clockwise as displayed."""
    a, b = matrix[0, 0], matrix[1, 0]
    return float(math.hypot(a, b)), float(-math.atan2(b, a)), float(matrix[0, 2]), float(matrix[1, 2])


def similarity_from_params(scale: float, roll: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(-roll), scale * math.sin(-roll)
    return np.array([[c, -s, tx], [s, c, ty]])


def to_index_matrix(matrix: np.ndarray) -> np.ndarray:
    """A continuous-coordinate affine as the pixel-index affine that ``cv2.warpAffine`` expects."""
    m = np.asarray(matrix, np.float64)
    out = m.copy()
    out[:, 2] = m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """points ``(N, 2)`` -> ``(N, 2)``."""
    return np.asarray(points) @ matrix[:, :2].T + matrix[:, 2]
