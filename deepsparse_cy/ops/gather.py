"""Indexed read/write operators (numpy references).

Owns: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND, TensorScatter.
Negative indices count from the end of their axis everywhere, as ONNX specifies; indices out of
range raise InputError instead of reading garbage.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .registry import register


def _axis(a, rank):
    return a + rank if a < 0 else a


def _check(idx, dim, what):
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise InputError(f"{what}: index out of range [-{dim}, {dim - 1}]")


def _norm(idx, dim, what):
    """Indices as int64 with negatives wrapped; raises on out-of-range values."""
    idx = np.asarray(idx)
    _check(idx, dim, what)
    if idx.size and idx.min() < 0:
        return np.where(idx < 0, idx + dim, idx).astype(np.int64)
    return idx.astype(np.int64, copy=False)


@register("Gather", since=1)
def Gather(data, indices, *, axis=0, out=None):
    axis = _axis(axis, data.ndim)
    dim = data.shape[axis]
    _check(indices, dim, "Gather")
    # Bounds were checked, so mode="wrap" is exact for negatives and lets numpy write straight
    # into out (mode="raise" would buffer the whole result first).
    if out is not None:
        return np.take(data, indices, axis=axis, out=out, mode="wrap")
    return np.take(data, indices, axis=axis, mode="wrap")


#: rows of at least this many bytes go through the compiled row gather (_f32_fused.gather_rows)
GATHER_ROWS_MIN_BYTES = 256


def _gather_bind(inputs, out, axis=0, num_threads=1):
    """engine._run_plan's bound call: the take into the step's slot, the indices checked on
    every run (their values change from run to run). Rows of a row-major table on axis 0 (an
    embedding lookup) go through the compiled row gather, the others through np.take."""
    data, indices = inputs[0], inputs[1]
    if not isinstance(data, np.ndarray) or not isinstance(indices, np.ndarray) \
            or indices.dtype.kind not in "iu" or data.dtype == object or data.ndim == 0:
        return None
    ax = _axis(axis, data.ndim)
    dim = data.shape[ax]
    if out.dtype != data.dtype \
            or out.shape != data.shape[:ax] + indices.shape + data.shape[ax + 1:]:
        return None
    rb = data.itemsize * int(np.prod(data.shape[1:], dtype=np.int64))
    if ax == 0 and rb >= GATHER_ROWS_MIN_BYTES and data.flags.c_contiguous \
            and (indices.dtype.kind == "i" or indices.dtype.itemsize < 8) \
            and out.flags.c_contiguous and not np.may_share_memory(out, data):
        from ..kernels import _f32_fused
        table = data.reshape(dim, -1).view(np.uint8)
        rows = out.reshape(indices.size, -1).view(np.uint8)
        # int64 C-contiguous indices: a view of them, read by every call; others converted on
        # every run (a reshape of a strided array would copy the values once, at bind time)
        flat = indices.reshape(-1) if indices.dtype == np.int64 \
            and indices.flags.c_contiguous else None

        def gather_rows():
            idx = flat if flat is not None else \
                np.ascontiguousarray(indices, np.int64).reshape(-1)
            if _f32_fused.gather_rows(table, idx, rows, num_threads) >= 0:
                _check(indices, dim, "Gather")     # raises, naming the valid range
        return gather_rows, ()

    def gather():
        _check(indices, dim, "Gather")
        np.take(data, indices, axis=ax, out=out, mode="wrap")
    return gather, ()


Gather.bind = _gather_bind
Gather.bind_threads = True


@register("GatherElements", since=11)
def GatherElements(data, indices, *, axis=0):
    axis = _axis(axis, data.ndim)
    idx = _norm(indices, data.shape[axis], "GatherElements")
    return np.take_along_axis(data, idx, axis=axis)


def _nd_index(data_shape, indices, batch_dims, what):
    """Flatten batch dims; returns (index tuple into the batch-flattened data, result lead shape)."""
    idx = np.asarray(indices, dtype=np.int64)
    k = idx.shape[-1]
    bshape = data_shape[:batch_dims]
    nb = int(np.prod(bshape, dtype=np.int64))
    lead = idx.shape[batch_dims:-1]
    idx = idx.reshape(nb, -1, k)
    cols = []
    for j in range(k):
        d = data_shape[batch_dims + j]
        c = idx[..., j]
        _check(c, d, what)
        cols.append(np.where(c < 0, c + d, c))
    b = np.arange(nb).reshape(nb, 1)
    return (b, *cols), tuple(bshape) + tuple(lead), k


@register("GatherND", since=11)
def GatherND(data, indices, *, batch_dims=0):
    nbd = batch_dims
    flat = data.reshape((-1,) + data.shape[nbd:])
    ix, lead, k = _nd_index(data.shape, indices, nbd, "GatherND")
    r = flat[ix]                                   # (nb, m, *rest)
    return r.reshape(lead + data.shape[nbd + k:])


_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_elements(data, indices, updates, axis, reduction):
    axis = _axis(axis, data.ndim)
    res = data.copy()
    idx = _norm(indices, data.shape[axis], "ScatterElements")
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    grid = tuple(grid)
    if reduction in (None, "none"):
        res[grid] = updates
    elif reduction in _REDUCE:
        _REDUCE[reduction].at(res, grid, updates)   # .at accumulates repeated indices
    else:
        raise InputError(f"unsupported reduction {reduction!r}")
    return res


@register("Scatter", since=9)
def Scatter(data, indices, updates, *, axis=0):
    return _scatter_elements(data, indices, updates, axis, None)


@register("ScatterElements", since=11)
def ScatterElements(data, indices, updates, *, axis=0, reduction="none"):
    return _scatter_elements(data, indices, updates, axis, reduction)


@register("ScatterND", since=11)
def ScatterND(data, indices, updates, *, reduction="none"):
    res = data.copy()
    idx = np.asarray(indices, dtype=np.int64)
    k = idx.shape[-1]
    cols = []
    for j in range(k):
        c = idx[..., j]
        _check(c, data.shape[j], "ScatterND")
        cols.append(np.where(c < 0, c + data.shape[j], c))
    ix = tuple(cols)
    if reduction in (None, "none"):
        res[ix] = updates
    elif reduction in _REDUCE:
        _REDUCE[reduction].at(res, ix, updates)
    else:
        raise InputError(f"unsupported reduction {reduction!r}")
    return res


@register("TensorScatter", since=24)
def TensorScatter(past_cache, update, write_indices=None, *, mode="linear", axis=-2):
    axis = _axis(axis, past_cache.ndim)
    if axis == 0:
        raise InputError("TensorScatter: axis cannot be the batch axis")
    res = past_cache.copy()
    batch, seq, max_seq = update.shape[0], update.shape[axis], past_cache.shape[axis]
    wi = np.zeros(batch, dtype=np.int64) if write_indices is None else \
        np.asarray(write_indices, dtype=np.int64).reshape(batch)
    pos = wi[:, None] + np.arange(seq)[None, :]            # (batch, seq) cache positions
    if mode == "circular":
        pos %= max_seq
    elif mode != "linear":
        raise InputError(f"TensorScatter: unsupported mode {mode!r}")
    if pos.size and (pos.min() < 0 or pos.max() >= max_seq):
        raise InputError("TensorScatter: write position beyond max_sequence_length")
    shape = [1] * update.ndim
    shape[0], shape[axis] = batch, seq
    idx = np.broadcast_to(pos.reshape(shape), update.shape)
    np.put_along_axis(res, idx, update, axis=axis)
    return res
