"""The C reader of v1 updates (chatdoc/_yread.c) against the Python one (chatdoc.causal.read_update_py),
which is the reference: on every update the other tests read, on random pycrdt histories, and on corrupted
and hostile bytes, the C reader returns exactly the Python reader's shape, or None (then read_update asks the
Python reader); whenever the Python reader raises UpdateError, the C reader returns None, never a shape.

The C reader is built at install (pyproject.toml) and optional, but never silently missing: without it the first
test fails unless CHATDOC_PURE_PYTHON=1 says the pure-Python reader is intended."""

from __future__ import annotations

import base64
import importlib.machinery
import json
import os
import random
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, merge_updates
from conftest import require_node
from test_causal import _varuint, pycrdt_updates, run_node

from chatdoc import causal
from chatdoc.causal import UpdateError, UpdateShape, read_update, read_update_py

PURE = os.environ.get("CHATDOC_PURE_PYTHON") == "1"
SETTINGS = settings(max_examples=int(os.environ.get("CHATDOC_NATIVE_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)

Native = Callable[[bytes], "tuple[Any, Any, Any] | None"]


@pytest.fixture(scope="module")
def native() -> Native:
    """The C reader itself (also when CHATDOC_PURE_PYTHON=1 keeps read_update from using it, if built)."""
    try:
        from chatdoc._yread import read_update as c_read
    except ImportError:
        if PURE:
            pytest.skip("chatdoc._yread is not built, and CHATDOC_PURE_PYTHON=1 says that is intended")
        pytest.fail("chatdoc._yread is not built: install with a C compiler (pip install -e .) or set "
                    "CHATDOC_PURE_PYTHON=1 to run on the pure-Python reader", pytrace=False)
    return c_read


def test_the_c_reader_is_used_unless_the_pure_python_reader_is_intended(tmp_path: Path) -> None:
    if PURE:
        assert not causal.NATIVE_READER and causal.read_update is read_update_py
        return
    assert causal.NATIVE_READER, ("chatdoc._yread is not importable: install with a C compiler (pip install -e .), "
                                  "or set CHATDOC_PURE_PYTHON=1 if the pure-Python reader is intended")
    # The compiled module, loaded by an interpreter whose working directory is not the repository: what
    # an installed chatdoc imports.
    probe = "import chatdoc, chatdoc._yread as y, chatdoc.causal as c; print(y.__file__); print(chatdoc.__file__); print(c.NATIVE_READER)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         timeout=60).stdout.split("\n")
    so, package, used = Path(out[0]), Path(out[1]), out[2]
    assert so.parent == package.parent and used == "True"
    assert any(so.name.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES), so


def test_pure_python_mode_reads_with_python_only() -> None:
    """CHATDOC_PURE_PYTHON=1 (a fresh interpreter): read_update is the Python reader, and the C module is
    not even imported."""
    probe = textwrap.dedent("""
        import sys
        from chatdoc import causal
        assert not causal.NATIVE_READER and causal.read_update is causal.read_update_py
        assert "chatdoc._yread" not in sys.modules
        update = bytes.fromhex("0101050004010174016100")
        assert causal.read_update(update) == causal.UpdateShape({5: [(0, 1)]}, [], [])
        try:
            causal.read_update(update[:-1])
        except causal.UpdateError as e:
            print(e)
    """)
    env = {**os.environ, "CHATDOC_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "update ends in the middle of a struct"


@pytest.mark.skipif(not causal.NATIVE_READER, reason="read_update is the Python reader (checked above)")
def test_read_update_falls_back_to_the_python_reader_and_its_errors() -> None:
    whole = pycrdt_updates()[-2]
    assert read_update(whole) == read_update_py(whole)
    for cut in (0, 1, len(whole) // 2, len(whole) - 1):
        with pytest.raises(UpdateError) as c_path:
            read_update(whole[:cut])
        with pytest.raises(UpdateError) as py_path:
            read_update_py(whole[:cut])
        assert str(c_path.value) == str(py_path.value)
    # Read by Python only: an 11-byte varuint (the C reader stops at 64 bits) is the sender's id.
    eleven = bytes([0x85] + [0x80] * 9 + [0x00])
    update = b"\x01\x01" + eleven + b"\x00\x04\x01\x01t\x01a\x00"
    assert read_update(update) == UpdateShape({5: [(0, 1)]}, [], [])


# -- the same shape as the Python reader -------------------------------------------------------------------


def same(native: Native, update: bytes) -> None:
    """The C reader reads `update` (made by an encoder) as the Python reader does."""
    got = native(update)
    assert got is not None, update.hex()
    assert UpdateShape(*got) == read_update_py(update), update.hex()


def agrees(native: Native, data: bytes) -> None:
    """On any bytes: None, or the Python reader's shape; None whenever the Python reader raises."""
    got = native(data)
    try:
        want = read_update_py(data)
    except UpdateError:
        assert got is None, data.hex()
        return
    assert got is None or UpdateShape(*got) == want, data.hex()


def test_reads_what_yjs_writes_as_the_python_reader(native: Native) -> None:
    require_node()  # fails, never skips, without Node (tests/conftest.py)
    cases = run_node()
    assert len(cases) >= 10
    for case in cases:
        same(native, base64.b64decode(case["update"]))


def test_reads_what_pycrdt_writes_as_the_python_reader(native: Native) -> None:
    for update in pycrdt_updates():
        same(native, update)


def test_client_ids_in_any_encoding_up_to_64_bits(native: Native) -> None:
    for client in (0, 1, 127, 128, 2**53 - 1, 2**63, 2**64 - 1):
        for padded in (_varuint(client), _padded(client, 10)):
            if padded is None:
                continue
            update = b"\x01\x02" + padded + b"\x00\x04\x01\x01t\x01a\x84" + padded + b"\x00\x01b\x01" + padded + b"\x01\x00\x01"
            same(native, update)
            assert UpdateShape(*native(update)) == UpdateShape({client: [(0, 2)]}, [(client, 0)], [(client, 0, 1)])
    # Past 64 bits (the Python reader takes them): None, and read_update still reads them.
    for raw in (bytes([0x80] * 9 + [0x02]), bytes([0xFF] * 10 + [0x00]), bytes([0x85] + [0x80] * 9 + [0x00])):
        update = b"\x01\x01" + raw + b"\x00\x04\x01\x01t\x01a\x00"
        assert native(update) is None
        assert read_update(update) == read_update_py(update)


def _padded(n: int, size: int) -> bytes | None:
    """`n` as a varuint of exactly `size` bytes (lib0 readers accept the padding), if it fits."""
    raw = _varuint(n)
    if len(raw) > size:
        return None
    return bytes(b | 0x80 for b in raw) + bytes([0x80] * (size - len(raw) - 1)) + b"\x00" if len(raw) < size else raw


# Random histories: several writers with their own client ids, syncing now and then.
CLIENT_IDS = [1, 2, 127, 128, 300, 2**31 + 7, 2**32 + 5, 2**52 + 1, 2**53 - 1]
CHARS = list("ab Z~\n") + ["\x00", "é", "ñ", "ß", "€", "😀", "🎉", "中", "文", "\u0301", "\uffff", "\U0010ffff"]
TEXT = st.text(alphabet=st.sampled_from(CHARS), min_size=1, max_size=8)
KEY = st.sampled_from(["a", "b", "é", "k" * 130, "n"])
LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.binary(max_size=6)
        | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6) | st.just("x" * 200))
ANY = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                   max_leaves=8)
WRITER = st.integers(0, 3)
FRACTION = st.floats(0, 1)
OP = st.one_of(
    st.tuples(st.just("insert"), WRITER, FRACTION, TEXT),
    st.tuples(st.just("delete"), WRITER, FRACTION, st.integers(1, 5)),
    st.tuples(st.just("set"), WRITER, KEY, ANY),
    st.tuples(st.just("unset"), WRITER, KEY),
    st.tuples(st.just("push"), WRITER, FRACTION, st.lists(ANY, min_size=1, max_size=3)),
    st.tuples(st.just("pop"), WRITER, FRACTION, st.integers(1, 3)),
    st.tuples(st.just("nest"), WRITER, KEY, st.sampled_from(["map", "text", "array"]), ANY),
    st.tuples(st.just("nested insert"), WRITER, KEY, TEXT),
    st.tuples(st.just("sync"), WRITER, WRITER),
)


def run_history(ids: list[int], ops: list[tuple[Any, ...]]) -> tuple[list[Doc], list[bytes]]:
    """Play `ops` on one pycrdt document per id; every transaction's update (local or applied), in order."""
    docs = [Doc(client_id=i) for i in ids]
    updates: list[bytes] = []
    subscriptions = [d.observe(lambda event: updates.append(event.update)) for d in docs]
    for op in ops:
        doc = docs[op[1] % len(docs)]
        text, root, array = doc.get("text", type=Text), doc.get("map", type=Map), doc.get("array", type=Array)
        kind = op[0]
        chars = str(text)  # pycrdt's text offsets count UTF-8 bytes: cut at characters
        if kind == "insert":
            text.insert(len(chars[:round(op[2] * len(chars))].encode()), op[3])
        elif kind == "delete" and chars:
            start = round(op[2] * (len(chars) - 1))
            del text[len(chars[:start].encode()):len(chars[:start + op[3]].encode())]
        elif kind == "set":
            root[op[2]] = op[3]
        elif kind == "unset" and op[2] in root:
            del root[op[2]]
        elif kind == "push":
            array.insert(round(op[2] * len(array)), op[3])
        elif kind == "pop" and len(array):
            start = round(op[2] * (len(array) - 1))
            del array[start:min(len(array), start + op[3])]
        elif kind == "nest":
            root[op[2]] = {"map": lambda: Map({"v": op[4]}), "text": lambda: Text("nested"),
                           "array": lambda: Array([op[4]])}[op[3]]()
        elif kind == "nested insert" and isinstance(root.get(op[2]), Text):
            nested = root[op[2]]
            nested.insert(len(nested), op[3])
        elif kind == "sync":
            other = docs[op[2] % len(docs)]
            if other is not doc:
                doc.apply_update(other.get_update(doc.get_state()))
    del subscriptions
    return docs, updates


@SETTINGS
@given(ids=st.lists(st.sampled_from(CLIENT_IDS), min_size=2, max_size=4, unique=True),
       ops=st.lists(OP, min_size=1, max_size=25),
       picks=st.lists(st.lists(st.integers(0, 1000), min_size=2, max_size=5), max_size=4))
def test_random_histories_read_as_the_python_reader(native: Native, ids: list[int], ops: list[tuple[Any, ...]],
                                                     picks: list[list[int]]) -> None:
    docs, updates = run_history(ids, ops)
    made = list(updates)
    for doc in docs:
        made.append(doc.get_update())  # the whole document: GC structs where nested types were deleted
        made.extend(doc.get_update(other.get_state()) for other in docs if other is not doc)
    for doc in docs[1:]:  # everything in one document: several clients in one update
        docs[0].apply_update(doc.get_update(docs[0].get_state()))
    made.append(docs[0].get_update())
    for client in ids:  # a writer's own updates, every other one merged: Skip structs at the gaps
        own = [u for u in updates if list(read_update_py(u).ranges) == [client]]
        made += [merge_updates(*own[::2]), merge_updates(*own[1::3])] if len(own) > 2 else []
    if updates:
        made += [merge_updates(*updates[::2]), merge_updates(*updates[1::3])]
        made += [merge_updates(*[updates[i % len(updates)] for i in pick]) for pick in picks]
    for update in made:
        same(native, update)


def test_merged_updates_with_gaps_carry_skips(native: Native) -> None:
    sender = Doc(client_id=2**40 + 3)
    text = sender.get("text", type=Text)
    updates: list[bytes] = []
    subscription = sender.observe(lambda event: updates.append(event.update))
    for i in range(6):
        text.insert(len(text), "ab😀"[i % 3] * (i + 1))
    del subscription
    gapped = merge_updates(updates[0], updates[2], updates[5])
    assert len(read_update_py(gapped).ranges[2**40 + 3]) == 3  # two Skips between three runs
    same(native, gapped)


# -- strings: the C reader's UTF-8 validation against Python's decoder ------------------------------------


def string_update(raw: bytes) -> bytes:
    """One string item of bytes `raw` at the root text t, client 5."""
    return b"\x01\x01\x05\x00\x04\x01\x01t" + _varuint(len(raw)) + raw + b"\x00"


def test_utf8_at_every_boundary_is_decoded_as_python_does(native: Native) -> None:
    """Every 1- and 2-byte sequence, and 3- and 4-byte sequences around every boundary of well-formed
    UTF-8 (overlongs, surrogates, past U+10FFFF, truncated, stray continuation bytes)."""
    edges = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0]
    samples = [bytes([a]) for a in range(256)] + [bytes([a, b]) for a in range(256) for b in range(256)]
    samples += [bytes([a, b, c]) for a in range(0xE0, 0x100) for b in range(0x7F, 0xC1) for c in edges]
    samples += [bytes([a, b, c, d]) for a in range(0xF0, 0xF8) for b in range(0x7F, 0xC1) for c in (0x80, 0xBF, 0xC0)
                for d in (0x7F, 0x80, 0xBF)]
    samples += [s.encode() for s in ("é", "😀", "中文", "\U0010ffff", "a\u0301b", "x😀y中")]
    for raw in samples:
        try:
            want: int | None = len(raw.decode("utf-8").encode("utf-16-le")) // 2 or None
        except UnicodeDecodeError:
            want = None
        got = native(string_update(raw))
        assert (got and got[0][5][0][1]) == want, raw.hex()


@SETTINGS
@given(raw=st.binary(min_size=1, max_size=40) | st.text(min_size=1, max_size=20).map(
    lambda s: s.encode("utf-8", "surrogatepass")))
def test_random_string_bytes_read_as_the_python_reader(native: Native, raw: bytes) -> None:
    agrees(native, string_update(raw))


# -- corrupted and hostile bytes ----------------------------------------------------------------------------


def corpus() -> list[bytes]:
    updates = pycrdt_updates()
    _, history = run_history([2**52 + 1, 300], [("insert", 0, 0, "héllo 😀"), ("set", 1, "a", {"x": [1, 2.5, None]}),
                                                ("sync", 0, 1), ("delete", 0, 0.3, 3), ("nest", 1, "n", "map", b"\x00"),
                                                ("unset", 1, "n"), ("push", 0, 0, [True, "s"]), ("sync", 1, 0)])
    return updates + history + [merge_updates(updates[0], updates[3], updates[7])]


CORPUS = corpus()


def test_every_truncation_of_every_update(native: Native) -> None:
    for update in CORPUS:
        for cut in range(len(update)):
            with pytest.raises(UpdateError):  # no prefix of these is an update
                read_update_py(update[:cut])
            assert native(update[:cut]) is None


@SETTINGS
@given(st.data())
def test_flipped_inserted_and_spliced_bytes(native: Native, data: st.DataObject) -> None:
    update = bytearray(data.draw(st.sampled_from(CORPUS)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(update)))
        how = data.draw(st.sampled_from(["flip", "insert", "splice", "cut"]))
        if how == "flip" and at < len(update):
            update[at] = data.draw(st.integers(0, 255))
        elif how == "insert":
            update[at:at] = data.draw(st.binary(min_size=1, max_size=12))
        elif how == "splice":  # a whole valid update inside another
            update[at:at] = data.draw(st.sampled_from(CORPUS))
        elif how == "cut":
            del update[at:at + data.draw(st.integers(1, 8))]
    agrees(native, bytes(update))


@SETTINGS
@given(st.binary(max_size=64))
def test_random_bytes(native: Native, raw: bytes) -> None:
    agrees(native, raw)


def any_item(value: bytes) -> bytes:
    """One `any` item holding the encoded value `value`, at the root array a, client 5."""
    return b"\x01\x01\x05\x00\x08\x01\x01a\x01" + value + b"\x00"


def hostile() -> list[bytes]:
    big = [2**32, 2**53, 2**63, 2**64 - 1]
    out = [b"", b"\x00", b"\x00\x00", b"\x00\x00\x00"] + [b"\xff" * n for n in (1, 2, 9, 10, 11, 12, 40, 1000)]
    for depth in (1, 63, 64, 65, 66, 500, 100_000):  # nested arrays, nested objects: refused past 64 levels
        out.append(any_item(b"\x75\x01" * depth + b"\x7e"))
        out.append(any_item(b"\x76\x01\x01k" * depth + b"\x7e"))
    for n in big:  # counts and lengths far past the end
        v = _varuint(n)
        out += [v + b"\x00", b"\x01" + v + b"\x05\x00\x00", b"\x01\x01\x05\x00\x04\x01\x01t" + v + b"ab\x00",
                any_item(b"\x75" + v + b"\x7e"), any_item(b"\x76" + v + b"\x01k\x7e"), any_item(b"\x77" + v + b"x"),
                b"\x01\x01\x05\x00\x08\x01\x01a" + v + b"\x7e\x00", b"\x01\x01\x05\x00\x02\x01\x01a" + v + b"\x01x\x00",
                b"\x01\x01\x05" + v + b"\x00" + v + b"\x00", b"\x01\x01\x05" + v + b"\x0a" + v + b"\x00",
                b"\x00\x01\x05" + v + b"\x00\x01", b"\x00\x01\x05\x01" + v + v, b"\x00" + v + b"\x05\x01\x00\x01"]
    for info in range(256):  # every info byte, with a little after it
        out.append(b"\x01\x01\x05\x00" + bytes([info]) + b"\x01\x01t\x01a\x00")
        out.append(b"\x01\x01\x05\x00" + bytes([info]) + b"\x05\x00\x00")
    for tag in range(256):  # every `any` tag
        out.append(any_item(bytes([tag]) + b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    out.append(any_item(b"\x7d" + b"\x80" * 10 + b"\x00"))  # an 11-byte integer: the longest lib0 writes
    out.append(any_item(b"\x7d" + b"\x80" * 11 + b"\x00"))
    rng = random.Random(9)
    out += [rng.randbytes(rng.randrange(1, 80)) for _ in range(3000)]
    out += [bytes(rng.choice(b"\x00\x01\x04\x05\x08\x75\x76\x77\x7e\x80\xff") for _ in range(rng.randrange(1, 40)))
            for _ in range(3000)]
    return out


def test_hostile_bytes_never_crash_and_read_as_the_python_reader(native: Native) -> None:
    """In a child process, so that a crash is a failure and not the end of the run."""
    cases = hostile()
    child = textwrap.dedent("""
        import base64, json, sys
        from chatdoc._yread import read_update
        out = []
        for line in sys.stdin:
            got = read_update(base64.b64decode(line))
            out.append(None if got is None else [list(got[0].items()), got[1], got[2]])
        for junk in (bytearray(b"\\x00\\x00"), memoryview(b"\\x00\\x00"), "\\x00\\x00", None, 5):
            assert read_update(junk) is None
        print(json.dumps(out))
    """)
    run = subprocess.run([sys.executable, "-c", child], input="\n".join(base64.b64encode(c).decode() for c in cases),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout)
    assert len(results) == len(cases)
    read = 0
    for case, got in zip(cases, results):
        try:
            want = read_update_py(case)
        except UpdateError:
            assert got is None, case[:100].hex()
            continue
        except RecursionError:  # nesting deeper than Python's stack: the C reader refuses it
            assert got is None
            continue
        if got is not None:
            read += 1
            ranges, refs, deletes = got
            assert UpdateShape({c: [tuple(r) for r in runs] for c, runs in ranges}, [tuple(r) for r in refs],
                               [tuple(d) for d in deletes]) == want, case[:100].hex()
    assert read >= 10  # the well-formed ones among them were read, not all refused
    assert results[cases.index(any_item(b"\x75\x01" * 64 + b"\x7e"))] is not None
    assert results[cases.index(any_item(b"\x75\x01" * 65 + b"\x7e"))] is None


def test_no_reference_is_leaked(native: Native) -> None:
    """Reading (and refusing) the same bytes many times holds on to no memory."""
    inputs = CORPUS[:6] + [CORPUS[3][:cut] for cut in range(0, len(CORPUS[3]), 7)] + hostile()[:200]
    for data in inputs:
        native(data)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            for data in inputs:
                native(data)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, grown  # one leaked int a call would be 200 x inputs x 28+ bytes
