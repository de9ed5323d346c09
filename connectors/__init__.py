"""Everything on the provider side of the broker.

General layout:

- ``errors``          the one exception root, ``ConnectorError``, and its kinds
- ``base``            the ``Connector`` interface the broker calls, and the bounded body readers
- ``signed_http``     the signed-HTTP connector: signs attribute requests, verifies answers
- ``provider_kit``    what a provider runs: serves the provider API around one async lookup
- ``connections``     connection hygiene for every server: head, body, keep-alive timeouts, a cap
- ``govuk``           GOV.UK Frontend's vendored assets, served by our pages for people
- ``dvla_ves``        the adapter for DVLA's Vehicle Enquiry Service, which speaks its own API
- ``dwp_cis``         the adapter for DWP's Citizen Information API: OAuth2, match, claims
- ``conformance``     the conformance checker: plays the broker against a provider endpoint
- ``config``          reading a participant's TOML config (keys, anchors, registry file)
- ``pkcs11``          signing keys in PKCS#11 tokens (HSMs, SoftHSM2), named by RFC 7512 URIs
- ``scheme_folder``   ``SchemeFolder``: the one type that owns a scheme folder's layout
- ``registry_source`` the registry in force, re-read from its file without a restart
- ``reference``       reference DWP-, HMRC- and DVLA-style providers on synthetic data
- ``tracing``         W3C ``traceparent``: taken from a check, passed on to its providers
"""
