/* Scaled dot-product attention, FP32, one (batch, head) per work item:
 *   out[b, i, h, :] = softmax(scale * q[b, i, h, :] . k[b, :, h, :]^T + mask[b, h, i, :]) v[b, :, h, :]
 * q, k, v, out are strided [B, S|T, H, D] views (the layout the exporter's Reshape gives, the
 * last axis contiguous), so no transposed copies are made; the mask is broadcast by strides
 * (0 along broadcast axes, keys contiguous).
 *
 * Per item: K is packed once into panels of 16 keys, ktp[jb][d][16] (8x8 transposes; zero
 * beyond T), and V into panels of 16 columns, vp[eb][j][16], so both inner loops read one
 * contiguous 64-byte row per step whatever the exporter's strides are (v rows of a fused QKV
 * buffer are 9 KiB apart at BERT-base). Blocks of 6 query rows then get their score rows
 * (6 x 16 keys per step, twelve named accumulators), scale + mask + softmax, and their output
 * rows (6 x 16 columns per step). The generic build runs the same loops over the same panels
 * in plain C.
 * With the FP32 GEMMs also on this package's kernels (f32_gemm), a transformer makes no BLAS
 * call at all: OpenBLAS's workers keep spinning after each call and, on a 2-core machine, take
 * turns of a scheduler time slice with the OpenMP threads of the next op. */
#include <stdlib.h>
#include <stdint.h>
#include <stddef.h>
#include "dscy_common.h"
#ifdef __SSE__
#include <xmmintrin.h>
#endif
#include "f32_fused.h"
#include "dscy_exp8.h"

#ifdef __AVX2__
#define ATT_AVX2 1
#else
#define ATT_AVX2 0
#endif

#if defined(__AVX512F__)
/* avx512 builds: blocks of 12 query rows, each row one zmm per 16 keys / columns, two panels per
 * step (24 accumulators); the block's queries and probabilities transposed first ([d][12] and
 * [j][12]) so every broadcast is one pointer plus a constant offset */
#define ATT_Z 1
#define QB 12
#define QT 16   /* row stride of the transposed blocks: QB rows padded to two 8-row groups */
#else
#define ATT_Z 0
#define QB 6    /* query rows per block */
#define QT QB   /* (the transposed blocks are the avx512 build's) */
#endif
#define KW 16   /* keys per K panel, output columns per V panel */

DSCY_THREAD_BUFFER(att_buffer)


/* K of one head, [T][D] rows ks apart, into panels of KW keys: ktp[jb][d][KW] (keys jb*KW + i
 * for i < KW; zero beyond T), so the score loop reads one contiguous 64-byte row per d */
static void pack_k(const float *k, ptrdiff_t ks, int T, int D, float *ktp) {
    int T16 = (T + KW - 1) / KW * KW, j0 = 0;
#ifdef __AVX2__
    for (; j0 + 8 <= T; j0 += 8) {
        float *dst = ktp + (size_t)(j0 / KW) * D * KW + j0 % KW;
        int d0 = 0;
        for (; d0 + 8 <= D; d0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(k + (size_t)(j0 + i) * ks + d0);
            dscy_tr8x8_ps(r);
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (size_t)(d0 + i) * KW, r[i]);
        }
        for (; d0 < D; d0++)
            for (int i = 0; i < 8; i++) dst[(size_t)d0 * KW + i] = k[(size_t)(j0 + i) * ks + d0];
    }
#endif
    for (int j = j0; j < T16; j++) {
        float *dst = ktp + (size_t)(j / KW) * D * KW + j % KW;
        if (j < T) for (int d = 0; d < D; d++) dst[(size_t)d * KW] = k[(size_t)j * ks + d];
        else       for (int d = 0; d < D; d++) dst[(size_t)d * KW] = 0.0f;
    }
}

/* V of one head, [T][Dv] rows vs apart, into panels of KW columns: vp[eb][j][KW] (zero beyond
 * Dv), so the context loop reads one contiguous 64-byte row per key */
static void pack_v(const float *v, ptrdiff_t vs, int T, int Dv, float *vp) {
    int nb = (Dv + KW - 1) / KW;
    for (int eb = 0; eb < nb; eb++) {
        float *dst = vp + (size_t)eb * T * KW;
        int w = Dv - eb * KW < KW ? Dv - eb * KW : KW;
        for (int j = 0; j < T; j++) {
            const float *src = v + (size_t)j * vs + eb * KW;
            float *d = dst + (size_t)j * KW;
#ifdef __AVX2__
            if (w == KW) {
                _mm256_storeu_ps(d, _mm256_loadu_ps(src));
                _mm256_storeu_ps(d + 8, _mm256_loadu_ps(src + 8));
                continue;
            }
#endif
            int e = 0;
            for (; e < w; e++) d[e] = src[e];
            for (; e < KW; e++) d[e] = 0.0f;
        }
    }
}

#ifdef __AVX2__
/* NR (<= 6) rows x 16 columns: named accumulators (an array of them is spilled by GCC) */
#define ACC_DECL __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, \
    a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00
#define ACC_STEP(r, src, x0, x1) if (NR > r) { __m256 b = _mm256_broadcast_ss(src); \
    a##r##0 = _mm256_fmadd_ps(b, x0, a##r##0); a##r##1 = _mm256_fmadd_ps(b, x1, a##r##1); }
#define ACC_ALL(src_r, x0, x1) ACC_STEP(0, src_r(0), x0, x1) ACC_STEP(1, src_r(1), x0, x1) \
    ACC_STEP(2, src_r(2), x0, x1) ACC_STEP(3, src_r(3), x0, x1) ACC_STEP(4, src_r(4), x0, x1) \
    ACC_STEP(5, src_r(5), x0, x1)
#define ACC_OUT(f) f(0, a00, a01) f(1, a10, a11) f(2, a20, a21) f(3, a30, a31) f(4, a40, a41) \
    f(5, a50, a51)

/* scores of NR query rows (q rows qs apart) against every K panel -> s[r][T16]: NR x 16 keys per
 * step; each d step loads one panel row and broadcasts NR query values */
static inline __attribute__((always_inline)) void scores_nr(const float *q, ptrdiff_t qs,
        const float *ktp, int D, int T16, float *s, const int NR) {
    for (int jb = 0; jb < T16 / KW; jb++) {
        const float *kp = ktp + (size_t)jb * D * KW;
        ACC_DECL;
        for (int d = 0; d < D; d++) {
            __m256 k0 = _mm256_loadu_ps(kp + (size_t)d * KW), k1 = _mm256_loadu_ps(kp + (size_t)d * KW + 8);
#define QSRC(r) (q + (r) * qs + d)
            ACC_ALL(QSRC, k0, k1)
#undef QSRC
        }
#define SOUT(r, x0, x1) if (NR > r) { _mm256_storeu_ps(s + (size_t)(r) * T16 + jb * KW, x0); \
        _mm256_storeu_ps(s + (size_t)(r) * T16 + jb * KW + 8, x1); }
        ACC_OUT(SOUT)
#undef SOUT
    }
}

/* o[r][0..Dv) = sum_{j<T} p[r][j] * v[j, :] for NR rows (p rows T16 apart, o rows os apart) */
static inline __attribute__((always_inline)) void context_nr(const float *p, int T16, int T,
        const float *vp, int Dv, float *o, ptrdiff_t os, const int NR) {
    for (int eb = 0; eb * KW < Dv; eb++) {
        const float *vb = vp + (size_t)eb * T * KW;
        ACC_DECL;
        for (int j = 0; j < T; j++) {
            __m256 v0 = _mm256_loadu_ps(vb + (size_t)j * KW), v1 = _mm256_loadu_ps(vb + (size_t)j * KW + 8);
#define PSRC(r) (p + (size_t)(r) * T16 + j)
            ACC_ALL(PSRC, v0, v1)
#undef PSRC
        }
        int w = Dv - eb * KW;
#define OOUT(r, x0, x1) if (NR > r) { float *orow = o + (size_t)(r) * os + eb * KW; \
        if (w >= KW) { _mm256_storeu_ps(orow, x0); _mm256_storeu_ps(orow + 8, x1); } \
        else { float t[KW]; _mm256_storeu_ps(t, x0); _mm256_storeu_ps(t + 8, x1); \
               for (int e = 0; e < w; e++) orow[e] = t[e]; } }
        ACC_OUT(OOUT)
#undef OOUT
    }
}
#endif

static void scores(const float *q, ptrdiff_t qs, int nr, const float *ktp, int D, int T16,
                   float *s) {
#ifdef __AVX2__
    switch (nr) {
    case 6: scores_nr(q, qs, ktp, D, T16, s, 6); return;
    case 5: scores_nr(q, qs, ktp, D, T16, s, 5); return;
    case 4: scores_nr(q, qs, ktp, D, T16, s, 4); return;
    case 3: scores_nr(q, qs, ktp, D, T16, s, 3); return;
    case 2: scores_nr(q, qs, ktp, D, T16, s, 2); return;
    default: scores_nr(q, qs, ktp, D, T16, s, 1); return;
    }
#else
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < T16; j++) {
            const float *kp = ktp + (size_t)(j / KW) * D * KW + j % KW;
            float a = 0.0f;
            for (int d = 0; d < D; d++) a += q[r * qs + d] * kp[(size_t)d * KW];
            s[(size_t)r * T16 + j] = a;
        }
#endif
}

static void context(const float *p, int T16, int T, const float *vp, int Dv, float *o,
                    ptrdiff_t os, int nr) {
#ifdef __AVX2__
    switch (nr) {
    case 6: context_nr(p, T16, T, vp, Dv, o, os, 6); return;
    case 5: context_nr(p, T16, T, vp, Dv, o, os, 5); return;
    case 4: context_nr(p, T16, T, vp, Dv, o, os, 4); return;
    case 3: context_nr(p, T16, T, vp, Dv, o, os, 3); return;
    case 2: context_nr(p, T16, T, vp, Dv, o, os, 2); return;
    default: context_nr(p, T16, T, vp, Dv, o, os, 1); return;
    }
#else
    for (int r = 0; r < nr; r++)
        for (int e = 0; e < Dv; e++) {
            const float *vb = vp + (size_t)(e / KW) * T * KW + e % KW;
            float a = 0.0f;
            for (int j = 0; j < T; j++) a += p[(size_t)r * T16 + j] * vb[(size_t)j * KW];
            o[(size_t)r * os + e] = a;
        }
#endif
}

#if ATT_Z
/* x[r][0..n) (nr <= QB rows ld apart) -> xt[j][QT] (rows past nr zero): 8 x 8 transposes of
 * two row groups (element by element, as it first was, this was a fifth of BERT-base's
 * attention: 2300 scalar moves a block) */
static void tr_rows(const float *x, ptrdiff_t ld, int nr, int n, float *xt) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int g = 0; g < QT / 8; g++) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = 8 * g + i < nr ? _mm256_loadu_ps(x + (size_t)(8 * g + i) * ld + j)
                                      : _mm256_setzero_ps();
            dscy_tr8x8_ps(r);
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(xt + (size_t)(j + i) * QT + 8 * g, r[i]);
        }
    for (; j < n; j++)
        for (int r = 0; r < QT; r++) xt[(size_t)j * QT + r] = r < nr ? x[(size_t)r * ld + j] : 0.0f;
}

/* acc[r][c] (+)= sum_i a[i][r] * b[i][c]: QB rows of a transposed at at[i][QT], P panels of 16
 * columns of b at bp + c * pstride, n steps (bp rows 16 floats apart), into out rows
 * (r < nr) ostride apart (w columns of the last panel valid) */
static inline __attribute__((always_inline)) void zblock(const float *at, const float *bp,
        ptrdiff_t pstride, int n, const int P, float *out, ptrdiff_t ostride, int nr, int w) {
    __m512 acc[2][QB];
    #pragma GCC unroll 24
    for (int c = 0; c < P; c++)
        for (int r = 0; r < QB; r++) acc[c][r] = _mm512_setzero_ps();
    for (int i = 0; i < n; i++) {
        __m512 b0 = _mm512_loadu_ps(bp + (size_t)i * KW);
        __m512 b1 = P > 1 ? _mm512_loadu_ps(bp + pstride + (size_t)i * KW) : b0;
        const float *ai = at + (size_t)i * QT;
        #pragma GCC unroll 12
        for (int r = 0; r < QB; r++) {
            __m512 a = _mm512_set1_ps(ai[r]);
            acc[0][r] = _mm512_fmadd_ps(a, b0, acc[0][r]);
            if (P > 1) acc[1][r] = _mm512_fmadd_ps(a, b1, acc[1][r]);
        }
    }
    #pragma GCC unroll 24
    for (int c = 0; c < P; c++)
        for (int r = 0; r < QB; r++) {
            if (r >= nr) continue;
            float *o = out + (size_t)r * ostride + c * KW;
            int wc = c == P - 1 ? w : KW;
            if (wc >= KW) _mm512_storeu_ps(o, acc[c][r]);
            else _mm512_mask_storeu_ps(o, (__mmask16)((1u << wc) - 1), acc[c][r]);
        }
}

/* scores of a block: qt [D][QT] against the K panels -> s[r][T16] */
static void scores_z(const float *qt, const float *ktp, int D, int T16, float *s, int nr) {
    int nb = T16 / KW, jb = 0;
    for (; jb + 2 <= nb; jb += 2)
        zblock(qt, ktp + (size_t)jb * D * KW, (ptrdiff_t)D * KW, D, 2, s + jb * KW, T16, nr, KW);
    if (jb < nb) zblock(qt, ktp + (size_t)jb * D * KW, 0, D, 1, s + jb * KW, T16, nr, KW);
}

/* context of a block: pt [T][QT] (probabilities) against the V panels -> o rows */
static void context_z(const float *pt, int T, const float *vp, int Dv, float *o, ptrdiff_t os,
                      int nr) {
    int nb = (Dv + KW - 1) / KW, eb = 0;
    for (; eb + 2 <= nb; eb += 2)
        zblock(pt, vp + (size_t)eb * T * KW, (ptrdiff_t)T * KW, T, 2, o + eb * KW, os, nr,
               Dv - (eb + 1) * KW);
    if (eb < nb) zblock(pt, vp + (size_t)eb * T * KW, 0, T, 1, o + eb * KW, os, nr, Dv - eb * KW);
}
#endif

#ifdef __AVX2__
/* s[0..T) = softmax(s * scale + mask) in three passes with the exp in registers (the shared
 * row body in f32_fused.h makes five scalar-written passes; here it was 30% of the kernel) */
static void softmax_row(float *s, const float *mask, int T, float scale) {
    const __m256 sc = _mm256_set1_ps(scale);
    int T8 = T & ~7;
    __m256 mx = _mm256_set1_ps(-__builtin_inff());
    float m = -__builtin_inff();
    for (int j = 0; j < T8; j += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s + j), sc);
        if (mask) v = _mm256_add_ps(v, _mm256_loadu_ps(mask + j));
        _mm256_storeu_ps(s + j, v);
        mx = _mm256_max_ps(mx, v);
    }
    for (int j = T8; j < T; j++) {
        float v = s[j] * scale + (mask ? mask[j] : 0.0f);
        s[j] = v;
        m = v > m ? v : m;
    }
    float t8[8];
    _mm256_storeu_ps(t8, mx);
    for (int i = 0; i < 8; i++) m = t8[i] > m ? t8[i] : m;
    __m256 mv = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    for (int j = 0; j < T8; j += 8) {
        __m256 e = dscy_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    float tot = 0.0f;
    for (int j = T8; j < T; j++) { s[j] = dscy_vexpf(s[j] - m); tot += s[j]; }
    _mm256_storeu_ps(t8, sum);
    tot += ((t8[0] + t8[1]) + (t8[2] + t8[3])) + ((t8[4] + t8[5]) + (t8[6] + t8[7]));
    float inv = 1.0f / tot;
    __m256 iv = _mm256_set1_ps(inv);
    for (int j = 0; j < T8; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), iv));
    for (int j = T8; j < T; j++) s[j] *= inv;
}
#endif

#if ATT_Z
/* softmax_row on zmm: the same passes and exp (dscy_exp16), the sum over 16 lane partial sums
 * (lanes j and j + 8 added first, then as the ymm row folds its 8), T a multiple of 16 on the
 * vector path */
static void softmax_row16(float *s, const float *mask, int T, float scale) {
    if (T & 15) { softmax_row(s, mask, T, scale); return; }
    const __m512 sc = _mm512_set1_ps(scale);
    __m512 mx = _mm512_set1_ps(-__builtin_inff());
    for (int j = 0; j < T; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(s + j), sc);
        if (mask) v = _mm512_add_ps(v, _mm512_loadu_ps(mask + j));
        _mm512_storeu_ps(s + j, v);
        mx = _mm512_max_ps(mx, v);
    }
    float m = _mm512_reduce_max_ps(mx);
    __m512 mv = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
    for (int j = 0; j < T; j += 16) {
        __m512 e = dscy_exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv));
        _mm512_storeu_ps(s + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    float t8[8];
    _mm256_storeu_ps(t8, _mm256_add_ps(_mm512_castps512_ps256(sum), _mm512_extractf32x8_ps(sum, 1)));
    float tot = ((t8[0] + t8[1]) + (t8[2] + t8[3])) + ((t8[4] + t8[5]) + (t8[6] + t8[7]));
    __m512 iv = _mm512_set1_ps(1.0f / tot);
    for (int j = 0; j < T; j += 16) _mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), iv));
}
#endif

/* QuantizeLinear's row function in the copy of this build's level (all copies give the same
 * bytes; the avx512 build runs only where AVX-512 F/BW/VL/DQ are). Named directly, not through
 * dscy_quantize8's level switch: a build must not hold the copies of levels above its own (at
 * -O1, the sanitizer build, the switch's other branches were emitted: zmm code in the generic
 * module, which tests/kernels/test_build_isa.py refuses). */
static inline void att_quantize(int sgn, const float *x, uint8_t *y, long n, float scale,
                                float zp) {
#if defined(__AVX512F__)
    if (sgn) dscy_quantize_s8_avx512(x, (signed char *)y, n, scale, zp);
    else dscy_quantize_u8_avx512(x, y, n, scale, zp);
#elif defined(__AVX2__)
    if (sgn) dscy_quantize_s8_avx2(x, (signed char *)y, n, scale, zp);
    else dscy_quantize_u8_avx2(x, y, n, scale, zp);
#else
    if (sgn) dscy_quantize_s8(x, (signed char *)y, n, scale, zp);
    else dscy_quantize_u8(x, y, n, scale, zp);
#endif
}

/* o (floats, q_out 0), or (q_out 1) the output quantized (QuantizeLinear by q_scale / q_zp to
 * u8, or s8 with q_signed) at o with the same strides in bytes: each block's context rows go to
 * the thread's scratch and are quantized from there while in L1 */
int dscy_f32_attention(const float *q, ptrdiff_t qb, ptrdiff_t qs, ptrdiff_t qh,
                       const float *k, ptrdiff_t kb, ptrdiff_t ks, ptrdiff_t kh,
                       const float *v, ptrdiff_t vb, ptrdiff_t vs, ptrdiff_t vh,
                       const float *mask, ptrdiff_t mb, ptrdiff_t mh, ptrdiff_t mq,
                       void *out, ptrdiff_t ob, ptrdiff_t os, ptrdiff_t oh,
                       int B, int H, int S, int T, int D, int Dv, float scale, int nthreads,
                       int q_out, int q_signed, float q_scale, float q_zp) {
    float *o = q_out ? NULL : (float *)out;
    uint8_t *oq = q_out ? (uint8_t *)out : NULL;
    int T16 = (T + KW - 1) / KW * KW, Dv16 = (Dv + KW - 1) / KW * KW;
    long items = (long)B * H;
    int nt = dscy_nthreads(nthreads);
    if ((double)items * S * T * (D + Dv) < 1.0e6) nt = 1;
    if (items < nt) nt = (int)items;
    int fail = 0;
    #pragma omp parallel num_threads(nt) if (nt > 1) reduction(|:fail)
    {
    /* Denormals as zero (DAZ) and results flushed to zero (FTZ) inside the kernel, each thread
     * restoring its own MXCSR after: a subnormal input, or a probability below FLT_MIN (a score
     * ~87 below its row's maximum), made every FMA of it in P.V a microcode assist, 3x the
     * kernel's time on such data (1.33 vs 0.40 ms on BERT-base's shape; measured on recycled
     * arena memory, not on the model's activations, where none occur). Such a term changes no
     * output by more than ~1e-38 * |v|. */
#ifdef __SSE__
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
#endif
    /* heads claimed one at a time: with a static split the call waited for the slower core
     * (0.85-0.94x the time with one vCPU of this machine slowed by its host) */
    #pragma omp for schedule(dynamic, 1)
    for (long it = 0; it < items; it++) {
        int b = (int)(it / H), h = (int)(it % H);
        float *ktp = att_buffer((size_t)D * T16 + (size_t)T * Dv16 + (size_t)QB * T16
                                + (ATT_Z ? (size_t)QT * (T16 + D) : 0) + (size_t)QB * Dv16);
        if (!ktp) { fail = 1; continue; }
        float *vp = ktp + (size_t)D * T16, *s = vp + (size_t)T * Dv16;
        pack_k(k + b * kb + h * kh, ks, T, D, ktp);
        pack_v(v + b * vb + h * vh, vs, T, Dv, vp);
        const float *qbh = q + b * qb + h * qh;
        float *cq = s + (size_t)QB * T16 + (ATT_Z ? (size_t)QT * (T16 + D) : 0);
        /* the block's context rows: the output, or (quantized output) the scratch cq */
        float *obh = oq ? cq : o + b * ob + h * oh;
        ptrdiff_t ostr = oq ? Dv : os;
        const float *mbh = mask ? mask + b * mb + h * mh : NULL;
        for (int i0 = 0; i0 < S; i0 += QB) {
            int nr = S - i0 < QB ? S - i0 : QB;
            float *ob0 = oq ? cq : obh + (size_t)i0 * os;
#if ATT_Z
            float *qt = s + (size_t)QB * T16, *pt = qt + (size_t)QT * D;
            tr_rows(qbh + (size_t)i0 * qs, qs, nr, D, qt);
            scores_z(qt, ktp, D, T16, s, nr);
            for (int r = 0; r < nr; r++)
                softmax_row16(s + (size_t)r * T16, mbh ? mbh + (size_t)(i0 + r) * mq : NULL, T, scale);
            tr_rows(s, T16, nr, T, pt);
            context_z(pt, T, vp, Dv, ob0, ostr, nr);
#else
            scores(qbh + (size_t)i0 * qs, qs, nr, ktp, D, T16, s);
            for (int r = 0; r < nr; r++) {
                const float *mrow = mbh ? mbh + (size_t)(i0 + r) * mq : NULL;
#ifdef __AVX2__
                softmax_row(s + (size_t)r * T16, mrow, T, scale);
#else
                dscy_scale_mask_softmax(ATT_AVX2, s + (size_t)r * T16, mrow, T, scale);
#endif
            }
            context(s, T16, T, vp, Dv, ob0, ostr, nr);
#endif
            if (oq) {        /* the QuantizeLinear op's own row function, under its MXCSR */
#ifdef __SSE__
                _mm_setcsr(csr);
#endif
                for (int r = 0; r < nr; r++)
                    att_quantize(q_signed, cq + (size_t)r * Dv,
                                 oq + b * ob + h * oh + (size_t)(i0 + r) * os, Dv, q_scale, q_zp);
#ifdef __SSE__
                _mm_setcsr(csr | 0x8040);
#endif
            }
        }
    }
#ifdef __SSE__
    _mm_setcsr(csr);
#endif
    }
    return fail ? -1 : 0;
}
