"""Filling the texels of a ``mesh`` avatar that the photo does not see.

The side of the head turned away from the camera takes its mirror texels (facial symmetry), blended into
what the photo shows by a Poisson (gradient-domain) blend: the mirrored side keeps its detail, but its
colour is offset by the smooth (harmonic) correction that makes it meet the seen texels without a seam.
The two sides of a photographed face are lit differently, so copied as they are, a turned photo's mirrored
cheek showed as a bright strip beside the far eye, the look of a second face. What neither side shows is
inpainted; small or thin enclosed unseen islands (the visibility tests' noise) from their own
neighbourhood. Nothing filled is more opaque than the photo's matte where it projects: the head lies
inside its outline in the photo (the visual hull).
"""
from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sparse
from scipy.sparse.linalg import splu

from gramcast.face.matte import disc

__all__ = ["unseen_islands", "better_seen_mirrored", "harmonic_offset", "inpainted", "fill_unseen", "MIRROR_BLENDS"]

MIRROR_BLENDS = ("poisson", "copy")

_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def unseen_islands(seen: np.ndarray, max_fraction: float = 0.005, max_half_width: float = 0.02) -> np.ndarray:
    """Unseen regions enclosed by seen texels ``(T, T)`` bool that are small (at most ``max_fraction`` of
    the texels) or thin (no texel farther than ``max_half_width`` of the side from a seen one): the
    visibility tests' noise along the jaw and under the nose (grazing or self-occluded for a texel or
    two), and the strip along a face's contour that meets the camera at a grazing angle, not a side of
    the head. Their mirror texels are no better guess than their neighbours: a face is not placed that
    symmetrically (a mirrored contour strip brought the other side's ear onto the cheek)."""
    unseen = (~seen).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(unseen, connectivity=8)
    t = seen.shape[0]
    x, y, w, h, area = (stats[:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + w < t) & (y + h < t)
    depth = cv2.distanceTransform(unseen, cv2.DIST_L2, 5)            # distance to the nearest seen texel
    deepest = np.zeros(n)
    np.maximum.at(deepest, labels.ravel(), depth.ravel())
    island = enclosed & ((area <= max_fraction * seen.size) | (deepest <= max_half_width * t))
    island[0] = False                                  # label 0: the seen texels themselves
    return island[labels] & ~seen


def better_seen_mirrored(seen: np.ndarray, cosines: np.ndarray, below: float, mirror_above: float) -> np.ndarray:
    """Seen texels ``(T, T)`` bool that their mirror across x = 0 shows better: the photo sees the texel at a
    grazing angle (facing cosine ``cosines`` ``(T, T)`` under ``below``) and its mirror squarely (at least
    ``mirror_above``). ``below`` <= 0: none."""
    if below <= 0:
        return np.zeros_like(seen)
    return seen & (cosines < below) & seen[:, ::-1] & (cosines[:, ::-1] >= mirror_above)


def harmonic_offset(boundary: np.ndarray, region: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """The smooth correction of a Poisson blend: ``(H, W, C)``, zero outside ``region``; inside, the
    solution of Laplace's equation (5-point stencil) that equals ``boundary`` ``(H, W, C)`` on the
    ``anchors`` texels next to the region and has no flux across its other edges (the grid's border,
    texels neither in the region nor anchors). A part of the region that touches no anchor gets 0.

    region, anchors ``(H, W)`` bool, disjoint."""
    h, w = region.shape
    out = np.zeros(boundary.shape, np.float64)
    # Only the parts of the region that touch an anchor have a unique solution (the others: any constant)
    _, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=4)
    touching = np.zeros(region.shape, bool)
    padded = np.pad(anchors & ~region, 1)
    for dy, dx in _NEIGHBOURS:
        touching |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    region = np.isin(labels, np.unique(labels[region & touching])) & region
    ys, xs = np.nonzero(region)
    n = len(ys)
    if n == 0:
        return out
    index = np.full(region.shape, -1, np.int64)
    index[ys, xs] = np.arange(n)
    degree = np.zeros(n)
    rhs = np.zeros((n, boundary.shape[2]))
    rows, cols = [], []
    for dy, dx in _NEIGHBOURS:
        y2, x2 = ys + dy, xs + dx
        inside = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
        y2, x2 = y2.clip(0, h - 1), x2.clip(0, w - 1)
        linked = inside & region[y2, x2]
        anchored = inside & anchors[y2, x2] & ~region[y2, x2]
        degree += linked | anchored
        rows.append(np.nonzero(linked)[0])
        cols.append(index[y2[linked], x2[linked]])
        rhs[anchored] += boundary[y2[anchored], x2[anchored]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    laplacian = sparse.csc_matrix((np.full(len(rows), -1.0), (rows, cols)), shape=(n, n)) + \
        sparse.diags(degree, format="csc")
    out[ys, xs] = splu(laplacian).solve(rhs)
    return out


#: Inpainting works at most at this side (Telea is O(pixels x radius²)); the fill is brought back up.
INPAINT_SIDE = 256


def inpainted(image: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``image`` ``(T, T[, C])`` uint8 inpainted (Telea, radius 5) where ``missing`` ``(T, T)``, at most
    ``INPAINT_SIDE``² and brought back up: the whole filled image (every texel interpolated from the small
    one; keep the known texels from the original)."""
    t = image.shape[0]
    small = min(t, INPAINT_SIDE)
    i_small = cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA)
    m_small = cv2.resize(missing.astype(np.uint8), (small, small), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(cv2.inpaint(i_small, m_small, 5, cv2.INPAINT_TELEA), (t, t), interpolation=cv2.INTER_LINEAR)


def fill_unseen(colour: np.ndarray, alpha: np.ndarray, seen: np.ndarray, in_image: np.ndarray, heights: np.ndarray,
                blend: str = "poisson", hull_margin: float = 0.012) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """colour ``(T, T, 3)`` uint8 and alpha ``(T, T)`` float of a texture whose ``seen`` texels came from the
    photo -> the filled colour and alpha, and which texels hold known (seen or mirrored) content.

    Unseen texels whose mirror across x = 0 is seen take the mirror's colour and opacity, the colour
    Poisson-blended: its brightness shifted by the harmonic offset that meets the seen, opaque
    (alpha > 0.5) texels around them (the matte's soft edge and the background beyond it are no colour to
    match). Small enclosed unseen islands are inpainted from their own neighbourhood, not mirrored: the
    other side of a face is not symmetric to the texel (a mirrored jaw lands on the background beside the
    other jaw). The rest is inpainted. No filled texel is more opaque than the photo's matte where it
    projects (``alpha`` holds that for every texel; its largest value within ``hull_margin`` of the side,
    for the matte's pinholes): the head lies inside its outline in the photo, and heads are not symmetric
    in outline (without this, the background beside a turned head's far outline, seen on the proxy's rim,
    showed as a transparent crescent between mirrored hair and the seen head).
    Beyond the photo's edges (``in_image`` False) the filled opacity is kept to the head's proxy
    (``heights`` ``(G, G)`` above the flat surround) instead: a head cut by the crop must not continue
    as a strip of hair to the grid's edge. ``blend`` "copy": the mirror's colour as it is."""
    if blend not in MIRROR_BLENDS:
        raise ValueError(f"mirror blend {blend!r}: choose one of {', '.join(MIRROR_BLENDS)}")
    t = colour.shape[0]
    islands = unseen_islands(seen)
    mirror = seen[:, ::-1] & ~seen & ~islands
    mirrored = colour[:, ::-1].astype(np.float64)
    offset = 0.0
    if blend == "poisson":
        # one offset for the three channels: a brightness correction; the mirror keeps its own hue, where a
        # colour offset carried a background's colour that the matte's edge lets into the anchors (a red
        # flag behind the hair) over the whole filled side
        offset = harmonic_offset((colour - mirrored).mean(2, keepdims=True), mirror, seen & (alpha > 0.5))
    blended = np.clip(np.rint(mirrored + offset), 0, 255).astype(colour.dtype)
    colour = np.where(mirror[..., None], blended, colour)
    # The head lies inside its outline in the photo (the visual hull): a texel whose projection the matte
    # calls background (``alpha``, sampled there for every texel) stays transparent whatever fills it. The
    # matte is a segmentation with pinholes in hair: widened by ``hull_margin`` (a dilation), its outline
    # bounds the fill without passing the holes on.
    radius = max(0, int(round(hull_margin * t)))
    photo_alpha = alpha if radius == 0 else \
        cv2.dilate(alpha, disc(radius))
    alpha = np.where(mirror, np.where(in_image, np.minimum(alpha[:, ::-1], photo_alpha), alpha[:, ::-1]), alpha)
    known = seen | mirror
    missing = (~known).astype(np.uint8)
    if missing.any():
        filled = inpainted(colour, missing)
        a_fill = inpainted((alpha * 255).astype(np.uint8), missing).astype(np.float32) / 255.0
        head = cv2.resize((heights > heights[0, 0] + 1e-4).astype(np.float32), (t, t), interpolation=cv2.INTER_LINEAR)
        a_fill = np.where(in_image, np.minimum(a_fill, photo_alpha), a_fill * head)
        colour = np.where(missing[..., None] > 0, filled, colour)
        alpha = np.where(missing > 0, a_fill, alpha)
    return colour, alpha.astype(np.float32), known
