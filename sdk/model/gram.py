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

import contextlib
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from gramcast import camera
from gramcast.checks import is_whole
from gramcast.errors import InvalidArgumentError
from gramcast.model.config import GRAMConfig
from gramcast.model.decoder import RadianceDecoder, sample_detail_maps, sample_triplanes
from gramcast.model.intersection import (DEFAULT_CHUNK_POINTS, intersect_lowres_upsampled,
                                         intersect_plane_z)
from gramcast.model.manifold import ManifoldPredictor
from gramcast.model.renderers import RenderOutput, composite, normal_map, opacity_gradient
from gramcast.model.triplane import MappingNetwork, TriplaneSynthesis

#: Half-side of the detail maps' (x, y) square: the head. The bake's square
#: (``gramcast.avatar.bake.DEFAULT_MODEL_EXTENT``) is larger, to hold the background plane seen from
#: the side; the maps are zero outside their own square, where render and bake agree.
DEFAULT_DETAIL_EXTENT = 0.2


def _positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (a float with an integral value is accepted), else InvalidArgumentError."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_whole(value) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1 (None: the config's), got {value!r}")
    return int(value)


class GRAMModel(nn.Module):
    def __init__(self, config: GRAMConfig):
        super().__init__()
        if not isinstance(config, GRAMConfig):
            raise InvalidArgumentError(f"a GRAMModel is built from a GRAMConfig (or GRAMModel.from_config(preset "
                                       f"name)), got {type(config).__name__}")
        # Validated again here, not only when the config was made: a preset edited field by field
        # would otherwise build a network that fails deep inside, or whose checkpoint cannot be loaded.
        config.validate()
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
        """w ``(B, w_dim)`` or w+ ``(B, num_ws, w_dim)`` -> w+ ``(B, num_ws, w_dim)``.

        A w is copied for every layer into a tensor of its own (not a stride-0 view), so one layer of
        the result can be edited (style mixing: ``wp[:, 6:] = other[:, 6:]``) without touching the
        others; gradients flow back to ``ws``. A w+ is returned as it is. Any other shape is refused.
        A 2-D tensor is always read as B w's: one identity's w+ ``(num_ws, w_dim)`` needs its batch
        axis (``ws[None]``), and a warning says so when B equals num_ws.
        """
        return self._to_wplus(ws, warn_stacklevel=3)

    def _to_wplus(self, ws: Tensor, warn_stacklevel: int | None) -> Tensor:
        """``to_wplus``; the ambiguity warning points ``warn_stacklevel`` frames up (at the user's call),
        None: no warning (a batch of w's this module drew itself)."""
        n, d = self.num_ws, self.config.w_dim
        if not torch.is_tensor(ws):
            raise InvalidArgumentError(f"ws must be a tensor, w+ (B, {n}, {d}) or w (B, {d}); got {type(ws).__name__}")
        if ws.ndim == 3 and ws.shape[1:] == (n, d):
            return ws
        if ws.ndim == 2 and ws.shape[1] == d:
            if ws.shape[0] == n and warn_stacklevel is not None:
                warnings.warn(f"ws {tuple(ws.shape)} is read as {n} w's (B, w_dim), one identity each; if it is "
                              f"one identity's w+ (num_ws, w_dim), add the batch axis: ws[None]",
                              stacklevel=warn_stacklevel)
            return ws[:, None, :].repeat(1, n, 1)
        hint = "; one identity's w+ or w without its batch axis? pass ws[None]" if ws.ndim == 1 or (
            ws.ndim == 2 and ws.shape[0] == n) else ""
        raise InvalidArgumentError(f"ws must be w+ (B, num_ws, w_dim) = (B, {n}, {d}) or w (B, w_dim) = (B, {d}), "
                                   f"got {tuple(ws.shape)}{hint}")

    def sample_ws(self, batch: int, seed: int | None = None, generator: torch.Generator | None = None,
                  truncation: float = 1.0) -> Tensor:
        """w+ ``(batch, num_ws, w_dim)`` of random identities, deterministic given ``seed`` or ``generator``
        (a CPU generator; z is drawn on the CPU so a seed means the same identity on every device).
        ``truncation`` < 1 pulls w towards the tracked mean (the truncation trick).

        The result is a tensor of its own (every layer's w in its own memory: edit one layer, mix
        styles in place). With grad enabled it is attached to the mapping network's graph (a loss on
        it trains the mapping); to optimise the code itself (inversion) make a leaf of it:
        ``w = model.sample_ws(1, seed=0).detach().requires_grad_()``, then ``torch.optim.Adam([w])``.
        """
        if not is_whole(batch) or batch < 0:
            raise InvalidArgumentError(f"batch must be an integer >= 0 (how many identities), got {batch!r}")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        z = torch.randn(int(batch), self.config.z_dim, generator=generator).to(self.device)
        return self._to_wplus(self.mapping(z, truncation, update_w_avg=False), warn_stacklevel=None)

    def synthesize_planes(self, ws: Tensor, noise_mode: str = "const",
                          generator: torch.Generator | None = None) -> Tensor:
        """w ``(B, w_dim)`` or w+ ``(B, num_ws, w_dim)`` -> tri-planes ``(B, 3, C, R, R)``."""
        return self.synthesis(self._to_wplus(ws, warn_stacklevel=3), noise_mode, generator)

    # ------------------------------------------------------------------ geometry and radiance
    def radiance(self, planes: Tensor, points: Tensor, chunk_points: int = DEFAULT_CHUNK_POINTS,
                 detail: Tensor | None = None,
                 detail_extent: float = DEFAULT_DETAIL_EXTENT) -> tuple[Tensor, Tensor]:
        """Colour and opacity of the identities ``planes`` ``(B, 3, C, R, R)`` at world points ``(B, M, 3)``:
        rgb ``(B, M, 3)`` in [-1, 1], alpha ``(B, M)`` in [0, 1]. Chunked over points without grad.
        Points row b are read in identity b's planes (planes of one identity serve every row).

        ``detail``: optional detail maps ``(B or 1, L, C, S, S)`` over ``[-detail_extent, detail_extent]²``;
        the points are then L equal runs, manifold by manifold (``points.reshape(B, L, M // L, 3)``,
        the layout of ``intersect``'s hits and of the bake), and run l gets ``detail[:, l]`` sampled at
        its (x, y) added to its tri-plane features.
        """
        planes = self._check_points(planes, points)
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

    @staticmethod
    def _check_points(planes: Tensor, points: Tensor) -> Tensor:
        """The planes ``(B or 1, 3, C, R, R)`` expanded to the points' batch ``(B, M, 3)``. A mismatch is
        refused: the tri-plane lookup folds the batch into the points and would read the wrong
        identity's planes, returning a silently wrong shape."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise InvalidArgumentError(f"points must be (B, M, 3) world coordinates, got {tuple(points.shape)}")
        if planes.ndim != 5 or planes.shape[1] != 3:
            raise InvalidArgumentError(f"planes must be (B, 3, C, R, R) (synthesize_planes), got {tuple(planes.shape)}")
        b = points.shape[0]
        if planes.shape[0] != b:
            if planes.shape[0] != 1:
                raise InvalidArgumentError(f"planes of {planes.shape[0]} identities for points of batch {b}: give "
                                           f"points ({planes.shape[0]}, M, 3), one row per identity, or the planes of "
                                           "one identity")
            planes = planes.expand(b, *planes.shape[1:])
        return planes

    # The points of one call are L runs (one per manifold) when detail maps are given, else one run;
    # chunks cut every run at the same places so that each chunk still holds L equal runs.
    def _check_detail(self, detail: Tensor | None, b: int, m: int,
                      layers: int | None = None) -> tuple[Tensor | None, int]:
        """Detail maps ``(B or 1, L, C, S, S)`` expanded to batch ``b``, and L. ``layers``: the L required."""
        if detail is None:
            return None, 1
        c = self.config.plane_channels
        ell = "L" if layers is None else str(layers)
        if (detail.ndim != 5 or detail.shape[0] not in (1, b) or detail.shape[1] < 1 or detail.shape[2] != c
                or detail.shape[-1] != detail.shape[-2] or (layers is not None and detail.shape[1] != layers)):
            raise InvalidArgumentError(f"detail maps must be (B, L, C, S, S) = ({b} or 1, {ell}, {c}, S, S) (one "
                                       f"map of the planes' {c} channels per manifold), got {tuple(detail.shape)}")
        nl = detail.shape[1]
        if m % nl:
            raise InvalidArgumentError(f"{m} points are not {nl} equal runs (one per manifold of the detail maps)")
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
        or B poses of one identity (a NaN or infinite pose given as numbers is refused).
        ``resolution`` (>= 1) defaults to the config's, ``lowres_factor`` (>= 1) too (1 = dense
        intersections). Another shape of ``ws`` is refused with the expected one (see ``to_wplus``).
        ``background``: optional RGB in [-1, 1] behind everything (the
        background manifold usually covers the frame). ``with_normals`` adds the eq. 9 normal map.
        ``detail``: optional detail maps ``(B or 1, N, C, S, S)`` (see ``radiance``), one per manifold
        including the background plane, over ``[-detail_extent, detail_extent]²``.
        """
        planes = self.synthesis(self._to_wplus(ws, warn_stacklevel=3))
        return self.render_planes(planes, pose, resolution, lowres_factor,
                                  with_normals, background, detail, detail_extent)

    def render_planes(self, planes: Tensor, pose, resolution: int | None = None, lowres_factor: int | None = None,
                      with_normals: bool = False, background=None, detail: Tensor | None = None,
                      detail_extent: float = DEFAULT_DETAIL_EXTENT) -> RenderOutput:
        """``render`` from already synthesised tri-planes ``(B, 3, C, R, R)`` (one identity, many frames)."""
        cfg = self.config
        res = cfg.resolution if resolution is None else _positive_int("resolution", resolution)
        factor = cfg.lowres_factor if lowres_factor is None else _positive_int("lowres_factor", lowres_factor)
        if torch.is_tensor(pose):
            # Tensors are not checked for NaN: the check reads the values back to the host, which would
            # make a training step wait for the device; the poses a program writes by hand (tuples,
            # lists, numpy, Pose) are.
            poses = camera.as_pose_tensor(pose, device=planes.device, dtype=planes.dtype)
        else:
            poses = camera.as_pose_tensor(pose, dtype=planes.dtype)
            if not torch.isfinite(poses).all():
                raise InvalidArgumentError(f"a pose is a finite (yaw, pitch) in radians; got {poses.tolist()[:4]} "
                                           "(a NaN or infinite pose renders an all-NaN frame)")
            poses = poses.to(planes.device)
        if planes.ndim != 5 or planes.shape[1] != 3:
            raise InvalidArgumentError(f"planes must be (B, 3, C, R, R) (synthesize_planes), got {tuple(planes.shape)}")
        b = max(planes.shape[0], poses.shape[0])
        if planes.shape[0] not in (1, b) or poses.shape[0] not in (1, b):
            raise InvalidArgumentError(f"{poses.shape[0]} poses for {planes.shape[0]} identities: give one pose, "
                             "one identity, or as many of each")
        planes, poses = planes.expand(b, *planes.shape[1:]), poses.expand(b, 2)
        origins, dirs = camera.generate_rays(camera.pose_to_c2w(poses), res, res)    # (B, H, W, 3)
        self._check_detail(detail, b, 0, layers=cfg.num_manifolds)   # before the intersections are paid for
        points, depth, valid = self.intersect(origins, dirs, lowres_factor=factor)   # (B, N, H, W, ...)
        shape = points.shape
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
        (the detail maps' own (x, y) variation is part of the gradient: it is part of the opacity).

        Works under ``torch.inference_mode()`` too: tensors made there cannot enter autograd, so the
        gradient pass then runs with inference mode off, on ordinary copies of its inputs."""
        planes = self._check_points(planes, points)
        b, m, _ = points.shape
        detail, nl = self._check_detail(detail, b, m)
        inference = torch.is_inference_mode_enabled()
        copy = (lambda t: t.clone()) if inference else (lambda t: t)      # noqa: E731
        rgbs, alphas, grads = [], [], []
        with torch.inference_mode(False) if inference else contextlib.nullcontext():
            planes = copy(planes.detach())
            detail = copy(detail.detach()) if detail is not None else None
            for p in self._layer_chunks(points, nl, chunk_points):
                with torch.enable_grad():
                    p = copy(p.reshape(b, -1, 3).detach()).requires_grad_(True)
                    rgb, alpha = self.decoder(self._features(planes, p, detail, detail_extent))
                    (g,) = torch.autograd.grad(alpha.sum(), p)
                rgbs.append(rgb.detach().reshape(b, nl, -1, 3))
                alphas.append(alpha.detach().reshape(b, nl, -1))
                grads.append(g.reshape(b, nl, -1, 3))
        return (torch.cat(rgbs, 2).reshape(b, m, 3), torch.cat(alphas, 2).reshape(b, m),
                torch.cat(grads, 2).reshape(b, m, 3))

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> None:
        """Write a safetensors checkpoint atomically (see ``gramcast.model.checkpoint``), in float32
        whatever the model's dtype (``.double()``, ``.half()``): what ``load`` builds and checks.
        InvalidArgumentError if ``self.config`` no longer describes the weights (edited after the
        model was built): such a file could not be loaded back."""
        from gramcast.model.checkpoint import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "GRAMModel":
        """Load and validate a checkpoint (a path, or ``bundled:NAME`` for a prior that ships with the
        package, see ``gramcast.model.prior``); raises CheckpointError saying what is wrong."""
        from gramcast.model.checkpoint import load_model
        from gramcast.model.prior import resolve_generator

        return load_model(resolve_generator(path), device)
