"""The person's own colours under a soft matte edge: known layers composited, then separated again."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from gramcast.avatar.mesh_method import MeshConfig, enroll_mesh
from gramcast.compositing import over
from gramcast.face import detect_and_align, foreground_matte
from gramcast.face.matte import foreground_colours
from gramcast.images import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"
GREEN = np.array([0.0, 255.0, 0.0])


def known_layers(size=256, edge_px=6.0):
    """A warm foreground disc with a soft edge over a cool background, both smooth gradients. The edge is
    narrower than the coarse blur (16 px here), as a hair edge is at enrollment's scale: wider ones are
    only partly separated (blur fusion assumes F and B smooth over the blur)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64) / size
    fg = np.stack([200 + 40 * xx, 120 + 60 * yy, 60 + 30 * xx * yy], -1)
    bg = np.stack([20 + 30 * yy, 90 + 50 * xx, 220 - 40 * yy], -1)
    radius = np.hypot(xx - 0.5, yy - 0.5) * size
    alpha = np.clip((90.0 - radius) / edge_px, 0.0, 1.0)
    return over(fg, alpha, bg), alpha.astype(np.float32), fg


def test_the_soft_edge_gets_the_foregrounds_colour_back():
    image, alpha, fg = known_layers()
    out = foreground_colours(image, alpha).astype(np.float64)
    edge = (alpha > 0.1) & (alpha < 0.9)
    as_is = np.abs(image[edge] - fg[edge]).mean()          # the photo's colour: half background
    separated = np.abs(out[edge] - fg[edge]).mean()
    assert as_is > 40
    assert separated < 0.2 * as_is, (separated, as_is)


def test_solid_pixels_keep_their_colour_and_an_opaque_matte_changes_nothing():
    image, alpha, _ = known_layers()
    out = foreground_colours(image, alpha)
    assert (out[alpha >= 0.98] == image[alpha >= 0.98]).all()
    assert (foreground_colours(image, np.ones_like(alpha)) == image).all()


def test_a_gap_in_the_matte_wider_than_the_fine_radius_takes_the_persons_colour_not_black():
    """A band of the person the matte misses (its opacity 0), 12 px wide: wider than the fine blur (2 px),
    so that blur finds no opacity in its middle. The band had come out black; a face cut so and then
    restored to opaque (the face's floor in the texture) showed it."""
    image, alpha, fg = known_layers()
    gap = np.zeros_like(alpha, bool)
    gap[122:134, 60:196] = True
    gap &= alpha >= 1.0
    alpha = np.where(gap, 0.0, alpha).astype(np.float32)
    out = foreground_colours(image, alpha).astype(np.float64)
    assert np.abs(out[gap] - fg[gap]).max() < 20, np.abs(out[gap] - fg[gap]).max()


@pytest.fixture(scope="module")
def green_screened():
    """The sample portrait composited over green by its own matte, with that matte: the edge's truth is
    known to hold no green."""
    rgb = load_image(SAMPLE)
    aligned = detect_and_align(rgb, size=256)
    matte = foreground_matte(aligned.crop)
    aligned.crop[:] = over(aligned.crop, matte, np.broadcast_to(GREEN, aligned.crop.shape))
    return aligned, matte


def test_an_enrolled_edge_does_not_carry_the_old_background(green_screened):
    aligned, matte = green_screened

    def edge_greenness(config):
        avatar = enroll_mesh(aligned, matte, config)
        rgb = (avatar.textures[0, :3].permute(1, 2, 0).numpy() + 1) * 127.5
        a = avatar.textures[0, 3].numpy()
        edge = (a > 0.1) & (a < 0.9)
        assert edge.sum() > 500
        return float((rgb[..., 1] - 0.5 * (rgb[..., 0] + rgb[..., 2]))[edge].mean())

    kept = edge_greenness(MeshConfig(texture_resolution=256, foreground_colours=False))
    separated = edge_greenness(MeshConfig(texture_resolution=256))
    assert kept > separated + 30, (kept, separated)


def test_an_enrolled_edge_takes_its_opacity_from_the_photo_not_the_segmentations_ramp(green_screened):
    """The green-screened sample's opacity over green is its matte exactly. Enrolled from a blurred copy of that
    matte (a coarser segmentation), the texture's opacity comes back near the truth's only with the edge solved
    from the photo's colours (``MeshConfig.refine_matte``)."""
    import cv2

    aligned, matte = green_screened
    ramp = cv2.GaussianBlur(matte, (0, 0), 4)

    def texture_alpha(m, refine):
        return enroll_mesh(aligned, m, MeshConfig(texture_resolution=256, refine_matte=refine)).textures[0, 3].numpy()

    truth = texture_alpha(matte, False)
    edge = (truth > 0.02) & (truth < 0.98)
    assert edge.sum() > 500
    as_ramp = np.abs(texture_alpha(ramp, False) - truth)[edge].mean()
    solved = np.abs(texture_alpha(ramp, True) - truth)[edge].mean()
    assert solved < 0.6 * as_ramp, (solved, as_ramp)


def _crowd(portraits, size=512, tile=128):
    """A wall of small portraits (people beside the subject, each a quarter of its size), tiled in a fixed order."""
    out = np.zeros((size, size, 3), np.uint8)
    rng = np.random.default_rng(2)
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            out[y:y + tile, x:x + tile] = cv2.resize(portraits[rng.integers(len(portraits))], (tile, tile),
                                                     interpolation=cv2.INTER_AREA)
    return out


def test_a_portrait_over_a_crowd_is_warned_about_its_busy_background_and_on_a_plain_wall_not():
    """The matte's looks (gramcast.face.matte.agreed_matte) disagree where the selfie model is unsure what
    belongs to the person: over a wall of other faces they disagree over much of the person's area."""
    import gramcast

    faces = sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))
    portraits = [load_image(p) for p in faces]
    subject = portraits[2]
    plain = gramcast.enroll(subject)
    busy = gramcast.enroll(over(subject, foreground_matte(subject), _crowd(portraits)), face="largest")
    assert plain.meta["matte_disagreement"] < 0.05 and not any("busy" in w for w in plain.meta.get("warnings", []))
    assert busy.meta["matte_disagreement"] > 0.3
    assert any("background of the image is busy" in w for w in busy.meta["warnings"])


def test_over_a_crowd_the_colour_cut_keeps_less_of_the_crowd_and_as_much_of_the_subject():
    """The enrollment's matte of a portrait keyed over a wall of other faces (busy enough for
    ``MeshConfig.colour_cut_from``), with the colour cut and without, against the key's own matte: beyond
    the head it spares, less of the crowd; of the subject, about as much."""
    import math

    from gramcast.avatar.mesh_photo import photo_context, spared_head
    from gramcast.face.alignment import warp_to_crop
    from gramcast.face.matte import Matting

    portraits = [load_image(p) for p in sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))]
    subject = portraits[2]
    alpha = foreground_matte(subject)
    photo = over(subject, alpha, _crowd(portraits)).astype(np.uint8)
    aligned = detect_and_align(photo, size=512, face="largest")      # enrollment's crop
    config = MeshConfig()
    with Matting(one_person=True) as matting:
        plain, cut = (photo_context(photo, aligned, config.context_margin, matting, True, config.matte_look_margin,
                                    cut_from) for cut_from in (math.inf, config.colour_cut_from))
    pad = int(plain.offset)
    truth = warp_to_crop(alpha, aligned.crop_from_image + np.array([[0, 0, pad], [0, 0, pad]]), plain.matte.shape[0])
    assert plain.disagreement >= config.colour_cut_from
    beyond_head = plain.inside & (spared_head(aligned.pixels + pad, truth.shape) < 0.01)

    def junk(ctx):
        return float(np.clip(ctx.matte - truth, 0, None)[beyond_head].sum())

    def lost(ctx):
        return float(np.clip(truth - ctx.matte, 0, None)[ctx.inside].sum())

    assert junk(cut) < 0.8 * junk(plain), (junk(cut), junk(plain))
    assert lost(cut) < lost(plain) + 0.02 * float(truth[plain.inside].sum()), (lost(cut), lost(plain))
