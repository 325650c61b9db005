"""What an operator watches: ``GET /metrics`` in Prometheus' text format, and ``GET /healthz``.

Live values (rooms, participants, each avatar session's frame rate, latency and quality) are read from
the server when scraped; what happened (joins, enrollments, signaling errors, every session's frames)
only ever grows. A session's frame counters are kept when it ends, added to the totals in the same
step that drops it from the live ones, so a scrape never sees a total go down. No label carries a
room or a participant's name: sessions are labelled by the server's random participant id.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from gramcast import __version__

if TYPE_CHECKING:  # pragma: no cover
    from gramcast.server.app import GramcastServer

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST", "pipeline_stats"]

#: AvatarSession.stats() counters -> (metric name, help). Summed over live and ended sessions.
SESSION_COUNTERS = {
    "frames_in": ("gramcast_session_frames_in", "Camera frames the avatar sessions received"),
    "frames_out": ("gramcast_session_frames_out", "Avatar frames the sessions sent"),
    "frames_dropped": ("gramcast_session_frames_dropped",
                       "Camera frames skipped because the session was still busy with an earlier one"),
    "frames_failed": ("gramcast_session_frames_failed", "Camera frames whose tracking or rendering failed"),
    "faces_lost": ("gramcast_session_faces_lost", "Times a session lost the face it was following"),
    "renders_reused": ("gramcast_session_renders_reused",
                       "Frames that placed the previous render again (the head had not moved enough to show)"),
    "tracks_still": ("gramcast_session_tracks_still",
                     "Frames that kept the last head pose without running the face mesh (a still face)"),
    "edge_search_offs": ("gramcast_session_edge_search_offs",
                         "Times a session that fell behind gave up the occlusion-edge search"),
}
#: AvatarSession.stats() values -> (metric name, help, factor to the metric's unit). One series per session.
SESSION_GAUGES = {
    "input_fps": ("gramcast_session_input_fps", "Camera frames per second arriving (last 2 s)", 1.0),
    "output_fps": ("gramcast_session_output_fps", "Avatar frames per second sent (last 2 s)", 1.0),
    "latency_ms": ("gramcast_session_latency_seconds",
                   "Camera frame received to its avatar frame handed to the sender (moving average)", 1e-3),
    "tracking_ms": ("gramcast_session_tracking_seconds", "Head tracking per frame (moving average)", 1e-3),
    "render_ms": ("gramcast_session_render_seconds", "Avatar render per rendered frame (moving average)", 1e-3),
    "quality_level": ("gramcast_session_quality_level",
                      "Render quality step: 0 = full, higher = stepped down while the session fell behind", 1.0),
    "render_resolution": ("gramcast_session_render_resolution_pixels", "Side of the avatar render now", 1.0),
}


class ServerMetrics:
    """The server's metrics registry: event counters it is told about, live state it reads when scraped."""

    def __init__(self, server: "GramcastServer"):
        self.server = server
        self.events: Counter[tuple[str, str]] = Counter()
        self.ended = Counter()                     # SESSION_COUNTERS summed over ended sessions
        self.ended_sessions = 0
        self.live: dict[Any, str] = {}             # pipeline -> participant id
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # --------------------------------------------------------------- told by the server
    def count(self, event: str, label: str) -> None:
        """One more ``event`` (``"join"``, ``"enrollment"``, ``"signaling_error"``) of kind ``label``."""
        self.events[(event, label)] += 1

    def session_started(self, pipeline, participant: str) -> None:
        self.live[pipeline] = participant

    def session_ended(self, pipeline) -> None:
        """Moves the session's final counters into the totals (call once the pipeline is closed)."""
        if self.live.pop(pipeline, None) is None:
            return
        stats = pipeline_stats(pipeline)
        for key in SESSION_COUNTERS:
            self.ended[key] += int(stats.get(key, 0))
        self.ended_sessions += 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # --------------------------------------------------------------- read when scraped
    def collect(self) -> Iterator:
        server = self.server
        info = InfoMetricFamily("gramcast", "The gramcast server")
        info.add_metric([], {"version": __version__})
        yield info
        for name, doc, value in (
            ("gramcast_rooms", "Rooms with at least one participant", len(server.rooms.rooms())),
            ("gramcast_participants", "Participants in rooms", server.rooms.participant_count()),
            ("gramcast_connections", "Open signaling websockets", len(server._open)),
            ("gramcast_subscriptions", "Peer connections carrying a participant's avatar to another",
             sum(len(c.subscriptions) for c in list(server._open))),
            ("gramcast_sessions", "Avatar sessions (participants publishing a camera)", len(self.live)),
            ("gramcast_selfie_avatars", "Avatars enrolled from participants' selfies, held while they stay",
             len(server.selfies)),
        ):
            yield GaugeMetricFamily(name, doc, value=value)

        live = [(participant, pipeline_stats(pipeline)) for pipeline, participant in list(self.live.items())]
        for key, (name, doc) in SESSION_COUNTERS.items():
            total = self.ended[key] + sum(int(stats.get(key, 0)) for _, stats in live)
            yield CounterMetricFamily(name, doc, value=total)
        yield CounterMetricFamily("gramcast_sessions_ended", "Avatar sessions that have ended",
                                  value=self.ended_sessions)
        for key, (name, doc, factor) in SESSION_GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=["participant"])
            for participant, stats in live:
                if key in stats:
                    family.add_metric([participant], float(stats[key]) * factor)
            yield family

        for event, (name, doc, label) in {
            "join": ("gramcast_joins", "Join requests, by result", "result"),
            "enrollment": ("gramcast_enrollments", "Selfies sent for enrollment, by result", "result"),
            "signaling_error": ("gramcast_signaling_errors", "Error replies to clients, by code", "code"),
        }.items():
            family = CounterMetricFamily(name, doc, labels=[label])
            for (kind, value), n in sorted(self.events.items()):
                if kind == event:
                    family.add_metric([value], n)
            yield family


def pipeline_stats(pipeline) -> dict:
    """A pipeline's stats; a broken one counts as none rather than failing the whole scrape."""
    try:
        return dict(pipeline.stats())
    except Exception:  # noqa: BLE001 (a custom pipeline_factory's object)
        return {}
