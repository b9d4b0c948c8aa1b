"""The merge trace format (chatdoc/trace.py): what is written is read back, byte for byte; a recording cut
off mid-frame stays readable; anything else that is not a trace is refused with the file's name."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from chatdoc.trace import MAGIC, TraceEntry, TraceError, TraceHeader, TraceWriter, read_trace, write_trace


def text_updates(n: int) -> list[bytes]:
    doc = Doc()
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for i in range(n):
        text.insert(len(text), f"{i},")
    return updates


@pytest.mark.parametrize("name", ["live.trace", "live.trace.gz"])
def test_writer_round_trip_numbers_each_peers_updates(tmp_path: Path, name: str) -> None:
    updates = text_updates(5)
    start = Doc()
    start.get("t", type=Text).insert(0, "before")
    header = TraceHeader(room="sub/a.chat", recorded_by="test", start_state=start.get_update(), starts_after_seq=7,
                         note="n")
    with TraceWriter(tmp_path / name, header) as out:
        for i, update in enumerate(updates):
            out.append("alice" if i % 2 == 0 else "bob", update)
    trace = read_trace(tmp_path / name)
    assert not trace.torn
    assert trace.header == header
    assert [e.update for e in trace.entries] == updates
    assert [(e.peer, e.seq) for e in trace.entries] == [("alice", 1), ("bob", 1), ("alice", 2), ("bob", 2), ("alice", 3)]
    assert all(0 <= a.t <= b.t for a, b in zip(trace.entries, trace.entries[1:]))
    assert trace.peers == ["alice", "bob"]


@pytest.mark.parametrize("name", ["whole.trace", "whole.trace.gz"])
def test_write_trace_keeps_entries_as_given(tmp_path: Path, name: str) -> None:
    entries = [TraceEntry("p", 3, 0.5, b"\x00\x00"), TraceEntry("q", 1, 0.25, bytes(range(256)))]
    write_trace(tmp_path / name, TraceHeader(room="r", recorded_by="test"), entries)
    assert read_trace(tmp_path / name).entries == entries


def test_a_torn_last_frame_is_dropped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    updates = text_updates(3)
    with TraceWriter(path, TraceHeader(room="r", recorded_by="test")) as out:
        for update in updates:
            out.append("a", update)
    whole = path.read_bytes()
    last = len(whole) - (4 + len(TraceEntry.__struct_fields__) + len(updates[-1]))  # somewhere in the last frame
    for cut in range(last, len(whole)):
        path.write_bytes(whole[:cut])
        trace = read_trace(path)
        assert trace.torn
        assert [e.update for e in trace.entries] == updates[:2]


def test_a_gzip_recording_cut_off_mid_stream_keeps_what_was_flushed(tmp_path: Path) -> None:
    path = tmp_path / "t.trace.gz"
    updates = text_updates(20)
    out = TraceWriter(path, TraceHeader(room="r", recorded_by="test"))
    for update in updates:
        out.append("a", update)
    flushed = path.read_bytes()  # no gzip trailer yet: the process "crashed" here
    out.close()
    path.write_bytes(flushed + b"\x1f\x8b\x08garbage")
    assert [e.update for e in read_trace(path).entries] == updates


def test_what_is_not_a_trace_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "x.trace"
    path.write_bytes(b"hello")
    with pytest.raises(TraceError, match="x.trace: not a chatdoc merge trace"):
        read_trace(path)
    path.write_bytes(MAGIC)
    with pytest.raises(TraceError, match="no header frame"):
        read_trace(path)
    path.write_bytes(MAGIC + b"\x02\x00\x00\x00\x93\x01")
    with pytest.raises(TraceError, match="frame 0 is no trace header"):
        read_trace(path)
    write_trace(path, TraceHeader(room="r", recorded_by="test", version=2), [])
    with pytest.raises(TraceError, match="version 2"):
        read_trace(path)
    write_trace(path, TraceHeader(room="r", recorded_by="test"), [])
    path.write_bytes(path.read_bytes() + b"\x01\x00\x00\x00\xc1")  # a whole frame that is no entry
    with pytest.raises(TraceError, match="frame 1 is no trace entry"):
        read_trace(path)
    gz = tmp_path / "y.trace.gz"
    gz.write_bytes(b"plain")
    with pytest.raises(TraceError, match="not gzip"):
        read_trace(gz)


entries_strategy = st.lists(
    st.builds(TraceEntry, st.sampled_from(["alice", "bob", "conn:1:x", "server"]), st.integers(1, 2**40),
              st.floats(0, 1e6, allow_nan=False), st.binary(max_size=300)),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=entries_strategy, gz=st.booleans(), data=st.data())
def test_any_trace_cut_anywhere_reads_back_a_prefix_of_what_was_written(
        tmp_path: Path, entries: list[TraceEntry], gz: bool, data: st.DataObject) -> None:
    path = tmp_path / ("p.trace.gz" if gz else "p.trace")
    write_trace(path, TraceHeader(room="r", recorded_by="test"), entries)
    assert read_trace(path).entries == entries
    if gz:
        return  # a cut gzip stream is covered above; here the frames themselves are cut
    whole = path.read_bytes()
    header_end = len(whole) - sum(4 + len(msgspec.msgpack.encode(e)) for e in entries)
    cut = data.draw(st.integers(header_end, len(whole)))
    path.write_bytes(whole[:cut])
    trace = read_trace(path)
    assert trace.entries == entries[: len(trace.entries)]
    assert trace.torn == (cut < len(whole) and cut not in _frame_ends(header_end, entries))


def _frame_ends(at: int, entries: list[TraceEntry]) -> set[int]:
    ends = {at}
    for entry in entries:
        at += 4 + len(msgspec.msgpack.encode(entry))
        ends.add(at)
    return ends
