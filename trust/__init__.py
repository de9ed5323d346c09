"""The trust framework: pure and synchronous, no network, time passed in.

General layout:

- ``errors``     the one exception root, ``TrustError``, and its kinds
- ``dates``      dates and times exactly as documented: ``YYYY-MM-DD``, RFC 3339 with a zone
- ``keys``       ES256 signing/verifying keys, JWK and JWKS, RFC 7638 thumbprints
- ``jws``        the JWS profile of every message type (the only module that touches PyJWT)
- ``messages``   the claims of each message: queries, answers, attribute requests and answers
- ``batch``      the batched attribute request and answer: one signature over up to N items
- ``registry``   the signed trust registry: document -> immutable ``Registry`` snapshot
- ``rules``      named, date-effective checks and how attribute outcomes combine
- ``policy``     ``decide``: may this member ask this check for this purpose?
- ``pseudonym``  keyed HMAC subject pseudonyms for the consent log
- ``records``    consent records, canonical (JCS) and committed through salted digests
- ``merkle``     the RFC 6962/9162 Merkle tree, inclusion and consistency proofs
- ``checkpoint`` C2SP tlog-checkpoints as Ed25519 signed notes
- ``log_verify`` offline verification of a consent-log export
- ``receipts``   a council's proof that the log holds the record behind its answer
- ``replay``     an in-memory replay cache (time passed in)
- ``testing``    forging hostile tokens, for tests and conformance checks only
"""
