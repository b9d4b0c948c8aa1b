"""The offline demo's person: send a prompt to an agent thread and print the reply as it streams.

    chatdoc serve chats --no-auth &
    chatdoc agent --server ws://127.0.0.1:8765 demo.chat &
    python -m server.agent.demo --server ws://127.0.0.1:8765 demo.chat "Tell me about CRDTs [chunks=30] [delay=0.05]"

The first run creates the thread "agent demo" (an agent thread for the runner's default agent); later
runs continue it, so the agent resumes its session (the scripted agent counts the turns). Ctrl-C while
the reply streams asks the runner to interrupt it, through the document, as a browser would.
"""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from chatdoc import ChatDoc, Message, create_thread, reply
from chatdoc.turns import request_interrupt
from server.client import RoomClient

from .claims import reply_id_for

THREAD_NAME = "agent demo"


def demo_thread(chat: ChatDoc, prompt: str, sender: str) -> str:
    """The prompt's message id, in the demo thread (made on first use)."""
    for thread_id in chat.thread_ids():
        if chat.thread_config(thread_id).name == THREAD_NAME and chat.is_agent_thread(thread_id):
            return reply(chat, thread_id, sender_id=sender, content=prompt)
    _, root = create_thread(chat, sender_id=sender, content=prompt, config={"name": THREAD_NAME, "acp_config": {"model": "scripted"}})
    return root


async def converse(url: str, token: str | None, prompt: str, sender: str) -> int:
    async with RoomClient(url, token=token) as client:
        await client.wait_synced()
        chat = client.chat
        reply_id = reply_id_for(chat.message(demo_thread(chat, prompt, sender)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_interrupt_on_ctrl_c, chat, reply_id, sender)
            message = await _show(chat, reply_id)
            tg.cancel_scope.cancel()
        if message.acp_interrupted:
            print(f"[{message.acp_interrupted_reason}: {message.acp_interrupted_text}]")
        state = chat.thread_state(message.thread_id)
        print(f"[thread state {state.state}; session {chat.thread_config(message.thread_id).acp_config.sessionId}]")
    return 0


async def _show(chat: ChatDoc, reply_id: str) -> Message:
    shown = 0
    while True:
        message = chat.message(reply_id)
        if message is not None:
            sys.stdout.write(message.content[shown:])
            sys.stdout.flush()
            shown = len(message.content)
            if not message.generating:
                print()
                return message
        await anyio.sleep(0.02)


async def _interrupt_on_ctrl_c(chat: ChatDoc, reply_id: str, sender: str) -> None:
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            if chat.message(reply_id) is not None:
                request_interrupt(chat, reply_id, by=sender)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("room", help="the room, e.g. demo.chat")
    parser.add_argument("prompt")
    parser.add_argument("--server", default="ws://127.0.0.1:8765")
    parser.add_argument("--token", help="a write token for the room (not needed with `serve --no-auth`)")
    parser.add_argument("--as", dest="sender", default="demo-user")
    args = parser.parse_args()
    return anyio.run(converse, f"{args.server.rstrip('/')}/{args.room}", args.token, args.prompt, args.sender)


if __name__ == "__main__":
    raise SystemExit(main())
