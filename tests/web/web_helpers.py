"""Shared by the browser tests: Debian's Chromium driven by Playwright for Python, the page opened on a real
server with a token, and what the tests read back from it.

The browser tests never skip: a machine without Chromium fails them, saying how to install it (CI does,
with `apt-get install chromium`; `playwright install` downloads another browser and is not used)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # the server tests' helpers

from server_helpers import Served  # noqa: E402

CHROMIUM = os.environ.get("CHATDOC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1100, "height": 700}


def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or CHROMIUM
    if not Path(path).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (`apt-get install chromium`) or set CHATDOC_CHROMIUM")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class PageErrors(list[str]):
    """Uncaught exceptions in the page and CSP violations: a test fails on any (the page must never crash on
    what it shows, nor depend on something the CSP forbids)."""


async def open_page(browser: Any, served: Served, token: str, *, wait_live: bool = True, hash_: str = "") -> Any:
    """A new browser context (its own storage: another person) with the page opened by the printed link."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    errors = PageErrors()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The CSP (script-src 'self', no inline style in HTML) must never have to block something the page does.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "Content Security Policy" in msg.text else None)
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(served.http(f"/?token={token}{hash_}"))
    if wait_live:
        await page.wait_for_selector(".connection.live", timeout=15000)
    return page


async def messages_shown(page: Any) -> list[dict[str, Any]]:
    """The messages the open thread renders: id, author, text and markers, as a person sees them."""
    return await page.eval_on_selector_all(".message", """rows => rows.map(r => ({
        id: r.dataset.id,
        author: r.querySelector('.author').textContent,
        text: r.querySelector('.body, .edit-form') ? r.querySelector('.body').innerText.trim() : '',
        edited: !!r.querySelector('.edited-marker'),
        deleted: !!r.querySelector('.deleted-marker'),
        generating: !!r.querySelector('.generating-marker'),
    }))""")


async def wait_for_text(page: Any, text: str, selector: str = ".thread", timeout: float = 10000) -> None:
    await page.wait_for_function("([sel, text]) => { const el = document.querySelector(sel); return !!el && el.innerText.includes(text) }",
                                 arg=[selector, text], timeout=timeout)


async def start_thread(page: Any, text: str, *, name: str = "", model: str = "") -> str:
    """Start a thread from the page's form; its id (from the address: `#/<room>/<thread id>`)."""
    await page.click(".new-thread-button")
    if name:
        await page.fill(".new-thread-name", name)
    await page.fill(".new-thread-text", text)
    if model:
        await page.fill(".new-thread-model", model)
    await page.click(".new-thread button[type=submit]")
    await page.wait_for_selector(".thread[data-thread]")
    return await page.get_attribute(".thread[data-thread]", "data-thread")


async def send(page: Any, text: str) -> None:
    await page.fill(".composer-input", text)
    await page.press(".composer-input", "Enter")


async def rename_thread(page: Any, name: str) -> None:
    """Rename the open thread from its header."""
    await page.click(".rename-button")
    await page.fill(".rename-input", name)
    await page.press(".rename-input", "Enter")


def no_page_errors(*pages: Any) -> None:
    for page in pages:
        assert not page.errors, f"the page threw: {page.errors}"


def long_thread_chat(messages: int, sender: str = "alice") -> tuple[Any, str]:
    """A chat whose one thread holds `messages` messages ("message N", a minute apart): the big-chat fixture
    of the tests and of bench/web.py. Returns (ChatDoc, thread id)."""
    from chatdoc import ChatDoc, create_thread, reply
    from chatdoc.ids import parse_date

    start = parse_date("2026-01-05T09:00:00.000Z")
    chat = ChatDoc()
    thread_id, _ = create_thread(chat, sender_id=sender, content="message 0 of a long thread", config={"name": "Long"}, date_ms=start)
    with chat.doc.transaction():
        for i in range(1, messages):
            reply(chat, thread_id, sender_id=sender if i % 3 else "bob", content=f"message {i}: *some* text", date_ms=start + i * 60_000)
    return chat, thread_id


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # uvicorn and Playwright run on asyncio; module scope lets one browser serve a module


@pytest.fixture(scope="module")
async def shared_chromium(anyio_backend: str) -> AsyncIterator[Any]:
    """One Chromium per test module: a launch costs seconds."""
    async with chromium() as running:
        yield running


@pytest.fixture
async def browser(shared_chromium: Any) -> AsyncIterator[Any]:
    """The module's Chromium; the contexts (people) a test opened are closed after it."""
    yield shared_chromium
    for context in shared_chromium.contexts:
        await context.close()
