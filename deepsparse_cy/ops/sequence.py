"""Sequence and Optional operators (numpy references).

ONNX sequences are Python lists of arrays; an empty optional is None. Ops that may hand a list
through as one output are Op subclasses (a plain function's list would read as several outputs).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import Op, register


def _pos(position, n, insert=False):
    p = int(np.asarray(position).reshape(-1)[0])
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        raise InputError(f"sequence position {p} out of range for length {n}")
    return p + n if p < 0 else p


@register("SequenceConstruct", since=11, seq_output=True)
def SequenceConstruct(*xs):
    return list(xs)


@register("SequenceEmpty", since=11, seq_output=True)
def SequenceEmpty(*, dtype=None):
    return []


@register("SequenceAt", since=11)
def SequenceAt(seq, position):
    return seq[_pos(position, len(seq))].copy()


@register("SequenceInsert", since=11, seq_output=True)
def SequenceInsert(seq, tensor, position=None):
    res = list(seq)
    if position is None:
        res.append(tensor)
    else:
        res.insert(_pos(position, len(seq), insert=True), tensor)
    return res


@register("SequenceErase", since=11, seq_output=True)
def SequenceErase(seq, position=None):
    res = list(seq)
    if not res:
        raise InputError("SequenceErase on an empty sequence")
    del res[-1 if position is None else _pos(position, len(seq))]
    return res


@register("SequenceLength", since=11)
def SequenceLength(seq):
    return np.array(len(seq), dtype=np.int64)


@register("SplitToSequence", since=11, seq_output=True)
def SplitToSequence(x, split=None, *, axis=0, keepdims=1):
    axis = axis + x.ndim if axis < 0 else axis
    dim = x.shape[axis]
    if split is None:
        parts = [1] * dim
    else:
        split = np.asarray(split)
        if split.ndim == 0:
            # Chunks of `split`, the last one possibly shorter.
            n = int(split)
            if n <= 0:
                raise InputError("SplitToSequence: split must be positive")
            parts = [n] * (dim // n) + ([dim % n] if dim % n else [])
        else:
            parts = [int(s) for s in split]
            if sum(parts) != dim:
                raise ShapeError(f"SplitToSequence: parts {parts} do not add up to {dim}")
    bounds = np.cumsum([0] + parts)
    idx = [slice(None)] * x.ndim
    res = []
    for b, e in zip(bounds[:-1], bounds[1:]):
        idx[axis] = slice(int(b), int(e))
        r = x[tuple(idx)].copy()
        if split is None and not keepdims:
            r = r.reshape(r.shape[:axis] + r.shape[axis + 1:])
        res.append(r)
    return res


@register("ConcatFromSequence", since=11)
def ConcatFromSequence(seq, *, axis, new_axis=0):
    if not seq:
        raise InputError("ConcatFromSequence of an empty sequence")
    if new_axis:
        return np.stack(seq, axis=axis)
    return np.concatenate(seq, axis=axis)


@register("Optional", since=15)
class Optional(Op):
    """Wraps a tensor or sequence (or nothing: None) as an optional value."""

    def run(self, inputs, outs):
        return [inputs[0] if inputs else None]


@register("OptionalHasElement", since=15)
def OptionalHasElement(x=None):
    return np.array(x is not None, dtype=bool)


@register("OptionalGetElement", since=15)
class OptionalGetElement(Op):
    """The optional's content; a plain tensor or sequence passes through (OptionalGetElement-18)."""

    def run(self, inputs, outs):
        if not inputs or inputs[0] is None:
            raise InputError("OptionalGetElement on an empty optional")
        return [inputs[0]]
