/* Scaled dot-product attention, FP32, one (batch, head) per work item:
 *   out[b, i, h, :] = softmax(scale * q[b, i, h, :] . k[b, :, h, :]^T + mask[b, h, i, :]) v[b, :, h, :]
 * q, k, v, out are strided [B, S|T, H, D] views (the layout the exporter's Reshape gives, the
 * last axis contiguous), so no transposed copies are made; the mask is broadcast by strides
 * (0 along broadcast axes, keys contiguous). q, k, v may also be the 8-bit values of the QGemm
 * that made them (dscy_att_in): they are dequantized, in that layer's float32 steps, as K and
 * V are packed and each block's queries copied (other paths: a head's rows into a scratch).
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
#include <string.h>
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
 * step (24 accumulators); every broadcast is one pointer plus a constant offset: the block's
 * queries copied to rows QROW floats apart and its probabilities in rows SROW apart (scores_zr /
 * context_zr), or, past those sizes, both transposed first ([d][12] and [j][12]) */
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
DSCY_THREAD_BUFFER(att_deq_buffer)

/* An 8-bit input of one head is its dscy_att_in with the bias at the head's first channel (NULL:
 * floats). Its values are ((x - zp) * scale) + bias[d], each step rounded to float32 as the
 * QGemm's mid step and numpy round them (x - zp is exact: both are small integers). */
typedef dscy_att_in att_deq;

static inline float deq1(const void *p, ptrdiff_t i, const att_deq *dq, int d) {
    if (!dq) return ((const float *)p)[i];
    float x = dq->type == DSCY_ATT_U8 ? (float)((const uint8_t *)p)[i] : (float)((const int8_t *)p)[i];
    float f = (x - dq->zp) * dq->scale;
#ifdef __FMA__
    __asm__("" : "+x"(f));   /* no FMA contraction with the bias add */
#endif
    return dq->bias ? f + dq->bias[d] : f;
}

#ifdef __AVX2__
/* elements i..i+7 (channels d..d+7) */
static inline __m256 deq8(const void *p, ptrdiff_t i, const att_deq *dq, int d) {
    if (!dq) return _mm256_loadu_ps((const float *)p + i);
    __m128i raw = _mm_loadl_epi64((const __m128i *)((const uint8_t *)p + i));
    __m256i w = dq->type == DSCY_ATT_U8 ? _mm256_cvtepu8_epi32(raw) : _mm256_cvtepi8_epi32(raw);
    __m256 f = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(w), _mm256_set1_ps(dq->zp)),
                             _mm256_set1_ps(dq->scale));
    __asm__("" : "+x"(f));
    return dq->bias ? _mm256_add_ps(f, _mm256_loadu_ps(dq->bias + d)) : f;
}
#endif

#if defined(__AVX512F__)
/* elements i..i+15 under mask m (zero elsewhere): dscy_deq16 (dscy_fastmath.h) */
static inline __m512 deq16(const void *p, ptrdiff_t i, const att_deq *dq, int d, __mmask16 m) {
    if (!dq) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    return _mm512_maskz_mov_ps(m, dscy_deq16((const uint8_t *)p + i, dq->type == DSCY_ATT_S8,
                                             _mm512_set1_ps(dq->zp), _mm512_set1_ps(dq->scale),
                                             dq->bias ? dq->bias + d : NULL, m));
}
#endif

/* n rows of w values (src rows ss elements apart) as floats into dst rows ds apart */
static void deq_rows(const void *src, ptrdiff_t ss, int n, int w, const att_deq *dq, float *dst,
                     ptrdiff_t ds) {
    for (int r = 0; r < n; r++) {
        int d = 0;
#ifdef __AVX2__
        for (; d + 8 <= w; d += 8) _mm256_storeu_ps(dst + (size_t)r * ds + d, deq8(src, r * ss + d, dq, d));
#endif
        for (; d < w; d++) dst[(size_t)r * ds + d] = deq1(src, r * ss + d, dq, d);
    }
}


/* K of one head, [T][D] rows ks apart, into panels of KW keys: ktp[jb][d][KW] (keys jb*KW + i
 * for i < KW; zero beyond T), so the score loop reads one contiguous 64-byte row per d */
static void pack_k(const void *k, ptrdiff_t ks, int T, int D, const att_deq *dq, float *ktp) {
    int T16 = (T + KW - 1) / KW * KW, j0 = 0;
#ifdef __AVX2__
    for (; j0 + 8 <= T; j0 += 8) {
        float *dst = ktp + (size_t)(j0 / KW) * D * KW + j0 % KW;
        int d0 = 0;
        for (; d0 + 8 <= D; d0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = deq8(k, (ptrdiff_t)(j0 + i) * ks + d0, dq, d0);
            dscy_tr8x8_ps(r);
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (size_t)(d0 + i) * KW, r[i]);
        }
        for (; d0 < D; d0++)
            for (int i = 0; i < 8; i++) dst[(size_t)d0 * KW + i] = deq1(k, (ptrdiff_t)(j0 + i) * ks + d0, dq, d0);
    }
#endif
    for (int j = j0; j < T16; j++) {
        float *dst = ktp + (size_t)(j / KW) * D * KW + j % KW;
        if (j < T) for (int d = 0; d < D; d++) dst[(size_t)d * KW] = deq1(k, (ptrdiff_t)j * ks + d, dq, d);
        else       for (int d = 0; d < D; d++) dst[(size_t)d * KW] = 0.0f;
    }
}

/* V of one head, [T][Dv] rows vs apart, into panels of KW columns: vp[eb][j][KW] (zero beyond
 * Dv), so the context loop reads one contiguous 64-byte row per key */
static void pack_v(const void *v, ptrdiff_t vs, int T, int Dv, const att_deq *dq, float *vp) {
    int nb = (Dv + KW - 1) / KW;
    for (int eb = 0; eb < nb; eb++) {
        float *dst = vp + (size_t)eb * T * KW;
        int w = Dv - eb * KW < KW ? Dv - eb * KW : KW;
        for (int j = 0; j < T; j++) {
            ptrdiff_t src = (ptrdiff_t)j * vs + eb * KW;
            float *d = dst + (size_t)j * KW;
#ifdef __AVX2__
            if (w == KW) {
                _mm256_storeu_ps(d, deq8(v, src, dq, eb * KW));
                _mm256_storeu_ps(d + 8, deq8(v, src + 8, dq, eb * KW + 8));
                continue;
            }
#endif
            int e = 0;
            for (; e < w; e++) d[e] = deq1(v, src + e, dq, eb * KW + e);
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

/* acc[r][c] (+)= sum_i a[i][r] * b[i][c]: NQ (<= QB) rows of a at at[i * ais + r * ars] (transposed,
 * at[i][QT]: ais QT, ars 1; or rows a fixed stride apart: ais 1, ars SROW / QROW, constants so
 * that each row's broadcast is the running pointer plus a constant offset), P panels of 16
 * columns of b at bp + c * pstride, n steps (bp rows 16 floats apart), into out rows
 * (r < nr) ostride apart (w columns of the last panel valid) */
static inline __attribute__((always_inline)) void zblock_n(const int NQ, const float *at,
        const ptrdiff_t ais, const ptrdiff_t ars, const float *bp, ptrdiff_t pstride, int n,
        const int P, float *out, ptrdiff_t ostride, int nr, int w) {
    __m512 acc[2][QB];
    #pragma GCC unroll 24
    for (int c = 0; c < P; c++)
        for (int r = 0; r < NQ; r++) acc[c][r] = _mm512_setzero_ps();
    for (int i = 0; i < n; i++) {
        __m512 b0 = _mm512_loadu_ps(bp + (size_t)i * KW);
        __m512 b1 = P > 1 ? _mm512_loadu_ps(bp + pstride + (size_t)i * KW) : b0;
        const float *ai = at + (size_t)i * ais;
        #pragma GCC unroll 12
        for (int r = 0; r < NQ; r++) {
            __m512 a = _mm512_set1_ps(ai[r * ars]);
            acc[0][r] = _mm512_fmadd_ps(a, b0, acc[0][r]);
            if (P > 1) acc[1][r] = _mm512_fmadd_ps(a, b1, acc[1][r]);
        }
    }
    #pragma GCC unroll 24
    for (int c = 0; c < P; c++)
        for (int r = 0; r < NQ; r++) {
            if (r >= nr) continue;
            float *o = out + (size_t)r * ostride + c * KW;
            int wc = c == P - 1 ? w : KW;
            if (wc >= KW) _mm512_storeu_ps(o, acc[c][r]);
            else _mm512_mask_storeu_ps(o, (__mmask16)((1u << wc) - 1), acc[c][r]);
        }
}

/* zblock_n over the block's rows: all QB, or 8 for a short last block (8 or fewer rows: a
 * sequence of 128 leaves one of 8, which computed 12) */
static inline __attribute__((always_inline)) void zblock(const float *at, const ptrdiff_t ais,
        const ptrdiff_t ars, const float *bp, ptrdiff_t pstride, int n, const int P, float *out,
        ptrdiff_t ostride, int nr, int w) {
    if (nr <= 8) zblock_n(8, at, ais, ars, bp, pstride, n, P, out, ostride, nr, w);
    else zblock_n(QB, at, ais, ars, bp, pstride, n, P, out, ostride, nr, w);
}

/* scores of a block's rows (a[i][r] at a[i * ais + r * ars], zblock's) against the K panels ->
 * s rows ss apart; inlined into its two callers so that ais / ars stay constants */
static inline __attribute__((always_inline)) void scores_blk(const float *a, const ptrdiff_t ais,
        const ptrdiff_t ars, const float *ktp, int D, int T16, float *s, const ptrdiff_t ss,
        int nr) {
    int nb = T16 / KW, jb = 0;
    for (; jb + 2 <= nb; jb += 2)
        zblock(a, ais, ars, ktp + (size_t)jb * D * KW, (ptrdiff_t)D * KW, D, 2, s + jb * KW, ss,
               nr, KW);
    if (jb < nb) zblock(a, ais, ars, ktp + (size_t)jb * D * KW, 0, D, 1, s + jb * KW, ss, nr, KW);
}

/* context of a block: probabilities p[j][r] at p[j * pis + r * prs] against the V panels -> o
 * rows */
static inline __attribute__((always_inline)) void context_blk(const float *p, const ptrdiff_t pis,
        const ptrdiff_t prs, int T, const float *vp, int Dv, float *o, ptrdiff_t os, int nr) {
    int nb = (Dv + KW - 1) / KW, eb = 0;
    for (; eb + 2 <= nb; eb += 2)
        zblock(p, pis, prs, vp + (size_t)eb * T * KW, (ptrdiff_t)T * KW, T, 2, o + eb * KW, os, nr,
               Dv - (eb + 1) * KW);
    if (eb < nb) zblock(p, pis, prs, vp + (size_t)eb * T * KW, 0, T, 1, o + eb * KW, os, nr,
                        Dv - eb * KW);
}

/* The transposed blocks: qt [D][QT] -> s[r][T16]; pt [T][QT] -> o rows */
static void scores_z(const float *qt, const float *ktp, int D, int T16, float *s, int nr) {
    scores_blk(qt, QT, 1, ktp, D, T16, s, T16, nr);
}
static void context_z(const float *pt, int T, const float *vp, int Dv, float *o, ptrdiff_t os,
                      int nr) {
    context_blk(pt, QT, 1, T, vp, Dv, o, os, nr);
}

/* The same two products reading the block's rows as they are, at fixed strides: the queries
 * copied to qr [QB][QROW] (D <= QROW), the probabilities in s [QB][SROW] (T16 <= SROW). Each
 * broadcast is then the running pointer plus a constant offset, and no block is transposed: the
 * 8 x 8 transposes of tr_rows, 24 shuffles each on one port, were ~13% of BERT-base's attention.
 * The products' operations and order are the transposed path's: bit for bit. */
#define SROW 512
#define QROW 256
static void scores_zr(const float *qr, const float *ktp, int D, int T16, float *s, int nr) {
    scores_blk(qr, 1, QROW, ktp, D, T16, s, SROW, nr);
}
static void context_zr(const float *s, int T, const float *vp, int Dv, float *o, ptrdiff_t os,
                       int nr) {
    context_blk(s, 1, SROW, T, vp, Dv, o, os, nr);
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
/* softmax_row on zmm: the same passes and exp (dscy_exp16_nonpos: dscy_exp16 on s - max <= 0),
 * the sum over 16 lane partial sums
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
        __m512 e = dscy_exp16_nonpos(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv));
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

#if defined(__AMX_BF16__) && defined(__AMX_TILE__) && defined(__AVX512BF16__)
/* The amx build (f32_attn, used only when asked for: DEEPSPARSE_CY_BF16_ATTENTION=1), for an
 * attention whose output is quantized to 8 bits (q_out): both products on AMX-BF16 tiles
 * (tdpbf16ps, 16 x 16 x 32 per instruction, float32 sums), each operand rounded once to bf16
 * (8 significant bits, round to nearest even). Scale, mask and the softmax's exps stay in float32
 * on zmm between the two products: per block of 16 query rows, the scores go to s, the exps
 * (base 2, a degree-4 polynomial: bf16 keeps less) are rounded to bf16 into A tiles, and the
 * context tiles go to float rows that are divided by the exps' sum and quantized.
 * 2-2.7x faster than the zmm path on BERT-base / MiniLM shapes (benchmarks/bench_attention.py),
 * but not the file's arithmetic: on the real MiniLM-L6's INT8 file about 1% of the context bytes
 * move by one step, which its LayerNorms amplify (embeddings at cosine ~0.95 of the file run op
 * by op, against 0.99-1 with float32 products). Splitting q, k, p and v into two bf16 parts
 * (three products each) came to float32 path speed; so did three parts and six products (an
 * earlier session). A row whose keys are all masked gets 2^-126 for every key (a uniform
 * average), as the float32 path gives for a finite mask such as finfo.min.
 * Tiles: 0-3 sums, 4 A, 6-7 B. */
#define ATT_AMX 1
#define AB 16   /* query rows per block: an A tile's rows */

/* the lanes of the first `left` elements of a 16-wide step (all from 16, none from 0) */
static inline __mmask16 att_mask(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

/* up to 16 floats at src (w valid, zero beyond) */
static inline __m512 load_w(const float *src, int w) {
    return _mm512_maskz_loadu_ps(att_mask(w), src);
}

/* an A-tile row: n floats of src as bf16 at d[0..npad) (zero beyond n; npad a multiple of 32) */
static inline void a_row(const float *src, int n, int npad, uint16_t *d) {
    for (int c = 0; c < npad; c += 32)
        _mm512_storeu_si512(d + c, (__m512i)_mm512_cvtne2ps_pbh(load_w(src + c + 16, n - c - 16),
                                                                 load_w(src + c, n - c)));
}

/* a B-tile row: 16 columns of the k pair (a, b) as bf16, interleaved (a0 b0 a1 b1 ...) */
static inline void b_row(__m512 a, __m512 b, uint16_t *d) {
    static const uint16_t ilv[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    _mm512_storeu_si512(d, _mm512_permutexvar_epi16(_mm512_loadu_si512(ilv),
                                                    (__m512i)_mm512_cvtne2ps_pbh(b, a)));
}

/* 2^y on 16 lanes for y <= 0, to the precision a bf16 result keeps: y held to [-126, 0] (a NaN
 * lane gives 2^-126, as dscy_exp16 gives its lower clamp), n = round(y), 2^(y - n) by its degree-4
 * Taylor polynomial (relative error < 5e-5, 2^-14, where bf16 rounds at 2^-9), scaled by 2^n */
static inline __m512 att_exp2_bf(__m512 y) {
    y = _mm512_max_ps(y, _mm512_set1_ps(-126.0f));
    __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(y, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(9.618129e-3f), f, _mm512_set1_ps(5.550411e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* A-tile row of a query's probabilities before their normalisation: p[0..T32) = bf16 of
 * exp(scale * s + mask - max) over the T scores (zero from T on; max over the row), in two
 * passes, in base 2 (log2 e folded into the scale and the mask); returns the sum of the float32
 * exps, by which the context row is divided (the softmax's division moved past the product:
 * the same quotient, one multiply per output instead of one per probability) */
static inline float exp_row_bf16(const float *s, const float *mask, int T, int T32, float scale,
                                 uint16_t *p) {
    const float L2E = 1.44269504088896341f;
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff()), sc = _mm512_set1_ps(scale * L2E),
                 l2e = _mm512_set1_ps(L2E);
    __m512 mx = ninf;
#define ATT_Y(j0, m) (mask ? _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, s + (j0)), sc,            \
                             _mm512_mul_ps(_mm512_maskz_loadu_ps(m, mask + (j0)), l2e))        \
                           : _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + (j0)), sc))
    for (int j = 0; j < T; j += 16) {
        __mmask16 m = att_mask(T - j);
        mx = _mm512_mask_max_ps(mx, m, mx, ATT_Y(j, m));
    }
    const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < T32; j += 32) {
        __m512 e[2];
        for (int h = 0; h < 2; h++) {
            int j0 = j + 16 * h;
            __mmask16 m = att_mask(T - j0);
            e[h] = _mm512_maskz_mov_ps(m, att_exp2_bf(_mm512_sub_ps(ATT_Y(j0, m), mv)));
        }
        sum = _mm512_add_ps(sum, _mm512_add_ps(e[0], e[1]));
        _mm512_storeu_si512(p + j, (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]));
    }
#undef ATT_Y
    return _mm512_reduce_add_ps(sum);
}

/* a context row's n floats times f, QuantizeLinear'd by (1 / qs, zp) to u8 (or s8 with sgn):
 * round half to even, saturated, a NaN to the low end (the op's own rounding of x / qs; here
 * x * (f / qs), one multiply) */
static inline void att_quant_row(const float *x, int n, float f, int sgn, float qs, float zp,
                                 uint8_t *y) {
    const __m512 k = _mm512_set1_ps(f / qs), z = _mm512_set1_ps(zp),
                 lo = _mm512_set1_ps(sgn ? -128.0f : 0.0f), hi = _mm512_set1_ps(sgn ? 127.0f : 255.0f);
    for (int e = 0; e < n; e += 16) {
        __mmask16 m = att_mask(n - e);
        __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + e), k),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, z), lo), hi);
        _mm_mask_storeu_epi8(y + e, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
}

/* floats of scratch att_head_amx needs */
static size_t amx_scratch(int T, int D, int Dv) {
    size_t T16 = (T + 15) / 16 * 16, T32 = (T + 31) / 32 * 32, D32 = (D + 31) / 32 * 32,
           Dv16 = (Dv + 15) / 16 * 16;
    return (size_t)D * T16 + T16 * D32 / 2 + T32 * Dv16 / 2 + 8 * D32 + AB * T16 + 8 * T32
           + 256 + AB * Dv16 + 64;
}

/* tiles 0..nb-1 (nb <= 4) += the A rows at a (as bytes apart, tile 4) x the B tiles at bt + c *
 * bstep (tiles 6 / 7 in turn) */
static inline __attribute__((always_inline)) void att_dp4(const uint16_t *a, int as,
        const uint16_t *bt, size_t bstep, int nb) {
    _tile_loadd(4, a, as);
    _tile_loadd(6, bt, 64); _tile_dpbf16ps(0, 4, 6);
    if (nb > 1) { _tile_loadd(7, bt + bstep, 64); _tile_dpbf16ps(1, 4, 7); }
    if (nb > 2) { _tile_loadd(6, bt + 2 * bstep, 64); _tile_dpbf16ps(2, 4, 6); }
    if (nb > 3) { _tile_loadd(7, bt + 3 * bstep, 64); _tile_dpbf16ps(3, 4, 7); }
}

/* One (batch, head) on AMX tiles; o rows os apart get the context, as the zmm path's blocks
 * write it (cq: the quantized output's float rows, Dv apart) */
static void att_head_amx(const float *q, ptrdiff_t qs, const void *k, ptrdiff_t ks,
                         const att_deq *kdq, const float *v, ptrdiff_t vs, const float *mbh, ptrdiff_t mq,
                         int S, int T, int D, int Dv, float scale, float *buf,
                         float *o, ptrdiff_t os, uint8_t *oq, ptrdiff_t oqs, int q_signed,
                         float q_scale, float q_zp) {
    int T16 = (T + 15) / 16 * 16, T32 = (T + 31) / 32 * 32, D32 = (D + 31) / 32 * 32,
        Dv16 = (Dv + 15) / 16 * 16;
    int nkb = T16 / 16, ndc = D32 / 32, njc = T32 / 32, neb = Dv16 / 16;
    float *ktp = buf;
    uint16_t *kb = (uint16_t *)(ktp + (size_t)D * T16);          /* [jb][dc] tiles */
    uint16_t *vt = kb + (size_t)T16 * D32;                       /* [jc][eb] tiles */
    uint16_t *qa = vt + (size_t)T32 * Dv16;                      /* [16][D32] */
    float *s = (float *)(qa + (size_t)16 * D32);                 /* [16][T16] */
    uint16_t *pa = (uint16_t *)(s + (size_t)AB * T16);           /* [16][T32] */
    float *ct = (float *)(pa + (size_t)16 * T32), *cq = ct + 256, inv[AB];
    pack_k(k, ks, T, D, kdq, ktp);
    for (int jb = 0; jb < nkb; jb++)
        for (int dc = 0; dc < ndc; dc++)
            for (int r = 0; r < 16; r++) {
                int d0 = dc * 32 + 2 * r;
                const float *kp = ktp + ((size_t)jb * D + d0) * 16;
                b_row(d0 < D ? _mm512_loadu_ps(kp) : _mm512_setzero_ps(),
                      d0 + 1 < D ? _mm512_loadu_ps(kp + 16) : _mm512_setzero_ps(),
                      kb + ((size_t)jb * ndc + dc) * 512 + r * 32);
            }
    for (int jc = 0; jc < njc; jc++)
        for (int eb = 0; eb < neb; eb++)
            for (int r = 0; r < 16; r++) {
                int j0 = jc * 32 + 2 * r, w = Dv - eb * 16;
                b_row(j0 < T ? load_w(v + (size_t)j0 * vs + eb * 16, w) : _mm512_setzero_ps(),
                      j0 + 1 < T ? load_w(v + (size_t)(j0 + 1) * vs + eb * 16, w) : _mm512_setzero_ps(),
                      vt + ((size_t)jc * neb + eb) * 512 + r * 32);
            }
    for (int i0 = 0; i0 < S; i0 += AB) {
        int nr = S - i0 < AB ? S - i0 : AB;
        for (int i = 0; i < AB; i++)
            a_row(q + (size_t)(i0 + i) * qs, i < nr ? D : 0, D32, qa + (size_t)i * D32);
        /* four key blocks at a time into tiles 0-3 */
        for (int jb = 0; jb < nkb; jb += 4) {
            int nb = nkb - jb < 4 ? nkb - jb : 4;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int dc = 0; dc < ndc; dc++)
                att_dp4(qa + dc * 32, D32 * 2, kb + ((size_t)jb * ndc + dc) * 512,
                        (size_t)ndc * 512, nb);
            _tile_stored(0, s + jb * 16, T16 * 4);
            if (nb > 1) _tile_stored(1, s + (jb + 1) * 16, T16 * 4);
            if (nb > 2) _tile_stored(2, s + (jb + 2) * 16, T16 * 4);
            if (nb > 3) _tile_stored(3, s + (jb + 3) * 16, T16 * 4);
        }
        for (int r = 0; r < nr; r++)
            inv[r] = 1.0f / exp_row_bf16(s + (size_t)r * T16, mbh ? mbh + (size_t)(i0 + r) * mq : NULL,
                                         T, T32, scale, pa + (size_t)r * T32);
        for (int r = nr; r < AB; r++) a_row(s, 0, T32, pa + (size_t)r * T32);
        float *ob = oq ? cq : o + (size_t)i0 * os;
        ptrdiff_t ostr = oq ? Dv : os;
        /* four column blocks at a time into tiles 0-3 */
        for (int eb = 0; eb < neb; eb += 4) {
            int nb = neb - eb < 4 ? neb - eb : 4;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int jc = 0; jc < njc; jc++)
                att_dp4(pa + jc * 32, T32 * 2, vt + ((size_t)jc * neb + eb) * 512, 512, nb);
            for (int c = 0; c < nb; c++) {
                int e0 = (eb + c) * 16, w = Dv - e0 < 16 ? Dv - e0 : 16;
                /* a whole tile straight into the rows, else through ct */
                int whole = nr == AB && w == 16;
                float *dst = whole ? ob + e0 : ct;
                ptrdiff_t dstr = whole ? ostr * 4 : 64;
                switch (c) {
                case 0: _tile_stored(0, dst, dstr); break;
                case 1: _tile_stored(1, dst, dstr); break;
                case 2: _tile_stored(2, dst, dstr); break;
                default: _tile_stored(3, dst, dstr); break;
                }
                if (!whole) {
                    for (int r = 0; r < nr; r++)
                        _mm512_mask_storeu_ps(ob + (size_t)r * ostr + e0, att_mask(w),
                                              _mm512_loadu_ps(ct + r * 16));
                }
            }
        }
        if (oq) {
            for (int r = 0; r < nr; r++)
                att_quant_row(cq + (size_t)r * Dv, Dv, inv[r], q_signed, q_scale, q_zp,
                              oq + (size_t)(i0 + r) * oqs);
        }
    }
}
#else
#define ATT_AMX 0
#endif

/* o (floats, q_out 0), or (q_out 1) the output quantized (QuantizeLinear by q_scale / q_zp to
 * u8, or s8 with q_signed) at o with the same strides in bytes: each block's context rows go to
 * the thread's scratch and are quantized from there while in L1 */
int dscy_f32_attention(const void *q, ptrdiff_t qb, ptrdiff_t qs, ptrdiff_t qh,
                       const void *k, ptrdiff_t kb, ptrdiff_t ks, ptrdiff_t kh,
                       const void *v, ptrdiff_t vb, ptrdiff_t vs, ptrdiff_t vh,
                       const float *mask, ptrdiff_t mb, ptrdiff_t mh, ptrdiff_t mq,
                       void *out, ptrdiff_t ob, ptrdiff_t os, ptrdiff_t oh,
                       int B, int H, int S, int T, int D, int Dv, float scale, int nthreads,
                       int q_out, int q_signed, float q_scale, float q_zp,
                       const dscy_att_in *in) {
    /* element sizes of q, k, v (8-bit inputs: strides in bytes) */
    const int qe = in && in[0].type ? 1 : 4, ke = in && in[1].type ? 1 : 4,
              ve = in && in[2].type ? 1 : 4;
    float *o = q_out ? NULL : (float *)out;
    uint8_t *oq = q_out ? (uint8_t *)out : NULL;
    int T16 = (T + KW - 1) / KW * KW, Dv16 = (Dv + KW - 1) / KW * KW;
    long items = (long)B * H;
    int nt = dscy_nthreads(nthreads);
    if ((double)items * S * T * (D + Dv) < 1.0e6) nt = 1;
    if (items < nt) nt = (int)items;
    int fail = 0;
#if ATT_AMX
    /* the amx build's bf16 tiles for a quantized output from 8 query rows on (a block has 16) */
    const int use_amx = q_out && S >= 8;
#endif
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
#if ATT_AMX
    if (use_amx) dscy_amx_config();
#endif
    #pragma omp for schedule(dynamic, 1)
    for (long it = 0; it < items; it++) {
        int b = (int)(it / H), h = (int)(it % H);
        /* the head's q, k, v and their dequantization (NULL: floats) */
        const void *qbh = (const char *)q + (ptrdiff_t)qe * (b * qb + h * qh);
        const void *kbh = (const char *)k + (ptrdiff_t)ke * (b * kb + h * kh);
        const void *vbh = (const char *)v + (ptrdiff_t)ve * (b * vb + h * vh);
        att_deq dqs[3];
        const att_deq *dq[3] = {NULL, NULL, NULL};
        for (int i = 0; i < 3 && in; i++)
            if (in[i].type) {
                dqs[i] = in[i];
                if (in[i].bias) dqs[i].bias = in[i].bias + (size_t)h * (i == 2 ? Dv : D);
                dq[i] = &dqs[i];
            }
        const att_deq *qdq = dq[0], *kdq = dq[1], *vdq = dq[2];
        ptrdiff_t qs1 = qs;
#if ATT_AMX
        if (use_amx) {
            float *buf = att_buffer(amx_scratch(T, D, Dv));
            /* 8-bit q / v as float rows first (k: its packing reads the bytes) */
            float *fq = qdq || vdq ? att_deq_buffer((size_t)S * D + (size_t)T * Dv) : NULL;
            if (!buf || ((qdq || vdq) && !fq)) { fail = 1; continue; }
            ptrdiff_t vs1 = vs;
            if (qdq) { deq_rows(qbh, qs, S, D, qdq, fq, D); qbh = fq; qs1 = D; }
            if (vdq) { deq_rows(vbh, vs, T, Dv, vdq, fq + (size_t)S * D, Dv); vbh = fq + (size_t)S * D; vs1 = Dv; }
            att_head_amx((const float *)qbh, qs1, kbh, ks, kdq, (const float *)vbh, vs1,
                         mask ? mask + b * mb + h * mh : NULL, mq, S, T, D, Dv, scale, buf,
                         o ? o + b * ob + h * oh : NULL, os, oq ? oq + b * ob + h * oh : NULL, os,
                         q_signed, q_scale, q_zp);
            continue;
        }
#endif
#if ATT_Z
        /* rows at fixed strides (scores_zr / context_zr) where they fit, else transposed */
        const int fixed = T16 <= SROW && D <= QROW;
        const size_t srow = fixed ? SROW : (size_t)T16;
        const size_t tsz = fixed ? (size_t)QB * QROW : (size_t)QT * (T16 + D);
#else
        const size_t srow = T16, tsz = 0;
#endif
        float *ktp = att_buffer((size_t)D * T16 + (size_t)T * Dv16 + (size_t)QB * srow + tsz
                                + (size_t)QB * Dv16);
        if (!ktp) { fail = 1; continue; }
        float *vp = ktp + (size_t)D * T16, *s = vp + (size_t)T * Dv16;
        pack_k(kbh, ks, T, D, kdq, ktp);
        pack_v(vbh, vs, T, Dv, vdq, vp);
#if ATT_Z
        /* 8-bit queries: the fixed-stride path dequantizes them as it copies each block's
         * rows, the others read float rows made first */
        if (qdq && !fixed) {
#else
        if (qdq) {
#endif
            float *fq = att_deq_buffer((size_t)S * D);
            if (!fq) { fail = 1; continue; }
            deq_rows(qbh, qs, S, D, qdq, fq, D);
            qbh = fq; qs1 = D; qdq = NULL;
        }
        float *cq = s + (size_t)QB * srow + tsz;
        /* the block's context rows: the output, or (quantized output) the scratch cq */
        float *obh = oq ? cq : o + b * ob + h * oh;
        ptrdiff_t ostr = oq ? Dv : os;
        const float *mbh = mask ? mask + b * mb + h * mh : NULL;
        for (int i0 = 0; i0 < S; i0 += QB) {
            int nr = S - i0 < QB ? S - i0 : QB;
            float *ob0 = oq ? cq : obh + (size_t)i0 * os;
#if ATT_Z
            if (fixed) {
                float *qr = s + (size_t)QB * SROW;
                for (int r = 0; r < QB; r++) {      /* the block's queries; rows past nr zero */
                    ptrdiff_t src = (ptrdiff_t)(i0 + r) * qs1;
                    float *dst = qr + (size_t)r * QROW;
                    int d = 0;
                    for (; d + 16 <= D; d += 16)
                        _mm512_storeu_ps(dst + d, r < nr ? deq16(qbh, src + d, qdq, d, 0xffff)
                                                         : _mm512_setzero_ps());
                    if (d < D) {
                        __mmask16 m = (__mmask16)((1u << (D - d)) - 1);
                        _mm512_mask_storeu_ps(dst + d, m, r < nr ? deq16(qbh, src + d, qdq, d, m)
                                                                 : _mm512_setzero_ps());
                    }
                }
                scores_zr(qr, ktp, D, T16, s, nr);
                for (int r = 0; r < nr; r++)
                    softmax_row16(s + (size_t)r * SROW, mbh ? mbh + (size_t)(i0 + r) * mq : NULL, T,
                                  scale);
                for (int r = nr; r < QB; r++)       /* rows past nr: zero probabilities */
                    memset(s + (size_t)r * SROW, 0, (size_t)T * sizeof(float));
                context_zr(s, T, vp, Dv, ob0, ostr, nr);
            } else {
                float *qt = s + (size_t)QB * T16, *pt = qt + (size_t)QT * D;
                tr_rows((const float *)qbh + (size_t)i0 * qs1, qs1, nr, D, qt);
                scores_z(qt, ktp, D, T16, s, nr);
                for (int r = 0; r < nr; r++)
                    softmax_row16(s + (size_t)r * T16, mbh ? mbh + (size_t)(i0 + r) * mq : NULL, T,
                                  scale);
                tr_rows(s, T16, nr, T, pt);
                context_z(pt, T, vp, Dv, ob0, ostr, nr);
            }
#else
            scores((const float *)qbh + (size_t)i0 * qs1, qs1, nr, ktp, D, T16, s);
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
#if ATT_AMX
    if (use_amx) _tile_release();
#endif
#ifdef __SSE__
    _mm_setcsr(csr);
#endif
    }
    return fail ? -1 : 0;
}

