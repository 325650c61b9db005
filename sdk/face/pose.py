"""Head pose from dense 3D landmarks fitted to the frontal reference face (Umeyama)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gramcast.face.geometry import (
    rotation_to_pose, similarity_2d, similarity_from_params, similarity_params, umeyama,
)
from gramcast.face.landmarks import DetectedFace
from gramcast.face.reference import ReferenceFace, load_reference, project_world

__all__ = ["HeadPose", "estimate_pose", "PLACEMENT_CROP"]

PLACEMENT_CROP = 256      # crop size in which the placement similarity is fitted (any size works)


@dataclass(frozen=True)
class HeadPose:
    """A head in an image, in the conventions of ``gramcast.camera``.

    ``yaw``, ``pitch``: the viewpoint (radians) at which to render the avatar. ``roll``: in-image
    rotation of the head, counter-clockwise as displayed. ``center``: frame pixel ``(u, v)`` of the
    aligned crop's centre; ``crop_size``: side in frame pixels that the aligned crop covers there.
    Together roll, centre and size are the 2D similarity that places a rendered crop into the frame.
    ``fit_error``: RMS residual of the 3D fit relative to the eye distance.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    center: tuple[float, float] = (0.0, 0.0)
    crop_size: float = 0.0
    fit_error: float = 0.0

    @property
    def yaw_pitch(self) -> tuple[float, float]:
        return (self.yaw, self.pitch)

    def frame_from_crop(self, size: int) -> np.ndarray:
        """``(2, 3)`` continuous-pixel similarity from a rendered ``size``² crop into the frame."""
        k = self.crop_size / size
        m = similarity_from_params(k, self.roll, 0.0, 0.0)
        m[:, 2] = np.asarray(self.center) - m[:, :2] @ np.array([size / 2.0, size / 2.0])
        return m


def estimate_pose(face: DetectedFace, reference: ReferenceFace | None = None) -> HeadPose:
    """Fit the reference to the face's landmarks: rotation -> (yaw, pitch), 2D fit -> placement."""
    ref = reference or load_reference()
    scale, rot, _, rms = umeyama(ref.points, face.points)
    yaw, pitch = rotation_to_pose(rot)
    # Placement: where the reference, rendered at that view, must go to cover the detected landmarks.
    crop_pts = project_world(ref.points, PLACEMENT_CROP, yaw, pitch)
    m = similarity_2d(crop_pts, face.pixels)
    k, roll, _, _ = similarity_params(m)
    centre = m[:, :2] @ np.array([PLACEMENT_CROP / 2.0] * 2) + m[:, 2]
    eye_dist_ref = np.linalg.norm(ref.five[0] - ref.five[1]) * scale
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll, center=(float(centre[0]), float(centre[1])),
                    crop_size=k * PLACEMENT_CROP, fit_error=float(rms / max(eye_dist_ref, 1e-9)))

