"""Everything on the provider side of the broker.

General layout:

- ``base``          the ``Connector`` interface the broker calls, and its errors
- ``signed_http``   the signed-HTTP connector: signs attribute requests, verifies answers
- ``provider_kit``  what a provider runs: serves the provider API around one async lookup
- ``config``        reading a participant's TOML config (keys, anchors, registry file)
- ``registry_source``  the registry in force, re-read from its file without a restart
- ``reference``     reference DWP-style and HMRC-style providers on synthetic data
"""
