"""``axb witness serve``: an independent witness that cosigns the log's checkpoints (C2SP
``tlog-witness``). It runs apart from the broker, under another operator, with its own key and
state; it shares nothing with the broker but the HTTP protocol.

General layout:

- ``settings``  the witness's TOML config (its key, its state file, the logs it witnesses)
- ``state``     the SQLite state: the latest checkpoint per log, checked and persisted atomically
- ``app``       the aiohttp app: ``POST /add-checkpoint``, ``GET /<origin hash>/checkpoint``
"""
