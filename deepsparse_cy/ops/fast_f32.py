"""Compiled FP32 overrides for ops numpy does slowly: Erf, (Log)Softmax over the last axis,
Relu/Clip (numpy's NaN-propagating maximum runs ~5x slower than an add), and per-tensor
QuantizeLinear from float32 to u8/s8.

Registered after the references (modules named fast_* import last) for the same opsets; every
case the kernel does not cover (other dtypes, non-trailing softmax axis) goes to the reference.
"""
import math

import numpy as np

from ..kernels import _f32_fused, _f32_ops
from ..kernels import kernel_isa as _kernel_isa

_f32_ops.set_avx2(_kernel_isa() != "generic")   # AVX2 quantizers (bit-identical to the scalar)
if _kernel_isa() in ("avx512_vnni", "amx"):      # levels that need AVX-512 F/BW/VL/DQ
    _f32_ops.set_avx512(True)                    # the AVX-512 quantizers (bit-identical too)
    # the 8-bit table lookups of QTable (64 bytes per step by byte permutes)
    from ..kernels import cpu_features as _cpu_features
    _f32_ops.set_vbmi(bool(_cpu_features().get("avx512_vbmi")))
from . import elementwise as _ew
from . import quant as _quant
from . import softmax as _sm
from .registry import Op, register


def _threads(ctx):
    return int(ctx.num_threads or 1)


def _contig(x):
    # np.ascontiguousarray would turn a 0-d array into shape (1,)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _flat_out(x, out):
    if out is not None and out.dtype == np.float32 and out.flags.c_contiguous and out.shape == x.shape:
        return out
    return np.empty(x.shape, np.float32)


@register("Erf", since=9)
class Erf(Op):
    kernel_name = "f32_erf"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)

    def run(self, inputs, outs):
        x = inputs[0]
        out = outs[0] if outs else None
        if x.dtype != np.float32:
            return [_ew.Erf(x, out=out) if out is not None else _ew.Erf(x)]
        x = _contig(x)
        y = _flat_out(x, out)
        _f32_ops.erf(x.reshape(-1), y.reshape(-1), self.nt)
        return [y]


class _SoftmaxBase(Op):
    kernel_name = "f32_softmax_rows"    # and softmax_axis for a middle axis (opset >= 13)
    legacy = False
    log = False
    default_axis = -1

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.axis = node.attrs.get("axis", self.default_axis)
        self.nt = _threads(ctx)

    def run(self, inputs, outs):
        x = inputs[0]
        out = outs[0] if outs else None
        nd = x.ndim
        a = self.axis + nd if self.axis < 0 else self.axis
        trailing = nd > 0 and (a == nd - 1 or (self.legacy and 0 <= a < nd))
        if x.size == 0:
            return [np.empty(x.shape, x.dtype)]    # nothing to normalise
        if x.dtype == np.float32 and not trailing and not self.legacy and not self.log \
                and 0 <= a < nd:
            # softmax over a middle axis: contiguous column blocks, no transposed copies
            x = _contig(x)
            y = _flat_out(x, out)
            shp = (math.prod(x.shape[:a]), x.shape[a], math.prod(x.shape[a + 1:]))
            # compiled: no numpy floating-point state to guard (np.errstate costs ~3 us)
            _f32_fused.softmax_axis(x.reshape(shp), y.reshape(shp), self.nt)
            return [y]
        if x.dtype != np.float32 or not trailing:
            return [_sm._softmax(x, self.axis, self.legacy, self.log, out)]
        x = _contig(x)
        n = x.shape[-1] if not self.legacy else math.prod(x.shape[a:])
        y = _flat_out(x, out)
        _f32_ops.softmax_rows(x.reshape(-1, n), y.reshape(-1, n), self.nt, self.log)
        return [y]

    def bind(self, inputs, outs):
        """The bound call on float32 C-contiguous x into its own slot: the compiled
        middle-axis or trailing-axis kernel run() would pick (a detector's DFL softmax over the
        bins axis ran through run() on every call)."""
        x = inputs[0]
        y = outs[0] if outs else None
        if y is None or not isinstance(x, np.ndarray) or x.dtype != np.float32 \
                or y.dtype != np.float32 or y.shape != x.shape or not x.flags.c_contiguous \
                or not y.flags.c_contiguous or x.size == 0 or np.may_share_memory(x, y):
            return None
        nd = x.ndim
        a = self.axis + nd if self.axis < 0 else self.axis
        if not 0 <= a < nd:
            return None
        if a == nd - 1 or self.legacy:
            n = x.shape[-1] if not self.legacy else math.prod(x.shape[a:])
            return _f32_ops.softmax_rows, (x.reshape(-1, n), y.reshape(-1, n), self.nt, self.log)
        if self.log:
            return None
        shp = (math.prod(x.shape[:a]), x.shape[a], math.prod(x.shape[a + 1:]))
        return _f32_fused.softmax_axis, (x.reshape(shp), y.reshape(shp), self.nt)


@register("Softmax", since=1)
class Softmax_1(_SoftmaxBase):
    legacy, default_axis = True, 1


@register("Softmax", since=13)
class Softmax(_SoftmaxBase):
    pass


@register("LogSoftmax", since=1)
class LogSoftmax_1(_SoftmaxBase):
    legacy, log, default_axis = True, True, 1


@register("LogSoftmax", since=13)
class LogSoftmax(_SoftmaxBase):
    log = True


class _QDQFast(Op):
    """Attributes shared by the fast QuantizeLinear / DequantizeLinear ops (`since`: the opset
    version a subclass stands for, which decides the reference function's arguments)."""
    since = 10

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)
        a = node.attrs
        self.axis = a.get("axis", 1)
        self.saturate = a.get("saturate", 1)
        self.block_size = a.get("block_size", 0)
        self.output_dtype = a.get("output_dtype", 0)
        self.precision = a.get("precision", 0)

    def _const_params(self, s, z):
        """Whether scale s and zero point z are this node's model constants (a bound call may
        keep their values)."""
        sc = self.ctx.const(1) if self.ctx is not None else None
        zc = self.ctx.const(2) if self.ctx is not None and len(self.node.inputs) > 2 \
            and self.node.inputs[2] else None
        return sc is not None and sc is s and (z is None or zc is z)


class _QuantizeLinearFast(_QDQFast):
    """Per-tensor float32 -> u8/s8; every other form goes to the reference `quant.quantize`."""
    kernel_name = "f32_quantize"

    def _reference(self, x, s, z):
        args = [x, s, z]
        if self.since >= 13:
            args.append(self.axis)
        if self.since >= 19:
            args.append(self.saturate)
        if self.since >= 21:
            args += [self.block_size, self.output_dtype, self.precision]
        return _quant.quantize(*args)

    def run(self, inputs, outs):
        x, s = inputs[0], inputs[1]
        z = inputs[2] if len(inputs) > 2 else None
        out = outs[0] if outs else None
        zdt = z.dtype if z is not None else np.dtype(np.uint8)
        if (x.dtype != np.float32 or s.size != 1 or (z is not None and z.size != 1)
                or zdt not in (np.uint8, np.int8) or self.block_size or self.output_dtype
                or s.dtype != np.float32 or not float(s.reshape(-1)[0]) > 0):
            return [self._reference(x, s, z)]
        x = _contig(x)
        y = out if (out is not None and out.dtype == zdt and out.flags.c_contiguous
                    and out.shape == x.shape) else np.empty(x.shape, zdt)
        zp = int(z.reshape(-1)[0]) if z is not None else 0
        fn = _f32_ops.quantize_u8 if zdt == np.uint8 else _f32_ops.quantize_s8
        fn(x.reshape(-1), y.reshape(-1), float(s.reshape(-1)[0]), zp, self.nt)
        return [y]

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the compiled pass on the same x / out objects, for a
        per-tensor scale and zero point that are model constants (their values are fixed)."""
        x, s = inputs[0], inputs[1]
        z = inputs[2] if len(inputs) > 2 else None
        out = outs[0] if outs else None
        if not self._const_params(s, z) or out is None:
            return None
        zdt = z.dtype if z is not None else np.dtype(np.uint8)
        if x.dtype != np.float32 or not x.flags.c_contiguous or x.size == 0 or s.size != 1 \
                or s.dtype != np.float32 or not float(s.reshape(-1)[0]) > 0 \
                or (z is not None and z.size != 1) or zdt not in (np.uint8, np.int8) \
                or self.block_size or self.output_dtype or out.dtype != zdt \
                or not out.flags.c_contiguous or out.shape != x.shape \
                or np.may_share_memory(out, x):
            return None
        fn = _f32_ops.quantize_u8 if zdt == np.uint8 else _f32_ops.quantize_s8
        zp = int(z.reshape(-1)[0]) if z is not None else 0
        return fn, (x.reshape(-1), out.reshape(-1), float(s.reshape(-1)[0]), zp, self.nt)


for _since in (10, 13, 19, 21):
    register("QuantizeLinear", since=_since)(
        type(f"QuantizeLinear_{_since}", (_QuantizeLinearFast,), {"since": _since}))


class _DequantizeLinearFast(_QDQFast):
    """Per-tensor u8/s8 -> float32 in one compiled pass; every other form goes to the reference
    `quant.dequantize` (same arithmetic: float32(x) - float32(zp), then * scale)."""
    kernel_name = "f32_dequantize"

    def run(self, inputs, outs):
        x, s = inputs[0], inputs[1]
        z = inputs[2] if len(inputs) > 2 else None
        if (x.dtype not in (np.uint8, np.int8) or s.size != 1 or s.dtype != np.float32
                or (z is not None and (z.size != 1 or z.dtype != x.dtype))
                or self.block_size or self.output_dtype not in (0, 1) or x.size == 0):
            args = [x, s, z] + ([self.axis] if self.since >= 13 else [])
            if self.since >= 21:
                args += [self.block_size, self.output_dtype]
            return [_quant.dequantize(*args)]
        x = _contig(x)
        out = outs[0] if outs else None
        y = out if (out is not None and out.dtype == np.float32 and out.flags.c_contiguous
                    and out.shape == x.shape) else np.empty(x.shape, np.float32)
        n = x.shape[-1] if x.ndim else 1
        zp = float(z.reshape(-1)[0]) if z is not None else 0.0
        _f32_ops.dequantize_rows(x.reshape(-1, n), zp, float(s.reshape(-1)[0]), None,
                                 y.reshape(-1, n), self.nt)
        return [y]

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the compiled pass on the same x / out objects, for a
        per-tensor scale and zero point that are model constants."""
        x, s = inputs[0], inputs[1]
        z = inputs[2] if len(inputs) > 2 else None
        out = outs[0] if outs else None
        if not self._const_params(s, z) or out is None:
            return None
        if x.dtype not in (np.uint8, np.int8) or s.size != 1 or s.dtype != np.float32 \
                or (z is not None and (z.size != 1 or z.dtype != x.dtype)) or self.block_size \
                or self.output_dtype not in (0, 1) or x.size == 0 or not x.flags.c_contiguous \
                or out.dtype != np.float32 or not out.flags.c_contiguous \
                or out.shape != x.shape or np.may_share_memory(out, x):
            return None
        n = x.shape[-1] if x.ndim else 1
        zp = float(z.reshape(-1)[0]) if z is not None else 0.0
        return _f32_ops.dequantize_rows, (x.reshape(-1, n), zp, float(s.reshape(-1)[0]), None,
                                          out.reshape(-1, n), self.nt)


for _since in (10, 13, 19, 21):
    register("DequantizeLinear", since=_since)(
        type(f"DequantizeLinear_{_since}", (_DequantizeLinearFast,), {"since": _since}))


class _ClipBase(Op):
    kernel_name = "f32_clip"

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.nt = _threads(ctx)

    def _fast(self, x, out, lo, hi):
        x = _contig(x)
        y = _flat_out(x, out)
        _f32_ops.clip(x.reshape(-1), y.reshape(-1), lo, hi, self.nt)
        return [y]


@register("Relu", since=1)
class Relu(_ClipBase):
    def run(self, inputs, outs):
        x = inputs[0]
        out = outs[0] if outs else None
        if x.dtype != np.float32:
            return [_ew.Relu(x, out=out) if out is not None else _ew.Relu(x)]
        return self._fast(x, out, 0.0, np.inf)


@register("Clip", since=11)
class Clip(_ClipBase):
    def run(self, inputs, outs):
        x = inputs[0]
        lo = inputs[1] if len(inputs) > 1 else None
        hi = inputs[2] if len(inputs) > 2 else None
        out = outs[0] if outs else None
        if x.dtype != np.float32 or (lo is not None and lo.size != 1) or (hi is not None and hi.size != 1):
            return [_ew.Clip(x, lo, hi, out=out) if out is not None else _ew.Clip(x, lo, hi)]
        flo = float(lo.reshape(-1)[0]) if lo is not None else -np.inf
        fhi = float(hi.reshape(-1)[0]) if hi is not None else np.inf
        if flo > fhi:   # the spec's "min > max gives max everywhere"
            flo = fhi
        return self._fast(x, out, flo, fhi)
