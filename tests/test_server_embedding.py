"""Embedding the server through its Python API: a ServerConfig refuses what no server can use, run_until_signal
leaves the app's signal handlers and stdout as it found them, a server restarts, its URL opens."""
from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
from pathlib import Path

import pytest

from gramcast.errors import InvalidArgumentError
from gramcast.server.app import GramcastServer, ServerConfig
from gramcast.server.synthetic import PassThroughPipeline
from servers import running_server

SECRET = b"embedding-test-secret-0123456789"


def config(**kw) -> ServerConfig:
    return ServerConfig(**{"port": 0, "secret": SECRET, "pipeline_factory": PassThroughPipeline, **kw})


# ------------------------------------------------------------ 1. ServerConfig
@pytest.mark.parametrize("field, value", [
    ("port", -1), ("port", 70000), ("port", "0"), ("port", 1.5), ("port", True), ("host", 123),
    ("max_participants_per_room", 0), ("max_connections", 0), ("max_errors_per_connection", -1),
    ("max_concurrent_enrollments", 2.5), ("max_sessions", 0),
    ("join_timeout_s", 0), ("join_timeout_s", math.nan), ("enroll_wait_s", -5), ("drain_s", math.inf),
    ("ice_servers", ["stun:stun.example.org"]), ("ice_addresses", "127.0.0.1"), ("pipeline_factory", "x"),
    ("enroll_fn", 3), ("session", "720p"), ("avatar_limits", None), ("metrics", "no"),
    ("return_avatar_files", 1), ("static_dir", Path("/nonexistent-gramcast-static")), ("static_dir", 3),
])
def test_a_config_no_server_could_use_is_refused_naming_the_field(field, value):
    with pytest.raises(InvalidArgumentError, match=field):
        ServerConfig(secret=SECRET, **{field: value})


def test_the_list_of_ice_urls_mistake_says_what_to_write():
    with pytest.raises(InvalidArgumentError, match=r"IceServersConfig\(urls="):
        ServerConfig(ice_servers=["stun:stun.example.org"])


def test_defaults_and_edge_values_are_accepted_and_a_static_dir_str_becomes_a_path(tmp_path):
    ServerConfig()
    cfg = ServerConfig(port=65535, max_sessions=None, drain_s=0, enroll_wait_s=0, static_dir=str(tmp_path))
    assert cfg.static_dir == tmp_path


# ------------------------------------------------------------ 2. run_until_signal
async def test_run_until_signal_logs_instead_of_printing_and_gives_the_apps_handlers_back(capsys, caplog):
    loop = asyncio.get_running_loop()
    app_got = []
    loop.add_signal_handler(signal.SIGTERM, lambda: app_got.append("SIGTERM"))
    try:
        server = GramcastServer({"a": object()}, config())
        await server.start()
        with caplog.at_level(logging.INFO, logger="gramcast.server.app"):
            task = asyncio.create_task(server.run_until_signal())
            await asyncio.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)   # the server's: it stops
            await asyncio.wait_for(task, 5)
        assert app_got == []
        assert capsys.readouterr().out == ""
        assert any("shutting down" in r.getMessage() for r in caplog.records)
        assert any(server.url in r.getMessage() for r in caplog.records)
        os.kill(os.getpid(), signal.SIGTERM)       # the app's again
        await asyncio.sleep(0.1)
        assert app_got == ["SIGTERM"]
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def test_run_until_signal_puts_back_the_python_handlers_and_prints_when_asked(capsys):
    sigint_before, sigterm_before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    server = GramcastServer({"a": object()}, config())
    await server.start()
    task = asyncio.create_task(server.run_until_signal(print_status=True))
    await asyncio.sleep(0.1)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(task, 5)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (sigint_before, sigterm_before)
    out = capsys.readouterr().out
    assert f"gramcast server: open {server.url}" in out and "gramcast server: shutting down" in out


# ------------------------------------------------------------ 3. start / stop
async def test_a_stopped_server_starts_again_and_enrolls():
    server = GramcastServer({"a": object()}, config(enroll_fn=lambda image, face: ("avatar", image)))
    await server.start()
    await server.stop()
    await server.start()
    try:
        assert await server._enroll(b"jpeg", "only") == ("avatar", b"jpeg")
    finally:
        await server.stop()


async def test_starting_a_started_server_is_refused():
    async with running_server(SECRET) as (server, _):
        with pytest.raises(RuntimeError, match="already started"):
            await server.start()


async def test_servers_sharing_a_port_0_config_each_listen_on_their_own_port_and_leave_it_at_0():
    shared = config()
    a, b = GramcastServer({"a": object()}, shared), GramcastServer({"a": object()}, shared)
    await a.start()
    try:
        await b.start()
        try:
            assert shared.port == 0
            assert a.port and b.port and a.port != b.port
            assert a.url == f"http://127.0.0.1:{a.port}/" and b.url == f"http://127.0.0.1:{b.port}/"
        finally:
            await b.stop()
    finally:
        await a.stop()


# ------------------------------------------------------------ 4. url
@pytest.mark.parametrize("host, url", [
    ("::1", "http://[::1]:8765/"), ("::", "http://[::1]:8765/"), ("fe80::1", "http://[fe80::1]:8765/"),
    ("", "http://127.0.0.1:8765/"), ("0.0.0.0", "http://127.0.0.1:8765/"), ("example.org", "http://example.org:8765/"),
])
def test_the_url_is_one_a_browser_on_this_machine_can_open(host, url):
    assert GramcastServer({"a": object()}, config(host=host, port=8765)).url == url


# ------------------------------------------------------------ 5. avatars
@pytest.mark.parametrize("avatars, message", [
    ({"me": "me.gca"}, "gramcast.Avatar"), ({"": object()}, "names"), ({1: object()}, "names"), ({}, "at least one"),
])
def test_avatars_the_server_could_not_use_are_refused_at_once(avatars, message):
    factory = None if "me" in avatars else PassThroughPipeline
    with pytest.raises(InvalidArgumentError, match=message):
        GramcastServer(avatars, config(pipeline_factory=factory))


def test_a_pipeline_factory_takes_whatever_avatars_it_was_written_for():
    GramcastServer({"me": "me.gca"}, config())


# ------------------------------------------------------------ avatars at run time
async def test_avatars_are_added_and_removed_while_the_server_runs():
    import numpy as np

    from gramcast.server.client import GramcastClient, ServerError
    from gramcast.server.synthetic import ArrayVideoTrack
    from gramcast.server.tokens import mint_token

    def camera():
        return ArrayVideoTrack([np.full((48, 64, 3), 90, np.uint8)] * 2)

    async with running_server(SECRET, {"first": object()}) as (server, ws):
        server.add_avatar("second", object())                    # the copy of the dict had been the only way in
        async with GramcastClient(ws, mint_token(SECRET, "r", "a"), "r", avatar="second") as a:
            await a.publish(camera())
        async with GramcastClient(ws, mint_token(SECRET, "r", "b"), "r", avatar="second") as b:
            server.remove_avatar("second")                       # between b's join and its camera
            with pytest.raises(ServerError) as refused:
                await b.publish(camera())
            assert refused.value.code == "unknown_avatar" and "join again with one of ['first']" in str(refused.value)
        with pytest.raises(InvalidArgumentError, match="is the default avatar"):
            server.remove_avatar("first")
        server.add_avatar("third", object(), default=True)
        server.remove_avatar("first")
        async with GramcastClient(ws, mint_token(SECRET, "r", "c"), "r") as c:   # names none: the new default
            await c.publish(camera())
            assert server.connections[c.participant].participant.avatar_name == "third"
        with pytest.raises(InvalidArgumentError, match="no avatar 'first'"):
            server.remove_avatar("first")
