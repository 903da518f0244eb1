/* Branch-free float32 exp and erf that compilers vectorise (no libm calls in the loop).
 *
 * dscy_expf: Cephes-style range reduction x = n*ln2 + r, |r| <= ln2/2, degree-6 polynomial,
 *            2^n assembled in the exponent bits; ~1-2 ulp over [-87, 88], 0 below, inf above.
 * dscy_erff: odd rational approximation x*P(x^2)/Q(x^2) on x clamped to [-4, 4] (erf(4) == 1
 *            in float32), the form Eigen uses for its fast float erf; a few ulp.
 */
#ifndef DSCY_FASTMATH_H
#define DSCY_FASTMATH_H
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Threads for a kernel call: the request, never above the calling thread's OpenMP limit
 * (threadpoolctl / OMP_NUM_THREADS), at least 1. */
static inline int dscy_cap_threads(int want) {
#ifdef _OPENMP
    int cap = omp_get_max_threads();
    if (want <= 0 || want > cap) want = cap;
    return want < 1 ? 1 : want;
#else
    (void)want;
    return 1;
#endif
}

/* The selects below are only if-converted (and so vectorised) when FP traps need not be kept. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

static inline float dscy_expf(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365447505531f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    float fx = xc * 1.44269504088896341f + 0.5f;
    float fl = (float)(int)fx;
    fl = fl > fx ? fl - 1.0f : fl;           /* floor */
    float r = xc - fl * 0.693359375f;
    r = r - fl * -2.12194440e-4f;
    float r2 = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r2 + r + 1.0f;
    int32_t n = (int32_t)fl + 127;
    uint32_t bits = (uint32_t)n << 23;
    float p2;
    memcpy(&p2, &bits, 4);
    float res = y * p2;
    res = x > hi ? __builtin_inff() : res;
    res = x < lo ? 0.0f : res;
    return x != x ? x : res;                 /* NaN propagates */
}

/* dscy_erff's rational form, shared with the 8-lane copy in dscy_common.h (dscy_gelu8) */
#define DSCY_ERF_P0 -2.72614225801306e-10f
#define DSCY_ERF_P1 2.77068142495902e-08f
#define DSCY_ERF_P2 -2.10102402082508e-06f
#define DSCY_ERF_P3 -5.69250639462346e-05f
#define DSCY_ERF_P4 -7.34990630326855e-04f
#define DSCY_ERF_P5 -2.95459980854025e-03f
#define DSCY_ERF_P6 -1.60960333262415e-02f
#define DSCY_ERF_Q0 -1.45660718464996e-05f
#define DSCY_ERF_Q1 -2.13374055278905e-04f
#define DSCY_ERF_Q2 -1.68282697438203e-03f
#define DSCY_ERF_Q3 -7.37332916720468e-03f
#define DSCY_ERF_Q4 -1.42647390514189e-02f

static inline float dscy_erff(float x) {
    float xc = x > 4.0f ? 4.0f : x;
    xc = xc < -4.0f ? -4.0f : xc;
    float x2 = xc * xc;
    float p = DSCY_ERF_P0;
    p = p * x2 + DSCY_ERF_P1;
    p = p * x2 + DSCY_ERF_P2;
    p = p * x2 + DSCY_ERF_P3;
    p = p * x2 + DSCY_ERF_P4;
    p = p * x2 + DSCY_ERF_P5;
    p = p * x2 + DSCY_ERF_P6;
    p = p * xc;
    float q = DSCY_ERF_Q0;
    q = q * x2 + DSCY_ERF_Q1;
    q = q * x2 + DSCY_ERF_Q2;
    q = q * x2 + DSCY_ERF_Q3;
    q = q * x2 + DSCY_ERF_Q4;
    float res = p / q;
    return x != x ? x : res;
}

/* Array forms: plain loops over restrict pointers, which gcc -O3 vectorises. */
static inline void dscy_erf_array(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = dscy_erff(x[i]);
}
static inline void dscy_gelu_array(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + dscy_erff(x[i] * 0.70710678118654752440f));
}
/* y = exp(x - m); returns the sum of y in double (8 float partial sums per 256-block) */
static inline double dscy_exp_shift_array(const float *restrict x, float *restrict y, long n, float m) {
    for (long i = 0; i < n; i++) y[i] = dscy_expf(x[i] - m);
    double total = 0.0;
    for (long i0 = 0; i0 < n; i0 += 256) {
        long i1 = i0 + 256 < n ? i0 + 256 : n;
        float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        long i = i0;
        for (; i + 8 <= i1; i += 8)
            for (int k = 0; k < 8; k++) s[k] += y[i + k];
        for (; i < i1; i++) s[0] += y[i];
        total += (double)(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
    }
    return total;
}
static inline float dscy_max_array(const float *restrict x, long n) {
    float m = x[0];
    for (long i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* QuantizeLinear to 8 bits, as the ONNX spec: saturate(round_half_even(x / scale) + zp).
 * x / scale is clamped to a range just beyond the representable one before rounding (which
 * does not change the saturated result), so the 1.5*2^23 trick rounds half to even exactly.
 * NaN saturates to 0 after the clamp, like onnxruntime. */
static inline void dscy_quantize_u8(const float *restrict x, unsigned char *restrict y, long n,
                                    float scale, float zp) {
    const float lo = -zp - 1.0f, hi = 255.0f - zp + 1.0f, magic = 12582912.0f;
    for (long i = 0; i < n; i++) {
        float v = x[i] / scale;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        v = v != v ? lo : v;
        float r = (v + magic) - magic + zp;
        r = r < 0.0f ? 0.0f : r;
        r = r > 255.0f ? 255.0f : r;
        y[i] = (unsigned char)(int)r;
    }
}
static inline void dscy_quantize_s8(const float *restrict x, signed char *restrict y, long n,
                                    float scale, float zp) {
    const float lo = -128.0f - zp - 1.0f, hi = 127.0f - zp + 1.0f, magic = 12582912.0f;
    for (long i = 0; i < n; i++) {
        float v = x[i] / scale;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        v = v != v ? lo : v;
        float r = (v + magic) - magic + zp;
        r = r < -128.0f ? -128.0f : r;
        r = r > 127.0f ? 127.0f : r;
        y[i] = (signed char)(int)r;
    }
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
/* AVX2 copies of the two quantizers, bit-identical to them: the same IEEE division by scale,
 * clamp, NaN -> lo, round half to even (vroundps), + zero point and saturation; 32 values per
 * step narrowed with pack instructions (the scalar loops stay scalar: gcc does not vectorise the
 * float -> int -> byte chain). The tail runs through the scalar copies. */
/* x / scale as x * (1 / scale) where that rounds the same: the product is within ~2 ulp of
 * the quotient, so it rounds (half to even) to the same integer unless it lies within 2^-10 of
 * a half-integer (for |q| <= 512, where 2 ulp < 2^-12; beyond that both saturate alike), and
 * then the 8 lanes are divided after all. iv = 0 (a scale whose reciprocal is not a normal
 * float) always divides. The division was half of a LayerNorm + QuantizeLinear row. */
__attribute__((target("avx2,fma")))
static inline __m256 dscy_q8_div(__m256 x, __m256 sc, __m256 iv) {
    if (_mm256_movemask_ps(_mm256_cmp_ps(iv, _mm256_setzero_ps(), _CMP_EQ_OQ)))
        return _mm256_div_ps(x, sc);
    __m256 v = _mm256_mul_ps(x, iv);
    __m256 f = _mm256_sub_ps(_mm256_sub_ps(v, _mm256_floor_ps(v)), _mm256_set1_ps(0.5f));
    __m256 nf = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), f);          /* |frac - 0.5| */
    if (_mm256_movemask_ps(_mm256_cmp_ps(nf, _mm256_set1_ps(0x1p-10f), _CMP_LT_OQ)))
        return _mm256_div_ps(x, sc);
    return v;
}

/* 1 / scale when x * (1 / scale) may stand for x / scale (dscy_q8_div), else 0 */
static inline float dscy_q8_inv(float scale) {
    return scale >= 0x1p-100f && scale <= 0x1p100f ? 1.0f / scale : 0.0f;
}

__attribute__((target("avx2,fma")))
static inline __m256i dscy_q8_block(const float *x, __m256 sc, __m256 iv, __m256 lo, __m256 hi,
                                    __m256 zpv, __m256 qlo, __m256 qhi) {
    __m256i r[4];
    for (int k = 0; k < 4; k++) {
        __m256 v = dscy_q8_div(_mm256_loadu_ps(x + 8 * k), sc, iv);
        __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
        v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);       /* NaN handled by the blend below */
        v = _mm256_blendv_ps(v, lo, nan);
        v = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zpv);
        v = _mm256_min_ps(_mm256_max_ps(v, qlo), qhi);
        r[k] = _mm256_cvttps_epi32(v);
    }
    /* int32 x 32 -> int16 x 32 (packs saturate, values are already in range) */
    __m256i a = _mm256_packs_epi32(r[0], r[1]), b = _mm256_packs_epi32(r[2], r[3]);
    /* the packs work per 128-bit lane: 4-byte groups come out as x0-3, x8-11, x16-19, x24-27,
     * x4-7, x12-15, x20-23, x28-31; one dword permute restores the order */
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b),
                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

__attribute__((target("avx2,fma")))
static void dscy_quantize_u8_avx2(const float *restrict x, unsigned char *restrict y, long n,
                                  float scale, float zp) {
    const __m256 sc = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-zp - 1.0f),
                 hi = _mm256_set1_ps(255.0f - zp + 1.0f), iv = _mm256_set1_ps(dscy_q8_inv(scale));
    /* saturate to 0..255 shifted down to -128..127 (so the signed packs keep every value),
     * then flip the top bit back */
    const __m256 zps = _mm256_set1_ps(zp - 128.0f), qlo = _mm256_set1_ps(-128.0f),
                 qhi = _mm256_set1_ps(127.0f);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i q = dscy_q8_block(x + i, sc, iv, lo, hi, zps, qlo, qhi);
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_xor_si256(q, flip));
    }
    dscy_quantize_u8(x + i, y + i, n - i, scale, zp);
}

__attribute__((target("avx2,fma")))
static void dscy_quantize_s8_avx2(const float *restrict x, signed char *restrict y, long n,
                                  float scale, float zp) {
    const __m256 sc = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-128.0f - zp - 1.0f),
                 hi = _mm256_set1_ps(127.0f - zp + 1.0f), zpv = _mm256_set1_ps(zp),
                 qlo = _mm256_set1_ps(-128.0f), qhi = _mm256_set1_ps(127.0f),
                 iv = _mm256_set1_ps(dscy_q8_inv(scale));
    long i = 0;
    for (; i + 32 <= n; i += 32)
        _mm256_storeu_si256((__m256i *)(y + i), dscy_q8_block(x + i, sc, iv, lo, hi, zpv, qlo, qhi));
    dscy_quantize_s8(x + i, y + i, n - i, scale, zp);
}

/* AVX-512 copies (level 2: the CPU has AVX-512 F/BW/VL/DQ), bit-identical to the scalar
 * quantizers: x * (1/scale) where that rounds as x / scale, else the division (16 lanes at a
 * time, dscy_q8_div's test), the same clamps, NaN -> lo, round half to even and saturation; 16
 * values per step narrowed by vpmovdb (in range already). Half the AVX2 copy's time on
 * BERT-base's 128 x 768 rows: it ran at 3x a plain numpy multiply. */
#define DSCY_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
/* The quantized values of x (16 lanes) less the zero point: q - zp as exact integers in float,
 * saturated to [qmin - zp, qmax - zp] = [lo0, hi0] (LayerNorm's fused row dequantizes these
 * without going through the bytes). round(x * (1/scale)) half to even by one vrndscaleps; its
 * distance to the product is dscy_q8_div's tie test (|frac - 0.5| < 2^-10 exactly when
 * |v - round(v)| > 0.5 - 2^-10), and on a lane that close to a tie the whole vector is divided
 * instead (divide: iv = 0, hoisted by the caller, always). NaN saturates low through vmaxps,
 * which returns its second operand when the first is NaN. An earlier copy clamped before
 * rounding, blended NaN and took the floor for the test: the same bits, ~20 against ~15 zmm
 * operations per 16 values (LayerNorm + quantize row 804 -> 605 TSC at 768). */
DSCY_TARGET_AVX512
static inline __m512 dscy_q8_16r(__m512 x, __m512 sc, __m512 iv, int divide, __m512 lo0,
                                 __m512 hi0) {
    __m512 v = divide ? _mm512_div_ps(x, sc) : _mm512_mul_ps(x, iv);
    __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (!divide && _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, r)),
                                      _mm512_set1_ps(0.5f - 0x1p-10f), _CMP_GT_OQ)) {
        v = _mm512_div_ps(x, sc);
        r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    return _mm512_min_ps(_mm512_max_ps(r, lo0), hi0);
}

/* 16 bytes of dscy_q8_16r(x) + zp (dscy_quantize_u8_avx512 / _s8_avx512) */
DSCY_TARGET_AVX512
static inline __m128i dscy_q8_16b(const float *x, __m512 sc, __m512 iv, int divide, __m512 lo0,
                                  __m512 hi0, __m512 zpv) {
    __m512 v = _mm512_add_ps(dscy_q8_16r(_mm512_loadu_ps(x), sc, iv, divide, lo0, hi0), zpv);
    return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
}

DSCY_TARGET_AVX512
static void dscy_quantize_u8_avx512(const float *restrict x, unsigned char *restrict y, long n,
                                    float scale, float zp) {
    const float ivs = dscy_q8_inv(scale);
    const __m512 sc = _mm512_set1_ps(scale), iv = _mm512_set1_ps(ivs), zpv = _mm512_set1_ps(zp),
                 lo0 = _mm512_set1_ps(-zp), hi0 = _mm512_set1_ps(255.0f - zp);
    const int divide = ivs == 0.0f;
    long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(y + i), dscy_q8_16b(x + i, sc, iv, divide, lo0, hi0, zpv));
    dscy_quantize_u8(x + i, y + i, n - i, scale, zp);
}

DSCY_TARGET_AVX512
static void dscy_quantize_s8_avx512(const float *restrict x, signed char *restrict y, long n,
                                    float scale, float zp) {
    const float ivs = dscy_q8_inv(scale);
    const __m512 sc = _mm512_set1_ps(scale), iv = _mm512_set1_ps(ivs), zpv = _mm512_set1_ps(zp),
                 lo0 = _mm512_set1_ps(-128.0f - zp), hi0 = _mm512_set1_ps(127.0f - zp);
    const int divide = ivs == 0.0f;
    long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(y + i), dscy_q8_16b(x + i, sc, iv, divide, lo0, hi0, zpv));
    dscy_quantize_s8(x + i, y + i, n - i, scale, zp);
}
#else
#define dscy_quantize_u8_avx2 dscy_quantize_u8
#define dscy_quantize_s8_avx2 dscy_quantize_s8
#define dscy_quantize_u8_avx512 dscy_quantize_u8
#define dscy_quantize_s8_avx512 dscy_quantize_s8
#endif

/* QuantizeLinear of n floats into u8 (sgn 0) or s8: level 0 the scalar loops, 1 the AVX2 copy,
 * 2 the AVX-512 copy (all bit-identical) */
static inline void dscy_quantize8(int avx2, int sgn, const float *x, void *y, long n, float scale,
                                  float zp) {
    if (avx2 >= 2) {
        if (sgn) dscy_quantize_s8_avx512(x, (signed char *)y, n, scale, zp);
        else dscy_quantize_u8_avx512(x, (unsigned char *)y, n, scale, zp);
        return;
    }
    if (sgn) {
        if (avx2) dscy_quantize_s8_avx2(x, (signed char *)y, n, scale, zp);
        else dscy_quantize_s8(x, (signed char *)y, n, scale, zp);
    } else {
        if (avx2) dscy_quantize_u8_avx2(x, (unsigned char *)y, n, scale, zp);
        else dscy_quantize_u8(x, (unsigned char *)y, n, scale, zp);
    }
}

/* y[j] = ((float)q[j] - zp) * scale (+ bias[j]): DequantizeLinear (+ Add), two float32
 * roundings in numpy's order (an -mfma build would otherwise contract them into one FMA) */
#ifdef __FMA__
#define DSCY_ROUNDED(v) __asm__("" : "+x"(v))
#else
#define DSCY_ROUNDED(v) ((void)0)
#endif
#define DSCY_DEQUANT_ROW(name, T)                                                          \
    static inline void name(const T *q, float *y, long n, float zp, float scale,           \
                            const float *bias) {                                           \
        if (!bias) { for (long j = 0; j < n; j++) y[j] = ((float)q[j] - zp) * scale; return; } \
        for (long j = 0; j < n; j++) {                                                     \
            float d = ((float)q[j] - zp) * scale;                                          \
            DSCY_ROUNDED(d);                                                               \
            y[j] = d + bias[j];                                                            \
        }                                                                                  \
    }
DSCY_DEQUANT_ROW(dscy_dequant_row_u8, unsigned char)
DSCY_DEQUANT_ROW(dscy_dequant_row_s8, signed char)

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
/* the same rows 16 values a step (AVX-512 F/BW/VL/DQ, level 2), the same two roundings per
 * value: bit-identical; the generic module's gcc vectorised the loops at SSE2 width */
/* 16 8-bit values at q (u8, or s8 with sgn) under lane mask m as their floats
 * (q - zp) * scale [+ bias[0..15]], the product rounded before the bias; lanes outside m come
 * out as (0 - zp) * scale [+ 0]. The one copy of the mid step's arithmetic on zmm: the
 * DequantizeLinear rows here, the attention's packing of 8-bit q / k / v (f32_attn.c) and the
 * LayerNorm row of an 8-bit x (f32_fused.h) all dequantize through it. */
DSCY_TARGET_AVX512 static inline __m512 dscy_deq16(const void *q, int sgn, __m512 zp,
                                                   __m512 scale, const float *bias,
                                                   __mmask16 m) {
    __m128i raw = _mm_maskz_loadu_epi8(m, q);
    __m512 v = _mm512_cvtepi32_ps(sgn ? _mm512_cvtepi8_epi32(raw) : _mm512_cvtepu8_epi32(raw));
    v = _mm512_mul_ps(_mm512_sub_ps(v, zp), scale);
    __asm__("" : "+v"(v));   /* the product rounds before the bias (no FMA) */
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias));
    return v;
}

#define DSCY_DEQUANT_ROW16(name, T, sgn)                                                   \
    DSCY_TARGET_AVX512 static void name(const T *q, float *y, long n, float zp, float scale, \
                                        const float *bias) {                               \
        const __m512 z = _mm512_set1_ps(zp), sc = _mm512_set1_ps(scale);                   \
        for (long j = 0; j < n; j += 16) {   /* the tail under a lane mask */               \
            __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1); \
            _mm512_mask_storeu_ps(y + j, m, dscy_deq16(q + j, sgn, z, sc,                  \
                                                       bias ? bias + j : NULL, m));        \
        }                                                                                  \
    }
DSCY_DEQUANT_ROW16(dscy_dequant_row_u8_avx512, unsigned char, 0)
DSCY_DEQUANT_ROW16(dscy_dequant_row_s8_avx512, signed char, 1)
#else
#define dscy_dequant_row_u8_avx512 dscy_dequant_row_u8
#define dscy_dequant_row_s8_avx512 dscy_dequant_row_s8
#endif

/* DequantizeLinear rows at a quantizer level (dscy_quantize8's: 2 the AVX-512 copies) */
static inline void dscy_dequant_row(int level, int sgn, const void *q, float *y, long n, float zp,
                                    float scale, const float *bias) {
    if (sgn) {
        if (level >= 2) dscy_dequant_row_s8_avx512((const signed char *)q, y, n, zp, scale, bias);
        else dscy_dequant_row_s8((const signed char *)q, y, n, zp, scale, bias);
    } else {
        if (level >= 2) dscy_dequant_row_u8_avx512((const unsigned char *)q, y, n, zp, scale, bias);
        else dscy_dequant_row_u8((const unsigned char *)q, y, n, zp, scale, bias);
    }
}

/* y = min(max(x, lo), hi); NaN stays NaN (both comparisons are false for it), as ONNX Clip. */
static inline void dscy_clip_array(const float *restrict x, float *restrict y, long n,
                                   float lo, float hi) {
    for (long i = 0; i < n; i++) {
        float v = x[i];
        v = v < lo ? lo : v;
        y[i] = v > hi ? hi : v;
    }
}

/* Depthwise 2-D convolution of one channel plane, computed row by row.
 * plane: [phases][Q0b*Q1] stride-phase planes of the padded input (conv.py's phase_split);
 * tap t reads phase tph[t] at offset toff[t] + o0*Q1 + j. out: [O0][O1].
 * Columns go in blocks of 32 whose accumulators stay in registers across all taps. Two builds
 * of one body: baseline x86-64 and AVX2+FMA; the caller picks by the dispatched kernel ISA
 * (so DEEPSPARSE_CY_ISA=generic runs the baseline one). */
#define DSCY_DW_PLANE_BODY                                                                    \
    for (long o0 = 0; o0 < O0; o0++) {                                                        \
        float *restrict orow = out + o0 * O1;                                                 \
        long j0 = 0;                                                                          \
        for (; j0 + 32 <= O1; j0 += 32) {                                                     \
            float acc[32];                                                                    \
            for (int j = 0; j < 32; j++) acc[j] = bias;                                       \
            for (int t = 0; t < K; t++) {                                                     \
                const float *restrict src = plane + tph[t] * phase_len + toff[t] + o0 * Q1 + j0; \
                const float wt = w[t];                                                        \
                for (int j = 0; j < 32; j++) acc[j] += wt * src[j];                           \
            }                                                                                 \
            for (int j = 0; j < 32; j++) orow[j0 + j] = acc[j];                               \
        }                                                                                     \
        if (j0 < O1) {                                                                        \
            long n = O1 - j0;                                                                 \
            for (long j = 0; j < n; j++) orow[j0 + j] = bias;                                 \
            for (int t = 0; t < K; t++) {                                                     \
                const float *restrict src = plane + tph[t] * phase_len + toff[t] + o0 * Q1 + j0; \
                const float wt = w[t];                                                        \
                for (long j = 0; j < n; j++) orow[j0 + j] += wt * src[j];                     \
            }                                                                                 \
        }                                                                                     \
    }

#define DSCY_DW_PLANE_ARGS                                                                    \
    (const float *restrict plane, long phase_len, const float *restrict w,                    \
     const int *restrict tph, const long *restrict toff, int K, long Q1, long O0, long O1,    \
     float bias, float *restrict out)

#if defined(__SSE2__)
#include <emmintrin.h>
/* Baseline x86-64 (SSE2): 4 xmm accumulators (16 columns) in registers across all taps. */
static void dscy_dw_plane_generic DSCY_DW_PLANE_ARGS {
    for (long o0 = 0; o0 < O0; o0++) {
        float *restrict orow = out + o0 * O1;
        const float *restrict base = plane + o0 * Q1;
        long j0 = 0;
        for (; j0 + 16 <= O1; j0 += 16) {
            __m128 a0 = _mm_set1_ps(bias), a1 = a0, a2 = a0, a3 = a0;
            for (int t = 0; t < K; t++) {
                const float *src = base + tph[t] * phase_len + toff[t] + j0;
                const __m128 wv = _mm_set1_ps(w[t]);
                a0 = _mm_add_ps(a0, _mm_mul_ps(wv, _mm_loadu_ps(src)));
                a1 = _mm_add_ps(a1, _mm_mul_ps(wv, _mm_loadu_ps(src + 4)));
                a2 = _mm_add_ps(a2, _mm_mul_ps(wv, _mm_loadu_ps(src + 8)));
                a3 = _mm_add_ps(a3, _mm_mul_ps(wv, _mm_loadu_ps(src + 12)));
            }
            _mm_storeu_ps(orow + j0, a0);
            _mm_storeu_ps(orow + j0 + 4, a1);
            _mm_storeu_ps(orow + j0 + 8, a2);
            _mm_storeu_ps(orow + j0 + 12, a3);
        }
        for (; j0 < O1; j0++) {
            float a = bias;
            for (int t = 0; t < K; t++) a += w[t] * base[tph[t] * phase_len + toff[t] + j0];
            orow[j0] = a;
        }
    }
}
#else
static void dscy_dw_plane_generic DSCY_DW_PLANE_ARGS { DSCY_DW_PLANE_BODY }
#endif
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
/* AVX2+FMA: 4 ymm accumulators (32 columns) live in registers across all taps. */
__attribute__((target("avx2,fma")))
static void dscy_dw_plane_avx2 DSCY_DW_PLANE_ARGS {
    for (long o0 = 0; o0 < O0; o0++) {
        float *restrict orow = out + o0 * O1;
        const float *restrict base = plane + o0 * Q1;
        long j0 = 0;
        for (; j0 + 32 <= O1; j0 += 32) {
            __m256 a0 = _mm256_set1_ps(bias), a1 = a0, a2 = a0, a3 = a0;
            for (int t = 0; t < K; t++) {
                const float *src = base + tph[t] * phase_len + toff[t] + j0;
                const __m256 wv = _mm256_set1_ps(w[t]);
                a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src), a0);
                a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + 8), a1);
                a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + 16), a2);
                a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + 24), a3);
            }
            _mm256_storeu_ps(orow + j0, a0);
            _mm256_storeu_ps(orow + j0 + 8, a1);
            _mm256_storeu_ps(orow + j0 + 16, a2);
            _mm256_storeu_ps(orow + j0 + 24, a3);
        }
        for (; j0 + 8 <= O1; j0 += 8) {
            __m256 a0 = _mm256_set1_ps(bias);
            for (int t = 0; t < K; t++) {
                const float *src = base + tph[t] * phase_len + toff[t] + j0;
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[t]), _mm256_loadu_ps(src), a0);
            }
            _mm256_storeu_ps(orow + j0, a0);
        }
        for (; j0 < O1; j0++) {
            float a = bias;
            for (int t = 0; t < K; t++) a += w[t] * base[tph[t] * phase_len + toff[t] + j0];
            orow[j0] = a;
        }
    }
}
#else
#define dscy_dw_plane_avx2 dscy_dw_plane_generic
#endif

/* 8-bit tables (ops/fast_quant.QTable, QAdd): y[i] = t[x[i] ^ flip], flip 0x80 for int8 x (the
 * table indexed by the value minus the type's minimum). The VBMI copy looks 64 bytes up per
 * step with two 128-byte permutes and a blend on the index's top bit. */
static inline void dscy_lut8_8(const uint8_t *restrict x, uint8_t flip, const uint8_t *restrict t,
                               uint8_t *restrict y, long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        uint8_t a = t[x[i] ^ flip], b = t[x[i + 1] ^ flip], c = t[x[i + 2] ^ flip],
                d = t[x[i + 3] ^ flip];
        y[i] = a; y[i + 1] = b; y[i + 2] = c; y[i + 3] = d;
    }
    for (; i < n; i++) y[i] = t[x[i] ^ flip];
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static void dscy_lut8_8_vbmi(const uint8_t *restrict x, uint8_t flip, const uint8_t *restrict t,
                             uint8_t *restrict y, long n) {
    const __m512i t0 = _mm512_loadu_si512((const void *)t),
                  t1 = _mm512_loadu_si512((const void *)(t + 64)),
                  t2 = _mm512_loadu_si512((const void *)(t + 128)),
                  t3 = _mm512_loadu_si512((const void *)(t + 192)),
                  fl = _mm512_set1_epi8((char)flip);
    for (long i = 0; i < n; i += 64) {   /* the tail under a byte mask */
        __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
        __m512i v = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x + i), fl);
        __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
    }
}
#else
#define dscy_lut8_8_vbmi dscy_lut8_8
#endif

/* y = QuantizeLinear(ta[a ^ fa] + tb[b ^ fb]) (ykind 1: u8, 2: s8; the quantizer copies of level
 * `level`, dscy_quantize8), or the float sums (ykind 0): an Add of two tabled 8-bit values (a
 * DequantizeLinear, or a QTable's float table) and the QuantizeLinear after it, one float32
 * add per value as the graph's Add makes it. */
static inline void dscy_qadd8_sums(const uint8_t *a, uint8_t fa, const uint8_t *b, uint8_t fb,
                                   const float *ta, const float *tb, float *d, long m) {
    for (long j = 0; j < m; j++) d[j] = ta[a[j] ^ fa] + tb[b[j] ^ fb];
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
/* the sums 16 at a time by two gathers from the L1-resident tables (level 2) */
DSCY_TARGET_AVX512
static void dscy_qadd8_sums_avx512(const uint8_t *a, uint8_t fa, const uint8_t *b, uint8_t fb,
                                   const float *ta, const float *tb, float *d, long m) {
    const __m512i xa = _mm512_set1_epi32(fa), xb = _mm512_set1_epi32(fb);
    for (long j = 0; j < m; j += 16) {   /* the tail under a lane mask */
        __mmask16 k = m - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (m - j)) - 1);
        __m512i ia = _mm512_xor_si512(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, a + j)), xa);
        __m512i ib = _mm512_xor_si512(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, b + j)), xb);
        __m512 va = _mm512_i32gather_ps(ia, ta, 4), vb = _mm512_i32gather_ps(ib, tb, 4);
        _mm512_mask_storeu_ps(d + j, k, _mm512_add_ps(va, vb));
    }
}
#else
#define dscy_qadd8_sums_avx512 dscy_qadd8_sums
#endif

/* y = t2[(a ^ fa) * 256 + (b ^ fb)]: QAdd's quantized sums as one byte table of the two indices
 * (t2: 65536 bytes + 3 of slack, read as dwords by the AVX-512 copy's gathers) */
static inline void dscy_qadd8_t2(const uint8_t *restrict a, uint8_t fa, const uint8_t *restrict b,
                                 uint8_t fb, const uint8_t *restrict t2, uint8_t *restrict y,
                                 long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        uint8_t r0 = t2[((unsigned)(a[i] ^ fa) << 8) | (uint8_t)(b[i] ^ fb)];
        uint8_t r1 = t2[((unsigned)(a[i + 1] ^ fa) << 8) | (uint8_t)(b[i + 1] ^ fb)];
        uint8_t r2 = t2[((unsigned)(a[i + 2] ^ fa) << 8) | (uint8_t)(b[i + 2] ^ fb)];
        uint8_t r3 = t2[((unsigned)(a[i + 3] ^ fa) << 8) | (uint8_t)(b[i + 3] ^ fb)];
        y[i] = r0; y[i + 1] = r1; y[i + 2] = r2; y[i + 3] = r3;
    }
    for (; i < n; i++) y[i] = t2[((unsigned)(a[i] ^ fa) << 8) | (uint8_t)(b[i] ^ fb)];
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
DSCY_TARGET_AVX512
static void dscy_qadd8_t2_avx512(const uint8_t *restrict a, uint8_t fa, const uint8_t *restrict b,
                                 uint8_t fb, const uint8_t *restrict t2, uint8_t *restrict y,
                                 long n) {
    const __m512i xa = _mm512_set1_epi32(fa), xb = _mm512_set1_epi32(fb);
    for (long j = 0; j < n; j += 16) {   /* the tail under a lane mask */
        __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        __m512i ia = _mm512_xor_si512(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, a + j)), xa);
        __m512i ib = _mm512_xor_si512(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, b + j)), xb);
        __m512i idx = _mm512_or_si512(_mm512_slli_epi32(ia, 8), ib);
        __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, idx, (const void *)t2, 1);
        _mm_mask_storeu_epi8(y + j, k, _mm512_cvtepi32_epi8(v));
    }
}
#else
#define dscy_qadd8_t2_avx512 dscy_qadd8_t2
#endif

static inline void dscy_qadd8(const uint8_t *a, uint8_t fa, const uint8_t *b, uint8_t fb,
                              const float *ta, const float *tb, void *y, int ykind, float scale,
                              float zp, long n, int level) {
    float buf[512];
    for (long i = 0; i < n; i += 512) {
        long m = n - i < 512 ? n - i : 512;
        float *d = ykind == 0 ? (float *)y + i : buf;
        if (level >= 2) dscy_qadd8_sums_avx512(a + i, fa, b + i, fb, ta, tb, d, m);
        else dscy_qadd8_sums(a + i, fa, b + i, fb, ta, tb, d, m);
        if (ykind) dscy_quantize8(level, ykind == 2, buf, (uint8_t *)y + i, m, scale, zp);
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#endif /* DSCY_FASTMATH_H */
