""" "Who checked my data": the resident's own view of the consent log (UK GDPR Art. 15).

General layout:

- ``page``   sign-in with an identity provider, the session, the list of checks
- ``api``    the same list for councils' own portals (``POST /v1/resident/checks``)

Beside it, ``templates/`` holds the pages in the GOV.UK Design System's markup (no
JavaScript); GOV.UK Frontend's stylesheet, fonts and crest come from :mod:`connectors.govuk`,
which the auditor's console uses too.
"""
