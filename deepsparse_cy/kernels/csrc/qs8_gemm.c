/* Dense INT8 GEMM: out[M][N] = epilogue(x[M][K] . w[N][K]^T), activations broadcast, weights as
 * vectors over output channels, so the epilogue writes contiguous runs of the tokens-major output.
 * (The amx build, DSCY_AMX, multiplies the same packed quads on AMX tiles instead: amx_gemm.)
 *
 * Blocking: work items = (16-channel panel, block of MB micro-tiles of 6 tokens); K in chunks of
 * KC pairs so the weight micro-panel (KC*64 B = 16 KiB) stays in L1 while the tiles of the item
 * reuse it; partial sums of a K-chunked item live in a small stack buffer. */
#include <time.h>
#include "dscy_common.h"

#define MR DSCY_GEMM_MR
#define NR DSCY_GEMM_NR
#define KC 256      /* k-pairs per K chunk */
#define MB 8        /* micro-tiles per work item (48 tokens) */

/* n bytes widened to int16 */
static inline void widen8(const uint8_t *s, int x_signed, int16_t *d, int n) {
    int k = 0;
#ifdef __AVX2__
    for (; k + 16 <= n; k += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(s + k));
        _mm256_storeu_si256((__m256i *)(d + k), x_signed ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b));
    }
    if (k < n && n >= 16) {   /* the tail as the last 16 (overlapping what is already written) */
        __m128i b = _mm_loadu_si128((const __m128i *)(s + n - 16));
        _mm256_storeu_si256((__m256i *)(d + n - 16), x_signed ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b));
        return;
    }
#endif
    if (x_signed) for (; k < n; k++) d[k] = (int8_t)s[k];
    else for (; k < n; k++) d[k] = s[k];
}

#if DSCY_QUADS
/* Rows r0..r0+7 of one 16-token micro-tile in the quad layout ([Kp/4][16 tokens][4 bytes]: a
 * quad's 16 tokens are one zmm, each token's 4 bytes one broadcast) from nr <= 8 byte rows at
 * src, ld apart (rows past nr and bytes past K zero); x xor xr (0x80 stores s8 as x + 128).
 * Groups of 8 quads by 8x8 transposes of 32-bit lanes; the last group's rows are read with
 * byte masks (nothing past K is touched) and only its quads below Kp / 4 stored. */
static void tile_rows8(uint8_t *d, int r0, const uint8_t *src, ptrdiff_t ld, int nr, int K,
                       int Kp, uint8_t xr) {
    int nq = Kp / 4;
    __m256i flip = _mm256_set1_epi8((char)xr), z = _mm256_setzero_si256();
    for (int q = 0; q < nq; q += 8) {
        int left = K - 4 * q;                         /* bytes of each row from 4q on */
        __mmask32 m = left >= 32 ? 0xFFFFFFFFu : left > 0 ? (__mmask32)((1u << left) - 1) : 0;
        __m256 r[8];
        for (int i = 0; i < 8; i++) {
            __m256i v = z;
            if (i < nr) {
                const uint8_t *p = src + (ptrdiff_t)i * ld + 4 * q;
                v = m == 0xFFFFFFFFu ? _mm256_loadu_si256((const __m256i *)p)
                                     : _mm256_maskz_loadu_epi8(m, p);
                v = _mm256_mask_blend_epi8(m, z, _mm256_xor_si256(v, flip));
            }
            r[i] = _mm256_castsi256_ps(v);
        }
        dscy_tr8x8_ps(r);
        int nj = nq - q < 8 ? nq - q : 8;
        for (int j = 0; j < nj; j++)
            _mm256_storeu_ps((float *)(d + (size_t)(q + j) * 64 + r0 * 4), r[j]);
    }
}
#endif

#if DSCY_AMX
/* One AMX activation row: K bytes of src xor xr, zero up to Kp (a multiple of 64). */
static inline void amx_row(uint8_t *d, const uint8_t *src, int K, int Kp, uint8_t xr) {
    /* d: the row's first 64-byte segment; segments 1024 bytes apart (16 rows of a tile) */
    __m512i flip = _mm512_set1_epi8((char)xr);
    for (int k = 0; k < Kp; k += 64) {
        int left = K - k;
        __mmask64 m = left >= 64 ? ~(__mmask64)0 : left > 0 ? (((__mmask64)1 << left) - 1) : 0;
        __m512i v = _mm512_maskz_loadu_epi8(m, src + k);
        _mm512_store_si512((void *)(d + (size_t)k * 16), _mm512_maskz_mov_epi8(m, _mm512_xor_si512(v, flip)));
    }
}
#endif

#if DSCY_AMX
/* row m (of Mp) of x [M][K] into the amx GEMM's activation tiles (16 rows x 64 bytes each, Kp
 * a multiple of 64); rows past M zero */
static inline void amx_pack_row(const void *x, int x_signed, ptrdiff_t ldx, int M, int K,
                                uint8_t *xp, int Kp, int m) {
    uint8_t *d = xp + (size_t)(m / 16) * 16 * Kp + (m % 16) * 64;
    if (m < M) amx_row(d, (const uint8_t *)x + (ptrdiff_t)m * ldx, K, Kp, x_signed ? 0x80 : 0);
    else amx_row(d, (const uint8_t *)x, 0, Kp, 0);
}
#endif

void dscy_qs8_pack_x_rows(const void *x, int x_signed, ptrdiff_t ldx, int M, int K,
                          int16_t *xp, int Mp, int Kp, int nthreads) {
    int nt = dscy_nthreads(nthreads);
#if DSCY_AMX
    {   /* plain rows, Kp a multiple of 64 */
        #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)M * K > 65536)
        for (int m = 0; m < Mp; m++)
            amx_pack_row(x, x_signed, ldx, M, K, (uint8_t *)xp, Kp, m);
        return;
    }
#endif
#if DSCY_QUADS
    /* xp: micro-tiles of 16 tokens in the quad layout, 8 rows per step */
    uint8_t xr = x_signed ? 0x80 : 0;
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)M * K > 65536)
    for (int g8 = 0; g8 < Mp / 8; g8++) {
        int m = 8 * g8, nr = M - m < 8 ? (M - m > 0 ? M - m : 0) : 8;
        tile_rows8((uint8_t *)xp + (size_t)(m / MR) * MR * Kp, m % MR,
                   (const uint8_t *)x + (ptrdiff_t)(nr ? m : 0) * ldx, ldx, nr, K, Kp, xr);
    }
    return;
#endif
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)M * K > 65536)
    for (int m = 0; m < Mp; m++) {
        int16_t *d = xp + (ptrdiff_t)m * Kp;
        if (m >= M) { memset(d, 0, sizeof(int16_t) * Kp); continue; }
        widen8((const uint8_t *)x + (ptrdiff_t)m * ldx, x_signed, d, K);
        for (int k = K; k < Kp; k++) d[k] = 0;
    }
}

/* im2col row of output pixel (b, oy, ox) widened to int16 into d[K] (dscy_conv_rows' order) */
static inline void conv_row16(const dscy_conv_geom *g, int x_signed, int b, int oy, int ox,
                              int16_t *d) {
    int C = g->C, y0 = oy * g->sh - g->pt, x0 = ox * g->sw - g->pl, KWC = g->KW * C;
    int16_t pad = x_signed ? (int16_t)(int8_t)g->pad : (int16_t)g->pad;
    const uint8_t *xb = g->x + (size_t)b * g->H * g->W * C;
    int whole = x0 >= 0 && x0 + (g->KW - 1) * g->dw < g->W && g->dw == 1;
    for (int ky = 0; ky < g->KH; ky++, d += KWC) {
        int iy = y0 + ky * g->dh;
        if (iy < 0 || iy >= g->H) { for (int k = 0; k < KWC; k++) d[k] = pad; continue; }
        const uint8_t *row = xb + (size_t)iy * g->W * C;
        if (whole) { widen8(row + (size_t)x0 * C, x_signed, d, KWC); continue; }
        for (int kx = 0; kx < g->KW; kx++) {
            int ix = x0 + kx * g->dw;
            if (ix < 0 || ix >= g->W) for (int c = 0; c < C; c++) d[kx * C + c] = pad;
            else widen8(row + (size_t)ix * C, x_signed, d + kx * C, C);
        }
    }
}

#if DSCY_QUADS
DSCY_THREAD_BUFFER(gather_buffer)   /* the calling thread's gathered conv rows (bytes, in floats) */
#endif

int dscy_qs8_pack_conv_rows(const dscy_conv_geom *g, int x_signed, int16_t *xp, int Mp, int Kp,
                            int nthreads) {
    int M = g->B * g->Ho * g->Wo, K = g->KH * g->KW * g->C;
    int nt = dscy_nthreads(nthreads);
    if ((long)M * K <= 65536) nt = 1;
#if DSCY_QUADS
    /* 8 rows at a time gathered as bytes into the thread's buffer (dscy_conv_rows writes up to
     * 32 bytes past a row), then transposed into the micro-tile (amx build: copied as rows of
     * the 1 KiB tiles) */
    uint8_t xr = x_signed ? 0x80 : 0;
    int fail = 0, G = Mp / 8;
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, T = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(); T = omp_get_num_threads();
#endif
        uint8_t *rowb = (uint8_t *)gather_buffer(((size_t)8 * K + 32 + 3) / 4);
        if (!rowb) {
            #pragma omp atomic write
            fail = 1;
        }
        for (int g8 = (int)((long)G * tid / T); rowb && g8 < (int)((long)G * (tid + 1) / T); g8++) {
            int m = 8 * g8, nr = M - m < 8 ? (M - m > 0 ? M - m : 0) : 8;
            if (nr) dscy_conv_rows(g, m, nr, rowb);
#if DSCY_AMX
            for (int i = 0; i < 8; i++) {
                uint8_t *d = (uint8_t *)xp + (size_t)((m + i) / 16) * 16 * Kp + ((m + i) % 16) * 64;
                if (i < nr) amx_row(d, rowb + (size_t)i * K, K, Kp, xr);
                else amx_row(d, rowb, 0, Kp, 0);
            }
#else
            tile_rows8((uint8_t *)xp + (size_t)(m / MR) * MR * Kp, m % MR, rowb, K, nr, K, Kp, xr);
#endif
        }
    }
    return fail ? -1 : 0;
#endif
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, T = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(); T = omp_get_num_threads();
#endif
        int m0 = (int)((long)Mp * tid / T), m1 = (int)((long)Mp * (tid + 1) / T);
        /* the pixel of row m0, then stepped along the rows: no divisions per row */
        int hw = g->Ho * g->Wo, mm = m0 < M ? m0 : M;
        int b = mm / hw, oy = (mm % hw) / g->Wo, ox = mm % g->Wo;
        /* narrow segments (C < 16, an RGB stem's 3 bytes) would widen element by element: the
         * rows are gathered as bytes first (dscy_conv_rows, 8 rows per call: one row per call
         * spent three divisions per row finding its pixel) and widened in one run each */
        uint8_t rowb[8 * 2048 + 32];      /* + dscy_conv_rows' slack */
        int bytes_first = g->C < 16 && K <= 2048;
        for (int m = m0; m < m1; m++) {
            int16_t *d = xp + (ptrdiff_t)m * Kp;
            if (m >= M) { memset(d, 0, sizeof(int16_t) * Kp); continue; }
            if (bytes_first) {
                int nr = m1 - m < 8 ? m1 - m : 8;
                if (M - m < nr) nr = M - m;
                dscy_conv_rows(g, m, nr, rowb);
                for (int i = 0; i < nr; i++) {
                    int16_t *di = xp + (ptrdiff_t)(m + i) * Kp;
                    widen8(rowb + (size_t)i * K, x_signed, di, K);
                    for (int k = K; k < Kp; k++) di[k] = 0;
                }
                m += nr - 1;
                continue;
            }
            conv_row16(g, x_signed, b, oy, ox, d);
            for (int k = K; k < Kp; k++) d[k] = 0;
            if (++ox == g->Wo) { ox = 0; if (++oy == g->Ho) { oy = 0; b++; } }
        }
    }
    return 0;
}

#ifdef __AVX2__
/* the table offsets (n0 + lane) * 256 of a tile's 16 channels; lanes past nn read channel n0's */
static inline void table_rows(int n0, int nn, __m256i *row0, __m256i *row1) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i keep0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nn), lane);
    __m256i keep1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nn - 8), lane);
    *row0 = _mm256_add_epi32(_mm256_set1_epi32(n0 * 256),
                             _mm256_and_si256(_mm256_slli_epi32(lane, 8), keep0));
    *row1 = _mm256_add_epi32(_mm256_set1_epi32(n0 * 256),
        _mm256_and_si256(_mm256_slli_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(8)), 8), keep1));
}

/* One row of a tile's 16 output lanes (v0: channels n0..n0+7, v1: n0+8..n0+15; 32-bit lanes of
 * out_type, 8-bit ones already saturated so the packs only narrow) at element offset o of out;
 * only the first nn lanes (a partial last panel). */
static inline void store_row16(void *out, ptrdiff_t o, __m256i v0, __m256i v1, int nn,
                               int out_type) {
    int32_t tmp[NR] __attribute__((aligned(32)));
    if (out_type < DSCY_OUT_U8) {
        int32_t *dst = (int32_t *)out + o;     /* float bits or int32: 4 bytes */
        if (nn == NR) {
            _mm256_storeu_si256((__m256i *)dst, v0);
            _mm256_storeu_si256((__m256i *)(dst + 8), v1);
        } else {
            _mm256_store_si256((__m256i *)tmp, v0);
            _mm256_store_si256((__m256i *)(tmp + 8), v1);
            memcpy(dst, tmp, sizeof(int32_t) * nn);
        }
        return;
    }
    __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
    __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
    __m128i bb = out_type == DSCY_OUT_U8 ? _mm_packus_epi16(lo, hi) : _mm_packs_epi16(lo, hi);
    if (nn == NR) _mm_storeu_si128((__m128i *)((uint8_t *)out + o), bb);
    else {
        _mm_store_si128((__m128i *)tmp, bb);
        memcpy((uint8_t *)out + o, tmp, nn);
    }
}

/* A tile's 16 channels' epilogue parameters as vectors (lanes 0-7, 8-15): bias, scale, mid
 * scale and bias (zero without a mid step) and, with rows, the table offsets; a partial panel's
 * lanes past nn padded with zeros. */
typedef struct { __m256i b[2], row[2]; __m256 s[2], ma[2], mb[2]; } tile_par;

static inline void tile_par_load(const dscy_epilogue *ep, int n0, int nn, int rows, tile_par *p) {
    int32_t pb[NR] __attribute__((aligned(32)));
    float ps[NR] __attribute__((aligned(32))), pma[NR] __attribute__((aligned(32))),
          pmb[NR] __attribute__((aligned(32)));
    const int32_t *bias = ep->bias + n0;
    const float *scale = ep->scale + n0, *mscale = ep->mid_scale, *mbias = ep->mid_bias;
    int mid = ep->mid_type != 0;
    if (mid) { mscale += n0; mbias += n0; }
    if (nn < NR) {
        for (int j = 0; j < NR; j++) {
            pb[j] = j < nn ? bias[j] : 0;
            ps[j] = j < nn && ep->out_type != DSCY_OUT_I32 ? scale[j] : 0.0f;
            pma[j] = j < nn && mid ? mscale[j] : 0.0f;
            pmb[j] = j < nn && mid ? mbias[j] : 0.0f;
        }
        bias = pb; scale = ps; mscale = pma; mbias = pmb;
    }
    for (int h = 0; h < 2; h++) {
        p->b[h] = _mm256_loadu_si256((const __m256i *)(bias + 8 * h));
        p->s[h] = _mm256_loadu_ps(scale + 8 * h);
        p->ma[h] = mid ? _mm256_loadu_ps(mscale + 8 * h) : _mm256_setzero_ps();
        p->mb[h] = mid ? _mm256_loadu_ps(mbias + 8 * h) : _mm256_setzero_ps();
    }
    if (rows) table_rows(n0, nn, &p->row[0], &p->row[1]);
    else p->row[0] = p->row[1] = _mm256_setzero_si256();
}
#endif

/* Store one finished micro-tile (rows m0..m0+mr-1, channels n0..n0+15) through the epilogue.
 * c: int32 [MR][NR] accumulators (without bias). A partial panel (N - n0 < 16 channels, the last
 * one of a layer whose N is not a multiple of 16) runs the same vector epilogue on parameters
 * padded with zeros and stores only its nn lanes; with a residual it takes the scalar path. */
static void store_tile(const dscy_epilogue *ep, const int32_t *c, int m0, int mr, int n0, int N) {
    int nn = N - n0 < NR ? N - n0 : NR;
#ifdef __AVX2__
    if (nn == NR || !ep->res_type) {
        tile_par p;
        tile_par_load(ep, n0, nn, 1, &p);
        for (int r = 0; r < mr; r++) {
            __m256i a0 = _mm256_loadu_si256((const __m256i *)(c + r * NR));
            __m256i a1 = _mm256_loadu_si256((const __m256i *)(c + r * NR + 8));
            ptrdiff_t o = (ptrdiff_t)(m0 + r) * ep->ldo + n0;
            ptrdiff_t ro = (ptrdiff_t)(m0 + r) * ep->ldr + n0;
            __m256i v0 = dscy_ep_lanes8(ep, a0, p.b[0], p.s[0], p.ma[0], p.mb[0], p.row[0], ro);
            __m256i v1 = dscy_ep_lanes8(ep, a1, p.b[1], p.s[1], p.ma[1], p.mb[1], p.row[1], ro + 8);
            store_row16(ep->out, o, v0, v1, nn, ep->out_type);
        }
        return;
    }
#endif
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nn; j++) dscy_ep_store1(ep, c[r * NR + j], m0 + r, n0 + j);
}

#if DSCY_QUADS
/* The table epilogue (kind LUT) of a tile whose channels share one table (k->lut_shared: its row
 * 0 serves them all) by byte permutes: 4 rows at a time, their 64 mid values (the gather path's
 * indices) narrowed to bytes, vpermi2b on the table's halves and a blend by the index's top bit,
 * each row's bytes stored under keep. The gather path loads 16 table entries per row; on the
 * quantized YOLOv8n, whose SiLU tables are per tensor, those gathers were ~10% of a run. Bit for
 * bit the gather path. */
static __attribute__((noinline, target("avx512vbmi"))) void tile_lut_shared_vbmi(
        const dscy_ek_consts *k, const int32_t *c, int mr, __m512i zb, __m512 zs, uint8_t *ob,
        ptrdiff_t ldb, __mmask16 keep) {
    __m512i tt[4];
    for (int q = 0; q < 4; q++) tt[q] = _mm512_loadu_si512(k->lut + 64 * q);
    for (int r0 = 0; r0 < mr; r0 += 4) {
        __m512i ci[4];                      /* rows r0 .. r0 + 3, 16 channels each */
        for (int j = 0; j < 4; j++)
            ci[j] = r0 + j < mr ? dscy_lut_index16(k, _mm512_mul_ps(_mm512_cvtepi32_ps(
                        _mm512_add_epi32(_mm512_loadu_si512(c + (r0 + j) * NR), zb)), zs))
                                : _mm512_setzero_si512();
        __m512i r = dscy_lut64_vbmi(tt, ci);
        uint8_t *o = ob + (ptrdiff_t)r0 * ldb;
        _mm_mask_storeu_epi8(o, keep, _mm512_castsi512_si128(r));
        if (r0 + 1 < mr) _mm_mask_storeu_epi8(o + ldb, keep, _mm512_extracti32x4_epi32(r, 1));
        if (r0 + 2 < mr) _mm_mask_storeu_epi8(o + 2 * ldb, keep, _mm512_extracti32x4_epi32(r, 2));
        if (r0 + 3 < mr) _mm_mask_storeu_epi8(o + 3 * ldb, keep, _mm512_extracti32x4_epi32(r, 3));
    }
}

/* v[0..15]: a 16 x 16 matrix of dwords, one row per vector; transposed in place */
static inline __attribute__((always_inline)) void tr16_epi32(__m512i v[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {   /* u[i + j], lane L: rows i..i+3 of column 4L + j */
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        __m512i x0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), y0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD);
        __m512i x1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88), y1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xDD);
        v[j] = _mm512_shuffle_i32x4(x0, x1, 0x88);
        v[8 + j] = _mm512_shuffle_i32x4(x0, x1, 0xDD);
        v[4 + j] = _mm512_shuffle_i32x4(y0, y1, 0x88);
        v[12 + j] = _mm512_shuffle_i32x4(y0, y1, 0xDD);
    }
}

/* The table epilogue (kind LUT) of up to 4 token tiles of one panel whose channels have tables
 * of their own, by byte permutes instead of a gather per row (16 table lines a row; on a BERT
 * FFN's GELU table, [3072, 256], they made its first GEMM ~40% slower than with a plain
 * requantization). The 64 rows' table indices (the gather path's) are narrowed to bytes and
 * transposed to one vector per channel (64 rows), looked up in that channel's 256 bytes by
 * vpermi2b on its halves and a blend by the index's top bit, transposed back and stored a row
 * at a time under keep. Tiles c[i] == NULL and rows at or past M are not stored. Bit for bit
 * the gather path. */
static __attribute__((noinline, target("avx512vbmi"))) void tile4_lut_vbmi(
        const dscy_ek_consts *k, const dscy_epilogue *ep, const int32_t *const c[4], int m0,
        int M, int n0, int N) {
    int nn = N - n0 < NR ? N - n0 : NR;
    tile_par p;
    tile_par_load(ep, n0, nn, 0, &p);
    __m512i zb = _mm512_inserti64x4(_mm512_castsi256_si512(p.b[0]), p.b[1], 1);
    __m512 zs = _mm512_insertf32x8(_mm512_castps256_ps512(p.s[0]), p.s[1], 1);
    /* within each 16-byte lane, a 4 x 4 byte transpose: (row rr, channel cc) <-> (cc, rr) */
    const __m512i tr4 = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
                                                             14, 3, 7, 11, 15));
    __m512i v[16];
    for (int g = 0; g < 16; g++) {      /* rows 4g .. 4g + 3 */
        const int32_t *ct = c[g >> 2];
        __m512i ci[4];
        for (int j = 0; j < 4; j++)
            ci[j] = ct ? dscy_lut_index16(k, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(
                             _mm512_loadu_si512(ct + ((g & 3) * 4 + j) * NR), zb)), zs))
                       : _mm512_setzero_si512();
        /* lane L: dwords rows 4g .. 4g + 3 of channels 4L .. 4L + 3, then per dword one channel */
        __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(ci[0], ci[1]),
                                        _mm512_packs_epi32(ci[2], ci[3]));
        v[g] = _mm512_shuffle_epi8(b, tr4);
        /* dword 4L + cc: channel 4L + cc, rows 4g .. 4g + 3 */
    }
    tr16_epi32(v);                      /* v[ch]: its 64 rows' indices in row order */
    const uint8_t *lut = k->lut + (size_t)n0 * 256;
    for (int ch = 0; ch < 16; ch++) {
        const uint8_t *t = lut + (size_t)(ch < nn ? ch : 0) * 256;   /* padded lanes: channel 0 */
        __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(t), v[ch], _mm512_loadu_si512(t + 64));
        __m512i hi = _mm512_permutex2var_epi8(_mm512_loadu_si512(t + 128), v[ch],
                                              _mm512_loadu_si512(t + 192));
        v[ch] = _mm512_mask_blend_epi8(_mm512_movepi8_mask(v[ch]), lo, hi);
    }
    tr16_epi32(v);                      /* v[g] dword ch: channel ch, rows 4g .. 4g + 3 */
    /* byte 16 rr + ch of row 4g + rr from byte 4 ch + rr */
    const __m512i back = _mm512_set_epi8(
        63, 59, 55, 51, 47, 43, 39, 35, 31, 27, 23, 19, 15, 11, 7, 3,
        62, 58, 54, 50, 46, 42, 38, 34, 30, 26, 22, 18, 14, 10, 6, 2,
        61, 57, 53, 49, 45, 41, 37, 33, 29, 25, 21, 17, 13, 9, 5, 1,
        60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0);
    __mmask16 keep = (__mmask16)(nn == NR ? 0xFFFF : (1u << nn) - 1);
    const ptrdiff_t ldo = ep->ldo;
    uint8_t *ob = (uint8_t *)ep->out + (ptrdiff_t)m0 * ldo + n0;
    for (int g = 0; g < 16; g++) {
        if (!c[g >> 2]) continue;
        __m512i r = _mm512_permutexvar_epi8(back, v[g]);
        for (int rr = 0; rr < 4; rr++) {
            int row = 4 * g + rr;
            if (m0 + row >= M) break;
            __m128i o = rr == 0 ? _mm512_castsi512_si128(r) : rr == 1 ? _mm512_extracti32x4_epi32(r, 1)
                      : rr == 2 ? _mm512_extracti32x4_epi32(r, 2) : _mm512_extracti32x4_epi32(r, 3);
            _mm_mask_storeu_epi8(ob + (ptrdiff_t)row * ldo, keep, o);
        }
    }
}
#endif

#ifdef __AVX2__
/* store_tile with the epilogue of kind EK (dscy_ep_kind, not GEN; PRE, a residual, on the
 * 16-lane builds only, full panels, no GELU) on constants read once per call: on short-K layers (a 1x1 conv of 8 or 32 channels, an RGB stem) the generic
 * epilogue was two thirds of the GEMM's time. Bit for bit store_tile. */
static inline __attribute__((always_inline)) void store_tile_ek(
        const int EK, const dscy_ek_consts *k, const dscy_epilogue *ep, const int32_t *c, int m0,
        int mr, int n0, int N) {
    int nn = N - n0 < NR ? N - n0 : NR;
    tile_par p;
    tile_par_load(ep, n0, nn, EK == DSCY_EK_LUT, &p);
#if DSCY_QUADS
    {   /* the 16 channels as one zmm per row (dscy_ek16, bit for bit dscy_ek8); 8-bit values
         * already in range, narrowed by vpmovdb; a partial panel stored under a mask */
#define Z2I(v) _mm512_inserti64x4(_mm512_castsi256_si512((v)[0]), (v)[1], 1)
#define Z2F(v) _mm512_insertf32x8(_mm512_castps256_ps512((v)[0]), (v)[1], 1)
        __m512i zb = Z2I(p.b), zrow = Z2I(p.row);
        __m512 zs = Z2F(p.s), zma = Z2F(p.ma), zmb = Z2F(p.mb);
#undef Z2I
#undef Z2F
        __mmask16 keep = (__mmask16)(nn == NR ? 0xFFFF : (1u << nn) - 1);
        /* the constants and output pointer in locals: the stores through the output pointer
         * could alias *k / *ep, which made the compiler reload every field on every row */
        const dscy_ek_consts kl = *k;
        const ptrdiff_t ldo = ep->ldo;
        const int q8 = ep->out_type >= DSCY_OUT_U8;
        uint8_t *ob = (uint8_t *)ep->out + ((ptrdiff_t)m0 * ldo + n0) * (q8 ? 1 : 4);
        const ptrdiff_t ldb = ldo * (q8 ? 1 : 4);
        if (EK == DSCY_EK_LUT && kl.lut_shared) {
            tile_lut_shared_vbmi(&kl, c, mr, zb, zs, ob, ldb, keep);
            return;
        }
        /* a residual (kind PRE): its type, rows and 8-bit dequantization, read once */
        const int rt = ep->res_type;
        const void *res = ep->res;
        const ptrdiff_t ldr = ep->ldr;
        const __m512i rzp = _mm512_set1_epi32(EK == DSCY_EK_PRE ? ep->res_zp : 0);
        const __m512 rsc = _mm512_set1_ps(EK == DSCY_EK_PRE ? ep->res_scale : 0.0f);
        for (int r = 0; r < mr; r++) {
            __m512i v = dscy_ek16(EK, &kl, _mm512_loadu_si512(c + r * NR), zb, zs, zma, zmb, zrow);
            if (EK == DSCY_EK_PRE)
                v = dscy_ek16_res(&kl, _mm512_castsi512_ps(v),
                                  dscy_res16(rt, res, (ptrdiff_t)(m0 + r) * ldr + n0, rzp, rsc), q8);
            if (q8) _mm_mask_storeu_epi8(ob + r * ldb, keep, _mm512_cvtepi32_epi8(v));
            else _mm512_mask_storeu_epi32(ob + r * ldb, keep, v);
        }
        return;
    }
#endif
    for (int r = 0; r < mr; r++) {
        __m256i v0 = dscy_ek8(EK, k, _mm256_loadu_si256((const __m256i *)(c + r * NR)),
                              p.b[0], p.s[0], p.ma[0], p.mb[0], p.row[0]);
        __m256i v1 = dscy_ek8(EK, k, _mm256_loadu_si256((const __m256i *)(c + r * NR + 8)),
                              p.b[1], p.s[1], p.ma[1], p.mb[1], p.row[1]);
        store_row16(ep->out, (ptrdiff_t)(m0 + r) * ep->ldo + n0, v0, v1, nn, ep->out_type);
    }
}

/* store_tile for any kind: the specialized stores, GEN and PRE the generic one */
static void store_tile_any(int ek, const dscy_ek_consts *k, const dscy_epilogue *ep,
                           const int32_t *c, int m0, int mr, int n0, int N) {
    switch (ek) {
    case DSCY_EK_I32: store_tile_ek(DSCY_EK_I32, k, ep, c, m0, mr, n0, N); return;
    case DSCY_EK_F32: store_tile_ek(DSCY_EK_F32, k, ep, c, m0, mr, n0, N); return;
    case DSCY_EK_Q8: store_tile_ek(DSCY_EK_Q8, k, ep, c, m0, mr, n0, N); return;
    case DSCY_EK_LUT: store_tile_ek(DSCY_EK_LUT, k, ep, c, m0, mr, n0, N); return;
#if DSCY_QUADS
    case DSCY_EK_PRE:   /* a residual: the 16-lane path on a full panel without GELU */
        if (N - n0 >= NR && ep->act != DSCY_ACT_GELU) {
            store_tile_ek(DSCY_EK_PRE, k, ep, c, m0, mr, n0, N);
            return;
        }
        store_tile(ep, c, m0, mr, n0, N); return;
#endif
    default: store_tile(ep, c, m0, mr, n0, N); return;
    }
}

/* 6x16 micro-kernel over kc k-pairs. x: row 0 of the tile at the chunk's first k-pair (int32 units
 * = one k-pair of int16), ldx in pairs; w: panel at the chunk's first pair. c in/out when !first. */
static inline void ukernel(const int32_t *x, ptrdiff_t ldx, const int16_t *w, int kc,
                           int32_t *c, int first) {
    __m256i c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (first) {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_si256();
    } else {
#define LD(r) c##r##0 = _mm256_loadu_si256((const __m256i *)(c + r * NR)); \
              c##r##1 = _mm256_loadu_si256((const __m256i *)(c + r * NR + 8));
        LD(0) LD(1) LD(2) LD(3) LD(4) LD(5)
#undef LD
    }
    for (int p = 0; p < kc; p++) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + p * 2 * NR));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + p * 2 * NR + 16));
        __m256i b;
#define STEP(r) b = _mm256_set1_epi32(x[r * ldx + p]); \
        c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(b, w0)); \
        c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(b, w1));
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5)
#undef STEP
    }
#define ST(r) _mm256_storeu_si256((__m256i *)(c + r * NR), c##r##0); \
              _mm256_storeu_si256((__m256i *)(c + r * NR + 8), c##r##1);
    ST(0) ST(1) ST(2) ST(3) ST(4) ST(5)
#undef ST
}

#if DSCY_QUADS
/* 16x16 micro-kernel over kc k-quads: x the tile at the chunk's first quad (64 bytes per quad:
 * 16 tokens x 4 bytes), w the panel's quads at the chunk's first one (64 bytes each: 16 channels
 * x 4 k); one accumulator zmm per token, every broadcast at a constant offset of one pointer. */
static inline void ukernel_q(const uint8_t *x, const int8_t *w, int kc, int32_t *c, int first) {
    __m512i acc[MR];
    #pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
        acc[r] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(c + r * NR);
    for (int q = 0; q < kc; q++) {
        __m512i wv = _mm512_loadu_si512(w + (size_t)q * 64);
        const uint8_t *xq = x + (size_t)q * 64;
        #pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            int32_t xv;
            memcpy(&xv, xq + 4 * r, 4);
            acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(xv), wv);
        }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < MR; r++) _mm512_storeu_si512(c + r * NR, acc[r]);
}
#endif
#else
static inline void ukernel(const int32_t *x, ptrdiff_t ldx, const int16_t *w, int kc,
                           int32_t *c, int first) {
    int32_t acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) acc[r][j] = first ? 0 : c[r * NR + j];
    /* Each k-pair read as its int32 and split (little-endian: the even k in the low half).
     * The earlier form, the two int16 read through a cast pointer, compiled (gcc 12, -O3, this
     * generic build) to row loads reaching past the tile's 6 rows: on the last tile past the
     * packed activations, a segfault when that buffer ended at a page boundary (seen in a
     * Python thread: gdb showed tile 21 of 22 reading at row 8). */
    const int32_t *xr[MR];
    for (int r = 0; r < MR; r++) xr[r] = x + r * ldx;
    for (int p = 0; p < kc; p++) {
        const int16_t *wp = w + p * 2 * NR;
        for (int r = 0; r < MR; r++) {
            uint32_t v = (uint32_t)xr[r][p];
            int32_t x0 = (int16_t)(uint16_t)(v & 0xFFFFu), x1 = (int16_t)(uint16_t)(v >> 16);
            for (int j = 0; j < NR; j++) acc[r][j] += x0 * wp[2 * j] + x1 * wp[2 * j + 1];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) c[r * NR + j] = acc[r][j];
}
#endif

#if DSCY_AMX

#define AMX_KC 192   /* k-quads per K chunk: a panel pair's 2 x 192 x 64 B = 24 KiB stay in L1 */
#define AMX_MB 8     /* 16-token tiles per work item */
#ifndef AMX_PF
#define AMX_PF 64    /* weight prefetch distance in k-quads (0: none) */
#endif

/* The epilogue of finished tiles, run between the next tiles' multiplies: a tdpbusd keeps the
 * tile unit busy for 16 cycles while the core's vector ports are free, and the epilogue after
 * an item's multiplies left the tile unit idle. A thread's pending tiles (at most one token-tile
 * pair x panel pair) go out 4 rows at a time, a few slices per 16-quad step of the next tiles,
 * and are finished before those tiles' sums are stored (with ntl <= 2 they reuse the pending
 * tiles' cbuf slots). Not for table epilogues: their gathers slowed the multiplies they ran
 * between (BERT-base: 8% slower), and the per-channel ones go 4 tiles at a time
 * (tile4_lut_vbmi) after the item. */
typedef struct {
    const int *ek; const dscy_ek_consts *kc; const dscy_epilogue *ep; int seg, M;
    int t0, p0;                             /* the item being multiplied */
    int n, tile, row;                       /* pending tiles, the next slice's tile and row */
    const int32_t *c[4]; int m0[4], mr[4], n0[4], e[4];
} amx_pend;

/* item tile t of panel h */
static inline void amx_pend_add(amx_pend *pd, const int32_t *c, int t, int h) {
    int m0 = (pd->t0 + t) * MR, mr = pd->M - m0 < MR ? pd->M - m0 : MR;
    if (mr <= 0) return;
    int n0 = (pd->p0 + h) * NR, e = n0 / pd->seg, i = pd->n++;
    pd->c[i] = c; pd->m0[i] = m0; pd->mr[i] = mr; pd->n0[i] = n0 - e * pd->seg; pd->e[i] = e;
}

/* up to `slices` slices of 4 rows of the pending tiles */
static inline void amx_pend_run(amx_pend *pd, int slices) {
    for (; slices > 0 && pd->tile < pd->n; slices--) {
        int i = pd->tile, r = pd->row, e = pd->e[i];
        int nr = pd->mr[i] - r < 4 ? pd->mr[i] - r : 4;
        store_tile_any(pd->ek[e], &pd->kc[e], &pd->ep[e], pd->c[i] + r * NR, pd->m0[i] + r, nr,
                       pd->n0[i], pd->seg);
        if ((pd->row = r + 4) >= pd->mr[i]) { pd->tile++; pd->row = 0; }
    }
    if (pd->tile >= pd->n) pd->n = pd->tile = pd->row = 0;
}

/* One work item's multiplies: ntl token tiles of activations a (tile i at a + i * MR * Kp)
 * against the panel pair at w0 / w1 (w1 only with n2), over K in chunks of AMX_KC quads, the
 * partial sums parked in cbuf between chunks. Tiles 0-3: the int32 accumulators of 2 token
 * tiles x 2 panels (16 x 16 each), 4-5: 16 tokens x 64 bytes of activations, 6-7: 16 quads x 16
 * channels x 4 bytes of a panel (its packed layout as it is). With pd, the final sums' epilogue
 * is left pending (amx_pend) and the earlier tiles' runs between the multiplies. */
static inline __attribute__((always_inline)) void amx_item(const uint8_t *a, int ntl, int Kq,
        int Kp, const int8_t *w0, const int8_t *w1, int n2, int32_t cbuf[AMX_MB][2][MR * NR],
        const int8_t *nw, amx_pend *pd) {
    for (int q0 = 0; q0 < Kq; q0 += AMX_KC) {
        int q1 = q0 + AMX_KC < Kq ? q0 + AMX_KC : Kq;
        /* pending slices per 16-quad step: all 16 of a tile pair x panel pair within the steps */
        int steps = (q1 - q0 + 15) / 16, per = (16 + steps - 1) / steps;
        for (int t = 0; t < ntl; t += 2) {
            int m2 = t + 1 < ntl;
            int32_t *c00 = cbuf[t][0], *c01 = cbuf[t][1];
            int32_t *c10 = m2 ? cbuf[t + 1][0] : c00, *c11 = m2 ? cbuf[t + 1][1] : c01;
            if (q0 == 0) {
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            } else {
                _tile_loadd(0, c00, 64);
                if (n2) _tile_loadd(1, c01, 64);
                if (m2) { _tile_loadd(2, c10, 64); if (n2) _tile_loadd(3, c11, 64); }
            }
            const uint8_t *at = a + (size_t)t * MR * Kp;
            for (int q = q0; q < q1; q += 16) {
                if (t == 0 && AMX_PF) {   /* the panels' lines AMX_PF quads on, into L1 */
                    const char *p0 = (const char *)(w0 + (size_t)(q + AMX_PF) * 64);
                    const char *p1 = (const char *)(w1 + (size_t)(q + AMX_PF) * 64);
                    for (int l = 0; l < 16; l++) {
                        _mm_prefetch(p0 + 64 * l, _MM_HINT_T0);
                        if (n2) _mm_prefetch(p1 + 64 * l, _MM_HINT_T0);
                    }
                }
                if (t == 0 && nw) {       /* the next item's pair, at the same k, into L2 */
                    const char *p0 = (const char *)(nw + (size_t)q * 64);
                    const char *p1 = (const char *)(nw + (size_t)(Kq + q) * 64);
                    for (int l = 0; l < 16; l++) {
                        _mm_prefetch(p0 + 64 * l, _MM_HINT_T1);
                        _mm_prefetch(p1 + 64 * l, _MM_HINT_T1);
                    }
                }
                _tile_loadd(4, at + 64 * q, 64);
                _tile_loadd(6, w0 + (size_t)q * 64, 64);
                _tile_dpbusd(0, 4, 6);
                if (n2) { _tile_loadd(7, w1 + (size_t)q * 64, 64); _tile_dpbusd(1, 4, 7); }
                if (m2) {
                    _tile_loadd(5, at + (size_t)MR * Kp + 64 * q, 64);
                    _tile_dpbusd(2, 5, 6);
                    if (n2) _tile_dpbusd(3, 5, 7);
                }
                if (pd && pd->n) amx_pend_run(pd, per);
            }
            if (pd && pd->n) amx_pend_run(pd, 1 << 30);
            _tile_stored(0, c00, 64);
            if (n2) _tile_stored(1, c01, 64);
            if (m2) { _tile_stored(2, c10, 64); if (n2) _tile_stored(3, c11, 64); }
            if (pd && q1 == Kq) {     /* final sums: their epilogue runs during the next tiles */
                amx_pend_add(pd, c00, t, 0);
                if (n2) amx_pend_add(pd, c01, t, 1);
                if (m2) { amx_pend_add(pd, c10, t + 1, 0); if (n2) amx_pend_add(pd, c11, t + 1, 1); }
            }
        }
    }
}

/* The item's epilogue: token tiles t0..t1 of panel pair p0 from cbuf, tile by tile, or 4 tiles
 * at a time for a panel with a table per channel (tile4_lut_vbmi, where the CPU has VBMI). */
static inline void amx_item_store(const int *ek, const dscy_ek_consts *kc,
                                  const dscy_epilogue *ep, int seg, int32_t cbuf[AMX_MB][2][MR * NR],
                                  int t0, int t1, int M, int p0, int n2) {
    for (int h = 0; h < 1 + n2; h++) {
        int n0 = (p0 + h) * NR, e = n0 / seg;     /* the part holding the panel */
        if (ek[e] == DSCY_EK_LUT && kc[e].vbmi && !kc[e].lut_shared) {
            for (int t = t0; t < t1 && t * MR < M; t += 4) {
                const int32_t *c4[4];
                for (int i = 0; i < 4; i++)
                    c4[i] = t + i < t1 && (t + i) * MR < M ? cbuf[t + i - t0][h] : NULL;
                tile4_lut_vbmi(&kc[e], &ep[e], c4, t * MR, M, n0 - e * seg, seg);
            }
            continue;
        }
        for (int t = t0; t < t1; t++) {
            int m0 = t * MR, mr = M - m0 < MR ? M - m0 : MR;
            if (mr <= 0) continue;
            store_tile_any(ek[e], &kc[e], &ep[e], cbuf[t - t0][h], m0, mr, n0 - e * seg, seg);
        }
    }
}

/* Work items: (panel pair, up to AMX_MB token tiles), each multiplied by amx_item; then the
 * same epilogue as the vpdpbusd kernel, tile by tile. */
static void amx_gemm(const uint8_t *xp, int M, int Mp, int Kp, const int8_t *wp, int N, int Np,
                     const dscy_epilogue *ep, int nep, int seg, int nthreads,
                     const void *x, int x_signed, ptrdiff_t ldx, int K) {
    int Kq = Kp / 4, npanel = Np / NR, npair = (npanel + 1) / 2, mtiles = Mp / MR;
    int mblocks = (mtiles + AMX_MB - 1) / AMX_MB;
    long items = (long)npair * mblocks;
    int nt = dscy_nthreads(nthreads);
    if (nt > items) nt = (int)items;
    int mb_major = (size_t)Mp * Kp > (512u << 10);
    int ek[DSCY_GEMM_PARTS_MAX];
    dscy_ek_consts kc[DSCY_GEMM_PARTS_MAX];
    (void)dscy_ek_init_parts(ep, 0, nep - 1, ek, kc);
    int pend = 1;                /* the epilogue between the multiplies, except for tables */
    for (int e = 0; e < nep; e++)
        if (ek[e] == DSCY_EK_LUT) pend = 0;
    DSCY_CLAIMS(next, nt);
    dscy_claims_init(next, items, nt);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, k = 0;      /* nt shares: any share without its thread is claimed by others */
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        if (x) {      /* x's rows into the tiles' layout (dscy_qs8_pack_x_rows), a share each */
            int T = 1;
#ifdef _OPENMP
            T = omp_get_num_threads();
#endif
            for (int m = (int)((long)Mp * tid / T); m < (int)((long)Mp * (tid + 1) / T); m++)
                amx_pack_row(x, x_signed, ldx, M, K, (uint8_t *)xp, Kp, m);
            #pragma omp barrier
        }
        dscy_amx_config();
        int32_t cbuf[AMX_MB][2][MR * NR] __attribute__((aligned(64)));
        amx_pend pd;
        memset(&pd, 0, sizeof pd);
        pd.ek = ek; pd.kc = kc; pd.ep = ep; pd.seg = seg; pd.M = M;
        for (long it; (it = dscy_claim(next, items, nt, tid, &k)) >= 0; ) {
            int pair = mb_major ? (int)(it % npair) : (int)(it / mblocks);
            int mb = mb_major ? (int)(it / npair) : (int)(it % mblocks);
            int p0 = 2 * pair, n2 = p0 + 1 < npanel;
            int t0 = mb * AMX_MB, t1 = t0 + AMX_MB < mtiles ? t0 + AMX_MB : mtiles;
            const int8_t *w0 = wp + (size_t)p0 * Kp * NR, *w1 = w0 + (size_t)Kp * NR;
            /* the pair this thread most likely multiplies next (its share's next item) when
             * it is another pair: its weights stream in while this one multiplies. A model's
             * weights come from DRAM (dense INT8 BERT-base: 85 MB a run), and the in-item
             * prefetch above starts each pair's panels cold */
            const int8_t *nw = NULL;
            if (!mb_major && mb == mblocks - 1 && p0 + 2 < npanel)
                nw = wp + (size_t)(p0 + 2) * Kp * NR;
            if (pend) {
                pd.t0 = t0; pd.p0 = p0;
                amx_item(xp + (size_t)t0 * MR * Kp, t1 - t0, Kq, Kp, w0, w1, n2, cbuf, nw, &pd);
            } else {
                amx_item(xp + (size_t)t0 * MR * Kp, t1 - t0, Kq, Kp, w0, w1, n2, cbuf, nw, NULL);
                amx_item_store(ek, kc, ep, seg, cbuf, t0, t1, M, p0, n2);
            }
        }
        if (pend) amx_pend_run(&pd, 1 << 30);
        _tile_release();
    }
}

DSCY_THREAD_BUFFER(amx_conv_buffer)  /* the calling thread's block of conv rows as AMX tiles */

/* A convolution on AMX without its whole im2col matrix: each work item gathers the im2col rows
 * of its own block of token tiles (dscy_conv_rows) into the thread's tiles (at most ~96 KiB, so
 * they stay in L1 / L2 while its panel pairs multiply them) and runs them through amx_item and
 * the epilogue. Packing all rows first wrote Mp x Kp bytes (4.9 MB for a YOLOv8n 16 x 16 x 3 x 3
 * layer at 320 x 320, 2.5x its L2) that the multiplies then read back. Items: (token block,
 * group of panel pairs); the pairs are split into groups only when there are fewer blocks than
 * twice the threads (a small feature map), each such item gathering its block itself. */
int dscy_qs8_conv_amx(const dscy_conv_geom *g, int x_signed, const int16_t *wp16, int N, int Np,
                      int Kp, const dscy_epilogue *ep, int nthreads) {
    const int8_t *wp = (const int8_t *)wp16;
    int K = g->KH * g->KW * g->C, M = g->B * g->Ho * g->Wo;
    int Kq = Kp / 4, npanel = Np / NR, npair = (npanel + 1) / 2, mtiles = (M + MR - 1) / MR;
    int mbt = (96 << 10) / (MR * Kp);
    mbt = mbt < 2 ? 2 : mbt > AMX_MB ? AMX_MB : mbt;
    int mblocks = (mtiles + mbt - 1) / mbt;
    int nt = dscy_nthreads(nthreads);
    int npg = 1;
    if (mblocks < 2 * nt) {
        npg = (2 * nt + mblocks - 1) / mblocks;
        if (npg > npair) npg = npair;
    }
    long items = (long)mblocks * npg;
    if (items < 1) return 0;
    if (nt > items) nt = (int)items;
    int ek[1];
    dscy_ek_consts kc[1];
    (void)dscy_ek_init_parts(ep, 0, 0, ek, kc);
    uint8_t xr = x_signed ? 0x80 : 0;
    DSCY_CLAIMS(next, nt);
    dscy_claims_init(next, items, nt);
    int fail = 0;
    #pragma omp parallel num_threads(nt) if (nt > 1) reduction(|:fail)
    {
        int tid = 0, k = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        /* the block's tiles, then the 8 gathered rows (+ dscy_conv_rows' 32 bytes of slack) */
        uint8_t *xb = (uint8_t *)amx_conv_buffer(((size_t)mbt * MR * Kp + (size_t)8 * K + 32 + 3) / 4);
        if (!xb) fail = 1;
        else {
            uint8_t *rowb = xb + (size_t)mbt * MR * Kp;
            dscy_amx_config();
            int32_t cbuf[AMX_MB][2][MR * NR] __attribute__((aligned(64)));
            for (long it; (it = dscy_claim(next, items, nt, tid, &k)) >= 0; ) {
                int mb = (int)(it / npg), pg = (int)(it % npg);
                int t0 = mb * mbt, t1 = t0 + mbt < mtiles ? t0 + mbt : mtiles;
                int r0 = t0 * MR;
                for (int m = r0; m < t1 * MR; m += 8) {
                    int nr = M - m < 8 ? (M - m > 0 ? M - m : 0) : 8;
                    if (nr) dscy_conv_rows(g, m, nr, rowb);
                    for (int i = 0; i < 8; i++) {
                        uint8_t *d = xb + (size_t)((m - r0 + i) / MR) * MR * Kp + ((m + i) % MR) * 64;
                        if (i < nr) amx_row(d, rowb + (size_t)i * K, K, Kp, xr);
                        else amx_row(d, rowb, 0, Kp, 0);
                    }
                }
                int pa = (int)((long)pg * npair / npg), pb = (int)((long)(pg + 1) * npair / npg);
                for (int pair = pa; pair < pb; pair++) {
                    int p0 = 2 * pair, n2 = p0 + 1 < npanel;
                    const int8_t *w0 = wp + (size_t)p0 * Kp * NR, *w1 = w0 + (size_t)Kp * NR;
                    amx_item(xb, t1 - t0, Kq, Kp, w0, w1, n2, cbuf, NULL, NULL);
                    amx_item_store(ek, kc, ep, N, cbuf, t0, t1, M, p0, n2);
                }
            }
            _tile_release();
        }
    }
    return fail ? -1 : 0;
}

/* A k x k convolution (no dilation along W) on AMX with no im2col rows at all: x is copied once
 * into a padded NHWC buffer (zero-point bytes around it, xor xr), and an activation tile of 16
 * output pixels, for kernel row ky and 64-byte chunk j of its KW * C window, is loaded straight
 * from that buffer with a row stride of sw * C bytes: the tile's rows overlap (pixel x's window
 * starts sw * C bytes after pixel x - 1's). Bytes of a chunk past the window (the next pixels'
 * channels) meet zero weights: wd is the weight laid out per (ky, chunk, panel) as 16 quads x 16
 * channels x 4 bytes (qs8.py PackedQS8.direct), nch chunks of 64 bytes per kernel row.
 * Stride 1: the padded rows are exactly Wo + KW - 1 pixels wide and the tiles run over them as
 * one flat run of virtual pixels v = oy * Wpa + ox of each image (ox >= Wo: computed, not
 * stored), so a small map wastes KW - 1 pixels a row, not the rest of a 16-pixel tile. Other
 * strides: tiles of one output row each. Items: pairs of tiles, each through every panel pair
 * and the usual epilogue (store_tile_any) on its tiles' valid output rows. */
int dscy_qs8_conv_amx_direct(const dscy_conv_geom *g, int x_signed, uint8_t *xpad, long xpad_len,
                             const int8_t *wd, int nch, int N, int Np, const dscy_epilogue *ep,
                             int nthreads) {
    int B = g->B, H = g->H, W = g->W, C = g->C, KH = g->KH, KW = g->KW, sh = g->sh, sw = g->sw,
        dh = g->dh, Ho = g->Ho, Wo = g->Wo;
    int flat = dscy_conv_direct_flat(sh, sw);
    int Hp = (Ho - 1) * sh + (KH - 1) * dh + 1;
    long Wpa = dscy_conv_direct_width(Wo, KW, sh, sw, C, nch);
    if (g->dw != 1 || dscy_conv_direct_len(B, Ho, Wo, KH, KW, sh, sw, dh, C, nch) > xpad_len)
        return -1;
    /* tiles per image: of the flat run (its last valid pixel (Ho - 1) * Wpa + Wo - 1), or per row */
    long ntile = flat ? ((long)(Ho - 1) * Wpa + Wo + MR - 1) / MR : (long)Ho * ((Wo + MR - 1) / MR);
    int nxt = (Wo + MR - 1) / MR;                  /* (per-row tiling) tiles per output row */
    long npr = flat ? (ntile + 1) / 2 : (long)Ho * ((nxt + 1) / 2);   /* tile pairs per image */
    int npanel = Np / NR, npair = (npanel + 1) / 2;
    uint8_t xr = x_signed ? 0x80 : 0, padb = (uint8_t)(g->pad ^ xr);
    long rows = (long)B * Hp, items = (long)B * npr;
    int nt = dscy_nthreads(nthreads);
    if (items < 1) return 0;
    /* the padded copy: image row r - pt (columns u - pl) where inside, else the pad byte; then
     * (stride 1) the last tile's overrun, also the pad byte */
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && rows * Wpa * C > 65536)
    for (long r = 0; r < rows; r++) {
        int b = (int)(r / Hp), iy = (int)(r % Hp) - g->pt;
        uint8_t *d = xpad + (size_t)r * Wpa * C;
        if (iy < 0 || iy >= H) { memset(d, padb, (size_t)Wpa * C); continue; }
        const uint8_t *src = g->x + ((size_t)b * H + iy) * W * C;
        long u0 = g->pl < Wpa ? g->pl : Wpa, u1 = g->pl + W < Wpa ? g->pl + W : Wpa;
        memset(d, padb, (size_t)u0 * C);
        if (xr) for (long i = 0; i < (u1 - u0) * C; i++) d[u0 * C + i] = src[i] ^ xr;
        else memcpy(d + u0 * C, src, (size_t)(u1 - u0) * C);
        memset(d + u1 * C, padb, (size_t)(Wpa - u1) * C);
    }
    {
        long used = rows * Wpa * C;
        if (xpad_len > used) memset(xpad + used, padb, (size_t)(xpad_len - used));
    }
    int ek[1];
    dscy_ek_consts kc[1];
    (void)dscy_ek_init_parts(ep, 0, 0, ek, kc);
    if (nt > items) nt = (int)items;
    DSCY_CLAIMS(next, nt);
    dscy_claims_init(next, items, nt);
    size_t tstride = (size_t)sw * C, rowb = (size_t)Wpa * C;
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, k = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        dscy_amx_config();
        int32_t cbuf[2][2][MR * NR] __attribute__((aligned(64)));
        for (long it; (it = dscy_claim(next, items, nt, tid, &k)) >= 0; ) {
            int b = (int)(it / npr);
            long ip = it % npr;
            const uint8_t *base;
            long v0 = 0;                         /* flat: the first tile's first virtual pixel */
            int oy = 0, x0 = 0, m2;
            if (flat) {
                v0 = 2 * ip * MR;
                m2 = 2 * ip + 1 < ntile;
                base = xpad + (size_t)b * Hp * rowb + (size_t)v0 * C;
            } else {
                int nxp = (nxt + 1) / 2;
                oy = (int)(ip / nxp);
                x0 = (int)(ip % nxp) * 2 * MR;
                m2 = x0 + MR < Wo;
                base = xpad + ((size_t)b * Hp + (size_t)oy * sh) * rowb + (size_t)x0 * tstride;
            }
            for (int pair = 0; pair < npair; pair++) {
                int p0 = 2 * pair, n2 = p0 + 1 < npanel;
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
                for (int ky = 0; ky < KH; ky++) {
                    const uint8_t *a = base + (size_t)ky * dh * rowb;
                    const int8_t *wk = wd + (size_t)ky * nch * npanel * 1024;
                    for (int j = 0; j < nch; j++) {
                        const int8_t *w0 = wk + ((size_t)j * npanel + p0) * 1024;
                        _tile_loadd(4, a + 64 * j, tstride);
                        _tile_loadd(6, w0, 64);
                        _tile_dpbusd(0, 4, 6);
                        if (n2) { _tile_loadd(7, w0 + 1024, 64); _tile_dpbusd(1, 4, 7); }
                        if (m2) {
                            _tile_loadd(5, a + MR * tstride + 64 * j, tstride);
                            _tile_dpbusd(2, 5, 6);
                            if (n2) _tile_dpbusd(3, 5, 7);
                        }
                    }
                }
                _tile_stored(0, cbuf[0][0], 64);
                if (n2) _tile_stored(1, cbuf[0][1], 64);
                if (m2) { _tile_stored(2, cbuf[1][0], 64); if (n2) _tile_stored(3, cbuf[1][1], 64); }
                for (int h = 0; h < 1 + m2; h++) {
                    if (!flat) {
                        int xs = x0 + h * MR, mr = Wo - xs < MR ? Wo - xs : MR;
                        int m0 = (b * Ho + oy) * Wo + xs;
                        for (int q = 0; q < 1 + n2; q++)
                            store_tile_any(ek[0], &kc[0], ep, cbuf[h][q], m0, mr, (p0 + q) * NR, N);
                        continue;
                    }
                    /* the tile's virtual pixels, by runs within one output row */
                    long vt = v0 + (long)h * MR;
                    for (int r = 0; r < MR; ) {
                        long v = vt + r;
                        int y = (int)(v / Wpa), x = (int)(v % Wpa);
                        if (y >= Ho) break;
                        if (x >= Wo) { r += (int)(Wpa - x); continue; }
                        int len = Wo - x < MR - r ? Wo - x : MR - r;
                        int m0 = (b * Ho + y) * Wo + x;
                        for (int q = 0; q < 1 + n2; q++)
                            store_tile_any(ek[0], &kc[0], ep, cbuf[h][q] + (size_t)r * NR, m0, len,
                                           (p0 + q) * NR, N);
                        r += len;
                    }
                }
            }
        }
        _tile_release();
    }
    return 0;
}
#else
int dscy_qs8_conv_amx(const dscy_conv_geom *g, int x_signed, const int16_t *wp16, int N, int Np,
                      int Kp, const dscy_epilogue *ep, int nthreads) {
    (void)g; (void)x_signed; (void)wp16; (void)N; (void)Np; (void)Kp; (void)ep; (void)nthreads;
    return -2;                        /* not an amx build: pack the rows, then dscy_qs8_gemm */
}
int dscy_qs8_conv_amx_direct(const dscy_conv_geom *g, int x_signed, uint8_t *xpad, long xpad_len,
                             const int8_t *wd, int nch, int N, int Np, const dscy_epilogue *ep,
                             int nthreads) {
    (void)g; (void)x_signed; (void)xpad; (void)xpad_len; (void)wd; (void)nch; (void)N; (void)Np;
    (void)ep; (void)nthreads;
    return -2;
}
#endif

int dscy_qs8_gemm_vbmi(int off) {
    return DSCY_QUADS && dscy_vbmi_set(off);
}

void dscy_qs8_gemm(const int16_t *xp, int M, int Mp, int Kp, const int16_t *wp, int N, int Np,
                   const dscy_epilogue *ep, int nthreads) {
    (void)dscy_qs8_gemm_parts(xp, M, Mp, Kp, wp, N, Np, ep, 1, N, nthreads);
}

DSCY_THREAD_BUFFER(gemm_xp_buffer)   /* the calling thread's packed activations (bound calls) */

void *dscy_qs8_xp_buffer(size_t nbytes) {
    return gemm_xp_buffer((nbytes + sizeof(float) - 1) / sizeof(float));
}

/* nep parts of seg columns that dscy_qs8_gemm_parts can honour (see there) */
static int gemm_parts_ok(int N, int nep, int seg) {
    return !(nep < 1 || nep > DSCY_GEMM_PARTS_MAX || (nep == 1 && seg != N)
             || (nep > 1 && (seg <= 0 || seg % (2 * NR) || (long)nep * seg != N)));
}

/* dscy_qs8_pack_x_rows of x [M][K] (rows ldx bytes apart) into xp, then dscy_qs8_gemm_parts on
 * it, in one call: the amx build packs the rows inside the GEMM's parallel region (each thread
 * a share, then a barrier), one fork and join instead of two (an OpenMP region costs ~4 us
 * here; a BERT-base run has 48 GEMMs). Returns what dscy_qs8_gemm_parts returns. */
int dscy_qs8_gemm_parts_x(const void *x, int x_signed, ptrdiff_t ldx, int M, int K, int16_t *xp,
                          int Mp, int Kp, const int16_t *wp, int N, int Np,
                          const dscy_epilogue *ep, int nep, int seg, int nthreads) {
    if (!gemm_parts_ok(N, nep, seg))
        return -1;
#if DSCY_AMX
    amx_gemm((const uint8_t *)xp, M, Mp, Kp, (const int8_t *)wp, N, Np, ep, nep, seg, nthreads,
             x, x_signed, ldx, K);
    return 0;
#else
    dscy_qs8_pack_x_rows(x, x_signed, ldx, M, K, xp, Mp, Kp, nthreads);
    return dscy_qs8_gemm_parts(xp, M, Mp, Kp, wp, N, Np, ep, nep, seg, nthreads);
#endif
}

/* nep parts of seg output columns each (N = nep * seg, seg a multiple of 2 * NR so no item's
 * panel pair straddles two parts; nep 1: seg = N, so every part is seg wide): panel n0 goes
 * through ep[n0 / seg] at column n0 % seg of that part's output. Sibling layers reading the same activations (a transformer's
 * Q, K, V projections) run as one GEMM over their concatenated weights: one packing of x, one
 * pool of items for the threads. */
int dscy_qs8_gemm_parts(const int16_t *xp, int M, int Mp, int Kp, const int16_t *wp, int N,
                        int Np, const dscy_epilogue *ep, int nep, int seg, int nthreads) {
    if (!gemm_parts_ok(N, nep, seg))
        return -1;
#if DSCY_AMX
    amx_gemm((const uint8_t *)xp, M, Mp, Kp, (const int8_t *)wp, N, Np, ep, nep, seg, nthreads,
             NULL, 0, 0, 0);
    return 0;
#endif
    int K2 = DSCY_QUADS ? Kp / 4 : Kp / 2, npanel = Np / NR, mtiles = Mp / MR;
    int mblocks = (mtiles + MB - 1) / MB;
    long items = (long)npanel * mblocks;
    int nt = dscy_nthreads(nthreads);
    if (nt > items) nt = (int)items;
    const int32_t *x32 = (const int32_t *)xp;
    /* Item order: panel-major re-reads all activations per panel, fine while they sit in L2;
     * beyond that, M-block-major keeps one block of activations in L2 and streams the weights. */
    int mb_major = (size_t)Mp * Kp * (DSCY_QUADS ? 1 : 2) > (256u << 10);
#ifdef __AVX2__
    int ek[DSCY_GEMM_PARTS_MAX];
    dscy_ek_consts kc[DSCY_GEMM_PARTS_MAX];
    (void)dscy_ek_init_parts(ep, 0, nep - 1, ek, kc);
#endif
    DSCY_CLAIMS(next, nt);
    dscy_claims_init(next, items, nt);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, k = 0;      /* nt shares: any share without its thread is claimed by others */
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        int32_t cbuf[MB][MR * NR] __attribute__((aligned(64)));
        for (long it; (it = dscy_claim(next, items, nt, tid, &k)) >= 0; ) {
            int panel = mb_major ? (int)(it % npanel) : (int)(it / mblocks);
            int mb = mb_major ? (int)(it / npanel) : (int)(it % mblocks);
            int t0 = mb * MB, t1 = t0 + MB < mtiles ? t0 + MB : mtiles;
#if DSCY_QUADS
            /* quads: K2 counts k-quads here (Kp / 4), KC quads per chunk (16 KiB of weights) */
            (void)x32;
            const int8_t *wpan = (const int8_t *)wp + (ptrdiff_t)panel * Kp * NR;
            for (int q0 = 0; q0 < K2; q0 += KC) {
                int kc = K2 - q0 < KC ? K2 - q0 : KC;
                for (int t = t0; t < t1; t++)
                    ukernel_q((const uint8_t *)xp + (ptrdiff_t)t * MR * Kp + (ptrdiff_t)q0 * 64,
                              wpan + (ptrdiff_t)q0 * 4 * NR, kc, cbuf[t - t0], q0 == 0);
            }
#else
            const int16_t *wpan = wp + (ptrdiff_t)panel * K2 * 2 * NR;
            for (int p0 = 0; p0 < K2; p0 += KC) {
                int kc = K2 - p0 < KC ? K2 - p0 : KC;
                for (int t = t0; t < t1; t++)
                    ukernel(x32 + (ptrdiff_t)t * MR * K2 + p0, K2, wpan + (ptrdiff_t)p0 * 2 * NR, kc,
                            cbuf[t - t0], p0 == 0);
            }
#endif
            for (int t = t0; t < t1; t++) {
                int m0 = t * MR, mr = M - m0 < MR ? M - m0 : MR;
                if (mr <= 0) continue;
                int n0 = panel * NR, e = n0 / seg;       /* the part holding the panel */
#ifdef __AVX2__
                store_tile_any(ek[e], &kc[e], &ep[e], cbuf[t - t0], m0, mr, n0 - e * seg, seg);
#else
                store_tile(&ep[e], cbuf[t - t0], m0, mr, n0 - e * seg, seg);
#endif
            }
        }
    }
    return 0;
}

double dscy_probe_peak(int kind, long iters) {
#ifdef __AVX2__
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    /* 6 independent chains per iteration; operands stay in registers (peak, not memory) */
    if (kind == 0) {
        __asm__ volatile("vpcmpeqw %%ymm13, %%ymm13, %%ymm13\n vpsrlw $15, %%ymm13, %%ymm13" ::: "xmm13");
        for (long i = 0; i < iters; i++)
            __asm__ volatile(
                "vpmaddubsw %%ymm15, %%ymm14, %%ymm0\n vpmaddwd %%ymm13, %%ymm0, %%ymm0\n vpaddd %%ymm0, %%ymm1, %%ymm1\n"
                "vpmaddubsw %%ymm15, %%ymm14, %%ymm2\n vpmaddwd %%ymm13, %%ymm2, %%ymm2\n vpaddd %%ymm2, %%ymm3, %%ymm3\n"
                "vpmaddubsw %%ymm15, %%ymm14, %%ymm4\n vpmaddwd %%ymm13, %%ymm4, %%ymm4\n vpaddd %%ymm4, %%ymm5, %%ymm5\n"
                "vpmaddubsw %%ymm15, %%ymm14, %%ymm6\n vpmaddwd %%ymm13, %%ymm6, %%ymm6\n vpaddd %%ymm6, %%ymm7, %%ymm7\n"
                "vpmaddubsw %%ymm15, %%ymm14, %%ymm8\n vpmaddwd %%ymm13, %%ymm8, %%ymm8\n vpaddd %%ymm8, %%ymm9, %%ymm9\n"
                "vpmaddubsw %%ymm15, %%ymm14, %%ymm10\n vpmaddwd %%ymm13, %%ymm10, %%ymm10\n vpaddd %%ymm10, %%ymm11, %%ymm11\n"
                ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
    } else if (kind == 1) {
        for (long i = 0; i < iters; i++)
            __asm__ volatile(
                "vpmaddwd %%ymm15, %%ymm14, %%ymm0\n vpaddd %%ymm0, %%ymm1, %%ymm1\n"
                "vpmaddwd %%ymm15, %%ymm14, %%ymm2\n vpaddd %%ymm2, %%ymm3, %%ymm3\n"
                "vpmaddwd %%ymm15, %%ymm14, %%ymm4\n vpaddd %%ymm4, %%ymm5, %%ymm5\n"
                "vpmaddwd %%ymm15, %%ymm14, %%ymm6\n vpaddd %%ymm6, %%ymm7, %%ymm7\n"
                "vpmaddwd %%ymm15, %%ymm14, %%ymm8\n vpaddd %%ymm8, %%ymm9, %%ymm9\n"
                "vpmaddwd %%ymm15, %%ymm14, %%ymm10\n vpaddd %%ymm10, %%ymm11, %%ymm11\n"
                ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
    } else if (kind == 3) {
#if DSCY_QUADS
        /* vpdpbusd on zmm (the avx512_vnni kernels' instruction): 12 independent chains */
        for (long i = 0; i < iters; i++)
            __asm__ volatile(
                "vpdpbusd %%zmm15, %%zmm14, %%zmm0\n vpdpbusd %%zmm15, %%zmm14, %%zmm1\n"
                "vpdpbusd %%zmm15, %%zmm14, %%zmm2\n vpdpbusd %%zmm15, %%zmm14, %%zmm3\n"
                "vpdpbusd %%zmm15, %%zmm14, %%zmm4\n vpdpbusd %%zmm15, %%zmm14, %%zmm5\n"
                "vpdpbusd %%zmm15, %%zmm14, %%zmm6\n vpdpbusd %%zmm15, %%zmm14, %%zmm7\n"
                "vpdpbusd %%zmm15, %%zmm14, %%zmm8\n vpdpbusd %%zmm15, %%zmm14, %%zmm9\n"
                "vpdpbusd %%zmm15, %%zmm14, %%zmm10\n vpdpbusd %%zmm15, %%zmm14, %%zmm11\n"
                ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
#else
        iters = 0;
#endif
    } else if (kind == 4) {
#if DSCY_AMX
        /* tdpbusd on AMX tiles (the amx build's instruction): 4 independent accumulators, on
         * nonzero bytes (the tile unit ran all-zero tiles up to ~2x faster) */
        uint8_t a[2][16 * 64] __attribute__((aligned(64)));
        for (int i = 0; i < 2 * 16 * 64; i++) a[i / 1024][i % 1024] = (uint8_t)(i * 37 + 11);
        dscy_amx_config();
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        _tile_loadd(4, a[0], 64); _tile_loadd(5, a[1], 64);
        _tile_loadd(6, a[0], 64); _tile_loadd(7, a[1], 64);
        for (long i = 0; i < iters; i++) {
            _tile_dpbusd(0, 4, 6); _tile_dpbusd(1, 4, 7); _tile_dpbusd(2, 5, 6); _tile_dpbusd(3, 5, 7);
        }
        _tile_release();
#else
        iters = 0;
#endif
    } else {
        for (long i = 0; i < iters; i++)
            __asm__ volatile(
                "vfmadd231ps %%ymm15, %%ymm14, %%ymm0\n vfmadd231ps %%ymm15, %%ymm14, %%ymm1\n"
                "vfmadd231ps %%ymm15, %%ymm14, %%ymm2\n vfmadd231ps %%ymm15, %%ymm14, %%ymm3\n"
                "vfmadd231ps %%ymm15, %%ymm14, %%ymm4\n vfmadd231ps %%ymm15, %%ymm14, %%ymm5\n"
                "vfmadd231ps %%ymm15, %%ymm14, %%ymm6\n vfmadd231ps %%ymm15, %%ymm14, %%ymm7\n"
                "vfmadd231ps %%ymm15, %%ymm14, %%ymm8\n vfmadd231ps %%ymm15, %%ymm14, %%ymm9\n"
                "vfmadd231ps %%ymm15, %%ymm14, %%ymm10\n vfmadd231ps %%ymm15, %%ymm14, %%ymm11\n"
                ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    __asm__ volatile("vzeroupper" ::: "memory");
    double t = (b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec);
    double per_iter = kind == 0 ? 6 * 32 : kind == 1 ? 6 * 16 : kind == 3 ? 12 * 64
                    : kind == 4 ? 4 * 16 * 16 * 64 : 12 * 8;
    return t > 0 ? iters * per_iter / t : 0.0;
#else
    (void)kind; (void)iters;
    return 0.0;
#endif
}
