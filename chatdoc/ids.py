"""Record identity: ULIDs (immutable, unique, sortable) and the ISO dates used as ordering data.

A ULID is 26 Crockford base32 characters: 48 bits of milliseconds, then 80 bits that make it unique.
Runtime ids take their 80 bits from the OS random source; `derived_ulid` takes them from a hash, so a
migration gives the same ids on every machine.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from datetime import datetime, timezone

from ulid import ULID

# `\Z`, not `$`: `$` also matches before a final newline, and "<id>\n" is not an id.
ULID_PATTERN = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}\Z"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z"  # ASCII digits only
_ULID_RE = re.compile(ULID_PATTERN)
_DATE_RE = re.compile(DATE_PATTERN)


def new_ulid(at_ms: int | None = None) -> str:
    """A fresh ULID; its time part is `at_ms` (default: now)."""
    if at_ms is None:
        return str(ULID())
    return str(ULID.from_timestamp(at_ms / 1000))


def derived_ulid(at_ms: int, *identity: object) -> str:
    """A ULID whose time part is `at_ms` and whose 80 random bits are a hash of `identity`.

    The same inputs give the same id on any machine, so ULID order agrees with date order."""
    digest = hashlib.blake2b(repr(identity).encode(), digest_size=10).digest()
    value = max(0, min(at_ms, 2**48 - 1)) << 80 | int.from_bytes(digest, "big")
    # Crockford base32, two characters (10 bits) a step: a migration derives 100,000 ids, and this is 3x
    # faster than python-ulid's per-character encoding (same text; tests compare the two).
    return "".join([_BASE32_PAIRS[value >> shift & 1023] for shift in _PAIR_SHIFTS])


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BASE32_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_PAIR_SHIFTS = tuple(range(120, -1, -10))  # 13 pairs = 26 characters = 130 bits, the top 2 always zero


def is_ulid(value: object) -> bool:
    return isinstance(value, str) and match_ulid(value) is not None


def is_date(value: object) -> bool:
    # Every digit folded to "0", then compared with the one form: less than half the time of the pattern
    # (every message a peer receives is checked). tests/test_ids.py checks that both say the same.
    return (isinstance(value, str) and len(value) == 24 and value.isascii()
            and value.encode().translate(_DIGITS_TO_ZERO) == _DATE_FORM)


# The patterns without their anchors, matched whole (a little cheaper than `match` of the anchored ones).
match_ulid = re.compile(ULID_PATTERN[1:-2]).fullmatch  # for a str known to be one: is_ulid without its type check
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
_DATE_FORM = b"0000-00-00T00:00:00.000Z"


# Checking many ids or dates at once (opening a document checks 100,000 of each): joined and encoded, they
# are checked by byte-table scans (`bytes.translate` deletes the allowed bytes; what is left is wrong),
# several times faster than a regular expression per value or one over the joined text. Each says exactly
# what `is_ulid` / `is_date` of every value says (tests/test_ids.py compares them).
_CROCKFORD_BYTES = _CROCKFORD.encode()
_DATE_SEPARATORS = ((4, b"-"), (7, b"-"), (10, b"T"), (13, b":"), (16, b":"), (19, b"."), (23, b"Z"))


def all_ulids(values: list[str]) -> bool:
    """Whether every value is a ULID."""
    raw = _joined(values, 26)
    # Only Crockford's alphabet, and each first character 0-7 (128 bits in 26 characters).
    return raw is not None and not raw.translate(None, _CROCKFORD_BYTES) and not raw[::26].translate(None, b"01234567")


def all_dates(values: list[str]) -> bool:
    """Whether every value is a date in the one stored form (`2026-01-10T12:00:00.000Z`)."""
    raw = _joined(values, 24)
    if raw is None:
        return False
    for offset, separator in _DATE_SEPARATORS:
        if raw[offset::24].strip(separator):
            return False  # something else where this separator belongs
    digits = raw.translate(None, b"-T:.Z")  # 17 digits a date, and nothing else
    return len(digits) == 17 * len(values) and not digits.translate(None, b"0123456789")


def _joined(values: list[str], length: int) -> bytes | None:
    """The values joined, as bytes, when each is `length` ASCII characters; else None."""
    joined = "".join(values)
    if values and (set(map(len, values)) != {length} or not joined.isascii()):
        return None
    return joined.encode()


def format_date(ms: int) -> str:
    """Milliseconds since the epoch -> `2026-01-10T12:00:00.000Z` (the only date form stored)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_date(text: str) -> int:
    """`2026-01-10T12:00:00.000Z` -> milliseconds since the epoch."""
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(dt.timetuple()) * 1000 + dt.microsecond // 1000


def now_ms() -> int:
    return int(datetime.now(tz=timezone.utc).timestamp() * 1000)

