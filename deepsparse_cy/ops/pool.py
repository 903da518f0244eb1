"""Pooling family: MaxPool (with indices), AveragePool, LpPool, GlobalAverage/MaxPool, MaxUnpool,
MaxRoiPool.

Windows are reduced tap by tap: for every kernel offset one strided view of the padded input
covers all output positions at once, so the Python loop runs over kh*kw taps, never over pixels.
Positions in the padding (and the extra tail ceil_mode adds) are filled with the reduction's
identity (-inf / lowest for max, 0 for sums); averages divide by a separable count array.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import ShapeError
from ..kernels import _f32_ops
from ._spatial import norm_attrs, out_shape, phase_split, resolve_pads, scratch
from .registry import Op, register


class _Geom:
    """Pads, output shape and padded-buffer extent of one pooling call."""

    def __init__(self, x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
        if x.ndim < 3:
            raise ShapeError(f"pooling needs rank >= 3 input, got {x.shape}")
        self.nd = nd = x.ndim - 2
        self.S = S = list(x.shape[2:])
        k, s, d, pb, pe = norm_attrs(nd, kernel_shape, strides, dilations, pads)
        pb, pe = resolve_pads(auto_pad, S, k, s, d, pb, pe)
        self.k, self.s, self.d, self.pb, self.pe = k, s, d, pb, pe
        self.O = O = out_shape(S, k, s, d, pb, pe, bool(ceil_mode))
        # padded extent must hold every window, including the ceil_mode tail
        self.P = [max(S[i] + pb[i] + pe[i], (O[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1)
                  for i in range(nd)]

    def padded(self, x, fill, tag):
        if all(self.P[i] == self.S[i] for i in range(self.nd)):
            return x
        key = ("pool_pad", tag, x.shape, x.dtype.str, tuple(self.P), tuple(self.pb), float(fill))
        xp = scratch(key, x.shape[:2] + tuple(self.P), x.dtype,
                     init=lambda b: b.fill(fill))
        np.copyto(xp[(slice(None), slice(None)) +
                     tuple(slice(self.pb[i], self.pb[i] + self.S[i]) for i in range(self.nd))], x)
        return xp

    def tap_views(self, x, fill, tag):
        """One (N, C, *O) view per kernel tap, in row-major tap order. Strided pools read from
        stride-phase planes so every view has unit inner stride (SIMD-friendly)."""
        taps = list(itertools.product(*[range(kk) for kk in self.k]))
        if any(v > 1 for v in self.s):
            view = phase_split(x, self.k, self.s, self.d, self.pb, self.O, fill, tag)
            return [view(t) for t in taps]
        xp = self.padded(x, fill, tag)
        return [xp[(slice(None), slice(None)) + tuple(
            slice(t[i] * self.d[i], t[i] * self.d[i] + self.O[i]) for i in range(self.nd))]
            for t in taps]

    def separable_cheaper(self):
        """Reducing one axis at a time costs sum_i k_i * (size after axis i); the direct tap loop
        costs prod(k) * prod(O). Separable wins for stride-1 windows (e.g. YOLO's 5x5 SPPF)."""
        direct = int(np.prod(self.k)) * int(np.prod(self.O))
        dims = list(self.P)
        sep = 0
        for i in range(self.nd):
            dims[i] = self.O[i]
            sep += self.k[i] * int(np.prod(dims))
        return sep < 0.8 * direct

    def separable(self, x, fill, tag, ufunc, dtype):
        """Window reduction axis by axis over the padded input (no indices)."""
        cur = self.padded(x, fill, tag)
        for i in range(self.nd):
            ax = 2 + i
            shape = list(cur.shape)
            shape[ax] = self.O[i]
            nxt = np.empty(shape, dtype)
            for t in range(self.k[i]):
                sl = [slice(None)] * cur.ndim
                start = t * self.d[i]
                sl[ax] = slice(start, start + (self.O[i] - 1) * self.s[i] + 1, self.s[i])
                v = cur[tuple(sl)]
                if t == 0:
                    np.copyto(nxt, v)
                else:
                    ufunc(nxt, v, out=nxt)
            cur = nxt
        return cur

    def counts(self, include_pad):
        """Per output position, how many window taps land in the input (or input + pads)."""
        c = np.ones((), np.float64)
        for i in range(self.nd):
            start = np.arange(self.O[i])[:, None] * self.s[i] + np.arange(self.k[i])[None, :] * self.d[i]
            if include_pad:
                ok = start < self.S[i] + self.pb[i] + self.pe[i]
            else:
                ok = (start >= self.pb[i]) & (start < self.pb[i] + self.S[i])
            ci = ok.sum(axis=1).astype(np.float64)
            c = np.multiply.outer(c, ci)
        return c


def _lowest(dt):
    return -np.inf if dt.kind == "f" else np.iinfo(dt).min


def _max_pool(x, g, with_indices, storage_order, out=None):
    dt = x.dtype
    calc = x if dt.kind in "fiu" else x.astype(np.float32)
    oshape = x.shape[:2] + tuple(g.O)
    mx = np.fmax if calc.dtype.kind == "f" else np.maximum   # fmax: NaNs do not win, like ORT
    if not with_indices and g.separable_cheaper():
        y = g.separable(calc, _lowest(calc.dtype), "max", mx, calc.dtype)
        if out is not None:
            np.copyto(out, y, casting="unsafe")
            return out
        return y if y.dtype == dt else y.astype(dt)
    views = g.tap_views(calc, _lowest(calc.dtype), "max")
    res = out if (out is not None and out.dtype == calc.dtype) else np.empty(oshape, calc.dtype)
    arg = np.zeros(oshape, np.int32) if with_indices else None
    for ti, v in enumerate(views):
        if ti == 0:
            np.copyto(res, v)
        elif with_indices:
            better = v > res
            np.copyto(res, v, where=better)
            np.copyto(arg, ti, where=better)
        else:
            mx(res, v, out=res)
    y = res if res.dtype == dt else res.astype(dt)
    if out is not None and y is not out:
        np.copyto(out, y, casting="unsafe")
        y = out
    if not with_indices:
        return y
    # tap number -> input coordinates -> flat index into x
    tap_coords = np.unravel_index(arg, g.k)
    N, C = x.shape[:2]
    flat = np.zeros(oshape, np.int64)
    coords = []
    for i in range(g.nd):
        o = np.arange(g.O[i]).reshape((-1,) + (1,) * (g.nd - 1 - i))
        coords.append(o * g.s[i] - g.pb[i] + tap_coords[i].astype(np.int64) * g.d[i])
    if storage_order == 0:
        for i in range(g.nd):
            flat = flat * g.S[i] + coords[i]
    else:   # column-major spatial index
        for i in reversed(range(g.nd)):
            flat = flat * g.S[i] + coords[i]
    base = (np.arange(N * C, dtype=np.int64) * int(np.prod(g.S))).reshape((N, C) + (1,) * g.nd)
    return y, flat + base


def pool_geometry_attrs(a):
    """The window attributes of a MaxPool-style node, as _Geom's keyword arguments."""
    return dict(kernel_shape=a.get("kernel_shape"), strides=a.get("strides"),
                dilations=a.get("dilations"), pads=a.get("pads"),
                auto_pad=a.get("auto_pad", "NOTSET"), ceil_mode=a.get("ceil_mode", 0))


# MaxPool has an optional second output (Indices), so it is an Op rather than a plain function.
@register("MaxPool", since=1)
class MaxPool(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.kw = pool_geometry_attrs(a)
        self.storage_order = int(a.get("storage_order", 0))
        self.num_threads = int(ctx.num_threads or 1)
        self.with_indices = len(node.outputs) > 1 and bool(node.outputs[1])
        self._geoms = {}

    def run(self, inputs, outs):
        x = inputs[0]
        # the window geometry once per input shape (~20 us of Python per call otherwise)
        g = self._geoms.get(x.shape)
        if g is None:
            g = _Geom(x, **self.kw)
            if len(self._geoms) >= 64:
                self._geoms.pop(next(iter(self._geoms)))
            self._geoms[x.shape] = g
        out = outs[0] if outs else None
        if not self.with_indices and g.nd == 2 and x.dtype == np.float32:
            # compiled window loop (the numpy tap loop makes k*k passes over the output)
            oshape = x.shape[:2] + tuple(g.O)
            y = out if (out is not None and out.dtype == np.float32 and out.shape == oshape
                        and out.flags.c_contiguous) else np.empty(oshape, np.float32)
            N, C = x.shape[:2]
            _f32_ops.maxpool2d(np.ascontiguousarray(x).reshape(N * C, *g.S),
                               y.reshape(N * C, *g.O), g.k[0], g.k[1], g.s[0], g.s[1], g.d[0],
                               g.d[1], g.pb[0], g.pb[1], self.num_threads)
            if out is not None and y is not out:
                np.copyto(out, y, casting="unsafe")
                y = out
            return [y] + ([None] if len(self.node.outputs) > 1 else [])
        r = _max_pool(x, g, self.with_indices, self.storage_order, out)
        if self.with_indices:
            return list(r)
        return [r] + ([None] if len(self.node.outputs) > 1 else [])

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the compiled window loop into the same slot."""
        x = inputs[0]
        out = outs[0] if outs else None
        g = self._geoms.get(x.shape)
        if g is None or self.with_indices or g.nd != 2 or x.dtype != np.float32 \
                or not x.flags.c_contiguous or out is None or out.dtype != np.float32 \
                or not out.flags.c_contiguous or out.shape != x.shape[:2] + tuple(g.O):
            return None
        N, C = x.shape[:2]
        return _f32_ops.maxpool2d, (x.reshape(N * C, *g.S), out.reshape(N * C, *g.O), g.k[0],
                                    g.k[1], g.s[0], g.s[1], g.d[0], g.d[1], g.pb[0], g.pb[1],
                                    self.num_threads)


@register("AveragePool", since=1)
def AveragePool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                kernel_shape=None, pads=None, strides=None, out=None):
    g = _Geom(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    calc = x if x.dtype.kind == "f" and x.dtype.itemsize >= 4 else x.astype(np.float32)
    if g.separable_cheaper():
        acc = g.separable(calc, 0.0, "sum", np.add, calc.dtype)
    else:
        acc = np.zeros(x.shape[:2] + tuple(g.O), calc.dtype)
        for v in g.tap_views(calc, 0.0, "sum"):
            np.add(acc, v, out=acc)
    cnt = g.counts(bool(count_include_pad)).astype(calc.dtype)
    if out is not None:
        np.divide(acc, cnt, out=out, casting="unsafe")
        return out
    return np.divide(acc, cnt, out=acc).astype(x.dtype, copy=False)


@register("LpPool", since=1)
def LpPool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2,
           pads=None, strides=None):
    g = _Geom(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    calc = x.astype(np.float64) if x.dtype != np.float64 else x
    a = np.abs(calc)
    p = float(p)
    acc = np.zeros(x.shape[:2] + tuple(g.O), np.float64)
    for v in g.tap_views(a, 0.0, "lp"):
        acc += v * v if p == 2.0 else v ** p
    return (np.sqrt(acc) if p == 2.0 else acc ** (1.0 / p)).astype(x.dtype)


@register("GlobalAveragePool", since=1)
def GlobalAveragePool(x, *, out=None):
    axes = tuple(range(2, x.ndim))
    if x.dtype == np.float32 and x.ndim >= 3 and x.size:
        # compiled plane means (numpy's multi-axis mean costs ~15 us of overhead per call)
        oshape = x.shape[:2] + (1,) * (x.ndim - 2)
        y = out if out is not None and out.dtype == np.float32 and out.flags.c_contiguous \
            and out.shape == oshape else np.empty(oshape, np.float32)
        np_ = x.shape[0] * x.shape[1]
        _f32_ops.plane_mean(np.ascontiguousarray(x).reshape(np_, -1), y.reshape(np_))
        return y
    if out is not None and x.dtype.itemsize >= 4:
        return np.mean(x, axis=axes, keepdims=True, out=out)
    return np.mean(x, axis=axes, keepdims=True, dtype=np.float32 if x.dtype.itemsize < 4 else None
                   ).astype(x.dtype, copy=False)


def _gap_bind(inputs, out):
    """engine._run_plan's bound call of GlobalAveragePool: the compiled plane means on the same
    float32 x / out objects, as run() computes them."""
    x = inputs[0]
    if out is None or not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim < 3 \
            or not x.size or not x.flags.c_contiguous or out.dtype != np.float32 \
            or not out.flags.c_contiguous or out.shape != x.shape[:2] + (1,) * (x.ndim - 2):
        return None
    np_ = x.shape[0] * x.shape[1]
    return _f32_ops.plane_mean, (x.reshape(np_, -1), out.reshape(np_))


GlobalAveragePool.bind = _gap_bind


@register("GlobalMaxPool", since=1)
def GlobalMaxPool(x, *, out=None):
    return np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True, out=out)


@register("GlobalLpPool", since=1)
def GlobalLpPool(x, *, p=2):
    axes = tuple(range(2, x.ndim))
    a = np.abs(x.astype(np.float64))
    return (np.sum(a ** float(p), axis=axes, keepdims=True) ** (1.0 / float(p))).astype(x.dtype)


@register("MaxUnpool", since=9)
def MaxUnpool(x, indices, output_shape=None, *, kernel_shape=None, pads=None, strides=None):
    """Scatter x into zeros at the flat positions MaxPool's Indices output recorded.

    Indices address the shape inferred from the attributes; an explicit output_shape (larger,
    e.g. to undo a ceil_mode/odd-size pool) receives that result in its leading corner, as onnx's
    conformance data expects."""
    nd = x.ndim - 2
    k, s, _, pb, pe = norm_attrs(nd, kernel_shape, strides, None, pads)
    inferred = x.shape[:2] + tuple((x.shape[2 + i] - 1) * s[i] + k[i] - pb[i] - pe[i]
                                   for i in range(nd))
    y = np.zeros(inferred, x.dtype)
    idx = np.asarray(indices, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= y.size):
        raise ShapeError(f"MaxUnpool index out of range for output shape {inferred}")
    y.reshape(-1)[idx] = x.reshape(-1)
    if output_shape is None:
        return y
    shape = tuple(int(v) for v in np.asarray(output_shape).reshape(-1))
    if shape == inferred:
        return y
    res = np.zeros(shape, x.dtype)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(inferred, shape))
    res[sl] = y[sl]
    return res


@register("MaxRoiPool", since=1)
def MaxRoiPool(x, rois, *, pooled_shape=None, spatial_scale=1.0):
    """Caffe-style ROI max pooling. Loops over ROIs and output bins (a handful), each bin a
    vectorised max over all channels."""
    N, C, H, W = x.shape
    ph, pw = (int(v) for v in pooled_shape)
    R = rois.shape[0]
    y = np.zeros((R, C, ph, pw), x.dtype)
    for r in range(R):
        b = int(rois[r, 0])
        x1, y1, x2, y2 = (int(np.round(float(v) * spatial_scale)) for v in rois[r, 1:5])
        rh = max(y2 - y1 + 1, 1)
        rw = max(x2 - x1 + 1, 1)
        bh, bw = rh / ph, rw / pw
        for i in range(ph):
            hs = min(max(int(np.floor(i * bh)) + y1, 0), H)
            he = min(max(int(np.ceil((i + 1) * bh)) + y1, 0), H)
            for j in range(pw):
                ws = min(max(int(np.floor(j * bw)) + x1, 0), W)
                we = min(max(int(np.ceil((j + 1) * bw)) + x1, 0), W)
                if he > hs and we > ws:
                    y[r, :, i, j] = x[b, :, hs:he, ws:we].max(axis=(1, 2))
    return y
