"""The page in headless Chromium: bundle size, page load and first render of a 1k- and a 10k-message chat,
scrolling a 10k thread, and the time from pressing send in one browser to the message rendered in another,
beside the same path from one Python peer to another over the same server in the same run.

    .venv/bin/python -m bench.web                 # about a minute
    .venv/bin/python -m bench.web --sends 30 --loads 2

It drives the browser the tests drive (Debian's Chromium through Playwright for Python; tests/web/web_helpers.py
holds the launch and the long-thread fixture, so the bench and the tests measure the same page). Prints a
Markdown table and writes every raw number to bench/out/web.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
STATIC = ROOT / "server" / "static"
sys.path.insert(0, str(ROOT / "tests" / "web"))

from web_helpers import chromium, long_thread_chat, open_page  # noqa: E402

from chatdoc import create_thread, reply  # noqa: E402
from chatdoc.chatfile import dump  # noqa: E402
from server_helpers import serving  # noqa: E402 - tests/server, put on the path by web_helpers

ROOM = "team.chat"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bundle_sizes() -> dict[str, int]:
    sizes = {}
    for path in sorted(STATIC.glob("app-*")):
        kind = path.suffix[1:]
        data = path.read_bytes()
        sizes[f"{kind}_bytes"] = len(data)
        sizes[f"{kind}_gzip_bytes"] = len(gzip.compress(data, 9))
    return sizes


async def load_times(browser: Any, messages: int, loads: int, root: Path) -> dict[str, Any]:
    """Open the page on a chat whose one thread holds `messages` messages: ms from navigation start to the
    newest message on screen (the page opens a thread at its end); then a jump to the top and a scroll sweep."""
    chat, thread_id = long_thread_chat(messages)
    room_dir = root / f"load-{messages}"
    room_dir.mkdir()
    (room_dir / ROOM).write_bytes(dump(chat))
    first: list[float] = []
    jump: list[float] = []
    frames: list[float] = []
    async with serving(room_dir) as served:
        for _ in range(loads):
            page = await open_page(browser, served, served.folder_token(user="alice"), wait_live=False, hash_=f"#/{ROOM}/{thread_id}")
            last = f"message {messages - 1}:"
            await page.wait_for_function("t => { const el = document.querySelector('.vl'); return el && el.innerText.includes(t) }",
                                         arg=last, timeout=60000)
            first.append(await page.evaluate("performance.now()"))  # navigation start is 0
            jump.append(await page.evaluate("""() => new Promise(done => {
                const el = document.querySelector('.vl'); const t0 = performance.now(); el.scrollTop = 0
                const check = () => el.innerText.includes('message 0 ') ? done(performance.now() - t0) : requestAnimationFrame(check)
                requestAnimationFrame(check)
            })"""))
            # A sweep down the thread, one screen a frame: how long each frame took (ms).
            frames += await page.evaluate("""() => new Promise(done => {
                const el = document.querySelector('.vl'); const out = []; let last = performance.now(); let steps = 0
                const step = () => {
                    const now = performance.now(); out.push(now - last); last = now
                    if (++steps > 60) return done(out.slice(1))
                    el.scrollTop += el.clientHeight; requestAnimationFrame(step)
                }
                requestAnimationFrame(step)
            })""")
            await page.context.close()
    return {"messages": messages, "first_render_ms": first, "jump_to_top_ms": jump, "scroll_frame_ms": frames}


async def send_to_render(browser: Any, sends: int, root: Path) -> dict[str, Any]:
    """Alice presses Enter in her browser; Bob's browser has the message on screen. Then the same through two
    Python peers (RoomClient + ChatDoc): reply() in one, the observer of the other."""
    room_dir = root / "latency"
    room_dir.mkdir()
    async with serving(room_dir) as served, served.client(ROOM, user="carol") as carol, served.client(ROOM, user="dave") as dave:
        await carol.wait_synced()
        await dave.wait_synced()
        thread_id, _ = create_thread(carol.chat, sender_id="carol", content="latency")
        hash_ = f"#/{ROOM}/{thread_id}"
        alice = await open_page(browser, served, served.folder_token(user="alice"), hash_=hash_)
        bob = await open_page(browser, served, served.folder_token(user="bob"), hash_=hash_)
        await bob.wait_for_selector(".message")
        await alice.evaluate("""() => addEventListener('keydown', (e) => { if (e.key === 'Enter') window.__sentAt = performance.timeOrigin + performance.now() }, true)""")
        await bob.evaluate("""() => {
            window.__seen = {}
            new MutationObserver(() => {
                const t = performance.timeOrigin + performance.now()
                for (const m of document.querySelectorAll('.message .body')) {
                    const k = m.textContent.trim().match(/^ping (\\d+)$/); if (k && !(k[1] in window.__seen)) window.__seen[k[1]] = t
                }
            }).observe(document.body, { childList: true, subtree: true, characterData: true })
        }""")
        browser_ms: list[float] = []
        for i in range(sends):
            await alice.fill(".composer-input", f"ping {i}")
            await alice.press(".composer-input", "Enter")
            await bob.wait_for_function("i => i in window.__seen", arg=str(i), timeout=10000)
            browser_ms.append(await bob.evaluate("i => window.__seen[i]", str(i)) - await alice.evaluate("window.__sentAt"))

        python_ms: list[float] = []
        arrived: dict[str, float] = {}
        waiting: dict[str, anyio.Event] = {}

        def on_change(messages: set[str], _threads: set[str]) -> None:
            now = time.perf_counter()
            for mid in messages:
                arrived.setdefault(mid, now)
                if mid in waiting:
                    waiting[mid].set()

        dave.chat.observe(on_change)
        for i in range(sends):
            t0 = time.perf_counter()
            mid = reply(carol.chat, thread_id, sender_id="carol", content=f"py {i}")
            waiting[mid] = anyio.Event()
            if mid not in arrived:
                with anyio.fail_after(10):
                    await waiting[mid].wait()
            python_ms.append((arrived[mid] - t0) * 1000)
    return {"sends": sends, "browser_to_browser_ms": browser_ms, "python_to_python_ms": python_ms}


def row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values):.1f} | {quantile(values, 0.99):.1f} | {len(values)} |"


def report(results: dict[str, Any]) -> str:
    b = results["bundle"]
    lines = [
        f"Bundle: app.js {b['js_bytes'] / 1024:.0f} KiB ({b['js_gzip_bytes'] / 1024:.0f} KiB gzip), "
        f"app.css {b['css_bytes'] / 1024:.1f} KiB ({b['css_gzip_bytes'] / 1024:.1f} KiB gzip)",
        "",
        "| measurement (ms) | p50 | p99 | n |",
        "|---|---|---|---|",
    ]
    for load in results["loads"]:
        n = load["messages"]
        lines.append(row(f"page load to the newest of {n:,} messages on screen", load["first_render_ms"]))
        lines.append(row(f"{n:,}: jump to the top, rendered", load["jump_to_top_ms"]))
        lines.append(row(f"{n:,}: frame while scrolling a screen a frame", load["scroll_frame_ms"]))
    lat = results["latency"]
    lines.append(row("send in one browser -> rendered in another", lat["browser_to_browser_ms"]))
    lines.append(row("reply() in one Python peer -> observed in another (baseline)", lat["python_to_python_ms"]))
    ratio = statistics.median(lat["browser_to_browser_ms"]) / statistics.median(lat["python_to_python_ms"])
    lines.append(f"\nBrowser-to-browser p50 is {ratio:.1f}x the Python-peer p50 over the same server in the same run.")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    results: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version(), "bundle": bundle_sizes()}
    with tempfile.TemporaryDirectory(prefix="chatdoc-bench-web-") as tmp:
        async with chromium() as browser:
            results["loads"] = [await load_times(browser, n, args.loads, Path(tmp)) for n in (1_000, 10_000)]
            print("loads done", file=sys.stderr)
            results["latency"] = await send_to_render(browser, args.sends, Path(tmp))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=100)
    parser.add_argument("--loads", type=int, default=5, help="page loads per chat size")
    args = parser.parse_args()
    results = anyio.run(main_async, args)
    OUT.mkdir(exist_ok=True)
    (OUT / "web.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    (OUT / "web.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
