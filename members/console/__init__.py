"""The auditor's console: ``app`` (the aiohttp app, its guards and pages) and ``templates/``
(the Jinja pages and stylesheet)."""
