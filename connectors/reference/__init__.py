"""Reference attribute providers on synthetic data. Nothing here describes a real person.

General layout:

- ``population``  a deterministic synthetic population (documented test identities first,
  then generated people), the DWP-style matcher, and ``subject_of`` for test identities
- ``attributes``  the attributes the reference DWP and HMRC providers answer, decided for a
  person on a date
- ``predicates``  the parameterised attributes of the reference DWP provider (take-home pay
  below an amount, PIP points at least n) and the banded checks' documented answers
- ``blue_badges`` a council's own Blue Badge register, served as a provider: the council as
  provider
- ``keepers``     the synthetic DVLA keeper register behind the ``dvla-keeper`` provider
- ``dvla_stub``   a local stand-in for DVLA's Vehicle Enquiry Service test environment
- ``dwp_cis_stub`` a local stand-in for DWP's Citizen Information API on the synthetic
  population, with its documented error cases
- ``providers``   the reference providers: the provider kit around each lookup, from a config
- ``identity``    a One Login-style identity provider: a DID document and core identity
  credentials for the test identities
"""
