"""Shared state.

General layout:

- ``admission``     replay and rate limits: ``MemoryAdmissionStore`` or ``RedisAdmissionStore``
  (one server, Cluster or Sentinel), failing closed when Redis is unreachable
- ``consent_log``   the consent log: SQLite or PostgreSQL, group-committed
"""
