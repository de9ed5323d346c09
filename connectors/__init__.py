"""Everything on the provider side of the broker.

General layout:

- ``errors``        the one exception root, ``ConnectorError``, and its kinds
- ``base``          the ``Connector`` interface the broker calls, and the bounded body reader
- ``signed_http``   the signed-HTTP connector: signs attribute requests, verifies answers
- ``provider_kit``  what a provider runs: serves the provider API around one async lookup
- ``config``        reading a participant's TOML config (keys, anchors, registry file)
- ``scheme_folder`` ``SchemeFolder``: the one type that owns a scheme folder's layout
- ``registry_source``  the registry in force, re-read from its file without a restart
- ``reference``     reference DWP-style and HMRC-style providers on synthetic data
"""
