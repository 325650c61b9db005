"""The renderer's API at its edges: ONNX sessions built while others render, the thread count each session
takes, the avatar a renderer keeps, ``RenderSettings``' ranges, the poses every entry point takes and refuses,
the arrays the one-frame helpers return, and what the docs say of poses and premultiplied colour."""
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast.avatar import Avatar, Renderer, RenderSettings
from gramcast.errors import GramcastError, InvalidArgumentError

ROOT = Path(__file__).resolve().parents[1]


def _tiny() -> Avatar:
    g = torch.linspace(0, 1, 8)
    return Avatar(torch.zeros(2, 8, 8) + g[:, None] * 0.01,
                  torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), 0.14)


# ---------------------------------------------------------------- ONNX sessions (findings 1, 15)
@pytest.fixture
def gated_export(monkeypatch):
    """``export_onnx_bytes`` made to wait for ``gate`` (set at the end at the latest) and counted; the model
    it hands back is a real one of the tiny avatar at 16 pixels."""
    pytest.importorskip("onnxruntime")
    from gramcast.avatar import onnx_export

    model = onnx_export.export_onnx_bytes(_tiny(), 16)
    gate, calls = threading.Event(), []

    def slow_export(*args, **kwargs):
        calls.append(args[1])
        gate.wait(30)
        return model

    monkeypatch.setattr(onnx_export, "export_onnx_bytes", slow_export)
    yield gate, calls
    gate.set()


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_one_renderers_export_does_not_stop_another_renderers_frames(gated_export):
    gate, calls = gated_export
    a, b = Renderer(_tiny(), device="cpu", backend="onnx"), Renderer(_tiny(), device="cpu", backend="onnx")
    gate.set()
    b.render([(0.1, 0.0)], 16)                      # b's session at 16, built before
    gate.clear()
    calls.clear()
    exporting = [threading.Thread(target=a.render, args=([(0.2, 0.0)], 16)) for _ in range(2)]
    exporting[0].start()
    _wait_for(lambda: calls)                        # a's export has begun, and waits for the gate
    exporting[1].start()                            # a second frame of a at the same new size
    frame = threading.Thread(target=b.render, args=([(0.3, 0.0)], 16))
    frame.start()
    frame.join(5)
    done_while_exporting = not frame.is_alive()
    gate.set()
    for t in exporting + [frame]:
        t.join(30)
    assert done_while_exporting, "renderer b waited for renderer a's export"
    assert calls == [16], "two threads at one new size exported the model twice"


def test_each_onnx_session_takes_torchs_thread_count_when_it_is_made(gated_export):
    gate, _ = gated_export
    gate.set()
    before = torch.get_num_threads()
    renderer = Renderer(_tiny(), device="cpu", backend="onnx")
    try:
        torch.set_num_threads(1)
        renderer.render([(0.1, 0.0)], 16)
        torch.set_num_threads(2)
        later = renderer._onnx.session(24)          # the fake export's model: the session's options are what count
    finally:
        torch.set_num_threads(before)
    first = renderer._onnx.session(16)
    assert [s.get_session_options().intra_op_num_threads for s in (first, later)] == [1, 2]


# ---------------------------------------------------------------- the avatar a renderer keeps (finding 5)
def test_arrays_assigned_to_the_avatar_later_reach_no_frame_at_any_size():
    avatar = _tiny()
    renderer = Renderer(avatar, device="cpu")
    renderer.render([(0.1, 0.0)], 16)
    want = Renderer(_tiny(), device="cpu").render([(0.1, 0.0)], 24).rgb
    avatar.textures = torch.flip(avatar.textures, (-1,))
    assert torch.equal(renderer.render([(0.1, 0.0)], 24).rgb, want)
    assert renderer.avatar is not avatar and renderer.avatar.textures is not avatar.textures
    assert "make a new ``Renderer``" in Renderer.__doc__


# ---------------------------------------------------------------- RenderSettings (finding 6)
@pytest.mark.parametrize("field,value,allowed", [
    ("steps", 0, ">= 2"), ("steps", 1, ">= 2"), ("steps", -5, ">= 2"), ("steps", 8.0, ">= 2"),
    ("refine", -1, ">= 0"), ("lowres_factor", 2.5, ">= 1"), ("lowres_factor", 0, ">= 1"),
    ("lowres_factor", -2, ">= 1"), ("lowres_factor", True, ">= 1"), ("edge_samples", -1, ">= 0 or None"),
    ("edge_samples", "12", ">= 0 or None"),
])
def test_render_settings_out_of_range_are_refused_naming_the_field(field, value, allowed):
    with pytest.raises(InvalidArgumentError, match=re.escape(f"RenderSettings.{field} must be a whole number "
                                                             f"{allowed}, got {value!r}")):
        RenderSettings(**{field: value})


def test_render_settings_take_numpy_integers_as_ints():
    settings = RenderSettings(steps=np.int64(8), edge_samples=np.int32(0), refine=0, lowres_factor=1)
    assert type(settings.steps) is int and type(settings.edge_samples) is int
    assert Renderer(_tiny(), device="cpu", settings=settings).render([(0.1, 0.0)], 16).alpha.shape == (1, 1, 16, 16)


# ---------------------------------------------------------------- poses (findings 7, 14)
BAD_POSES = [((0.1, 0.2, 0.3), "got shape"), ([[[0.1, 0.2]]], "got shape"), ("ab", "a pose is"),
             ([(0.1, 0.2), (0.3,)], "a pose is"), ([], "no poses given"), ([(float("nan"), 0.0)], "finite"),
             ([torch.tensor([0.1, 0.2]), torch.tensor([0.1, 0.2, 0.3])], "a pose is")]


@pytest.mark.parametrize("poses,says", BAD_POSES)
def test_every_bad_pose_is_one_kind_of_error_everywhere(poses, says):
    renderer = Renderer(_tiny(), device="cpu")
    for call in (renderer.render, renderer.render_premultiplied, renderer.render_rgba):
        with pytest.raises(InvalidArgumentError, match=says) as caught:
            call(poses, 16)
        assert isinstance(caught.value, GramcastError) and isinstance(caught.value, ValueError)


def test_a_list_of_pose_tensors_renders_as_the_same_poses_as_numbers():
    renderer = Renderer(_tiny(), device="cpu")
    want = renderer.render([(0.3, 0.1), (0.0, 0.0)], 16).rgb
    for poses in ([torch.tensor([0.3, 0.1]), torch.tensor([0.0, 0.0])], [np.array([0.3, 0.1]), (0.0, 0.0)]):
        assert torch.equal(renderer.render(poses, 16).rgb, want)


@pytest.mark.parametrize("method", ["render_premultiplied", "render_rgba"])
def test_one_frame_helpers_take_every_single_pose_form_and_refuse_batches_and_scalars(method):
    renderer = Renderer(_tiny(), device="cpu")
    call = getattr(renderer, method)
    want = call((0.3, 0.1), 16)
    for pose in (torch.tensor([0.3, 0.1]), torch.tensor([[0.3, 0.1]]), [(0.3, 0.1)], np.array([[0.3, 0.1]])):
        got = call(pose, 16)
        assert all(np.array_equal(g, w) for g, w in zip(got, want)) if method == "render_rgba" else \
            np.array_equal(got, want)
    for pose, says in ((0.3, "got shape"), ([(0.3, 0.1), (0.0, 0.0)], "renders one frame: .* not 2 poses"),
                       (torch.zeros(3, 2), "not 3 poses")):
        with pytest.raises(InvalidArgumentError, match=says):
            call(pose, 16)


def test_a_pitch_beyond_a_quarter_turn_is_the_camera_over_the_pole_upside_down_as_documented():
    renderer = Renderer(_tiny(), device="cpu", settings=RenderSettings(lowres_factor=1))
    for yaw, pitch in ((math.pi + 0.2, math.pi - 0.3), (math.pi + 0.2, -math.pi + 0.3)):
        over = renderer.render([(yaw, pitch)], 16).rgb[0]
        same = renderer.render([(yaw + math.pi, math.copysign(math.pi, pitch) - pitch)], 16).rgb[0]
        assert over.abs().max() > 0.1 and torch.allclose(over, same.flip(1, 2), atol=1e-5)
    doc = " ".join(Renderer.render.__doc__.split())
    assert "(yaw + pi, +-pi - pitch) upside down" in doc


# ---------------------------------------------------------------- what the helpers return (finding 9)
def test_render_rgba_arrays_are_c_contiguous():
    rgb, alpha = Renderer(_tiny(), device="cpu").render_rgba((0.1, 0.0), 16)
    assert rgb.flags["C_CONTIGUOUS"] and alpha.flags["C_CONTIGUOUS"]
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8


# ---------------------------------------------------------------- the README (finding 16)
def test_the_readme_says_the_renderers_rgb_is_premultiplied():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using the SDK"):]
    section = section[:section.index("```\n", section.index("```python") + 9)]
    assert "premultiplied by alpha" in section and "rgb / alpha" in section
    assert "not (rgb + 1) * 127.5" in section
