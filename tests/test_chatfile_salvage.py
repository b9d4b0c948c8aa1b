"""`chatfile.parse(salvage=True)`: every bad line after the meta line is kept verbatim; strict parsing is unchanged."""

from __future__ import annotations

import pytest

from chatdoc import ChatDoc, create_thread
from chatdoc.chatfile import ChatFileError, dump, import_file, legacy_lines, parse, raw_bytes


def test_bad_lines_are_kept_byte_for_byte_and_the_rest_is_read() -> None:
    chat = ChatDoc()
    thread_id, _ = create_thread(chat, sender_id="a", content="hi")
    bad = [b'{"type": "message", "message_id": 5}', b"\xff\xfe not utf-8", b"{cut", b'{"type": "nonsense"}']
    data = dump(chat) + b"\n".join(bad) + b"\n"
    with pytest.raises(ChatFileError, match="line"):
        parse(data)
    salvaged = parse(data, salvage=True)
    assert [raw_bytes(entry) for entry in salvaged.unreadable] == bad
    assert salvaged.unreadable[1].raw is None and salvaged.unreadable[1].raw_base64  # not UTF-8: base64
    copy = ChatDoc()
    import_file(copy, salvaged)
    assert copy.thread(thread_id) is not None
    assert sorted(raw_bytes(e) for e in legacy_lines(copy)) == sorted(bad)
    again = parse(dump(copy))  # written back as legacy lines, the file reads strictly
    assert sorted(raw_bytes(e) for e in again.legacy) == sorted(bad)


def test_a_bad_first_line_is_still_refused() -> None:
    with pytest.raises(ChatFileError, match="meta"):
        parse(b'{"type": "thread"}\n', salvage=True)
