"""Softmax, LogSoftmax, Hardmax.

Before opset 13 the input is coerced to 2-D at `axis` (default 1) and normalised over the whole
flattened trailing block; from opset 13 only the single `axis` (default -1) is normalised.
Both reduce to "normalise over axes [a, b)" of a reshaped view, computed in place in `out`.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .registry import register


def _axis(axis, ndim):
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < max(ndim, 1):
        raise ShapeError(f"axis {axis} out of range for rank {ndim}")
    return a


def _view(x, axis, legacy):
    """x reshaped so the normalised elements lie on axis 1 of a 3-D array (pre, n, post)."""
    if x.ndim == 0:
        return x.reshape(1, 1, 1)
    a = _axis(axis, x.ndim)
    pre = int(np.prod(x.shape[:a]))
    if legacy:
        return x.reshape(pre, -1, 1)
    return x.reshape(pre, x.shape[a], -1)


def _softmax(x, axis, legacy, log, out):
    with np.errstate(invalid="ignore", divide="ignore"):   # all -inf rows give NaN, as specified
        return _softmax_impl(x, axis, legacy, log, out)


def _softmax_impl(x, axis, legacy, log, out):
    # float16 is computed natively (each step rounded to half), matching onnx's reference and
    # its conformance data; other non-BLAS types (bfloat16, ...) go through float32
    calc = x.dtype if x.dtype in (np.float16, np.float32, np.float64) else np.dtype(np.float32)
    x3 = _view(x, axis, legacy)
    if out is not None and out.dtype == calc and out.flags.c_contiguous:
        y = out.reshape(x3.shape)
        np.subtract(x3, x3.max(axis=1, keepdims=True), out=y, casting="unsafe")
    else:
        y = (x3 - x3.max(axis=1, keepdims=True)).astype(calc, copy=False)
    if log:
        s = np.log(np.sum(np.exp(y), axis=1, keepdims=True))
        np.subtract(y, s, out=y)
    else:
        np.exp(y, out=y)
        s = y.sum(axis=1, keepdims=True)
        np.divide(y, s, out=y)
    y = y.reshape(x.shape)
    if out is not None and not np.shares_memory(y, out):
        np.copyto(out, y, casting="unsafe")
        return out
    return y.astype(x.dtype, copy=False)


@register("Softmax", since=1)
def Softmax_1(x, *, axis=1, out=None):
    return _softmax(x, axis, True, False, out)


@register("Softmax", since=13)
def Softmax(x, *, axis=-1, out=None):
    return _softmax(x, axis, False, False, out)


@register("LogSoftmax", since=1)
def LogSoftmax_1(x, *, axis=1, out=None):
    return _softmax(x, axis, True, True, out)


@register("LogSoftmax", since=13)
def LogSoftmax(x, *, axis=-1, out=None):
    return _softmax(x, axis, False, True, out)


def _hardmax(x, axis, legacy):
    x3 = _view(x, axis, legacy)
    idx = np.argmax(x3, axis=1)                    # first maximum wins
    y = np.zeros(x3.shape, x.dtype)
    np.put_along_axis(y, idx[:, None, :], 1, axis=1)
    return y.reshape(x.shape)


@register("Hardmax", since=1)
def Hardmax_1(x, *, axis=1):
    return _hardmax(x, axis, True)


@register("Hardmax", since=13)
def Hardmax(x, *, axis=-1):
    return _hardmax(x, axis, False)
