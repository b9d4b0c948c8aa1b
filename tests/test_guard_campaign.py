"""Issue 10's campaign: a buggy writer among honest peers.

A hypothesis state machine over a repairing server, an agent runner, two people and one buggy client.
People reply, edit, soft-delete and patch thread settings; the runner runs turns as chatdoc.turns does
(start, stream, finalize, persisting its session id); the buggy client makes the writes of issue 10's
table at random. The network (tests/test_convergence.py) delays, reorders across senders and duplicates
updates; one sender's updates keep their order. A buggy write is made on a chat the server is current
with, and reaches everyone (with the server's restoration, and whatever that builds on) before anybody writes again: an honest
edit made concurrently into a map the buggy client deleted would be lost with it (SCHEMA.md section
11). Between buggy writes, honest updates are delayed, reordered and duplicated at will.

At the end every record that ever existed is present with its latest honest value, every agent thread
still has its settings, and all peers hold the same document.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import pytest
from conftest import stored
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from pycrdt import Map
from test_convergence import AGENT, BROWSER, SERVER, T0, Network, Peer

from chatdoc import (
    append_stream,
    create_thread,
    delete_message,
    edit_message,
    finalize_turn,
    patch_thread_config,
    persist_session_id,
    reply,
    start_turn,
)
from chatdoc.records import HEAD, MESSAGES, THREAD_CONFIGS

BUGGY = "test.buggy-writer"
STATS: Counter[str] = Counter()  # over a session's examples, for the record (see the final test)


@dataclass
class Honest:
    """What honest peers wrote into one message, to compare the end state with."""

    head: dict[str, Any]
    text: str = ""  # a streamed reply's text so far
    streamed: bool = False
    edits: set[str] = field(default_factory=set)
    deleted: bool = False


class BuggyWriterCampaign(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.network = Network()
        self.messages: dict[str, Honest] = {}
        self.agent_config: dict[str, dict[str, str]] = {}  # agent thread -> acp_config as honestly patched
        self.running: dict[str, str] = {}  # agent thread -> the reply the runner is streaming
        self.serial = count()

    @initialize(client_ids=st.lists(st.integers(1, 2**31 - 1), min_size=5, max_size=5, unique=True))
    def connect(self, client_ids: list[int]) -> None:
        roles = (SERVER, AGENT, BROWSER, BROWSER, BROWSER)
        self.peers = [Peer(self.network, role, cid, T0 + 10 * i) for i, (role, cid) in enumerate(zip(roles, client_ids))]
        self.server, self.runner, self.alice, self.bob, self.buggy = self.peers
        self.new_thread(0, True)
        self.network.settle()

    def note_messages(self, peer: Peer) -> None:
        """Learn honest messages a peer just wrote (its own document shows them at once)."""
        for mid, record in peer.chat.roots[MESSAGES].items():
            if mid not in self.messages and isinstance(record, Map):
                self.messages[mid] = Honest(head=dict(record[HEAD]), streamed="body" in record)

    def pick(self, items: list[str], i: int) -> str | None:
        return sorted(items)[i % len(items)] if items else None

    # -- honest peers ------------------------------------------------------------------------------

    @rule(who=st.integers(0, 1), agent=st.booleans())
    def new_thread(self, who: int, agent: bool) -> None:
        peer = (self.alice, self.bob)[who]
        peer.now += 1
        config = {"model": "gpt-5.3-codex", "reasoning": "high", "workingDirectory": "/w"} if agent else None
        tid, _ = create_thread(peer.chat, sender_id=peer.name, content=f"thread {next(self.serial)}",
                               config={"acp_config": config} if config else None)
        if config:
            self.agent_config[tid] = dict(config)
        self.note_messages(peer)

    @rule(who=st.integers(0, 1), thread=st.integers(0, 50))
    def reply(self, who: int, thread: int) -> None:
        peer = (self.alice, self.bob)[who]
        tid = self.pick(peer.chat.thread_ids(), thread)
        if tid is not None:
            peer.now += 1
            reply(peer.chat, tid, sender_id=peer.name, content=f"reply {next(self.serial)}")
            self.note_messages(peer)

    @rule(who=st.integers(0, 1), message=st.integers(0, 500))
    def edit(self, who: int, message: int) -> None:
        peer = (self.alice, self.bob)[who]
        mid = self.pick([m for m in self.messages if peer.chat.message(m) is not None], message)
        if mid is not None:
            peer.now += 1
            self.messages[mid].edits.add(edit_message(peer.chat, mid, author_id=peer.name, content=f"v{next(self.serial)}"))

    @rule(message=st.integers(0, 500))
    def soft_delete(self, message: int) -> None:
        mid = self.pick([m for m in self.messages if self.bob.chat.message(m) is not None], message)
        if mid is not None:
            self.bob.now += 1
            delete_message(self.bob.chat, mid, by="bob")
            self.messages[mid].deleted = True

    @rule(thread=st.integers(0, 50), value=st.sampled_from(["low", "high", None]))
    def patch_reasoning(self, thread: int, value: str | None) -> None:
        """Alice alone patches `reasoning` (None deletes that one key on purpose): one writer per key,
        so its latest value is the honest one."""
        tid = self.pick([t for t in self.agent_config if self.alice.chat.thread(t) is not None], thread)
        if tid is not None:
            self.alice.now += 1
            patch_thread_config(self.alice.chat, tid, {"acp_config": {"reasoning": value}}, by="alice")
            if value is None:
                self.agent_config[tid].pop("reasoning", None)
            else:
                self.agent_config[tid]["reasoning"] = value

    # -- the agent runner --------------------------------------------------------------------------

    @rule(thread=st.integers(0, 50))
    def runner_starts_a_turn(self, thread: int) -> None:
        chat = self.runner.chat
        tid = self.pick([t for t in self.agent_config if t not in self.running and chat.thread(t) is not None], thread)
        prompt = chat.message_ids(tid)[-1] if tid is not None else None
        if tid is None or prompt is None:
            return
        self.runner.now += 1
        with chat.transaction("chatdoc.agent.claim"):  # as the runner's claim does (SCHEMA.md section 8)
            mid = start_turn(chat, tid, agent_id="gpt-5.3-codex")
            chat.roots[MESSAGES][mid]["acp_prompt_message_id"] = prompt
            chat.roots[MESSAGES][mid]["acp_claimed_by"] = "runner/1"
        self.running[tid] = mid
        self.note_messages(self.runner)

    @rule(thread=st.integers(0, 50), chunk=st.sampled_from(["Looking", " at", " the code", "é", "\n"]))
    def runner_streams(self, thread: int, chunk: str) -> None:
        tid = self.pick(list(self.running), thread)
        if tid is not None and append_stream(self.runner.chat, self.running[tid], chunk):
            self.messages[self.running[tid]].text += chunk

    @rule(thread=st.integers(0, 50))
    def runner_finalizes(self, thread: int) -> None:
        tid = self.pick(list(self.running), thread)
        if tid is not None:
            mid = self.running.pop(tid)
            self.runner.now += 1
            session = f"sess-{next(self.serial)}"
            finalize_turn(self.runner.chat, mid, usage={"input_tokens": 10, "output_tokens": 5}, acp_thread_id=session)
            persist_session_id(self.runner.chat, tid, session, by="runner")
            self.agent_config[tid]["sessionId"] = session

    # -- the network -------------------------------------------------------------------------------

    @rule(link=st.integers(0, 100))
    def deliver(self, link: int) -> None:
        self.network.deliver(link)

    @rule(link=st.integers(0, 100), item=st.integers(0, 100))
    def deliver_again(self, link: int, item: int) -> None:
        self.network.deliver_again(link, item)

    @rule(a=st.integers(0, 4), b=st.integers(0, 4))
    def sync_by_state(self, a: int, b: int) -> None:
        if a != b:
            self.network.sync_by_state(a, b)

    # -- the buggy client --------------------------------------------------------------------------

    # One rule per kind of write, so that a run of 40 steps holds several.
    @rule(pick=st.integers(0, 500), restore_first=st.booleans())
    def buggy_deletes_a_config(self, pick: int, restore_first: bool) -> None:
        self.buggy_write("del_config", pick, 1, restore_first)

    @rule(pick=st.integers(0, 500), restore_first=st.booleans())
    def buggy_recreates_config_and_root(self, pick: int, restore_first: bool) -> None:
        self.buggy_write("config_and_root_recreated", pick, 1, restore_first)

    @rule(pick=st.integers(0, 500), restore_first=st.booleans())
    def buggy_empties_acp_config(self, pick: int, restore_first: bool) -> None:
        self.buggy_write("acp_config_emptied", pick, 1, restore_first)

    @rule(pick=st.integers(0, 500), restore_first=st.booleans())
    def buggy_nulls_acp_config(self, pick: int, restore_first: bool) -> None:
        self.buggy_write("acp_config_nulled", pick, 1, restore_first)

    @rule(pick=st.integers(0, 500), restore_first=st.booleans())
    def buggy_replaces_a_message(self, pick: int, restore_first: bool) -> None:
        self.buggy_write("message_replaced", pick, 1, restore_first)

    @rule(pick=st.integers(0, 500), how_many=st.integers(1, 4), restore_first=st.booleans())
    def buggy_deletes_messages(self, pick: int, how_many: int, restore_first: bool) -> None:
        self.buggy_write("messages_deleted", pick, how_many, restore_first)

    @invariant()
    def count_steps(self) -> None:
        STATS["steps"] += 1

    def buggy_write(self, write: str, pick: int, how_many: int, restore_first: bool) -> None:
        # The server is current with everything honest, the buggy client with the server.
        for peer in self.peers[1:]:
            self.network.flush(peer, self.server)
        self.network.sync_by_state(self.server.index, self.buggy.index)
        doc, roots = self.buggy.chat.doc, self.buggy.chat.roots
        with doc.transaction(origin=BUGGY):
            self.damage(write, roots, pick, how_many)
        STATS["buggy writes"] += 1
        # Its write and the server's restoration reach everyone (in either order) before anyone writes.
        self.network.flush(self.buggy, self.server)
        others = self.peers[1:4]
        for peer in others:
            first, second = (self.server, self.buggy) if restore_first else (self.buggy, self.server)
            self.network.flush(first, peer)
            self.network.flush(second, peer)
        self.network.flush(self.server, self.buggy)
        # A restoration may build on honest updates still on their way to a peer (held back there
        # until they come): those arrive too.
        self.network.settle()
        event(f"buggy write: {write}")

    def damage(self, write: str, roots: dict[str, Map], target: int, how_many: int) -> None:
        threads = sorted(t for t in (self.agent_config if "config" in write else roots["threads"].keys())
                         if t in roots[THREAD_CONFIGS] and t in roots["threads"])
        if not threads:
            return
        tid = threads[target % len(threads)]
        messages = sorted(m for m in self.messages if m in roots[MESSAGES])
        if write == "del_config":
            roots[THREAD_CONFIGS].pop(tid, None)
        elif write == "config_and_root_recreated":
            roots[THREAD_CONFIGS][tid] = Map()
            root_id = roots["threads"][tid]["root_message_id"]
            roots[MESSAGES][root_id] = Map({HEAD: {**roots[MESSAGES][root_id][HEAD], "body": ""}})
        elif write == "acp_config_emptied":
            roots[THREAD_CONFIGS][tid]["acp_config"] = Map()
        elif write == "acp_config_nulled":
            acp = roots[THREAD_CONFIGS][tid]["acp_config"]
            for key in list(acp.keys()):
                acp[key] = None
        elif write == "message_replaced" and messages:
            roots[MESSAGES][messages[target % len(messages)]] = Map()
        elif write == "messages_deleted" and messages:
            for i in range(how_many):
                roots[MESSAGES].pop(messages[(target + i * 7) % len(messages)], None)

    # -- the end -----------------------------------------------------------------------------------

    def teardown(self) -> None:
        if not hasattr(self, "server"):
            return
        self.network.settle()
        documents = [stored(peer.chat) for peer in self.peers]
        assert all(doc == documents[0] for doc in documents[1:]), "peers hold different documents"
        for peer in self.peers:
            self.assert_honest_values(peer)
        report = self.server.chat.integrity()
        assert report.clean, report.describe()
        assert self.server.chat.full_check().clean
        STATS["examples"] += 1
        STATS["records restored"] += self.server.chat.records_restored
        event(f"records restored: {min(self.server.chat.records_restored, 10)}{'+' if self.server.chat.records_restored >= 10 else ''}")

    def assert_honest_values(self, peer: Peer) -> None:
        chat = peer.chat
        for mid, honest in self.messages.items():
            message = chat.message(mid)
            assert message is not None, f"{peer}: message {mid} lost"
            head = chat.roots[MESSAGES][mid][HEAD]
            assert head == honest.head, f"{peer}: head of {mid} changed"
            if honest.streamed:
                assert message.body == honest.text, f"{peer}: text of {mid}"
            assert {e.edit_id for e in message.history} == honest.edits, f"{peer}: edits of {mid}"
            assert message.deleted == honest.deleted
        for tid, acp in self.agent_config.items():
            assert chat.is_agent_thread(tid), f"{peer}: {tid} is no agent thread any more"
            config = chat.thread_config(tid).acp_config
            assert config is not None
            kept = {k: getattr(config, k) for k in acp}
            assert kept == acp, f"{peer}: settings of {tid}"
            assert config.reasoning == acp.get("reasoning")


PROFILES = {
    "default": settings(max_examples=40, stateful_step_count=40, deadline=None, print_blob=True,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
    "long": settings(max_examples=400, stateful_step_count=80, deadline=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
}

TestBuggyWriter = BuggyWriterCampaign.TestCase
TestBuggyWriter.settings = PROFILES[os.environ.get("CHATDOC_HYPOTHESIS_PROFILE", "default")]


@pytest.mark.slow
def test_long_buggy_writer_campaign(request: pytest.FixtureRequest) -> None:
    markexpr = request.config.option.markexpr or ""
    if "slow" not in markexpr or "not slow" in markexpr:
        pytest.skip("a long campaign: run with `-m slow` (or CHATDOC_HYPOTHESIS_PROFILE=long)")
    run_state_machine_as_test(BuggyWriterCampaign, settings=PROFILES["long"])


def test_campaign_statistics() -> None:
    """Runs after the campaign in file order: prints what it did (`pytest -s` shows it)."""
    if STATS["examples"]:
        print(f"\nbuggy-writer campaign: {dict(STATS)}")
        assert STATS["buggy writes"] > 0 and STATS["records restored"] > 0
