"""Aligned crops: the 5 alignment points fitted to the template of the frontal reference face.

The same function prepares training data and enrollment input, so both see the same crop as the
camera conventions assume (the frontal projection of the reference face, FFHQ-style framing).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gramcast.errors import FaceNotFoundError, FaceTooSmallError, GramcastError, MultipleFacesError
from gramcast.face.geometry import apply_affine, invert_affine, similarity_2d, to_index_matrix
from gramcast.face.detection import find_faces
from gramcast.face.landmarks import DetectedFace, FaceMesh
from gramcast.face.pose import HeadPose, estimate_pose
from gramcast.face.reference import ReferenceFace, load_reference
from gramcast.images import as_rgb

__all__ = ["AlignedFace", "align_face", "warp_to_crop", "pick_single_face", "detect_and_align",
           "MIN_EYE_DISTANCE_PX", "SECONDARY_FACE_RATIO", "FACE_CHOICES"]

# Between-eye distance below which a face is refused. The 256² crop puts the eyes 64 px apart, so
# 40 px means at most 1.6x upsampling; the bundled public-domain sample portrait has 43 px.
MIN_EYE_DISTANCE_PX = 40.0
# Faces smaller than this fraction of the largest one are background people, not a second subject.
SECONDARY_FACE_RATIO = 0.5
#: Which face a photo of several people of similar size gives: "only" refuses it (an avatar of the wrong
#: person is worse than none), "largest" takes the largest face, "center" the one nearest the centre.
FACE_CHOICES = ("only", "largest", "center")


@dataclass(frozen=True)
class AlignedFace:
    """An aligned crop and how it relates to the source image.

    crop: ``(S, S, 3)`` uint8. ``crop_from_image``: ``(2, 3)`` continuous-pixel similarity from the
    source image into the crop (its inverse maps back). ``landmarks``: ``(468, 3)`` of the face in crop
    camera space (see ``gramcast.face.landmarks``). ``pose``: the head pose in the source image.
    ``others``: the other faces found in the image, each ``(468, 2)`` continuous crop pixels (u, v), so that
    the matte can leave those people out.
    """

    crop: np.ndarray
    crop_from_image: np.ndarray
    landmarks: np.ndarray
    pose: HeadPose
    eye_distance: float
    others: tuple[np.ndarray, ...] = ()

    @property
    def pixels(self) -> np.ndarray:
        """``(468, 2)`` continuous crop pixels (u, v) of the face's landmarks."""
        return np.stack([self.landmarks[:, 0], -self.landmarks[:, 1]], axis=1)

    @property
    def size(self) -> int:
        return self.crop.shape[0]

    @property
    def image_from_crop(self) -> np.ndarray:
        return invert_affine(self.crop_from_image)


def warp_to_crop(image: np.ndarray, crop_from_image: np.ndarray, size: int,
                 border: int = cv2.BORDER_REFLECT101) -> np.ndarray:
    """Warp an image (any channels) into a ``size``² crop; outside the image is reflected (``border``: another
    OpenCV border mode)."""
    m = to_index_matrix(crop_from_image)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:  # warpAffine does not low-pass; pre-shrink so large photos do not alias
        factor = scale * 1.5
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        pre = np.array([[small.shape[1] / image.shape[1], 0, 0], [0, small.shape[0] / image.shape[0], 0]])
        crop_from_small = np.vstack([crop_from_image, [0, 0, 1]]) @ np.linalg.inv(np.vstack([pre, [0, 0, 1]]))
        return warp_to_crop(small, crop_from_small[:2], size, border)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def align_face(image: np.ndarray, face: DetectedFace, size: int = 256,
               reference: ReferenceFace | None = None, others: list[DetectedFace] = ()) -> AlignedFace:
    """Crop ``image`` ``(H, W, 3)`` uint8 RGB (or any image ``gramcast.images.as_rgb`` converts: the crop is RGB
    either way) around ``face`` at ``size``² (e.g. 256 or 512); ``others``: the other faces found in it."""
    image = as_rgb(image)
    ref = reference or load_reference()
    crop_from_image = similarity_2d(face.five, ref.template(size))
    crop = warp_to_crop(image, crop_from_image, size)
    px = apply_affine(crop_from_image, face.pixels)
    k = float(np.sqrt(abs(np.linalg.det(crop_from_image[:, :2]))))
    z = face.points[:, 2] * k
    landmarks = np.stack([px[:, 0], -px[:, 1], z], axis=1)
    return AlignedFace(crop=crop, crop_from_image=crop_from_image, landmarks=landmarks,
                       pose=estimate_pose(face, ref), eye_distance=face.eye_distance,
                       others=tuple(apply_affine(crop_from_image, f.pixels) for f in others))


def pick_single_face(faces: list[DetectedFace], source: str = "the image",
                     min_eye_distance: float = MIN_EYE_DISTANCE_PX, choose: str = "only",
                     image_size: tuple[int, int] | None = None) -> DetectedFace:
    """The one subject of a portrait, or a clear error that says what to do. ``faces``: largest first (as
    ``FaceMesh.detect`` gives them). ``choose`` (``FACE_CHOICES``): what a photo with faces of similar size
    (at least ``SECONDARY_FACE_RATIO`` of the largest) gives; "center" needs ``image_size`` (width, height)."""
    if choose not in FACE_CHOICES:
        raise GramcastError(f"unknown face choice {choose!r}: use one of {', '.join(FACE_CHOICES)}")
    if not faces:
        raise FaceNotFoundError(
            f"no face found in {source}: use a photo in which one face is clearly visible "
            "(roughly frontal, eyes open, evenly lit, not cut off by the border)")
    main = faces[0]
    similar = [main] + [f for f in faces[1:] if f.eye_distance >= SECONDARY_FACE_RATIO * main.eye_distance]
    if len(similar) > 1 and choose == "only":
        raise MultipleFacesError(
            f"{len(similar)} faces found in {source}; enrollment needs exactly one person: "
            "crop the photo to one face, use a photo of you alone, or choose one of them "
            "(face='largest' or 'center'; --face largest|center on the command line)")
    if choose == "center":
        if image_size is None:
            raise ValueError("choosing the face nearest the centre needs the image size")
        centre = np.array(image_size, dtype=np.float64) / 2
        main = min(similar, key=lambda f: float(np.linalg.norm(f.five.mean(axis=0) - centre)))
    if main.eye_distance < min_eye_distance:
        raise FaceTooSmallError(
            f"the face in {source} is too small ({_short_of(main.eye_distance, min_eye_distance)} px between the "
            f"eyes, at least {min_eye_distance:g} needed): use a closer or higher-resolution photo")
    return main


def _short_of(value: float, limit: float) -> str:
    """``value`` (below ``limit``) in as few decimals as show that it is below: 39.6 against 40 is "39.6",
    not "40"."""
    for decimals in range(4):
        text = f"{value:.{decimals}f}"
        if float(text) < limit:
            return text
    return f"{value:g}"


def detect_and_align(image, size: int = 256, source: str = "the image",
                     mesh: FaceMesh | None = None, min_eye_distance: float = MIN_EYE_DISTANCE_PX,
                     reference: ReferenceFace | None = None, face: str = "only") -> AlignedFace:
    """Still-image landmarks -> exactly one face -> aligned crop with pose (enrollment, datasets).
    ``image``: ``(H, W, 3)`` uint8 RGB, or anything ``gramcast.images.load_image`` takes (a path, bytes, a PIL
    image, a grey / RGBA / uint16 / float array), converted as it converts it; anything else, and an empty
    image, is an ``InvalidImageError``. ``face``: which of several faces of similar size (``pick_single_face``'s
    ``choose``)."""
    image = as_rgb(image)      # before a mesh is made: a refused image costs no graph
    own = mesh is None
    mesh = mesh or FaceMesh(static=True, max_faces=4)
    try:
        faces = find_faces(image, mesh)
    finally:
        if own:
            mesh.close()
    subject = pick_single_face(faces, source, min_eye_distance, face, (image.shape[1], image.shape[0]))
    return align_face(image, subject, size, reference, [f for f in faces if f is not subject])
