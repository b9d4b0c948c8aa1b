"""Which messages are prompts for an agent, and which prompts still wait for their reply.

A prompt is a message a person wrote in an agent thread (`thread_config.acp_config` set): not deleted,
and carrying none of the fields only agent replies carry. It is answered when its derived reply exists
(`claims.reply_id_for`); nothing else is needed to know, on any peer, whether it was.
"""

from __future__ import annotations

from chatdoc.document import ChatDoc
from chatdoc.ids import parse_date
from chatdoc.records import MESSAGES, Message

from .claims import reply_id_for


def is_agent_reply(message: Message) -> bool:
    return (
        message.generating
        or message.acp_claimed_by is not None
        or message.acp_prompt_message_id is not None
        or message.acp_thread_id is not None
        or message.acp_usage is not None
        or message.acp_interrupted
    )


def is_prompt(chat: ChatDoc, message: Message | None) -> bool:
    return (
        message is not None
        and not message.deleted
        and not is_agent_reply(message)
        and chat.is_agent_thread(message.thread_id)
    )


def answered(chat: ChatDoc, prompt: Message) -> bool:
    return reply_id_for(prompt) in chat.roots[MESSAGES]


def backlog(chat: ChatDoc, thread_id: str, *, not_before_ms: int) -> list[Message]:
    """The prompts at the end of an agent thread that nobody answered (sent while no runner was up).

    Walks back from the newest message and stops at the first answered prompt, at an agent reply that
    names no prompt (a writer that predates derived ids), or at a prompt older than `not_before_ms`: an
    old chat whose last question never got an answer is not answered years later on a runner's start."""
    if not chat.is_agent_thread(thread_id):
        return []
    waiting: list[Message] = []
    for message_id in reversed(chat.message_ids(thread_id)):
        message = chat.message(message_id)
        if message is None or message.deleted:
            continue
        if is_agent_reply(message):
            if message.acp_prompt_message_id is None:
                break
            continue  # a reply to some earlier prompt: that prompt marks where the answered part ends
        if answered(chat, message) or parse_date(message.date) < not_before_ms:
            break
        waiting.append(message)
    return waiting[::-1]
