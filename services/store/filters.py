"""Payload filters: what a request may ask for, validated once, and the atoms backends translate.

Qdrant matches only keyword, integer and bool values, and `MatchAny` only lists of one of str or
int, so floats become a closed range and mixed `any_of` lists an OR of one atom per type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Scalar = str | int | float | bool
"""Payload values a filter can compare against."""

RESERVED_PREFIX = "_"
"""Payload keys starting with this belong to the store, never to callers."""

_MAX_INT = 2**63


@dataclass(frozen=True)
class Equals:
    """Condition: payload[key] == value."""

    key: str
    value: Scalar


@dataclass(frozen=True)
class AnyOf:
    """Condition: payload[key] is one of values."""

    key: str
    values: tuple[Scalar, ...]

    def __init__(self, key: str, values: Sequence[Scalar]) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "values", tuple(values) if is_sequence(values) else values)


Condition = Equals | AnyOf


@dataclass(frozen=True)
class PayloadFilter:
    """Conditions on user payload, all of which must hold (AND).

    Validated on construction so a bad filter from a request fails as ValueError naming the
    condition, before any backend sees it.
    """

    conditions: tuple[Condition, ...] = ()

    def __init__(self, conditions: Sequence[Condition] = ()) -> None:
        if not is_sequence(conditions):
            raise ValueError(f"PayloadFilter takes a sequence of conditions, got {conditions!r}")
        conds = tuple(conditions)
        for i, cond in enumerate(conds):
            problem = _condition_problem(cond)
            if problem is not None:
                raise ValueError(f"bad filter condition #{i} {cond!r}: {problem}")
        object.__setattr__(self, "conditions", conds)


def is_sequence(x: object) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, str | bytes)


def _scalar_problem(v: object) -> str | None:
    if isinstance(v, bool | str):
        return None
    if isinstance(v, int):
        return None if -_MAX_INT <= v < _MAX_INT else f"integer {v} does not fit in int64"
    if isinstance(v, float):
        return None if math.isfinite(v) else f"value {v} is not finite"
    return f"value {v!r} is not str, int, float or bool"


def _condition_problem(cond: object) -> str | None:
    if not isinstance(cond, Equals | AnyOf):
        return "not an Equals or AnyOf condition"
    if not isinstance(cond.key, str) or not cond.key:
        return "key must be a non-empty string"
    if cond.key.startswith(RESERVED_PREFIX):
        return f"keys starting with {RESERVED_PREFIX!r} are reserved for the store"
    if isinstance(cond, Equals):
        return _scalar_problem(cond.value)
    if not isinstance(cond.values, tuple) or not cond.values:
        return "any_of needs a non-empty list of values"
    for v in cond.values:
        problem = _scalar_problem(v)
        if problem is not None:
            return problem
    return None


@dataclass(frozen=True)
class MatchAtom:
    """Backend-neutral leaf: `value` match, `any` match (one type), or float `range` equality."""

    key: str
    kind: Literal["value", "any", "range"]
    value: Any


Clauses = list[list[MatchAtom]]
"""An AND of ORs of atoms."""


def filter_clauses(flt: PayloadFilter | None) -> Clauses:
    """The AND of ORs of atoms every backend can express ([] for no filter)."""
    if flt is None:
        return []
    if not isinstance(flt, PayloadFilter):
        raise ValueError(f"filter must be a PayloadFilter, got {type(flt).__name__}")
    clauses: Clauses = []
    for cond in flt.conditions:
        if isinstance(cond, Equals):
            clauses.append([_atom(cond.key, cond.value)])
            continue
        strs = [v for v in cond.values if isinstance(v, str)]
        ints = [v for v in cond.values if isinstance(v, int) and not isinstance(v, bool)]
        others = [v for v in cond.values if isinstance(v, bool | float)]
        ors: list[MatchAtom] = []
        if strs:
            ors.append(MatchAtom(cond.key, "any", strs))
        if ints:
            ors.append(MatchAtom(cond.key, "any", ints))
        ors.extend(_atom(cond.key, v) for v in dict.fromkeys(others))
        clauses.append(ors)
    return clauses


def _atom(key: str, v: Scalar) -> MatchAtom:
    if isinstance(v, float):
        return MatchAtom(key, "range", v)
    return MatchAtom(key, "value", v)
