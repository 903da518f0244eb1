/* 2-D max pooling of one plane, separable: per output row, the max over the kernel rows is taken
 * column by column into tmp (a contiguous loop the compiler vectorises), then each output pixel
 * takes the max over its kw columns of tmp. NaN never wins over a number (np.fmax semantics);
 * padding counts as -inf, exactly as the numpy path that pads with -inf: a window that reaches
 * into the padding starts its max at -inf (so it is -inf if all its inputs are NaN), a window
 * inside the input starts at its first tap (NaN if all its inputs are NaN).
 */
#ifndef DSCY_POOL_H
#define DSCY_POOL_H
#include <math.h>
#include <string.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")   /* lets gcc vectorise the compare + select */
#endif

static inline float dscy_fmax1(float m, float v) {
    float r = v > m ? v : m;     /* maxss */
    return m != m ? v : r;       /* a NaN so far gives way to v: branch-free select */
}

/* row[c] = max over the window rows ih0, ih0 + dh, ... inside the plane (dscy_fmax1, in tap
 * order); returns how many rows were inside (0: row untouched). */
static inline int dscy_pool_rows_max(const float *x, int H, int W, int ih0, int kh, int dh,
                                     float *row) {
    int nrows = 0;
    for (int i = 0; i < kh; i++) {
        int ih = ih0 + i * dh;
        if (ih < 0 || ih >= H) continue;
        const float *r = x + (long)ih * W;
        if (nrows++ == 0) {
            for (int c = 0; c < W; c++) row[c] = r[c];
        } else {
            for (int c = 0; c < W; c++) row[c] = dscy_fmax1(row[c], r[c]);
        }
    }
    return nrows;
}

/* Width stride 1: the vertical max of the window rows goes to tmp + pl between -inf columns
 * (tmp holds pl + W + the taps' reach: dscy_maxpool2d_tmp floats), so every output, border
 * ones included, is the same contiguous tap-by-tap loop. A -inf column is a no-op for
 * dscy_fmax1 once the running max is a number, and outputs whose window reaches the padding
 * start from fmax1(-inf, first tap) as the skipping loop did: the result is the same bit for
 * bit. Tiny maps (YOLOv8's SPPF pools 5x5 windows over 4x4 planes) had every output in the
 * skipping loop, a latency-bound chain per tap. */
static inline long dscy_maxpool2d_tmp(int W, int Wo, int kw, int dw, int pl) {
    long a = (long)pl + W, b = (long)Wo + (long)(kw - 1) * dw;
    return (a > b ? a : b) + 1;
}

static void dscy_maxpool2d_plane_s1(const float *x, int H, int W, float *y, int Ho, int Wo,
                                    int kh, int kw, int sh, int dh, int dw, int pt, int pl,
                                    float *tmp) {
    const long span = (long)(kw - 1) * dw, n = dscy_maxpool2d_tmp(W, Wo, kw, dw, pl);
    float *row = tmp + pl;
    for (int c = 0; c < pl; c++) tmp[c] = -INFINITY;
    for (long c = (long)pl + W; c < n; c++) tmp[c] = -INFINITY;
    /* outputs whose kw taps all fall inside the row: [lo, hi) */
    int lo = pl, hi = W - 1 - (int)span + pl >= 0 ? W - (int)span + pl : 0;
    if (hi > Wo) hi = Wo;
    if (lo > hi) lo = hi;
    for (int oh = 0; oh < Ho; oh++) {
        int nrows = dscy_pool_rows_max(x, H, W, oh * sh - pt, kh, dh, row);
        float *yr = y + (long)oh * Wo;
        if (!nrows) {
            for (int ow = 0; ow < Wo; ow++) yr[ow] = -INFINITY;
            continue;
        }
        int a = nrows < kh ? 0 : lo, b = nrows < kh ? 0 : hi;   /* [a, b): no padding tap */
        for (int q = 0; q < a; q++) yr[q] = dscy_fmax1(-INFINITY, tmp[q]);
        for (int q = a; q < b; q++) yr[q] = tmp[q];
        for (int q = b; q < Wo; q++) yr[q] = dscy_fmax1(-INFINITY, tmp[q]);
        for (int j = 1; j < kw; j++) {
            const float *tj = tmp + (long)j * dw;
            for (int q = 0; q < Wo; q++) yr[q] = dscy_fmax1(yr[q], tj[q]);
        }
    }
}

static void dscy_maxpool2d_plane(const float *x, int H, int W, float *y, int Ho, int Wo, int kh,
                                 int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                                 float *tmp) {
    if (sw == 1) {
        dscy_maxpool2d_plane_s1(x, H, W, y, Ho, Wo, kh, kw, sh, dh, dw, pt, pl, tmp);
        return;
    }
    for (int oh = 0; oh < Ho; oh++) {
        int nrows = dscy_pool_rows_max(x, H, W, oh * sh - pt, kh, dh, tmp), vpad;
        float *yr = y + (long)oh * Wo;
        vpad = nrows < kh;
        if (!nrows) {
            for (int ow = 0; ow < Wo; ow++) yr[ow] = -INFINITY;
            continue;
        }
        /* outputs whose kw taps all fall inside the row: [lo, hi) */
        int lo = pl > 0 ? (pl + sw - 1) / sw : 0;
        int span = (kw - 1) * dw;
        int hi = W - 1 - span + pl >= 0 ? (W - 1 - span + pl) / sw + 1 : 0;
        if (hi > Wo) hi = Wo;
        if (lo > hi) lo = hi;
        for (int ow = 0; ow < Wo; ow++) {
            if (ow == lo) {
                for (; ow < hi; ow++) {
                    const float *t = tmp + (long)ow * sw - pl;
                    float m = vpad ? -INFINITY : t[0];
                    for (int j = vpad ? 0 : 1; j < kw; j++) m = dscy_fmax1(m, t[j * dw]);
                    yr[ow] = m;
                }
                if (ow >= Wo) break;
            }
            float m = -INFINITY;     /* a window reaching into the padding: see the top */
            int iw0 = ow * sw - pl;
            for (int j = 0; j < kw; j++) {
                int iw = iw0 + j * dw;
                if (iw >= 0 && iw < W) m = dscy_fmax1(m, tmp[iw]);
            }
            yr[ow] = m;
        }
    }
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define DSCY_POOL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
/* dscy_fmax1 on 16 lanes: v where v > m, else m; v where m is NaN */
DSCY_POOL_AVX512 static inline __m512 dscy_fmax16(__m512 m, __m512 v) {
    __m512 r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, m, _CMP_GT_OQ), m, v);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q), r, v);
}

/* dscy_maxpool2d_plane_s1 for rows of at most 16 pixels (W, Wo <= 16, pl + kw <= 32, dw 1):
 * one zmm per row, the same taps in the same order, so the same bits. YOLOv8's SPPF pools 5 x 5
 * windows over 10 x 10 planes (a 320 input): ~0.1 ms per MaxPool in the scalar loops, whose
 * rows were too short to vectorise. */
DSCY_POOL_AVX512
static void dscy_maxpool2d_plane_w16(const float *x, int H, int W, float *y, int Ho, int Wo,
                                     int kh, int kw, int sh, int dh, int pt, int pl) {
    float tmp[64] __attribute__((aligned(64)));
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __mmask16 mw = (__mmask16)((1u << W) - 1), mo = (__mmask16)((1u << Wo) - 1);
    int lo = pl, hi = W - 1 - (kw - 1) + pl >= 0 ? W - (kw - 1) + pl : 0;
    if (hi > Wo) hi = Wo;
    if (lo > hi) lo = hi;
    const __mmask16 inside = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
    for (int oh = 0; oh < Ho; oh++) {
        int nrows = 0;
        __m512 row = ninf;
        for (int i = 0; i < kh; i++) {
            int ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= H) continue;
            __m512 r = _mm512_maskz_loadu_ps(mw, x + (long)ih * W);
            row = nrows++ ? dscy_fmax16(row, r) : r;
        }
        float *yr = y + (long)oh * Wo;
        if (!nrows) { _mm512_mask_storeu_ps(yr, mo, ninf); continue; }
        for (int c = 0; c < 64; c += 16) _mm512_store_ps(tmp + c, ninf);
        _mm512_mask_storeu_ps(tmp + pl, mw, row);
        __m512 acc = _mm512_loadu_ps(tmp);
        /* windows reaching the padding start from fmax1(-inf, first tap) */
        __mmask16 pad = nrows < kh ? (__mmask16)0xFFFF : (__mmask16)~inside;
        acc = _mm512_mask_blend_ps(pad, acc, dscy_fmax16(ninf, acc));
        for (int j = 1; j < kw; j++) acc = dscy_fmax16(acc, _mm512_loadu_ps(tmp + j));
        _mm512_mask_storeu_ps(yr, mo, acc);
    }
}
/* dscy_maxpool_plane8 for rows of at most 64 pixels (W, Wo <= 64, sw = dw = 1, pl and kw <=
 * 64): one zmm of bytes per row, its kh input rows' max first (lanes past W: the lowest value),
 * then kw shifted loads of it from a scratch row of lowest values. The separable loops ran a
 * few bytes per loop on such rows: 0.15 ms for YOLOv8n's 128 SPPF planes of 10 x 10. */
DSCY_POOL_AVX512
static void dscy_maxpool_plane8_w64(const unsigned char *x, int x_signed, int H, int W,
                                    unsigned char *y, int Ho, int Wo, int kh, int kw, int sh,
                                    int dh, int pt, int pl) {
    /* up to 16 output rows at a time: first every row's vertical max, each stored at byte pl
     * of its own zeroed 128-byte slot, then the horizontal max of each from loads at byte
     * offsets 0..kw-1. Storing one row and reloading it at those offsets at once stalled on
     * store forwarding (a partly overlapping load waits for the store to retire): ~400 cycles
     * a 10 x 10 plane, a quantized SPPF's 5 x 5 pools over 128 such planes 15-17 us each. */
    unsigned char tmp[16][128] __attribute__((aligned(64)));
    const __m512i f = _mm512_set1_epi8((char)(x_signed ? 0x80 : 0)), z = _mm512_setzero_si512();
    const __mmask64 mw = W >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << W) - 1);
    const __mmask64 mo = Wo >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << Wo) - 1);
    int nr0 = Ho < 16 ? Ho : 16;
    for (int r = 0; r < nr0; r++) {
        _mm512_store_si512((void *)tmp[r], z);
        _mm512_store_si512((void *)(tmp[r] + 64), z);
    }
    for (int g = 0; g < Ho; g += 16) {
        int n = Ho - g < 16 ? Ho - g : 16;
        for (int r = 0; r < n; r++) {
            int oh = g + r;
            __m512i row = z;              /* flipped: 0 is the type's lowest value */
            for (int i = 0; i < kh; i++) {
                int ih = oh * sh - pt + i * dh;
                if (ih < 0 || ih >= H) continue;
                __m512i v = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mw, x + (long)ih * W), f);
                row = _mm512_max_epu8(row, _mm512_maskz_mov_epi8(mw, v));
            }
            _mm512_storeu_si512((void *)(tmp[r] + pl), row);   /* lanes past W: 0, as the pads */
        }
        for (int r = 0; r < n; r++) {
            __m512i acc = _mm512_load_si512((const void *)tmp[r]);
            for (int j = 1; j < kw; j++)
                acc = _mm512_max_epu8(acc, _mm512_loadu_si512((const void *)(tmp[r] + j)));
            _mm512_mask_storeu_epi8(y + (long)(g + r) * Wo, mo, _mm512_xor_si512(acc, f));
        }
    }
}
#else
static void dscy_maxpool2d_plane_w16(const float *x, int H, int W, float *y, int Ho, int Wo,
                                     int kh, int kw, int sh, int dh, int pt, int pl) {
    float tmp[128];                       /* (the scalar loops: not an x86-64 build) */
    dscy_maxpool2d_plane_s1(x, H, W, y, Ho, Wo, kh, kw, sh, dh, 1, pt, pl, tmp);
}
static void dscy_maxpool_plane8(const unsigned char *x, int x_signed, int H, int W,
                                unsigned char *y, int Ho, int Wo, int kh, int kw, int sh, int sw,
                                int dh, int dw, int pt, int pl, unsigned char *h);
static void dscy_maxpool_plane8_w64(const unsigned char *x, int x_signed, int H, int W,
                                    unsigned char *y, int Ho, int Wo, int kh, int kw, int sh,
                                    int dh, int pt, int pl) {
    /* (not an x86-64 build, never dispatched: the separable loops, H x Wo bytes of scratch) */
    unsigned char *h = (unsigned char *)malloc((size_t)(H > 0 ? H : 1) * (Wo > 0 ? Wo : 1));
    if (!h) return;
    dscy_maxpool_plane8(x, x_signed, H, W, y, Ho, Wo, kh, kw, sh, 1, dh, 1, pt, pl, h);
    free(h);
}
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* ---- layout copies of the upsampling paths (plain C, SSE2 for the 2-wide interleave) ---- */

/* d[2w] = a[w], d[2w + 1] = b[w]: 4 pairs per two SSE unpacks (the scalar loop was one
 * 4-byte store per element). */
static inline void dscy_interleave2(const float *a, const float *b, long n, float *d) {
    long w = 0;
#if defined(__SSE2__)
    for (; w + 4 <= n; w += 4) {
        __m128 va = _mm_loadu_ps(a + w), vb = _mm_loadu_ps(b + w);
        _mm_storeu_ps(d + 2 * w, _mm_unpacklo_ps(va, vb));
        _mm_storeu_ps(d + 2 * w + 4, _mm_unpackhi_ps(va, vb));
    }
#endif
    for (; w < n; w++) { d[2 * w] = a[w]; d[2 * w + 1] = b[w]; }
}

/* Nearest upsampling by integer factors of one plane: y[h*kh + i][w*kw + j] = x[h][w]. Each
 * output row is expanded once and then copied kh - 1 times. */
static void dscy_upsample_plane(const float *x, int H, int W, float *y, int kh, int kw) {
    long Wo = (long)W * kw;
    for (int h = 0; h < H; h++) {
        const float *s = x + (long)h * W;
        float *d = y + (long)h * kh * Wo;
        if (kw == 1) memcpy(d, s, sizeof(float) * W);
        else if (kw == 2) dscy_interleave2(s, s, W, d);
        else for (int w = 0; w < W; w++) for (int j = 0; j < kw; j++) d[(long)w * kw + j] = s[w];
        for (int i = 1; i < kh; i++) memcpy(d + i * Wo, d, sizeof(float) * Wo);
    }
}

/* Nearest resize of one plane by index tables: y[i][j] = x[hi[i]][wi[j]]; an output row whose
 * source row is the previous one's is a copy of it. NAME for planes of T (float32, and bytes:
 * dscy_gather_plane8 below). */
#define DSCY_GATHER_PLANE(NAME, T)                                                            \
    static void NAME(const T *x, int W, const int32_t *hi, int Ho, const int32_t *wi, int Wo, \
                     T *y) {                                                                  \
        for (int i = 0; i < Ho; i++) {                                                        \
            T *d = y + (long)i * Wo;                                                          \
            if (i && hi[i] == hi[i - 1]) { memcpy(d, d - Wo, sizeof(T) * Wo); continue; }     \
            const T *s = x + (long)hi[i] * W;                                                 \
            for (int j = 0; j < Wo; j++) d[j] = s[wi[j]];                                     \
        }                                                                                     \
    }
DSCY_GATHER_PLANE(dscy_gather_plane, float)

/* dscy_upsample_plane and dscy_gather_plane on bytes (u8 / s8 planes: a quantized detector
 * neck's nearest upsampling after its QuantizeLinear moved before it, graph/fusion_q8.py) */
static void dscy_upsample_plane8(const uint8_t *x, int H, int W, uint8_t *y, int kh, int kw) {
    long Wo = (long)W * kw;
    for (int h = 0; h < H; h++) {
        const uint8_t *s = x + (long)h * W;
        uint8_t *d = y + (long)h * kh * Wo;
        if (kw == 1) memcpy(d, s, (size_t)W);
        else if (kw == 2) {
            /* 16 bytes -> 32, each twice (byte unpacks); at kh 2 straight into both rows: the
             * rows are short (20-80 bytes), a memcpy call per row was most of the time */
            uint8_t *d2 = kh == 2 ? d + Wo : d;
            int w = 0;
#if defined(__SSE2__)
            for (; w + 16 <= W; w += 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)(s + w));
                __m128i lo = _mm_unpacklo_epi8(v, v), hi = _mm_unpackhi_epi8(v, v);
                _mm_storeu_si128((__m128i *)(d + 2 * w), lo);
                _mm_storeu_si128((__m128i *)(d + 2 * w + 16), hi);
                _mm_storeu_si128((__m128i *)(d2 + 2 * w), lo);
                _mm_storeu_si128((__m128i *)(d2 + 2 * w + 16), hi);
            }
#endif
            for (; w < W; w++) { d[2 * w] = d[2 * w + 1] = d2[2 * w] = d2[2 * w + 1] = s[w]; }
            if (kh == 2) continue;
        }
        else for (int w = 0; w < W; w++) for (int j = 0; j < kw; j++) d[(long)w * kw + j] = s[w];
        for (int i = 1; i < kh; i++) memcpy(d + i * Wo, d, (size_t)Wo);
    }
}

DSCY_GATHER_PLANE(dscy_gather_plane8, uint8_t)

/* Depth to space of one output plane of a stride == kernel ConvTranspose: the GEMM gives
 * cols[i][j][h][w] (tap (i, j) of input pixel (h, w)); y[h*k0 + i][w*k1 + j] = cols[i][j][h][w]. */
static void dscy_d2s_plane(const float *cols, int k0, int k1, int S0, int S1, float *y) {
    long plane = (long)S0 * S1, Wo = (long)S1 * k1;
    for (int h = 0; h < S0; h++)
        for (int i = 0; i < k0; i++) {
            float *d = y + ((long)h * k0 + i) * Wo;
            if (k1 == 2) {
                const float *a = cols + ((long)i * 2) * plane + (long)h * S1, *b = a + plane;
                dscy_interleave2(a, b, S1, d);
            } else
                for (int j = 0; j < k1; j++) {
                    const float *a = cols + ((long)i * k1 + j) * plane + (long)h * S1;
                    for (int w = 0; w < S1; w++) d[(long)w * k1 + j] = a[w];
                }
        }
}

/* Mean of one plane: 8 float partial sums (vectorisable), added up in double. */
static float dscy_plane_mean(const float *x, long n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j];
    double s = 0.0;
    for (int j = 0; j < 8; j++) s += acc[j];
    for (; i < n; i++) s += x[i];
    return (float)(s / (double)n);
}


/* ---- block copies that avoid glibc's `rep movsb` ----
 * glibc 2.36's memmove uses `rep movsb` for mid-size copies; on this Zen 3 VM that runs 10-15x
 * slower than vector moves when source and destination share their offset within a page, which
 * is the normal case for two large (page-aligned) numpy buffers: a 1.2 MB Concat measured
 * 450-650 us against 40 us with vector moves. Concat, Split and the engine's slot copies use
 * these loops instead. */
#if defined(__SSE2__)
static inline void dscy_copy(void *dst, const void *src, size_t n) {
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_storeu_si128((__m128i *)(d + i), a);
        _mm_storeu_si128((__m128i *)(d + i + 16), b);
        _mm_storeu_si128((__m128i *)(d + i + 32), c);
        _mm_storeu_si128((__m128i *)(d + i + 48), e);
    }
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
    if (i < n) memcpy(d + i, s + i, n - i);
}
#else
static inline void dscy_copy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
#endif

/* outer blocks of `bytes` each: dst + o * dst_stride <- src + o * src_stride */
static inline void dscy_copy_blocks(char *dst, ptrdiff_t dst_stride, const char *src,
                                    ptrdiff_t src_stride, long outer, size_t bytes) {
    for (long o = 0; o < outer; o++) dscy_copy(dst + o * dst_stride, src + o * src_stride, bytes);
}

/* 8-bit max pooling, NHWC: d[c] = max(d[c], s[c]) over one pixel's channels (contiguous loops
 * the compiler vectorises: pmaxub, pmaxsb or its SSE2 compare-and-select) */
static inline void dscy_max_u8(unsigned char *restrict d, const unsigned char *restrict s, long n) {
    for (long i = 0; i < n; i++) d[i] = s[i] > d[i] ? s[i] : d[i];
}
static inline void dscy_max_s8(signed char *restrict d, const signed char *restrict s, long n) {
    for (long i = 0; i < n; i++) d[i] = s[i] > d[i] ? s[i] : d[i];
}

/* One output pixel of an NHWC 8-bit max pool: the max over the window's taps inside the image
 * (x: one image [H][W][C]), the type's lowest value when none is (padding never wins). */
static inline void dscy_maxpool_nhwc8_px(const unsigned char *x, int x_signed, int H, int W,
                                         int C, int iy0, int ix0, int kh, int kw, int dh, int dw,
                                         unsigned char *d) {
    memset(d, x_signed ? 0x80 : 0, (size_t)C);
    for (int i = 0; i < kh; i++) {
        int iy = iy0 + i * dh;
        if (iy < 0 || iy >= H) continue;
        for (int j = 0; j < kw; j++) {
            int ix = ix0 + j * dw;
            if (ix < 0 || ix >= W) continue;
            const unsigned char *s = x + ((long)iy * W + ix) * C;
            if (x_signed) dscy_max_s8((signed char *)d, (const signed char *)s, C);
            else dscy_max_u8(d, s, C);
        }
    }
}

/* One plane of an 8-bit max pool (NCHW: x [H][W], y [Ho][Wo]) in two separable passes, both
 * loops over output columns the compiler vectorises: each input row's max over the kw taps of
 * every output column (h, H x Wo bytes of scratch), then each output row's max over its kh
 * rows. Compared as int8 when x_signed (through the xor with 0x80, unsigned after it); taps
 * outside the image are skipped and a window with no tap inside gives the type's lowest value,
 * as dscy_maxpool_nhwc8_px. */
static void dscy_maxpool_plane8(const unsigned char *x, int x_signed, int H, int W,
                                unsigned char *y, int Ho, int Wo, int kh, int kw, int sh, int sw,
                                int dh, int dw, int pt, int pl, unsigned char *h) {
    const unsigned char f = x_signed ? 0x80 : 0;
    for (int iy = 0; iy < H; iy++) {
        const unsigned char *xr = x + (long)iy * W;
        unsigned char *hr = h + (long)iy * Wo;
        memset(hr, 0, (size_t)Wo);
        for (int j = 0; j < kw; j++) {
            /* output columns whose tap j is inside: 0 <= ox * sw - pl + j * dw < W */
            int off = j * dw - pl;
            int lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
            int hi = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
            if (hi > Wo) hi = Wo;
            if (lo >= hi) continue;
            const unsigned char *xs = xr + ((long)lo * sw + off);   /* column lo's tap */
            if (sw == 1)
                for (int ox = lo; ox < hi; ox++) {
                    unsigned char v = (unsigned char)(xs[ox - lo] ^ f);
                    hr[ox] = v > hr[ox] ? v : hr[ox];
                }
            else
                for (int ox = lo; ox < hi; ox++) {
                    unsigned char v = (unsigned char)(xs[(long)(ox - lo) * sw] ^ f);
                    hr[ox] = v > hr[ox] ? v : hr[ox];
                }
        }
    }
    for (int oy = 0; oy < Ho; oy++) {
        unsigned char *yr = y + (long)oy * Wo;
        memset(yr, 0, (size_t)Wo);
        for (int i = 0; i < kh; i++) {
            int iy = oy * sh - pt + i * dh;
            if (iy < 0 || iy >= H) continue;
            const unsigned char *hr = h + (long)iy * Wo;
            for (int ox = 0; ox < Wo; ox++) yr[ox] = hr[ox] > yr[ox] ? hr[ox] : yr[ox];
        }
        if (f)
            for (int ox = 0; ox < Wo; ox++) yr[ox] ^= f;
    }
}

#endif /* DSCY_POOL_H */
