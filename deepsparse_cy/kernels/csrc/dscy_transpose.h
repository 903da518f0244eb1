/* Matrix transposes for layout changes between the graph's planar (NCHW) tensors and the
 * channels-last rows the quantized kernels use: dst[c * ldd + r] = src[r * lds + c] for
 * r < R, c < Cn. 8-bit elements in 16 x 16 blocks (SSE2: four rounds of unpacks), 4-byte
 * elements in 4 x 4 blocks (_MM_TRANSPOSE4_PS); edges element by element. SSE2 is the x86-64
 * baseline, so the ISA-independent module uses it without dispatch. */
#ifndef DSCY_TRANSPOSE_H
#define DSCY_TRANSPOSE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __SSE2__
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#ifdef __SSE2__
static inline void dscy_tr16x16_u8(const uint8_t *s, ptrdiff_t lds, uint8_t *d, ptrdiff_t ldd) {
    __m128i a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = _mm_loadu_si128((const __m128i *)(s + i * lds));
    /* rows 2i, 2i+1 interleaved: 16-bit unit j = (row 2i, row 2i+1) of column j */
    for (int i = 0; i < 8; i++) {
        b[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    /* rows 4q..4q+3: 32-bit unit = 4 rows of one column; a[4q + g] holds columns 4g..4g+3 */
    for (int q = 0; q < 4; q++) {
        a[4 * q + 0] = _mm_unpacklo_epi16(b[4 * q + 0], b[4 * q + 2]);
        a[4 * q + 1] = _mm_unpackhi_epi16(b[4 * q + 0], b[4 * q + 2]);
        a[4 * q + 2] = _mm_unpacklo_epi16(b[4 * q + 1], b[4 * q + 3]);
        a[4 * q + 3] = _mm_unpackhi_epi16(b[4 * q + 1], b[4 * q + 3]);
    }
    /* rows 8o..8o+7: 64-bit unit = 8 rows of one column; b[8o + h] holds columns 2h, 2h+1 */
    for (int o = 0; o < 2; o++)
        for (int g = 0; g < 4; g++) {
            b[8 * o + 2 * g] = _mm_unpacklo_epi32(a[8 * o + g], a[8 * o + 4 + g]);
            b[8 * o + 2 * g + 1] = _mm_unpackhi_epi32(a[8 * o + g], a[8 * o + 4 + g]);
        }
    for (int h = 0; h < 8; h++) {
        _mm_storeu_si128((__m128i *)(d + (2 * h) * ldd), _mm_unpacklo_epi64(b[h], b[8 + h]));
        _mm_storeu_si128((__m128i *)(d + (2 * h + 1) * ldd), _mm_unpackhi_epi64(b[h], b[8 + h]));
    }
}
#endif

/* rows [r0, r1) of src (all columns) into dst */
static inline void dscy_transpose_u8(const uint8_t *src, ptrdiff_t lds, uint8_t *dst,
                                     ptrdiff_t ldd, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t Cn) {
    ptrdiff_t r = r0;
#ifdef __SSE2__
    for (; r + 16 <= r1; r += 16) {
        ptrdiff_t c = 0;
        for (; c + 16 <= Cn; c += 16) dscy_tr16x16_u8(src + r * lds + c, lds, dst + c * ldd + r, ldd);
        for (; c < Cn; c++)
            for (ptrdiff_t i = r; i < r + 16; i++) dst[c * ldd + i] = src[i * lds + c];
    }
#endif
    for (; r < r1; r++)
        for (ptrdiff_t c = 0; c < Cn; c++) dst[c * ldd + r] = src[r * lds + c];
}

/* Few rows (R < 16: an RGB image's 3 planes): columns [c0, c1) of all R rows, each column's R
 * bytes written together (the 16 x 16 blocks do not apply, and column by column the output is
 * written in order instead of R interleaved byte streams) */
static inline void dscy_interleave_u8(const uint8_t *src, ptrdiff_t lds, uint8_t *dst,
                                      ptrdiff_t R, ptrdiff_t c0, ptrdiff_t c1) {
    if (R == 3) {
        const uint8_t *s0 = src, *s1 = src + lds, *s2 = src + 2 * lds;
        for (ptrdiff_t c = c0; c < c1; c++) {
            uint8_t *d = dst + c * 3;
            d[0] = s0[c]; d[1] = s1[c]; d[2] = s2[c];
        }
        return;
    }
    for (ptrdiff_t c = c0; c < c1; c++)
        for (ptrdiff_t r = 0; r < R; r++) dst[c * R + r] = src[r * lds + c];
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
/* dscy_interleave_u8 of 3 rows with AVX-512 VBMI byte permutes: per 64 columns the 3 x 64
 * source bytes become 192 output bytes in three 64-byte stores, each the permute of rows 0 and
 * 1 blended with a permute of row 2 (output byte o: column o / 3, row o % 3); the byte loop
 * wrote one byte at a time (the quantized YOLOv8n's 320 x 320 RGB input: 74 us). The columns
 * past the last whole 64 by the byte loop. */
#include <immintrin.h>
__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static void dscy_interleave3_u8_vbmi(const uint8_t *src, ptrdiff_t lds, uint8_t *dst,
                                     ptrdiff_t c0, ptrdiff_t c1) {
    const uint8_t *s0 = src, *s1 = src + lds, *s2 = src + 2 * lds;
    uint8_t i01[3][64], i2[3][64];
    uint64_t m2[3] = {0, 0, 0};
    for (int o = 0; o < 192; o++) {
        int k = o / 64, j = o % 64, col = o / 3, row = o % 3;
        i01[k][j] = (uint8_t)(col + (row == 1 ? 64 : 0));
        i2[k][j] = (uint8_t)col;
        if (row == 2) m2[k] |= (uint64_t)1 << j;
    }
    __m512i a[3], b[3];
    for (int k = 0; k < 3; k++) {
        a[k] = _mm512_loadu_si512((const void *)i01[k]);
        b[k] = _mm512_loadu_si512((const void *)i2[k]);
    }
    ptrdiff_t c = c0;
    for (; c + 64 <= c1; c += 64) {
        __m512i r0 = _mm512_loadu_si512((const void *)(s0 + c));
        __m512i r1 = _mm512_loadu_si512((const void *)(s1 + c));
        __m512i r2 = _mm512_loadu_si512((const void *)(s2 + c));
        uint8_t *d = dst + c * 3;
        for (int k = 0; k < 3; k++)
            _mm512_storeu_si512((void *)(d + 64 * k),
                                _mm512_mask_blend_epi8((__mmask64)m2[k],
                                                       _mm512_permutex2var_epi8(r0, a[k], r1),
                                                       _mm512_permutexvar_epi8(b[k], r2)));
    }
    for (; c < c1; c++) {
        uint8_t *d = dst + c * 3;
        d[0] = s0[c]; d[1] = s1[c]; d[2] = s2[c];
    }
}
#else
#define dscy_interleave3_u8_vbmi(src, lds, dst, c0, c1) dscy_interleave_u8(src, lds, dst, 3, c0, c1)
#endif

/* the same for 4-byte elements (float32, int32 as their bits) */
static inline void dscy_transpose_f32(const float *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd,
                                      ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t Cn) {
    ptrdiff_t r = r0;
#ifdef __SSE2__
    for (; r + 4 <= r1; r += 4) {
        ptrdiff_t c = 0;
        for (; c + 4 <= Cn; c += 4) {
            __m128 a0 = _mm_loadu_ps(src + r * lds + c), a1 = _mm_loadu_ps(src + (r + 1) * lds + c);
            __m128 a2 = _mm_loadu_ps(src + (r + 2) * lds + c), a3 = _mm_loadu_ps(src + (r + 3) * lds + c);
            _MM_TRANSPOSE4_PS(a0, a1, a2, a3);
            _mm_storeu_ps(dst + c * ldd + r, a0);
            _mm_storeu_ps(dst + (c + 1) * ldd + r, a1);
            _mm_storeu_ps(dst + (c + 2) * ldd + r, a2);
            _mm_storeu_ps(dst + (c + 3) * ldd + r, a3);
        }
        for (; c < Cn; c++)
            for (ptrdiff_t i = r; i < r + 4; i++) dst[c * ldd + i] = src[i * lds + c];
    }
#endif
    for (; r < r1; r++)
        for (ptrdiff_t c = 0; c < Cn; c++) dst[c * ldd + r] = src[r * lds + c];
}
#endif
