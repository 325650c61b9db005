"""What an embedding app meets first: minting tokens with the secret as its environment holds it (a str),
arguments ``mint_token`` refuses instead of minting a token the server would misread or refuse, a failure of
the server's own avatar pipeline told to the client as the server's ("internal", logged with its traceback)
and not as a bad offer, and a ``GramcastClient`` whose join is refused closing its connection."""
from __future__ import annotations

import asyncio
import logging
import math
import secrets

import numpy as np
import pytest

from gramcast.server.client import GramcastClient, ServerError
from gramcast.server.synthetic import ArrayVideoTrack, PassThroughPipeline
from gramcast.server.tokens import MAX_TOKEN_CHARS, TokenError, load_secret, mint_token, verify_token
from servers import running_server

SECRET = b"tokens-errors-secret-0123456789ab"


def camera():
    return ArrayVideoTrack([np.full((48, 64, 3), 120, np.uint8)] * 4)


# ---------------------------------------------------------------- item 1: a str secret
def test_a_str_secret_mints_what_the_server_loading_the_same_str_verifies():
    text = secrets.token_urlsafe(32)                 # what os.environ["GRAMCAST_SECRET"] gives a backend
    token = mint_token(text, "standup", "ada")
    server_key = load_secret(text)                   # how the server takes the same value
    assert verify_token(server_key, token, room="standup").name == "ada"
    assert verify_token(text, mint_token(server_key, "standup", "bo"), room="standup").name == "bo"
    # a non-ASCII str counts its UTF-8 bytes, as the server's own loading does
    assert verify_token(load_secret("é" * 16), mint_token("é" * 16, "r", "a"), room="r").room == "r"


def test_a_short_secret_is_refused_counting_its_bytes():
    with pytest.raises(TokenError, match=r"at least 32 bytes .*not 31"):
        mint_token("x" * 31, "r", "a")
    with pytest.raises(TokenError, match=r"at least 32 bytes .*not 5"):
        verify_token(b"short", "a.b.c")
    with pytest.raises(TokenError, match="str or bytes, not int"):
        mint_token(12345, "r", "a")


# ---------------------------------------------------------------- item 2: mint_token's arguments
@pytest.mark.parametrize("ttl_s", [math.nan, math.inf, -math.inf, "3600", None, True])
def test_a_lifetime_that_is_not_a_finite_number_is_refused(ttl_s):
    with pytest.raises(TokenError, match="ttl_s must be a finite number of seconds"):
        mint_token(SECRET, "r", "a", ttl_s=ttl_s)


@pytest.mark.parametrize("field", ["room", "name"])
@pytest.mark.parametrize("value", [123, ["x"], b"x", None])
def test_a_room_or_name_that_is_not_a_str_is_refused(field, value):
    args = {"room": "r", "name": "a", field: value}
    with pytest.raises(TokenError, match=f"{field} must be a str, not {type(value).__name__}"):
        mint_token(SECRET, args["room"], args["name"])


@pytest.mark.parametrize("field", ["publish", "enroll"])
@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_a_grant_that_is_not_a_bool_is_refused(field, value):
    with pytest.raises(TokenError, match=f"{field} must be True or False"):
        mint_token(SECRET, "r", "a", **{field: value})
    assert verify_token(SECRET, mint_token(SECRET, "r", "a", **{field: False}), room="r").__dict__[field] is False


@pytest.mark.parametrize("char", ["a", "Ж", "🙂"])
def test_a_name_too_long_for_the_server_is_refused_saying_how_long_fits(char):
    with pytest.raises(TokenError) as info:
        mint_token(SECRET, "standup", char * 1800)
    message = str(info.value)
    assert f"at most {MAX_TOKEN_CHARS}" in message
    fits = int(message.split("together may be at most ")[1].split()[0])
    # the longest said to fit does fit, and is accepted by the server's check; one more does not
    name = "a" * (fits - len("standup"))
    for _ in range(20):      # whatever the expiry's digits
        assert verify_token(SECRET, mint_token(SECRET, "standup", name), room="standup").name == name
    with pytest.raises(TokenError, match="too long"):   # the margin for the expiry's digits is 6 at most
        mint_token(SECRET, "standup", name + "a" * 9)


# ---------------------------------------------------------------- item 3: the server's own failures
async def test_a_pipeline_that_fails_is_an_internal_error_logged_with_its_traceback(caplog):
    caplog.set_level(logging.INFO, logger="gramcast.server.signaling")
    failures = [RuntimeError("CUDA out of memory")]

    def factory(avatar):
        if failures:
            raise failures.pop()
        return PassThroughPipeline(avatar)

    async with running_server(SECRET, pipeline_factory=factory, max_sessions=1) as (server, ws):
        async with GramcastClient(ws, mint_token(SECRET, "r", "ada"), "r") as client:
            with pytest.raises(ServerError) as info:
                await asyncio.wait_for(client.publish(camera()), 15)
            assert info.value.code == "internal"
            assert "could not start this participant's avatar" in str(info.value)
            assert "CUDA out of memory" in str(info.value) and "try again later" in str(info.value)
            errors = [r for r in caplog.records if r.levelno == logging.ERROR and "CUDA out of memory" in r.getMessage()]
            assert errors and errors[0].exc_info is not None
            # the refused camera freed its place (max_sessions=1): the next try gets it
            await asyncio.wait_for(client.publish(camera()), 15)
            assert sum(c.publish_pc is not None for c in server.connections.values()) == 1


async def test_an_offer_the_server_cannot_use_is_still_bad_sdp():
    async with running_server(SECRET) as (server, ws):
        async with GramcastClient(ws, mint_token(SECRET, "r", "ada"), "r") as client:
            fut = client._expect("error")
            await client.send("offer", sdp="v=0\r\nnot sdp", sdp_type="offer")
            with pytest.raises(ServerError) as info:
                await asyncio.wait_for(fut, 10)
            assert info.value.code == "bad_sdp"


# ---------------------------------------------------------------- item 4: a refused join
@pytest.mark.parametrize("refusal", ["unknown avatar", "expired token"])
async def test_a_refused_join_closes_the_clients_connection(refusal):
    async with running_server(SECRET, join_timeout_s=30) as (server, ws):
        token = mint_token(SECRET, "r", "a", now=0 if refusal == "expired token" else None)
        client = GramcastClient(ws, token, "r", avatar="nobody" if refusal == "unknown avatar" else None)
        with pytest.raises(ServerError):
            async with client:
                pass
        assert client._reader.done()
        for _ in range(40):      # the server sees the close at once, not after join_timeout_s
            if not server._open:
                break
            await asyncio.sleep(0.05)
        assert not server._open
