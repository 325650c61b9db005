"""Where a photo's faces are before the face mesh looks at them, and which way up the photo is.

The face mesh finds faces with mediapipe's short-range detector, which looks at the whole photo at 128²:
a face that fills less than about a fifth of a large photo (a portrait taken from a few metres, a
selfie pasted into a big canvas) is not found at all. ``find_faces`` then asks the full-range detector
(faces down to a few percent of the frame) where faces are and runs the mesh on a crop around each.

Neither detector finds an upside-down face as such: the short-range one reports a weaker upright face
where there is none, and the mesh fits an upright face to it, so such a photo would enroll upside down.
``upright_turns`` compares the detector's confidence with the photo turned four ways (upright photos:
the upright way wins in 249 of 250 LFW, Canada and London portraits, the other by 0.014; a photo turned
over: the way back wins by more than ``TURN_MARGIN`` in all 250).
"""
from __future__ import annotations

import contextlib
import os

import cv2
import numpy as np

from gramcast.face.landmarks import Closeable, DetectedFace, FaceMesh, _import_mediapipe

__all__ = ["FaceDetector", "upright_turns", "find_faces", "TURN_MARGIN"]

#: How much more confident the detector must be with the photo turned for the turn to be taken.
TURN_MARGIN = 0.05
#: The side (pixels) of the thumbnail the orientation is judged on: the detector looks at 128² anyway.
TURN_THUMBNAIL = 384
#: The crop ``find_faces`` gives the mesh around a detected face, in detector boxes (the mesh's own
#: detector wants the face at a third or more of its input).
CROP_BOXES = 2.5


class FaceDetector(Closeable):
    """mediapipe's BlazeFace detectors: ``short`` (faces filling much of the frame, what the face mesh
    uses) and ``full`` range (faces down to a few percent of the frame), each made on first use.
    Not thread-safe: give each thread its own instance."""

    def __init__(self, min_confidence: float = 0.5):
        self.min_confidence = min_confidence
        self._models: dict[int, object] = {}

    def _model(self, selection: int):
        if selection not in self._models:
            mp = _import_mediapipe()
            with contextlib.redirect_stderr(open(os.devnull, "w")):
                self._models[selection] = mp.solutions.face_detection.FaceDetection(
                    model_selection=selection, min_detection_confidence=self.min_confidence)
        return self._models[selection]

    def _detect(self, rgb: np.ndarray, selection: int) -> list[tuple[float, np.ndarray]]:
        rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        h, w = rgb.shape[:2]
        found = []
        for det in self._model(selection).process(rgb).detections or ():
            box = det.location_data.relative_bounding_box
            found.append((float(det.score[0]),
                          np.array([box.xmin * w, box.ymin * h, box.width * w, box.height * h], np.float64)))
        return sorted(found, key=lambda f: -f[0])

    def short(self, rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """``(score, box)`` of each face found, most confident first; box: x, y, width, height in pixels."""
        return self._detect(rgb, 0)

    def full(self, rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """As ``short``, with the full-range model."""
        return self._detect(rgb, 1)

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()


def _thumbnail(rgb: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(rgb.shape[:2])
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb


def upright_turns(rgb: np.ndarray, detector: FaceDetector, margin: float = TURN_MARGIN) -> int:
    """How many quarter turns (``np.rot90``'s ``k``) put the face of ``rgb`` ``(H, W, 3)`` upright: 0 unless
    the short-range detector is more confident by ``margin`` with the photo turned so (2: upside down)."""
    small = _thumbnail(rgb, TURN_THUMBNAIL)
    scores = [max((s for s, _ in detector.short(np.ascontiguousarray(np.rot90(small, k)))), default=0.0)
              for k in range(4)]
    best = int(np.argmax(scores))
    return best if scores[best] > scores[0] + margin else 0


def find_faces(rgb: np.ndarray, mesh: FaceMesh, detector: FaceDetector | None = None) -> list[DetectedFace]:
    """The faces of ``rgb`` ``(H, W, 3)``, largest first: the face mesh's, or where it finds none, the mesh's
    on a crop around each face the full-range detector finds (``detector``: made here when None)."""
    faces = mesh.detect(rgb)
    if faces:
        return faces
    own = detector is None
    detector = detector or FaceDetector()
    try:
        boxes = detector.full(rgb)
    finally:
        if own:
            detector.close()
    h, w = rgb.shape[:2]
    for _, (x, y, bw, bh) in boxes:
        half = CROP_BOXES * max(bw, bh) / 2
        cx, cy = x + bw / 2, y + bh / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        for face in mesh.detect(rgb[y0:y1, x0:x1]):
            moved = DetectedFace(face.points + np.array([x0, -y0, 0.0]))
            # a neighbour's box may hold this face too
            if all(np.linalg.norm(moved.center - f.center) > 0.5 * f.eye_distance for f in faces):
                faces.append(moved)
    return sorted(faces, key=lambda f: -f.eye_distance)
