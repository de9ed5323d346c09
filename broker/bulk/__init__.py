"""Bulk and asynchronous checks: a council submits a signed job of many subjects, polls it and
downloads signed results. The pure half (manifest, rows, results) is :mod:`trust.bulk`; the
durable state is :mod:`broker.stores.consent_log.jobs`.

General layout:

- ``service``  what the app holds for bulk jobs, and ``install``: the store and the runner in a
               cleanup context of the app
- ``intake``   ``POST``: the manifest through the gate, the policy decided once, the items file
               streamed row by row into the store; a bad row refuses the job, nothing started
- ``runner``   each process's worker: claims jobs by lease, reconciles what the log already
               holds, checks items in chunks through ``fan_out``, records each before its result
- ``handlers`` the HTTP handlers: submit, status, cancel, results (NDJSON, CSV), signed results
"""
