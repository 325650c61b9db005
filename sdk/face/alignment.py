"""Aligned crops: the 5 alignment points fitted to the template of the frontal reference face.

The same function prepares training data and enrollment input, so both see the same crop as the
camera conventions assume (the frontal projection of the reference face, FFHQ-style framing).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gramcast.errors import FaceNotFoundError, FaceTooSmallError, MultipleFacesError
from gramcast.face.geometry import apply_affine, invert_affine, similarity_2d, to_index_matrix
from gramcast.face.landmarks import DetectedFace, FaceMesh
from gramcast.face.pose import HeadPose, estimate_pose
from gramcast.face.reference import ReferenceFace, load_reference

__all__ = ["AlignedFace", "align_face", "warp_to_crop", "pick_single_face", "detect_and_align",
           "MIN_EYE_DISTANCE_PX", "SECONDARY_FACE_RATIO"]

# Between-eye distance below which a face is refused. The 256² crop puts the eyes 64 px apart, so
# 40 px means at most 1.6x upsampling; the bundled public-domain sample portrait has 43 px.
MIN_EYE_DISTANCE_PX = 40.0
# Faces smaller than this fraction of the largest one are background people, not a second subject.
SECONDARY_FACE_RATIO = 0.5


@dataclass(frozen=True)
class AlignedFace:
    """An aligned crop and how it relates to the source image.

    crop: ``(S, S, 3)`` uint8. ``crop_from_image``: ``(2, 3)`` continuous-pixel similarity from the
    source image into the crop (its inverse maps back). ``landmarks``: ``(468, 3)`` of the face in crop
    camera space (see ``gramcast.face.landmarks``). ``pose``: the head pose in the source image.
    """

    crop: np.ndarray
    crop_from_image: np.ndarray
    landmarks: np.ndarray
    pose: HeadPose
    eye_distance: float

    @property
    def size(self) -> int:
        return self.crop.shape[0]

    @property
    def image_from_crop(self) -> np.ndarray:
        return invert_affine(self.crop_from_image)


def warp_to_crop(image: np.ndarray, crop_from_image: np.ndarray, size: int) -> np.ndarray:
    """Warp an image (any channels) into a ``size``² crop; outside the image is reflected."""
    m = to_index_matrix(crop_from_image)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:  # warpAffine does not low-pass; pre-shrink so large photos do not alias
        factor = scale * 1.5
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        pre = np.array([[small.shape[1] / image.shape[1], 0, 0], [0, small.shape[0] / image.shape[0], 0]])
        crop_from_small = np.vstack([crop_from_image, [0, 0, 1]]) @ np.linalg.inv(np.vstack([pre, [0, 0, 1]]))
        return warp_to_crop(small, crop_from_small[:2], size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def align_face(image: np.ndarray, face: DetectedFace, size: int = 256,
               reference: ReferenceFace | None = None) -> AlignedFace:
    """Crop ``image`` ``(H, W, 3)`` uint8 around ``face`` at ``size``² (e.g. 256 or 512)."""
    ref = reference or load_reference()
    crop_from_image = similarity_2d(face.five, ref.template(size))
    crop = warp_to_crop(image, crop_from_image, size)
    px = apply_affine(crop_from_image, face.pixels)
    k = float(np.sqrt(abs(np.linalg.det(crop_from_image[:, :2]))))
    z = face.points[:, 2] * k
    landmarks = np.stack([px[:, 0], -px[:, 1], z], axis=1)
    return AlignedFace(crop=crop, crop_from_image=crop_from_image, landmarks=landmarks,
                       pose=estimate_pose(face, ref), eye_distance=face.eye_distance)


def pick_single_face(faces: list[DetectedFace], source: str = "the image",
                     min_eye_distance: float = MIN_EYE_DISTANCE_PX) -> DetectedFace:
    """The one subject of a portrait, or a clear error that says what to do."""
    if not faces:
        raise FaceNotFoundError(
            f"no face found in {source}: use a photo in which one face is clearly visible "
            "(roughly frontal, eyes open, evenly lit, not cut off by the border)")
    main = faces[0]
    others = [f for f in faces[1:] if f.eye_distance >= SECONDARY_FACE_RATIO * main.eye_distance]
    if others:
        raise MultipleFacesError(
            f"{len(others) + 1} faces found in {source}; enrollment needs exactly one person: "
            "crop the photo to one face or use a photo of you alone")
    if main.eye_distance < min_eye_distance:
        raise FaceTooSmallError(
            f"the face in {source} is too small ({main.eye_distance:.0f} px between the eyes, at least "
            f"{min_eye_distance:.0f} needed): use a closer or higher-resolution photo")
    return main


def detect_and_align(image: np.ndarray, size: int = 256, source: str = "the image",
                     mesh: FaceMesh | None = None, min_eye_distance: float = MIN_EYE_DISTANCE_PX,
                     reference: ReferenceFace | None = None) -> AlignedFace:
    """Still-image landmarks -> exactly one face -> aligned crop with pose (enrollment, datasets)."""
    own = mesh is None
    mesh = mesh or FaceMesh(static=True, max_faces=4)
    try:
        faces = mesh.detect(image)
    finally:
        if own:
            mesh.close()
    face = pick_single_face(faces, source, min_eye_distance)
    return align_face(image, face, size, reference)
