/* Winograd F(2x2, 3x3) for dense FP32 3x3 convs of stride 1, dilation 1, group 1 (NCHW), with
 * the conv kernel's fused epilogue (bias, residual z before the activation, f32_fused.h's
 * activations). AVX2 build only; the generic build reports it unavailable and the packed
 * implicit-im2col path (f32_conv.c) runs instead.
 *
 * Output tile 2x2 from an input patch 4x4: Y = A^T [ (G g G^T) (.) (B^T d B) ] A, with
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
 *   A^T = [1 1 1 0; 0 1 -1 -1].
 * Per output channel and input channel a tile costs 16 multiply-adds instead of 36; the sum
 * over input channels is, for each of the 16 points xi, a GEMM U_xi [M x C] . V_xi [C x tiles],
 * run on f32_conv.c's 6 x 16 tile (tiles as the 16-wide strip, output channels as the 6-row
 * panel).
 *
 *   U      weights transformed once (in double) at pack time: u[xi][panel][c][6], the panel
 *          layout of the packed conv weights (rows past M zero);
 *   items  (image, run of up to 64 consecutive 2x2 output tiles in row-major order, spanning
 *          tile rows so the 16-tile strips fill), split statically over the threads; per item
 *          the thread transforms, segment of a tile row by segment, the 4 input rows its tiles
 *          read, for every input channel, into V[xi][c][tile] (lanes past the run zero), then
 *          per panel of 6 output channels runs the 16 GEMMs into m[xi][6][tile] and transforms
 *          those back into 2 output rows per segment with the epilogue.
 *
 * Error: every output is a sum of the same products as the direct conv's, taken through the
 * transforms (coefficients 0, +-1/2, +-1), so its rounding error is bounded by a small multiple
 * of eps times the same sum computed with absolute values in the transformed domain
 * (tests/kernels/test_f32_conv.py checks against that bound and against the direct kernel). */
#include <stdlib.h>
#include <stdint.h>
#include <stddef.h>
#include "dscy_common.h"
#include "f32_fused.h"
#include "dscy_exp8.h"
#include "dscy_f32_tile.h"

#define WMR 6
#define WNR 16
#define WTB_MAX 64             /* tiles per item at most (4 strips) */

size_t dscy_f32_wino_wsize(int M, int C) {
    return (size_t)16 * ((M + WMR - 1) / WMR) * (size_t)C * WMR;
}

/* w [M][C][3][3] -> u[xi][panel][c][6], u = G g G^T per (m, c), computed in double. */
void dscy_f32_wino_pack(const float *w, int M, int C, float *u) {
    static const double G[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
    int np_ = (M + WMR - 1) / WMR;
    for (int m = 0; m < np_ * WMR; m++)
        for (int c = 0; c < C; c++) {
            double t[4][3], r[4][4];
            const float *g = w + ((size_t)m * C + c) * 9;
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 3; j++) {
                    double s = 0.0;
                    if (m < M)
                        for (int k = 0; k < 3; k++) s += G[i][k] * g[k * 3 + j];
                    t[i][j] = s;
                }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    double s = 0.0;
                    for (int k = 0; k < 3; k++) s += t[i][k] * G[j][k];
                    r[i][j] = s;
                }
            int pnl = m / WMR, row = m % WMR;
            for (int xi = 0; xi < 16; xi++)
                u[(((size_t)xi * np_ + pnl) * C + c) * WMR + row] = (float)r[xi / 4][xi % 4];
        }
}

#ifdef __AVX2__
#include <immintrin.h>

int dscy_f32_wino_available(void) { return 1; }

/* The epilogue of n <= 8 output values at c (z at zr or NULL): v + bias, + z, activation. */
static inline void wstore(__m256 v, float *c, const float *zr, int n, int act, float p0,
                          float p1) {
    if (zr) v = _mm256_add_ps(v, dscy_load_n8(zr, n));
    v = dscy_f32_act8(act, p0, p1, v);
    dscy_store_n8(c, v, n);
}

/* 6 x 16 tile over kc (dscy_f32_tile.h): c[r][0..16) = sum_k a[k][r] * b[k][0..16), b's rows
 * ldb apart, c's rows ldc apart. */
static inline void wtile(int kc, const float *restrict a, const float *restrict b, ptrdiff_t ldb,
                         float *restrict c, ptrdiff_t ldc) {
    dscy_acc6x16 t = dscy_f32_tile6x16(kc, a, b, ldb);
    for (int r = 0; r < WMR; r++, c += ldc) {
        _mm256_storeu_ps(c, t.v[r][0]);
        _mm256_storeu_ps(c + 8, t.v[r][1]);
    }
}

#if DSCY_F32_TILE2
/* wtile on strips b and b + WNR (columns c and c + WNR) at once */
static inline void wtile2(int kc, const float *restrict a, const float *restrict b, ptrdiff_t ldb,
                          float *restrict c, ptrdiff_t ldc) {
    dscy_acc6x16z t0, t1;
    dscy_f32_tile6x32(kc, a, b, b + WNR, ldb, &t0, &t1);
    for (int r = 0; r < WMR; r++, c += ldc) {
        _mm512_storeu_ps(c, t0.v[r]);
        _mm512_storeu_ps(c + WNR, t1.v[r]);
    }
}
#endif

DSCY_THREAD_BUFFER(wino_buffer)

/* Tiles per item: a multiple of 16 (whole strips) keeping V (16 x C x tiles floats) within
 * ~256 KiB of L2, at most WTB_MAX, and small enough to give each thread two items (N images
 * of `tiles` tiles). */
static int wino_tb(int C, long tiles, int N, int nt) {
    int cap = (int)(262144 / (64.0 * (C > 0 ? C : 1))) / WNR * WNR;
    cap = cap < WNR ? WNR : cap > WTB_MAX ? WTB_MAX : cap;
    while (cap > WNR && N * ((tiles + cap - 1) / cap) < 2L * nt) cap -= WNR;
    return cap;
}

/* Whether the Winograd path runs this conv: items are runs of consecutive tiles (row-major
 * over the 2x2 output tiles of an image), so strips fill unless an image has few tiles. */
int dscy_f32_wino_suits(int Ho, int Wo) {
    if (Ho < 2 || Wo < 2) return 0;
    long tiles = (long)((Ho + 1) / 2) * ((Wo + 1) / 2);
    return tiles >= 24;
}

/* The part of tile row a that the run of tiles [T0, T1) covers: columns [*bs, *be) of the row,
 * at lane *L0 of the item's buffers. */
static inline void wino_segment(int a, int Tw, long T0, long T1, int *bs, int *be, int *L0) {
    *bs = T0 > (long)a * Tw ? (int)(T0 - (long)a * Tw) : 0;
    *be = T1 < (long)(a + 1) * Tw ? (int)(T1 - (long)a * Tw) : Tw;
    *L0 = (int)((long)a * Tw + *bs - T0);
}

int dscy_f32_conv2d_wino(const float *x, int N, int C, int H, int W, const float *u, int M,
                         int pt, int pl, int Ho, int Wo, const float *bias, const float *z,
                         int act, float p0, float p1, float *out, int nthreads) {
    const int Th = (Ho + 1) / 2, Tw = (Wo + 1) / 2;
    const long T = (long)Th * Tw;
    int nt = dscy_nthreads(nthreads);
    if ((double)M * C * 9.0 * (double)Ho * Wo * N < 3.0e5) nt = 1;
    const int tb = wino_tb(C, T, N, nt);
    const long nblk = (T + tb - 1) / tb, items = (long)N * nblk;
    const int TBP = tb, nst = TBP / WNR, TBS = TBP + 8;     /* row stride: room to spill */
    const int npanels = (M + WMR - 1) / WMR;
    const size_t P = (size_t)Ho * Wo;
    if (items < nt) nt = (int)items;
    const int reg = dscy_f32_reg_act(act);
    /* per thread: V [16][C][TBS], m [16][6][TBS], 4 padded input rows, their even / odd
     * columns */
    const int RW = 2 * Tw + 24, EW = Tw + 16;
    const size_t vsz = (size_t)16 * C * TBS, msz = (size_t)16 * WMR * TBS;
    const size_t need = vsz + msz + 4 * (size_t)RW + 8 * (size_t)EW;
    int fail = 0;
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) reduction(|:fail)
    for (long it = 0; it < items; it++) {
        float *buf = wino_buffer(need);
        if (!buf) { fail = 1; continue; }
        float *V = buf, *mb = V + vsz, *rows = mb + msz, *eo = rows + 4 * (size_t)RW;
        int n = (int)(it / nblk);
        long T0 = (it % nblk) * tb, T1 = T0 + tb < T ? T0 + tb : T;
        int nb = (int)(T1 - T0);
        const float *xn = x + (size_t)n * C * H * W;
        const size_t xstep = (size_t)C * TBS;                 /* one xi further in V */
        for (int c = 0; c < C; c++) {
            const float *xc = xn + (size_t)c * H * W;
            float *vc = V + (size_t)c * TBS;
            /* the block's tiles, one tile row segment [bs, be) of row a at a time */
            for (int a = (int)(T0 / Tw); (long)a * Tw < T1; a++) {
                int bs, be, L0;
                wino_segment(a, Tw, T0, T1, &bs, &be, &L0);
                int len = be - bs;
                int nb8 = (len + 7) / 8 * 8;                     /* tiles the vectors cover */
                const int col0 = 2 * bs - pl, ncol = 2 * nb8 + 2;
                for (int r = 0; r < 4; r++) {
                    float *d = rows + (size_t)r * RW;
                    int ih = 2 * a - pt + r, j = 0;
                    if (ih >= 0 && ih < H) {
                        const float *xr = xc + (size_t)ih * W;
                        for (; j < ncol && col0 + j < 0; j++) d[j] = 0.0f;
                        int jend = W - col0 < ncol ? W - col0 : ncol;
                        for (; j + 8 <= jend; j += 8)
                            _mm256_storeu_ps(d + j, _mm256_loadu_ps(xr + col0 + j));
                        for (; j < jend; j++) d[j] = xr[col0 + j];
                    }
                    /* zeros to the last column read, d[ncol - 1] (vector stores: gcc would
                     * make a memset call of this loop, once per row and channel) */
                    for (; j < ncol && j + 8 <= RW; j += 8)
                        _mm256_storeu_ps(d + j, _mm256_setzero_ps());
                    /* even / odd columns: e[t] = d[2t], o[t] = d[2t + 1], t <= nb8 */
                    float *e = eo + (size_t)(2 * r) * EW, *o = e + EW;
                    int t = 0;
                    for (; t + 8 <= nb8 + 1; t += 8) dscy_split_even_odd16(d + 2 * t, e + t, o + t);
                    for (; t <= nb8; t++) { e[t] = d[2 * t]; o[t] = d[2 * t + 1]; }
                }
                /* 8 tiles at a time: d[r][s] = row r, column 2t + s -> V = B^T d B, stored at
                 * lanes L0 + t... (lanes past the segment are rewritten by the next one) */
                for (int t0 = 0; t0 < len; t0 += 8) {
                    __m256 tr[4][4], dv[4][4];
                    for (int r = 0; r < 4; r++) {
                        const float *e = eo + (size_t)(2 * r) * EW, *o = e + EW;
                        dv[r][0] = _mm256_loadu_ps(e + t0);
                        dv[r][1] = _mm256_loadu_ps(o + t0);
                        dv[r][2] = _mm256_loadu_ps(e + t0 + 1);
                        dv[r][3] = _mm256_loadu_ps(o + t0 + 1);
                    }
                    for (int s = 0; s < 4; s++) {
                        tr[0][s] = _mm256_sub_ps(dv[0][s], dv[2][s]);
                        tr[1][s] = _mm256_add_ps(dv[1][s], dv[2][s]);
                        tr[2][s] = _mm256_sub_ps(dv[2][s], dv[1][s]);
                        tr[3][s] = _mm256_sub_ps(dv[1][s], dv[3][s]);
                    }
                    float *vp = vc + L0 + t0;
                    for (int i = 0; i < 4; i++) {
                        float *vi = vp + (size_t)(4 * i) * xstep;
                        _mm256_storeu_ps(vi, _mm256_sub_ps(tr[i][0], tr[i][2]));
                        _mm256_storeu_ps(vi + xstep, _mm256_add_ps(tr[i][1], tr[i][2]));
                        _mm256_storeu_ps(vi + 2 * xstep, _mm256_sub_ps(tr[i][2], tr[i][1]));
                        _mm256_storeu_ps(vi + 3 * xstep, _mm256_sub_ps(tr[i][1], tr[i][3]));
                    }
                }
            }
            /* lanes past the block's tiles in its strips (a short last block): zero; lanes
             * from TBP on are spill room, never read */
            if (nb < TBP)
                for (int xi = 0; xi < 16; xi++)
                    for (int l = nb; l < TBP; l += 8)
                        _mm256_storeu_ps(vc + (size_t)xi * xstep + l, _mm256_setzero_ps());
        }
        float *on = out + (size_t)n * M * P;
        const float *zn = z ? z + (size_t)n * M * P : NULL;
        for (int g = 0; g < npanels; g++) {
            for (int xi = 0; xi < 16; xi++)
                for (int s = 0; s < nst; s++) {
#if DSCY_F32_TILE2
                    if (s + 1 < nst) {     /* two strips per pass (dscy_f32_tile6x32) */
                        wtile2(C, u + ((size_t)xi * npanels + g) * C * WMR,
                               V + (size_t)xi * xstep + s * WNR, TBS,
                               mb + (size_t)xi * WMR * TBS + s * WNR, TBS);
                        s++;
                        continue;
                    }
#endif
                    wtile(C, u + ((size_t)xi * npanels + g) * C * WMR, V + (size_t)xi * xstep + s * WNR,
                          TBS, mb + (size_t)xi * WMR * TBS + s * WNR, TBS);
                }
            int mr = M - g * WMR < WMR ? M - g * WMR : WMR;
            int ract = reg ? act : 0;
            for (int r = 0; r < mr; r++) {
                int m = g * WMR + r;
                __m256 bv = _mm256_set1_ps(bias ? bias[m] : 0.0f);
                const float *mr0 = mb + (size_t)r * TBS;
                for (int a = (int)(T0 / Tw); (long)a * Tw < T1; a++) {
                    int bs, be, L0;
                    wino_segment(a, Tw, T0, T1, &bs, &be, &L0);
                    for (int t0 = bs; t0 < be; t0 += 8) {
                        __m256 q[4][4], rr[2][4];
                        const float *mq = mr0 + L0 + (t0 - bs);
                        for (int xi = 0; xi < 16; xi++)
                            q[xi / 4][xi % 4] = _mm256_loadu_ps(mq + (size_t)xi * WMR * TBS);
                        for (int s = 0; s < 4; s++) {     /* A^T over rows */
                            rr[0][s] = _mm256_add_ps(_mm256_add_ps(q[0][s], q[1][s]), q[2][s]);
                            rr[1][s] = _mm256_sub_ps(_mm256_sub_ps(q[1][s], q[2][s]), q[3][s]);
                        }
                        int ntl = be - t0 < 8 ? be - t0 : 8;
                        int ow = 2 * t0, nv = Wo - ow < 2 * ntl ? Wo - ow : 2 * ntl;
                        for (int i = 0; i < 2; i++) {
                            int oh = 2 * a + i;
                            if (oh >= Ho) break;
                            __m256 y0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(rr[i][0], rr[i][1]),
                                                                    rr[i][2]), bv);
                            __m256 y1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(rr[i][1], rr[i][2]),
                                                                    rr[i][3]), bv);
                            /* interleave: columns ow + 2t (y0) and ow + 2t + 1 (y1) */
                            __m256 lo = _mm256_unpacklo_ps(y0, y1), hi = _mm256_unpackhi_ps(y0, y1);
                            __m256 f0 = _mm256_permute2f128_ps(lo, hi, 0x20);
                            __m256 f1 = _mm256_permute2f128_ps(lo, hi, 0x31);
                            size_t o = (size_t)m * P + (size_t)oh * Wo + ow;
                            wstore(f0, on + o, zn ? zn + o : NULL, nv < 8 ? nv : 8, ract, p0, p1);
                            if (nv > 8)
                                wstore(f1, on + o + 8, zn ? zn + o + 8 : NULL, nv - 8, ract, p0, p1);
                        }
                    }
                    if (!reg) {
                        int ow0 = 2 * bs, ow1 = 2 * be < Wo ? 2 * be : Wo;
                        for (int oh = 2 * a; oh < 2 * a + 2 && oh < Ho; oh++)
                            dscy_bias_act(DSCY_BUILD_ACT_LEVEL,
                                          on + (size_t)m * P + (size_t)oh * Wo + ow0, NULL,
                                          ow1 - ow0, act, p0, p1);
                    }
                }
            }
        }
    }
    return fail ? -1 : 0;
}
#else
int dscy_f32_wino_available(void) { return 0; }
int dscy_f32_wino_suits(int Ho, int Wo) { (void)Ho; (void)Wo; return 0; }
int dscy_f32_conv2d_wino(const float *x, int N, int C, int H, int W, const float *u, int M,
                         int pt, int pl, int Ho, int Wo, const float *bias, const float *z,
                         int act, float p0, float p1, float *out, int nthreads) {
    (void)x; (void)N; (void)C; (void)H; (void)W; (void)u; (void)M; (void)pt; (void)pl;
    (void)Ho; (void)Wo; (void)bias; (void)z; (void)act; (void)p0; (void)p1; (void)out;
    (void)nthreads;
    return -2;
}
#endif
