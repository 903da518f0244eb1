"""Quantisation family: QuantizeLinear, DequantizeLinear (per-tensor, per-axis, blocked; int2/4/8/16,
float8/float4 through ml_dtypes), DynamicQuantizeLinear, QLinearConv.

Integer results are round-half-to-even then saturated, as ONNX specifies. QLinearConv reuses the
Conv im2col/GEMM core on zero-point-shifted float64 values (exact for any realistic K) and
requantises in one vectorised pass; the dedicated INT8 kernels override it by registration.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import ShapeError
from ..graph.ir import elem_dtype
from .conv import ConvCore, _conv_attrs
from .registry import Op, register

_FLOAT8 = {np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                   ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz)}
_SUBBYTE_INT = {np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)}
for _n in ("int2", "uint2"):
    if hasattr(ml_dtypes, _n):
        _SUBBYTE_INT.add(np.dtype(getattr(ml_dtypes, _n)))
_FLOAT_SMALL = {np.dtype(getattr(ml_dtypes, n)) for n in
                ("float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn", "float8_e8m0fnu")
                if hasattr(ml_dtypes, n)}


def _int_range(dt):
    if dt in _SUBBYTE_INT:
        info = ml_dtypes.iinfo(dt)
    else:
        info = np.iinfo(dt)
    return int(info.min), int(info.max)


def _bcast(v, shape, axis, block_size):
    """Scale / zero point -> array broadcastable to `shape` (scalar, per-axis or blocked)."""
    v = np.asarray(v)
    if v.ndim == 0:
        return v
    if v.size == 1 and not block_size:
        return v.reshape(())
    nd = len(shape)
    ax = axis + nd if axis < 0 else axis
    if not 0 <= ax < nd:
        raise ShapeError(f"quantization axis {axis} out of range for rank {nd}")
    if not block_size:
        if v.ndim != 1 or v.size != shape[ax]:
            raise ShapeError(f"per-axis scale/zero point of shape {v.shape} does not match "
                             f"dim {ax} of {tuple(shape)}")
        dims = [1] * nd
        dims[ax] = v.size
        return v.reshape(dims)
    if block_size < 0:
        raise ShapeError("block_size must be positive")
    if v.ndim != nd:
        raise ShapeError(f"blocked scale rank {v.ndim} != input rank {nd}")
    r = np.repeat(v, block_size, axis=ax)
    if r.shape[ax] < shape[ax]:
        raise ShapeError(f"blocked scale {v.shape} x block {block_size} too small for {tuple(shape)}")
    r = r.take(np.arange(shape[ax]), axis=ax)
    if r.shape != tuple(shape):
        raise ShapeError(f"blocked scale {v.shape} does not match input {tuple(shape)}")
    return r


def _to_np_dtype(t):
    return elem_dtype(int(t)) if t else None


def quantize(x, scale, zp, axis=1, saturate=1, block_size=0, output_dtype=0, precision=0):
    odt = None
    if zp is not None:
        odt = np.asarray(zp).dtype
        want = _to_np_dtype(output_dtype)
        if want is not None and want != odt:
            raise ShapeError(f"QuantizeLinear: output_dtype {want} != zero point type {odt}")
    else:
        odt = _to_np_dtype(output_dtype) or np.dtype(np.uint8)
    s = _bcast(scale, x.shape, axis, block_size)
    if precision:
        pdt = _to_np_dtype(precision)
        v = x.astype(pdt) / s.astype(pdt)
    else:
        # x / scale in x's precision, as the reference and runtimes do
        v = x / s.astype(x.dtype) if x.dtype.kind == "f" else x.astype(np.float32) / s
    if odt.kind in "iu" or odt in _SUBBYTE_INT:
        lo, hi = _int_range(odt)
        q = np.rint(v.astype(np.float64, copy=False))
        if zp is not None:
            q = q + _bcast(zp, x.shape, axis, block_size).astype(np.float64)
        return np.clip(q, lo, hi).astype(odt)
    if odt in _FLOAT8:
        if saturate:
            info = ml_dtypes.finfo(odt)
            v = np.clip(v.astype(np.float32), float(info.min), float(info.max))
        return v.astype(odt)
    if odt in _FLOAT_SMALL:
        if zp is not None:
            v = v + _bcast(zp, x.shape, axis, block_size).astype(np.float32)
        return v.astype(odt)
    raise ShapeError(f"QuantizeLinear: unsupported output type {odt}")


@register("QuantizeLinear", since=10)
def QuantizeLinear_10(x, y_scale, y_zero_point=None):
    return quantize(x, y_scale, y_zero_point)


@register("QuantizeLinear", since=13)
def QuantizeLinear_13(x, y_scale, y_zero_point=None, *, axis=1):
    return quantize(x, y_scale, y_zero_point, axis)


@register("QuantizeLinear", since=19)
def QuantizeLinear_19(x, y_scale, y_zero_point=None, *, axis=1, saturate=1):
    return quantize(x, y_scale, y_zero_point, axis, saturate)


@register("QuantizeLinear", since=21)
def QuantizeLinear(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0,
                   output_dtype=0, precision=0):
    return quantize(x, y_scale, y_zero_point, axis, saturate, block_size, output_dtype, precision)


def dequantize(x, scale, zp, axis=1, block_size=0, output_dtype=0):
    scale = np.asarray(scale)
    v = x.astype(np.float32)
    if zp is not None and x.dtype not in _FLOAT8 and x.dtype not in _FLOAT_SMALL:
        v = v - _bcast(zp, x.shape, axis, block_size).astype(np.float32)
    y = v * _bcast(scale, x.shape, axis, block_size).astype(np.float32)
    odt = _to_np_dtype(output_dtype) or scale.dtype
    return y.astype(odt, copy=False)


@register("DequantizeLinear", since=10)
def DequantizeLinear_10(x, x_scale, x_zero_point=None):
    return dequantize(x, x_scale, x_zero_point)


@register("DequantizeLinear", since=13)
def DequantizeLinear_13(x, x_scale, x_zero_point=None, *, axis=1):
    return dequantize(x, x_scale, x_zero_point, axis)


@register("DequantizeLinear", since=21)
def DequantizeLinear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    return dequantize(x, x_scale, x_zero_point, axis, block_size, output_dtype)


@register("DynamicQuantizeLinear", since=11)
def DynamicQuantizeLinear(x):
    """uint8 asymmetric quantisation with range [min(0, x), max(0, x)] -> (y, scale, zero point)."""
    xf = x.astype(np.float32, copy=False)
    mx = np.float32(max(0.0, float(xf.max()))) if xf.size else np.float32(0)
    mn = np.float32(min(0.0, float(xf.min()))) if xf.size else np.float32(0)
    scale = np.float32(1.0 if mx == mn else (mx - mn)) / np.float32(255)
    zp = np.rint(np.clip(np.float32(0) - mn / scale, 0, 255))
    y = np.clip(np.rint(xf / scale) + zp, 0, 255).astype(np.uint8)
    return y, np.array(scale, dtype=x.dtype), np.array(zp, dtype=np.uint8)


@register("QLinearConv", since=10)
class QLinearConv(Op):
    """Quantised conv: (x - zx) conv (w - zw) + bias (int32) then requantise to y's type."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.attrs = _conv_attrs(node)
        self.core = None
        w, wz = ctx.const(3), ctx.const(5)
        has_b = len(node.inputs) > 8 and node.inputs[8]
        b = ctx.const(8) if has_b else None
        if w is not None and (wz is not None or len(node.inputs) <= 5 or not node.inputs[5]) \
                and (not has_b or b is not None):
            self.core = self._core(w, wz, b)
            self.key = (w, wz, b)

    def _core(self, w, wz, b):
        wf = w.astype(np.float64)
        if wz is not None:
            wz = np.asarray(wz, np.float64)
            wf -= wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz.reshape(())
        bias = None if b is None else np.asarray(b, np.float64)
        return ConvCore(wf, bias, dtype=np.float64, **self.attrs)

    def run(self, inputs, outs):
        x, xs, xz, w, ws, wz, ys, yz = (list(inputs) + [None] * 9)[:8]
        b = inputs[8] if len(inputs) > 8 else None
        core = self.core
        if core is None or self.key[0] is not w:
            core = self._core(w, wz, b)
        xf = x.astype(np.float64)
        if xz is not None:
            xf -= np.asarray(xz, np.float64).reshape(())
        acc = core.run(xf)
        ws = np.asarray(ws, np.float32)
        # multiplier in float32 like the runtimes, applied to the exact accumulator in float64
        mult = np.asarray(xs, np.float32).reshape(()) * ws / np.asarray(ys, np.float32).reshape(())
        if mult.size > 1:
            mult = mult.reshape((1, -1) + (1,) * (x.ndim - 2))
        r = acc * mult.astype(np.float64)
        odt = np.asarray(yz).dtype if yz is not None else x.dtype
        if yz is not None:
            r += np.asarray(yz, np.float64).reshape(())
        lo, hi = _int_range(odt)
        return [np.clip(np.rint(r), lo, hi).astype(odt)]

