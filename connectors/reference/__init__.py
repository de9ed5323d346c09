"""Reference attribute providers on synthetic data.

``population`` builds a deterministic synthetic population (hand-written test identities
first, then generated people) and the DWP-style matcher over it; ``attributes`` names the
attributes the reference DWP and HMRC providers answer and evaluates them for a person on
a date. Nothing here does I/O and none of it describes a real person.
"""
