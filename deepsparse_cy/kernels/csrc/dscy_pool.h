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

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")   /* lets gcc vectorise the compare + select */
#endif

static inline float dscy_fmax1(float m, float v) {
    float r = v > m ? v : m;     /* maxss */
    return m != m ? v : r;       /* a NaN so far gives way to v: branch-free select */
}

static void dscy_maxpool2d_plane(const float *x, int H, int W, float *y, int Ho, int Wo, int kh,
                                 int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                                 float *tmp) {
    for (int oh = 0; oh < Ho; oh++) {
        int ih0 = oh * sh - pt, nrows = 0, vpad;
        for (int i = 0; i < kh; i++) {
            int ih = ih0 + i * dh;
            if (ih < 0 || ih >= H) continue;
            const float *r = x + (long)ih * W;
            if (nrows++ == 0) {
                for (int c = 0; c < W; c++) tmp[c] = r[c];
            } else {
                for (int c = 0; c < W; c++) tmp[c] = dscy_fmax1(tmp[c], r[c]);
            }
        }
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

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#endif
