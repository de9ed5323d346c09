"""The scheme operator's tools and the development scheme.

General layout:

- ``admin``   keep the registry's source, review registrations and changes, publish it signed
- ``changes`` what publishing the source would change, check by check: for whom, from when
- ``dev``     a development scheme: every key, a signed registry and every config, in a folder
- ``dev_tls`` a development CA and provider certificates, for a scheme run in containers
- ``dwp_cis`` the DWP CIS adapter joined to a development scheme, with its free-school-meals check
"""
