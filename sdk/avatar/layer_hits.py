"""Where each pixel's ray hits each layer of an avatar: what the renderer shades (pure functions).

Rays on a grid at 1/``lowres_factor`` of the output resolution are intersected with the cached height
fields (``coarse_layer_samples``); each hit's texture coordinates and depth are upsampled bilinearly to
every pixel (``upsample_layer_samples``, as the model upsamples its hit points). Upsampled hits blend the
two sides of an occlusion edge (a cheek in front of the hair behind it) into the coarse grid's steps, so
for one-layer avatars the pixels along such edges are searched again on their own rays
(``refine_layer_samples``, ``RenderSettings.edge_samples``). Static shapes throughout: the ONNX export
traces these as they are (``gramcast.avatar.renderer.render_cache``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast import camera
from gramcast.avatar.heightfield import bracketed_search, grid_coordinates, intersect_layers
from gramcast.checks import is_whole
from gramcast.errors import InvalidArgumentError
from gramcast.model.intersection import lowres_pixel_positions

__all__ = ["RenderSettings", "EDGE_SAMPLES", "EDGE_PIXELS_PER_ROW", "edge_search_samples", "coarse_layer_samples",
           "upsample_layer_samples", "upsample_covered_samples", "refine_layer_samples"]


@dataclass(frozen=True)
class RenderSettings:
    """lowres_factor: intersections at 1/factor resolution (paper: 4; a whole number >= 1). steps / refine:
    samples per ray (>= 2) and regula-falsi refinements (>= 0) of the height-field search. A value outside
    these is an ``InvalidArgumentError`` naming the field."""

    lowres_factor: int = 4
    steps: int = 32
    refine: int = 2
    #: Samples of a second, per-pixel search at the full resolution, along each pixel's own ray between the
    #: nearest and farthest coarse hits around it (then ``refine`` steps): where a surface occludes another
    #: (a cheek over the hair behind it), upsampled coarse hits blend the two and the edge shows the coarse
    #: grid's steps. None: on (``EDGE_SAMPLES``) for avatars of one drawn layer, whose frames are cheap, off
    #: for more; 0: off.
    edge_samples: int | None = None

    def __post_init__(self) -> None:
        # at least 2 samples bracket a crossing; a factor under 1 or a negative count has no meaning, and a
        # fraction would be truncated somewhere down the line
        for name, least in (("lowres_factor", 1), ("steps", 2), ("refine", 0), ("edge_samples", 0)):
            value = getattr(self, name)
            if name == "edge_samples" and value is None:
                continue
            if not is_whole(value) or value < least:
                allowed = f"a whole number >= {least}" + (" or None" if name == "edge_samples" else "")
                raise InvalidArgumentError(f"RenderSettings.{name} must be {allowed}, got {value!r}")
            object.__setattr__(self, name, int(value))    # numpy's integers as int: the settings go into JSON


#: ``RenderSettings.edge_samples`` where None picks it (one-layer avatars).
EDGE_SAMPLES = 12
#: How many pixels per image row are searched again at full resolution (those nearest an occlusion edge):
#: the band along an edge is a few coarse cells wide, so its area grows with the resolution, not its square.
EDGE_PIXELS_PER_ROW = 16


def edge_search_samples(settings: RenderSettings, num_layers: int) -> int:
    """Samples of the full-resolution edge search a render of ``num_layers`` drawn layers makes (0: none)."""
    if settings.lowres_factor <= 1:
        return 0          # every pixel is searched at full resolution already
    edge = settings.edge_samples if settings.edge_samples is not None else (EDGE_SAMPLES if num_layers == 1 else 0)
    return edge if edge > 1 else 0


def coarse_layer_samples(heights: Tensor, extent: float, c2w: Tensor, resolution: int,
                         settings: RenderSettings = RenderSettings(),
                         flat: tuple[int, ...] | None = None) -> tuple[Tensor, tuple[int, int]]:
    """What shading needs of each layer's ray hits, on the coarse ray grid: texture coordinates u, v
    (``grid_sample``'s), depth (the ray parameter: directions are unit and start at the camera) and
    validity, the first three zeroed where invalid: ``(L, 4, B, h*w)`` and the grid's size ``(h, w)``
    (the full resolution where ``settings.lowres_factor`` is 1).

    heights ``(L, 1, G, G)``, cameras ``c2w`` ``(B, 4, 4)``; ``flat``: as in ``render_cache``.
    """
    b = c2w.shape[0]
    factor = max(1, settings.lowres_factor)
    if factor > 1:   # the coarse rays directly (exact, where interpolating the full-resolution rays is not)
        uv = lowres_pixel_positions(resolution, resolution, factor, device=c2w.device, dtype=c2w.dtype)
    else:
        uv = camera.pixel_grid(resolution, resolution, device=c2w.device, dtype=c2w.dtype)
    h, w = uv.shape[:2]
    o_lr, d_lr = camera.rays_through_pixels(c2w, uv, resolution, resolution)    # (B, h, w, 3)
    # The search bounds are the model's own: a manifold beyond them is not part of the model's image. The
    # background plane is hit at any depth (flat layers are, in intersect_layers), as in the model.
    pts, ts, valid = intersect_layers(o_lr.reshape(b, -1, 3), d_lr.reshape(b, -1, 3), heights, extent,
                                     camera.RAY_NEAR, camera.RAY_FAR,
                                     settings.steps, settings.refine, flat)     # (L, B, N, 3), (L, B, N)
    vf = valid.to(pts.dtype)[:, None]                                           # (L, 1, B, N)
    uv = grid_coordinates(pts[..., :2], extent).permute(0, 3, 1, 2)               # (L, 2, B, N)
    return torch.cat([uv * vf, ts[:, None] * vf, vf], 1), (h, w)               # (L, 4, B, N)


def upsample_layer_samples(coarse: Tensor, size: tuple[int, int], height: int, width: int,
                           threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Coarse per-layer samples ``(L, 4, B, h*w)`` -- texture coordinates u, v, depth, each times the
    validity, and the validity -- to texture lookup grids ``(L, B, H, W, 2)``, depth and valid
    ``(L, B, H, W)``, by one bilinear interpolation. As ``gramcast.model.intersection.upsample_hits``,
    the covered fraction normalises the interpolated values and a pixel is valid where it reaches
    ``threshold``; invalid pixels hold some value (unused)."""
    nl, _, b = coarse.shape[:3]
    up = F.interpolate(coarse.reshape(nl, 4 * b, *size), size=(height, width), mode="bilinear",
                       align_corners=True).reshape(nl, 4, b, height, width)
    cover = up[:, 3]
    inv = cover.clamp_min(threshold).reciprocal_()
    return _lookup_grid(up[:, :2] * inv[:, None]), up[:, 2] * inv, cover >= threshold


def _lookup_grid(uv: Tensor) -> Tensor:
    """Planar texture coordinates ``(L, 2, B, H, W)`` as ``grid_sample``'s lookup grid ``(L, B, H, W, 2)``: a
    view, not a copy. grid_sample reads planar coordinates as fast as interleaved pairs, and interleaving
    them was a pass over every layer-pixel (0.5-1 ms of a 24-layer frame at 256²)."""
    return uv.permute(0, 2, 3, 4, 1)


def upsample_covered_samples(coarse: Tensor, size: tuple[int, int], height: int,
                             width: int) -> tuple[Tensor, Tensor]:
    """``upsample_layer_samples`` of layers hit at every coarse sample: lookup grids ``(L, B, H, W, 2)`` and
    depth ``(L, B, H, W)``, every pixel valid. The covered fraction is 1 at every pixel, so the interpolated
    values need no normalising (dividing by the interpolated 1 changes them by a rounding at most) and the
    validity channel is not interpolated: three channels where there are four, and three passes fewer."""
    nl, _, b = coarse.shape[:3]
    up = F.interpolate(coarse[:, :3].reshape(nl, 3 * b, *size), size=(height, width), mode="bilinear",
                       align_corners=True).reshape(nl, 3, b, height, width)
    return _lookup_grid(up[:, :2]), up[:, 2]


def _pixel_rays(c2w: Tensor, index: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """The rays of the pixels ``index`` ``(L, B, K)`` (row-major in ``resolution``² frames) of the cameras
    ``c2w`` ``(B, 4, 4)``: origins and unit directions ``(L, B, K, 3)``, as ``camera.rays_through_pixels``."""
    f = camera.focal_length(resolution)
    u = (index % resolution).to(c2w.dtype) + 0.5
    v = torch.div(index, resolution, rounding_mode="floor").to(c2w.dtype) + 0.5
    dirs = torch.stack([(u - resolution / 2.0) / f, -(v - resolution / 2.0) / f, -torch.ones_like(u)], -1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    d = torch.einsum("bij,lbkj->lbki", c2w[:, :3, :3], dirs)
    return c2w[None, :, None, :3, 3].expand_as(d), d


def refine_layer_samples(coarse: Tensor, size: tuple[int, int], c2w: Tensor, resolution: int,
                         heights: Tensor, extent: float, settings: RenderSettings,
                         samples: int) -> tuple[Tensor, Tensor, Tensor]:
    """``upsample_layer_samples`` with the hits near occlusion edges searched again, each on its own
    full-resolution ray (``RenderSettings.edge_samples``): coarse samples ``(L, 4, B, h*w)`` of ``heights``
    ``(L, 1, G, G)``; cameras ``c2w`` ``(B, 4, 4)`` of ``resolution``² frames. Returns lookup grids
    ``(L, B, H, W, 2)``, depth and valid ``(L, B, H, W)``.

    A pixel's bracket spans the coarse hits in the 3x3 coarse cells around it, widened by two search
    steps. Where those hits agree the upsampled hit is already right; the ``EDGE_PIXELS_PER_ROW`` x H pixels
    with the widest brackets (an occlusion edge is a thin band) are searched, a fixed number, so the shapes
    stay static; where nothing crosses in a bracket the upsampled hit stays."""
    nl, _, b = coarse.shape[:3]
    hh = ww = resolution
    grid, depth, ok = upsample_layer_samples(coarse, size, hh, ww)
    t_c = coarse[:, 2].reshape(nl * b, 1, *size)
    hit = coarse[:, 3].reshape(nl * b, 1, *size) > 0
    far = camera.RAY_FAR
    margin = 2.0 * (camera.RAY_FAR - camera.RAY_NEAR) / settings.steps
    # a neighbour without a hit does not bound the bracket from the front, and extends it to the far bound
    lo = -F.max_pool2d(-torch.where(hit, t_c, torch.full_like(t_c, 4.0 * far)), 3, 1, 1)
    hi = F.max_pool2d(torch.where(hit, t_c, torch.full_like(t_c, far)), 3, 1, 1)
    lo, hi = lo - margin, hi + margin
    h, w = size
    # Every pixel takes its bracket from the coarse cell it lies in (nearest: row y is in cell y h // H), so
    # the widest cells are picked and their pixels searched: a block of by x bx pixels from the cell's first
    # one (where the size is not a multiple of the cell, a few cells cover one row or column more, which
    # keeps its upsampled hits). Integer arithmetic, so that both back ends pick the same pixels; cells of
    # equal width (many, on a small grid) go in index order: the width in steps of 2^-20 of a world unit,
    # then the index, as one integer key.
    by, bx = hh // h, ww // w
    lo, hi = lo.reshape(nl, b, h * w), hi.reshape(nl, b, h * w)
    key = (torch.round((hi - lo) * 2.0 ** 20).to(torch.int64) * (h * w)
           + torch.arange(h * w - 1, -1, -1, device=lo.device))
    cells = key.topk(min(h * w, -(-EDGE_PIXELS_PER_ROW * hh // (by * bx))), dim=-1, sorted=False).indices
    y0 = torch.div(torch.div(cells, w, rounding_mode="floor") * hh + (h - 1), h, rounding_mode="floor")
    x0 = torch.div((cells % w) * ww + (w - 1), w, rounding_mode="floor")
    block = (torch.arange(by, device=cells.device)[:, None] * ww + torch.arange(bx, device=cells.device)).reshape(-1)
    pick = ((y0 * ww + x0)[..., None] + block).reshape(nl, b, -1)                   # (L, B, cells x by bx)
    lo_p = lo.gather(2, cells)[..., None].expand(-1, -1, -1, by * bx).reshape(nl, b, -1)
    hi_p = hi.gather(2, cells)[..., None].expand(-1, -1, -1, by * bx).reshape(nl, b, -1)
    o, d = _pixel_rays(c2w, pick, resolution)
    t, found = bracketed_search(o, d, heights, extent, lo_p, hi_p, samples, settings.refine)
    xy = o[..., :2] + t[..., None] * d[..., :2]                                     # (L, B, k, 2)
    found = found & (xy.abs() <= extent).all(-1)
    # the searched pixels' results over the upsampled ones, where they found a hit
    flat_grid, pick2 = grid.reshape(nl, b, hh * ww, 2), pick[..., None].expand(-1, -1, -1, 2)
    g_new = torch.where(found[..., None], grid_coordinates(xy, extent), flat_grid.gather(2, pick2))
    grid = flat_grid.scatter(2, pick2, g_new).reshape(nl, b, hh, ww, 2)
    flat_depth = depth.reshape(nl, b, hh * ww)
    depth = flat_depth.scatter(2, pick, torch.where(found, t, flat_depth.gather(2, pick))).reshape(nl, b, hh, ww)
    flat_ok = ok.reshape(nl, b, hh * ww)
    ok = flat_ok.scatter(2, pick, found | flat_ok.gather(2, pick)).reshape(nl, b, hh, ww)
    return grid, depth, ok
