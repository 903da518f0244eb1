/* AVX2 pieces shared by f32_conv.c and f32_wino.c. The 6 x 16 FP32 FMA micro-tile of the conv /
 * GEMM kernels and the Winograd GEMMs: 12 ymm accumulators, per k one 16-float row of b (two loads)
 * and 6 broadcasts from a's panel row (a[k][0..6)). Inline: the accumulators stay in registers
 * through the k loop, and the caller's epilogue takes them from the returned struct. */
#ifndef DSCY_F32_TILE_H
#define DSCY_F32_TILE_H
#include <stddef.h>
#include "f32_fused.h"

/* Activations the tiles apply in registers after the last K block (dscy_f32_act8); the others
 * (GELU, Sigmoid, LeakyReLU) run as a pass over the output rows afterwards. SiLU, HardSwish and
 * HardSigmoid moved into the tiles: as a pass, SiLU cost 36-59% on top of YOLOv8n's low-K convs
 * (the stem, 1x1 32 -> 32), reloading what the tile had just stored. */
static inline int dscy_f32_reg_act(int act) {
    return act == 0 || act == DSCY_F_RELU || act == DSCY_F_CLIP || act == DSCY_F_SILU
        || act == DSCY_F_HARDSWISH || act == DSCY_F_HARDSIGMOID;
}

#ifdef __AVX2__
#include <immintrin.h>
#include "dscy_exp8.h"

typedef struct { __m256 v[6][2]; } dscy_acc6x16;

/* sum over k < kc of a[k][r] * b[k][0..16), b's rows ldb floats apart */
static inline dscy_acc6x16 dscy_f32_tile6x16(int kc, const float *restrict a,
                                             const float *restrict b, ptrdiff_t ldb) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    /* avx512 builds: one zmm per row (half the FMAs and b loads), the same products summed in
     * the same k order per lane, so bit for bit the ymm tile; split into halves for the caller */
    __m512 z0 = _mm512_setzero_ps(), z1 = z0, z2 = z0, z3 = z0, z4 = z0, z5 = z0;
    for (int k = 0; k < kc; k++) {
        __m512 bz = _mm512_loadu_ps(b);
        z0 = _mm512_fmadd_ps(_mm512_set1_ps(a[0]), bz, z0);
        z1 = _mm512_fmadd_ps(_mm512_set1_ps(a[1]), bz, z1);
        z2 = _mm512_fmadd_ps(_mm512_set1_ps(a[2]), bz, z2);
        z3 = _mm512_fmadd_ps(_mm512_set1_ps(a[3]), bz, z3);
        z4 = _mm512_fmadd_ps(_mm512_set1_ps(a[4]), bz, z4);
        z5 = _mm512_fmadd_ps(_mm512_set1_ps(a[5]), bz, z5);
        a += 6; b += ldb;
    }
#define DSCY_HALVES(z) {_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1)}
    dscy_acc6x16 rz = {{DSCY_HALVES(z0), DSCY_HALVES(z1), DSCY_HALVES(z2), DSCY_HALVES(z3),
                        DSCY_HALVES(z4), DSCY_HALVES(z5)}};
#undef DSCY_HALVES
    return rz;
#endif
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 a0 = _mm256_broadcast_ss(a), a1 = _mm256_broadcast_ss(a + 1);
        c00 = _mm256_fmadd_ps(a0, b0, c00); c01 = _mm256_fmadd_ps(a0, b1, c01);
        c10 = _mm256_fmadd_ps(a1, b0, c10); c11 = _mm256_fmadd_ps(a1, b1, c11);
        a0 = _mm256_broadcast_ss(a + 2); a1 = _mm256_broadcast_ss(a + 3);
        c20 = _mm256_fmadd_ps(a0, b0, c20); c21 = _mm256_fmadd_ps(a0, b1, c21);
        c30 = _mm256_fmadd_ps(a1, b0, c30); c31 = _mm256_fmadd_ps(a1, b1, c31);
        a0 = _mm256_broadcast_ss(a + 4); a1 = _mm256_broadcast_ss(a + 5);
        c40 = _mm256_fmadd_ps(a0, b0, c40); c41 = _mm256_fmadd_ps(a0, b1, c41);
        c50 = _mm256_fmadd_ps(a1, b0, c50); c51 = _mm256_fmadd_ps(a1, b1, c51);
        a += 6; b += ldb;
    }
    dscy_acc6x16 r = {{{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}}};
    return r;
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define DSCY_F32_TILE2 1
/* Two 6 x 16 tiles of one panel a over the strips b0 and b1 at once (avx512 builds): 12 zmm
 * accumulators. The single tile's six chains wait on the FMA latency (6 FMAs per 4 cycles at
 * best, of 8 the two FMA ports could start); twelve keep both ports busy, and each broadcast
 * serves two FMAs. Per lane the same products in the same k order: bit for bit two
 * dscy_f32_tile6x16 calls. */
typedef struct { __m512 v[6]; } dscy_acc6x16z;     /* one zmm per row */
static inline void dscy_f32_tile6x32(int kc, const float *restrict a, const float *restrict b0,
                                     const float *restrict b1, ptrdiff_t ldb, dscy_acc6x16z *r0,
                                     dscy_acc6x16z *r1) {
    __m512 x0 = _mm512_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0;
    __m512 y0 = x0, y1 = x0, y2 = x0, y3 = x0, y4 = x0, y5 = x0;
    for (int k = 0; k < kc; k++) {
        __m512 p = _mm512_loadu_ps(b0), q = _mm512_loadu_ps(b1), w;
        w = _mm512_set1_ps(a[0]); x0 = _mm512_fmadd_ps(w, p, x0); y0 = _mm512_fmadd_ps(w, q, y0);
        w = _mm512_set1_ps(a[1]); x1 = _mm512_fmadd_ps(w, p, x1); y1 = _mm512_fmadd_ps(w, q, y1);
        w = _mm512_set1_ps(a[2]); x2 = _mm512_fmadd_ps(w, p, x2); y2 = _mm512_fmadd_ps(w, q, y2);
        w = _mm512_set1_ps(a[3]); x3 = _mm512_fmadd_ps(w, p, x3); y3 = _mm512_fmadd_ps(w, q, y3);
        w = _mm512_set1_ps(a[4]); x4 = _mm512_fmadd_ps(w, p, x4); y4 = _mm512_fmadd_ps(w, q, y4);
        w = _mm512_set1_ps(a[5]); x5 = _mm512_fmadd_ps(w, p, x5); y5 = _mm512_fmadd_ps(w, q, y5);
        a += 6; b0 += ldb; b1 += ldb;
    }
    r0->v[0] = x0; r0->v[1] = x1; r0->v[2] = x2; r0->v[3] = x3; r0->v[4] = x4; r0->v[5] = x5;
    r1->v[0] = y0; r1->v[1] = y1; r1->v[2] = y2; r1->v[3] = y3; r1->v[4] = y4; r1->v[5] = y5;
}

/* dscy_f32_act8 on 16 lanes, lane for lane the same operations (the reciprocal of SiLU by two
 * ymm vrcpps: vrcp14ps approximates differently) */
static inline __m512 dscy_f32_act16(int act, float lo, float hi, __m512 v) {
    switch (act) {
    case DSCY_F_RELU:
        return _mm512_max_ps(v, _mm512_setzero_ps());
    case DSCY_F_CLIP:
        return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), v));
    case DSCY_F_SILU: {
        __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f),
                                 dscy_exp16_clamped(_mm512_sub_ps(_mm512_setzero_ps(), v)));
        __m512 r = _mm512_insertf32x8(
            _mm512_castps256_ps512(_mm256_rcp_ps(_mm512_castps512_ps256(d))),
            _mm256_rcp_ps(_mm512_extractf32x8_ps(d, 1)), 1);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
        return _mm512_mul_ps(v, r);
    }
    case DSCY_F_HARDSWISH: {
        __m512 h = _mm512_fmadd_ps(v, _mm512_set1_ps(1.0f / 6.0f), _mm512_set1_ps(0.5f));
        h = _mm512_min_ps(_mm512_max_ps(h, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
        return _mm512_mul_ps(v, h);
    }
    case DSCY_F_HARDSIGMOID: {
        __m512 h = _mm512_fmadd_ps(v, _mm512_set1_ps(lo), _mm512_set1_ps(hi));
        return _mm512_min_ps(_mm512_max_ps(h, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
    }
    default:
        return v;
    }
}
#else
#define DSCY_F32_TILE2 0
#endif

/* The activations the conv and Winograd tiles apply in registers (f32_fused.h's formulas;
 * lo, hi: Clip's bounds or HardSigmoid's alpha, beta); other codes pass v through. */
static inline __m256 dscy_f32_act8(int act, float lo, float hi, __m256 v) {
    switch (act) {
    case DSCY_F_RELU:
        return _mm256_max_ps(v, _mm256_setzero_ps());      /* v > 0 ? v : 0, as f32_fused.h */
    case DSCY_F_CLIP:
        return _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), v));
    case DSCY_F_SILU: {
        /* v / (1 + e^-v) as v * (1/d), 1/d from vrcpps and one Newton step (~1 ulp): a
         * division per 8 lanes made the SiLU convs of YOLOv8n 1.3-1.6x their time without.
         * Out of exp's range no select is needed: the clamped exp gives e^-v ~ 3e38 (v -> -0)
         * or ~1e-38 (v -> v); a NaN v stays NaN through the product (dscy_exp8.h). */
        __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f),
                                 dscy_exp8_clamped(_mm256_sub_ps(_mm256_setzero_ps(), v)));
        __m256 r = _mm256_rcp_ps(d);
        r = _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0f)));
        return _mm256_mul_ps(v, r);
    }
    case DSCY_F_HARDSWISH: {
        __m256 h = _mm256_fmadd_ps(v, _mm256_set1_ps(1.0f / 6.0f), _mm256_set1_ps(0.5f));
        h = _mm256_min_ps(_mm256_max_ps(h, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
        return _mm256_mul_ps(v, h);
    }
    case DSCY_F_HARDSIGMOID: {
        __m256 h = _mm256_fmadd_ps(v, _mm256_set1_ps(lo), _mm256_set1_ps(hi));
        return _mm256_min_ps(_mm256_max_ps(h, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
    }
    default:
        return v;
    }
}

/* n <= 8 floats at p as 8 lanes (zeros past n) / the first n lanes of v to p. */
static inline __m256 dscy_load_n8(const float *p, int n) {
    if (n >= 8) return _mm256_loadu_ps(p);
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < n; j++) t[j] = p[j];
    return _mm256_loadu_ps(t);
}

static inline void dscy_store_n8(float *p, __m256 v, int n) {
    if (n >= 8) { _mm256_storeu_ps(p, v); return; }
    float t[8];
    _mm256_storeu_ps(t, v);
    for (int j = 0; j < n; j++) p[j] = t[j];
}

/* 16 floats at s -> the 8 even-indexed ones to ev, the 8 odd-indexed ones to od (the stride-2
 * phase split of strided convs and the Winograd input columns). */
static inline void dscy_split_even_odd16(const float *s, float *ev, float *od) {
    __m256 a = _mm256_loadu_ps(s), b = _mm256_loadu_ps(s + 8);
    /* a = x0..x7, b = x8..x15 -> evens / odds, 128-bit lanes put in order by the permute */
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(ev, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
    _mm256_storeu_ps(od, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
}
#endif
#endif
