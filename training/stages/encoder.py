"""Stage 2a: the w+ encoder E_w of the general inversion stage (paper Sec. 3.2, supp. A.4).

The pre-trained generator is frozen. Each step encodes a batch of real crops to w+, renders them at
their own (dataset) poses and minimises

    L = L_r(render, image) + λ_d · L_d-reg(w+) + λ_w · L_w+(w+, w̄+)

with L_r the shared multi-level reconstruction loss (eq. 6; weights 1e-2 / 1 / 4e-2), L_d-reg e4e's
delta regulariser (1e-3) and L_w+ the pull towards the mean latent (1e-4); w̄ is the mean of the
mapping network over 10k random z. Adam (0.9, 0.999), lr 3e-4 dropping to 6e-5 at ``lr_decay_step``.
Per-layer deltas are unlocked progressively, one every ``delta_every`` steps (e4e).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gramcast.device import host_to_device
from gramcast.model import GRAMModel
from gramcast.model.checkpoint import cpu_state, model_id
from gramcast.model.encoder import EncoderConfig, GRAMEncoder, delta_regularizer, wplus_to_mean
from gramcast.training.data import FaceDataset
from gramcast.training.engine.distributed import DistInfo, StepScalars, wrap_ddp
from gramcast.training.engine.stage import StageConfig, adam, autocast, fixed_batch, image_grid
from gramcast.training.engine.trainer import step_generator
from gramcast.training.reconstruction import ReconstructionLoss, ReconstructionWeights

ENCODER_FILE = "encoder.safetensors"
log = logging.getLogger(__name__)


__all__ = ["EncoderStageConfig", "EncoderStage", "learning_rate_at", "active_deltas_at", "mean_latent",
           "image_grid", "ENCODER_FILE"]


@dataclass
class EncoderStageConfig(StageConfig):
    #: Size of the encoder backbone (``EncoderConfig.for_model`` preset); the generator sets the rest.
    encoder_preset: str = "tiny"
    encoder_overrides: dict = field(default_factory=dict)
    batch_size: int = 4              # per rank
    lr: float = 3e-4
    lr_final: float = 6e-5
    lr_decay_step: int = 100_000     # step at which lr drops to lr_final (paper: after 100K iterations)
    betas: tuple[float, float] = (0.9, 0.999)
    recon_weights: ReconstructionWeights = field(default_factory=ReconstructionWeights)
    delta_reg_weight: float = 1e-3
    wplus_reg_weight: float = 1e-4
    #: Unlock one more per-layer delta every this many steps (e4e: 2000); 0: all deltas from the start.
    delta_every: int = 2000
    #: z samples for the mean latent w̄ (paper: 10K).
    w_avg_samples: int = 10_000

    @classmethod
    def presets(cls) -> dict[str, "EncoderStageConfig"]:
        return {
            # a few hundred CPU steps: deltas unlock quickly so the whole schedule is exercised
            "tiny": cls(encoder_preset="tiny", batch_size=4, lr_decay_step=150, delta_every=10, w_avg_samples=1000),
            # one lent GPU
            "small": cls(encoder_preset="small", batch_size=16, lr_decay_step=30_000, delta_every=1000),
            # the paper: batch 32 over 4 GPUs, 150K iterations, lr drop after 100K
            "paper": cls(encoder_preset="paper", batch_size=8, lr_decay_step=100_000, delta_every=2000),
        }


# ---------------------------------------------------------------------- schedules and w̄ (pure)
def learning_rate_at(step: int, cfg: EncoderStageConfig) -> float:
    """The step schedule: ``lr`` before ``lr_decay_step``, ``lr_final`` from it on."""
    return cfg.lr if step < cfg.lr_decay_step else cfg.lr_final


def active_deltas_at(step: int, delta_every: int, num_ws: int) -> int:
    """How many per-layer deltas are on at ``step`` (e4e's progressive stage), in [0, num_ws - 1]."""
    if delta_every <= 0:
        return num_ws - 1
    return min(step // delta_every, num_ws - 1)


@torch.no_grad()
def mean_latent(model: GRAMModel, samples: int, seed: int = 0, batch: int = 1000) -> torch.Tensor:
    """w̄ ``(w_dim,)``: the mean of the mapping network over ``samples`` z ~ N(0, I) (z drawn on the
    CPU from ``seed``, so every rank and device averages the same latents)."""
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(model.config.w_dim, dtype=torch.float64, device=model.device)
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        z = host_to_device(torch.randn(n, model.config.z_dim, generator=g), model.device)
        total += model.mapping(z, update_w_avg=False).double().sum(0)
        done += n
    return (total / max(samples, 1)).float()


# ---------------------------------------------------------------------- the stage
class EncoderStage:
    """Trains ``self.E`` (a GRAMEncoder) against the frozen generator ``self.G`` (see module doc)."""

    def __init__(self, cfg: EncoderStageConfig, generator_path: Path, data_dir: Path, dist: DistInfo,
                 run_dir: Path | None = None, recon_loss: ReconstructionLoss | None = None):
        self.cfg, self.dist = cfg, dist
        self.run_dir = Path(run_dir) if run_dir is not None else None
        dev = dist.device
        self.G = GRAMModel.load(generator_path, device=dev).requires_grad_(False).eval()
        self.w_avg = mean_latent(self.G, cfg.w_avg_samples, seed=cfg.seed)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        enc_cfg = EncoderConfig.for_model(self.G.config, cfg.encoder_preset, **cfg.encoder_overrides)
        self.E = GRAMEncoder(enc_cfg, w_avg=self.w_avg).to(dev).train()
        self.E.active_deltas = active_deltas_at(0, cfg.delta_every, enc_cfg.num_ws)
        self.data = FaceDataset(data_dir, self.G.config.resolution, max_images=cfg.max_images)
        self.recon = (recon_loss if recon_loss is not None
                      else ReconstructionLoss.from_cache(cfg.recon_weights, device=dev)).to(dev)
        self.opt = adam(self.E.parameters(), cfg.lr, cfg.betas, dev)
        # Inactive delta heads are skipped, so some parameters get no gradient in a step.
        self.E_forward: torch.nn.Module = wrap_ddp(self.E, dist, find_unused_parameters=True)

    def _autocast(self):
        return autocast(self.cfg.amp, self.dist.device)

    def losses(self, images: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Total loss ``()`` and its (unweighted) parts for images ``(B, 3, R, R)`` at poses ``(B, 2)``."""
        cfg = self.cfg
        with self._autocast():
            ws = self.E_forward(images)
            rgb = self.G.render(ws, poses).rgb
        ws, rgb = ws.float(), rgb.float()
        rec, parts = self.recon(rgb, images)
        d_reg = delta_regularizer(ws)
        w_reg = wplus_to_mean(ws, self.w_avg)
        total = rec + cfg.delta_reg_weight * d_reg + cfg.wplus_reg_weight * w_reg
        scalars = {"loss/total": total.detach(), "loss/recon": rec.detach(), "loss/delta_reg": d_reg.detach(),
                   "loss/wplus_reg": w_reg.detach(), **{f"recon/{k}": torch.tensor(v) for k, v in parts.items()}}
        return total, scalars

    def train_step(self, step: int) -> StepScalars:
        cfg, dev = self.cfg, self.dist.device
        g = step_generator(cfg.seed, step, self.dist.rank)
        self.E.active_deltas = active_deltas_at(step, cfg.delta_every, self.E.config.num_ws)
        lr = learning_rate_at(step, cfg)
        for group in self.opt.param_groups:  # set from the step, so a resumed run follows the same schedule
            group["lr"] = lr
        images, poses = self.data.sample(cfg.batch_size, g, flip=cfg.flip, device=dev)
        loss, scalars = self.losses(images, poses)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        scalars.update({"train/lr": lr, "train/active_deltas": float(self.E.active_deltas)})
        return StepScalars(scalars, self.dist, [self.E])

    @torch.no_grad()
    def reconstruction_error(self, n: int = 8) -> dict[str, float]:
        """L_r and its parts on the first ``n`` training images at their own poses (no flip): a fixed
        set, so values at different steps compare."""
        images, poses = fixed_batch(self.data, n, self.dist.device)
        ws = self.E(images)
        rec, parts = self.recon(self.G.render(ws, poses).rgb.float(), images)
        return {"recon": float(rec), **parts}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"E": self.E.state_dict(), "opt": self.opt.state_dict()}   # E's holds active_deltas too

    def load_state_dict(self, state: dict) -> None:
        self.E.load_state_dict(state["E"])
        self.opt.load_state_dict(state["opt"])

    def export(self, run_dir: Path) -> None:
        self.E.save(Path(run_dir) / ENCODER_FILE, generator_id=model_id(cpu_state(self.G)))

    @torch.no_grad()
    def log_images(self, writer, step: int, n: int = 4, yaws=(-0.4, 0.4)) -> None:
        """Rows: training images; columns: input | reconstruction at its pose | two novel yaws."""
        images, poses = fixed_batch(self.data, n, self.dist.device)
        ws = self.E(images)
        cols = [images, self.G.render(ws, poses).rgb]
        for yaw in yaws:
            cols.append(self.G.render(ws, torch.stack([torch.full_like(poses[:, 0], yaw), poses[:, 1]], 1)).rgb)
        writer.add_image("inversion/input_recon_novel", image_grid(cols), step)
        for k, v in self.reconstruction_error(n).items():
            writer.add_scalar(f"eval/{k}", v, step)

