"""Foreground matte with mediapipe's bundled selfie segmentation (imported lazily).

The selfie model keeps every person and person-like thing in the picture (a neighbour's head, a raised
hand, a statuette); an avatar enrolled from such a photo carries them beside its head. ``one_person``
restricts the matte to the person whose face is at the centre of the image (an aligned crop's framing)
with mediapipe Pose's segmentation, which covers only the one body it tracked; the selfie model's edges
(hair) are kept, Pose's coarser ones only decide which regions belong to that person.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from gramcast.face.landmarks import Closeable, _import_mediapipe, _quiet_stderr
from gramcast.images import as_rgb

__all__ = ["Matting", "foreground_matte", "agreed_matte", "restrict_to_person", "keep_subject", "landmark_hull",
           "face_size", "foreground_colours", "refine_matte", "colour_cut", "colour_share", "disc",
           "contrast_stretched", "FLAT_CONTRAST", "NORMAL_CONTRAST", "SEEN_CONTRAST"]

# Pose's nose must lie within this fraction of the image side of the centre to be the framed face's body.
_NOSE_FROM_CENTRE = 0.2
# What the matte's models (the segmentations, the closed-form matting) see of a flat photo (``contrast_stretched``).
# The spread of grey levels (their standard deviation) of the images the enrollment of 219 portraits segments
# (144 London, 40 Canada, 35 LFW; the aligned crop, the widened crop and the wider look): 27.6 at the least,
# median 50-57: none is stretched. 51 portraits (24 London, 10 Canada, 16 LFW, the sample) with their contrast
# lowered about the mean to 0.25 / 0.15 / 0.1 of it, their avatars' opaque area at yaw 0 against the photo's
# own: IoU 0.971 / 0.884 / 0.249 with 0 / 4 / 37 refused as "person lost" before; 0.978 / 0.974 / 0.969
# (the least 0.94 / 0.92 / 0.92), none refused, seen stretched to a spread of 45 (to 20: 0.971 / 0.968).
#: Images whose grey levels spread less than this are seen with their contrast raised to ``SEEN_CONTRAST``.
FLAT_CONTRAST = 18.0
#: Images that spread this much or more are seen as they are (every portrait measured above); in between,
#: the spread seen falls from ``SEEN_CONTRAST`` to this, so that what is seen changes continuously.
NORMAL_CONTRAST = 26.0
#: The spread a flat image is seen at: near the portraits' median.
SEEN_CONTRAST = 45.0


def contrast_stretched(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` uint8 as the matte's models see it: a photo of little contrast with its contrast
    raised, every other one unchanged (``rgb`` itself). Where the spread of its grey levels (their standard
    deviation) is under ``NORMAL_CONTRAST``, a copy stretched about each channel's mean by one gain for all
    three channels (hues stay), to ``SEEN_CONTRAST`` below ``FLAT_CONTRAST`` and less between, and moved back
    into 0-255 where the stretch would clip a dark or bright photo's ends. The matte is a decision of what is
    the person; the colours the avatar takes still come from the photo."""
    rgb = np.asarray(rgb)
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    spread = float(grey.std())
    if spread >= NORMAL_CONTRAST or spread < 1e-3:
        return rgb
    share = min(1.0, (NORMAL_CONTRAST - spread) / (NORMAL_CONTRAST - FLAT_CONTRAST))
    gain = (NORMAL_CONTRAST + share * (SEEN_CONTRAST - NORMAL_CONTRAST)) / spread
    # each channel's mean and 1st and 99th percentiles, from its histogram (np.percentile sorts: 60 ms at 870²)
    counts = np.stack([np.bincount(rgb[..., c].ravel(), minlength=256) for c in range(3)]).astype(np.float64)
    total = counts[0].sum()
    mean = (counts @ np.arange(256.0) / total).astype(np.float32)
    cumulative = np.cumsum(counts, axis=1)
    low = np.array([np.searchsorted(cumulative[c], 0.01 * total) for c in range(3)], np.float32)
    high = np.array([np.searchsorted(cumulative[c], 0.99 * total) for c in range(3)], np.float32)
    # the mean moves only as far as keeps the 1st and 99th percentiles inside 0-255 (to the middle where
    # both cannot be)
    lowest, highest = gain * (mean - low), 255.0 - gain * (high - mean)
    centre = np.where(lowest <= highest, np.clip(mean, lowest, highest), (lowest + highest) / 2)
    out = (rgb[..., :3].astype(np.float32) - mean) * gain + centre
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def disc(radius: int) -> np.ndarray:
    """An elliptical structuring element ``(2r+1, 2r+1)`` uint8 for growing and shrinking masks by ``radius`` pixels."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


class Matting(Closeable):
    """Person-vs-background matte. ``landscape=True`` selects the 144x256 model meant for video frames.
    ``one_person=True``: only the person whose face is at the image's centre (see the module docstring;
    ~30 ms more per image). Not thread-safe: give each thread its own instance.
    """

    def __init__(self, landscape: bool = False, one_person: bool = False):
        mp = _import_mediapipe()
        with _quiet_stderr():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1 if landscape else 0)
            # model_complexity=1: the "full" landmark model, the one the wheel ships (0 and 2 would be
            # downloaded on first use)
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                enable_segmentation=True) if one_person else None

    def __call__(self, rgb) -> np.ndarray:
        """rgb ``(H, W, 3)`` uint8 (or any image ``gramcast.images.as_rgb`` converts) -> matte ``(H, W)`` float32
        in [0, 1] (1 = person). A flat image is seen with its contrast raised (``contrast_stretched``): at a
        tenth of a portrait's contrast the models had found nobody."""
        rgb = contrast_stretched(as_rgb(rgb))
        seg = self._still_open(self._seg)
        matte = np.clip(np.asarray(seg.process(rgb).segmentation_mask, np.float32), 0.0, 1.0)
        if self._pose is None:
            return matte
        found = self._pose.process(rgb)
        if found.pose_landmarks is None or found.segmentation_mask is None:
            return matte
        h, w = matte.shape
        nose = found.pose_landmarks.landmark[0]
        if np.hypot(nose.x - 0.5, (nose.y - 0.5) * h / w) > _NOSE_FROM_CENTRE * max(1.0, h / w):
            return matte            # Pose tracked someone else: keep everyone rather than cut the subject
        return restrict_to_person(matte, np.asarray(found.segmentation_mask, np.float32))

    def close(self) -> None:
        # forgotten first, so that a second close (or a use after it) finds them gone whatever these raise
        parts, self._seg, self._pose = (self._seg, self._pose), None, None
        for part in parts:
            if part is not None:
                part.close()


def agreed_matte(matting, rgb: np.ndarray, windows: Sequence[tuple[int, int]] = (), feather: float = 0.03,
                 region: tuple[int, int] | None = None, person: np.ndarray | None = None,
                 counted: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The person matte of ``rgb`` ``(H, W, 3)`` uint8 where the looks at the photo agree, and how much they
    disagreed. A look is ``matting``'s matte of an image and of its mirror image. ``windows``: nested squares
    (offset, side), each inside the one before (e.g. a widened crop inside a wider one, the aligned crop
    inside that), each looked at on its own: the segmentation runs at a fixed input size, so a smaller
    square is seen at a higher resolution. Where a square is looked at, the matte is the least of its looks
    and the next wider level's (the whole image, for the first), blended in over ``feather`` of its side
    from its edge so that no seam shows; looks wider than that do not count there (at their lower
    resolution they lose fine hair). ``region``: the square (offset, side) the matte covers, ``(S, S)``
    (default: all of ``rgb``, ``(H, W)``). The disagreement is the area where the counted looks differ by
    more than 0.5, over the area of the person (matte > 0.5, and wherever ``person`` is above 0.5: what the
    caller knows to be the person, in [0, 1], of the matte's shape), in ``region`` and by the looks of its
    own level and finer ones, at most 1: a busy background raises it. ``counted`` (bool, the matte's shape):
    where it is counted, e.g. where the photo has pixels: the edge repeated beyond a photo's border, where
    a face cut by it continues as stripes, is no background, and its looks differ.

    The selfie model's mistakes on a busy background (a neighbour's shoulder, a bright patch beside the
    hair) change from one look to the next; the person does not. Keyed portraits over photos of crowds, a
    widened crop and the aligned crop looked at: the raw matte's error (the mass of |matte - truth|) fell
    from 8.9 % to 4.6 % of the crop, over blurred photos from 11.4 % to 5.1 %; over plain studio backdrops
    it rose from 2.0 % to 2.2 % (a little hair is lost). A look wider than the widened crop gives the ring
    around the aligned crop its second opinion: the junk there fell from 4.6 to 3.2 % of the crop over
    crowds, from 2.9 to 1.7 % over blurred photos (bench/matte_edges.py, docs/ENROLLMENT_LOG.md).
    """
    def both_ways(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        own = matting(np.ascontiguousarray(image))
        mirrored = matting(np.ascontiguousarray(image[:, ::-1]))[:, ::-1]
        return np.minimum(own, mirrored), np.maximum(own, mirrored)

    matte, most = both_ways(rgb)                 # fresh arrays: updated in place below
    wider = matte.copy()                         # the last level's own looks' least, in rgb's pixels
    fewest = wider.copy()                        # the least and most of the looks the disagreement counts
    for at, side in windows:
        window = (slice(at, at + side), slice(at, at + side))
        least, spread = both_ways(rgb[window])
        ramp = np.minimum(np.arange(side) + 0.5, side - 0.5 - np.arange(side)) / max(1.0, feather * side)
        weight = np.clip(np.minimum(ramp[:, None], ramp[None, :]), 0.0, 1.0).astype(np.float32)
        matte[window] += weight * (np.minimum(wider[window], least) - matte[window])
        wider[window] = least
        # the disagreement counts the looks of the region's level and the finer ones: a wider look sees more
        # of the scene, and would raise it for no more busyness
        if (at, side) == region:
            fewest[window], most[window] = least, spread
        else:
            fewest[window], most[window] = np.minimum(fewest[window], least), np.maximum(most[window], spread)
    if region is not None:
        at, side = region
        matte, most, fewest = (x[at:at + side, at:at + side] for x in (matte, most, fewest))
    # Over the matte alone, a photo whose person every look lost (a washed-out face) measured 4.3 times "the
    # person's area": a few disputed pixels over almost none. The person the caller knows of is the person's
    # area however little the looks found, and what is disputed beyond a small person is all of it at most.
    area = matte > 0.5 if person is None else (matte > 0.5) | (person > 0.5)
    disputed = most - fewest > 0.5
    if counted is not None:
        # a face cut by the photo's edge measured 18-31 % "busy" over a plain wall, nearly all of it beyond
        # the edge; counted within the photo, 0.3-0.7 % (234 studio and LFW portraits, many of whose crops
        # pass the photo's border: within 0.04, no gate crossed)
        area, disputed = area & counted, disputed & counted
    disagreement = min(1.0, np.count_nonzero(disputed) / max(1, np.count_nonzero(area)))
    return np.ascontiguousarray(matte, dtype=np.float32), disagreement


def restrict_to_person(matte: np.ndarray, person: np.ndarray, grow: float = 0.03) -> np.ndarray:
    """``matte`` ``(H, W)`` in [0, 1] kept only near ``person`` ``(H, W)`` (one body's coarse mask): its
    region grown by ``grow`` of the image side, with a soft edge, so that hair the coarse mask misses
    stays while separate people and objects go."""
    side = max(matte.shape)
    radius = max(1, int(round(grow * side)))
    near = cv2.dilate((person > 0.5).astype(np.uint8), disc(radius)).astype(np.float32)
    near = cv2.GaussianBlur(near, (0, 0), radius / 2)
    return (matte * np.clip(2.0 * near, 0.0, 1.0)).astype(np.float32)


def keep_subject(matte: np.ndarray, subject: np.ndarray, others, grow: float = 0.3, protect: float = 0.8,
                 feather_px: float = 3.0) -> np.ndarray:
    """``matte`` ``(H, W)`` without the faces of ``others``: each one's landmark hull, grown by ``grow`` of
    its size (the RMS radius of its landmarks) so that its edges go too, but never the subject's head (its
    face's hull grown by ``protect``: a face behind the subject's hair is hidden there).
    ``subject`` and each of ``others``: face landmarks ``(N, 2)`` in the matte's pixels (u, v). A neighbour's
    face is what would make an avatar look like two people; Pose's body mask, which ``restrict_to_person``
    uses, takes in neighbours who stand close, and the selfie model keeps everyone."""
    if len(others) == 0:
        return matte
    cut = np.zeros(matte.shape, np.float32)
    for face in others:
        cut = np.maximum(cut, landmark_hull(face, matte.shape, grow))
    cut = np.minimum(cut, 1.0 - landmark_hull(subject, matte.shape, protect))
    cut = cv2.GaussianBlur(cut, (0, 0), feather_px) if feather_px > 0 else cut
    return (matte * (1.0 - cut)).astype(np.float32)


def landmark_hull(points: np.ndarray, shape: tuple[int, int], grow: float = 0.0) -> np.ndarray:
    """The convex hull of face landmarks ``(N, 2)`` (continuous pixels u, v) as a ``shape`` mask of 0 and 1
    (uint8), grown by ``grow`` of the face's size (the RMS radius of its landmarks)."""
    points = np.asarray(points, np.float64)
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.rint(points - 0.5).astype(np.int32)), 1)
    radius = int(round(grow * face_size(points)))
    if radius > 0:
        mask = cv2.dilate(mask, disc(radius))
    return mask


def face_size(points: np.ndarray) -> float:
    """The RMS radius of face landmarks ``(N, 2)`` about their centroid, in their units."""
    points = np.asarray(points, np.float64)
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def foreground_matte(rgb, landscape: bool | None = None, one_person: bool = False) -> np.ndarray:
    """One-shot matte of an image or a full frame (wide frames use the landscape model). ``rgb``: ``(H, W, 3)``
    uint8 RGB, or anything ``gramcast.images.load_image`` takes, converted as it converts it; anything else,
    and an empty image, is an ``InvalidImageError``."""
    rgb = as_rgb(rgb)          # before the graphs are made: a refused image costs none
    if landscape is None:
        landscape = rgb.shape[1] > 1.2 * rgb.shape[0]
    with Matting(landscape, one_person=one_person) as matting:
        return matting(rgb)


def refine_matte(rgb: np.ndarray, matte: np.ndarray, band: float = 0.02, sure: float = 0.95,
                 max_side: int = 1024) -> np.ndarray:
    """``matte`` ``(H, W)`` in [0, 1] with its soft edge solved from the colours of ``rgb`` ``(H, W, 3)`` uint8.

    The selfie model's matte is a segmentation at 256²: its edge is a smooth ramp that misses strands and
    gaps and runs past the head. Where it is unsure (between ``1 - sure`` and ``sure``, widened by ``band``
    of the image's longer side on each side) the opacity is solved by closed-form matting
    (``gramcast.face.closed_form_matting``), pulled weakly towards the matte's own value; elsewhere the
    matte is kept. What the segmentation got wrong by more than the band (a second person it took in) stays.
    Images beyond ``max_side`` pixels are solved at that size and the result upsampled (the cost grows with
    the band's area: ~0.75 s and 35 MB for the 716² widened crop of an enrollment on 2 cores, 1.8 s for a
    1434² one solved at 1024²).
    """
    from gramcast.face.closed_form_matting import solve_alpha

    h, w = matte.shape
    fg, bg = _sure_regions(matte, band, sure)
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(matte.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        solved = cv2.resize(refine_matte(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), small, band, sure,
                                         max_side), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.where(fg, 1.0, np.where(bg, 0.0, solved)).astype(np.float32)
    guess = np.where(fg, 1.0, np.where(bg, 0.0, matte.astype(np.float64)))
    # a flat photo's colour lines are short beside the solver's regularisation: solved on it as it is, the edge
    # spread into a soft, partly see-through fringe over hair and neck
    rgb = contrast_stretched(rgb)
    return solve_alpha(rgb.astype(np.float64) / 255.0, guess, fg | bg).astype(np.float32)


def colour_cut(rgb: np.ndarray, matte: np.ndarray, keep: np.ndarray | None = None, iterations: int = 3,
               sure: float = 0.9, band: float = 0.04, max_side: int = 400) -> np.ndarray:
    """``matte`` ``(H, W)`` in [0, 1] less what the colours of ``rgb`` ``(H, W, 3)`` uint8 call background.

    The segmentation's mistakes that every look at a busy photo shares (a neighbour's shoulder, a bright
    patch of a poster touching the hair) are the background's colours, not the person's. OpenCV's GrabCut
    learns a colour model of each from where ``matte`` is sure (beyond ``sure`` / below ``1 - sure``, shrunk
    by ``band`` of the longer side) and cuts the rest between them, smoothly; the cut only ever removes,
    and its edge is softened, so the segmentation's soft edge stays wherever the two agree. Solved at
    ``max_side`` pixels at most (~0.3 s for an enrollment's 716² widened crop on 2 cores).

    Where the person's colours meet the same colours behind them it cuts the person too: clothes on a wall
    of their colour (a white shirt on a white wall, which the segmentation had right: use it where the looks
    at the photo disagree, ``MeshConfig.colour_cut_from``) and dark hair over a dark patch of a blurred
    room. ``keep`` ``(H, W)`` in [0, 1]: where the matte stays as it is (the subject's head, ``subject_matte``).
    """
    h, w = matte.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(np.ascontiguousarray(rgb[..., :3]), size, interpolation=cv2.INTER_AREA)
    small_matte = cv2.resize(matte.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    fg, bg = _sure_regions(small_matte, band, sure)
    if not fg.any() or not bg.any():
        return matte.astype(np.float32)     # nothing to learn one of the colour models from
    labels = np.where(small_matte > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[fg], labels[bg] = cv2.GC_FGD, cv2.GC_BGD
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut starts its colour models from k-means seeded by OpenCV's random generator (this thread's): left
    # as it was, the cut depended on what had drawn from it before (a crowd photo's, after two enrollments
    # in the same process, lost 6.9 % of the subject against 3.9 % first thing). Seeded as a fresh thread's,
    # every cut is the first one.
    cv2.setRNGSeed(0)          # OpenCV takes 0 for its default state, a fresh thread's
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), labels, None, *models, iterations, cv2.GC_INIT_WITH_MASK)
    person = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    person = cv2.resize(cv2.GaussianBlur(person, (0, 0), 1.5), (w, h), interpolation=cv2.INTER_LINEAR)
    cut = np.minimum(matte, np.clip(2.0 * person, 0.0, 1.0))
    if keep is not None:
        cut += keep * (matte - cut)
    return cut.astype(np.float32)


def colour_share(rgb: np.ndarray, where: np.ndarray, levels: int = 16) -> np.ndarray:
    """For each pixel of ``rgb`` ``(H, W, 3)`` uint8, the share of the pixels ``where`` ``(H, W)`` bool whose
    colour falls in the same bin (``levels`` per channel): how common its colour is there, ``(H, W)``
    float64 (0 where ``where`` is empty)."""
    step = 256 // levels
    q = (rgb[..., :3] // step).astype(np.int64)
    bins = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
    counts = np.bincount(bins[where], minlength=levels ** 3).astype(np.float64)
    return (counts / max(1.0, counts.sum()))[bins]


def _sure_regions(matte: np.ndarray, band: float, sure: float) -> tuple[np.ndarray, np.ndarray]:
    """Where ``matte`` is surely foreground and surely background: at least ``sure`` (at most ``1 - sure``)
    everywhere within ``band`` of the longer side. ``(H, W)`` bool each."""
    kernel = disc(max(1, int(round(band * max(matte.shape)))))
    fg = cv2.erode((matte >= sure).astype(np.uint8), kernel) > 0
    bg = cv2.erode((matte <= 1.0 - sure).astype(np.uint8), kernel) > 0
    return fg, bg


def foreground_colours(rgb: np.ndarray, matte: np.ndarray, radii: tuple[float, ...] = (0.063, 0.007),
                       solid: float = 0.98) -> np.ndarray:
    """The person's own colours ``(H, W, 3)`` uint8 under the soft edge of ``matte`` ``(H, W)`` in [0, 1].

    A pixel of hair's edge is ``a F + (1 - a) B``: carried over as it is, the old background ``B`` comes
    with it and shows as a halo once the avatar is drawn over another one. Solving the compositing
    equation for ``F`` with ``F`` and ``B`` taken as locally smooth (blur fusion, Forte & Pitie 2021):
    ``F`` and ``B`` are estimated by alpha-weighted box blurs, then ``F`` is corrected so that the pixel
    is reproduced, at a coarse and then a fine scale (``radii``, fractions of the image's longer side).
    Pixels at least ``solid`` opaque keep their colour; where ``matte`` is 0, ``F`` is the nearby
    person's colour (harmless: no opacity there, and better than the background under bilinear filtering),
    within the coarse radius of the person; beyond it, the photo's own.
    """
    image = rgb.astype(np.float32) / 255.0
    a = np.clip(matte.astype(np.float32), 0.0, 1.0)[..., None]
    fg, bg = image, image
    side = max(matte.shape)
    for radius in radii:
        r = max(1, int(round(radius * side)))
        blur = functools.partial(cv2.blur, ksize=(2 * r + 1, 2 * r + 1))
        blur_a = blur(a[..., 0])[..., None]
        # where no opacity lies within this radius, the coarser estimate stands: divided by ~0 alone, a gap
        # in the matte wider than the fine radius came out black (a face that a mistaken matte cut showed
        # it, once its opacity was restored)
        fg_mean = np.where(blur_a > 1e-3, blur(fg * a) / (blur_a + 1e-5), fg)
        bg_mean = blur(bg * (1.0 - a)) / (1.0 - blur_a + 1e-5)
        fg = np.clip(fg_mean + a * (image - a * fg_mean - (1.0 - a) * bg_mean), 0.0, 1.0)
        bg = bg_mean
    out = np.where(a >= solid, image, fg)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
