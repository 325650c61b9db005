"""Stage 4: the detail manifolds reconstructor (GRAMInverter Sec. 3.3-3.4, supp. A.4).

The tuned generator G and the image inverter E_w are frozen; only the reconstructor R learns. Per step,
for a batch of real crops Î at their estimated poses θ̂:

    w+ = E_w(Î);  I_w = G(w+, θ̂)                      coarse inversion (no grad)
    F_hr = R(Î, I_w, θ̂, manifold heights);  I = G(w+, θ̂, detail=F_hr)
    L_r     = L2 + LPIPS + identity (eq. 6, ``ReconstructionLoss``) between I and Î
    L_nv    = LPIPS(M ⊙ I(θ), M ⊙ I_w(θ)) at a random novel pose θ (eq. 7), with the normal-aware
              mask M = [-r(θ̂) · N_w(θ) < τ] (eq. 8; N_w the eq. 9 normals of the coarse render at θ):
              regions the input camera saw only at a grazing angle, or not at all, keep the coarse look
    L_depth = λ Σ_i ||f_hr(x_i)||² over the hits x_i of the input view's rays whose depth is more than
              ε from the surface depth (eq. 10): details sit on the surface, so they move with correct
              parallax when the head turns
    loss    = L_r + w_nv L_nv + w_depth L_depth;  Adam (0.9, 0.999), lr 3e-4 (supp. A.4)

z_surf is the composited depth of the coarse render I_w (the prior's surface; the paper leaves open
which render it is taken from: the coarse one is fixed, so the details cannot move their own anchor).
L_depth is summed over a ray's far hits and averaged over rays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from gramcast import camera
from gramcast.device import host_to_device
from gramcast.model import GRAMModel
from gramcast.model.decoder import sample_detail_maps
from gramcast.model.detail import DetailConfig, DetailReconstructor, manifold_height_grid
from gramcast.training.data import FaceDataset
from gramcast.training.engine.distributed import DistInfo, StepScalars, wrap_ddp
from gramcast.training.engine.stage import StageConfig, adam, autocast, fixed_batch, image_grid
from gramcast.training.engine.trainer import step_generator
from gramcast.training.reconstruction import ReconstructionLoss, ReconstructionWeights

DETAIL_FILE = "detail.safetensors"

__all__ = ["DetailStageConfig", "DetailStage", "normal_aware_mask", "depth_regularization", "DETAIL_FILE"]


# ---------------------------------------------------------------------------------------- losses
def normal_aware_mask(normals: Tensor, input_pose, tau: float) -> Tensor:
    """M of paper eq. 8: ``(B, 1, H, W)`` float, 1 where ``-r(θ̂) · N_w(θ) < τ``.

    normals: ``(B, 3, H, W)`` world-space unit normals of the coarse render at the novel view (eq. 9;
    zero where nothing is hit, which counts as unseen). r(θ̂): the input camera's look-at direction
    (from the camera towards the origin), so -r·N is the cosine between a surface's outward normal and
    the direction back to the input camera: near 1 for surfaces the input photo saw face-on, <= 0 for
    surfaces it could not see. Pixels below τ are held to the coarse result by L_nv.
    """
    c2w = camera.pose_to_c2w(camera.as_pose_tensor(input_pose, device=normals.device, dtype=normals.dtype))
    look_at = -c2w[:, :3, 2]                                             # cameras look along -back
    facing = -(look_at[:, :, None, None] * normals).sum(1, keepdim=True)  # (B, 1, H, W)
    return (facing < tau).to(normals.dtype)


def depth_regularization(detail: Tensor, points: Tensor, depth: Tensor, valid: Tensor, surface_depth: Tensor,
                         epsilon: float, extent: float) -> Tensor:
    """Unweighted L_depth of paper eq. 10: the mean over rays of Σ_i ||f_hr(x_i)||² over the ray's hits
    x_i farther than ``epsilon`` (world units along the ray) from the surface depth.

    detail ``(B, L, C, S, S)``; points ``(B, L, H, W, 3)``, depth and valid ``(B, L, H, W)`` (the hits,
    ``GRAMModel.intersect``); surface_depth ``(B, 1, H, W)``. Returns a scalar.
    """
    b, nl = points.shape[:2]
    f = sample_detail_maps(detail, points.reshape(b, nl, -1, 3), extent)            # (B, L, HW, C)
    far = (valid & ((depth - surface_depth).abs() > epsilon)).reshape(b, nl, -1).to(f.dtype)
    return (f.square().sum(-1) * far).sum(1).mean()


# ---------------------------------------------------------------------------------------- config
@dataclass
class DetailStageConfig(StageConfig):
    detail_preset: str = "tiny"        # DetailConfig preset, sized for the loaded generator
    detail_overrides: dict = field(default_factory=dict)
    batch_size: int = 4                # per rank
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    reconstruction: ReconstructionWeights = field(default_factory=ReconstructionWeights)
    nv_weight: float = 4.0
    depth_weight: float = 2e-4
    #: τ of eq. 8: novel-view pixels whose coarse surface faced the input camera at a cosine below τ
    #: (turned more than 60° away, or unseen) are held to the coarse render. Not given in the paper.
    tau: float = 0.5
    #: ε of eq. 10 in world units along the ray: hits this close to the surface may carry detail. About
    #: one manifold spacing of the tiny preset (level range 0.22 over 11 shells), two of the paper's.
    epsilon: float = 0.02
    #: Novel poses θ of L_nv: uniform in [-yaw, yaw] x [-pitch, pitch] (radians), the range avatars turn.
    novel_yaw: float = 0.5
    novel_pitch: float = 0.25
    #: Samples per column when finding the manifolds' low-res height grid (once, at start).
    height_samples: int = 192

    @classmethod
    def presets(cls) -> dict[str, "DetailStageConfig"]:
        # paper: batch 8 over 4 GPUs; the per-rank batch below times the ranks gives the global batch
        return {"tiny": cls(detail_preset="tiny", batch_size=2),
                "small": cls(detail_preset="small", batch_size=8),
                "paper": cls(detail_preset="paper", batch_size=2)}


# ---------------------------------------------------------------------------------------- stage
class DetailStage:
    """The Stage protocol of ``gramcast.training.engine.trainer`` for the detail reconstructor.

    generator: a ``GRAMModel`` or the path of its checkpoint (the tuned generator); encoder: any
    callable ``images (B, 3, R, R) -> w+ (B, num_ws, w_dim)`` (e.g. ``GRAMEncoder``) or the path of
    an encoder checkpoint. Both are frozen. ``loss``: the L_r module (default: LPIPS and the identity
    network from the user cache, or their substitutes); its perceptual term also measures L_nv.
    """

    def __init__(self, cfg: DetailStageConfig, data_dir: Path, dist: DistInfo,
                 generator: GRAMModel | str | Path, encoder: Callable[[Tensor], Tensor] | str | Path,
                 run_dir: Path | None = None, loss: ReconstructionLoss | None = None):
        self.cfg, self.dist = cfg, dist
        self.run_dir = Path(run_dir) if run_dir is not None else None
        dev = dist.device
        if not isinstance(generator, nn.Module):
            generator = GRAMModel.load(generator, device=dev)
        self.G = generator.to(dev).eval().requires_grad_(False)
        if isinstance(encoder, (str, Path)):
            from gramcast.model.encoder import GRAMEncoder

            encoder = GRAMEncoder.load(encoder, device=dev)
        if isinstance(encoder, nn.Module):
            encoder = encoder.to(dev).eval().requires_grad_(False)
        self.E = encoder
        if loss is None:
            loss = ReconstructionLoss.from_cache(cfg.reconstruction, device=dev)
        self.loss = loss.to(dev)
        torch.manual_seed(cfg.seed)    # identical initial weights on every rank
        dcfg = DetailConfig.for_model(self.G.config, cfg.detail_preset, **cfg.detail_overrides)
        self.R = DetailReconstructor(dcfg).to(dev)
        self.extent = dcfg.extent
        # The manifolds are frozen and identity-independent: their low-res height grid is fixed.
        self.heights_lr = manifold_height_grid(self.G, dcfg.map_resolution, dcfg.extent, cfg.height_samples)[0]
        self.data = FaceDataset(data_dir, self.G.config.resolution, max_images=cfg.max_images)
        self.opt = adam(self.R.parameters(), cfg.lr, cfg.betas, dev)
        self.R_forward: nn.Module = wrap_ddp(self.R, dist)
        self.images_seen = 0

    def _autocast(self):
        return autocast(self.cfg.amp, self.dist.device)

    @torch.no_grad()
    def coarse(self, images: Tensor, poses: Tensor) -> tuple[Tensor, Tensor, object]:
        """The general inversion stage's result: w+, tri-planes and the render at the input poses."""
        ws = self.E(images)
        planes = self.G.synthesize_planes(ws)
        return ws, planes, self.G.render_planes(planes, poses)

    def novel_poses(self, n: int, g: torch.Generator) -> Tensor:
        r = torch.rand(n, 2, generator=g) * 2.0 - 1.0
        return host_to_device(r * torch.tensor([self.cfg.novel_yaw, self.cfg.novel_pitch]), self.dist.device)

    def losses(self, images: Tensor, poses: Tensor, novel: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its parts for a batch (the maths of one step, without the optimiser)."""
        cfg, G = self.cfg, self.G
        _, planes, coarse = self.coarse(images, poses)
        with self._autocast():
            detail = self.R_forward(images, coarse.rgb, poses, self.heights_lr).float()
        render = lambda pose: G.render_planes(planes, pose, detail=detail, detail_extent=self.extent)  # noqa: E731
        with self._autocast():
            fine = render(poses).rgb.float()
        l_r, parts = self.loss(fine, images)
        # L_nv: the coarse render's normals at θ decide where the details must not change the look
        l_nv = mask_fraction = torch.zeros((), device=images.device)
        if cfg.nv_weight > 0:   # two renders and a normal map: skipped when the term is switched off
            with torch.no_grad():
                coarse_nv = G.render_planes(planes, novel, with_normals=True)
                mask = normal_aware_mask(coarse_nv.normal, poses, cfg.tau)
            with self._autocast():
                fine_nv = render(novel).rgb.float()
            l_nv = self.loss.perceptual(mask * fine_nv, mask * coarse_nv.rgb).mean()
            mask_fraction = mask.mean()
        # L_depth at the input view: the same hits the renders used
        with torch.no_grad():
            res = G.config.resolution
            origins, dirs = camera.generate_rays(camera.pose_to_c2w(poses), res, res)
            points, depth, valid = G.intersect(origins, dirs, lowres_factor=G.config.lowres_factor)
        l_depth = depth_regularization(detail, points, depth, valid, coarse.depth, cfg.epsilon, self.extent)
        total = l_r + cfg.nv_weight * l_nv + cfg.depth_weight * l_depth
        scalars = {"loss/total": total, "loss/L_r": l_r, "loss/L_nv": l_nv, "loss/L_depth": l_depth,
                   "nv/mask_fraction": mask_fraction, "detail/rms": detail.detach().square().mean().sqrt(),
                   **{f"L_r/{k}": torch.tensor(v) for k, v in parts.items()}}
        return total, scalars

    def train_step(self, step: int) -> StepScalars:
        cfg, dev = self.cfg, self.dist.device
        g = step_generator(cfg.seed, step, self.dist.rank)
        images, poses = self.data.sample(cfg.batch_size, g, flip=cfg.flip, device=dev)
        novel = self.novel_poses(cfg.batch_size, g)
        self.R.train()
        total, scalars = self.losses(images, poses, novel)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        self.images_seen += cfg.batch_size * self.dist.world_size
        return StepScalars(scalars, self.dist, [self.R])

    @torch.no_grad()
    def evaluate(self, images: Tensor, poses: Tensor) -> dict[str, float]:
        """L_r of the coarse and of the detailed inversion of a batch (eval mode, no randomness)."""
        self.R.eval()
        images, poses = images.to(self.dist.device), poses.to(self.dist.device)
        _, planes, coarse = self.coarse(images, poses)
        detail = self.R(images, coarse.rgb, poses, self.heights_lr)
        fine = self.G.render_planes(planes, poses, detail=detail, detail_extent=self.extent).rgb
        return {"L_r/coarse": float(self.loss(coarse.rgb, images)[0]),
                "L_r/detailed": float(self.loss(fine, images)[0])}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"R": self.R.state_dict(), "opt": self.opt.state_dict(), "images_seen": self.images_seen}

    def load_state_dict(self, state: dict) -> None:
        self.R.load_state_dict(state["R"])
        self.opt.load_state_dict(state["opt"])
        self.images_seen = int(state["images_seen"])

    def export(self, run_dir: Path) -> None:
        self.R.save(Path(run_dir) / DETAIL_FILE)

    @torch.no_grad()
    def log_images(self, writer, step: int, n: int = 4, yaws=(-0.4, 0.4)) -> None:
        """Rows: fixed training images; columns: input | coarse | detailed | detailed at each of ``yaws``."""
        self.R.eval()
        images, poses = fixed_batch(self.data, n, self.dist.device)
        n = images.shape[0]
        _, planes, coarse = self.coarse(images, poses)
        detail = self.R(images, coarse.rgb, poses, self.heights_lr)
        cols = [images, coarse.rgb]
        for pose in [poses] + [torch.tensor([[y, 0.0]], device=poses.device).expand(n, 2) for y in yaws]:
            cols.append(self.G.render_planes(planes, pose, detail=detail, detail_extent=self.extent).rgb)
        writer.add_image("detail/input_coarse_detailed_yaws", image_grid(cols), step)
        self.R.train()
