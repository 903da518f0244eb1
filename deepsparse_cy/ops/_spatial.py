"""Shared helpers for the spatial op families (conv, pool, resize): attribute normalisation,
padding arithmetic and per-thread scratch buffers."""
from __future__ import annotations

import itertools
import threading

import numpy as np

from ..errors import ShapeError
from ..kernels._mem import aligned_empty, aligned_zeros


def norm_attrs(nd, kernel_shape, strides=None, dilations=None, pads=None):
    """Default and validate spatial attributes; returns (k, s, d, pads_begin, pads_end) lists."""
    k = [int(v) for v in kernel_shape]
    if len(k) != nd:
        raise ShapeError(f"kernel_shape {k} does not match {nd} spatial dims")
    s = [int(v) for v in strides] if strides else [1] * nd
    d = [int(v) for v in dilations] if dilations else [1] * nd
    p = [int(v) for v in pads] if pads else [0] * (2 * nd)
    if len(s) != nd or len(d) != nd or len(p) != 2 * nd:
        raise ShapeError("strides/dilations/pads do not match the number of spatial dims")
    return k, s, d, p[:nd], p[nd:]


def resolve_pads(auto_pad, in_shape, k, s, d, pb, pe):
    """Apply auto_pad (SAME_UPPER / SAME_LOWER / VALID / NOTSET) -> (pads_begin, pads_end).

    SAME: output = ceil(in / stride); the total padding needed for that is split evenly, the odd
    element going to the end (UPPER) or the beginning (LOWER)."""
    auto_pad = auto_pad or "NOTSET"
    if auto_pad == "NOTSET":
        return list(pb), list(pe)
    nd = len(in_shape)
    if auto_pad == "VALID":
        return [0] * nd, [0] * nd
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ShapeError(f"unknown auto_pad {auto_pad!r}")
    b, e = [], []
    for i in range(nd):
        o = -(-in_shape[i] // s[i])
        total = max(0, (o - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_shape[i])
        small = total // 2
        if auto_pad == "SAME_UPPER":
            b.append(small)
            e.append(total - small)
        else:
            b.append(total - small)
            e.append(small)
    return b, e


def out_shape(in_shape, k, s, d, pb, pe, ceil_mode=False):
    out = []
    for i in range(len(in_shape)):
        span = in_shape[i] + pb[i] + pe[i] - ((k[i] - 1) * d[i] + 1)
        if ceil_mode:
            o = -(-span // s[i]) + 1
            # the last window must start inside the input or the begin padding
            if (o - 1) * s[i] >= in_shape[i] + pb[i]:
                o -= 1
        else:
            o = span // s[i] + 1
        if o <= 0:
            raise ShapeError(f"spatial dim {i}: input {in_shape[i]} too small for kernel {k[i]} "
                             f"(dilation {d[i]}, pads {pb[i]}+{pe[i]})")
        out.append(o)
    return out


def tap_range(o_len, in_len, stride, offset):
    """Outputs o in [lo, hi) with 0 <= o*stride + offset < in_len, and the first input index.

    Used to copy one kernel tap's valid region without materialising a padded input."""
    lo = max(0, -(offset // stride))                  # ceil(-offset / stride)
    hi = min(o_len, (in_len - 1 - offset) // stride + 1)
    if hi <= lo:
        return 0, 0, 0
    return lo, hi, lo * stride + offset


_tls = threading.local()


def scratch(key, shape, dtype, zero=False, init=None):
    """A per-thread reusable buffer keyed by `key` (reused while shape/dtype match).

    Reuse avoids page-faulting a fresh multi-megabyte allocation on every call. Buffers created
    with zero=True are zeroed once and `init(buf)` runs once on creation; callers rely on regions
    they never write keeping that content, so the key must capture everything that decides
    which regions are written."""
    cache = getattr(_tls, "bufs", None)
    if cache is None:
        cache = _tls.bufs = {}
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    buf = cache.get(key)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = aligned_zeros(shape, dtype) if zero else aligned_empty(shape, dtype)
        if init is not None:
            init(buf)
        cache[key] = buf
    return buf


def phase_split(x, k, s, d, pb, O, fill, tag, extra_rows=0, planes=False):
    """Padded input split into stride phases, so every kernel tap is a unit-stride view.

    For stride s a window tap at padded position t*d + o*s reads phase (t*d) % s at offset
    (t*d) // s + o: copying the input once into prod(s) phase planes (padding pre-filled with
    `fill`) turns the strided reads of every tap into contiguous-row reads numpy vectorises.
    Returns tap_view(t) -> (N, C, *O) view for a kernel-tap index tuple t; with planes=True
    returns the phase buffer (N, C, *s, *Q) itself (extra_rows adds zero rows at the end of
    dim 0 so flat windows running past the last row stay in bounds)."""
    nd = len(k)
    S = x.shape[2:]
    Q = [-(-((O[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1) // s[i]) for i in range(nd)]
    Qb = [Q[0] + extra_rows] + Q[1:]
    key = ("phase", tag, x.shape, x.dtype.str, tuple(k), tuple(s), tuple(d), tuple(pb), tuple(O),
           float(fill), extra_rows)
    ph = scratch(key, x.shape[:2] + tuple(s) + tuple(Qb), x.dtype, init=lambda b: b.fill(fill))
    lead = (slice(None), slice(None))
    for r in itertools.product(*[range(v) for v in s]):
        dst, src = [], []
        for i in range(nd):
            lo, hi, start = tap_range(Q[i], S[i], s[i], r[i] - pb[i])
            if hi <= lo:
                break
            dst.append(slice(lo, hi))
            src.append(slice(start, start + (hi - lo - 1) * s[i] + 1, s[i]))
        else:
            np.copyto(ph[lead + r + tuple(dst)], x[lead + tuple(src)])
    if planes:
        return ph

    def tap_view(t):
        pos = [t[i] * d[i] for i in range(nd)]
        return ph[lead + tuple(p % s[i] for i, p in enumerate(pos)) +
                  tuple(slice(p // s[i], p // s[i] + O[i]) for i, p in enumerate(pos))]

    return tap_view


def clear_scratch():
    """Drop this thread's scratch buffers (im2col columns, padded/phase planes)."""
    _tls.bufs = {}


def scratch_bytes():
    """Bytes held by this thread's scratch buffers."""
    return sum(b.nbytes for b in getattr(_tls, "bufs", {}).values())
