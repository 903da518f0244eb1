"""64-byte aligned numpy buffers for the kernels' packed weights and scratch.

numpy aligns its data to 16 bytes only (large arrays land 16 or 32 bytes past a cache line), so
a kernel's 64-byte zmm load of a packed row spanned two cache lines: a split load, twice the
load-port and L1/L2 traffic. Measured on the Xeon (AVX-512) VM: f32_spmm's inner loop 2.9
cycles per nonzero with a 16-byte-aligned activation tile against 1.5 with a 64-byte-aligned
one. Everything a kernel reads with full-width vector loads is allocated here."""
import threading

import numpy as np

ALIGN = 64


def aligned_empty(shape, dtype, align=ALIGN):
    """np.empty(shape, dtype) whose data starts on an `align`-byte boundary (a view into a
    slightly larger buffer, which it keeps alive as its base)."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + align, np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off:off + n].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype, align=ALIGN):
    a = aligned_empty(shape, dtype, align)
    a[...] = 0
    return a


def aligned(a, align=ALIGN):
    """`a` as a C-contiguous array starting on an `align`-byte boundary (itself if it is one)."""
    a = np.asarray(a)
    if a.flags.c_contiguous and a.ctypes.data % align == 0:
        return a
    out = aligned_empty(a.shape, a.dtype, align)
    out[...] = a
    return out


_tls = threading.local()


def thread_scratch(nbytes, key=""):
    """A 64-byte aligned uint8 buffer of at least `nbytes`, kept per thread and key and reused
    by the next call: a fresh numpy array of a few hundred KB or more is a fresh mmap, so every
    call page-faulted it in again (qs8 dense GEMM on ResNet-50's 7x7 stem, 12544 x 148 bytes
    of activation tiles: ~0.2 ms a call in faults). Callers use it within one kernel call and
    must not call back into another user of the same key meanwhile."""
    d = getattr(_tls, "bufs", None)
    if d is None:
        d = _tls.bufs = {}
    buf = d.get(key)
    if buf is None or buf.size < nbytes:
        buf = d[key] = aligned_empty(max(int(nbytes), 64), np.uint8)
    return buf
