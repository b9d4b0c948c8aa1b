"""A person saves the served `.chat` file with a new message and one malformed line: the message is merged,
the malformed line is kept verbatim (in the document and back in the file), and nothing they saved is lost."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from server_helpers import anyio_backend, chat_dir, eventually, serving  # noqa: F401 - fixtures

from chatdoc import create_thread
from chatdoc.chatfile import legacy_lines, load, parse

pytestmark = pytest.mark.anyio

NEW_ID = "01KEKWE4G0H4WRBYJZP2D4DPC5"
BROKEN = '{"type": "message", "message_id": "01KEKWE4G0H4WRBYJZP2D4DPC6", "head": {"body": "half a line'


async def test_a_saved_file_with_one_malformed_line_merges_the_rest_and_keeps_that_line(
        chat_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = chat_dir / "s.chat"
    async with serving(chat_dir) as served:
        assert served.app is not None
        async with served.client("s.chat", user="alice") as alice:
            await alice.wait_synced()
            thread_id, root_id = create_thread(alice.chat, sender_id="alice", content="hello")
            await eventually(lambda: file.exists() and load(file.read_bytes()).thread(thread_id) is not None)

            # The person's save: a valid reply, then a line cut in half (and another that is no object).
            message = next(line for line in map(json.loads, file.read_text().splitlines())
                           if line.get("message_id") == root_id)
            message["message_id"] = NEW_ID
            message["head"] = {**message["head"], "body": "typed in an editor", "sender_id": "bob",
                               "reply_to_message_id": root_id}
            saved = file.read_text() + json.dumps(message) + "\n" + BROKEN + "\n" + "[1, 2]\n"
            with caplog.at_level(logging.WARNING, logger="chatdoc.server.files"):
                file.write_text(saved)
                await eventually(lambda: NEW_ID in alice.chat.message_ids(thread_id), what="the reply merged")
                room = served.app.rooms["s.chat"]
                kept = [entry for entry in legacy_lines(room.chat) if entry.raw in (BROKEN, "[1, 2]")]
                assert len(kept) == 2 and all(entry.kind == "quarantined" for entry in kept)
                assert all("could not be read" in entry.reason for entry in kept)
                # The file the server writes next holds the reply and both lines, verbatim, as legacy lines.
                await eventually(lambda: file.read_text() != saved and "typed in an editor" in file.read_text())
            rewritten = parse(file.read_bytes())  # strict: the server's own file reads whole
            assert sorted(e.raw for e in rewritten.legacy if e.kind == "quarantined") == sorted([BROKEN, "[1, 2]"])
            assert "unreadable, kept verbatim in the legacy map" in caplog.text
            assert "typed in an editor" in [m.content for m in alice.chat.messages(thread_id)]
