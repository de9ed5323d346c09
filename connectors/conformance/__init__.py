"""Provider conformance: play the broker against one provider endpoint and check every rule.

``run_conformance`` signs real attribute requests with the broker's key (and, for the hostile
ones, with other keys, other algorithms and broken claims), sends them to the provider and
judges each exchange. ``target_from_scheme`` builds the target from a scheme folder. Nothing
here logs or prints a subject's identifiers.

General layout:

- ``report``   ``CheckResult`` and ``ConformanceReport``: verdicts and the text table
- ``target``   ``ConformanceTarget``, sample people, reading a scheme folder into a target
- ``session``  the HTTP session that plays the broker; answers decoded but not trusted
- ``checks``   the registered checks with their stable ids, and ``run_conformance``
"""

from connectors.conformance.checks import CHECK_IDS, CHECKS, CheckSpec, health_url, run_conformance
from connectors.conformance.report import GROUPS, CheckResult, ConformanceReport, Group
from connectors.conformance.session import Answer, ConformanceSession, Exchange
from connectors.conformance.target import (
    ConformanceTarget,
    Samples,
    load_samples,
    load_scheme_registry,
    reference_samples,
    target_from_scheme,
)

__all__ = [
    "CHECKS",
    "CHECK_IDS",
    "GROUPS",
    "Answer",
    "CheckResult",
    "CheckSpec",
    "ConformanceReport",
    "ConformanceSession",
    "ConformanceTarget",
    "Exchange",
    "Group",
    "Samples",
    "health_url",
    "load_samples",
    "load_scheme_registry",
    "reference_samples",
    "run_conformance",
    "target_from_scheme",
]
