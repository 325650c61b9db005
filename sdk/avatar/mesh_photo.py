"""What the ``mesh`` method takes from the photo around the aligned crop: the person matte (where the
matte's looks agree, less other people and, on a busy photo, what the colours call background) and the face
the matte must keep (pure functions, but for the segmentation ``matting`` they are handed).

The crop alone misses what turned views show beside the head (hair, ears, shoulders), so the matte is taken
of the crop widened on every side (``photo_context``); where the photo ends inside that square, ``sides``
says beyond which of its edges each pixel lies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gramcast.face.alignment import AlignedFace, warp_to_crop
from gramcast.face.matte import (agreed_matte, colour_cut, colour_share, disc, face_size, keep_subject,
                                 landmark_hull)
from gramcast.face.quality import INSIDE, crop_photo_sides

__all__ = ["PhotoContext", "photo_context", "subject_matte", "spared_head", "face_core", "face_in_photo",
           "FACE_CORE_SHRINK", "SPARED_HEAD_RAISE", "SPARED_HEAD_GROW", "PERSON_COLOUR_SHARE"]


@dataclass(frozen=True)
class PhotoContext:
    """The photo around the aligned crop, at the crop's scale: the crop's pixel (u, v) is (u + offset,
    v + offset) here. ``crop`` ``(S', S', 3)``, ``matte`` ``(S', S')`` in [0, 1], ``sides`` ``(S', S')``
    uint8: beyond which of the photo's edges each pixel lies (``gramcast.face.quality.crop_photo_sides``;
    the rest of a crop is reflected padding)."""

    crop: np.ndarray
    matte: np.ndarray
    sides: np.ndarray
    offset: float
    #: how much the matte's looks disagreed (``gramcast.face.matte.agreed_matte``; 0 with one look)
    disagreement: float = 0.0

    @property
    def inside(self) -> np.ndarray:
        """``(S', S')`` bool: where the source photo has pixels."""
        return self.sides == INSIDE


# The colour cut leaves the subject's head alone (``spared_head``) where its colours are the person's own
# there: dark hair over a dark, blurred room went with the room. Keyed portraits, the matte alone, the 43 of
# 62 over crowds / blurred photos the gate lets through, against no cut: the face's landmark hull grown by
# 1.2 of its size lost 0.3 / 0.6 % of the crop more (worst 2.3 / 1.8 %) for 2.9 / 2.0 % less junk; that hull
# and the hull raised by one size (hair is mostly above the brow), grown by 0.7, lost 0.2 / 0.2 % (worst
# 1.3 / 1.7 %) for 2.9 / 1.8 % less junk; and cutting there what is coloured unlike at least 0.1 % of the
# person's sure pixels in it (a crowd's tile above the hair), 0.3 / 0.4 % (worst 1.4 / 1.7 %) for 3.5 /
# 2.2 % less junk (0.02 %: 0.2 / 0.3 % for 3.3 / 2.1 %; 0.3 %: 0.4 / 0.5 % for 3.7 / 2.3 %).
SPARED_HEAD_RAISE, SPARED_HEAD_GROW = 1.0, 0.7
PERSON_COLOUR_SHARE = 0.001
# The face's own landmark hull is the person whatever the segmentation says: a washed-out or low-contrast
# photo lost all of it (a matte of 0 over the face, an invisible avatar), one cut by the photo's edge an eye
# or a strip beside the edge. Shrunk by this fraction of the face's size (the RMS radius of its landmarks) it
# holds no background: of 217 portraits (144 London, 40 Canada, 33 LFW), none had a pixel of the matte under
# 0.5 there (the hull itself: up to 1.3 % of it, at the jaw and temples).
FACE_CORE_SHRINK = 0.1


def face_core(pixels: np.ndarray, shape: tuple[int, int], shrink: float = FACE_CORE_SHRINK) -> np.ndarray:
    """Where the person surely is ``(H, W)`` float32 in [0, 1]: the convex hull of the face's landmarks
    ``(N, 2)`` (pixels u, v) shrunk by ``shrink`` of the face's size, its edge softened inwards (the soft
    edge stays within the shrunk hull's outline)."""
    pixels = np.asarray(pixels, np.float64)
    radius = max(1, int(round(shrink * face_size(pixels))))
    core = cv2.erode(landmark_hull(pixels, shape), disc(radius)).astype(np.float32)
    sigma = radius / 4.0
    # blurred, the edge spreads about 2 sigma outwards: shrink by that first, then blur
    inner = cv2.erode(core, disc(max(1, int(round(2 * sigma)))))
    return np.maximum(inner, cv2.GaussianBlur(inner, (0, 0), sigma) * core)


def face_in_photo(pixels: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Where a photo shows the face ``(H, W)`` float32, 0 or 1: inside the convex hull of its landmarks
    ``(N, 2)`` (pixels u, v) where the person matte ``person`` ``(H, W)`` holds the majority (the hull's
    outline can pass the jaw or a temple by a pixel or two)."""
    return (landmark_hull(np.asarray(pixels, np.float64), person.shape) * (person >= 0.5)).astype(np.float32)


def spared_head(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Where the colour cut leaves the matte as it is ``(H, W)`` float32 in [0, 1]: the convex hull of the
    face's landmarks ``(N, 2)`` (pixels u, v) and of the same raised by ``SPARED_HEAD_RAISE`` of the face's
    size (the RMS radius of its landmarks), grown by ``SPARED_HEAD_GROW`` of it, with a soft edge."""
    pixels = np.asarray(pixels, np.float64)
    size = face_size(pixels)
    hull = landmark_hull(np.concatenate([pixels, pixels - np.array([0.0, SPARED_HEAD_RAISE * size])]), shape)
    radius = int(round(SPARED_HEAD_GROW * size))
    if radius > 0:
        hull = cv2.dilate(hull, disc(radius))
    return cv2.GaussianBlur(hull.astype(np.float32), (0, 0), 3.0)


def subject_matte(matting, crop: np.ndarray, aligned: AlignedFace, pad: int = 0,
                  agreed: bool = True, reach: int = 0, colour_cut_from: float = math.inf,
                  inside: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The person matte ``(S', S')`` of ``aligned``'s crop widened by ``pad`` pixels on every side, less the
    people of ``aligned.others`` (``keep_subject``), and how much its looks disagreed. ``crop``: that square
    widened by ``reach`` pixels more on every side (``photo_context``). ``agreed``: the looks of
    ``gramcast.face.matte.agreed_matte`` (``crop``, the widened square within it and the aligned crop
    within that, as far as they differ); False: ``matting``'s one look at the widened square (disagreement 0).
    Where the disagreement is ``colour_cut_from`` or more, less what the colours call background too
    (``gramcast.face.matte.colour_cut``), except over the head (``spared_head``) in the person's own colours
    there (those of at least ``PERSON_COLOUR_SHARE`` of its sure pixels, ``gramcast.face.matte.colour_share``).
    Never less than the face's core (``face_core``), which the disagreement counts as the person's too.
    ``inside`` ``(S', S')`` bool: where the square shows the photo; the disagreement is counted there only."""
    side = crop.shape[0] - 2 * reach
    region = (reach, side)
    seen = np.ascontiguousarray(crop[reach:reach + side, reach:reach + side])
    core = face_core(aligned.pixels + pad, (side, side))
    if agreed:
        windows = ([region] if reach else []) + ([(reach + pad, aligned.size)] if pad else [])
        found, disagreement = agreed_matte(matting, crop, windows, region=region, person=core, counted=inside)
    else:
        found, disagreement = matting(seen), 0.0
    found = keep_subject(found, aligned.pixels + pad, [face + pad for face in aligned.others])
    if disagreement >= colour_cut_from:
        head = spared_head(aligned.pixels + pad, found.shape)
        own = colour_share(seen, (found > 0.95) & (head > 0.5)) >= PERSON_COLOUR_SHARE
        found = colour_cut(seen, found, keep=head * cv2.GaussianBlur(own.astype(np.float32), (0, 0), 2.0))
    return np.maximum(found, core), disagreement


def photo_context(image: np.ndarray, aligned: AlignedFace, margin: float, matting, agreed: bool = True,
                  look_margin: float = 0.0, colour_cut_from: float = math.inf) -> PhotoContext:
    """``aligned``'s crop widened by ``margin`` of its side on every side (same scale), with its matte
    (``matting``: crop -> matte, e.g. a ``gramcast.face.Matting``; ``agreed``: where the looks agree,
    ``gramcast.face.matte.agreed_matte``, among them one at the crop widened by ``look_margin`` where that
    is more than ``margin``) less the people of ``aligned.others`` (and, from ``colour_cut_from`` on, what
    the colours call background: ``subject_matte``)."""
    size = aligned.size
    pad = int(round(margin * size))
    reach = max(0, int(round(look_margin * size)) - pad) if agreed else 0
    side = size + 2 * pad
    wide_from_image = aligned.crop_from_image + np.array([[0, 0, pad], [0, 0, pad]], dtype=np.float64)
    crop = warp_to_crop(image, wide_from_image, side)
    # The looks see the photo's edge repeated beyond it, not reflected: reflected, the wider look saw mirror
    # copies of the shoulders where a photo ends, and called the real shoulder background.
    looked_at = warp_to_crop(image, wide_from_image + np.array([[0, 0, reach], [0, 0, reach]]), side + 2 * reach,
                             cv2.BORDER_REPLICATE)
    sides = crop_photo_sides(wide_from_image, side, image.shape[:2])
    matte, disagreement = subject_matte(matting, looked_at, aligned, pad, agreed, reach, colour_cut_from,
                                        sides == INSIDE)
    return PhotoContext(crop, matte, sides, float(pad), disagreement)
