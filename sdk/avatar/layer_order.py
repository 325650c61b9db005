"""Which order an avatar's layers composite in, for every camera in front (pure functions over the layers'
heights and opacity; ``gramcast.avatar.layer_compositing`` makes its plans from them).

A layer is *present* at a texel where its alpha, or a neighbouring texel's, is above 0
(``gramcast.avatar.avatar.texels_shown``): elsewhere it adds nothing to any pixel, whatever its height.
Heights are compared at the texels where layers are present, interpolated as the baker samples them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast.avatar.avatar import texels_shown
from gramcast.avatar.heightfield import flat_layers

__all__ = ["layer_depth_order", "layers_above_plane", "DEPTH_ORDER_TOLERANCE"]

#: Heights (world units) by which two layers may cross and still count as ordered: 1/240 of the scene's
#: depth, ~16 float16 steps of a stored height near 0.1.
DEPTH_ORDER_TOLERANCE = 1e-3


def _heights_where_present(heights: Tensor, opacity: Tensor) -> tuple[Tensor, Tensor]:
    """heights ``(L, G, G)`` at the texels of opacity ``(L, T, T)`` (interpolated as the baker samples them),
    and where each layer is *present* (``gramcast.avatar.avatar.texels_shown``). Both ``(L, T, T)``."""
    t = opacity.shape[-1]
    h = heights.float()[:, None]
    if h.shape[-1] != t:
        h = F.interpolate(h, size=(t, t), mode="bilinear", align_corners=True)
    return h[:, 0], texels_shown(opacity)


def layers_above_plane(heights: Tensor, opacity: Tensor, plane: int, tol: float = DEPTH_ORDER_TOLERANCE) -> tuple[int, ...]:
    """The layers whose heights lie more than ``tol`` above the flat layer ``plane`` at every texel where
    they are present (as in ``layer_depth_order``: alpha > 0 there or at a neighbouring texel): every ray
    with d_z < 0 meets them before the plane wherever they can show. heights ``(L, G, G)``; opacity
    ``(L, T, T)``. Empty where ``plane`` is not flat (``flat_layers``)."""
    if plane not in flat_layers(heights[:, None]):
        return ()
    h, present = _heights_where_present(heights, opacity)
    lowest = torch.where(present, h, torch.full_like(h, float("inf"))).flatten(1).amin(1)
    floor = float(heights[plane].flatten()[0]) + tol
    return tuple(i for i in range(heights.shape[0]) if i != plane and float(lowest[i]) > floor)


def layer_depth_order(heights: Tensor, opacity: Tensor, tol: float = DEPTH_ORDER_TOLERANCE,
                      allow_pivot: bool = True) -> tuple[tuple[int, ...], int | None] | None:
    """A fixed front-to-back order of a layer stack, valid for every camera in front (rays with d_z < 0),
    or None where the layers cross.

    heights ``(L, G, G)``; opacity ``(L, T, T)`` (the textures' alpha; both grids span the same square).
    A layer is *present* at a texel where its alpha, or that of a neighbouring texel, is > 0 (a bilinear
    texture lookup between texels reaches them): elsewhere it adds nothing to any pixel, whatever its
    height (parked heights, transparent texels). Heights are compared at the texels, interpolated as the
    baker samples them. Two layers *cross* where, at texels where both are present, each is above the
    other by more than ``tol`` somewhere.

    Rays with d_z < 0 meet the higher of two non-crossing height fields first (where the lower one is
    below the higher, it is below whatever the ray has passed), so such layers composite in order of
    height. Returns ``(order, None)``: every pair is non-crossing, ``order`` lists all layers front
    (highest) to back. Else, with ``allow_pivot``, ``(order, pivot)``: one layer (the one crossing most
    others; in a GRAM bake the background plane, which the shells' rims dip behind) crosses others, all
    other layers are mutually non-crossing in ``order``; the pivot is placed per pixel by a depth test
    (see ``gramcast.avatar.renderer.composite_ordered``). None otherwise.

    Unconstrained pairs (never present at the same texel) keep the order of their mean present height.
    Ties within ``tol`` do not constrain; the composites then agree to the colour change of swapping two
    layers less than ``tol`` apart.
    """
    nl = heights.shape[0]
    if nl == 1:
        return (0,), None
    h, present = _heights_where_present(heights, opacity)
    above = torch.zeros(nl, nl, dtype=torch.bool)       # above[i, j]: i is higher than j somewhere both are present
    for i in range(nl - 1):            # layer i against every later layer, both directions at once
        both = present[i] & present[i + 1:]
        d = h[i] - h[i + 1:]
        above[i, i + 1:] = ((d > tol) & both).flatten(1).any(1)
        above[i + 1:, i] = ((d < -tol) & both).flatten(1).any(1)
    crossing = above & above.T
    npresent = present.flatten(1).sum(1)
    key = [float((h[i] * present[i]).sum() / npresent[i]) if npresent[i] > 0 else float("-inf") for i in range(nl)]

    def chain(layers: list[int]) -> tuple[int, ...] | None:
        """Kahn's topological sort of ``above`` over ``layers``, the highest mean first among the free."""
        sub = set(layers)
        if any(bool(crossing[i, j]) for i in layers for j in layers):
            return None
        indeg = {j: sum(1 for i in layers if above[i, j]) for j in layers}
        ready = [j for j in layers if indeg[j] == 0]
        out: list[int] = []
        while ready:
            ready.sort(key=lambda j: (key[j], j))
            i = ready.pop()
            out.append(i)
            sub.discard(i)
            for j in list(sub):
                if above[i, j]:
                    indeg[j] -= 1
                    if indeg[j] == 0:
                        ready.append(j)
        return tuple(out) if len(out) == len(layers) else None    # a cycle: no order

    everything = list(range(nl))
    order = chain(everything)
    if order is not None:
        return order, None
    if not allow_pivot:
        return None
    counts = crossing.sum(1)
    for p in sorted((i for i in everything if counts[i] > 0), key=lambda i: (-int(counts[i]), -i)):
        order = chain([i for i in everything if i != p])
        if order is not None:
            return order, p
    return None
