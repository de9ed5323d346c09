"""The audit API and the public log endpoints.

General layout:

- ``api``      auditors' signed requests: records, one record with its proof, subject access,
  export
- ``public``   anyone's: the latest checkpoint, the log's key, inclusion and consistency proofs
- ``export``   the export format ``axb audit verify`` reads, and a record as the API shows it
- ``params``   query parameters read strictly (counts, ISO 8601 times)
"""
