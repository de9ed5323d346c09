"""The auditor's console, served on the auditor's own machine.

General layout:

- ``app``   the aiohttp app: its guards (Host, cookie, Origin, form token), pages and start-up;
  the Jinja pages and stylesheet are in ``templates/``
"""
