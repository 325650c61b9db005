"""Occlusion edges at full resolution: the bracketed per-pixel search and where an edge lands in a frame,
against algebra."""
import pytest
import torch

from gramcast import camera
from gramcast.avatar.bake import grid_xy
from gramcast.avatar.heightfield import bracketed_search
from gramcast.avatar.renderer import RenderSettings, render_cache


def _rays(res, pose):
    o, d = camera.generate_rays(camera.pose_to_c2w([pose]), res, res)
    return o.reshape(1, 1, -1, 3).double(), d.reshape(1, 1, -1, 3).double()


@pytest.mark.parametrize("samples", [8, 300])      # 300: beyond what a byte counts (the crossings' ranks)
def test_bracketed_search_hits_a_tilted_plane_where_algebra_says_and_only_inside_its_bracket(samples):
    g, e = 65, 0.2
    xy = grid_xy(g, e).double()
    heights = (0.3 * xy[..., 0] - 0.02)[None, None]                  # linear in x: bilinear lookups are exact
    o, d = _rays(16, (0.3, -0.1))
    t_true = (o[..., 2] - 0.3 * o[..., 0] + 0.02) / (0.3 * d[..., 0] - d[..., 2])        # (1, 1, N)
    t, found = bracketed_search(o, d, heights, e, t_true - 0.002, t_true + 0.05, samples=samples, refine=2)
    assert found.all() and torch.allclose(t, t_true, atol=1e-9)
    _, found = bracketed_search(o, d, heights, e, t_true - 0.05, t_true - 0.01, samples=samples, refine=2)
    assert not found.any()                                            # the bracket ends in front of the plane
    _, found = bracketed_search(o, d, heights, e, t_true + 0.01, t_true - 0.01, samples=samples, refine=2)
    assert not found.any()                                            # an empty bracket


def _cap_scene():
    """A sphere cap (radius 0.1, centre at z = -0.05) rising out of a floor at z = -0.04, textured red on
    the cap and blue on the floor: heights ``(1, 1, G, G)``, textures ``(1, 4, G, G)``."""
    g, r, zc, z0 = 257, 0.1, -0.05, -0.04
    xy = grid_xy(g, EXTENT).double()
    cap = zc + torch.sqrt((r ** 2 - (xy ** 2).sum(-1)).clamp_min(0))
    heights = torch.maximum(cap, torch.full_like(cap, z0))[None, None].float()
    red = (cap > z0).float()
    textures = torch.stack([2 * red - 1, -torch.ones_like(red), 1 - 2 * red, torch.ones_like(red)])[None].float()
    return heights, textures, (r, zc, z0)


EXTENT = 0.12
POSE = (0.45, 0.1)


def _far_edge_misses(settings: RenderSettings, res: int) -> float:
    """Pixels per image row on the cap's far side (the camera is on +x) whose colour says cap where the ray
    misses the sphere or floor where it meets it (ray/sphere algebra): the cap's silhouette against the
    floor is an occlusion edge."""
    heights, textures, (r, zc, z0) = _cap_scene()
    rgb, _, _ = render_cache(heights, textures, EXTENT, torch.tensor([POSE]), res, settings)
    c2w = camera.pose_to_c2w([POSE]).double()
    assert float(c2w[0, 0, 3]) > 0
    o, d = camera.generate_rays(c2w, res, res)
    oc = o - torch.tensor([0.0, 0.0, zc], dtype=torch.float64)
    b = (oc * d).sum(-1)
    disc = b ** 2 - ((oc ** 2).sum(-1) - r ** 2)
    p = o + (-b - torch.sqrt(disc.clamp_min(0)))[..., None] * d
    on_cap = ((disc > 0) & (p[..., 2] > z0))[0]
    centre, _ = camera.project_points(torch.tensor([[[0.0, 0.0, zc]]]), c2w.float(), res, res)
    far = torch.arange(res)[None, :] < centre[0, 0, 0]
    drawn_red = rgb[0, 0] > rgb[0, 2]
    return float(((drawn_red != on_cap) & far).sum() / on_cap.any(1).sum())


@pytest.mark.parametrize("res", [128, 250, 256])      # 250: not a multiple of the 1/4 grid
def test_an_occlusion_edge_lands_where_algebra_puts_it(res):
    """With the coarse hits only, the cap's silhouette shows the coarse grid's 4-pixel steps (~1 wrong pixel
    a row); searched again per pixel, it is wrong at a fifth of a pixel a row or less (a full-resolution
    search of every pixel: ~0.1)."""
    refined = _far_edge_misses(RenderSettings(edge_samples=12), res)
    coarse = _far_edge_misses(RenderSettings(edge_samples=0), res)
    assert refined < 0.35
    assert coarse > 0.8


def test_one_layer_avatars_refine_their_edges_by_default_and_others_do_not():
    heights, textures, _ = _cap_scene()
    pose = torch.tensor([POSE])

    def rgb(edge_samples=None):
        return render_cache(heights, textures, EXTENT, pose, 64, RenderSettings(edge_samples=edge_samples))[0]

    assert torch.equal(rgb(), rgb(12)) and not torch.equal(rgb(), rgb(0))
    two, both = torch.cat([heights, torch.full_like(heights, -0.08)]), textures.expand(2, -1, -1, -1)
    assert torch.equal(render_cache(two, both, EXTENT, pose, 64)[0],
                       render_cache(two, both, EXTENT, pose, 64, RenderSettings(edge_samples=0))[0])
