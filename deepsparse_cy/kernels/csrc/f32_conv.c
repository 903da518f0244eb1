/* Dense FP32 2-D convolution (NCHW, group 1) as a blocked GEMM with implicit im2col and a fused
 * epilogue: out[n][m][p] = act(sum_k W[m][k] * col_n[k][p] + bias[m] + z[n][m][p]).
 *
 *   W      weights [M][K], K = C*KH*KW in (c, kh, kw) order, packed once at compile time into
 *          panels of MR = 6 output channels: wp[panel][k][6] (rows past M are zero);
 *   col    the im2col matrix, never materialised: each (K block, pixel block) of it is packed by
 *          the thread that needs it into strips of NR = 16 pixels, bp[strip][k][16], straight
 *          from the input (one vector load per 16 pixels when they are consecutive in one input
 *          row, else a masked gather; padding and the ragged last strip read as 0);
 *   tiles  6 x 16 micro-kernel, 12 ymm accumulators, FMA (the classic Haswell shape): per k one
 *          16-float load pair from the strip and 6 broadcasts from the panel.
 *
 * Blocking: work items = (image, block of pixels, block of output channels), split statically
 * over the OpenMP threads; per item K runs in blocks of <= KC so one strip (KC*64 B) stays in L1
 * while every panel of the item's channel block (in L2) passes over it. Partial sums accumulate
 * in the output itself (the item's region, <= 128 x 192 floats, stays in L2); after the last K
 * block the item's rows get + z and the activation in one pass (f32_fused.h's body, so the
 * activations are exactly the ones the other fused ops apply).
 *
 * Pixel tables (per input shape, from the caller): ih0[p] = oh*sh - pt, iw0[p] = ow*sw - pl.
 * Tap t = (c, i, j) of pixel p reads x[c][ih0 + i*dh][iw0 + j*dw] when inside the image.
 *
 * The generic build computes the same with plain loops (gcc vectorises the tile at SSE2). */
#include <stdlib.h>
#include <stdint.h>
#include <stddef.h>
#include "dscy_common.h"
#include "f32_fused.h"
#include "dscy_exp8.h"
#include "dscy_f32_tile.h"
#include "dscy_kernels.h"

#ifdef __AVX2__
#define CONV_AVX2 1
#else
#define CONV_AVX2 0
#endif
#define MR 6
#define NR 16
#ifndef KC_MAX
#define KC_MAX 256
#endif
#ifndef MC_PANELS
#define MC_PANELS 12        /* 72 output channels per block: 72 * 256 * 4 B = 72 KiB of panels in L2 */
#endif
/* Packed strips are kc*16 floats plus one 64-byte line apart: with kc = 256 they were exactly
 * 16 KiB apart, so the tap-row-major packer's 12 stores per K row (one per strip) all fell in
 * one L1 set. Measured 0.92-0.97x the conv time on 3x3 convs of 20^2-80^2 maps (8 alternating
 * runs). */
#define SSTRIDE(kc) ((size_t)(kc) * NR + NR)
#define NC_STRIPS 12        /* 192 pixels per item */
/* Below this many MACs a conv runs on one thread. The worker is normally still spinning from
 * the previous kernel (GOMP_SPINCOUNT), so a hand-off costs a few microseconds: measured on
 * MobileNetV3-OCR at 48 x 320, 3e5 ran the model in 0.74-0.85x the time of the earlier 2e6
 * (alternating runs); 1e5 gained nothing more. */
#define PAR_MIN_MACS 3.0e5

size_t dscy_f32_conv_wpack_size(int M, int K) {
    return (size_t)((M + MR - 1) / MR) * (size_t)K * MR;
}

void dscy_f32_conv_pack_w(const float *w, int M, int K, float *wp) {
    int np_ = (M + MR - 1) / MR;
    for (int pnl = 0; pnl < np_; pnl++)
        for (int k = 0; k < K; k++)
            for (int r = 0; r < MR; r++) {
                int m = pnl * MR + r;
                wp[((size_t)pnl * K + k) * MR + r] = m < M ? w[(size_t)m * K + k] : 0.0f;
            }
}

typedef struct {
    const float *x;          /* one image [C][H][W] */
    int C, H, W, KH, KW, sw, dh, dw;
    int P;                   /* pixels of the output plane */
    const int32_t *ih0, *iw0;
    const float *xph;        /* sw > 1: the image with its columns split by phase, [C][sw][H][Wph]
                                (column col of phase ph = input column col*sw + ph), else NULL */
    int Wph;
} conv_src;

/* Pack rows [k0, k0+kc) x pixels [p0, p0+pn) of the implicit im2col into bp[strip][kk][16]
 * (strips SSTRIDE(kc) floats apart).
 * A strip whose 16 pixels read 16 consecutive input addresses for every tap (any stride-1 conv
 * whose output rows are as wide as its input rows, i.e. 'same' padding, and 1x1 convs) is copied
 * with plain vector loads when no tap reaches into the padding, else with masked loads (lanes in
 * the padding read as 0); other strips gather. The lane masks depend only on the tap (i, j), so
 * they are built once per strip for the KH*KW taps, not per packed row. */
#define MAX_TAPS 64
/* Whether strip st (first pixel q0, nv valid pixels) reads 16 consecutive addresses inside the
 * image for every tap; off0 gets the address of its first pixel's first tap. */
static inline int strip_inside(const conv_src *s, int q0, int nv, ptrdiff_t *off0) {
    ptrdiff_t o = (ptrdiff_t)s->ih0[q0] * s->W + s->iw0[q0];
    *off0 = o;
    if (nv != NR) return 0;
    int hmin = s->ih0[q0], hmax = hmin, wmin = s->iw0[q0], wmax = wmin;
    for (int j = 1; j < NR; j++) {
        int h = s->ih0[q0 + j], w = s->iw0[q0 + j];
        if ((ptrdiff_t)h * s->W + w != o + j) return 0;
        hmin = h < hmin ? h : hmin; hmax = h > hmax ? h : hmax;
        wmin = w < wmin ? w : wmin; wmax = w > wmax ? w : wmax;
    }
    return hmin >= 0 && hmax + (s->KH - 1) * s->dh < s->H
           && wmin >= 0 && wmax + (s->KW - 1) * s->dw < s->W;
}

#define PACK_RUN_MAX 64
static void pack_cols(const conv_src *s, int k0, int kc, int p0, int pn, float *bp) {
    const int T = s->KH * s->KW, HW = s->H * s->W;
    int ns = (pn + NR - 1) / NR;
    /* Strips whose taps all read 16 consecutive floats inside the image are packed first, tap
     * row by tap row across all of them: each tap then reads one long run of the input row
     * (strips of one output row are neighbours) instead of every strip touching all kc input
     * rows in turn, which for few output channels (a small packed panel set, e.g. 24 channels
     * over a 160x160 map) left the packing waiting on hundreds of L3 lines per strip. */
    unsigned char done[PACK_RUN_MAX] = {0};
    const int runs = ns <= PACK_RUN_MAX;    /* always (items have <= NC_STRIPS strips); else the
                                               per-strip loop below packs every strip */
    int inside_st[PACK_RUN_MAX], nin = 0;
    ptrdiff_t inside_off[PACK_RUN_MAX];
    for (int st = 0; st < ns && runs; st++) {
        int q0 = p0 + st * NR, nv = pn - st * NR < NR ? pn - st * NR : NR;
        ptrdiff_t off0;
        if (strip_inside(s, q0, nv, &off0)) {
            inside_st[nin] = st; inside_off[nin++] = off0;
            done[st] = 1;
        }
    }
    if (nin) {
        int c = k0 / T, t = k0 - c * T;
        for (int kk = 0; kk < kc; kk++) {
            int ti = t / s->KW, tj = t - ti * s->KW;
            const float *base = s->x + (size_t)c * HW + (ptrdiff_t)ti * s->dh * s->W + tj * s->dw;
            for (int q = 0; q < nin; q++) {
                const float *src = base + inside_off[q];
                float *d = bp + (size_t)inside_st[q] * SSTRIDE(kc) + (size_t)kk * NR;
#ifdef __AVX2__
                _mm256_storeu_ps(d, _mm256_loadu_ps(src));
                _mm256_storeu_ps(d + 8, _mm256_loadu_ps(src + 8));
#else
                for (int j = 0; j < NR; j++) d[j] = src[j];
#endif
            }
            if (++t == T) { t = 0; c++; }
        }
    }
#ifdef __AVX2__
    /* The same for strided convs on the phase-split input: a strip inside one output row whose
     * taps all land inside the image reads, per tap, 16 consecutive columns of one phase row.
     * The tap's phase and column offset depend only on the strip's first input column modulo
     * the stride, which is the same for every strip, so one tap table serves all of them. */
    if (s->xph && s->KW <= MAX_TAPS && runs) {
        int sst[PACK_RUN_MAX], nsi = 0, rem0 = -1, phj[MAX_TAPS], dcol[MAX_TAPS];
        ptrdiff_t soff[PACK_RUN_MAX];
        const int sw = s->sw;
        for (int st = 0; st < ns; st++) {
            int q0 = p0 + st * NR, nv = pn - st * NR < NR ? pn - st * NR : NR;
            if (done[st] || nv != NR) continue;
            int h = s->ih0[q0], iw = s->iw0[q0], ok = 1;
            for (int j = 1; j < NR && ok; j++)
                ok = s->ih0[q0 + j] == h && s->iw0[q0 + j] == iw + j * sw;
            if (!ok || h < 0 || h + (s->KH - 1) * s->dh >= s->H) continue;
            int rem = ((iw % sw) + sw) % sw;
            if (rem0 < 0) {
                rem0 = rem;
                for (int j = 0; j < s->KW; j++) {
                    int b = rem + j * s->dw;
                    phj[j] = b % sw;
                    dcol[j] = b / sw;
                }
            } else if (rem != rem0) continue;
            int cbase = (iw - rem) / sw;
            for (int j = 0; j < s->KW && ok; j++) {
                int c0 = cbase + dcol[j], wph = (s->W - phj[j] + sw - 1) / sw;
                ok = c0 >= 0 && c0 + NR - 1 < wph;
            }
            if (!ok) continue;
            sst[nsi] = st;
            soff[nsi++] = (ptrdiff_t)h * s->Wph + cbase;
            done[st] = 1;
        }
        if (nsi) {
            int c = k0 / T, t = k0 - c * T;
            for (int kk = 0; kk < kc; kk++) {
                int ti = t / s->KW, tj = t - ti * s->KW;
                const float *base = s->xph + (((size_t)c * sw + phj[tj]) * s->H + (size_t)ti * s->dh)
                                    * (size_t)s->Wph + dcol[tj];
                for (int q = 0; q < nsi; q++) {
                    const float *src = base + soff[q];
                    float *d = bp + (size_t)sst[q] * SSTRIDE(kc) + (size_t)kk * NR;
                    _mm256_storeu_ps(d, _mm256_loadu_ps(src));
                    _mm256_storeu_ps(d + 8, _mm256_loadu_ps(src + 8));
                }
                if (++t == T) { t = 0; c++; }
            }
        }
    }
#endif
    for (int st = 0; st < ns; st++) {
        if (runs && done[st]) continue;
        int q0 = p0 + st * NR, nv = pn - st * NR < NR ? pn - st * NR : NR;
        float *dst = bp + (size_t)st * SSTRIDE(kc);
        ptrdiff_t off0 = (ptrdiff_t)s->ih0[q0] * s->W + s->iw0[q0];
        int contig = nv == NR;
        int hmin = s->ih0[q0], hmax = hmin;
        for (int j = 1; j < nv; j++) {
            int h = s->ih0[q0 + j], w = s->iw0[q0 + j];
            contig &= (ptrdiff_t)h * s->W + w == off0 + j;
            hmin = h < hmin ? h : hmin; hmax = h > hmax ? h : hmax;
        }
        /* strips with every tap inside the image were packed above (when runs) */
        int c = k0 / T, t = k0 - c * T;
#ifdef __AVX2__
        /* strided conv, strip inside one output row: in the phase-split image the 16 pixels of
         * every tap are 16 consecutive columns of one phase row */
        int rowstrided = s->xph && s->KW <= MAX_TAPS && hmin == hmax
                         && s->iw0[q0 + nv - 1] - s->iw0[q0] == (nv - 1) * s->sw;
        if (rowstrided) {
            __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            __m256i valid[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(nv), lane),
                                _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - 8), lane)};
            __m256i cmask[MAX_TAPS][2];
            int col0[MAX_TAPS], ph[MAX_TAPS];
            for (int j = 0; j < s->KW; j++) {
                int base = s->iw0[q0] + j * s->dw;
                int q = base >= 0 ? base / s->sw : -((-base + s->sw - 1) / s->sw);
                ph[j] = base - q * s->sw;
                col0[j] = q;
                int wph = (s->W - ph[j] + s->sw - 1) / s->sw;     /* columns of that phase */
                __m256i c0 = _mm256_set1_epi32(q), lim = _mm256_set1_epi32(wph);
                for (int h = 0; h < 2; h++) {
                    __m256i col = _mm256_add_epi32(c0, _mm256_add_epi32(lane,
                                                   _mm256_set1_epi32(8 * h)));
                    __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)),
                                                 _mm256_cmpgt_epi32(lim, col));
                    cmask[j][h] = _mm256_and_si256(m, valid[h]);
                }
            }
            for (int kk = 0; kk < kc; kk++) {
                int ti = t / s->KW, tj = t - ti * s->KW;
                int ih = hmin + ti * s->dh;
                float *d = dst + (size_t)kk * NR;
                if (ih < 0 || ih >= s->H) {
                    _mm256_storeu_ps(d, _mm256_setzero_ps());
                    _mm256_storeu_ps(d + 8, _mm256_setzero_ps());
                } else {
                    const float *src = s->xph + (((size_t)c * s->sw + ph[tj]) * s->H + ih)
                                       * (size_t)s->Wph + col0[tj];
                    _mm256_storeu_ps(d, _mm256_maskload_ps(src, cmask[tj][0]));
                    _mm256_storeu_ps(d + 8, _mm256_maskload_ps(src + 8, cmask[tj][1]));
                }
                if (++t == T) { t = 0; c++; }
            }
            continue;
        }
        int lh[NR], lw[NR];
        for (int j = 0; j < NR; j++) {      /* lanes past nv repeat pixel q0, masked off below */
            lh[j] = s->ih0[j < nv ? q0 + j : q0];
            lw[j] = s->iw0[j < nv ? q0 + j : q0];
        }
        __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i valid[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(nv), lane),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - 8), lane)};
        __m256i ih[2] = {_mm256_loadu_si256((const __m256i *)lh),
                         _mm256_loadu_si256((const __m256i *)(lh + 8))};
        __m256i iw[2] = {_mm256_loadu_si256((const __m256i *)lw),
                         _mm256_loadu_si256((const __m256i *)(lw + 8))};
        /* Strips that wrap from one output row into the next (stride 1, rows narrower than a
         * few strips): in each 8-lane half, lanes [0, r[h]) read consecutive addresses from
         * offA[h] and lanes [r[h], 8) consecutive addresses from offB[h] (any row of >= 8
         * pixels), so each tap is two masked loads per half instead of a gather. */
        int halfruns = !contig && nv > 1;
        int rr[2] = {8, 8};
        ptrdiff_t offA[2] = {0, 0}, offB[2] = {0, 0};
        for (int h = 0; h < 2 && halfruns; h++) {
            int j0 = 8 * h, jn = nv - j0 < 8 ? nv - j0 : 8;
            if (jn <= 0) break;
#define PIXADDR(j) ((ptrdiff_t)s->ih0[q0 + (j)] * s->W + s->iw0[q0 + (j)])
            offA[h] = PIXADDR(j0);
            int r = 1;
            while (r < jn && PIXADDR(j0 + r) == offA[h] + r) r++;
            rr[h] = r;
            if (r < jn) {
                offB[h] = PIXADDR(j0 + r);
                for (int j = r + 1; j < jn && halfruns; j++)
                    halfruns = PIXADDR(j0 + j) == offB[h] + (j - r);
            }
#undef PIXADDR
        }
        __m256i ltr[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(rr[0]), lane),
                          _mm256_cmpgt_epi32(_mm256_set1_epi32(rr[1]), lane)};
        __m256i H8 = _mm256_set1_epi32(s->H), W8 = _mm256_set1_epi32(s->W);
        __m256i neg1 = _mm256_set1_epi32(-1);
        __m256 zero = _mm256_setzero_ps();
        /* per tap: lane masks (0 <= h < H, 0 <= w < W, lane < nv) and, for gathers, offsets */
        __m256i mask[MAX_TAPS][2], offs[MAX_TAPS][2];
        int ntap = T <= MAX_TAPS ? T : 0;
        for (int u = 0; u < ntap; u++) {
            int ui = u / s->KW, uj = u - ui * s->KW;
            __m256i di8 = _mm256_set1_epi32(ui * s->dh), dj8 = _mm256_set1_epi32(uj * s->dw);
            for (int h = 0; h < 2; h++) {
                __m256i hh = _mm256_add_epi32(ih[h], di8), ww = _mm256_add_epi32(iw[h], dj8);
                __m256i m = _mm256_and_si256(_mm256_and_si256(_mm256_cmpgt_epi32(hh, neg1),
                                                              _mm256_cmpgt_epi32(H8, hh)),
                                             _mm256_and_si256(_mm256_cmpgt_epi32(ww, neg1),
                                                              _mm256_cmpgt_epi32(W8, ww)));
                mask[u][h] = _mm256_and_si256(m, valid[h]);
                offs[u][h] = _mm256_add_epi32(_mm256_mullo_epi32(hh, W8), ww);
            }
        }
#endif
        for (int kk = 0; kk < kc; kk++) {
            const float *xc = s->x + (size_t)c * HW;
            float *d = dst + (size_t)kk * NR;
            int ti = t / s->KW, tj = t - ti * s->KW;
            int di = ti * s->dh, dj = tj * s->dw;
#ifdef __AVX2__
            if (t < ntap) {
                if (contig) {
                    /* masked lanes are not read, so the address may lie outside the image */
                    const float *src = xc + off0 + (ptrdiff_t)di * s->W + dj;
                    _mm256_storeu_ps(d, _mm256_maskload_ps(src, mask[t][0]));
                    _mm256_storeu_ps(d + 8, _mm256_maskload_ps(src + 8, mask[t][1]));
                } else if (halfruns) {
                    ptrdiff_t tap = (ptrdiff_t)di * s->W + dj;
                    for (int h = 0; h < 2; h++) {
                        const float *sa = xc + offA[h] + tap, *sb = xc + offB[h] - rr[h] + tap;
                        __m256 a = _mm256_maskload_ps(sa, _mm256_and_si256(mask[t][h], ltr[h]));
                        __m256 b = _mm256_maskload_ps(sb, _mm256_andnot_si256(ltr[h], mask[t][h]));
                        _mm256_storeu_ps(d + 8 * h, _mm256_or_ps(a, b));
                    }
                } else {
                    _mm256_storeu_ps(d, _mm256_mask_i32gather_ps(
                        zero, xc, offs[t][0], _mm256_castsi256_ps(mask[t][0]), 4));
                    _mm256_storeu_ps(d + 8, _mm256_mask_i32gather_ps(
                        zero, xc, offs[t][1], _mm256_castsi256_ps(mask[t][1]), 4));
                }
                if (++t == T) { t = 0; c++; }
                continue;
            }
#endif
            for (int j = 0; j < NR; j++) {
                float v = 0.0f;
                if (j < nv) {
                    int hh = s->ih0[q0 + j] + di, ww = s->iw0[q0 + j] + dj;
                    if (hh >= 0 && hh < s->H && ww >= 0 && ww < s->W)
                        v = xc[(ptrdiff_t)hh * s->W + ww];
                }
                d[j] = v;
            }
            if (++t == T) { t = 0; c++; }
        }
    }
}

/* What the last K block of a tile applies in registers: + z, then an activation of
 * dscy_f32_reg_act (others run as a row pass afterwards); lo, hi: Clip's bounds or HardSigmoid's
 * alpha, beta. z == NULL and act == 0 outside the last block. */
typedef struct { const float *z; int act; float lo, hi; const float *cb; } tile_ep;
/* cb: a bias along the tile's columns (GEMM: per output feature), added with the first K
 * block like the per-row conv bias; NULL for convs. */

static inline float ep1(const tile_ep *e, float v, const float *zr, int j) {
    if (e->z) v += zr[j];
    if (e->act == DSCY_F_RELU) v = v > 0.0f ? v : 0.0f;
    else if (e->act == DSCY_F_CLIP) { v = v < e->lo ? e->lo : v; v = v > e->hi ? e->hi : v; }
    else if (e->act == DSCY_F_SILU) v = v / (1.0f + dscy_vexpf(-v));
    else if (e->act == DSCY_F_HARDSWISH) {
        float h = v * (1.0f / 6.0f) + 0.5f;
        h = h < 0.0f ? 0.0f : h; h = h > 1.0f ? 1.0f : h;
        v = v * h;
    } else if (e->act == DSCY_F_HARDSIGMOID) {
        float h = v * e->lo + e->hi;
        h = h < 0.0f ? 0.0f : h; v = h > 1.0f ? 1.0f : h;
    }
    return v;
}

#ifdef __AVX2__
static inline __m256 act8(const tile_ep *e, __m256 v) {
    return dscy_f32_act8(e->act, e->lo, e->hi, v);
}

/* n <= 8 lanes of one tile row through the epilogue: acc + (first ? br (+ cb) : c), + z, the
 * activation (act8), stored to c. The full-tile store and the ragged one both run it. */
static inline void ep8_store(const tile_ep *e, __m256 acc, float *c, const float *zr,
                             const float *cb, int n, int first, float br) {
    __m256 init;
    if (first) {
        init = _mm256_set1_ps(br);
        if (cb) init = _mm256_add_ps(init, dscy_load_n8(cb, n));
    } else init = dscy_load_n8(c, n);
    __m256 v = _mm256_add_ps(acc, init);
    if (zr) v = _mm256_add_ps(v, dscy_load_n8(zr, n));
    if (e->act) v = act8(e, v);
    dscy_store_n8(c, v, n);
}

/* store_partial in 8-lane vectors: a ragged tile from its accumulators t (row stride ts), mr
 * rows x nr columns. */
static inline void store_ragged_avx2(const float *t, int ts, float *c, ptrdiff_t ldc, int mr,
                                     int nr, int first, const float *bias, const tile_ep *e) {
    for (int r = 0; r < mr; r++)
        for (int j0 = 0; j0 < nr; j0 += 8)
            ep8_store(e, _mm256_loadu_ps(t + r * ts + j0), c + r * ldc + j0,
                      e->z ? e->z + r * ldc + j0 : NULL, e->cb ? e->cb + j0 : NULL,
                      nr - j0 < 8 ? nr - j0 : 8, first, bias ? bias[r] : 0.0f);
}
#endif

/* A ragged tile (mr < 6 rows or nr < 16 columns) from its accumulators t (row stride ts). */
static inline void store_partial(const float *t, int ts, float *c, ptrdiff_t ldc, int mr, int nr,
                                 int first, const float *bias, const tile_ep *e) {
    for (int r = 0; r < mr; r++) {
        float *cr = c + r * ldc;
        float init = bias ? bias[r] : 0.0f;
        for (int j = 0; j < nr; j++)
            cr[j] = ep1(e, t[r * ts + j] + (first ? init + (e->cb ? e->cb[j] : 0.0f) : cr[j]),
                        e->z ? e->z + r * ldc : NULL, j);
    }
}

#ifdef __AVX2__
/* the epilogue of a full-width tile (nr = 16) from its accumulators */
static inline void tile_store_full(__m256 (*acc)[2], float *c, ptrdiff_t ldc, int mr, int first,
                                   const float *bias, const tile_ep *e) {
    for (int r = 0; r < mr; r++) {
        float br = bias ? bias[r] : 0.0f;
        const float *zr = e->z ? e->z + r * ldc : NULL;
        ep8_store(e, acc[r][0], c + r * ldc, zr, e->cb, 8, first, br);
        ep8_store(e, acc[r][1], c + r * ldc + 8, zr ? zr + 8 : NULL,
                  e->cb ? e->cb + 8 : NULL, 8, first, br);
    }
}
#endif

#if DSCY_F32_TILE2
/* ep8_store on 16 lanes (the same operations: dscy_f32_act16) */
static inline void ep16_store(const tile_ep *e, __m512 acc, float *c, const float *zr,
                              const float *cb, int first, float br) {
    __m512 init;
    if (first) {
        init = _mm512_set1_ps(br);
        if (cb) init = _mm512_add_ps(init, _mm512_loadu_ps(cb));
    } else init = _mm512_loadu_ps(c);
    __m512 v = _mm512_add_ps(acc, init);
    if (zr) v = _mm512_add_ps(v, _mm512_loadu_ps(zr));
    if (e->act) v = dscy_f32_act16(e->act, e->lo, e->hi, v);
    _mm512_storeu_ps(c, v);
}

/* tile_store_full from one zmm per row */
static inline void tile_store_full16(const __m512 *acc, float *c, ptrdiff_t ldc, int mr,
                                     int first, const float *bias, const tile_ep *e) {
    for (int r = 0; r < mr; r++)
        ep16_store(e, acc[r], c + r * ldc, e->z ? e->z + r * ldc : NULL, e->cb, first,
                   bias ? bias[r] : 0.0f);
}

/* Two full-width tiles of one panel: strips b and b + bstride, output columns c and c + 16
 * (z and cb likewise), as two tile() calls compute them. */
static inline void tile2(int kc, const float *restrict a, const float *restrict b,
                         size_t bstride, float *c, ptrdiff_t ldc, int mr, int first,
                         const float *bias, const tile_ep *e) {
    dscy_acc6x16z t0, t1;
    dscy_f32_tile6x32(kc, a, b, b + bstride, NR, &t0, &t1);
    tile_store_full16(t0.v, c, ldc, mr, first, bias, e);
    tile_ep e1 = *e;
    if (e1.z) e1.z += NR;
    if (e1.cb) e1.cb += NR;
    tile_store_full16(t1.v, c + NR, ldc, mr, first, bias, &e1);
}
#endif

/* One 6 x 16 tile over kc: c (rows mr <= 6, columns nr <= 16, row stride ldc) gets
 * acc + (first ? bias : c). */
static inline void tile(int kc, const float *restrict a, const float *restrict b, float *c,
                        ptrdiff_t ldc, int mr, int nr, int first, const float *bias,
                        const tile_ep *e) {
#ifdef __AVX2__
    dscy_acc6x16 t6 = dscy_f32_tile6x16(kc, a, b, NR);
    __m256 (*acc)[2] = t6.v;
#if DSCY_F32_TILE2
    if (nr == NR) {      /* the halves back as one zmm per row (the compiler drops the split) */
        __m512 z[MR];
        for (int r = 0; r < MR; r++)
            z[r] = _mm512_insertf32x8(_mm512_castps256_ps512(acc[r][0]), acc[r][1], 1);
        tile_store_full16(z, c, ldc, mr, first, bias, e);
        return;
    }
#endif
    if (nr == NR) {
        tile_store_full(acc, c, ldc, mr, first, bias, e);
        return;
    }
    float t[MR][NR];
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(t[r], acc[r][0]);
        _mm256_storeu_ps(t[r] + 8, acc[r][1]);
    }
    store_ragged_avx2(&t[0][0], NR, c, ldc, mr, nr, first, bias, e);
    return;
#else
    float t[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) t[r][j] = 0.0f;
    for (int k = 0; k < kc; k++) {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < NR; j++) t[r][j] += a[r] * b[j];
        a += MR; b += NR;
    }
#endif
    store_partial(&t[0][0], NR, c, ldc, mr, nr, first, bias, e);
}

/* The same for a last strip of at most 8 valid pixels (7x7 maps: 49 = 3 x 16 + 1): half the
 * FMAs of a full tile, reading the first 8 lanes of each 16-float strip row. */
static inline void tile8(int kc, const float *restrict a, const float *restrict b, float *c,
                         ptrdiff_t ldc, int mr, int nr, int first, const float *bias,
                         const tile_ep *e) {
#ifdef __AVX2__
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b);
        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a), b0, c0);
        c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 1), b0, c1);
        c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 2), b0, c2);
        c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 3), b0, c3);
        c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 4), b0, c4);
        c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 5), b0, c5);
        a += MR; b += NR;
    }
    float t[MR][8];
    _mm256_storeu_ps(t[0], c0); _mm256_storeu_ps(t[1], c1); _mm256_storeu_ps(t[2], c2);
    _mm256_storeu_ps(t[3], c3); _mm256_storeu_ps(t[4], c4); _mm256_storeu_ps(t[5], c5);
    store_ragged_avx2(&t[0][0], 8, c, ldc, mr, nr, first, bias, e);
    return;
#else
    float t[MR][8];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 8; j++) t[r][j] = 0.0f;
    for (int k = 0; k < kc; k++) {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < 8; j++) t[r][j] += a[r] * b[j];
        a += MR; b += NR;
    }
#endif
    store_partial(&t[0][0], 8, c, ldc, mr, nr, first, bias, e);
}

DSCY_THREAD_BUFFER(strip_buffer)

size_t dscy_f32_conv_xph_size(int N, int C, int H, int W, int sw) {
    if (sw <= 1) return 0;
    return (size_t)N * C * sw * H * (size_t)((W + sw - 1) / sw);
}

/* Work split: njb pixel blocks of spb strips (at most NC_STRIPS, so a block's packed columns
 * stay in L2) x nms channel ranges per image. Items are dealt to the threads in contiguous
 * chunks (OpenMP static); the split minimises the busiest thread's modelled time: a strip of an
 * item costs its share of panels (1 per 6x16 tile row, half for an 8-wide tail strip) plus
 * PACK_COST for packing it, which every item covering the strip pays again. */
#define PACK_COST 0.4
static void split_work(int N, int nstrips, int npanels, int tail8, int nt, int *njb_out,
                       int *nms_out, int *spb_out) {
    int jmin = (nstrips + NC_STRIPS - 1) / NC_STRIPS;
    int best_j = jmin, best_m = 1;
    double best = -1.0;
    for (int njb = jmin; njb <= nstrips && njb <= jmin + 2 * nt; njb++) {
        int spb = (nstrips + njb - 1) / njb;
        if ((nstrips + spb - 1) / spb != njb) continue;      /* same split as a smaller njb */
        for (int nms = 1; nms <= npanels && nms <= 2 * nt; nms++) {
            long items = (long)N * njb * nms, chunk = (items + nt - 1) / nt;
            double worst = 0.0;
            for (int t = 0; t < nt; t++) {
                double load = 0.0;
                for (long it = t * chunk; it < (t + 1) * chunk && it < items; it++) {
                    int rest = (int)(it % ((long)njb * nms)), jb = rest / nms, ms = rest % nms;
                    int s0 = jb * spb, s1 = s0 + spb < nstrips ? s0 + spb : nstrips;
                    int ga = (int)((long)npanels * ms / nms);
                    int gb = (int)((long)npanels * (ms + 1) / nms);
                    double strips = s1 - s0 - (tail8 && s1 == nstrips ? 0.5 : 0.0);
                    load += strips * (gb - ga) + (s1 - s0) * PACK_COST;
                }
                worst = load > worst ? load : worst;
            }
            worst *= 1.0 + 0.002 * (double)items / nt;         /* per-item overhead */
            if (best < 0 || worst < best - 1e-9) { best = worst; best_j = njb; best_m = nms; }
        }
    }
    *njb_out = best_j;
    *nms_out = best_m;
    *spb_out = (nstrips + best_j - 1) / best_j;
}

static int wino_enabled = 1;           /* dscy_f32_conv_set_wino: tests and A/B timing */
void dscy_f32_conv_set_wino(int on) { wino_enabled = on != 0; }
int dscy_f32_conv_get_wino(void) { return wino_enabled; }

/* Whether dscy_f32_conv2d reads the phase-split scratch xph for this conv (else it packs with
 * gathers and ignores xph); kernels/f32conv.py asks it before allocating the scratch. See the
 * measurements at its use in dscy_f32_conv2d. */
int dscy_f32_conv_uses_phase_split(int M, int KH, int KW, int sw, int P) {
    return CONV_AVX2 && sw > 1 && KH * KW > 1 && ((M + MR - 1) / MR <= 8 || P >= 1024);
}

/* x [N][C][H][W]; wp packed weights of M x K; bias [M] or NULL; z [N][M][P] or NULL;
 * out [N][M][P]. Returns 0, or -1 when a scratch buffer could not be allocated.
 *
 * Work items are (image, pixel block, channel range); the channel range is all of M unless
 * there are too few pixel blocks to keep the threads busy (small late-stage feature maps), in
 * which case each thread packs the same columns and takes a share of the channels. */
int dscy_f32_conv2d(const float *x, int N, int C, int H, int W, const float *wp, int M,
                    int KH, int KW, int sw, int dh, int dw, const int32_t *ih0,
                    const int32_t *iw0, int P, const float *bias, const float *z, int act,
                    float p0, float p1, float *out, float *xph, int nthreads,
                    const float *uw) {
    const int K = C * KH * KW;
    const int Wph = sw > 1 ? (W + sw - 1) / sw : 0;
    if (uw && wino_enabled && KH == 3 && KW == 3 && sw == 1 && dh == 1 && dw == 1 && P > 0) {
        /* stride 1 both ways, read off the pixel tables (conv_pixel_tables' layout) */
        int pt = -ih0[0], pl = -iw0[0], Wo = 1;
        while (Wo < P && ih0[Wo] == ih0[0]) Wo++;
        int Ho = P / Wo;
        if (Ho * Wo == P && (Ho == 1 || ih0[Wo] == ih0[0] + 1) && iw0[Wo - 1] == Wo - 1 - pl
            && ih0[P - 1] == Ho - 1 - pt && dscy_f32_wino_suits(Ho, Wo)) {
            int rc = dscy_f32_conv2d_wino(x, N, C, H, W, uw, M, pt, pl, Ho, Wo, bias, z, act,
                                          p0, p1, out, nthreads);
            if (rc != -2) return rc;
        }
    }
    const int npanels = (M + MR - 1) / MR;
    const int nstrips = (P + NR - 1) / NR;
    int nt = dscy_nthreads(nthreads);
    if ((double)M * K * P * N < PAR_MIN_MACS) nt = 1;
    /* K blocks of equal size <= KC_MAX */
    int nkb = (K + KC_MAX - 1) / KC_MAX, kcb = (K + nkb - 1) / nkb;
    int njb, nms, spb;
    split_work(N, nstrips, npanels, P % NR && P % NR <= 8, nt, &njb, &nms, &spb);
    long items = (long)N * njb * nms;
    if (items < nt) nt = (int)items;
    int reg_act = dscy_f32_reg_act(act);
    /* The phase split (one pass de-interleaving the input, then contiguous runs for the
     * packer instead of stride-sw gathers) pays where packing dominates: few output channels
     * per packed strip (32 channels: 37 -> 62 GF/s), or large output maps (0.70-0.90x the
     * gather form's time for 32-128 channels on 32x32 to 112x112 outputs: YOLOv8n's stride-2
     * convs, ResNet-50's 7x7 stem 0.78x). With many channels on small maps it loses a little
     * (256 and 512 channels on 14x14 / 7x7 outputs: 1.06x), so those keep the gathers. The
     * generic packer reads x directly. */
    if (!dscy_f32_conv_uses_phase_split(M, KH, KW, sw, P)) xph = NULL;
    if (xph) {
        /* one pass over the input rows; stride 2 de-interleaves 16 floats per step */
        long rows = (long)N * C * H;
        int ntp = (double)rows * W >= 262144.0 ? nt : 1;
        #pragma omp parallel for num_threads(ntp) schedule(static) if (ntp > 1)
        for (long rw = 0; rw < rows; rw++) {
            long pl = rw / H;
            int h = (int)(rw - pl * H);
            const float *r = x + (size_t)rw * W;
            float *d0 = xph + (((size_t)pl * sw) * H + h) * Wph;
            int col = 0;
#ifdef __AVX2__
            if (sw == 2) {
                float *d1 = d0 + (size_t)H * Wph;
                for (; 2 * col + 16 <= W; col += 8)
                    dscy_split_even_odd16(r + 2 * col, d0 + col, d1 + col);
            }
#endif
            for (int ph = 0; ph < sw; ph++) {
                float *d = d0 + (size_t)ph * H * Wph;
                for (int cc = col; cc * sw + ph < W; cc++) d[cc] = r[cc * sw + ph];
            }
        }
    }
    int fail = 0;
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) reduction(|:fail)
    for (long it = 0; it < items; it++) {
        int n = (int)(it / ((long)njb * nms)), rest = (int)(it % ((long)njb * nms));
        int jb = rest / nms, ms = rest % nms;
        int s0 = jb * spb, s1 = s0 + spb < nstrips ? s0 + spb : nstrips;
        int ga = (int)((long)npanels * ms / nms), gb = (int)((long)npanels * (ms + 1) / nms);
        int q0 = s0 * NR, q1 = s1 * NR < P ? s1 * NR : P;
        float *bp = strip_buffer((size_t)(s1 - s0) * SSTRIDE(kcb));
        if (!bp) { fail = 1; continue; }
        conv_src s = {x + (size_t)n * C * H * W, C, H, W, KH, KW, sw, dh, dw, P, ih0, iw0,
                      xph ? xph + (size_t)n * C * sw * H * Wph : NULL, Wph};
        float *on = out + (size_t)n * M * P;
        const float *zn = z ? z + (size_t)n * M * P : NULL;
        for (int k0 = 0; k0 < K; k0 += kcb) {
            int kc = K - k0 < kcb ? K - k0 : kcb, last = k0 + kc >= K;
            tile_ep te = {NULL, last && reg_act ? act : 0, p0, p1, NULL};
            pack_cols(&s, k0, kc, q0, q1 - q0, bp);
            /* panels in blocks that stay in L2 while every strip passes over them */
            for (int g0 = ga; g0 < gb; g0 += MC_PANELS) {
                int g1 = g0 + MC_PANELS < gb ? g0 + MC_PANELS : gb;
                for (int st = s0; st < s1; st++) {
                    int p = st * NR, nr = P - p < NR ? P - p : NR;
                    const float *bs = bp + (size_t)(st - s0) * SSTRIDE(kc);
#if DSCY_F32_TILE2
                    if (st + 1 < s1 && P - p >= 2 * NR) {     /* two full strips */
                        for (int g = g0; g < g1; g++) {
                            int m = g * MR, mr = M - m < MR ? M - m : MR;
                            te.z = last && z ? zn + (size_t)m * P + p : NULL;
                            tile2(kc, wp + ((size_t)g * K + k0) * MR, bs, SSTRIDE(kc),
                                  on + (size_t)m * P + p, P, mr, k0 == 0, bias ? bias + m : NULL,
                                  &te);
                        }
                        st++;
                        continue;
                    }
#endif
                    for (int g = g0; g < g1; g++) {
                        int m = g * MR, mr = M - m < MR ? M - m : MR;
                        te.z = last && z ? zn + (size_t)m * P + p : NULL;
                        if (nr <= 8) {
                            tile8(kc, wp + ((size_t)g * K + k0) * MR, bs, on + (size_t)m * P + p,
                                  P, mr, nr, k0 == 0, bias ? bias + m : NULL, &te);
                            continue;
                        }
                        te.z = last && z ? zn + (size_t)m * P + p : NULL;
                        tile(kc, wp + ((size_t)g * K + k0) * MR, bs, on + (size_t)m * P + p, P,
                             mr, nr, k0 == 0, bias ? bias + m : NULL, &te);
                    }
                }
            }
        }
        if (!reg_act) {    /* activations without a register form: one pass over the rows */
            int m1 = gb * MR < M ? gb * MR : M;
            for (int m = ga * MR; m < m1; m++)
                dscy_bias_act(DSCY_BUILD_ACT_LEVEL, on + (size_t)m * P + q0, NULL, q1 - q0, act,
                              p0, p1);
        }
    }
    return fail ? -1 : 0;
}


/* ---- dense FP32 GEMM on the same tiles: out[T][N] = act(x[T][K] . w[K][N] + bias[N]) ----
 * The roles swap with the conv: tokens are the 6-row panels (x packed per call into
 * xp[panel][k][6]), output features are the 16-wide strips, and the constant weight is packed
 * once into strips per K block, wp[kb][strip][kk][16] (zero past N), so a call packs only x.
 * Used by the FP32 MatMul(+bias+activation) fusion instead of OpenBLAS, whose worker threads
 * spin after each call and then compete with the OpenMP kernels of the next op. */
size_t dscy_f32_gemm_wpack_size(int K, int N) {
    int nkb, kcb;
    nkb = (K + KC_MAX - 1) / KC_MAX; if (nkb < 1) nkb = 1;
    kcb = (K + nkb - 1) / nkb; if (kcb < 1) kcb = 1;
    return (size_t)nkb * ((N + NR - 1) / NR) * (size_t)kcb * NR;
}

void dscy_f32_gemm_pack_w(const float *w, int K, int N, float *wp) {
    int nkb = (K + KC_MAX - 1) / KC_MAX; if (nkb < 1) nkb = 1;
    int kcb = (K + nkb - 1) / nkb; if (kcb < 1) kcb = 1;
    int ns = (N + NR - 1) / NR;
    memset(wp, 0, dscy_f32_gemm_wpack_size(K, N) * sizeof(float));
    for (int k = 0; k < K; k++) {
        int kb = k / kcb, kk = k - kb * kcb;
        for (int n = 0; n < N; n++) {
            int st = n / NR;
            wp[(((size_t)kb * ns + st) * kcb + kk) * NR + (n - st * NR)] = w[(size_t)k * N + n];
        }
    }
}

size_t dscy_f32_gemm_xpack_size(int T, int K) {
    return (size_t)((T + MR - 1) / MR) * (size_t)K * MR;
}

int dscy_f32_gemm(const float *x, ptrdiff_t ldx, int T, int K, const float *wp, int N,
                  const float *bias, int act, float p0, float p1, float *out, ptrdiff_t ldo,
                  float *xp, int nthreads) {
    const int npanels = (T + MR - 1) / MR, nstrips = (N + NR - 1) / NR;
    int nkb = (K + KC_MAX - 1) / KC_MAX; if (nkb < 1) nkb = 1;
    int kcb = (K + nkb - 1) / nkb; if (kcb < 1) kcb = 1;
    int nt = dscy_nthreads(nthreads);
    if ((double)T * K * N < 2.0e6) nt = 1;
    if (T == 1) {
        /* one token (a squeeze-excite FC, a batch-1 head): a GEMV straight from the packed
         * strips, 4 k-interleaved accumulator pairs per strip (the FMA latency chain), no
         * token panel (a 6-row tile would compute 5 zero rows) */
        #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && nstrips > 1)
        for (int st = 0; st < nstrips; st++) {
            int p = st * NR, nr = N - p < NR ? N - p : NR;
            float acc[NR];
#ifdef __AVX2__
            __m256 c[4][2];
            for (int u = 0; u < 4; u++) c[u][0] = c[u][1] = _mm256_setzero_ps();
            for (int k0 = 0, kb = 0; k0 < K; k0 += kcb, kb++) {
                int kc = K - k0 < kcb ? K - k0 : kcb, kk = 0;
                const float *bs = wp + ((size_t)kb * nstrips + st) * kcb * NR;
                const float *xk = x + k0;
                for (; kk + 4 <= kc; kk += 4)
                    for (int u = 0; u < 4; u++) {
                        __m256 xv = _mm256_broadcast_ss(xk + kk + u);
                        c[u][0] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(bs + (kk + u) * NR), c[u][0]);
                        c[u][1] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(bs + (kk + u) * NR + 8), c[u][1]);
                    }
                for (; kk < kc; kk++) {
                    __m256 xv = _mm256_broadcast_ss(xk + kk);
                    c[0][0] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(bs + kk * NR), c[0][0]);
                    c[0][1] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(bs + kk * NR + 8), c[0][1]);
                }
            }
            _mm256_storeu_ps(acc, _mm256_add_ps(_mm256_add_ps(c[0][0], c[1][0]),
                                                _mm256_add_ps(c[2][0], c[3][0])));
            _mm256_storeu_ps(acc + 8, _mm256_add_ps(_mm256_add_ps(c[0][1], c[1][1]),
                                                    _mm256_add_ps(c[2][1], c[3][1])));
#else
            for (int j = 0; j < NR; j++) acc[j] = 0.0f;
            for (int k0 = 0, kb = 0; k0 < K; k0 += kcb, kb++) {
                int kc = K - k0 < kcb ? K - k0 : kcb;
                const float *bs = wp + ((size_t)kb * nstrips + st) * kcb * NR;
                for (int kk = 0; kk < kc; kk++)
                    for (int j = 0; j < NR; j++) acc[j] += x[k0 + kk] * bs[kk * NR + j];
            }
#endif
            float *o = out + p;
            for (int j = 0; j < nr; j++) o[j] = acc[j] + (bias ? bias[p + j] : 0.0f);
            if (act) dscy_bias_act(DSCY_BUILD_ACT_LEVEL, o, NULL, nr, act, p0, p1);
        }
        return 0;
    }
    /* x rows -> panels of 6 tokens (rows past T zero) */
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int g = 0; g < npanels; g++) {
        float *d = xp + (size_t)g * K * MR;
        for (int r = 0; r < MR; r++) {
            int t = g * MR + r;
            if (t < T) { const float *xr = x + (size_t)t * ldx;
                         for (int k = 0; k < K; k++) d[(size_t)k * MR + r] = xr[k]; }
            else for (int k = 0; k < K; k++) d[(size_t)k * MR + r] = 0.0f;
        }
    }
    int njb, nms, spb;
    split_work(1, nstrips, npanels, N % NR && N % NR <= 8, nt, &njb, &nms, &spb);
    long items = (long)njb * nms;
    if (items < nt) nt = (int)items;
    int reg_act = dscy_f32_reg_act(act);
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (long it = 0; it < items; it++) {
        int jb = (int)(it / nms), ms = (int)(it % nms);
        int s0 = jb * spb, s1 = s0 + spb < nstrips ? s0 + spb : nstrips;
        int ga = (int)((long)npanels * ms / nms), gb = (int)((long)npanels * (ms + 1) / nms);
        int q0 = s0 * NR, q1 = s1 * NR < N ? s1 * NR : N;
        for (int k0 = 0, kb = 0; k0 < K; k0 += kcb, kb++) {
            int kc = K - k0 < kcb ? K - k0 : kcb, last = k0 + kc >= K;
            tile_ep te = {NULL, last && reg_act ? act : 0, p0, p1, NULL};
            for (int g0 = ga; g0 < gb; g0 += MC_PANELS) {
                int g1 = g0 + MC_PANELS < gb ? g0 + MC_PANELS : gb;
                for (int st = s0; st < s1; st++) {
                    int p = st * NR, nr = N - p < NR ? N - p : NR;
                    const float *bs = wp + ((size_t)kb * nstrips + st) * kcb * NR;
                    te.cb = k0 == 0 && bias ? bias + p : NULL;
#if DSCY_F32_TILE2
                    if (st + 1 < s1 && N - p >= 2 * NR) {     /* two full strips */
                        for (int g = g0; g < g1; g++) {
                            int m = g * MR, mr = T - m < MR ? T - m : MR;
                            tile2(kc, xp + ((size_t)g * K + k0) * MR, bs, (size_t)kcb * NR,
                                  out + (size_t)m * ldo + p, ldo, mr, k0 == 0, NULL, &te);
                        }
                        st++;
                        continue;
                    }
#endif
                    for (int g = g0; g < g1; g++) {
                        int m = g * MR, mr = T - m < MR ? T - m : MR;
                        const float *a = xp + ((size_t)g * K + k0) * MR;
                        if (nr <= 8) tile8(kc, a, bs, out + (size_t)m * ldo + p, ldo, mr, nr,
                                           k0 == 0, NULL, &te);
                        else tile(kc, a, bs, out + (size_t)m * ldo + p, ldo, mr, nr, k0 == 0,
                                  NULL, &te);
                    }
                }
            }
        }
        if (!reg_act) {
            int m1 = gb * MR < T ? gb * MR : T;
            for (int m = ga * MR; m < m1; m++)
                dscy_bias_act(DSCY_BUILD_ACT_LEVEL, out + (size_t)m * ldo + q0, NULL, q1 - q0,
                              act, p0, p1);
        }
    }
    return 0;
}


/* ---- depthwise 2-D conv (group == C == M, one KH x KW filter per channel) ----
 * out[n][c] = act(dw(x[n][c], w[c]) + bias[c] + z[n][c]), NCHW.
 *
 * Per plane the thread copies the zero-padded input, split into the sh*sw stride phases, into a
 * private buffer ph[a*sw + b][Qh][Qw] (phase (a, b) = padded rows a, a+sh, ... x columns b,
 * b+sw, ...). Tap (i, j) of output (o, q) then reads ph[phase(i, j)][o + (i*dh)/sh][q + (j*dw)/sw]:
 * computed on a grid as wide as a phase row (Ho x Qw), every tap is ONE contiguous window of the
 * buffer, so the inner loop is a long FMA run whatever the plane width (4x4 planes of MobileNet
 * tails included, where row-by-row loops are all scalar tails). The grid runs in row blocks of
 * ~2K floats that stay in L1; the epilogue drops the Qw - Wo junk columns of each grid row, adds
 * z and applies the activation (f32_fused.h's) on the block's output rows. */
DSCY_THREAD_BUFFER(dw_phase_buffer)
DSCY_THREAD_BUFFER(dw_grid_buffer)

#define DW_GRID 2048

/* Row fills and copies of the padded planes, inline: on the 1x1 to 4x4 planes of MobileNet
 * tails a plane costs a few dozen floats of work, and libc calls per row (gcc turns plain loops
 * back into memset / memcpy calls, hence the vector loop) were most of its time. */
static inline void dw_zero(float *d, long n) {
    long i = 0;
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_setzero_ps());
#endif
    for (; i < n; i++) { d[i] = 0.0f; __asm__ volatile("" ::: "memory"); }
}
static inline void dw_copy(float *restrict d, const float *restrict s, long n) {
    long i = 0;
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(s + i));
#endif
    for (; i < n; i++) { d[i] = s[i]; __asm__ volatile("" ::: "memory"); }
}

/* Eight channels at once for small planes (MobileNet tails: 1x1 to 32x32 maps, where the
 * per-plane path spent most of its time on per-plane setup): the eight planes are copied,
 * zero-padded, into one channel-interleaved buffer buf[yy][xx][8] (8x8 transposes), each output
 * pixel is T vector FMAs over the eight channels (taps in order from the bias, as the plane path
 * sums them), and the [pixel][8] result is transposed back to the eight output planes, which
 * then get + z and the activation like the plane path's rows. */
/* When the eight-channel path runs (measured against the plane path, one thread, this VM):
 * small planes 0.31-0.55x the time (1x1 to 16x16), 0.71-0.83x at 6x40 to 32x32, parity from
 * 64x64 and 1.13x at 48x320 with stride 1; stride 2 0.28-0.39x at every size tried (12x80 to
 * 56x56 outputs: the plane path's phase split costs more than the interleave). */
#define DW_GROUP_MAX_P 4096
#define DW_GROUP_MAX_P_STRIDED 65536
static int dw_group_enabled = 1;       /* dscy_f32_dwconv_set_group: tests and A/B timing */
void dscy_f32_dwconv_set_group(int on) { dw_group_enabled = on != 0; }
int dscy_f32_dwconv_get_group(void) { return dw_group_enabled; }

#ifdef __AVX2__
static void dw_group8(const float *x, int H, int W, const float *w, int T, int KH, int KW, int sh,
                      int sw, int dh, int dw, int pt, int pl, int Ho, int Wo, const float *bias,
                      const float *z, int act, float p0, float p1, float *out, float *buf,
                      float *res) {
    const int Hp = (Ho - 1) * sh + (KH - 1) * dh + 1, Wp = (Wo - 1) * sw + (KW - 1) * dw + 1;
    const size_t HWi = (size_t)H * W, P = (size_t)Ho * Wo;
    const __m256 zero = _mm256_setzero_ps();
    for (int yy = 0; yy < Hp; yy++) {
        int iy = yy - pt;
        float *brow = buf + (size_t)yy * Wp * 8;
        if (iy < 0 || iy >= H) {
            for (int xx = 0; xx < Wp; xx++) _mm256_storeu_ps(brow + (size_t)xx * 8, zero);
            continue;
        }
        int xx = 0, xend = pl + W < Wp ? pl + W : Wp;
        for (; xx < Wp && xx < pl; xx++) _mm256_storeu_ps(brow + (size_t)xx * 8, zero);
        const float *xr = x + (size_t)iy * W;               /* xr[xx - pl]: column xx - pl */
        for (; xx + 8 <= xend; xx += 8) {
            __m256 r[8];
            for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(xr + l * HWi + (xx - pl));
            dscy_tr8x8_ps(r);
            for (int q = 0; q < 8; q++) _mm256_storeu_ps(brow + (size_t)(xx + q) * 8, r[q]);
        }
        for (; xx < xend; xx++) {
            float v[8];
            for (int l = 0; l < 8; l++) v[l] = xr[l * HWi + (xx - pl)];
            _mm256_storeu_ps(brow + (size_t)xx * 8, _mm256_loadu_ps(v));
        }
        for (; xx < Wp; xx++) _mm256_storeu_ps(brow + (size_t)xx * 8, zero);
    }
    __m256 wv[64];
    ptrdiff_t toff[64];
    for (int t = 0; t < T; t++) {
        float v[8];
        for (int l = 0; l < 8; l++) v[l] = w[(size_t)l * T + t];
        wv[t] = _mm256_loadu_ps(v);
        toff[t] = ((ptrdiff_t)(t / KW) * dh * Wp + (ptrdiff_t)(t % KW) * dw) * 8;
    }
    __m256 b8 = bias ? _mm256_loadu_ps(bias) : zero;
    for (int oy = 0; oy < Ho; oy++) {
        const float *brow = buf + (size_t)oy * sh * Wp * 8;
        float *rr = res + (size_t)oy * Wo * 8;
        int ox = 0;
        for (; ox + 4 <= Wo; ox += 4) {       /* four outputs: four independent FMA chains */
            const float *s0 = brow + (size_t)ox * sw * 8;
            const ptrdiff_t st = (ptrdiff_t)sw * 8;
            __m256 a0 = b8, a1 = b8, a2 = b8, a3 = b8;
            for (int t = 0; t < T; t++) {
                const float *s = s0 + toff[t];
                a0 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(s), a0);
                a1 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(s + st), a1);
                a2 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(s + 2 * st), a2);
                a3 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(s + 3 * st), a3);
            }
            _mm256_storeu_ps(rr + (size_t)ox * 8, a0);
            _mm256_storeu_ps(rr + (size_t)(ox + 1) * 8, a1);
            _mm256_storeu_ps(rr + (size_t)(ox + 2) * 8, a2);
            _mm256_storeu_ps(rr + (size_t)(ox + 3) * 8, a3);
        }
        for (; ox < Wo; ox++) {
            const float *s0 = brow + (size_t)ox * sw * 8;
            __m256 a0 = b8;
            for (int t = 0; t < T; t++) a0 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(s0 + toff[t]), a0);
            _mm256_storeu_ps(rr + (size_t)ox * 8, a0);
        }
    }
    size_t p = 0;
    for (; p + 8 <= P; p += 8) {
        __m256 r[8];
        for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(res + (p + q) * 8);
        dscy_tr8x8_ps(r);
        for (int l = 0; l < 8; l++) _mm256_storeu_ps(out + l * P + p, r[l]);
    }
    for (; p < P; p++)
        for (int l = 0; l < 8; l++) out[l * P + p] = res[p * 8 + l];
    for (int l = 0; l < 8; l++) {
        float *o = out + l * P;
        if (z) {
            const float *zl = z + l * P;
            for (size_t q = 0; q < P; q++) o[q] += zl[q];
        }
        if (act) dscy_bias_act(DSCY_BUILD_ACT_LEVEL, o, NULL, (long)P, act, p0, p1);
    }
}
#endif

int dscy_f32_dwconv2d(const float *x, int N, int C, int H, int W, const float *w, int KH, int KW,
                      int sh, int sw, int dh, int dw, int pt, int pl, int Ho, int Wo,
                      const float *bias, const float *z, int act, float p0, float p1,
                      float *out, int nthreads) {
    const int T = KH * KW;
    const int Qh = ((Ho - 1) * sh + (KH - 1) * dh) / sh + 1;
    const int Qw = ((Wo - 1) * sw + (KW - 1) * dw) / sw + 1;
    const size_t psz = (size_t)Qh * Qw;                 /* one phase plane */
    const size_t bufn = psz * sh * sw + Qw + 8;         /* windows may run past the last plane */
    ptrdiff_t stack_off[64];
    ptrdiff_t *toff = T <= 64 ? stack_off : (ptrdiff_t *)malloc(sizeof(ptrdiff_t) * T);
    if (!toff) return -1;
    for (int i = 0; i < KH; i++)
        for (int j = 0; j < KW; j++) {
            int a = i * dh, b = j * dw;
            toff[i * KW + j] = (ptrdiff_t)((a % sh) * sw + b % sw) * psz + (ptrdiff_t)(a / sh) * Qw + b / sw;
        }
    int R = DW_GRID / Qw;                                /* output rows per grid block */
    if (R < 1) R = 1;
    if (R > Ho) R = Ho;
    const size_t gridn = (size_t)R * Qw + 8;
    long planes = (long)N * C;
    /* work units per image: G groups of eight channels (small planes, AVX2), then single planes */
    const int group8 = CONV_AVX2 && dw_group_enabled && C >= 8 && T <= 64
                       && (long)Ho * Wo <= (sh > 1 || sw > 1 ? DW_GROUP_MAX_P_STRIDED
                                                              : DW_GROUP_MAX_P);
    const int G = group8 ? C / 8 : 0, per = G + (C - 8 * G);
    const long units = (long)N * per;
    const size_t Hp8 = (size_t)((Ho - 1) * sh + (KH - 1) * dh + 1)
                       * (size_t)((Wo - 1) * sw + (KW - 1) * dw + 1) * 8;
    const size_t phn = group8 && Hp8 + 8 > bufn ? Hp8 + 8 : bufn;
    const size_t gn = group8 && (size_t)Ho * Wo * 8 + 8 > gridn ? (size_t)Ho * Wo * 8 + 8 : gridn;
    int nt = dscy_nthreads(nthreads);
    if ((double)planes * Ho * Qw * T < 1.5e5) nt = 1;   /* waking a thread costs more */
    if (units < nt) nt = (int)units;
    int fail = 0;
    /* the thread's buffers fetched once (threadprivate lookups cost ~2 calls per plane) */
    #pragma omp parallel num_threads(nt) if (nt > 1) reduction(|:fail)
    {
    float *ph = dw_phase_buffer(phn), *g = dw_grid_buffer(gn);
    if (!ph || !g) fail = 1;
    #pragma omp for schedule(static)
    for (long u = 0; u < units; u++) {
        if (!ph || !g) continue;
        int un = (int)(u / per), uk = (int)(u % per);
#ifdef __AVX2__
        if (uk < G) {
            size_t pl0 = (size_t)un * C + (size_t)uk * 8;
            dw_group8(x + pl0 * H * W, H, W, w + (size_t)uk * 8 * T, T, KH, KW, sh, sw, dh, dw,
                      pt, pl, Ho, Wo, bias ? bias + uk * 8 : NULL,
                      z ? z + pl0 * Ho * Wo : NULL, act, p0, p1, out + pl0 * Ho * Wo, ph, g);
            continue;
        }
#endif
        long pi = (long)un * C + 8 * G + (uk - G);
        int c = (int)(pi % C);
        const float *xp = x + (size_t)pi * H * W;
        const float *wc = w + (size_t)c * T;
        const float bc = bias ? bias[c] : 0.0f;
        /* padded, phase-split copy of the plane */
        for (int a = 0; a < sh; a++)
            for (int b = 0; b < sw; b++) {
                float *d = ph + (size_t)(a * sw + b) * psz;
                /* columns q with 0 <= q*sw + b - pl < W */
                int qlo = pl - b > 0 ? (pl - b + sw - 1) / sw : 0;
                int qhi = (W - 1 + pl - b) >= 0 ? (W - 1 + pl - b) / sw + 1 : 0;
                if (qhi > Qw) qhi = Qw;
                if (qlo > qhi) qlo = qhi;
                for (int r = 0; r < Qh; r++, d += Qw) {
                    int ih = r * sh + a - pt;
                    if (ih < 0 || ih >= H || qlo >= qhi) { dw_zero(d, Qw); continue; }
                    const float *s = xp + (size_t)ih * W + (ptrdiff_t)qlo * sw + b - pl;
                    dw_zero(d, qlo);
                    if (sw == 1) dw_copy(d + qlo, s, qhi - qlo);
                    else for (int q = qlo; q < qhi; q++) d[q] = s[(ptrdiff_t)(q - qlo) * sw];
                    dw_zero(d + qhi, Qw - qhi);
                }
            }
        dw_zero(ph + psz * sh * sw, Qw + 8);
        float *on = out + (size_t)pi * Ho * Wo;
        const float *zn = z ? z + (size_t)pi * Ho * Wo : NULL;
        for (int o0 = 0; o0 < Ho; o0 += R) {
            int o1 = o0 + R < Ho ? o0 + R : Ho;
            long L = (long)(o1 - o0) * Qw, L8 = (L + 7) & ~7L;
            const float *base = ph + (size_t)o0 * Qw;
            long p = 0;
#ifdef __AVX2__
            for (; p + 32 <= L8; p += 32) {
                __m256 a0 = _mm256_set1_ps(bc), a1 = a0, a2 = a0, a3 = a0;
                for (int t = 0; t < T; t++) {
                    const float *s = base + toff[t] + p;
                    __m256 wv = _mm256_set1_ps(wc[t]);
                    a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s), a0);
                    a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8), a1);
                    a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 16), a2);
                    a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 24), a3);
                }
                _mm256_storeu_ps(g + p, a0);
                _mm256_storeu_ps(g + p + 8, a1);
                _mm256_storeu_ps(g + p + 16, a2);
                _mm256_storeu_ps(g + p + 24, a3);
            }
            for (; p < L8; p += 8) {
                /* taps over four accumulators: one FMA chain of T taps was latency-bound
                 * (4 cycles a tap) on the 1x1 to 2x2 planes of MobileNet tails */
                __m256 a0 = _mm256_set1_ps(bc), a1 = _mm256_setzero_ps(), a2 = a1, a3 = a1;
                int t = 0;
                for (; t + 4 <= T; t += 4) {
                    a0 = _mm256_fmadd_ps(_mm256_set1_ps(wc[t]), _mm256_loadu_ps(base + toff[t] + p), a0);
                    a1 = _mm256_fmadd_ps(_mm256_set1_ps(wc[t + 1]), _mm256_loadu_ps(base + toff[t + 1] + p), a1);
                    a2 = _mm256_fmadd_ps(_mm256_set1_ps(wc[t + 2]), _mm256_loadu_ps(base + toff[t + 2] + p), a2);
                    a3 = _mm256_fmadd_ps(_mm256_set1_ps(wc[t + 3]), _mm256_loadu_ps(base + toff[t + 3] + p), a3);
                }
                for (; t < T; t++)
                    a0 = _mm256_fmadd_ps(_mm256_set1_ps(wc[t]), _mm256_loadu_ps(base + toff[t] + p), a0);
                _mm256_storeu_ps(g + p, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            }
#else
            for (; p < L8; p += 64) {
                long n = L8 - p < 64 ? L8 - p : 64;
                float *gp = g + p;
                for (long j = 0; j < n; j++) gp[j] = bc;
                for (int t = 0; t < T; t++) {
                    const float *s = base + toff[t] + p;
                    const float wt = wc[t];
                    for (long j = 0; j < n; j++) gp[j] += wt * s[j];
                }
            }
#endif
            /* epilogue: crop the junk columns, + z, activation */
            float *ob = on + (size_t)o0 * Wo;
            for (int o = o0; o < o1; o++) {
                const float *gr = g + (size_t)(o - o0) * Qw;
                float *d = on + (size_t)o * Wo;
                if (zn) {
                    const float *zr = zn + (size_t)o * Wo;
                    for (int q = 0; q < Wo; q++) d[q] = gr[q] + zr[q];
                } else dw_copy(d, gr, Wo);
            }
            if (act) dscy_bias_act(DSCY_BUILD_ACT_LEVEL, ob, NULL, (long)(o1 - o0) * Wo, act, p0, p1);
        }
    }
    }
    if (toff != stack_off) free(toff);
    return fail ? -1 : 0;
}
