"""The fast renderer: an ``Avatar`` at any pose with no network evaluation per frame.

Per frame: rays on a grid at 1/``lowres_factor`` of the output resolution are intersected with the
cached height fields, the hit points are upsampled bilinearly to every pixel, the textures are
sampled there and the layers composited front to back (paper eq. 3).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gramcast import camera
from gramcast.avatar.avatar import Avatar
from gramcast.avatar.heightfield import intersect_heightfields, sample_textures
from gramcast.device import resolve_device
from gramcast.model.intersection import coarse_rays, upsample_hits
from gramcast.model.renderers import composite

__all__ = ["Renderer", "RenderResult", "CachedRenderModule", "render_cache", "RenderSettings"]


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


def render_cache(heights: Tensor, textures: Tensor, extent: float, poses: Tensor, resolution: int,
                 settings: RenderSettings = RenderSettings()) -> tuple[Tensor, Tensor, Tensor]:
    """heights ``(L, 1, G, G)``, textures ``(L, 4, T, T)``, poses ``(B, 2)`` -> rgb ``(B, 3, H, W)``,
    alpha and depth ``(B, 1, H, W)``."""
    b = poses.shape[0]
    origins, dirs = camera.generate_rays(camera.pose_to_c2w(poses), resolution, resolution)   # (B, H, W, 3)
    factor = max(1, settings.lowres_factor)
    if factor > 1:
        o_lr, d_lr = coarse_rays(origins, dirs, factor)
    else:
        o_lr, d_lr = origins, dirs
    h, w = o_lr.shape[1:3]
    margin = 0.02  # the background layer sits exactly at the far bound when seen frontally
    pts, _, valid = intersect_heightfields(o_lr.reshape(b, -1, 3), d_lr.reshape(b, -1, 3), heights, extent,
                                           camera.RAY_NEAR - margin, camera.RAY_FAR + margin,
                                           settings.steps, settings.refine)
    nl = heights.shape[0]
    pts, valid = pts.reshape(b, nl, h, w, 3), valid.reshape(b, nl, h, w)
    if factor > 1:
        pts, valid = upsample_hits(pts, valid, resolution, resolution)
    depth = (pts - origins.unsqueeze(1)).square().sum(-1).sqrt()
    rgb, alpha = sample_textures(textures, pts, extent)
    comp = composite(rgb, alpha, depth, valid)
    return comp.rgb.permute(0, 3, 1, 2), comp.alpha[:, None], comp.depth[:, None]


class CachedRenderModule(nn.Module):
    """``render_cache`` with the avatar's arrays as buffers: poses ``(B, 2)`` -> (rgb, alpha, depth)."""

    def __init__(self, avatar: Avatar, resolution: int, settings: RenderSettings = RenderSettings()):
        super().__init__()
        self.register_buffer("heights", avatar.heights[:, None].float().contiguous())
        self.register_buffer("textures", avatar.textures.float().contiguous())
        self.extent = float(avatar.extent)
        self.resolution = int(resolution)
        self.settings = settings

    def forward(self, poses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return render_cache(self.heights, self.textures, self.extent, poses, self.resolution, self.settings)


class Renderer:
    """``Renderer(avatar).render(poses, resolution)``: batched renders of a cached avatar.

    backend ``"torch"`` (CPU or CUDA, ``device="auto"``) or ``"onnx"`` (onnxruntime; CUDA provider
    where ``onnxruntime-gpu`` is installed). Thread-safe for concurrent ``render`` calls on the torch
    back end (no state changes after construction).
    """

    def __init__(self, avatar: Avatar, device: str | torch.device = "auto", backend: str = "torch",
                 settings: RenderSettings = RenderSettings()):
        if backend not in ("torch", "onnx"):
            raise ValueError(f"unknown backend {backend!r}: use 'torch' or 'onnx'")
        self.avatar = avatar
        self.backend = backend
        self.settings = settings
        self.device = resolve_device(device)
        self._modules: dict[int, CachedRenderModule] = {}
        self._sessions: dict[int, object] = {}

    def _module(self, resolution: int) -> CachedRenderModule:
        mod = self._modules.get(resolution)
        if mod is None:
            mod = CachedRenderModule(self.avatar, resolution, self.settings).to(self.device).eval()
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
        rgb, alpha, depth = self._module(resolution)(p.to(self.device))
        return RenderResult(rgb, alpha, depth)

    def render_rgba(self, yaw_pitch, resolution: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """One frame as straight (not premultiplied) colour ``(H, W, 3)`` uint8 and alpha ``(H, W)`` float32."""
        out = self.render([tuple(yaw_pitch)], resolution)
        alpha = out.alpha[0, 0].float().cpu()
        rgb = out.rgb[0].float().cpu() / alpha.clamp_min(1e-4)
        rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return rgb, alpha.numpy()
