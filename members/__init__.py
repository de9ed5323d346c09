"""What runs at the scheme's members, not in the broker: it imports ``trust`` (and the
participant config readers of ``connectors``), never ``broker``, so it ships without the server.

General layout:

- ``errors``     the members' exception root, ``MembersError``, and its kinds
- ``council``    ``EligibilityClient``: a council signs queries, verifies answers, proves receipts
- ``bulk``       bulk jobs of a council: submit, poll, cancel, results verified by signature
- ``auditor``    ``AuditClient``: an auditor signs audit API requests, checks kept answers
- ``console``    the auditor's console: web pages over the audit API on the auditor's machine
"""
