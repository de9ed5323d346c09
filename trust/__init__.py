"""The trust framework: pure and synchronous, no network, time passed in.

General layout:

- ``errors``     the one exception root, ``TrustError``, and its kinds
- ``dates``      dates and times exactly as documented: ``YYYY-MM-DD``, RFC 3339 with a zone
- ``keys``       ES256 signing/verifying keys, JWK and JWKS, RFC 7638 thumbprints
- ``jws``        the JWS profile of every message type (the only module that touches PyJWT)
- ``messages``   the claims of each message: queries, answers, attribute requests and answers
- ``did``        an identity provider's DID document, read for its keys (nothing resolved)
- ``credential`` core identity credentials (One Login's shape): verify, derive the subject
- ``batch``      the batched attribute request and answer: one signature over up to N items
- ``registry``   the signed trust registry: document -> immutable ``Registry`` snapshot
- ``parameters`` parameterised attributes: typed parameter schemas, predicates binding them
- ``rules``      named, date-effective checks (local ones, banded ones) and how outcomes combine
- ``policy``     ``decide``: may this member ask this check for this purpose?
- ``pseudonym``  keyed HMAC subject pseudonyms for the consent log
- ``records``    consent records, canonical (JCS) and committed through salted digests
- ``merkle``     the RFC 6962/9162 Merkle tree, inclusion and consistency proofs
- ``tiles``      the tree as C2SP tlog-tiles: hash tiles, paths, a tree holding only its edge
- ``checkpoint`` C2SP tlog-checkpoints as Ed25519 signed notes
- ``cosignature``    C2SP tlog-cosignature: witnesses' Ed25519 ``cosignature/v1`` lines
- ``witnessing``     what a witness decides on ``add-checkpoint`` (C2SP tlog-witness), purely
- ``witness_policy`` the registry's witnesses and k-of-n policy; quorum of a cosigned checkpoint
- ``log_verify`` offline verification of a consent-log export
- ``receipts``   a council's proof that the log holds the record behind its answer
- ``bulk``       bulk jobs: the signed manifest, items read row by row, signed results
- ``replay``     an in-memory replay cache (time passed in)
- ``testing``    forging hostile tokens, for tests and conformance checks only
"""
