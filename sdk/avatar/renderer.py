"""The fast renderer: an ``Avatar`` at any pose with no network evaluation per frame.

Per frame: each pixel's hit on each layer (``gramcast.avatar.layer_hits``: a ray/height-field search at
1/``lowres_factor`` of the output resolution, upsampled, occlusion edges searched again for one-layer
avatars), the textures sampled there, and the layers composited front to back (paper eq. 3).

Compositing has two paths (``gramcast.avatar.layer_compositing``): per pixel by depth, O(L²), or in a
fixed front-to-back order, O(L), where the avatar's layers do not cross. ``Renderer`` checks the avatar
once (``compositing_plan``) and uses the ordered path where the check passes, the general one otherwise.

``render_cache`` is the one code path of the torch and the ONNX back ends (``onnx_export`` traces it):
static loops over the layers, no sort/scatter, no data-dependent shapes. It works layers first,
``(L, [C,] B, H, W)``, so that a group of layers' lookups is one batched ``grid_sample`` and no layout
copies are needed between the steps. On the CPU the ordered path shades the layers in groups just
before compositing them (``pass_pixels``): at 256² and beyond all L layers' arrays at once leave the
caches, and one group's stay in them. A GPU (and the ONNX export) takes every layer in one pass.
On the CPU a frame also chooses some work by its values (``heightfield.may_branch_on_values``): layers
hit at every coarse sample are upsampled without normalising (``upsample_covered_samples``), and the
search looks up only the layers a group of its steps can cross; GPUs and the export run the static path,
which draws the same frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gramcast import camera
from gramcast.avatar.avatar import Avatar
from gramcast.avatar.cuda_graphs import GraphedCall
from gramcast.avatar import heightfield
from gramcast.avatar.heightfield import flat_layers, sample_each_layer
from gramcast.avatar.layer_hits import (EDGE_PIXELS_PER_ROW, EDGE_SAMPLES, RenderSettings, coarse_layer_samples,
                                        edge_search_samples, refine_layer_samples, upsample_covered_samples,
                                        upsample_layer_samples)
from gramcast.avatar.layer_compositing import (CompositingPlan, OrderedCompositor, composite_layers,
                                               composite_ordered, compositing_plan)
from gramcast.device import available_device
from gramcast.errors import GramcastError, InvalidArgumentError

__all__ = ["Renderer", "RenderResult", "CachedRenderModule", "render_cache", "RenderSettings", "composite_layers",
           "drawn_layers",
           "composite_ordered", "OrderedCompositor", "CompositingPlan", "compositing_plan", "upsample_layer_samples",
           "refine_layer_samples", "EDGE_SAMPLES", "EDGE_PIXELS_PER_ROW"]


#: CPU renders go in chunks of frames of at most this many layer-pixels (layers x height x width).
CPU_CHUNK_LAYER_PIXELS = 1 << 20


#: Output sizes (pixels a side) a renderer makes.
MIN_RESOLUTION, MAX_RESOLUTION = 16, 4096


def check_resolution(resolution, name: str = "resolution") -> int:
    """``resolution`` as an int, or an ``InvalidArgumentError`` (a ``GramcastError``) that says what is allowed;
    ``name``: what the caller calls it (a command-line option, checked before any work)."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be a whole number of pixels, got {resolution!r}")
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise InvalidArgumentError(f"{name} {resolution} is outside {MIN_RESOLUTION}..{MAX_RESOLUTION} pixels: "
                                   "give a size in that range")
    return int(resolution)


@dataclass
class RenderResult:
    """rgb ``(B, 3, H, W)`` in [-1, 1] (premultiplied by alpha), alpha ``(B, 1, H, W)``, depth ``(B, 1, H, W)``."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor


def layer_runs(order: tuple[int, ...], max_len: int, kinds: list | None = None) -> list[list[int]]:
    """Split a compositing order into runs of at most ``max_len`` consecutive layer indices (ascending or
    descending), so that each run's layers are one slice of the stacks: ``(3, 2, 1, 0, 5)`` by 3 ->
    ``[[3, 2, 1], [0], [5]]``. ``kinds`` (one value per layer index): a run also ends where the kind
    changes (layers shaded differently go in different runs)."""
    runs: list[list[int]] = []
    for i in order:
        run = runs[-1] if runs else None
        if run and kinds is not None and kinds[i] != kinds[run[-1]]:
            run = None
        if run and len(run) < max_len and (len(run) == 1 and abs(i - run[-1]) == 1 or
                                           len(run) > 1 and i - run[-1] == run[-1] - run[-2]):
            run.append(i)
        else:
            runs.append([i])
    return runs


def render_cache(heights: Tensor, textures: Tensor, extent: float, poses: Tensor, resolution: int,
                 settings: RenderSettings = RenderSettings(),
                 plan: CompositingPlan | None = None, pass_pixels: int | None = None,
                 flat: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """heights ``(L, 1, G, G)``, textures ``(L, 4, T, T)``, poses ``(B, 2)`` -> rgb ``(B, 3, H, W)``,
    alpha and depth ``(B, 1, H, W)``. ``plan``: composite in this fixed order (``composite_ordered``;
    the caller vouches for it, see ``compositing_plan``); None: ``composite_layers``. ``pass_pixels``
    (with a plan): shade at most this many layer-pixels (layers x B x H x W) at once; None: all layers
    in one pass. The result is the same either way. ``flat``: the layers hit analytically
    (``intersect_layers``; None: found from ``heights``).

    The one code path of both back ends: the ONNX model is this function traced.
    """
    b = poses.shape[0]
    nl = heights.shape[0]
    c2w = camera.pose_to_c2w(poses)         # once per frame: the coarse search and the edge search take it
    coarse, (h, w) = coarse_layer_samples(heights, extent, c2w, resolution, settings, flat)
    factor = max(1, settings.lowres_factor)
    edge = edge_search_samples(settings, nl)
    # The layers hit at every coarse sample: their upsampled hits need no normalising and every pixel is
    # valid (upsample_covered_samples)
    covered = ((coarse[:, 3].reshape(nl, -1).amin(1) > 0).tolist()
               if factor > 1 and not edge and heightfield.may_branch_on_values(coarse) else [False] * nl)

    def shade(lo: int, hi: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Layers lo..hi-1 at every pixel: rgb (L', 3, B, H, W), alpha, depth, valid (L', B, H, W) (None:
        all valid)."""
        n = hi - lo
        if edge:
            grid, depth, ok = refine_layer_samples(coarse[lo:hi], (h, w), c2w, resolution, heights[lo:hi], extent,
                                                   settings, edge)
        elif all(covered[lo:hi]):
            grid, depth = upsample_covered_samples(coarse[lo:hi], (h, w), resolution, resolution)
            ok = None
        elif factor > 1:
            grid, depth, ok = upsample_layer_samples(coarse[lo:hi], (h, w), resolution, resolution)
        else:
            grid = coarse[lo:hi, :2].reshape(n, 2, b, h, w).permute(0, 2, 3, 4, 1)     # a view: as fast to read
            depth, ok = coarse[lo:hi, 2].reshape(n, b, h, w), coarse[lo:hi, 3].reshape(n, b, h, w) > 0
        # textures at the hit points: layer l's lookups are batch entry l of one grid_sample
        rgba = sample_each_layer(textures[lo:hi], grid.reshape(n, b * resolution, resolution, 2))
        rgba = rgba.reshape(n, 4, b, resolution, resolution)
        return rgba[:, :3], rgba[:, 3], depth, ok

    if plan is not None and nl > 1:
        # Layers are shaded in groups just before they are composited: the working set is a group's
        # arrays, not all L layers' (which leave the CPU caches at 256² and beyond).
        per_pass = nl if not pass_pixels else max(1, pass_pixels // (b * resolution * resolution))
        def layer(shaded: tuple, j: int) -> tuple:
            """The j-th layer of shade()'s arrays (valid None stays None: all valid)."""
            return tuple(None if x is None else x[j] for x in shaded)

        comp = OrderedCompositor(plan, None if plan.pivot is None else layer(shade(plan.pivot, plan.pivot + 1), 0))
        for run in layer_runs(plan.order, per_pass, covered):
            lo = min(run)
            shaded = shade(lo, max(run) + 1)
            for i in run:
                comp.add(i, *layer(shaded, i - lo))
        rgb, alpha, depth = comp.result()
    else:
        # each layer shaded as the ordered path shades it (covered or not), so both paths see the same samples
        runs = [shade(run[0], run[-1] + 1) for run in layer_runs(tuple(range(nl)), nl, covered)]
        if len(runs) == 1:
            shaded = runs[0]
        else:
            shaded = [torch.cat(x) for x in zip(*(r[:3] for r in runs))]
            shaded.append(torch.cat([torch.ones_like(r[2], dtype=torch.bool) if r[3] is None else r[3] for r in runs]))
        rgb, alpha, depth = composite_layers(*shaded)
    return rgb.transpose(0, 1).contiguous(), alpha.unsqueeze(1), depth.unsqueeze(1)


COMPOSITING_MODES = ("auto", "ordered", "general")


def drawn_layers(avatar: Avatar) -> Avatar:
    """``avatar`` without the layers that are transparent at every texel: they add nothing to any pixel,
    whatever their heights (e.g. the background manifold a GRAMInverter enrollment drops), so the
    renderer neither searches nor shades them. ``avatar`` itself where every layer shows somewhere; one
    layer is kept of an avatar that is transparent everywhere. Deterministic, so a compositing plan made
    on it (``resolve_compositing``) indexes the layers of a ``CachedRenderModule`` made from it."""
    shown = avatar.textures[:, 3].flatten(1).amax(1) > 0
    if bool(shown.all()):
        return avatar
    keep = torch.nonzero(shown).flatten() if bool(shown.any()) else torch.zeros(1, dtype=torch.long)
    return Avatar(avatar.heights[keep], avatar.textures[keep], avatar.extent, dict(avatar.meta))


def resolve_compositing(avatar: Avatar, compositing="auto") -> CompositingPlan | None:
    """``"auto"``: the avatar's plan where its layers are verified non-crossing, else None (the general
    path); ``"general"``: None; ``"ordered"``: the plan, or an ``InvalidArgumentError`` (also a ValueError)
    where the layers cross; a ``CompositingPlan``: itself (already checked by the caller). 1-layer avatars:
    None (nothing to order). A plan orders the avatar's ``drawn_layers``."""
    avatar = drawn_layers(avatar)
    if isinstance(compositing, CompositingPlan):
        return compositing if avatar.num_layers > 1 else None
    if not isinstance(compositing, str) or compositing not in COMPOSITING_MODES:
        raise InvalidArgumentError(f"unknown compositing {compositing!r}: use one of {COMPOSITING_MODES}")
    if compositing == "general" or avatar.num_layers == 1:
        return None
    plan = compositing_plan(avatar)
    if plan is None and compositing == "ordered":
        raise InvalidArgumentError("this avatar's layers cross (their heights are not ordered where they are "
                                   "opaque): ordered compositing would be wrong; use compositing='general' or 'auto'")
    return plan


class CachedRenderModule(nn.Module):
    """``render_cache`` with the avatar's arrays as buffers: poses ``(B, 2)`` -> (rgb, alpha, depth).
    ``compositing``: see ``resolve_compositing`` (the plan is fixed into the module, and so into its
    ONNX export)."""

    def __init__(self, avatar: Avatar, resolution: int, settings: RenderSettings = RenderSettings(),
                 compositing="auto", pass_pixels: int | None = None):
        super().__init__()
        avatar = drawn_layers(avatar)       # the plan indexes these
        self.plan = resolve_compositing(avatar, compositing)
        self.pass_pixels = pass_pixels
        self.register_buffer("heights", avatar.heights[:, None].float().contiguous())
        self.register_buffer("textures", avatar.textures.float().contiguous())
        self.flat = flat_layers(self.heights)
        self.extent = float(avatar.extent)
        self.resolution = int(resolution)
        self.settings = settings

    def forward(self, poses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return render_cache(self.heights, self.textures, self.extent, poses, self.resolution, self.settings,
                            self.plan, self.pass_pixels, self.flat)


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
    Layers transparent at every texel are not drawn (``drawn_layers``; ``self.num_drawn_layers`` counts the rest).
    ``cuda_graphs``: on a GPU, replay each (batch, resolution) as a CUDA graph (``gramcast.avatar.cuda_graphs``;
    at batch 1 a frame is otherwise bound by launching its few hundred kernels); same output.

    ``avatar``: an ``Avatar``, or the path of a ``.gca`` file (read with ``Avatar.load``). The renderer
    keeps the arrays the avatar holds when it is made: assigning other arrays to the avatar's attributes
    afterwards does not reach it. Changing those arrays in place is not supported (frames at sizes already
    rendered would keep the old values, new sizes would take the new ones): make a new ``Renderer``. An
    argument the renderer cannot use (another kind of object, an unknown backend, device or compositing)
    is an ``InvalidArgumentError``: a ``GramcastError`` and a ``ValueError``.
    """

    def __init__(self, avatar: Avatar | str | os.PathLike, device: str | torch.device = "auto",
                 backend: str = "torch", settings: RenderSettings = RenderSettings(), compositing="auto",
                 cuda_graphs: bool = True):
        if isinstance(avatar, (str, os.PathLike)):
            avatar = Avatar.load(avatar)
        elif not isinstance(avatar, Avatar):
            raise InvalidArgumentError(f"Renderer takes an Avatar or the path of a .gca file, got "
                                       f"{type(avatar).__module__}.{type(avatar).__qualname__}: load one with "
                                       "gramcast.Avatar.load(path) or make one with gramcast.enroll(photo)")
        if not isinstance(backend, str) or backend not in ("torch", "onnx"):
            raise InvalidArgumentError(f"unknown backend {backend!r}: use 'torch' or 'onnx'")
        if not isinstance(settings, RenderSettings):
            raise InvalidArgumentError(f"settings must be a gramcast.RenderSettings, got {type(settings).__name__}")
        # its own avatar object over the same arrays: arrays the caller assigns later stay out of every frame
        self.avatar = avatar = avatar.snapshot()
        # the layers drawn, found (and copied, where some are left out) once; plans and modules index them
        self._drawn = drawn_layers(avatar)
        self.plan = resolve_compositing(self._drawn, compositing)
        self.num_drawn_layers = self._drawn.num_layers
        #: the farthest any point a frame shows may lie from the origin (``Avatar.content_radius``)
        self.content_radius = self._drawn.content_radius()
        self.compositing = "single" if self.num_drawn_layers == 1 else ("ordered" if self.plan else "general")
        self.backend = backend
        self.settings = settings
        #: whether frames search occlusion edges again at full resolution (``RenderSettings.edge_samples``)
        self.searches_edges = edge_search_samples(settings, self.num_drawn_layers) > 0
        self.requested_device = device
        try:
            self.device = available_device(device)   # an unusable device fails here, with what to use instead
        except GramcastError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self._modules: dict[int, CachedRenderModule] = {}
        self.cuda_graphs = bool(cuda_graphs) and backend == "torch" and self.device.type == "cuda"
        self._graphed: dict[int, GraphedCall] = {}
        self._onnx = None            # gramcast.avatar.onnx_export.OnnxRenderer, made on first onnx render
        if backend == "onnx":
            from gramcast.avatar.onnx_export import require_onnxruntime

            require_onnxruntime()    # a clear error now, not at the first frame

    def _module(self, resolution: int) -> CachedRenderModule | GraphedCall:
        mod = self._modules.get(resolution)
        if mod is None:
            # CPU: layers in cache-sized groups; a GPU is fastest with every layer in one pass
            pass_pixels = CPU_CHUNK_LAYER_PIXELS if self.device.type == "cpu" else None
            mod = CachedRenderModule(self._drawn, resolution, self.settings, self.plan or "general",
                                     pass_pixels).to(self.device).eval()
            self._modules[resolution] = mod
            if self.cuda_graphs:
                self._graphed[resolution] = GraphedCall(mod)
        return self._graphed.get(resolution, mod)

    def cuda_graph_fallback(self, resolution: int) -> str | None:
        """Why frames at ``resolution`` render eagerly although CUDA graphs were asked for (the capture's
        error), or None: graphs replay, or were not asked for, or nothing was rendered at that size yet."""
        graphed = self._graphed.get(resolution)
        return graphed.disabled_reason if graphed is not None else None

    @torch.no_grad()
    def render(self, poses, resolution: int = 256) -> RenderResult:
        """poses: anything ``camera.as_pose_tensor`` takes (``(B, 2)`` yaw, pitch in radians) -> rgb
        ``(B, 3, H, W)``, alpha and depth ``(B, 1, H, W)`` (``RenderResult``). Any finite angles render:
        yaw is periodic (2 pi), and a pitch beyond +-pi/2 carries the camera over the pole, so (yaw, pitch)
        is the camera of (yaw + pi, +-pi - pitch) upside down (the image turned by 180 degrees). A pose
        that is not one, or not finite, is an ``InvalidArgumentError``."""
        p = camera.as_pose_tensor(poses, dtype=torch.float32)
        resolution = check_resolution(resolution)
        if not bool(torch.isfinite(p).all()):
            raise InvalidArgumentError(f"poses must be finite angles in radians, got {p.tolist()}")
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
            chunk = max(1, CPU_CHUNK_LAYER_PIXELS // (self.num_drawn_layers * resolution * resolution))
        if chunk >= p.shape[0]:
            return RenderResult(*mod(p))
        parts = [mod(c) for c in p.split(chunk)]
        return RenderResult(*(torch.cat(x) for x in zip(*parts)))

    def render_premultiplied(self, yaw_pitch, resolution: int = 256) -> np.ndarray:
        """One frame as premultiplied RGBA ``(H, W, 4)`` uint8, what ``gramcast.compositing.place_premultiplied``
        places in a video frame (the renderer's colour is premultiplied already: no division)."""
        out = self.render(self._one_pose(yaw_pitch, "render_premultiplied"), resolution)
        alpha = out.alpha[0].float()
        # straight colour c in [-1, 1] -> (c + 1) * 127.5, premultiplied: (a c + a) * 127.5
        rgba = torch.cat([(out.rgb[0].float() + alpha) * 127.5, alpha * 255.0])
        return rgba.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()

    def render_rgba(self, yaw_pitch, resolution: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """One frame as straight (not premultiplied) colour ``(H, W, 3)`` uint8 and alpha ``(H, W)`` float32,
        both C-contiguous (what OpenCV draws on)."""
        out = self.render(self._one_pose(yaw_pitch, "render_rgba"), resolution)
        alpha = out.alpha[0, 0].float().cpu()
        rgb = out.rgb[0].float().cpu() / alpha.clamp_min(1e-4)
        rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        return rgb, alpha.numpy()

    @staticmethod
    def _one_pose(yaw_pitch, method: str) -> Tensor:
        """The ``(1, 2)`` pose of a one-frame call: ``(yaw, pitch)``, ``[(yaw, pitch)]`` or a tensor of
        shape ``(2,)`` or ``(1, 2)``; a batch or another shape is an ``InvalidArgumentError``."""
        p = camera.as_pose_tensor(yaw_pitch, dtype=torch.float32)
        if p.shape[0] != 1:
            raise InvalidArgumentError(f"{method} renders one frame: give one (yaw, pitch) pair, not {p.shape[0]} "
                                       "poses (render takes a batch)")
        return p
