"""The ax-broker service: what runs in the broker, and nothing that runs at members.

General layout:

- ``app``          the aiohttp app factory; resources live in cleanup contexts
- ``app_keys``     the typed keys of what the app holds (settings, clock, gate, stores, ...)
- ``routes``       the one route table: the router and the OpenAPI document are built from it
- ``handlers``     the service's HTTP handlers: parse, call, render; nothing else
- ``overload``     load shedding: a bound on checks in flight and on their wait, then 503
- ``gate``         every signed member message passes here: verify, admit its jti, authorise
- ``pipeline``     one check end to end: gate, decide, fan out, record, answer
- ``fanout``       parallel provider calls under one deadline, short-circuiting
- ``discovery``    which checks a council may ask, with versions, from the registry in force
- ``coalesce``     concurrent checks' calls to one provider sent as one signed batch
- ``resilience``   per-provider concurrency limits, circuit breakers and latency tracking
- ``transparency`` the tamper-evident log: appends, the Merkle tree, checkpoints, proofs
- ``cosigning``    the log as a witness client: each new checkpoint to the registry's witnesses
- ``witness``      ``axb witness serve``: a witness that cosigns checkpoints (a separate service)
- ``audit``        the audit API and the public log endpoints
- ``resident``     "who checked my data": the resident's page, signed in with an identity provider
- ``bulk``         bulk jobs: a signed job of many subjects, run durably, signed results
- ``stores``       admission (replay and rate limits: memory or Redis) and the consent log
- ``problems``     the one place where errors become RFC 9457 problem+json responses
- ``errors``       the broker's exception root, ``BrokerError``, and its kinds
- ``shutdown``     the orderly stop's one time budget: no teardown step waits past it
- ``settings``     the broker's TOML config, read once into a frozen object
- ``openapi``      the OpenAPI 3.1 document, built from the route table
- ``logging``, ``metrics``   structlog set-up; Prometheus metrics
- ``otel``         OpenTelemetry tracing (the optional extra): a tracer per app, spans by OTLP
- ``scheme``       the scheme operator's tools and the development scheme
- ``cli``          the ``axb`` command line, split by audience (and the demo)
"""
