"""The top of a head that the photo cuts off (``gramcast.avatar.head_top``): the cap's outline against the
ellipse it is defined as, known texture layouts, and a real portrait cut through its hair against the same
portrait uncut."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gramcast.avatar.head_top import (EDGE_RAMP, HEAD_TOP_ABOVE_EYES, LEAST_CAP_HEIGHT, OUTLINE_BAND, cap_outline,
                                      edge_rows, head_cap)
from gramcast.face.quality import BEYOND_BOTTOM, BEYOND_LEFT, BEYOND_RIGHT, BEYOND_TOP, INSIDE, crop_photo_sides

FACES = Path(__file__).parent / "data" / "faces"


def test_crop_photo_sides_says_beyond_which_edge_of_the_photo_a_pixel_lies():
    # a crop of side 10 whose pixel (u, v) is the photo's (u - 2, v - 3): the photo (W 5, H 4) at columns 2-6,
    # rows 3-6 of the crop
    sides = crop_photo_sides(np.array([[1.0, 0, 2], [0, 1.0, 3]]), 10, (4, 5))
    assert (sides[3:7, 2:7] == INSIDE).all()
    assert (sides[:3] == BEYOND_TOP).all() and (sides[3:7, :2] == BEYOND_LEFT).all()
    assert (sides[7:] == BEYOND_BOTTOM).all() and (sides[3:7, 7:] == BEYOND_RIGHT).all()


def test_edge_rows_finds_each_columns_first_row_inside_the_photo_below_its_top_edge():
    inside = np.zeros((20, 20), bool)
    inside[5:, :15] = True                 # the photo's top edge at row 5 in these columns
    inside[:, 15:] = True                  # the photo reaches the texture's top here: no edge
    above = ~inside
    first, edged = edge_rows(inside, above)
    assert (first[:15] == 5).all() and edged[:15].all() and not edged[15:].any()
    # texels beyond a side edge are no top edge, whatever rows the photo covers below them
    side = np.ones((20, 20), bool)
    side[:12, :4] = False
    assert not edge_rows(side, np.zeros_like(side))[1].any()


def _half_width(mask: np.ndarray, row: int) -> float:
    cols = np.nonzero(mask[row])[0]
    return (cols[-1] - cols[0] + 1) / 2.0 if len(cols) else 0.0


def test_the_caps_outline_is_an_ellipse_of_the_given_width_height_and_narrowing():
    t, centre, edge = 400, 200.0, 300.0
    # widest at the edge: a plain half-ellipse of half-width 80 and height 60 above it
    plain = cap_outline(t, centre, edge, 80.0, 0.0, 60.0)
    assert abs(_half_width(plain, 300) - 80) <= 1
    assert plain[241, 200] and not plain[238, 200]                       # its top 60 rows up
    assert abs(_half_width(plain, 270) - 80 * np.sqrt(1 - 0.5 ** 2)) <= 1
    # narrowing by 0.4 half-width per row at the edge, the same top: its widest row lies below the edge
    s = 0.4
    narrow = cap_outline(t, centre, edge, 80.0, s, 60.0)
    assert abs(_half_width(narrow, 300) - 80) <= 1
    assert narrow[241, 200] and not narrow[238, 200]
    slope = (_half_width(narrow, 306) - _half_width(narrow, 294)) / 12.0
    assert abs(slope - s) < 0.06
    assert _half_width(narrow, 330) > 80.5


def _layout(t: int = 128, hair_beside: bool = True):
    """A head in a texture whose photo starts at row 40: opaque from row 46 down over columns 34-93, the
    matte ramping to 0.3 over the rows between; the face (skin) in columns 44-83 from row 50, hair beside it
    (or more skin: a bald head) and on it above row 50; the wall blue."""
    inside = np.zeros((t, t), bool)
    inside[40:] = True
    alpha = np.zeros((t, t), np.float32)
    alpha[40:, 34:94] = 1.0
    alpha[40:46, 34:94] = np.linspace(0.3, 0.9, 6)[:, None]
    skin, hair = (220, 170, 140), (60, 40, 25)
    colour = np.zeros((t, t, 3), np.uint8)
    colour[:] = (20, 40, 230)
    colour[40:, 34:94] = hair if hair_beside else skin
    colour[50:, 44:84] = skin
    colour[40:50, 44:84] = hair if hair_beside else skin
    face = np.zeros((t, t), bool)
    face[55:110, 44:84] = True
    return colour, alpha, inside, face


def _cap(colour, alpha, inside, face, eye, chin):
    return head_cap(colour, alpha, inside, ~inside, face, eye, chin, 63.5)


def test_a_head_cut_by_the_photos_top_gets_an_opaque_cap_as_high_as_its_proportions():
    colour, alpha, inside, face = _layout()
    eye, chin = 60.0, 90.0                  # the top 1.05 x 30 above the eyes: row 28.5
    new_colour, new_alpha = _cap(colour, alpha, inside, face, eye, chin)
    top = eye - HEAD_TOP_ABOVE_EYES * (chin - eye)
    assert new_alpha[int(top) + 4, 64] > 0.95 and new_alpha[36, 48] > 0.95        # inside the cap
    assert new_alpha[int(top) - 4, 64] < 0.05                                      # above the head's top
    assert new_alpha[36, 10] < 0.05 and new_alpha[36, 120] < 0.05                  # beside it
    # the ramp's rows are as opaque as the head past them, within the head; the wall stays as it was
    assert (new_alpha[40:46, 40:88] > 0.95).all()
    assert (new_alpha[40:46, :30] == 0).all()
    n = round((EDGE_RAMP + OUTLINE_BAND) * 128)
    assert np.array_equal(new_alpha[40 + n:], alpha[40 + n:])
    assert np.array_equal(new_colour[46:], colour[46:])
    # the cap's colour is the hair's, not the face's nor the wall's
    got = new_colour[34, 64].astype(float)
    assert np.abs(got - (60, 40, 25)).max() < 40, got


def test_a_bald_head_keeps_skin_on_its_cap_and_a_head_short_of_the_edge_gets_none():
    colour, alpha, inside, face = _layout(hair_beside=False)
    new_colour, new_alpha = _cap(colour, alpha, inside, face, 60.0, 90.0)
    assert new_alpha[34, 64] > 0.95
    assert np.abs(new_colour[34, 64].astype(float) - (220, 170, 140)).max() < 40
    # the head ends a little below the photo's edge, wall between (the matte ~0 at the edge, opaque past the
    # ramp): nothing beyond it, and nothing inside changes
    for wall_rows in (3, 10):
        short = alpha.copy()
        short[40:40 + wall_rows] = 0.0
        _, none = _cap(colour, short, inside, face, 60.0, 90.0)
        assert (none[:40] == 0).all() and np.array_equal(none[40:], short[40:])
    # no top edge in the texture: the texture as it was
    c, a = _cap(colour, alpha, np.ones_like(inside), face, 60.0, 90.0)
    assert c is colour and a is alpha


def test_the_least_cap_is_a_rounded_crown_where_the_proportions_end_below_the_edge():
    colour, alpha, inside, face = _layout()
    _, new_alpha = _cap(colour, alpha, inside, face, 90.0, 100.0)    # top at row 79.5: below the edge
    half = 30.0
    assert new_alpha[48 - int(LEAST_CAP_HEIGHT * half) + 2, 64] > 0.5
    assert new_alpha[48 - int(LEAST_CAP_HEIGHT * half) - 3, 64] < 0.5


def test_texels_beyond_a_side_edge_are_left_to_the_fill():
    """The photo's left edge at column 20, slanting so that the photo covers those columns lower down: the
    fill beyond the side (a mirrored cheek, opaque) stays; only the top edge's texels get the cap."""
    colour, alpha, inside, face = _layout()
    inside[:90, :20] = False
    sides = np.where(inside, INSIDE, BEYOND_LEFT).astype(np.uint8)
    sides[:40, 20:] = BEYOND_TOP
    alpha[40:90, :20] = 1.0
    _, capped = head_cap(colour, alpha, inside, sides == BEYOND_TOP, face, 60.0, 90.0, 63.5)
    assert np.array_equal(capped[:, :20], alpha[:, :20])
    assert capped[36, 64] > 0.95


def test_a_head_cut_at_the_top_and_a_side_gets_a_cap_as_wide_as_its_uncut_side_says():
    """The photo's left edge at column 44 cuts the head of the layout (columns 34-93, centre 63.5) as well as
    its top: the cap is as wide on the cut side as on the other (the half-width read at the uncut side),
    covers the corner beyond both edges (which the photo codes as beyond its top), and the ramp's mirror
    beyond the side below the top edge is as opaque as the head."""
    colour, alpha, inside, face = _layout()
    inside[:, :44] = False
    # the fill beyond the side: the mirrored head, with the mirror of the other side's ramp below the top edge
    alpha[46:, :44] = np.where(alpha[46:, :44] > 0, 1.0, 0.0)
    sides = np.where(inside, INSIDE, BEYOND_LEFT).astype(np.uint8)
    sides[:40] = BEYOND_TOP
    _, capped = head_cap(colour, alpha, inside, sides == BEYOND_TOP, face, 60.0, 90.0, 63.5)
    row = 38
    cols = np.nonzero(capped[row] > 0.5)[0]
    assert abs((cols[0] + cols[-1]) / 2.0 - 63.5) <= 1.5, cols[[0, -1]]
    assert capped[row, 42] > 0.95                         # in the corner, inside the cap's outline
    assert capped[row, 10] < 0.05 and capped[row, 120] < 0.05
    assert (capped[40:46, 40:44] > 0.95).all()             # the mirrored ramp below it, as opaque as the head


def _top_alpha(avatar, poses) -> list[np.ndarray]:
    from gramcast.avatar import Renderer

    renderer = Renderer(avatar, device="cpu")
    out = []
    for pose in poses:
        _, alpha = renderer.render_rgba(pose, 128)
        out.append(np.asarray(alpha, np.float32).reshape(128, 128)[:56] / (255.0 if alpha.max() > 1.5 else 1.0))
    return out


@pytest.mark.parametrize("name", ["london_neutral_002_03.jpg"])
def test_a_portrait_cut_through_its_hair_keeps_a_head_shaped_top(name):
    """The photo cut a fifth of the way from the hair's top to the chin: the top of the head (the upper 44 %
    of frames at pitch 0 and 0.3) covers what the uncut photo's avatar covers there (alpha > 0.5, IoU), and
    is no more half-transparent than a little more than it, where the fill alone grew a half-transparent
    dome to the frame's top."""
    import gramcast
    from gramcast.face import detect_and_align
    from gramcast.face.matte import foreground_matte
    from gramcast.images import load_image

    rgb = load_image(FACES / name)
    aligned = detect_and_align(rgb, size=256)
    to_image = cv2.invertAffineTransform(aligned.crop_from_image)
    chin = (aligned.pixels @ to_image[:, :2].T + to_image[:, 2])[152, 1]
    hair_top = int(np.argmax((foreground_matte(rgb) > 0.5).any(1)))
    cut = int(hair_top + 0.2 * (chin - hair_top))
    poses = [(0.0, 0.0), (0.0, 0.3)]
    whole = _top_alpha(gramcast.enroll(rgb), poses)
    cut_off = _top_alpha(gramcast.enroll(np.ascontiguousarray(rgb[cut:])), poses)
    # (the fill alone, on this portrait: IoU 0.85 / 0.70, half-transparent 0.28 / 0.38 of the region against
    # the uncut avatar's 0.04; with the cap 0.97 / 0.96 and 0.08 / 0.09)
    for a, b in zip(whole, cut_off):
        inter, union = ((a > 0.5) & (b > 0.5)).sum(), ((a > 0.5) | (b > 0.5)).sum()
        assert inter / union > 0.92, inter / union
        half_transparent = [((x > 0.1) & (x < 0.9)).mean() for x in (a, b)]
        assert half_transparent[1] < half_transparent[0] + 0.08, half_transparent


@pytest.mark.parametrize("fraction, pitch, bound", [(0.2, 0.3, 22.0), (0.3, 0.0, 20.0)])
def test_a_dark_haired_portrait_cut_through_its_forehead_gets_a_hair_coloured_crown(fraction, pitch, bound):
    """London neutral_014 (dark hair) cut a fifth / 0.3 of the way from the hair's top to the chin: the edge
    crosses her forehead, with hair only at the temples beside it (0.2 of the head's width there at a fifth).
    The top of the head (the upper 44 % of the frame) is coloured like the uncut photo's avatar there: seen
    from above (pitch 0.3) at a fifth, a mean difference under 22 of 255, where a bald head's skin had been
    taken for the cap (29); from the front at 0.3, under 20, where the cap began at the cut with no forehead
    above it (25; the hairline lies 0.6 eye-to-chin distances above the eyes)."""
    import gramcast
    from gramcast.avatar import Renderer
    from gramcast.face import detect_and_align
    from gramcast.face.matte import foreground_matte
    from gramcast.images import load_image

    rgb = load_image(FACES / "more" / "london_neutral_014_03.jpg")
    aligned = detect_and_align(rgb, size=256)
    to_image = cv2.invertAffineTransform(aligned.crop_from_image)
    chin = (aligned.pixels @ to_image[:, :2].T + to_image[:, 2])[152, 1]
    hair_top = int(np.argmax((foreground_matte(rgb) > 0.5).any(1)))
    cut = int(hair_top + fraction * (chin - hair_top))

    def top_of_head(photo):
        colour, alpha = Renderer(gramcast.enroll(photo), device="cpu").render_rgba((0.0, pitch), 128)
        alpha = np.asarray(alpha, np.float32).reshape(128, 128)
        return np.asarray(colour, np.float32), alpha / (255.0 if alpha.max() > 1.5 else 1.0)

    whole, whole_alpha = top_of_head(rgb)
    crowned, crowned_alpha = top_of_head(np.ascontiguousarray(rgb[cut:]))
    top = (whole_alpha > 0.5) & (crowned_alpha > 0.5)
    top[56:] = False
    difference = float(np.abs(whole - crowned)[top].mean())
    assert difference < bound, difference
