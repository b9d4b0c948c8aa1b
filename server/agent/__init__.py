"""Agents as peers: a runner that answers prompts in agent threads through the Agent Client Protocol.

The runner holds its own `ChatDoc` peer per room and addresses every record by `thread_id` and
`message_id`; how Yjs updates reach the other peers (the websocket server, or an in-process relay in
tests) is not its concern. Module by module:

- `claims`: which runner owns a turn (derived reply ids, claims, leases) and the guarded writes
- `prompts`: which messages are prompts, and which of them still wait for a reply
- `acp_client`: one ACP agent subprocess over stdio: initialize, sessions, prompt, cancel
- `config`: which command runs which agent, and the runner's timings
- `runner`: `AgentRunner`, the turn lifecycle of one document
- `scripted_agent`: a real ACP agent with deterministic replies, for tests and the offline demo
- `local_relay`: an in-process stand-in for the sync server (tests, benchmarks)
- `main`: `chatdoc agent` (also `python -m server.agent`): a `server.client.RoomClient` per room
- `demo`: the offline demo's person (send a prompt, print the reply as it streams)

README.md in this folder says how to run it; SCHEMA.md section 8 is the contract.
"""
