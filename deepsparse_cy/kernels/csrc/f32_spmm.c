/* Sparse FP32 GEMM (unstructured), XNNPACK f32-spmm style: per nonzero, broadcast the weight and
 * FMA a vector of tokens; activations packed feature-major per token tile ([K][T], T = 32, tail
 * tiles 8). Rows in natural order, threads split by nonzeros. out[M][N] tokens-major. */
#include "dscy_common.h"

#define T32 32

static inline int ntiles32(int M) { return M / T32; }
static inline int ntiles_all(int M) { int r = M % T32; return M / T32 + (r + 7) / 8; }
static inline size_t tile_off(int M, int K, int t, int *T) {
    int n32 = ntiles32(M);
    if (t < n32) { *T = T32; return (size_t)t * K * T32; }
    *T = 8;
    return (size_t)n32 * K * T32 + (size_t)(t - n32) * K * 8;
}

size_t dscy_f32_spmm_xt_size(int M, int K) { int T; return tile_off(M, K, ntiles_all(M), &T); }

void dscy_f32_pack_x_tiles(const float *x, ptrdiff_t ldx, int M, int K, float *xt, int nthreads) {
    int nt = dscy_nthreads(nthreads), ntl = ntiles_all(M);
    #pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && (long)M * K > 65536)
    for (int t = 0; t < ntl; t++) {
        int T; float *d = xt + tile_off(M, K, t, &T);
        int m0 = t < ntiles32(M) ? t * T32 : ntiles32(M) * T32 + (t - ntiles32(M)) * 8;
        int i0 = 0;
#ifdef __AVX2__
        /* whole groups of 8 tokens: 8x8 transposes, one 32-byte store per k (a token at a time
         * was K scalar stores T * 4 bytes apart) */
        for (; i0 + 8 <= T && m0 + i0 + 8 <= M; i0 += 8) {
            const float *s = x + (ptrdiff_t)(m0 + i0) * ldx;
            int k = 0;
            for (; k + 8 <= K; k += 8) {
                __m256 r[8];
                for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(s + (ptrdiff_t)j * ldx + k);
                dscy_tr8x8_ps(r);
                for (int j = 0; j < 8; j++) _mm256_storeu_ps(d + (size_t)(k + j) * T + i0, r[j]);
            }
            for (; k < K; k++)
                for (int j = 0; j < 8; j++) d[(size_t)k * T + i0 + j] = s[(ptrdiff_t)j * ldx + k];
        }
#endif
        for (int i = i0; i < T; i++) {
            int m = m0 + i;
            if (m >= M) { for (int k = 0; k < K; k++) d[(size_t)k * T + i] = 0.0f; continue; }
            const float *s = x + (ptrdiff_t)m * ldx;
            for (int k = 0; k < K; k++) d[(size_t)k * T + i] = s[k];
        }
    }
}

/* the activation over one staged row of n values */
static inline void act_row(float *a, int n, int act, float lo, float hi) {
    int i = 0;
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) _mm256_store_ps(a + i, dscy_act8(_mm256_load_ps(a + i), act, lo, hi));
#endif
    for (; i < n; i++) a[i] = dscy_act1(a[i], act, lo, hi);
}

/* Rows n0..n0+nr-1 of the staged results (stage[r][T32]) to the tokens-major output. mode 0:
 * store (activation already applied to the stage); 1: add to out (a later K panel); 2: add,
 * then the activation (the last K panel). With 8 rows of full 8-token blocks, 8x8 transposes
 * give each token one 32-byte access (a row at a time was 32 scalar stores 4*ldo bytes apart,
 * each its own cache line). */
static void flush_rows(const float *stage, float *out, ptrdiff_t ldo, int m0, int mt, int n0,
                       int nr, int mode, int act, float lo, float hi) {
    float *o = out + (ptrdiff_t)m0 * ldo + n0;
#ifdef __AVX2__
    if (nr == 8 && mt % 8 == 0) {
        for (int blk = 0; blk < mt / 8; blk++) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_load_ps(stage + i * T32 + 8 * blk);
            dscy_tr8x8_ps(r);
            for (int i = 0; i < 8; i++) {
                float *oa = o + (8 * blk + i) * ldo;
                __m256 a = r[i];
                if (mode) {
                    a = _mm256_add_ps(_mm256_loadu_ps(oa), a);
                    if (mode == 2) a = dscy_act8(a, act, lo, hi);
                }
                _mm256_storeu_ps(oa, a);
            }
        }
        return;
    }
#endif
    for (int i = 0; i < mt; i++)
        for (int r = 0; r < nr; r++) {
            float *d = o + (ptrdiff_t)i * ldo + r, v = stage[r * T32 + i];
            if (mode) { v = *d + v; if (mode == 2) v = dscy_act1(v, act, lo, hi); }
            *d = v;
        }
}

void dscy_f32_spmm(const float *xt, int M, int K, const int32_t *row_ptr, const uint16_t *idx,
                   const float *vals, int N, const float *bias, int act, float lo, float hi,
                   float *out, ptrdiff_t ldo, const int32_t *panel_ptr, int npan, int nthreads) {
    if (!panel_ptr) npan = 1;
    int ntl = ntiles_all(M), n32 = ntiles32(M);
    int nt = dscy_nthreads(nthreads);
    /* rows in chunks of 64 claimed by the threads (dscy_claim: each its own share first, then
     * helping the others), so a slower core does not hold up the call */
    long units = (N + 63) / 64;
    if (nt > units) nt = (int)units;
    DSCY_CLAIMS(next, nt);
    dscy_claims_init(next, units, nt);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, k = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float stage[8 * T32] __attribute__((aligned(64)));
        for (long u; (u = dscy_claim(next, units, nt, tid, &k)) >= 0; ) {
        int r0 = (int)u * 64, r1 = r0 + 64 < N ? r0 + 64 : N;
        for (int t = 0; t < ntl; t++) {
            int T; const float *xtile = xt + tile_off(M, K, t, &T);
            int m0 = t < n32 ? t * T32 : n32 * T32 + (t - n32) * 8;
            int mt = M - m0 < T ? M - m0 : T;
            for (int p = 0; p < npan; p++) {
            int mode = p == 0 ? 0 : (p == npan - 1 ? 2 : 1);
            int ns = r0;                          /* first row of the current stage */
            for (int n = r0; n < r1; n++) {
                float *acc = stage + (n - ns) * T32;
                int b0, nb;
                if (panel_ptr) {
                    const int32_t *pp = panel_ptr + (size_t)n * (npan + 1) + p;
                    b0 = pp[0]; nb = pp[1] - b0;
                } else { b0 = row_ptr[n]; nb = row_ptr[n + 1] - b0; }
                const uint16_t *ix = idx + b0;
                const float *v = vals + b0;
                float bn = bias && p == 0 ? bias[n] : 0.0f;
#if defined(__AVX512F__)
                if (T == T32) {
                    /* a nonzero's 32 tokens in two zmm; four accumulator sets (nonzero index
                     * mod 4) keep 8 FMA chains in flight */
                    __m512 a0 = _mm512_setzero_ps(), a1 = a0, c0 = a0, c1 = a0;
                    __m512 e0 = a0, e1 = a0, g0 = a0, g1 = a0;
                    int b = 0;
                    for (; b + 3 < nb; b += 4) {
                        const float *x0 = xtile + (size_t)ix[b] * T32, *x1 = xtile + (size_t)ix[b + 1] * T32;
                        const float *x2 = xtile + (size_t)ix[b + 2] * T32, *x3 = xtile + (size_t)ix[b + 3] * T32;
                        __m512 w0 = _mm512_set1_ps(v[b]), w1 = _mm512_set1_ps(v[b + 1]);
                        __m512 w2 = _mm512_set1_ps(v[b + 2]), w3 = _mm512_set1_ps(v[b + 3]);
                        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0), a0);
                        a1 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16), a1);
                        c0 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1), c0);
                        c1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + 16), c1);
                        e0 = _mm512_fmadd_ps(w2, _mm512_loadu_ps(x2), e0);
                        e1 = _mm512_fmadd_ps(w2, _mm512_loadu_ps(x2 + 16), e1);
                        g0 = _mm512_fmadd_ps(w3, _mm512_loadu_ps(x3), g0);
                        g1 = _mm512_fmadd_ps(w3, _mm512_loadu_ps(x3 + 16), g1);
                    }
                    for (; b < nb; b++) {
                        const float *x0 = xtile + (size_t)ix[b] * T32;
                        __m512 w0 = _mm512_set1_ps(v[b]);
                        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0), a0);
                        a1 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16), a1);
                    }
                    __m512 bb = _mm512_set1_ps(bn);
                    _mm512_store_ps(acc, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, e0), _mm512_add_ps(c0, g0)), bb));
                    _mm512_store_ps(acc + 16, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a1, e1), _mm512_add_ps(c1, g1)), bb));
                } else
#endif
#ifdef __AVX2__
                if (T == T32) {
                    /* two accumulator sets (even / odd nonzeros) hide the FMA latency */
                    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                    __m256 c0 = a0, c1 = a0, c2 = a0, c3 = a0;
                    int b = 0;
                    for (; b + 1 < nb; b += 2) {
                        const float *x0 = xtile + (size_t)ix[b] * T32, *x1 = xtile + (size_t)ix[b + 1] * T32;
                        __m256 w0 = _mm256_broadcast_ss(v + b), w1 = _mm256_broadcast_ss(v + b + 1);
                        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0), a0);
                        a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8), a1);
                        a2 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 16), a2);
                        a3 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 24), a3);
                        c0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1), c0);
                        c1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1 + 8), c1);
                        c2 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1 + 16), c2);
                        c3 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1 + 24), c3);
                    }
                    if (b < nb) {
                        const float *x0 = xtile + (size_t)ix[b] * T32;
                        __m256 w0 = _mm256_broadcast_ss(v + b);
                        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0), a0);
                        a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8), a1);
                        a2 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 16), a2);
                        a3 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 24), a3);
                    }
                    __m256 bb = _mm256_set1_ps(bn);
                    _mm256_store_ps(acc, _mm256_add_ps(_mm256_add_ps(a0, c0), bb));
                    _mm256_store_ps(acc + 8, _mm256_add_ps(_mm256_add_ps(a1, c1), bb));
                    _mm256_store_ps(acc + 16, _mm256_add_ps(_mm256_add_ps(a2, c2), bb));
                    _mm256_store_ps(acc + 24, _mm256_add_ps(_mm256_add_ps(a3, c3), bb));
                } else {
                    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                    int b = 0;
                    for (; b + 3 < nb; b += 4) {
                        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(v + b), _mm256_loadu_ps(xtile + (size_t)ix[b] * 8), a0);
                        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(v + b + 1), _mm256_loadu_ps(xtile + (size_t)ix[b + 1] * 8), a1);
                        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(v + b + 2), _mm256_loadu_ps(xtile + (size_t)ix[b + 2] * 8), a2);
                        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(v + b + 3), _mm256_loadu_ps(xtile + (size_t)ix[b + 3] * 8), a3);
                    }
                    for (; b < nb; b++)
                        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(v + b), _mm256_loadu_ps(xtile + (size_t)ix[b] * 8), a0);
                    _mm256_store_ps(acc, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                                       _mm256_set1_ps(bn)));
                }
#else
                for (int i = 0; i < T; i++) acc[i] = 0.0f;
                for (int b = 0; b < nb; b++) {
                    const float *xr = xtile + (size_t)ix[b] * T;
                    float w = v[b];
                    for (int i = 0; i < T; i++) acc[i] += w * xr[i];
                }
                for (int i = 0; i < T; i++) acc[i] += bn;
#endif
                if (act != DSCY_ACT_NONE && npan == 1) act_row(acc, mt, act, lo, hi);
                if (n - ns == 7 || n == r1 - 1) {
                    flush_rows(stage, out, ldo, m0, mt, ns, n - ns + 1, mode, act, lo, hi);
                    ns = n + 1;
                }
            }
            }
        }
        }
    }
}
