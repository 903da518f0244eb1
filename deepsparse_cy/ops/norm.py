"""Normalization family: BatchNormalization, LayerNormalization, GroupNormalization,
InstanceNormalization, RMSNormalization, LpNormalization, LRN, MeanVarianceNormalization.

Statistics are computed in at least float32 (stash_type=1) and outputs cast back to the input
dtype. Inference BatchNormalization folds scale/shift once into one multiply-add."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .registry import Op, register


def _calc_dtype(dt):
    return np.float64 if np.dtype(dt) == np.float64 else np.float32


def _chan(v, nd, dt):
    """(C,) parameter -> (1, C, 1, ..., 1) for broadcasting against an nd-rank NC... tensor."""
    return np.asarray(v, dt).reshape((1, -1) + (1,) * (nd - 2))


# --- BatchNormalization ------------------------------------------------------------------------

@register("BatchNormalization", since=1)
class BatchNormalization(Op):
    """Inference: y = x * a + b with a = scale / sqrt(var + eps), b = B - mean * a (packed at
    compile time when the parameters are constant). Training (training_mode=1 from opset 14,
    extra outputs before that): batch statistics, and running statistics updated with momentum."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.eps = float(a.get("epsilon", 1e-5))
        self.momentum = float(a.get("momentum", 0.9))
        self.opset = ctx.opset
        if ctx.opset >= 14:
            self.training = bool(a.get("training_mode", 0))
        elif ctx.opset >= 7:
            self.training = len(node.outputs) > 1
        else:
            self.training = not a.get("is_test", 0) and len(node.outputs) > 1
        self.spatial = int(a.get("spatial", 1)) if ctx.opset < 9 else 1
        self.packed = None
        params = [ctx.const(i) for i in range(1, 5)]
        if not self.training and all(p is not None for p in params):
            self.packed = self._pack(*params)

    def _pack(self, scale, bias, mean, var):
        dt = _calc_dtype(scale.dtype)
        a = np.asarray(scale, dt) / np.sqrt(np.asarray(var, dt) + dt(self.eps))
        b = np.asarray(bias, dt) - np.asarray(mean, dt) * a
        return a, b

    def _param(self, v, x):
        if self.spatial == 0 and v.ndim > 1 or v.size == np.prod(x.shape[1:]) and v.size != x.shape[1]:
            return v.reshape((1,) + x.shape[1:])       # spatial=0: per (C, H, W) statistics
        return v.reshape((1, -1) + (1,) * (x.ndim - 2))

    def run(self, inputs, outs):
        x, scale, bias, mean, var = inputs[:5]
        if not self.training:
            a, b = self.packed if self.packed is not None else self._pack(scale, bias, mean, var)
            a = self._param(a, x)
            b = self._param(b, x)
            out = outs[0] if outs else None
            if out is not None and out.dtype == x.dtype and x.dtype == a.dtype:
                np.multiply(x, a, out=out)
                np.add(out, b, out=out)
                return [out] + [None] * (len(self.node.outputs) - 1)
            y = (x * a + b).astype(x.dtype, copy=False)
            return [y] + [None] * (len(self.node.outputs) - 1)
        dt = _calc_dtype(x.dtype)
        xf = x.astype(dt, copy=False)
        axes = (0,) + tuple(range(2, x.ndim))
        bmean = xf.mean(axis=axes)
        bvar = xf.var(axis=axes)
        m = self.momentum
        run_mean = np.asarray(mean, dt) * m + bmean * (1 - m)
        run_var = np.asarray(var, dt) * m + bvar * (1 - m)
        inv = 1.0 / np.sqrt(bvar + dt(self.eps))
        y = (xf - _chan(bmean, x.ndim, dt)) * _chan(inv * np.asarray(scale, dt), x.ndim, dt) \
            + _chan(bias, x.ndim, dt)
        res = [y.astype(x.dtype), run_mean.astype(mean.dtype), run_var.astype(var.dtype)]
        if self.opset < 14:
            res += [bmean.astype(mean.dtype), bvar.astype(var.dtype)]
        return res[:len(self.node.outputs)]


# --- Layer / RMS normalization -----------------------------------------------------------------

@register("LayerNormalization", since=17)
class LayerNormalization(Op):
    """Normalise over axes [axis, rank); outputs Y and optionally Mean and InvStdDev."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.axis = int(node.attrs.get("axis", -1))
        self.eps = float(node.attrs.get("epsilon", 1e-5))
        self.stash = int(node.attrs.get("stash_type", 1))

    def run(self, inputs, outs):
        x, scale = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        axis = self.axis + x.ndim if self.axis < 0 else self.axis
        if not 0 <= axis < x.ndim:
            raise ShapeError(f"LayerNormalization axis {self.axis} out of range for rank {x.ndim}")
        dt = np.float64 if x.dtype == np.float64 else np.float32
        if self.stash != 1:
            dt = x.dtype if x.dtype.kind == "f" else dt
        axes = tuple(range(axis, x.ndim))
        xf = x.astype(dt, copy=False)
        mean = xf.mean(axis=axes, keepdims=True)
        d = xf - mean
        var = np.mean(d * d, axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + dt(self.eps))
        y = d
        np.multiply(y, inv, out=y)
        y = y * np.asarray(scale, dt)
        if b is not None:
            y = y + np.asarray(b, dt)
        n = len(self.node.outputs)
        res = [y.astype(x.dtype, copy=False)]
        if n > 1:
            res.append(mean.astype(x.dtype if self.stash != 1 else dt, copy=False))
        if n > 2:
            res.append(inv.astype(x.dtype if self.stash != 1 else dt, copy=False))
        return res


@register("RMSNormalization", since=23)
def RMSNormalization(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    ax = axis + x.ndim if axis < 0 else axis
    dt = _calc_dtype(x.dtype)
    xf = x.astype(dt, copy=False)
    ms = np.mean(xf * xf, axis=tuple(range(ax, x.ndim)), keepdims=True)
    y = xf * (1.0 / np.sqrt(ms + dt(epsilon)))
    return (y * np.asarray(scale, dt)).astype(x.dtype, copy=False)


# --- Group / Instance normalization ------------------------------------------------------------

def _group_norm(x, num_groups, eps, dt):
    N, C = x.shape[:2]
    xg = x.astype(dt, copy=False).reshape(N, num_groups, -1)
    mean = xg.mean(axis=2, keepdims=True)
    d = xg - mean
    var = np.mean(d * d, axis=2, keepdims=True)
    return (d / np.sqrt(var + dt(eps))).reshape(x.shape)


@register("GroupNormalization", since=18)
def GroupNormalization_18(x, scale, bias, *, epsilon=1e-5, num_groups=None):
    """Opset 18: scale and bias are per group."""
    G = int(num_groups)
    if x.shape[1] % G:
        raise ShapeError(f"GroupNormalization: {x.shape[1]} channels not divisible by {G} groups")
    dt = _calc_dtype(x.dtype)
    y = _group_norm(x, G, epsilon, dt)
    rep = x.shape[1] // G
    if np.size(scale) == G:
        s = np.repeat(np.asarray(scale, dt).reshape(-1), rep)
        b = np.repeat(np.asarray(bias, dt).reshape(-1), rep)
    else:   # some exporters already give per-channel parameters
        s, b = np.asarray(scale, dt).reshape(-1), np.asarray(bias, dt).reshape(-1)
    return (y * _chan(s, x.ndim, dt) + _chan(b, x.ndim, dt)).astype(x.dtype, copy=False)


@register("GroupNormalization", since=21)
def GroupNormalization(x, scale, bias, *, epsilon=1e-5, num_groups=None, stash_type=1):
    """Opset 21: scale and bias are per channel."""
    G = int(num_groups)
    if x.shape[1] % G:
        raise ShapeError(f"GroupNormalization: {x.shape[1]} channels not divisible by {G} groups")
    dt = _calc_dtype(x.dtype)
    y = _group_norm(x, G, epsilon, dt)
    return (y * _chan(scale, x.ndim, dt) + _chan(bias, x.ndim, dt)).astype(x.dtype, copy=False)


@register("InstanceNormalization", since=1)
def InstanceNormalization(x, scale, B, *, epsilon=1e-5):
    dt = _calc_dtype(x.dtype)
    y = _group_norm(x, x.shape[1], epsilon, dt)
    return (y * _chan(scale, x.ndim, dt) + _chan(B, x.ndim, dt)).astype(x.dtype, copy=False)


# --- Lp / LRN / MVN ----------------------------------------------------------------------------

@register("LpNormalization", since=1)
def LpNormalization(x, *, axis=-1, p=2):
    dt = _calc_dtype(x.dtype)
    xf = x.astype(dt, copy=False)
    if p == 1:
        n = np.sum(np.abs(xf), axis=axis, keepdims=True)
    elif p == 2:
        n = np.sqrt(np.sum(xf * xf, axis=axis, keepdims=True))
    else:
        raise ShapeError(f"LpNormalization supports p=1 or p=2, got {p}")
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(n == 0, 0, xf / n)
    return y.astype(x.dtype, copy=False)


@register("LRN", since=1)
def LRN(x, *, alpha=1e-4, beta=0.75, bias=1.0, size=None):
    """Cross-channel local response normalisation; the sliding channel window sum is a
    difference of cumulative sums over the channel axis."""
    size = int(size)
    dt = _calc_dtype(x.dtype)
    sq = x.astype(np.float64) ** 2      # float64: the cumsum difference must not cancel
    C = x.shape[1]
    c1 = (size - 1) // 2
    c2 = size - 1 - c1
    cs = np.cumsum(sq, axis=1)
    cs = np.concatenate([np.zeros_like(cs[:, :1]), cs], axis=1)   # cs[:, i] = sum(sq[:, :i])
    hi = np.minimum(np.arange(C) + c2 + 1, C)
    lo = np.maximum(np.arange(C) - c1, 0)
    win = (np.take(cs, hi, axis=1) - np.take(cs, lo, axis=1)).astype(dt)
    y = x.astype(dt) / (dt(bias) + dt(alpha) / size * win) ** dt(beta)
    return y.astype(x.dtype, copy=False)


@register("MeanVarianceNormalization", since=9)
def MeanVarianceNormalization(x, *, axes=(0, 2, 3)):
    dt = _calc_dtype(x.dtype)
    xf = x.astype(dt, copy=False)
    ax = tuple(int(a) for a in axes)
    mean = np.mean(xf, axis=ax, keepdims=True)
    var = np.mean(xf * xf, axis=ax, keepdims=True) - mean * mean
    std = np.sqrt(np.maximum(var, 0))
    return ((xf - mean) / (std + dt(1e-9))).astype(x.dtype, copy=False)
