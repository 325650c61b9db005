"""The mesh method reads the photo around the aligned crop: hair and shoulders beyond the crop take the
photo's own colours (where the photo has pixels), not guesses."""
from pathlib import Path

import numpy as np
import pytest

from gramcast.avatar.mesh_method import MeshConfig, enroll_mesh
from gramcast.avatar.mesh_photo import photo_context
from gramcast.face import detect_and_align, foreground_matte
from gramcast.face.geometry import apply_affine
from gramcast.images import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"
GREEN = np.array([0, 255, 0], np.uint8)


@pytest.fixture(scope="module")
def painted():
    """The sample portrait with every pixel outside its aligned 256² crop painted green."""
    rgb = load_image(SAMPLE)
    aligned = detect_and_align(rgb, size=256)
    yy, xx = np.mgrid[:rgb.shape[0], :rgb.shape[1]]
    uv = apply_affine(aligned.crop_from_image, np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)).reshape(*xx.shape, 2)
    outside = (uv < -2).any(-1) | (uv > 258).any(-1)
    out = rgb.copy()
    out[outside] = GREEN
    return out, aligned


def test_the_context_is_the_crop_widened_at_its_own_scale(painted):
    image, aligned = painted
    ctx = photo_context(image, aligned, 0.25, foreground_matte)
    pad = int(ctx.offset)
    assert pad == 64 and ctx.crop.shape == (384, 384, 3) and ctx.matte.shape == (384, 384)
    # the same pixels, shifted (but near the crop's edge, where the green beyond it is blended in; and
    # warpAffine's fixed-point coordinates round a few pixels differently at another offset)
    diff = np.abs(ctx.crop[pad + 8:pad + 248, pad + 8:pad + 248].astype(int) - aligned.crop[8:248, 8:248]).max(-1)
    assert diff.max() <= 6 and (diff > 1).mean() < 0.005
    ring = np.ones((384, 384), bool)
    ring[pad - 3:pad + 259, pad - 3:pad + 259] = False
    assert (ctx.crop[ring & ctx.inside] == GREEN).all(axis=-1).mean() > 0.99      # the photo beyond the crop
    # where the widened crop leaves the photo (the sample's head is near its top edge) it says so
    assert 0.5 < ctx.inside.mean() < 1.0 and ctx.inside[pad:pad + 256, pad:pad + 256].all()


def test_a_wider_look_checks_the_ring_but_leaves_the_context_as_it_was(painted):
    """``look_margin`` above the context's margin: the matte's first looks are at the crop widened that far
    (and its mirror image), then the widened crop's and the aligned crop's; the context's pixels, the
    photo's bounds and the matte's size stay those of the widened crop."""
    image, aligned = painted
    seen = []

    def matting(rgb):
        seen.append(rgb.shape[:2])
        return foreground_matte(rgb)

    plain = photo_context(image, aligned, 0.25, matting)
    assert seen == [(384, 384)] * 2 + [(256, 256)] * 2
    seen.clear()
    wider = photo_context(image, aligned, 0.25, matting, look_margin=0.4)
    assert seen == [(460, 460)] * 2 + [(384, 384)] * 2 + [(256, 256)] * 2        # 256 + 2 x round(0.4 x 256)
    assert wider.offset == plain.offset and wider.matte.shape == plain.matte.shape
    assert np.array_equal(wider.inside, plain.inside)
    assert np.array_equal(wider.crop, plain.crop)
    # deep inside the aligned crop the widest look does not count: the matte is the same there
    pad = int(plain.offset)
    core = (slice(pad + 16, pad + 240),) * 2
    assert np.abs(wider.matte[core] - plain.matte[core]).max() < 0.05
    seen.clear()
    photo_context(image, aligned, 0.25, matting, look_margin=0.2)             # not wider: no more looks
    assert len(seen) == 4


def test_texels_beyond_the_crop_take_the_photos_colours_only_with_the_context(painted):
    image, aligned = painted
    matte = foreground_matte(aligned.crop)
    config = MeshConfig(texture_resolution=256)
    with_ctx = enroll_mesh(aligned, matte, config, context=photo_context(image, aligned, 0.2, foreground_matte))
    without = enroll_mesh(aligned, matte, config)

    def green_fraction(avatar):
        rgb = ((avatar.textures[0, :3].permute(1, 2, 0).numpy() + 1) * 127.5).round()
        return float((np.abs(rgb - GREEN).max(-1) <= 8).mean())

    assert green_fraction(with_ctx) > 0.05         # the texture reaches past the crop, into the green
    assert green_fraction(without) == 0.0          # the crop alone has no green to give
    assert with_ctx.meta["seen_fraction"] > without.meta["seen_fraction"]
