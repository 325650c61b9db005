"""The programs in examples/ run as a user runs them and produce what they say: examples that rot are worse
than none, because people copy them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SAMPLE = ROOT / "sdk" / "assets" / "sample_portrait.png"


def run_example(name: str, *args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def face_yaw(rgb: np.ndarray) -> float | None:
    """The head's yaw in an image, by the product's own face tracker (None: no face found)."""
    from gramcast.face.alignment import detect_and_align

    try:
        return detect_and_align(rgb, size=256, min_eye_distance=10).pose.yaw
    except Exception:
        return None


def test_enroll_and_orbit_writes_an_avatar_and_a_turntable_whose_head_turns(tmp_path):
    from gramcast import Avatar

    run_example("enroll_and_orbit.py", SAMPLE, tmp_path / "out", cwd=tmp_path)
    avatar = Avatar.load(tmp_path / "out" / "me.gca")
    assert avatar.meta["method"] == "mesh"
    gif = Image.open(tmp_path / "out" / "turntable.gif")
    assert gif.n_frames == 36
    # frames 9 and 27 are the turntable's extremes (yaw +-0.5): the tracker sees the head turned both ways
    yaws = []
    for index in (9, 27):
        gif.seek(index)
        yaws.append(face_yaw(np.asarray(gif.convert("RGB"))))
    assert None not in yaws and yaws[0] > 0.25 and yaws[1] < -0.25, yaws


def test_enroll_and_orbit_explains_itself():
    done = subprocess.run([sys.executable, str(EXAMPLES / "enroll_and_orbit.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "enroll_and_orbit.py [PHOTO] [OUT_DIR]" in done.stderr


def test_render_gram_views_draws_rgb_depth_and_normals_of_the_shipped_prior(tmp_path):
    run_example("render_gram_views.py", "-o", tmp_path / "views.png", cwd=tmp_path)
    views = np.asarray(Image.open(tmp_path / "views.png").convert("RGB"))
    h, w = views.shape[:2]
    assert w == 5 * (h // 3) and h % 3 == 0                     # 3 rows (rgb, depth, normals) x 5 yaws
    side = h // 3
    rgb = views[:side].astype(float)
    # five different views, not one image five times
    tiles = [rgb[:, i * side:(i + 1) * side] for i in range(5)]
    assert min(np.abs(a - b).mean() for a, b in zip(tiles, tiles[1:])) > 2.0


@pytest.mark.timeout(240)
def test_aiortc_avatar_track_records_the_avatar_from_a_video(tmp_path):
    """A short video of the sample portrait goes through the example's AvatarSession into an MP4: what a
    remote peer would receive shows a face (the avatar's), in frames of the session's output size."""
    import av

    from gramcast import Avatar, enroll

    enroll(SAMPLE).save(tmp_path / "me.gca")
    # the sample's head, filling most of the camera's height (its eyes ~55 px apart), so that the avatar the
    # session draws in its place is large enough for the tracker to find again in the recording
    portrait = np.asarray(Image.open(SAMPLE).convert("RGB").crop((96, 0, 416, 320)).resize((420, 420)))
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[30:450, 110:530] = portrait
    with av.open(str(tmp_path / "camera.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        # the example records 10 s from its start; a camera that ended before (a slow start) would leave
        # the session easing the avatar out at the end
        for _ in range(25 * 25):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    assert Avatar.load(tmp_path / "me.gca").num_layers == 1
    run_example("aiortc_avatar_track.py", tmp_path / "me.gca", tmp_path / "camera.mp4", tmp_path / "avatar.mp4",
                cwd=tmp_path, timeout=200)
    with av.open(str(tmp_path / "avatar.mp4")) as recorded:
        frames = [f.to_ndarray(format="rgb24") for f in recorded.decode(video=0)]
    assert len(frames) > 25
    assert all(f.shape[0] == 480 for f in frames)                      # SessionConfig(output_size="480p")
    # the avatar's face in the recording once tracking has started (a second in) and to its end
    picks = np.linspace(25, len(frames) - 1, 5).astype(int)
    found = [face_yaw(frames[i]) is not None for i in picks]
    assert sum(found) >= 4, (found, [round(float(frames[i].mean()), 1) for i in picks])


async def test_embedded_server_serves_the_links_it_prints(tmp_path):
    """The example's links join its server: the speakers' and the audience's, whose token is for watching."""
    import asyncio
    import re

    import gramcast
    from gramcast.server import GramcastClient, ServerError

    avatar = tmp_path / "me.gca"
    gramcast.enroll(SAMPLE).save(avatar)
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "embedded_server.py"), str(avatar), "--port", "0",
                             "--seconds", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        loop = asyncio.get_running_loop()
        lines = [await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 60) for _ in range(3)]
        links = [re.search(r"(http://[^/]+)/\?room=standup&token=(\S+)", line) for line in lines]
        assert all(links), lines
        ws = links[0].group(1).replace("http://", "ws://") + "/ws"
        async with GramcastClient(ws, links[0].group(2), "standup") as alice, \
                   GramcastClient(ws, links[2].group(2), "standup") as audience:
            assert alice.may_publish and not audience.may_publish and not audience.may_enroll
            with pytest.raises(ServerError, match="watching"):
                from gramcast.server.synthetic import ArrayVideoTrack

                await audience.publish(ArrayVideoTrack([np.zeros((48, 64, 3), np.uint8)] * 2))
        assert proc.wait(timeout=40) == 0
        assert "participants in calls when the app stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()        # text pipes left open reach the collector: a ResourceWarning in another test
        proc.stderr.close()
