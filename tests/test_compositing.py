"""2D placement and compositing of the avatar layer, against hand-computed answers."""
import math

import numpy as np
import pytest

from gramcast.compositing import make_background, over, place_rgba, similarity_matrix


def test_similarity_maps_centres_and_scales_distances():
    m = similarity_matrix(2.0, math.pi / 2, src_center=(10, 10), dst_center=(50, 40))
    apply = lambda p: m[:, :2] @ np.asarray(p, float) + m[:, 2]
    assert np.allclose(apply((10, 10)), (50, 40))
    # +x in the source (to the right) turns to +y (down) on screen for a clockwise quarter turn.
    assert np.allclose(apply((11, 10)), (50, 42))


def test_over_known_layers():
    fg = np.full((2, 2, 3), 200, np.uint8)
    bg = np.full((2, 2, 3), 100, np.uint8)
    assert (over(fg, np.ones((2, 2)), bg) == 200).all()
    assert (over(fg, np.zeros((2, 2)), bg) == 100).all()
    assert (over(fg, np.full((2, 2), 0.25), bg) == 125).all()  # 0.25*200 + 0.75*100


def test_identity_placement_of_opaque_and_transparent_pixels():
    bg = np.zeros((8, 8, 3), np.uint8)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    alpha = np.zeros((4, 4), np.float32)
    alpha[:2] = 1.0          # top half opaque red, bottom half transparent
    m = similarity_matrix(1.0, 0.0, (0, 0), (2, 2))  # shift by (2, 2)
    out = place_rgba(bg, rgb, alpha, m)
    assert (out[2:4, 2:6, 0] == 255).all()
    assert (out[4:6, 2:6] == 0).all()     # transparent part shows the background
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all()


def test_half_alpha_blends_exactly():
    bg = np.full((4, 4, 3), 50, np.uint8)
    rgb = np.full((4, 4, 3), 250, np.uint8)
    out = place_rgba(bg, rgb, np.full((4, 4), 0.5, np.float32), similarity_matrix(1, 0, (0, 0), (0, 0)))
    assert (out == 150).all()


def test_scaled_rotated_placement_moves_a_marker_where_the_matrix_says():
    bg = np.zeros((101, 101, 3), np.uint8)
    rgb = np.zeros((21, 21, 3), np.uint8)
    alpha = np.zeros((21, 21), np.float32)
    rgb[10, 18] = 255; alpha[10, 18] = 1.0       # a marker right of the centre (10, 10)
    m = similarity_matrix(3.0, math.pi / 2, (10, 10), (50, 50))
    out = place_rgba(bg, rgb, alpha, m)
    ys, xs = np.nonzero(out[..., 0] > 128)
    # 8 px right of centre, scaled x3, turned a quarter clockwise: 24 px below the centre.
    assert abs(xs.mean() - 50) < 1.5 and abs(ys.mean() - 74) < 1.5


def test_backgrounds():
    cam = np.zeros((40, 60, 3), np.uint8)
    cam[:, :30] = 255
    assert (make_background("color", (16, 9), color=(1, 2, 3)) == (1, 2, 3)).all()
    blur = make_background("blur", (60, 40), cam)
    assert blur.shape == (40, 60, 3)
    assert blur[:, :5].mean() > 150 and blur[:, -5:].mean() < 100 and 60 < blur[:, 28:32].mean() < 195
    img = make_background("image", (30, 20), image=cam)
    assert img.shape == (20, 30, 3)
    with pytest.raises(ValueError, match="blur"):
        make_background("blur", (4, 4))
    with pytest.raises(ValueError, match="unknown background"):
        make_background("plaid", (4, 4))


def test_premultiply_known_values():
    from gramcast.compositing import premultiply

    rgba = premultiply(np.array([[[200, 100, 0]]], np.uint8), np.array([[0.25]], np.float32))
    assert rgba.tolist() == [[[50, 25, 0, 64]]]          # 0.25 * 255 = 63.75


def test_8_bit_placement_is_close_to_a_float_reference():
    import cv2

    from gramcast.compositing import place_premultiplied, premultiply

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:64, :64]
    alpha = np.clip(1.5 - np.hypot(yy - 32, xx - 32) / 20, 0, 1).astype(np.float32)   # opaque disc, soft rim
    bg = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    m = similarity_matrix(1.37, 0.3, (32, 32), (80, 60))
    out = place_premultiplied(bg, premultiply(rgb, alpha), m).astype(float)
    # float64 reference: premultiplied colour and alpha warped in floats, then "over"
    pm = np.concatenate([rgb * alpha[..., None].astype(np.float64), alpha[..., None]], -1)
    warped = cv2.warpAffine(pm, m, (160, 120), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ref = warped[..., :3] + bg * (1 - warped[..., 3:])
    diff = np.abs(out - ref)
    # OpenCV's 8-bit warp weighs neighbours in steps of 1/32: up to ~255/64 levels between texels as far
    # apart as random noise's (observed 6.8), a tenth of a level on average
    assert diff.max() <= 8 and diff.mean() < 0.25, (diff.max(), diff.mean())
    far = np.ones((120, 160), bool)
    far[12:108, 32:128] = False                           # outside the disc (radius 30 x 1.37 around (80, 60))
    assert (out[far] == bg[far]).all()
