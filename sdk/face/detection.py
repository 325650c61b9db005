"""Where a photo's faces are before the face mesh looks at them, and which way up the photo is.

The face mesh finds faces with mediapipe's short-range detector, which looks at the whole photo at 128²:
a face that fills less than about a fifth of a large photo (a portrait taken from a few metres, a
selfie pasted into a big canvas) is not found at all, nor, often, one a few times smaller than another in
the photo (someone between two others in a group photo). ``find_faces`` also asks the full-range detector
(faces down to a few percent of the frame) where faces are and runs the mesh on a crop around each face
the mesh missed.

Neither detector finds an upside-down face as such: the short-range one reports a weaker upright face
where there is none, and the mesh fits an upright face to it, so such a photo would enroll upside down.
``upright_turns`` compares the detector's confidence with the photo turned four ways (upright photos:
the upright way wins in 249 of 250 LFW, Canada and London portraits, the other by 0.014; a photo turned
over: the way back wins by more than ``TURN_MARGIN`` in all 250).
"""
from __future__ import annotations

import contextlib

import cv2
import numpy as np

from gramcast.face.landmarks import Closeable, DetectedFace, FaceMesh, _import_mediapipe, _quiet_stderr
from gramcast.images import as_rgb

__all__ = ["FaceDetector", "upright_turns", "find_faces", "DistantFaceMesh", "TURN_MARGIN"]

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
            with _quiet_stderr():
                self._models[selection] = mp.solutions.face_detection.FaceDetection(
                    model_selection=selection, min_detection_confidence=self.min_confidence)
        return self._models[selection]

    def _detect(self, rgb, selection: int) -> list[tuple[float, np.ndarray]]:
        rgb = as_rgb(rgb)
        h, w = rgb.shape[:2]
        found = []
        for det in self._model(selection).process(rgb).detections or ():
            box = det.location_data.relative_bounding_box
            found.append((float(det.score[0]),
                          np.array([box.xmin * w, box.ymin * h, box.width * w, box.height * h], np.float64)))
        return sorted(found, key=lambda f: -f[0])

    def short(self, rgb) -> list[tuple[float, np.ndarray]]:
        """``(score, box)`` of each face found, most confident first; box: x, y, width, height in pixels.
        ``rgb``: ``(H, W, 3)`` uint8 RGB, or any image ``gramcast.images.as_rgb`` converts."""
        return self._detect(rgb, 0)

    def full(self, rgb) -> list[tuple[float, np.ndarray]]:
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
    small = _thumbnail(as_rgb(rgb), TURN_THUMBNAIL)
    scores = [max((s for s, _ in detector.short(np.ascontiguousarray(np.rot90(small, k)))), default=0.0)
              for k in range(4)]
    best = int(np.argmax(scores))
    return best if scores[best] > scores[0] + margin else 0


def clip_window(window: tuple[int, int, int, int], shape) -> tuple[int, int, int, int] | None:
    """The part of ``window`` (x0, y0, x1, y1) inside a frame of ``shape`` ``(H, W, ...)``, or None where none is."""
    h, w = shape[:2]
    x0, y0, x1, y1 = window
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def faces_in_window(mesh: FaceMesh, rgb: np.ndarray, window: tuple[int, int, int, int]) -> list[DetectedFace]:
    """The faces ``mesh`` finds in the ``window`` (x0, y0, x1, y1) of ``rgb``, in the whole image's pixels; none
    where the window lies outside ``rgb``."""
    window = clip_window(window, rgb.shape)
    if window is None:
        return []         # an empty crop would stop the mesh's graph for good (mediapipe: "ROI width ... > 0")
    x0, y0, x1, y1 = window
    return [DetectedFace(f.points + np.array([x0, -y0, 0.0])) for f in mesh.detect(rgb[y0:y1, x0:x1])]


#: The side of the overlapping tiles ``find_faces`` gives the full-range detector in a big photo where the
#: whole photo showed no face: the detector looks at 192², so in a 4032x3024 phone photo a face 60-80 px
#: between the eyes (a portrait from a few metres) is too small for it whole, and found in every tile size
#: tried from 768 to 1536 px.
DETECTION_TILE = 1536


def detection_tiles(shape, tile: int = DETECTION_TILE) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) of side ``tile`` overlapping by half, covering an image of ``shape`` (H, W, ...);
    none where the image fits in one tile."""
    h, w = shape[:2]
    if max(h, w) <= tile:
        return []

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        step = tile // 2
        return sorted(set(list(range(0, n - tile, step)) + [n - tile]))

    return [(x, y, min(w, x + tile), min(h, y + tile)) for y in starts(h) for x in starts(w)]


def _add_detected(faces: list[DetectedFace], rgb: np.ndarray, mesh: FaceMesh, boxes) -> None:
    """Append to ``faces`` the mesh's faces on a crop around each detector box (x, y, w, h) of ``rgb`` that
    holds none of ``faces`` yet."""
    h, w = rgb.shape[:2]
    for x, y, bw, bh in boxes:
        cx, cy = x + bw / 2, y + bh / 2
        if any(abs(f.center[0] - cx) < bw / 2 and abs(f.center[1] - cy) < bh / 2 for f in faces):
            continue          # found already
        half = CROP_BOXES * max(bw, bh) / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        for moved in faces_in_window(mesh, rgb, (x0, y0, x1, y1)):
            # the crop may hold a face found before too
            if all(np.linalg.norm(moved.center - f.center) > 0.5 * f.eye_distance for f in faces):
                faces.append(moved)


def find_faces(rgb: np.ndarray, mesh: FaceMesh, detector: FaceDetector | None = None) -> list[DetectedFace]:
    """The faces of ``rgb`` ``(H, W, 3)``, largest first: the face mesh's on the whole photo, and the mesh's
    on a crop around each face the full-range detector finds that the mesh has not (``detector``: made here
    when None); where neither finds a face in a photo bigger than ``DETECTION_TILE``, the detector's on
    tiles of it. The mesh's own detector looks at the photo at 128²: a face a few times smaller than the
    largest (someone between two others in a group photo) or in a big canvas escapes it, and a portrait
    would then pass as one person's, or its matte keep the other."""
    rgb = as_rgb(rgb)          # once, for the crops below too
    faces = mesh.detect(rgb)
    own = detector is None
    detector = detector or FaceDetector()
    try:
        _add_detected(faces, rgb, mesh, (box for _, box in detector.full(rgb)))
        if not faces:
            for x0, y0, x1, y1 in detection_tiles(rgb.shape):
                boxes = [box + np.array([x0, y0, 0.0, 0.0]) for _, box in detector.full(rgb[y0:y1, x0:x1])]
                _add_detected(faces, rgb, mesh, boxes)
    finally:
        if own:
            detector.close()
    return sorted(faces, key=lambda f: -f.eye_distance)


class DistantFaceMesh(Closeable):
    """The face mesh in tracking mode on a window of the frame around a face too small in it for the mesh's
    own detector (a participant sitting back from the camera: the face under about a tenth of the frame's
    width), found there by the full-range detector. ``HeadTracker`` asks it where the whole frame shows no
    face. Not thread-safe."""

    def __init__(self, max_faces: int = 2, acquire_every: int = 5, window_faces: float = 3.0):
        self.max_faces, self.acquire_every, self.window_faces = max_faces, acquire_every, window_faces
        #: the frame's window the mesh looks at (x0, y0, x1, y1), or None (no distant face followed)
        self.window: tuple[int, int, int, int] | None = None
        self._shape: tuple | None = None      # the shape of the frame the window was made in
        self._mesh: FaceMesh | None = None
        self._detector: FaceDetector | None = None
        self._misses = 0

    def detect(self, rgb: np.ndarray, near: np.ndarray | None = None) -> list[DetectedFace]:
        """Faces of frame ``rgb`` ``(H, W, 3)`` (frame pixels, largest first) seen through the window, or []
        where there is none. Without a window, one is sought on every ``acquire_every``-th call (the
        full-range detector's face nearest ``near``, else its surest). A frame of another shape than the
        window's (a sender that changed its frame size) has its face sought anew at once."""
        rgb = as_rgb(rgb, "the frame")
        if self.window is not None and rgb.shape != self._shape:
            self.reset()              # the window is in another frame's pixels
        if self.window is None:
            self._misses += 1
            if (self._misses - 1) % self.acquire_every:
                return []
            self._detector = self._detector or FaceDetector()
            boxes = self._detector.full(rgb)
            if not boxes:
                return []
            centres = [box[:2] + box[2:] / 2 for _, box in boxes]
            pick = 0 if near is None else int(np.argmin([np.linalg.norm(c - near) for c in centres]))
            self.window = self._window_around(centres[pick], float(boxes[pick][1][2:].max()), rgb.shape)
            self._shape = rgb.shape
        x0, y0, x1, y1 = self.window
        self._mesh = self._mesh or FaceMesh(static=False, max_faces=self.max_faces)
        faces = faces_in_window(self._mesh, rgb, self.window)
        if not faces:
            self.reset()
            return []
        face = faces[0] if near is None else min(faces, key=lambda f: float(np.linalg.norm(f.center - near)))
        size = float(np.ptp(face.pixels, axis=0).max())
        side = x1 - x0
        if size * self.window_faces >= min(rgb.shape[:2]):
            self.reset()              # near enough again for the whole frame
        elif (np.abs(face.center - [(x0 + x1) / 2, (y0 + y1) / 2]).max() > side / 6
              or not 0.8 < size * self.window_faces / side < 1.25):
            self.window = self._window_around(face.center, size, rgb.shape)   # follow it
        return faces

    def _window_around(self, centre: np.ndarray, face_size: float, shape) -> tuple[int, int, int, int]:
        h, w = shape[:2]
        side = int(min(h, w, max(32.0, self.window_faces * face_size)))
        x0 = int(np.clip(round(centre[0] - side / 2), 0, w - side))
        y0 = int(np.clip(round(centre[1] - side / 2), 0, h - side))
        return x0, y0, x0 + side, y0 + side

    def reset(self) -> None:
        self.window = self._shape = None
        self._misses = 0

    def close(self) -> None:
        parts, self._mesh, self._detector = (self._mesh, self._detector), None, None
        close_all(parts)


def close_all(parts) -> None:
    """Closes each of ``parts`` (None: nothing to close). A mediapipe graph that failed raised its error in the
    ``process`` call it failed in; its ``close`` raises the same again, which would leave the other parts open
    and make a cleanup fail: that error is not raised twice."""
    for part in parts:
        if part is not None:
            with contextlib.suppress(RuntimeError):
                part.close()
