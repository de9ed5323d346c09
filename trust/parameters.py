"""Parameterised attributes: typed parameter schemas, and predicates that bind them.

A provider may declare an attribute that takes parameters ("Universal Credit take-home pay over
the last *periods* assessment periods below *amount_pence*"), each with a schema: its type and
bounds. A check version binds every parameter to a value; the bound attribute is a
:class:`Predicate`, and the provider answers yes or no for exactly that predicate, never the
amount behind it. Values are integers (money in pence, counts, points) or one of a declared set
of words: nothing a provider could read as free text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

ParameterValue = int | str
Bindings = tuple[tuple[str, ParameterValue], ...]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_WORD = re.compile(r"[a-z0-9][a-z0-9.\-]{0,63}")
MAX_INTEGER = 10**12  # far above any amount in pence a rule needs; below JSON's exact range
MAX_PARAMETERS = 8


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """One declared parameter: ``integer`` within ``minimum``..``maximum`` or ``word`` in
    ``choices``."""

    name: str
    type: str
    description: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> ParameterValue:
        """The value if it fits this schema; raises ``ValueError`` saying why not."""
        if self.type == "integer":
            if type(value) is not int:
                raise ValueError(f"parameter {self.name} must be an integer")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"parameter {self.name} is below its minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"parameter {self.name} is above its maximum {self.maximum}")
            return value
        if not isinstance(value, str) or value not in self.choices:
            raise ValueError(f"parameter {self.name} must be one of {list(self.choices)}")
        return value

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.type == "integer":
            document |= {"minimum": self.minimum, "maximum": self.maximum}
        else:
            document["choices"] = list(self.choices)
        return document


def _bound(raw: Mapping[str, Any], key: str, name: str) -> int:
    value = raw.get(key)
    if type(value) is not int or not -MAX_INTEGER <= value <= MAX_INTEGER:
        raise ValueError(f"parameter {name}: {key} must be an integer within ±10^12")
    return value


def parse_parameter_schema(raw: Any) -> Mapping[str, ParameterSpec]:
    """A provider attribute's ``parameters`` object; raises ``ValueError``. Integers need both
    bounds: an unbounded parameter is a schema that checks nothing."""
    if not isinstance(raw, dict) or not 0 < len(raw) <= MAX_PARAMETERS:
        raise ValueError(f"parameters is an object of 1 to {MAX_PARAMETERS} parameters")
    specs: dict[str, ParameterSpec] = {}
    for name, body in raw.items():
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise ValueError(f"parameter name {name!r} must be lower_snake_case")
        if not isinstance(body, dict) or not isinstance(body.get("description"), str):
            raise ValueError(f"parameter {name} needs a type and a description")
        kind = body.get("type")
        if kind == "integer":
            if set(body) != {"type", "description", "minimum", "maximum"}:
                raise ValueError(f"integer parameter {name}: type, description, minimum, maximum")
            low, high = _bound(body, "minimum", name), _bound(body, "maximum", name)
            if low > high:
                raise ValueError(f"parameter {name}: minimum above maximum")
            specs[name] = ParameterSpec(name, kind, body["description"], low, high)
        elif kind == "word":
            choices = body.get("choices")
            if set(body) != {"type", "description", "choices"} or not (
                isinstance(choices, list)
                and choices
                and all(isinstance(c, str) and _WORD.fullmatch(c) for c in choices)
                and len(set(choices)) == len(choices)
            ):
                raise ValueError(f"word parameter {name} needs distinct slug choices")
            specs[name] = ParameterSpec(name, kind, body["description"], choices=tuple(choices))
        else:
            raise ValueError(f"parameter {name}: type must be integer or word")
    return MappingProxyType(specs)


def parse_bindings(raw: Any) -> Bindings:
    """A rule's ``parameters`` object as sorted bindings (shape only; the registry checks them
    against the provider's schema)."""
    if not isinstance(raw, dict) or not 0 < len(raw) <= MAX_PARAMETERS:
        raise ValueError(f"parameters is an object of 1 to {MAX_PARAMETERS} values")
    bindings: list[tuple[str, ParameterValue]] = []
    for name, value in raw.items():
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise ValueError(f"parameter name {name!r} must be lower_snake_case")
        if type(value) is int or (isinstance(value, str) and _WORD.fullmatch(value)):
            bindings.append((name, value))
        else:
            raise ValueError(f"parameter {name} must be an integer or a slug word")
    return tuple(sorted(bindings))


def check_bindings(schema: Mapping[str, ParameterSpec], bindings: Bindings, what: str) -> None:
    """Every declared parameter bound, nothing undeclared, each value within its schema."""
    bound = dict(bindings)
    undeclared = sorted(set(bound) - set(schema))
    if undeclared:
        raise ValueError(f"{what}: parameters not declared by the provider: {undeclared}")
    missing = sorted(set(schema) - set(bound))
    if missing:
        raise ValueError(f"{what}: parameters not bound: {missing}")
    for name, value in bindings:
        try:
            schema[name].check(value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Predicate:
    """A parameterised attribute with every parameter bound: the provider's yes/no question."""

    attribute: str
    parameters: Bindings

    def to_json(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "parameters": dict(self.parameters)}

    def __str__(self) -> str:
        bound = ",".join(f"{name}={value}" for name, value in self.parameters)
        return f"{self.attribute}({bound})"


def parse_predicate(raw: Any) -> Predicate:
    """A predicate as an attribute request carries it; raises ``ValueError``."""
    if not isinstance(raw, dict) or set(raw) != {"attribute", "parameters"}:
        raise ValueError("a predicate is an object with attribute and parameters")
    attribute = raw["attribute"]
    if not isinstance(attribute, str) or _WORD.fullmatch(attribute) is None:
        raise ValueError("a predicate's attribute is an attribute name")
    return Predicate(attribute, parse_bindings(raw["parameters"]))
