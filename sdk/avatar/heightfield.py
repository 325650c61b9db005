"""Rays against stacks of height fields, and texture lookups on them (pure functions).

The avatar cache parameterises every manifold by an orthographic (x, y) grid of the canonical frame:
layer ``l`` is the surface ``z = h_l(x, y)`` over the square ``[-extent, extent]²``. Grids are
sampled with ``grid_sample(align_corners=True)``: grid index 0 sits at ``-extent``, index ``G-1`` at
``+extent``.

A ray ``o + t d`` meets layer ``l`` where ``f(t) = o_z + t d_z - h_l(o_xy + t d_xy)`` changes sign
from positive (in front of the surface, seen from a camera at +z) to negative. ``f`` is sampled at
``steps`` depths in [near, far]; the first bracketing interval is refined by ``refine`` regula-falsi
steps. The error after refinement is bounded by the height field's curvature along the ray over
the final bracket, well below a texel for the smooth surfaces the cache holds. A flat layer (constant
height: the background plane) is hit analytically instead, at any depth, as the model hits its plane,
and is left out of the search (``flat_layers`` finds them once per avatar).

Everything here traces to ONNX with the TorchScript exporter (``gramcast.avatar.onnx_export``): static
loops only, no in-place writes, no data-dependent shapes (``flat_layers`` runs before tracing; its
answer, a property of the avatar, is fixed into the export).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast.model.intersection import intersect_plane_z

__all__ = ["sample_grid", "grid_coordinates", "intersect_heightfields", "intersect_layers", "flat_layers",
           "bracketed_search", "may_branch_on_values", "sample_each_layer", "sample_textures"]


def grid_coordinates(xy: Tensor, extent: float) -> Tensor:
    """World ``(..., 2)`` (x, y) -> ``grid_sample`` coordinates: x -> width, y -> height; grid_sample's
    +y is down the rows and row 0 of our grids is y = +extent (image-like storage)."""
    # scalars, not a tensor made from a list: that would be a host-to-device copy, which a CUDA graph
    # capture of the renderer refuses
    return torch.stack([xy[..., 0] * (1.0 / extent), xy[..., 1] * (-1.0 / extent)], -1)


def sample_grid(grids: Tensor, xy: Tensor, extent: float) -> Tensor:
    """Bilinear lookups of per-layer grids.

    grids: ``(L, C, G, G)``; xy: ``(L, M, 2)`` world coordinates for each layer. Returns ``(L, C, M)``.
    Outside the square the border value is repeated.
    """
    g = grid_coordinates(xy, extent).unsqueeze(2)                                  # (L, M, 1, 2)
    return F.grid_sample(grids, g, mode="bilinear", padding_mode="border", align_corners=True).squeeze(-1)


def _select(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``where(mask, a, b)`` for finite values and a 0/1 float mask, as one ``lerp`` (exact at weights 0
    and 1: torch computes ``a - (a - b) (1 - w)`` for w >= 0.5); ``torch.where`` is several times slower
    on CPU, and the product form took four passes."""
    return torch.lerp(b, a, mask)


def flat_layers(heights: Tensor, tol: float = 1e-6) -> tuple[int, ...]:
    """Indices of the layers of ``heights`` ``(L, 1, G, G)`` whose height is constant (to ``tol``): a GRAM
    bake's background plane. A property of the avatar, found once: ``intersect_layers`` hits them
    analytically, and the search skips them."""
    spread = heights.flatten(1).amax(1) - heights.flatten(1).amin(1)
    return tuple(int(i) for i in torch.nonzero(spread <= tol).flatten().tolist())


def _runs(mask: list[bool]) -> list[tuple[int, int, bool]]:
    """(start, stop, value) of the maximal runs of equal values in ``mask``."""
    runs: list[tuple[int, int, bool]] = []
    for i, m in enumerate(mask):
        if runs and runs[-1][2] == m:
            runs[-1] = (runs[-1][0], i + 1, m)
        else:
            runs.append((i, i + 1, m))
    return runs


def may_branch_on_values(t: Tensor) -> bool:
    """Whether a frame's computation may look at the values of ``t`` to choose its work (the shapes of
    what it does next): on the CPU, eagerly. Not on a GPU (the host would wait for the values, and a CUDA
    graph capture refuses reading them) nor when traced for the ONNX export (shapes fixed at export);
    those take the static path, which gives the same frames."""
    return t.device.type == "cpu" and not torch.jit.is_tracing()


def _lookup_chunks(rows: int, device: torch.device) -> int:
    """Batch entries for the search's one height lookup: the CPU threads (a divisor of ``rows``); one on a
    GPU, whose kernel parallelises over every sample, and when traced (the ONNX export is fixed at one)."""
    if device.type != "cpu" or torch.jit.is_tracing():
        return 1
    c = max(1, torch.get_num_threads())
    while rows % c:
        c -= 1
    return c


def _rank_dtype(samples: int) -> torch.dtype:
    """The narrowest integer type that holds the crossings' ranks 2..``samples`` (bytes while they fit: the
    search's largest arrays are of it)."""
    return torch.uint8 if samples < 256 else torch.int32


def _search_layers(origins: Tensor, directions: Tensor, heights: Tensor, extent: float,
                   near: float, far: float, steps: int, refine: int) -> tuple[Tensor, Tensor]:
    """The sampled search and refinement (module docstring) of every layer: depths and found ``(L, B, N)``."""
    b, n, _ = origins.shape
    nl = heights.shape[0]
    dtype = origins.dtype
    ts = torch.linspace(near, far, steps, device=origins.device, dtype=dtype)
    # the search samples (B, K, N): grid coordinates and z straight from the rays (no (B, K, N, 3) points)
    g0 = grid_coordinates(origins[..., :2], extent)                                  # (B, N, 2)
    gd = grid_coordinates(directions[..., :2], extent)
    g = g0[:, None] + ts[:, None, None] * gd[:, None]
    z = origins[:, None, :, 2] + ts[:, None] * directions[:, None, :, 2]
    in_front = _in_front_at_samples(heights, g, z)                                  # (L, B, K, N)
    # a crossing from in front to behind between samples k and k + 1
    cross = (in_front[:, :, :-1] > in_front[:, :, 1:]).to(torch.uint8)             # (L, B, K-1, N)
    # the first crossing k scores steps - k, no crossing 0: a max reduction over k is several times
    # faster than argmax over a middle axis
    rank = (steps - torch.arange(steps - 1, device=origins.device)).to(_rank_dtype(steps))
    score = (cross * rank[:, None]).amax(dim=2).long()                              # (L, B, N)
    found = score > 0
    # the bracket [ts[k], ts[k + 1]] of crossing k = steps - score, looked up by the score; without a
    # crossing any bracket does (its depth is not used: not found)
    k_of_score = (steps - torch.arange(steps + 1, device=ts.device)).clamp(max=steps - 2)
    t0, t1 = ts[k_of_score].take(score), ts[k_of_score + 1].take(score)
    oz, dz = origins[None, ..., 2], directions[None, ..., 2]                          # (1, B, N)

    def f_at(t: Tensor) -> Tensor:
        return oz + t * dz - _lookup_heights(heights, (g0[None] + t[..., None] * gd[None]).reshape(nl, -1, 2)
                                             ).reshape(nl, b, n)

    # the bracket's ends looked up again, per layer at its own k (the same values as at the samples)
    return _regula_falsi(t0, f_at(t0), t1, f_at(t1), f_at, refine), found


#: Search steps whose samples are looked up together on the CPU (``_in_front_at_samples``), and the fewest
#: searched layers for which that pays (fewer: one lookup of every layer at every step).
SLAB_STEPS, SLAB_MIN_LAYERS = 4, 8
#: How far (world units) a sample must lie above a layer's highest height or below its lowest for its side
#: to count as known: far beyond the rounding of a bilinear lookup between the grid's values.
SLAB_MARGIN = 1e-5


def _in_front_at_samples(heights: Tensor, g: Tensor, z: Tensor) -> Tensor:
    """Whether each search sample is in front of each layer, ``h_l <= z``: heights ``(L, 1, G, G)``, the
    samples' grid coordinates ``g`` ``(B, K, N, 2)`` and heights ``z`` ``(B, K, N)`` -> ``(L, B, K, N)`` bool.

    Every layer at the same samples: the layers are the channels of one lookup (weights found once). On
    the CPU, with ``SLAB_MIN_LAYERS`` or more, a layer's side is known without a lookup at the steps where
    every ray's sample lies above its highest height or below its lowest (a bilinear lookup stays within
    the grid's values), so each group of ``SLAB_STEPS`` steps looks up only the run of layers whose height
    range it reaches: 0.4 (frontal) to 0.9 (a turned head) of the pairs. The same answers either way
    (1.02-1.06x frames/s for 24-layer avatars on 2 cores); GPUs and the ONNX export make one static lookup.
    """
    nl = heights.shape[0]
    b, steps, n = z.shape
    grids = heights.reshape(1, nl, *heights.shape[2:])
    eager_cpu = may_branch_on_values(g)
    if eager_cpu:
        # the layers' heights at one grid point side by side: one lookup reads 4 short runs, not 4 x L values
        # a grid apart (1.02-1.05x frames/s, median, for 12- and 24-layer avatars on 2 cores; bench/render_ab.py)
        grids = grids.contiguous(memory_format=torch.channels_last)
    if nl < SLAB_MIN_LAYERS or not eager_cpu:
        return _lookup_layers(grids, g).reshape(nl, b, steps, n) <= z
    flat = heights.reshape(nl, -1)
    low, high = flat.amin(1) - SLAB_MARGIN, flat.amax(1) + SLAB_MARGIN
    z_low, z_high = z.amin(dim=(0, 2)), z.amax(dim=(0, 2))                           # (K,)
    above = z_low > high[:, None]                                                   # (L, K): in front at every ray
    needed = ~above & (z_high >= low[:, None])
    in_front = above[:, None, :, None].expand(nl, b, steps, n).contiguous()
    for k0 in range(0, steps, SLAB_STEPS):
        k1 = min(steps, k0 + SLAB_STEPS)
        layers = torch.nonzero(needed[:, k0:k1].any(1)).flatten()
        if layers.numel():
            lo, hi = int(layers[0]), int(layers[-1]) + 1
            h = _lookup_layers(grids[:, lo:hi], g[:, k0:k1]).reshape(hi - lo, b, k1 - k0, n)
            in_front[lo:hi, :, k0:k1] = h <= z[:, k0:k1]
    return in_front


def _lookup_layers(grids: Tensor, g: Tensor) -> Tensor:
    """Every layer of ``grids`` ``(1, L, G, G)`` at every point of ``g`` ``(..., 2)`` -> ``(L, M)``, M the points:
    the layers as the channels of one grid (``sample_each_layer``, which spreads the points over the CPU threads)."""
    m = g.numel() // 2
    return sample_each_layer(grids, g.reshape(1, m, 1, 2)).reshape(grids.shape[1], m)


def _regula_falsi(t0: Tensor, f0: Tensor, t1: Tensor, f1: Tensor, f_at, refine: int) -> Tensor:
    """The crossing of ``f`` (>= 0 in front of the surface) in each bracket [t0, t1] (f0 >= 0 > f1), by
    ``refine`` regula-falsi steps, each keeping the half that still brackets it; ``f_at(t)`` evaluates f."""
    for it in range(refine + 1):
        diff = f0 - f1
        ok = (diff.abs() > 1e-12).to(f0.dtype)
        t = t0 + (t1 - t0) * (f0 / _select(ok, diff, torch.ones_like(diff))).clamp(0.0, 1.0)
        if it == refine:
            break
        ft = f_at(t)
        in_front = (ft >= 0).to(f0.dtype)
        t0, f0, t1, f1 = (_select(in_front, t, t0), _select(in_front, ft, f0),
                          _select(in_front, t1, t), _select(in_front, f1, ft))
    return t


def sample_each_layer(grids: Tensor, grid: Tensor) -> Tensor:
    """Layer l of ``grids`` ``(L, C, G, G)`` at its own lookup grid ``grid[l]`` ``(L, R, W, 2)`` (``grid_sample``
    coordinates; bilinear, the border repeated) -> ``(L, C, R, W)``. ``grid_sample`` parallelises over its
    batch only, so on the CPU a single layer's R rows go in as one batch entry per thread: same values."""
    nl, r = grid.shape[:2]
    c = _lookup_chunks(r, grid.device) if nl == 1 else 1
    if c == 1:
        return F.grid_sample(grids, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = F.grid_sample(grids.expand(c, -1, -1, -1), grid.reshape(c, r // c, *grid.shape[2:]), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.transpose(0, 1).reshape(1, grids.shape[1], r, grid.shape[2])


def _lookup_heights(heights: Tensor, g: Tensor) -> Tensor:
    """Each layer's heights ``(L, 1, G, G)`` at its own grid coordinates ``(L, M, 2)`` -> ``(L, M)``."""
    nl, m = g.shape[:2]
    return sample_each_layer(heights, g.reshape(nl, m, 1, 2)).reshape(nl, m)


def bracketed_search(origins: Tensor, directions: Tensor, heights: Tensor, extent: float, t_lo: Tensor,
                     t_hi: Tensor, samples: int, refine: int) -> tuple[Tensor, Tensor]:
    """The first crossing of each layer along each ray within that ray's own bracket ``[t_lo, t_hi]``
    ``(L, B, N)``: ``samples`` evenly spaced samples, then ``refine`` regula-falsi steps (as the full
    search, module docstring). origins, directions ``(L, B, N, 3)`` (each layer its own rays); heights
    ``(L, 1, G, G)``. Returns depths and found ``(L, B, N)`` (not found: no crossing in the bracket, or an
    empty bracket, t_lo > t_hi)."""
    nl, b, n = t_lo.shape
    dtype = origins.dtype
    frac = torch.linspace(0.0, 1.0, samples, device=origins.device, dtype=dtype)
    ts = t_lo[:, :, None] + (t_hi - t_lo)[:, :, None] * frac[:, None]               # (L, B, K, N)
    g0 = grid_coordinates(origins[..., :2], extent)[:, :, None]                     # (L, B, 1, N, 2)
    gd = grid_coordinates(directions[..., :2], extent)[:, :, None]
    oz, dz = origins[:, :, None, :, 2], directions[:, :, None, :, 2]               # (L, B, 1, N)
    h = _lookup_heights(heights, (g0 + ts[..., None] * gd).reshape(nl, -1, 2)).reshape(nl, b, samples, n)
    f = oz + ts * dz - h                                                            # >= 0: in front
    in_front = f >= 0
    cross = (in_front[:, :, :-1] & ~in_front[:, :, 1:]).to(torch.uint8)             # (L, B, K-1, N)
    rank = (samples - torch.arange(samples - 1, device=origins.device)).to(_rank_dtype(samples))
    score = (cross * rank[:, None]).amax(dim=2).long()                              # first crossing scores most
    found = (score > 0) & (t_lo <= t_hi)
    k = ((samples - score) * (score > 0))[:, :, None]                               # (L, B, 1, N)
    t0, t1 = ts.gather(2, k)[:, :, 0], ts.gather(2, k + 1)[:, :, 0]
    f0, f1 = f.gather(2, k)[:, :, 0], f.gather(2, k + 1)[:, :, 0]
    o_g, d_g = g0[:, :, 0], gd[:, :, 0]                                             # (L, B, N, 2)
    oz, dz = oz[:, :, 0], dz[:, :, 0]

    def f_at(t: Tensor) -> Tensor:
        return oz + t * dz - _lookup_heights(heights, (o_g + t[..., None] * d_g).reshape(nl, -1, 2)).reshape(nl, b, n)

    return _regula_falsi(t0, f0, t1, f1, f_at, refine), found


def intersect_layers(origins: Tensor, directions: Tensor, heights: Tensor, extent: float,
                     near: float, far: float, steps: int = 32, refine: int = 2,
                     flat: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``intersect_heightfields`` with the layers first: points ``(L, B, N, 3)``, depths and valid
    ``(L, B, N)`` (the layout the renderer works in).

    ``flat``: the flat layers (``flat_layers(heights)``, found here when None; a renderer passes them, as
    they belong to the avatar). They are hit as the model hits its plane, at any depth: oblique views see
    a GRAM bake's background plane beyond the search's far bound. The other layers are searched.
    """
    nl = heights.shape[0]
    if flat is None:
        flat = flat_layers(heights)
    o, d = origins[None], directions[None]                                           # (1, B, N, 3)
    ts_parts, ok_parts = [], []
    for lo, hi, is_flat in _runs([i in flat for i in range(nl)]):
        if is_flat:
            _, t, ok = intersect_plane_z(o, d, heights[lo:hi, 0, 0, 0, None, None])    # (L', B, N)
        else:
            t, ok = _search_layers(origins, directions, heights[lo:hi], extent, near, far, steps, refine)
        ts_parts.append(t)
        ok_parts.append(ok)
    t = ts_parts[0] if len(ts_parts) == 1 else torch.cat(ts_parts)
    found = ok_parts[0] if len(ok_parts) == 1 else torch.cat(ok_parts)
    p = o + t[..., None] * d
    inside = (p[..., 0].abs() <= extent) & (p[..., 1].abs() <= extent)
    return p, t, found & inside


def intersect_heightfields(origins: Tensor, directions: Tensor, heights: Tensor, extent: float,
                           near: float, far: float, steps: int = 32, refine: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """First crossing of every height field along every ray.

    origins, directions: ``(B, N, 3)`` (unit directions); heights: ``(L, 1, G, G)``.
    Returns points ``(B, L, N, 3)``, depths ``(B, L, N)`` and valid ``(B, L, N)`` (a crossing inside
    [near, far] whose (x, y) lies inside the grid's square).
    """
    p, t, valid = intersect_layers(origins, directions, heights, extent, near, far, steps, refine)
    return p.transpose(0, 1), t.transpose(0, 1), valid.transpose(0, 1)


def sample_textures(textures: Tensor, points: Tensor, extent: float) -> tuple[Tensor, Tensor]:
    """RGBA of each layer at its hit points.

    textures: ``(L, 4, T, T)`` (rgb in [-1, 1], alpha in [0, 1]); points ``(B, L, *S, 3)``.
    Returns rgb ``(B, L, *S, 3)`` and alpha ``(B, L, *S)``.
    """
    b, nl = points.shape[:2]
    lead = points.shape[2:-1]
    xy = points[..., :2].transpose(0, 1).reshape(nl, -1, 2)
    rgba = sample_grid(textures, xy, extent)                                         # (L, 4, B*M)
    rgba = rgba.reshape(nl, 4, b, -1).permute(2, 0, 3, 1).reshape(b, nl, *lead, 4)
    return rgba[..., :3], rgba[..., 3]
