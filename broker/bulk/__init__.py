"""Bulk and asynchronous checks: a council submits a signed job of many subjects, polls it (or
is sent a signed notice when it ends) and downloads signed results. The pure half (manifest,
rows, results, notices) is :mod:`trust.bulk`; the durable state is
:mod:`broker.stores.consent_log.jobs`.

General layout:

- ``service``  what the app holds for bulk jobs, and ``install``: the store, the runner and the
               notifier in a cleanup context of the app
- ``intake``   ``POST``: the manifest through the gate, the policy decided once, the items file
               streamed row by row into the store; a bad row refuses the job, nothing started
- ``runner``   each process's worker: claims jobs by lease, reconciles what the log already
               holds, checks items in chunks through ``fan_out``, records each before its result
- ``notices``  end-of-job notices: the signed ``bulk-notice+jwt`` posted to the council's
               registered callback, retried with backoff under a lease until taken or given up
- ``handlers`` the HTTP handlers: submit, status, cancel, results (NDJSON, CSV), signed results
"""
