"""`AgentRunner`: answers the prompts of one chat document's agent threads, turn by turn, by id.

The runner is a peer like any other: it holds a `ChatDoc` and neither knows nor cares how its updates
reach the others. It learns about work from `ChatDoc.observe` (the ids each change touched), never by
scanning the document per change. Per agent thread one worker runs the turns in prompt order, on one
agent process kept for the thread; threads run at the same time and touch only their own records.

A turn: claim (the reply is created `generating`, the thread `running`) -> the claim settles (a concurrent
claim by another runner must arrive within `claim_settle_s`; the loser stops before its agent is prompted)
-> session opened or resumed -> prompt, each streamed chunk appended to the reply -> finalize, or
interrupt (a person asked), or error (the agent failed). Every write goes through `claims`, which refuses
it once the runner no longer owns the reply. See SCHEMA.md section 8.
"""

from __future__ import annotations

import logging
import math
from bisect import insort
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
from pycrdt import Map

from chatdoc.document import ChatDoc
from chatdoc.ids import new_ulid
from chatdoc.records import MESSAGES, AcpConfig, Message

from . import claims
from .acp_client import AgentFailed, AgentProcess, spawn_agent
from .claims import Write
from .config import RunnerConfig, UnknownAgent
from .prompts import answered, backlog, is_prompt

log = logging.getLogger("chatdoc.agent")


@dataclass
class RunnerStats:
    turns_started: int = 0
    turns_completed: int = 0
    turns_interrupted: int = 0
    turns_failed: int = 0
    claims_lost: int = 0  # turns another runner won: nothing of them stayed in the document
    turns_recovered: int = 0  # dead runners' turns marked `server_restart`
    chunks_refused: int = 0  # chunks that arrived after the turn was over (after an interrupt)
    sessions_resumed: int = 0
    sessions_started: int = 0


@dataclass
class Turn:
    """A turn this runner claimed and is driving."""

    thread_id: str
    reply_id: str
    prompt: Message
    claimed_at: float  # anyio clock
    stopping: anyio.Event = field(default_factory=anyio.Event)
    why: str | None = None  # "interrupt" | "lost" | "over"
    requested_by: str | None = None
    session_id: str | None = None  # the agent session it runs in, once opened
    stored_session: str | None = None  # `acp_config.sessionId` when the turn began

    @property
    def new_session(self) -> str | None:
        """The session to remember at the end of the turn: set only when it differs from the stored one."""
        return self.session_id if self.session_id != self.stored_session else None

    def stop(self, why: str, by: str | None = None) -> None:
        if self.why is None:
            self.why, self.requested_by = why, by
            self.stopping.set()


class AgentSlot:
    """The agent process one thread's turns run on: started on first use, started again after it died or
    when the thread switches agent, stopped when idle. It remembers the session it opened for the thread."""

    def __init__(self) -> None:
        self.agent: AgentProcess | None = None
        self.key: Any = None
        self.session_id: str | None = None
        self._stack: AsyncExitStack | None = None

    async def ensure(self, key: Any, spawn: Callable[[], AbstractAsyncContextManager[AgentProcess]]) -> AgentProcess:
        if self.agent is not None and self.agent.alive and self.key == key:
            return self.agent
        await self.close()
        stack = AsyncExitStack()
        self.agent = await stack.enter_async_context(spawn())
        self._stack, self.key = stack, key
        return self.agent

    async def close(self) -> None:
        stack, self._stack, self.agent, self.key, self.session_id = self._stack, None, None, None, None
        if stack is not None:
            with anyio.CancelScope(shield=True):  # a stopping runner still stops its agents cleanly
                await stack.aclose()


class AgentRunner:
    """Runs the agent turns of one chat document.

    ```py
    async with anyio.create_task_group() as tg:
        runner = await tg.start(AgentRunner(chat, RunnerConfig()).run)
    ```
    `chat` must be synced with the room before `run` starts: what is already there is history, what
    arrives later is new.
    """

    def __init__(self, chat: ChatDoc, config: RunnerConfig | None = None) -> None:
        self.chat = chat
        self.config = config or RunnerConfig()
        self.claim = f"{self.config.name}/{new_ulid()}"  # unique per run: a restarted runner is a new owner
        self.stats = RunnerStats()
        self._turns: dict[str, Turn] = {}  # reply id -> the turn this runner drives
        self._waiting: dict[str, list[tuple[str, str]]] = {}  # thread -> sorted (date, prompt id)
        self._wakeups: dict[str, anyio.Event] = {}
        self._workers: set[str] = set()
        self._agent_threads: set[str] = set()
        self._foreign: set[str] = set()  # generating replies owned by someone else (or no one)
        self._recovering: set[str] = set()
        self._seen: set[str] = set()
        self._changes_in, self._changes = anyio.create_memory_object_stream[tuple[set[str], set[str]]](math.inf)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._observing = False
        self._stop_requested = anyio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop()` (or cancellation); stops every agent process it started on the way out."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            self._running = True
            if not self._observing:
                self.chat.observe(self._on_change)  # ChatDoc keeps listeners for good: register once
                self._observing = True
            try:
                self._start()
                tg.start_soon(self._dispatch)
                tg.start_soon(self._keep_leases)
                task_status.started(self)
                await self._stop_requested.wait()
                self._hand_back()
                tg.cancel_scope.cancel()
            finally:
                self._running = False

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def stop(self) -> None:
        """Stop gracefully: the turns still running are marked interrupted (`server_restart`) at once,
        instead of a lease later, and `run` returns. (Cancelling `run` stops without writing anything.)"""
        self._stop_requested.set()

    def _hand_back(self) -> None:
        for turn in list(self._turns.values()):
            if claims.recover(self.chat, turn.reply_id, self.claim) is Write.DONE:
                self.stats.turns_recovered += 1

    def active_turns(self) -> list[str]:
        return list(self._turns)

    def _start(self) -> None:
        view = self.chat.view
        self._seen = set(view.messages)
        not_before = self.chat.clock() - int(self.config.backlog_window_s * 1000)
        for thread_id in self.chat.thread_ids():
            if self.chat.is_agent_thread(thread_id):
                self._agent_threads.add(thread_id)
                for prompt in backlog(self.chat, thread_id, not_before_ms=not_before):
                    self._enqueue(prompt)
        self._foreign = {mid for mid, row in view.messages.items() if row.generating}
        self._sweep()  # restart recovery: generating replies whose owner's lease has passed

    # -- noticing work -----------------------------------------------------------------------------

    def _on_change(self, message_ids: set[str], thread_ids: set[str]) -> None:
        # Inside the commit: only note what changed; the dispatch task reads and writes afterwards.
        if self._running and (message_ids or thread_ids):
            self._changes_in.send_nowait((message_ids, thread_ids))

    async def _dispatch(self) -> None:
        async for message_ids, thread_ids in self._changes:
            self._on_changes(message_ids, thread_ids)

    def _on_changes(self, message_ids: set[str], thread_ids: set[str]) -> None:
        view = self.chat.view
        threads = set(thread_ids)
        for mid in message_ids:
            row = view.messages.get(mid)
            if row is not None:
                threads.add(row.thread_id)
            turn = self._turns.get(mid)
            if turn is not None:
                self._check_turn(turn)
            elif row is not None and row.generating:
                self._foreign.add(mid)
            else:
                self._foreign.discard(mid)
            if row is not None and mid not in self._seen:
                self._seen.add(mid)
                message = self.chat.message(mid)
                if is_prompt(self.chat, message) and not answered(self.chat, message):
                    self._enqueue(message)
        for tid in threads:
            if tid not in self._agent_threads and self.chat.is_agent_thread(tid):
                # Became an agent thread after its messages arrived (config patched later): its
                # unanswered prompts count from now.
                self._agent_threads.add(tid)
                not_before = self.chat.clock() - int(self.config.backlog_window_s * 1000)
                for prompt in backlog(self.chat, tid, not_before_ms=not_before):
                    self._enqueue(prompt)
            self._wake(tid)

    def _check_turn(self, turn: Turn) -> None:
        record = self.chat.roots[MESSAGES].get(turn.reply_id)
        if not isinstance(record, Map) or record.get("acp_claimed_by") != self.claim:
            turn.stop("lost")
        elif record.get("acp_interrupt_requested_at") is not None:
            turn.stop("interrupt", record.get("acp_interrupt_requested_by"))
        elif not record.get("generating"):
            turn.stop("over")  # ended by someone else: stop the agent, write nothing

    def _enqueue(self, prompt: Message) -> None:
        queue = self._waiting.setdefault(prompt.thread_id, [])
        key = (prompt.date, prompt.message_id)
        if key in queue:
            return
        insort(queue, key)
        if prompt.thread_id not in self._workers and self._task_group is not None:
            self._workers.add(prompt.thread_id)
            self._task_group.start_soon(self._serve_thread, prompt.thread_id)
        self._wake(prompt.thread_id)

    def _wake(self, thread_id: str) -> None:
        event = self._wakeups.get(thread_id)
        if event is not None:
            event.set()

    def _busy(self, thread_id: str) -> bool:
        """A turn (this runner's or another's) is generating in the thread: the next one waits for it."""
        view = self.chat.view
        state = view.states.get(thread_id)
        active = view.messages.get(state.active_message_id) if state and state.active_message_id else None
        return active is not None and active.generating

    async def _next_prompt(self, thread_id: str) -> Message:
        queue = self._waiting.setdefault(thread_id, [])
        while True:
            while queue and not self._busy(thread_id):
                _, prompt_id = queue.pop(0)
                prompt = self.chat.message(prompt_id)
                if is_prompt(self.chat, prompt) and not answered(self.chat, prompt):
                    return prompt  # type: ignore[return-value]
            event = self._wakeups[thread_id] = anyio.Event()
            await event.wait()

    # -- turns -------------------------------------------------------------------------------------

    async def _serve_thread(self, thread_id: str) -> None:
        slot = AgentSlot()
        try:
            while True:
                prompt = None
                with anyio.move_on_after(self.config.agent_idle_s if slot.agent else math.inf):
                    prompt = await self._next_prompt(thread_id)
                if prompt is None:
                    await slot.close()  # idle: the next turn starts it again and resumes the session
                    continue
                await self._take_turn(slot, prompt)
        finally:
            await slot.close()

    async def _take_turn(self, slot: AgentSlot, prompt: Message) -> None:
        acp = self.chat.thread_config(prompt.thread_id).acp_config
        try:
            agent_name, command = self.config.agent_for(acp)
            problem = None
        except UnknownAgent as exc:
            agent_name, command, problem = self.config.default_agent, None, str(exc)
        sender = self.config.sender_for(acp, agent_name)
        reply_id = claims.claim_turn(self.chat, prompt, agent_id=sender, claim=self.claim, lease_s=self.config.lease_s)
        if reply_id is None:
            return
        turn = Turn(prompt.thread_id, reply_id, prompt, claimed_at=anyio.current_time())
        self._turns[reply_id] = turn
        self.stats.turns_started += 1
        try:
            if problem is not None or command is None:
                await self._settled(turn)
                self._fail(turn, problem or "no agent command")
                return
            await self._drive(slot, turn, agent_name, command, acp)
        finally:
            self._turns.pop(reply_id, None)
            self._wake(prompt.thread_id)

    async def _settled(self, turn: Turn) -> bool:
        """Wait until a concurrent claim would have arrived; True when this runner still owns the turn."""
        await anyio.sleep_until(turn.claimed_at + self.config.claim_settle_s)
        if claims.owned(self.chat, turn.reply_id, self.claim) is None:
            turn.stop("lost")
            self.stats.claims_lost += 1
            log.info("turn %s: another runner's claim stood; this one stops before prompting its agent", turn.reply_id)
            return False
        return True

    async def _drive(self, slot: AgentSlot, turn: Turn, agent_name: str, command: Any, acp: AcpConfig | None) -> None:
        cwd = (acp.workingDirectory if acp else None) or self.config.cwd
        allow_write = bool(acp.allowWrite) if acp else False
        env = dict(command.env)
        try:
            agent = await slot.ensure(
                (agent_name, command, cwd, allow_write),
                lambda: spawn_agent(command.argv, env=env, cwd=cwd, allow_write=allow_write),
            )
        except AgentFailed as exc:
            if await self._settled(turn):
                self._fail(turn, str(exc))
            return
        if not await self._settled(turn) or self._stopped_before_prompt(turn):
            return
        try:
            session_id, turn.stored_session = await self._session(slot, agent, turn, cwd, acp)
            turn.session_id = session_id
        except AgentFailed as exc:
            self._fail(turn, str(exc))
            await slot.close()
            return
        if claims.note_session(self.chat, turn.reply_id, self.claim, session_id) is Write.LOST:
            turn.stop("lost")
            self.stats.claims_lost += 1
            return
        outcome, failure, unresponsive = await self._prompt(agent, turn, session_id)
        if unresponsive or not agent.alive:
            await slot.close()  # it ignored cancel, or it died: the next turn gets a fresh process
        if turn.why == "lost" or claims.owned(self.chat, turn.reply_id, self.claim) is None:
            self.stats.claims_lost += 1
            return
        if failure is not None:
            self._fail(turn, str(failure))
            return
        if turn.why == "interrupt":
            self._interrupt(turn)  # asked for as the agent finished: stamped now (once: a no-op if it was)
            return
        if turn.why is not None:
            return  # ended by someone else
        result = claims.finalize(
            self.chat,
            turn.reply_id,
            self.claim,
            usage=outcome.usage if outcome else None,
            session_id=session_id,
            persist_session=turn.new_session is not None,
            by=self.config.name,
            next_waiting=bool(self._waiting.get(turn.thread_id)),
        )
        if result is Write.DONE:
            self.stats.turns_completed += 1

    def _stopped_before_prompt(self, turn: Turn) -> bool:
        if turn.why == "interrupt":
            self._interrupt(turn)
        return turn.why is not None

    async def _session(
        self, slot: AgentSlot, agent: AgentProcess, turn: Turn, cwd: str, acp: AcpConfig | None
    ) -> tuple[str, str | None]:
        """The thread's session on this agent process: the one already open when it is the one the config
        names, else the stored one resumed, else a new one. Returns it with the stored
        `acp_config.sessionId` (the config is the truth: another runner may have moved it on)."""
        stored = acp.sessionId if acp else None
        if slot.session_id is None or slot.session_id != stored:
            session = await agent.open_session(cwd, resume=stored)
            if session.note:
                log.warning("thread %s: %s", turn.thread_id, session.note)
            if session.resumed:
                self.stats.sessions_resumed += 1
            else:
                self.stats.sessions_started += 1
            slot.session_id = session.session_id
        return slot.session_id, stored

    async def _prompt(self, agent: AgentProcess, turn: Turn, session_id: str) -> tuple[Any, AgentFailed | None, bool]:
        """Send the prompt, stream its chunks into the reply, stop the agent when asked.

        Returns (outcome, failure, unresponsive): unresponsive when it did not stop within the grace."""

        def on_text(chunk: str) -> None:
            result = claims.stream(self.chat, turn.reply_id, self.claim, chunk)
            if result is Write.LOST:
                turn.stop("lost")
            elif result is Write.REFUSED:
                self.stats.chunks_refused += 1

        outcome = failure = None
        with anyio.CancelScope() as prompt_scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stop_when_asked, agent, turn, session_id, prompt_scope)
                try:
                    outcome = await agent.prompt(session_id, turn.prompt.content, on_text)
                except AgentFailed as exc:
                    failure = exc
                tg.cancel_scope.cancel()
        return outcome, failure, prompt_scope.cancelled_caught

    async def _stop_when_asked(self, agent: AgentProcess, turn: Turn, session_id: str, prompt_scope: anyio.CancelScope) -> None:
        await turn.stopping.wait()
        if turn.why == "interrupt":
            self._interrupt(turn)  # stamped at once: chunks the agent still sends are refused
        await agent.cancel(session_id)
        await anyio.sleep(self.config.cancel_grace_s)
        log.warning("turn %s: the agent did not stop within %gs of session/cancel; stopping it", turn.reply_id, self.config.cancel_grace_s)
        prompt_scope.cancel()

    def _interrupt(self, turn: Turn) -> None:
        by = turn.requested_by or "someone"
        result = claims.interrupt(
            self.chat,
            turn.reply_id,
            self.claim,
            text=f"interrupted by {by}",
            next_waiting=bool(self._waiting.get(turn.thread_id)),
            session_id=turn.new_session,
            by=self.config.name,
        )
        if result is Write.DONE:
            self.stats.turns_interrupted += 1

    def _fail(self, turn: Turn, error: str) -> None:
        log.warning("turn %s in thread %s failed: %s", turn.reply_id, turn.thread_id, error)
        written = claims.interrupt(
            self.chat, turn.reply_id, self.claim, text=error, error=error, session_id=turn.new_session, by=self.config.name
        )
        if written is Write.DONE:
            self.stats.turns_failed += 1

    # -- leases and recovery -----------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        while True:
            await anyio.sleep(self.config.lease_s / 3)
            for reply_id in claims.refresh_leases(self.chat, list(self._turns), self.claim, self.config.lease_s):
                turn = self._turns.get(reply_id)
                if turn is not None:
                    turn.stop("lost")
            self._sweep()

    def _sweep(self) -> None:
        for reply_id in list(self._foreign):
            row = self.chat.view.messages.get(reply_id)
            if row is None or not row.generating or reply_id in self._turns:
                self._foreign.discard(reply_id)
            elif reply_id not in self._recovering and claims.lease_expired(self.chat, reply_id):
                self._recovering.add(reply_id)
                assert self._task_group is not None
                self._task_group.start_soon(self._recover, reply_id)

    async def _recover(self, reply_id: str) -> None:
        try:
            if not claims.take_over(self.chat, reply_id, self.claim, self.config.lease_s):
                return
            await anyio.sleep(self.config.claim_settle_s)  # a concurrent take-over must have arrived
            if claims.recover(self.chat, reply_id, self.claim) is Write.DONE:
                self.stats.turns_recovered += 1
                log.info("recovered reply %s: its runner is gone (server_restart)", reply_id)
        finally:
            self._recovering.discard(reply_id)
            self._foreign.discard(reply_id)
