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
                        float p0, float p1, float *out, float *xph, int nthreads,
                        const float *uw)
    void dscy_f32_conv_set_wino(int on)
    int dscy_f32_conv_get_wino()
    size_t dscy_f32_wino_wsize(int M, int C)
    void dscy_f32_wino_pack(const float *w, int M, int C, float *u)
    int dscy_f32_wino_available()
    int dscy_f32_wino_suits(int Ho, int Wo)
    size_t dscy_f32_conv_xph_size(int N, int C, int H, int W, int sw)
    int dscy_f32_conv_uses_phase_split(int M, int KH, int KW, int sw, int P)
    void dscy_f32_dwconv_set_group(int on)
    int dscy_f32_dwconv_get_group()

    int dscy_f32_dwconv2d(const float *x, int N, int C, int H, int W, const float *w, int KH,
                          int KW, int sh, int sw, int dh, int dw, int pt, int pl, int Ho, int Wo,
                          const float *bias, const float *z, int act, float p0, float p1,
                          float *out, int nthreads)

    size_t dscy_f32_gemm_wpack_size(int K, int N)
    void dscy_f32_gemm_pack_w(const float *w, int K, int N, float *wp)
    size_t dscy_f32_gemm_xpack_size(int T, int K)
    int dscy_f32_gemm(const float *x, Py_ssize_t ldx, int T, int K, const float *wp, int N,
                      const float *bias, int act, float p0, float p1, float *out, Py_ssize_t ldo,
                      float *xp, int nthreads)

ISA = DSCY_ISA

include "_attention.pxi"


def gemm_pack_w(cnp.ndarray w):   # IN float32 [K][N] C-contiguous
    cdef int K = w.shape[0], N = w.shape[1]
    cdef cnp.ndarray wp = np.empty(dscy_f32_gemm_wpack_size(K, N), np.float32)
    dscy_f32_gemm_pack_w(<const float *>_ptr(w), K, N, <float *>_ptr(wp))
    return wp


def gemm_xpack_size(int T, int K):
    return dscy_f32_gemm_xpack_size(T, K)


def gemm(cnp.ndarray x,             # IN  float32 [T][K], rows contiguous (row stride any)
         cnp.ndarray wp, int N,     # IN  gemm_pack_w(w[K][N])
         bias,                      # IN  float32 [N] or None
         int act, float p0, float p1,
         cnp.ndarray out,           # OUT float32 [T][>=N], rows contiguous
         cnp.ndarray xp,            # scratch float32 [>= gemm_xpack_size(T, K)]
         int nthreads):
    cdef int T = x.shape[0], K = x.shape[1]
    cdef const float *bp = NULL
    if bias is not None:
        bp = <const float *>_ptr(bias)
    cdef const float *xptr = <const float *>_ptr(x)
    cdef const float *wpp = <const float *>_ptr(wp)
    cdef float *op = <float *>_ptr(out)
    cdef float *xpp = <float *>_ptr(xp)
    cdef Py_ssize_t ldx = x.strides[0] // 4, ldo = out.strides[0] // 4
    with nogil:
        dscy_f32_gemm(xptr, ldx, T, K, wpp, N, bp, act, p0, p1, op, ldo, xpp, nthreads)
    return out


def pack_w(cnp.ndarray w):        # IN float32 [M][K] C-contiguous, or [M][C][3][3]
    """Packed panels of w; for 3x3 weights (4-D [M][C][3][3]) where this build has the
    Winograd path, followed by their Winograd transform (conv2d finds it by the size)."""
    cdef int M = w.shape[0]
    cdef int K = w.size // M if M else 0
    cdef int C = w.shape[1]
    cdef size_t n = dscy_f32_conv_wpack_size(M, K)
    cdef bint wino = w.ndim == 4 and w.shape[2] == 3 and w.shape[3] == 3 \
        and dscy_f32_wino_available() != 0 and M > 0 and C > 0
    cdef cnp.ndarray wp = np.empty(n + (dscy_f32_wino_wsize(M, C) if wino else 0), np.float32)
    dscy_f32_conv_pack_w(<const float *>_ptr(w), M, K, <float *>_ptr(wp))
    if wino:
        dscy_f32_wino_pack(<const float *>_ptr(w), M, C, <float *>_ptr(wp) + n)
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
    cdef const float *uw = NULL
    cdef size_t nw = dscy_f32_conv_wpack_size(M, C * KH * KW)
    if KH == 3 and KW == 3 and <size_t>wp.size >= nw + dscy_f32_wino_wsize(M, C) \
            and dscy_f32_wino_available() != 0:
        uw = wpp + nw
    with nogil:
        rc = dscy_f32_conv2d(xp, N, C, H, W, wpp, M, KH, KW, sw, dh, dw, hp, vp, P, bp, zp,
                             act, p0, p1, op, php, nthreads, uw)
    if rc != 0:
        raise MemoryError("f32 conv2d: could not allocate its packing buffer")
    return out


def uses_phase_split(int M, int KH, int KW, int sw, int P):
    """Whether conv2d reads its xph scratch for this conv (P output pixels per image)."""
    return bool(dscy_f32_conv_uses_phase_split(M, KH, KW, sw, P))


def xph_size(int N, int C, int H, int W, int sw):
    """float32 elements of the phase-split scratch a stride-sw conv can use (0 when sw <= 1)."""
    return dscy_f32_conv_xph_size(N, C, H, W, sw)


def dwconv2d(cnp.ndarray x,        # IN  float32 [N][C][H][W] C-contiguous
             cnp.ndarray w,        # IN  float32 [C][KH*KW] C-contiguous
             int KH, int KW, int sh, int sw, int dh, int dw, int pt, int pl,
             bias,                 # IN  float32 [C] or None
             z,                    # IN  float32 [N][C][Ho][Wo] C-contiguous or None
             int act, float p0, float p1,
             cnp.ndarray out,      # OUT float32 [N][C][Ho][Wo] C-contiguous
             int nthreads):
    """Depthwise conv (csrc/f32_conv.c dscy_f32_dwconv2d); kernels/f32conv.py checks shapes."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int Ho = out.shape[2], Wo = out.shape[3]
    cdef const float *xp = <const float *>_ptr(x)
    cdef const float *wp = <const float *>_ptr(w)
    cdef const float *bp = NULL
    cdef const float *zp = NULL
    cdef float *op = <float *>_ptr(out)
    cdef int rc
    if bias is not None:
        bp = <const float *>_ptr(bias)
    if z is not None:
        zp = <const float *>_ptr(z)
    with nogil:
        rc = dscy_f32_dwconv2d(xp, N, C, H, W, wp, KH, KW, sh, sw, dh, dw, pt, pl, Ho, Wo, bp, zp,
                               act, p0, p1, op, nthreads)
    if rc != 0:
        raise MemoryError("f32 dwconv2d: could not allocate its scratch")
    return out


def set_dw_group(bint on):
    """Depthwise convs of small planes eight channels at once (the default at the AVX2 level);
    a switch for tests, which check both paths, and for A/B timing."""
    dscy_f32_dwconv_set_group(1 if on else 0)


def get_dw_group():
    return bool(dscy_f32_dwconv_get_group())


def set_wino(bint on):
    """3x3 stride-1 convs on the Winograd F(2x2, 3x3) path where it suits them (the default
    at the AVX2 level); a switch for tests, which check both paths, and for A/B timing."""
    dscy_f32_conv_set_wino(1 if on else 0)


def get_wino():
    return bool(dscy_f32_conv_get_wino())


def uses_wino(int Ho, int Wo):
    """Whether conv2d runs a 3x3 stride-1 conv with an Ho x Wo output on the Winograd path
    (this build has it, it is switched on, and the output has enough 2x2 tiles)."""
    return bool(dscy_f32_wino_available() and dscy_f32_conv_get_wino()
                and dscy_f32_wino_suits(Ho, Wo))
