""" "Who checked my data": the resident's own view of the consent log (UK GDPR Art. 15).

General layout:

- ``page``   sign-in with an identity provider, the session, the list of checks
- ``api``    the same list for councils' own portals (``POST /v1/resident/checks``)

Beside it, ``templates/`` holds the pages in the GOV.UK Design System's markup (no
JavaScript), and ``static/`` GOV.UK Frontend's stylesheet, fonts and crest, vendored from npm
by ``.ci/vendor-govuk-frontend``: nothing is fetched at run time.
"""
