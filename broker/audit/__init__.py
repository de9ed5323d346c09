"""The audit API and the public log endpoints.

General layout:

- ``api``     the handlers: public checkpoints and proofs, auditors' records, subject access,
  export, and councils' consent withdrawals
"""
