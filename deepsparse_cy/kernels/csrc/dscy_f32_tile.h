/* AVX2 pieces shared by f32_conv.c and f32_wino.c. The 6 x 16 FP32 FMA micro-tile of the conv /
 * GEMM kernels and the Winograd GEMMs: 12 ymm accumulators, per k one 16-float row of b (two loads)
 * and 6 broadcasts from a's panel row (a[k][0..6)). Inline: the accumulators stay in registers
 * through the k loop, and the caller's epilogue takes them from the returned struct. */
#ifndef DSCY_F32_TILE_H
#define DSCY_F32_TILE_H
#include <stddef.h>
#ifdef __AVX2__
#include <immintrin.h>

typedef struct { __m256 v[6][2]; } dscy_acc6x16;

/* sum over k < kc of a[k][r] * b[k][0..16), b's rows ldb floats apart */
static inline dscy_acc6x16 dscy_f32_tile6x16(int kc, const float *restrict a,
                                             const float *restrict b, ptrdiff_t ldb) {
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
