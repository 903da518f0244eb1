# cython: language_level=3
"""Dense INT8 GEMM, one build per ISA (module _qs8_gemm_<isa>). Called through qs8.py; arguments
are checked there (dtypes, contiguity, shapes), not here."""
import numpy as np
from deepsparse_cy.kernels._mem import thread_scratch
include "_common.pxi"

cdef extern from "csrc/dscy_kernels.h" nogil:
    void dscy_qs8_gemm(const int16_t *xp, int M, int Mp, int Kp, const int16_t *wp, int N, int Np,
                       const dscy_epilogue *ep, int nthreads)
    int dscy_qs8_gemm_parts_x(const void *x, int x_signed, Py_ssize_t ldx, int M, int K,
                              int16_t *xp, int Mp, int Kp, const int16_t *wp, int N, int Np,
                              const dscy_epilogue *ep, int nep, int seg, int nthreads)
    int DSCY_GEMM_PARTS_MAX
    void *dscy_qs8_xp_buffer(size_t nbytes)
    double dscy_probe_peak(int kind, long iters)
    int dscy_qs8_gemm_vbmi(int off)
    int DSCY_QUADS
    int DSCY_AMX
    int dscy_qs8_pack_conv_rows(const dscy_conv_geom *g, int x_signed, int16_t *xp, int Mp,
                                int Kp, int nthreads)
    int dscy_qs8_conv_amx(const dscy_conv_geom *g, int x_signed, const int16_t *wp, int N,
                          int Np, int Kp, const dscy_epilogue *ep, int nthreads)
    int dscy_qs8_conv_amx_direct(const dscy_conv_geom *g, int x_signed, uint8_t *xpad,
                                 long xpad_len, const int8_t *wd, int nch, int N, int Np,
                                 const dscy_epilogue *ep, int nthreads)
    long dscy_conv_direct_len(int B, int Ho, int Wo, int KH, int KW, int sh, int sw, int dh,
                              int C, int nch)
    int dscy_qs8_dwconv(const void *x, int x_signed, int B, int H, int W, int C, float zx,
                        const float *w, const float *zxw, int KH, int KW, int sh, int sw, int dh,
                        int dw, int pt, int pl, int Ho, int Wo, const dscy_epilogue *ep,
                        int nthreads)

ISA = DSCY_ISA
MR = DSCY_GEMM_MR
NR = DSCY_GEMM_NR
# 1: this build multiplies u8 x s8 quads (avx512_vnni): weights s8 [Np/NR][Kp/4][NR][4] (Kp a
# multiple of 4), and for s8 x the bias must carry -128 * sum_k w (x is stored as x + 128)
QUADS = DSCY_QUADS
# 1: the amx build: the quad weights with Kp a multiple of 64 (16 quads, one tile's rows)
AMX = DSCY_AMX
KP_MULTIPLE = 64 if AMX else 4 if QUADS else 2


def vbmi(off=None):
    """True when a table shared by every channel (a mid tuple's lut_shared) is looked up by
    AVX-512 VBMI byte permutes (this build and CPU); off=True first turns them off (the gather
    path then runs: tests), off=False back on."""
    return bool(dscy_qs8_gemm_vbmi(-1 if off is None else int(bool(off))))


PARTS_MAX = DSCY_GEMM_PARTS_MAX
if PARTS_MAX != 4:
    raise ImportError("qs8_gemm: gemm_parts' epilogue array is sized for DSCY_GEMM_PARTS_MAX 4")


cdef class BoundGemm:
    """gemm() / gemm_parts() on fixed arrays, prepared once (engine._run_plan's bound steps:
    the same objects on every run): a call runs the kernel with no argument handling, the
    activations packed into the calling thread's C scratch (dscy_qs8_xp_buffer). gemm() /
    gemm_parts() make one per call."""
    cdef dscy_epilogue eps[4]          # DSCY_GEMM_PARTS_MAX (checked at import)
    cdef int nep, seg, M, K, Mp, Kp, N, Np, x_signed, nthreads
    cdef size_t xp_bytes
    cdef const void *x
    cdef Py_ssize_t ldx
    cdef const int16_t *wp
    cdef object keep                   # the arrays the pointers above point into

    def __call__(self):
        cdef int rc
        cdef int16_t *xp = <int16_t *>dscy_qs8_xp_buffer(self.xp_bytes)
        if xp == NULL:
            raise MemoryError("qs8 gemm: could not allocate the packed activations")
        with nogil:
            rc = dscy_qs8_gemm_parts_x(self.x, self.x_signed, self.ldx, self.M, self.K, xp,
                                       self.Mp, self.Kp, self.wp, self.N, self.Np, self.eps,
                                       self.nep, self.seg, self.nthreads)
        if rc:
            raise ValueError(f"gemm_parts: the kernel refused {self.nep} parts of {self.seg} "
                             f"columns (N={self.N})")


cdef BoundGemm _bound(cnp.ndarray x, int x_signed, cnp.ndarray wp, int N, int Np, int Kp,
                      list parts, int nthreads):
    """A BoundGemm over len(parts) (1 .. PARTS_MAX, N a multiple of it) equal column ranges,
    each part's epilogue built and checked."""
    cdef int nep = len(parts)
    if nep < 1 or nep > DSCY_GEMM_PARTS_MAX or N % nep:
        raise ValueError(f"gemm_parts: {nep} parts of N={N}")
    cdef BoundGemm g = BoundGemm.__new__(BoundGemm)
    g.nep, g.seg = nep, N // nep
    g.M, g.K = x.shape[0], x.shape[1]
    g.Mp = (g.M + MR - 1) // MR * MR
    g.Kp, g.N, g.Np, g.x_signed, g.nthreads = Kp, N, Np, x_signed, nthreads
    g.xp_bytes = <size_t>g.Mp * Kp * (1 if QUADS else 2)
    g.x = _ptr(x)
    g.ldx = x.strides[0]
    g.wp = <const int16_t *>_ptr(wp)
    cdef int e
    for e in range(nep):
        b, sc, ot, act, lo, hi, ys, mid, res, zp, out = parts[e]
        g.eps[e] = _epilogue(b, sc, ot, act, lo, hi, ys, mid, res, zp, out)
        if g.eps[e].plane:
            raise ValueError("planar [B, N, HW] output is the sparse kernel's only")
        if out.shape[0] != g.M or out.shape[1] < g.seg:
            raise ValueError(f"gemm_parts: part {e} output {out.shape} for M={g.M}, "
                             f"{g.seg} columns")
    g.keep = (x, wp, parts)
    return g


def gemm_bound(cnp.ndarray x,      # IN  [M][K] u8/s8, rows contiguous
               int x_signed,
               cnp.ndarray wp,     # IN  int16 [Np/NR][Kp/2][NR][2] (QUADS: s8 [Np/NR][Kp/4][NR][4])
               int N, int Np, int Kp,
               cnp.ndarray bias,   # IN  int32 [>=N]
               cnp.ndarray scale,  # IN  float32 [>=N]
               int out_type, int act, float lo, float hi, float y_scale, tuple mid, tuple res,
               int zp,
               cnp.ndarray out,    # OUT [M][>=N], rows of out.strides[0]
               int nthreads):
    """gemm()'s call on these arrays as a BoundGemm (calling it is that gemm() call)."""
    return _bound(x, x_signed, wp, N, Np, Kp,
                  [(bias, scale, out_type, act, lo, hi, y_scale, mid, res, zp, out)], nthreads)


def gemm(cnp.ndarray x, int x_signed, cnp.ndarray wp, int N, int Np, int Kp, cnp.ndarray bias,
         cnp.ndarray scale, int out_type, int act, float lo, float hi, float y_scale, tuple mid,
         tuple res, int zp, cnp.ndarray out, int nthreads):
    """The dense INT8 GEMM of x by the packed weights into out through the epilogue (arguments
    as gemm_bound's)."""
    gemm_bound(x, x_signed, wp, N, Np, Kp, bias, scale, out_type, act, lo, hi, y_scale, mid,
               res, zp, out, nthreads)()
    return out


def gemm_parts_bound(cnp.ndarray x,   # IN  [M][K] u8/s8, rows contiguous
                     int x_signed,
                     cnp.ndarray wp,  # IN  the parts' weights concatenated along N, packed as gemm()'s
                     int N, int Np, int Kp,
                     list parts,      # IN  per part: (bias, scale, out_type, act, lo, hi, y_scale,
                                      #     mid, res, zp, out [M][>=seg]); seg = N / len(parts)
                     int nthreads):
    """gemm_parts()'s call on these arrays as a BoundGemm."""
    cdef int nep = len(parts)
    if nep < 1 or nep > DSCY_GEMM_PARTS_MAX or N % nep or (N // nep) % 32:
        raise ValueError(f"gemm_parts: {nep} parts of N={N} (at most {DSCY_GEMM_PARTS_MAX}, "
                         "each a multiple of 32 columns)")
    return _bound(x, x_signed, wp, N, Np, Kp, list(parts), nthreads)


def gemm_parts(cnp.ndarray x, int x_signed, cnp.ndarray wp, int N, int Np, int Kp, list parts,
               int nthreads):
    """gemm() over len(parts) (<= PARTS_MAX) equal column ranges of one concatenated weight, each
    range through its own epilogue into its own output: sibling layers reading the same x packed
    once and multiplied in one pool of work items. seg = N / parts must be a multiple of 32.
    Arguments as gemm_parts_bound's."""
    gemm_parts_bound(x, x_signed, wp, N, Np, Kp, parts, nthreads)()


def gemm_conv(cnp.ndarray x,       # IN  [B][H][W][C] u8/s8, C-contiguous
              int x_signed, tuple geom, int pad_byte,
              cnp.ndarray wp, int N, int Np, int Kp,
              cnp.ndarray bias, cnp.ndarray scale,
              int out_type, int act, float lo, float hi, float y_scale, tuple mid, tuple res,
              int zp, cnp.ndarray out, int nthreads):
    """gemm() on a convolution's im2col rows (geom: KH, KW, sh, sw, dh, dw, pt, pl, Ho, Wo),
    gathered straight into the int16 rows (the amx build: each work item's rows into its own
    tiles, dscy_qs8_conv_amx)."""
    cdef dscy_conv_geom g = _geom(x, geom, pad_byte)
    cdef int M = g.B * g.Ho * g.Wo
    cdef int Mp = (M + MR - 1) // MR * MR
    cdef dscy_epilogue ep = _epilogue(bias, scale, out_type, act, lo, hi, y_scale, mid, res, zp, out)
    if ep.plane:
        raise ValueError("planar [B, N, HW] output is the sparse kernel's only")
    cdef const int16_t *wpp = <const int16_t *>_ptr(wp)
    cdef int rc
    cdef cnp.ndarray xp
    cdef int16_t *xpp
    if DSCY_AMX:
        with nogil:
            rc = dscy_qs8_conv_amx(&g, x_signed, wpp, N, Np, Kp, &ep, nthreads)
    else:
        xp = thread_scratch(<size_t>Mp * Kp * (1 if QUADS else 2), "qs8_gemm_xp")
        xpp = <int16_t *>_ptr(xp)
        with nogil:
            rc = dscy_qs8_pack_conv_rows(&g, x_signed, xpp, Mp, Kp, nthreads)
            if rc == 0:
                dscy_qs8_gemm(xpp, M, Mp, Kp, wpp, N, Np, &ep, nthreads)
    if rc != 0:
        raise MemoryError("qs8 gemm: conv row gather buffer allocation failed")
    return out


def gemm_conv_direct(cnp.ndarray x,       # IN  [B][H][W][C] u8/s8, C-contiguous
                     int x_signed, tuple geom, int pad_byte,
                     cnp.ndarray wd,            # IN  int8 [KH][nch][Np/16][16][16][4]
                     int nch, int N, int Np,
                     cnp.ndarray bias, cnp.ndarray scale,
                     int out_type, int act, float lo, float hi, float y_scale, tuple mid,
                     tuple res, int zp, cnp.ndarray out, int nthreads):
    """gemm_conv() without im2col rows (the amx build only, dilation 1 along W): x copied once
    into a padded buffer, the activation tiles loaded from it with overlapping rows
    (dscy_qs8_conv_amx_direct); wd the weight per (ky, 64-byte chunk of the KW * C window,
    panel), zero past the window (qs8.py PackedQS8.direct)."""
    if not DSCY_AMX:
        raise ValueError("gemm_conv_direct: the amx build's kernel")
    cdef dscy_conv_geom g = _geom(x, geom, pad_byte)
    cdef dscy_epilogue ep = _epilogue(bias, scale, out_type, act, lo, hi, y_scale, mid, res, zp, out)
    if ep.plane:
        raise ValueError("planar [B, N, HW] output is the sparse kernel's only")
    cdef long n_pad = dscy_conv_direct_len(g.B, g.Ho, g.Wo, g.KH, g.KW, g.sh, g.sw, g.dh, g.C,
                                           nch)
    cdef cnp.ndarray xpad = thread_scratch(<size_t>n_pad, "qs8_conv_pad")
    cdef uint8_t *xpp = <uint8_t *>_ptr(xpad)
    cdef const int8_t *wdp = <const int8_t *>_ptr(wd)
    cdef int rc
    with nogil:
        rc = dscy_qs8_conv_amx_direct(&g, x_signed, xpp, n_pad, wdp, nch, N, Np, &ep, nthreads)
    if rc != 0:
        raise ValueError("gemm_conv_direct: the kernel refused the geometry")
    return out


def dwconv(cnp.ndarray x,          # IN  [B][H][W][C] u8/s8, C-contiguous
           int x_signed, float zx,
           cnp.ndarray w,          # IN  float32 [KH*KW][C]
           cnp.ndarray zxw,        # IN  float32 [KH][C]
           int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int ho, int wo,
           cnp.ndarray bias,       # IN  int32 [C]
           cnp.ndarray scale,      # IN  float32 [C]
           int out_type, int act, float lo, float hi, float y_scale, tuple mid, tuple res, int zp,
           cnp.ndarray out,        # OUT [B*Ho*Wo][>=C], rows of out.strides[0]
           int nthreads):
    cdef dscy_epilogue ep = _epilogue(bias, scale, out_type, act, lo, hi, y_scale, mid, res, zp, out)
    if ep.plane:
        raise ValueError("planar [B, N, HW] output is the sparse kernel's only")
    cdef const void *xptr = _ptr(x)
    cdef const float *wp = <const float *>_ptr(w)
    cdef const float *zp_ = <const float *>_ptr(zxw)
    cdef int B = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3], rc
    with nogil:
        rc = dscy_qs8_dwconv(xptr, x_signed, B, H, W, C, zx, wp, zp_, kh, kw, sh, sw, dh, dw,
                             pt, pl, ho, wo, &ep, nthreads)
    if rc:
        raise ValueError(f"depthwise conv: {kh}x{kw} taps exceed the exact float32 limit (256)")
    return out


def probe_peak(int kind, long iters):
    """MACs/s of a register-only loop: 0 vpmaddubsw+vpmaddwd+vpaddd, 1 vpmaddwd+vpaddd (what the
    AVX2 INT8 kernels use), 2 vfmadd231ps (f32), 3 vpdpbusd on zmm (what the avx512_vnni INT8
    kernels use; 0.0 in other builds), 4 tdpbusd on AMX tiles (the amx build's; 0.0 in other
    builds). 0.0 when this build has no AVX2."""
    cdef double r
    with nogil:
        r = dscy_probe_peak(kind, iters)
    return r
