"""GRAMModel: the efficient GRAM generator (paper Sec. 3.1) in one module with one obvious call.

    model = GRAMModel.from_config(GRAMConfig.preset("tiny"))
    ws = model.sample_ws(2, seed=0)                        # (2, num_ws, w_dim)
    out = model.render(ws, [(0.0, 0.0), (0.3, 0.1)])       # RenderOutput, rgb (2, 3, 64, 64)
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

from gramcast import camera
from gramcast.model.config import GRAMConfig
from gramcast.model.decoder import RadianceDecoder, sample_triplanes
from gramcast.model.intersection import (intersect_levels, intersect_plane_z, lowres_pixel_positions,
                                         upsample_hits)
from gramcast.model.manifold import ManifoldPredictor
from gramcast.model.renderers import RenderOutput, composite, normals_from_alpha
from gramcast.model.triplane import MappingNetwork, TriplaneSynthesis


class GRAMModel(nn.Module):
    def __init__(self, config: GRAMConfig):
        super().__init__()
        self.config = config
        self.manifold = ManifoldPredictor(config.manifold_width, config.manifold_depth, config.sphere_center)
        self.synthesis = TriplaneSynthesis(config.w_dim, config.plane_resolution, config.plane_channels,
                                           config.channel_base, config.channel_max)
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.decoder = RadianceDecoder(config.plane_channels, config.decoder_hidden)
        self.register_buffer("levels", torch.tensor(config.levels(), dtype=torch.float32))

    @classmethod
    def from_config(cls, config: GRAMConfig | str) -> "GRAMModel":
        return cls(GRAMConfig.preset(config) if isinstance(config, str) else config)

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    def to_wplus(self, ws: Tensor) -> Tensor:
        """w (B, w_dim) or w+ (B, num_ws, w_dim) -> w+ (the same w for every layer)."""
        return ws[:, None, :].expand(-1, self.num_ws, -1) if ws.ndim == 2 else ws

    def sample_ws(self, batch: int, seed: int | None = None, generator: torch.Generator | None = None,
                  truncation: float = 1.0) -> Tensor:
        """Latents for ``batch`` random identities, deterministic given ``seed`` or ``generator``."""
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        dev = self.levels.device
        z = torch.randn(batch, self.config.z_dim, generator=generator).to(dev)
        return self.to_wplus(self.mapping(z, truncation))

    def synthesize_planes(self, ws: Tensor) -> Tensor:
        """w (B, w_dim) or w+ (B, num_ws, w_dim) -> tri-planes (B, 3, C, R, R)."""
        return self.synthesis(self.to_wplus(ws))

    def radiance(self, planes: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """Colour and opacity of one identity at world points: (B, M, 3) -> rgb (B, M, 3), alpha (B, M)."""
        feats = sample_triplanes(planes, points, self.config.plane_extent)
        return self.decoder(feats)

    def intersect(self, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Hits of rays (..., 3) with all manifolds: points (..., N, 3), depth (..., N), valid (..., N).

        The first N-1 are iso-surfaces of the manifold field, the last the background plane.
        """
        cfg = self.config
        pts, t, valid = intersect_levels(self.manifold, origins, directions, self.levels,
                                         camera.RAY_NEAR, camera.RAY_FAR, cfg.samples_per_ray)
        bp, bt, bv = intersect_plane_z(origins, directions, camera.BACKGROUND_Z)
        return (torch.cat([pts, bp[..., None, :]], -2), torch.cat([t, bt[..., None]], -1),
                torch.cat([valid, bv[..., None]], -1))

    def render(self, ws: Tensor, pose, resolution: int | None = None, lowres_factor: int | None = None,
               with_normals: bool = False, background=None) -> RenderOutput:
        """Render identities ``ws`` (B, num_ws, w_dim) or (B, w_dim) at poses (B, 2) (or one pose for all).

        Intersections are found at resolution / lowres_factor (1 = dense, full resolution) and
        upsampled bilinearly, as in the paper. ``background`` is an optional RGB in [-1, 1] behind
        everything (the background manifold usually covers the whole frame).
        """
        cfg = self.config
        res = resolution or cfg.resolution
        factor = cfg.lowres_factor if lowres_factor is None else lowres_factor
        b = ws.shape[0]
        poses = camera.as_pose_tensor(pose, device=ws.device, dtype=ws.dtype)
        if poses.shape[0] == 1 and b > 1:
            poses = poses.expand(b, 2)
        if poses.shape[0] != b:
            raise ValueError(f"{poses.shape[0]} poses for {b} latents")
        c2w = camera.pose_to_c2w(poses)
        if factor <= 1:
            origins, dirs = camera.generate_rays(c2w, res, res)
            points, _, valid = self.intersect(origins, dirs)
        else:
            uv = lowres_pixel_positions(res, res, factor, device=ws.device, dtype=ws.dtype)
            o_lr, d_lr = camera.rays_through_pixels(c2w, uv, res, res)
            p_lr, _, v_lr = self.intersect(o_lr, d_lr)
            points, valid = upsample_hits(p_lr, v_lr, res, res)
            origins = c2w[:, None, None, :3, 3].expand(b, res, res, 3)
        if with_normals and not points.requires_grad:
            points = points.detach().requires_grad_(True)
        with torch.enable_grad() if with_normals else nullcontext():
            planes = self.synthesize_planes(ws)
            n = points.shape[-2]
            rgb, alpha = self.radiance(planes, points.reshape(b, -1, 3))
            rgb, alpha = rgb.reshape(b, res, res, n, 3), alpha.reshape(b, res, res, n)
            depth = (points - origins[..., None, :]).norm(dim=-1)
            out_rgb, total, out_depth, weights = composite(rgb, alpha, depth, valid, background)
            normal = None
            if with_normals:
                normal = normals_from_alpha(alpha, points, weights, create_graph=torch.is_grad_enabled() and self.training)
                normal = normal.permute(0, 3, 1, 2)
        return RenderOutput(rgb=out_rgb.permute(0, 3, 1, 2), alpha=total[:, None], depth=out_depth[:, None],
                            normal=normal)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> None:
        from gramcast.model.checkpoint import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "GRAMModel":
        from gramcast.model.checkpoint import load_model

        return load_model(path, device)
