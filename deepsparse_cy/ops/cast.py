"""Type conversion operators: Cast, CastLike, BitCast (numpy references).

Every ONNX element type is a numpy dtype here; the narrow float and integer types (bfloat16,
float8*, float4e2m1, int4/uint4, int2/uint2) are ml_dtypes dtypes, as onnx.numpy_helper gives them.
Strings are object arrays of Python str.
"""
from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import onnx

from ..errors import InputError
from ..graph.ir import elem_dtype
from .registry import register

TP = onnx.TensorProto

# float8 types whose out-of-range values saturate to +-max when saturate=1 (Cast-19+).
_F8 = {np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e4m3fnuz),
       np.dtype(ml_dtypes.float8_e5m2), np.dtype(ml_dtypes.float8_e5m2fnuz)}
_E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)


def onnx_dtype(to):
    """numpy dtype for a TensorProto enum (or, for Cast-1, its name)."""
    if isinstance(to, str):
        to = TP.DataType.Value(to.upper())
    dt = elem_dtype(int(to))
    if dt is None:
        raise InputError(f"unsupported ONNX data type {to}")
    return dt


def _to_e8m0(x, saturate, round_mode):
    """float -> float8e8m0 (exponent-only) following Cast's round_mode/saturate rules."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.uint16)
    special = exp == 0xFF                       # NaN / Inf keep the all-ones exponent
    mant = bits & 0x7FFFFF
    if round_mode == "up":
        inc = (mant > 0) & ~special
    elif round_mode == "nearest":
        g = (bits & 0x400000) > 0
        rest = (bits & 0x3FFFFF) > 0
        inc = g & (rest | (exp > 0)) & ~special
    elif round_mode == "down":
        inc = np.zeros(exp.shape, dtype=bool)
    else:
        raise InputError(f"Cast: unsupported round_mode {round_mode!r}")
    if saturate:
        inc &= exp != 0xFE                      # never round past the largest exponent
    exp = exp + inc
    out = np.where(special, 0xFF, exp).astype(np.uint8)
    return out.view(ml_dtypes.float8_e8m0fnu)


def _from_string(x, dt):
    s = np.asarray(x, dtype=np.str_)
    if dt.kind == "b":
        return s.astype(np.float64).astype(bool)
    if dt.kind in "iu":
        try:
            return s.astype(dt)
        except ValueError:                      # "2.5" to an int: undefined, truncate like C
            return s.astype(np.float64).astype(dt)
    if dt.kind == "f":
        return s.astype(dt)                     # numpy parses "INF", "+INF", "NaN", "1e-5"
    return cast_array(s.astype(np.float32), dt)  # ml_dtypes types go through float32


def cast_array(x, dt, saturate=1, round_mode="up"):
    """Convert array x to numpy dtype dt with ONNX Cast semantics."""
    x = np.asarray(x)
    if x.dtype == dt:
        return x.copy()
    if dt == object:
        if x.dtype == object:
            return x.copy()
        if x.dtype.kind not in "fiub":           # narrow ml_dtypes floats print via float32
            x = x.astype(np.float32)
        return x.astype(np.str_).astype(object)
    if x.dtype == object or x.dtype.kind in "US":
        return _from_string(x, dt)
    if dt == _E8M0:
        return _to_e8m0(x, saturate, round_mode)
    if dt in _F8 and saturate:
        fi = ml_dtypes.finfo(dt)
        src = x if x.dtype.kind == "f" else x.astype(np.float32)
        with np.errstate(invalid="ignore"):
            src = np.clip(src, float(fi.min), float(fi.max))   # NaN passes through clip
        return src.astype(dt)
    with np.errstate(all="ignore"):
        return x.astype(dt)


def _plain_numeric(x, dt):
    """A cast of array x to dt that np.copyto(casting="unsafe") does as ONNX says: numeric to
    numeric, neither a float8 / e8m0 type nor strings."""
    return dt != object and dt not in _F8 and dt != _E8M0 and x.dtype != object \
        and x.dtype.kind in "fiub" and dt.kind in "fiub"


@register("Cast", since=1)
def Cast(x, *, to, saturate=1, round_mode="up", out=None):
    dt = onnx_dtype(to)
    if out is not None and _plain_numeric(x, dt):
        np.copyto(out, x, casting="unsafe")     # plain numeric casts write straight into the slot
        return out
    return cast_array(x, dt, saturate, round_mode)


def _cast_bind(inputs, out, to, saturate=1, round_mode="up"):
    """engine._run_plan's bound call: a plain numeric cast straight into the step's slot (the
    path Cast takes with `out`); None for the others."""
    x = inputs[0]
    dt = onnx_dtype(to)
    if not isinstance(x, np.ndarray) or not _plain_numeric(x, dt) or out.dtype != dt \
            or out.shape != x.shape:
        return None
    return functools.partial(np.copyto, out, x, casting="unsafe"), ()


Cast.bind = _cast_bind


@register("CastLike", since=15)
def CastLike(x, target_type, *, saturate=1, round_mode="up"):
    return cast_array(x, target_type.dtype, saturate, round_mode)


@register("BitCast", since=26)
def BitCast(x, *, to):
    dt = onnx_dtype(to)
    if dt == object or x.dtype == object:
        raise InputError("BitCast does not support string tensors")
    if dt.itemsize != x.dtype.itemsize:
        raise InputError(f"BitCast: {x.dtype} and {dt} differ in bit width")
    # ml_dtypes' 4-bit types sit one per byte, so a byte view is exact for them too.
    return x.copy().view(dt)
