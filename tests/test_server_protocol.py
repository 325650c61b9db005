"""Signaling messages and room tokens: valid ones pass, every kind of bad one is refused cleanly."""
import random

import msgpack
import pytest

from gramcast.server import protocol, tokens
from gramcast.server.protocol import CLIENT_MESSAGES, ProtocolError

SECRET = b"0123456789abcdef-test-secret-012"


def frame(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_valid_client_messages_decode():
    m = protocol.decode(frame({"v": 1, "type": "join", "token": "t", "room": "r", "preview": True}))
    assert m.type == "join" and m["room"] == "r" and m.get("preview") is True and m.get("avatar") is None
    m = protocol.decode(frame({"v": 1, "type": "ice", "candidate": "c", "sdp_mline_index": 0}))
    assert m["sdp_mline_index"] == 0


def test_server_messages_round_trip():
    data = protocol.encode("joined", participant="p1", room="r", peers=["p2"])
    m = protocol.decode(data, protocol.SERVER_MESSAGES)
    assert m.fields == {"participant": "p1", "room": "r", "peers": ["p2"]}


@pytest.mark.parametrize("obj,code", [
    ({"v": 1, "type": "nope"}, "unknown_type"),
    ({"v": 2, "type": "leave"}, "bad_version"),
    ({"v": True, "type": "leave"}, "bad_version"),
    ({"v": 1.0, "type": "leave"}, "bad_version"),
    ({"type": "leave"}, "bad_version"),
    ({"v": 1}, "missing_type"),
    ({"v": 1, "type": "join", "room": "r"}, "missing_field"),
    ({"v": 1, "type": "join", "token": 5, "room": "r"}, "bad_field"),
    ({"v": 1, "type": "join", "token": "t", "room": "r", "preview": 1}, "bad_field"),
    ({"v": 1, "type": "ice", "candidate": "c", "sdp_mline_index": True}, "bad_field"),
    ({"v": 1, "type": "offer", "sdp": "x" * (protocol.MAX_SIGNALING_BYTES + 1), "sdp_type": "offer"}, "too_large"),
    ([1, 2, 3], "not_a_map"),
])
def test_bad_messages_are_refused_with_a_code(obj, code):
    with pytest.raises(ProtocolError) as err:
        protocol.decode(frame(obj))
    assert err.value.code == code


def test_text_frames_and_garbage_are_refused():
    with pytest.raises(ProtocolError, match="binary"):
        protocol.decode('{"v":1}')
    with pytest.raises(ProtocolError) as err:
        protocol.decode(b"\xc1\xc1\xc1")
    assert err.value.code == "bad_msgpack"


def test_fuzzed_frames_only_ever_raise_protocol_error():
    rng = random.Random(1234)
    types = list(CLIENT_MESSAGES) + ["", "x" * 300, None, 7]
    values = [None, True, 0, -1, 2**40, 1.5, "", "s", b"b", [], [1, [2]], {}, {"a": {"b": 1}}]
    accepted = 0
    for i in range(4000):
        if i % 3 == 0:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        else:
            obj = {"v": rng.choice([1, 1, 1, 0, "1", None]), "type": rng.choice(types)}
            for _ in range(rng.randint(0, 5)):
                obj[rng.choice(["token", "room", "sdp", "sdp_type", "candidate", "image", "zz"])] = rng.choice(values)
            data = frame(obj)
            if i % 7 == 0:
                data = data[: rng.randint(0, len(data))]  # truncated
        try:
            msg = protocol.decode(data)
        except ProtocolError:
            continue
        accepted += 1
        assert msg.type in CLIENT_MESSAGES
        for name, (typ, required) in CLIENT_MESSAGES[msg.type].items():
            assert (name in msg.fields) or not required
            if name in msg.fields:
                assert isinstance(msg.fields[name], typ)
    assert accepted > 0  # the generator does hit valid messages, so the checks above ran


def test_token_round_trip_and_room_binding():
    tok = tokens.mint_token(SECRET, "room-a", "Ada", ttl_s=60, now=1000.0)
    grant = tokens.verify_token(SECRET, tok, room="room-a", now=1030.0)
    assert grant == tokens.RoomGrant("room-a", "Ada", 1060.0)
    with pytest.raises(tokens.TokenError, match="not 'room-b'"):
        tokens.verify_token(SECRET, tok, room="room-b", now=1030.0)


def test_expired_forged_and_malformed_tokens_are_refused():
    tok = tokens.mint_token(SECRET, "r", "n", ttl_s=10, now=0.0)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify_token(SECRET, tok, now=10.0)
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify_token(b"another-secret-of-32-bytes-or-more", tok, now=1.0)
    header, body, sig = tok.split(".")
    tampered = header + "." + body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    with pytest.raises(tokens.TokenError):
        tokens.verify_token(SECRET, tampered, now=1.0)
    for bad in ["", "abc", "a.b.c", None, 12, "x" * 5000, "!!!.???"]:
        with pytest.raises(tokens.TokenError):
            tokens.verify_token(SECRET, bad, now=1.0)


def _jwt(secret: bytes, header: dict, claims: dict) -> str:
    """A JSON Web Token put together by hand (RFC 7515/7519), as another language's JWT library makes one."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}.get(header["alg"])
    sig = b64(hmac.new(secret, signing_input.encode(), digest).digest()) if digest else ""
    return signing_input + "." + sig


def test_a_jwt_from_any_library_is_a_token_and_only_hs256_is_taken():
    claims = {"room": "standup", "name": "Grace", "exp": 2_000_000_000}
    hs256 = _jwt(SECRET, {"alg": "HS256", "typ": "JWT"}, claims)
    assert tokens.verify_token(SECRET, hs256, room="standup", now=1_900_000_000.0) == \
        tokens.RoomGrant("standup", "Grace", 2_000_000_000.0)
    # what mint_token makes reads back with the same standard parts: header, claims, HMAC-SHA256
    import base64
    import json

    import hashlib
    import hmac

    minted = tokens.mint_token(SECRET, "standup", "Ada", ttl_s=60, now=1000.0)
    header, body, sig = minted.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    assert (payload["room"], payload["name"], payload["exp"]) == ("standup", "Ada", 1060.0)
    expected = hmac.new(SECRET, f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "==") == expected
    with pytest.raises(tokens.TokenError, match="another algorithm"):
        tokens.verify_token(SECRET, _jwt(SECRET, {"alg": "HS384", "typ": "JWT"}, claims), now=1.0)
    with pytest.raises(tokens.TokenError):        # unsigned ("none") tokens are never taken
        tokens.verify_token(SECRET, _jwt(SECRET, {"alg": "none", "typ": "JWT"}, claims), now=1.0)
    with pytest.raises(tokens.TokenError, match="lacks the 'room' claim"):
        tokens.verify_token(SECRET, _jwt(SECRET, {"alg": "HS256"}, {"name": "x", "exp": 2_000_000_000}), now=1.0)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify_token(SECRET, hs256, now=2_000_000_000.0)
    # permissions: absent means allowed; false forbids; anything but a boolean is refused
    grant = tokens.verify_token(SECRET, _jwt(SECRET, {"alg": "HS256"}, {**claims, "publish": False}), now=1.0)
    assert (grant.publish, grant.enroll) == (False, True)
    with pytest.raises(tokens.TokenError, match="'enroll' claim must be true or false"):
        tokens.verify_token(SECRET, _jwt(SECRET, {"alg": "HS256"}, {**claims, "enroll": "no"}), now=1.0)
    minted = tokens.verify_token(SECRET, tokens.mint_token(SECRET, "r", "v", publish=False, enroll=False))
    assert (minted.publish, minted.enroll) == (False, False)


def test_short_or_missing_secret_is_refused(monkeypatch):
    with pytest.raises(tokens.TokenError, match="32 bytes"):
        tokens.mint_token(b"s" * 31, "r", "n")
    monkeypatch.delenv(tokens.SECRET_ENV, raising=False)
    with pytest.raises(tokens.TokenError, match="GRAMCAST_SECRET"):
        tokens.load_secret()
    monkeypatch.setenv(tokens.SECRET_ENV, "s" * 32)
    assert tokens.load_secret() == b"s" * 32


def test_token_command_mints_a_token_the_server_accepts(capsys, monkeypatch):
    from gramcast.cli import main

    monkeypatch.setenv(tokens.SECRET_ENV, SECRET.decode())
    assert main(["token", "room-x", "Bob", "--ttl", "120"]) == 0
    tok = capsys.readouterr().out.strip()
    assert tokens.verify_token(SECRET, tok, room="room-x").name == "Bob"
    assert main(["token", "room-x", "Eve", "--watch-only"]) == 0
    watcher = tokens.verify_token(SECRET, capsys.readouterr().out.strip(), room="room-x")
    assert (watcher.publish, watcher.enroll) == (False, False)
    assert main(["token", "room-x", "Zoe", "--no-selfie"]) == 0
    guest = tokens.verify_token(SECRET, capsys.readouterr().out.strip(), room="room-x")
    assert (guest.publish, guest.enroll) == (True, False)
    monkeypatch.delenv(tokens.SECRET_ENV)
    assert main(["token", "room-x", "Bob"]) == 2
    assert "GRAMCAST_SECRET" in capsys.readouterr().err


def test_the_enroll_message_offers_the_face_choices_enrollment_has():
    from gramcast.face.alignment import FACE_CHOICES
    from gramcast.server.protocol import ENROLL_FACES

    assert ENROLL_FACES == FACE_CHOICES


def test_the_package_names_its_api_and_loads_it_on_first_use():
    import subprocess
    import sys

    import gramcast.server as server_pkg
    from gramcast.server.app import GramcastServer
    from gramcast.server.ice_servers import IceServersConfig

    assert server_pkg.GramcastServer is GramcastServer and server_pkg.IceServersConfig is IceServersConfig
    assert server_pkg.mint_token is tokens.mint_token
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        server_pkg.Nothing
    # importing the package alone loads no WebRTC stack
    code = "import sys, gramcast.server; print('aiortc' in sys.modules, 'websockets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == \
        ["False", "False"]
