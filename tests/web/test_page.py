"""The page in a real browser (Debian's Chromium) on the real server: people in two browsers and a Python peer
on one chat, hostile text, tokens (read-only, expired), a browser that goes offline, a server restarted under
the page, and a thread too long to render whole."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from pycrdt import Map

from chatdoc import create_thread, delete_message, edit_message, new_ulid, reply

from web_helpers import (  # noqa: F401 - anyio_backend and browser are fixtures
    anyio_backend,
    browser,
    shared_chromium,
    messages_shown,
    no_page_errors,
    open_page,
    rename_thread,
    send,
    start_thread,
    wait_for_text,
)
from server_helpers import chat_dir, eventually, serving  # noqa: F401 - a fixture

pytestmark = pytest.mark.anyio
ROOM = "team.chat"


async def open_thread(page, thread_id: str) -> None:  # type: ignore[no-untyped-def]
    await page.click(f'.thread-item[data-thread="{thread_id}"]')
    await page.wait_for_selector(f'.thread[data-thread="{thread_id}"]')


async def test_two_browsers_and_a_python_peer_see_each_others_messages_edits_and_deletes(browser, chat_dir: Path) -> None:
    async with serving(chat_dir) as served, served.client(ROOM, user="carol") as carol:
        await carol.wait_synced()
        # An empty folder: Alice starts the chat by name; Bob opens it by its address.
        alice = await open_page(browser, served, served.folder_token(user="alice"), wait_live=False)
        await alice.fill(".new-chat-name", "team")
        await alice.press(".new-chat-name", "Enter")
        await alice.wait_for_selector(".connection.live")
        bob = await open_page(browser, served, served.folder_token(user="bob"), hash_=f"#/{ROOM}")
        await bob.wait_for_selector('.presence .person[title="alice"]')  # presence, from awareness
        await alice.wait_for_selector('.presence .person[title="bob"]')

        thread_id = await start_thread(alice, "Plan the **release**", name="Release")
        await bob.wait_for_selector(f'.thread-item[data-thread="{thread_id}"]')
        assert await bob.inner_text(f'.thread-item[data-thread="{thread_id}"] .unread') == "1"  # Alice's, not yet read
        assert await alice.locator(f'.thread-item[data-thread="{thread_id}"] .unread').count() == 0
        await open_thread(bob, thread_id)
        await wait_for_text(bob, "Plan the release")
        await send(bob, "bob: I'll take the changelog")
        await wait_for_text(alice, "I'll take the changelog")
        await eventually(lambda: len(carol.chat.messages(thread_id)) == 2, what="carol has both messages")
        assert [m.sender_id for m in carol.chat.messages(thread_id)] == ["alice", "bob"]
        assert carol.chat.thread_config(thread_id).name == "Release"

        carol_id = reply(carol.chat, thread_id, sender_id="carol", content="carol: tests are green")
        await wait_for_text(alice, "tests are green")
        await wait_for_text(bob, "tests are green")

        # Alice edits her message in her browser; Bob deletes his; Carol edits and deletes from Python.
        root = (await messages_shown(alice))[0]["id"]
        await alice.hover(f'.message[data-id="{root}"]')
        await alice.click(f'.message[data-id="{root}"] .edit-button')
        await alice.fill(f'.message[data-id="{root}"] .edit-input', "Plan the release for Friday")
        await alice.click(f'.message[data-id="{root}"] .save-edit')
        bob_id = (await messages_shown(bob))[1]["id"]
        await bob.hover(f'.message[data-id="{bob_id}"]')
        await bob.click(f'.message[data-id="{bob_id}"] .delete-button')
        edit_message(carol.chat, carol_id, author_id="carol", content="carol: tests are green on main")
        await eventually(lambda: (m := carol.chat.message(root)) is not None and m.content == "Plan the release for Friday", what="alice's edit")
        await eventually(lambda: (m := carol.chat.message(bob_id)) is not None and m.deleted, what="bob's delete")
        for page in (alice, bob):
            await wait_for_text(page, "green on main")
            await wait_for_text(page, "for Friday")
            shown = {m["id"]: m for m in await messages_shown(page)}
            assert shown[root]["edited"] and shown[root]["text"] == "Plan the release for Friday"
            assert shown[bob_id]["deleted"] and "changelog" not in shown[bob_id]["text"]
            assert shown[carol_id]["edited"] and not shown[carol_id]["deleted"]
        # A person cannot edit or delete someone else's message from the page.
        assert await alice.locator(f'.message[data-id="{carol_id}"] .edit-button').count() == 0
        assert await alice.locator(f'.message[data-id="{carol_id}"] .delete-button').count() == 0

        delete_message(carol.chat, carol_id, by="carol")
        await alice.wait_for_selector(f'.message[data-id="{carol_id}"] .deleted-marker')
        assert carol.chat.integrity().clean
        no_page_errors(alice, bob)


async def test_the_chat_list_is_the_folders_chats_and_each_opens(browser, chat_dir: Path) -> None:
    from chatdoc import ChatDoc
    from chatdoc.chatfile import dump

    for room, text in (("plans.chat", "in plans"), ("team/agents.chat", "in a subfolder")):
        chat = ChatDoc()
        create_thread(chat, sender_id="carol", content=text, config={"name": text})
        (chat_dir / room).parent.mkdir(parents=True, exist_ok=True)
        (chat_dir / room).write_bytes(dump(chat))
    async with serving(chat_dir) as served:
        page = await open_page(browser, served, served.folder_token(user="alice"), wait_live=False)
        await page.locator(".chat-link").nth(1).wait_for()  # GET /api/chats answered (no eval: the CSP forbids it)
        links = await page.eval_on_selector_all(".chat-link", "els => els.map(e => e.textContent.trim())")
        assert sorted(links) == ["plans", "team/agents"]
        for name, text in (("team/agents", "in a subfolder"), ("plans", "in plans")):
            await page.click(f'.chat-link:text-is("{name}")')
            await page.wait_for_selector(".connection.live")
            await page.click(".thread-item")
            await wait_for_text(page, text)
        no_page_errors(page)


async def test_thread_settings_and_fork_from_the_page(browser, chat_dir: Path) -> None:
    async with serving(chat_dir) as served, served.client(ROOM, user="carol") as carol:
        await carol.wait_synced()
        page = await open_page(browser, served, served.folder_token(user="alice"), hash_=f"#/{ROOM}")
        first = await start_thread(page, "first thread")
        await send(page, "second message")
        await send(page, "third message")
        await wait_for_text(page, "third message")
        await rename_thread(page, "Renamed")
        await page.click(".pin-button")
        await page.eval_on_selector(".colour-input", "el => { el.value = '#ff0000'; el.dispatchEvent(new Event('change', {bubbles: true})) }")
        await eventually(lambda: (c := carol.chat.thread_config(first)).name == "Renamed" and c.pin and c.thread_color == "#ff0000",
                         what="the settings at the Python peer")
        assert carol.chat.thread_config(first).acp_config is None or not carol.chat.is_agent_thread(first)  # a patch wrote nothing else

        # A second, newer thread; the pinned one stays first in the list.
        await page.click(".new-thread-button")
        await page.fill(".new-thread-text", "a newer thread")
        await page.click(".new-thread button[type=submit]")
        await wait_for_text(page, "a newer thread")
        items = await page.eval_on_selector_all(".thread-item", "els => els.map(e => e.dataset.thread)")
        assert items[0] == first and len(items) == 2

        # Fork the first thread at its second message: a new thread with copies of the first two.
        await open_thread(page, first)
        second_id = (await messages_shown(page))[1]["id"]
        await page.hover(f'.message[data-id="{second_id}"]')
        await page.click(f'.message[data-id="{second_id}"] .fork-button')
        await page.wait_for_function("id => { const t = document.querySelector('.thread[data-thread]'); return t && t.dataset.thread !== id }", arg=first)
        fork_id = await page.get_attribute(".thread[data-thread]", "data-thread")
        await eventually(lambda: len(carol.chat.messages(fork_id)) == 2, what="the fork at the Python peer")
        assert [m.content for m in carol.chat.messages(fork_id)] == ["first thread", "second message"]
        assert carol.chat.thread_config(fork_id).forked_from_message_id == second_id
        assert carol.chat.integrity().clean
        no_page_errors(page)


async def test_hostile_message_text_does_not_run(browser, chat_dir: Path) -> None:
    hostile = ('<img src=x onerror="window.__pwned = 1"> <script>window.__pwned = 2</script> '
               '[click me](javascript:window.__pwned=3) <a href="javascript:window.__pwned=4">raw link</a> '
               '![img](javascript:window.__pwned=5) <iframe src="javascript:parent.__pwned=6"></iframe>')
    async with serving(chat_dir) as served, served.client(ROOM, user="mallory") as mallory:
        await mallory.wait_synced()
        thread_id, _ = create_thread(mallory.chat, sender_id="mallory", content=hostile, config={"name": "<b onmouseover=alert(1)>x</b>"})
        reply(mallory.chat, thread_id, sender_id="mallory", content="[ok](https://example.org) **bold**\n\n| a | b |\n|--:|:-:|\n| 1 | 2 |")
        page = await open_page(browser, served, served.folder_token(user="alice"), hash_=f"#/{ROOM}/{thread_id}")
        await wait_for_text(page, "bold")
        await page.hover(".thread-item")
        await page.hover(".message .body")
        await anyio.sleep(0.3)  # an onerror/onmouseover would have run by now
        assert await page.evaluate("window.__pwned") is None
        found = await page.evaluate("""() => {
            const all = [...document.querySelectorAll('#app *')]
            return {
                handlers: all.flatMap(el => [...el.attributes].filter(a => a.name.startsWith('on')).map(a => el.tagName + ' ' + a.name)),
                runnable: document.querySelectorAll('#app script, #app iframe, #app img, #app object, #app embed').length,
                scriptLinks: all.filter(el => /^\\s*javascript:/i.test(el.getAttribute('href') || el.getAttribute('src') || '')).length,
                text: document.querySelector('.message .body').innerText,
            }
        }""")
        assert found["handlers"] == [] and found["runnable"] == 0 and found["scriptLinks"] == 0, found
        assert "<img src=x onerror=" in found["text"]  # shown as text: nothing the author wrote is lost
        assert await page.get_attribute('.message .body a[href^="https://example.org"]', "rel") == "noopener noreferrer nofollow"
        assert await page.locator(".message .body td.align-right").count() == 1  # table alignment without an inline style
        no_page_errors(page)


async def test_damaged_records_are_counted_named_and_left_out(browser, chat_dir: Path) -> None:
    """A peer with a valid token writes records no reader can use: the page says how many and which, and
    shows everything else as before (never crashes on them)."""
    async with serving(chat_dir) as served, served.client(ROOM, user="mallory") as mallory:
        await mallory.wait_synced()
        thread_id, root = create_thread(mallory.chat, sender_id="mallory", content="a good message")
        page = await open_page(browser, served, served.folder_token(user="alice"), hash_=f"#/{ROOM}/{thread_id}")
        await wait_for_text(page, "a good message")
        assert await page.locator(".integrity").count() == 0
        bad_record, bad_head = new_ulid(), new_ulid()
        with mallory.chat.doc.transaction():
            mallory.chat.roots["messages"][bad_record] = "hello"  # a record that is no map at all
            mallory.chat.roots["messages"][bad_head] = Map({"head": {"thread_id": thread_id, "sender_id": "mallory", "date": "yesterday",
                                                                      "reply_to_message_id": root, "body": "dateless"}})
        await page.wait_for_selector('.integrity[data-quarantined="2"]')
        await page.click(".integrity-toggle")
        listed = await page.inner_text(".integrity-list")
        assert f"messages:{bad_record}" in listed and f"messages:{bad_head}" in listed
        await send(page, "still writing")
        await wait_for_text(page, "still writing")
        assert "dateless" not in await page.inner_text(".thread")
        no_page_errors(page)


async def test_a_read_only_token_gives_a_read_only_page_that_cannot_write(browser, chat_dir: Path) -> None:
    async with serving(chat_dir) as served, served.client(ROOM, user="carol") as carol:
        await carol.wait_synced()
        thread_id, _ = create_thread(carol.chat, sender_id="carol", content="read me")
        page = await open_page(browser, served, served.folder_token(mode="read", user="viewer"), hash_=f"#/{ROOM}/{thread_id}")
        await wait_for_text(page, "read me")
        assert await page.locator(".read-only-badge").count() == 1
        for control in (".composer-input", ".new-thread-button", ".edit-button", ".delete-button", ".fork-button", ".rename-button"):
            assert await page.locator(control).count() == 0, control
        # A page that writes anyway (a person with devtools): the server does not take it; nobody sees it.
        before = carol.chat.get_state()
        await page.evaluate("""() => {
            const doc = window.chatdoc.room.doc
            doc.transact(() => doc.getMap('meta').set('vandal', 'was here'))
        }""")
        await anyio.sleep(0.8)
        assert carol.chat.get_state() == before and "vandal" not in carol.chat.roots["meta"].to_py()
        no_page_errors(page)


async def test_an_expired_token_shows_the_servers_reason_and_stops(browser, chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        token = served.folder_token(ttl=1, user="alice")
        await anyio.sleep(1.2)
        page = await open_page(browser, served, token, wait_live=False)
        await page.wait_for_selector('[data-state="refused"]')
        assert "expired" in (await page.inner_text('[data-state="refused"] .reason'))
        # The token left the address bar (and is kept for this tab only).
        assert "token" not in page.url
        assert await page.evaluate("sessionStorage.getItem('chatdoc.token')") == token
        no_page_errors(page)


async def test_a_token_that_expires_while_the_page_is_open_is_refused_with_the_reason_and_not_retried(browser, chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        token = served.folder_token(ttl=3, user="alice")
        expires = time.time() + 3
        page = await open_page(browser, served, token, hash_=f"#/{ROOM}")
        port = served.port
    await anyio.sleep(max(0.0, expires - time.time()) + 0.5)
    attempts: list[str] = []
    page.on("websocket", lambda ws: attempts.append(ws.url))
    async with serving(chat_dir, port=port):
        await page.wait_for_selector(".connection.refused", timeout=15000)  # the reconnect is refused (close 4401)
        assert "expired" in await page.inner_text(".connection.refused .reason")
        seen = len(attempts)
        await anyio.sleep(3)  # y-websocket's backoff tops out at 2.5 s: a retry would show by now
        assert len(attempts) == seen
    no_page_errors(page)


async def test_an_offline_browser_keeps_editing_and_everything_merges(browser, chat_dir: Path) -> None:
    async with serving(chat_dir) as served, served.client(ROOM, user="carol") as carol:
        await carol.wait_synced()
        thread_id, _ = create_thread(carol.chat, sender_id="carol", content="before the tunnel")
        page = await open_page(browser, served, served.folder_token(user="alice"), hash_=f"#/{ROOM}/{thread_id}")
        await wait_for_text(page, "before the tunnel")

        await page.context.set_offline(True)
        await page.wait_for_selector(".connection.offline")
        await send(page, "typed in the tunnel")
        await send(page, "and another one")
        await rename_thread(page, "Tunnel talk")
        await page.wait_for_selector('.connection.offline[data-pending="yes"]')
        reply(carol.chat, thread_id, sender_id="carol", content="carol, meanwhile")
        await anyio.sleep(0.5)
        assert "carol, meanwhile" not in await page.inner_text(".thread")  # really offline
        assert len(carol.chat.messages(thread_id)) == 2

        await page.context.set_offline(False)
        await page.wait_for_selector(".connection.live")
        await wait_for_text(page, "carol, meanwhile")
        await eventually(lambda: len(carol.chat.messages(thread_id)) == 4, what="the offline messages at the Python peer")
        assert carol.chat.thread_config(thread_id).name == "Tunnel talk"
        # Both sides show the same messages in the same order.
        shown = [m["id"] for m in await messages_shown(page)]
        assert shown == [m.message_id for m in carol.chat.messages(thread_id)]
        assert carol.chat.integrity().clean
        no_page_errors(page)


async def test_two_browsers_offline_at_once_edit_the_same_things_and_converge(browser, chat_dir: Path) -> None:
    """Concurrent edits made apart (both browsers offline, updates delayed and merged in whatever order the
    server relays them): the same thread name, the same messages in the same order, everywhere."""
    async with serving(chat_dir) as served, served.client(ROOM, user="carol") as carol:
        await carol.wait_synced()
        thread_id, root = create_thread(carol.chat, sender_id="carol", content="shared start")
        pages = [await open_page(browser, served, served.folder_token(user=user), hash_=f"#/{ROOM}/{thread_id}") for user in ("alice", "bob")]
        for page in pages:
            await wait_for_text(page, "shared start")
            await page.context.set_offline(True)
            await page.wait_for_selector(".connection.offline")
        for page, who in zip(pages, ("alice", "bob")):
            await rename_thread(page, f"named by {who}")
            for i in range(3):
                await send(page, f"{who} offline {i}")
            await page.click(".pin-button")
        edit_message(carol.chat, root, author_id="carol", content="shared start, edited")
        for page in reversed(pages):  # back in the other order
            await page.context.set_offline(False)
        for page in pages:
            await page.wait_for_selector(".connection.live")
        await eventually(lambda: len(carol.chat.messages(thread_id)) == 7, what="every message at the Python peer")
        expected = [m.message_id for m in carol.chat.messages(thread_id)]
        name = carol.chat.thread_config(thread_id).name
        assert name in ("named by alice", "named by bob") and carol.chat.thread_config(thread_id).pin
        for page in pages:
            await page.wait_for_function("n => document.querySelector('.thread-title').innerText.includes(n)", arg=name)
            await wait_for_text(page, "shared start, edited")
            # The page renders once per animation frame: the other browser's last messages may be a frame behind.
            shown: list[str] = []
            with anyio.move_on_after(10):
                while (shown := [m["id"] for m in await messages_shown(page)]) != expected:
                    await anyio.sleep(0.05)
            assert shown == expected
        assert carol.chat.integrity().clean
        no_page_errors(*pages)


async def test_the_server_restarted_under_the_page_loses_nothing_typed(browser, chat_dir: Path) -> None:
    async with serving(chat_dir) as served:
        page = await open_page(browser, served, served.folder_token(user="alice"), hash_=f"#/{ROOM}")
        thread_id = await start_thread(page, "before the restart")
        port = served.port
    # The server is gone (its rooms flushed); the page notices and keeps what is typed.
    await page.wait_for_selector(".connection.offline, .connection.connecting")
    await send(page, "typed while the server was down")
    await wait_for_text(page, "typed while the server was down")
    async with serving(chat_dir, port=port) as served, served.client(ROOM, user="carol") as carol:
        await page.wait_for_selector(".connection.live", timeout=15000)
        await eventually(lambda: [m.content for m in carol.chat.messages(thread_id)] == ["before the restart", "typed while the server was down"],
                         what="both messages at the restarted server")
        reply(carol.chat, thread_id, sender_id="carol", content="welcome back")
        await wait_for_text(page, "welcome back")
        no_page_errors(page)


async def test_a_ten_thousand_message_thread_renders_only_what_is_on_screen(browser, chat_dir: Path) -> None:
    from chatdoc.chatfile import dump
    from web_helpers import long_thread_chat

    chat, thread_id = long_thread_chat(10_000)
    (chat_dir / ROOM).write_bytes(dump(chat))
    async with serving(chat_dir) as served:
        page = await open_page(browser, served, served.folder_token(user="alice"), hash_=f"#/{ROOM}/{thread_id}")
        await wait_for_text(page, "message 9999")  # opens at the newest message
        rows = await page.eval_on_selector(".vl", "el => ({rows: el.dataset.rows, rendered: el.querySelectorAll('.message').length})")
        assert rows["rows"] == "10000" and 0 < rows["rendered"] < 60, rows
        await page.eval_on_selector(".vl", "el => { el.scrollTop = 0 }")
        await wait_for_text(page, "message 0 ")
        rendered = await page.eval_on_selector(".vl", "el => el.querySelectorAll('.message').length")
        assert 0 < rendered < 60
        no_page_errors(page)
