"""The fast renderer: an ``Avatar`` at any pose with no network evaluation per frame.

Per frame: rays on a grid at 1/``lowres_factor`` of the output resolution are intersected with the
cached height fields, the hit points are upsampled bilinearly to every pixel, the textures are
sampled there and the layers composited front to back (paper eq. 3).

Compositing has two paths. ``composite_layers`` orders the layers per pixel by depth (O(L²) per pixel).
``composite_ordered`` takes a fixed front-to-back order (O(L) per pixel): exact where the layers' height
fields do not cross (``gramcast.avatar.heightfield.layer_depth_order``), as in a GRAM bake, whose
layers are iso-surfaces of one scalar field; the background plane, which the shells' rims dip behind,
is then the one *pivot* layer placed per pixel by a depth test. ``Renderer`` checks the avatar once
(``compositing_plan``) and uses the ordered path where the check passes, the general one otherwise.

``render_cache`` is the one code path of the torch and the ONNX back ends (``onnx_export`` traces it):
static loops over the layers, no sort/scatter/in-place writes, no data-dependent shapes. It works
layers first, ``(L, [C,] B, H, W)``, so that every per-layer lookup is one batched ``grid_sample``
and no layout copies are needed between the steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gramcast import camera
from gramcast.avatar.avatar import Avatar
from gramcast.avatar.heightfield import intersect_layers, layer_depth_order
from gramcast.device import resolve_device
from gramcast.model.intersection import lowres_pixel_positions

__all__ = ["Renderer", "RenderResult", "CachedRenderModule", "render_cache", "RenderSettings", "composite_layers",
           "composite_ordered", "CompositingPlan", "compositing_plan", "upsample_layer_hits"]


#: CPU renders go in chunks of frames of at most this many layer-pixels (layers x height x width).
CPU_CHUNK_LAYER_PIXELS = 1 << 20


@dataclass(frozen=True)
class RenderSettings:
    """lowres_factor: intersections at 1/factor resolution (paper: 4). steps / refine: samples per
    ray and regula-falsi refinements of the height-field search."""

    lowres_factor: int = 4
    steps: int = 32
    refine: int = 2


@dataclass
class RenderResult:
    """rgb ``(B, 3, H, W)`` in [-1, 1] (premultiplied by alpha), alpha ``(B, 1, H, W)``, depth ``(B, 1, H, W)``."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor


def composite_layers(rgb: Tensor, alpha: Tensor, depth: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing (paper eq. 3) of a small, static number of layers, export-friendly.

    Layers first: alpha, depth, valid ``(L, *S)``, rgb ``(L, C, *S)``. Returns rgb ``(C, *S)``, alpha and
    depth ``(*S)``: the results of ``gramcast.model.renderers.composite`` (layers in depth order along
    every ray, ties in layer order, invalid layers contributing nothing), to float rounding.

    No sort, gather or scatter: the transmittance in front of layer i, prod (1 - a_j) over the layers
    j in front of it, is built from one depth comparison per pair of layers. The loop over i is
    unrolled (L is the avatar's layer count, fixed when traced); step i compares layer i with all
    later layers at once, finishes T_i and passes i's factor on to the later layers.
    """
    nl = alpha.shape[0]
    dtype = alpha.dtype
    vf = valid.to(dtype)
    a = alpha * vf
    t = depth * vf                  # invalid layers have a = 0: their depth and order do not matter
    if nl == 1:
        return rgb[0] * a, a[0], (a[0] * t[0]) / a[0].clamp_min(1e-8)
    one = torch.ones((), dtype=dtype, device=alpha.device)
    pending: Tensor | None = None          # (L - i, *S): products so far of the layers not yet finished
    total = out_rgb = depth_sum = None
    # In-place steps only on arrays made in the same step (fewer fresh arrays per frame; each costs page
    # faults on CPU). 1 - x is computed as -x + 1: the same float.
    for i in range(nl):
        if i < nl - 1:
            later_first = (t[i + 1:] < t[i]).to(dtype)         # ties keep the layer order: i first
            own = torch.addcmul(one, a[i + 1:], later_first, value=-1.0).prod(0)    # 1 - a_j where j is in front
            w = own if pending is None else own.mul_(pending[0])
            passed = later_first.neg_().add_(1.0).mul_(a[i]).neg_().add_(1.0)      # 1 - a_i where i is in front
            pending = passed if pending is None else passed.mul_(pending[1:])
        else:
            w = pending[0]
        w = w * a[i]                                                                # T_i a_i
        if total is None:
            total, out_rgb, depth_sum = w, rgb[i] * w, w * t[i]
        else:
            total = total + w
            out_rgb = torch.addcmul(out_rgb, rgb[i], w)
            depth_sum = torch.addcmul(depth_sum, w, t[i])
    return out_rgb, total, depth_sum / total.clamp_min(1e-8)


@dataclass(frozen=True)
class CompositingPlan:
    """A fixed front-to-back ``order`` of the layers other than ``pivot`` (None: of all layers); the
    pivot, where there is one, is placed per pixel by its depth. See ``composite_ordered``."""

    order: tuple[int, ...]
    pivot: int | None = None

    def describe(self) -> dict:
        return {"order": list(self.order), "pivot": self.pivot}


def compositing_plan(avatar: Avatar) -> CompositingPlan | None:
    """The ordered-compositing plan of ``avatar``, or None where its layers cross (``layer_depth_order``
    on its heights and its textures' alpha): then only ``composite_layers`` is exact."""
    found = layer_depth_order(avatar.heights, avatar.textures[:, 3])
    return None if found is None else CompositingPlan(*found)


def composite_ordered(rgb: Tensor, alpha: Tensor, depth: Tensor, valid: Tensor,
                      plan: CompositingPlan) -> tuple[Tensor, Tensor, Tensor]:
    """``composite_layers`` for layers in a known front-to-back order: O(L) per pixel, no depth sort.

    Same layout and results as ``composite_layers`` (to float rounding) wherever ``plan.order`` is the
    depth order of the layers along every ray (``compositing_plan`` checks that once per avatar). The
    transmittance is a running product, T <- T - T a (= T (1 - a)), unrolled over the static order.

    With a pivot p (a layer that crosses the others: the background plane of a GRAM bake), p is in front
    of layer i at a pixel where its depth is smaller (ties: the lower index first, as in
    ``composite_layers``); m_i = 1 where i is in front of p. One pass over the order: layer i's weight is
    T_i a_i (1 - a_p (1 - m_i)) (the chain's transmittance, times p's where p is in front of i), and p's
    is a_p prod_i (1 - a_i m_i), a second running product. The total alpha is 1 - T (1 - a_p).
    """
    dtype = alpha.dtype
    vf = valid.to(dtype)
    a = alpha * vf
    t = depth * vf                  # invalid layers have a = 0: their depth and order do not matter
    p = plan.pivot
    ap = keep_p = None
    if p is not None:
        ap = a[p]
        keep_p = 1.0 - ap                       # (1 - a_p): the factor p puts on what is behind it
    trans = pass_p = out_rgb = depth_sum = None
    # In-place steps only on arrays made in this function (fewer fresh arrays per frame; see
    # composite_layers).
    for i in plan.order:
        ai = a[i]
        w = ai if trans is None else trans * ai                                  # T_i a_i (chain only)
        trans = 1.0 - ai if trans is None else trans.sub_(w)
        if p is not None:
            in_front = ((t[i] <= t[p]) if i < p else (t[i] < t[p])).to(dtype)   # m_i: i in front of p
            front_a = ai * in_front
            pass_p = 1.0 - front_a if pass_p is None else pass_p.addcmul_(pass_p, front_a, value=-1.0)
            w = w * torch.addcmul(keep_p, ap, in_front)                          # x (1 - a_p (1 - m_i))
        if out_rgb is None:
            out_rgb, depth_sum = rgb[i] * w, w * t[i]
        else:
            out_rgb.addcmul_(rgb[i], w)
            depth_sum.addcmul_(w, t[i])
    if p is not None:
        wp = ap * pass_p
        out_rgb.addcmul_(rgb[p], wp)
        depth_sum.addcmul_(wp, t[p])
        total = (trans * keep_p).neg_().add_(1.0)
    else:
        total = trans.neg().add_(1.0)
    return out_rgb, total, depth_sum / total.clamp_min(1e-8)


def upsample_layer_hits(points: Tensor, valid: Tensor, size: tuple[int, int], height: int, width: int,
                        threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """``gramcast.model.intersection.upsample_hits`` in the renderer's layout: coarse hits
    ``(L, B, h*w, 3)`` / ``(L, B, h*w)`` -> points ``(L, 3, B, H, W)`` (channels first) and valid
    ``(L, B, H, W)``. Same values at the valid pixels; invalid pixels hold some point (unused). One
    interpolation for all layers, coordinates and validity together."""
    nl, b = valid.shape[:2]
    vf = valid.to(points.dtype)[:, None]                                   # (L, 1, B, N)
    coarse = torch.cat([points.permute(0, 3, 1, 2) * vf, vf], 1)           # (L, 4, B, N)
    up = F.interpolate(coarse.reshape(nl, 4 * b, *size), size=(height, width), mode="bilinear",
                       align_corners=True).reshape(nl, 4, b, height, width)
    cover = up[:, 3]
    # >= threshold where valid: dividing by the clamped cover is upsample_hits' division there
    return up[:, :3] / cover.clamp_min(threshold).unsqueeze(1), cover >= threshold


def render_cache(heights: Tensor, textures: Tensor, extent: float, poses: Tensor, resolution: int,
                 settings: RenderSettings = RenderSettings(),
                 plan: CompositingPlan | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """heights ``(L, 1, G, G)``, textures ``(L, 4, T, T)``, poses ``(B, 2)`` -> rgb ``(B, 3, H, W)``,
    alpha and depth ``(B, 1, H, W)``. ``plan``: composite in this fixed order (``composite_ordered``;
    the caller vouches for it, see ``compositing_plan``); None: ``composite_layers``.

    The one code path of both back ends: the ONNX model is this function traced.
    """
    b = poses.shape[0]
    nl = heights.shape[0]
    c2w = camera.pose_to_c2w(poses)
    factor = max(1, settings.lowres_factor)
    if factor > 1:   # the coarse rays directly (exact, where interpolating the full-resolution rays is not)
        uv = lowres_pixel_positions(resolution, resolution, factor, device=poses.device, dtype=poses.dtype)
    else:
        uv = camera.pixel_grid(resolution, resolution, device=poses.device, dtype=poses.dtype)
    h, w = uv.shape[:2]
    o_lr, d_lr = camera.rays_through_pixels(c2w, uv, resolution, resolution)    # (B, h, w, 3)
    # The near bound is the model's own (a manifold cap in front of it is not part of the model's image);
    # the far bound gets a margin: the background layer sits exactly on it when seen frontally.
    margin = 0.02
    pts, _, valid = intersect_layers(o_lr.reshape(b, -1, 3), d_lr.reshape(b, -1, 3), heights, extent,
                                     camera.RAY_NEAR, camera.RAY_FAR + margin,
                                     settings.steps, settings.refine)           # (L, B, N, 3), (L, B, N)
    if factor > 1:
        xyz, valid = upsample_layer_hits(pts, valid, (h, w), resolution, resolution)
    else:
        xyz, valid = pts.permute(0, 3, 1, 2).reshape(nl, 3, b, h, w), valid.reshape(nl, b, h, w)
    centre = c2w[:, :3, 3].transpose(0, 1)[:, :, None, None]                   # (3, B, 1, 1): every ray's origin
    depth = (xyz - centre).square_().sum(1).sqrt_()                              # (L, B, H, W)
    # textures at the hit points: layer l's lookups are batch entry l of one grid_sample
    grid = torch.stack([xyz[:, 0] * (1.0 / extent), xyz[:, 1] * (-1.0 / extent)], -1)   # grid_coordinates
    grid = grid.reshape(nl, b * resolution, resolution, 2)
    rgba = F.grid_sample(textures, grid, mode="bilinear", padding_mode="border", align_corners=True)
    rgba = rgba.reshape(nl, 4, b, resolution, resolution)
    if plan is not None and nl > 1:
        rgb, alpha, depth = composite_ordered(rgba[:, :3], rgba[:, 3], depth, valid, plan)
    else:
        rgb, alpha, depth = composite_layers(rgba[:, :3], rgba[:, 3], depth, valid)
    return rgb.transpose(0, 1).contiguous(), alpha.unsqueeze(1), depth.unsqueeze(1)


COMPOSITING_MODES = ("auto", "ordered", "general")


def resolve_compositing(avatar: Avatar, compositing="auto") -> CompositingPlan | None:
    """``"auto"``: the avatar's plan where its layers are verified non-crossing, else None (the general
    path); ``"general"``: None; ``"ordered"``: the plan, or a ValueError where the layers cross; a
    ``CompositingPlan``: itself (already checked by the caller). 1-layer avatars: None (nothing to order)."""
    if isinstance(compositing, CompositingPlan):
        return compositing if avatar.num_layers > 1 else None
    if compositing not in COMPOSITING_MODES:
        raise ValueError(f"unknown compositing {compositing!r}: use one of {COMPOSITING_MODES}")
    if compositing == "general" or avatar.num_layers == 1:
        return None
    plan = compositing_plan(avatar)
    if plan is None and compositing == "ordered":
        raise ValueError("this avatar's layers cross (their heights are not ordered where they are opaque): "
                         "ordered compositing would be wrong; use compositing='general' or 'auto'")
    return plan


class CachedRenderModule(nn.Module):
    """``render_cache`` with the avatar's arrays as buffers: poses ``(B, 2)`` -> (rgb, alpha, depth).
    ``compositing``: see ``resolve_compositing`` (the plan is fixed into the module, and so into its
    ONNX export)."""

    def __init__(self, avatar: Avatar, resolution: int, settings: RenderSettings = RenderSettings(),
                 compositing="auto"):
        super().__init__()
        self.plan = resolve_compositing(avatar, compositing)
        self.register_buffer("heights", avatar.heights[:, None].float().contiguous())
        self.register_buffer("textures", avatar.textures.float().contiguous())
        self.extent = float(avatar.extent)
        self.resolution = int(resolution)
        self.settings = settings

    def forward(self, poses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return render_cache(self.heights, self.textures, self.extent, poses, self.resolution, self.settings,
                            self.plan)


class Renderer:
    """``Renderer(avatar).render(poses, resolution)``: batched renders of a cached avatar.

    backend ``"torch"`` (CPU or CUDA, ``device="auto"``) or ``"onnx"`` (onnxruntime; CUDA provider
    where ``onnxruntime-gpu`` is installed, unless ``device="cpu"``; the model is ``render_cache``
    exported per resolution on first use, see ``gramcast.avatar.onnx_export``). Both back ends run the
    same code. Thread-safe for concurrent ``render`` calls.

    ``compositing``: ``"auto"`` (default) checks once here whether the avatar's layers have a fixed
    depth order (``compositing_plan``) and composites in O(L) per pixel where they do, with the general
    O(L²) path otherwise; ``"general"`` / ``"ordered"`` force one (``"ordered"`` raises where the layers
    cross). ``self.compositing`` says which is used: ``"ordered"``, ``"general"`` or ``"single"`` (1 layer).
    """

    def __init__(self, avatar: Avatar, device: str | torch.device = "auto", backend: str = "torch",
                 settings: RenderSettings = RenderSettings(), compositing="auto"):
        if backend not in ("torch", "onnx"):
            raise ValueError(f"unknown backend {backend!r}: use 'torch' or 'onnx'")
        self.avatar = avatar
        self.plan = resolve_compositing(avatar, compositing)
        self.compositing = "single" if avatar.num_layers == 1 else ("ordered" if self.plan else "general")
        self.backend = backend
        self.settings = settings
        self.requested_device = device
        self.device = resolve_device(device)
        self._modules: dict[int, CachedRenderModule] = {}
        self._onnx = None            # gramcast.avatar.onnx_export.OnnxRenderer, made on first onnx render
        if backend == "onnx":
            from gramcast.avatar.onnx_export import require_onnxruntime

            require_onnxruntime()    # a clear error now, not at the first frame

    def _module(self, resolution: int) -> CachedRenderModule:
        mod = self._modules.get(resolution)
        if mod is None:
            mod = CachedRenderModule(self.avatar, resolution, self.settings,
                                     self.plan or "general").to(self.device).eval()
            self._modules[resolution] = mod
        return mod

    @torch.no_grad()
    def render(self, poses, resolution: int = 256) -> RenderResult:
        """poses: anything ``camera.as_pose_tensor`` takes (``(B, 2)`` yaw, pitch in radians)."""
        p = camera.as_pose_tensor(poses, dtype=torch.float32)
        if self.backend == "onnx":
            from gramcast.avatar.onnx_export import run_onnx

            rgb, alpha, depth = run_onnx(self, p.numpy(), resolution)
            return RenderResult(torch.from_numpy(rgb), torch.from_numpy(alpha), torch.from_numpy(depth))
        mod = self._module(resolution)
        p = p.to(self.device)
        chunk = p.shape[0]
        if self.device.type == "cpu":
            # a frame's temporaries are ~60 arrays of layers x pixels: big batches leave the caches and
            # make the allocator map fresh pages for every array; frames in chunks ran up to 2x faster
            chunk = max(1, CPU_CHUNK_LAYER_PIXELS // (self.avatar.num_layers * resolution * resolution))
        if chunk >= p.shape[0]:
            return RenderResult(*mod(p))
        parts = [mod(c) for c in p.split(chunk)]
        return RenderResult(*(torch.cat(x) for x in zip(*parts)))

    def render_rgba(self, yaw_pitch, resolution: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """One frame as straight (not premultiplied) colour ``(H, W, 3)`` uint8 and alpha ``(H, W)`` float32."""
        out = self.render([tuple(yaw_pitch)], resolution)
        alpha = out.alpha[0, 0].float().cpu()
        rgb = out.rgb[0].float().cpu() / alpha.clamp_min(1e-4)
        rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return rgb, alpha.numpy()
