"""Resampling family: Resize (all modes and coordinate transforms), Upsample, GridSample,
AffineGrid.

Resize is separable: each resized axis gets a small table of source indices (out, taps) and
weights (out, taps) built from 1-D coordinate math, then is applied with one `take` and
multiply-add per tap over the whole tensor. Nearest uses a single `take` (exact for integers).
GridSample gathers all taps for all output points at once from a channels-last view.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from .. import limits

from ..errors import ShapeError
from ..kernels import _f32_ops
from .registry import _REGISTRY, register

# --- 1-D coordinate transform and tap tables ---------------------------------------------------


def _src_coords(ctm, out_len, in_len, scale, roi_pair):
    """Source coordinate of each output index, and the tf_crop_and_resize extrapolation mask."""
    y = np.arange(out_len, dtype=np.float64)
    out_f = scale * in_len                     # the spec's (fractional) output length
    mask = None
    if ctm == "align_corners":
        x = np.zeros(out_len) if out_f == 1 else y * (in_len - 1) / (out_f - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_crop_and_resize":
        r0, r1 = float(roi_pair[0]), float(roi_pair[1])
        if out_f == 1:
            x = np.full(out_len, (r1 - r0) * (in_len - 1) / 2)
        else:
            x = y * (r1 - r0) * (in_len - 1) / (out_f - 1)
        x = x + r0 * (in_len - 1)
        mask = (x < 0) | (x > in_len - 1)
    elif ctm == "pytorch_half_pixel":
        x = np.full(out_len, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        adjustment = out_len / out_f
        offset = in_len / 2 * (1 - adjustment)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise ShapeError(f"unknown coordinate_transformation_mode {ctm!r}")
    return x, mask


def _cubic_w(t, A):
    """Keys cubic kernel at distances t (any shape)."""
    t = np.abs(t)
    t2, t3 = t * t, t * t * t
    near = (A + 2) * t3 - (A + 3) * t2 + 1
    far = A * t3 - 5 * A * t2 + 8 * A * t - 4 * A
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _coeffs(ratio, mode, scale, antialias, nearest_mode, A):
    """(out, n) interpolation weights for the fractional positions `ratio` in (0, 1]."""
    r = ratio[:, None]
    if mode == "nearest":
        integer = ratio == 1.0
        if nearest_mode == "round_prefer_floor":
            hi = ratio > 0.5
        elif nearest_mode == "round_prefer_ceil":
            hi = ratio >= 0.5
        elif nearest_mode == "floor":
            hi = np.zeros_like(ratio, bool)
        elif nearest_mode == "ceil":
            hi = np.ones_like(ratio, bool)
        else:
            raise ShapeError(f"unknown nearest_mode {nearest_mode!r}")
        hi = hi | integer
        return np.stack([~hi, hi], axis=1).astype(np.float64)
    if mode == "linear":
        if antialias and scale < 1:
            start = int(math.floor(-1 / scale) + 1)
            i = np.arange(start, start + 2 - 2 * start)[None, :]
            w = np.clip(1 - np.abs((i - r) * scale), 0, 1)
            return w / w.sum(axis=1, keepdims=True)
        return np.concatenate([1 - r, r], axis=1)
    if mode == "cubic":
        if antialias and scale < 1:
            start = int(math.floor(-2 / scale) + 1)
            i = np.arange(start, 2 - start)[None, :]
            w = _cubic_w(scale * (i - r), A)
            return w / w.sum(axis=1, keepdims=True)
        return np.concatenate([_cubic_w(r + 1, A), _cubic_w(r, A), _cubic_w(1 - r, A),
                               _cubic_w(2 - r, A)], axis=1)
    raise ShapeError(f"unknown Resize mode {mode!r}")


def _axis_table(in_len, out_len, scale, mode, ctm, nearest_mode, A, antialias, exclude_outside,
                roi_pair):
    """(idx (out, n), weights (out, n), extrapolation mask or None) for one axis; computed once
    per geometry (a detector neck resizes the same maps on every call), read-only arrays."""
    key = (int(in_len), int(out_len), float(scale), mode, ctm, nearest_mode, float(A),
           bool(antialias), bool(exclude_outside), tuple(float(v) for v in roi_pair))
    return _axis_table_cached(*key)


@functools.lru_cache(maxsize=512)
def _axis_table_cached(in_len, out_len, scale, mode, ctm, nearest_mode, A, antialias,
                       exclude_outside, roi_pair):
    res = _axis_table_compute(in_len, out_len, scale, mode, ctm, nearest_mode, A, antialias,
                              exclude_outside, roi_pair)
    for a in res:
        if a is not None:
            a.setflags(write=False)
    return res


def _axis_table_compute(in_len, out_len, scale, mode, ctm, nearest_mode, A, antialias,
                        exclude_outside, roi_pair):
    x, mask = _src_coords(ctm, out_len, in_len, scale, roi_pair)
    xf = np.floor(x)
    ratio = np.where(x == xf, 1.0, x - xf)
    w = _coeffs(ratio, mode, scale, antialias, nearest_mode, A)
    n = w.shape[1]
    # neighbour selection: the n taps nearest to x (ties to the lower side), as the spec does it
    pad = -(-n // 2)
    xp = x + pad
    pp = np.floor(xp)
    frac = xp - pp
    if n % 2 == 0:
        off = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        off = np.where(frac <= 0.5, base, base + 1)
    idx = (pp.astype(np.int64) + off)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside and mode != "nearest":
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        s = w.sum(axis=1, keepdims=True)
        w = w / np.where(s == 0, 1.0, s)
    return np.clip(idx, 0, in_len - 1), w, mask


@functools.lru_cache(maxsize=1024)
def _is_integer_repeat(in_len, out_len, scale, ctm, nearest_mode, roi_pair):
    """Whether nearest resize of one axis repeats every input index out_len // in_len times
    (decided from the spec's index table once per geometry, not on every call)."""
    k = out_len // in_len
    idx, w, mask = _axis_table(in_len, out_len, scale, "nearest", ctm, nearest_mode, -0.75, 0, 0,
                               roi_pair)
    sel = np.where(w[:, 1] > 0, idx[:, 1], idx[:, 0])
    return not (mask is not None and mask.any()) and np.array_equal(sel, np.arange(out_len) // k)


def _nearest_integer_upsample(x, out_sizes, scales, roi, ctm, nearest_mode, axes):
    """NCHW nearest resize whose spatial axes repeat every input pixel k times (the 2x
    upsampling of FPN necks): one broadcast copy instead of a gather per axis. None when the
    index tables are anything else (the general path then runs)."""
    r = x.ndim
    reps = [1, 1, 1, 1]
    for ax in axes:
        in_len, out_len = x.shape[ax], int(out_sizes[ax])
        # batch and channel axes may only be listed unchanged (sizes name every axis)
        if in_len == 0 or out_len % in_len or (ax < 2 and out_len != in_len):
            return None
        roi_pair = (roi[ax], roi[ax + r]) if roi is not None else (0.0, 1.0)
        if not _is_integer_repeat(in_len, out_len, float(scales[ax]), ctm, nearest_mode,
                                  tuple(float(v) for v in roi_pair)):
            return None
        reps[ax] = out_len // in_len
    N, C, H, W = x.shape
    kh, kw = reps[2], reps[3]
    y = np.empty((N, C, H * kh, W * kw), x.dtype)
    if x.dtype == np.float32:
        # compiled: numpy's broadcast copy runs an inner loop kw elements long
        _f32_ops.upsample_nearest(np.ascontiguousarray(x).reshape(N * C, H, W),
                                  y.reshape(N * C, H * kh, W * kw), kh, kw)
        return y
    y.reshape(N, C, H, kh, W, kw)[...] = x[:, :, :, None, :, None]
    return y


def _resize(x, out_sizes, scales, roi, mode, ctm, nearest_mode, A, antialias, exclude_outside,
            extrapolation_value, axes):
    r = x.ndim
    # refuse an output over the memory budget (huge scales) before any work or allocation
    limits.check_shape([int(out_sizes[i]) if i in axes else x.shape[i] for i in range(r)],
                       max(x.dtype.itemsize, 8 if mode != "nearest" else 1), "Resize output")
    is_float = x.dtype.kind == "f"
    calc = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if mode == "nearest" and r == 4 and x.size:
        y = _nearest_integer_upsample(x, out_sizes, scales, roi, ctm, nearest_mode, axes)
        if y is not None:
            return y
    y = x if mode == "nearest" else x.astype(calc, copy=False)
    for ax in axes:
        in_len, out_len, sc = x.shape[ax], int(out_sizes[ax]), float(scales[ax])
        roi_pair = (roi[ax], roi[ax + r]) if roi is not None else (0.0, 1.0)
        if out_len == in_len and math.isclose(sc, 1.0) and \
                (roi is None or (math.isclose(roi_pair[0], 0) and math.isclose(roi_pair[1], 1))):
            continue
        if out_len == 0:
            shp = list(y.shape)
            shp[ax] = 0
            y = np.empty(shp, y.dtype)
            continue
        idx, w, mask = _axis_table(in_len, out_len, sc, mode, ctm, nearest_mode, A, antialias,
                                   exclude_outside, roi_pair)
        bshape = (1,) * ax + (out_len,) + (1,) * (r - ax - 1)
        if mode == "nearest":
            y = np.take(y, np.where(w[:, 1] > 0, idx[:, 1], idx[:, 0]), axis=ax)
        else:
            acc = None
            for t in range(w.shape[1]):
                if not w[:, t].any():
                    continue
                term = np.take(y, idx[:, t], axis=ax)
                term *= w[:, t].astype(calc).reshape(bshape)
                acc = term if acc is None else np.add(acc, term, out=acc)
            y = acc if acc is not None else np.zeros(
                y.shape[:ax] + (out_len,) + y.shape[ax + 1:], calc)
        if mask is not None and mask.any():
            if y.dtype.kind != "f":
                y = y.astype(np.float64)
            y = np.where(mask.reshape(bshape), extrapolation_value, y)
    if y.dtype == x.dtype:
        return y
    if is_float:
        return y.astype(x.dtype)
    info = np.iinfo(x.dtype)
    return np.clip(np.round(y), info.min, info.max).astype(x.dtype)


def _output_geometry(x, scales, sizes, axes, policy):
    """Full-rank (out_sizes, scales, axes) from the Resize inputs and attributes."""
    r = x.ndim
    ax = [a + r if a < 0 else a for a in axes] if axes else list(range(r))
    sizes = None if sizes is None or np.size(sizes) == 0 else [int(v) for v in np.asarray(sizes).reshape(-1)]
    scales = None if scales is None or np.size(scales) == 0 else [float(v) for v in np.asarray(scales).reshape(-1)]
    if sizes is None and scales is None:
        raise ShapeError("Resize needs scales or sizes")
    if sizes is not None:
        if len(sizes) != len(ax):
            raise ShapeError(f"Resize sizes {sizes} do not match axes {ax}")
        full_sc = [1.0] * r
        full_sz = list(x.shape)
        for a, s in zip(ax, sizes):
            full_sc[a] = s / x.shape[a] if x.shape[a] else 1.0
            full_sz[a] = s
        if policy and policy != "stretch":
            pick = min if policy == "not_larger" else max
            if policy not in ("not_larger", "not_smaller"):
                raise ShapeError(f"unknown keep_aspect_ratio_policy {policy!r}")
            s = pick(full_sc[a] for a in ax)
            full_sc = [s if a in ax else 1.0 for a in range(r)]
            full_sz = [int(s * x.shape[a] + 0.5) if a in ax else x.shape[a] for a in range(r)]
        return full_sz, full_sc, ax
    if len(scales) != len(ax):
        raise ShapeError(f"Resize scales {scales} do not match axes {ax}")
    full_sc = [1.0] * r
    for a, s in zip(ax, scales):
        if s <= 0:
            raise ShapeError(f"Resize scale must be positive, got {s}")
        full_sc[a] = s
    full_sz = [int(full_sc[a] * x.shape[a]) for a in range(r)]
    return full_sz, full_sc, ax


def _full_roi(roi, r, ax):
    if roi is None or np.size(roi) == 0:
        return None
    roi = [float(v) for v in np.asarray(roi).reshape(-1)]
    if len(roi) == 2 * r:
        return roi
    full = [0.0] * r + [1.0] * r
    n = len(ax)
    for i, a in enumerate(ax):
        full[a] = roi[i]
        full[r + a] = roi[n + i]
    return full


@register("Resize", since=10)
def Resize_10(x, scales, *, mode="nearest"):
    """Opset 10: Upsample semantics (asymmetric coordinates, nearest rounds down)."""
    sz, sc, ax = _output_geometry(x, scales, None, None, None)
    return _resize(x, sz, sc, None, mode, "asymmetric", "floor", -0.75, 0, 0, 0.0, ax)


@register("Resize", since=11)
def Resize(x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
           coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
           nearest_mode="round_prefer_floor"):
    if antialias and mode == "nearest":
        antialias = 0
    sz, sc, ax = _output_geometry(x, scales, sizes, axes, keep_aspect_ratio_policy)
    return _resize(x, sz, sc, _full_roi(roi, x.ndim, ax), mode, coordinate_transformation_mode,
                   nearest_mode, float(cubic_coeff_a), bool(antialias), bool(exclude_outside),
                   float(extrapolation_value), ax)


_PLANNED_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.int8))


def _planes(x, out):
    """x, out as [N*C, H, W] planes (8-bit: their uint8 views) for the compiled kernels (one
    fused-type function each for float32 and byte planes)."""
    if x.dtype != np.float32:
        x, out = x.view(np.uint8), out.view(np.uint8)
    return (x.reshape(-1, x.shape[2], x.shape[3]),
            out.reshape(-1, out.shape[2], out.shape[3]))


def _values_key(arrays):
    """roi / scales / sizes by value (a few bytes each), for the per-geometry plan cache."""
    return tuple(None if v is None else (v.dtype.str, v.shape, v.tobytes()) for v in arrays)


class _ResizePlanned(_REGISTRY[("", "Resize")][11]):
    """Resize (opset 11+) planned once per input geometry: a float32 or 8-bit NCHW nearest resize
    (the upsampling of detector and OCR necks; 8-bit where graph/fusion_q8.py moved the
    QuantizeLinear after it before it) is one compiled pass into the output's arena slot,
    from the per-axis index tables of the spec's formulas (_axis_table, as the general path
    uses); integer repeats take the broadcast-copy kernel. Anything else runs `Resize`. Before,
    each call re-derived the geometry in Python (~25 us) and a non-integer scale ran two numpy
    takes."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self._plans = {}
        self.nt = int(ctx.num_threads or 1)
        kw = self.kwargs
        self._nearest = kw.get("mode", "nearest") == "nearest"

    def run(self, inputs, outs):
        x = inputs[0]
        if not (self._nearest and isinstance(x, np.ndarray) and x.dtype in _PLANNED_DTYPES
                and x.ndim == 4 and x.size):
            return super().run(inputs, outs)
        key = (x.shape,) + _values_key(inputs[1:self.n_declared])
        plan = self._plans.get(key, False)
        if plan is False:
            plan = self._plan(x, inputs[:self.n_declared])
            if len(self._plans) >= 64:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        if plan is None:
            return super().run(inputs, outs)
        oshape, hi, wi, kh, kw = plan
        out = outs[0] if outs else None
        if out is None or out.dtype != x.dtype or out.shape != oshape \
                or not out.flags.c_contiguous or np.may_share_memory(out, x):
            out = np.empty(oshape, x.dtype)
        x3, y3 = _planes(np.ascontiguousarray(x), out)
        if kh:
            _f32_ops.upsample_nearest(x3, y3, kh, kw, self.nt)
        else:
            _f32_ops.resize_nearest(x3, hi, wi, y3, self.nt)
        return [out]

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the compiled nearest resize on the same x / out."""
        x = inputs[0]
        out = outs[0] if outs else None
        if out is None or not (self._nearest and isinstance(x, np.ndarray)
                               and x.dtype in _PLANNED_DTYPES and x.ndim == 4 and x.size
                               and x.flags.c_contiguous):
            return None
        key = (x.shape,) + _values_key(inputs[1:self.n_declared])
        plan = self._plans.get(key)
        if not plan or out.dtype != x.dtype or out.shape != plan[0] \
                or not out.flags.c_contiguous or np.may_share_memory(out, x):
            return None
        oshape, hi, wi, kh, kw = plan
        x3, y3 = _planes(x, out)
        params = tuple(inputs[1:self.n_declared])
        # the fused-type kernels' specialisation for this dtype (their dispatch: ~0.5 us a call)
        spec = "float" if x.dtype == np.float32 else "unsigned char"
        nt, up, rs = self.nt, _f32_ops.upsample_nearest[spec], _f32_ops.resize_nearest[spec]
        ins, outs = list(inputs), list(outs)

        def call():
            # roi / scales / sizes may be computed arrays: the geometry is re-keyed on their
            # values (a few bytes) and any change runs the op's own path
            if _values_key(params) != key[1:]:
                if self.run(ins, outs)[0] is not outs[0]:      # another output shape
                    from ..engine import _Replan
                    raise _Replan(self.node.outputs[0])
            elif kh:
                up(x3, y3, kh, kw, nt)
            else:
                rs(x3, hi, wi, y3, nt)
        return call, ()

    def _plan(self, x, inputs):
        """(output shape, row table, column table, kh, kw) with kh = kw = 0 unless every pixel
        repeats kh x kw times; None when the general path must run (N or C resized,
        extrapolated pixels, an empty output)."""
        kw = self.kwargs
        roi, scales, sizes = (list(inputs[1:4]) + [None, None, None])[:3]
        sz, sc, ax = _output_geometry(x, scales, sizes, kw.get("axes"),
                                      kw.get("keep_aspect_ratio_policy", "stretch"))
        r = x.ndim
        roi = _full_roi(roi, r, ax)
        if any(int(sz[a]) != x.shape[a] for a in (0, 1)) or min(int(v) for v in sz) <= 0:
            return None
        limits.check_shape(sz, 4, "Resize output")
        ctm = kw.get("coordinate_transformation_mode", "half_pixel")
        nm = kw.get("nearest_mode", "round_prefer_floor")
        tables = []
        for a in (2, 3):
            in_len, out_len, s_ = x.shape[a], int(sz[a]), float(sc[a])
            roi_pair = (roi[a], roi[a + r]) if roi is not None else (0.0, 1.0)
            if a not in ax or (out_len == in_len and math.isclose(s_, 1.0) and (
                    roi is None or (math.isclose(roi_pair[0], 0)
                                    and math.isclose(roi_pair[1], 1)))):
                tables.append(np.arange(in_len, dtype=np.int32))
                continue
            idx, w, mask = _axis_table(in_len, out_len, s_, "nearest", ctm, nm, -0.75, 0, 0,
                                       roi_pair)
            if mask is not None and mask.any():
                return None
            tables.append(np.ascontiguousarray(
                np.where(w[:, 1] > 0, idx[:, 1], idx[:, 0]), dtype=np.int32))
        hi, wi = tables
        oshape = (x.shape[0], x.shape[1], len(hi), len(wi))
        kh, kw_ = len(hi) // x.shape[2], len(wi) // x.shape[3]
        if not (np.array_equal(hi, np.arange(len(hi)) // max(kh, 1)) and kh * x.shape[2] == len(hi)
                and np.array_equal(wi, np.arange(len(wi)) // max(kw_, 1))
                and kw_ * x.shape[3] == len(wi)):
            kh = kw_ = 0
        return oshape, hi, wi, kh, kw_


register("Resize", since=11)(_ResizePlanned)


def _upsample(x, scales, mode):
    sz, sc, ax = _output_geometry(x, scales, None, None, None)
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    return _resize(x, sz, sc, None, mode, "asymmetric", "floor", -0.75, 0, 0, 0.0, ax)


@register("Upsample", since=7)
def Upsample_7(x, *, mode="nearest", scales=None):
    return _upsample(x, scales, mode)


@register("Upsample", since=9)
def Upsample(x, scales, *, mode="nearest"):
    return _upsample(x, scales, mode)


# --- GridSample --------------------------------------------------------------------------------

def _reflect(v, lo, hi):
    """Reflect coordinates into [lo, hi] (repeated mirroring), vectorised."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(v, lo)
    below = v < lo
    above = v > hi
    dx = np.where(below, lo - v, np.where(above, v - hi, 0.0))
    n = np.floor(dx / rng)
    rem = dx - n * rng
    even = (n % 2) == 0
    r_below = np.where(even, lo + rem, hi - rem)
    r_above = np.where(even, hi - rem, lo + rem)
    return np.where(below, r_below, np.where(above, r_above, v))


def _cubic_coeffs4(t, A=-0.75):
    return [_cubic_w(t + 1, A), _cubic_w(t, A), _cubic_w(1 - t, A), _cubic_w(2 - t, A)]


@register("GridSample", since=16)
def GridSample(x, grid, *, align_corners=0, mode="bilinear", padding_mode="zeros"):
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    N, C = x.shape[:2]
    S = x.shape[2:]
    nd = len(S)
    if grid.shape[-1] != nd or grid.shape[0] != N:
        raise ShapeError(f"GridSample grid {grid.shape} does not match input {x.shape}")
    O = grid.shape[1:-1]
    if int(np.prod(O)) == 0 or C == 0:
        return np.zeros((N, C, *O), x.dtype)
    calc = np.float64
    xt = np.moveaxis(x, 1, -1)                    # (N, *S, C): one gather per tap gets all channels
    g = grid.astype(np.float32)
    lo = [0.0 if align_corners else -0.5 for _ in range(nd)]
    hi = [(S[i] - 1.0) if align_corners else (S[i] - 0.5) for i in range(nd)]
    coords = []
    for i in range(nd):
        gi = g[..., nd - 1 - i].astype(np.float32)       # grid's last component indexes dim 0
        if align_corners:
            c = (gi + np.float32(1)) / np.float32(2) * np.float32(S[i] - 1)
        else:
            c = ((gi + np.float32(1)) * np.float32(S[i]) - np.float32(1)) / np.float32(2)
        if mode == "nearest":
            c = np.rint(c)
        c = c.astype(calc)
        out = (c < lo[i]) | (c > hi[i])
        if padding_mode == "border":
            c = np.where(out, np.clip(c, 0, S[i] - 1), c)
        elif padding_mode == "reflection":
            c = np.where(out, _reflect(c, lo[i], hi[i]), c)
        coords.append(c)
    nidx = np.arange(N).reshape((N,) + (1,) * len(O))

    def fetch(idx_list):
        """Values at integer positions (N, *O) per dim, with the padding rule -> (N, *O, C)."""
        valid = None
        fixed = []
        for i, ii in enumerate(idx_list):
            if padding_mode == "zeros":
                ok = (ii >= 0) & (ii < S[i])
                valid = ok if valid is None else valid & ok
                ii = np.clip(ii, 0, S[i] - 1)
            elif padding_mode == "border":
                ii = np.clip(ii, 0, S[i] - 1)
            else:
                ii = np.clip(_reflect(ii.astype(calc), lo[i], hi[i]).astype(np.int64), 0, S[i] - 1)
            fixed.append(ii)
        v = xt[(nidx,) + tuple(fixed)].astype(calc)
        if valid is not None:
            v = v * valid[..., None]
        return v

    if mode == "nearest":
        y = fetch([c.astype(np.int64) for c in coords])
    elif mode in ("linear", "cubic"):
        base = [np.floor(c) for c in coords]
        t = [c - b for c, b in zip(coords, base)]
        if mode == "linear":
            offs = [0, 1]
            wts = [[1 - ti, ti] for ti in t]
        else:
            offs = [-1, 0, 1, 2]
            wts = [_cubic_coeffs4(ti) for ti in t]
        base = [b.astype(np.int64) for b in base]
        y = 0
        for combo in itertools.product(range(len(offs)), repeat=nd):
            w = 1.0
            for i, k in enumerate(combo):
                w = w * wts[i][k]
            y = y + fetch([base[i] + offs[k] for i, k in enumerate(combo)]) * w[..., None]
    else:
        raise ShapeError(f"unknown GridSample mode {mode!r}")
    return np.ascontiguousarray(np.moveaxis(y, -1, 1)).astype(x.dtype, copy=False)


@register("AffineGrid", since=20)
def AffineGrid(theta, size, *, align_corners=0):
    """Sampling grid (N, *spatial, nd) = theta @ [normalised base coords; 1]."""
    size = [int(v) for v in np.asarray(size).reshape(-1)]
    N, spatial = size[0], size[2:]
    nd = len(spatial)
    if theta.shape[1:] != (nd, nd + 1):
        raise ShapeError(f"AffineGrid theta {theta.shape} does not fit size {size}")
    lin = []
    for d in spatial:
        if align_corners:
            a = np.linspace(-1.0, 1.0, d) if d > 1 else np.array([-1.0])
        else:
            a = (np.arange(d) * 2.0 + 1.0) / d - 1.0
        lin.append(a)
    mesh = np.meshgrid(*lin, indexing="ij")          # each (*spatial)
    # homogeneous base with the last spatial dim (x) first: (x, y[, z], 1)
    base = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(mesh[0].size)], axis=0)
    g = np.matmul(theta.astype(np.float64), base)     # (N, nd, P)
    return np.ascontiguousarray(g.transpose(0, 2, 1)).reshape(N, *spatial, nd).astype(theta.dtype)
