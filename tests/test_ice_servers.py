"""STUN/TURN configuration: checked when given, handed to every client in ``joined``, and media really
relayed through a TURN server (coturn on 127.0.0.1, the shared-secret credentials the server makes)."""
from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection

from gramcast.server import ice
from gramcast.server.client import GramcastClient
from gramcast.server.ice_servers import IceServersConfig, rtc_configuration, turn_rest_credentials
from gramcast.server.tokens import mint_token
from browser import publish_red
from servers import running_server
from turn import coturn

SECRET = b"ice-servers-test-secret-0123456789"
TURN_SECRET = "turn-shared-secret-for-tests"


@pytest.mark.parametrize("kwargs,words", [
    (dict(urls=("http://turn.example.org",)), "use stun:HOST"),
    (dict(urls=("turn:turn.example.org:3478?transport=sctp",)), "transport is udp or tcp"),
    (dict(urls=("stuns:stun.example.org",)), "stuns: is not supported"),
    (dict(urls=("turn:turn.example.org",)), "needs credentials"),
    (dict(urls=("turn:t.example.org",), turn_username="u"), "both a username and a password"),
    (dict(urls=("turn:t.example.org",), turn_username="u", turn_password="p", turn_secret="s"), "not both"),
    (dict(urls=("stun:stun.example.org",), turn_secret="s"), "no turn: or turns: server"),
    (dict(urls=("stun:stun.example.org",), relay_only=True), "relay-only ICE needs a TURN server"),
    (dict(urls=("turn:t.example.org",), turn_secret="s", turn_ttl_s=0), "positive lifetime"),
])
def test_a_bad_configuration_says_what_is_wrong(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        IceServersConfig(**kwargs)


def test_servers_for_a_participant():
    assert IceServersConfig().servers_for("p1") == []
    stun = IceServersConfig(urls=("stun:stun.example.org:3478",))
    assert stun.servers_for("p1") == [{"urls": ["stun:stun.example.org:3478"]}] and stun.transport_policy == "all"
    fixed = IceServersConfig(urls=("stun:s.example.org", "turn:t.example.org", "turns:t.example.org:443"),
                             turn_username="u", turn_password="p", relay_only=True)
    assert fixed.servers_for("p1") == [{"urls": ["stun:s.example.org"]},
                                       {"urls": ["turn:t.example.org", "turns:t.example.org:443"],
                                        "username": "u", "credential": "p"}]
    assert fixed.transport_policy == "relay"
    shared = IceServersConfig(urls=("turn:t.example.org",), turn_secret="s", turn_ttl_s=600)
    (server,) = shared.servers_for("p7-abc", now=1_000_000.0)
    assert server["username"] == "1000600:p7-abc"
    assert shared.servers_for("p8-def", now=1_000_000.0)[0]["credential"] != server["credential"]
    cfg = shared.rtc_configuration()
    assert cfg.iceServers[0].username.endswith(":gramcast-server") and cfg.iceTransportPolicy.value == "all"


async def gathered_candidate_types(servers, policy="relay") -> list[str]:
    """The types of the candidates aiortc puts in an offer with these ICE servers."""
    pc = RTCPeerConnection(rtc_configuration(servers, policy))
    pc.addTransceiver("video", direction="recvonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        return re.findall(r"typ (\w+)", pc.localDescription.sdp)
    finally:
        await ice.close_peer_connection(pc)


async def test_the_turn_server_accepts_the_credentials_only_with_its_secret_and_before_they_expire(tmp_path):
    ice.set_host_addresses(["127.0.0.1"])
    try:
        with coturn(TURN_SECRET, tmp_path) as (url, _):
            def servers(secret, ttl):
                user, password = turn_rest_credentials(secret, "p1-test", ttl)
                return [{"urls": [url], "username": user, "credential": password}]

            assert await gathered_candidate_types(servers(TURN_SECRET, 600)) == ["relay"]
            assert await gathered_candidate_types(servers("another-secret", 600)) == []
            assert await gathered_candidate_types(servers(TURN_SECRET, -60)) == []   # expired a minute ago
            # Without relay-only, the same server also answers as STUN and the host address stays.
            assert sorted(set(await gathered_candidate_types(servers(TURN_SECRET, 600), "all"))) == ["host", "relay"]
    finally:
        ice.set_host_addresses(None)


def candidate_types(sdp: str) -> set[str]:
    return set(re.findall(r"typ (\w+)", sdp))


async def test_a_call_relayed_through_the_turn_server_end_to_end(tmp_path):
    """Relay-only: the server and both clients have no path but the TURN server, so the frames that arrive
    came through it, with credentials the server made for each of them."""
    with coturn(TURN_SECRET, tmp_path) as (url, _):
        servers = IceServersConfig(urls=(url,), turn_secret=TURN_SECRET, relay_only=True)
        async with running_server(SECRET, ice_servers=servers) as (server, ws):
            async with GramcastClient(ws, mint_token(SECRET, "relay", "a"), "relay") as a, \
                       GramcastClient(ws, mint_token(SECRET, "relay", "b"), "relay") as b:
                for client in (a, b):
                    assert client.ice_transport_policy == "relay"
                    (turn,) = client.ice_servers
                    assert turn["urls"] == [url] and turn["username"].endswith(":" + client.participant)
                await publish_red(a)
                video, audio = await b.subscribe(await b.wait_for_peer(), timeout=20)
                assert video is not None and audio is not None
                for _ in range(5):
                    frame = await asyncio.wait_for(video.recv(), 20)
                mean = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(0)
                assert mean[0] > 150 and mean[1] < 100, mean
                for client in (a, b):
                    for pc in client.pcs.values():
                        assert candidate_types(pc.localDescription.sdp) == {"relay"}
                        assert candidate_types(pc.remoteDescription.sdp) == {"relay"}   # the server's answer


LOCAL_CANDIDATE_TYPES_JS = """async (pid) => {
  const pcs = pid === null ? [window.gramcast.publishPc] : [window.gramcast.subscriptions.get(pid).pc];
  const types = [];
  for (const pc of pcs) {
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.state === "succeeded" && s.nominated)
        types.push(report.get(s.localCandidateId).candidateType, report.get(s.remoteCandidateId).candidateType);
    });
  }
  return types;
}"""


async def test_the_web_client_takes_the_servers_turn_relay(tmp_path):
    """The page has no ICE configuration of its own: it relays through the TURN server the server names."""
    from browser import chromium_page, green_camera_file, join_link, server_with_publisher

    cam = green_camera_file(tmp_path)
    with coturn(TURN_SECRET, tmp_path) as (url, _):
        servers = IceServersConfig(urls=(url,), turn_secret=TURN_SECRET, relay_only=True)
        async with server_with_publisher(SECRET, ice_servers=servers) as (server, py):
            async with chromium_page(cam) as page:
                await page.goto(join_link(server, SECRET))
                await page.wait_for_function(
                    f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10", timeout=30000)
                assert await page.evaluate("window.gramcast.ice.iceTransportPolicy") == "relay"
                assert set(await page.evaluate(LOCAL_CANDIDATE_TYPES_JS, None)) == {"relay"}
                assert set(await page.evaluate(LOCAL_CANDIDATE_TYPES_JS, py.participant)) == {"relay"}


async def test_a_stun_server_gives_the_server_and_its_clients_their_reflexive_addresses(tmp_path):
    """What a server behind NAT needs: the STUN server's answer (here coturn's, on loopback: the same address)
    is offered as a server-reflexive candidate by the server and by every client it hands the server to."""
    with coturn(TURN_SECRET, tmp_path) as (url, _):
        stun = url.replace("turn:", "stun:")
        async with running_server(SECRET, ice_servers=IceServersConfig(urls=(stun,))) as (server, ws):
            async with GramcastClient(ws, mint_token(SECRET, "stun", "a"), "stun") as a:
                assert a.ice_servers == [{"urls": [stun]}] and a.ice_transport_policy == "all"
                await publish_red(a)
                pc = a.pcs[None]
                assert candidate_types(pc.localDescription.sdp) == {"host", "srflx"}
                assert candidate_types(pc.remoteDescription.sdp) == {"host", "srflx"}   # the server's answer


def test_ice_check_reports_what_each_server_answers(tmp_path, capsys):
    """`gramcast ice-check` against a real coturn: working STUN and TURN, a wrong secret, a dead port."""
    from gramcast.cli import main
    from turn import free_udp_port

    with coturn(TURN_SECRET, tmp_path) as (url, _):
        stun = url.replace("turn:", "stun:")
        assert main(["ice-check", "--ice-server", stun, "--ice-server", url, "--turn-secret", TURN_SECRET]) == 0
        out = capsys.readouterr().out.splitlines()
        assert re.fullmatch(rf"{re.escape(stun)}\s+ok: sees this machine as 127\.0\.0\.1:\d+", out[0]), out
        assert re.fullmatch(rf"{re.escape(url)}\s+ok: relays at 127\.0\.0\.1:\d+", out[1]), out

        assert main(["ice-check", "--ice-server", url, "--turn-secret", "not-its-secret"]) == 1
        out = capsys.readouterr().out
        assert "FAILED: the server refused the credentials (401" in out and "--turn-secret" in out, out

        dead = f"stun:127.0.0.1:{free_udp_port()}"
        assert main(["ice-check", "--ice-server", dead, "--ice-server", stun, "--timeout", "1"]) == 1
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(dead) and ("FAILED: no answer within 1 s" in out[0]
                                            or "FAILED: connection refused" in out[0]), out
        assert " ok: " in out[1]
    assert main(["ice-check"]) == 2
    assert "name the servers to check" in capsys.readouterr().err
