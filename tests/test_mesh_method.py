"""The mesh method's filling of texels the photo does not see, on known layouts."""
import numpy as np
import pytest

from gramcast.avatar.bake import grid_xy
from gramcast.avatar.mesh_method import face_floor, facing_cosines
from gramcast.avatar.texture_fill import better_seen_mirrored, fill_unseen, harmonic_offset, unseen_islands

T = 64


def _layout():
    """Seen everywhere but a band at the top (outside the photo) and one small hole in the right half."""
    seen = np.ones((T, T), bool)
    seen[:8] = False                       # beyond the photo's top edge: touches the grid's border
    seen[30:33, 44:47] = False             # a 3x3 hole, enclosed by seen texels
    return seen


def test_only_small_enclosed_regions_are_islands():
    seen = _layout()
    islands = unseen_islands(seen)
    expect = np.zeros((T, T), bool)
    expect[30:33, 44:47] = True
    assert np.array_equal(islands, expect)
    assert not unseen_islands(np.ones((T, T), bool)).any()
    big = np.ones((T, T), bool)
    big[10:40, 10:40] = False              # enclosed but a fifth of the grid: a side of the head, not noise
    assert not unseen_islands(big).any()
    # a strip along a contour: long (over 0.5 % of the grid) but thin, every texel within 1.3 % of the
    # side of a seen one: an island; the same strip five times as wide is not
    strip = np.ones((256, 256), bool)
    strip[40:200, 100:106] = False
    assert (~strip).sum() > 0.005 * strip.size and unseen_islands(strip)[40:200, 100:106].all()
    strip[40:200, 100:130] = False
    assert not unseen_islands(strip).any()


def test_islands_take_their_neighbours_colour_and_the_rest_the_mirror():
    seen = _layout()
    seen[40:50, 50:64] = False             # a larger patch reaching the edge: mirrored from the left half
    colour = np.zeros((T, T, 3), np.uint8)
    colour[:, : T // 2] = (255, 0, 0)      # left half red, right half blue: a mirror would paint red
    colour[:, T // 2:] = (0, 0, 255)
    alpha = np.ones((T, T), np.float32)
    in_image = np.ones((T, T), bool)
    heights = np.zeros((T, T), np.float32)
    out, out_alpha, known = fill_unseen(colour, alpha, seen, in_image, heights)
    hole = out[30:33, 44:47].reshape(-1, 3).astype(int)
    assert (hole[:, 2] > 200).all() and (hole[:, 0] < 50).all()          # blue, from around it
    mirrored = out[40:50, 50:64].reshape(-1, 3).astype(int)
    assert (mirrored[:, 0] == 255).all() and (mirrored[:, 2] == 0).all()  # red, from the mirror texels
    assert known[40:50, 50:64].all() and not known[30:33, 44:47].any()


def test_opacity_beyond_the_photo_stays_on_the_head():
    """A head cut by the photo's top edge: the fill above the edge keeps opacity only over the head's
    proxy (heights above the flat surround), not in a strip to the grid's edge."""
    seen = np.ones((T, T), bool)
    seen[:16] = False
    in_image = seen.copy()                 # the unseen band is beyond the photo
    colour = np.full((T, T, 3), 128, np.uint8)
    alpha = np.zeros((T, T), np.float32)
    alpha[16:, 24:40] = 1.0                # the person reaches the photo's top edge in columns 24..39
    yy, xx = np.mgrid[:T, :T]
    heights = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 22 ** 2, 0.05, 0.0).astype(np.float32)  # head: r 22
    _, out_alpha, _ = fill_unseen(colour, alpha, seen, in_image, heights)
    assert out_alpha[12:16, 28:36].min() > 0.5       # just above the edge, over the head: filled
    assert out_alpha[:8, :].max() < 0.05             # above the head's top (row 10): transparent
    assert np.array_equal(out_alpha[16:], alpha[16:])  # what the photo saw is untouched


def _surface_texels(heights: np.ndarray, extent: float) -> np.ndarray:
    xy = grid_xy(heights.shape[0], extent).numpy().astype(np.float64)
    return np.concatenate([xy, heights[..., None].astype(np.float64)], -1).reshape(-1, 3)


def test_facing_cosines_of_a_tilted_plane_are_analytic_and_its_ripples_smoothed_away():
    g, extent = 128, 0.14
    x = grid_xy(g, extent).numpy()[..., 0].astype(np.float64)
    far_camera = np.array([0.0, 0.0, 1e4])                       # every view ray along +z
    plane = (0.3 * x).astype(np.float32)                         # dz/dx = 0.3
    expect = 1.0 / np.sqrt(1.0 + 0.3 ** 2)
    for smoothing in (0.0, 3.0):
        cos = facing_cosines(plane, extent, _surface_texels(plane, extent), far_camera, g, smoothing)
        inner = cos.reshape(g, g)[8:-8, 8:-8]                    # away from the blur's border handling
        assert np.allclose(inner, expect, atol=1e-3)
    # ripples 4 texels long, slopes up to 20 (~13 in central differences): the raw normals turn away
    # from the camera in stripes
    wavelength = 4 * (2 * extent / (g - 1))
    ripples = (plane + 20 * wavelength / (2 * np.pi) * np.sin(2 * np.pi * x / wavelength)).astype(np.float32)
    texels = _surface_texels(ripples, extent)
    raw = facing_cosines(ripples, extent, texels, far_camera, g, 0.0).reshape(g, g)[8:-8, 8:-8]
    smooth = facing_cosines(ripples, extent, texels, far_camera, g, 3.0).reshape(g, g)[8:-8, 8:-8]
    assert (raw < 0.15).mean() > 0.2
    assert np.allclose(smooth, expect, atol=1e-2)


def test_harmonic_offset_between_two_anchored_edges_is_the_linear_ramp():
    """Laplace's equation on a strip with fixed values at its two ends and no flux across its sides: the
    exact solution (also of the 5-point stencil) is linear along the strip."""
    region = np.zeros((6, 12), bool)
    region[:, 1:11] = True                              # columns 1..10, every row: sides are the grid's border
    anchors = np.zeros_like(region)
    anchors[:, 0] = anchors[:, 11] = True
    boundary = np.zeros((6, 12, 2))
    boundary[:, 11, 0] = 11.0                           # channel 0: 0 at column 0, 11 at column 11
    boundary[:, :, 1] = 5.0                             # channel 1: 5 at both ends
    out = harmonic_offset(boundary, region, anchors)
    assert np.allclose(out[:, 1:11, 0], np.arange(1, 11)[None, :], atol=1e-9)
    assert np.allclose(out[:, 1:11, 1], 5.0, atol=1e-9)
    assert not out[~region].any()


def test_harmonic_offset_with_one_anchored_edge_is_that_value_and_without_any_zero():
    region = np.zeros((10, 10), bool)
    region[2:8, 2:8] = True
    anchors = np.zeros_like(region)
    anchors[2:8, 1] = True                              # only the left edge is anchored; the rest is free
    boundary = np.full((10, 10, 1), 7.0)
    assert np.allclose(harmonic_offset(boundary, region, anchors)[2:8, 2:8], 7.0, atol=1e-9)
    assert not harmonic_offset(boundary, region, np.zeros_like(region)).any()
    # two parts, one anchored: the other gets 0
    top_row = np.zeros_like(region)
    top_row[0, :] = True
    parts = np.zeros_like(region)
    parts[1:3, 5:8] = True                              # touches the top row's anchors
    parts[6:9, 1:4] = True                              # touches nothing anchored
    out = harmonic_offset(boundary, parts, top_row)
    assert np.allclose(out[1:3, 5:8], 7.0) and not out[6:9, 1:4].any()


def _lit_faces():
    """A texture whose left half is seen (vertical stripes on brightness 100) and whose right half is
    seen only in its outer quarter, at brightness 160: the far side of a face lit from the other side."""
    colour = np.zeros((T, T, 3), np.uint8)
    stripes = np.where(np.arange(T) % 4 < 2, 20, -20)
    colour[:, : T // 2] = (100 + stripes[: T // 2])[None, :, None]
    colour[:, 3 * T // 4:] = 160
    seen = np.zeros((T, T), bool)
    seen[:, : T // 2] = True
    seen[:, 3 * T // 4:] = True
    return colour, seen


def test_mirrored_detail_meets_the_seen_side_without_a_step():
    colour, seen = _lit_faces()
    ones = np.ones((T, T), np.float32)
    heights = np.zeros((T, T), np.float32)
    region = slice(T // 2, 3 * T // 4)                      # the unseen band, whose mirrors are seen
    copy, _, known = fill_unseen(colour, ones, seen, np.ones((T, T), bool), heights, blend="copy")
    blended, _, _ = fill_unseen(colour, ones, seen, np.ones((T, T), bool), heights)
    assert known[:, region].all()
    edge = 3 * T // 4
    # copied: a step of ~60 levels where the mirror meets the brighter seen side; blended: within the
    # stripes' own contrast (+-20: the blend keeps the mirror's gradient across the edge too)
    last_period = slice(edge - 4, edge)                     # one period of the stripes
    assert 160 - copy[:, last_period, 0].mean() > 55
    assert abs(160 - blended[:, last_period, 0].mean()) <= 20
    # the detail stays: the blend differs from the mirror by a smooth ramp, so the stripes' +-20 remain
    detail = blended[:, region, 0].astype(int) - copy[:, region, 0].astype(int)
    assert np.abs(np.diff(detail, axis=1)).max() <= 4
    assert np.ptp(blended[T // 2, T // 2 + 2:T // 2 + 6, 0].astype(int)) >= 35


def test_the_blend_corrects_brightness_not_hue():
    """A red anchor (the matte's edge over a red background) must not tint the mirrored side red."""
    colour, seen = _lit_faces()
    colour[:, 3 * T // 4:] = (240, 120, 120)               # reddish seen side, brightness 160
    grey_side = colour[:, : T // 2].astype(int)
    blended, _, _ = fill_unseen(colour, np.ones((T, T), np.float32), seen, np.ones((T, T), bool),
                                np.zeros((T, T), np.float32))
    band = blended[:, T // 2:3 * T // 4].astype(int)
    assert np.abs(band[..., 0] - band[..., 1]).max() <= 1       # still grey: channels moved together
    assert np.abs(grey_side[..., 0] - grey_side[..., 1]).max() == 0


def test_grazing_texels_whose_mirror_is_seen_squarely_take_the_mirror():
    seen = np.ones((4, 6), bool)
    cosines = np.array([[0.9, 0.8, 0.6, 0.6, 0.2, 0.1]] * 4)
    seen[3, 1] = False                                      # row 3: texel 4's mirror (1) unseen
    picked = better_seen_mirrored(seen, cosines, below=0.3, mirror_above=0.5)
    expect = np.zeros_like(seen)
    expect[:3, 4:] = True                                   # 0.2 and 0.1 under 0.3, mirrors 0.8 / 0.9
    expect[3, 5] = True
    assert np.array_equal(picked, expect)
    assert not better_seen_mirrored(seen, cosines, below=0.0, mirror_above=0.5).any()
    with pytest.raises(ValueError, match="mirror blend"):
        fill_unseen(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.float32), np.ones((4, 4), bool),
                    np.ones((4, 4), bool), np.zeros((4, 4), np.float32), blend="smear")


def test_a_mirrored_texel_stays_transparent_where_the_photo_shows_background_there():
    """The visual hull: the head lies inside its outline in the photo, so an unseen texel whose own
    projection the matte calls background stays transparent though its mirror is opaque; beyond the
    photo's edge the mirror's opacity is taken."""
    seen = np.zeros((T, T), bool)
    seen[:, : T // 2] = True                               # the left half seen, opaque
    alpha = np.zeros((T, T), np.float32)
    alpha[:, : T // 2] = 1.0
    alpha[:, T // 2:3 * T // 4] = 1.0                      # the matte covers the right half's inner band
    in_image = np.ones((T, T), bool)
    in_image[: T // 4] = False                             # the top rows lie beyond the photo
    alpha[40, 40] = 0.0                                    # a pinhole in the matte: not a hole in the head
    colour = np.full((T, T, 3), 100, np.uint8)
    margin = 2 / T                                         # the outline may widen by 2 texels
    _, out_alpha, known = fill_unseen(colour, alpha, seen, in_image, np.zeros((T, T), np.float32),
                                      hull_margin=margin)
    assert known[:, T // 2:].all()                         # all mirrored
    assert out_alpha[T // 4:, T // 2:3 * T // 4].min() == 1.0    # inside the outline: the mirror's opacity
    assert out_alpha[T // 4:, 3 * T // 4 + 2:].max() == 0.0     # beyond it: background stays background
    assert out_alpha[: T // 4, 3 * T // 4:].min() == 1.0         # beyond the photo: the mirror's
    _, exact, _ = fill_unseen(colour, alpha, seen, in_image, np.zeros((T, T), np.float32), hull_margin=0.0)
    assert exact[40, 40] == 0.0 and exact[T // 4:, 3 * T // 4:].max() == 0.0   # no margin: the matte as it is


def test_the_face_floor_is_the_hull_and_what_falls_inside_the_photos_hull_beside_it_not_farther():
    """Opaque over the face's hull in the texture; beside it, as much as falls inside the face's hull in the
    photo (the face's rim, seen at a grazing angle); farther out nothing, though the photo's hull covers it
    there too (the flat surround behind a turned head)."""
    yy, xx = np.mgrid[:T, :T]
    face = np.hypot(xx - 32, yy - 32) <= 12
    in_face = np.zeros((T, T), np.float32)
    in_face[20:44, 45:48] = 0.6                            # the rim, 1-3 texels beyond the hull's right edge
    in_face[2:6, 58:62] = 1.0                              # the surround, 15 texels beyond it
    floor = face_floor(face, in_face, rim=4)
    assert floor.dtype == np.float32
    assert (floor[face] == 1.0).all()
    assert np.allclose(floor[28:36, 45:48], 0.6)
    assert floor[2:6, 58:62].max() == 0.0
    assert floor[~face & (in_face == 0)].max() == 0.0
