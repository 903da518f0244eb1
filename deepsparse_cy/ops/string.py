"""String operators: StringNormalizer, StringConcat, StringSplit, RegexFullMatch.

Strings are object arrays of Python str. These ops work per element through np.frompyfunc;
string tensors are small next to the numeric hot path.
"""
from __future__ import annotations

import operator
import re

import numpy as np

from ..errors import InputError
from .registry import register

_concat = np.frompyfunc(operator.add, 2, 1)


@register("StringNormalizer", since=10)
def StringNormalizer(x, *, case_change_action="NONE", is_case_sensitive=0, locale="",
                     stopwords=None):
    if x.ndim == 2 and x.shape[0] != 1 or x.ndim not in (1, 2):
        raise InputError(f"StringNormalizer: input must be [C] or [1, C], got {x.shape}")
    words = [str(w) for w in x.reshape(-1)]
    if stopwords:
        if is_case_sensitive:
            stops = set(stopwords)
            words = [w for w in words if w not in stops]
        else:
            stops = {s.lower() for s in stopwords}
            words = [w for w in words if w.lower() not in stops]
    if case_change_action == "LOWER":
        words = [w.lower() for w in words]
    elif case_change_action == "UPPER":
        words = [w.upper() for w in words]
    elif case_change_action != "NONE":
        raise InputError(f"StringNormalizer: unknown case_change_action {case_change_action!r}")
    if not words:
        words = [""]                                 # everything filtered: one empty string
    res = np.array(words, dtype=object)
    return res.reshape(1, -1) if x.ndim == 2 else res


@register("StringConcat", since=20)
def StringConcat(x, y):
    return np.asarray(_concat(x, y), dtype=object)


@register("StringSplit", since=20, data_dependent_shape=True)
def StringSplit(x, *, delimiter=None, maxsplit=None):
    sep = delimiter or None                          # "" or absent: split on whitespace runs
    ms = -1 if maxsplit is None else int(maxsplit)
    parts = [str(s).split(sep, ms) for s in x.reshape(-1)]
    counts = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
    width = max((len(p) for p in parts), default=0)
    y = np.full((len(parts), width), "", dtype=object)
    for i, p in enumerate(parts):
        y[i, :len(p)] = p
    return y.reshape(x.shape + (width,)), counts


@register("RegexFullMatch", since=20)
def RegexFullMatch(x, *, pattern):
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise InputError(f"RegexFullMatch: bad pattern {pattern!r}: {e}") from e
    match = np.frompyfunc(lambda s: rx.fullmatch(s) is not None, 1, 1)
    return np.asarray(match(x), dtype=bool).reshape(x.shape)
