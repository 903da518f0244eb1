/* Scaled dot-product attention, FP32, one (batch, head) per work item:
 *   out[b, i, h, :] = softmax(scale * q[b, i, h, :] . k[b, :, h, :]^T + mask[b, h, i, :]) v[b, :, h, :]
 * q, k, v, out are strided [B, S|T, H, D] views (the layout the exporter's Reshape gives, the
 * last axis contiguous), so no transposed copies are made; the mask is broadcast by strides
 * (0 along broadcast axes, keys contiguous).
 *
 * Per item: K is transposed once into kt[D][T8] (T8 = T rounded up to 8, zero-padded; 16 KiB at
 * D = 32, T = 128, so it stays in L1), then blocks of 4 query rows get their score rows by FMAs
 * over d (4 rows share each kt vector), scale + mask + softmax (f32_fused.h's row body), and
 * their output rows as sum_j p[j] * v[j, :]. The generic build runs the same loops in plain C.
 * With the FP32 GEMMs also on this package's kernels (f32_gemm), a transformer makes no BLAS
 * call at all: OpenBLAS's workers keep spinning after each call and, on a 2-core machine, take
 * turns of a scheduler time slice with the OpenMP threads of the next op. */
#include <stdlib.h>
#include <stdint.h>
#include <stddef.h>
#include "dscy_common.h"
#include "f32_fused.h"
#include "dscy_exp8.h"

#ifdef __AVX2__
#define ATT_AVX2 1
#else
#define ATT_AVX2 0
#endif

#define QB 4   /* query rows per block */

DSCY_THREAD_BUFFER(att_buffer)

/* scores of rows q[0..nr) (row stride qs) against kt -> s[r][T8]; 4 rows x 16 keys per step
 * (8 accumulators: per d two kt loads and four broadcasts feed eight FMAs) */
static void scores(const float *q, ptrdiff_t qs, int nr, const float *kt, int D, int T8,
                   float *s) {
#ifdef __AVX2__
    if (nr == QB) {
        int j = 0;
        for (; j + 16 <= T8; j += 16) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int d = 0; d < D; d++) {
                const float *kr = kt + (size_t)d * T8 + j;
                __m256 k0 = _mm256_load_ps(kr), k1 = _mm256_load_ps(kr + 8);
                __m256 q0 = _mm256_broadcast_ss(q + d), q1 = _mm256_broadcast_ss(q + qs + d);
                a0 = _mm256_fmadd_ps(q0, k0, a0); b0 = _mm256_fmadd_ps(q0, k1, b0);
                a1 = _mm256_fmadd_ps(q1, k0, a1); b1 = _mm256_fmadd_ps(q1, k1, b1);
                q0 = _mm256_broadcast_ss(q + 2 * qs + d); q1 = _mm256_broadcast_ss(q + 3 * qs + d);
                a2 = _mm256_fmadd_ps(q0, k0, a2); b2 = _mm256_fmadd_ps(q0, k1, b2);
                a3 = _mm256_fmadd_ps(q1, k0, a3); b3 = _mm256_fmadd_ps(q1, k1, b3);
            }
            _mm256_store_ps(s + j, a0);          _mm256_store_ps(s + j + 8, b0);
            _mm256_store_ps(s + T8 + j, a1);     _mm256_store_ps(s + T8 + j + 8, b1);
            _mm256_store_ps(s + 2 * T8 + j, a2); _mm256_store_ps(s + 2 * T8 + j + 8, b2);
            _mm256_store_ps(s + 3 * T8 + j, a3); _mm256_store_ps(s + 3 * T8 + j + 8, b3);
        }
        for (; j < T8; j += 8) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int d = 0; d < D; d++) {
                __m256 kv = _mm256_load_ps(kt + (size_t)d * T8 + j);
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + d), kv, a0);
                a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + qs + d), kv, a1);
                a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + 2 * qs + d), kv, a2);
                a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(q + 3 * qs + d), kv, a3);
            }
            _mm256_store_ps(s + j, a0);
            _mm256_store_ps(s + T8 + j, a1);
            _mm256_store_ps(s + 2 * T8 + j, a2);
            _mm256_store_ps(s + 3 * T8 + j, a3);
        }
        return;
    }
#endif
    for (int r = 0; r < nr; r++) {
        float *sr = s + (size_t)r * T8;
        for (int j = 0; j < T8; j++) sr[j] = 0.0f;
        for (int d = 0; d < D; d++) {
            float qd = q[r * qs + d];
            const float *kr = kt + (size_t)d * T8;
            for (int j = 0; j < T8; j++) sr[j] += qd * kr[j];
        }
    }
}

/* four rows of context at once: o[r][0..Dv) = sum_j p[r][j] * v[j, :] for r < 4 (p rows T8
 * apart, o rows os apart); 16 output columns per step share each v load across the rows */
static void context4(const float *p, int T8, int T, const float *v, ptrdiff_t vs, int Dv,
                     float *o, ptrdiff_t os) {
    int e = 0;
#ifdef __AVX2__
    for (; e + 16 <= Dv; e += 16) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int j = 0; j < T; j++) {
            const float *vr = v + (size_t)j * vs + e;
            __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
            __m256 p0 = _mm256_broadcast_ss(p + j), p1 = _mm256_broadcast_ss(p + T8 + j);
            a0 = _mm256_fmadd_ps(p0, v0, a0); b0 = _mm256_fmadd_ps(p0, v1, b0);
            a1 = _mm256_fmadd_ps(p1, v0, a1); b1 = _mm256_fmadd_ps(p1, v1, b1);
            p0 = _mm256_broadcast_ss(p + 2 * T8 + j); p1 = _mm256_broadcast_ss(p + 3 * T8 + j);
            a2 = _mm256_fmadd_ps(p0, v0, a2); b2 = _mm256_fmadd_ps(p0, v1, b2);
            a3 = _mm256_fmadd_ps(p1, v0, a3); b3 = _mm256_fmadd_ps(p1, v1, b3);
        }
        _mm256_storeu_ps(o + e, a0);          _mm256_storeu_ps(o + e + 8, b0);
        _mm256_storeu_ps(o + os + e, a1);     _mm256_storeu_ps(o + os + e + 8, b1);
        _mm256_storeu_ps(o + 2 * os + e, a2); _mm256_storeu_ps(o + 2 * os + e + 8, b2);
        _mm256_storeu_ps(o + 3 * os + e, a3); _mm256_storeu_ps(o + 3 * os + e + 8, b3);
    }
#endif
    for (; e < Dv; e++)
        for (int r = 0; r < QB; r++) {
            float a = 0.0f;
            for (int j = 0; j < T; j++) a += p[(size_t)r * T8 + j] * v[(size_t)j * vs + e];
            o[(size_t)r * os + e] = a;
        }
}

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

/* o[0..Dv) = sum_j p[j] * v[j * vs + (0..Dv)] */
static void context_row(const float *p, int T, const float *v, ptrdiff_t vs, int Dv, float *o) {
    int e = 0;
#ifdef __AVX2__
    for (; e + 32 <= Dv; e += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < T; j++) {
            const float *vr = v + (size_t)j * vs + e;
            __m256 pj = _mm256_broadcast_ss(p + j);
            a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr), a0);
            a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 8), a1);
            a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 16), a2);
            a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vr + 24), a3);
        }
        _mm256_storeu_ps(o + e, a0);
        _mm256_storeu_ps(o + e + 8, a1);
        _mm256_storeu_ps(o + e + 16, a2);
        _mm256_storeu_ps(o + e + 24, a3);
    }
    for (; e + 8 <= Dv; e += 8) {
        __m256 a0 = _mm256_setzero_ps();
        for (int j = 0; j < T; j++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j),
                                 _mm256_loadu_ps(v + (size_t)j * vs + e), a0);
        _mm256_storeu_ps(o + e, a0);
    }
#endif
    for (; e < Dv; e++) {
        float a = 0.0f;
        for (int j = 0; j < T; j++) a += p[j] * v[(size_t)j * vs + e];
        o[e] = a;
    }
}

int dscy_f32_attention(const float *q, ptrdiff_t qb, ptrdiff_t qs, ptrdiff_t qh,
                       const float *k, ptrdiff_t kb, ptrdiff_t ks, ptrdiff_t kh,
                       const float *v, ptrdiff_t vb, ptrdiff_t vs, ptrdiff_t vh,
                       const float *mask, ptrdiff_t mb, ptrdiff_t mh, ptrdiff_t mq,
                       float *o, ptrdiff_t ob, ptrdiff_t os, ptrdiff_t oh,
                       int B, int H, int S, int T, int D, int Dv, float scale, int nthreads) {
    int T8 = (T + 7) / 8 * 8;
    long items = (long)B * H;
    int nt = dscy_nthreads(nthreads);
    if ((double)items * S * T * (D + Dv) < 1.0e6) nt = 1;
    if (items < nt) nt = (int)items;
    int fail = 0;
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) reduction(|:fail)
    for (long it = 0; it < items; it++) {
        int b = (int)(it / H), h = (int)(it % H);
        float *kt = att_buffer((size_t)D * T8 + (size_t)QB * T8);
        if (!kt) { fail = 1; continue; }
        float *s = kt + (size_t)D * T8;
        const float *kbh = k + b * kb + h * kh;
        for (int d = 0; d < D; d++) {
            float *row = kt + (size_t)d * T8;
            for (int j = 0; j < T; j++) row[j] = kbh[(size_t)j * ks + d];
            for (int j = T; j < T8; j++) row[j] = 0.0f;
        }
        const float *qbh = q + b * qb + h * qh, *vbh = v + b * vb + h * vh;
        float *obh = o + b * ob + h * oh;
        const float *mbh = mask ? mask + b * mb + h * mh : NULL;
        for (int i0 = 0; i0 < S; i0 += QB) {
            int nr = S - i0 < QB ? S - i0 : QB;
            scores(qbh + (size_t)i0 * qs, qs, nr, kt, D, T8, s);
            for (int r = 0; r < nr; r++) {
                const float *mrow = mbh ? mbh + (size_t)(i0 + r) * mq : NULL;
#ifdef __AVX2__
                softmax_row(s + (size_t)r * T8, mrow, T, scale);
#else
                dscy_scale_mask_softmax(ATT_AVX2, s + (size_t)r * T8, mrow, T, scale);
#endif
            }
            if (nr == QB) {
                context4(s, T8, T, vbh, vs, Dv, obh + (size_t)i0 * os, os);
            } else {
                for (int r = 0; r < nr; r++)
                    context_row(s + (size_t)r * T8, T, vbh, vs, Dv, obh + (size_t)(i0 + r) * os);
            }
        }
    }
    return fail ? -1 : 0;
}
