"""Stage 2b: fine-tuning the generator around the encoder's codes (paper Sec. 3.2, supp. A.4, "finetuning").

Pivotal tuning (PTI, Roich et al. 2022) on the whole training set instead of one image: the trained
encoder E_w is frozen and gives each image its pivot w_p; only the tri-plane generator Ψ
(``G.synthesis``) and the decoder m (``G.decoder``) learn; the mapping network and the manifold
predictor stay bit-identical (the manifolds are shared by every identity and baked into avatars).

    L = L_r(G(w_p, θ̂), Î) + λ_R · L_R,    L_R = ||G(w_r, θ) − G₀(w_r, θ)||² + P(G(w_r, θ), G₀(w_r, θ))

L_R is PTI's locality regulariser: w_r = w_p + α·(w_z − w_p)/||w_z − w_p|| steps from the pivot
towards a random mapped latent w_z, and the tuned generator must render there what the original
G₀ rendered (θ a random training pose, P the perceptual term of L_r). λ_R = 0.5; Adam (0.9, 0.999),
lr 1e-3.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from gramcast.errors import CheckpointError
from gramcast.device import host_to_device
from gramcast.model import GRAMModel
from gramcast.model.checkpoint import cpu_state, model_id
from gramcast.model.encoder import GRAMEncoder
from gramcast.training.data import FaceDataset, PoseSampler
from gramcast.training.engine.distributed import DistInfo, StepScalars, wrap_ddp
from gramcast.training.engine.stage import StageConfig, adam, autocast, fixed_batch, image_grid
from gramcast.training.engine.trainer import step_generator
from gramcast.training.reconstruction import ReconstructionLoss, ReconstructionWeights, masked_mse

TUNED_FILE = "generator_tuned.safetensors"
log = logging.getLogger(__name__)

#: PTI's α = 30 moves a StyleGAN2 w+ code of 18 x 512 numbers; see ``default_locality_alpha``.
PTI_ALPHA, PTI_NUM_WS, PTI_W_DIM = 30.0, 18, 512


@dataclass
class TuneStageConfig(StageConfig):
    batch_size: int = 4              # per rank
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    recon_weights: ReconstructionWeights = field(default_factory=ReconstructionWeights)
    locality_weight: float = 0.5     # λ_R
    locality_l2_weight: float = 1.0
    locality_perceptual_weight: float = 1.0
    #: Step length from the pivot; None: PTI's 30 scaled to this generator's w+ size.
    locality_alpha: float | None = None

    @classmethod
    def presets(cls) -> dict[str, "TuneStageConfig"]:
        return {
            "tiny": cls(batch_size=4),
            "small": cls(batch_size=16),
            "paper": cls(batch_size=4),   # the paper: batch 16 over 4 GPUs, 100K iterations
        }


# ---------------------------------------------------------------------- locality regulariser (pure)
def default_locality_alpha(num_ws: int, w_dim: int) -> float:
    """PTI's α = 30 rescaled so that the step per w+ coordinate (α / sqrt(num_ws · w_dim), RMS) equals
    PTI's on StyleGAN2's 18 x 512 w+ (≈ 0.31): α = 30 · sqrt(num_ws · w_dim / (18 · 512))."""
    return PTI_ALPHA * math.sqrt(num_ws * w_dim / (PTI_NUM_WS * PTI_W_DIM))


def locality_codes(w_pivot: Tensor, w_z: Tensor, alpha: float) -> Tensor:
    """w_r = w_p + α · (w_z − w_p) / ||w_z − w_p|| per sample (norm over all of w+).

    w_pivot, w_z: ``(B, L, D)`` (w_z may be ``(B, D)``: the same w at every layer) -> ``(B, L, D)``.
    """
    if w_z.ndim == 2:
        w_z = w_z[:, None].expand_as(w_pivot)
    direction = w_z - w_pivot
    norm = direction.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
    return w_pivot + alpha * direction / norm


def locality_regularizer(tuned: Tensor, original: Tensor, perceptual: nn.Module | None,
                         l2_weight: float = 1.0, perceptual_weight: float = 1.0) -> Tensor:
    """L_R = l2_weight · MSE + perceptual_weight · P between renders ``(B, 3, H, W)`` of the tuned and
    the original generator (batch mean, ``()``); exactly 0 where they agree."""
    loss = l2_weight * masked_mse(tuned, original).mean()
    if perceptual is not None and perceptual_weight:
        loss = loss + perceptual_weight * perceptual(tuned.float(), original.float()).mean()
    return loss


class _RenderForward(nn.Module):
    """The tuned generator as one forward (what DDP wraps): w+ ``(B, L, D)`` + poses ``(B, 2)`` -> rgb."""

    def __init__(self, model: GRAMModel):
        super().__init__()
        self.model = model

    def forward(self, ws: Tensor, poses: Tensor) -> Tensor:
        return self.model.render(ws, poses).rgb


def check_encoder_matches(encoder: GRAMEncoder, model: GRAMModel, encoder_path) -> None:
    """CheckpointError unless ``encoder`` produces codes of ``model``'s w+ shape and resolution, and (where its
    file records it) was trained against ``model`` itself: another generator of the same shape reads its codes
    as other faces, and tuning would pull it towards them."""
    ec, gc = encoder.config, model.config
    if (ec.num_ws, ec.w_dim) != (model.num_ws, gc.w_dim):
        raise CheckpointError(f"{encoder_path} encodes w+ of {ec.num_ws} x {ec.w_dim}, but the generator takes "
                              f"{model.num_ws} x {gc.w_dim}: pass the encoder trained for this generator")
    trained_for = GRAMEncoder.trained_for(encoder_path)
    if trained_for is not None and trained_for != model_id(cpu_state(model)):
        raise CheckpointError(f"{encoder_path} was trained against generator {trained_for}, not this --generator "
                              f"({model_id(cpu_state(model))}): pass the generator it was trained with, or train "
                              "an encoder for this one (`gramcast-train encoder --generator ...`)")


# ---------------------------------------------------------------------- the stage
class TuneStage:
    """Fine-tunes Ψ and m of ``self.G`` around the frozen encoder's pivots; ``self.G0`` is the original."""

    def __init__(self, cfg: TuneStageConfig, generator_path: Path, encoder_path: Path, data_dir: Path,
                 dist: DistInfo, run_dir: Path | None = None, recon_loss: ReconstructionLoss | None = None):
        self.cfg, self.dist = cfg, dist
        self.run_dir = Path(run_dir) if run_dir is not None else None
        dev = dist.device
        # eval(): no layer here behaves differently in training, and it stops the mapping network
        # from folding batches into its tracked w_avg (which must stay bit-identical).
        self.G = GRAMModel.load(generator_path, device=dev).eval().requires_grad_(False)
        self.G0 = copy.deepcopy(self.G)
        self.E = GRAMEncoder.load(encoder_path, device=dev).requires_grad_(False).eval()
        check_encoder_matches(self.E, self.G, encoder_path)
        self.tuned = [self.G.synthesis, self.G.decoder]
        for m in self.tuned:
            m.requires_grad_(True)
        self.alpha = (cfg.locality_alpha if cfg.locality_alpha is not None
                      else default_locality_alpha(self.G.num_ws, self.G.config.w_dim))
        self.data = FaceDataset(data_dir, self.G.config.resolution, max_images=cfg.max_images)
        self.poses = PoseSampler(self.data.poses)
        self.recon = (recon_loss if recon_loss is not None
                      else ReconstructionLoss.from_cache(cfg.recon_weights, device=dev)).to(dev)
        params = [p for m in self.tuned for p in m.parameters()]
        self.opt = adam(params, cfg.lr, cfg.betas, dev)
        self.G_forward: nn.Module = wrap_ddp(_RenderForward(self.G), dist)   # syncs only the trainable Ψ and m

    def _autocast(self):
        return autocast(self.cfg.amp, self.dist.device)

    def train_step(self, step: int) -> StepScalars:
        cfg, dev = self.cfg, self.dist.device
        g = step_generator(cfg.seed, step, self.dist.rank)
        b = cfg.batch_size
        images, poses = self.data.sample(b, g, flip=cfg.flip, device=dev)
        z = host_to_device(torch.randn(b, self.G.config.z_dim, generator=g), dev)
        reg_poses = self.poses.sample(b, g, device=dev)
        with torch.no_grad():
            w_p = self.E(images)
            w_z = self.G0.mapping(z, update_w_avg=False)
            w_r = locality_codes(w_p, w_z, self.alpha)
        # One forward over the pivots and the locality codes (DDP sees one forward per step).
        with self._autocast():
            rgb = self.G_forward(torch.cat([w_p, w_r]), torch.cat([poses, reg_poses])).float()
            with torch.no_grad():
                original = self.G0.render(w_r, reg_poses).rgb.float()
        rec, parts = self.recon(rgb[:b], images)
        loc = locality_regularizer(rgb[b:], original, self.recon.perceptual, cfg.locality_l2_weight,
                                   cfg.locality_perceptual_weight)
        loss = rec + cfg.locality_weight * loc
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        scalars = {"loss/total": loss.detach(), "loss/recon": rec.detach(), "loss/locality": loc.detach(),
                   **{f"recon/{k}": torch.tensor(v) for k, v in parts.items()}}
        return StepScalars(scalars, self.dist, self.tuned)

    @torch.no_grad()
    def reconstruction_error(self, n: int = 8, model: GRAMModel | None = None) -> dict[str, float]:
        """L_r and its parts of ``model`` (default: the tuned G) on the first ``n`` training images at
        their own poses, from the encoder's codes: a fixed set, so values at different steps compare."""
        images, poses = fixed_batch(self.data, n, self.dist.device)
        model = model if model is not None else self.G
        rec, parts = self.recon(model.render(self.E(images), poses).rgb.float(), images)
        return {"recon": float(rec), **parts}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        # Only what changes: the frozen parts are reloaded from the generator file on resume.
        return {"synthesis": self.G.synthesis.state_dict(), "decoder": self.G.decoder.state_dict(),
                "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G.synthesis.load_state_dict(state["synthesis"])
        self.G.decoder.load_state_dict(state["decoder"])
        self.opt.load_state_dict(state["opt"])

    def export(self, run_dir: Path) -> None:
        self.G.save(Path(run_dir) / TUNED_FILE)

    @torch.no_grad()
    def log_images(self, writer, step: int, n: int = 4, yaws=(-0.4, 0.4)) -> None:
        """Rows: training images; columns: input | original G | tuned G at its pose | tuned G at two novel yaws."""
        images, poses = fixed_batch(self.data, n, self.dist.device)
        ws = self.E(images)
        cols = [images, self.G0.render(ws, poses).rgb, self.G.render(ws, poses).rgb]
        for yaw in yaws:
            cols.append(self.G.render(ws, torch.stack([torch.full_like(poses[:, 0], yaw), poses[:, 1]], 1)).rgb)
        writer.add_image("tune/input_original_tuned_novel", image_grid(cols), step)
        for k, v in self.reconstruction_error(n).items():
            writer.add_scalar(f"eval/{k}", v, step)
