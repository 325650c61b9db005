"""ICE (aioice) settings, and workarounds for aioice/aiortc leaks, applied from our code.

Close every RTCPeerConnection with ``close_peer_connection``; ``fix_consent_after_close`` is
installed when gramcast.server.signaling or gramcast.server.client is imported.

Host addresses
    aioice never offers 127.0.0.1. On a machine whose only interface is loopback (a test sandbox, a
    container without a network) that leaves no candidate at all, and tests must not send traffic to
    any non-loopback address. ``set_host_addresses`` pins the list for the whole process.

Consent task started after close (aioice 0.13.0 bug, ``fix_consent_after_close``)
    ``aioice.ice.Connection.connect()`` (aioice/ice.py, lines 641-657 in 0.13.0) waits on
    ``self._check_list_state.get()`` and, on ICE_COMPLETED, starts the consent-freshness task
    (``self._query_consent_task = asyncio.create_task(self.query_consent())``) without checking
    whether ``close()`` ran meanwhile. ``Connection.close()`` (lines 659-677) cancels only a consent
    task that already exists, and wakes ``connect()`` with ICE_FAILED only when the check list is not
    done yet. So when a peer connection is closed after the check list completed but before
    ``connect()`` resumed (it sleeps up to 20 ms in its check loop, longer on a busy event loop), e.g.
    a participant leaving right after negotiating, ``connect()`` then starts ``query_consent()`` on the
    closed connection. ``close()`` has emptied ``_nominated``, so that loop never sends a request,
    never counts a failure and never ends: one task (and the Connection it holds) per such close,
    on the answering server (ICE-controlled) and on the offering client (ICE-controlling) alike.
    Upstream's source has the same shape (github.com/aiortc/aioice, src/aioice/ice.py,
    ``Connection.connect`` / ``Connection.close``, as of commit 026c531).

    The workaround wraps ``Connection.connect``: when it returns on a connection whose ``close()``
    has begun, it cancels and awaits the consent task it just started and raises ConnectionError
    ("ICE negotiation failed"), as connect() does when close() wins the race earlier. aiortc's
    ``RTCIceTransport.start`` already handles that error. Idempotent; ``undo_consent_fix`` restores.

Received tracks that never end (aiortc 1.16.0 gap, ``end_remote_tracks``)
    A received ``RemoteStreamTrack`` ends only when its receiver's decoder thread puts ``None`` in
    the track's queue (aiortc/rtcrtpreceiver.py, ``decoder_worker``, line 67). That thread is started
    by ``RTCRtpReceiver.receive()`` (line 406), which ``RTCPeerConnection.__connect`` calls only once
    DTLS is connected; ``RTCRtpReceiver.stop()`` (line 425) does nothing for a receiver never started.
    So a peer connection closed during ICE or DTLS leaves its received tracks "live" for ever, and
    whatever awaits their ``recv()`` (a MediaRelay worker, an audio drain, an application) waits for
    ever, holding the track and the relay's entries. ``end_remote_tracks(pc)``, called after
    ``pc.close()``, ends them the way the decoder thread would.

Senders and receivers started during close (aiortc 1.16.0 race, ``close_peer_connection``)
    ``RTCPeerConnection.__connect`` (aiortc/rtcpeerconnection.py, lines 1085-1093) starts each
    transceiver's sender and receiver as soon as ``await dtlsTransport.start()`` returns with DTLS
    connected, without checking whether the connection was closed meanwhile. ``close()`` (lines
    523-535) stops the transceivers first (a no-op for a sender or receiver not started yet) and
    only then the DTLS and ICE transports, awaiting at every step. A DTLS handshake that completes
    during those awaits therefore starts senders and receivers that nothing stops any more:
    ``RTCRtpSender._run_rtcp`` and ``RTCRtpReceiver._run_rtcp`` loop for ever (their ``_send_rtcp``
    swallows the ConnectionError of the closed transport) and the receiver's decoder thread waits
    for ever. Once ``close()`` has returned DTLS can no longer connect, so stopping every sender
    and receiver again then (``stop()`` is idempotent) ends whatever the race started. Upstream's
    ``__connect`` has the same shape (github.com/aiortc/aiortc, src/aiortc/rtcpeerconnection.py).
    The same race makes aiortc's own ``__connect`` task end with InvalidStateError ("Task exception
    was never retrieved" in the log) when a connection closes during its DTLS handshake: finished,
    not a leak.
"""
from __future__ import annotations

import asyncio

import aioice.ice
from aiortc.rtcrtpreceiver import RemoteStreamTrack

_original = aioice.ice.get_host_addresses
_original_connect = aioice.ice.Connection.connect
LOOPBACK = ["127.0.0.1"]


def set_host_addresses(addresses: list[str] | None) -> None:
    """Offer exactly ``addresses`` as host candidates; ``None`` restores aioice's own choice.

    An empty list means "aioice's choice, or 127.0.0.1 if that finds nothing".
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original
        return

    def pinned(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses:
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        return _original(use_ipv4, use_ipv6) or list(LOOPBACK)

    aioice.ice.get_host_addresses = pinned


def _connection_closing(conn: aioice.ice.Connection) -> bool:
    # ``_closing`` is set first thing in close() (aioice 0.13); ``_closed`` at its end (older ones).
    return bool(getattr(conn, "_closing", False) or getattr(conn, "_closed", False))


async def _connect_unless_closed(self: aioice.ice.Connection) -> None:
    await _original_connect(self)
    if _connection_closing(self):
        task, self._query_consent_task = self._query_consent_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        raise ConnectionError("ICE negotiation failed (connection closed)")


_connect_unless_closed.gramcast_fix = True  # type: ignore[attr-defined]


def fix_consent_after_close() -> None:
    """Install the workaround for aioice's consent task outliving ``Connection.close()`` (see above)."""
    if not getattr(aioice.ice.Connection.connect, "gramcast_fix", False):
        aioice.ice.Connection.connect = _connect_unless_closed


def undo_consent_fix() -> None:
    """Restore aioice's own ``Connection.connect`` (tests use this to show the leak)."""
    aioice.ice.Connection.connect = _original_connect


async def close_peer_connection(pc) -> None:
    """Close ``pc`` and end what aiortc may have left running (see above). Safe to call twice."""
    await pc.close()
    for transceiver in pc.getTransceivers():
        await transceiver.sender.stop()
        await transceiver.receiver.stop()
    end_remote_tracks(pc)


def end_remote_tracks(pc) -> None:
    """End the received tracks of a closed RTCPeerConnection that aiortc left live (see above).

    A pending or later ``recv()`` then raises ``MediaStreamError``, as after a normal end.
    """
    for transceiver in pc.getTransceivers():
        track = transceiver.receiver.track
        if isinstance(track, RemoteStreamTrack) and track.readyState == "live":
            track._queue.put_nowait(None)  # what decoder_worker does when its receiver stops
