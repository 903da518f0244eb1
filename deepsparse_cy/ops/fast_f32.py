"""Compiled FP32 overrides for ops numpy does slowly: Erf and (Log)Softmax over the last axis.

Registered after the references (modules named fast_* import last) for the same opsets; every
case the kernel does not cover (other dtypes, non-trailing softmax axis) goes to the reference.
"""
import numpy as np

from ..kernels import _f32_ops
from . import elementwise as _ew
from . import softmax as _sm
from .registry import Op, register


def _threads(ctx):
    return int(ctx.num_threads or 1)


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
        x = np.ascontiguousarray(x)
        y = _flat_out(x, out)
        _f32_ops.erf(x.reshape(-1), y.reshape(-1), self.nt)
        return [y]


class _SoftmaxBase(Op):
    kernel_name = "f32_softmax_rows"
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
        if x.dtype != np.float32 or not trailing or x.size == 0:
            return [_sm._softmax(x, self.axis, self.legacy, self.log, out)]
        x = np.ascontiguousarray(x)
        n = x.shape[-1] if not self.legacy else int(np.prod(x.shape[a:]))
        y = _flat_out(x, out)
        with np.errstate(all="ignore"):
            _f32_ops.softmax_rows(x.reshape(-1, n), y.reshape(-1, n), self.nt, self.log)
        return [y]


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
