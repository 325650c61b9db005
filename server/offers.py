"""A client's SDP offer, checked before aiortc takes it: aiortc asserts its way through SDP (a bad offer came
back as "internal: AssertionError") and answers offers it cannot connect (no ICE credentials, no DTLS
fingerprint), so each of these is a ``bad_sdp`` ProtocolError that says what is missing. The server's own
code that aiortc runs inside ``setRemoteDescription`` (the "track" handlers: avatar pipelines) reports its
failures as ProtocolErrors of their own (``internal``), which pass through unchanged: they are not the offer's
fault."""
from __future__ import annotations

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import CODECS
from aiortc.sdp import SessionDescription

from gramcast.server.protocol import ProtocolError

__all__ = ["set_offer"]


async def set_offer(pc: RTCPeerConnection, sdp: str) -> None:
    """``pc.setRemoteDescription`` of a client's offer, or a ``bad_sdp`` ProtocolError that says what is
    wrong with it. A ProtocolError raised by the server's "track" handlers (which aiortc calls from
    ``setRemoteDescription``) is raised as it is."""
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception:
        raise ProtocolError("bad_sdp", "the offer's SDP cannot be parsed: send the offer a WebRTC peer "
                                       "connection made (createOffer, after ICE gathering)") from None
    if not parsed.media:
        raise ProtocolError("bad_sdp", "the offer's SDP has no media sections (m= lines)")
    for i, media in enumerate(parsed.media):
        if not (media.ice and media.ice.usernameFragment and media.ice.password):
            raise ProtocolError("bad_sdp", f"media section {i} ({media.kind}) of the offer has no ICE credentials "
                                           "(a=ice-ufrag, a=ice-pwd)")
        if not (media.dtls and media.dtls.fingerprints):
            raise ProtocolError("bad_sdp", f"media section {i} ({media.kind}) of the offer has no DTLS "
                                           "fingerprint (a=fingerprint)")
        spoken = {c.mimeType.lower(): c.mimeType for c in CODECS.get(media.kind, []) if not c.mimeType.endswith("rtx")}
        if spoken and not spoken.keys() & {c.mimeType.lower() for c in media.rtp.codecs}:
            raise ProtocolError("bad_sdp", f"media section {i} ({media.kind}) of the offer has no codec in common "
                                           f"with the server (it takes {', '.join(sorted(set(spoken.values())))})")
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    except ProtocolError:
        raise       # the server's own handlers' verdict (e.g. "internal"), not a fault of the offer
    except Exception as exc:
        raise ProtocolError("bad_sdp", f"the offer cannot be used: {exc or type(exc).__name__}") from None
