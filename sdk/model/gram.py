"""GRAMModel: the efficient GRAM generator (paper Sec. 3.1) in one module with one obvious call.

    model = GRAMModel.from_config("tiny")
    ws = model.sample_ws(2, seed=0)                        # (2, num_ws, w_dim)
    out = model.render(ws, [(0.0, 0.0), (0.3, 0.1)])       # RenderOutput, rgb (2, 3, 64, 64)

Pipeline: w+ --Ψ--> tri-planes; camera rays --manifold field--> N intersections per pixel (found at
1/4 resolution and upsampled); tri-plane features at the intersections --m--> colour and opacity;
front-to-back compositing. The manifolds do not depend on the identity: only the planes do.

Detail manifolds (GRAMInverter, paper Sec. 3.3): ``render(..., detail=maps)`` adds per-manifold 2D
feature maps ``(B, N, C, S, S)`` over the avatar cache's orthographic (x, y) square to the tri-plane
features of the hits on each manifold, before the decoder. The bake adds the same sum
(``gramcast.avatar.bake.bake_model(..., detail=maps)``), so a detailed identity renders from the
cache at no extra cost. No detail: exactly the plain renders.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from gramcast import camera
from gramcast.model.config import GRAMConfig
from gramcast.model.decoder import RadianceDecoder, sample_detail_maps, sample_triplanes
from gramcast.model.intersection import (DEFAULT_CHUNK_POINTS, intersect_lowres_upsampled,
                                         intersect_plane_z)
from gramcast.model.manifold import ManifoldPredictor
from gramcast.model.renderers import RenderOutput, composite, normal_map, opacity_gradient
from gramcast.model.triplane import MappingNetwork, TriplaneSynthesis

#: Half-side of the detail maps' (x, y) square; equals ``gramcast.avatar.bake.DEFAULT_MODEL_EXTENT``
#: (the model package cannot import the avatar package; a test keeps the two equal).
DEFAULT_DETAIL_EXTENT = 0.2


class GRAMModel(nn.Module):
    def __init__(self, config: GRAMConfig):
        super().__init__()
        self.config = config
        self.manifold = ManifoldPredictor(config.levels(), config.manifold_width, config.manifold_depth,
                                          config.sphere_center)
        self.synthesis = TriplaneSynthesis(config.w_dim, config.plane_resolution, config.plane_channels,
                                           config.channel_base, config.channel_max)
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.decoder = RadianceDecoder(config.plane_channels, config.decoder_hidden)

    @classmethod
    def from_config(cls, config: GRAMConfig | str) -> "GRAMModel":
        """A freshly initialised model from a config or a preset name ("tiny", "small", "paper")."""
        return cls(GRAMConfig.preset(config) if isinstance(config, str) else config)

    @property
    def num_ws(self) -> int:
        """Number of w vectors in a w+ code (one per modulated layer of Ψ)."""
        return self.synthesis.num_ws

    @property
    def device(self) -> torch.device:
        return self.manifold.levels.device

    # ------------------------------------------------------------------ latents and planes
    def to_wplus(self, ws: Tensor) -> Tensor:
        """w ``(B, w_dim)`` or w+ ``(B, num_ws, w_dim)`` -> w+ (the same w for every layer)."""
        return ws[:, None, :].expand(-1, self.num_ws, -1) if ws.ndim == 2 else ws

    def sample_ws(self, batch: int, seed: int | None = None, generator: torch.Generator | None = None,
                  truncation: float = 1.0) -> Tensor:
        """w+ ``(batch, num_ws, w_dim)`` of random identities, deterministic given ``seed`` or ``generator``
        (a CPU generator; z is drawn on the CPU so a seed means the same identity on every device).
        ``truncation`` < 1 pulls w towards the tracked mean (the truncation trick)."""
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        z = torch.randn(batch, self.config.z_dim, generator=generator).to(self.device)
        return self.to_wplus(self.mapping(z, truncation, update_w_avg=False))

    def synthesize_planes(self, ws: Tensor, noise_mode: str = "const",
                          generator: torch.Generator | None = None) -> Tensor:
        """w ``(B, w_dim)`` or w+ ``(B, num_ws, w_dim)`` -> tri-planes ``(B, 3, C, R, R)``."""
        return self.synthesis(self.to_wplus(ws), noise_mode, generator)

    # ------------------------------------------------------------------ geometry and radiance
    def radiance(self, planes: Tensor, points: Tensor, chunk_points: int = DEFAULT_CHUNK_POINTS,
                 detail: Tensor | None = None,
                 detail_extent: float = DEFAULT_DETAIL_EXTENT) -> tuple[Tensor, Tensor]:
        """Colour and opacity of the identities ``planes`` ``(B, 3, C, R, R)`` at world points ``(B, M, 3)``:
        rgb ``(B, M, 3)`` in [-1, 1], alpha ``(B, M)`` in [0, 1]. Chunked over points without grad.

        ``detail``: optional detail maps ``(B or 1, L, C, S, S)`` over ``[-detail_extent, detail_extent]²``;
        the points are then L equal runs, manifold by manifold (``points.reshape(B, L, M // L, 3)``,
        the layout of ``intersect``'s hits and of the bake), and run l gets ``detail[:, l]`` sampled at
        its (x, y) added to its tri-plane features.
        """
        b, m, _ = points.shape
        detail, nl = self._check_detail(detail, b, m)
        if torch.is_grad_enabled() or m <= chunk_points:
            return self.decoder(self._features(planes, points, detail, detail_extent))
        rgbs, alphas = [], []
        for p in self._layer_chunks(points, nl, chunk_points):
            rgb, alpha = self.decoder(self._features(planes, p.reshape(b, -1, 3), detail, detail_extent))
            rgbs.append(rgb.reshape(b, nl, -1, 3))
            alphas.append(alpha.reshape(b, nl, -1))
        return torch.cat(rgbs, 2).reshape(b, m, 3), torch.cat(alphas, 2).reshape(b, m)

    # The points of one call are L runs (one per manifold) when detail maps are given, else one run;
    # chunks cut every run at the same places so that each chunk still holds L equal runs.
    @staticmethod
    def _check_detail(detail: Tensor | None, b: int, m: int) -> tuple[Tensor | None, int]:
        if detail is None:
            return None, 1
        if detail.ndim != 5 or detail.shape[0] not in (1, b):
            raise ValueError(f"detail maps must be (B, L, C, S, S) with B = 1 or {b}, got {tuple(detail.shape)}")
        nl = detail.shape[1]
        if m % nl:
            raise ValueError(f"{m} points are not {nl} equal runs (one per manifold of the detail maps)")
        return detail.expand(b, *detail.shape[1:]), nl

    @staticmethod
    def _layer_chunks(points: Tensor, nl: int, chunk_points: int) -> list[Tensor]:
        """``(B, M, 3)`` -> chunks ``(B, nl, k, 3)`` cutting all nl runs at the same places."""
        b, m, _ = points.shape
        return list(points.reshape(b, nl, m // nl, 3).split(max(1, chunk_points // nl), dim=2))

    def _features(self, planes: Tensor, points: Tensor, detail: Tensor | None, extent: float) -> Tensor:
        """Features ``(B, M, C)`` at points ``(B, M, 3)``: tri-planes, plus the detail maps if given."""
        feats = sample_triplanes(planes, points, self.config.plane_extent)
        if detail is None:
            return feats
        b, m, _ = points.shape
        nl = detail.shape[1]
        extra = sample_detail_maps(detail, points.reshape(b, nl, m // nl, 3), extent)   # (B, L, K, C)
        return feats + extra.reshape(b, m, -1).to(feats.dtype)

    def intersect(self, origins: Tensor, directions: Tensor, lowres_factor: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """Hits of rays with all N manifolds: points ``(B, N, *S, 3)``, depth and valid ``(B, N, *S)``.

        origins, directions: ``(B, *S, 3)``, unit directions. Layers 0..N-2 are the iso-surfaces of
        the manifold field, layer N-1 the background plane (analytic, exact at every ray).
        ``lowres_factor`` > 1 needs image grids ``(B, H, W, 3)``: the field is searched on
        1/factor of the rays and the hits upsampled (the paper's scheme); 1 searches every ray.
        """
        cfg = self.config
        # Geometry in full precision even under autocast: level spacing (~0.01) is near bf16's
        # resolution at the field's values (~0.5), which would make hits jump between samples.
        with torch.autocast(origins.device.type, enabled=False):
            dtype = torch.float64 if self.manifold.out.weight.dtype == torch.float64 else torch.float32
            origins, directions = origins.to(dtype), directions.to(dtype)
            pts, t, valid = intersect_lowres_upsampled(
                self.manifold, origins, directions, self.manifold.levels, lowres_factor,
                camera.RAY_NEAR, camera.RAY_FAR, cfg.samples_per_ray)
        bp, bt, bv = intersect_plane_z(origins, directions, self.manifold.background_z)
        return (torch.cat([pts, bp.unsqueeze(1)], 1), torch.cat([t, bt.unsqueeze(1)], 1),
                torch.cat([valid, bv.unsqueeze(1)], 1))

    # ------------------------------------------------------------------ rendering
    def render(self, ws: Tensor, pose, resolution: int | None = None, lowres_factor: int | None = None,
               with_normals: bool = False, background=None, detail: Tensor | None = None,
               detail_extent: float = DEFAULT_DETAIL_EXTENT) -> RenderOutput:
        """Render identities ``ws`` (w+ ``(B, num_ws, w_dim)`` or w ``(B, w_dim)``) at ``pose``.

        pose: anything ``camera.as_pose_tensor`` takes; ``(B, 2)``, or one pose for every identity,
        or B poses of one identity. ``resolution`` defaults to the config's, ``lowres_factor`` too
        (1 = dense intersections). ``background``: optional RGB in [-1, 1] behind everything (the
        background manifold usually covers the frame). ``with_normals`` adds the eq. 9 normal map.
        ``detail``: optional detail maps ``(B or 1, N, C, S, S)`` (see ``radiance``), one per manifold
        including the background plane, over ``[-detail_extent, detail_extent]²``.
        """
        return self.render_planes(self.synthesize_planes(ws), pose, resolution, lowres_factor,
                                  with_normals, background, detail, detail_extent)

    def render_planes(self, planes: Tensor, pose, resolution: int | None = None, lowres_factor: int | None = None,
                      with_normals: bool = False, background=None, detail: Tensor | None = None,
                      detail_extent: float = DEFAULT_DETAIL_EXTENT) -> RenderOutput:
        """``render`` from already synthesised tri-planes ``(B, 3, C, R, R)`` (one identity, many frames)."""
        cfg = self.config
        res = resolution or cfg.resolution
        factor = cfg.lowres_factor if lowres_factor is None else lowres_factor
        poses = camera.as_pose_tensor(pose, device=planes.device, dtype=planes.dtype)
        b = max(planes.shape[0], poses.shape[0])
        if planes.shape[0] not in (1, b) or poses.shape[0] not in (1, b):
            raise ValueError(f"{poses.shape[0]} poses for {planes.shape[0]} identities: give one pose, "
                             "one identity, or as many of each")
        planes, poses = planes.expand(b, *planes.shape[1:]), poses.expand(b, 2)
        origins, dirs = camera.generate_rays(camera.pose_to_c2w(poses), res, res)    # (B, H, W, 3)
        points, depth, valid = self.intersect(origins, dirs, lowres_factor=factor)   # (B, N, H, W, ...)
        shape = points.shape
        if detail is not None and detail.shape[1] != shape[1]:
            raise ValueError(f"{detail.shape[1]} detail maps for {shape[1]} manifolds")
        if with_normals and not torch.is_grad_enabled():
            # Inference: opacity gradients chunk by chunk, keeping no graph.
            rgb, alpha, grad = self._radiance_and_gradient(planes, points.reshape(b, -1, 3), detail=detail,
                                                           detail_extent=detail_extent)
            grad = grad.reshape(shape)
        else:
            if with_normals and not points.requires_grad:
                points = points.detach().requires_grad_(True)
            rgb, alpha = self.radiance(planes, points.reshape(b, -1, 3), detail=detail, detail_extent=detail_extent)
        rgb, alpha = rgb.reshape(shape), alpha.reshape(shape[:-1])
        if with_normals and torch.is_grad_enabled():
            grad = opacity_gradient(alpha, points, create_graph=True)
        comp = composite(rgb, alpha, depth, valid, background)
        normal = normal_map(grad, comp.weights).permute(0, 3, 1, 2) if with_normals else None
        return RenderOutput(rgb=comp.rgb.permute(0, 3, 1, 2), alpha=comp.alpha[:, None],
                            depth=comp.depth[:, None], normal=normal)

    def _radiance_and_gradient(self, planes: Tensor, points: Tensor,
                               chunk_points: int = DEFAULT_CHUNK_POINTS // 4, detail: Tensor | None = None,
                               detail_extent: float = DEFAULT_DETAIL_EXTENT) -> tuple[Tensor, Tensor, Tensor]:
        """rgb ``(B, M, 3)``, alpha ``(B, M)`` and ∂alpha/∂x ``(B, M, 3)`` without keeping a graph
        (the detail maps' own (x, y) variation is part of the gradient: it is part of the opacity)."""
        b, m, _ = points.shape
        detail, nl = self._check_detail(detail, b, m)
        detail = detail.detach() if detail is not None else None
        rgbs, alphas, grads = [], [], []
        for p in self._layer_chunks(points, nl, chunk_points):
            with torch.enable_grad():
                p = p.reshape(b, -1, 3).detach().requires_grad_(True)
                rgb, alpha = self.decoder(self._features(planes.detach(), p, detail, detail_extent))
                (g,) = torch.autograd.grad(alpha.sum(), p)
            rgbs.append(rgb.detach().reshape(b, nl, -1, 3))
            alphas.append(alpha.detach().reshape(b, nl, -1))
            grads.append(g.reshape(b, nl, -1, 3))
        return (torch.cat(rgbs, 2).reshape(b, m, 3), torch.cat(alphas, 2).reshape(b, m),
                torch.cat(grads, 2).reshape(b, m, 3))

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> None:
        """Write a safetensors checkpoint atomically (see ``gramcast.model.checkpoint``)."""
        from gramcast.model.checkpoint import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "GRAMModel":
        """Load and validate a checkpoint (a path, or ``bundled:NAME`` for a prior that ships with the
        package, see ``gramcast.model.prior``); raises CheckpointError saying what is wrong."""
        from gramcast.model.checkpoint import load_model
        from gramcast.model.prior import resolve_generator

        return load_model(resolve_generator(path), device)
