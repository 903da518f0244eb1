"""Element-wise math, logic, comparison and activation operators (numpy references).

Owns: Add/Sub/Mul/Div/Pow/Mod, unary math (Abs ... Atanh, Erf), variadic Min/Max/Sum/Mean,
Clip, Where, IsNaN/IsInf, BitShift/Bitwise*, And/Or/Xor/Not, comparisons and activations
(Relu ... Gelu, Mish, Swish, SwiGLU).

Binary ops broadcast like numpy and keep the ONNX output dtype; most accept ``out=`` so the
engine can hand them an arena slot and nothing is allocated on the hot path.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import ShapeError
from ..limits import check_shape
from .registry import register

try:  # scipy's erf is vectorised C; it is optional (not a dependency of the package)
    from scipy.special import erf as _scipy_erf
except Exception:  # noqa: BLE001
    _scipy_erf = None


def _arr(r):
    """ufuncs on 0-d inputs return numpy scalars; the engine wants arrays."""
    return r if type(r) is np.ndarray else np.asarray(r)


def _buf(x, out):
    """The output buffer: the engine's slot, or a fresh array (so in-place steps work on 0-d too)."""
    return out if out is not None else np.empty(x.shape, x.dtype)


def _legacy_b(a, b, broadcast, axis):
    """Opset-1/6 limited broadcasting: B's dims align with A's starting at `axis`."""
    if not broadcast or b.ndim == 0 or b.ndim == a.ndim:
        return b
    if axis is None:
        axis = a.ndim - b.ndim
    if axis < 0:
        axis += a.ndim
    return b.reshape(b.shape + (1,) * (a.ndim - axis - b.ndim))


_GUARD_ELEMS = 1 << 26   # broadcasts up to this many elements need no budget check


def _guard(*xs):
    """Refuse a broadcast whose result would exceed the memory budget, before numpy allocates.

    [n, 1] against [1, n] makes n*n elements out of 2n: the only way element-wise ops amplify
    memory. The product of the input sizes bounds the result's size, so the exact (slower)
    check runs only when that bound is large; same-shape and scalar operands cost two compares."""
    n = 1
    big = 0
    for x in xs:
        s = getattr(x, "size", 1)
        n *= s if s > 1 else 1
        big = max(big, s)
    if n <= _GUARD_ELEMS or n == big:
        return
    try:
        shape = np.broadcast_shapes(*(np.shape(x) for x in xs))
    except ValueError as e:
        raise ShapeError(f"shapes {[list(np.shape(x)) for x in xs]} do not broadcast") from e
    check_shape(shape, max(np.asarray(x).dtype.itemsize for x in xs), "broadcast result")


def _bin(ufunc, a, b, out):
    if out is not None:
        return ufunc(a, b, out=out)
    _guard(a, b)
    return _arr(ufunc(a, b))


# --- arithmetic --------------------------------------------------------------------------------

def _make_binary(name, ufunc):
    def legacy(a, b, *, broadcast=0, axis=None):
        b = _legacy_b(a, b, broadcast, axis)
        _guard(a, b)
        return _arr(ufunc(a, b))

    def fn(a, b, *, out=None):
        if out is not None:
            return ufunc(a, b, out=out)
        _guard(a, b)
        return _arr(ufunc(a, b))

    legacy.__name__ = fn.__name__ = name
    fn.bind_out = True          # ufunc(a, b, out=out) always fills out (registry.FunctionOp.bind)
    register(name, since=1)(legacy)
    register(name, since=7)(fn)
    return fn


Add = _make_binary("Add", np.add)
Sub = _make_binary("Sub", np.subtract)
Mul = _make_binary("Mul", np.multiply)


def _div(a, b, out=None):
    if out is None:
        _guard(a, b)
    if a.dtype.kind in "iu":
        # ONNX integer division truncates toward zero (C semantics), numpy floors.
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.floor_divide(a, b)
            if a.dtype.kind == "i":
                r = np.remainder(a, b)
                q += ((r != 0) & ((a < 0) != (b < 0))).astype(q.dtype)
        return q if out is None else np.copyto(out, q, casting="unsafe") or out
    with np.errstate(divide="ignore", invalid="ignore"):
        if out is not None:
            return np.divide(a, b, out=out)
        return _arr(np.divide(a, b))


@register("Div", since=1)
def Div_1(a, b, *, broadcast=0, axis=None):
    return _div(a, _legacy_b(a, b, broadcast, axis))


@register("Div", since=7)
def Div(a, b, *, out=None):
    return _div(a, b, out)


Div.bind_out = True             # _div(a, b, out) always fills out, integer division included


def _pow(a, b):
    _guard(a, b)
    if a.dtype == b.dtype and a.dtype.kind == "f":
        with np.errstate(all="ignore"):
            return _arr(np.power(a, b))
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        # numpy refuses negative integer exponents; ONNX wants the truncated result.
        if (np.asarray(b) < 0).any():
            with np.errstate(all="ignore"):
                r = np.power(a.astype(np.float64), b.astype(np.float64))
            return _arr(np.trunc(r).astype(a.dtype))
        return _arr(np.power(a, b.astype(a.dtype) if b.dtype != a.dtype else b).astype(a.dtype, copy=False))
    # Mixed types: compute wide, result keeps the base's dtype (Pow-12+).
    with np.errstate(all="ignore"):
        r = np.power(a.astype(np.float64) if a.dtype.kind != "f" or a.itemsize < 8 else a,
                     b.astype(np.float64) if b.dtype.kind != "f" or b.itemsize < 8 else b)
    return _arr(r.astype(a.dtype))


@register("Pow", since=1)
def Pow_1(a, b, *, broadcast=0, axis=None):
    return _pow(a, _legacy_b(a, b, broadcast, axis))


@register("Pow", since=7)
def Pow(a, b):
    return _pow(a, b)


@register("Mod", since=10)
def Mod(a, b, *, fmod=0):
    _guard(a, b)
    with np.errstate(all="ignore"):
        if fmod:
            return _arr(np.fmod(a, b))           # C fmod: sign of the dividend
        if a.dtype.kind in "iu":
            return _arr(np.mod(a, b))            # Python %: sign of the divisor
        r = np.mod(a, b)                         # float: sign of the divisor (Mod-28)
        return _arr(r)


# --- unary math ----------------------------------------------------------------------------------

def _make_unary(name, ufunc, since, quiet=False):
    if quiet:
        def fn(x, *, out=None):
            with np.errstate(all="ignore"):
                if out is not None:
                    return ufunc(x, out=out)
                return _arr(ufunc(x))
    else:
        def fn(x, *, out=None):
            if out is not None:
                return ufunc(x, out=out)
            return _arr(ufunc(x))
    fn.__name__ = name
    register(name, since=since)(fn)
    return fn


Abs = _make_unary("Abs", np.abs, 1)
Neg = _make_unary("Neg", np.negative, 1)
Exp = _make_unary("Exp", np.exp, 1, quiet=True)
Log = _make_unary("Log", np.log, 1, quiet=True)
Sqrt = _make_unary("Sqrt", np.sqrt, 1, quiet=True)
Reciprocal = _make_unary("Reciprocal", np.reciprocal, 1, quiet=True)
Floor = _make_unary("Floor", np.floor, 1)
Ceil = _make_unary("Ceil", np.ceil, 1)
Round = _make_unary("Round", np.round, 11)   # numpy rounds half to even, as ONNX does
Sign = _make_unary("Sign", np.sign, 9)
Sin = _make_unary("Sin", np.sin, 7, quiet=True)
Cos = _make_unary("Cos", np.cos, 7, quiet=True)
Tan = _make_unary("Tan", np.tan, 7, quiet=True)
Asin = _make_unary("Asin", np.arcsin, 7, quiet=True)
Acos = _make_unary("Acos", np.arccos, 7, quiet=True)
Atan = _make_unary("Atan", np.arctan, 7, quiet=True)
Sinh = _make_unary("Sinh", np.sinh, 9, quiet=True)
Cosh = _make_unary("Cosh", np.cosh, 9, quiet=True)
Asinh = _make_unary("Asinh", np.arcsinh, 9, quiet=True)
Acosh = _make_unary("Acosh", np.arccosh, 9, quiet=True)
Atanh = _make_unary("Atanh", np.arctanh, 9, quiet=True)
Tanh = _make_unary("Tanh", np.tanh, 1)

# Rational approximation of erf for float32 (the one Eigen/XLA use): |error| < 2e-7 on [-4, 4],
# and erf(|x| >= 4) rounds to +-1 in float32. Used only when scipy is missing.
_ERF_A = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_B = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)
_math_erf = np.frompyfunc(math.erf, 1, 1)


def _erf(x, out=None):
    if _scipy_erf is not None and x.dtype in (np.float32, np.float64):
        return _scipy_erf(x, out=out) if out is not None else _arr(_scipy_erf(x))
    if x.dtype == np.float64 or x.dtype.kind in "iu":
        # np.asarray: frompyfunc hands back a bare Python float for a 0-d input
        r = np.asarray(_math_erf(x.astype(np.float64)), dtype=np.float64)
        r = r.astype(x.dtype) if x.dtype.kind in "iu" else r
        return r if out is None else np.copyto(out, r) or out
    xf = np.clip(x.astype(np.float32), -4.0, 4.0)
    x2 = xf * xf
    p = np.full_like(x2, _ERF_A[0])
    for c in _ERF_A[1:]:
        p = p * x2 + np.float32(c)
    q = np.full_like(x2, _ERF_B[0])
    for c in _ERF_B[1:]:
        q = q * x2 + np.float32(c)
    r = (xf * p / q).astype(x.dtype, copy=False)
    return r if out is None else np.copyto(out, r) or out


@register("Erf", since=9)
def Erf(x, *, out=None):
    return _erf(x, out)


@register("IsNaN", since=9)
def IsNaN(x, *, out=None):
    return _arr(np.isnan(x, out=out)) if out is not None else _arr(np.isnan(x))


@register("IsInf", since=10)
def IsInf(x, *, detect_negative=1, detect_positive=1):
    if detect_negative and detect_positive:
        return _arr(np.isinf(x))
    if detect_negative:
        return _arr(np.isneginf(x))
    if detect_positive:
        return _arr(np.isposinf(x))
    return np.zeros(x.shape, dtype=bool)


# --- variadic ------------------------------------------------------------------------------------

def _variadic(ufunc, xs, out):
    if not xs:
        raise ShapeError("variadic operator needs at least one input")
    if len(xs) == 1:
        if out is not None:
            np.copyto(out, xs[0])
            return out
        return xs[0].copy()
    if out is None:
        _guard(*xs)
    if out is not None and out.shape == np.broadcast_shapes(*(x.shape for x in xs)):
        ufunc(xs[0], xs[1], out=out)
        for x in xs[2:]:
            ufunc(out, x, out=out)
        return out
    r = ufunc(xs[0], xs[1])
    for x in xs[2:]:
        r = ufunc(r, x, out=r if r.shape == np.broadcast_shapes(r.shape, x.shape) else None)
    return _arr(r)


@register("Max", since=1)
def Max(*xs, out=None):
    return _variadic(np.maximum, xs, out)


@register("Min", since=1)
def Min(*xs, out=None):
    return _variadic(np.minimum, xs, out)


@register("Sum", since=1)
def Sum(*xs, out=None):
    return _variadic(np.add, xs, out)


@register("Mean", since=1)
def Mean(*xs, out=None):
    r = _variadic(np.add, xs, out)
    if r is xs[0] or not r.flags.writeable:
        r = r.copy()
    if r.dtype.kind in "iu":
        np.copyto(r, _div(r, np.array(len(xs), r.dtype)))   # truncates toward zero, like Div
    else:
        np.divide(r, len(xs), out=r)
    return r


# --- clip / where ----------------------------------------------------------------------------------

@register("Clip", since=1)
def Clip_1(x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38):  # noqa: A002
    # Clip-1/6 bounds are attributes (floats, defaulting to +-FLT_MAX).
    return _arr(np.minimum(np.maximum(x, x.dtype.type(min)), x.dtype.type(max)))


@register("Clip", since=11)
def Clip(x, min=None, max=None, *, out=None):  # noqa: A002
    # Clip-11+: optional inputs; min > max yields max everywhere (max applied last).
    r = x
    if min is not None:
        r = np.maximum(r, min, out=out) if out is not None else np.maximum(r, min)
    if max is not None:
        r = np.minimum(r, max, out=out) if out is not None else np.minimum(r, max)
    if r is x:
        if out is not None:
            np.copyto(out, x)
            return out
        return x.copy()
    return _arr(r)


@register("Where", since=9)
def Where(condition, x, y, *, out=None):
    if out is not None:
        # Two masked copies straight into the arena slot instead of allocating np.where's result.
        np.copyto(out, y)
        np.copyto(out, x, where=condition)
        return out
    _guard(condition, x, y)
    return _arr(np.where(condition, x, y))


# --- logic / bitwise / comparisons -----------------------------------------------------------------

@register("BitShift", since=11)
def BitShift(x, y, *, direction="LEFT"):
    bits = x.dtype.itemsize * 8
    y = np.asarray(y)
    # Shifts >= the bit width (or negative, for signed T) are defined to give only the sign fill.
    bad = (y < 0) | (y >= bits) if y.dtype.kind == "i" else (y >= bits)
    ys = np.where(bad, 0, y).astype(x.dtype) if bad.any() else y.astype(x.dtype, copy=False)
    if direction == "LEFT":
        r = np.left_shift(x, ys)
        fill = np.zeros((), dtype=x.dtype)
    elif direction == "RIGHT":
        r = np.right_shift(x, ys)
        fill = np.where(x < 0, x.dtype.type(-1), x.dtype.type(0)) if x.dtype.kind == "i" else 0
    else:
        raise ValueError(f"BitShift: direction must be LEFT or RIGHT, got {direction!r}")
    if bad.any():
        r = np.where(bad, fill, r).astype(x.dtype, copy=False)
    return _arr(r)


def _make_simple_binary(name, ufunc, since):
    def fn(a, b, *, out=None):
        return _bin(ufunc, a, b, out)
    fn.__name__ = name
    register(name, since=since)(fn)
    return fn


BitwiseAnd = _make_simple_binary("BitwiseAnd", np.bitwise_and, 18)
BitwiseOr = _make_simple_binary("BitwiseOr", np.bitwise_or, 18)
BitwiseXor = _make_simple_binary("BitwiseXor", np.bitwise_xor, 18)
BitwiseNot = _make_unary("BitwiseNot", np.invert, 18)
Not = _make_unary("Not", np.logical_not, 1)


def _make_legacy_binary(name, ufunc):
    def legacy(a, b, *, broadcast=0, axis=None):
        b = _legacy_b(a, b, broadcast, axis)
        _guard(a, b)
        return _arr(ufunc(a, b))
    legacy.__name__ = name
    register(name, since=1)(legacy)
    return _make_simple_binary(name, ufunc, 7)


And = _make_legacy_binary("And", np.logical_and)
Or = _make_legacy_binary("Or", np.logical_or)
Xor = _make_legacy_binary("Xor", np.logical_xor)
Less = _make_legacy_binary("Less", np.less)
Greater = _make_legacy_binary("Greater", np.greater)
LessOrEqual = _make_simple_binary("LessOrEqual", np.less_equal, 12)
GreaterOrEqual = _make_simple_binary("GreaterOrEqual", np.greater_equal, 12)


def _equal(a, b, out=None):
    if a.dtype == object or b.dtype == object:   # string tensors (Equal-19)
        return np.asarray(np.equal(a, b), dtype=bool)
    return _bin(np.equal, a, b, out)


@register("Equal", since=1)
def Equal_1(a, b, *, broadcast=0, axis=None):
    return _equal(a, _legacy_b(a, b, broadcast, axis))


@register("Equal", since=7)
def Equal(a, b, *, out=None):
    return _equal(a, b, out)


# --- activations ---------------------------------------------------------------------------------

@register("Relu", since=1)
def Relu(x, *, out=None):
    if out is not None:
        return np.maximum(x, x.dtype.type(0), out=out)
    return _arr(np.maximum(x, x.dtype.type(0)))


@register("LeakyRelu", since=1)
def LeakyRelu(x, *, alpha=0.01, out=None):
    r = np.multiply(x, x.dtype.type(alpha), out=_buf(x, out))
    np.copyto(r, x, where=x >= 0)
    return r


@register("PRelu", since=1)
def PRelu(x, slope, *, out=None):
    slope = slope.astype(x.dtype, copy=False)
    if out is not None and out.shape == x.shape:
        np.multiply(x, slope, out=out)
        np.copyto(out, x, where=x >= 0)
        return out
    return _arr(np.where(x < 0, x * slope, x).astype(x.dtype, copy=False))


def _sigmoid_into(x, r):
    """1 / (1 + exp(-x)) in place in r; exp overflow gives the right limit 0, so ignore it."""
    with np.errstate(over="ignore", under="ignore"):
        np.negative(x, out=r)
        np.exp(r, out=r)
        r += 1
        np.reciprocal(r, out=r)
    return r


@register("Sigmoid", since=1)
def Sigmoid(x, *, out=None):
    if x.dtype.kind != "f" and out is None:
        return _arr((1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(x.dtype))
    r = out if out is not None else np.empty_like(x)
    return _sigmoid_into(x, r)


@register("HardSigmoid", since=1)
def HardSigmoid(x, *, alpha=0.2, beta=0.5, out=None):
    t = x.dtype.type
    r = np.multiply(x, t(alpha), out=_buf(x, out))
    r += t(beta)
    return np.clip(r, t(0), t(1), out=r)


@register("HardSwish", since=14)
def HardSwish(x, *, out=None):
    t = x.dtype.type
    r = np.multiply(x, t(1 / 6), out=_buf(x, out))
    r += t(0.5)
    np.clip(r, t(0), t(1), out=r)
    r *= x
    return r


def _hardswish_bind(inputs, out):
    """bound call of HardSwish: the same passes into a distinct float out (they read x after
    writing out, so out must not overlap it)."""
    x = inputs[0]
    if out is None or not isinstance(x, np.ndarray) or x.dtype.kind != "f" \
            or out.dtype != x.dtype or out.shape != x.shape or np.may_share_memory(x, out):
        return None
    return functools.partial(HardSwish, x, out=out), ()


HardSwish.bind = _hardswish_bind


@register("Elu", since=1)
def Elu(x, *, alpha=1.0, out=None):
    with np.errstate(all="ignore"):
        r = np.expm1(x, out=_buf(x, out))
        r *= x.dtype.type(alpha)
    np.copyto(r, x, where=x >= 0)
    return r


@register("Selu", since=1)
def Selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    t = x.dtype.type
    with np.errstate(all="ignore"):
        r = np.where(x > 0, x, t(alpha) * np.expm1(x))
    return _arr((r * t(gamma)).astype(x.dtype, copy=False))


@register("Celu", since=12)
def Celu(x, *, alpha=1.0):
    t = x.dtype.type
    with np.errstate(all="ignore"):
        neg = np.minimum(t(0), t(alpha) * np.expm1(x / t(alpha)))
    return _arr((np.maximum(t(0), x) + neg).astype(x.dtype, copy=False))


@register("Softplus", since=1)
def Softplus(x, *, out=None):
    # log(1 + exp(x)) without overflow for large x.
    if out is not None:
        return np.logaddexp(x.dtype.type(0), x, out=out)
    return _arr(np.logaddexp(x.dtype.type(0), x))


@register("Softsign", since=1)
def Softsign(x, *, out=None):
    r = np.abs(x, out=_buf(x, out))
    r += x.dtype.type(1)
    return np.divide(x, r, out=r)


@register("ThresholdedRelu", since=10)
def ThresholdedRelu(x, *, alpha=1.0):
    return _arr(np.where(x > x.dtype.type(alpha), x, x.dtype.type(0)))


@register("Shrink", since=9)
def Shrink(x, *, bias=0.0, lambd=0.5):
    if x.dtype.kind == "f":
        b, lam = x.dtype.type(bias), x.dtype.type(lambd)
        return _arr(np.where(x < -lam, x + b, np.where(x > lam, x - b, x.dtype.type(0))))
    xf = x.astype(np.float64)
    r = np.where(xf < -lambd, xf + bias, np.where(xf > lambd, xf - bias, 0.0))
    return _arr(r.astype(x.dtype))


@register("Gelu", since=20)
def Gelu(x, *, approximate="none", out=None):
    t = x.dtype.type
    if approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        r = np.multiply(x, x, out=_buf(x, out))
        r *= t(0.044715)
        r += t(1)
        r *= x
        r *= t(math.sqrt(2 / math.pi))
        np.tanh(r, out=r)
    else:
        r = np.multiply(x, t(1 / math.sqrt(2)), out=_buf(x, out))
        r = _erf(r, out=r)
    r += t(1)
    r *= x
    r *= t(0.5)
    return r


@register("Mish", since=18)
def Mish(x, *, out=None):
    r = np.logaddexp(x.dtype.type(0), x, out=_buf(x, out))
    np.tanh(r, out=r)
    r *= x
    return r


def _swish(x, alpha, out=None):
    r = out if out is not None else np.empty_like(x)
    np.multiply(x, x.dtype.type(alpha), out=r)
    _sigmoid_into(r, r)
    r *= x
    return r


@register("Swish", since=24)
def Swish(x, *, alpha=1.0, out=None):
    return _swish(x, alpha, out)


@register("SwiGLU", since=28)
def SwiGLU(a, b, *, alpha=1.0, out=None):
    if a.shape != b.shape:
        raise ShapeError(f"SwiGLU: A {a.shape} and B {b.shape} must have the same shape")
    r = _swish(a, alpha, out)
    r *= b
    return r
