"""Presence (Yjs awareness) of one room: relayed, bounded, and remembered so newcomers see everyone.

The reference y-websocket server sends a joining client the awareness of those already there;
pycrdt-websocket does not. Here the latest entry of every awareness client id is kept, with the connection
that announced it, so a newcomer gets one message with everyone, and a connection that drops has its
clients' presence removed for the others (a higher clock with state `null`, as y-protocols does).

Presence is bounded, because any connection may send it, read-only ones included, and everything kept is
also sent to every newcomer. A state over `max_state_bytes` closes its connection (`protocol.parse_awareness`
refuses it before copying it; a cursor and a name are a few hundred bytes, and 32 MiB states once locked
newcomers out of a room); a connection announces at most
`max_clients_per_connection` client ids of its own, and the room keeps at most `max_room_bytes` of states.
Entries past the last two are dropped (not relayed, not kept): the sender keeps its connection, since a
y-websocket client also re-sends the states of others it hears about.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable

from .protocol import PresenceEntry, awareness_message

LEFT = "null"


@dataclass(frozen=True)
class PresenceLimits:
    max_state_bytes: int = 64 * 1024  # checked by the parser (close 1009)
    max_clients_per_connection: int = 16
    max_room_bytes: int = 2 * 1024 * 1024


class Presence:
    def __init__(self, limits: PresenceLimits = PresenceLimits()) -> None:
        self.limits = limits
        self.entries: dict[int, PresenceEntry] = {}
        self.owner: dict[int, Hashable] = {}  # awareness client id -> the connection that announced it
        self.owned: Counter[Hashable] = Counter()  # connection -> how many client ids it announced
        self.bytes = 0  # of every state kept

    def update(self, connection: Hashable, entries: list[PresenceEntry]) -> tuple[list[PresenceEntry], int]:
        """Keep what `connection` sent: (the entries to relay to the others, how many were dropped)."""
        relay: list[PresenceEntry] = []
        dropped = 0
        for entry in entries:
            size = _size(entry.state)
            current = self.entries.get(entry.client_id)
            if current is not None and entry.clock < current.clock:
                continue  # stale: awareness keeps the highest clock
            if entry.state == LEFT:
                if current is not None:
                    self._forget(entry.client_id)
                relay.append(entry)
                continue
            if current is None and self.owned[connection] >= self.limits.max_clients_per_connection:
                dropped += 1
                continue
            grows = size - (_size(current.state) if current is not None else 0)
            if self.bytes + grows > self.limits.max_room_bytes:
                dropped += 1
                continue
            self.entries[entry.client_id] = entry
            self.bytes += grows
            if current is None:
                # The first connection to announce a client owns it: y-websocket clients re-send the states
                # of others they hear about, and must not inherit them (the reference server does the same).
                owner = self.owner.setdefault(entry.client_id, connection)
                self.owned[owner] += 1
            relay.append(entry)
        return relay, dropped

    def everyone(self) -> bytes | None:
        """One awareness message with every client present, or None when nobody is."""
        return awareness_message(list(self.entries.values())) if self.entries else None

    def remove(self, connection: Hashable) -> bytes | None:
        """Forget the clients `connection` announced; the message telling the others they left."""
        gone = [cid for cid, owner in self.owner.items() if owner == connection]
        left = []
        for cid in gone:
            entry = self.entries[cid]
            self._forget(cid)
            left.append(PresenceEntry(cid, entry.clock + 1, LEFT))
        self.owned.pop(connection, None)
        return awareness_message(left) if left else None

    def _forget(self, client_id: int) -> None:
        entry = self.entries.pop(client_id)
        self.bytes -= _size(entry.state)
        owner = self.owner.pop(client_id, None)
        if owner is not None:
            self.owned[owner] -= 1
            if not self.owned[owner]:
                del self.owned[owner]


def _size(state: str) -> int:
    return len(state) if state.isascii() else len(state.encode())
