"""A StyleGAN2-style residual discriminator that also regresses the camera pose (as GRAM's does).

The pose head lets the GAN loss see the viewpoint: the generator is penalised when the image it
renders at pose p does not look like it was taken from p, which keeps the learned geometry honest.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gramcast.model.layers import EqualConv2d, EqualLinear, lrelu as _act


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs and a 2x average-pool, with a 1x1 residual path (scaled by 1/sqrt 2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualConv2d(cin, cin, 3)
        self.conv1 = EqualConv2d(cin, cout, 3)
        self.skip = EqualConv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        y = _act(self.conv0(x))
        y = F.avg_pool2d(_act(self.conv1(y)), 2)
        s = F.avg_pool2d(self.skip(x), 2)
        return (y + s) / math.sqrt(2.0)


def minibatch_stddev(x: torch.Tensor, group: int = 4, sets: int = 1) -> torch.Tensor:
    """StyleGAN's minibatch standard deviation as one more channel: (B, C, H, W) -> (B, C + 1, H, W).

    The batch holds ``sets`` independent sets of equal size one after the other (reals, then
    fakes); each group of up to ``group`` samples lies inside one set. A group mixing reals with
    fakes would give a collapsed fake batch the spread of the reals beside it, and the statistic
    exists to expose exactly that collapse.
    """
    b, c, h, w = x.shape
    if sets < 1 or b % sets:
        raise ValueError(f"a batch of {b} does not split into {sets} equal sets")
    per_set = b // sets
    g = min(group, per_set)
    while per_set % g:
        g -= 1
    y = x.reshape(b // g, g, c, h, w).var(dim=1, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
    y = y.repeat_interleave(g).reshape(b, 1, 1, 1).expand(b, 1, h, w)
    return torch.cat([x, y], dim=1)


class PoseDiscriminator(nn.Module):
    """images (B, 3, R, R) in [-1, 1] -> (logits (B,), pose (B, 2) as yaw, pitch in radians)."""

    def __init__(self, resolution: int, channel_base: int = 4096, channel_max: int = 256):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        ch = lambda res: min(channel_base // res, channel_max)
        self.from_rgb = EqualConv2d(3, ch(resolution), 1)
        blocks, res = [], resolution
        while res > 4:
            blocks.append(DiscriminatorBlock(ch(res), ch(res // 2)))
            res //= 2
        self.blocks = nn.ModuleList(blocks)
        c4 = ch(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4)
        self.out = EqualLinear(c4, 1 + 2)

    def forward(self, img: torch.Tensor, sets: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``sets``: how many independent sets of equal size ``img`` holds, one after the other
        (2 for reals then fakes); no sample's output depends on another set's samples."""
        x = _act(self.from_rgb(img))
        for block in self.blocks:
            x = block(x)
        x = _act(self.conv(minibatch_stddev(x, sets=sets)))
        x = _act(self.fc(x.flatten(1)))
        out = self.out(x)
        return out[:, 0], out[:, 1:]
