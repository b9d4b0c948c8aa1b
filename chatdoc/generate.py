"""Healthy, realistic chat documents for demos, tests and benchmarks (deterministic per seed).

People talk in threads; agent threads carry an `acp_config` and alternate prompts with streamed,
finalised agent replies that record usage and the agent's session id. Some messages are edited, a few
deleted, some threads named, coloured and pinned.
"""

from __future__ import annotations

import random
import uuid

from .document import ChatDoc, Progress
from .ids import derived_ulid, parse_date
from .operations import create_thread, delete_message, edit_message, patch_thread_config, reply
from .turns import append_stream, finalize_turn, persist_session_id, start_turn

START = parse_date("2026-01-05T09:00:00.000Z")
WORDS = (
    "the a we can should merge thread agent config update test deploy review patch build sync peer "
    "document message reply edit fix bug issue plan migrate server client browser latency token stream"
).split()
MODELS = ("gpt-5.3-codex", "gpt-5.2", "claude-sonnet-4.5")
COLORS = ("#e91e63", "#3f51b5", "#009688", "#ff9800", None)


class _Clock:
    """Advances a few seconds per call, so dates increase like a real conversation."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ms = START

    def __call__(self) -> int:
        self.ms += self.rng.randint(1, 90_000)
        return self.ms


def generate(*, threads: int = 20, messages: int = 400, agent_threads: int = 5, seed: int = 0,
             progress: Progress | None = None) -> ChatDoc:
    """A document with `threads` threads (`agent_threads` of them agent threads) and `messages`
    messages in all, every id derived from `seed`. `progress(what, done, total)` hears of each thread."""
    if not 0 <= agent_threads <= threads or threads < 1 or messages < threads:
        raise ValueError("need 1 <= threads <= messages and 0 <= agent_threads <= threads")
    rng = random.Random(seed)
    clock = _Clock(rng)
    chat = ChatDoc(clock=clock)
    chat.doc.client_id  # noqa: B018 - fixed by pycrdt at creation; ids below do not depend on it
    people = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5)]
    counter = iter(range(10**12))

    def next_id(ms: int) -> str:
        return derived_ulid(ms, "generate", seed, next(counter))

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    per_thread = [messages // threads + (1 if i < messages % threads else 0) for i in range(threads)]
    with chat.transaction("chatdoc.generate"):
        for i, count in enumerate(per_thread):
            is_agent = i < agent_threads
            author = rng.choice(people)
            ms = clock()
            config: dict = {"name": f"{text(3)[:-1]}" if rng.random() < 0.7 else None}
            if rng.random() < 0.3:
                config["thread_color"] = rng.choice(COLORS)
            if rng.random() < 0.1:
                config["pin"] = True
            if is_agent:
                config["acp_config"] = {"model": rng.choice(MODELS), "reasoning": "medium", "workingDirectory": "/home/user/project", "allowWrite": rng.random() < 0.5}
            tid, root = create_thread(
                chat, sender_id=author, content=text(rng.randint(5, 40)), config=config,
                thread_id=next_id(ms), message_id=next_id(ms), date_ms=ms,
            )
            session = f"sess-{seed}-{i}"
            for j in range(1, count):
                if is_agent and j % 2 == 1:
                    ms = clock()
                    mid = start_turn(chat, tid, agent_id=config["acp_config"]["model"], message_id=next_id(ms))
                    for _ in range(rng.randint(2, 8)):
                        append_stream(chat, mid, text(rng.randint(3, 12)) + " ")
                    if j == 1:
                        persist_session_id(chat, tid, session, by="agent")
                    tokens = rng.randint(100, 5000)
                    finalize_turn(chat, mid, acp_thread_id=session, usage={
                        "input_tokens": tokens, "output_tokens": tokens // 4, "cached_input_tokens": tokens // 2,
                        "reasoning_output_tokens": tokens // 8, "total_tokens": tokens + tokens // 4,
                        "model_context_window": 400_000,
                    })
                    continue
                ms = clock()
                mid = reply(chat, tid, sender_id=rng.choice(people), content=text(rng.randint(3, 60)), message_id=next_id(ms), date_ms=ms)
                roll = rng.random()
                if roll < 0.05:
                    edit_message(chat, mid, author_id=author, content=text(rng.randint(3, 30)), edit_id=next_id(clock()))
                elif roll < 0.06:
                    delete_message(chat, mid, by=author)
            if rng.random() < 0.05:
                patch_thread_config(chat, tid, {"thread_icon": "star"}, by=author)
            if progress is not None:
                progress("generating threads", i + 1, threads)
    return chat
