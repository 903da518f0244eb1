"""Shape and layout operators (numpy references).

Owns: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Pad, Tile, Expand,
Shape, Size, Identity, ConstantOfShape, Constant, Range, EyeLike, Trilu, DepthToSpace,
SpaceToDepth, CenterCropPad, ReverseSequence, Compress, NonZero, Unique, OneHot, TopK,
ArgMax/ArgMin, CumSum/CumProd, Dropout, Det, Col2Im.

Reshape/Flatten/Squeeze/Unsqueeze/Identity return views of their input (no copy); everything
else returns fresh memory or writes into ``out``.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from ..errors import InputError, ShapeError
from ..limits import check_alloc, check_shape
from ..kernels import _f32_ops
from .registry import Op, register


def _ints(v):
    """An int64 tensor / list / scalar as a list of Python ints."""
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _axis(a, rank):
    a = int(a)
    if not -rank <= a < max(rank, 1):
        raise ShapeError(f"axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def _copy_out(v, out):
    if out is not None:
        np.copyto(out, v)
        return out
    return np.array(v, copy=True)


def _n_outputs(node):
    return len(node.outputs)


# --- reshaping (views) ---------------------------------------------------------------------------

def _reshape(data, shape, allowzero=0):
    shape = _ints(shape)
    if not allowzero:
        # 0 copies the input's dim at that position (allowzero=0, the default).
        shape = [data.shape[i] if d == 0 and i < data.ndim else d for i, d in enumerate(shape)]
    try:
        return data.reshape(shape)
    except ValueError as e:
        raise ShapeError(f"cannot reshape {data.shape} to {shape}") from e


@register("Reshape", since=1)
def Reshape_1(data, *, shape=()):
    return _reshape(data, shape)


@register("Reshape", since=5)
def Reshape(data, shape, *, allowzero=0):
    return _reshape(data, shape, allowzero)


@register("Flatten", since=1)
def Flatten(x, *, axis=1):
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise ShapeError(f"Flatten: axis {axis} out of range for rank {x.ndim}")
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _squeeze(x, axes):
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    axes = tuple(_axis(a, x.ndim) for a in _ints(axes))
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"Squeeze: dim {a} of {x.shape} is not 1")
    return x.reshape([d for i, d in enumerate(x.shape) if i not in axes])


@register("Squeeze", since=1)
def Squeeze_1(x, *, axes=None):
    return _squeeze(x, axes)


@register("Squeeze", since=13)
def Squeeze(x, axes=None):
    return _squeeze(x, axes)


def _unsqueeze(x, axes):
    axes = _ints(axes)
    rank = x.ndim + len(axes)
    axes = sorted(_axis(a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"Unsqueeze: repeated axes {axes}")
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return x.reshape(shape)


@register("Unsqueeze", since=1)
def Unsqueeze_1(x, *, axes):
    return _unsqueeze(x, axes)


@register("Unsqueeze", since=13)
def Unsqueeze(x, axes):
    return _unsqueeze(x, axes)


@register("Identity", since=1)
class Identity(Op):
    """Passes tensors, sequences (lists) and optionals (None) through unchanged."""

    def run(self, inputs, outs):
        return [inputs[0]]


# --- layout ----------------------------------------------------------------------------------------

@register("Transpose", since=1)
def Transpose(x, *, perm=None, out=None):
    t = np.transpose(x, perm)
    if out is not None:
        np.copyto(out, t)
        return out
    return np.ascontiguousarray(t) if t.ndim else t.copy()


def _transpose_bind(inputs, out, perm=None):
    """registry.FunctionOp.bind's call for Transpose: the transposed view of the (same) input
    array made once, copied into the output slot on each run (a detector head's DFL
    Transpose)."""
    x = inputs[0] if inputs else None
    if type(x) is not np.ndarray or x.dtype == object or type(out) is not np.ndarray:
        return None
    t = np.transpose(x, perm)
    if t.shape != out.shape or t.dtype != out.dtype or np.may_share_memory(t, out):
        return None
    return functools.partial(np.copyto, out, t), ()


Transpose.bind = _transpose_bind


def _concat_placement(xs, axis, out):
    """With only size-1 axes before `axis` the output's memory is the inputs' memories one
    after the other; inputs that the engine's planner placed there already (their data at their
    offset in `out`) need no copy. Returns the (destination, source) flat copies the others
    still need, or None (nothing to do in place) unless at least one input is in place."""
    if out.ndim != len(xs[0].shape) or not out.flags.c_contiguous or out.dtype == object \
            or int(np.prod(out.shape[:axis], dtype=np.int64)) != 1:
        return None
    base, off, todo, hit = out.ctypes.data, 0, [], False
    for x in xs:
        if x.dtype != out.dtype or x.ndim != out.ndim:
            return None
        if x.flags.c_contiguous and x.ctypes.data == base + off * out.itemsize and x.size:
            hit = True
        else:
            todo.append((off, x))
        off += x.size
    if not hit or off != out.size or any(x.shape[:axis] + x.shape[axis + 1:]
                                         != out.shape[:axis] + out.shape[axis + 1:] for x in xs):
        return None
    flat = out.reshape(-1)
    return [(flat[o:o + x.size], x.reshape(-1)) for o, x in todo]


def _copy_pairs(pairs):
    for d, x in pairs:
        np.copyto(d, x)


def _concat_in_place(xs, axis, out):
    """Concat into `out` when the planner placed inputs there (see _concat_placement): the
    others are copied to their range. False (nothing written) unless one input is in place."""
    copies = _concat_placement(xs, axis, out)
    if copies is None:
        return False
    _copy_pairs(copies)
    return True


def _concat_bind(xs, out, axis=1, num_threads=1):
    """Bound call (registry.FunctionOp.bind) of a Concat: where the planner placed inputs in
    its output slot, nothing to do when all are in place, else the copies of the rest;
    otherwise the compiled block copies of Concat's fast path, from the same input arrays
    into the same slot (the conditions it checks on every call, checked once here), split
    over the engine's threads from ~1 MB (the quantized YOLOv8n's 1.2 MB head Concat took
    0.17 ms on one)."""
    xs = [x for x in xs if x is not None]
    if out is None or not xs or not all(isinstance(x, np.ndarray) for x in xs):
        return None
    ax = _axis(axis, xs[0].ndim)
    copies = _concat_placement(xs, ax, out)
    if copies is not None:
        return (functools.partial(_copy_pairs, copies), ()) if copies else (_nothing, ())
    if _concat_fast(xs, ax) and out.size and _concat_into_ok(xs, _concat_shape(xs, ax), out):
        pieces = _f32_ops.concat_pieces(list(xs), ax, out, int(num_threads or 1))
        if pieces is not None:
            return _f32_ops.copy_pieces, (pieces, int(num_threads), (list(xs), out))
        return _f32_ops.concat, (list(xs), ax, out)
    return None


def _concat_fast(xs, axis):
    """Whether Concat's compiled block copies apply: one dtype (not object), rank >= 1,
    C-contiguous inputs agreeing off `axis`."""
    x0 = xs[0]
    rank = x0.ndim
    return bool(rank) and x0.dtype != object and all(
        x.dtype == x0.dtype and x.ndim == rank and x.flags.c_contiguous
        and x.shape[:axis] == x0.shape[:axis] and x.shape[axis + 1:] == x0.shape[axis + 1:]
        for x in xs)


def _concat_shape(xs, axis):
    x0 = xs[0]
    return x0.shape[:axis] + (sum(x.shape[axis] for x in xs),) + x0.shape[axis + 1:]


def _concat_into_ok(xs, shape, out):
    """Whether the block copies may write `out` directly: the concatenation's shape and dtype,
    C-contiguous, sharing no memory with an input."""
    return out.shape == shape and out.dtype == xs[0].dtype and out.flags.c_contiguous \
        and not any(np.may_share_memory(out, x) for x in xs)


def _nothing():
    pass


@register("Concat", since=1)
def Concat(*xs, axis=1, out=None):
    # axis defaulted to 1 in Concat-1 and is required from Concat-4 on.
    xs = [x for x in xs if x is not None]
    rank = xs[0].ndim
    axis = _axis(axis, rank)
    x0 = xs[0]
    if out is not None and _concat_in_place(xs, axis, out):
        return out
    if _concat_fast(xs, axis):
        # compiled block copies (glibc's memmove is pathologically slow between page-aligned
        # buffers on some AMD CPUs, see csrc/dscy_pool.h)
        shape = _concat_shape(xs, axis)
        y = out if out is not None and _concat_into_ok(xs, shape, out) \
            else np.empty(shape, x0.dtype)
        if y.size:
            _f32_ops.concat(xs, axis, y)
        if out is not None and y is not out:
            np.copyto(out, y, casting="unsafe")
            return out
        return y
    if out is not None:
        return np.concatenate(xs, axis=axis, out=out)
    return np.concatenate(xs, axis=axis)


Concat.bind = _concat_bind
Concat.bind_threads = True


def _split_sizes(dim, split, n):
    """The part sizes of a Split of `dim`: the `split` input / attribute, else n equal parts
    (with num_outputs, Split-18, the last part may be smaller)."""
    if split is None:
        if n <= 0:
            raise ShapeError("Split: no outputs")
        size = -(-dim // n)
        split = [size] * (n - 1) + [dim - size * (n - 1)]
        if split[-1] < 0:
            raise ShapeError(f"Split: cannot split {dim} into {n} parts")
    split = _ints(split)
    if sum(split) != dim:
        raise ShapeError(f"Split: parts {split} do not add up to dim {dim}")
    return split


def _split(x, axis, split, n, outs=None):
    axis = _axis(axis, x.ndim)
    dim = x.shape[axis]
    split = _split_sizes(dim, split, n)
    bounds = list(itertools.accumulate(split, initial=0))   # (np.cumsum: ~7 us per call)
    idx = [slice(None)] * x.ndim
    res = []
    fast = x.flags.c_contiguous and x.dtype != object and x.size > 0
    if fast:
        # each part is `outer` blocks of a C-contiguous input: compiled block copies into the
        # arena slots (see Concat)
        outer = math.prod(x.shape[:axis])
        inner = math.prod(x.shape[axis + 1:]) * x.itemsize
    for i, (b, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        if not fast or e == b:
            idx[axis] = slice(b, e)
            res.append(x[tuple(idx)].copy())
            continue
        shape = x.shape[:axis] + (e - b,) + x.shape[axis + 1:]
        o = outs[i] if outs and i < len(outs) else None
        if o is not None and outer == 1 and o.shape == shape and o.dtype == x.dtype \
                and o.flags.c_contiguous and o.ctypes.data == x.ctypes.data + b * inner:
            res.append(o)      # the part is this piece of x (the engine's in-place Split)
            continue
        if o is None or o.shape != shape or o.dtype != x.dtype or not o.flags.c_contiguous \
                or np.may_share_memory(o, x):
            o = np.empty(shape, x.dtype)
        res.append(_f32_ops.copy_strided_blocks(x, o, outer, dim * inner, (e - b) * inner,
                                                b * inner))
    return res


@register("Split", since=1)
class Split_1(Op):
    """Split-1: `split` is an attribute or the optional second input."""

    def run(self, inputs, outs):
        split = inputs[1] if len(inputs) > 1 and inputs[1] is not None else self.node.attrs.get("split")
        return _split(inputs[0], self.node.attrs.get("axis", 0), split, _n_outputs(self.node),
                      outs)


@register("Split", since=2)
class Split_2(Op):
    def run(self, inputs, outs):
        return _split(inputs[0], self.node.attrs.get("axis", 0), self.node.attrs.get("split"),
                      _n_outputs(self.node), outs)


@register("Split", since=13)
class Split(Op):
    """Split-13/18: `split` is an input; Split-18 may give num_outputs instead."""

    def run(self, inputs, outs):
        split = inputs[1] if len(inputs) > 1 else None
        n = self.node.attrs.get("num_outputs", _n_outputs(self.node))
        return _split(inputs[0], self.node.attrs.get("axis", 0), split, n, outs)

    def bind(self, inputs, outs):
        """engine._run_plan's bound call: the block copies into the same slots. The split
        sizes are a constant or an arena value checked by identity; their values are re-read
        on each call (as run() does), so only the geometry is prepared once."""
        x = inputs[0]
        if not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.dtype != object
                and x.size) or not outs or any(o is None for o in outs):
            return None
        split = inputs[1] if len(inputs) > 1 else None
        n = self.node.attrs.get("num_outputs", _n_outputs(self.node))
        axis = _axis(self.node.attrs.get("axis", 0), x.ndim)
        sizes = tuple(_split_sizes(x.shape[axis], split, n))
        if len(sizes) != len(outs) or min(sizes) <= 0:
            return None
        outer = math.prod(x.shape[:axis])
        inner = math.prod(x.shape[axis + 1:]) * x.itemsize
        dim = x.shape[axis]
        copies, b = [], 0
        for o, sz in zip(outs, sizes):
            if o.shape != x.shape[:axis] + (sz,) + x.shape[axis + 1:] or o.dtype != x.dtype \
                    or not o.flags.c_contiguous or np.may_share_memory(o, x):
                return None
            copies.append((x, o, outer, dim * inner, sz * inner, b * inner))
            b += sz
        cp, outs_l = _f32_ops.copy_strided_blocks, list(outs)

        def call():
            # the block copies prepared once; a split input's values are re-read (and any
            # change takes the op's own path)
            if split is not None and tuple(_ints(split)) != sizes:
                res = _split(x, axis, split, n, outs_l)
                if any(r is not o for r, o in zip(res, outs_l)):    # other output shapes
                    from ..engine import _Replan
                    raise _Replan(self.node.outputs[0])
                return
            for c in copies:
                cp(*c)
        return call, ()


def _slice_index(shape, starts, ends, axes, steps):
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else [_axis(a, len(shape)) for a in _ints(axes)]
    steps = [1] * len(starts) if steps is None else _ints(steps)
    idx = [slice(None)] * len(shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = shape[a]
        if st == 0:
            raise InputError("Slice: step cannot be 0")
        if s < 0:
            s += d
        if e < 0:
            e += d
        if st > 0:
            s = min(max(s, 0), d)
            e = min(max(e, 0), d)
            idx[a] = slice(s, e, st)
        else:
            # Negative steps clamp to [-1, d-1]; -1 means "past the front", i.e. None for Python.
            s = min(max(s, 0), d - 1)
            e = min(max(e, -1), d - 1)
            idx[a] = slice(s, e if e >= 0 else None, st)
    return tuple(idx)


@register("Slice", since=1)
def Slice_1(data, *, starts, ends, axes=None, out=None):
    return _copy_out(data[_slice_index(data.shape, starts, ends, axes, None)], out)


@register("Slice", since=10)
def Slice(data, starts, ends, axes=None, steps=None, *, out=None):
    return _copy_out(data[_slice_index(data.shape, starts, ends, axes, steps)], out)


def _pad(x, pads, mode, value, axes=None):
    pads = _ints(pads)
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in _ints(axes)]
    n = len(axes)
    if len(pads) != 2 * n:
        raise ShapeError(f"Pad: {len(pads)} pads for {n} axes")
    width = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        width[a] = [pads[i], pads[i + n]]
    # Negative pads crop first; numpy pads the rest.
    crop = tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(width))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    check_shape([d + b + e for d, (b, e) in zip(x.shape, width)], x.itemsize, "Pad output")
    if mode == "constant":
        v = 0 if value is None else np.asarray(value).reshape(-1)
        if not np.isscalar(v):
            v = v[0] if v.size else 0
        return np.pad(x, width, mode="constant", constant_values=v)
    if mode in ("reflect", "edge", "wrap"):
        return np.pad(x, width, mode=mode)
    raise InputError(f"Pad: unsupported mode {mode!r}")


@register("Pad", since=1)
def Pad_1(data, *, paddings, mode="constant", value=0.0):
    return _pad(data, paddings, mode, value)


@register("Pad", since=2)
def Pad_2(data, *, pads, mode="constant", value=0.0):
    return _pad(data, pads, mode, value)


@register("Pad", since=11)
def Pad(data, pads, constant_value=None, axes=None, *, mode="constant"):
    # axes input from Pad-18, wrap mode from Pad-19.
    return _pad(data, pads, mode, constant_value, axes)


@register("Tile", since=1)
def Tile_1(x, tiles, axis):
    reps = [1] * x.ndim
    reps[_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)] = int(np.asarray(tiles).reshape(-1)[0])
    check_shape([d * r for d, r in zip(x.shape, reps)], x.itemsize, "Tile output")
    return np.tile(x, reps)


@register("Tile", since=6)
def Tile(x, repeats):
    reps = _ints(repeats)
    if len(reps) != x.ndim:
        raise ShapeError(f"Tile: {len(reps)} repeats for rank {x.ndim}")
    check_shape([d * r for d, r in zip(x.shape, reps)], x.itemsize, "Tile output")
    return np.tile(x, reps)


@register("Expand", since=8)
def Expand(x, shape, *, out=None):
    try:
        target = np.broadcast_shapes(x.shape, tuple(_ints(shape)))
    except ValueError as e:
        raise ShapeError(f"Expand: {x.shape} cannot broadcast to {_ints(shape)}") from e
    check_shape(target, x.itemsize, "Expand output")
    return _copy_out(np.broadcast_to(x, target), out)


@register("Shape", since=1)
def Shape(x, *, start=0, end=None):
    r = x.ndim
    s = start + r if start < 0 else start
    e = r if end is None else (end + r if end < 0 else end)
    s, e = min(max(s, 0), r), min(max(e, 0), r)
    return np.array(x.shape[s:e], dtype=np.int64)


@register("Size", since=1)
def Size(x):
    return np.array(x.size, dtype=np.int64)


# --- constants and generators -----------------------------------------------------------------------

@register("ConstantOfShape", since=9)
def ConstantOfShape(shape, *, value=None):
    dims = _ints(shape)
    if value is None:
        check_shape(dims, 4, "ConstantOfShape output")
        return np.zeros(dims, dtype=np.float32)
    v = np.asarray(value).reshape(-1)
    if v.size != 1:
        raise InputError(f"ConstantOfShape: value must hold one element, got {v.size}")
    check_shape(dims, v.itemsize, "ConstantOfShape output")
    return np.full(dims, v[0], dtype=v.dtype)


@register("Constant", since=1)
def Constant(*, value=None, sparse_value=None, value_float=None, value_floats=None,
             value_int=None, value_ints=None, value_string=None, value_strings=None):
    if value is not None:
        return np.array(value, copy=True)
    if sparse_value is not None:                  # the IR already densified it
        return np.array(sparse_value, copy=True)
    if value_float is not None:
        return np.array(value_float, dtype=np.float32)
    if value_floats is not None:
        return np.array(value_floats, dtype=np.float32)
    if value_int is not None:
        return np.array(value_int, dtype=np.int64)
    if value_ints is not None:
        return np.array(value_ints, dtype=np.int64)
    if value_string is not None:
        return np.array(value_string, dtype=object)
    if value_strings is not None:
        return np.array(value_strings, dtype=object)
    raise InputError("Constant: no value attribute")


_LOW_FLOATS = ("float16", "bfloat16")


@register("Range", since=11)
def Range(start, limit, delta, *, stash_type=1):
    dt = start.dtype
    s, l, d = start.item(), limit.item(), delta.item()
    if dt.kind in "iu":
        if d == 0:
            raise InputError("Range: delta is 0")
        n = max(-(-(l - s) // d), 0)
        check_alloc(n * 8, f"Range output of {n} elements")
        return (np.arange(n, dtype=np.int64) * d + s).astype(dt)
    if d == 0:
        raise InputError("Range: delta is 0")
    n = (float(l) - float(s)) / float(d)
    if not math.isfinite(n):
        raise InputError(f"Range: start {s}, limit {l}, delta {d} give no finite length")
    n = max(int(math.ceil(n)), 0)
    check_alloc(n * 8, f"Range output of {n} elements")
    if dt.name in _LOW_FLOATS:
        # Range-27 stash_type: do the arithmetic in float32 (1) or float64 (11), then narrow.
        ct = np.float64 if stash_type == 11 else np.float32
        return (ct(s) + np.arange(n, dtype=ct) * ct(d)).astype(dt)
    t = dt.type
    return (t(s) + np.arange(n, dtype=dt) * t(d)).astype(dt, copy=False)


@register("EyeLike", since=9)
def EyeLike(x, *, dtype=None, k=0):
    from .cast import onnx_dtype
    dt = x.dtype if dtype is None else onnx_dtype(dtype)
    if x.ndim != 2:
        raise ShapeError(f"EyeLike: input must be 2-D, got {x.shape}")
    return np.eye(x.shape[0], x.shape[1], k=k, dtype=dt)


@register("Trilu", since=14)
def Trilu(x, k=None, *, upper=1):
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(x, k) if upper else np.tril(x, k)


# --- block rearrangements --------------------------------------------------------------------------

@register("DepthToSpace", since=1)
def DepthToSpace(x, *, blocksize, mode="DCR"):
    b, c, h, w = x.shape
    bs = blocksize
    if mode == "DCR":
        t = x.reshape(b, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        t = x.reshape(b, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise InputError(f"DepthToSpace: unsupported mode {mode!r}")
    return t.reshape(b, c // (bs * bs), h * bs, w * bs)


@register("SpaceToDepth", since=1)
def SpaceToDepth(x, *, blocksize, mode="DCR"):
    b, c, h, w = x.shape
    bs = blocksize
    t = x.reshape(b, c, h // bs, bs, w // bs, bs)
    if mode == "DCR":
        t = t.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":                           # SpaceToDepth-28
        t = t.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise InputError(f"SpaceToDepth: unsupported mode {mode!r}")
    return t.reshape(b, c * bs * bs, h // bs, w // bs)


@register("CenterCropPad", since=18)
def CenterCropPad(x, shape, *, axes=None):
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in axes]
    shape = _ints(shape)
    new_shape = list(x.shape)
    src = [slice(None)] * rank
    dst = [slice(None)] * rank
    for a, s in zip(axes, shape):
        d = x.shape[a]
        new_shape[a] = s
        if s < d:                                 # crop: the extra element goes to the end
            o = (d - s) // 2
            src[a] = slice(o, o + s)
        elif s > d:                               # pad with zeros around
            o = (s - d) // 2
            dst[a] = slice(o, o + d)
    check_shape(new_shape, x.itemsize, "CenterCropPad output")
    res = np.zeros(new_shape, dtype=x.dtype)
    res[tuple(dst)] = x[tuple(src)]
    return res


@register("ReverseSequence", since=10)
def ReverseSequence(x, sequence_lens, *, batch_axis=1, time_axis=0):
    res = x.copy()
    lens = _ints(sequence_lens)
    # One slice assignment per batch entry: batch is small, the time axis is vectorised.
    for i, n in enumerate(lens):
        src = [slice(None)] * x.ndim
        src[batch_axis] = i
        dst = list(src)
        src[time_axis] = slice(n - 1, None, -1) if n > 0 else slice(0, 0)
        dst[time_axis] = slice(0, n)
        res[tuple(dst)] = x[tuple(src)]
    return res


@register("Compress", since=9, data_dependent_shape=True)
def Compress(x, condition, *, axis=None):
    cond = np.asarray(condition, dtype=bool).reshape(-1)
    if axis is None:
        return np.compress(cond, x.reshape(-1))
    return np.compress(cond, x, axis=_axis(axis, x.ndim))


@register("NonZero", since=9, data_dependent_shape=True)
def NonZero(x):
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@register("Unique", since=11, data_dependent_shape=True)
class Unique(Op):
    data_dependent_shape = True

    def run(self, inputs, outs):
        x = inputs[0]
        axis = self.node.attrs.get("axis")
        srt = self.node.attrs.get("sorted", 1)
        if axis is None:
            y, idx, inv, cnt = np.unique(x.reshape(-1), True, True, True)
            axis = 0
        else:
            axis = _axis(axis, x.ndim)
            y, idx, inv, cnt = np.unique(x, True, True, True, axis=axis)
            if x.dtype.kind == "f" and x.size and np.isnan(x).any():
                pass  # numpy's axis-unique compares NaN rows unequal, as onnxruntime does
        inv = inv.reshape(-1)
        if not srt:
            # Reorder to first-occurrence order and renumber the inverse map accordingly.
            order = np.argsort(idx, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            idx, cnt, inv = idx[order], cnt[order], rank[inv]
            y = np.take(x.reshape(-1) if self.node.attrs.get("axis") is None else x, idx, axis=axis)
        res = [y, idx.astype(np.int64), inv.astype(np.int64), cnt.astype(np.int64)]
        return res[: _n_outputs(self.node)]


@register("OneHot", since=9)
def OneHot(indices, depth, values, *, axis=-1):
    d = int(np.asarray(depth).reshape(-1)[0])
    if d < 0:
        raise InputError(f"OneHot: depth {d} is negative")
    # the comparison mask (bool) and the result both have indices.size * depth elements
    check_alloc(indices.size * d * (1 + values.itemsize), f"OneHot output of depth {d}")
    rank = indices.ndim + 1
    axis = _axis(axis, rank)
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + d, idx)         # negative indices count from the end
    hot = np.expand_dims(idx, axis) == np.arange(d).reshape([d if i == axis else 1 for i in range(rank)])
    off, on = np.asarray(values).reshape(-1)[:2]
    return np.where(hot, on, off).astype(values.dtype)


# --- selection ---------------------------------------------------------------------------------------

def _topk(x, k, axis, largest, srt):
    axis = _axis(axis, x.ndim)
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise InputError(f"TopK: k={k} out of range for dim {n}")
    if largest:
        # Stable ascending sort of the reversed axis, read backwards: descending order with the
        # lower index first among equal values, for every dtype (no negation of unsigned ints).
        rev = np.flip(x, axis)
        order = np.argsort(rev, axis=axis, kind="stable")
        order = np.flip(order, axis)
        idx = (n - 1) - np.take(order, np.arange(k), axis=axis)
    else:
        idx = np.take(np.argsort(x, axis=axis, kind="stable"), np.arange(k), axis=axis)
    vals = np.take_along_axis(x, idx, axis=axis)
    return vals, idx.astype(np.int64)


@register("TopK", since=1)
def TopK_1(x, *, k, axis=-1):
    return _topk(x, int(k), axis, 1, 1)


@register("TopK", since=10)
def TopK(x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002
    return _topk(x, int(np.asarray(k).reshape(-1)[0]), axis, largest, sorted)


def _arg(fn, x, axis, keepdims, select_last_index):
    axis = _axis(axis, x.ndim)
    if select_last_index:
        n = x.shape[axis]
        r = (n - 1) - fn(np.flip(x, axis), axis=axis)
    else:
        r = fn(x, axis=axis)
    r = r.astype(np.int64)
    return np.expand_dims(r, axis) if keepdims else r


@register("ArgMax", since=1)
def ArgMax(x, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(np.argmax, x, axis, keepdims, select_last_index)


@register("ArgMin", since=1)
def ArgMin(x, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(np.argmin, x, axis, keepdims, select_last_index)


def _cum(ufunc, x, axis, exclusive, reverse):
    axis = _axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)
    y = np.flip(x, axis) if reverse else x
    r = ufunc.accumulate(y, axis=axis, dtype=x.dtype)
    if exclusive:
        # Shift by one along the axis, starting from the identity (0 for sum, 1 for product).
        e = np.empty_like(r)
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(0, 1)
        e[tuple(idx)] = ufunc.identity
        idx[axis] = slice(1, None)
        src = [slice(None)] * x.ndim
        src[axis] = slice(0, -1)
        e[tuple(idx)] = r[tuple(src)]
        r = e
    return np.flip(r, axis).copy() if reverse else r


@register("CumSum", since=11)
def CumSum(x, axis, *, exclusive=0, reverse=0):
    return _cum(np.add, x, axis, exclusive, reverse)


@register("CumProd", since=26)
def CumProd(x, axis, *, exclusive=0, reverse=0):
    return _cum(np.multiply, x, axis, exclusive, reverse)


# --- dropout (inference identity, optional training) ----------------------------------------------------

def _dropout(node, x, ratio, training, seed):
    want_mask = len(node.outputs) > 1 and node.outputs[1] != ""
    if not training or ratio == 0:
        y = x.copy()
        return [y, np.ones(x.shape, dtype=bool)] if want_mask else [y]
    # Same generator as the onnx reference so seeded runs are reproducible against it.
    rng = np.random.RandomState(seed)
    mask = rng.uniform(0, 1.0, x.shape) >= ratio
    y = (mask * x * (1.0 / (1.0 - ratio))).astype(x.dtype)
    return [y, mask] if want_mask else [y]


@register("Dropout", since=1)
class Dropout_1(Op):
    """Dropout-1..10: ratio attribute; is_test (1, 6) or always inference (7+)."""

    def run(self, inputs, outs):
        res = _dropout(self.node, inputs[0], 0.0, False, None)
        if len(res) > 1 and self.ctx.opset < 10:
            res[1] = res[1].astype(inputs[0].dtype)   # the mask had the input's type before 10
        return res


@register("Dropout", since=12)
class Dropout(Op):
    """Dropout-12+: ratio and training_mode are inputs; seed attribute."""

    def run(self, inputs, outs):
        x = inputs[0]
        ratio = float(np.asarray(inputs[1]).reshape(-1)[0]) if len(inputs) > 1 and inputs[1] is not None else 0.5
        training = bool(np.asarray(inputs[2]).reshape(-1)[0]) if len(inputs) > 2 and inputs[2] is not None else False
        return _dropout(self.node, x, ratio, training, self.node.attrs.get("seed"))


# --- linear algebra / im2col ---------------------------------------------------------------------------

@register("Det", since=11)
def Det(x):
    return np.asarray(np.linalg.det(x)).astype(x.dtype, copy=False)


@register("Col2Im", since=18)
def Col2Im(data, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    img = _ints(image_shape)
    blk = _ints(block_shape)
    nd = len(img)
    dil = dilations or [1] * nd
    pads = pads or [0] * (2 * nd)
    strides = strides or [1] * nd
    n = data.shape[0]
    kprod = math.prod(blk)
    c = data.shape[1] // kprod
    padded = [img[i] + pads[i] + pads[i + nd] for i in range(nd)]
    nblocks = [(padded[i] - (dil[i] * (blk[i] - 1) + 1)) // strides[i] + 1 for i in range(nd)]
    if math.prod(nblocks) != data.shape[2]:
        raise ShapeError(f"Col2Im: {data.shape[2]} blocks, expected {nblocks}")
    cols = data.reshape(n, c, *blk, *nblocks)
    check_shape((n, c, *padded), data.itemsize, "Col2Im output")
    res = np.zeros((n, c, *padded), dtype=data.dtype)
    # One strided accumulate per kernel offset: within one offset the targets never collide.
    for k in np.ndindex(*blk):
        dst = tuple(slice(k[i] * dil[i], k[i] * dil[i] + strides[i] * (nblocks[i] - 1) + 1, strides[i])
                    for i in range(nd))
        res[(slice(None), slice(None)) + dst] += cols[(slice(None), slice(None)) + k]
    crop = tuple(slice(pads[i], pads[i] + img[i]) for i in range(nd))
    return res[(slice(None), slice(None)) + crop].copy()
