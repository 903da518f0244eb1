# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FP32 kernels for the fused ops of ops/fast_fused.py: bias + activation epilogues applied in
place on a GEMM / conv output, LayerNorm rows (optionally with the residual add), and the
scale + mask + softmax step of attention over [batch, heads, queries, keys] scores.

Row-parallel with OpenMP (one thread below ~32K elements: waking a thread costs more). The C
bodies (csrc/f32_fused.h) exist as a baseline and an AVX2+FMA copy (LayerNorm rows and the
quantizers also an AVX-512 one); `set_avx2` / `set_avx512` (_fastmath.pxi) pick them
(ops/fast_fused.py sets them from kernels.kernel_isa()).
"""
from cython.parallel cimport prange, threadid
from libc.math cimport erf, fabs, isfinite, rint, sqrt
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

import numpy as np

cdef extern from "csrc/f32_fused.h" nogil:
    void dscy_bias_act(int avx2, float *y, const float *bias, long n, int act, float p0, float p1)
    void dscy_hardswish(int level, const float *x, float *y, long n)
    void dscy_scale_row(int level, const float *x, float s, float *y, long n)
    void dscy_gather_rows(const char *t, size_t rb, long long V, const long long *idx, long lo,
                          long hi, char *out)
    void dscy_layernorm(int avx2, const float *x, const float *skip, float *y, long n,
                        const float *g, const float *b, float eps)
    int dscy_layernorm_zq(int level, const float *x, const float *skip, float *y, long n,
                          const float *g, const float *b, float eps, void *q, int q_signed,
                          float scale, float zp, int dq_out)
    ctypedef struct dscy_ln_x8:
        const void *q
        int sgn
        float zp, scale
        const float *bias
    int dscy_layernorm_zq8(int level, const void *xr, const dscy_ln_x8 *x8, const float *skip,
                           const void *sr, const dscy_ln_x8 *s8, float *y, long n, const float *g,
                           const float *b, float eps, void *q, int q_signed, float scale, float zp,
                           int dq_out)
    void dscy_scale_mask_softmax(int avx2, float *s, const float *mask, long n, float scale)
    void dscy_softmax_mid(int avx2, const float *x, float *y, long n, long inner, long j0,
                          long jn)
    ctypedef struct dscy_dfl_quant:
        float qs, qz
        int sgn
        int bias_i
        float scale
        int mid
        float mlo, mhi, ma, mb
    void dscy_dfl_cols(int avx2, const float *x, long xs, long n, long jn, const float *wf,
                       float bf, const dscy_dfl_quant *q, float *out)
    int DSCY_DFL_MAX_BINS
    void dscy_se_gate(int avx2, const float *m, long C, const float *w1t, const float *b1,
                      long R, int a1, float p10, float p11, const float *w2t, const float *b2,
                      int a2, float p20, float p21, float *h, float *g)
    void dscy_se_scale(int avx2, const float *x, const float *g, long n, long r0, long r1,
                       float *y)
    void dscy_dw_nhwc_q8(int avx2, const void *x, int x_signed, long H, long W, long C, float zx,
                         const float *w, long KH, long KW, long sh, long sw, long dh, long dw,
                         long pt, long pl, long oy, long Wo, float *out)
    int DSCY_F_NONE, DSCY_F_RELU, DSCY_F_CLIP, DSCY_F_GELU, DSCY_F_HARDSWISH, DSCY_F_SILU
    int DSCY_F_HARDSIGMOID, DSCY_F_LEAKYRELU, DSCY_F_SIGMOID

ACTIVATIONS = {"": DSCY_F_NONE, "Relu": DSCY_F_RELU, "Clip": DSCY_F_CLIP, "Gelu": DSCY_F_GELU,
               "HardSwish": DSCY_F_HARDSWISH, "SiLU": DSCY_F_SILU,
               "HardSigmoid": DSCY_F_HARDSIGMOID, "LeakyRelu": DSCY_F_LEAKYRELU,
               "Sigmoid": DSCY_F_SIGMOID}

include "_fastmath.pxi"


def avx2_enabled():
    return bool(_level)


cdef extern from "csrc/dscy_pool.h" nogil:
    float dscy_plane_mean(const float *x, long n)   # GlobalAveragePool's row mean


def bias_act_inplace(float[:, ::1] y,           # IN/OUT [rows, n]
                     const float[::1] bias,      # IN [n] or None
                     int act=0, float p0=0, float p1=0, int num_threads=1):
    """y = act(y + bias) row by row, bias along the last axis (act codes: ACTIVATIONS)."""
    cdef Py_ssize_t r, rows = y.shape[0], n = y.shape[1]
    cdef const float *b = NULL
    cdef int av = _level
    if rows == 0 or n == 0:
        return
    if bias is not None:
        if bias.shape[0] != n:
            raise ValueError(f"bias has {bias.shape[0]} values, rows have {n}")
        b = &bias[0]
    with nogil:
        for r in prange(rows, num_threads=_nt(rows * n, num_threads), schedule="static"):
            dscy_bias_act(av, &y[r, 0], b, n, act, p0, p1)


def act_rows(const float[:, ::1] x,           # IN  [rows, n]
             float[:, ::1] y,                 # OUT [rows, n]: x itself, or not overlapping it
             int act=0, float p0=0, float p1=0, int num_threads=1):
    """y = act(x) row by row: each row copied into y and activated there while in cache (one
    pass over memory where a copy and then bias_act_inplace made two)."""
    cdef Py_ssize_t r, rows = x.shape[0], n = x.shape[1]
    cdef int av = _level
    if y.shape[0] != rows or y.shape[1] != n:
        raise ValueError("act_rows: y must have x's shape")
    if rows == 0 or n == 0:
        return
    cdef bint same = &x[0, 0] == &y[0, 0]
    with nogil:
        for r in prange(rows, num_threads=_nt(rows * n, num_threads), schedule="static"):
            if not same:
                memcpy(&y[r, 0], &x[r, 0], n * sizeof(float))
            dscy_bias_act(av, &y[r, 0], NULL, n, act, p0, p1)


def hardswish(const float[::1] x,   # IN  [n]
              float[::1] y,         # OUT [n]: x itself, or not overlapping it
              int num_threads=1):
    """y = HardSwish(x) = x * clip(x * (1/6) + 1/2, 0, 1) in the numpy op's float32 steps
    (ops/elementwise.HardSwish), bit for bit, one pass (csrc/f32_fused.h dscy_hardswish);
    a second thread from _nt's size, the halves split at a multiple of 16 values."""
    cdef Py_ssize_t n = x.shape[0], t, lo, hi
    if y.shape[0] != n:
        raise ValueError("hardswish: y must have x's length")
    if n == 0:
        return
    cdef int nt = _nt(n, num_threads), av = _level
    cdef const float *xp = &x[0]
    cdef float *yp = &y[0]
    with nogil:
        if nt <= 1:
            dscy_hardswish(av, xp, yp, n)
        else:
            for t in prange(nt, num_threads=nt, schedule="static"):
                lo = (n * t // nt) // 16 * 16
                hi = n if t == nt - 1 else (n * (t + 1) // nt) // 16 * 16
                if hi > lo:
                    dscy_hardswish(av, xp + lo, yp + lo, hi - lo)


def scale_rows(const float[:, ::1] x,   # IN  [rows, n]
               const float[::1] s,      # IN  [rows]
               float[:, ::1] y,         # OUT [rows, n]: x itself, or not overlapping x / s
               int num_threads=1):
    """y[r, :] = x[r, :] * s[r]: a Mul whose second operand broadcasts over x's trailing axes (an
    SE block's channel scale), one float32 multiply a value as numpy makes it (bit for bit), rows
    in parallel from _nt's size."""
    cdef Py_ssize_t r, rows = x.shape[0], n = x.shape[1]
    if y.shape[0] != rows or y.shape[1] != n or s.shape[0] != rows:
        raise ValueError("scale_rows: y must have x's shape and s one value a row")
    if rows == 0 or n == 0:
        return
    cdef int av = _level
    with nogil:
        for r in prange(rows, num_threads=_nt(rows * n, num_threads), schedule="static"):
            dscy_scale_row(av, &x[r, 0], s[r], &y[r, 0], n)


def gather_rows(const unsigned char[:, ::1] table,   # IN  [V, row bytes]
                const long long[::1] idx,             # IN  [n], each in [-V, V)
                unsigned char[:, ::1] out,            # OUT [n, row bytes], not overlapping table
                int num_threads=1):
    """out[i] = table[idx[i]] (an index below 0 counts from the end: ONNX Gather on axis 0 of
    a row-major table, the rows as bytes), the rows in parallel from _nt's size with the next
    rows' lines prefetched. Returns -1, or (nothing written) the position of the first index
    out of range."""
    cdef Py_ssize_t i, n = idx.shape[0], rb = table.shape[1]
    cdef long long V = table.shape[0], j
    cdef int nt, t
    cdef long lo, hi
    if out.shape[0] != n or out.shape[1] != rb:
        raise ValueError("gather_rows: out must be [len(idx), row bytes of table]")
    for i in range(n):
        j = idx[i]
        if j < -V or j >= V:
            return i
    if n == 0 or rb == 0:
        return -1
    nt = _nt(n * rb // 4, num_threads)
    if nt > n:
        nt = <int>n
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static"):
            lo = <long>(n * t // nt)
            hi = <long>(n * (t + 1) // nt)
            dscy_gather_rows(<const char *>&table[0, 0], <size_t>rb, V, &idx[0], lo, hi,
                             <char *>&out[0, 0])
    return -1


def bias_add_inplace(float[:, ::1] y, const float[::1] bias, int num_threads=1):
    bias_act_inplace(y, bias, DSCY_F_NONE, 0, 0, num_threads)


def bias_gelu_inplace(float[:, ::1] y, const float[::1] bias, int num_threads=1):
    """y = gelu_erf(y + bias): the exact GELU torch exports, in one pass over y."""
    bias_act_inplace(y, bias, DSCY_F_GELU, 0, 0, num_threads)


# LayerNorm takes a second thread from a quarter of SMALL: four passes per row (skip add, mean,
# variance, scale) against one for the element-wise kernels
def layernorm(const float[:, ::1] x,      # IN  [rows, n]
              const float[:, ::1] skip,   # IN  [rows, n] residual added first, or None
              const float[::1] gamma,     # IN  [n]
              const float[::1] beta,      # IN  [n] or None
              float eps,
              float[:, ::1] out,          # OUT [rows, n], not aliasing x / skip
              int num_threads=1):
    cdef Py_ssize_t r, rows = x.shape[0], n = x.shape[1]
    cdef const float *sk = NULL
    cdef const float *b = NULL
    cdef int av = _level
    if rows == 0 or n == 0:
        return
    if gamma.shape[0] != n or (beta is not None and beta.shape[0] != n):
        raise ValueError("LayerNorm scale/bias length differs from the normalised axis")
    if out.shape[0] != rows or out.shape[1] != n:
        raise ValueError("LayerNorm output shape differs from the input's")
    if skip is not None:
        if skip.shape[0] != rows or skip.shape[1] != n:
            raise ValueError("LayerNorm skip shape differs from the input's")
    if beta is not None:
        b = &beta[0]
    if skip is not None:
        sk = &skip[0, 0]
    with nogil:
        for r in prange(rows, num_threads=_nt(4 * rows * n, num_threads), schedule="static"):
            dscy_layernorm(av, &x[r, 0], sk + r * n if sk != NULL else NULL, &out[r, 0], n,
                           &gamma[0], b, eps)


def scale_mask_softmax(float[:, :, :, ::1] s,           # IN/OUT [B, H, S, T] scores
                       const float[:, :, :, :] mask,  # IN broadcast view [B, H, S, T] (unit last stride) or None
                       float scale, int num_threads=1):
    """s = softmax(s * scale + mask) over the last axis, in place."""
    cdef Py_ssize_t B = s.shape[0], H = s.shape[1], S = s.shape[2], T = s.shape[3]
    cdef Py_ssize_t rows = B * H * S, r, bi, hi, qi
    cdef int av = _level
    cdef bint has_mask = mask is not None
    if rows == 0 or T == 0:
        return
    if has_mask and (mask.shape[0] != B or mask.shape[1] != H or mask.shape[2] != S
                     or mask.shape[3] != T):
        raise ValueError("attention mask view must have the scores' shape")
    if has_mask and T > 1 and mask.strides[3] != sizeof(float):
        raise ValueError("attention mask view needs a unit stride along keys")
    with nogil:
        for r in prange(rows, num_threads=_nt(rows * T, num_threads), schedule="static"):
            bi = r // (H * S)
            hi = (r // S) % H
            qi = r % S
            if has_mask:
                dscy_scale_mask_softmax(av, &s[bi, hi, qi, 0], &mask[bi, hi, qi, 0], T, scale)
            else:
                dscy_scale_mask_softmax(av, &s[bi, hi, qi, 0], NULL, T, scale)


cdef struct _ColBlock:
    Py_ssize_t o, jb, jn


cdef inline _ColBlock _col_block(Py_ssize_t it, Py_ssize_t nb, Py_ssize_t inner) noexcept nogil:
    """Work item it of a [outer, n, inner] slice in blocks of 256 columns (nb a row): its outer
    index, first column and width. softmax_axis and dfl_decode share the grid, so DFL's
    probabilities are the Softmax op's (the exp pass's vector / scalar split follows it).
    (Returned by value: a prange body's variables are private only where it assigns them.)"""
    cdef _ColBlock c
    c.o = it // nb
    c.jb = (it % nb) * 256
    c.jn = 256 if inner - c.jb > 256 else inner - c.jb
    return c


def softmax_axis(const float[:, :, ::1] x,  # IN  [outer, n, inner]
                 float[:, :, ::1] out,       # OUT [outer, n, inner]
                 int num_threads=1):
    """Softmax over the middle axis (a non-trailing Softmax axis): work items are (outer index,
    block of 256 columns), so one image's slice is split over the threads too."""
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2], it
    cdef int av = _level
    if out.shape[0] != outer or out.shape[1] != n or out.shape[2] != inner:
        raise ValueError("softmax_axis: output shape mismatch")
    if outer == 0 or n == 0 or inner == 0:
        return
    cdef Py_ssize_t nb = (inner + 255) // 256
    cdef _ColBlock cb
    with nogil:
        for it in prange(outer * nb, num_threads=_nt(outer * n * inner, num_threads),
                         schedule="static"):
            cb = _col_block(it, nb, inner)
            dscy_softmax_mid(av, &x[cb.o, 0, 0], &out[cb.o, 0, 0], n, inner, cb.jb, cb.jn)


DFL_MAX_BINS = DSCY_DFL_MAX_BINS


def dfl_decode(const float[:, :, ::1] x,     # IN  [outer, bins, inner]
               float[:, ::1] out,            # OUT [outer, inner]
               const float[::1] w,           # IN  [bins]: the 1x1 conv's weights (float, or the
                                             #     QConv's integers for the quantized form)
               float bias=0, quant=None, int num_threads=1):
    """YOLOv8's DFL: out[o, j] = sum_k w[k] * softmax_k(x[o, k, j]) + bias, the softmax over
    the bins axis exactly as softmax_axis computes it (same column blocks of 256).
    quant = (scale, zero_point, qmin, qmax, bias_i, out_scale[, mlo, mhi, ma, mb]): each
    probability quantized by the QuantizeLinear kernel (dscy_quantize8) to the 8-bit type
    whose range is [qmin, qmax] (uint8 or int8), then
    QConv's float epilogue of v = sum_k (q - zero_point) * w[k] + bias_i: f = float32(v) *
    out_scale [, its mid step rint(clamp(f, mlo, mhi)) * ma + mb]; `bias` unused."""
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2], it
    cdef int av = _level
    cdef dscy_dfl_quant q
    cdef float qlo, qhi
    cdef const dscy_dfl_quant *qp = NULL
    if out.shape[0] != outer or out.shape[1] != inner:
        raise ValueError("dfl_decode: output shape mismatch")
    if w.shape[0] != n or n < 1 or n > DSCY_DFL_MAX_BINS:
        raise ValueError(f"dfl_decode: {w.shape[0]} weights for {n} bins (1..{DSCY_DFL_MAX_BINS})")
    if quant is not None:
        if len(quant) not in (6, 10):
            raise ValueError("dfl_decode: quant takes 6 or 10 values")
        q.qs, q.qz, qlo, qhi, q.bias_i, q.scale = quant[:6]
        q.mid = len(quant) == 10
        q.mlo, q.mhi, q.ma, q.mb = quant[6:] if q.mid else (0, 0, 0, 0)
        if not (q.qs > 0) or (qlo, qhi) not in ((0, 255), (-128, 127)) \
                or not qlo <= q.qz <= qhi or q.qz != <int>q.qz:
            raise ValueError(f"dfl_decode: unsupported quantization {quant!r}")
        q.sgn = qlo < 0
        for it in range(n):
            if w[it] != <int>w[it] or not -128 <= w[it] <= 128:
                raise ValueError("dfl_decode: quantized weights must be integers in [-128, 128]")
        if abs(q.bias_i) > 2**31 - 1 - n * 383 * 128:
            raise ValueError("dfl_decode: bias_i out of range")
        qp = &q
    if outer == 0 or inner == 0:
        return
    cdef Py_ssize_t nb = (inner + 255) // 256
    cdef _ColBlock cb
    with nogil:
        for it in prange(outer * nb, num_threads=_nt(outer * n * inner, num_threads),
                         schedule="static"):
            cb = _col_block(it, nb, inner)
            dscy_dfl_cols(av, &x[cb.o, 0, cb.jb], inner, n, cb.jn, &w[0], bias, qp,
                          &out[cb.o, cb.jb])


def yolo_boxes(const float[:, :, ::1] d,      # IN  [N, 4, A]: left, top, right, bottom
               const float[:, ::1] anchors,    # IN  [2, A]
               const float[::1] strides,       # IN  [A]
               float k, bint div,
               float[:, :, ::1] y):            # OUT [N, >= 4, A]: rows 0-3 written
    """dist2bbox (xywh) times the strides, as YOLOv8 exports it, element by element in the
    graph's float32 operations and order: x1y1 = anchors - lt, x2y2 = anchors + rb,
    ((x1y1 + x2y2) / k (div) or * k) * strides, (x2y2 - x1y1) * strides."""
    cdef Py_ssize_t n, j, N = d.shape[0], A = d.shape[2]
    cdef float a0, a1, x1, y1, x2, y2, s
    if d.shape[1] != 4 or anchors.shape[0] != 2 or anchors.shape[1] != A \
            or strides.shape[0] != A or y.shape[0] != N or y.shape[1] < 4 or y.shape[2] != A:
        raise ValueError("yolo_boxes: shapes do not match")
    with nogil:
        for n in range(N):
            for j in range(A):
                a0 = anchors[0, j]
                a1 = anchors[1, j]
                x1 = a0 - d[n, 0, j]
                y1 = a1 - d[n, 1, j]
                x2 = a0 + d[n, 2, j]
                y2 = a1 + d[n, 3, j]
                s = strides[j]
                if div:
                    y[n, 0, j] = ((x1 + x2) / k) * s
                    y[n, 1, j] = ((y1 + y2) / k) * s
                else:
                    y[n, 0, j] = ((x1 + x2) * k) * s
                    y[n, 1, j] = ((y1 + y2) * k) * s
                y[n, 2, j] = (x2 - x1) * s
                y[n, 3, j] = (y2 - y1) * s


cdef inline void _ln_quant_row(int av, const float *x, const float *skip, const float *g,
                               const float *b, float eps, float *y, unsigned char *qr,
                               bint q_signed, float scale, float zp, bint dq_out,
                               Py_ssize_t n) noexcept nogil:
    # level 2: the row's last pass quantizes and dequantizes in registers
    if dscy_layernorm_zq(av, x, skip, y, n, g, b, eps, qr, q_signed, scale, zp, dq_out):
        return
    dscy_layernorm(av, x, skip, y, n, g, b, eps)
    # the QuantizeLinear and DequantizeLinear ops' own row functions
    dscy_quantize8(av, q_signed, y, qr, n, scale, zp)
    if dq_out:
        dscy_dequant_row(av, q_signed, qr, y, n, zp, scale, NULL)


cdef _ln_check(Py_ssize_t rows, Py_ssize_t n, const float[:, ::1] skip, const float[::1] gamma,
               const float[::1] beta, unsigned char[:, ::1] q, float[:, ::1] dq):
    if gamma.shape[0] != n or (beta is not None and beta.shape[0] != n):
        raise ValueError("LayerNorm scale/bias length differs from the normalised axis")
    if (dq is not None and (dq.shape[0] != rows or dq.shape[1] != n)) or q.shape[0] != rows \
            or q.shape[1] != n:
        raise ValueError("LayerNorm output shape differs from the input's")
    if skip is not None and (skip.shape[0] != rows or skip.shape[1] != n):
        raise ValueError("LayerNorm skip shape differs from the input's")


def layernorm_quant(const float[:, ::1] x,      # IN  [rows, n]
                    const float[:, ::1] skip,   # IN  [rows, n] residual added first, or None
                    const float[::1] gamma,     # IN  [n]
                    const float[::1] beta,      # IN  [n] or None
                    float eps,
                    unsigned char[:, ::1] q,    # OUT [rows, n] uint8 (int8 output: its uint8 view)
                    bint q_signed,
                    float[:, ::1] dq,           # OUT [rows, n]: (q - zp) * scale; not aliasing x / skip
                    float scale, float zp, bint dq_out, int num_threads=1):
    """LayerNorm rows, then QuantizeLinear (the same kernels as the op: x / scale, round half
    to even, saturate) and, when dq_out, DequantizeLinear into dq, each row while in cache.
    Without dq_out, dq is scratch for the normalised rows."""
    cdef Py_ssize_t r, rows = x.shape[0], n = x.shape[1]
    cdef const float *sk = NULL
    cdef const float *b = NULL
    cdef int av = _level
    if rows == 0 or n == 0:
        return
    if dq is None:
        raise ValueError("layernorm_quant: dq is required (output or scratch)")
    _ln_check(rows, n, skip, gamma, beta, q, dq)
    if skip is not None:
        sk = &skip[0, 0]
    if beta is not None:
        b = &beta[0]
    with nogil:
        for r in prange(rows, num_threads=_nt(4 * rows * n, num_threads), schedule="static"):
            _ln_quant_row(av, &x[r, 0], sk + r * n if sk != NULL else NULL, &gamma[0], b, eps,
                          &dq[r, 0], &q[r, 0], q_signed, scale, zp, dq_out, n)


cdef class LayerNormQ8Call:
    """layernorm_quant_x8's call on fixed arrays, prepared once (pointers, the dequantization
    structs, the scratch rows): calling it runs the rows with no argument handling.
    layernorm_quant_x8 makes one per call; the LayerNorm op's bound step keeps one
    (layernorm_quant_x8_bound). The level and thread count are read at each call."""
    cdef const unsigned char *x
    cdef const float *sk
    cdef const unsigned char *s8p
    cdef const float *g
    cdef const float *b
    cdef unsigned char *q
    cdef float *dq
    cdef float *rows_buf
    cdef Py_ssize_t rows, n, rstride, bufrows
    cdef dscy_ln_x8 x8, s8
    cdef float eps, scale, zp
    cdef bint q_signed, dq_out
    cdef int num_threads
    cdef object keep                   # the arrays the pointers above point into

    def __call__(self):
        cdef Py_ssize_t r, rows = self.rows, n = self.n
        cdef int av = _level
        cdef int nt = _nt(4 * rows * n, self.num_threads)
        cdef bint zrow = av >= 2 and n % 32 == 0
        cdef const unsigned char *x = self.x
        cdef const float *sk = self.sk
        cdef const unsigned char *s8p = self.s8p
        cdef const float *g = self.g
        cdef const float *b = self.b
        cdef unsigned char *q = self.q
        cdef float *dq = self.dq
        cdef float *rb = self.rows_buf
        cdef Py_ssize_t rstride = self.rstride
        cdef float eps = self.eps, scale = self.scale, zp = self.zp
        cdef bint q_signed = self.q_signed, dq_out = self.dq_out
        cdef dscy_ln_x8 *x8 = &self.x8
        cdef dscy_ln_x8 *s8 = &self.s8
        cdef float *buf
        cdef const float *skr
        if nt > self.bufrows:
            nt = <int>self.bufrows
        # per thread: scratch rows for x and the skip (levels without the zmm row, which reads
        # the bytes as it starts: its first pass dequantizes x [+ skip]), then the normalised
        # row where dq is None, then n floats of its own: a row prefetches the next row's x
        # (x + n), which must not be the other thread's row (the line ping-pong between the
        # cores made the call 2x slower)
        if zrow:
            with nogil:
                for r in prange(rows, num_threads=nt, schedule="static"):
                    dscy_layernorm_zq8(av, x + r * n, x8, sk + r * n if sk != NULL else NULL,
                                       s8p + r * n if s8p != NULL else NULL,
                                       s8 if s8p != NULL else NULL,
                                       (dq + r * n) if dq != NULL else
                                       (rb + threadid() * rstride + 2 * n),
                                       n, g, b, eps, q + r * n, q_signed, scale, zp, dq_out)
            return
        with nogil:
            for r in prange(rows, num_threads=nt, schedule="static"):
                buf = rb + threadid() * rstride
                dscy_dequant_row(av, x8.sgn, x + r * n, buf, n, x8.zp, x8.scale, x8.bias)
                skr = sk + r * n if sk != NULL else NULL
                if s8p != NULL:
                    dscy_dequant_row(av, s8.sgn, s8p + r * n, buf + n, n, s8.zp, s8.scale,
                                     NULL)
                    skr = buf + n
                _ln_quant_row(av, buf, skr, g, b, eps,
                              (dq + r * n) if dq != NULL else (buf + 2 * n),
                              q + r * n, q_signed, scale, zp, dq_out, n)


def layernorm_quant_x8_bound(const unsigned char[:, ::1] x,   # IN  [rows, n] uint8 (int8: its uint8 view)
                             bint x_signed, float x_scale, float x_zp,
                             const float[::1] x_bias,      # IN  [n] or None
                             const float[:, ::1] skip,     # IN  [rows, n] residual added first, or None
                             const float[::1] gamma,       # IN  [n]
                             const float[::1] beta,        # IN  [n] or None
                             float eps,
                             unsigned char[:, ::1] q,      # OUT [rows, n] uint8 (int8: its uint8 view)
                             bint q_signed,
                             float[:, ::1] dq,             # OUT [rows, n], not aliasing skip; None
                                                           #     without dq_out
                             float scale, float zp, bint dq_out, int num_threads=1,
                             const unsigned char[:, ::1] skip8=None,   # IN  [rows, n] 8-bit residual
                             bint skip_signed=False, float skip_scale=1.0, float skip_zp=0.0,
                             float[:, ::1] scratch=None):  # [>= num_threads, >= 4 * n + 16] or None
    """layernorm_quant_x8's call on these arrays as a LayerNormQ8Call (calling it is that call;
    see layernorm_quant_x8), or None for an empty x."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if rows == 0 or n == 0:
        return None
    if dq is None and dq_out:
        raise ValueError("layernorm_quant_x8: dq_out needs dq")
    _ln_check(rows, n, skip, gamma, beta, q, dq)
    cdef LayerNormQ8Call c = LayerNormQ8Call.__new__(LayerNormQ8Call)
    c.rows, c.n = rows, n
    c.x = &x[0, 0]
    c.x8.q = NULL
    c.x8.sgn = x_signed
    c.x8.zp = x_zp
    c.x8.scale = x_scale
    c.x8.bias = NULL
    if x_bias is not None:
        if x_bias.shape[0] != n:
            raise ValueError("LayerNorm input bias length differs from the normalised axis")
        c.x8.bias = &x_bias[0]
    c.s8.q = NULL
    c.s8.sgn = skip_signed
    c.s8.zp = skip_zp
    c.s8.scale = skip_scale
    c.s8.bias = NULL
    c.s8p = NULL
    if skip8 is not None:
        if skip is not None:
            raise ValueError("layernorm_quant_x8: a float skip or an 8-bit skip8, not both")
        if skip8.shape[0] != rows or skip8.shape[1] != n:
            raise ValueError("LayerNorm skip shape differs from the input's")
        c.s8p = &skip8[0, 0]
    c.sk = &skip[0, 0] if skip is not None else NULL
    c.b = &beta[0] if beta is not None else NULL
    c.g = &gamma[0]
    c.q = &q[0, 0]
    c.dq = &dq[0, 0] if dq is not None else NULL
    c.eps, c.scale, c.zp = eps, scale, zp
    c.q_signed, c.dq_out = q_signed, dq_out
    c.num_threads = num_threads
    cdef int nt = _nt(4 * rows * n, num_threads)
    cdef float[:, ::1] rowbuf
    if scratch is not None:
        if scratch.shape[0] < nt or scratch.shape[1] < 4 * n + 16:
            raise ValueError(f"layernorm_quant_x8: scratch needs {nt} rows of {4 * n + 16}")
        rowbuf = scratch
    else:
        rowbuf = np.empty((max(nt, 1), 4 * n + 16), np.float32)
    c.rows_buf = &rowbuf[0, 0]
    c.rstride = rowbuf.shape[1]
    c.bufrows = rowbuf.shape[0]
    c.keep = (x, x_bias, skip, gamma, beta, q, dq, skip8, rowbuf)
    return c


def layernorm_quant_x8(*args, **kwargs):
    """layernorm_quant of the floats (x - x_zp) * x_scale [+ x_bias] (each step rounded to
    float32: the QGemm mid step whose 8-bit values x holds, graph/fusion.py
    _layernorm_8bit_input): each row dequantized by the DequantizeLinear op's row function into
    its thread's scratch row (the zmm row: as its first pass reads it), then the same row
    steps, so the outputs equal layernorm_quant on those floats bit for bit.
    skip8 (instead of skip): an 8-bit residual, the floats (skip8 - skip_zp) * skip_scale (the
    DequantizeLinear of another LayerNorm's quantized output, graph/fusion.py
    _layernorm_8bit_skip), dequantized the same way. Without dq_out, dq may be None: the
    normalised rows then go through a scratch row per thread. scratch: those rows, kept by the
    caller (a fresh array per call costs page faults: 5 us of a 25 us call here); None: one
    allocated here. Arguments: layernorm_quant_x8_bound's (x, x_signed, x_scale, x_zp, x_bias,
    skip, gamma, beta, eps, q, q_signed, dq, scale, zp, dq_out, num_threads=1, skip8=None,
    skip_signed=False, skip_scale=1.0, skip_zp=0.0, scratch=None)."""
    c = layernorm_quant_x8_bound(*args, **kwargs)
    if c is not None:
        c()


def dw_conv_nhwc_q8(const unsigned char[:, :, :, ::1] x,   # IN  [B, H, W, C] u8 (s8: its u8 view)
                    bint x_signed, float zx,
                    const float[:, ::1] w,                # IN  [KH*KW, C] (tap-major)
                    int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                    float[:, :, :, ::1] out,              # OUT [B, Ho, Wo, C]
                    int num_threads=1):
    """Exact integer depthwise conv of quantized NHWC activations into float32 sums (see
    csrc/f32_fused.h dscy_dw_nhwc_q8_body); rows of the output in parallel."""
    cdef Py_ssize_t B = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2], r
    cdef int av = _level
    if out.shape[0] != B or out.shape[3] != C or w.shape[0] != kh * kw or w.shape[1] != C:
        raise ValueError("depthwise shapes do not match")
    if B == 0 or Ho == 0 or Wo == 0 or C == 0:
        return
    with nogil:
        for r in prange(B * Ho, num_threads=_nt(B * Ho * Wo * C * kh * kw, num_threads),
                        schedule="static"):
            dscy_dw_nhwc_q8(av, &x[r // Ho, 0, 0, 0], x_signed, H, W, C, zx, &w[0, 0], kh, kw,
                            sh, sw, dh, dw, pt, pl, r % Ho, Wo, &out[r // Ho, r % Ho, 0, 0])


def squeeze_excite(const float[:, :, ::1] x,   # IN  [N, C, HW]
                   const float[:, ::1] w1t,     # IN  [C, R]: the first 1x1 conv's W transposed
                   const float[::1] b1,         # IN  [R] or None
                   int a1, float p10, float p11,
                   const float[:, ::1] w2t,     # IN  [R, C]: the second's W transposed
                   const float[::1] b2,         # IN  [C] or None
                   int a2, float p20, float p21,
                   float[:, :, ::1] out,        # OUT [N, C, HW] (may be x itself)
                   int num_threads=1):
    """Squeeze-excitation in one call: per image the channel means of x (GlobalAveragePool's),
    the gate
    g = act2(W2 act1(W1 mean + b1) + b2), then out[n, c] = x[n, c] * g[c] (ACTIVATIONS codes).
    The means and the scaling split the rows over the threads; the gate runs on one."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2], R = w1t.shape[1]
    cdef Py_ssize_t rows = N * C, t, n, r0, r1
    cdef int av = _level, nt
    cdef const float *pb1 = NULL
    cdef const float *pb2 = NULL
    if w1t.shape[0] != C or w2t.shape[1] != C or w2t.shape[0] != R:
        raise ValueError(f"squeeze_excite: weights {w1t.shape[0]}x{w1t.shape[1]} and "
                         f"{w2t.shape[0]}x{w2t.shape[1]} do not fit {C} channels")
    if b1 is not None:
        if b1.shape[0] != R:
            raise ValueError("squeeze_excite: first bias length differs from the squeeze width")
        pb1 = &b1[0]
    if b2 is not None:
        if b2.shape[0] != C:
            raise ValueError("squeeze_excite: second bias length differs from the channels")
        pb2 = &b2[0]
    if out.shape[0] != N or out.shape[1] != C or out.shape[2] != HW:
        raise ValueError("squeeze_excite: output shape differs from the input's")
    if rows == 0 or HW == 0 or R == 0:
        if rows and HW and R == 0:
            raise ValueError("squeeze_excite: zero squeeze width")
        return
    cdef float *m = <float *>malloc((rows * 2 + R + 8) * sizeof(float))
    if m == NULL:
        raise MemoryError()
    cdef float *g = m + rows
    cdef float *h = g + rows
    cdef const float *xp = &x[0, 0, 0]
    cdef float *op = &out[0, 0, 0]
    nt = _nt(rows * HW, num_threads)
    try:
        with nogil:
            # the means exactly as the GlobalAveragePool op computes them
            for t in prange(rows, num_threads=nt, schedule="static"):
                m[t] = dscy_plane_mean(xp + t * HW, HW)
            for n in range(N):
                dscy_se_gate(av, m + n * C, C, &w1t[0, 0], pb1, R, a1, p10, p11, &w2t[0, 0],
                             pb2, a2, p20, p21, h, g + n * C)
            if nt > 1:
                for t in prange(nt, num_threads=nt, schedule="static"):
                    dscy_se_scale(av, xp, g, HW, rows * t // nt, rows * (t + 1) // nt, op)
            else:
                dscy_se_scale(av, xp, g, HW, 0, rows, op)
    finally:
        free(m)


def gelu_q8_table(int mid_zp, bint mid_signed, const float[::1] mid_scale,
                  const float[::1] mid_bias, float y_scale, int out_zp, bint out_signed):
    """The INT8 kernels' table epilogue (dscy_kernels.h, lut) of a mid step followed by GELU and
    an 8-bit output: for channel n and each mid value q (u8: 0..255, s8: -128..127) the output
    of f = (q - mid_zp) * mid_scale[n] + mid_bias[n] (float32 steps), g = GELU(f) with the exact
    erf in double, then g / y_scale, rounded half to even, + out_zp, saturated: the arithmetic of
    kernels.qs8_matmul_reference. Returns uint8 [N * 256 + 4] (an s8 output as its bytes; 4
    bytes of padding for the 32-bit gathers)."""
    cdef Py_ssize_t N = mid_scale.shape[0], n
    cdef int i, q, v
    cdef float f
    cdef double t, g, ys = y_scale, sq2 = sqrt(2.0)
    cdef int lo = -128 if out_signed else 0, hi = 127 if out_signed else 255
    if mid_bias.shape[0] != N:
        raise ValueError("mid scale and bias lengths differ")
    if not (y_scale > 0 and isfinite(y_scale)):
        raise ValueError(f"y_scale must be a positive finite float, got {y_scale!r}")
    out = np.zeros(N * 256 + 4, np.uint8)
    cdef unsigned char[::1] o = out
    with nogil:
        for n in range(N):
            for i in range(256):
                q = i - 128 if mid_signed else i
                f = <float>(q - mid_zp) * mid_scale[n]
                f = f + mid_bias[n]
                t = f
                g = 0.5 * t * (1.0 + erf(t / sq2))
                if y_scale != 1.0:
                    g = g / ys
                v = <int>rint(g) + out_zp if fabs(g) < 1e6 else (hi if g > 0 else lo)
                v = lo if v < lo else (hi if v > hi else v)
                o[n * 256 + i] = <unsigned char>(v & 0xff)
    return out
