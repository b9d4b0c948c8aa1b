"""Presence (Yjs awareness) of one room: relayed as sent, and remembered so newcomers see everyone.

The reference y-websocket server sends a joining client the awareness of those already there;
pycrdt-websocket does not. Here the latest entry of every awareness client id is kept, with the connection
that announced it, so a newcomer gets one message with everyone, and a connection that drops has its
clients' presence removed for the others (a higher clock with state `null`, as y-protocols does).
"""

from __future__ import annotations

from typing import Hashable

from .protocol import PresenceEntry, awareness_message

LEFT = "null"


class Presence:
    def __init__(self) -> None:
        self.entries: dict[int, PresenceEntry] = {}
        self.owner: dict[int, Hashable] = {}  # awareness client id -> the connection that announced it

    def update(self, connection: Hashable, entries: list[PresenceEntry]) -> None:
        for entry in entries:
            current = self.entries.get(entry.client_id)
            if current is not None and entry.clock < current.clock:
                continue  # stale: awareness keeps the highest clock
            if entry.state == LEFT:
                self.entries.pop(entry.client_id, None)
                self.owner.pop(entry.client_id, None)
            else:
                self.entries[entry.client_id] = entry
                # The first connection to announce a client owns it: y-websocket clients re-send the states
                # of others they hear about, and must not inherit them (the reference server does the same).
                self.owner.setdefault(entry.client_id, connection)

    def everyone(self) -> bytes | None:
        """One awareness message with every client present, or None when nobody is."""
        return awareness_message(list(self.entries.values())) if self.entries else None

    def remove(self, connection: Hashable) -> bytes | None:
        """Forget the clients `connection` announced; the message telling the others they left."""
        gone = [cid for cid, owner in self.owner.items() if owner == connection]
        left = []
        for cid in gone:
            entry = self.entries.pop(cid)
            del self.owner[cid]
            left.append(PresenceEntry(cid, entry.clock + 1, LEFT))
        return awareness_message(left) if left else None
