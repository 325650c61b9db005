"""Ordered (O(L)) compositing of non-crossing layer stacks against the general (O(L²)) path: known
answers, random stacks, a baked GRAM model, the crossing check and its fallback.

"Float rounding" here: the two paths sum the same terms in other orders and build the transmittance as
a running T - T a instead of a product of (1 - a); observed differences are <= ~3e-7 on rgb and alpha,
the bounds are 2e-6, also on depth x alpha (the weighted depth sum); depth itself is that sum over
alpha (the paths' alphas differ by ~1e-7), so it is compared where alpha > 0.05, to 1e-5.
"""
from __future__ import annotations

import math

import pytest
import torch

from gramcast.avatar import Avatar, Renderer, bake_model
from gramcast.avatar.layer_order import layer_depth_order
from gramcast.avatar.renderer import (CompositingPlan, RenderSettings, composite_layers, composite_ordered, layer_runs,
                                      compositing_plan, render_cache)

RED, BLUE, GREEN = (1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0)
POSES = torch.tensor([[0.0, 0.0], [0.42, -0.18], [-0.45, 0.25], [0.2, 0.1]])


def _stack(layers):
    """[(rgb, alpha, depth, valid), ...] of one pixel -> composite_layers' layout (L, C, 1), (L, 1)."""
    rgb = torch.tensor([l[0] for l in layers], dtype=torch.float32)[:, :, None]
    alpha = torch.tensor([[l[1]] for l in layers], dtype=torch.float32)
    depth = torch.tensor([[l[2]] for l in layers], dtype=torch.float32)
    valid = torch.tensor([[l[3]] for l in layers])
    return rgb, alpha, depth, valid


def _assert_same(a, b, rgb_alpha=2e-6, depth=1e-5):
    assert (a[0] - b[0]).abs().max() <= rgb_alpha
    assert (a[1] - b[1]).abs().max() <= rgb_alpha
    # depth = (sum of weight x depth) / alpha: compare the sum, and the depth where alpha is not small
    assert (a[2] * a[1] - b[2] * b[1]).abs().max() <= rgb_alpha
    lit = b[1] > 0.05
    if lit.any():
        assert (a[2] - b[2])[lit].abs().max() <= depth


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("case,layers,plan,expect", [
    # red (a 0.5) at depth 1 over blue (a 0.5) at depth 2: 0.5 red + 0.25 blue, alpha 0.75, depth 4/3
    ("two halves", [(RED, 0.5, 1.0, True), (BLUE, 0.5, 2.0, True)], CompositingPlan((0, 1)),
     ([0.5 * r + 0.25 * b for r, b in zip(RED, BLUE)], 0.75, (0.5 * 1 + 0.25 * 2) / 0.75)),
    # the same layers stored back to front: the order says blue's index is in front
    ("order from the plan", [(BLUE, 0.5, 2.0, True), (RED, 0.5, 1.0, True)], CompositingPlan((1, 0)),
     ([0.5 * r + 0.25 * b for r, b in zip(RED, BLUE)], 0.75, (0.5 * 1 + 0.25 * 2) / 0.75)),
    ("invalid layer ignored", [(GREEN, 1.0, 0.5, False), (RED, 0.5, 1.0, True), (BLUE, 0.5, 2.0, True)],
     CompositingPlan((0, 1, 2)), ([0.5 * r + 0.25 * b for r, b in zip(RED, BLUE)], 0.75, (0.5 * 1 + 0.25 * 2) / 0.75)),
    ("opaque front layer hides the rest", [(RED, 1.0, 1.5, True), (GREEN, 0.9, 2.0, True)], CompositingPlan((0, 1)),
     (list(RED), 1.0, 1.5)),
    # pivot (green, a 0.5, depth 1.5) between red (1.0) and blue (2.0): 0.5 red + 0.25 green + 0.125 blue
    ("pivot between", [(RED, 0.5, 1.0, True), (BLUE, 0.5, 2.0, True), (GREEN, 0.5, 1.5, True)],
     CompositingPlan((0, 1), pivot=2),
     ([0.5 * r + 0.25 * g + 0.125 * b for r, g, b in zip(RED, GREEN, BLUE)], 0.875,
      (0.5 * 1.0 + 0.25 * 1.5 + 0.125 * 2.0) / 0.875)),
    # pivot in front of both (depth 0.5)
    ("pivot in front", [(RED, 0.5, 1.0, True), (BLUE, 0.5, 2.0, True), (GREEN, 0.5, 0.5, True)],
     CompositingPlan((0, 1), pivot=2),
     ([0.5 * g + 0.25 * r + 0.125 * b for r, g, b in zip(RED, GREEN, BLUE)], 0.875,
      (0.5 * 0.5 + 0.25 * 1.0 + 0.125 * 2.0) / 0.875)),
    ("nothing valid", [(RED, 0.7, 1.0, False), (BLUE, 0.7, 2.0, False)], CompositingPlan((0, 1)),
     ([0.0, 0.0, 0.0], 0.0, 0.0)),
])
def test_ordered_compositing_of_known_layers(case, layers, plan, expect):
    rgb, alpha, depth, valid = _stack(layers)
    want_rgb, want_alpha, want_depth = expect
    for got in (composite_ordered(rgb, alpha, depth, valid, plan), composite_layers(rgb, alpha, depth, valid)):
        assert torch.allclose(got[0].flatten(), torch.tensor(want_rgb), atol=1e-6), case
        assert got[1].item() == pytest.approx(want_alpha, abs=1e-6), case
        assert got[2].item() == pytest.approx(want_depth, abs=1e-6), case


@pytest.mark.parametrize("nl,pivot", [(2, None), (5, None), (12, None), (12, 11), (24, 23), (6, 2)])
def test_ordered_equals_general_on_random_ordered_layers(nl, pivot):
    """Per pixel, depths increase along a fixed random permutation of the layers (what non-crossing
    height fields give along every ray); the pivot's depth is anywhere, also tied with others."""
    g = torch.Generator().manual_seed(nl * 31 + (pivot or 0))
    shape = (2, 17, 13)
    perm = torch.randperm(nl, generator=g).tolist()
    order = [i for i in perm if i != pivot]
    gaps = torch.rand(len(order), *shape, generator=g) * 0.1
    gaps[gaps < 0.003] = 0.0                                                     # exact ties too
    depth = torch.empty(nl, *shape)
    depth[order] = 0.9 + gaps.cumsum(0)
    if pivot is not None:
        depth[pivot] = 0.9 + torch.rand(shape, generator=g) * 0.1 * len(order)
        tie = torch.rand(shape, generator=g) > 0.8
        depth[pivot] = torch.where(tie, depth[order[len(order) // 2]], depth[pivot])
    rgb = torch.rand(nl, 3, *shape, generator=g) * 2 - 1
    alpha = torch.rand(nl, *shape, generator=g)
    alpha[alpha > 0.9] = 1.0
    valid = torch.rand(nl, *shape, generator=g) > 0.25
    # the general path breaks exact ties by layer index, the ordered one by the plan: compare where the
    # chain has no ties (the pivot's ties are broken like the general path's)
    chain_ties = (gaps[1:] == 0).any(0) if len(order) > 1 else torch.zeros(shape, dtype=torch.bool)
    ours = composite_ordered(rgb, alpha, depth, valid, CompositingPlan(tuple(order), pivot))
    ref = composite_layers(rgb, alpha, depth, valid)
    keep = ~chain_ties
    assert keep.float().mean() > 0.2
    _assert_same(tuple(x[..., keep] for x in ours), tuple(x[..., keep] for x in ref))


# ----------------------------------------------------------------------------- the crossing check
def _xy(g, extent):
    lin = torch.linspace(-extent, extent, g)
    yy, xx = torch.meshgrid(-lin, lin, indexing="ij")
    return xx, yy


def _shells(nl=5, g=65, t=96, extent=0.2, bg=True, seed=0):
    """A GRAM-like stack: nested bumpy caps (layer i+1 above layer i where both exist; each exists on a
    disc, parked behind the background elsewhere with alpha 0; their rims dip below the background
    plane), and a flat background plane last."""
    gen = torch.Generator().manual_seed(seed)
    xx, yy = _xy(g, extent)
    r2 = xx ** 2 + yy ** 2
    bump = 0.01 * torch.sin(17 * xx + 3) * torch.cos(11 * yy)
    heights, alphas = [], []
    txx, tyy = _xy(t, extent)
    tr2 = txx ** 2 + tyy ** 2
    for i in range(nl):
        rad = 0.11 + 0.012 * i
        z = -0.16 + 0.02 * i + torch.sqrt((rad ** 2 - r2).clamp_min(0)) + bump   # rims of 0, 1 below -0.12
        disc = r2 <= rad ** 2
        heights.append(torch.where(disc, z, torch.full_like(z, -0.17)))
        a = 0.2 + 0.7 * torch.rand(t, t, generator=gen)
        alphas.append(a * (tr2 <= (rad - 0.005) ** 2))
    if bg:
        heights.append(torch.full((g, g), -0.12))
        alphas.append(0.3 + 0.6 * torch.rand(t, t, generator=gen))
    rgb = torch.rand(len(heights), 3, t, t, generator=gen) * 2 - 1
    return Avatar(torch.stack(heights), torch.cat([rgb, torch.stack(alphas)[:, None]], 1), extent)


def _render_both(avatar, res=64, settings=RenderSettings()):
    general = Renderer(avatar, device="cpu", compositing="general", settings=settings)
    ordered = Renderer(avatar, device="cpu", settings=settings)
    assert general.compositing == "general"
    return ordered, general.render(POSES, res), ordered.render(POSES, res)


def test_shells_above_the_background_plane_skip_its_depth_test_and_render_the_same():
    """Four nested domes over the whole square (0.06 high at the centre, 0 at the corners; based at -0.16,
    -0.145, -0.06, -0.03) and the plane z = -0.12: the two lower domes dip below the plane towards the
    corners, in view (the plane crosses them: the pivot); the two upper ones stay above it everywhere, so
    every ray meets them first and the plan leaves out their depth test against the plane. The frames match
    the general path's per-pixel sort and the plan without the shortcut; marking the lower domes so too
    would be wrong (checked: it changes the frames)."""
    g, t, extent = 65, 96, 0.12
    xx, yy = _xy(g, extent)
    dome = 0.06 * (1.0 - (xx ** 2 + yy ** 2) / (2 * extent ** 2))
    heights = [dome + base for base in (-0.16, -0.145, -0.06, -0.03)] + [torch.full((g, g), -0.12)]
    gen = torch.Generator().manual_seed(3)
    alpha = 0.2 + 0.6 * torch.rand(5, 1, t, t, generator=gen)
    rgb = torch.rand(5, 3, t, t, generator=gen) * 2 - 1
    avatar = Avatar(torch.stack(heights), torch.cat([rgb, alpha], 1), extent)
    plan = compositing_plan(avatar)
    assert plan == CompositingPlan((3, 2, 1, 0), 4, (2, 3))
    ordered, g_out, o_out = _render_both(avatar)
    assert ordered.compositing == "ordered" and ordered.plan == plan
    _assert_same((o_out.rgb, o_out.alpha, o_out.depth), (g_out.rgb, g_out.alpha, g_out.depth))
    # the same plan without the shortcut (every layer depth-tested) gives the same frames
    tested = render_cache(avatar.heights[:, None].float(), avatar.textures.float(), extent, POSES, 64,
                          plan=CompositingPlan((3, 2, 1, 0), 4))
    _assert_same((o_out.rgb, o_out.alpha, o_out.depth), tested)
    wrong = render_cache(avatar.heights[:, None].float(), avatar.textures.float(), extent, POSES, 64,
                         plan=CompositingPlan((3, 2, 1, 0), 4, (0, 1, 2, 3)))
    assert (wrong[0] - tested[0]).abs().max() > 0.05


@pytest.mark.parametrize("bg", [False, True])
def test_random_non_crossing_stacks_take_the_ordered_path_and_render_the_same(bg):
    for seed in range(2):
        avatar = _shells(bg=bg, seed=seed)
        nl = avatar.num_layers
        plan = compositing_plan(avatar)
        # highest first; the background crosses the shells' rims (they dip behind it): the pivot
        assert plan == (CompositingPlan((4, 3, 2, 1, 0), 5) if bg else CompositingPlan((4, 3, 2, 1, 0)))
        ordered, g, o = _render_both(avatar)
        assert ordered.compositing == "ordered" and ordered.plan == plan
        assert g.alpha.mean() > 0.3
        _assert_same((o.rgb, o.alpha, o.depth), (g.rgb, g.alpha, g.depth))
        assert nl == (6 if bg else 5)


def test_crossing_layers_are_detected_and_fall_back_to_the_general_path():
    g, t, extent = 33, 48, 0.2
    xx, yy = _xy(g, extent)
    gen = torch.Generator().manual_seed(1)
    tex = torch.rand(4, 4, t, t, generator=gen)
    tex[:, 3] = 0.3 + 0.6 * tex[:, 3]
    # two tilted planes crossing along x = 0, two more crossing along y = 0: one pivot cannot fix both
    h = torch.stack([0.3 * xx, -0.3 * xx, 0.3 * yy - 0.05, -0.3 * yy - 0.05])
    avatar = Avatar(h, tex, extent)
    assert layer_depth_order(avatar.heights, avatar.textures[:, 3]) is None
    assert compositing_plan(avatar) is None
    r = Renderer(avatar, device="cpu")
    assert r.compositing == "general" and r.plan is None
    with pytest.raises(ValueError, match="cross"):
        Renderer(avatar, device="cpu", compositing="ordered")
    # the fallback renders what the general path renders (it is the general path)
    a = r.render(POSES[:2], 32)
    b = Renderer(avatar, device="cpu", compositing="general").render(POSES[:2], 32)
    assert torch.equal(a.rgb, b.rgb)

    # one crossing pair: the one crossing layer becomes the pivot, and the render is still exact
    two = Avatar(torch.stack([0.3 * xx, torch.full_like(xx, 0.05), torch.full_like(xx, -0.05)]), tex[:3], extent)
    plan = compositing_plan(two)
    assert plan is not None and plan.pivot == 0 and plan.order == (1, 2)
    assert layer_depth_order(two.heights, two.textures[:, 3], allow_pivot=False) is None
    ordered, g2, o2 = _render_both(two, res=48)
    _assert_same((o2.rgb, o2.alpha, o2.depth), (g2.rgb, g2.alpha, g2.depth))


def test_crossings_where_a_layer_is_empty_do_not_count():
    g, t, extent = 33, 48, 0.2
    xx, _ = _xy(g, extent)
    tex = torch.full((2, 4, t, t), 0.5)
    # the planes cross at x = 0; layer 0 is transparent for x < 0.05 (texels and their neighbours)
    h = torch.stack([0.3 * xx, -0.3 * xx])
    tx, _ = _xy(t, extent)
    tex[0, 3] = 0.5 * (tx > 0.05)
    assert layer_depth_order(h, tex[:, 3], allow_pivot=False) == ((0, 1), None)
    tex[0, 3] = 0.5
    assert layer_depth_order(h, tex[:, 3], allow_pivot=False) is None
    # crossing by less than the tolerance is no crossing
    assert layer_depth_order(torch.stack([1e-4 * xx, -1e-4 * xx]), tex[:, 3], allow_pivot=False) is not None


def test_one_layer_avatars_keep_their_trivial_path():
    avatar = Avatar(torch.zeros(1, 9, 9), torch.rand(1, 4, 16, 16), 0.2)
    r = Renderer(avatar, device="cpu")
    assert r.compositing == "single" and r.plan is None


# ----------------------------------------------------------------------------- a baked GRAM model
@pytest.fixture(scope="module")
def baked():
    from gramcast.model import GRAMModel

    torch.manual_seed(0)
    model = GRAMModel.from_config("tiny").eval()
    with torch.no_grad():   # bent manifolds (as tests/test_avatar.py): depth order varies over the image
        torch.nn.init.normal_(model.manifold.out.weight, std=0.01)
        model.manifold.out.bias.fill_(-0.012)
        for p in model.decoder.parameters():
            p.mul_(3.0)
    return bake_model(model, model.sample_ws(1, seed=3), geometry_resolution=96, texture_resolution=128)


def test_a_baked_gram_model_is_ordered_and_renders_like_the_general_path(baked):
    nl = baked.num_layers
    plan = compositing_plan(baked)
    assert plan is not None, "a GRAM bake's iso-surfaces must not cross"
    # the iso-levels grow with the index and the outer (higher) shells are in front; the background
    # plane (last) is the pivot: the inner shells' rims dip behind it
    assert plan.pivot == nl - 1 and plan.order == tuple(range(nl - 2, -1, -1))
    for settings in (RenderSettings(), RenderSettings(lowres_factor=1, steps=24)):
        ordered, g, o = _render_both(baked, res=64, settings=settings)
        assert ordered.compositing == "ordered"
        assert g.alpha.mean() > 0.3
        _assert_same((o.rgb, o.alpha, o.depth), (g.rgb, g.alpha, g.depth))
    # the saved (float16) avatar keeps the plan
    assert compositing_plan(Avatar(baked.heights.half().float(), baked.textures.half().float(), baked.extent)) == plan


def test_render_cache_with_a_plan_traces_the_same_function(baked):
    """``render_cache`` with and without the plan on the raw arrays (what the ONNX export traces)."""
    plan = compositing_plan(baked)
    h, tex = baked.heights[:, None], baked.textures
    a = render_cache(h, tex, baked.extent, POSES[:2], 48, plan=plan)
    b = render_cache(h, tex, baked.extent, POSES[:2], 48)
    _assert_same(a, b)
    assert math.isfinite(float(a[0].sum()))


@pytest.mark.parametrize("order, n, runs", [
    ((3, 2, 1, 0, 5), 3, [[3, 2, 1], [0], [5]]),
    ((0, 1, 2, 3), 2, [[0, 1], [2, 3]]),
    ((0, 2, 3, 4), 8, [[0], [2, 3, 4]]),           # a gap starts a new run (a run is one slice)
    ((1, 0, 1), 8, [[1, 0], [1]]),                  # a turn too
    ((4, 3, 2), 1, [[4], [3], [2]]),
])
def test_layer_runs_split_an_order_into_contiguous_slices(order, n, runs):
    assert layer_runs(order, n) == runs
    assert [i for r in runs for i in r] == list(order)


@pytest.mark.parametrize("pass_pixels", [1, 48 * 48 * 2 * 3, 48 * 48 * 2 * 100])
def test_shading_layers_in_groups_renders_what_one_pass_renders(baked, pass_pixels):
    """The CPU path shades a few layers at a time (one, three, all of them here), the pivot apart."""
    plan = compositing_plan(baked)
    assert plan.pivot is not None
    h, tex = baked.heights[:, None], baked.textures
    one_pass = render_cache(h, tex, baked.extent, POSES[:2], 48, plan=plan)
    grouped = render_cache(h, tex, baked.extent, POSES[:2], 48, plan=plan, pass_pixels=pass_pixels)
    for a, b in zip(grouped, one_pass):
        assert torch.allclose(a, b, atol=1e-6)


def test_layers_transparent_everywhere_are_not_drawn_and_change_nothing(baked):
    """A layer with alpha 0 at every texel adds nothing to any pixel, whatever its heights: the renderer
    leaves it out (here a crossing, tilted one inserted mid-stack, and the background plane made
    transparent, as a GRAMInverter enrollment does), with the same image as the stack without it."""
    nl, g = baked.num_layers, baked.geometry_resolution
    xy = torch.linspace(-1, 1, g)
    tilted = (0.15 * xy[None, :] - 0.05).expand(g, g)                  # crosses the shells
    empty = torch.zeros(1, 4, baked.texture_resolution, baked.texture_resolution)
    empty[:, :3] = 0.7                                                # colour, but no opacity
    heights = torch.cat([baked.heights[:2], tilted[None], baked.heights[2:]])
    textures = torch.cat([baked.textures[:2], empty, baked.textures[2:]])
    textures[-1, 3] = 0.0                                             # the background plane, dropped
    padded = Avatar(heights, textures, baked.extent)
    without = Avatar(baked.heights[:-1], baked.textures[:-1], baked.extent)
    r = Renderer(padded, device="cpu")
    assert r.num_drawn_layers == nl - 1 and r.compositing == "ordered"
    assert r.plan == compositing_plan(without)          # the empty layers no longer need a pivot
    a, b = r.render(POSES, 48), Renderer(without, device="cpu").render(POSES, 48)
    for x, y in zip((a.rgb, a.alpha, a.depth), (b.rgb, b.alpha, b.depth)):
        assert torch.equal(x, y)
    # the general path with every layer drawn agrees too (the empty layers' factors are exactly 1)
    full = render_cache(heights[:, None], textures, baked.extent, POSES, 48)
    _assert_same(full, (a.rgb, a.alpha, a.depth))
    # an avatar transparent everywhere keeps one layer and renders nothing
    clear = Avatar(heights, textures * torch.tensor([1.0, 1, 1, 0])[:, None, None], baked.extent)
    r = Renderer(clear, device="cpu")
    assert r.num_drawn_layers == 1 and r.compositing == "single"
    assert float(r.render(POSES, 32).alpha.abs().max()) == 0.0
