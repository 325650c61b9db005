"""Stage 1: the efficient GRAM generator trained as a 3D-aware GAN (paper Sec. 3.1, supp. A.4).

Per step: a discriminator update (non-saturating loss + R1 on reals + pose regression) and a
generator update (non-saturating loss + pose regression on its renders), then an EMA of the
generator. Learning rates follow the paper: tri-plane generator and decoder 2.5e-3, manifold
predictor 2e-5, discriminator 1e-3, Adam betas (0, 0.99).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.profiler import record_function

from gramcast.device import host_to_device
from gramcast.model import GRAMConfig, GRAMModel
from gramcast.training.augment import diff_augment, parse_policy
from gramcast.training.data import FaceDataset, PoseSampler
from gramcast.training.engine.distributed import DistInfo, StepScalars, wrap_ddp
from gramcast.training.engine.stage import StageConfig, adam, autocast, image_grid
from gramcast.training.engine.trainer import step_generator
from gramcast.training.losses import discriminator_loss, generator_loss, pose_loss, r1_penalty
from gramcast.training.metrics import (HOW_TO_GET, INCEPTION_SHA1, REAL_STATS_FILE, InceptionFeatures,
                                       find_inception_weights, generator_fid_kid, real_features)
from gramcast.training.networks.discriminator import PoseDiscriminator

GENERATOR_FILE = "generator_ema.safetensors"
log = logging.getLogger(__name__)


@dataclass
class GANConfig(StageConfig):
    model_preset: str = "tiny"
    model_overrides: dict = field(default_factory=dict)
    batch_size: int = 8            # per rank
    lr_generator: float = 2.5e-3   # tri-plane generator (with its mapping network) and decoder
    lr_manifold: float = 2e-5
    lr_discriminator: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0
    #: Lazy R1 (StyleGAN2): the penalty every this many steps, weighted by the interval; the double
    #: backward it needs is a third of a CPU step.
    r1_every: int = 1
    pose_weight: float = 30.0
    #: Supervise D's pose head on real images with their estimated poses too (ours; GRAM uses fakes).
    pose_on_real: bool = True
    #: DiffAugment policies applied to every image D sees, e.g. "color,translation,cutout" ("": none).
    augment: str = ""
    ema_half_life_images: float = 10_000.0
    ema_rampup: float = 0.05       # half-life <= rampup * images seen, early in training
    d_channel_base: int = 4096
    d_channel_max: int = 256
    #: FID/KID of G_ema against the training set every this many steps (0: never), on rank 0, when
    #: the Inception weight is installed (`gramcast-train fetch-inception`). Returned with that
    #: step's scalars, so make it a multiple of the trainer's log interval (the CLI does).
    eval_every: int = 1000
    fid_samples: int = 10_000      # generated images per evaluation
    fid_real_images: int | None = 10_000  # real images (a fixed random subset; None: all)
    fid_batch: int = 32
    kid_subset_size: int = 1000
    inception_path: str | None = None     # else $GRAMCAST_INCEPTION, else ~/.cache/gramcast/
    inception_sha1: str | None = INCEPTION_SHA1

    def __post_init__(self):
        super().__post_init__()
        parse_policy(self.augment)

    @classmethod
    def presets(cls) -> dict[str, "GANConfig"]:
        return {
            # tiny: gamma 0.2 (StyleGAN2's 2e-4 * res^2 / batch) with lazy R1 beat the paper's 10 with
            # R1 every step on LFW at 64² (README model card: FID 125 vs 155 after the same 98 minutes)
            "tiny": cls(model_preset="tiny", batch_size=4, d_channel_base=1024, d_channel_max=64,
                        r1_gamma=0.2, r1_every=16,
                        eval_every=100, fid_samples=64, fid_real_images=256, fid_batch=16),
            "small": cls(model_preset="small", batch_size=32, d_channel_base=8192, d_channel_max=256,
                         eval_every=2000, fid_samples=2000, fid_real_images=5000),
            "paper": cls(model_preset="paper", batch_size=8, d_channel_base=16384, d_channel_max=512,
                         eval_every=5000, fid_samples=10_000, fid_real_images=10_000),
        }


class _RenderForward(nn.Module):
    """The generator as one forward (what DDP wraps): latents + poses -> images."""

    def __init__(self, model: GRAMModel):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        ws = self.model.mapping(z)
        return self.model.render(ws, poses).rgb


class GANStage:
    def __init__(self, cfg: GANConfig, data_dir: Path, dist: DistInfo, run_dir: Path | None = None):
        self.cfg, self.dist = cfg, dist
        self.run_dir = Path(run_dir) if run_dir is not None else None
        dev = dist.device
        mcfg = GRAMConfig.preset(cfg.model_preset)
        for k, v in cfg.model_overrides.items():
            setattr(mcfg, k, v)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.G = GRAMModel.from_config(mcfg).to(dev)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.D = PoseDiscriminator(mcfg.resolution, cfg.d_channel_base, cfg.d_channel_max).to(dev)
        self.data = FaceDataset(data_dir, mcfg.resolution, max_images=cfg.max_images)
        self.poses = PoseSampler(self.data.poses)
        self.resolution = mcfg.resolution
        self.augment = parse_policy(cfg.augment)

        manifold = list(self.G.manifold.parameters())
        manifold_ids = {id(p) for p in manifold}
        rest = [p for p in self.G.parameters() if id(p) not in manifold_ids]
        self.opt_G = adam([{"params": rest, "lr": cfg.lr_generator}, {"params": manifold, "lr": cfg.lr_manifold}],
                          cfg.lr_generator, cfg.betas, dev)
        self.opt_D = adam(self.D.parameters(), cfg.lr_discriminator, cfg.betas, dev)
        self.G_forward: nn.Module = wrap_ddp(_RenderForward(self.G), dist)
        self.D_forward: nn.Module = wrap_ddp(self.D, dist)
        self.images_seen = 0
        self._last_r1 = torch.zeros((), device=dev)    # the latest R1 (lazy R1 skips steps)
        self._inception: InceptionFeatures | None = None
        self._real_features: torch.Tensor | None = None
        self._inception_path = None
        if cfg.eval_every and dist.is_main:
            self._inception_path = find_inception_weights(cfg.inception_path)
            if self._inception_path is None:
                log.warning("FID/KID evaluation skipped: no Inception weight installed; enable it with: %s",
                            HOW_TO_GET)

    def _autocast(self):
        return autocast(self.cfg.amp, self.dist.device)

    def _latents(self, n: int, g: torch.Generator) -> torch.Tensor:
        return host_to_device(torch.randn(n, self.G.config.z_dim, generator=g), self.dist.device)

    def train_step(self, step: int) -> StepScalars:
        cfg, dev = self.cfg, self.dist.device
        g = step_generator(cfg.seed, step, self.dist.rank)
        b = cfg.batch_size
        # the named ranges are what bench/train_step.py's profile splits a step into
        with record_function("gan/data"):
            real, real_pose = self.data.sample(b, g, flip=cfg.flip, device=dev)
            fake_pose = self.poses.sample(b, g, device=dev)
        with record_function("gan/D_step"):
            d = self._discriminator_step(step, real, real_pose, fake_pose, g)
        with record_function("gan/G_step"):
            loss_g, loss_adv_g, loss_pose_g = self._generator_step(g)
        with record_function("gan/ema"):
            self.images_seen += b * self.dist.world_size
            self._update_ema()
        scalars = {
            "loss/D": d["loss"], "loss/G": loss_g, "loss/D_adv": d["adv"], "loss/G_adv": loss_adv_g,
            "loss/r1": self._last_r1, "loss/pose_D": d["pose"], "loss/pose_G": loss_pose_g,
            "D/real_score": d["real_logits"].mean(), "D/fake_score": d["fake_logits"].mean(),
        }
        out = StepScalars(scalars, self.dist, [self.G, self.D])
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and self._inception_path is not None:
            out.main_only.update({f"eval/{k}": v for k, v in self.evaluate_fid().items()})
        return out

    def _discriminator_step(self, step: int, real, real_pose, fake_pose, g) -> dict[str, torch.Tensor]:
        """One D update: non-saturating loss + (lazy) R1 on reals + pose regression."""
        cfg, b = self.cfg, real.shape[0]
        # One forward over reals and fakes together (DDP sees one forward per step), as two sets, so
        # the minibatch statistic of the fakes is theirs alone.
        self.D.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fake = self.G_forward(self._latents(b, g), fake_pose).float()
        do_r1 = cfg.r1_gamma > 0 and cfg.r1_every > 0 and step % cfg.r1_every == 0
        real = real.detach().requires_grad_(do_r1)
        with self._autocast():
            logits, pred_pose = self.D_forward(diff_augment(torch.cat([real, fake]), self.augment, g), 2)
        logits, pred_pose = logits.float(), pred_pose.float()
        real_logits, fake_logits = logits[:b], logits[b:]
        loss_adv = discriminator_loss(real_logits, fake_logits)
        if do_r1:
            r1 = r1_penalty(real_logits, real)
            self._last_r1 = r1.detach()
        else:
            r1 = real_logits.new_zeros(())
        loss_pose = pose_loss(pred_pose[b:], fake_pose)
        if cfg.pose_on_real:
            loss_pose = loss_pose + pose_loss(pred_pose[:b], real_pose)
        loss = loss_adv + 0.5 * cfg.r1_gamma * cfg.r1_every * r1 + cfg.pose_weight * loss_pose
        self.opt_D.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_D.step()
        return {"loss": loss, "adv": loss_adv, "pose": loss_pose,
                "real_logits": real_logits, "fake_logits": fake_logits}

    def _generator_step(self, g) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One G update (non-saturating loss + pose regression on its renders) -> (loss, adv, pose)."""
        cfg, b = self.cfg, self.cfg.batch_size
        # D is only a critic here, so it is run outside DDP and its grads are skipped.
        self.D.requires_grad_(False)
        pose_g = self.poses.sample(b, g, device=self.dist.device)
        with self._autocast():
            fake = self.G_forward(self._latents(b, g), pose_g)
            fake_logits, pred_pose = self.D(diff_augment(fake.float(), self.augment, g))
        loss_adv = generator_loss(fake_logits.float())
        loss_pose = pose_loss(pred_pose.float(), pose_g)
        loss = loss_adv + cfg.pose_weight * loss_pose
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        return loss, loss_adv, loss_pose

    @torch.no_grad()
    def evaluate_fid(self) -> dict[str, float]:
        """FID and KID of G_ema (fixed latents and poses, so evaluations compare) vs the training set."""
        cfg, dev = self.cfg, self.dist.device
        t0 = time.perf_counter()
        if self._inception is None:
            self._inception = InceptionFeatures(self._inception_path, device=dev, batch_size=cfg.fid_batch,
                                                expected_sha1=cfg.inception_sha1)
        if self._real_features is None:
            cache = self.run_dir / REAL_STATS_FILE if self.run_dir is not None else None
            self._real_features = real_features(self.data, self._inception, cfg.fid_real_images, cache)
        g = torch.Generator().manual_seed(0x5EED + cfg.seed)

        def generate(n: int) -> torch.Tensor:
            z = torch.randn(n, self.G.config.z_dim, generator=g).to(dev)
            poses = self.poses.sample(n, g, device=dev)
            return self.G_ema.render(self.G_ema.mapping(z), poses).rgb.float()

        res = generator_fid_kid(generate, self.data, self._inception, cfg.fid_samples, batch_size=cfg.fid_batch,
                                kid_subset_size=cfg.kid_subset_size, real=self._real_features)
        return {"fid": res["fid"], "kid": res["kid"], "fid_seconds": time.perf_counter() - t0}

    @torch.no_grad()
    def _update_ema(self) -> None:
        half_life = self.cfg.ema_half_life_images
        if self.cfg.ema_rampup:
            half_life = min(half_life, self.images_seen * self.cfg.ema_rampup)
        batch = self.cfg.batch_size * self.dist.world_size
        beta = 0.5 ** (batch / max(half_life, 1e-8))
        # one kernel per list, not one per tensor (hundreds of launches a step on a GPU)
        torch._foreach_lerp_(list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()], 1.0 - beta)
        torch._foreach_copy_(list(self.G_ema.buffers()), list(self.G.buffers()))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "images_seen": self.images_seen}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.images_seen = int(state["images_seen"])

    def export(self, run_dir: Path) -> None:
        self.G_ema.save(Path(run_dir) / GENERATOR_FILE)

    @torch.no_grad()
    def log_images(self, writer, step: int, n: int = 4, yaws=(-0.5, -0.25, 0.0, 0.25, 0.5)) -> None:
        """A grid: each row one sample, each column one yaw, so 3D consistency shows at a glance."""
        g = torch.Generator().manual_seed(1234)
        z = torch.randn(n, self.G.config.z_dim, generator=g).to(self.dist.device)
        ws = self.G_ema.mapping(z)
        cols = []
        for yaw in yaws:
            poses = torch.tensor([[yaw, 0.0]], device=self.dist.device).expand(n, 2)
            cols.append(self.G_ema.render(ws, poses).rgb)
        writer.add_image("samples/yaw_sweep", image_grid(cols), step)
        from gramcast.training.evaluation import multiview_consistency, sample_diversity

        scores = multiview_consistency(self.G_ema, ws)
        real, real_poses = self.data.sample(32, g, flip=False, device=self.dist.device)
        scores.update(sample_diversity(self.G_ema, real, real_poses, g))
        for key, value in scores.items():
            writer.add_scalar(f"eval/{key}", value, step)
