"""Depth-warp consistency against a scene with a known answer (a textured plane)."""
import torch

from gramcast import camera
from gramcast.model import GRAMConfig, GRAMModel
from gramcast.training.evaluation import mean_pairwise_l1, multiview_consistency, psnr, sample_diversity, warp_to_target


def render_plane(pose, h=64, w=64, z0=0.0):
    """Analytic render of the plane z = z0 painted with smooth stripes: rgb in [-1,1] and ray depth."""
    c2w = camera.pose_to_c2w(torch.tensor([pose], dtype=torch.float64))
    o, d = camera.generate_rays(c2w, h, w)
    t = (z0 - o[..., 2]) / d[..., 2]
    p = o + t[..., None] * d
    rgb = torch.stack([torch.sin(40 * p[..., 0]), torch.cos(30 * p[..., 1]), torch.sin(25 * (p[..., 0] + p[..., 1]))], -1)
    return rgb.permute(0, 3, 1, 2), t[:, None]


def test_warp_reproduces_the_other_view_of_a_plane():
    src_rgb, src_d = render_plane((-0.1, 0.0))
    tgt_rgb, tgt_d = render_plane((0.15, 0.05))
    warped, mask = warp_to_target(src_rgb, src_d, tgt_d, (-0.1, 0.0), (0.15, 0.05))
    assert mask.float().mean() > 0.6
    # only bilinear resampling error remains
    assert psnr(warped, tgt_rgb, mask) > 30
    # warping with the wrong target pose breaks the agreement
    wrong, m2 = warp_to_target(src_rgb, src_d, tgt_d, (-0.1, 0.0), (0.3, 0.05))
    assert psnr(wrong, tgt_rgb, m2 & mask) < psnr(warped, tgt_rgb, mask) - 10


def test_occluded_points_are_masked():
    src_rgb, src_d = render_plane((0.0, 0.0))
    _, tgt_d = render_plane((0.1, 0.0))
    # the source sees something nearer (an occluder) everywhere: nothing is visible
    _, mask = warp_to_target(src_rgb, src_d - 0.05, tgt_d, (0.0, 0.0), (0.1, 0.0))
    assert not mask.any()


def test_gram_renders_are_multiview_consistent():
    torch.manual_seed(0)
    model = GRAMModel.from_config(GRAMConfig.preset("tiny")).eval()
    result = multiview_consistency(model, model.sample_ws(2, seed=0))
    assert result["coverage"] > 0.3
    assert result["psnr_mv"] > 25


def test_mean_pairwise_l1_of_known_images():
    flat = lambda v: torch.full((1, 3, 4, 4), float(v))
    assert abs(mean_pairwise_l1(torch.cat([flat(0), flat(1)])) - 1.0) < 1e-6
    # pairs (0, .5), (0, 1), (.5, 1): distances .5, 1, .5
    assert abs(mean_pairwise_l1(torch.cat([flat(0), flat(0.5), flat(1)])) - 2 / 3) < 1e-6
    assert mean_pairwise_l1(torch.cat([flat(0.3)] * 4)) == 0.0


def test_sample_diversity_sees_a_generator_that_ignores_its_latent():
    torch.manual_seed(0)
    model = GRAMModel.from_config(GRAMConfig.preset("tiny")).eval()
    real = torch.rand(6, 3, 64, 64) * 2 - 1
    poses = torch.zeros(6, 2)
    healthy = sample_diversity(model, real, poses, torch.Generator().manual_seed(1))
    assert healthy["diversity_fake"] > 0
    # collapse: every latent maps to the same w (the mapping's last layer outputs only its bias)
    last = model.mapping.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
    collapsed = sample_diversity(model, real, poses, torch.Generator().manual_seed(1))
    assert collapsed["diversity_fake"] < 1e-4 < healthy["diversity_fake"]
    assert collapsed["diversity_ratio"] < 1e-3
