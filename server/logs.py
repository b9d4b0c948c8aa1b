"""Log lines never carry a token: uvicorn logs each websocket handshake with its query string
(`"WebSocket /team.chat?token=eyJ..." [accepted]`), and a token in a log is a token anyone with the log
can use until it expires."""

from __future__ import annotations

import logging
import re

# `token=` as a query parameter (after ? or &), up to the next separator, quote or space.
_TOKEN = re.compile(r"([?&]token=)[^&\s\"']*")
REDACTED = "[redacted]"
# uvicorn's handshake lines go to uvicorn.error; uvicorn.access has the HTTP request lines.
_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "chatdoc")


def redact(text: str) -> str:
    return _TOKEN.sub(rf"\g<1>{REDACTED}", text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message with every query token redacted (the record is formatted once here,
    so arguments such as uvicorn's path-with-query are covered too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = redact(message), None
        return True


_FILTER = RedactTokens()


def redact_tokens_in_logs() -> None:
    """Install the filter on the loggers that see request paths and on every handler of the root logger
    (records of other loggers reach those). Idempotent."""
    for logger in (*map(logging.getLogger, _LOGGERS), logging.getLogger()):
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
