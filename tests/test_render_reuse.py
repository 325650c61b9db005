"""A session places its last render again while the head has not moved enough to show
(``gramcast.render_reuse``, ``SessionConfig.reuse_render_px``): with the real renderer of an enrolled avatar."""
from pathlib import Path

import numpy as np
import pytest

from gramcast.camera import image_motion_bound
from gramcast.face.pose import HeadPose
from gramcast.face.tracker import TrackedHead
from gramcast.render_reuse import RenderReuse
from gramcast.session import SessionConfig

SIZE = 128
SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"


def head(yaw: float, pitch: float, centre=(160.0, 120.0)) -> TrackedHead:
    return TrackedHead(HeadPose(yaw, pitch, 0.05, centre, 200.0), confidence=1.0, timestamp=0.0, face_found=True)


@pytest.fixture(scope="module")
def processors():
    import gramcast
    from gramcast.compositing import AvatarFrameProcessor

    avatar = gramcast.enroll(SAMPLE)
    # the tracker is not used by draw(): a bare object keeps mediapipe out of this test
    reusing = AvatarFrameProcessor(avatar, SessionConfig(device="cpu", avatar_resolution=SIZE), tracker=object())
    fresh = AvatarFrameProcessor(avatar, SessionConfig(device="cpu", avatar_resolution=SIZE, reuse_render_px=0),
                                 tracker=object())
    return reusing, fresh


def _yaw_step(px: float, radius: float) -> float:
    """The yaw step whose motion bound at SIZE is ``px`` pixels (the bound is linear in small steps)."""
    return 1e-4 * px / image_motion_bound((0.2, 0.1), (0.2 + 1e-4, 0.1), SIZE, radius)


def test_a_still_head_reuses_the_render_and_a_moving_one_does_not(processors):
    reusing, fresh = processors
    frame = np.full((240, 320, 3), 90, np.uint8)
    tolerance = reusing.config.reuse_render_px
    assert tolerance == SessionConfig().reuse_render_px > 0
    step = _yaw_step(0.6 * tolerance, reusing.renderer.content_radius)
    first, info = reusing.draw(frame, head(0.2, 0.1))
    assert info["render_reused"] is False and info["render_ms"] > 0
    again, info = reusing.draw(frame, head(0.2 + step, 0.1))
    assert info["render_reused"] is True and "render_ms" not in info
    assert np.array_equal(again, first)
    # the placement follows the head whatever the render: moved in the frame, the same pose renders the same
    moved, info = reusing.draw(frame, head(0.2 + step, 0.1, centre=(150.0, 125.0)))
    assert info["render_reused"] is True and not np.array_equal(moved, first)
    assert np.array_equal(moved, fresh.draw(frame, head(0.2, 0.1, centre=(150.0, 125.0)))[0])
    # compared with the pose that was rendered, not the last frame's: two small steps add up and render
    turned, info = reusing.draw(frame, head(0.2 + 2 * step, 0.1))
    assert info["render_reused"] is False
    expected, fresh_info = fresh.draw(frame, head(0.2 + 2 * step, 0.1))
    assert np.array_equal(turned, expected) and fresh_info["render_reused"] is False
    # a renderer made anew (here: the edge search switched off) renders again
    reusing.set_edge_samples(0)
    _, info = reusing.draw(frame, head(0.2 + 2 * step, 0.1))
    assert info["render_reused"] is False
    reusing.set_edge_samples(None)


def test_what_a_reused_render_stands_for_is_what_the_renderer_would_draw_within_the_tolerance(processors):
    """A reused render against the true one at the new pose: as close as the true render is to itself moved
    by the bound's distance: the reuse adds no more error than the tolerance says."""
    import cv2

    reusing, _ = processors
    renderer = reusing.renderer
    tolerance = reusing.config.reuse_render_px
    step = _yaw_step(tolerance, renderer.content_radius)
    old = renderer.render_premultiplied((0.2, 0.1), SIZE).astype(np.float32)
    new = renderer.render_premultiplied((0.2 + step, 0.1), SIZE).astype(np.float32)
    shifted = cv2.warpAffine(new, np.float32([[1, 0, tolerance], [0, 1, 0]]), (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    assert 0 < np.abs(old - new).mean() <= np.abs(shifted - new).mean()


def test_reuse_is_refused_for_another_renderer_size_or_a_stand_in():
    class StandIn:          # a renderer that does not say how far its content reaches
        pass

    class Known:
        content_radius = 0.2

    reuse, image, known = RenderReuse(0.5), np.zeros((4, 4, 4), np.uint8), Known()
    assert reuse.lookup(known, (0.0, 0.0), SIZE) is None
    reuse.store(known, (0.0, 0.0), SIZE, image)
    assert reuse.lookup(known, (0.0, 0.0), SIZE) is image
    assert reuse.lookup(Known(), (0.0, 0.0), SIZE) is None
    assert reuse.lookup(known, (0.0, 0.0), SIZE * 2) is None
    assert reuse.lookup(known, (0.01, 0.0), SIZE) is None
    stand_in = StandIn()
    reuse.store(stand_in, (0.0, 0.0), SIZE, image)
    assert reuse.image is image and reuse.lookup(stand_in, (0.0, 0.0), SIZE) is None
    never = RenderReuse(0.0)
    never.store(known, (0.0, 0.0), SIZE, image)
    assert never.lookup(known, (0.0, 0.0), SIZE) is None
    with pytest.raises(ValueError, match="tolerance_px"):
        RenderReuse(-1.0)
    with pytest.raises(ValueError, match="reuse_render_px"):
        SessionConfig(reuse_render_px=float("nan"))
