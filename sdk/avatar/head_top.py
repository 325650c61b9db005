"""The top of a head that the photo cuts off, for a ``mesh`` avatar (pure functions).

Texels beyond the photo's top edge are seen by no pixel and mirror none that is seen, so the fill
inpaints them, colour and opacity, from the edge. But the person matte ramps down over the last rows
before a photo ends (its segmentations see the edge's pixels repeated beyond it), so a head cut through
its hair grew a half-transparent dome (opacity ~0.3) over the whole head proxy, up to the top of any
pitched frame, in the ramp's dark colours. Instead (``head_cap``): the ramp's rows take the opacity the
head has just past them and colours from below them, and the texels beyond the edge are opaque inside a
cap (half an ellipse on the head's outline at the edge, continuing its narrowing, as high as a head's
proportions allow), transparent outside it, in the colours of the head beside and below them that is not
skin (hair), or skin where the head shows little else (bald). Where the edge crosses the forehead below
where a hairline lies at a head's proportions, the forehead's skin goes on up to that hairline first.
"""
from __future__ import annotations

import cv2
import numpy as np

from gramcast.avatar.texture_fill import inpainted

__all__ = ["HEAD_TOP_ABOVE_EYES", "EDGE_RAMP", "OUTLINE_BAND", "EDGE_OPACITY", "edge_rows", "cap_outline", "head_cap"]

#: How far the top of a head (with its hair) lies above the eyes, in eye-to-chin distances at most: the
#: canon's 1.0 plus hair (0.90-1.11 on 10 whole-head studio portraits, one 1.37).
HEAD_TOP_ABOVE_EYES = 1.05
#: How far inside the photo its matte ramps down before an edge, and the band past that where the head's
#: outline is read (fractions of the texture's side from the edge: rows below the top edge, columns beside a
#: side edge, ``gramcast.avatar.side_edges``).
EDGE_RAMP = 0.05
OUTLINE_BAND = 0.03
#: A head reaches the photo's top edge where the matte there is at least this (the median over the head's
#: columns): the ramp before the edge leaves 0.15-1.0 of a head the edge cuts (10 studio portraits cut 10-30 %
#: of the way down their hair), under 0.002 where wall lies between the head and the edge (the same
#: portraits cropped 4-40 px of a 512² crop above their hair).
EDGE_OPACITY = 0.05
#: How far the hairline lies above the eyes, in eye-to-chin distances: the median of 50 studio portraits
#: (0.50-0.70 for 8 in 10 of them).
HAIRLINE_ABOVE_EYES = 0.6
#: The least height of a cap, in its half-width: a head cut above where its proportions put the top
#: still ends in a rounded crown, not a straight line.
LEAST_CAP_HEIGHT = 0.25
#: The cap's colour comes from the head beside and below it that is not coloured like the face's skin,
#: unless less than this share of the opaque texels along it is (a bald head): then from all of them. Cut
#: through the forehead, heads with hair show 0.11-0.2 beside it (hair at the temples); the bald one of 10
#: studio portraits 0-0.098 (its side hair, cut lowest). Hair coloured like skin is not told from it.
MIN_HAIR_RIM = 0.1
#: How far from the face's skin colour (in robust deviations per CIELAB channel, combined) still is skin.
SKIN_DISTANCE = 4.0
#: The cap's outline is softened over this fraction of the texture's side.
SOFTNESS = 0.01


def edge_rows(in_image: np.ndarray, above: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the photo's top edge runs through a texture ``(T, T)``: ``in_image`` the texels inside the photo,
    ``above`` those beyond its top edge. Each column's first row inside the photo ``(T,)`` and whether the
    edge crosses the column ``(T,)`` bool (texels beyond it, and inside the photo below them)."""
    edged = above.any(0) & in_image.any(0)
    return np.where(edged, in_image.argmax(0), above.shape[0]), edged


def cap_outline(t: int, centre_col: float, edge: float, half: float, narrowing: float,
                height: float) -> np.ndarray:
    """Inside ``(T, T)`` bool of the ellipse that crosses row ``edge`` ``half`` texels either side of
    ``centre_col``, narrowing there by ``narrowing`` texels of half-width per row upwards (0: its widest
    row is the edge), its top ``height`` rows above the edge (rows count downwards).

    An ellipse with semi-axes a, b and centre row r_c crosses ``edge`` = r_c - u b at half-width
    w = a sqrt(1 - u²), its top h = b (1 - u) above, where its half-width shrinks by s = w u / (h (1 + u))
    per row: u = k / (1 - k) with k = s h / w (kept to u <= 0.9)."""
    k = narrowing * height / max(half, 1e-6)
    u = min(0.9, k / (1.0 - k)) if k < 0.5 else 0.9
    b = height / (1.0 - u)
    a = half / np.sqrt(1.0 - u * u)
    rows, cols = np.mgrid[0:t, 0:t].astype(np.float64)
    return ((cols - centre_col) / a) ** 2 + ((rows - (edge + u * b)) / b) ** 2 <= 1.0


def head_cap(colour: np.ndarray, alpha: np.ndarray, in_image: np.ndarray, above: np.ndarray, face: np.ndarray,
             eye_row: float, chin_row: float, centre_col: float) -> tuple[np.ndarray, np.ndarray]:
    """A ``mesh`` texture's colour ``(T, T, 3)`` uint8 and opacity ``(T, T)`` with the head cut off by the
    photo's top edge given its top (see the module); ``in_image`` ``(T, T)`` bool: the texels inside the
    photo, ``above``: those beyond its top edge (its corners with the sides included: where a side cuts the
    head too, the cap's half-width is read on the uncut side). ``face`` ``(T, T)`` bool, the face's landmark
    hull, tells the skin's colour, which gives the cap none unless the head shows little else beside it (a head cut
    through its forehead has hair above it, seen at the sides; a bald one has skin); ``eye_row``,
    ``chin_row`` and ``centre_col`` place the face (rows count downwards). Unchanged where no texel lies
    beyond the photo's top edge; beyond it transparent where the head does not reach the edge (at
    ``centre_col``)."""
    first, edged = edge_rows(in_image, above)
    if not edged.any():
        return colour, alpha
    t = alpha.shape[0]
    cols = np.arange(t)
    n_ramp, n_outline = max(1, round(EDGE_RAMP * t)), max(1, round(OUTLINE_BAND * t))

    # columns beyond a side edge that reach above the top one (a photo cut at both): their texels below the
    # top edge's line hold the mirror of the other side's ramp, as see-through as it was
    corner = above.any(0) & ~in_image.any(0)
    edge_cols = np.nonzero(edged)[0]
    first = first.copy()
    first[corner] = first[edge_cols[np.abs(edge_cols[None, :] - cols[corner][:, None]).argmin(1)]]

    def opacity_below(start: int, where: np.ndarray = edged) -> np.ndarray:
        """Each edge column's most opacity over the ``n_outline`` rows from ``start`` rows below its edge."""
        rows = np.clip(first[None, :] + np.arange(start, start + n_outline)[:, None], 0, t - 1)
        return np.where(where, alpha[rows, cols[None, :]].max(0), 0.0)

    ramp = (edged | corner)[None, :] & ~above & (np.arange(t)[:, None] < first[None, :] + n_ramp)
    below_ramp = opacity_below(n_ramp, edged | corner)
    past_ramp = np.where(edged, below_ramp, 0.0)
    c = int(np.clip(round(centre_col), 0, t - 1))
    span = _run_around(past_ramp > 0.5, c)
    if span is not None:
        # cut, or ending just short of the edge with wall above it (the ramp reaching 0 there)?
        at_edge = np.where(edged, alpha[np.clip(first, 0, t - 1), cols], 0.0)
        if np.median(at_edge[span[0]:span[1]]) < EDGE_OPACITY:
            span = None
    cap = np.zeros((t, t), bool)
    if span is not None:
        edge_row = float(np.median(first[span[0]:span[1]]))
        edge = edge_row + n_ramp + 0.5 * n_outline                                   # where the width was read
        left, right = _whole_run(span, edged, centre_col)
        half = (right - left) / 2.0
        wider = _whole_run(_run_around(opacity_below(n_ramp + n_outline) > 0.5, c) or span, edged, centre_col)
        narrowing = max(0.0, ((wider[1] - wider[0]) / 2.0 - half) / n_outline)    # half-width per row upwards
        top = eye_row - HEAD_TOP_ABOVE_EYES * (chin_row - eye_row)
        height = max(edge - top, LEAST_CAP_HEIGHT * half)
        cap = cap_outline(t, (left + right - 1) / 2.0, edge, half, narrowing, height)
    sigma = SOFTNESS * t
    cap_alpha = cv2.GaussianBlur(cap.astype(np.float32), (0, 0), sigma) if sigma > 0 else cap.astype(np.float32)
    # the ramp: as opaque as the column past it, within the cap's outline (which follows the head's narrowing)
    raised = np.where(ramp, np.maximum(alpha, np.minimum(below_ramp[None, :], cap_alpha)), alpha)
    # colours for what turned opaque: the ramp's own were solved where the matte was low; then the cap's,
    # from the head beside and below it that is not coloured like the face's skin
    recolour = ramp & (raised > alpha + 0.02)
    colour = np.where(recolour[..., None], inpainted(colour, recolour | above), colour)
    skin = _skin_like(colour, face) & ~above
    rim = cv2.dilate(above.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~above & (raised > 0.5)
    bald = rim.any() and (rim & ~skin).mean() / rim.mean() < MIN_HAIR_RIM
    if bald:
        skin[:] = False          # a bald head, or a cap the photo shows no hair beside: skin it is
    cap_colour = inpainted(colour, above | skin)
    if not bald and span is not None:
        # an edge across the forehead: the forehead goes on above it, up to a hairline at the head's proportions
        skin_at_edge = edged & skin[np.clip(first + n_ramp, 0, t - 1), cols]
        run = _run_around(skin_at_edge, c)
        hairline = eye_row - HAIRLINE_ABOVE_EYES * (chin_row - eye_row)
        if run is not None and hairline < edge_row:
            forehead = cap_outline(t, (run[0] + run[1] - 1) / 2.0, edge_row, (run[1] - run[0]) / 2.0, 0.0,
                                   edge_row - hairline)
            forehead[int(edge_row):, run[0]:run[1]] = True        # the skin below it: no hair blurred into the seam
            blend = cv2.GaussianBlur(forehead.astype(np.float32), (0, 0), sigma)[..., None]
            cap_colour = np.rint(inpainted(colour, above | ~skin) * blend + cap_colour * (1.0 - blend)).astype(np.uint8)
    colour = np.where(above[..., None], cap_colour, colour)
    return colour, np.where(above, cap_alpha, raised).astype(np.float32)


def _skin_like(colour: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Texels ``(T, T)`` bool coloured like the face's skin: within ``SKIN_DISTANCE`` robust deviations of
    the median colour (CIELAB) of the ``face`` texels below the middle of its rows (cheeks, nose, mouth)."""
    lab = cv2.cvtColor(colour, cv2.COLOR_RGB2LAB).astype(np.float32)
    rows = np.nonzero(face.any(1))[0]
    if len(rows) == 0:
        return np.zeros(face.shape, bool)
    lower = face.copy()
    lower[: (rows[0] + rows[-1]) // 2] = False
    samples = lab[lower]
    centre = np.median(samples, 0)
    spread = np.median(np.abs(samples - centre), 0) * 1.4826 + 2.0       # MAD as a deviation, a floor
    return (((lab - centre) / spread) ** 2).sum(-1) <= SKIN_DISTANCE ** 2


def _whole_run(run: tuple[int, int], edged: np.ndarray, centre_col: float) -> tuple[int, int]:
    """A run of columns (first, one past the last) across the head at the photo's top edge, whole: where it
    ends at a column beyond which the edge does not run (the photo's side cuts the head there too), its
    other end mirrored about the face's ``centre_col``."""
    left, right = run
    cut_left = left == 0 or not edged[left - 1]
    cut_right = right >= edged.shape[0] or not edged[right]
    if cut_left and not cut_right:
        left = min(left, int(round(2 * centre_col + 1 - right)))
    elif cut_right and not cut_left:
        right = max(right, int(round(2 * centre_col + 1 - left)))
    return left, right


def _run_around(mask: np.ndarray, c: int) -> tuple[int, int] | None:
    """The run of True in ``mask`` ``(T,)`` that holds index ``c``: (first, one past the last); None where
    ``mask[c]`` is False."""
    if not mask[c]:
        return None
    left = c - int(np.argmin(mask[c::-1])) + 1 if not mask[:c + 1].all() else 0
    right = c + int(np.argmin(mask[c:])) if not mask[c:].all() else mask.shape[0]
    return left, right
