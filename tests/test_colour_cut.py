"""Cutting what the colours call background out of a person matte (``gramcast.face.matte.colour_cut``) and
the gate that uses it only on busy photos (``MeshConfig.colour_cut_from``)."""
import math
from pathlib import Path

import numpy as np
import pytest

from gramcast.avatar.mesh_photo import spared_head, subject_matte
from gramcast.face import detect_and_align, foreground_matte
from gramcast.face.matte import colour_cut, colour_share
from gramcast.images import load_image

SKIN, HAIR = (205, 150, 120), (60, 40, 30)
BLUE, ORANGE = (40, 70, 190), (230, 140, 30)


def scene(size=240):
    """A head (skin ellipse under dark hair) over a background of blue and orange stripes, and a matte of
    that head plus a block of orange stripe touching its cheek, less sure (0.8), as a segmentation takes in
    a poster beside someone. ``(H, W, 3)`` uint8, head ``(H, W)`` bool, matte ``(H, W)`` float32, block
    ``(H, W)`` bool. (A block the matte were sure of, deeper than the cut's band, would seed the person's
    colours: the cut leaves what the segmentation is sure of.)"""
    yy, xx = np.mgrid[:size, :size]
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[:] = BLUE
    rgb[(xx // 20) % 3 == 0] = ORANGE
    head = ((xx - 110) / 55.0) ** 2 + ((yy - 130) / 75.0) ** 2 <= 1
    hair = head & (yy < 95)
    rgb[head] = SKIN
    rgb[hair] = HAIR
    block = (yy >= 110) & (yy < 170) & (xx >= 160) & (xx < 200) & ~head
    rgb[block] = ORANGE
    matte = np.where(head, 1.0, np.where(block, 0.8, 0.0)).astype(np.float32)
    return rgb, head, matte, block


def test_the_cut_removes_a_block_of_background_colour_and_keeps_the_person():
    rgb, head, matte, block = scene()
    out = colour_cut(rgb, matte, max_side=240)
    assert out.dtype == np.float32 and out.shape == matte.shape
    assert np.all(out <= matte + 1e-6)                      # it only ever removes
    assert out[block].mean() < 0.1                          # the poster is gone...
    inner = head.copy()
    inner[:, :-1] &= head[:, 1:]
    inner[:-1] &= head[1:]
    assert out[inner].mean() > 0.97                         # ...the head, hair and skin alike, stays
    # solved smaller and brought back to the matte's size, it cuts the same block
    small = colour_cut(rgb, matte, max_side=120)
    assert small.shape == matte.shape and small[block].mean() < 0.15 and small[inner].mean() > 0.95


def test_what_it_is_told_to_keep_stays_as_the_matte_had_it():
    rgb, _, matte, block = scene()
    keep = np.zeros_like(matte)
    keep[:, 150:] = 1.0                                     # the block's side of the picture
    out = colour_cut(rgb, matte, keep=keep, max_side=240)
    assert np.allclose(out[:, 150:], matte[:, 150:], atol=1e-6)
    assert np.allclose(out[:, :150], colour_cut(rgb, matte, max_side=240)[:, :150])   # elsewhere the cut is the same


def test_with_nothing_sure_on_one_side_the_matte_is_kept():
    rgb, _, matte, _ = scene()
    everywhere = np.ones_like(matte)                        # no background to learn colours from
    assert np.array_equal(colour_cut(rgb, everywhere), everywhere)
    assert np.array_equal(colour_cut(rgb, np.zeros_like(matte)), np.zeros_like(matte))


@pytest.mark.parametrize("cut_from, cut", [(math.inf, False), (0.5, False), (0.0, True)])
def test_the_cut_runs_only_from_the_set_disagreement_on_and_spares_the_heads_own_colours(cut_from, cut):
    """One look (disagreement 0): the gate decides alone. The matte given is the person's plus three blocks
    beside them (at 0.8: less sure): the wall in a corner and the wall beside one temple, both cut, and
    a patch beside the other temple painted the colour of the person's face, kept (within the spared head,
    in the person's own colours: it could be their hair)."""
    aligned = detect_and_align(load_image(sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))[2]),
                               size=256)
    truth = foreground_matte(aligned.crop)
    head = spared_head(aligned.pixels, truth.shape)
    wall = (truth < 0.05)
    corner, temple, painted = (np.zeros(truth.shape, bool) for _ in range(3))
    corner[0:50, 0:40] = True
    temple[40:100, 15:65] = True
    painted[40:100, 191:241] = True
    corner &= wall & (head < 0.01)
    temple &= wall & (head > 0.99)
    painted &= wall & (head > 0.99)
    assert corner.sum() > 1000 and temple.sum() > 300 and painted.sum() > 300
    centre = aligned.pixels.mean(axis=0).astype(int)
    crop = aligned.crop.copy()
    crop[painted] = aligned.crop[centre[1], centre[0]]

    def matting(rgb):
        return np.maximum(truth, 0.8 * (corner | temple | painted))

    found, disagreement = subject_matte(matting, crop, aligned, agreed=False, colour_cut_from=cut_from)
    assert disagreement == 0.0
    for block in (corner, temple):
        assert (found[block].mean() < 0.2) if cut else (found[block].mean() > 0.79)
    assert found[painted].mean() > 0.75
    assert found[truth > 0.99].mean() > 0.95


def test_the_spared_head_holds_the_face_and_the_hair_above_it_and_not_the_shoulders():
    """A face's landmarks: a disc of radius 40 px around (100, 120). The spared head holds the face, reaches
    one face size (the landmarks' RMS radius, 40 / sqrt(2) px here) above it and 0.7 of a size more
    around, and not the corners below (shoulders)."""
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    radii = np.sqrt(np.linspace(0, 1, 200)) * 40.0           # uniform in the disc
    face = np.stack([100 + radii * np.cos(angles * 7), 120 + radii * np.sin(angles * 7)], 1)
    size = np.sqrt(((face - face.mean(0)) ** 2).sum(1).mean())
    head = spared_head(face, (240, 200))
    assert head.dtype == np.float32 and head.shape == (240, 200)
    assert head[120, 100] > 0.99 and head[int(120 - 40 - size), 100] > 0.99          # face, hair above it
    top = 120 - 40 - size - 0.7 * size
    assert head[int(top) + 4, 100] > 0.5 and head[int(top) - 6, 100] < 0.5            # as far as it reaches
    assert head[235, 5] < 0.01 and head[235, 195] < 0.01                               # not the shoulders
    assert head[int(120 + 40 + 0.7 * size) + 6, 100] < 0.5                               # below: only 0.7


def test_colour_share_counts_the_pixels_of_each_colour_where_asked():
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[:, :5] = (200, 30, 30)                               # red left half
    rgb[:, 5:] = (30, 30, 200)                               # blue right half
    rgb[0, 0] = (205, 20, 20)                                # another red, in red's bin (16 levels)
    rgb[9, 9] = (30, 200, 30)                                # one green pixel
    where = np.zeros((10, 10), bool)
    where[:, :8] = True                                      # 50 red, 30 blue, no green: of 80
    share = colour_share(rgb, where)
    assert share[0, 0] == share[5, 2] == pytest.approx(50 / 80)
    assert share[5, 7] == share[0, 9] == pytest.approx(30 / 80)
    assert share[9, 9] == 0.0
    assert np.array_equal(colour_share(rgb, np.zeros_like(where)), np.zeros((10, 10)))
