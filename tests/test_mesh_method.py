"""The mesh method's filling of texels the photo does not see, on known layouts."""
import numpy as np

from gramcast.avatar.bake import grid_xy
from gramcast.avatar.mesh_method import _fill_unseen, facing_cosines, unseen_islands

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


def test_islands_take_their_neighbours_colour_and_the_rest_the_mirror():
    seen = _layout()
    seen[40:50, 50:64] = False             # a larger patch reaching the edge: mirrored from the left half
    colour = np.zeros((T, T, 3), np.uint8)
    colour[:, : T // 2] = (255, 0, 0)      # left half red, right half blue: a mirror would paint red
    colour[:, T // 2:] = (0, 0, 255)
    alpha = np.ones((T, T), np.float32)
    in_image = np.ones((T, T), bool)
    heights = np.zeros((T, T), np.float32)
    out, out_alpha, known = _fill_unseen(colour, alpha, seen, in_image, heights, T)
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
    _, out_alpha, _ = _fill_unseen(colour, alpha, seen, in_image, heights, T)
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
