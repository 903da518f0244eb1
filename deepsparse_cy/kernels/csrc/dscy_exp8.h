/* exp on 8 float lanes (AVX2 + FMA), shared by the conv tiles' SiLU (f32_conv.c) and the
 * attention softmax (f32_attn.c): dscy_vexpf's range reduction and polynomial (f32_fused.h)
 * in intrinsics; dscy_exp16 the same on 16 lanes (AVX-512 builds). */
#ifndef DSCY_EXP8_H
#define DSCY_EXP8_H
#ifdef __AVX2__
#include <immintrin.h>

/* x clamped to [lo, hi] first (e^hi ~ 3e38, e^lo ~ 1e-38; a NaN x gives e^lo), no selects:
 * for callers whose formula is already right at those clamped values. */
static inline __m256 dscy_exp8_clamped(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447505531f);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fl = _mm256_floor_ps(_mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f),
                                                _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(fl, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(fl, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, r2, r), _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fl),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* exp with dscy_vexpf's out-of-range results: +inf above hi, 0 below lo. */
static inline __m256 dscy_exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447505531f);
    __m256 res = dscy_exp8_clamped(x);
    res = _mm256_blendv_ps(res, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    return _mm256_blendv_ps(res, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
}
#ifdef __AVX512F__
/* dscy_exp8_clamped on 16 lanes, lane for lane the same operations (the attention softmax and
 * the conv tiles' SiLU of the avx512 build) */
/* e^xc as y * 2^fl for xc already clamped: the range reduction and polynomial of
 * dscy_exp16_clamped / dscy_exp16_nonpos, fl returned through *flp */
static inline __m512 dscy_exp16_poly(__m512 xc, __m512 *flp) {
    __m512 fl = _mm512_roundscale_ps(_mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f),
                                                     _mm512_set1_ps(0.5f)),
                                     _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fl, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(fl, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    *flp = fl;
    return _mm512_add_ps(_mm512_fmadd_ps(y, r2, r), _mm512_set1_ps(1.0f));
}

static inline __m512 dscy_exp16_clamped(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-87.3365447505531f);
    __m512 fl, y = dscy_exp16_poly(_mm512_min_ps(_mm512_max_ps(x, lo), hi), &fl);
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fl),
                                                   _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

/* dscy_exp8 on 16 lanes: dscy_exp8_clamped's lanes and its out-of-range results */
static inline __m512 dscy_exp16(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-87.3365447505531f);
    __m512 res = dscy_exp16_clamped(x);
    res = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), res,
                               _mm512_set1_ps(__builtin_inff()));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), res, _mm512_setzero_ps());
}

/* dscy_exp16 for x <= 0 or NaN (a softmax's s - row max), the same lanes in fewer operations:
 * no upper clamp or +inf select (never taken there), and 2^n applied by vscalefps (n >= -126:
 * a power of two times y rounds as the multiply by the built 2^n does) */
static inline __m512 dscy_exp16_nonpos(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3365447505531f);
    __m512 fl, y = dscy_exp16_poly(_mm512_max_ps(x, lo), &fl);
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), y, fl);
}
#endif
#endif
#endif /* DSCY_EXP8_H */
