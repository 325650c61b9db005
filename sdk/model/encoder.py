"""The image inverter E_w of GRAMInverter's general inversion stage (paper Sec. 3.2, supp. A.4).

An e4e-style encoder (Tov et al. 2021): a small hand-written ResNet, a feature pyramid over its
last three stages, and one "style head" per w of the generator's w+ code. Coarse w's (the first
layers of Ψ) are read from the deepest, most semantic level, fine w's from the highest-resolution
level, as in pSp/e4e. The code is predicted as an offset from the mean latent:

    w+_i = w̄ + w_0 + Δ_i      (Δ_0 = 0; Δ_i = 0 for i > active_deltas)

``active_deltas`` implements e4e's progressive training: training starts with one shared w for
every layer and unlocks one per-layer delta at a time. ``delta_regularizer`` (e4e's L_d-reg) keeps
the deltas small and ``wplus_to_mean`` (the paper's L_w+, supp. eq. 1) keeps w+ near w̄+, both so
that the code stays in the well-behaved part of W+ where novel views look right.

Only torch and numpy are needed to import and run this module (safetensors for save/load).

    enc = GRAMEncoder(EncoderConfig.for_model(model.config, "tiny"), w_avg=model.mapping.w_avg)
    ws = enc(images)                       # (B, 3, H, W) in [-1, 1] -> (B, num_ws, w_dim)
    model.render(ws, poses)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gramcast.errors import InvalidArgumentError
from gramcast.model.checkpoint import (CheckpointFormat, config_from_dict, load_checkpoint, read_checkpoint_header,
                                      save_checkpoint)

FORMAT_VERSION = 1
KIND = "gramcast.wplus-encoder"
ENCODER_FORMAT = CheckpointFormat(
    KIND, FORMAT_VERSION, name="encoder", what="gramcast w+ encoder checkpoint",
    missing="encoder checkpoint; train one with `gramcast-train encoder` or check the path",
    pass_instead="pass the encoder.safetensors of `gramcast-train encoder`", require_id=False)

__all__ = ["EncoderConfig", "GRAMEncoder", "delta_regularizer", "wplus_to_mean", "pyramid_levels",
           "FORMAT_VERSION", "KIND"]

# Backbone sizes per preset, matched to the GRAM presets of the same name (``GRAMConfig.preset``).
# Four stride-2 stages as in e4e's IR-50, so the deepest pyramid level is input/16 (16² at 256²).
_PRESETS = {
    "tiny": dict(channels=(16, 32, 48, 64), stage_blocks=(1, 1, 1, 1), head_channels=64),
    "small": dict(channels=(32, 64, 128, 256), stage_blocks=(2, 2, 2, 2), head_channels=256),
    # e4e's IR-50 widths and depths (64, 128, 256, 512; 3, 4, 14, 3)
    "paper": dict(channels=(64, 128, 256, 512), stage_blocks=(3, 4, 14, 3), head_channels=512),
}


@dataclass
class EncoderConfig:
    #: Side of the (square) input image; other sizes are resized to it.
    input_resolution: int = 64
    #: Output channels of each ResNet stage; every stage halves the resolution (>= 3 stages: the
    #: last three feed the coarse / mid / fine pyramid levels).
    channels: tuple[int, ...] = (16, 32, 48, 64)
    #: Residual blocks per stage (same length as ``channels``).
    stage_blocks: tuple[int, ...] = (1, 1, 1, 1)
    #: Width of the style heads' strided convolutions.
    head_channels: int = 64
    #: GroupNorm groups (batch-independent normalisation: per-rank batches are small and the
    #: encoder must behave the same on one selfie at inference as in training).
    norm_groups: int = 8
    num_ws: int = 11
    w_dim: int = 64
    #: How many of the first w's come from the coarse level and the next from the mid level
    #: (the rest from the fine level). None: e4e's split of StyleGAN2's 18 (3 / 4 / 11), scaled.
    coarse_ws: int | None = None
    mid_ws: int | None = None

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.stage_blocks = tuple(int(b) for b in self.stage_blocks)
        if self.coarse_ws is None or self.mid_ws is None:
            coarse, mid = _default_split(self.num_ws)
            self.coarse_ws = coarse if self.coarse_ws is None else self.coarse_ws
            self.mid_ws = mid if self.mid_ws is None else self.mid_ws
        self.validate()

    @property
    def num_stages(self) -> int:
        return len(self.channels)

    def validate(self) -> None:
        """Raise ValueError naming every field that cannot work."""
        p = []
        r = self.input_resolution
        if r < 8 or r & (r - 1):
            p.append(f"input_resolution must be a power of two >= 8, got {r}")
        if len(self.channels) < 3:
            p.append(f"channels needs >= 3 stages (coarse/mid/fine pyramid levels), got {self.channels}")
        if len(self.stage_blocks) != len(self.channels):
            p.append(f"stage_blocks {self.stage_blocks} must have one entry per stage of channels {self.channels}")
        if any(c < 1 for c in self.channels) or any(b < 1 for b in self.stage_blocks):
            p.append("channels and stage_blocks must be >= 1")
        if r >= 8 and not r & (r - 1) and r >> len(self.channels) < 1:
            p.append(f"{len(self.channels)} stride-2 stages need input_resolution >= {2 ** len(self.channels)}")
        for name in ("head_channels", "norm_groups", "num_ws", "w_dim"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.coarse_ws < 1 or self.mid_ws < 0 or self.coarse_ws + self.mid_ws > self.num_ws:
            p.append(f"coarse_ws ({self.coarse_ws}) >= 1 and mid_ws ({self.mid_ws}) >= 0 must sum to "
                     f"<= num_ws ({self.num_ws})")
        if p:
            raise ValueError("bad encoder config: " + "; ".join(p))

    @classmethod
    def for_model(cls, gram_config, preset: str = "tiny", **overrides) -> "EncoderConfig":
        """The encoder of size ``preset`` for a generator config (a ``GRAMConfig``): its resolution,
        number of w's and w_dim."""
        if preset not in _PRESETS:
            raise ValueError(f"unknown encoder preset {preset!r}; choose from {sorted(_PRESETS)}")
        from gramcast.model.triplane import TriplaneSynthesis

        with torch.device("meta"):  # count Ψ's w's from the real layout, without allocating it
            num_ws = TriplaneSynthesis(gram_config.w_dim, gram_config.plane_resolution, gram_config.plane_channels,
                                       gram_config.channel_base, gram_config.channel_max).num_ws
        kw = dict(_PRESETS[preset], input_resolution=gram_config.resolution, num_ws=num_ws,
                  w_dim=gram_config.w_dim)
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["stage_blocks"] = list(self.channels), list(self.stage_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        """Inverse of ``to_dict``; ValueError on unknown fields or values that cannot work."""
        return config_from_dict(cls, d, "encoder")


def _default_split(num_ws: int) -> tuple[int, int]:
    """(coarse, mid) counts: e4e's 3 / 4 / 11 of StyleGAN2's 18 w's, scaled to ``num_ws``."""
    if num_ws <= 2:
        return 1, num_ws - 1
    coarse = max(1, round(num_ws * 3 / 18))
    mid = max(1, min(round(num_ws * 4 / 18), num_ws - coarse - 1))
    return coarse, mid


def _groups(channels: int, groups: int) -> int:
    """The largest group count <= ``groups`` that divides ``channels``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def pyramid_levels(config: EncoderConfig) -> list[int]:
    """Which pyramid level feeds each w: 0 coarse (deepest), 1 mid, 2 fine; a list of num_ws ints."""
    c, m = config.coarse_ws, config.mid_ws
    return [0 if i < c else 1 if i < c + m else 2 for i in range(config.num_ws)]


# ---------------------------------------------------------------------- building blocks
class ResBlock(nn.Module):
    """Pre-activation basic block: (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(cout, groups), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.skip = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return h + (x if self.skip is None else self.skip(x))


class StyleHead(nn.Module):
    """e4e's GradualStyleBlock: stride-2 convs down to 1x1, then a linear layer to one w.

    (B, cin, S, S) -> (B, w_dim). ``out`` is the last layer (zero it and the head outputs 0).
    """

    def __init__(self, cin: int, width: int, spatial: int, w_dim: int):
        super().__init__()
        layers, c = [], cin
        for _ in range(max(int(math.log2(spatial)), 0)):
            layers += [nn.Conv2d(c, width, 3, 2, 1), nn.LeakyReLU(0.2)]
            c = width
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(c, w_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.convs(x)
        return self.out(h.mean(dim=(2, 3)))  # 1x1 after the convs; mean also tolerates odd sizes


# ---------------------------------------------------------------------- the encoder
class GRAMEncoder(nn.Module):
    """Image ``(B, 3, H, W)`` in [-1, 1] -> w+ ``(B, num_ws, w_dim)`` = w̄ + w_0 + per-layer deltas.

    ``w_avg`` ``(w_dim,)`` is a buffer (saved with the weights): the mean latent w̄ of the generator
    this encoder inverts into. ``active_deltas`` (0 .. num_ws-1): how many per-layer deltas are on;
    the rest are exactly zero (and their heads are not evaluated).
    """

    def __init__(self, config: EncoderConfig, w_avg: Tensor | None = None):
        super().__init__()
        self.config = cfg = config
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim) if w_avg is None
                             else w_avg.detach().float().reshape(cfg.w_dim).clone())
        self.stem = nn.Conv2d(3, cfg.channels[0], 3, 1, 1)
        stages, cin = [], cfg.channels[0]
        for cout, n in zip(cfg.channels, cfg.stage_blocks):
            blocks = [ResBlock(cin, cout, 2, cfg.norm_groups)]
            blocks += [ResBlock(cout, cout, 1, cfg.norm_groups) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        # Feature pyramid (FPN, as e4e): the deepest map c3 plus 1x1 laterals of c2 and c1.
        width = cfg.channels[-1]
        self.lateral_mid = nn.Conv2d(cfg.channels[-2], width, 1)
        self.lateral_fine = nn.Conv2d(cfg.channels[-3], width, 1)
        deepest = cfg.input_resolution >> cfg.num_stages
        sizes = [deepest, deepest * 2, deepest * 4]          # spatial side of coarse, mid, fine
        self.levels = pyramid_levels(cfg)
        self.heads = nn.ModuleList(StyleHead(width, cfg.head_channels, sizes[lv], cfg.w_dim) for lv in self.levels)
        with torch.no_grad():
            # Start at w̄ (a plausible face) and let training move away from it: w_0's head starts
            # small, and the deltas' heads at zero so unlocking one does not jolt the code.
            self.heads[0].out.weight.mul_(0.1)
            self.heads[0].out.bias.zero_()
            for head in self.heads[1:]:
                head.out.weight.zero_()
                head.out.bias.zero_()
        self._active = cfg.num_ws - 1

    @property
    def active_deltas(self) -> int:
        return self._active

    @active_deltas.setter
    def active_deltas(self, n: int) -> None:
        self._active = self._check_active(n)

    def _check_active(self, n) -> int:
        """``n`` as a number of active deltas in [0, num_ws - 1], else InvalidArgumentError."""
        if not 0 <= int(n) < self.config.num_ws:
            raise InvalidArgumentError(f"active_deltas must be in [0, {self.config.num_ws - 1}] (deltas of w_1.."
                                       f"w_{self.config.num_ws - 1} in use), got {n}")
        return int(n)

    # active_deltas travels with the weights (state_dict, safetensors file, inverter bundle, training
    # state) as a 0-d int64 tensor, so a loaded encoder computes exactly what was trained.
    def get_extra_state(self) -> Tensor:
        return torch.tensor(self._active, dtype=torch.int64, device="cpu")

    def set_extra_state(self, state) -> None:
        self.active_deltas = int(state)

    @property
    def device(self) -> torch.device:
        return self.w_avg.device

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pyramid (coarse ``(B, C, r, r)``, mid ``(B, C, 2r, 2r)``, fine ``(B, C, 4r, 4r)``), r = input/2^stages."""
        r = self.config.input_resolution
        if x.ndim != 4 or x.shape[1] != 3:
            raise InvalidArgumentError(f"images must be (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InvalidArgumentError(f"images must be floating point in [-1, 1], got {x.dtype}; from 8-bit pixels: "
                                       "x.float() / 127.5 - 1")
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        h = self.stem(x)
        outs = []
        for stage in self.stages:
            h = stage(h)
            outs.append(h)
        c1, c2, c3 = outs[-3], outs[-2], outs[-1]
        p2 = F.interpolate(c3, scale_factor=2, mode="bilinear", align_corners=False) + self.lateral_mid(c2)
        p1 = F.interpolate(p2, scale_factor=2, mode="bilinear", align_corners=False) + self.lateral_fine(c1)
        return c3, p2, p1

    def forward(self, images: Tensor, active_deltas: int | None = None) -> Tensor:
        """images ``(B, 3, H, W)`` in [-1, 1] -> w+ ``(B, num_ws, w_dim)``."""
        n = self._active if active_deltas is None else self._check_active(active_deltas)
        pyramid = self.features(images)
        w0 = self.heads[0](pyramid[self.levels[0]])                       # (B, w_dim)
        b, L = w0.shape[0], self.config.num_ws
        deltas = [w0.new_zeros(b, self.config.w_dim)]
        deltas += [self.heads[i](pyramid[self.levels[i]]) for i in range(1, n + 1)]
        deltas += [w0.new_zeros(b, self.config.w_dim)] * (L - 1 - n)
        return self.w_avg.to(w0.dtype) + w0[:, None] + torch.stack(deltas, 1)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, generator_id: str | None = None) -> str:
        """Write a safetensors checkpoint atomically (temp file, then rename). Returns its content id.
        ``generator_id``: the ``model_id`` of the generator it was trained against (``trained_for``)."""
        return save_checkpoint(self, path, ENCODER_FORMAT, {"generator_id": generator_id} if generator_id else None)

    @staticmethod
    def trained_for(path: str | Path) -> str | None:
        """The ``model_id`` of the generator the encoder file ``path`` was trained against (None: not recorded,
        as in files from before it was)."""
        return read_checkpoint_header(path, ENCODER_FORMAT).get("generator_id")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "GRAMEncoder":
        """Read and validate an encoder checkpoint; eval mode on ``device``. CheckpointError says what is wrong
        (also for an ``active_deltas`` count the configuration cannot have)."""
        return load_checkpoint(path, ENCODER_FORMAT, lambda config: cls(EncoderConfig.from_dict(config)), device)


# ---------------------------------------------------------------------- regularisers (pure maths)
def delta_regularizer(ws: Tensor) -> Tensor:
    """e4e's L_d-reg: Σ_{i>=1} ||w_i − w_0||₂, averaged over the batch. ws ``(B, L, D)`` -> ``()``.

    With w_i = w̄ + w_0 + Δ_i this is Σ ||Δ_i||₂; inactive deltas add exactly 0.
    """
    if ws.ndim != 3:
        raise ValueError(f"ws must be (B, L, D), got {tuple(ws.shape)}")
    deltas = ws[:, 1:] - ws[:, :1]                     # (B, L-1, D)
    return deltas.norm(dim=-1).sum(dim=1).mean()


def wplus_to_mean(ws: Tensor, w_avg: Tensor) -> Tensor:
    """The paper's L_w+ = ||w+ − w̄+||², the squared norm over all L·D entries averaged over the batch.

    ws ``(B, L, D)``; w_avg ``(D,)`` (the same w̄ at every layer) or ``(L, D)``. -> ``()``.
    """
    if ws.ndim != 3:
        raise ValueError(f"ws must be (B, L, D), got {tuple(ws.shape)}")
    return (ws - w_avg.to(ws.dtype)).pow(2).sum(dim=(1, 2)).mean()
