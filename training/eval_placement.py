"""Where a render lies on a photo's aligned crop, for ``gramcast evaluate``'s scores.

The input view goes where the enrollment recorded (``input_view_in_crop``); a render at another pose goes
where the face tracker finds its face, as a photo does (``aligned_render``). Beyond a render's frame a crop
shows nothing of the avatar (``frame_in_crop``), and beyond a photo's edge nothing of the photo
(``shows_photo``): the scores count neither.
"""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np

from gramcast.errors import GramcastError

__all__ = ["OUTLINE_BELOW_CHIN", "align_photo", "over_grey", "shows_photo", "head_rows", "input_view_in_crop",
           "aligned_render", "opacity_in_crop", "frame_in_crop"]

#: how far below the chin (a fraction of the aligned crop's side) the outline scores count: the jaw and
#: the neck behind it, not the shoulders and clothes, which are no avatar's
OUTLINE_BELOW_CHIN = 0.08


def align_photo(image: np.ndarray, size: int, face: str = "only"):
    """``image``'s face aligned by the face tracker into a ``size``² crop (``AlignedFace``); small faces
    allowed (an evaluation set's are)."""
    from gramcast.face import detect_and_align

    return detect_and_align(image, size=size, min_eye_distance=15, face=face)


def over_grey(rgb: np.ndarray, alpha: np.ndarray, grey: int = 128) -> np.ndarray:
    """A render's straight colour ``(H, W, 3)`` uint8 over a plain ``grey``, by its opacity ``(H, W)``."""
    from gramcast.compositing import over

    return over(rgb, alpha, np.full_like(rgb, grey))


def shows_photo(aligned, size: int, image_shape: tuple[int, int]) -> np.ndarray:
    """``(size, size)`` bool: the pixels of ``aligned``'s crop that show the photo of ``image_shape``, not the
    reflection that pads a crop running past the photo's edges (an LFW photo's chest and sides), which no
    avatar is asked to reproduce."""
    from gramcast.face.quality import INSIDE, crop_photo_sides

    return crop_photo_sides(aligned.crop_from_image, size, image_shape) == INSIDE


def head_rows(aligned, size: int) -> int:
    """The rows of an aligned crop ``size``² that the outline scores count: down to just below its chin."""
    from gramcast.face.landmarks import CHIN

    return int(min(size, round(float(aligned.pixels[CHIN, 1]) + OUTLINE_BELOW_CHIN * size)))


def input_view_in_crop(avatar, canvas: np.ndarray, res: int) -> SimpleNamespace:
    """The render at the input pose (``canvas`` ``(res, res, 3)``) in the aligned crop of the photo it was
    enrolled from: ``.crop``, ``.crop_from_image`` (the crop's pixels from the render's) and ``.frame``
    (``frame_in_crop``). Placed by the similarity the enrollment recorded (``meta["crop_from_render"]``),
    where it did, else as the face tracker aligns it. The tracker places a render a pixel or more away from
    where it places the photo, and moves it with the outline: LFW20's input view scored 30.6 dB that way,
    44.3 dB here, within the render's frame (ENROLLMENT_LOG.md, the input view in the photo's crop). Beyond
    the frame the crop is the canvas's grey."""
    from gramcast.face.alignment import warp_to_crop

    known = avatar.meta.get("crop_from_render")
    if not known:
        aligned = align_photo(canvas, res)
        return SimpleNamespace(crop=aligned.crop, crop_from_image=aligned.crop_from_image,
                               frame=frame_in_crop(canvas.shape[:2], aligned.crop_from_image, res))
    matrix = np.asarray(known["matrix"], np.float64)           # crop pixels from render pixels, both size²
    m = np.hstack([matrix[:, :2], matrix[:, 2:] * (res / known["size"])])
    # where the crop reaches past the render's frame the avatar shows nothing: the canvas's grey, not a
    # reflection of the render's edge (a chin mirrored below the chin of a photo taken from above)
    frame = frame_in_crop(canvas.shape[:2], m, res)
    crop = warp_to_crop(canvas, m, res, cv2.BORDER_CONSTANT) * frame[..., None] + 128.0 * (1.0 - frame[..., None])
    return SimpleNamespace(crop=np.clip(np.rint(crop), 0, 255).astype(np.uint8), crop_from_image=m, frame=frame)


def aligned_render(renderer, pose: tuple[float, float], res: int):
    """The render at ``pose`` aligned by the face tracker, and its opacity ``(res, res)`` in that crop;
    (None, None) where the tracker finds no face (the avatar's fault, not the photo's)."""
    rgb, alpha = renderer.render_rgba(pose, res)
    try:
        aligned = align_photo(over_grey(rgb, alpha), res)
    except GramcastError:
        return None, None
    return aligned, opacity_in_crop(alpha, aligned.crop_from_image, res)


def opacity_in_crop(alpha: np.ndarray, crop_from_image: np.ndarray, res: int) -> np.ndarray:
    """A render's opacity ``(H, W)`` warped into a ``res``² crop: 0 beyond the render's frame (nothing is shown
    there; the reflection ``warp_to_crop`` pads images with would invent a mirrored edge)."""
    from gramcast.face.alignment import warp_to_crop

    return warp_to_crop(alpha.astype(np.float32), crop_from_image, res, cv2.BORDER_CONSTANT)


def frame_in_crop(render_shape: tuple[int, int], crop_from_image: np.ndarray, res: int) -> np.ndarray:
    """``(res, res)`` float32 in [0, 1]: how much of each pixel of a render's ``res``² crop the render's frame
    ``render_shape`` ``(H, W)`` covers."""
    return opacity_in_crop(np.ones(render_shape, np.float32), crop_from_image, res)
