"""``gramcast.enroll``: one portrait -> ``Avatar``.

align (gramcast.face) -> pose -> person matte -> the method's inversion -> bake.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from gramcast.errors import FaceTurnedError, GramcastError, InvalidArgumentError

__all__ = ["enroll", "METHODS", "MAX_INPUT_YAW", "WARN_INPUT_YAW", "WARN_INPUT_PITCH"]

METHODS = ("mesh", "graminverter")
#: Largest head yaw (radians, ~26 degrees) of a photo ``enroll`` accepts by default. The side of the head
#: turned away from the camera is guessed (the mirrored near side, inpainting); from photos turned further
#: the guess shows as a second, misplaced copy of features when the avatar turns the other way.
MAX_INPUT_YAW = 0.45
#: Head yaw (radians, ~17 degrees) from which a ``mesh`` enrollment is accepted with a warning
#: (``avatar.meta["warnings"]``): the doubled features start to show from about here (README, Faces).
WARN_INPUT_YAW = 0.3
#: Head pitch (radians) from which a ``mesh`` enrollment warns likewise: from a photo taken from below (a phone
#: at chest height) the top of the head is stretched when the avatar is seen from above, and vice versa.
WARN_INPUT_PITCH = 0.3


def enroll(image, method: str = "mesh", crop_size: int = 512,
           min_eye_distance: float | None = None, weights=None, device="auto",
           max_yaw: float | None = MAX_INPUT_YAW, face: str = "only", **options):
    """Enroll an avatar from one portrait (a path, bytes, PIL image or ``(H, W, 3)`` uint8 array).

    method ``"mesh"``: the prior-free baseline (works without trained weights).
    ``"graminverter"``: the paper's learned inversion (needs a trained inverter bundle: ``weights``, else
    ``$GRAMCAST_INVERTER``, the packaged one or the user cache; see ``gramcast.avatar.graminverter``).
    ``options``: fields of the method's config (``MeshConfig`` / ``InverterConfig``).
    ``min_eye_distance``: smallest face accepted (pixels between the eyes; default
    ``gramcast.face.MIN_EYE_DISTANCE_PX``). ``max_yaw``: most head yaw accepted (radians; default
    ``MAX_INPUT_YAW``; None: any). ``face``: which face of a photo with several of similar size: "only"
    (refuse such a photo), "largest" or "center" (``gramcast.face.alignment.FACE_CHOICES``).
    Raises ``FaceNotFoundError`` / ``MultipleFacesError`` / ``FaceTooSmallError`` / ``FaceTurnedError`` /
    ``InvalidImageError`` with what to do.
    """
    from gramcast.avatar.mesh_method import MeshConfig, enroll_mesh, photo_context, subject_matte
    from gramcast.face.alignment import MIN_EYE_DISTANCE_PX, detect_and_align
    from gramcast.face.detection import FaceDetector, upright_turns
    from gramcast.face.matte import Matting
    from gramcast.face.quality import MAX_MATTE_DISAGREEMENT, photo_quality, quality_warnings
    from gramcast.images import load_image

    if method not in METHODS:
        raise GramcastError(f"unknown enrollment method {method!r}: choose one of {', '.join(METHODS)}")
    if max_yaw is not None and not (isinstance(max_yaw, (int, float)) and 0 < max_yaw <= math.pi / 2):
        raise InvalidArgumentError(f"max_yaw must be an angle in (0, pi/2] radians, or None for any; got {max_yaw!r}")
    if min_eye_distance is not None and not (isinstance(min_eye_distance, (int, float)) and min_eye_distance > 0):
        raise InvalidArgumentError(f"min_eye_distance must be a positive number of pixels; got {min_eye_distance!r}")
    source = str(image) if isinstance(image, (str, Path)) else "the image"
    rgb = load_image(image)
    with FaceDetector() as detector:
        turns = upright_turns(rgb, detector)
    if turns:   # a photo upside down (or on its side) with no EXIF tag saying so: enroll it upright
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
    aligned = detect_and_align(rgb, size=crop_size, source=source,
                               min_eye_distance=MIN_EYE_DISTANCE_PX if min_eye_distance is None else min_eye_distance,
                               face=face)
    yaw = float(aligned.pose.yaw)
    if max_yaw is not None and abs(yaw) > max_yaw:
        raise FaceTurnedError(
            f"the face in {source} is turned {abs(yaw):.2f} rad ({math.degrees(abs(yaw)):.0f} deg) to the side; "
            f"enrollment needs one within {max_yaw:.2f} rad ({math.degrees(max_yaw):.0f} deg) of facing the camera, "
            "because the side turned away is only guessed: retake the photo looking into the camera "
            "(the limit is enroll's max_yaw, --max-yaw on the command line)")
    with Matting(one_person=True) as matting:
        config = MeshConfig(**options) if method == "mesh" else None
        agreed = config is None or config.agreed_matte
        cut_from = (config or MeshConfig()).colour_cut_from
        context = (photo_context(rgb, aligned, config.context_margin, matting, agreed, config.matte_look_margin,
                                 cut_from) if config is not None and config.context_margin else None)
        if context is None:
            matte, disagreement = subject_matte(matting, aligned.crop, aligned, agreed=agreed,
                                                colour_cut_from=cut_from)
        else:   # the widened crop's matte holds the crop's: no looks of their own
            pad, size = int(context.offset), aligned.size
            matte = context.matte[pad:pad + size, pad:pad + size]
            disagreement = context.disagreement
        if method == "graminverter":
            from gramcast.avatar.graminverter import InverterConfig, enroll_graminverter

            avatar = enroll_graminverter(aligned, matte, weights, InverterConfig(**options), device=device)
        else:
            avatar = enroll_mesh(aligned, matte, config, context=context)
    avatar.meta.update({"source_size": [int(rgb.shape[1]), int(rgb.shape[0])], "source_turned_deg": 90 * turns,
                        "source": Path(source).name if source != "the image" else "array"})
    quality = photo_quality(aligned)
    avatar.meta["photo_quality"] = dataclasses.asdict(quality)
    avatar.meta["matte_disagreement"] = disagreement
    warnings = quality_warnings(quality, source)
    if disagreement > MAX_MATTE_DISAGREEMENT:
        warnings.append(
            f"the background of {source} is busy (the person matte's looks disagreed over {disagreement:.0%} of the "
            "person's area): pieces of it may show beside the avatar's head; a photo against a plain wall gives a "
            "cleaner avatar")
    if method == "mesh" and abs(yaw) > WARN_INPUT_YAW:
        warnings.append(
            f"the face in {source} is turned {abs(yaw):.2f} rad ({math.degrees(abs(yaw)):.0f} deg) to the side: the "
            "side turned away is guessed from the near one and may show doubled features when the avatar turns "
            "towards it; a photo looking into the camera gives a better avatar")
    pitch = float(aligned.pose.pitch)
    if method == "mesh" and abs(pitch) > WARN_INPUT_PITCH:
        seen_from, hidden = ("below", "the top of the head") if pitch < 0 else ("above", "the underside of the chin")
        warnings.append(
            f"the face in {source} is seen from {seen_from} ({abs(pitch):.2f} rad, {math.degrees(abs(pitch)):.0f} deg): "
            f"{hidden} is stretched when the avatar tilts the other way; a photo taken at eye level gives a better "
            "avatar")
    if warnings:
        avatar.meta["warnings"] = warnings
    return avatar
