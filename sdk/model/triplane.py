"""The tri-plane generator Ψ: a StyleGAN2-style mapping network and a modulated-conv synthesis net
that paints three axis-aligned feature planes (EG3D's representation, without its 2D upsampler)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gramcast.model.layers import EqualLinear, ModulatedConv2d, lrelu


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w (B, w_dim); tracks the mean w for the truncation trick."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.w_avg_beta = w_avg_beta

    def forward(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = lrelu(layer(x))
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.w_avg.lerp_(x.detach().mean(0).to(self.w_avg.dtype), 1.0 - self.w_avg_beta)
        if truncation != 1.0:
            x = self.w_avg.to(x.dtype).lerp(x, truncation)
        return x


class SynthesisBlock(nn.Module):
    """(2x upsample) + two modulated 3x3 convs + a 1x1 "to planes" output added to the skip path."""

    def __init__(self, cin: int, cout: int, w_dim: int, out_channels: int, first: bool):
        super().__init__()
        self.first = first
        self.conv0 = None if first else ModulatedConv2d(cin, cout, 3, w_dim)
        self.conv1 = ModulatedConv2d(cout if not first else cin, cout, 3, w_dim)
        self.to_planes = ModulatedConv2d(cout, out_channels, 1, w_dim, demodulate=False)
        self.num_ws = 2 if first else 3

    def forward(self, x, skip, ws):
        i = 0
        if not self.first:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = lrelu(self.conv0(x, ws[:, i])); i += 1
        x = lrelu(self.conv1(x, ws[:, i])); i += 1
        y = self.to_planes(x, ws[:, i])
        if skip is not None:
            y = y + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return x, y


class TriplaneSynthesis(nn.Module):
    """w+ (B, num_ws, w_dim) -> planes (B, 3, C, R, R) for the xy, xz and yz planes."""

    def __init__(self, w_dim: int, plane_resolution: int, plane_channels: int,
                 channel_base: int = 4096, channel_max: int = 256):
        super().__init__()
        if plane_resolution < 4 or plane_resolution & (plane_resolution - 1):
            raise ValueError(f"plane_resolution must be a power of two >= 4, got {plane_resolution}")
        ch = lambda res: min(channel_base // res, channel_max)
        self.plane_channels = plane_channels
        self.const = nn.Parameter(torch.randn(ch(4), 4, 4))
        blocks, res = [], 4
        cin = ch(4)
        while res <= plane_resolution:
            blocks.append(SynthesisBlock(cin, ch(res), w_dim, 3 * plane_channels, first=res == 4))
            cin = ch(res)
            res *= 2
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_ws for b in blocks)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        b = ws.shape[0]
        x = self.const[None].expand(b, -1, -1, -1)
        skip, i = None, 0
        for block in self.blocks:
            x, skip = block(x, skip, ws[:, i:i + block.num_ws])
            i += block.num_ws
        r = skip.shape[-1]
        return skip.reshape(b, 3, self.plane_channels, r, r)
