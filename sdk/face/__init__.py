"""Faces in, poses out: landmarks, alignment, head pose, matte, live tracking, dataset preparation.

Everything that looks at a real face goes through this package, so enrollment, training data and
live tracking agree on the same crop and the same pose. mediapipe is imported only when a face is
actually looked at.
"""
from gramcast.face.alignment import (
    MIN_EYE_DISTANCE_PX, AlignedFace, align_face, detect_and_align, pick_single_face, warp_to_crop,
)
from gramcast.face.filters import OneEuroConfig, OneEuroFilter
from gramcast.face.landmarks import DetectedFace, FaceMesh
from gramcast.face.matte import Matting, foreground_matte
from gramcast.face.pose import HeadPose, estimate_pose
from gramcast.face.reference import ReferenceFace, load_reference
from gramcast.face.tracker import HeadTracker, TrackedHead, TrackerConfig

__all__ = [
    "MIN_EYE_DISTANCE_PX", "AlignedFace", "align_face", "detect_and_align", "pick_single_face", "warp_to_crop",
    "OneEuroConfig", "OneEuroFilter", "DetectedFace", "FaceMesh", "Matting", "foreground_matte",
    "HeadPose", "estimate_pose", "ReferenceFace", "load_reference", "HeadTracker", "TrackedHead", "TrackerConfig",
]
