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

#if defined(__AVX512F__) && defined(__AVX512BW__)
/* The AVX-512 rows: 16 channels a vector (the last block under a mask). Each input row a thread
 * reads is converted once into its scratch as floats x - zx, zero-padded to the taps' span
 * (Wpad pixels x Cp = C rounded up to 16 channels), kept in a ring of R = (KH - 1) * dh + 1 rows
 * indexed by the row's number (an output row's input rows are R consecutive ones at most, so
 * they never share a slot; the next output row finds most of them converted). The AVX2 row
 * converted every input value once per tap that read it (9 / 25 times for 3x3 / 5x5). Then 8
 * output pixels at a time sum (x - zx) * w with the ring as the FMA's memory operand. The sums
 * are the same exact integers (every product at most 255 * 128, a sum of at most 256 of them
 * below 2**24), so the outputs are bit for bit the AVX2 row's. The epilogue: dscy_ek16 on the
 * channels' constants as vectors (dscy_ek8 on 16 lanes, the same bits), for the specialized
 * kinds only (not GEN / PRE). */
#define DW_RING_MAX 64
DSCY_THREAD_BUFFER(dw_zbuffer)

typedef struct { float *buf; long tag[DW_RING_MAX]; int R, Wpad, Cp; } dw_ring;

/* the ring's floats of input row iy of image b (converted if its slot holds another row) */
static const float *dw_ring_row(dw_ring *g, const uint8_t *x, int x_signed, int H, int W, int C,
                                float zx, int pl, int b, int iy, int cl, int ch, int chunk) {
    /* channels cl .. ch - 1 of the row (a work item's chunk: cl a multiple of 16); the tag
     * names the row and the chunk, the slot the row only (an output row's rows never share
     * one) */
    long row_no = (long)b * H + iy, key = row_no * 4096 + chunk;
    int s = (int)(row_no % g->R);
    float *row = g->buf + (size_t)s * g->Wpad * g->Cp;
    if (g->tag[s] == key) return row;
    const uint8_t *xr = x + (size_t)row_no * W * C;
    const __m512 vzx = _mm512_set1_ps(zx);
    const int C16 = cl + ((ch - cl) & ~15);
    const __mmask16 tm = (__mmask16)((1u << ((ch - cl) & 15)) - 1);
    for (int p = 0; p < g->Wpad; p++) {
        int ix = p - pl;
        float *d = row + (size_t)p * g->Cp;
        if (ix < 0 || ix >= W) {
            for (int c = cl; c < ch; c += 16) _mm512_store_ps(d + c, _mm512_setzero_ps());
            continue;
        }
        const uint8_t *q = xr + (size_t)ix * C;
        int c = cl;
        if (x_signed)
            for (; c < C16; c += 16)
                _mm512_store_ps(d + c, _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                    _mm_loadu_si128((const __m128i *)(q + c)))), vzx));
        else
            for (; c < C16; c += 16)
                _mm512_store_ps(d + c, _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                    _mm_loadu_si128((const __m128i *)(q + c)))), vzx));
        if (c < ch) {
            __m128i t = _mm_maskz_loadu_epi8(tm, q + c);
            __m512i ti = x_signed ? _mm512_cvtepi8_epi32(t) : _mm512_cvtepu8_epi32(t);
            _mm512_store_ps(d + c, _mm512_maskz_sub_ps(tm, _mm512_cvtepi32_ps(ti), vzx));
        }
    }
    g->tag[s] = key;
    return row;
}

static void dw_row_z(const void *x, int x_signed, int H, int W, int C, float zx, const float *w,
                     int KH, int KW, int sh, int sw, int dh, int dw, int pt, int pl, int Wo,
                     int b, int oy, int m, const dscy_epilogue *ep, const dw_ek *e, dw_ring *g,
                     int cl, int ch, int chunk) {
    /* channels cl .. ch - 1 (cl a multiple of 16) */
    const float *rows[DSCY_DW_MAX_TAPS];
    for (int i = 0; i < KH; i++) {
        int iy = oy * sh - pt + i * dh;
        rows[i] = iy >= 0 && iy < H
            ? dw_ring_row(g, (const uint8_t *)x, x_signed, H, W, C, zx, pl, b, iy, cl, ch, chunk)
            : NULL;
    }
    const int ek = e->ek, Cp = g->Cp;
    const int bytes = ep->out_type >= DSCY_OUT_U8;
    const ptrdiff_t ldo = ep->ldo;
    const size_t st = (size_t)sw * Cp;
    for (int c0 = cl; c0 < ch; c0 += 16) {
        const __mmask16 msk = ch - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ch - c0)) - 1);
        /* the block's epilogue constants (lanes past C: zeros, and table row 0 for a LUT so
         * its gather stays inside the table) */
        const __m512i bv = _mm512_maskz_loadu_epi32(msk, ep->bias + c0);
        const __m512 sv = _mm512_maskz_loadu_ps(msk, ep->scale + c0);
        __m512 ma = _mm512_setzero_ps(), mb = ma;
        if (ep->mid_type) {
            ma = _mm512_maskz_loadu_ps(msk, ep->mid_scale + c0);
            mb = _mm512_maskz_loadu_ps(msk, ep->mid_bias + c0);
        }
        const __m512i rowv = _mm512_maskz_mov_epi32(msk, _mm512_slli_epi32(
            _mm512_add_epi32(_mm512_set1_epi32(c0), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                      10, 11, 12, 13, 14, 15)), 8));
#define DW_EP(ACC, O) do {                                                                  \
            __m512i a_ = _mm512_cvtps_epi32(ACC), v_;                                          \
            switch (ek) {                                                                      \
            case DSCY_EK_I32: v_ = dscy_ek16(DSCY_EK_I32, &e->k, a_, bv, sv, ma, mb, rowv); break; \
            case DSCY_EK_F32: v_ = dscy_ek16(DSCY_EK_F32, &e->k, a_, bv, sv, ma, mb, rowv); break; \
            case DSCY_EK_Q8: v_ = dscy_ek16(DSCY_EK_Q8, &e->k, a_, bv, sv, ma, mb, rowv); break;   \
            default: v_ = dscy_ek16(DSCY_EK_LUT, &e->k, a_, bv, sv, ma, mb, rowv); break;          \
            }                                                                                  \
            ptrdiff_t o_ = (ptrdiff_t)(m + (O)) * ldo + c0;                                    \
            if (bytes) _mm512_mask_cvtepi32_storeu_epi8((uint8_t *)ep->out + o_, msk, v_);     \
            else _mm512_mask_storeu_epi32((int32_t *)ep->out + o_, msk, v_);                   \
        } while (0)
        int o0 = 0;
        /* 8 output pixels at a time, their sums in named registers (an array of them went
         * through the stack on every multiply-add) */
        for (; o0 + 8 <= Wo; o0 += 8) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
                   a6 = a0, a7 = a0;
            for (int i = 0; i < KH; i++) {
                if (!rows[i]) continue;
                for (int j = 0; j < KW; j++) {
                    const __m512 wv = _mm512_maskz_loadu_ps(msk, w + (size_t)(i * KW + j) * C + c0);
                    const float *xp = rows[i] + ((size_t)o0 * sw + (size_t)j * dw) * Cp + c0;
                    a0 = _mm512_fmadd_ps(_mm512_load_ps(xp), wv, a0);
                    a1 = _mm512_fmadd_ps(_mm512_load_ps(xp + st), wv, a1);
                    a2 = _mm512_fmadd_ps(_mm512_load_ps(xp + 2 * st), wv, a2);
                    a3 = _mm512_fmadd_ps(_mm512_load_ps(xp + 3 * st), wv, a3);
                    a4 = _mm512_fmadd_ps(_mm512_load_ps(xp + 4 * st), wv, a4);
                    a5 = _mm512_fmadd_ps(_mm512_load_ps(xp + 5 * st), wv, a5);
                    a6 = _mm512_fmadd_ps(_mm512_load_ps(xp + 6 * st), wv, a6);
                    a7 = _mm512_fmadd_ps(_mm512_load_ps(xp + 7 * st), wv, a7);
                }
            }
            DW_EP(a0, o0); DW_EP(a1, o0 + 1); DW_EP(a2, o0 + 2); DW_EP(a3, o0 + 3);
            DW_EP(a4, o0 + 4); DW_EP(a5, o0 + 5); DW_EP(a6, o0 + 6); DW_EP(a7, o0 + 7);
        }
        for (; o0 < Wo; o0++) {
            __m512 a0 = _mm512_setzero_ps();
            for (int i = 0; i < KH; i++) {
                if (!rows[i]) continue;
                for (int j = 0; j < KW; j++)
                    a0 = _mm512_fmadd_ps(_mm512_load_ps(rows[i] + ((size_t)o0 * sw + (size_t)j * dw) * Cp + c0),
                                         _mm512_maskz_loadu_ps(msk, w + (size_t)(i * KW + j) * C + c0), a0);
            }
            DW_EP(a0, o0);
        }
#undef DW_EP
    }
}
#endif

int dscy_qs8_dwconv(const void *x, int x_signed, int B, int H, int W, int C, float zx,
                    const float *w, const float *zxw, int KH, int KW, int sh, int sw, int dh,
                    int dw, int pt, int pl, int Ho, int Wo, const dscy_epilogue *ep, int nthreads) {
    if (KH * KW > DSCY_DW_MAX_TAPS) return -1;
    long rows = (long)B * Ho;
    double work = (double)rows * Wo * C * KH * KW;
    int nt = dscy_nthreads(nthreads);
    if (work < 65536.0) nt = 1;
    /* (the AVX-512 rows below may split channels too: up to rows x 16-channel blocks of
     * work items; the AVX2 rows at most one thread a row) */
    if (nt > rows * ((C + 15) / 16)) nt = (int)(rows * ((C + 15) / 16));
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
#if defined(__AVX512F__) && defined(__AVX512BW__)
    int R = (KH - 1) * dh + 1, Wpad = (Wo - 1) * sw + (KW - 1) * dw + 1, Cp = (C + 15) & ~15;
    if ((e.ek == DSCY_EK_I32 || e.ek == DSCY_EK_F32 || e.ek == DSCY_EK_Q8 || e.ek == DSCY_EK_LUT)
            && R <= DW_RING_MAX) {
        /* few output rows (a 3 x 40 map): the channels split into chunks too, so both threads
         * get work (3 rows went 2 : 1) */
        int cblocks = Cp / 16, nchunk = 1;
        if (nt > 1 && rows < 4L * nt) {
            nchunk = (int)((4L * nt + rows - 1) / rows);
            if (nchunk > cblocks) nchunk = cblocks;
        }
        int per = (cblocks + nchunk - 1) / nchunk;      /* 16-channel blocks per chunk */
        nchunk = (cblocks + per - 1) / per;
        int failed = 0;
        #pragma omp parallel num_threads(nt)
        {
            dw_ring g;
            g.R = R; g.Wpad = Wpad; g.Cp = Cp;
            for (int i = 0; i < R; i++) g.tag[i] = -1;
            g.buf = dw_zbuffer((size_t)R * Wpad * Cp);
            if (!g.buf) {
                #pragma omp atomic write
                failed = 1;
            }
            /* a scratch that could not be allocated: every thread takes the AVX2 rows (whole
             * rows, on the items of chunk 0), decided after all have tried */
            #pragma omp barrier
            int use_z;
            #pragma omp atomic read
            use_z = failed;
            use_z = !use_z;
            #pragma omp for schedule(guided)
            for (long it = 0; it < rows * nchunk; it++) {
                int chunk = (int)(it / rows);
                long r = it % rows;
                int b = (int)(r / Ho), oy = (int)(r % Ho);
                int cl = chunk * per * 16, ch = cl + per * 16 < C ? cl + per * 16 : C;
                if (cl >= C) continue;
                if (use_z)
                    dw_row_z(x, x_signed, H, W, C, zx, w, KH, KW, sh, sw, dh, dw, pt, pl, Wo, b,
                             oy, (int)(r * Wo), ep, &e, &g, cl, ch, chunk);
                else if (chunk == 0)
                    dw_row(x, x_signed, H, W, C, zx, w, zxw, KH, KW, sh, sw, dh, dw, pt, pl, Wo,
                           b, oy, (int)(r * Wo), ep, ekx);
            }
        }
        return 0;
    }
#endif
    #pragma omp parallel for num_threads(nt > rows ? (int)rows : nt) schedule(guided)
    for (long r = 0; r < rows; r++) {
        int b = (int)(r / Ho), oy = (int)(r % Ho);
        dw_row(x, x_signed, H, W, C, zx, w, zxw, KH, KW, sh, sw, dh, dw, pt, pl, Wo, b, oy,
               (int)(r * Wo), ep, ekx);
    }
    return 0;
}
