# cython: language_level=3
"""Sparse INT8 GEMM (block4 / unstructured), one build per ISA (module _qs8_spmm_<isa>). Called
through qs8.py, which checks the arguments."""
import numpy as np
include "_common.pxi"

cdef extern from "csrc/dscy_kernels.h" nogil:
    int dscy_qs8_spmm_x(const void *x, int x_signed, Py_ssize_t ldx, int K, int16_t *xt, int M,
                        int Kp, const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals,
                        int bp, int N, const dscy_epilogue *ep, int nthreads)
    int dscy_qs8_spmm_planar(const void *x, int x_signed, Py_ssize_t plane, int K, int M, int Kp,
                             const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals,
                             int bp, int N, const dscy_epilogue *ep, int nthreads)
    int dscy_qs8_spmm_conv(const dscy_conv_geom *g, int x_signed, int M, int K, int Kp,
                           const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals,
                           int bp, int N, const dscy_epilogue *ep, int nthreads)
    int dscy_qs8_spmm_parts(const void *x, int x_signed, Py_ssize_t ldx, int K, int M, int Kp,
                            const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals,
                            int bp, int N, const dscy_epilogue *eps, int nep, int seg,
                            int nthreads)
    int DSCY_SPMM_PARTS_MAX
    int dscy_qs8_spmm_vbmi(int off)
    int DSCY_QUADS
    int DSCY_ROW_CHUNK

ISA = DSCY_ISA
# 1: this build multiplies u8 x s8 quads (avx512_vnni) and stores s8 x as x + 128: for s8 x the
# bias must carry -128 * sum_k w (PreparedQS8 passes it)
QUADS = DSCY_QUADS


def vbmi(off=None):
    """True when the table epilogue runs on AVX-512 VBMI byte permutes (this build and CPU);
    off=True first turns them off (the gather path then runs: tests), off=False back on."""
    return bool(dscy_qs8_spmm_vbmi(-1 if off is None else int(bool(off))))


cdef const int32_t *_order(object row_order, int N) except? NULL:
    """dscy_epilogue.row_order: NULL for None, else the checked array's data (int32, N rounded
    up to DSCY_ROW_CHUNK, as qs8.row_order makes it)."""
    if row_order is None:
        return NULL
    cdef cnp.ndarray o = <cnp.ndarray?>row_order
    if o.dtype != np.int32 or o.ndim != 1 or o.shape[0] != (N + DSCY_ROW_CHUNK - 1) // DSCY_ROW_CHUNK * DSCY_ROW_CHUNK \
            or not o.flags.c_contiguous:
        raise ValueError(f"row_order must be a contiguous int32 array of N rounded up to {DSCY_ROW_CHUNK}")
    return <const int32_t *>_ptr(o)


cdef class BoundSpmm:
    """spmm() / spmm_parts() on fixed arrays, prepared once (the epilogues, pointers and
    sizes): calling it runs the kernel with no argument handling. spmm() / spmm_parts() make
    one per call; the engine's bound steps keep one (spmm_bound / spmm_parts_bound)."""
    cdef dscy_epilogue eps[4]          # DSCY_SPMM_PARTS_MAX (checked at import)
    cdef int kind                      # 0: rows of x, 1: planar x, 2: parts
    cdef int nep, seg, M, K, Kp, bp, N, x_signed, nthreads
    cdef Py_ssize_t ldx, plane
    cdef const void *x
    cdef const int32_t *rp
    cdef const uint16_t *ip
    cdef const int8_t *vp
    cdef object keep                   # the arrays the pointers above point into

    def __call__(self):
        cdef int rc
        with nogil:
            # activation tiles in the calling thread's kept buffer (a fresh 0.2-0.8 MB array
            # per call costs page faults)
            if self.kind == 1:
                rc = dscy_qs8_spmm_planar(self.x, self.x_signed, self.plane, self.K, self.M,
                                          self.Kp, self.rp, self.ip, self.vp, self.bp, self.N,
                                          &self.eps[0], self.nthreads)
            elif self.kind == 0:
                rc = dscy_qs8_spmm_x(self.x, self.x_signed, self.ldx, self.K, NULL, self.M,
                                     self.Kp, self.rp, self.ip, self.vp, self.bp, self.N,
                                     &self.eps[0], self.nthreads)
            else:
                rc = dscy_qs8_spmm_parts(self.x, self.x_signed, self.ldx, self.K, self.M,
                                         self.Kp, self.rp, self.ip, self.vp, self.bp, self.N,
                                         self.eps, self.nep, self.seg, self.nthreads)
        if rc == -1:
            raise MemoryError("qs8 spmm: activation tile buffer allocation failed")
        if rc:
            raise ValueError(f"spmm_parts: the kernel refused {self.nep} parts of {self.seg} "
                             f"rows (N={self.N})")


cdef BoundSpmm _spmm_weights(cnp.ndarray x, int x_signed, int Kp, cnp.ndarray row_ptr,
                             cnp.ndarray idx, cnp.ndarray vals, int bp, int N, int nthreads):
    cdef BoundSpmm c = BoundSpmm.__new__(BoundSpmm)
    c.x, c.ldx, c.x_signed, c.Kp, c.bp, c.N, c.nthreads = _ptr(x), x.strides[0], x_signed, Kp, \
        bp, N, nthreads
    c.M, c.K = x.shape[0], x.shape[1]
    c.rp = <const int32_t *>_ptr(row_ptr)
    c.ip = <const uint16_t *>_ptr(idx)
    c.vp = <const int8_t *>_ptr(vals)
    return c


def spmm_bound(cnp.ndarray x,      # IN  [M][K] u8/s8, rows contiguous, or planar [B][K][HW]
                                   #     C-contiguous (a 1x1 conv's NCHW input, M = B * HW)
               int x_signed, int Kp,
               cnp.ndarray row_ptr,   # IN  int32 [N+1] (in blocks)
               cnp.ndarray idx,       # IN  uint16 [nblocks]
               cnp.ndarray vals,      # IN  int8 [nblocks * 2 * bp]
               row_order,             # IN  int32 [N rounded up to 64] or None (dscy_epilogue)
               int bp, int N,
               cnp.ndarray bias, cnp.ndarray scale,
               int out_type, int act, float lo, float hi, float y_scale, tuple mid, tuple res,
               int zp,
               cnp.ndarray out,       # OUT [M][>=N], or planar [B][N][HW] (B*HW = M), C-contiguous
               int nthreads):
    """spmm()'s call on these arrays as a BoundSpmm (calling it is that spmm() call)."""
    cdef BoundSpmm c = _spmm_weights(x, x_signed, Kp, row_ptr, idx, vals, bp, N, nthreads)
    c.kind, c.nep, c.seg = 0, 1, N
    if x.ndim == 3:
        c.kind, c.plane = 1, x.shape[2]
        c.M = <int>(x.shape[0] * c.plane)
    c.eps[0] = _epilogue(bias, scale, out_type, act, lo, hi, y_scale, mid, res, zp, out)
    c.eps[0].row_order = _order(row_order, N)
    c.keep = (x, row_ptr, idx, vals, row_order, bias, scale, mid, res, out)
    return c


def spmm(cnp.ndarray x, int x_signed, int Kp, cnp.ndarray row_ptr, cnp.ndarray idx,
         cnp.ndarray vals, row_order, int bp, int N, cnp.ndarray bias, cnp.ndarray scale,
         int out_type, int act, float lo, float hi, float y_scale, tuple mid, tuple res, int zp,
         cnp.ndarray out, int nthreads):
    """The sparse INT8 GEMM of x by the packed rows into out through the epilogue (arguments
    as spmm_bound's)."""
    spmm_bound(x, x_signed, Kp, row_ptr, idx, vals, row_order, bp, N, bias, scale, out_type,
               act, lo, hi, y_scale, mid, res, zp, out, nthreads)()
    return out


PARTS_MAX = DSCY_SPMM_PARTS_MAX
if PARTS_MAX != 4:
    raise ImportError("qs8_spmm: spmm_parts' epilogue array is sized for DSCY_SPMM_PARTS_MAX 4")


def spmm_parts_bound(cnp.ndarray x,   # IN  [M][K] u8/s8, rows contiguous
                     int x_signed, int Kp,
                     cnp.ndarray row_ptr, cnp.ndarray idx, cnp.ndarray vals,   # the stacked parts' rows
                     row_order,       # IN  int32 [N rounded up to 64] or None
                     int bp, int N,
                     list parts,      # IN  per part: (bias, scale, out_type, act, lo, hi, y_scale,
                                      #     mid, res (None), zp, out [M][>=seg]); seg = N / parts
                     int nthreads):
    """spmm_parts()'s call on these arrays as a BoundSpmm."""
    cdef int nep = len(parts)
    if nep < 1 or nep > DSCY_SPMM_PARTS_MAX or N % nep or (N // nep) % DSCY_ROW_CHUNK:
        raise ValueError(f"spmm_parts: {nep} parts of N={N} (at most {DSCY_SPMM_PARTS_MAX}, "
                         f"each a multiple of {DSCY_ROW_CHUNK} rows)")
    cdef BoundSpmm c = _spmm_weights(x, x_signed, Kp, row_ptr, idx, vals, bp, N, nthreads)
    c.kind, c.nep, c.seg = 2, nep, N // nep
    cdef const int32_t *order = _order(row_order, N)
    cdef int e
    for e in range(nep):
        b, sc, ot, act, lo, hi, ys, mid, res, zp, out = parts[e]
        if res is not None:
            raise ValueError("spmm_parts: no residual")
        if out.ndim != 2 or out.shape[0] != c.M or out.shape[1] < c.seg:
            raise ValueError(f"spmm_parts: part {e} output {out.shape} for M={c.M}, {c.seg} "
                             "columns")
        c.eps[e] = _epilogue(b, sc, ot, act, lo, hi, ys, mid, None, zp, out)
        c.eps[e].row_order = order
    c.keep = (x, row_ptr, idx, vals, row_order, list(parts))
    return c


def spmm_parts(cnp.ndarray x, int x_signed, int Kp, cnp.ndarray row_ptr, cnp.ndarray idx,
               cnp.ndarray vals, row_order, int bp, int N, list parts, int nthreads):
    """spmm() over len(parts) (<= PARTS_MAX) equal ranges of the stacked rows (output channels),
    each through its own epilogue into its own output: sibling layers reading the same x in one
    call. seg = N / parts must be a multiple of 64 (the row order's chunk). Arguments as
    spmm_parts_bound's."""
    spmm_parts_bound(x, x_signed, Kp, row_ptr, idx, vals, row_order, bp, N, parts, nthreads)()


def spmm_conv(cnp.ndarray x,       # IN  [B][H][W][C] u8/s8, C-contiguous
              int x_signed, tuple geom, int pad_byte, int Kp,
              cnp.ndarray row_ptr, cnp.ndarray idx, cnp.ndarray vals, row_order, int bp, int N,
              cnp.ndarray bias, cnp.ndarray scale,
              int out_type, int act, float lo, float hi, float y_scale, tuple mid, tuple res,
              int zp, cnp.ndarray out, int nthreads):
    """spmm() on a convolution's im2col rows (geom: KH, KW, sh, sw, dh, dw, pt, pl, Ho, Wo),
    each token tile's rows gathered into a small per-thread buffer (no column matrix)."""
    cdef dscy_conv_geom g = _geom(x, geom, pad_byte)
    cdef int M = g.B * g.Ho * g.Wo, K = g.KH * g.KW * g.C, rc
    cdef dscy_epilogue ep = _epilogue(bias, scale, out_type, act, lo, hi, y_scale, mid, res, zp, out)
    ep.row_order = _order(row_order, N)
    cdef const int32_t *rp = <const int32_t *>_ptr(row_ptr)
    cdef const uint16_t *ip = <const uint16_t *>_ptr(idx)
    cdef const int8_t *vp = <const int8_t *>_ptr(vals)
    with nogil:
        rc = dscy_qs8_spmm_conv(&g, x_signed, M, K, Kp, rp, ip, vp, bp, N, &ep, nthreads)
    if rc != 0:
        raise MemoryError("qs8 spmm: activation tile buffer allocation failed")
    return out
