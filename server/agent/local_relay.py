"""An in-process stand-in for the sync server: ChatDoc peers exchanging Yjs updates through a hub.

The hub is a repairing `ChatDoc`, as the server's is. Each joined peer has a link: what the peer writes
goes to the hub after `delay` seconds, and what the hub learns goes to every other peer, in order. A link
can drop (updates in flight are lost, as on a broken connection) and come back, when the two sides
exchange what the other lacks by state vector, as y-websocket's sync step 1/2 does. Tests and benchmarks
use it where a real server would add nothing but time; the runner cannot tell the difference.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
from anyio.abc import TaskGroup

from chatdoc.document import ChatDoc


class RelayLink:
    """One peer's connection to the hub."""

    def __init__(self, relay: LocalRelay, chat: ChatDoc) -> None:
        self.relay = relay
        self.chat = chat
        self.connected = False
        self.bytes_up = 0
        self.updates_up = 0
        self._applying = False
        self._up_in, self._up = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
        self._down_in, self._down = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
        self._subscription = chat.doc.observe(self._on_local_update)  # kept: a dropped one stops firing

    def _on_local_update(self, event: Any) -> None:
        if self._applying or not self.connected:
            return  # an update from the hub, or written while offline (sent by the resync on reconnect)
        self.bytes_up += len(event.update)
        self.updates_up += 1
        self._up_in.send_nowait((anyio.current_time() + self.relay.delay, event.update))

    def deliver(self, update: bytes) -> None:
        if self.connected:
            self._down_in.send_nowait((anyio.current_time() + self.relay.delay, update))

    def apply_from_hub(self, update: bytes) -> None:
        self._applying = True
        try:
            self.chat.apply_update(update)
        finally:
            self._applying = False

    def drop(self) -> None:
        """The connection breaks: nothing more flows, and what was in flight is lost."""
        self.connected = False
        _drain(self._up)
        _drain(self._down)

    def reconnect(self) -> None:
        """Connect again: each side sends what the other's state vector says it lacks."""
        hub = self.relay.hub
        self.apply_from_hub(hub.get_update(self.chat.get_state()))
        self.relay.from_peer(self, self.chat.get_update(hub.get_state()))
        self.connected = True

    async def pump(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump_up)
            tg.start_soon(self._pump_down)

    async def _pump_up(self) -> None:
        async for due, update in self._up:
            await anyio.sleep_until(due)
            if self.connected:
                self.relay.from_peer(self, update)

    async def _pump_down(self) -> None:
        async for due, update in self._down:
            await anyio.sleep_until(due)
            if self.connected:
                self.apply_from_hub(update)


class LocalRelay:
    """`async with LocalRelay() as relay: link = relay.join(chat)`; peers then sync by themselves."""

    def __init__(self, *, delay: float = 0.0, hub: ChatDoc | None = None) -> None:
        self.delay = delay
        self.hub = hub if hub is not None else ChatDoc(repair=True)
        self.links: list[RelayLink] = []
        self._subscription = self.hub.doc.observe(self._on_hub_update)
        self._task_group: TaskGroup | None = None

    async def __aenter__(self) -> LocalRelay:
        self._task_group = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        return await self._task_group.__aexit__(*exc)

    def join(self, chat: ChatDoc) -> RelayLink:
        """Connect a peer: it is synced with the hub when this returns."""
        assert self._task_group is not None, "use the relay inside `async with`"
        link = RelayLink(self, chat)
        self.links.append(link)
        link.reconnect()
        self._task_group.start_soon(link.pump)
        return link

    def from_peer(self, link: RelayLink, update: bytes) -> None:
        self.hub.apply_update(update)

    def _on_hub_update(self, event: Any) -> None:
        # Everything the hub takes in goes to every peer, the sender too (applying it again changes
        # nothing): a repair the hub writes while applying a peer's update must reach that peer as well.
        for link in self.links:
            link.deliver(event.update)


def _drain(stream: Any) -> None:
    while True:
        try:
            stream.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return
