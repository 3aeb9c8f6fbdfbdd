"""Payload filters (`filters.Clauses`) in qdrant-edge-py's own filter types: the embedded
engine's twin of the translation in `qdrant.py`, over the same payload layout."""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import qdrant_edge as qe

from .filters import Clauses, MatchAtom
from .interface import StoreError


def _bool_matches() -> dict[bool, qe.MatchValue]:
    """MatchValue(True/False) that really match booleans, built once.

    The binding tries int before bool, so MatchValue(True) becomes MatchValue(1) and never
    matches a stored true. numpy.bool_ reaches the bool variant only where its (deprecated)
    use as an integer fails, so it is built once here with that deprecation as an error: doing
    it per request would flip a process-wide warnings filter under other threads.
    """
    out: dict[bool, qe.MatchValue] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for flag in (True, False):
            try:
                match = qe.MatchValue(cast(Any, np.bool_(flag)))
            except (TypeError, DeprecationWarning):
                continue
            if isinstance(match.value, bool) and match.value is flag:
                out[flag] = match
    return out


_BOOL_MATCH = _bool_matches()


def _condition(atom: MatchAtom) -> qe.FieldCondition:
    if atom.kind == "range":
        return qe.FieldCondition(atom.key, range=qe.RangeFloat(gte=atom.value, lte=atom.value))
    if atom.kind == "any":
        return qe.FieldCondition(atom.key, match=qe.MatchAny(atom.value))
    if isinstance(atom.value, bool):
        match = _BOOL_MATCH.get(atom.value)
        if match is None:
            raise StoreError("this qdrant-edge build cannot match booleans (see _bool_matches)")
        return qe.FieldCondition(atom.key, match=match)
    return qe.FieldCondition(atom.key, match=qe.MatchValue(atom.value))


def to_edge_filter(clauses: Clauses) -> qe.Filter | None:
    """AND of ORs -> qdrant_edge.Filter (a one-atom OR is the bare condition)."""
    if not clauses:
        return None
    must: list[Any] = []
    for ors in clauses:
        if len(ors) == 1:
            must.append(_condition(ors[0]))
        else:
            must.append(qe.Filter(should=[_condition(a) for a in ors]))
    return qe.Filter(must=must)
