"""The tri-plane generator Ψ: a StyleGAN2-style mapping network and a modulated-conv synthesis net
that paints three axis-aligned feature planes (EG3D's representation, without its 2D upsampler,
as the paper keeps strictly to manifold rendering)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gramcast.errors import InvalidArgumentError
from gramcast.model.layers import EqualLinear, ModulatedConv2d, lrelu

#: How per-pixel noise is injected: "const" (fixed buffers: deterministic, the default for rendering
#: and for exactly resumable training), "random" (fresh each call, StyleGAN2's training habit) or "none".
NOISE_MODES = ("const", "random", "none")


class MappingNetwork(nn.Module):
    """z ``(B, z_dim)`` -> w ``(B, w_dim)``; tracks the mean w for the truncation trick.

    ``lr_mul`` = 0.01 as in StyleGAN2: the mapping learns 100x slower than the synthesis net.
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.w_avg_beta = w_avg_beta

    def forward(self, z: Tensor, truncation: float = 1.0, update_w_avg: bool | None = None) -> Tensor:
        """``update_w_avg``: fold this batch into the tracked mean w (default: in training mode with grad).
        ``truncation``: 1 = none, 0 = the mean w; a NaN would silently turn every w into NaN."""
        if not math.isfinite(float(truncation)):
            raise InvalidArgumentError(f"truncation must be a finite number (1 = none, 0.7 typical), "
                                       f"got {truncation!r}")
        # Normalise z's second moment: only the direction of z carries information.
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = lrelu(layer(x))
        if update_w_avg is None:
            update_w_avg = self.training and torch.is_grad_enabled()
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.lerp_(x.detach().mean(0).to(self.w_avg.dtype), 1.0 - self.w_avg_beta)
        if truncation != 1.0:
            x = self.w_avg.to(x.dtype).lerp(x, truncation)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + scaled per-pixel noise + leaky ReLU: (B, Cin, R, R) -> (B, Cout, R, R)."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, w_dim)
        # Noise starts switched off (strength 0) and training decides how much stochastic detail to use.
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "const", generator: torch.Generator | None = None) -> Tensor:
        x = self.conv(x, w)
        if noise_mode == "const":
            x = x + self.noise_strength * self.noise_const.to(x.dtype)
        elif noise_mode == "random":
            dev = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], generator=generator, device=dev)
            x = x + self.noise_strength * noise.to(device=x.device, dtype=x.dtype)
        return lrelu(x)


class SynthesisBlock(nn.Module):
    """(2x bilinear upsample) + two synthesis layers + a 1x1 "to planes" output added to the upsampled skip.

    The first block (4²) starts from the learned constant and has one layer. x: (B, Cin, R/2, R/2)
    (or (B, Cin, 4, 4) for the first) -> x (B, Cout, R, R), planes (B, 3C, R, R).
    """

    def __init__(self, cin: int, cout: int, w_dim: int, out_channels: int, resolution: int, first: bool):
        super().__init__()
        self.first = first
        self.layer0 = None if first else SynthesisLayer(cin, cout, w_dim, resolution)
        self.layer1 = SynthesisLayer(cin if first else cout, cout, w_dim, resolution)
        # toRGB-like: no demodulation, the output is a signal, not a normalised feature.
        self.to_planes = ModulatedConv2d(cout, out_channels, 1, w_dim, demodulate=False)
        self.num_ws = 2 if first else 3

    def forward(self, x: Tensor, skip: Tensor | None, ws: Tensor, noise_mode: str = "const",
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        i = 0
        if not self.first:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.layer0(x, ws[:, i], noise_mode, generator)
            i += 1
        x = self.layer1(x, ws[:, i], noise_mode, generator)
        y = self.to_planes(x, ws[:, i + 1])
        if skip is not None:
            y = y + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return x, y


class TriplaneSynthesis(nn.Module):
    """w+ ``(B, num_ws, w_dim)`` -> planes ``(B, 3, C, R, R)``: the xy, xz and yz feature planes."""

    def __init__(self, w_dim: int, plane_resolution: int, plane_channels: int,
                 channel_base: int = 4096, channel_max: int = 256):
        super().__init__()
        if plane_resolution < 4 or plane_resolution & (plane_resolution - 1):
            raise ValueError(f"plane_resolution must be a power of two >= 4, got {plane_resolution}")

        def channels(res: int) -> int:
            return max(1, min(channel_base // res, channel_max))

        self.plane_channels = plane_channels
        self.w_dim = w_dim
        self.const = nn.Parameter(torch.randn(channels(4), 4, 4))
        blocks, res, cin = [], 4, channels(4)
        while res <= plane_resolution:
            blocks.append(SynthesisBlock(cin, channels(res), w_dim, 3 * plane_channels, res, first=res == 4))
            cin = channels(res)
            res *= 2
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_ws for b in blocks)

    def forward(self, ws: Tensor, noise_mode: str = "const", generator: torch.Generator | None = None) -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise InvalidArgumentError(f"ws must be w+ (B, num_ws, w_dim) = (B, {self.num_ws}, {self.w_dim}), "
                                       f"got {tuple(ws.shape)}")
        b = ws.shape[0]
        x = self.const[None].expand(b, -1, -1, -1)
        skip, i = None, 0
        for block in self.blocks:
            x, skip = block(x, skip, ws[:, i:i + block.num_ws], noise_mode, generator)
            i += block.num_ws
        r = skip.shape[-1]
        return skip.reshape(b, 3, self.plane_channels, r, r)
