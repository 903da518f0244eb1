"""Dense linear algebra: MatMul, Gemm, MatMulInteger, QLinearMatMul, Einsum.

float32/float64 go straight to BLAS through np.matmul (writing into the planned output buffer
when the engine gives one). Half types are computed in float32 (numpy has no half BLAS).
Integer products are computed as float64 GEMMs, exact while |sum| < 2**53, then cast to int32:
orders of magnitude faster than numpy's non-BLAS integer matmul loop."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..kernels.f32conv import PackedConvF32, f32_conv2d
from .registry import Op, register

_BLAS = (np.dtype(np.float32), np.dtype(np.float64))


def _calc(x):
    if x.dtype in _BLAS:
        return x
    if x.dtype.kind in "iub":
        return x
    return x.astype(np.float32)


def _check_mm(a, b):
    ka = a.shape[-1] if a.ndim else None
    kb = b.shape[-2] if b.ndim >= 2 else (b.shape[0] if b.ndim == 1 else None)
    if ka is None or kb is None or ka != kb:
        raise ShapeError(f"MatMul: shapes {a.shape} and {b.shape} are not aligned")


@register("MatMul", since=1)
def MatMul(a, b, *, out=None):
    _check_mm(a, b)
    if a.dtype in _BLAS and b.dtype == a.dtype:
        if out is not None and out.dtype == a.dtype:
            try:
                return np.matmul(a, b, out=out)
            except ValueError:      # out shape differs (e.g. planned as 1-D squeeze); compute freshly
                pass
        return np.matmul(a, b)
    if a.dtype.kind in "iu":
        r = _int_matmul(a, b).astype(np.result_type(a.dtype, b.dtype))
    else:
        r = np.matmul(_calc(a), _calc(b)).astype(a.dtype)
    if out is not None:
        np.copyto(out, r, casting="unsafe")
        return out
    return r


def _int_matmul(a, b):
    """Exact integer matmul via float64 BLAS when it cannot overflow float64 mantissa."""
    k = a.shape[-1]
    amax = float(np.abs(a).max()) if a.size else 0.0
    bmax = float(np.abs(b).max()) if b.size else 0.0
    if amax * bmax * max(k, 1) < 2.0 ** 52:
        return np.rint(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


@register("Gemm", since=1)
class Gemm(Op):
    """Y = alpha * A' B' + beta * C. Transposes are passed to BLAS as strides (no copy); a constant
    B is pre-scaled by alpha and a constant C by beta at compile time."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.alpha = float(a.get("alpha", 1.0))
        self.beta = float(a.get("beta", 1.0))
        self.transA = int(a.get("transA", 0))
        self.transB = int(a.get("transB", 0))
        self.b_const = None
        self.c_const = None
        b = ctx.const(1)
        if b is not None and b.dtype in _BLAS:
            bb = b.T if self.transB else b
            if self.alpha != 1.0:
                bb = bb * b.dtype.type(self.alpha)
            self.b_const = (b, np.ascontiguousarray(bb))
        c = ctx.const(2) if len(node.inputs) > 2 and node.inputs[2] else None
        if c is not None and c.dtype in _BLAS:
            self.c_const = (c, c * c.dtype.type(self.beta) if self.beta != 1.0 else c)
        self.num_threads = int(ctx.num_threads or 1)
        self._small = None
        from .conv import _FAST_CONV      # decided at compile time, as for the convs
        self._small_ok = _FAST_CONV

    # A Gemm of a few rows against a constant float32 weight (a CNN's classifier) runs on the
    # f32conv kernel as a 1x1 conv over the rows instead of BLAS: OpenBLAS wakes its worker
    # threads even for a 1-row product and they busy-wait after it, taking a core from the
    # OpenMP conv kernels of the next call (measured: ResNet-50 1.5x slower end to end).
    SMALL_ROWS = 16

    def _run_small(self, a, out):
        if not self._small_ok:
            return None
        b, cc = self.b_const[1], None
        n = b.shape[1]
        if self.beta != 0.0 and self.c_const is not None:
            cc = self.c_const[1]
            if cc.size != n or (cc.ndim == 2 and cc.shape[0] != 1):
                return None             # only a bias along N rides in the kernel
        if self._small is None:
            self._small = PackedConvF32(np.ascontiguousarray(b.T).reshape(n, b.shape[0], 1, 1))
        m = a.shape[0]
        img = np.ascontiguousarray(a.T).reshape(1, a.shape[1], m, 1)
        y = f32_conv2d(img, self._small, bias=None if cc is None else cc.reshape(-1),
                       num_threads=self.num_threads)
        r = y.reshape(n, m).T
        if out is not None and out.shape == r.shape and out.dtype == np.float32:
            np.copyto(out, r)
            return out
        return np.ascontiguousarray(r)

    def run(self, inputs, outs):
        A, B = inputs[0], inputs[1]
        C = inputs[2] if len(inputs) > 2 else None
        out = outs[0] if outs else None
        dt = A.dtype
        if A.ndim != 2 or B.ndim != 2:
            raise ShapeError(f"Gemm needs 2-D A and B, got {A.shape} and {B.shape}")
        a = A.T if self.transA else A
        if self.b_const is not None and self.b_const[0] is B:
            b, alpha = self.b_const[1], 1.0
        else:
            b, alpha = (B.T if self.transB else B), self.alpha
        if a.shape[1] != b.shape[0]:
            raise ShapeError(f"Gemm: A' {a.shape} and B' {b.shape} are not aligned")
        if dt.kind in "iu":
            y = _int_matmul(a, b)
            if alpha != 1.0:
                y = y * alpha
            if C is not None and self.beta != 0:
                y = y + self.beta * C
            return [np.asarray(y).astype(dt)]
        if self.b_const is not None and b is self.b_const[1] and a.dtype == np.float32 \
                and b.dtype == np.float32 and a.shape[0] <= self.SMALL_ROWS \
                and (C is None or self.beta == 0.0 or (self.c_const is not None
                                                       and self.c_const[0] is C)):
            y = self._run_small(a, out)
            if y is not None:
                return [y]
        a, b = _calc(a), _calc(b)
        if b.dtype != a.dtype:
            b = b.astype(a.dtype)
        shape = (a.shape[0], b.shape[1])
        direct = out is not None and out.dtype == a.dtype and out.shape == shape
        y = np.matmul(a, b, out=out if direct else None)
        if alpha != 1.0:
            np.multiply(y, y.dtype.type(alpha), out=y)
        if C is not None and self.beta != 0.0:
            if self.c_const is not None and self.c_const[0] is C:
                cc = self.c_const[1]
            else:
                cc = C if self.beta == 1.0 else C * self.beta
            np.add(y, cc, out=y, casting="unsafe")
        if out is not None and not direct:
            np.copyto(out, y, casting="unsafe")
            return [out]
        return [y if y.dtype == dt else y.astype(dt)]


def _zp(z, a, row):
    """Zero point as a broadcastable int array: scalar, per-row (A: shape (..., M) -> (..., M, 1))
    or per-column (B: (..., N) broadcasts as is)."""
    if z is None:
        return 0
    z = np.asarray(z).astype(np.float64)
    if z.ndim == 0 or z.size == 1:
        return z.reshape(())
    if row:
        return z.reshape(z.shape + (1,))
    return z


@register("MatMulInteger", since=10)
def MatMulInteger(A, B, a_zero_point=None, b_zero_point=None):
    a = A.astype(np.float64) - _zp(a_zero_point, A, True)
    b = B.astype(np.float64) - _zp(b_zero_point, B, False)
    return np.rint(np.matmul(a, b)).astype(np.int32)


def _saturate_round(v, dtype):
    info = np.iinfo(dtype)
    return np.clip(np.rint(v), info.min, info.max).astype(dtype)


@register("QLinearMatMul", since=10)
def QLinearMatMul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    """int8/uint8 matmul with requantisation: round((a-za)(b-zb) * sa*sb/sy) + zy, saturated."""
    acc = np.matmul(a.astype(np.float64) - _zp(a_zero_point, a, True),
                    b.astype(np.float64) - _zp(b_zero_point, b, False))
    sa = np.asarray(a_scale, np.float64)
    sa = sa.reshape(sa.shape + (1,)) if sa.size > 1 else sa.reshape(())
    sb = np.asarray(b_scale, np.float64)
    sb = sb.reshape(()) if sb.size == 1 else sb
    scale = (sa * sb / np.asarray(y_scale, np.float64).reshape(()))
    v = np.rint(acc * scale)
    if y_zero_point is not None:
        v = v + np.asarray(y_zero_point, np.float64)
        odt = np.asarray(y_zero_point).dtype
    else:
        odt = a.dtype
    if odt.kind in "iu":
        return _saturate_round(v, odt)
    return v.astype(odt)   # float8 outputs (opset 21): ml_dtypes cast saturates like ONNX's default


@register("Einsum", since=12)
def Einsum(*xs, equation=""):
    eq = equation.replace(" ", "")
    dt = xs[0].dtype if xs else np.float32
    calc = [x if x.dtype in _BLAS or x.dtype.kind in "iu" else x.astype(np.float32) for x in xs]
    r = np.einsum(eq, *calc, optimize=True)
    return np.asarray(r).astype(dt, copy=False)
