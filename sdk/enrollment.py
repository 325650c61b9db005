"""``gramcast.enroll``: one portrait -> ``Avatar``.

align (gramcast.face) -> pose -> person matte -> the method's inversion -> bake.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from gramcast.errors import FaceNotFoundError, FaceTurnedError, GramcastError, InvalidArgumentError

__all__ = ["enroll", "METHODS", "MAX_INPUT_YAW", "WARN_INPUT_YAW", "WARN_INPUT_PITCH", "CROP_SIZES",
           "MIN_PERSON_AROUND_FACE"]

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


#: The aligned crop's sides ``enroll`` takes (``crop_size``): below 256 the crop holds less than the photo's
#: detail at the smallest face accepted (40 px between the eyes are 64 at 256) and the matte loses the face's
#: edges (at 32 its looks disagreed over 18 % of the person); above 1024 the matting alone takes tens of
#: seconds for detail the 512² texture cannot hold (on 2 cores: 4.2 s at 256, 8.6 s at 1024, 45 s and 2.1 GB
#: at 2048).
CROP_SIZES = (256, 1024)
#: The least share of the band around the face (its landmark hull grown by half the face's size, within the
#: photo) that the person matte must cover, or the photo is refused: the matte keeps the face itself whatever
#: the segmentation says (``mesh_photo.face_core``), but around it lie the hair, ears and neck, 54 % or more
#: of that band in each of 217 portraits (144 London, 40 Canada, 33 LFW). Photos whose person the segmentation
#: lost covered 0-1 % (contrast scaled by 0.1) and 17 % (a Canada portrait 3x brighter): they made invisible
#: or nearly empty avatars. Contrast scaled by 0.15 to 0.3, darkened to 0.06, the Canada portrait 2x and a
#: London one 2-3x brighter, faces cut by the photo's edge, side-lit, blurred: 62 % or more.
MIN_PERSON_AROUND_FACE = 0.25
_AROUND_FACE = 0.5          # the band's width, in face sizes (the RMS radius of the face's landmarks)


def enroll(image, method: str = "mesh", crop_size: int = 512,
           min_eye_distance: float | None = None, weights=None, device="auto",
           max_yaw: float | None = MAX_INPUT_YAW, face: str = "only", **options):
    """Enroll an avatar from one portrait (a path, bytes, PIL image or ``(H, W, 3)`` uint8 array).

    method ``"mesh"``: the prior-free baseline (works without trained weights).
    ``"graminverter"``: the paper's learned inversion (needs a trained inverter bundle: ``weights``, else
    ``$GRAMCAST_INVERTER``, the packaged one or the user cache; see ``gramcast.avatar.graminverter``).
    ``options``: fields of the method's config (``MeshConfig`` / ``InverterConfig``). ``crop_size``: the aligned
    crop's side, a whole number from 256 to 1024 (``CROP_SIZES``).
    ``min_eye_distance``: smallest face accepted (pixels between the eyes; default
    ``gramcast.face.MIN_EYE_DISTANCE_PX``). ``max_yaw``: most head yaw accepted (radians; default
    ``MAX_INPUT_YAW``; None: any). ``face``: which face of a photo with several of similar size: "only"
    (refuse such a photo), "largest" or "center" (``gramcast.face.alignment.FACE_CHOICES``).
    Raises ``FaceNotFoundError`` (also where the person cannot be told from the background:
    ``MIN_PERSON_AROUND_FACE``) / ``MultipleFacesError`` / ``FaceTooSmallError`` / ``FaceTurnedError`` /
    ``InvalidImageError`` with what to do, and ``InvalidArgumentError`` for an argument or option it cannot use,
    before reading the photo.
    """
    from gramcast.avatar.mesh_method import MeshConfig, enroll_mesh
    from gramcast.avatar.mesh_photo import photo_context, subject_matte
    from gramcast.face.alignment import MIN_EYE_DISTANCE_PX, detect_and_align
    from gramcast.face.detection import FaceDetector, upright_turns
    from gramcast.face.matte import Matting
    from gramcast.face.quality import MAX_MATTE_DISAGREEMENT, crop_inside_photo, photo_quality, quality_warnings
    from gramcast.images import load_image

    config = _checked_arguments(method, crop_size, min_eye_distance, weights, device, max_yaw, face, options)
    if method == "graminverter":      # a missing or mismatched bundle is said before any work on the photo
        from gramcast.avatar.graminverter import require_inverter

        weights = require_inverter(weights, device)
    crop_size = int(crop_size)
    min_eye_distance = None if min_eye_distance is None else float(min_eye_distance)
    max_yaw = None if max_yaw is None else float(max_yaw)
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
        turned, limit = _angles_apart(abs(yaw), max_yaw)
        raise FaceTurnedError(
            f"the face in {source} is turned {turned} to the side; "
            f"enrollment needs one within {limit} of facing the camera, "
            "because the side turned away is only guessed: retake the photo looking into the camera "
            "(the limit is enroll's max_yaw, --max-yaw on the command line)")
    with Matting(one_person=True) as matting:
        mesh = config if method == "mesh" else None
        agreed = mesh is None or mesh.agreed_matte
        cut_from = (mesh or MeshConfig()).colour_cut_from
        context = (photo_context(rgb, aligned, mesh.context_margin, matting, agreed, mesh.matte_look_margin,
                                 cut_from) if mesh is not None and mesh.context_margin else None)
        inside = crop_inside_photo(aligned.crop_from_image, aligned.size, rgb.shape[:2])
        if context is None:
            matte, disagreement = subject_matte(matting, aligned.crop, aligned, agreed=agreed,
                                                colour_cut_from=cut_from, inside=inside)
        else:   # the widened crop's matte holds the crop's: no looks of their own
            pad, size = int(context.offset), aligned.size
            matte = context.matte[pad:pad + size, pad:pad + size]
            disagreement = context.disagreement
        _refuse_a_lost_person(matte, aligned, inside, source)
        if method == "graminverter":
            from gramcast.avatar.graminverter import enroll_graminverter

            avatar = enroll_graminverter(aligned, matte, weights, config, device=device)
        else:
            avatar = enroll_mesh(aligned, matte, config, context=context)
    avatar.meta.update({"source_size": [int(rgb.shape[1]), int(rgb.shape[0])], "source_turned_deg": 90 * turns,
                        "source": Path(source).name if source != "the image" else "array"})
    quality = photo_quality(aligned, rgb.shape[:2])
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


def _angles_apart(angle: float, limit: float) -> tuple[str, str]:
    """``angle`` and ``limit`` (radians, ``angle`` > ``limit``) as "0.46 rad (26 deg)", with as many decimals as
    show them apart and the limit as more than zero (a limit of 0.001 is not "0.00 rad (0 deg)")."""
    decimals = 2
    while decimals < 6 and (f"{angle:.{decimals}f}" == f"{limit:.{decimals}f}" or float(f"{limit:.{decimals}f}") == 0):
        decimals += 1

    def text(x: float) -> str:
        return f"{x:.{decimals}f} rad ({math.degrees(x):.{max(0, decimals - 2)}f} deg)"

    return text(angle), text(limit)


def _checked_arguments(method, crop_size, min_eye_distance, weights, device, max_yaw, face, options):
    """Every argument of ``enroll`` checked before any work (an option found wrong after seconds of matting
    is seconds lost, and a raw OpenCV or TypeError says nothing a caller can act on): the method's config,
    made of ``options``, or an ``InvalidArgumentError`` naming what was wrong and what it takes."""
    from gramcast.checks import is_finite, is_whole
    from gramcast.device import available_device
    from gramcast.face.alignment import FACE_CHOICES

    if not (isinstance(method, str) and method in METHODS):
        raise InvalidArgumentError(f"unknown enrollment method {method!r}: choose one of {', '.join(METHODS)}")
    low, high = CROP_SIZES
    if not (is_whole(crop_size) and low <= crop_size <= high):
        raise InvalidArgumentError(f"crop_size must be a whole number of pixels from {low} to {high} (the aligned "
                                   f"crop's side; 512 by default, --crop-size 256|512 on the command line); got "
                                   f"{crop_size!r}")
    if max_yaw is not None and not (is_finite(max_yaw) and 0 < max_yaw <= math.pi / 2):
        raise InvalidArgumentError(f"max_yaw must be an angle in (0, pi/2] radians, or None for any; got {max_yaw!r}")
    if min_eye_distance is not None and not (is_finite(min_eye_distance) and min_eye_distance > 0):
        raise InvalidArgumentError(f"min_eye_distance must be a positive, finite number of pixels (default "
                                   f"40), or None for the default; got {min_eye_distance!r}")
    if not (isinstance(face, str) and face in FACE_CHOICES):
        raise InvalidArgumentError(f"unknown face choice {face!r}: use one of {', '.join(FACE_CHOICES)}")
    try:        # the mesh method runs on the CPU, but a device no machine has is a mistake all the same
        available_device(device)
    except GramcastError as exc:
        raise InvalidArgumentError(f"device {exc}") from None
    if method == "mesh" and weights is not None:
        raise InvalidArgumentError("weights (--weights) are a trained inverter bundle for method='graminverter'; "
                                   "the mesh method has none: leave weights out, or use method='graminverter'")
    from gramcast.avatar.graminverter import InverterConfig
    from gramcast.avatar.mesh_method import MeshConfig

    classes = {"mesh": MeshConfig, "graminverter": InverterConfig}
    known = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in classes.items()}
    unknown = [name for name in options if name not in known[method]]
    if unknown:
        other = next(m for m in METHODS if m != method)
        whose = (f"{unknown[0]!r} is an option of the {other} method, not of {method}" if unknown[0] in known[other]
                 else f"enroll has no argument {unknown[0]!r}, nor has the {method} method such an option")
        raise InvalidArgumentError(
            f"{whose}: the {method} method's options are {', '.join(known[method])}; enroll's own arguments are "
            "method, crop_size, min_eye_distance, weights, device, max_yaw and face")
    return classes[method](**options)


def _refuse_a_lost_person(matte: np.ndarray, aligned, inside: np.ndarray, source: str) -> None:
    """A ``FaceNotFoundError`` where ``matte`` ``(S, S)`` (the aligned crop's person matte) covers less than
    ``MIN_PERSON_AROUND_FACE`` of the band around the face that lies in the photo (``inside`` ``(S, S)``):
    the segmentation could not tell the person from the background, and the avatar would be a face alone
    (the matte keeps that) or nothing. A band nine tenths beyond the photo (a close crop of a face) is not
    judged."""
    import cv2

    from gramcast.face.matte import face_size, landmark_hull

    hull = landmark_hull(aligned.pixels, matte.shape)
    # a distance, not a dilation by a disc half a face wide (27 ms at 512²)
    away = cv2.distanceTransform((1 - hull).astype(np.uint8), cv2.DIST_L2, 5)
    band = (hull == 0) & (away <= _AROUND_FACE * face_size(aligned.pixels))
    seen = band & inside
    if np.count_nonzero(seen) < 0.1 * np.count_nonzero(band):
        return
    covered = float(np.count_nonzero(matte[seen] > 0.5)) / np.count_nonzero(seen)
    if covered < MIN_PERSON_AROUND_FACE:
        raise FaceNotFoundError(
            f"the person in {source} cannot be told from the background: the person matte covers {covered:.0%} of "
            f"the band around the face where hair, ears and neck are ({MIN_PERSON_AROUND_FACE:.0%} or more "
            "expected), so the avatar would be a face alone or invisible; the photo is too flat, washed out or "
            "overexposed: use a photo in clear, even light, against a plainer background")
