/* Internal helpers shared by the INT8 kernels: thread split and the fused epilogue. */
#ifndef DSCY_COMMON_H
#define DSCY_COMMON_H
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "dscy_kernels.h"
#include "dscy_fastmath.h"
/* set (tests): the kernels take their non-VBMI paths on a CPU with VBMI too (one definition
 * per module, merged by the linker) */
__attribute__((weak)) int dscy_vbmi_off = 0;
/* whether the avx512 builds' VBMI paths run: the CPU has AVX-512 VBMI and the tests did not
 * turn them off (0 in other builds) */
static inline int dscy_vbmi_on(void) {
#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    return !dscy_vbmi_off && __builtin_cpu_supports("avx512vbmi");
#else
    return 0;
#endif
}
/* dscy_vbmi_off = off first when off >= 0 (the modules' vbmi(off=) for tests); then
 * dscy_vbmi_on() */
static inline int dscy_vbmi_set(int off) {
    if (off >= 0) dscy_vbmi_off = off;
    return dscy_vbmi_on();
}
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX2__
#include <immintrin.h>
#endif
#ifdef __SSE2__
#include <emmintrin.h>
#endif
/* Prefetch towards L2 (prefetcht1 on x86) spread over a loop: up to three byte ranges, stepped
 * through a fixed number of cache lines per iteration (a kernel's next weights while the
 * current ones compute, without a burst or a data-dependent loop per iteration). */
typedef struct { uintptr_t p[3], e[3]; int n, i, quota; } dscy_pf_cursor;
static inline void dscy_pf_add(dscy_pf_cursor *c, const void *a, const void *e) {
    if (c->n < 3 && (uintptr_t)e > (uintptr_t)a) {
        c->p[c->n] = (uintptr_t)a & ~(uintptr_t)63;
        c->e[c->n++] = (uintptr_t)e;
    }
}
/* lines per step so that the ranges are covered in `steps` steps */
static inline void dscy_pf_quota(dscy_pf_cursor *c, int steps) {
    size_t lines = 0;
    for (int r = 0; r < c->n; r++) lines += (c->e[r] - c->p[r] + 63) / 64;
    c->quota = steps > 0 ? (int)((lines + steps - 1) / steps) : (int)lines;
}
static inline void dscy_pf_step(dscy_pf_cursor *c) {
    for (int q = c->quota; q > 0 && c->i < c->n; q--) {
        __builtin_prefetch((const void *)c->p[c->i], 0, 2);
        c->p[c->i] += 64;
        if (c->p[c->i] >= c->e[c->i]) c->i++;
    }
}
#if defined(__AMX_TILE__)
/* The calling thread's AMX tile configuration, the one every amx kernel here uses: tiles 0-7 all
 * 16 rows x 64 bytes (palette 1). Released with _tile_release() when the thread is done. */
typedef struct { uint8_t palette, start_row, rsv[14]; uint16_t colsb[16]; uint8_t rows[16]; }
    dscy_amx_cfg;
static inline void dscy_amx_config(void) {
    dscy_amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    /* GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes of cfg only, so the stores
     * above could be dropped as dead (they were, once f32_attn.c's thread setup changed: a
     * zero config, #GP, SIGSEGV); the barrier makes the whole struct read */
    __asm__ volatile("" : : "m"(cfg) : "memory");
    _tile_loadconfig(&cfg);
}
#endif

static inline int dscy_nthreads(int want) {
#ifdef _OPENMP
    /* never above the OpenMP limit of the calling thread: threadpoolctl and OMP_NUM_THREADS
       set it, and an engine's num_cores must not override a tighter outer limit */
    int cap = omp_get_max_threads();
    if (want <= 0 || want > cap) want = cap;
    return want < 1 ? 1 : want;
#else
    (void)want; return 1;
#endif
}

/* Work items [0, items) claimed by T threads, each first from its own static share (in order:
 * the locality schedule(static) gives), then from the other shares (their next items, through
 * the same counters). With a static split a call waits for its slowest thread, and cores are
 * not equally fast: a shared VM's vCPU slowed by its host (this project's machines: one vCPU
 * 1.6x slower than the other for minutes), an efficiency core beside a performance core.
 * next[T] (shared; dscy_claims_init before the parallel region, T the threads asked for: a
 * share whose thread was not granted is claimed by the others); *k (the thread's own, 0 at
 * first) counts the shares it has finished. Returns the next item, or -1 when none is left.
 * The counters sit DSCY_CLAIM_PAD longs (a cache line) apart, declared by DSCY_CLAIMS(next, T):
 * side by side, two threads claiming from their own shares moved the one line between the
 * cores on every claim (12% of the quantized YOLOv8n stem's direct conv, 800 items of ~6
 * tile products each, went to the lock xadd). */
#define DSCY_CLAIM_PAD 8
#define DSCY_CLAIMS(name, T) long name[(size_t)(T) * DSCY_CLAIM_PAD]
static inline void dscy_claims_init(long *next, long items, int T) {
    for (int r = 0; r < T; r++) next[(size_t)r * DSCY_CLAIM_PAD] = items * r / T;
}
static inline long dscy_claim(long *next, long items, int T, int tid, int *k) {
    while (*k < T) {
        int r = (tid + *k) % T;
        long it = __atomic_fetch_add(&next[(size_t)r * DSCY_CLAIM_PAD], 1, __ATOMIC_RELAXED);
        if (it < items * (r + 1) / T) return it;
        (*k)++;
    }
    return -1;
}

/* DSCY_THREAD_BUFFER(name) defines `float *name(size_t n)`: a 64-byte aligned scratch of at
 * least n floats owned by the calling thread, grown on demand and kept (OpenMP threads persist,
 * so a kernel allocates once per thread, not per call). NULL when allocation fails. */
#ifdef _OPENMP
#define DSCY_PRAGMA(x) _Pragma(#x)
#define DSCY_TL_PRIVATE(a, b) DSCY_PRAGMA(omp threadprivate(a, b))
#else
#define DSCY_TL_PRIVATE(a, b)
#endif
#define DSCY_THREAD_BUFFER(name)                                                          \
    static size_t name##_cap = 0;                                                         \
    static float *name##_buf = NULL;                                                      \
    DSCY_TL_PRIVATE(name##_cap, name##_buf)                                               \
    static float *name(size_t n) {                                                        \
        if (name##_cap < n) {                                                             \
            free(name##_buf);                                                             \
            name##_buf = (float *)aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64); \
            name##_cap = name##_buf ? n : 0;                                              \
        }                                                                                 \
        return name##_buf;                                                                \
    }

/* im2col rows m0 .. m0 + n - 1 of a convolution (dscy_conv_geom), row i at dst + i * K. The
 * caller leaves 32 writable bytes after the last row: a window of up to 32 bytes (an RGB stem's
 * 3 x 3 or 7 x 7 row of taps, 9 or 21 bytes) is copied as whole 16-byte vectors (the bytes past
 * it are rewritten by the next window or lie in that slack), not by a memcpy call each. */
static inline void dscy_conv_rows(const dscy_conv_geom *g, int m0, int n, uint8_t *dst) {
    int hw = g->Ho * g->Wo, b = m0 / hw, oy = (m0 % hw) / g->Wo, ox = m0 % g->Wo;
    int C = g->C, KWC = g->KW * C;
    const uint8_t *xend = g->x + (size_t)g->B * g->H * g->W * C;
    for (int i = 0; i < n; i++) {
        uint8_t *d = dst;
        int y0 = oy * g->sh - g->pt, x0 = ox * g->sw - g->pl;
        const uint8_t *xb = g->x + (size_t)b * g->H * g->W * C;
        int whole = x0 >= 0 && x0 + (g->KW - 1) * g->dw < g->W && g->dw == 1;
        for (int ky = 0; ky < g->KH; ky++, d += KWC) {
            int iy = y0 + ky * g->dh;
            if (iy < 0 || iy >= g->H) { memset(d, g->pad, (size_t)KWC); continue; }
            const uint8_t *row = xb + (size_t)iy * g->W * C;
            if (whole) {
                const uint8_t *src = row + (size_t)x0 * C;
#ifdef __SSE2__
                if (KWC <= 32 && src + 32 <= xend) {   /* never reads past the input */
                    _mm_storeu_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)src));
                    if (KWC > 16)
                        _mm_storeu_si128((__m128i *)(d + 16), _mm_loadu_si128((const __m128i *)(src + 16)));
                    continue;
                }
#endif
                memcpy(d, src, (size_t)KWC);
                continue;
            }
            for (int kx = 0; kx < g->KW; kx++) {
                int ix = x0 + kx * g->dw;
                if (ix < 0 || ix >= g->W) memset(d + (size_t)kx * C, g->pad, C);
                else memcpy(d + (size_t)kx * C, row + (size_t)ix * C, C);
            }
        }
        dst += (size_t)g->KH * KWC;
        if (++ox == g->Wo) { ox = 0; if (++oy == g->Ho) { oy = 0; b++; } }
    }
}

/* Saturation bounds of an 8-bit type (DSCY_OUT_U8 / S8) around its zero point, for clamping
 * the float before rounding: rint(clamp(f, lo, hi)) + zp == saturate(rint(f) + zp). */
static inline float dscy_q8_lo(int type, int zp) { return (type == DSCY_OUT_U8 ? 0.0f : -128.0f) - (float)zp; }
static inline float dscy_q8_hi(int type, int zp) { return (type == DSCY_OUT_U8 ? 255.0f : 127.0f) - (float)zp; }

/* Activations of the fused epilogues (DSCY_ACT_*), one value and 8 lanes. */
static inline float dscy_act1(float f, int act, float lo, float hi) {
    if (act == DSCY_ACT_RELU) return f > 0.0f ? f : 0.0f;
    if (act == DSCY_ACT_CLIP) { f = f < lo ? lo : f; return f > hi ? hi : f; }
    if (act == DSCY_ACT_GELU) return 0.5f * f * (1.0f + dscy_erff(f * 0.70710678118654752440f));
    return f;
}

/* the residual of output (m, n) as float (dequantized) */
static inline float dscy_res1(const dscy_epilogue *ep, int m, int n) {
    ptrdiff_t o = (ptrdiff_t)m * ep->ldr + n;
    if (ep->res_type == DSCY_OUT_F32) return ((const float *)ep->res)[o];
    int r = ep->res_type == DSCY_OUT_U8 ? ((const uint8_t *)ep->res)[o] : ((const int8_t *)ep->res)[o];
    return (float)(r - ep->res_zp) * ep->res_scale;
}

/* The epilogue in two halves: pre (bias, scale, mid step) per channel, post (residual,
 * activation, output scale and type) per output element. */
static inline float dscy_ep_pre1(const dscy_epilogue *ep, int32_t v, int n) {
    float f = (float)v * ep->scale[n];
    if (ep->mid_type) {
        float mlo = dscy_q8_lo(ep->mid_type, ep->mid_zp), mhi = dscy_q8_hi(ep->mid_type, ep->mid_zp);
        f = f < mlo ? mlo : f; f = f > mhi ? mhi : f;
        float d = rintf(f) * ep->mid_scale[n];
#ifdef __FMA__
        __asm__("" : "+x"(d));   /* no FMA contraction: the vector path rounds the product too */
#endif
        f = d + ep->mid_bias[n];
    }
    return f;
}

static inline int32_t dscy_ep_post1(const dscy_epilogue *ep, float f, int m, int n) {
    if (ep->res_type) {
        float r = dscy_res1(ep, m, n);
#ifdef __FMA__
        __asm__("" : "+x"(r));   /* the residual's product rounds before the add, as in dscy_res8 */
#endif
        f = f + r;
    }
    f = dscy_act1(f, ep->act, ep->lo, ep->hi);
    if (ep->y_scale != 1.0f) f = f / ep->y_scale;
    if (ep->out_type == DSCY_OUT_F32) { int32_t bits; memcpy(&bits, &f, 4); return bits; }
    /* clamp before rounding so huge values cannot overflow the int conversion; the bounds are
     * integers, so rint(clamp(f)) + zp == saturate(rint(f) + zp) */
    float qlo = dscy_q8_lo(ep->out_type, ep->zero_point), qhi = dscy_q8_hi(ep->out_type, ep->zero_point);
    f = f < qlo ? qlo : f; f = f > qhi ? qhi : f;
    return (int32_t)rintf(f) + ep->zero_point;   /* rintf: current mode = round half to even */
}

/* The table epilogue (ep->lut) of v = acc + bias: the mid step's quantized value looks up the
 * output byte, returned as the output type's value (an S8 byte sign-extended). */
static inline int32_t dscy_ep_lut1(const dscy_epilogue *ep, int32_t v, int n) {
    float f = (float)v * ep->scale[n];
    float mlo = dscy_q8_lo(ep->mid_type, ep->mid_zp), mhi = dscy_q8_hi(ep->mid_type, ep->mid_zp);
    f = f < mlo ? mlo : f; f = f > mhi ? mhi : f;
    /* rint(f) + mid_zp - type min, in [0, 255] */
    int i = (int)rintf(f) + ep->mid_zp + (ep->mid_type == DSCY_OUT_U8 ? 0 : 128);
    uint8_t b = ep->lut[(size_t)n * 256 + i];
    return ep->out_type == DSCY_OUT_U8 ? (int32_t)b : (int32_t)(int8_t)b;
}

/* Scalar epilogue of one accumulator of output (m, n), as a 32-bit lane: the int32 sum, the
 * float bits, or the quantized value. The vector paths must match it bit for bit. */
static inline int32_t dscy_ep_value1(const dscy_epilogue *ep, int32_t acc, int m, int n) {
    int32_t v = (int32_t)((uint32_t)acc + (uint32_t)ep->bias[n]);
    if (ep->out_type == DSCY_OUT_I32) return v;
    if (ep->lut) return dscy_ep_lut1(ep, v, n);
    return dscy_ep_post1(ep, dscy_ep_pre1(ep, v, n), m, n);
}

/* Store one element (m, n) of the tokens-major output through the epilogue. */
static inline void dscy_ep_store1(const dscy_epilogue *ep, int32_t acc, int m, int n) {
    int32_t v = dscy_ep_value1(ep, acc, m, n);
    ptrdiff_t o = (ptrdiff_t)m * ep->ldo + n;
    if (ep->out_type >= DSCY_OUT_U8) ((uint8_t *)ep->out)[o] = (uint8_t)v;
    else ((int32_t *)ep->out)[o] = v;
}

#ifdef __AVX2__
/* 8x8 float transpose in place: row i of r[0..8) becomes column i (r[j][i] = old r[i][j]) */
static inline void dscy_tr8x8_ps(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) {
        u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], 0xEE);
        u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

/* 0.5 x (1 + erf(x / sqrt 2)) on 8 lanes: dscy_erff's clamp and rational form with FMAs (finite
 * x only: the epilogue's values come from int32 sums) */
static inline __m256 dscy_gelu8(__m256 x) {
    __m256 xc = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752440f));
    xc = _mm256_min_ps(_mm256_max_ps(xc, _mm256_set1_ps(-4.0f)), _mm256_set1_ps(4.0f));
    __m256 x2 = _mm256_mul_ps(xc, xc);
    __m256 p = _mm256_set1_ps(DSCY_ERF_P0);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(DSCY_ERF_P1));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(DSCY_ERF_P2));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(DSCY_ERF_P3));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(DSCY_ERF_P4));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(DSCY_ERF_P5));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(DSCY_ERF_P6));
    p = _mm256_mul_ps(p, xc);
    __m256 q = _mm256_set1_ps(DSCY_ERF_Q0);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(DSCY_ERF_Q1));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(DSCY_ERF_Q2));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(DSCY_ERF_Q3));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(DSCY_ERF_Q4));
    __m256 e = _mm256_div_ps(p, q);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 dscy_act8(__m256 v, int act, float lo, float hi) {
    if (act == DSCY_ACT_RELU) return _mm256_max_ps(v, _mm256_setzero_ps());
    if (act == DSCY_ACT_CLIP) return _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
    if (act == DSCY_ACT_GELU) return dscy_gelu8(v);
    return v;
}

/* residuals of 8 outputs (m, n0..n0+7), o = m * ldr + n0, dequantized as dscy_res1 */
static inline __m256 dscy_res8(const dscy_epilogue *ep, ptrdiff_t o) {
    if (ep->res_type == DSCY_OUT_F32) return _mm256_loadu_ps((const float *)ep->res + o);
    __m128i b = _mm_loadl_epi64((const __m128i *)((const uint8_t *)ep->res + o));
    __m256i v = ep->res_type == DSCY_OUT_U8 ? _mm256_cvtepu8_epi32(b) : _mm256_cvtepi8_epi32(b);
    __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(v, _mm256_set1_epi32(ep->res_zp)));
    return _mm256_mul_ps(f, _mm256_set1_ps(ep->res_scale));
}

static inline __m256 dscy_ep_pre8(const dscy_epilogue *ep, __m256i acc, __m256i bias,
                                  __m256 scale, __m256 mid_scale, __m256 mid_bias) {
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, bias)), scale);
    if (ep->mid_type) {
        float mlo = dscy_q8_lo(ep->mid_type, ep->mid_zp), mhi = dscy_q8_hi(ep->mid_type, ep->mid_zp);
        f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(mlo)), _mm256_set1_ps(mhi));
        f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        f = _mm256_mul_ps(f, mid_scale);
        __asm__("" : "+x"(f));   /* gcc would contract the mul and add into an FMA */
        f = _mm256_add_ps(f, mid_bias);
    }
    return f;
}

static inline __m256 dscy_ep_post8(const dscy_epilogue *ep, __m256 f, __m256 res) {
    if (ep->res_type) {
        __asm__("" : "+x"(res));   /* the residual's own product rounds before the add */
        f = _mm256_add_ps(f, res);
    }
    f = dscy_act8(f, ep->act, ep->lo, ep->hi);
    if (ep->y_scale != 1.0f) f = _mm256_div_ps(f, _mm256_set1_ps(ep->y_scale));
    return f;
}

/* Epilogue of 8 int32 accumulators: vacc[j] belongs to output (m[j], n[j]) with per-lane bias,
 * scale, mid_scale and mid_bias vectors (the mid ones read only when ep->mid_type) and the
 * residuals (dscy_res8, read only when ep->res_type). Returns float values (already activated);
 * caller stores. */
static inline __m256 dscy_ep_f8(const dscy_epilogue *ep, __m256i acc, __m256i bias, __m256 scale,
                                __m256 mid_scale, __m256 mid_bias, __m256 res) {
    return dscy_ep_post8(ep, dscy_ep_pre8(ep, acc, bias, scale, mid_scale, mid_bias), res);
}
/* The table epilogue of 8 accumulators: lane j belongs to channel row[j] / 256 (row: the
 * channels' table offsets n * 256), as dscy_ep_lut1. */
static inline __m256i dscy_ep_lut8(const dscy_epilogue *ep, __m256i acc, __m256i bias,
                                   __m256 scale, __m256i row) {
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, bias)), scale);
    float mlo = dscy_q8_lo(ep->mid_type, ep->mid_zp), mhi = dscy_q8_hi(ep->mid_type, ep->mid_zp);
    f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(mlo)), _mm256_set1_ps(mhi));
    /* cvtps_epi32 rounds with MXCSR (default: nearest, ties to even) like rintf */
    __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32(f),
                                 _mm256_set1_epi32(ep->mid_zp + (ep->mid_type == DSCY_OUT_U8 ? 0 : 128)));
    __m256i w = _mm256_i32gather_epi32((const int *)ep->lut, _mm256_add_epi32(row, i), 1);
    return ep->out_type == DSCY_OUT_U8 ? _mm256_and_si256(w, _mm256_set1_epi32(0xff))
                                       : _mm256_srai_epi32(_mm256_slli_epi32(w, 24), 24);
}

/* float -> quantized int32 lanes (rounded half-even, zero point added, saturated) */
static inline __m256i dscy_ep_q8(const dscy_epilogue *ep, __m256 f) {
    float qlo = dscy_q8_lo(ep->out_type, ep->zero_point), qhi = dscy_q8_hi(ep->out_type, ep->zero_point);
    f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(qlo)), _mm256_set1_ps(qhi));
    /* cvtps_epi32 rounds with MXCSR (default: nearest, ties to even) like rintf */
    return _mm256_add_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(ep->zero_point));
}

/* The whole epilogue of 8 accumulators of one output row, lanes = channels n0..n0+7 with their
 * bias, scale, mid scale / bias (read only with a mid step) and table offsets row (only with a
 * table), as 32-bit lanes of the output type: int32 sums, float bits, or quantized values
 * (saturated to the 8-bit range). ro: the residual's offset m * ldr + n0 (only with one). */
static inline __m256i dscy_ep_lanes8(const dscy_epilogue *ep, __m256i acc, __m256i bias,
                                     __m256 scale, __m256 mid_scale, __m256 mid_bias,
                                     __m256i row, ptrdiff_t ro) {
    if (ep->out_type == DSCY_OUT_I32) return _mm256_add_epi32(acc, bias);
    if (ep->lut) return dscy_ep_lut8(ep, acc, bias, scale, row);
    __m256 f = dscy_ep_f8(ep, acc, bias, scale, mid_scale, mid_bias,
                          ep->res_type ? dscy_res8(ep, ro) : mid_bias);
    return ep->out_type == DSCY_OUT_F32 ? _mm256_castps_si256(f) : dscy_ep_q8(ep, f);
}
/* Epilogue kinds a kernel can specialize (constants read once per call, dscy_ek_init, instead
 * of dscy_ep_lanes8's checks of every field on every 8 lanes): int32 sums; float or 8-bit
 * output with the mid step, activation and y_scale division; a table; or (PRE, with a residual)
 * the float before the residual, the caller adding it; GELU without a table: GEN. */
enum { DSCY_EK_GEN = 0, DSCY_EK_I32, DSCY_EK_F32, DSCY_EK_Q8, DSCY_EK_LUT, DSCY_EK_PRE };
static inline int dscy_ep_kind(const dscy_epilogue *ep) {
    if (ep->res_type) return ep->out_type == DSCY_OUT_I32 || ep->lut ? DSCY_EK_GEN : DSCY_EK_PRE;
    if (ep->out_type == DSCY_OUT_I32) return DSCY_EK_I32;
    if (ep->lut) return DSCY_EK_LUT;
    if (ep->act == DSCY_ACT_GELU) return DSCY_EK_GEN;
    return ep->out_type == DSCY_OUT_F32 ? DSCY_EK_F32 : DSCY_EK_Q8;
}

typedef struct {
    __m256 mlo, mhi, alo, ahi, qlo, qhi, ys;
    __m256i zp, moff;
#ifdef __AVX512F__
    __m512 zmlo, zmhi, zalo, zahi, zqlo, zqhi, zys;     /* the same on 16 lanes (dscy_ek16) */
    __m512i zzp, zmoff;
#endif
    const int32_t *bias;
    const float *scale, *mscale, *mbias;
    const uint8_t *lut;
    int mid, act, u8, ydiv;
    int vbmi;        /* the CPU has AVX-512 VBMI (byte permutes) and dscy_vbmi_off is 0 */
    int lut_shared;  /* vbmi, and lut's rows are all the same (dscy_epilogue.lut_shared) */
} dscy_ek_consts;

static inline void dscy_ek_init(const dscy_epilogue *ep, dscy_ek_consts *k) {
    k->mid = ep->mid_type != 0; k->act = ep->act; k->u8 = ep->out_type == DSCY_OUT_U8;
    k->mlo = _mm256_set1_ps(k->mid ? dscy_q8_lo(ep->mid_type, ep->mid_zp) : 0.0f);
    k->mhi = _mm256_set1_ps(k->mid ? dscy_q8_hi(ep->mid_type, ep->mid_zp) : 0.0f);
    k->alo = _mm256_set1_ps(ep->act == DSCY_ACT_RELU ? 0.0f : ep->lo);
    k->ahi = _mm256_set1_ps(ep->hi);
    k->ydiv = ep->y_scale != 1.0f; k->ys = _mm256_set1_ps(ep->y_scale);
    int q8 = ep->out_type == DSCY_OUT_U8 || ep->out_type == DSCY_OUT_S8;
    k->qlo = _mm256_set1_ps(q8 ? dscy_q8_lo(ep->out_type, ep->zero_point) : 0.0f);
    k->qhi = _mm256_set1_ps(q8 ? dscy_q8_hi(ep->out_type, ep->zero_point) : 0.0f);
    k->zp = _mm256_set1_epi32(ep->zero_point);
    k->moff = _mm256_set1_epi32(ep->mid_zp + (ep->mid_type == DSCY_OUT_U8 ? 0 : 128));
    k->bias = ep->bias; k->scale = ep->scale; k->mscale = ep->mid_scale; k->mbias = ep->mid_bias;
    k->lut = ep->lut;
    k->vbmi = dscy_vbmi_on();
    k->lut_shared = k->vbmi && ep->lut && ep->lut_shared;
#ifdef __AVX512F__
    k->zmlo = _mm512_castps256_ps512(k->mlo); k->zmlo = _mm512_shuffle_f32x4(k->zmlo, k->zmlo, 0);
    k->zmhi = _mm512_castps256_ps512(k->mhi); k->zmhi = _mm512_shuffle_f32x4(k->zmhi, k->zmhi, 0);
    k->zalo = _mm512_castps256_ps512(k->alo); k->zalo = _mm512_shuffle_f32x4(k->zalo, k->zalo, 0);
    k->zahi = _mm512_castps256_ps512(k->ahi); k->zahi = _mm512_shuffle_f32x4(k->zahi, k->zahi, 0);
    k->zqlo = _mm512_castps256_ps512(k->qlo); k->zqlo = _mm512_shuffle_f32x4(k->zqlo, k->zqlo, 0);
    k->zqhi = _mm512_castps256_ps512(k->qhi); k->zqhi = _mm512_shuffle_f32x4(k->zqhi, k->zqhi, 0);
    k->zys = _mm512_castps256_ps512(k->ys); k->zys = _mm512_shuffle_f32x4(k->zys, k->zys, 0);
    k->zzp = _mm512_castsi256_si512(k->zp); k->zzp = _mm512_shuffle_i32x4(k->zzp, k->zzp, 0);
    k->zmoff = _mm512_castsi256_si512(k->moff); k->zmoff = _mm512_shuffle_i32x4(k->zmoff, k->zmoff, 0);
#endif
}

/* The kinds of eps[e0..e1] into ek[] and the constants of those a kernel specializes into kc[]
 * (the parts GEMMs: one epilogue per part); 1 when none of them is GEN */
static inline int dscy_ek_init_parts(const dscy_epilogue *eps, int e0, int e1, int *ek,
                                     dscy_ek_consts *kc) {
    int all = 1;
    for (int e = e0; e <= e1; e++) {
        ek[e] = dscy_ep_kind(&eps[e]);
        if (ek[e] != DSCY_EK_GEN) dscy_ek_init(&eps[e], &kc[e]);
        else all = 0;
    }
    return all;
}

/* The epilogue of kind EK on 8 accumulators, bit for bit dscy_ep_lanes8 (without the
 * residual: PRE returns the float before it): lanes' bias b, scale s, mid scale ms / bias mb
 * (read only with a mid step) and table offsets row (channel * 256, only for LUT). */
static inline __attribute__((always_inline)) __m256i dscy_ek8(
        const int EK, const dscy_ek_consts *k, __m256i acc, __m256i b, __m256 s, __m256 ms,
        __m256 mb, __m256i row) {
    if (EK == DSCY_EK_I32) return _mm256_add_epi32(acc, b);
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, b)), s);
    if (EK == DSCY_EK_LUT) {          /* dscy_ep_lut8 */
        f = _mm256_min_ps(_mm256_max_ps(f, k->mlo), k->mhi);
        __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32(f), k->moff);
        __m256i w = _mm256_i32gather_epi32((const int *)k->lut, _mm256_add_epi32(row, i), 1);
        return k->u8 ? _mm256_and_si256(w, _mm256_set1_epi32(0xff))
                     : _mm256_srai_epi32(_mm256_slli_epi32(w, 24), 24);
    }
    if (k->mid) {                     /* dscy_ep_pre8 */
        f = _mm256_min_ps(_mm256_max_ps(f, k->mlo), k->mhi);
        f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        f = _mm256_mul_ps(f, ms);
        __asm__("" : "+x"(f));        /* no FMA contraction */
        f = _mm256_add_ps(f, mb);
    }
    if (EK == DSCY_EK_PRE) return _mm256_castps_si256(f);
    if (k->act == DSCY_ACT_RELU) f = _mm256_max_ps(f, k->alo);          /* dscy_act8 */
    else if (k->act == DSCY_ACT_CLIP) f = _mm256_min_ps(_mm256_max_ps(f, k->alo), k->ahi);
    if (k->ydiv) f = _mm256_div_ps(f, k->ys);                            /* dscy_ep_post8 */
    if (EK == DSCY_EK_F32) return _mm256_castps_si256(f);
    f = _mm256_min_ps(_mm256_max_ps(f, k->qlo), k->qhi);                 /* dscy_ep_q8 */
    return _mm256_add_epi32(_mm256_cvtps_epi32(f), k->zp);
}

#ifdef __AVX512F__
/* The table index of 16 lanes (f = (acc + bias) * scale): the mid value minus its type's
 * minimum, 0 .. 255 (dscy_ek16's LUT kind, and the sparse kernel's VBMI table rows) */
static inline __m512i dscy_lut_index16(const dscy_ek_consts *k, __m512 f) {
    f = _mm512_min_ps(_mm512_max_ps(f, k->zmlo), k->zmhi);
    return _mm512_add_epi32(_mm512_cvtps_epi32(f), k->zmoff);
}

#if defined(__GNUC__) || defined(__clang__)
/* 64 table lookups by byte permutes (AVX-512 VBMI): c[0..3] hold 16 indices (0..255) each, in
 * lanes order c[0] lanes 0-15, c[1] 16-31, ...; t[0..3] the 256-byte table. The packs do not
 * saturate in-range indices; per 128-bit lane L they leave dwords (c0, c1, c2, c3 at lanes
 * 4L .. 4L + 3), which the dword permute puts back in order; then vpermi2b on the table's halves
 * and a blend by the index's top bit. Returns the 64 looked-up bytes in that order. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vbmi"))) __m512i
dscy_lut64_vbmi(const __m512i t[4], const __m512i c[4]) {
    __m512i i = _mm512_packus_epi16(_mm512_packs_epi32(c[0], c[1]), _mm512_packs_epi32(c[2], c[3]));
    i = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7,
                                                   11, 15), i);
    __m512i lo = _mm512_permutex2var_epi8(t[0], i, t[1]), hi = _mm512_permutex2var_epi8(t[2], i, t[3]);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(i), lo, hi);
}
#endif

/* dscy_ek16's last steps on the float lanes f: the activation, the y_scale division, then the
 * float bits, or (q8, an 8-bit output) the quantized int32 lanes (dscy_ep_post8 + dscy_ep_q8) */
static inline __attribute__((always_inline)) __m512i dscy_ek16_post(const dscy_ek_consts *k,
                                                                   __m512 f, int q8) {
    if (k->act == DSCY_ACT_RELU) f = _mm512_max_ps(f, k->zalo);
    else if (k->act == DSCY_ACT_CLIP) f = _mm512_min_ps(_mm512_max_ps(f, k->zalo), k->zahi);
    if (k->ydiv) f = _mm512_div_ps(f, k->zys);
    if (!q8) return _mm512_castps_si512(f);
    f = _mm512_min_ps(_mm512_max_ps(f, k->zqlo), k->zqhi);
    return _mm512_add_epi32(_mm512_cvtps_epi32(f), k->zzp);
}

/* dscy_res8 on 16 lanes: the residual's outputs at element offset o of res (type rt), 8-bit
 * ones as (r - zp) * scale with rzp / rsc their broadcasts */
static inline __attribute__((always_inline)) __m512 dscy_res16(int rt, const void *res,
                                                              ptrdiff_t o, __m512i rzp, __m512 rsc) {
    if (rt == DSCY_OUT_F32) return _mm512_loadu_ps((const float *)res + o);
    __m128i b = _mm_loadu_si128((const __m128i *)((const uint8_t *)res + o));
    __m512i v = rt == DSCY_OUT_U8 ? _mm512_cvtepu8_epi32(b) : _mm512_cvtepi8_epi32(b);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, rzp)), rsc);
}

/* kind PRE's rest on 16 lanes, bit for bit dscy_ep_post8 + dscy_ep_q8: the float f before the
 * residual plus the residual r (its own product rounded first), then dscy_ek16_post */
static inline __attribute__((always_inline)) __m512i dscy_ek16_res(const dscy_ek_consts *k,
                                                                  __m512 f, __m512 r, int q8) {
    __asm__("" : "+v"(r));
    return dscy_ek16_post(k, _mm512_add_ps(f, r), q8);
}

/* dscy_ek8 on 16 lanes (the same operations in the same order: bit for bit) */
static inline __attribute__((always_inline)) __m512i dscy_ek16(
        const int EK, const dscy_ek_consts *k, __m512i acc, __m512i b, __m512 s, __m512 ms,
        __m512 mb, __m512i row) {
    if (EK == DSCY_EK_I32) return _mm512_add_epi32(acc, b);
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, b)), s);
    if (EK == DSCY_EK_LUT) {
        __m512i i = dscy_lut_index16(k, f);
        __m512i w = _mm512_i32gather_epi32(_mm512_add_epi32(row, i), (const int *)k->lut, 1);
        return k->u8 ? _mm512_and_si512(w, _mm512_set1_epi32(0xff))
                     : _mm512_srai_epi32(_mm512_slli_epi32(w, 24), 24);
    }
    if (k->mid) {
        f = _mm512_min_ps(_mm512_max_ps(f, k->zmlo), k->zmhi);
        f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        f = _mm512_mul_ps(f, ms);
        __asm__("" : "+v"(f));        /* no FMA contraction */
        f = _mm512_add_ps(f, mb);
    }
    if (EK == DSCY_EK_PRE) return _mm512_castps_si512(f);
    return dscy_ek16_post(k, f, EK != DSCY_EK_F32);
}
#endif
#endif
#endif
