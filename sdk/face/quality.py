"""Is the photo good enough for an avatar? Sharpness and exposure of the aligned face, with the warnings
enrollment gives (it still enrolls: a warning says what a better photo would change).

Measured on the face's landmark hull. Sharpness is the variance of the Laplacian of the face resampled so
that the eyes are ``MIN_EYE_DISTANCE_PX`` (40 px) apart: every photo enrollment accepts has its full detail
at that scale, so a low value means a blurred photo (focus, motion), not a small one. Thresholds from 400
random LFW photos (JPEG, faces ~40 px between the eyes) and studio portraits: sharpness 1st percentile 17,
median 94, studio 150-300, a studio portrait blurred by a Gaussian of 1.3 px at that scale ~20 and of 2.7 px
~4; face brightness 1st percentile 69, lowest 56; at most 2.3 % of a face's pixels at 250 or more. Eye
openness (lid gap over eye width, both eyes' mean, from the face mesh) measures 0.34-0.38 on the studio
portraits and a median 0.29 on 600 random LFW photos, whose lowest values (0.08-0.15) are closed or
squeezed-shut eyes.

Contrast is the spread (standard deviation) of the face's grey levels: 16.6-43.7 over the 184 studio
portraits, 17.5-53.5 over 50 random LFW photos. The Laplacian's variance falls with its square, so a flat (low-contrast) or dark
face measured as "blurred" however sharp: the sharpness of such a face is judged as if it had a typical
portrait's contrast (``TYPICAL_CONTRAST``), and the photo is named for what it is. A face whose landmarks
reach the photo's edge is cut by it: that part of the avatar is guessed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gramcast.face.alignment import MIN_EYE_DISTANCE_PX, AlignedFace
from gramcast.face.geometry import apply_affine, invert_affine
from gramcast.face.matte import face_size, landmark_hull

__all__ = ["PhotoQuality", "photo_quality", "quality_warnings", "eye_openness", "crop_inside_photo",
           "MIN_SHARPNESS", "MIN_BRIGHTNESS", "MAX_CLIPPED", "MIN_EYE_OPENNESS", "MAX_MATTE_DISAGREEMENT",
           "MIN_CONTRAST", "TYPICAL_CONTRAST", "FACE_EDGE_MARGIN", "crop_photo_sides", "INSIDE", "BEYOND_TOP",
           "BEYOND_BOTTOM", "BEYOND_LEFT", "BEYOND_RIGHT", "UNKNOWN_SIDE"]

MIN_SHARPNESS = 12.0        # below: "blurred" (~0.5 % of LFW)
MIN_BRIGHTNESS = 55.0       # face mean grey level below: "too dark" (none of the 400 LFW photos)
MAX_CLIPPED = 0.15          # fraction of the face at >= 250 above: "overexposed"
MIN_EYE_OPENNESS = 0.14     # below: "eyes closed" (~0.5 % of LFW, all closed or squeezed shut)
# Above: "busy background" (gramcast.face.matte.agreed_matte's disagreement; keyed portraits over plain walls
# reach 0.14, over photos of crowds half are above; 4 of 20 LFW photos, press photos with people beside).
MAX_MATTE_DISAGREEMENT = 0.15
# Below: "little contrast" (the lowest of 184 studio portraits and 50 LFW photos: 16.6; the Canada portrait
# 003f, 19.4, with its contrast scaled by 0.5: 9.7, by 0.25: 4.9).
MIN_CONTRAST = 10.0
# What the sharpness of a face below MIN_CONTRAST is scaled to: the middle of the studio portraits' 20-29.
TYPICAL_CONTRAST = 25.0
# A face whose landmark hull comes within this fraction of the face's size (the RMS radius of its landmarks)
# of the photo's edge touches it (the nearest of 217 portraits: 0.77, a Canada chin).
FACE_EDGE_MARGIN = 0.02

# mediapipe face mesh: each eye's corners and the middle of its upper and lower lid
_EYES = ((33, 133, 159, 145), (362, 263, 386, 374))


@dataclass(frozen=True)
class PhotoQuality:
    """``sharpness``: variance of the face's Laplacian at eyes 40 px apart; ``brightness``: its mean grey
    level (0-255); ``clipped``: the fraction of its pixels at 250 or more; ``eyes_open``: ``eye_openness``;
    ``contrast``: the standard deviation of its grey levels (None: not measured); ``outside``: the fraction of
    the face (its landmark hull) beyond the photo's edge or within ``FACE_EDGE_MARGIN`` of it (0 where the
    photo's size was not given)."""

    sharpness: float
    brightness: float
    clipped: float
    eyes_open: float
    contrast: float | None = None
    outside: float = 0.0

    @property
    def judged_sharpness(self) -> float:
        """``sharpness``, or for a face of less than ``MIN_CONTRAST`` the sharpness it would have at
        ``TYPICAL_CONTRAST`` (the Laplacian's variance goes with the contrast's square)."""
        if self.contrast is None or self.contrast >= MIN_CONTRAST:
            return self.sharpness
        return self.sharpness * (TYPICAL_CONTRAST / max(self.contrast, 1e-3)) ** 2


def eye_openness(pixels: np.ndarray) -> float:
    """Mean over both eyes of the gap between the middles of the lids over the eye's width (corner to
    corner), from face mesh landmarks ``(468, 2)``: ~0.3 for open eyes, under ~0.14 for closed ones."""
    ratios = [np.linalg.norm(pixels[top] - pixels[bottom]) / max(np.linalg.norm(pixels[a] - pixels[b]), 1e-6)
              for a, b, top, bottom in _EYES]
    return float(np.mean(ratios))


def crop_inside_photo(crop_from_image: np.ndarray, side: int, image_shape: tuple[int, int],
                      margin: float = 0.0) -> np.ndarray:
    """Which pixels of a ``side``² crop (``crop_from_image``: ``(2, 3)`` continuous-pixel similarity) show the
    photo of ``image_shape`` ``(H, W)`` rather than its padding: ``(side, side)`` bool, the pixels whose centre,
    mapped back into the photo, lies at least ``margin`` photo pixels inside its edges (the photo spans
    [0, W] x [0, H] in continuous pixels)."""
    h, w = image_shape
    x, y = _photo_positions(crop_from_image, side)
    return (x >= margin) & (x <= w - margin) & (y >= margin) & (y <= h - margin)


#: ``crop_photo_sides``' codes: which of the photo's edges a crop pixel lies beyond (above and below first);
#: ``UNKNOWN_SIDE``: for what lies beyond the crop itself, where a caller samples it
INSIDE, BEYOND_TOP, BEYOND_BOTTOM, BEYOND_LEFT, BEYOND_RIGHT = range(5)
UNKNOWN_SIDE = 255


def crop_photo_sides(crop_from_image: np.ndarray, side: int, image_shape: tuple[int, int]) -> np.ndarray:
    """Beyond which edge of the photo of ``image_shape`` ``(H, W)`` each pixel of a ``side``² crop lies (its
    centre mapped back, as ``crop_inside_photo``): ``(side, side)`` uint8, ``INSIDE`` or a ``BEYOND_*`` code,
    above and below taking the corners."""
    h, w = image_shape
    x, y = _photo_positions(crop_from_image, side)
    out = np.full((side, side), INSIDE, np.uint8)
    out[x > w] = BEYOND_RIGHT
    out[x < 0] = BEYOND_LEFT
    out[y > h] = BEYOND_BOTTOM
    out[y < 0] = BEYOND_TOP
    return out


def _photo_positions(crop_from_image: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo position (x, y) ``(side, side)`` each of a ``side``² crop's pixel centres comes from."""
    centres = np.stack(np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5), -1).reshape(-1, 2)
    x, y = apply_affine(invert_affine(crop_from_image), centres).reshape(side, side, 2).transpose(2, 0, 1)
    return x, y


def photo_quality(aligned: AlignedFace, image_shape: tuple[int, int] | None = None) -> PhotoQuality:
    """The measures of ``aligned``'s face; ``image_shape`` ``(H, W)``: the photo it was cropped from, for how
    much of the face lies beyond its edge."""
    grey = cv2.cvtColor(aligned.crop, cv2.COLOR_RGB2GRAY)
    hull = landmark_hull(aligned.pixels, grey.shape)
    face = grey[hull.astype(bool)]
    outside = 0.0
    if image_shape is not None and hull.any():
        # the margin in photo pixels: the crop's scale is the similarity's
        scale = float(np.sqrt(abs(np.linalg.det(aligned.crop_from_image[:, :2]))))
        margin = FACE_EDGE_MARGIN * face_size(aligned.pixels) / max(scale, 1e-9)
        inside = crop_inside_photo(aligned.crop_from_image, aligned.size, image_shape, margin)
        outside = float(np.count_nonzero(hull.astype(bool) & ~inside) / np.count_nonzero(hull))
    # the crop puts the eyes a quarter of its side apart (the reference template)
    side = int(round(4 * MIN_EYE_DISTANCE_PX))
    small = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    inner = cv2.erode(cv2.resize(hull, (side, side), interpolation=cv2.INTER_NEAREST), np.ones((5, 5), np.uint8))
    lap = cv2.Laplacian(small, cv2.CV_32F)[inner.astype(bool)]
    return PhotoQuality(sharpness=float(lap.var()) if lap.size else 0.0, brightness=float(face.mean()),
                        clipped=float((face >= 250).mean()), eyes_open=eye_openness(aligned.pixels),
                        contrast=float(face.std()), outside=outside)


def quality_warnings(quality: PhotoQuality, source: str = "the photo") -> list[str]:
    """What would make a better avatar, one sentence each (empty for a good photo)."""
    out = []
    if quality.outside > 0:
        part = (f"{quality.outside:.0%} of the face in {source} is outside the photo" if quality.outside >= 0.01
                else f"the face in {source} touches the photo's edge")
        out.append(f"{part}: the avatar guesses what the photo does not show (from the other side of the face) "
                   "and may be torn or see-through along that edge; a photo with the whole head inside the frame "
                   "gives a better one")
    dark, overexposed = quality.brightness < MIN_BRIGHTNESS, quality.clipped > MAX_CLIPPED
    sharpness = quality.judged_sharpness
    if sharpness < MIN_SHARPNESS:
        scaled = " at a normal contrast" if sharpness != quality.sharpness else ""
        out.append(f"the face in {source} is blurred (sharpness {sharpness:.0f}{scaled}, {MIN_SHARPNESS:.0f} or more "
                   "expected): the avatar will be as soft; a photo in focus, held still, gives a sharper one")
    if dark:
        out.append(f"the face in {source} is dark (mean level {quality.brightness:.0f} of 255): the avatar keeps the "
                   "photo's lighting; a photo in even, brighter light gives a better one")
    if overexposed:
        out.append(f"{quality.clipped:.0%} of the face in {source} is overexposed (pure white): that detail is lost; "
                   "a photo without direct light or flash on the face gives a better avatar")
    # a dark or burnt-out face has little contrast too: named once, for its cause
    if quality.contrast is not None and quality.contrast < MIN_CONTRAST and not (dark or overexposed):
        out.append(f"the face in {source} has little contrast (its grey levels spread {quality.contrast:.0f}, "
                   f"{MIN_CONTRAST:.0f} or more expected): the avatar will look as flat and washed out; a photo in "
                   "clear, even light gives a better one")
    if quality.eyes_open < MIN_EYE_OPENNESS:
        out.append(f"the eyes in {source} look closed (openness {quality.eyes_open:.2f}; open eyes measure about "
                   "0.3): the avatar keeps them so; a photo with open eyes gives a better one")
    return out
