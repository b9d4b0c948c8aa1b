"""Presence stays bounded and its accounting exact under any order of awareness updates from several
connections: duplicated, stale (lower clock), re-sent by others, left, and connections dropping."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.presence import LEFT, Presence, PresenceLimits
from server.protocol import Awareness, PresenceEntry, parse, parse_awareness

LIMITS = PresenceLimits(max_state_bytes=100, max_clients_per_connection=3, max_room_bytes=300)

entry = st.builds(
    PresenceEntry,
    client_id=st.integers(1, 8),
    clock=st.integers(0, 5),
    state=st.one_of(st.just(LEFT), st.integers(0, 90).map(lambda n: '"' + "é" * (n // 2) + "x" * (n % 2) + '"')),
)
action = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 3), st.lists(entry, max_size=5)),
    st.tuples(st.just("drop"), st.integers(0, 3), st.just([])),
)


def check(presence: Presence) -> None:
    assert presence.bytes == sum(len(e.state.encode()) for e in presence.entries.values()) <= LIMITS.max_room_bytes
    assert set(presence.owner) == set(presence.entries)
    for conn, count in presence.owned.items():
        assert 0 < count == sum(owner == conn for owner in presence.owner.values()) <= LIMITS.max_clients_per_connection
    message = presence.everyone()
    if message is not None:  # what a newcomer is sent: exactly what is kept, and a valid frame
        parsed = parse(message)
        assert isinstance(parsed, Awareness)
        assert parse_awareness(parsed.payload) == list(presence.entries.values())


@settings(max_examples=100, deadline=None)  # bounded for CI; each example is a whole sequence
@given(st.lists(action, max_size=40))
def test_presence_accounting_is_exact_and_bounded(actions: list[tuple[str, int, list[PresenceEntry]]]) -> None:
    presence = Presence(LIMITS)
    for kind, conn, entries in actions:
        if kind == "send":
            relay, dropped = presence.update(conn, entries)
            assert len(relay) + dropped <= len(entries)
            assert all(e in entries for e in relay)
        else:
            presence.remove(conn)
            assert conn not in presence.owned and conn not in presence.owner.values()
        check(presence)
    for conn in range(4):
        presence.remove(conn)
    assert not presence.entries and presence.bytes == 0 and not presence.owned
