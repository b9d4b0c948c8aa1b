"""The bulk id and date checks say exactly what the per-value ones say, for any mix of values."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from chatdoc.ids import (
    DATE_PATTERN,
    ULID_PATTERN,
    all_dates,
    all_ulids,
    derived_ulid,
    format_date,
    is_date,
    is_ulid,
    new_ulid,
)

ULID_TEXT = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DATE_TEXT = "0123456789-T:.Z"
# Characters that look like what belongs there but do not: excluded letters, lower case, other digits,
# a newline (a `$` pattern would let one end a value), separators out of place.
TRICKY = "ILOUilou89az\n \u0663\u00b2-T:.Z"


def near(valid: st.SearchStrategy[str], alphabet: str) -> st.SearchStrategy[str]:
    """Valid values, and values one edit away from valid: a character replaced, added or dropped."""

    @st.composite
    def edited(draw: st.DrawFn) -> str:
        value = draw(valid)
        at = draw(st.one_of(st.just(0), st.integers(0, len(value) - 2)))  # the first character has rules of its own
        char = draw(st.one_of(st.sampled_from(TRICKY), st.sampled_from(alphabet)))
        how = draw(st.sampled_from(["replace", "insert", "drop", "swap", "same"]))
        if how == "replace":
            return value[:at] + char + value[at + 1:]
        if how == "insert":
            return value[:at] + char + value[at:]
        if how == "drop":
            return value[:at] + value[at + 1:]
        if how == "swap":  # keeps every character, moves one: only a check of positions sees it
            return value[:at] + value[at + 1] + value[at] + value[at + 2:]
        return value

    return edited()


ulids = st.one_of(st.builds(new_ulid), st.builds(derived_ulid, st.integers(0, 2**48 - 1), st.integers()))
dates = st.builds(format_date, st.integers(0, 253_402_300_799_999))


@settings(max_examples=1000)
@given(st.lists(near(ulids, ULID_TEXT), max_size=4))
def test_all_ulids_is_is_ulid_of_each(values: list[str]) -> None:
    assert all_ulids(values) == all(is_ulid(v) for v in values)


@settings(max_examples=1000)
@given(st.lists(near(dates, DATE_TEXT), max_size=4))
def test_all_dates_is_is_date_of_each(values: list[str]) -> None:
    assert all_dates(values) == all(is_date(v) for v in values)


def test_a_trailing_newline_is_not_part_of_an_id_or_a_date() -> None:
    assert not is_ulid(new_ulid() + "\n") and not all_ulids([new_ulid() + "\n"])
    assert not is_date(format_date(0) + "\n") and not all_dates([format_date(0) + "\n"])
    assert is_ulid(new_ulid()) and is_date(format_date(0))


@settings(max_examples=1000)
@given(st.one_of(near(ulids, ULID_TEXT), near(dates, DATE_TEXT), st.text(max_size=30)))
def test_the_per_value_checks_say_what_the_schema_patterns_say(value: str) -> None:
    """`is_ulid` and `is_date` are written for speed (every received message is checked); the patterns
    in ids.py (the JSON schema's, msgspec's) are the definition."""
    assert is_ulid(value) == (re.match(ULID_PATTERN, value) is not None)
    assert is_date(value) == (re.match(DATE_PATTERN, value) is not None)
