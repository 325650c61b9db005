"""mediapipe face mesh, imported lazily (the model and training code must import without it).

Landmarks are returned as ``(468, 3)`` float arrays in *image camera space*: ``x`` = column in
continuous pixels, ``y`` = minus the row (so +y is up), ``z`` = mediapipe's relative depth scaled like
``x`` and flipped so that +z points towards the viewer. In that space a face is a rigid 3D point set
up to a similarity, which is what the head pose fit needs.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from gramcast.errors import GramcastError
from gramcast.images import as_rgb

__all__ = ["NUM_LANDMARKS", "FIVE_POINT_GROUPS", "CHIN", "FaceMesh", "DetectedFace", "five_points", "eye_distance"]

NUM_LANDMARKS = 468          # the refined mesh adds 10 iris points; they are not used for geometry
# Landmark groups whose means give the 5 alignment points: eye centres (from the eyelid contour, so
# the unrefined tracking mesh gives the same points), nose tip, mouth corners. Image-left eye first.
FIVE_POINT_GROUPS = ((33, 133, 159, 145), (362, 263, 386, 374), (1,), (61,), (291,))
#: The lowest point of the chin on the face oval
CHIN = 152


@dataclass(frozen=True)
class DetectedFace:
    """One face. ``points``: ``(468, 3)`` image camera space (see module docstring)."""

    points: np.ndarray

    @property
    def pixels(self) -> np.ndarray:
        """``(468, 2)`` continuous pixel coordinates ``(u, v)``."""
        return np.stack([self.points[:, 0], -self.points[:, 1]], axis=1)

    @property
    def five(self) -> np.ndarray:
        return five_points(self.pixels)

    @property
    def eye_distance(self) -> float:
        return eye_distance(self.pixels)

    @property
    def center(self) -> np.ndarray:
        return self.pixels.mean(axis=0)


def five_points(pixels: np.ndarray) -> np.ndarray:
    """``(N>=468, 2)`` -> ``(5, 2)``: image-left eye, image-right eye, nose tip, left and right mouth."""
    return np.stack([pixels[list(g)].mean(axis=0) for g in FIVE_POINT_GROUPS])


def eye_distance(pixels: np.ndarray) -> float:
    five = five_points(pixels)
    return float(np.linalg.norm(five[0] - five[1]))


def _import_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe as mp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise GramcastError(
            "face tracking needs mediapipe==0.10.21 (pip install -e . installs it): " + str(exc)
        ) from exc
    return mp


@contextlib.contextmanager
def _quiet_stderr():
    """Python's stderr sent to the null device while mediapipe builds a graph (the file closed after)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield


class Closeable:
    """``with`` support for objects holding a native graph: ``__exit__`` calls ``close()``. ``close`` may be
    called again (a ``with`` block whose body closes too, a cleanup in ``finally``): it does nothing then."""

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def _still_open(self, graph):
        """``graph``, the native graph this object holds (None once closed), or the error that says it is closed:
        mediapipe's own ("_graph is None in SolutionBase") does not say which object or what to do."""
        if graph is None:
            raise GramcastError(f"this {type(self).__name__} is closed: make a new one to use it again")
        return graph

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FaceMesh(Closeable):
    """mediapipe face mesh in still-image mode (enrollment, datasets) or tracking mode (video).

    Not thread-safe: give each thread its own instance.
    """

    def __init__(self, static: bool = True, max_faces: int = 4, min_confidence: float = 0.5):
        mp = _import_mediapipe()
        self.static = static
        with _quiet_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=max_faces, refine_landmarks=False,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
            )

    def detect(self, rgb) -> list[DetectedFace]:
        """The faces found in ``rgb``, largest first. ``rgb``: ``(H, W, 3)`` uint8 RGB, or any image
        ``gramcast.images.as_rgb`` converts (grey, RGBA, uint16, float in [0, 1], a path, a PIL image)."""
        rgb = as_rgb(rgb)
        h, w = rgb.shape[:2]
        result = self._still_open(self._mesh).process(rgb)
        faces = []
        for lm in result.multi_face_landmarks or ():
            a = np.array([(p.x, p.y, p.z) for p in lm.landmark[:NUM_LANDMARKS]], np.float64)
            pts = np.stack([a[:, 0] * w, -a[:, 1] * h, -a[:, 2] * w], axis=1)
            faces.append(DetectedFace(pts))
        faces.sort(key=lambda f: -f.eye_distance)
        return faces

    def close(self) -> None:
        mesh, self._mesh = self._mesh, None       # closed even where mediapipe's close raises (a failed graph)
        if mesh is not None:
            mesh.close()
