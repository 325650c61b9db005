"""The signaling protocol: msgpack maps over a websocket, one message per binary frame.

Every message is a map with ``"v"`` (``PROTOCOL_VERSION``) and ``"type"``; the other fields depend on
the type and are listed in ``CLIENT_MESSAGES`` / ``SERVER_MESSAGES`` (name -> (type, required)).
This table is the single description of the protocol: the server validates against it, the web
client and the docs follow it.

Client -> server
  join    {token, room, avatar?, preview?}  enter a room; ``avatar`` names a .gca the server has
  enroll  {image, face?}                    JPEG/PNG/WebP/HEIC selfie bytes; the server enrolls and uses it. ``face``
                                            (ENROLL_FACES; default "only"): which face of a selfie that
                                            shows several of similar size ("only" refuses it). The
                                            avatar is this participant's alone; error "enroll_failed"
                                            says what to change in the selfie, "enroll_busy" to retry
                                            later (selfies are enrolled one at a time per server)
  avatar  {file}                             the bytes of a .gca file this participant was given in an
                                            earlier ``enrolled`` (its own avatar, kept by the app): use it
                                            again without a new selfie; "bad_avatar" says what is wrong
  offer   {sdp, sdp_type, target?}          an SDP offer (ICE gathered, no trickle). Without ``target``
                                            it publishes camera + mic (and receives the own preview);
                                            with ``target`` = a participant id it subscribes to that
                                            participant's avatar video + audio (one connection each)
  ice     {candidate, sdp_mid?, sdp_mline_index?}  a late ICE candidate (optional)
  stats   {}                                ask for this session's stats
  leave   {}                                leave the room and close
Server -> client
  joined  {participant, room, peers, ice_servers?, ice_transport_policy?, may_publish?, may_enroll?}
                                            accepted; ``peers`` lists the others as maps
                                            {participant, name, publishing}; ``ice_servers``: the
                                            STUN/TURN servers to give every peer connection, as WebRTC
                                            RTCIceServer maps {urls, username?, credential?} (none: use
                                            none); ``ice_transport_policy``: "all" (default) or "relay";
                                            ``may_publish`` / ``may_enroll`` false: the token is for
                                            watching / for no selfies (error "not_allowed" otherwise)
  answer  {sdp, sdp_type, target?}          the server's SDP answer to the offer with that target
  peer    {event, participant, name}        event = "joined" | "publishing" | "left"; subscribe to a
                                            participant once it is "publishing"
  stats   {stats}                           session statistics (a map of numbers)
  enrolled {avatar, warnings?, file?}       the selfie (or ``avatar`` file) is now this session's avatar;
                                            ``warnings``: what would make a better one (a turned head);
                                            ``file``: a new avatar's .gca bytes, for the app to keep and
                                            send back in ``avatar`` next time (enroll once)
  error   {code, message, fatal}            what went wrong; ``fatal`` closes the connection. Codes a
                                            client acts on: "join_refused" (fatal: a bad token, a full
                                            room; joining again will not help), "draining" / "shutting_down"
                                            (the server stops: join again in a moment, the websocket is
                                            closed with 1013 / 1001), "server_full", "no_video", "bad_sdp"
                                            (the publish offer refused; the server keeps no place for it)
  place_free {}                             a place to publish has freed: sent to the participants whose
                                            camera a full server refused ("server_full") and who have not
                                            published since; offer the camera again (the first offer to
                                            arrive gets it, the others are refused again and told again)

A client ignores server message types it does not know (a newer server may send more).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
#: Largest selfie (``enroll``) and avatar file (``avatar``, ``enrolled``; a 24-layer avatar is ~14 MB).
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_AVATAR_BYTES = 16 * 1024 * 1024
#: Largest message either side accepts; messages other than those are far smaller.
MAX_MESSAGE_BYTES = MAX_AVATAR_BYTES + 64 * 1024
MAX_SIGNALING_BYTES = 64 * 1024
#: Per message type, the largest string or bytes field (others: MAX_SIGNALING_BYTES).
FIELD_LIMITS = {"enroll": MAX_IMAGE_BYTES, "avatar": MAX_AVATAR_BYTES, "enrolled": MAX_AVATAR_BYTES}
#: The values of ``enroll``'s ``face`` (``gramcast.enroll``'s ``face``).
ENROLL_FACES = ("only", "largest", "center")

_STR, _BYTES, _BOOL, _INT, _MAP, _LIST = str, bytes, bool, int, dict, list

# name -> {field: (python type, required)}
CLIENT_MESSAGES: dict[str, dict[str, tuple[type, bool]]] = {
    "join": {"token": (_STR, True), "room": (_STR, True), "avatar": (_STR, False), "preview": (_BOOL, False)},
    "enroll": {"image": (_BYTES, True), "face": (_STR, False)},
    "avatar": {"file": (_BYTES, True)},
    "offer": {"sdp": (_STR, True), "sdp_type": (_STR, True), "target": (_STR, False)},
    "ice": {"candidate": (_STR, True), "sdp_mid": (_STR, False), "sdp_mline_index": (_INT, False)},
    "stats": {},
    "leave": {},
}
SERVER_MESSAGES: dict[str, dict[str, tuple[type, bool]]] = {
    "joined": {"participant": (_STR, True), "room": (_STR, True), "peers": (_LIST, True),
               "ice_servers": (_LIST, False), "ice_transport_policy": (_STR, False),
               "may_publish": (_BOOL, False), "may_enroll": (_BOOL, False)},
    "answer": {"sdp": (_STR, True), "sdp_type": (_STR, True), "target": (_STR, False)},
    "peer": {"event": (_STR, True), "participant": (_STR, True), "name": (_STR, True)},
    "stats": {"stats": (_MAP, True)},
    "enrolled": {"avatar": (_STR, True), "warnings": (_LIST, False), "file": (_BYTES, False)},
    "error": {"code": (_STR, True), "message": (_STR, True), "fatal": (_BOOL, True)},
    "place_free": {},
}


class ProtocolError(Exception):
    """A message that breaks the protocol. ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Message:
    type: str
    fields: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _validate(kind: str, fields: dict, table: dict) -> Message:
    schema = table.get(kind)
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected one of {sorted(table)}")
    clean: dict[str, Any] = {}
    for name, (typ, required) in schema.items():
        if name not in fields:
            if required:
                raise ProtocolError("missing_field", f"{kind!r} needs field {name!r}")
            continue
        value = fields[name]
        # bool is an int subclass: keep the two apart so {"preview": 1} is refused.
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ProtocolError("bad_field", f"{kind!r} field {name!r} must be {typ.__name__}")
        clean[name] = value
    limit = FIELD_LIMITS.get(kind, MAX_SIGNALING_BYTES)
    for name, value in clean.items():
        if isinstance(value, (str, bytes)) and len(value) > limit:
            raise ProtocolError("too_large", f"{kind!r} field {name!r} exceeds {limit} bytes")
    return Message(kind, clean)


def decode(data: object, table: dict = CLIENT_MESSAGES) -> Message:
    """Parse and validate one frame. Raises ProtocolError for anything that is not a valid message."""
    if isinstance(data, str):
        raise ProtocolError("not_binary", "signaling frames are binary msgpack, not text")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("not_binary", "signaling frames are binary msgpack")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True,
                              max_bin_len=MAX_MESSAGE_BYTES, max_str_len=MAX_MESSAGE_BYTES,
                              max_array_len=1024, max_map_len=64, max_ext_len=0)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError("bad_msgpack", f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_a_map", "a message is a msgpack map")
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:   # not True, not 1.0
        raise ProtocolError("bad_version", f"protocol version {version!r} is not supported; this server speaks v{PROTOCOL_VERSION}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing_type", "a message needs a string 'type'")
    fields = {k: v for k, v in obj.items() if k not in ("v", "type")}
    return _validate(kind, fields, table)


def encode(kind: str, table: dict = SERVER_MESSAGES, **fields: Any) -> bytes:
    """Build one validated frame of ``kind``."""
    msg = _validate(kind, fields, table)
    return msgpack.packb({"v": PROTOCOL_VERSION, "type": msg.type, **msg.fields}, use_bin_type=True)


def error_frame(code: str, message: str, fatal: bool = False) -> bytes:
    return encode("error", code=code, message=message, fatal=fatal)
