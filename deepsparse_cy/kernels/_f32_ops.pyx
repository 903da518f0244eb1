# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FP32 element-wise and row kernels the numpy path does slowly: erf, GELU, softmax rows.

ISA-independent (scalar libm calls the compiler may vectorise); OpenMP over chunks. Small arrays
run on one thread: waking a second thread costs more than it saves below ~64K elements.
"""
from cython.parallel cimport prange

cdef extern from "<math.h>" nogil:
    float erff(float)
    float expf(float)
    float sqrtf(float)

DEF SMALL = 65536


cdef inline int _nt(Py_ssize_t n, int num_threads) noexcept nogil:
    if n < SMALL or num_threads < 1:
        return 1
    return num_threads


def erf(const float[::1] x,  # IN
        float[::1] out,       # OUT (may be x's buffer only if the caller owns it)
        int num_threads=1):
    cdef Py_ssize_t i, n = x.shape[0]
    cdef int nt = _nt(n, num_threads)
    with nogil:
        for i in prange(n, num_threads=nt, schedule="static"):
            out[i] = erff(x[i])


def gelu_erf(const float[::1] x,  # IN
             float[::1] out,       # OUT
             int num_threads=1):
    """0.5 * x * (1 + erf(x / sqrt(2))), the exact GELU torch exports."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef int nt = _nt(n, num_threads)
    cdef float r = 0.70710678118654752440
    cdef float v
    with nogil:
        for i in prange(n, num_threads=nt, schedule="static"):
            v = x[i]
            out[i] = 0.5 * v * (1.0 + erff(v * r))


def softmax_rows(const float[:, ::1] x,  # IN  [rows, n]
                 float[:, ::1] out,       # OUT [rows, n]
                 int num_threads=1,
                 bint log=False):
    """Numerically stable softmax (or log-softmax) over the last axis of a 2-D array."""
    cdef Py_ssize_t r, j, rows = x.shape[0], n = x.shape[1]
    cdef int nt = _nt(rows * n, num_threads)
    cdef float m, e
    cdef double s   # the row sum in double: float32 accumulation over long rows drifts ~1e-6
    with nogil:
        for r in prange(rows, num_threads=nt, schedule="static"):
            m = x[r, 0]
            for j in range(1, n):
                if x[r, j] > m:
                    m = x[r, j]
            s = 0
            if log:
                for j in range(n):
                    s = s + expf(x[r, j] - m)
                e = _logf(<float>s)
                for j in range(n):
                    out[r, j] = (x[r, j] - m) - e
            else:
                for j in range(n):
                    e = expf(x[r, j] - m)
                    out[r, j] = e
                    s = s + e
                e = <float>(1.0 / s)
                for j in range(n):
                    out[r, j] = out[r, j] * e


cdef extern from "<math.h>" nogil:
    float _logf "logf"(float)
