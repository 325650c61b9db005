"""A head that the photo cuts at its left or right edge, for a ``mesh`` avatar (pure functions).

The person matte ramps down over the last columns before a photo's side edge, as it does before the top
(``head_top``: its segmentations see the edge's pixels repeated beyond it). Beyond a side edge the fill
mirrors the other side of the head; between that and the head inside the photo, the ramp's columns stayed
half-transparent: a see-through slit down the hair above the face and down the jaw and neck below it,
from every view. Where the photo cuts one side of the head, ``bridged_side_edges`` raises the ramp to the
opacity on both sides of it (the lesser of the head just past it and the mirror just beyond the edge), or
to what the matte at the edge says of a solid head where that is more (a jaw or neck wider than its mirror
has nothing opaque beyond the edge); its colours become the photo's own. Where the photo cuts both sides,
the fill beyond either edge mirrors nothing seen (it is inpainted from the ramps themselves) and the ramps
stay: a fade reads better there than a straight, opaque cut down the hair.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from gramcast.avatar.head_top import EDGE_RAMP, OUTLINE_BAND

__all__ = ["EDGE_TEXELS", "EDGE_OPACITY", "SOLID_EDGE", "bridged_side_edges"]

#: Whether the head reaches the edge is read over this fraction of the texture's side from it, and is so
#: where the matte there is at least ``EDGE_OPACITY`` on average (the median of the rows around): wall
#: between the head and the edge leaves exactly 0, a head that the edge cuts 0.02 or more (the least where
#: the matte dips in a strand of hair).
EDGE_TEXELS = 0.01
EDGE_OPACITY = 0.01
#: The ramp leaves 0.25-0.6 of a solid head at the edge (studio portraits cut beside an eye): from this on,
#: the head is taken to reach the edge whole; below it (hair thinning out there) in proportion.
SOLID_EDGE = 0.25


def bridged_side_edges(colour: np.ndarray, alpha: np.ndarray, photo: np.ndarray, in_image: np.ndarray,
                       beyond_sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A filled ``mesh`` texture's colour ``(T, T, 3)`` uint8 and opacity ``(T, T)`` with the matte's ramp
    before the photo's side edges bridged (see the module); ``photo`` ``(T, T, 3)`` uint8: the photo's colours
    at each texel as taken (not solved for the matte). ``in_image`` ``(T, T)`` bool: the texels inside the
    photo; ``beyond_sides``: those beyond its left or right edge, holding the fill. In each texture row where
    the mirror of the texels beyond the edge (as far as ``EDGE_RAMP`` + ``OUTLINE_BAND`` of the side) lies
    inside the photo and the head reaches the edge, the ramp, the ``EDGE_RAMP`` of the side after the edge,
    is raised to the lesser of the most opacity within ``OUTLINE_BAND`` past it and within ``OUTLINE_BAND``
    beyond the edge, or to the most past it times the matte at the edge over ``SOLID_EDGE`` if that is more."""
    t = alpha.shape[0]
    n_ramp, n_band, n_edge = (max(1, round(f * t)) for f in (EDGE_RAMP, OUTLINE_BAND, EDGE_TEXELS))
    cols = np.arange(t)
    raised = alpha.astype(np.float32)
    for flip in (False, True):          # an edge on the texture's left, then (mirrored) one on its right
        a = raised[:, ::-1] if flip else raised
        inside = in_image[:, ::-1] if flip else in_image
        beyond = beyond_sides[:, ::-1] if flip else beyond_sides
        first = np.where(inside.any(1), inside.argmax(1), t)                 # each row's first texel inside
        edged = (beyond & (cols[None, :] < first[:, None])).any(1)
        # a head the edge cuts, or wall between them? (single rows' dips in hair are noise: the rows' median)
        at_edge = np.take_along_axis(a, np.clip(first[:, None] + np.arange(n_edge)[None, :], 0, t - 1), 1).mean(1)
        at_edge = median_filter(np.where(edged, at_edge, 0.0), size=n_band, mode="nearest")
        # what lies beyond is known only where its mirror was seen: the photo cuts this side alone (where it cuts
        # both, the fill beyond is inpainted from the ramp itself)
        far = first - n_ramp - n_band                       # as far beyond the edge as the ramp and band reach
        seen_mirror = (far >= 0) & inside[np.arange(t), np.clip(t - 1 - far, 0, t - 1)]
        edged &= (at_edge >= EDGE_OPACITY) & seen_mirror

        def most(start: int, stop: int) -> np.ndarray:
            """Each row's most opacity over the columns ``start`` .. ``stop`` from its first inside."""
            idx = np.clip(first[:, None] + np.arange(start, stop)[None, :], 0, t - 1)
            return np.take_along_axis(a, idx, 1).max(1)

        past = np.where(edged, most(n_ramp, n_ramp + n_band), 0.0)
        # joined to the mirror beyond, and where that ends short of the edge (a jaw or neck wider on the cut
        # side), as solid as the matte at the edge says
        across = np.maximum(np.minimum(past, most(-n_band, 0)), past * np.clip(at_edge / SOLID_EDGE, 0.0, 1.0))
        ramp = edged[:, None] & inside & (cols[None, :] < first[:, None] + n_ramp)
        a = np.where(ramp, np.maximum(a, across[:, None]), a)
        raised = np.ascontiguousarray(a[:, ::-1] if flip else a)
    # the ramp's colours were solved for the matte's low opacity, which pulled them to the head's blurred
    # colours around it; where the opacity is restored, the photo's own pixel is the head's colour
    taken = np.clip((raised - alpha) / np.maximum(1.0 - alpha, 1e-6), 0.0, 1.0)[..., None]
    colour = np.rint(photo * taken + colour * (1.0 - taken)).astype(np.uint8)
    return colour, raised
