"""Helpers the tests share that are not fixtures (the fixtures live in ``tests/conftest.py``).

General layout:

- ``services.py``: where the shared Redis and PostgreSQL are (``REDIS_URL``, ``PG_ADMIN_DSN``)
  and ``pg_admin`` for statements on the PostgreSQL server itself.
- ``logdb.py``: a test broker's consent-log database on either backend (``LOG_BACKENDS``,
  ``log_backend``, ``log_sql``, ``edit_record``, ``config_for_log``, ``gather_indices``).
- ``servers.py``: apps, brokers and providers served on loopback on sockets bound first
  (``serve_on``, ``start_app``, ``port_of``, ``refusing_port``, ``RunningBroker``,
  ``RunningProvider``, the ``StartBroker`` fixture type).
- ``councils.py``: what a council holds (the ``CouncilKey`` fixture type,
  ``blue_badge_answer_token``).
- ``ports.py``: bind-and-retry on candidate ports for programs that bind their own
  (``start_on_some_port``).
- ``redis_server.py``: ``PrivateRedis``, a throwaway ``redis-server`` a test may kill.
- ``cli.py``: ``run_axb``, the ``axb`` command run as its own process.
- ``processes.py``: servers run as their own processes (``until_answers``, ``tail``).
- ``containers.py``: podman with the checkout's containers.conf (``podman``), the images
  ``deploy/build-images`` makes, once per session (``built_images``), ``container_logs``.
"""
