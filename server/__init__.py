"""`chatdoc serve`: the websocket sync server for chat documents.

Every `.chat` file under a directory is a room at `/<its path relative to that directory>`, spoken to with
the y-websocket protocol. What the server accepts is written to a SQLite log before anyone else sees it,
the `.chat` file is kept current, integrity is checked and repaired here, and every change is attributed to
the connection that made it. Module by module:

- `paths`: which URL names which file (and what is refused)
- `auth`: signed, expiring, per-document tokens
- `protocol`: strict parsing of y-websocket frames (malformed input is detected, never guessed at)
- `store`: the durable log (SQLite): updates, snapshots, fingerprints of the files we wrote
- `persister`: group commit across rooms; a room broadcasts only what has been committed
- `presence`: awareness relay with the latest state of every client
- `connection`: one client: its grant, its bounded outbox and the task that drains it
- `room`: one chat being served
- `filemirror`: the `.chat` file on disk, written atomically and watched for outside edits
- `chatfiles`: the adapter to the core's v2 file format and legacy migration
- `renderer`: whole-document work (rendering `.chat` files) in a low-priority worker process
- `metrics`: counters, per-stage update timings and Prometheus text
- `looplag`: how late the event loop wakes, and garbage-collector pauses
- `app`: the ASGI application (routes, lifespan, rooms)
- `serve`: `chatdoc serve` and `chatdoc token`
- `client`: a Python peer that connects, syncs and reconnects
- `agent/`: the agent runner, a client of this server (its own package)
"""
