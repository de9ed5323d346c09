"""The trust framework: pure and synchronous, no network, time passed in.

General layout:

- ``errors``     the one exception root, ``TrustError``, and its kinds
- ``keys``       ES256 signing/verifying keys, JWK and JWKS, RFC 7638 thumbprints
- ``jws``        the JWS profile of every message type (the only module that touches PyJWT)
- ``messages``   the claims of each message: queries, answers, attribute requests and answers
- ``registry``   the signed trust registry: document -> immutable ``Registry`` snapshot
- ``rules``      named, date-effective checks and how attribute outcomes combine
- ``policy``     ``decide``: may this member ask this check for this purpose?
- ``pseudonym``  keyed HMAC subject pseudonyms for the consent log
- ``records``    the consent record built from a decided, answered query
- ``replay``     an in-memory replay cache (time passed in)
"""
