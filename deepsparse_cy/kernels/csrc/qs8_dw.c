/* Depthwise 2-D convolution of quantized NHWC activations with the INT8 kernels' fused epilogue
 * (dscy_kernels.h: bias, scale, mid step or table, residual, activation, output type), built once
 * per ISA level inside the qs8_gemm module.
 *
 * Sums in float32 are exact integer sums: |x - zx| <= 255 and |w| <= 128, so every product is an
 * integer of at most 32640 and, with KH*KW <= DSCY_DW_MAX_TAPS = 256 taps, every partial sum
 * stays below 2**24 -- also in the interior form below, which starts from -zx * (sum of the
 * valid rows' weights) and adds x * w (|start| + |terms| <= 2 * 256 * 32640 < 2**24). The sum is
 * then converted to int32 (exactly) and finished by the same epilogue as the GEMMs, so the
 * output is bit-identical to qs8_matmul on the layer's im2col columns.
 *
 * Taps outside the input are skipped, which is the spec's padding with the zero point. AVX2:
 * eight channels per vector, four output pixels at a time in the interior (every tap inside the
 * row), one pixel at a time with bounds checks at the borders; channels past the last multiple
 * of 8 and the generic build go through the scalar epilogue.
 */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "dscy_common.h"

#define DSCY_DW_MAX_TAPS 256

/* one output pixel, all channels c0..C-1, scalar (generic build, channel tails) */
static void dw_pixel_scalar(const void *x, int x_signed, int H, int W, int C, float zx,
                            const float *w, int KH, int KW, int sh, int sw, int dh, int dw,
                            int pt, int pl, int b, int oy, int ox, int c0,
                            const dscy_epilogue *ep, int m) {
    for (int c = c0; c < C; c++) {
        float acc = 0.0f;
        for (int i = 0; i < KH; i++) {
            int iy = oy * sh - pt + i * dh;
            if (iy < 0 || iy >= H) continue;
            for (int j = 0; j < KW; j++) {
                int ix = ox * sw - pl + j * dw;
                if (ix < 0 || ix >= W) continue;
                ptrdiff_t o = (((ptrdiff_t)b * H + iy) * W + ix) * C + c;
                float xv = x_signed ? (float)((const int8_t *)x)[o] : (float)((const uint8_t *)x)[o];
                acc += (xv - zx) * w[(i * KW + j) * C + c];
            }
        }
        dscy_ep_store1(ep, (int32_t)acc, m, c);
    }
}

#ifdef __AVX2__
static inline __m256 load8_q(const void *p, int x_signed) {
    __m128i v = _mm_loadl_epi64((const __m128i *)p);
    return _mm256_cvtepi32_ps(x_signed ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v));
}

/* the epilogue kind (dscy_ep_kind) and its constants, worked out once per call */
typedef struct { int ek; dscy_ek_consts k; } dw_ek;

/* the epilogue's per-channel vectors of channels n0..n0+7 and its output fields, read once per
 * block of 8 channels (through ep, stores to the output may alias them: the compiler reloaded
 * all of them for every pixel) */
typedef struct {
    __m256i b, row;
    __m256 s, ma, mb;
    void *out;
    ptrdiff_t ldo;
    int otype;
} dw_par;

static inline void dw_par_load(const dscy_epilogue *ep, int n0, dw_par *p) {
    p->ma = _mm256_setzero_ps();
    p->mb = p->ma;
    if (ep->mid_type) {
        p->ma = _mm256_loadu_ps(ep->mid_scale + n0);
        p->mb = _mm256_loadu_ps(ep->mid_bias + n0);
    }
    p->row = _mm256_add_epi32(_mm256_set1_epi32(n0 * 256),
                              _mm256_setr_epi32(0, 256, 512, 768, 1024, 1280, 1536, 1792));
    p->b = _mm256_loadu_si256((const __m256i *)(ep->bias + n0));
    p->s = _mm256_loadu_ps(ep->scale + n0);
    p->out = ep->out;
    p->ldo = ep->ldo;
    p->otype = ep->out_type;
}

/* the epilogue of 8 channels n0..n0+7 of output pixel m from their exact float sums, on the
 * block's vectors p */
static inline void ep_store8p(const dscy_epilogue *ep, const dw_ek *e, const dw_par *p,
                              __m256 accf, int m, int n0) {
    __m256i a = _mm256_cvtps_epi32(accf);
    __m256i v;
    switch (e->ek) {   /* the specialized kinds: no per-lane checks of every epilogue field */
    case DSCY_EK_I32: v = dscy_ek8(DSCY_EK_I32, &e->k, a, p->b, p->s, p->ma, p->mb, p->row); break;
    case DSCY_EK_F32: v = dscy_ek8(DSCY_EK_F32, &e->k, a, p->b, p->s, p->ma, p->mb, p->row); break;
    case DSCY_EK_Q8: v = dscy_ek8(DSCY_EK_Q8, &e->k, a, p->b, p->s, p->ma, p->mb, p->row); break;
    case DSCY_EK_LUT: v = dscy_ek8(DSCY_EK_LUT, &e->k, a, p->b, p->s, p->ma, p->mb, p->row); break;
    default: v = dscy_ep_lanes8(ep, a, p->b, p->s, p->ma, p->mb, p->row, (ptrdiff_t)m * ep->ldr + n0);
    }
    ptrdiff_t o = (ptrdiff_t)m * p->ldo + n0;
    if (p->otype < DSCY_OUT_U8) {             /* int32 sums or float bits */
        _mm256_storeu_si256((__m256i *)((int32_t *)p->out + o), v);
        return;
    }
    /* lanes already saturated to the 8-bit range: the packs only narrow */
    __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    __m128i b8 = p->otype == DSCY_OUT_U8 ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16);
    _mm_storel_epi64((__m128i *)((uint8_t *)p->out + o), b8);
}

/* the same for one pixel (the border pixels) */
static inline void ep_store8(const dscy_epilogue *ep, const dw_ek *e, __m256 accf, int m, int n0) {
    dw_par p;
    dw_par_load(ep, n0, &p);
    ep_store8p(ep, e, &p, accf, m, n0);
}
#endif

/* one output row (b, oy); m = (b * Ho + oy) * Wo is its first pixel's index. zxw [KH][C]:
 * zx times each kernel row's weight sum (the interior form's start). */
static void dw_row(const void *x, int x_signed, int H, int W, int C, float zx, const float *w,
                   const float *zxw, int KH, int KW, int sh, int sw, int dh, int dw, int pt,
                   int pl, int Wo, int b, int oy, int m, const dscy_epilogue *ep,
                   const void *ekx) {
#ifdef __AVX2__
    const dw_ek *e = (const dw_ek *)ekx;
    int C8 = C & ~7;
    /* interior pixels: every horizontal tap inside the row */
    int lo = (pl + sw - 1) / sw;
    int hi_num = W - 1 - (KW - 1) * dw + pl;
    int hi = hi_num < 0 ? 0 : hi_num / sw + 1;
    if (hi > Wo) hi = Wo;
    if (lo > hi) lo = hi;
    const uint8_t *xb = (const uint8_t *)x + (size_t)b * H * W * C;
    for (int ox = 0; ox < Wo; ox++) {
        if (ox == lo && lo < hi) {
            /* the interior, four pixels at a time */
            for (int c = 0; c < C8; c += 8) {
                dw_par par;
                dw_par_load(ep, c, &par);
                __m256 init = _mm256_setzero_ps();
                for (int i = 0; i < KH; i++) {
                    int iy = oy * sh - pt + i * dh;
                    if (iy >= 0 && iy < H) init = _mm256_sub_ps(init, _mm256_loadu_ps(zxw + i * C + c));
                }
                int o = lo;
                for (; o + 4 <= hi; o += 4) {
                    __m256 a0 = init, a1 = init, a2 = init, a3 = init;
                    for (int i = 0; i < KH; i++) {
                        int iy = oy * sh - pt + i * dh;
                        if (iy < 0 || iy >= H) continue;
                        const uint8_t *xr = xb + ((size_t)iy * W) * C + c;
                        for (int j = 0; j < KW; j++) {
                            __m256 wv = _mm256_loadu_ps(w + (i * KW + j) * C + c);
                            const uint8_t *p = xr + (size_t)(o * sw - pl + j * dw) * C;
                            size_t st = (size_t)sw * C;
                            a0 = _mm256_fmadd_ps(load8_q(p, x_signed), wv, a0);
                            a1 = _mm256_fmadd_ps(load8_q(p + st, x_signed), wv, a1);
                            a2 = _mm256_fmadd_ps(load8_q(p + 2 * st, x_signed), wv, a2);
                            a3 = _mm256_fmadd_ps(load8_q(p + 3 * st, x_signed), wv, a3);
                        }
                    }
                    ep_store8p(ep, e, &par, a0, m + o, c);
                    ep_store8p(ep, e, &par, a1, m + o + 1, c);
                    ep_store8p(ep, e, &par, a2, m + o + 2, c);
                    ep_store8p(ep, e, &par, a3, m + o + 3, c);
                }
                for (; o < hi; o++) {
                    __m256 a0 = init;
                    for (int i = 0; i < KH; i++) {
                        int iy = oy * sh - pt + i * dh;
                        if (iy < 0 || iy >= H) continue;
                        const uint8_t *xr = xb + ((size_t)iy * W) * C + c;
                        for (int j = 0; j < KW; j++)
                            a0 = _mm256_fmadd_ps(load8_q(xr + (size_t)(o * sw - pl + j * dw) * C, x_signed),
                                                 _mm256_loadu_ps(w + (i * KW + j) * C + c), a0);
                    }
                    ep_store8p(ep, e, &par, a0, m + o, c);
                }
            }
            if (C8 < C)
                for (int o = lo; o < hi; o++)
                    dw_pixel_scalar(x, x_signed, H, W, C, zx, w, KH, KW, sh, sw, dh, dw, pt, pl, b,
                                    oy, o, C8, ep, m + o);
            ox = hi - 1;
            continue;
        }
        /* a border pixel: taps checked, (x - zx) * w */
        __m256 vzx = _mm256_set1_ps(zx);
        for (int c = 0; c < C8; c += 8) {
            __m256 a0 = _mm256_setzero_ps();
            for (int i = 0; i < KH; i++) {
                int iy = oy * sh - pt + i * dh;
                if (iy < 0 || iy >= H) continue;
                const uint8_t *xr = xb + ((size_t)iy * W) * C + c;
                for (int j = 0; j < KW; j++) {
                    int ix = ox * sw - pl + j * dw;
                    if (ix < 0 || ix >= W) continue;
                    __m256 xv = _mm256_sub_ps(load8_q(xr + (size_t)ix * C, x_signed), vzx);
                    a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w + (i * KW + j) * C + c), a0);
                }
            }
            ep_store8(ep, e, a0, m + ox, c);
        }
        if (C8 < C)
            dw_pixel_scalar(x, x_signed, H, W, C, zx, w, KH, KW, sh, sw, dh, dw, pt, pl, b, oy, ox,
                            C8, ep, m + ox);
    }
#else
    (void)zxw; (void)ekx;
    for (int ox = 0; ox < Wo; ox++)
        dw_pixel_scalar(x, x_signed, H, W, C, zx, w, KH, KW, sh, sw, dh, dw, pt, pl, b, oy, ox, 0,
                        ep, m + ox);
#endif
}

int dscy_qs8_dwconv(const void *x, int x_signed, int B, int H, int W, int C, float zx,
                    const float *w, const float *zxw, int KH, int KW, int sh, int sw, int dh,
                    int dw, int pt, int pl, int Ho, int Wo, const dscy_epilogue *ep, int nthreads) {
    if (KH * KW > DSCY_DW_MAX_TAPS) return -1;
    long rows = (long)B * Ho;
    double work = (double)rows * Wo * C * KH * KW;
    int nt = dscy_nthreads(nthreads);
    if (work < 65536.0) nt = 1;
    if (nt > rows) nt = (int)rows;
    if (nt < 1) nt = 1;
    const void *ekx = NULL;
#ifdef __AVX2__
    dw_ek e;
    e.ek = dscy_ep_kind(ep);
    if (e.ek != DSCY_EK_GEN && e.ek != DSCY_EK_PRE) dscy_ek_init(ep, &e.k);
    else e.ek = DSCY_EK_GEN;
    ekx = &e;
#endif
    /* guided: large claims first (neighbouring rows share input rows), then smaller ones, so
     * a slower core does not hold up the call */
    #pragma omp parallel for num_threads(nt) schedule(guided)
    for (long r = 0; r < rows; r++) {
        int b = (int)(r / Ho), oy = (int)(r % Ho);
        dw_row(x, x_signed, H, W, C, zx, w, zxw, KH, KW, sh, sw, dh, dw, pt, pl, Wo, b, oy,
               (int)(r * Wo), ep, ekx);
    }
    return 0;
}
