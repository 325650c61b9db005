"""Evaluation that needs no downloaded network: multi-view consistency by depth warping.

A 3D-consistent generator renders two nearby views of the same identity that agree once one is
warped into the other through the rendered depth. The score is the PSNR between a target view and
the source view warped into it, over pixels both views see (foreground, not occluded).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gramcast import camera


def warp_to_target(src_rgb: Tensor, src_depth: Tensor, tgt_depth: Tensor, src_pose, tgt_pose,
                   depth_tolerance: float = 0.01) -> tuple[Tensor, Tensor]:
    """Sample the source image at the target pixels' 3D points.

    src_rgb (B, 3, H, W); src_depth, tgt_depth (B, 1, H, W) are distances along each pixel's ray
    (what ``GRAMModel.render`` returns). Returns the warped image (B, 3, H, W) and a mask (B, 1, H, W)
    of target pixels whose point projects inside the source image and is not occluded there (its
    distance to the source camera matches the source depth within ``depth_tolerance``).
    """
    b, _, h, w = src_rgb.shape
    c2w_src = camera.pose_to_c2w(camera.as_pose_tensor(src_pose, device=src_rgb.device, dtype=src_rgb.dtype)).expand(b, 4, 4)
    c2w_tgt = camera.pose_to_c2w(camera.as_pose_tensor(tgt_pose, device=src_rgb.device, dtype=src_rgb.dtype)).expand(b, 4, 4)
    origins, dirs = camera.generate_rays(c2w_tgt, h, w)
    points = origins + tgt_depth.permute(0, 2, 3, 1) * dirs                   # (B, H, W, 3)
    uv, _ = camera.project_points(points, c2w_src, h, w)
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], dim=-1)
    warped = F.grid_sample(src_rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)
    seen_depth = F.grid_sample(src_depth, grid, mode="bilinear", padding_mode="border", align_corners=False)
    dist = (points - c2w_src[:, None, None, :3, 3]).norm(dim=-1)[:, None]
    inside = ((grid.abs() <= 1).all(-1))[:, None]
    visible = (seen_depth - dist).abs() <= depth_tolerance
    return warped, inside & visible


def psnr(a: Tensor, b: Tensor, mask: Tensor, data_range: float = 2.0) -> Tensor:
    """PSNR (dB) per image over masked pixels; images in [-1, 1] (range 2). Returns (B,)."""
    m = mask.expand_as(a).float()
    mse = ((a - b) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-12))


@torch.no_grad()
def multiview_consistency(model, ws: Tensor, yaw_pairs=((-0.2, -0.1), (0.0, 0.1), (0.2, 0.3)),
                          pitch: float = 0.0, min_alpha: float = 0.9) -> dict[str, float]:
    """Mean PSNR_mv and the share of pixels compared, over view pairs of ``ws`` (B identities)."""
    scores, coverage = [], []
    for a, b in yaw_pairs:
        src = model.render(ws, (a, pitch))
        tgt = model.render(ws, (b, pitch))
        warped, mask = warp_to_target(src.rgb, src.depth, tgt.depth, (a, pitch), (b, pitch))
        mask = mask & (tgt.alpha > min_alpha) & (src.alpha.mean() > 0)
        scores.append(psnr(warped, tgt.rgb, mask))
        coverage.append(mask.float().mean())
    s = torch.cat(scores)
    s = s[torch.isfinite(s)]
    return {"psnr_mv": float(s.mean()) if s.numel() else math.nan,
            "coverage": float(torch.stack(coverage).mean())}


def mean_pairwise_l1(images: Tensor) -> float:
    """Mean absolute difference between two distinct images of ``(B, 3, H, W)`` (B >= 2), over all pairs."""
    flat = images.float().flatten(1)
    b = flat.shape[0]
    if b < 2:
        raise ValueError(f"diversity needs at least 2 images, got {b}")
    d = torch.cdist(flat, flat, p=1.0) / flat.shape[1]
    return float(d.sum() / (b * (b - 1)))


@torch.no_grad()
def sample_diversity(model, real: Tensor, real_poses: Tensor, generator: torch.Generator) -> dict[str, float]:
    """How much the generator's samples differ from one another, against how much real photos do.

    real ``(B, 3, R, R)`` in [-1, 1] with their poses ``(B, 2)``; the generator renders B random
    identities at those same poses, so pose variety counts equally on both sides. A ``ratio`` near 1
    is a healthy spread; well below 1 is mode collapse (the latent code is being ignored), which FID on
    a few dozen samples does not show reliably.
    """
    z = torch.randn(real.shape[0], model.config.z_dim, generator=generator).to(real.device)
    fake = model.render(model.mapping(z), real_poses).rgb
    fake_div, real_div = mean_pairwise_l1(fake), mean_pairwise_l1(real)
    return {"diversity_fake": fake_div, "diversity_real": real_div, "diversity_ratio": fake_div / max(real_div, 1e-8)}


def measured_head_yaws(frames: Tensor, size: int = 256) -> list[list[float | None]]:
    """The head yaw the product's face tracker (mediapipe face mesh + ``estimate_pose``) measures in
    each frame, None where it finds no face. frames ``(P, N, 3, R, R)`` in [-1, 1], upscaled to
    ``size`` first (mediapipe misses faces of a few dozen pixels). Needs mediapipe."""
    import cv2

    from gramcast.face.landmarks import FaceMesh
    from gramcast.face.pose import estimate_pose

    mesh = FaceMesh(static=True, max_faces=1)
    try:
        out = []
        for row in frames:
            yaws = []
            for f in row:
                img = ((f.float().permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
                faces = mesh.detect(cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC))
                yaws.append(float(estimate_pose(faces[0]).yaw) if faces else None)
            out.append(yaws)
        return out
    finally:
        mesh.close()


def face_pose_agreement(model, num: int = 16, yaws=(-0.4, -0.2, 0.0, 0.2, 0.4), seed: int = 0) -> dict[str, float]:
    """Do the samples look like faces, turned the way the camera was? A check from outside the model.

    ``num`` seeded identities rendered at each camera yaw: ``face_found`` is the fraction of renders in
    which the face tracker finds a face; ``yaw_error`` the mean |measured head yaw - camera yaw| over
    those (radians); ``yaw_slope`` the least-squares slope of measured against camera yaw (1: the head
    turns exactly as far as the camera; below 1: the face is painted on, turning less than the view).
    """
    from gramcast.model.prior import render_identities

    frames = render_identities(model, num, [(y, 0.0) for y in yaws], seed=seed)
    measured = measured_head_yaws(frames)
    pairs = [(cam, m) for cam, row in zip(yaws, measured) for m in row if m is not None]
    out = {"face_found": len(pairs) / (len(yaws) * num)}
    if len(pairs) >= 2:
        out.update(yaw_agreement(pairs))
    return out


def yaw_agreement(pairs) -> dict[str, float]:
    """(camera yaw, measured head yaw) pairs (at least two, radians) -> ``yaw_error``: mean |measured -
    camera|; ``yaw_slope``: least-squares slope of measured against camera yaw (1: the head turns as far
    as the camera; ~0: a face painted on a card)."""
    cam, got = (torch.tensor(v, dtype=torch.float64) for v in zip(*pairs))
    cc = cam - cam.mean()
    return {"yaw_error": float((got - cam).abs().mean()),
            "yaw_slope": float((cc * (got - got.mean())).sum() / cc.square().sum().clamp_min(1e-12))}
