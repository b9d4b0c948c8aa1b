"""Writes operations.json and damaged.json (run from the repository: `python tests/conformance/make_vectors.py`).

The verdicts below are written by hand from SCHEMA.md (sections 3.3 and 5); the `records` of the operation
cases are what chatdoc writes, reviewed against SCHEMA.md section 4 when they were made. The library
(web/src/lib) was written from SCHEMA.md, not from these files: test_conformance.py checks both against them.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

from chatdoc.ids import parse_date  # noqa: E402
from vectors import run  # noqa: E402

P = "01KEKWE4G0"
def tid(n): return P + "THREAD" + str(n).zfill(10)
def mid(n): return P + "MESSAGE" + str(n).zfill(9)
def vid(n): return P + "VERSN" + str(n).zfill(11)
T0 = parse_date("2026-01-10T12:00:00.000Z")
def d(s): return f"2026-01-10T12:{s//60:02d}:{s%60:02d}.000Z"
def ms(s): return T0 + s * 1000
O = "chat.integrity.orphan_messages"; MR = "chat.integrity.multi_root_per_thread"; MC = "chat.integrity.missing_thread_config"
DUP = "chat.integrity.duplicate_date_rows"; RT = "chat.integrity.invalid_reply_targets"; MRM = "chat.integrity.missing_root_message"
INV = "chat.integrity.invalid_records"; FM = "chat.acp.finalize_mismatch"

# -- operations --------------------------------------------------------------------------------------
ops = []
ops.append({"name": "people thread: create with settings, replies, two edits, a delete", "ops": [
  {"op": "create_thread", "now": ms(0), "sender": "alice", "text": "Plan for the release", "config": {"name": "Release", "thread_color": "#3f51b5", "pin": True}, "thread_id": tid(1), "message_id": mid(1)},
  {"op": "reply", "now": ms(10), "thread_id": tid(1), "sender": "bob", "text": "I take the migration.", "message_id": mid(2)},
  {"op": "reply", "now": ms(20), "thread_id": tid(1), "sender": "alice", "text": "And the tests?", "message_id": mid(3)},
  {"op": "edit", "now": ms(30), "message_id": mid(2), "author": "bob", "text": "I take the migration and the export.", "edit_id": vid(1)},
  {"op": "edit", "now": ms(40), "message_id": mid(2), "author": "alice", "text": "Bob takes the migration and the export.", "edit_id": vid(2)},
  {"op": "delete", "now": ms(50), "message_id": mid(3), "by": "alice"}],
  "verdict": {"quarantined": [], "counts": {}, "threads": [{"thread_id": tid(1), "agent": False, "messages": [
    [mid(1), "Plan for the release", False], [mid(2), "Bob takes the migration and the export.", False], [mid(3), "And the tests?", True]]}]}})
ops.append({"name": "agent thread: made one by acp_config alone", "ops": [
  {"op": "create_thread", "now": ms(0), "sender": "alice", "text": "Why is CI red?", "config": {"name": "Codex", "acp_config": {"model": "gpt-5.3-codex", "reasoning": "medium", "allowWrite": False}}, "thread_id": tid(1), "message_id": mid(1)},
  {"op": "create_thread", "now": ms(5), "sender": "gpt-5.3-codex", "text": "A thread an agent's name started", "thread_id": tid(2), "message_id": mid(2)}],
  "verdict": {"quarantined": [], "counts": {}, "threads": [
    {"thread_id": tid(1), "agent": True, "messages": [[mid(1), "Why is CI red?", False]]},
    {"thread_id": tid(2), "agent": False, "messages": [[mid(2), "A thread an agent's name started", False]]}]}})
ops.append({"name": "config patches write only the keys they name", "ops": [
  {"op": "create_thread", "now": ms(0), "sender": "alice", "text": "hi", "config": {"name": "Old", "thread_icon": "bolt", "acp_config": {"model": "gpt-5.3-codex", "sessionId": "sess-1"}}, "thread_id": tid(1), "message_id": mid(1)},
  {"op": "patch_config", "now": ms(10), "thread_id": tid(1), "patch": {"acp_config": {"model": "gpt-5.2"}}, "by": "bob"},
  {"op": "patch_config", "now": ms(20), "thread_id": tid(1), "patch": {"name": None, "pin": True}, "by": "carol"},
  {"op": "patch_config", "now": ms(30), "thread_id": tid(1), "patch": {"acp_config": {"reasoning": "high", "sessionId": None}}, "by": "dave"},
  {"op": "patch_config", "now": ms(40), "thread_id": tid(1), "patch": {"acp_config": {"futureFlag": True, "futureName": "x"}}, "by": "erin"},
  {"op": "patch_config", "now": ms(50), "thread_id": tid(1), "patch": {"acp_config": {"futureCount": 3}}, "by": "erin", "error": True}],
  "verdict": {"quarantined": [], "counts": {}, "threads": [{"thread_id": tid(1), "agent": True, "messages": [[mid(1), "hi", False]]}]}})
ops.append({"name": "fork: copies up to a message, skips deleted, shown text, drops sessionId and unknown acp keys", "doc": {
  "thread_configs": {}}, "ops": [
  {"op": "create_thread", "now": ms(0), "sender": "alice", "text": "root", "config": {"name": "Src", "thread_color": "#123456", "acp_config": {"model": "m1", "sessionId": "sess-9"}}, "thread_id": tid(1), "message_id": mid(1)},
  {"op": "reply", "now": ms(10), "thread_id": tid(1), "sender": "bob", "text": "a", "message_id": mid(2)},
  {"op": "reply", "now": ms(20), "thread_id": tid(1), "sender": "bob", "text": "b (deleted)", "message_id": mid(3)},
  {"op": "reply", "now": ms(30), "thread_id": tid(1), "sender": "carol", "text": "c", "message_id": mid(4)},
  {"op": "reply", "now": ms(40), "thread_id": tid(1), "sender": "carol", "text": "d (after the fork point)", "message_id": mid(5)},
  {"op": "edit", "now": ms(50), "message_id": mid(4), "author": "carol", "text": "c, edited", "edit_id": vid(1)},
  {"op": "delete", "now": ms(60), "message_id": mid(3), "by": "bob"},
  {"op": "fork", "now": ms(70), "thread_id": tid(1), "at_message_id": mid(4), "by": "dave", "new_thread_id": tid(2), "ids": {mid(1): mid(11), mid(2): mid(12), mid(4): mid(14)}}],
  "verdict": {"quarantined": [], "counts": {}, "threads": [
    {"thread_id": tid(1), "agent": True, "messages": [[mid(1), "root", False], [mid(2), "a", False], [mid(3), "b (deleted)", True], [mid(4), "c, edited", False], [mid(5), "d (after the fork point)", False]]},
    {"thread_id": tid(2), "agent": True, "messages": [[mid(11), "root", False], [mid(12), "a", False], [mid(14), "c, edited", False]]}]}})
# starting doc with an unknown acp key, to check the fork drops it: patch it in via the doc is simpler
ops[-1]["doc"] = {}
ops[-1]["ops"].insert(1, {"op": "patch_config", "now": ms(1), "thread_id": tid(1), "patch": {"acp_config": {"agent": "codex", "futureKey": "kept in the source only"}}, "by": "alice"})

gen_doc = {
  "meta": {"schema_version": {"$plain": 2}},
  "threads": {tid(1): {"created_at": d(0), "created_by": "alice", "root_message_id": mid(1), "schema_version": 2}},
  "thread_configs": {tid(1): {"acp_config": {"$map": {"model": "gpt-5.3-codex"}}}},
  "thread_states": {tid(1): {"state": "running", "active_message_id": mid(2)}},
  "messages": {
    mid(1): {"head": {"thread_id": tid(1), "sender_id": "alice", "date": d(0), "body": "Count to ten"}},
    mid(2): {"head": {"thread_id": tid(1), "sender_id": "gpt-5.3-codex", "date": d(1), "reply_to_message_id": mid(1)}, "body": {"$text": "one two"}, "generating": True, "acp_prompt_message_id": mid(1), "acp_claimed_by": "runner/01KEKWE4G0RVNNER0000000001"}}}
ops.append({"name": "request interrupt: on the generating reply, the first request stands, a finished reply is left alone",
  "doc": gen_doc, "ops": [
  {"op": "request_interrupt", "now": ms(10), "message_id": mid(2), "by": "alice"},
  {"op": "request_interrupt", "now": ms(20), "message_id": mid(2), "by": "bob"},
  {"op": "request_interrupt", "now": ms(30), "message_id": mid(1), "by": "bob"}],
  "verdict": {"quarantined": [], "counts": {}, "threads": [{"thread_id": tid(1), "agent": True, "messages": [[mid(1), "Count to ten", False], [mid(2), "one two", False]]}]}})
ops.append({"name": "refused writes change nothing", "ops": [
  {"op": "create_thread", "now": ms(0), "sender": "alice", "text": "hi", "thread_id": tid(1), "message_id": mid(1)},
  {"op": "reply", "now": ms(1), "thread_id": tid(9), "sender": "bob", "text": "to no thread", "message_id": mid(2), "error": True},
  {"op": "edit", "now": ms(2), "message_id": mid(9), "author": "bob", "text": "x", "edit_id": vid(1), "error": True},
  {"op": "delete", "now": ms(3), "message_id": mid(9), "by": "bob", "error": True},
  {"op": "patch_config", "now": ms(4), "thread_id": tid(1), "patch": {"colour": "red"}, "by": "bob", "error": True},
  {"op": "patch_config", "now": ms(5), "thread_id": tid(1), "patch": {"pin": "yes"}, "by": "bob", "error": True},
  {"op": "patch_config", "now": ms(6), "thread_id": tid(1), "patch": {"acp_config": {"allowWrite": "yes"}}, "by": "bob", "error": True},
  {"op": "patch_config", "now": ms(7), "thread_id": tid(9), "patch": {"name": "x"}, "by": "bob", "error": True},
  {"op": "fork", "now": ms(8), "thread_id": tid(1), "at_message_id": mid(9), "by": "bob", "new_thread_id": tid(2), "ids": {}, "error": True},
  {"op": "request_interrupt", "now": ms(9), "message_id": mid(9), "by": "bob", "error": True}],
  "verdict": {"quarantined": [], "counts": {}, "threads": [{"thread_id": tid(1), "agent": False, "messages": [[mid(1), "hi", False]]}]}})

# -- damaged documents -------------------------------------------------------------------------------
def thread(n, root, at=0, by="alice"):
    return {"created_at": d(at), "created_by": by, "root_message_id": root, "schema_version": 2}
def cfg(acp=None, **kw): return {"acp_config": {"$map": acp or {}}, **kw}
def msg(t, n, at, text="hi", sender="alice", reply=None, **extra):
    head = {"thread_id": t, "sender_id": sender, "date": d(at)}
    if reply: head["reply_to_message_id"] = reply
    if text is not None: head["body"] = text
    return {"head": head, **extra}
def base(extra_msgs=None, **roots):
    doc = {"threads": {tid(1): thread(1, mid(1))}, "thread_configs": {tid(1): cfg()}, "thread_states": {tid(1): {"state": "idle"}},
           "messages": {mid(1): msg(tid(1), 1, 0, "root"), mid(2): msg(tid(1), 2, 10, "reply", "bob", mid(1))}}
    doc["messages"].update(extra_msgs or {})
    for k, v in roots.items(): doc.setdefault(k, {}).update(v)
    return doc
def t1(*msgs, agent=False): return [{"thread_id": tid(1), "agent": agent, "messages": list(msgs)}]
R = [mid(1), "root", False]; B = [mid(2), "reply", False]
dm = []
def case(name, doc, quarantined=(), counts=None, threads=None):
    dm.append({"name": name, "doc": doc, "verdict": {"quarantined": sorted(quarantined), "counts": counts or {}, "threads": threads if threads is not None else t1(R, B)}})

case("clean: a thread, a reply, an edit, a tombstone, a streamed agent reply", {
  "threads": {tid(1): thread(1, mid(1)), tid(2): thread(2, mid(4), 30)},
  "thread_configs": {tid(1): cfg(name="People"), tid(2): cfg({"model": "m", "allowWrite": True, "futureKey": {"x": 1}})},
  "thread_states": {tid(2): {"state": "complete", "active_message_id": mid(5)}},
  "messages": {mid(1): msg(tid(1), 1, 0, "root"), mid(2): msg(tid(1), 2, 10, "reply", "bob", mid(1), **{"edit:" + vid(1): {"author_id": "bob", "date": d(11), "content": "reply v2"}}),
    mid(3): msg(tid(1), 3, 20, "gone", "bob", mid(1), deleted_at=d(21), deleted_by="bob"),
    mid(4): msg(tid(2), 4, 30, "ask"), mid(5): msg(tid(2), 5, 31, None, "m", mid(4), body={"$text": "streamed answer"}, generating=False, acp_usage={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13})}},
  threads=[{"thread_id": tid(1), "agent": False, "messages": [R, [mid(2), "reply v2", False], [mid(3), "gone", True]]},
           {"thread_id": tid(2), "agent": True, "messages": [[mid(4), "ask", False], [mid(5), "streamed answer", False]]}])
case("orphan: a message whose thread record is missing", base({mid(3): msg(tid(2), 3, 20, "lost", "bob", mid(9))}), counts={O: [mid(3)]})
case("reply pointing at a reply, not the root", base({mid(3): msg(tid(1), 3, 20, "misdirected", "bob", mid(2))}), counts={RT: [mid(3)]}, threads=t1(R, B, [mid(3), "misdirected", False]))
case("a second root in a thread", base({mid(3): msg(tid(1), 3, 20, "another root", "bob")}), counts={MR: [tid(1)]}, threads=t1(R, B, [mid(3), "another root", False]))
case("thread whose root message is gone", base(threads={tid(1): thread(1, mid(9))}), counts={MRM: [tid(1)], RT: [mid(2)], MR: [tid(1)]})
case("missing thread config: defaults, not an agent", {**base(), "thread_configs": {}}, counts={MC: [tid(1)]})
case("finalize mismatch: a terminal state while its reply generates",
     base({mid(3): msg(tid(1), 3, 20, None, "m", mid(1), body={"$text": "half"}, generating=True)}, thread_states={tid(1): {"state": "complete", "active_message_id": mid(3)}}),
     counts={FM: [tid(1)]}, threads=t1(R, B, [mid(3), "half", False]))
case("finalize mismatch: running while its reply is finished",
     base({mid(3): msg(tid(1), 3, 20, None, "m", mid(1), body={"$text": "done"})}, thread_states={tid(1): {"state": "running", "active_message_id": mid(3)}}),
     counts={FM: [tid(1)]}, threads=t1(R, B, [mid(3), "done", False]))
case("head stored as a Y.Map: quarantined", base({mid(3): {"head": {"$map": {"thread_id": tid(1), "sender_id": "bob", "date": d(20), "reply_to_message_id": mid(1), "body": "x"}}}}),
     quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("head stored as a string: quarantined", base({mid(3): {"head": "not an object"}}), quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("unknown key in the head: counted, the rest read", base({mid(3): {"head": {"thread_id": tid(1), "sender_id": "bob", "date": d(20), "reply_to_message_id": mid(1), "body": "x", "mood": "happy"}}}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "x", False]))
case("thread_id written beside the head: counted, the head's read", base({mid(3): msg(tid(1), 3, 20, "beside", "bob", mid(1), thread_id=tid(7))}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "beside", False]))
case("body stored twice: the Y.Text is read", base({mid(3): msg(tid(1), 3, 20, "in the head", "bob", mid(1), body={"$text": "in the Y.Text"})}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "in the Y.Text", False]))
case("no text at all: quarantined", base({mid(3): msg(tid(1), 3, 20, None, "bob", mid(1))}), quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("body as a plain string beside the head: quarantined (no text where it is read)", base({mid(3): msg(tid(1), 3, 20, None, "bob", mid(1), body="plain")}),
     quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("flat layout (no head, its fields as keys): quarantined until a repairing peer moves them", base({mid(3): {"thread_id": tid(1), "sender_id": "bob", "date": d(20), "reply_to_message_id": mid(1), "body": "flat"}}),
     quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("thread settings written onto a message: counted, ignored", base({mid(3): msg(tid(1), 3, 20, "x", "bob", mid(1), acp_config={"model": "gpt-5.2"}, name="renamed")}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "x", False]))
case("a key that is not a ULID: quarantined", base({"m-root": msg(tid(1), 3, 20, "x", "bob", mid(1))}), quarantined=["messages:m-root"], counts={INV: ["messages:m-root"]})
case("a plain value where a record belongs: quarantined", base({mid(3): {"$plain": {"thread_id": tid(1)}}}), quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("a Y.Text where a record belongs: quarantined", base({mid(3): {"$text": "text"}}), quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("bad optional field (generating: \"yes\"): counted, its default read", base({mid(3): msg(tid(1), 3, 20, "x", "bob", mid(1), generating="yes")}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "x", False]))
case("bad required field (an unreadable date): quarantined", base({mid(3): {"head": {"thread_id": tid(1), "sender_id": "bob", "date": "yesterday-ish", "reply_to_message_id": mid(1), "body": "x"}}}),
     quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("date without milliseconds: quarantined", base({mid(3): {"head": {"thread_id": tid(1), "sender_id": "bob", "date": "2026-01-10T12:00:20Z", "reply_to_message_id": mid(1), "body": "x"}}}),
     quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("sender_id a number: quarantined", base({mid(3): {"head": {"thread_id": tid(1), "sender_id": 7, "date": d(20), "reply_to_message_id": mid(1), "body": "x"}}}),
     quarantined=[f"messages:{mid(3)}"], counts={INV: [f"messages:{mid(3)}"]})
case("thread record with a bad root id: quarantined, its messages orphans", base(threads={tid(1): {**thread(1, mid(1)), "root_message_id": 5}}),
     quarantined=[f"threads:{tid(1)}"], counts={INV: [f"threads:{tid(1)}"], O: [mid(1), mid(2)]}, threads=[])
case("unknown field on a thread record: counted", base(threads={tid(1): {**thread(1, mid(1)), "colour": "red"}}), counts={INV: [f"threads:{tid(1)}"]})
case("acp_config as a plain object: counted, still an agent thread", base(thread_configs={tid(1): {"acp_config": {"model": "m"}}}),
     counts={INV: [f"thread_configs:{tid(1)}"]}, threads=[{"thread_id": tid(1), "agent": True, "messages": [R, B]}])
case("acp_config with a bad allowWrite: counted, still an agent thread", base(thread_configs={tid(1): cfg({"model": "m", "allowWrite": "yes"})}),
     counts={INV: [f"thread_configs:{tid(1)}"]}, threads=[{"thread_id": tid(1), "agent": True, "messages": [R, B]}])
case("pin as a string: counted", base(thread_configs={tid(1): cfg(pin="true")}), counts={INV: [f"thread_configs:{tid(1)}"]})
case("a bad edit: counted, the body shown", base({mid(3): msg(tid(1), 3, 20, "first", "bob", mid(1), **{"edit:" + vid(1): {"author_id": "bob", "date": d(21)}})}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "first", False]))
case("an edit under a key that is no ULID: counted, the body shown", base({mid(3): msg(tid(1), 3, 20, "first", "bob", mid(1), **{"edit:v2": {"author_id": "bob", "date": d(21), "content": "second"}})}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "first", False]))
case("same thread, date and sender: both kept, a diagnostic", base({mid(3): msg(tid(1), 3, 20, "one", "bob", mid(1)), mid(4): msg(tid(1), 4, 20, "two", "bob", mid(1))}),
     counts={DUP: [mid(3), mid(4)]}, threads=t1(R, B, [mid(3), "one", False], [mid(4), "two", False]))
case("unknown thread state: counted, read as idle", base(thread_states={tid(1): {"state": "thinking"}}), counts={INV: [f"thread_states:{tid(1)}"]})
case("a Y.Text in a plain field (deleted_by): counted", base({mid(3): msg(tid(1), 3, 20, "x", "bob", mid(1), deleted_at=d(21), deleted_by={"$text": "bob"})}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "x", True]))
case("usage with a negative count: counted", base({mid(3): msg(tid(1), 3, 20, "x", "m", mid(1), acp_usage={"input_tokens": -1})}),
     counts={INV: [f"messages:{mid(3)}"]}, threads=t1(R, B, [mid(3), "x", False]))
case("an integer field holding 2.5: counted", base(threads={tid(1): {**thread(1, mid(1)), "schema_version": 2.5}}), counts={INV: [f"threads:{tid(1)}"]})

doc = base({}, )
doc["messages"] = {k: v for k, v in doc["messages"].items() if k in (mid(1), mid(2))}
doc["$lists"] = {"messages": ["not a record", {"thread_id": "x"}]}
case("list items written into the messages root: counted as the root's, never read", doc, counts={INV: ["messages:<list items>"]})

# expected records of the operation cases: produced by chatdoc once and reviewed by hand
for c in ops:
    got = run(c)
    c["records"] = json.loads(json.dumps(got["records"], sort_keys=True))
    want_refused = [i for i, o in enumerate(c["ops"]) if o.get("error")]
    assert got["refused"] == want_refused, (c["name"], got["refused"])
(HERE / "operations.json").write_text(json.dumps(ops, indent=1) + "\n")
(HERE / "damaged.json").write_text(json.dumps(dm, indent=1) + "\n")
print(len(ops), len(dm))
