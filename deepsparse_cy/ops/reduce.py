"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare (numpy references).

Axes are an attribute up to ReduceSum-11 / Reduce*-13 and an optional input from ReduceSum-13 /
Reduce*-18 (with noop_with_empty_axes). Results keep the input's dtype; float16/bfloat16 are
accumulated in float32. Reducing an empty set gives the op's identity (0, 1, -inf, +inf, ...).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .registry import register


def _axes(axes, rank):
    if axes is None:
        return None
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if not axes:
        return None
    out = []
    for a in axes:
        if not -rank <= a < max(rank, 1):
            raise ShapeError(f"reduce axis {a} out of range for rank {rank}")
        out.append(a + rank if a < 0 else a)
    return tuple(sorted(set(out)))


def _acc_dtype(dt):
    return np.dtype(np.float32) if dt.kind == "V" or dt == np.float16 else dt


def _finish(r, x, keepdims, axes):
    r = np.asarray(r)
    if r.dtype != x.dtype:
        r = r.astype(x.dtype)
    if not keepdims:
        return r
    ax = range(x.ndim) if axes is None else axes
    shape = [1 if i in ax else d for i, d in enumerate(x.shape)]
    return r.reshape(shape)


def _sum(x, axes):
    return np.sum(x, axis=axes, dtype=_acc_dtype(x.dtype))


def _mean(x, axes):
    n = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    if x.dtype.kind in "iu":
        with np.errstate(all="ignore"):
            s = np.sum(x, axis=axes, dtype=np.int64 if x.dtype.kind == "i" else np.uint64)
            if not n:
                return s
            q = s // n
            return q + ((s % n != 0) & (s < 0))    # truncate toward zero, as the reference does
    # sum / n rather than np.mean: same result, and an empty set gives NaN without a warning.
    with np.errstate(all="ignore"):
        s = np.sum(x, axis=axes, dtype=_acc_dtype(x.dtype))
        return np.true_divide(s, n, dtype=s.dtype)


def _extreme(fn, x, axes, big):
    if x.size == 0 or (axes is not None and any(x.shape[a] == 0 for a in axes)):
        if x.dtype == bool:
            init = big
        elif x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            init = info.max if big else info.min
        else:
            init = np.inf if big else -np.inf
        return fn(x, axis=axes, initial=init)
    return fn(x, axis=axes)


def _logsumexp(x, axes):
    xf = x.astype(_acc_dtype(x.dtype), copy=False)
    with np.errstate(all="ignore"):
        if xf.size == 0:
            return np.log(np.sum(np.exp(xf), axis=axes))
        m = np.max(xf, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)          # keeps -inf rows at -inf, no nan from inf-inf
        s = np.sum(np.exp(xf - m), axis=axes, keepdims=True)
        r = np.log(s) + m
    return r.reshape(np.sum(xf, axis=axes).shape)


_KERNELS = {
    "ReduceSum": _sum,
    "ReduceMean": _mean,
    "ReduceMax": lambda x, a: _extreme(np.max, x, a, False),
    "ReduceMin": lambda x, a: _extreme(np.min, x, a, True),
    "ReduceProd": lambda x, a: np.prod(x, axis=a, dtype=_acc_dtype(x.dtype)),
    "ReduceL1": lambda x, a: np.sum(np.abs(x), axis=a, dtype=_acc_dtype(x.dtype)),
    "ReduceL2": lambda x, a: np.sqrt(np.sum(np.square(x.astype(_acc_dtype(x.dtype), copy=False)), axis=a)),
    "ReduceLogSum": lambda x, a: np.log(np.sum(x, axis=a, dtype=_acc_dtype(x.dtype))),
    "ReduceLogSumExp": _logsumexp,
    "ReduceSumSquare": lambda x, a: np.sum(np.square(x), axis=a, dtype=_acc_dtype(x.dtype)),
}


def _reduce(name, x, axes, keepdims, noop_with_empty_axes=0):
    ax = _axes(axes, x.ndim)
    if ax is None and noop_with_empty_axes:
        # Reduce over the empty set of axes: identity for the reduction, but the element-wise
        # steps still run (ReduceSumSquare squares, ReduceLogSum takes the log, ...).
        ax = ()
    with np.errstate(divide="ignore", invalid="ignore"):
        r = _KERNELS[name](x, ax)
    return _finish(r, x, keepdims, ax)


def _make(name, input_since):
    def attr_form(data, *, axes=None, keepdims=1):
        return _reduce(name, data, axes, keepdims)

    def input_form(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        return _reduce(name, data, axes, keepdims, noop_with_empty_axes)

    attr_form.__name__ = f"{name}_1"
    input_form.__name__ = name
    register(name, since=1)(attr_form)
    register(name, since=input_since)(input_form)
    return input_form


ReduceSum = _make("ReduceSum", 13)
ReduceMean = _make("ReduceMean", 18)
ReduceMax = _make("ReduceMax", 18)
ReduceMin = _make("ReduceMin", 18)
ReduceProd = _make("ReduceProd", 18)
ReduceL1 = _make("ReduceL1", 18)
ReduceL2 = _make("ReduceL2", 18)
ReduceLogSum = _make("ReduceLogSum", 18)
ReduceLogSumExp = _make("ReduceLogSumExp", 18)
ReduceSumSquare = _make("ReduceSumSquare", 18)
