"""A connection's outbox: a message for a client with nothing queued and no send in flight goes to the
websocket at once, in the caller (no task wake-up per client); a send that has to wait (a full transport
buffer) is finished by the connection's task before anything queued after it, and the bound on what
waits still disconnects a slow client. Driven through a stand-in for the ASGI `send` that behaves as
uvicorn's does: it returns without suspending while its transport is writable, and waits otherwise."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from server_helpers import anyio_backend  # noqa: F401 - a fixture

from server.auth import Grant
from server.connection import CLOSE_TRY_LATER, Connection
from server.metrics import Metrics

pytestmark = pytest.mark.anyio


class Websocket:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: int | None = None
        self.writable = asyncio.Event()  # uvicorn's; anyio's wait() would yield once even when set
        self.writable.set()
        self.gone = False

    async def send(self, event: dict) -> None:
        await self.writable.wait()  # returns without suspending when set
        if self.gone:
            raise ConnectionResetError("client gone")
        if event["type"] == "websocket.send":
            self.frames.append(event["bytes"])
        else:
            self.closed = event["code"]


def connection(max_outbox_bytes: int = 1 << 20) -> Connection:
    return Connection(Grant(user="t", mode="write"), "127.0.0.1", Metrics(), max_outbox_bytes=max_outbox_bytes)


async def test_a_message_is_written_in_the_call_when_nothing_waits() -> None:
    ws, conn = Websocket(), connection()
    async with anyio.create_task_group() as tg:
        tg.start_soon(conn.drain, ws.send)
        await anyio.sleep(0.01)  # the connection's task is waiting for work
        conn.send(b"one")
        conn.send(b"two")
        assert ws.frames == [b"one", b"two"]  # no await in between: no task had to run
        assert conn.metrics.bytes_out == 6
        conn.close(1000, "done")
    assert ws.closed == 1000


async def test_a_send_that_must_wait_is_finished_first_and_the_bound_still_holds() -> None:
    ws, conn = Websocket(), connection(max_outbox_bytes=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(conn.drain, ws.send)
        await anyio.sleep(0.01)
        ws.writable = asyncio.Event()  # the client stopped reading: the transport's buffer is full
        conn.send(b"first")  # started here, suspended: handed to the connection's task
        conn.send(b"second")
        assert ws.frames == []
        ws.writable.set()
        await anyio.sleep(0.01)
        assert ws.frames == [b"first", b"second"]  # in order

        ws.writable = asyncio.Event()
        conn.send(b"x" * 4)  # in flight, waiting
        conn.send(b"y" * 8)  # queued: 8 of 10 bytes
        conn.send(b"z" * 8)  # would pass the bound: a slow client is disconnected
        assert conn.close_code == CLOSE_TRY_LATER and conn.metrics.slow_clients_disconnected == 1
        ws.writable.set()
    assert ws.closed == CLOSE_TRY_LATER
    assert ws.frames == [b"first", b"second"]  # the abandoned send and the queue were dropped, not written


async def test_a_client_gone_during_a_direct_write_ends_the_connections_task_with_the_error() -> None:
    ws, conn = Websocket(), connection()
    with pytest.raises(BaseExceptionGroup) as caught:
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.drain, ws.send)
            await anyio.sleep(0.01)
            ws.gone = True
            conn.send(b"lost")  # does not raise into the caller (a room broadcasting to everyone)
            conn.send(b"after")
            await anyio.sleep(1)
    assert caught.group_contains(ConnectionResetError)
