# cython: language_level=3
"""Dense FP32 2-D convolution (NCHW, group 1): blocked GEMM with implicit im2col and a fused
bias / residual / activation epilogue (csrc/f32_conv.c). One build per ISA (module
_f32_conv_<isa>); called through kernels/f32conv.py, which checks the arguments."""
import numpy as np
include "_common.pxi"

cdef extern from "csrc/dscy_kernels.h" nogil:
    size_t dscy_f32_conv_wpack_size(int M, int K)
    void dscy_f32_conv_pack_w(const float *w, int M, int K, float *wp)
    int dscy_f32_conv2d(const float *x, int N, int C, int H, int W, const float *wp, int M,
                        int KH, int KW, int sw, int dh, int dw, const int32_t *ih0,
                        const int32_t *iw0, int P, const float *bias, const float *z, int act,
                        float p0, float p1, float *out, float *xph, int nthreads)
    size_t dscy_f32_conv_xph_size(int N, int C, int H, int W, int sw)

ISA = DSCY_ISA


def pack_w(cnp.ndarray w):        # IN float32 [M][K] C-contiguous
    cdef int M = w.shape[0], K = w.shape[1]
    cdef cnp.ndarray wp = np.empty(dscy_f32_conv_wpack_size(M, K), np.float32)
    dscy_f32_conv_pack_w(<const float *>_ptr(w), M, K, <float *>_ptr(wp))
    return wp


def conv2d(cnp.ndarray x,          # IN  float32 [N][C][H][W] C-contiguous
           cnp.ndarray wp,         # IN  pack_w(W[M][C*KH*KW])
           int M, int KH, int KW, int sw, int dh, int dw,
           cnp.ndarray ih0,        # IN  int32 [P]  oh*sh - pad_top per output pixel
           cnp.ndarray iw0,        # IN  int32 [P]  ow*sw - pad_left
           bias,                   # IN  float32 [M] or None
           z,                      # IN  float32 [N][M][P] or None (added before act)
           int act, float p0, float p1,
           cnp.ndarray out,        # OUT float32 [N][M][P] C-contiguous
           int nthreads,
           xph=None):              # scratch float32 [>= xph_size(...)] for strided convs, or None
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int P = ih0.shape[0]
    cdef const float *xp = <const float *>_ptr(x)
    cdef const float *wpp = <const float *>_ptr(wp)
    cdef const int32_t *hp = <const int32_t *>_ptr(ih0)
    cdef const int32_t *vp = <const int32_t *>_ptr(iw0)
    cdef const float *bp = NULL
    cdef const float *zp = NULL
    cdef float *op = <float *>_ptr(out)
    cdef int rc
    cdef float *php = NULL
    if xph is not None and sw > 1:
        if (<cnp.ndarray>xph).size < dscy_f32_conv_xph_size(N, C, H, W, sw):
            raise ValueError("xph scratch too small")
        php = <float *>_ptr(xph)
    if bias is not None:
        bp = <const float *>_ptr(bias)
    if z is not None:
        zp = <const float *>_ptr(z)
    with nogil:
        rc = dscy_f32_conv2d(xp, N, C, H, W, wpp, M, KH, KW, sw, dh, dw, hp, vp, P, bp, zp,
                             act, p0, p1, op, php, nthreads)
    if rc != 0:
        raise MemoryError("f32 conv2d: could not allocate its packing buffer")
    return out


def xph_size(int N, int C, int H, int W, int sw):
    """float32 elements of the phase-split scratch a stride-sw conv can use (0 when sw <= 1)."""
    return dscy_f32_conv_xph_size(N, C, H, W, sw)
