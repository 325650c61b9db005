"""Rooms and participants: the server's bookkeeping, free of networking."""
from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Participant:
    """One connected client. ``media`` holds what its publish connection gave us."""

    id: str
    name: str
    room: str
    avatar_name: str
    preview: bool = False
    publishing: bool = False
    #: What its token allows besides watching (``gramcast.server.tokens.RoomGrant``).
    may_publish: bool = True
    may_enroll: bool = True
    # Objects owned by the signaling connection (peer connections, tracks, the avatar pipeline).
    media: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict:
        return {"participant": self.id, "name": self.name, "publishing": self.publishing}


class JoinRefused(Exception):
    """A join the server turns down (the client's token aside): the reason is for the client."""


class RoomFullError(JoinRefused):
    pass


class RoomRegistry:
    """All rooms of one server. Rooms appear with their first participant and vanish with the last."""

    def __init__(self, max_participants_per_room: int = 8):
        self.max_participants = max_participants_per_room
        self._rooms: dict[str, dict[str, Participant]] = {}
        self._counter = itertools.count(1)

    def join(self, room: str, name: str, avatar_name: str, preview: bool = False) -> Participant:
        members = self._rooms.setdefault(room, {})
        if len(members) >= self.max_participants:
            if not members:
                del self._rooms[room]
            raise RoomFullError(f"room {room!r} is full ({self.max_participants} participant{'' if self.max_participants == 1 else 's'})")
        pid = f"p{next(self._counter)}-{secrets.token_hex(3)}"
        p = Participant(id=pid, name=name, room=room, avatar_name=avatar_name, preview=preview)
        members[pid] = p
        return p

    def leave(self, participant: Participant) -> None:
        members = self._rooms.get(participant.room)
        if members is None:
            return
        members.pop(participant.id, None)
        if not members:
            del self._rooms[participant.room]

    def others(self, participant: Participant) -> list[Participant]:
        return [p for p in self._rooms.get(participant.room, {}).values() if p is not participant]

    def get(self, room: str, pid: str) -> Participant | None:
        return self._rooms.get(room, {}).get(pid)

    def rooms(self) -> dict[str, list[str]]:
        return {r: list(m) for r, m in self._rooms.items()}

    def participant_count(self) -> int:
        return sum(len(m) for m in self._rooms.values())
