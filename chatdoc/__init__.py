"""chatdoc: collaborative chat documents that cannot be corrupted.

One chat is one Yjs document with a map per record type (threads, thread_configs, messages,
thread_states, meta), each record keyed by an immutable ULID. See SCHEMA.md for the contract.
"""

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it (`chatdoc --version` prints it)

from .document import REPAIR_ORIGIN, ChatDoc
from .ids import derived_ulid, format_date, new_ulid, parse_date
from .integrity import COUNTERS, IntegrityReport
from .operations import (
    ChatError,
    create_thread,
    delete_message,
    edit_message,
    fork_thread,
    patch_thread_config,
    reply,
    set_thread_state,
)
from .records import (
    AcpConfig,
    AcpUsage,
    Edit,
    Message,
    RecordError,
    Thread,
    ThreadConfig,
    ThreadConfigPatch,
    ThreadState,
)
from .migrate import migrate_file, open_chat
from .turns import (
    append_stream,
    finalize_turn,
    interrupt_turn,
    persist_session_id,
    recover_after_restart,
    request_interrupt,
    start_turn,
)

__all__ = [
    "COUNTERS", "REPAIR_ORIGIN", "AcpConfig", "AcpUsage", "ChatDoc", "ChatError", "Edit", "IntegrityReport",
    "Message", "RecordError", "Thread", "ThreadConfig", "ThreadConfigPatch", "ThreadState", "append_stream",
    "create_thread", "delete_message", "derived_ulid", "edit_message", "finalize_turn", "fork_thread",
    "format_date", "interrupt_turn", "migrate_file", "new_ulid", "open_chat", "parse_date",
    "patch_thread_config", "persist_session_id", "recover_after_restart", "reply", "request_interrupt",
    "set_thread_state", "start_turn",
]
