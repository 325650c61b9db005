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
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gramcast.face.alignment import MIN_EYE_DISTANCE_PX, AlignedFace
from gramcast.face.matte import landmark_hull

__all__ = ["PhotoQuality", "photo_quality", "quality_warnings", "eye_openness", "MIN_SHARPNESS", "MIN_BRIGHTNESS",
           "MAX_CLIPPED", "MIN_EYE_OPENNESS", "MAX_MATTE_DISAGREEMENT"]

MIN_SHARPNESS = 12.0        # below: "blurred" (~0.5 % of LFW)
MIN_BRIGHTNESS = 55.0       # face mean grey level below: "too dark" (none of the 400 LFW photos)
MAX_CLIPPED = 0.15          # fraction of the face at >= 250 above: "overexposed"
MIN_EYE_OPENNESS = 0.14     # below: "eyes closed" (~0.5 % of LFW, all closed or squeezed shut)
# Above: "busy background" (gramcast.face.matte.agreed_matte's disagreement; keyed portraits over plain walls
# reach 0.14, over photos of crowds half are above; 4 of 20 LFW photos, press photos with people beside).
MAX_MATTE_DISAGREEMENT = 0.15

# mediapipe face mesh: each eye's corners and the middle of its upper and lower lid
_EYES = ((33, 133, 159, 145), (362, 263, 386, 374))


@dataclass(frozen=True)
class PhotoQuality:
    """``sharpness``: variance of the face's Laplacian at eyes 40 px apart; ``brightness``: its mean grey
    level (0-255); ``clipped``: the fraction of its pixels at 250 or more; ``eyes_open``: ``eye_openness``."""

    sharpness: float
    brightness: float
    clipped: float
    eyes_open: float


def eye_openness(pixels: np.ndarray) -> float:
    """Mean over both eyes of the gap between the middles of the lids over the eye's width (corner to
    corner), from face mesh landmarks ``(468, 2)``: ~0.3 for open eyes, under ~0.14 for closed ones."""
    ratios = [np.linalg.norm(pixels[top] - pixels[bottom]) / max(np.linalg.norm(pixels[a] - pixels[b]), 1e-6)
              for a, b, top, bottom in _EYES]
    return float(np.mean(ratios))


def photo_quality(aligned: AlignedFace) -> PhotoQuality:
    grey = cv2.cvtColor(aligned.crop, cv2.COLOR_RGB2GRAY)
    hull = landmark_hull(aligned.pixels, grey.shape)
    face = grey[hull.astype(bool)]
    # the crop puts the eyes a quarter of its side apart (the reference template)
    side = int(round(4 * MIN_EYE_DISTANCE_PX))
    small = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    inner = cv2.erode(cv2.resize(hull, (side, side), interpolation=cv2.INTER_NEAREST), np.ones((5, 5), np.uint8))
    lap = cv2.Laplacian(small, cv2.CV_32F)[inner.astype(bool)]
    return PhotoQuality(sharpness=float(lap.var()) if lap.size else 0.0, brightness=float(face.mean()),
                        clipped=float((face >= 250).mean()), eyes_open=eye_openness(aligned.pixels))


def quality_warnings(quality: PhotoQuality, source: str = "the photo") -> list[str]:
    """What would make a better avatar, one sentence each (empty for a good photo)."""
    out = []
    if quality.sharpness < MIN_SHARPNESS:
        out.append(f"the face in {source} is blurred (sharpness {quality.sharpness:.0f}, {MIN_SHARPNESS:.0f} or more "
                   "expected): the avatar will be as soft; a photo in focus, held still, gives a sharper one")
    if quality.brightness < MIN_BRIGHTNESS:
        out.append(f"the face in {source} is dark (mean level {quality.brightness:.0f} of 255): the avatar keeps the "
                   "photo's lighting; a photo in even, brighter light gives a better one")
    if quality.clipped > MAX_CLIPPED:
        out.append(f"{quality.clipped:.0%} of the face in {source} is overexposed (pure white): that detail is lost; "
                   "a photo without direct light or flash on the face gives a better avatar")
    if quality.eyes_open < MIN_EYE_OPENNESS:
        out.append(f"the eyes in {source} look closed (openness {quality.eyes_open:.2f}; open eyes measure about "
                   "0.3): the avatar keeps them so; a photo with open eyes gives a better one")
    return out
