# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FP32 element-wise and row kernels the numpy path does slowly: erf, GELU, softmax rows.

ISA-independent: branch-free exp/erf (csrc/dscy_fastmath.h) in plain C loops the compiler
vectorises; OpenMP over chunks. These passes are memory-bound: they take a second thread from
512K elements. (It was 4M while the FP32 GEMMs ran on BLAS: a pass right after a BLAS call
found its second core held by OpenBLAS's spinning workers.)
"""
from cython.parallel cimport prange, threadid
cimport numpy as cnp
import numpy as np
from libc.stdint cimport int32_t
from libc.string cimport memcpy, memset

cnp.import_array()

include "_fastmath.pxi"

cdef extern from "<math.h>" nogil:
    float logf(float)

DEF CHUNK = 16384


# element-wise kernels run through one chunked OpenMP driver
DEF OP_ERF = 0
DEF OP_GELU = 1
DEF OP_CLIP = 2
DEF OP_QU8 = 3
DEF OP_QS8 = 4


cdef void _chunked(int op, const float *x, void *y, Py_ssize_t n, int nt, float a,
                   float b) noexcept nogil:
    """y[i] = op(x[i]) over CHUNK-sized blocks split across nt threads; a, b: op parameters
    (clip bounds, or quantization scale and zero point)."""
    cdef Py_ssize_t c, nc = (n + CHUNK - 1) // CHUNK, lo, hi
    for c in prange(nc, num_threads=nt, schedule="static"):
        lo = c * CHUNK
        hi = lo + CHUNK if lo + CHUNK < n else n
        if op == OP_ERF:
            dscy_erf_array(x + lo, <float *>y + lo, hi - lo)
        elif op == OP_GELU:
            dscy_gelu_array(x + lo, <float *>y + lo, hi - lo)
        elif op == OP_CLIP:
            dscy_clip_array(x + lo, <float *>y + lo, hi - lo, a, b)
        else:     # OP_QU8 / OP_QS8, one byte per element
            dscy_quantize8(_level, op == OP_QS8, x + lo, <unsigned char *>y + lo, hi - lo, a, b)


def erf(const float[::1] x,  # IN
        float[::1] out,       # OUT
        int num_threads=1):
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _chunked(OP_ERF, &x[0], &out[0], n, _nt(n, num_threads), 0, 0)


def gelu_erf(const float[::1] x,  # IN
             float[::1] out,       # OUT
             int num_threads=1):
    """0.5 * x * (1 + erf(x / sqrt(2))), the exact GELU torch exports."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _chunked(OP_GELU, &x[0], &out[0], n, _nt(n, num_threads), 0, 0)


def softmax_rows(const float[:, ::1] x,  # IN  [rows, n]
                 float[:, ::1] out,       # OUT [rows, n]
                 int num_threads=1,
                 bint log=False):
    """Numerically stable softmax (or log-softmax) over the last axis of a 2-D array."""
    cdef Py_ssize_t r, j, rows = x.shape[0], n = x.shape[1]
    cdef int nt = _nt(rows * n, num_threads)
    cdef float m, e
    cdef double s
    if rows == 0 or n == 0:
        return
    with nogil:
        for r in prange(rows, num_threads=nt, schedule="static"):
            m = dscy_max_array(&x[r, 0], n)
            s = dscy_exp_shift_array(&x[r, 0], &out[r, 0], n, m)
            if log:
                e = logf(<float>s)
                for j in range(n):
                    out[r, j] = (x[r, j] - m) - e
            else:
                e = <float>(1.0 / s)
                for j in range(n):
                    out[r, j] = out[r, j] * e


def quantize_u8(const float[::1] x,        # IN
                unsigned char[::1] out,     # OUT
                float scale, int zero_point, int num_threads=1):
    """ONNX QuantizeLinear, per-tensor, to uint8 (round half to even, saturate)."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _chunked(OP_QU8, &x[0], &out[0], n, _nt(n, num_threads), scale, zero_point)


def quantize_s8(const float[::1] x,        # IN
                signed char[::1] out,       # OUT
                float scale, int zero_point, int num_threads=1):
    """ONNX QuantizeLinear, per-tensor, to int8 (round half to even, saturate)."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _chunked(OP_QS8, &x[0], &out[0], n, _nt(n, num_threads), scale, zero_point)


def clip(const float[::1] x,   # IN
         float[::1] out,        # OUT (must not overlap x: the C loop is restrict)
         float lo, float hi, int num_threads=1):
    """min(max(x, lo), hi) with NaN propagated; Relu is clip(x, 0, inf)."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _chunked(OP_CLIP, &x[0], &out[0], n, _nt(n, num_threads), lo, hi)


def dw_conv2d_planes(const float[:, :, ::1] planes,   # IN  [N*C, phases, Q0b*Q1]
                     const float[:, ::1] w,            # IN  [C, K] per-channel taps
                     const int[::1] tap_phase,         # IN  [K]
                     const long[::1] tap_off,          # IN  [K]
                     long Q1, long O0, long O1,
                     bias,                             # IN  [C] float32 or None
                     float[:, ::1] out,                # OUT [N*C, O0*O1]
                     int num_threads=1,
                     bint avx2=False):
    """Depthwise 2-D conv over stride-phase planes (ops/conv.py builds them), bias fused.
    avx2=True runs the AVX2+FMA build (pass it only when dispatch chose avx2 or above)."""
    cdef Py_ssize_t p, NC = planes.shape[0], C = w.shape[0]
    cdef long plen = planes.shape[2]
    cdef int K = w.shape[1]
    cdef const float[::1] b
    cdef bint has_b = bias is not None
    cdef float zero = 0
    if has_b:
        b = bias
    if NC == 0 or O0 == 0 or O1 == 0:
        return
    cdef int nt = _nt(NC * O0 * O1, num_threads)
    with nogil:
        for p in prange(NC, num_threads=nt, schedule="static"):
            if avx2:
                dscy_dw_plane_avx2(&planes[p, 0, 0], plen, &w[p % C, 0], &tap_phase[0],
                                   &tap_off[0], K, Q1, O0, O1, b[p % C] if has_b else zero,
                                   &out[p, 0])
            else:
                dscy_dw_plane_generic(&planes[p, 0, 0], plen, &w[p % C, 0], &tap_phase[0],
                                      &tap_off[0], K, Q1, O0, O1, b[p % C] if has_b else zero,
                                      &out[p, 0])



cdef extern from "csrc/dscy_pool.h" nogil:
    long dscy_maxpool2d_tmp(int W, int Wo, int kw, int dw, int pl)
    void dscy_maxpool2d_plane(const float *x, int H, int W, float *y, int Ho, int Wo, int kh,
                              int kw, int sh, int sw, int dh, int dw, int pt, int pl, float *tmp)
    void dscy_maxpool2d_plane_w16(const float *x, int H, int W, float *y, int Ho, int Wo,
                                  int kh, int kw, int sh, int dh, int pt, int pl)
    void dscy_upsample_plane(const float *x, int H, int W, float *y, int kh, int kw)
    void dscy_maxpool_plane8(const unsigned char *x, int x_signed, int H, int W,
                             unsigned char *y, int Ho, int Wo, int kh, int kw, int sh, int sw,
                             int dh, int dw, int pt, int pl, unsigned char *h)
    void dscy_maxpool_plane8_w64(const unsigned char *x, int x_signed, int H, int W,
                                 unsigned char *y, int Ho, int Wo, int kh, int kw, int sh,
                                 int dh, int pt, int pl)
    void dscy_maxpool_nhwc8_px(const unsigned char *x, int x_signed, int H, int W, int C,
                               int iy0, int ix0, int kh, int kw, int dh, int dw,
                               unsigned char *d)
    void dscy_gather_plane(const float *x, int W, const int32_t *hi, int Ho, const int32_t *wi,
                           int Wo, float *y)
    void dscy_d2s_plane(const float *cols, int k0, int k1, int S0, int S1, float *y)
    void dscy_upsample_plane8(const unsigned char *x, int H, int W, unsigned char *y, int kh,
                              int kw)
    void dscy_gather_plane8(const unsigned char *x, int W, const int32_t *hi, int Ho,
                            const int32_t *wi, int Wo, unsigned char *y)
    float dscy_plane_mean(const float *x, long n)
    void dscy_copy_blocks(char *dst, Py_ssize_t dst_stride, const char *src,
                          Py_ssize_t src_stride, long outer, size_t nbytes)


cdef inline int _nt_copy(Py_ssize_t n, int num_threads) noexcept nogil:
    # layout copies are memory-bound: a second thread pays from ~256K elements
    if n < 262144 or num_threads < 2:
        return 1
    return dscy_cap_threads(num_threads)


cdef inline int _nt_rows(Py_ssize_t rows, Py_ssize_t n, int num_threads) noexcept nogil:
    # upsampling small planes is bound by its per-row work (an expanded row and kh - 1 copies
    # of it: ~20 ns a row of a 20 x 20 map), not by memory: a second thread pays from ~1K rows
    if num_threads >= 2 and rows >= 1024:
        return dscy_cap_threads(num_threads)
    return _nt_copy(n, num_threads)


ctypedef fused plane_t:       # float32 planes, or 8-bit ones (u8; s8 through its uint8 view)
    float
    unsigned char


def upsample_nearest(const plane_t[:, :, ::1] x,   # IN  [N*C, H, W]
                     plane_t[:, :, ::1] y,         # OUT [N*C, H*kh, W*kw]
                     int kh, int kw, int num_threads=1):
    """Nearest upsampling by integer factors (every input pixel repeated kh x kw)."""
    cdef Py_ssize_t p, NC = x.shape[0]
    cdef int H = x.shape[1], W = x.shape[2]
    if y.shape[0] != NC or y.shape[1] != H * kh or y.shape[2] != W * kw:
        raise ValueError("upsample_nearest: output shape mismatch")
    if NC == 0 or H == 0 or W == 0:
        return
    cdef Py_ssize_t n = y.shape[0] * y.shape[1] * y.shape[2]
    cdef int nt = _nt_rows(NC * H, n if plane_t is float else n // 4, num_threads)
    with nogil:
        for p in prange(NC, num_threads=nt, schedule="static"):
            if plane_t is float:
                dscy_upsample_plane(&x[p, 0, 0], H, W, &y[p, 0, 0], kh, kw)
            else:
                dscy_upsample_plane8(&x[p, 0, 0], H, W, &y[p, 0, 0], kh, kw)


def resize_nearest(const plane_t[:, :, ::1] x,   # IN  [N*C, H, W]
                   const int32_t[::1] hi,          # IN  [Ho] source row of each output row
                   const int32_t[::1] wi,          # IN  [Wo] source column of each output column
                   plane_t[:, :, ::1] y,           # OUT [N*C, Ho, Wo]
                   int num_threads=1):
    """Nearest resize of NCHW planes by per-axis index tables (any scale, coordinate mode)."""
    cdef Py_ssize_t p, NC = x.shape[0]
    cdef int H = x.shape[1], W = x.shape[2], Ho = hi.shape[0], Wo = wi.shape[0], j
    if y.shape[0] != NC or y.shape[1] != Ho or y.shape[2] != Wo:
        raise ValueError("resize_nearest: output shape mismatch")
    for j in range(Ho):
        if hi[j] < 0 or hi[j] >= H:
            raise ValueError("resize_nearest: row index out of range")
    for j in range(Wo):
        if wi[j] < 0 or wi[j] >= W:
            raise ValueError("resize_nearest: column index out of range")
    if NC == 0 or Ho == 0 or Wo == 0:
        return
    cdef int nt = _nt_copy(NC * Ho * Wo if plane_t is float else NC * Ho * Wo // 4, num_threads)
    with nogil:
        for p in prange(NC, num_threads=nt, schedule="static"):
            if plane_t is float:
                dscy_gather_plane(&x[p, 0, 0], W, &hi[0], Ho, &wi[0], Wo, &y[p, 0, 0])
            else:
                dscy_gather_plane8(&x[p, 0, 0], W, &hi[0], Ho, &wi[0], Wo, &y[p, 0, 0])


def depth_to_space(const float[:, :, ::1] cols,  # IN  [N*M, k0*k1, S0*S1]
                   float[:, :, ::1] y,           # OUT [N*M, S0*k0, S1*k1]
                   int k0, int k1, int S0, int S1, int num_threads=1):
    """y[p, h*k0 + i, w*k1 + j] = cols[p, i*k1 + j, h*S1 + w] (stride == kernel ConvTranspose)."""
    cdef Py_ssize_t p, NP = cols.shape[0]
    if cols.shape[1] != k0 * k1 or cols.shape[2] != S0 * S1 or y.shape[0] != NP \
            or y.shape[1] != S0 * k0 or y.shape[2] != S1 * k1:
        raise ValueError("depth_to_space: shape mismatch")
    if NP == 0 or S0 == 0 or S1 == 0:
        return
    cdef int nt = _nt_copy(NP * k0 * k1 * S0 * S1, num_threads)
    with nogil:
        for p in prange(NP, num_threads=nt, schedule="static"):
            dscy_d2s_plane(&cols[p, 0, 0], k0, k1, S0, S1, &y[p, 0, 0])


def plane_mean(const float[:, ::1] x,   # IN  [planes, n]
               float[::1] y,            # OUT [planes]
               int num_threads=1):
    """Mean of each row (GlobalAveragePool over NCHW planes)."""
    cdef Py_ssize_t p, NP = x.shape[0]
    cdef long n = x.shape[1]
    if y.shape[0] != NP:
        raise ValueError("plane_mean: output shape mismatch")
    if NP == 0 or n == 0:
        return
    cdef int nt = _nt_copy(NP * n, num_threads)
    with nogil:
        for p in prange(NP, num_threads=nt, schedule="static"):
            y[p] = dscy_plane_mean(&x[p, 0], n)


def maxpool2d(const float[:, :, ::1] x,     # IN  [N*C, H, W]
              float[:, :, ::1] y,           # OUT [N*C, Ho, Wo]
              int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
              int num_threads=1):
    """2-D max pooling over planes (csrc/dscy_pool.h); taps outside the input are skipped (ONNX
    padding), NaN never wins over a number (np.fmax, like onnxruntime); an all-padding window
    gives -inf."""
    cdef Py_ssize_t p, NC = x.shape[0]
    cdef int H = x.shape[1], W = x.shape[2], Ho = y.shape[1], Wo = y.shape[2]
    if NC == 0 or Ho == 0 or Wo == 0:
        return
    cdef int nt = 1
    if NC * Ho * Wo * kh * kw >= 1048576 and num_threads > 1:
        nt = dscy_cap_threads(num_threads)
    if _level >= 2 and sw == 1 and dw == 1 and 0 < W <= 16 and Wo <= 16 and H > 0 \
            and pl + kw <= 32:
        # rows of at most 16 pixels: one zmm each (the same taps in the same order)
        with nogil:
            for p in prange(NC, num_threads=nt, schedule="static"):
                dscy_maxpool2d_plane_w16(&x[p, 0, 0], H, W, &y[p, 0, 0], Ho, Wo, kh, kw, sh, dh,
                                         pt, pl)
        return
    import numpy as np
    cdef float[:, ::1] tmp = np.empty((max(nt, 1), max(W, 1) if sw != 1 else
                                       dscy_maxpool2d_tmp(W, Wo, kw, dw, pl)), np.float32)
    cdef int tid
    with nogil:
        for p in prange(NC, num_threads=nt, schedule="static"):
            tid = threadid()
            dscy_maxpool2d_plane(&x[p, 0, 0] if H * W > 0 else NULL, H, W, &y[p, 0, 0], Ho, Wo,
                                 kh, kw, sh, sw, dh, dw, pt, pl, &tmp[tid, 0])



def dequantize_rows(q,                       # IN  uint8 or int8 [rows, n], C-contiguous
                    float zero_point, float scale,
                    bias,                    # IN  float32 [n] or None, added after scaling
                    float[:, ::1] out,       # OUT float32 [rows, n]
                    int num_threads=1):
    """ONNX DequantizeLinear per tensor, (q - zero_point) * scale, optionally + bias along the
    rows: the QDQ round trip behind a fused INT8 layer in one pass instead of numpy's three."""
    cdef const unsigned char[:, ::1] qu
    cdef const signed char[:, ::1] qs
    cdef const float[::1] b
    cdef const float *bp = NULL
    cdef Py_ssize_t r, rows = out.shape[0], n = out.shape[1]
    cdef bint signed_ = q.dtype.kind == "i"
    if q.shape[0] != rows or q.shape[1] != n:
        raise ValueError("q and out shapes differ")
    if bias is not None:
        b = bias
        if b.shape[0] != n:
            raise ValueError(f"bias has {b.shape[0]} values, rows have {n}")
        bp = &b[0]
    if rows == 0 or n == 0:
        return out
    cdef int nt = _nt(rows * n, num_threads)
    if signed_:
        qs = q
        with nogil:
            for r in prange(rows, num_threads=nt, schedule="static"):
                dscy_dequant_row(_level, 1, &qs[r, 0], &out[r, 0], n, zero_point, scale, bp)
    else:
        qu = q
        with nogil:
            for r in prange(rows, num_threads=nt, schedule="static"):
                dscy_dequant_row(_level, 0, &qu[r, 0], &out[r, 0], n, zero_point, scale, bp)
    return out


def concat(list xs, int axis, cnp.ndarray out):
    """out = concatenate(xs, axis) for C-contiguous xs and out of one dtype (the caller checks
    shapes and dtypes): per outer index one vector-move copy of each input's block."""
    cdef Py_ssize_t outer = 1
    cdef int a
    for a in range(axis):
        outer *= out.shape[a]
    cdef Py_ssize_t row = out.nbytes // outer if outer else 0
    cdef Py_ssize_t off = 0, blk
    cdef cnp.ndarray x
    cdef char *dp = <char *>cnp.PyArray_DATA(out)
    for x in xs:
        blk = x.nbytes // outer if outer else 0
        if blk:
            with nogil:
                dscy_copy_blocks(dp + off, row, <const char *>cnp.PyArray_DATA(x), blk, outer, blk)
        off += blk
    return out


def concat_pieces(list xs, int axis, cnp.ndarray out, int num_threads):
    """The work of concat(xs, axis, out) as pieces for copy_pieces on up to num_threads
    threads, or None where one thread is the better choice (a copy under ~1 MB): int64
    [pieces, 6] of (dst address, dst stride, src address, src stride, blocks, bytes), each
    input's blocks split into about 4 pieces per thread (by rows when there are enough, else
    by bytes). Addresses: the caller keeps xs and out alive and unmoved while it uses them."""
    cdef int nt = _nt_copy(out.nbytes // 4, num_threads)
    if nt < 2:
        return None
    cdef Py_ssize_t outer = 1
    cdef int a
    for a in range(axis):
        outer *= out.shape[a]
    if not outer:
        return None
    cdef Py_ssize_t row = out.nbytes // outer, off, blk, o0, o1, b0, b1, step
    cdef Py_ssize_t want = 4 * nt
    pieces = []
    dp = <Py_ssize_t>cnp.PyArray_DATA(out)
    ins = []                             # (address, block bytes, offset in an output row)
    off = 0
    for x in xs:
        blk = (<cnp.ndarray>x).nbytes // outer
        if blk:
            ins.append((<Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>x), blk, off))
        off += blk
    if outer >= want:
        # whole blocks, the rows in `want` ranges, each range of every input before the next
        # range: prange's static split then gives each thread about the same bytes
        for j in range(want):
            o0, o1 = outer * j // want, outer * (j + 1) // want
            if o1 > o0:
                for sp, blk, off in ins:
                    pieces.append((dp + off + o0 * row, row, sp + o0 * blk, blk, o1 - o0, blk))
    else:
        # few rows: the blocks cut by bytes (multiples of 64) into pieces of about equal size
        step = max(((row * outer + want - 1) // want + 63) // 64 * 64, 64)
        for o0 in range(outer):
            for sp, blk, off in ins:
                for b0 in range(0, blk, step):
                    b1 = min(b0 + step, blk)
                    pieces.append((dp + off + o0 * row + b0, row, sp + o0 * blk + b0, blk,
                                   1, b1 - b0))
    return np.array(pieces, np.int64).reshape(-1, 6)


def copy_pieces(const long long[:, ::1] pieces, int num_threads, keep=None):
    """The copies of concat_pieces on up to num_threads threads (keep: the arrays they address,
    held by the caller's bound call)."""
    cdef Py_ssize_t i, n = pieces.shape[0]
    # never above the OpenMP limit of this call (threadpoolctl / OMP_NUM_THREADS may have
    # lowered it since the pieces were cut)
    cdef int nt = dscy_cap_threads(num_threads) if num_threads > 1 else 1
    if nt > n:
        nt = <int>n
    if nt < 1:
        nt = 1
    with nogil:
        for i in prange(n, num_threads=nt, schedule="static"):
            dscy_copy_blocks(<char *><Py_ssize_t>pieces[i, 0], <Py_ssize_t>pieces[i, 1],
                             <const char *><Py_ssize_t>pieces[i, 2], <Py_ssize_t>pieces[i, 3],
                             <long>pieces[i, 4], <size_t>pieces[i, 5])


def copy_strided_blocks(cnp.ndarray src, cnp.ndarray dst, Py_ssize_t outer, Py_ssize_t src_stride,
                        Py_ssize_t nbytes, Py_ssize_t src_offset=0):
    """dst (C-contiguous) <- outer blocks of nbytes at src + src_offset + o * src_stride bytes
    (a slice of a C-contiguous array along one axis); the caller checks the bounds."""
    cdef char *sp = <char *>cnp.PyArray_DATA(src) + src_offset
    cdef char *dp = <char *>cnp.PyArray_DATA(dst)
    with nogil:
        dscy_copy_blocks(dp, nbytes, sp, src_stride, outer, nbytes)
    return dst



cdef _check_window(str what, int kh, int kw, int sh, int sw, int dh, int dw):
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or dh < 1 or dw < 1:
        raise ValueError(f"{what}: kernel, strides and dilations must be positive")


def im2col_nhwc_8(const unsigned char[:, :, :, ::1] x,   # IN  [B, H, W, C] u8 (s8: its u8 view)
                  int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                  unsigned char pad_value,
                  unsigned char[:, :, :, ::1] out,       # OUT [B, Ho, Wo, kh*kw*C]
                  int num_threads=1):
    """kernels.conv.im2col_nhwc of 8-bit activations, compiled: column (ky, kx, c) of output
    pixel (b, oy, ox) is x[b, oy*sh - pt + ky*dh, ox*sw - pl + kx*dw, c], or pad_value (the
    activation zero point) outside the image. With dw == 1 a window row inside the image is
    one copy of kw*C bytes (the 7x7 stride-2 RGB stem: 21 bytes, not seven 3-byte runs).
    Output rows in parallel."""
    cdef Py_ssize_t B = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2], K = <Py_ssize_t>kh * kw * C
    cdef Py_ssize_t r, b, oy, ox, ky, kx, iy, ix, ix0, run = <Py_ssize_t>kw * C
    cdef unsigned char *d
    cdef const unsigned char *xr
    _check_window("im2col", kh, kw, sh, sw, dh, dw)
    if out.shape[0] != B or out.shape[3] != K:
        raise ValueError(f"im2col: out must be [{B}, Ho, Wo, {K}], got {tuple(out.shape)}")
    if B == 0 or Ho == 0 or Wo == 0 or K == 0:
        return
    with nogil:
        for r in prange(B * Ho, num_threads=_nt_copy(B * Ho * Wo * K, num_threads),
                        schedule="static"):
            b = r // Ho
            oy = r % Ho
            for ox in range(Wo):
                ix0 = ox * sw - pl
                for ky in range(kh):
                    d = &out[b, oy, ox, ky * run]
                    iy = oy * sh - pt + ky * dh
                    if iy < 0 or iy >= H:
                        memset(d, pad_value, run)
                        continue
                    xr = &x[b, iy, 0, 0]
                    if dw == 1 and ix0 >= 0 and ix0 + kw <= W:
                        memcpy(d, xr + ix0 * C, run)
                        continue
                    for kx in range(kw):
                        ix = ix0 + kx * dw
                        if ix < 0 or ix >= W:
                            memset(d + kx * C, pad_value, C)
                        else:
                            memcpy(d + kx * C, xr + ix * C, C)


def maxpool_planes_8(const unsigned char[:, :, ::1] x,   # IN  [N*C, H, W] u8 (s8: its u8 view)
                     bint x_signed, int kh, int kw, int sh, int sw, int dh, int dw, int pt,
                     int pl,
                     unsigned char[:, :, ::1] out,       # OUT [N*C, Ho, Wo]
                     int num_threads=1):
    """maxpool_nhwc_8 on NCHW planes (QMaxPool between planar tensors, as a quantized SPPF's
    pools): per plane two separable passes (dscy_maxpool_plane8), planes in parallel."""
    cdef Py_ssize_t NC = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2], p
    _check_window("maxpool", kh, kw, sh, sw, dh, dw)
    if out.shape[0] != NC:
        raise ValueError(f"maxpool: out must be [{NC}, Ho, Wo], got {tuple(out.shape)}")
    if NC == 0 or Ho == 0 or Wo == 0:
        return
    cdef int nt = _nt_copy(NC * (H + Ho) * Wo * (kh + kw), num_threads)
    if _level >= 2 and sw == 1 and dw == 1 and 0 < W <= 64 and Wo <= 64 and H > 0 \
            and 0 <= pl <= 64 and kw <= 64:
        # rows of at most 64 pixels: one zmm of bytes each
        with nogil:
            for p in prange(NC, num_threads=nt, schedule="static"):
                dscy_maxpool_plane8_w64(&x[p, 0, 0], x_signed, <int>H, <int>W, &out[p, 0, 0],
                                        <int>Ho, <int>Wo, kh, kw, sh, dh, pt, pl)
        return
    cdef unsigned char[:, ::1] h = np.empty((nt, max(H * Wo, 1)), np.uint8)
    cdef int tid
    with nogil:
        for p in prange(NC, num_threads=nt, schedule="static"):
            tid = threadid()
            dscy_maxpool_plane8(&x[p, 0, 0] if H * W > 0 else NULL, x_signed, <int>H, <int>W,
                                &out[p, 0, 0], <int>Ho, <int>Wo, kh, kw, sh, sw, dh, dw, pt, pl,
                                &h[tid, 0])


def maxpool_nhwc_8(const unsigned char[:, :, :, ::1] x,   # IN  [B, H, W, C] u8 (s8: its u8 view)
                   bint x_signed, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                   unsigned char[:, :, :, ::1] out,       # OUT [B, Ho, Wo, C]
                   int num_threads=1):
    """Max pooling of 8-bit NHWC activations (QMaxPool): output pixel (b, oy, ox) is the max
    over the taps x[b, oy*sh - pt + i*dh, ox*sw - pl + j*dw, :] inside the image, compared as
    int8 when x_signed; a window with no tap inside gives the type's lowest value (ONNX pads
    with it, so padding never wins). Output rows in parallel."""
    cdef Py_ssize_t B = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2], r, b, oy, ox
    _check_window("maxpool", kh, kw, sh, sw, dh, dw)
    if out.shape[0] != B or out.shape[3] != C:
        raise ValueError(f"maxpool: out must be [{B}, Ho, Wo, {C}], got {tuple(out.shape)}")
    if B == 0 or Ho == 0 or Wo == 0 or C == 0:
        return
    with nogil:
        for r in prange(B * Ho, num_threads=_nt_copy(B * Ho * Wo * C * kh * kw, num_threads),
                        schedule="static"):
            b = r // Ho
            oy = r % Ho
            for ox in range(Wo):
                dscy_maxpool_nhwc8_px(&x[b, 0, 0, 0], x_signed, <int>H, <int>W, <int>C,
                                      <int>(oy * sh - pt), <int>(ox * sw - pl), kh, kw, dh, dw,
                                      &out[b, oy, ox, 0])



cdef extern from "csrc/dscy_transpose.h" nogil:
    void dscy_interleave_u8(const unsigned char *src, Py_ssize_t lds, unsigned char *dst,
                            Py_ssize_t R, Py_ssize_t c0, Py_ssize_t c1)
    void dscy_interleave3_u8_vbmi(const unsigned char *src, Py_ssize_t lds, unsigned char *dst,
                                  Py_ssize_t c0, Py_ssize_t c1)
    void dscy_transpose_u8(const unsigned char *src, Py_ssize_t lds, unsigned char *dst,
                           Py_ssize_t ldd, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t Cn)
    void dscy_transpose_f32(const float *src, Py_ssize_t lds, float *dst, Py_ssize_t ldd,
                            Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t Cn)


cdef void _transpose_images(const void *src, void *dst, Py_ssize_t B, Py_ssize_t R,
                            Py_ssize_t Cn, int elem4, int nt) noexcept nogil:
    """dst[b][c][r] = src[b][r][c] for B images of R x Cn, strips of 64 rows over nt threads
    (8-bit images of fewer than 16 rows: column blocks of 4096 over the threads; 3 rows, an
    RGB image, by VBMI byte permutes where set_vbmi is on)."""
    cdef Py_ssize_t strips = (R + 63) // 64, t, b, r0, r1
    cdef Py_ssize_t img = R * Cn
    cdef Py_ssize_t cblocks = (Cn + 4095) // 4096
    cdef int vb3 = _vbmi and R == 3
    if not elem4 and R < 16:
        for t in prange(B * cblocks, num_threads=nt, schedule="static"):
            b = t // cblocks
            r0 = (t % cblocks) * 4096
            r1 = r0 + 4096 if r0 + 4096 < Cn else Cn
            if vb3:
                dscy_interleave3_u8_vbmi(<const unsigned char *>src + b * img, Cn,
                                         <unsigned char *>dst + b * img, r0, r1)
            else:
                dscy_interleave_u8(<const unsigned char *>src + b * img, Cn,
                                   <unsigned char *>dst + b * img, R, r0, r1)
        return
    for t in prange(B * strips, num_threads=nt, schedule="static"):
        b = t // strips
        r0 = (t % strips) * 64
        r1 = r0 + 64 if r0 + 64 < R else R
        if elem4:
            dscy_transpose_f32(<const float *>src + b * img, Cn, <float *>dst + b * img, R,
                               r0, r1, Cn)
        else:
            dscy_transpose_u8(<const unsigned char *>src + b * img, Cn,
                              <unsigned char *>dst + b * img, R, r0, r1, Cn)


def nchw_to_nhwc_8(const unsigned char[:, :, :, ::1] x,   # IN  [B, C, H, W] 8-bit (as u8)
                   unsigned char[:, :, :, ::1] out,       # OUT [B, H, W, C]
                   int num_threads=1):
    """Planar 8-bit activations to channels-last (a quantized CNN's graph-layout input before
    its first im2col): per image the [C, H*W] -> [H*W, C] transpose in 16 x 16 blocks."""
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    if out.shape[0] != B or out.shape[1] != H or out.shape[2] != W or out.shape[3] != C:
        raise ValueError("nchw_to_nhwc_8: out must be [B, H, W, C] of x")
    if B == 0 or C == 0 or H == 0 or W == 0:
        return
    cdef int nt = _nt_copy(B * C * H * W, num_threads)
    with nogil:
        _transpose_images(&x[0, 0, 0, 0], &out[0, 0, 0, 0], B, C, H * W, 0, nt)


ctypedef fused _elem_t:
    unsigned char
    float


def nhwc_to_nchw(const _elem_t[:, :, ::1] x,   # IN  [B, HW, C] (8-bit as u8, or float32)
                 _elem_t[:, :, ::1] out,       # OUT [B, C, HW]
                 int num_threads=1):
    """Channels-last rows back to planes (a quantized conv's tokens-major result into the
    graph's NCHW layout), per image the [HW, C] -> [C, HW] transpose in blocks."""
    cdef Py_ssize_t B = x.shape[0], HW = x.shape[1], C = x.shape[2]
    if out.shape[0] != B or out.shape[1] != C or out.shape[2] != HW:
        raise ValueError("nhwc_to_nchw: out must be [B, C, HW] of x [B, HW, C]")
    if B == 0 or HW == 0 or C == 0:
        return
    cdef int nt = _nt_copy(B * HW * C, num_threads)
    cdef int elem4 = _elem_t is float
    with nogil:
        _transpose_images(&x[0, 0, 0], &out[0, 0, 0], B, HW, C, elem4, nt)


cdef void _lut8_run(const unsigned char *x, unsigned char flip, const float *table, float *out,
                    Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef Py_ssize_t n4 = n - n % 4
    for i in range(0, n4, 4):
        out[i] = table[x[i] ^ flip]
        out[i + 1] = table[x[i + 1] ^ flip]
        out[i + 2] = table[x[i + 2] ^ flip]
        out[i + 3] = table[x[i + 3] ^ flip]
    for i in range(n4, n):
        out[i] = table[x[i] ^ flip]


cdef void _lut8_8_run(const unsigned char *x, unsigned char flip, const unsigned char *t,
                      unsigned char *y, Py_ssize_t n, int vb) noexcept nogil:
    if vb:
        dscy_lut8_8_vbmi(x, flip, t, y, n)
    else:
        dscy_lut8_8(x, flip, t, y, n)


def qadd8(const unsigned char[::1] a,        # IN  8-bit values (int8 as their bytes)
          bint a_signed,
          const unsigned char[::1] b,        # IN  the same length
          bint b_signed,
          const float[::1] ta,               # IN  [256] float32: a's value per byte - type min
          const float[::1] tb,               # IN  [256] float32: b's
          out,                               # OUT float32, or uint8 / int8 (quantized)
          float scale=1.0, float zero_point=0.0, int num_threads=1):
    """out = ta[a] + tb[b] (float32 out), or QuantizeLinear(that, scale, zero_point) into an
    8-bit out (ops/fast_quant.QAdd): the float32 sum as the graph's Add makes it, then the
    QuantizeLinear kernel's own quantizer (bit-identical to the op)."""
    cdef Py_ssize_t n = a.shape[0], t, lo, hi
    cdef cnp.ndarray o = out
    if b.shape[0] != n or ta.shape[0] != 256 or tb.shape[0] != 256 or o.ndim != 1 \
            or o.shape[0] != n or not o.flags.c_contiguous \
            or o.dtype not in (np.float32, np.uint8, np.int8):
        raise ValueError("qadd8: a, b and out of one length, float32 / uint8 / int8 out, "
                         "tables of 256 values")
    if n == 0:
        return
    cdef int ykind = 0 if o.dtype == np.float32 else (2 if o.dtype == np.int8 else 1)
    cdef Py_ssize_t es = o.itemsize
    cdef unsigned char fa = 0x80 if a_signed else 0, fb = 0x80 if b_signed else 0
    cdef const unsigned char *ap = &a[0]
    cdef const unsigned char *bp = &b[0]
    cdef const float *tap = &ta[0]
    cdef const float *tbp = &tb[0]
    cdef char *yp = <char *>cnp.PyArray_DATA(o)
    # two gathers and a quantizer per 16 values (~1 ns a value on one core): a second thread
    # pays from 32K values, not from the memory-bound passes' 128K
    cdef int nt = 1 if n < 32768 or num_threads < 2 else dscy_cap_threads(num_threads)
    cdef int lv = _level
    with nogil:
        if nt <= 1:
            dscy_qadd8(ap, fa, bp, fb, tap, tbp, yp, ykind, scale, zero_point, n, lv)
        else:
            for t in prange(nt, num_threads=nt, schedule="static"):
                lo = n * t // nt
                hi = n * (t + 1) // nt
                dscy_qadd8(ap + lo, fa, bp + lo, fb, tap, tbp, yp + lo * es, ykind, scale,
                           zero_point, hi - lo, lv)


cdef void _qadd8_t2_run(const unsigned char *a, unsigned char fa, const unsigned char *b,
                       unsigned char fb, const unsigned char *t2, unsigned char *y, Py_ssize_t n,
                       int lv) noexcept nogil:
    if lv >= 2:
        dscy_qadd8_t2_avx512(a, fa, b, fb, t2, y, n)
    else:
        dscy_qadd8_t2(a, fa, b, fb, t2, y, n)


def qadd8_t2(const unsigned char[::1] a,     # IN  8-bit values (int8 as their bytes)
             bint a_signed,
             const unsigned char[::1] b,     # IN  the same length
             bint b_signed,
             const unsigned char[::1] t2,    # IN  >= 65539 bytes: the result of (a, b) at
                                             #     (a - type min) * 256 + (b - type min)
             unsigned char[::1] out,         # OUT (int8 as its bytes)
             int num_threads=1):
    """out = t2[a, b]: ops/fast_quant.QAdd's quantized sums looked up from a table of both
    indices (built with the engine's float32 add and quantizer), one gather per 16 values on
    the AVX-512 level."""
    cdef Py_ssize_t n = a.shape[0], t, lo, hi
    if b.shape[0] != n or out.shape[0] != n or t2.shape[0] < 65539:
        raise ValueError("qadd8_t2: a, b and out of one length, a table of 65536 (+3) bytes")
    if n == 0:
        return
    cdef unsigned char fa = 0x80 if a_signed else 0, fb = 0x80 if b_signed else 0
    cdef const unsigned char *ap = &a[0]
    cdef const unsigned char *bp = &b[0]
    cdef const unsigned char *tp = &t2[0]
    cdef unsigned char *yp = &out[0]
    cdef int nt = 1 if n < 65536 or num_threads < 2 else dscy_cap_threads(num_threads)
    cdef int lv = _level
    with nogil:
        if nt <= 1:
            _qadd8_t2_run(ap, fa, bp, fb, tp, yp, n, lv)
        else:
            for t in prange(nt, num_threads=nt, schedule="static"):
                lo = n * t // nt
                hi = n * (t + 1) // nt
                _qadd8_t2_run(ap + lo, fa, bp + lo, fb, tp, yp + lo, hi - lo, lv)


def lut8(const unsigned char[::1] x,   # IN  8-bit values (int8 as their bytes)
         bint x_signed,
         const _elem_t[::1] table,        # IN  [256]: the result of q - (type min), float32 or
                                          #     bytes (an 8-bit result, int8 as its bytes)
         _elem_t[::1] out,                # OUT the table's type
         int num_threads=1):
    """out[i] = table[x[i] - type min]: an elementwise function of 8-bit values in one pass
    (ops/fast_quant.QTable: a DequantizeLinear and the float ops after it, and with 8-bit
    tables the QuantizeLinear after them too; those run on the VBMI copy where set_vbmi is
    on). lut8_f32 and lut8_8 are this function."""
    cdef Py_ssize_t n = x.shape[0], t, lo, hi
    cdef unsigned char flip = 0x80 if x_signed else 0
    if out.shape[0] != n or table.shape[0] != 256:
        raise ValueError("lut8: out must match x and the table have 256 values")
    if n == 0:
        return
    cdef const unsigned char *xp = &x[0]
    cdef const _elem_t *tp = &table[0]
    cdef _elem_t *op = &out[0]
    cdef int nt = _nt_copy(n, num_threads), vb = _vbmi
    with nogil:
        if nt <= 1:
            if _elem_t is float:
                _lut8_run(xp, flip, tp, op, n)
            else:
                _lut8_8_run(xp, flip, tp, op, n, vb)
        else:
            for t in prange(nt, num_threads=nt, schedule="static"):
                lo = n * t // nt
                hi = n * (t + 1) // nt
                if _elem_t is float:
                    _lut8_run(xp + lo, flip, tp, op + lo, hi - lo)
                else:
                    _lut8_8_run(xp + lo, flip, tp, op + lo, hi - lo, vb)


lut8_f32 = lut8
lut8_8 = lut8
