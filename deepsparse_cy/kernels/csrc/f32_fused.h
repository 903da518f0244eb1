/* FP32 row kernels behind the graph fusions (ops/fast_fused.py): bias + activation epilogues,
 * LayerNorm (optionally with the residual add), and scale + mask + softmax of attention scores.
 *
 * Every kernel is one always-inline body compiled twice: a baseline copy and an
 * __attribute__((target("avx2,fma"))) copy (8-wide, FMA), chosen at run time by the Cython
 * wrapper (kernels.kernel_isa(), so DEEPSPARSE_CY_ISA=generic forces the baseline copy). The
 * module itself is built without -m flags, so the wheel still runs on SSE2-only machines.
 * Reductions keep 8 explicit partial sums: gcc vectorises those without -ffast-math.
 */
#ifndef DSCY_F32_FUSED_H
#define DSCY_F32_FUSED_H
#include <math.h>
#include <string.h>
#include "dscy_fastmath.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")   /* same options as dscy_fastmath.h: inlining + selects */
#endif

#define DSCY_INLINE static inline __attribute__((always_inline))
#define DSCY_TARGET_AVX2 __attribute__((target("avx2,fma")))

/* An 8-bit x of dscy_layernorm_z: the floats (q - zp) * scale [+ bias[i]], each step rounded
 * as dscy_dequant_row rounds it (the QGemm mid step whose values q are). */
typedef struct { const void *q; int sgn; float zp, scale; const float *bias; } dscy_ln_x8;


/* exp as in dscy_fastmath.h (same range reduction and polynomial), written so gcc if-converts and
 * vectorises it: floor through __builtin_floorf (vroundps), the exponent bits through a union,
 * no NaN select (NaN propagates through the arithmetic). It stays a twin of dscy_expf because
 * that one relies on dscy_fastmath.h's no-trapping-math pragma, and GCC does not inline a
 * function with other optimize options into these always_inline target("avx2") kernels. */
DSCY_INLINE float dscy_vexpf(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365447505531f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    float fl = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
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
    union { int32_t i; float f; } p2;
    p2.i = ((int32_t)fl + 127) << 23;
    float res = y * p2.f;
    res = x > hi ? __builtin_inff() : res;
    return x < lo ? 0.0f : res;
}

enum { DSCY_F_NONE = 0, DSCY_F_RELU = 1, DSCY_F_CLIP = 2, DSCY_F_GELU = 3, DSCY_F_HARDSWISH = 4,
       DSCY_F_SILU = 5, DSCY_F_HARDSIGMOID = 6, DSCY_F_LEAKYRELU = 7, DSCY_F_SIGMOID = 8 };

/* y[i] = act(y[i] + bias[i % n]) over one row of n (bias may be NULL). */
DSCY_INLINE void dscy_bias_act_body(float *restrict y, const float *restrict bias, long n,
                                    int act, float p0, float p1) {
    if (bias) for (long i = 0; i < n; i++) y[i] += bias[i];
    switch (act) {
    case DSCY_F_RELU:
        for (long i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
        break;
    case DSCY_F_CLIP:
        for (long i = 0; i < n; i++) { float v = y[i] < p0 ? p0 : y[i]; y[i] = v > p1 ? p1 : v; }
        break;
    case DSCY_F_GELU:
        for (long i = 0; i < n; i++)
            y[i] = 0.5f * y[i] * (1.0f + dscy_erff(y[i] * 0.70710678118654752440f));
        break;
    case DSCY_F_HARDSWISH:   /* x * clip(x/6 + 1/2, 0, 1), ONNX HardSwish */
        for (long i = 0; i < n; i++) {
            float h = y[i] * (1.0f / 6.0f) + 0.5f;
            h = h < 0.0f ? 0.0f : h; h = h > 1.0f ? 1.0f : h;
            y[i] = y[i] * h;
        }
        break;
    case DSCY_F_HARDSIGMOID:  /* clip(alpha x + beta, 0, 1) */
        for (long i = 0; i < n; i++) {
            float h = y[i] * p0 + p1;
            h = h < 0.0f ? 0.0f : h; y[i] = h > 1.0f ? 1.0f : h;
        }
        break;
    case DSCY_F_SILU:
        for (long i = 0; i < n; i++) y[i] = y[i] / (1.0f + dscy_vexpf(-y[i]));
        break;
    case DSCY_F_SIGMOID:
        for (long i = 0; i < n; i++) y[i] = 1.0f / (1.0f + dscy_vexpf(-y[i]));
        break;
    case DSCY_F_LEAKYRELU:
        for (long i = 0; i < n; i++) y[i] = y[i] < 0.0f ? y[i] * p0 : y[i];
        break;
    default:
        break;
    }
}

DSCY_INLINE float dscy_sum8(const float *restrict x, long n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += x[i + k];
    for (; i < n; i++) s[0] += x[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* One LayerNorm row: t = x (+ skip); y = (t - mean) / sqrt(var + eps) * g + b (b may be NULL).
 * Two passes (mean, then the variance of t - mean) as the ONNX reference computes it; t is
 * staged in y, so y may not alias x or skip. */
DSCY_INLINE void dscy_layernorm_body(const float *restrict x, const float *restrict skip,
                                     float *restrict y, long n, const float *restrict g,
                                     const float *restrict b, float eps) {
    const float *t = x;
    if (skip) {
        for (long i = 0; i < n; i++) y[i] = x[i] + skip[i];
        t = y;
    }
    float mean = dscy_sum8(t, n) / (float)n;
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) { float d = t[i + k] - mean; s[k] += d * d; }
    for (; i < n; i++) { float d = t[i] - mean; s[0] += d * d; }
    float var = (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) / (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    if (b) for (long j = 0; j < n; j++) y[j] = (t[j] - mean) * inv * g[j] + b[j];
    else   for (long j = 0; j < n; j++) y[j] = (t[j] - mean) * inv * g[j];
}

/* Attention scores row in place: s = softmax(s * scale + mask) (mask may be NULL). */
DSCY_INLINE void dscy_scale_mask_softmax_body(float *restrict s, const float *restrict mask,
                                              long n, float scale) {
    if (mask) for (long j = 0; j < n; j++) s[j] = s[j] * scale + mask[j];
    else      for (long j = 0; j < n; j++) s[j] = s[j] * scale;
    float m8[8];
    for (int k = 0; k < 8; k++) m8[k] = s[0];
    long j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) m8[k] = s[j + k] > m8[k] ? s[j + k] : m8[k];
    float m = m8[0];
    for (int k = 1; k < 8; k++) m = m8[k] > m ? m8[k] : m;
    for (; j < n; j++) m = s[j] > m ? s[j] : m;
    for (long i = 0; i < n; i++) s[i] = dscy_vexpf(s[i] - m);
    float inv = 1.0f / dscy_sum8(s, n);
    for (long i = 0; i < n; i++) s[i] *= inv;
}

/* Softmax over the middle axis of an [n][inner] slice, for columns [j0, j0 + jn), jn <= 256
 * (Softmax on a non-trailing axis, e.g. the 16 DFL bins of YOLOv8's box head): the column max,
 * then exp(x - max) with column sums, then the scaling, each a contiguous loop over the block. */
/* exps(r, m, o, s, jn): o[j] = e^(r[j] - m[j]), s[j] += o[j] for the first j it returns (a
 * vector form), the rest in the scalar form; exps NULL: all in the scalar form */
typedef long (*dscy_exps_fn)(const float *, const float *, float *, float *, long);

/* The softmax of columns j < jn (<= 256) over n rows, x's rows xs floats apart, y's ys */
DSCY_INLINE void dscy_softmax_cols(const float *restrict xb, long xs, float *restrict yb, long ys,
                                   long n, long jn, dscy_exps_fn exps) {
    float m[256], s[256];
    for (long j = 0; j < jn; j++) { m[j] = xb[j]; s[j] = 0.0f; }
    for (long i = 1; i < n; i++) {
        const float *r = xb + i * xs;
        for (long j = 0; j < jn; j++) m[j] = r[j] > m[j] ? r[j] : m[j];
    }
    for (long i = 0; i < n; i++) {
        const float *r = xb + i * xs;
        float *o = yb + i * ys;
        long j = exps ? exps(r, m, o, s, jn) : 0;
        for (; j < jn; j++) { float e = dscy_vexpf(r[j] - m[j]); o[j] = e; s[j] += e; }
    }
    for (long j = 0; j < jn; j++) s[j] = 1.0f / s[j];
    for (long i = 0; i < n; i++) {
        float *o = yb + i * ys;
        for (long j = 0; j < jn; j++) o[j] *= s[j];
    }
}

DSCY_INLINE void dscy_softmax_mid_with(const float *restrict x, float *restrict y, long n,
                                       long inner, long j0, long jn, dscy_exps_fn exps) {
    dscy_softmax_cols(x + j0, inner, y + j0, inner, n, jn, exps);
}

/* DFL decoding (YOLOv8's box head: a softmax over n bins, then a 1x1 conv to one channel),
 * columns j < jn (<= 256) of n (<= DSCY_DFL_MAX_BINS) rows xs floats apart, p the
 * probabilities dscy_softmax_cols computes (the separate Softmax's values):
 *   q NULL:  out[j] = sum_k wf[k] * p[k][j] + bf
 *   else:    each row of p quantized by QuantizeLinear's own dscy_quantize8 (at `level`, to
 *            s8 when sgn, else u8, zero point qz); v = sum_k (q - qz) * wf[k] + bias_i (wf:
 *            integer weights); out[j] = QConv's float epilogue of v: f = (float)v * scale,
 *            then with a mid step f = rint(clamp(f, mlo, mhi)) * ma + mb (the product
 *            rounded, as dscy_ep_pre1)
 * The integer sum runs in float32: every term and partial sum is an integer below 2^24 for
 * 8-bit q, |wf| <= 128 and n <= 32. */
#define DSCY_DFL_MAX_BINS 32
typedef struct {
    float qs, qz;
    int sgn;
    int bias_i;
    float scale;
    int mid;
    float mlo, mhi, ma, mb;
} dscy_dfl_quant;

DSCY_INLINE void dscy_dfl_cols_with(int level, const float *restrict x, long xs, long n, long jn,
                                    const float *restrict wf, float bf,
                                    const dscy_dfl_quant *q, float *restrict out,
                                    dscy_exps_fn exps) {
    float p[DSCY_DFL_MAX_BINS * 256], acc[256], t[256];
    unsigned char qb[256];
    dscy_softmax_cols(x, xs, p, 256, n, jn, exps);
    for (long j = 0; j < jn; j++) acc[j] = 0.0f;
    if (!q) {
        for (long k = 0; k < n; k++) {
            const float *r = p + k * 256;
            float w = wf[k];
            for (long j = 0; j < jn; j++) acc[j] += w * r[j];
        }
        for (long j = 0; j < jn; j++) out[j] = acc[j] + bf;
        return;
    }
    const float qz = q->qz;
    for (long k = 0; k < n; k++) {
        dscy_quantize8(level, q->sgn, p + k * 256, qb, jn, q->qs, qz);
        float w = wf[k];
        if (q->sgn)
            for (long j = 0; j < jn; j++) acc[j] += ((float)(signed char)qb[j] - qz) * w;
        else
            for (long j = 0; j < jn; j++) acc[j] += ((float)qb[j] - qz) * w;
    }
    const int bias_i = q->bias_i;
    const float scale = q->scale;
    for (long j = 0; j < jn; j++) out[j] = (float)((int)acc[j] + bias_i) * scale;
    if (q->mid) {
        const float mlo = q->mlo, mhi = q->mhi, ma = q->ma, mb = q->mb;
        for (long j = 0; j < jn; j++) {
            float f = out[j];
            f = f < mlo ? mlo : f;
            f = f > mhi ? mhi : f;
            t[j] = rintf(f) * ma;             /* stored: the add below cannot fuse it (FMA) */
        }
        for (long j = 0; j < jn; j++) out[j] = t[j] + mb;
    }
}

DSCY_INLINE void dscy_softmax_mid_body(const float *restrict x, float *restrict y, long n,
                                       long inner, long j0, long jn) {
    dscy_softmax_mid_with(x, y, n, inner, j0, jn, NULL);
}

/* Depthwise conv of quantized NHWC activations, one output row: out[ox][c] = sum over taps of
 * (x[iy][ix][c] - zx) * w[tap][c], taps outside the input skipped (the spec pads x - zx with 0).
 * x: one image [H][W][C] u8 (x_signed 0) or s8; w [KH*KW][C]. With |x - zx| <= 255, |w| <= 128
 * and KH*KW <= 513 every product and partial sum is an integer below 2**24, so the float32 sum
 * (FMA or not, any order) is the exact integer sum. */
DSCY_INLINE void dscy_dw_nhwc_q8_body(const void *restrict x, int x_signed, long H, long W, long C,
                                      float zx, const float *restrict w, long KH, long KW,
                                      long sh, long sw, long dh, long dw, long pt, long pl,
                                      long oy, long Wo, float *restrict out) {
    for (long ox = 0; ox < Wo; ox++) {
        float *o = out + ox * C;
        for (long c = 0; c < C; c++) o[c] = 0.0f;
        for (long i = 0; i < KH; i++) {
            long iy = oy * sh - pt + i * dh;
            if (iy < 0 || iy >= H) continue;
            for (long j = 0; j < KW; j++) {
                long ix = ox * sw - pl + j * dw;
                if (ix < 0 || ix >= W) continue;
                const float *wt = w + (i * KW + j) * C;
                if (x_signed) {
                    const signed char *xr = (const signed char *)x + (iy * W + ix) * C;
                    for (long c = 0; c < C; c++) o[c] += ((float)xr[c] - zx) * wt[c];
                } else {
                    const unsigned char *xr = (const unsigned char *)x + (iy * W + ix) * C;
                    for (long c = 0; c < C; c++) o[c] += ((float)xr[c] - zx) * wt[c];
                }
            }
        }
    }
}

/* Baseline and AVX2+FMA copies of each body. */
#define DSCY_TWO_COPIES(name, params, args)                        \
    static void name##_generic params { name##_body args; }          \
    DSCY_TARGET_AVX2 static void name##_avx2 params { name##_body args; }

DSCY_TWO_COPIES(dscy_bias_act, (float *y, const float *bias, long n, int act, float p0, float p1),
                (y, bias, n, act, p0, p1))
/* LayerNorm: the baseline copy of the body; the AVX2 row is written in intrinsics below */
static void dscy_layernorm_generic(const float *x, const float *skip, float *y, long n,
                                   const float *g, const float *b, float eps) {
    dscy_layernorm_body(x, skip, y, n, g, b, eps);
}
DSCY_TWO_COPIES(dscy_scale_mask_softmax, (float *s, const float *mask, long n, float scale),
                (s, mask, n, scale))

DSCY_TWO_COPIES(dscy_softmax_mid, (const float *x, float *y, long n, long inner, long j0, long jn),
                (x, y, n, inner, j0, jn))

DSCY_TWO_COPIES(dscy_dw_nhwc_q8,
                (const void *x, int x_signed, long H, long W, long C, float zx, const float *w,
                 long KH, long KW, long sh, long sw, long dh, long dw, long pt, long pl, long oy,
                 long Wo, float *out),
                (x, x_signed, H, W, C, zx, w, KH, KW, sh, sw, dh, dw, pt, pl, oy, Wo, out))
static inline void dscy_dw_nhwc_q8(int avx2, const void *x, int x_signed, long H, long W, long C,
                                   float zx, const float *w, long KH, long KW, long sh, long sw,
                                   long dh, long dw, long pt, long pl, long oy, long Wo,
                                   float *out) {
    if (avx2) dscy_dw_nhwc_q8_avx2(x, x_signed, H, W, C, zx, w, KH, KW, sh, sw, dh, dw, pt, pl,
                                   oy, Wo, out);
    else dscy_dw_nhwc_q8_generic(x, x_signed, H, W, C, zx, w, KH, KW, sh, sw, dh, dw, pt, pl,
                                 oy, Wo, out);
}


/* (not in the generic kernel builds: their modules must hold no AVX code, and at -O1, the
 * sanitizer build, the calls below are not folded away there; the ISA-independent _f32_fused
 * module dispatches at run time) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DSCY_ISA_GENERIC)
#define DSCY_HAVE_ACT_V 1
#include <immintrin.h>
/* Sigmoid, SiLU and GELU rows in intrinsics: the body's loops are vectorised by gcc, but its exp
 * and erf came out at ~1 ns an element (a YOLOv8n head's class Sigmoid over 80 x 2100 values:
 * 0.14 ms); here 8 (AVX2) or 16 (AVX-512) lanes of the same formulas: dscy_vexpf's range
 * reduction and polynomial, dscy_erff's clamp and rational form (its quotient divided and held
 * to [-1, 1], so GELU is 0 far below 0 and never of the wrong sign near it), the
 * sigmoid's quotient as the reciprocal (vrcp14ps and one Newton step, vrcpps and two: ~1 ulp,
 * 1 / 1 exact; a division there was half the time). exp's argument is clamped to its range
 * (e^-x then lies in [1e-38, 3e38]) and the sigmoid set to 0 below it (the scalar form's
 * subnormal values there, 0 at -inf: SiLU -inf then NaN as -inf / inf); the clamps are ordered
 * so a NaN passes through (max / min return their second operand when either is NaN), as in the
 * scalar forms. */
#define DSCY_ACT_V_BODY(W, V, SET1, LD, ST, ADD, MUL, DIV, FMA, FNMA, MIN, MAX, FLOOR, CVT, SLLI,      \
                        ADDI, SET1I, CASTI, RCP, NEWTON, ZERO_BELOW)                             \
    static inline V dscy_vexpc_##W(V x) {                                                     \
        V xc = MIN(SET1(88.3762626647949f), MAX(SET1(-87.3365447505531f), x));                \
        V fl = FLOOR(FMA(xc, SET1(1.44269504088896341f), SET1(0.5f)));                        \
        V r = FNMA(fl, SET1(0.693359375f), xc);                                               \
        r = FNMA(fl, SET1(-2.12194440e-4f), r);                                               \
        V r2 = MUL(r, r);                                                                     \
        V y = SET1(1.9875691500e-4f);                                                         \
        y = FMA(y, r, SET1(1.3981999507e-3f));                                                \
        y = FMA(y, r, SET1(8.3334519073e-3f));                                                \
        y = FMA(y, r, SET1(4.1665795894e-2f));                                                \
        y = FMA(y, r, SET1(1.6666665459e-1f));                                                \
        y = FMA(y, r, SET1(5.0000001201e-1f));                                                \
        y = ADD(FMA(y, r2, r), SET1(1.0f));                                                   \
        return MUL(y, CASTI(SLLI(ADDI(CVT(fl), SET1I(127)), 23)));                            \
    }                                                                                         \
    static inline V dscy_vrcp_##W(V d) {    /* 1 / d: the estimate and its Newton steps */ \
        V r = RCP(d);                                                                         \
        /* r + r (1 - d r): the residual 1 - d r exact in the FMA, where r (2 - d r) rounds   \
         * 2 - d r to 1 one ulp away from the quotient */                                     \
        for (int k = 0; k < NEWTON; k++) r = FMA(r, FNMA(d, r, SET1(1.0f)), r);               \
        return r;                                                                             \
    }                                                                                         \
    static inline V dscy_verf_##W(V x) {                                                      \
        V xc = MIN(SET1(4.0f), MAX(SET1(-4.0f), x));                                          \
        V x2 = MUL(xc, xc);                                                                   \
        V p = SET1(DSCY_ERF_P0);                                                              \
        p = FMA(p, x2, SET1(DSCY_ERF_P1)); p = FMA(p, x2, SET1(DSCY_ERF_P2));                 \
        p = FMA(p, x2, SET1(DSCY_ERF_P3)); p = FMA(p, x2, SET1(DSCY_ERF_P4));                 \
        p = FMA(p, x2, SET1(DSCY_ERF_P5)); p = FMA(p, x2, SET1(DSCY_ERF_P6));                 \
        p = MUL(p, xc);                                                                       \
        V q = SET1(DSCY_ERF_Q0);                                                              \
        q = FMA(q, x2, SET1(DSCY_ERF_Q1)); q = FMA(q, x2, SET1(DSCY_ERF_Q2));                 \
        q = FMA(q, x2, SET1(DSCY_ERF_Q3)); q = FMA(q, x2, SET1(DSCY_ERF_Q4));                 \
        return MIN(SET1(1.0f), MAX(SET1(-1.0f), DIV(p, q)));   /* |erf| <= 1 (FMA roundings) */ \
    }                                                                                         \
    /* the vector part of one row (whole vectors of W); returns how many elements it did */   \
    static inline long dscy_bias_act_##W(float *y, const float *bias, long n, int act) {      \
        const V one = SET1(1.0f);                                                             \
        long i = 0;                                                                           \
        for (; i + W <= n; i += W) {                                                          \
            V v = LD(y + i);                                                                  \
            if (bias) v = ADD(v, LD(bias + i));                                               \
            if (act == DSCY_F_GELU)                                                           \
                v = MUL(MUL(SET1(0.5f), v),                                                   \
                        ADD(one, dscy_verf_##W(MUL(v, SET1(0.70710678118654752440f)))));       \
            else {                                                                            \
                V r = dscy_vrcp_##W(ADD(one, dscy_vexpc_##W(MUL(v, SET1(-1.0f)))));           \
                r = ZERO_BELOW(r, v, SET1(-87.3365447505531f));                               \
                v = act == DSCY_F_SILU ? MUL(v, r) : r;                                       \
            }                                                                                 \
            ST(y + i, v);                                                                     \
        }                                                                                     \
        return i;                                                                             \
    }                                                                                         \
    /* o[j] = e^(r[j] - m[j]), s[j] += o[j] (softmax over a middle axis: dscy_vexpf's values,  \
     * 0 below exp's range: a masked -inf stays an exact 0); whole vectors of W, returns how   \
     * many elements it did */                                                                \
    static inline long dscy_exps_##W(const float *r, const float *m, float *o, float *s,      \
                                     long jn) {                                              \
        long j = 0;                                                                           \
        for (; j + W <= jn; j += W) {                                                         \
            V t = ADD(LD(r + j), MUL(LD(m + j), SET1(-1.0f)));                                \
            V e = ZERO_BELOW(dscy_vexpc_##W(t), t, SET1(-87.3365447505531f));                 \
            ST(o + j, e);                                                                     \
            ST(s + j, ADD(LD(s + j), e));                                                     \
        }                                                                                     \
        return j;                                                                             \
    }

/* r where v >= lo (or NaN), else 0 */
#define DSCY_ZB8(r, v, lo) _mm256_andnot_ps(_mm256_cmp_ps(v, lo, _CMP_LT_OQ), r)
#define DSCY_ZB16(r, v, lo) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, lo, _CMP_NLT_UQ), r)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
DSCY_ACT_V_BODY(8, __m256, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps,
                _mm256_mul_ps, _mm256_div_ps, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_min_ps, _mm256_max_ps,
                _mm256_floor_ps, _mm256_cvttps_epi32, _mm256_slli_epi32, _mm256_add_epi32,
                _mm256_set1_epi32, _mm256_castsi256_ps, _mm256_rcp_ps, 2, DSCY_ZB8)
#pragma GCC pop_options
/* the 16-lane rows: in the AVX-512 kernel builds and the modules built once (the AVX2 build
 * must hold no AVX-512 code; at -O1 its level-2 branch is not folded away either) */
#if defined(__AVX512F__) || !(defined(DSCY_ISA_AVX2) || defined(DSCY_ISA_AVX512_VNNI) \
                               || defined(DSCY_ISA_AMX))
#define DSCY_HAVE_ACT_V16 1
#define DSCY_FLOOR16(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
DSCY_ACT_V_BODY(16, __m512, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_add_ps,
                _mm512_mul_ps, _mm512_div_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_min_ps, _mm512_max_ps,
                DSCY_FLOOR16, _mm512_cvttps_epi32, _mm512_slli_epi32, _mm512_add_epi32,
                _mm512_set1_epi32, _mm512_castsi512_ps, _mm512_rcp14_ps, 1, DSCY_ZB16)
#pragma GCC pop_options
#define DSCY_ACT_ROWS(level, ...) \
    ((level) >= 2 ? dscy_bias_act_16(__VA_ARGS__) : dscy_bias_act_8(__VA_ARGS__))
#define DSCY_EXPS(level) ((level) >= 2 ? dscy_exps_16 : dscy_exps_8)
#else
#define DSCY_ACT_ROWS(level, ...) dscy_bias_act_8(__VA_ARGS__)
#define DSCY_EXPS(level) dscy_exps_8
#endif
#define DSCY_ACT_VECTOR(act) ((act) == DSCY_F_SIGMOID || (act) == DSCY_F_SILU || (act) == DSCY_F_GELU)
#endif

#ifdef DSCY_HAVE_ACT_V
/* dscy_softmax_mid_body with its exp pass on 8 / 16 lanes (level 1 / 2): that pass, gcc's
 * vectorisation of dscy_vexpf, was most of a YOLOv8n DFL Softmax (16 bins x 4 x 2100) */
DSCY_TARGET_AVX2 static void dscy_softmax_mid_v(int level, const float *restrict x,
                                                float *restrict y, long n, long inner, long j0,
                                                long jn) {
    (void)level;
    dscy_softmax_mid_with(x, y, n, inner, j0, jn, DSCY_EXPS(level));
}
#endif

static inline void dscy_softmax_mid(int avx2, const float *x, float *y, long n, long inner,
                                    long j0, long jn) {
#ifdef DSCY_HAVE_ACT_V
    if (avx2) { dscy_softmax_mid_v(avx2, x, y, n, inner, j0, jn); return; }
#endif
    if (avx2) dscy_softmax_mid_avx2(x, y, n, inner, j0, jn);
    else dscy_softmax_mid_generic(x, y, n, inner, j0, jn);
}

#define DSCY_DFL_PARAMS (const float *x, long xs, long n, long jn, const float *wf, float bf, \
                         const dscy_dfl_quant *q, float *out)
static void dscy_dfl_cols_generic DSCY_DFL_PARAMS {
    dscy_dfl_cols_with(0, x, xs, n, jn, wf, bf, q, out, NULL);
}
DSCY_TARGET_AVX2 static void dscy_dfl_cols_avx2 DSCY_DFL_PARAMS {
    dscy_dfl_cols_with(1, x, xs, n, jn, wf, bf, q, out, NULL);
}
#ifdef DSCY_HAVE_ACT_V
DSCY_TARGET_AVX2 static void dscy_dfl_cols_v(int level, const float *x, long xs, long n, long jn,
                                             const float *wf, float bf, const dscy_dfl_quant *q,
                                             float *out) {
    dscy_dfl_cols_with(level, x, xs, n, jn, wf, bf, q, out, DSCY_EXPS(level));
}
#endif
/* the level as dscy_softmax_mid's, so the probabilities are the separate Softmax's */
static inline void dscy_dfl_cols(int avx2, const float *x, long xs, long n, long jn,
                                 const float *wf, float bf, const dscy_dfl_quant *q, float *out) {
#ifdef DSCY_HAVE_ACT_V
    if (avx2) { dscy_dfl_cols_v(avx2, x, xs, n, jn, wf, bf, q, out); return; }
#endif
    if (avx2) dscy_dfl_cols_avx2(x, xs, n, jn, wf, bf, q, out);
    else dscy_dfl_cols_generic(x, xs, n, jn, wf, bf, q, out);
}

/* dscy_bias_act's level for code built with a kernel build's -m flags (the conv / GEMM /
 * Winograd kernels): 2 in the AVX-512 builds (the 16-lane rows), 1 with AVX2, else 0 */
#if defined(__AVX512F__)
#define DSCY_BUILD_ACT_LEVEL 2
#elif defined(__AVX2__)
#define DSCY_BUILD_ACT_LEVEL 1
#else
#define DSCY_BUILD_ACT_LEVEL 0
#endif

/* avx2: 0 the baseline copy, 1 the AVX2 one, 2 (AVX-512 level) the AVX2 one with Sigmoid / SiLU
 * / GELU on 16 lanes. The vector rows leave a tail of < 8 / 16 elements to the body's copy. */
static inline void dscy_bias_act(int avx2, float *y, const float *bias, long n, int act,
                                 float p0, float p1) {
#ifdef DSCY_HAVE_ACT_V
    if (avx2 && DSCY_ACT_VECTOR(act)) {
        long i = DSCY_ACT_ROWS(avx2, y, bias, n, act);
        if (i < n) dscy_bias_act_avx2(y + i, bias ? bias + i : NULL, n - i, act, p0, p1);
        return;
    }
#endif
    if (avx2) dscy_bias_act_avx2(y, bias, n, act, p0, p1);
    else dscy_bias_act_generic(y, bias, n, act, p0, p1);
}
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
/* The AVX2 LayerNorm row in intrinsics: gcc leaves the body's 8 partial sums scalar, and one
 * accumulator per pass would make it latency-bound (~1.8 cycles per element at 768); here four
 * vector accumulators per reduction. Float sums in another order than the baseline copy. */
DSCY_TARGET_AVX2 static void dscy_layernorm_avx2v(const float *restrict x,
                                                  const float *restrict skip, float *restrict y,
                                                  long n, const float *restrict g,
                                                  const float *restrict b, float eps) {
    const float *t = x;
    long n8 = n & ~7L, i;
    if (skip) {
        for (i = 0; i < n8; i += 8)
            _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(skip + i)));
        for (; i < n; i++) y[i] = x[i] + skip[i];
        t = y;
    }
    float s8[8];
    /* four accumulators: one add chain per 8 floats would make the passes latency-bound */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (i = 0; i + 32 <= n8; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(t + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(t + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(t + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(t + i + 24));
    }
    for (; i < n8; i += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(t + i));
    __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    _mm256_storeu_ps(s8, acc);
    for (; i < n; i++) s8[0] += t[i];
    float mean = (((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7])))
                 / (float)n;
    __m256 mv = _mm256_set1_ps(mean);
    a0 = a1 = a2 = a3 = _mm256_setzero_ps();
    for (i = 0; i + 32 <= n8; i += 32) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(t + i), mv);
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(t + i + 8), mv);
        __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(t + i + 16), mv);
        __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(t + i + 24), mv);
        a0 = _mm256_fmadd_ps(d0, d0, a0);
        a1 = _mm256_fmadd_ps(d1, d1, a1);
        a2 = _mm256_fmadd_ps(d2, d2, a2);
        a3 = _mm256_fmadd_ps(d3, d3, a3);
    }
    for (; i < n8; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(t + i), mv);
        a0 = _mm256_fmadd_ps(d, d, a0);
    }
    acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    _mm256_storeu_ps(s8, acc);
    for (; i < n; i++) { float d = t[i] - mean; s8[0] += d * d; }
    float var = (((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7])))
                / (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i < n8; i += 8) {
        __m256 u = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(t + i), mv), iv);
        __m256 r = b ? _mm256_fmadd_ps(u, _mm256_loadu_ps(g + i), _mm256_loadu_ps(b + i))
                     : _mm256_mul_ps(u, _mm256_loadu_ps(g + i));
        _mm256_storeu_ps(y + i, r);
    }
    for (; i < n; i++) y[i] = b ? (t[i] - mean) * inv * g[i] + b[i] : (t[i] - mean) * inv * g[i];
}
#define DSCY_LAYERNORM_AVX2 dscy_layernorm_avx2v

/* The LayerNorm row on zmm (level 2, n a multiple of 32; x8 / k8: an 8-bit x / skip, dequantized
 * as the first pass reads them), optionally with the QuantizeLinear
 * (q not NULL) and DequantizeLinear (dq_out) of the row in the same last pass: each 16 values
 * are normalised, quantized and dequantized in registers, where the separate passes wrote y,
 * read it to quantize, and read the bytes back to dequantize (six passes over the row and two
 * calls per row become three passes). Bit-identical to dscy_layernorm_avx2v followed by
 * dscy_quantize8 / dscy_dequant_row at level 2: the two zmm sums per pass hold lanes of the
 * four ymm sums (z0 = a0 | a1, z1 = a2 | a3) and are folded in the same order; the element
 * steps are the same operations. With q and without dq_out, y is scratch (x + skip). */
DSCY_TARGET_AVX512 static void dscy_layernorm_z(const float *restrict x, const float *restrict skip,
                                                float *restrict y, long n,
                                                const float *restrict g, const float *restrict b,
                                                float eps, void *q, int q_signed, float scale,
                                                float zp, int dq_out, const dscy_ln_x8 *x8,
                                                const dscy_ln_x8 *k8) {
    /* first pass: x [dequantized] + skip [dequantized] (dscy_dequant_row_*_avx512's steps;
     * k8: the skip is 8-bit (skip unused), without a bias) into y where there is a skip or an
     * 8-bit input, and the row's sum in the same pass: z0 over elements 32j .. 32j + 15, z1
     * over the other halves, in the order the separate sum pass added them */
    const int stage = x8 || k8 || skip;
    const float *t = stage ? y : x;
    long i;
    const __m512 xz = _mm512_set1_ps(x8 ? x8->zp : 0.0f), xs = _mm512_set1_ps(x8 ? x8->scale : 0.0f);
    const __m512 sz = _mm512_set1_ps(k8 ? k8->zp : 0.0f), ss = _mm512_set1_ps(k8 ? k8->scale : 0.0f);
    const unsigned char *xq = x8 ? (const unsigned char *)x8->q : NULL;
    const unsigned char *sq = k8 ? (const unsigned char *)k8->q : NULL;
    float s8[8];
    __m512 z0 = _mm512_setzero_ps(), z1 = z0;
    for (i = 0; i < n; i += 32) {
        /* the next row's input (and residual) towards L1 while this one computes: in a model
         * the residual was written several layers back, and each row starts a new stream
         * that the hardware prefetcher picks up late (the caller's rows are consecutive) */
        if (xq) {
            if (i % 64 == 0) __builtin_prefetch(xq + n + i, 0, 3);
        } else {
            __builtin_prefetch(x + n + i, 0, 3); __builtin_prefetch(x + n + i + 16, 0, 3);
        }
        if (sq) {
            if (i % 64 == 0) __builtin_prefetch(sq + n + i, 0, 3);
        } else if (skip) {
            __builtin_prefetch(skip + n + i, 0, 3); __builtin_prefetch(skip + n + i + 16, 0, 3);
        }
        __m512 v0, v1;
        if (xq) {
            v0 = dscy_deq16(xq + i, x8->sgn, xz, xs, x8->bias ? x8->bias + i : NULL, (__mmask16)0xFFFF);
            v1 = dscy_deq16(xq + i + 16, x8->sgn, xz, xs, x8->bias ? x8->bias + i + 16 : NULL,
                            (__mmask16)0xFFFF);
        } else {
            v0 = _mm512_loadu_ps(x + i);
            v1 = _mm512_loadu_ps(x + i + 16);
        }
        if (sq) {
            v0 = _mm512_add_ps(v0, dscy_deq16(sq + i, k8->sgn, sz, ss, NULL, (__mmask16)0xFFFF));
            v1 = _mm512_add_ps(v1, dscy_deq16(sq + i + 16, k8->sgn, sz, ss, NULL, (__mmask16)0xFFFF));
        } else if (skip) {
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(skip + i));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(skip + i + 16));
        }
        if (stage) {
            _mm512_storeu_ps(y + i, v0);
            _mm512_storeu_ps(y + i + 16, v1);
        }
        z0 = _mm512_add_ps(z0, v0);
        z1 = _mm512_add_ps(z1, v1);
    }
    /* (a0 + a1) + (a2 + a3) */
    _mm256_storeu_ps(s8, _mm256_add_ps(
        _mm256_add_ps(_mm512_castps512_ps256(z0), _mm512_extractf32x8_ps(z0, 1)),
        _mm256_add_ps(_mm512_castps512_ps256(z1), _mm512_extractf32x8_ps(z1, 1))));
    float mean = (((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7])))
                 / (float)n;
    const __m512 mv = _mm512_set1_ps(mean);
    z0 = z1 = _mm512_setzero_ps();
    for (i = 0; i < n; i += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(t + i), mv);
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(t + i + 16), mv);
        z0 = _mm512_fmadd_ps(d0, d0, z0);
        z1 = _mm512_fmadd_ps(d1, d1, z1);
    }
    _mm256_storeu_ps(s8, _mm256_add_ps(
        _mm256_add_ps(_mm512_castps512_ps256(z0), _mm512_extractf32x8_ps(z0, 1)),
        _mm256_add_ps(_mm512_castps512_ps256(z1), _mm512_extractf32x8_ps(z1, 1))));
    float var = (((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7])))
                / (float)n;
    const __m512 iv = _mm512_set1_ps(1.0f / sqrtf(var + eps));
    /* the quantizer's constants (dscy_quantize_u8_avx512 / _s8_avx512) */
    const float ivs = dscy_q8_inv(scale);
    const int divide = ivs == 0.0f;
    const float top = q_signed ? 127.0f : 255.0f, bot = q_signed ? -128.0f : 0.0f;
    const __m512 qs = _mm512_set1_ps(scale), qiv = _mm512_set1_ps(ivs), zpv = _mm512_set1_ps(zp),
                 lo0 = _mm512_set1_ps(bot - zp), hi0 = _mm512_set1_ps(top - zp);
    unsigned char *qb = (unsigned char *)q;
    for (i = 0; i < n; i += 16) {
        __m512 u = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(t + i), mv), iv);
        __m512 r = b ? _mm512_fmadd_ps(u, _mm512_loadu_ps(g + i), _mm512_loadu_ps(b + i))
                     : _mm512_mul_ps(u, _mm512_loadu_ps(g + i));
        if (!qb) { _mm512_storeu_ps(y + i, r); continue; }
        __m512 v = dscy_q8_16r(r, qs, qiv, divide, lo0, hi0);      /* q - zp */
        _mm_storeu_si128((__m128i *)(qb + i),
                         _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(_mm512_add_ps(v, zpv))));
        if (dq_out)                   /* dscy_dequant_row's (q - zp) * scale */
            _mm512_storeu_ps(y + i, _mm512_mul_ps(v, qs));
    }
}

/* ONNX HardSwish, x * clip(x * (1/6) + 1/2, 0, 1), in the float32 steps of the numpy op
 * (ops/elementwise.HardSwish: a multiply, an add, a clip, a multiply; no FMA, NaN kept as
 * np.clip keeps it: vmaxps / vminps return their second operand, h, when it is NaN): bit for bit
 * that op, 16 (8) values a step where numpy made four passes and the activation kernel's loop
 * (DSCY_F_HARDSWISH, contracted to an FMA) ran a value at a time */
DSCY_TARGET_AVX512 static void dscy_hardswish_z(const float *x, float *y, long n) {
    const __m512 c6 = _mm512_set1_ps(1.0f / 6.0f), half = _mm512_set1_ps(0.5f),
                 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 h = _mm512_mul_ps(v, c6);
        __asm__("" : "+v"(h));        /* no FMA contraction with the add */
        h = _mm512_min_ps(one, _mm512_max_ps(zero, _mm512_add_ps(h, half)));
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, h));
    }
}

DSCY_TARGET_AVX2 static void dscy_hardswish_avx2(const float *x, float *y, long n) {
    const __m256 c6 = _mm256_set1_ps(1.0f / 6.0f), half = _mm256_set1_ps(0.5f),
                 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 h = _mm256_mul_ps(v, c6);
        __asm__("" : "+x"(h));
        h = _mm256_min_ps(one, _mm256_max_ps(zero, _mm256_add_ps(h, half)));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, h));
    }
    for (; i < n; i++) {
        float v = x[i], h = v * (1.0f / 6.0f);
        __asm__("" : "+x"(h));
        h = h + 0.5f;
        h = h < 0.0f ? 0.0f : h;
        h = h > 1.0f ? 1.0f : h;
        y[i] = v * h;
    }
}

/* y[i] = x[i] * s: one float32 multiply a value (a broadcast multiply's row, bit for bit) */
DSCY_TARGET_AVX512 static void dscy_scale_row_z(const float *x, float s, float *y, long n) {
    const __m512 sv = _mm512_set1_ps(s);
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), sv));
        _mm512_storeu_ps(y + i + 16, _mm512_mul_ps(_mm512_loadu_ps(x + i + 16), sv));
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sv));
    }
}

DSCY_TARGET_AVX2 static void dscy_scale_row_avx2(const float *x, float s, float *y, long n) {
    const __m256 sv = _mm256_set1_ps(s);
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv));
    for (; i < n; i++) y[i] = x[i] * s;
}
/* the AVX2 / AVX-512 row kernels above exist (dscy_hardswish / dscy_scale_row dispatch) */
#define DSCY_HAVE_F32_ROWS_V 1
#else
#define DSCY_LAYERNORM_AVX2 dscy_layernorm_generic   /* no AVX2 build here: never selected */
#define DSCY_NO_LAYERNORM_Z 1
#endif

/* dscy_scale_row_z / _avx2 by level (2 / 1), else a value at a time */
static inline void dscy_scale_row(int level, const float *x, float s, float *y, long n) {
#ifdef DSCY_HAVE_F32_ROWS_V
    if (level >= 2) { dscy_scale_row_z(x, s, y, n); return; }
    if (level >= 1) { dscy_scale_row_avx2(x, s, y, n); return; }
#endif
    (void)level;
    for (long i = 0; i < n; i++) y[i] = x[i] * s;
}

/* dscy_hardswish_z / _avx2 by level (2 / 1), else the same steps a value at a time (a
 * compiler without those targets: no FMA here either, plain x86-64 has none) */
static inline void dscy_hardswish(int level, const float *x, float *y, long n) {
#ifdef DSCY_HAVE_F32_ROWS_V
    if (level >= 2) { dscy_hardswish_z(x, y, n); return; }
    if (level >= 1) { dscy_hardswish_avx2(x, y, n); return; }
#endif
    (void)level;
    for (long i = 0; i < n; i++) {
        volatile float h = x[i] * (1.0f / 6.0f);   /* (rounded before the add) */
        float g = h + 0.5f;
        g = g < 0.0f ? 0.0f : g;
        g = g > 1.0f ? 1.0f : g;
        y[i] = x[i] * g;
    }
}

/* dscy_layernorm_z where the level (2) and the row length (a multiple of 32) allow: returns 1
 * when it ran the row, 0 when the caller runs the separate passes */
static inline int dscy_layernorm_zq(int level, const float *x, const float *skip, float *y,
                                    long n, const float *g, const float *b, float eps, void *q,
                                    int q_signed, float scale, float zp, int dq_out) {
#ifndef DSCY_NO_LAYERNORM_Z
    if (level >= 2 && n % 32 == 0) {
        dscy_layernorm_z(x, skip, y, n, g, b, eps, q, q_signed, scale, zp, dq_out, NULL, NULL);
        return 1;
    }
#endif
    (void)level; (void)x; (void)skip; (void)y; (void)n; (void)g; (void)b; (void)eps; (void)q;
    (void)q_signed; (void)scale; (void)zp; (void)dq_out;
    return 0;
}

/* dscy_layernorm_zq of the 8-bit row xr (dequantized by x8's parameters; x8->q unused) read as
 * it starts the row, and of the 8-bit skip row sr where s8 is not NULL (skip then unused);
 * 0 where the level or n does not allow (the caller dequantizes the rows first) */
static inline int dscy_layernorm_zq8(int level, const void *xr, const dscy_ln_x8 *x8,
                                     const float *skip, const void *sr, const dscy_ln_x8 *s8,
                                     float *y, long n, const float *g,
                                     const float *b, float eps, void *q, int q_signed, float scale,
                                     float zp, int dq_out) {
#ifndef DSCY_NO_LAYERNORM_Z
    if (level >= 2 && n % 32 == 0) {
        dscy_ln_x8 row = *x8, srow;
        row.q = xr;
        if (s8) { srow = *s8; srow.q = sr; }
        dscy_layernorm_z(NULL, skip, y, n, g, b, eps, q, q_signed, scale, zp, dq_out, &row,
                         s8 ? &srow : NULL);
        return 1;
    }
#endif
    (void)sr; (void)s8;
    (void)level; (void)xr; (void)x8; (void)skip; (void)y; (void)n; (void)g; (void)b; (void)eps; (void)q;
    (void)q_signed; (void)scale; (void)zp; (void)dq_out;
    return 0;
}

static inline void dscy_layernorm(int avx2, const float *x, const float *skip, float *y, long n,
                                  const float *g, const float *b, float eps) {
    if (dscy_layernorm_zq(avx2, x, skip, y, n, g, b, eps, NULL, 0, 1.0f, 0.0f, 0)) return;
    if (avx2) DSCY_LAYERNORM_AVX2(x, skip, y, n, g, b, eps);
    else dscy_layernorm_generic(x, skip, y, n, g, b, eps);
}
static inline void dscy_scale_mask_softmax(int avx2, float *s, const float *mask, long n,
                                           float scale) {
    if (avx2) dscy_scale_mask_softmax_avx2(s, mask, n, scale);
    else dscy_scale_mask_softmax_generic(s, mask, n, scale);
}

/* Squeeze-excitation (GlobalAveragePool -> 1x1 conv -> act1 -> 1x1 conv -> act2 -> Mul), in
 * three steps over x viewed as [rows][n] (rows = images x channels):
 *   channel means: dscy_plane_mean (dscy_pool.h), GlobalAveragePool's own row mean;
 *   dscy_se_gate:  per image, h = act1(W1 m + b1), g = act2(W2 h + b2), with the weights stored
 *                  transposed (w1t [C][R], w2t [R][C]) so each product runs along contiguous
 *                  output columns (b1 / b2 may be NULL);
 *   dscy_se_scale: y[r] = x[r] * g[r] over rows [r0, r1) (y may be x). */

/* y[j] = sum over k of v[k] * at[k][j] (at: [K][n]), k in order. */
DSCY_INLINE void dscy_gemv_t_body(const float *restrict at, const float *restrict v, long K,
                                  long n, float *restrict y) {
    for (long j = 0; j < n; j++) y[j] = 0.0f;
    for (long k = 0; k < K; k++) {
        const float *a = at + k * n;
        float vk = v[k];
        for (long j = 0; j < n; j++) y[j] += vk * a[j];
    }
}

DSCY_INLINE void dscy_se_scale_body(const float *x, const float *restrict g, long n, long r0,
                                    long r1, float *y) {
    for (long r = r0; r < r1; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n, s = g[r];
        for (long i = 0; i < n; i++) yr[i] = xr[i] * s;
    }
}

static void dscy_se_gate_generic(const float *m, long C, const float *w1t, const float *b1,
                                 long R, int a1, float p10, float p11, const float *w2t,
                                 const float *b2, int a2, float p20, float p21, float *h,
                                 float *g) {
    dscy_gemv_t_body(w1t, m, C, R, h);
    dscy_bias_act_body(h, b1, R, a1, p10, p11);
    dscy_gemv_t_body(w2t, h, R, C, g);
    dscy_bias_act_body(g, b2, C, a2, p20, p21);
}
DSCY_TWO_COPIES(dscy_se_scale, (const float *x, const float *g, long n, long r0, long r1,
                                float *y), (x, g, n, r0, r1, y))
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
/* dscy_gemv_t_body in registers: 64 output columns (8 independent accumulators) per pass over
 * k, through lane masks that are all set except in the last block (one accumulator for a tail
 * of 8 columns was latency-bound: 4 cycles per k); the same k order per output. */
DSCY_TARGET_AVX2 static void dscy_gemv_t_avx2(const float *restrict at, const float *restrict v,
                                              long K, long n, float *restrict y) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (long j0 = 0; j0 < n; j0 += 64) {
        __m256i mk[8];
        for (int q = 0; q < 8; q++) {      /* lanes j0 + 8q + l < n */
            long left = n - j0 - 8 * q;
            mk[q] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)), lane);
        }
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
               c7 = c0;
        const float *a = at + j0;
        for (long k = 0; k < K; k++, a += n) {
            __m256 vk = _mm256_broadcast_ss(v + k);
            c0 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a, mk[0]), c0);
            c1 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a + 8, mk[1]), c1);
            c2 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a + 16, mk[2]), c2);
            c3 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a + 24, mk[3]), c3);
            c4 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a + 32, mk[4]), c4);
            c5 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a + 40, mk[5]), c5);
            c6 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a + 48, mk[6]), c6);
            c7 = _mm256_fmadd_ps(vk, _mm256_maskload_ps(a + 56, mk[7]), c7);
        }
        _mm256_maskstore_ps(y + j0, mk[0], c0); _mm256_maskstore_ps(y + j0 + 8, mk[1], c1);
        _mm256_maskstore_ps(y + j0 + 16, mk[2], c2); _mm256_maskstore_ps(y + j0 + 24, mk[3], c3);
        _mm256_maskstore_ps(y + j0 + 32, mk[4], c4); _mm256_maskstore_ps(y + j0 + 40, mk[5], c5);
        _mm256_maskstore_ps(y + j0 + 48, mk[6], c6); _mm256_maskstore_ps(y + j0 + 56, mk[7], c7);
    }
}

DSCY_TARGET_AVX2 static void dscy_se_gate_avx2(const float *m, long C, const float *w1t,
                                               const float *b1, long R, int a1, float p10,
                                               float p11, const float *w2t, const float *b2,
                                               int a2, float p20, float p21, float *h,
                                               float *g) {
    dscy_gemv_t_avx2(w1t, m, C, R, h);
    dscy_bias_act_body(h, b1, R, a1, p10, p11);
    dscy_gemv_t_avx2(w2t, h, R, C, g);
    dscy_bias_act_body(g, b2, C, a2, p20, p21);
}
#define DSCY_SE_GATE_AVX2 dscy_se_gate_avx2
#else
#define DSCY_SE_GATE_AVX2 dscy_se_gate_generic
#endif

static inline void dscy_se_gate(int avx2, const float *m, long C, const float *w1t,
                                const float *b1, long R, int a1, float p10, float p11,
                                const float *w2t, const float *b2, int a2, float p20, float p21,
                                float *h, float *g) {
    if (avx2) DSCY_SE_GATE_AVX2(m, C, w1t, b1, R, a1, p10, p11, w2t, b2, a2, p20, p21, h, g);
    else dscy_se_gate_generic(m, C, w1t, b1, R, a1, p10, p11, w2t, b2, a2, p20, p21, h, g);
}
static inline void dscy_se_scale(int avx2, const float *x, const float *g, long n, long r0,
                                 long r1, float *y) {
    if (avx2) dscy_se_scale_avx2(x, g, n, r0, r1, y);
    else dscy_se_scale_generic(x, g, n, r0, r1, y);
}

/* Rows idx[lo..hi) of a table of rows of rb bytes (V of them; an index below 0 counts from
 * the end, all in range) into rows lo..hi of out. A vocabulary's embedding rows are random rows
 * of a table far larger than the caches (BERT-base's: 94 MB): each row's lines are prefetched
 * DSCY_GATHER_AHEAD rows before it is copied, where numpy's take copied a row at a time, each
 * one waiting for DRAM. */
#define DSCY_GATHER_AHEAD 8
static inline const char *dscy_gather_src(const char *t, size_t rb, long long V, long long j) {
    return t + (size_t)(j < 0 ? j + V : j) * rb;
}
static inline void dscy_prefetch_bytes(const char *p, size_t n) {
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch(p + o, 0, 3);
}
static inline void dscy_gather_rows(const char *t, size_t rb, long long V, const long long *idx,
                                    long lo, long hi, char *out) {
    for (long i = lo; i < hi && i < lo + DSCY_GATHER_AHEAD; i++)
        dscy_prefetch_bytes(dscy_gather_src(t, rb, V, idx[i]), rb);
    for (long i = lo; i < hi; i++) {
        if (i + DSCY_GATHER_AHEAD < hi)
            dscy_prefetch_bytes(dscy_gather_src(t, rb, V, idx[i + DSCY_GATHER_AHEAD]), rb);
        memcpy(out + (size_t)i * rb, dscy_gather_src(t, rb, V, idx[i]), rb);
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#endif
