"""`gramcast serve`'s avatar-video and ICE options: parsed into the SessionConfig every session gets and the
STUN/TURN configuration every connection gets, bad values refused before anything starts."""
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast.cli import build_parser, main
from gramcast.errors import GramcastError
from gramcast.server.cli import TURN_PASSWORD_ENV, TURN_SECRET_ENV, ice_servers_config, session_config

ROOT = Path(__file__).resolve().parents[1]


def serve_args(*extra):
    return build_parser().parse_args(["serve", "--avatar", "a.gca", *extra])


def test_defaults_are_the_session_defaults():
    from gramcast.session import SessionConfig

    cfg, default = session_config(serve_args()), SessionConfig()
    for name in ("output_size", "avatar_resolution", "max_fps", "background", "device", "backend", "pipeline",
                 "edge_samples", "reuse_render_px", "resolution_steps", "still_px"):
        assert getattr(cfg, name) == getattr(default, name), name


def test_options_reach_the_session_config():
    cfg = session_config(serve_args("--output-size", "640x360", "--avatar-resolution", "192", "--max-fps", "24",
                                    "--background", "blur", "--device", "cpu", "--pipeline", "on"))
    assert (cfg.output_size, cfg.avatar_resolution, cfg.max_fps, cfg.background, cfg.device, cfg.pipeline) == \
        ((640, 360), 192, 24.0, "blur", "cpu", True)
    assert session_config(serve_args("--output-size", "720P")).output_size == "720p"
    assert session_config(serve_args("--output-size", "camera")).output_size is None
    assert session_config(serve_args("--pipeline", "off")).pipeline is False
    assert session_config(serve_args("--edge-samples", "12")).edge_samples == 12
    assert session_config(serve_args("--edge-samples", "0")).edge_samples == 0
    assert session_config(serve_args("--reuse-render-px", "0")).reuse_render_px == 0.0
    assert session_config(serve_args("--reuse-render-px", "0.5")).reuse_render_px == 0.5
    assert session_config(serve_args("--still-px", "0")).still_px == 0.0
    assert session_config(serve_args("--resolution-steps", "none")).resolution_steps == ()
    assert session_config(serve_args("--resolution-steps", "0.8, 0.6")).resolution_steps == (0.8, 0.6)


def test_a_sessions_renderer_searches_edges_unless_told_not_to_and_switches_between_frames():
    """By default a session's renderer searches a mesh avatar's occlusion edges (the session turns it off
    while it drops frames, gramcast.render_quality); ``edge_samples=0`` never does; ``set_edge_samples``
    switches from the next frame on, and the frames show it: the turned sample's edges differ."""
    import gramcast
    from gramcast.compositing import AvatarFrameProcessor
    from gramcast.session import SessionConfig

    avatar = gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png")
    searching = AvatarFrameProcessor(avatar, SessionConfig(device="cpu"))
    plain = AvatarFrameProcessor(avatar, SessionConfig(device="cpu", edge_samples=0))
    assert searching.renderer.settings.edge_samples is None and plain.renderer.settings.edge_samples == 0
    turned = [(0.5, 0.0)]
    with_edges, without = searching.renderer.render(turned, 128).rgb, plain.renderer.render(turned, 128).rgb
    assert not torch.equal(with_edges, without)
    searching.set_edge_samples(0)
    assert torch.equal(searching.renderer.render(turned, 128).rgb, without)
    searching.set_edge_samples(None)
    assert torch.equal(searching.renderer.render(turned, 128).rgb, with_edges)


@pytest.mark.parametrize("extra,words", [
    (["--output-size", "640by360"], "--output-size '640by360'"),
    (["--output-size", "8x8"], "from 16 to 4096"),
    (["--output-size", "641x481"], "even numbers"),
    (["--avatar-resolution", "4"], "--avatar-resolution 4"),
    (["--max-fps", "0"], "positive frame rate"),
    (["--edge-samples", "1"], "--edge-samples 1"),
    (["--reuse-render-px", "-1"], "--reuse-render-px -1"),
    (["--resolution-steps", "0.5,0.75"], "largest first"),
    (["--resolution-steps", "half"], "--resolution-steps 'half'"),
    (["--still-px", "-0.5"], "--still-px -0.5"),
    (["--device", "banana"], "is not a device: use auto, cpu, cuda"),
])
def test_bad_values_are_refused_with_one_line_before_anything_starts(extra, words, capsys, tmp_path):
    with pytest.raises(GramcastError, match=words.replace("(", r"\(")):
        session_config(serve_args(*extra))
    # through the command: exit 2, one line, and the missing avatar file was not even read
    assert main(["serve", "--avatar", str(tmp_path / "missing.gca"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_on_a_machine_without_one_is_refused():
    with pytest.raises(GramcastError, match="no such CUDA device"):
        session_config(serve_args("--device", "cuda"))


def test_the_server_gives_every_session_its_config_and_the_frames_follow_it():
    import cv2

    import gramcast
    from gramcast.server.app import GramcastServer, ServerConfig
    from gramcast.session import AvatarSession

    avatar = gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png")
    cfg = session_config(serve_args("--output-size", "320x200", "--avatar-resolution", "128", "--device", "cpu"))
    server = GramcastServer({"a": avatar}, ServerConfig(port=0, secret=b"x" * 32, session=cfg))
    session = server.make_pipeline(avatar)
    assert isinstance(session, AvatarSession) and session.config is cfg
    camera = cv2.imread(str(ROOT / "tests" / "data" / "faces" / "london_neutral_001_03.jpg"))
    out, info = session.processor.process(np.ascontiguousarray(camera[..., ::-1]), 0.0)
    assert out.shape == (200, 320, 3) and info["face_found"]


def test_a_port_out_of_range_or_taken_is_refused_in_one_line(capsys, tmp_path):
    import socket

    import gramcast

    path = tmp_path / "a.gca"
    gramcast.enroll(ROOT / "sdk" / "assets" / "sample_portrait.png").save(path)
    assert main(["serve", "--avatar", str(path), "--port", "99999"]) == 2
    assert capsys.readouterr().err.strip() == "gramcast serve: error: --port 99999: give 0 to 65535 (0 picks a free one)"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--avatar", str(path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0] and "another --port" in err[0]


def test_ice_options_reach_the_ice_configuration(monkeypatch):
    monkeypatch.delenv(TURN_SECRET_ENV, raising=False)
    monkeypatch.delenv(TURN_PASSWORD_ENV, raising=False)
    none = ice_servers_config(serve_args())
    assert none.urls == () and none.servers_for("p1") == [] and none.transport_policy == "all"
    cfg = ice_servers_config(serve_args("--ice-server", "stun:stun.example.org", "--ice-server", "turn:t.example.org",
                                        "--turn-secret", "s", "--turn-ttl", "600", "--ice-relay-only"))
    assert cfg.urls == ("stun:stun.example.org", "turn:t.example.org") and cfg.turn_secret == "s"
    assert cfg.turn_ttl_s == 600 and cfg.transport_policy == "relay"
    monkeypatch.setenv(TURN_SECRET_ENV, "from-env")
    assert ice_servers_config(serve_args("--ice-server", "turn:t.example.org")).turn_secret == "from-env"
    monkeypatch.delenv(TURN_SECRET_ENV)
    monkeypatch.setenv(TURN_PASSWORD_ENV, "pw")
    fixed = ice_servers_config(serve_args("--ice-server", "turn:t.example.org", "--turn-username", "u"))
    assert fixed.servers_for("p1")[0]["credential"] == "pw"
    # a password left in the environment is no credential without a username
    assert ice_servers_config(serve_args("--ice-server", "stun:s.example.org")).turn_password is None


@pytest.mark.parametrize("extra,words", [
    (["--ice-server", "turn.example.org"], "ICE server 'turn.example.org': use stun:HOST"),
    (["--ice-server", "turn:t.example.org"], "a TURN server needs credentials"),
    (["--ice-server", "stun:s.example.org", "--ice-relay-only"], "relay-only ICE needs a TURN server"),
    (["--turn-secret", "s"], "no turn: or turns: server"),
])
def test_bad_ice_options_are_refused_with_one_line(extra, words, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(TURN_SECRET_ENV, raising=False)
    with pytest.raises(GramcastError, match=words.replace("(", r"\(")):
        ice_servers_config(serve_args(*extra))
    assert main(["serve", "--avatar", str(tmp_path / "missing.gca"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "gramcast serve --help" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra,words", [
    (["--max-sessions", "-1"], "--max-sessions -1: give a number of sessions, or 0 for no limit"),
    (["--max-participants-per-room", "0"], "--max-participants-per-room 0: give at least 1"),
])
def test_bad_limits_are_refused_with_one_line(extra, words, capsys, tmp_path):
    assert main(["serve", "--avatar", str(tmp_path / "missing.gca"), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"gramcast serve: error: {words}"


def test_join_links_carry_the_room_and_a_token_for_it():
    from urllib.parse import parse_qs, urlsplit

    from gramcast.server.cli import join_links
    from gramcast.server.tokens import verify_token

    secret = b"links-secret-0123456789abcdef0123"
    links = join_links("https://avatars.example.org/team/", "design review & co", secret)
    assert [name for name, _ in links] == ["guest1", "guest2"]
    for name, link in links:
        url = urlsplit(link)
        assert (url.scheme, url.netloc, url.path) == ("https", "avatars.example.org", "/team/")
        query = parse_qs(url.query)
        assert query["room"] == ["design review & co"]
        assert verify_token(secret, query["token"][0], room="design review & co").name == name


@pytest.mark.parametrize("url", ["avatars.example.org", "ftp://x.org/", "https://x.org/?room=a"])
def test_a_public_url_that_is_no_page_address_is_refused(url, capsys, tmp_path):
    assert main(["serve", "--avatar", str(tmp_path / "missing.gca"), "--public-url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--public-url {url!r}: give the page's address" in err and len(err.splitlines()) == 1
