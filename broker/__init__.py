"""The ax-broker service.

General layout:

- ``app``          the aiohttp app factory; resources live in cleanup contexts
- ``handlers``     HTTP handlers: parse, call the pipeline, render; nothing else
- ``pipeline``     one check end to end: verify, admit, decide, fan out, record, answer
- ``fanout``       parallel provider calls under one deadline, short-circuiting
- ``problems``     the one place where errors become RFC 9457 problem+json responses
- ``errors``       the broker's exception root, ``BrokerError``
- ``settings``     the broker's TOML config, read once into a frozen object
- ``stores``       replay/rate-limit admission (memory, Redis) and the consent log (SQLite)
- ``client``       ``EligibilityClient``: the council side, signs queries, verifies answers
- ``devscheme``    generates a development scheme (keys, signed registry, configs)
- ``demo``         ``axb demo``: the whole journey on embedded defaults
- ``cli``          the ``axb`` command line
- ``logging``, ``metrics``, ``openapi``
"""
