/* Sparse INT8 GEMM for pruned weights, XNNPACK-style: per stored weight block, broadcast the
 * weights and multiply a vector of tokens (activations packed k-pair-major per token tile), so
 * any sparsity pattern along K costs only its stored blocks.
 *
 * Formats (built in numpy by qs8.py): row-compressed, rows in natural order (consecutive rows of
 * one thread then write neighbouring bytes of the tokens-major output, which keeps the transposed
 * stores in L1); idx is a 16-bit block index along K; vals are s8:
 *   bp = 2 "block4": 1x4 blocks along K (4 weights per block, 6 bytes per block with the offset)
 *   bp = 1 "unstructured": 1x2 pair blocks (2 weights per block, 4 bytes per block)
 * Threads split rows by stored blocks (nonzeros), not by row count, or, with enough tokens,
 * whole token tiles. */
#include "dscy_common.h"

#define T32 DSCY_SPMM_T

/* The avx512_vnni build keeps the tiles as bytes for vpdpbusd (u8 activations x s8 weights, four
 * k per 32-bit lane): a tile is slots of T tokens x 4 bytes, slot q = k 4q..4q+3 for block4, or
 * k 2p, 2p+1 and two zero bytes for unstructured pair p (the weights broadcast as 32 bits, a
 * pair's upper half zero), in the same space the int16 k-pair layout takes. s8 activations are
 * stored xor 0x80 (x + 128, unsigned): the caller's bias carries -128 * (sum of the row's
 * weights) then (DSCY_QUADS, dscy_kernels.h). */

/* Tiles: M / 32 of 32 tokens, then the rest: up to 8 tokens as one 8-token tile, more as one
 * 32-token tile padded with zero tokens (its outputs stored for the real ones only). With 8-token
 * tiles for every tail (ResNet-50's 7x7 layers, M = 49: one 32 + three 8) each output row paid
 * its epilogue per tile, on the slow generic path; the padded tile takes the fast one. */
#define DSCY_TAIL8 8
static inline int ntiles32(int M) { return M / T32 + (M % T32 > DSCY_TAIL8); }
static inline int ntiles_all(int M) { return ntiles32(M) + (M % T32 > 0 && M % T32 <= DSCY_TAIL8); }
/* int16 offset of tile t and its width */
static inline size_t tile_off(int M, int K2, int t, int *T) {
    int n32 = ntiles32(M);
    if (t < n32) { *T = T32; return (size_t)t * K2 * T32 * 2; }
    *T = 8;
    return (size_t)n32 * K2 * T32 * 2 + (size_t)(t - n32) * K2 * 8 * 2;
}

/* where tile t is packed: its place in the whole-M layout (at < 0), or at (int16 units: a
 * thread's own one- or two-tile buffer) */
static inline size_t tile_at(int M, int K2, int t, int *T, ptrdiff_t at) {
    size_t o = tile_off(M, K2, t, T);
    return at < 0 ? o : (size_t)at;
}

/* first token of tile t */
static inline int tile_m0(int M, int t) {
    int n32 = ntiles32(M);
    return t < n32 ? t * T32 : n32 * T32 + (t - n32) * 8;
}

size_t dscy_qs8_spmm_xt_size(int M, int Kp) {
    int T; return tile_off(M, Kp / 2, ntiles_all(M), &T);
}

#ifdef __AVX2__
/* 8 tokens x 16 k of one tile: widen the 8 row segments to int16 (8 k-pairs = 8 int32 lanes
 * per token) and transpose 8x8 int32 so each k-pair gets its 8 tokens as one 32-byte store. */
static inline void pack8x16(const uint8_t *x, ptrdiff_t ldx, int x_signed, int16_t *d, int T) {
    __m256i r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) {
        __m128i b = _mm_loadu_si128((const __m128i *)(x + (ptrdiff_t)i * ldx));
        r[i] = x_signed ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
    }
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) {
        u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    /* u[j] (j < 4) holds pairs j and j+4 of tokens 0-3 (lanes 0-3 | 4-7 of the 128-bit halves);
     * u[4 + j] the same for tokens 4-7 */
    for (int j = 0; j < 4; j++) {
        __m256i lo = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);   /* pair j */
        __m256i hi = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);   /* pair j + 4 */
        _mm256_storeu_si256((__m256i *)(d + (size_t)j * T * 2), lo);
        _mm256_storeu_si256((__m256i *)(d + (size_t)(j + 4) * T * 2), hi);
    }
}
#endif

#if DSCY_QUADS
/* slot s of one token (element k at xm[k * ks]: a row, ks = 1, or planes, ks = plane; xr = 0x80
 * for s8): its bytes as one 32-bit lane, zero past K */
static inline uint32_t slot_bytes(const uint8_t *xm, ptrdiff_t ks, int K, int bp, int s,
                                  uint8_t xr) {
    uint32_t v = 0;
    int sk = bp == 2 ? 4 : 2;
    for (int j = 0; j < sk; j++) {
        int k = s * sk + j;
        if (k < K) v |= (uint32_t)(uint8_t)(xm[(ptrdiff_t)k * ks] ^ xr) << (8 * j);
    }
    return v;
}

/* Byte slots of tile t (the avx2 build's pack_tile, for vpdpbusd): groups of 8 real tokens take
 * 8 slots at a time by an 8x8 transpose of 32-bit lanes, the rest slot by slot. */
static void pack_tile_q(const void *x, int x_signed, ptrdiff_t ldx, int M, int K, int16_t *xt,
                        int K2, int t, int mbase, int bp, ptrdiff_t at) {
    int T; uint8_t *d = (uint8_t *)(xt + tile_at(M, K2, t, &T, at));
    int m0 = tile_m0(M, t), ns = bp == 2 ? K2 / 2 : K2, sk = bp == 2 ? 4 : 2;
    uint8_t xr = x_signed ? 0x80 : 0;
    __m256i flip = _mm256_set1_epi8((char)xr);
    int i0 = 0;
    __m256i z = _mm256_setzero_si256();
    for (; i0 + 8 <= T && m0 + i0 + 8 <= M; i0 += 8) {
        const uint8_t *xs = (const uint8_t *)x + (ptrdiff_t)(m0 + i0 - mbase) * ldx;
        for (int s = 0; s < ns; s += 8) {
            /* 8 slots of each row: 8 * sk bytes from k = s * sk, the last group under a byte
             * mask (nothing past K is read; the bytes past it zero) */
            int left = K - s * sk;
            __m256 r[8];
            if (bp == 2 && left >= 32)      /* whole slots: plain loads (the flip: s8 only) */
                for (int i = 0; i < 8; i++)
                    r[i] = _mm256_castsi256_ps(_mm256_xor_si256(
                        _mm256_loadu_si256((const __m256i *)(xs + (ptrdiff_t)i * ldx + (size_t)s * sk)), flip));
            else
            for (int i = 0; i < 8; i++) {
                const uint8_t *p = xs + (ptrdiff_t)i * ldx + (size_t)s * sk;
                __m256i v;
                if (bp == 2) {
                    __mmask32 m = left >= 32 ? 0xFFFFFFFFu : left > 0 ? (__mmask32)((1u << left) - 1) : 0;
                    v = m == 0xFFFFFFFFu ? _mm256_loadu_si256((const __m256i *)p)
                                         : _mm256_maskz_loadu_epi8(m, p);
                    v = _mm256_mask_blend_epi8(m, z, _mm256_xor_si256(v, flip));
                } else {
                    __mmask16 m = left >= 16 ? 0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
                    __m128i b = m == 0xFFFF ? _mm_loadu_si128((const __m128i *)p)
                                            : _mm_maskz_loadu_epi8(m, p);
                    v = _mm256_cvtepu16_epi32(b);
                    /* flip the data bytes that exist (k < K; a slot's two padding bytes stay
                     * zero), as slot_bytes does */
                    __m256i fl = _mm256_cvtepu16_epi32(_mm_maskz_mov_epi8(m, _mm_set1_epi8((char)xr)));
                    v = _mm256_xor_si256(v, fl);
                }
                r[i] = _mm256_castsi256_ps(v);
            }
            dscy_tr8x8_ps(r);
            int nj = ns - s < 8 ? ns - s : 8;
            for (int j = 0; j < nj; j++)
                _mm256_storeu_ps((float *)(d + ((size_t)(s + j) * T + i0) * 4), r[j]);
        }
    }
    for (int i = i0; i < T; i++) {
        int m = m0 + i;
        const uint8_t *xm = (const uint8_t *)x + (ptrdiff_t)(m < M ? m - mbase : 0) * ldx;
        for (int s = 0; s < ns; s++) {
            uint32_t v = m < M ? slot_bytes(xm, 1, K, bp, s, xr) : 0;
            memcpy(d + ((size_t)s * T + i) * 4, &v, 4);
        }
    }
}

/* Byte slots of tile t of a planar x [B][K][plane]: inside one image slot s interleaves the
 * bytes of planes sk*s.. at p0.. (16 tokens per step), across images and tails token by token. */
static void pack_tile_planar_q(const uint8_t *x, int x_signed, ptrdiff_t plane, int M, int K,
                               int16_t *xt, int K2, int t, int bp, ptrdiff_t at) {
    int T; uint8_t *d = (uint8_t *)(xt + tile_at(M, K2, t, &T, at));
    int m0 = tile_m0(M, t), ns = bp == 2 ? K2 / 2 : K2, sk = bp == 2 ? 4 : 2;
    uint8_t xr = x_signed ? 0x80 : 0;
    ptrdiff_t b0 = m0 / plane, p0 = m0 - b0 * plane;
    if (p0 + T <= plane && m0 + T <= M && T % 16 == 0) {
        const uint8_t *xb = x + (size_t)b0 * K * plane + p0;
        __m128i flip = _mm_set1_epi8((char)xr), z = _mm_setzero_si128();
        for (int s = 0; s < ns; s++) {
            uint8_t *ds = d + (size_t)s * T * 4;
            for (int i = 0; i < T; i += 16) {
                __m128i r[4];
                for (int j = 0; j < 4; j++) {
                    int k = s * sk + j;
                    r[j] = j < sk && k < K
                        ? _mm_xor_si128(_mm_loadu_si128((const __m128i *)(xb + (size_t)k * plane + i)), flip)
                        : z;
                }
                __m128i lo01 = _mm_unpacklo_epi8(r[0], r[1]), hi01 = _mm_unpackhi_epi8(r[0], r[1]);
                __m128i lo23 = _mm_unpacklo_epi8(r[2], r[3]), hi23 = _mm_unpackhi_epi8(r[2], r[3]);
                _mm_storeu_si128((__m128i *)(ds + 4 * i), _mm_unpacklo_epi16(lo01, lo23));
                _mm_storeu_si128((__m128i *)(ds + 4 * i + 16), _mm_unpackhi_epi16(lo01, lo23));
                _mm_storeu_si128((__m128i *)(ds + 4 * i + 32), _mm_unpacklo_epi16(hi01, hi23));
                _mm_storeu_si128((__m128i *)(ds + 4 * i + 48), _mm_unpackhi_epi16(hi01, hi23));
            }
        }
        return;
    }
    for (int i = 0; i < T; i++) {
        int m = m0 + i;
        ptrdiff_t b = m < M ? m / plane : 0;
        const uint8_t *xm = x + (size_t)b * K * plane + (m - b * plane);
        for (int s = 0; s < ns; s++) {
            uint32_t v = m < M ? slot_bytes(xm, plane, K, bp, s, xr) : 0;
            memcpy(d + ((size_t)s * T + i) * 4, &v, 4);
        }
    }
}

#endif

/* Pack tile t of x into xt (layout: dscy_kernels.h); row m of x is at x + (m - mbase) * ldx. */
static void pack_tile(const void *x, int x_signed, ptrdiff_t ldx, int M, int K, int16_t *xt,
                      int K2, int t, int mbase, int bp, ptrdiff_t at) {
#if DSCY_QUADS
    pack_tile_q(x, x_signed, ldx, M, K, xt, K2, t, mbase, bp, at);
    return;
#endif
    (void)bp;
    int T; int16_t *d = xt + tile_at(M, K2, t, &T, at);
    int m0 = tile_m0(M, t);
    int i0 = 0;
#ifdef __AVX2__
    /* groups of 8 real tokens: the first K/16*16 k by 8x8 transposes, the rest below */
    int kv = K / 16 * 16;
    for (; i0 + 8 <= T && m0 + i0 + 8 <= M && kv > 0; i0 += 8) {
        const uint8_t *xs = (const uint8_t *)x + (ptrdiff_t)(m0 + i0 - mbase) * ldx;
        for (int k = 0; k < kv; k += 16)
            pack8x16(xs + k, ldx, x_signed, d + (size_t)(k / 2) * T * 2 + 2 * i0, T);
        for (int i = i0; i < i0 + 8; i++) {
            int m = m0 + i;
            int16_t *dd = d + 2 * i;
            if (x_signed) {
                const int8_t *s = (const int8_t *)x + (ptrdiff_t)(m - mbase) * ldx;
                for (int k = kv; k < K; k++) dd[(size_t)(k >> 1) * T * 2 + (k & 1)] = s[k];
            } else {
                const uint8_t *s = (const uint8_t *)x + (ptrdiff_t)(m - mbase) * ldx;
                for (int k = kv; k < K; k++) dd[(size_t)(k >> 1) * T * 2 + (k & 1)] = s[k];
            }
            if (K & 1) dd[(size_t)(K >> 1) * T * 2 + 1] = 0;
            for (int p = (K + 1) / 2; p < K2; p++) dd[(size_t)p * T * 2] = dd[(size_t)p * T * 2 + 1] = 0;
        }
    }
#endif
    for (int i = i0; i < T; i++) {
        int m = m0 + i;
        int16_t *dd = d + 2 * i;
        if (m >= M) { for (int p = 0; p < K2; p++) dd[(size_t)p * T * 2] = dd[(size_t)p * T * 2 + 1] = 0; continue; }
        if (x_signed) {
            const int8_t *s = (const int8_t *)x + (ptrdiff_t)(m - mbase) * ldx;
            for (int k = 0; k < K; k++) dd[(size_t)(k >> 1) * T * 2 + (k & 1)] = s[k];
        } else {
            const uint8_t *s = (const uint8_t *)x + (ptrdiff_t)(m - mbase) * ldx;
            for (int k = 0; k < K; k++) dd[(size_t)(k >> 1) * T * 2 + (k & 1)] = s[k];
        }
        if (K & 1) dd[(size_t)(K >> 1) * T * 2 + 1] = 0;
        for (int p = (K + 1) / 2; p < K2; p++) dd[(size_t)p * T * 2] = dd[(size_t)p * T * 2 + 1] = 0;
    }
}

/* Epilogue of row n into stage (int32 lanes: quantized values, float bits or int32 sums);
 * the transposed write to the tokens-major output happens in flush_rows, 8 rows at a time. */
static void stage_row(const dscy_epilogue *ep, const int32_t *acc, int m0, int mt, int n,
                      int32_t *stage) {
#ifdef __AVX2__
    __m256i b = _mm256_set1_epi32(ep->bias[n]);
    __m256 s = _mm256_set1_ps(ep->scale[n]);
    __m256 mb = _mm256_set1_ps(ep->mid_type ? ep->mid_bias[n] : 0.0f);
    __m256 ma = _mm256_set1_ps(ep->mid_type ? ep->mid_scale[n] : 0.0f);
    if (ep->lut) {
        __m256i row = _mm256_set1_epi32(n * 256);
        for (int j = 0; j < mt; j += 8)
            _mm256_storeu_si256((__m256i *)(stage + j),
                dscy_ep_lut8(ep, _mm256_loadu_si256((const __m256i *)(acc + j)), b, s, row));
        return;
    }
    for (int j = 0; j < mt; j += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(acc + j)), r;
        if (ep->out_type == DSCY_OUT_I32) r = _mm256_add_epi32(a, b);
        else {
            __m256 f = dscy_ep_pre8(ep, a, b, s, ma, mb);
            /* with a residual the rest of the epilogue runs in flush_rows, where each token's
             * channels (and residuals) are contiguous */
            if (ep->res_type) r = _mm256_castps_si256(f);
            else {
                f = dscy_ep_post8(ep, f, mb);
                r = ep->out_type == DSCY_OUT_F32 ? _mm256_castps_si256(f) : dscy_ep_q8(ep, f);
            }
        }
        _mm256_storeu_si256((__m256i *)(stage + j), r);
    }
#else
    (void)m0;
    for (int t = 0; t < mt; t++) {
        int32_t v = (int32_t)((uint32_t)acc[t] + (uint32_t)ep->bias[n]);
        if (ep->out_type == DSCY_OUT_I32) { stage[t] = v; continue; }
        if (ep->lut) { stage[t] = dscy_ep_lut1(ep, v, n); continue; }
        float f = dscy_ep_pre1(ep, v, n);
        if (ep->res_type) memcpy(stage + t, &f, 4);
        else stage[t] = dscy_ep_post1(ep, f, m0 + t, n);
    }
#endif
}

#ifdef __AVX2__
/* int16 tokens 0..15 (a) and 16..31 (c), as packs_epi32 leaves them (lanes interleaved by
 * 128-bit half) -> 32 saturated bytes in token order */
static inline __m256i pack_bytes32(__m256i a, __m256i c, int u8) {
    a = _mm256_permute4x64_epi64(a, 0xD8);
    c = _mm256_permute4x64_epi64(c, 0xD8);
    __m256i p = u8 ? _mm256_packus_epi16(a, c) : _mm256_packs_epi16(a, c);
    return _mm256_permute4x64_epi64(p, 0xD8);
}
#endif

#ifdef __AVX2__
/* The byte transpose of 8 staged rows of 32 bytes: u[g] / u[4 + g] (g < 4) hold, for tokens
 * 4g .. 4g + 3 and 16 + 4g .. (lanes), each token's 8 bytes, 32-bit unpacks apart */
static inline void bytes8_network(const uint8_t *bst, __m256i u[8]) {
    __m256i r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_load_si256((const __m256i *)(bst + i * T32));
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi8(r[2 * i], r[2 * i + 1]);      /* tok 0-7 | 16-23 */
        t[2 * i + 1] = _mm256_unpackhi_epi8(r[2 * i], r[2 * i + 1]);  /* tok 8-15 | 24-31 */
    }
    for (int h = 0; h < 2; h++) {      /* rows 0-3 and rows 4-7 */
        u[4 * h + 0] = _mm256_unpacklo_epi16(t[4 * h + 0], t[4 * h + 2]);  /* 0-3 | 16-19 */
        u[4 * h + 1] = _mm256_unpackhi_epi16(t[4 * h + 0], t[4 * h + 2]);  /* 4-7 | 20-23 */
        u[4 * h + 2] = _mm256_unpacklo_epi16(t[4 * h + 1], t[4 * h + 3]);  /* 8-11 | 24-27 */
        u[4 * h + 3] = _mm256_unpackhi_epi16(t[4 * h + 1], t[4 * h + 3]);  /* 12-15 | 28-31 */
    }
}
#endif

/* Write nr rows of 32 staged output bytes (bst[i * T32 + t]: output n0 + i of token m0 + t) to
 * the tokens-major output: 8 rows by unpacks (each token gets its 8 bytes as one 64-bit store),
 * fewer one byte at a time. */
static void flush_bytes(const dscy_epilogue *ep, const uint8_t *bst, int m0, int n0, int nr,
                        int mt) {
    ptrdiff_t ldo = ep->ldo;
    uint8_t *o = (uint8_t *)ep->out + (ptrdiff_t)m0 * ldo + n0;
#ifdef __AVX2__
    if (nr == 8) {
        __m256i u[8];
        bytes8_network(bst, u);
        for (int g = 0; g < 4; g++) {      /* token groups 4g..4g+3 and 16+4g.. */
            __m256i lo = _mm256_unpacklo_epi32(u[g], u[4 + g]);   /* 4g, 4g+1 | 16+4g, 17+4g */
            __m256i hi = _mm256_unpackhi_epi32(u[g], u[4 + g]);   /* 4g+2, 4g+3 | ... */
            __m128i l0 = _mm256_castsi256_si128(lo), l1 = _mm256_extracti128_si256(lo, 1);
            __m128i h0 = _mm256_castsi256_si128(hi), h1 = _mm256_extracti128_si256(hi, 1);
            int tk = 4 * g;   /* 8-byte stores at any byte offset: movq, no double* (UB) */
#define DSCY_ST8(j, v) if (tk + (j) < mt) _mm_storel_epi64((__m128i *)(o + (tk + (j)) * ldo), v)
            DSCY_ST8(0, l0);
            DSCY_ST8(1, _mm_unpackhi_epi64(l0, l0));
            DSCY_ST8(2, h0);
            DSCY_ST8(3, _mm_unpackhi_epi64(h0, h0));
            DSCY_ST8(16, l1);
            DSCY_ST8(17, _mm_unpackhi_epi64(l1, l1));
            DSCY_ST8(18, h1);
            DSCY_ST8(19, _mm_unpackhi_epi64(h1, h1));
#undef DSCY_ST8
        }
        return;
    }
#endif
    for (int t = 0; t < mt; t++)
        for (int i = 0; i < nr; i++) o[(ptrdiff_t)t * ldo + i] = bst[i * T32 + t];
}

#ifdef __AVX2__
/* 16 staged rows of 32 output bytes (rows n0 .. n0 + 15) to the tokens-major output: each token's
 * 16 bytes as one store (8 rows at a time gave two 8-byte stores to the same line, apart) */
static void flush_bytes16(const dscy_epilogue *ep, const uint8_t *bst, int m0, int n0, int mt) {
    ptrdiff_t ldo = ep->ldo;
    uint8_t *o = (uint8_t *)ep->out + (ptrdiff_t)m0 * ldo + n0;
    __m256i ua[8], ub[8];
    bytes8_network(bst, ua);
    bytes8_network(bst + 8 * T32, ub);
    for (int g = 0; g < 4; g++) {
        __m256i la = _mm256_unpacklo_epi32(ua[g], ua[4 + g]), ha = _mm256_unpackhi_epi32(ua[g], ua[4 + g]);
        __m256i lb = _mm256_unpacklo_epi32(ub[g], ub[4 + g]), hb = _mm256_unpackhi_epi32(ub[g], ub[4 + g]);
        __m128i l0a = _mm256_castsi256_si128(la), l1a = _mm256_extracti128_si256(la, 1);
        __m128i h0a = _mm256_castsi256_si128(ha), h1a = _mm256_extracti128_si256(ha, 1);
        __m128i l0b = _mm256_castsi256_si128(lb), l1b = _mm256_extracti128_si256(lb, 1);
        __m128i h0b = _mm256_castsi256_si128(hb), h1b = _mm256_extracti128_si256(hb, 1);
        int tk = 4 * g;
#define DSCY_ST16(j, v) if (tk + (j) < mt) _mm_storeu_si128((__m128i *)(o + (tk + (j)) * ldo), v)
        DSCY_ST16(0, _mm_unpacklo_epi64(l0a, l0b));
        DSCY_ST16(1, _mm_unpackhi_epi64(l0a, l0b));
        DSCY_ST16(2, _mm_unpacklo_epi64(h0a, h0b));
        DSCY_ST16(3, _mm_unpackhi_epi64(h0a, h0b));
        DSCY_ST16(16, _mm_unpacklo_epi64(l1a, l1b));
        DSCY_ST16(17, _mm_unpackhi_epi64(l1a, l1b));
        DSCY_ST16(18, _mm_unpacklo_epi64(h1a, h1b));
        DSCY_ST16(19, _mm_unpackhi_epi64(h1a, h1b));
#undef DSCY_ST16
    }
}
#endif

/* element (m, n) of a planar output (ep->plane > 0) */
static inline ptrdiff_t planar_at(const dscy_epilogue *ep, int m, int n) {
    ptrdiff_t b = m / ep->plane;
    return b * ep->pbatch + (ptrdiff_t)n * ep->plane + (m - b * ep->plane);
}

/* Write nr staged rows (outputs n0..n0+nr-1) for tokens m0..m0+mt-1. stage: [8][T32] int32. */
static void flush_rows(const dscy_epilogue *ep, const int32_t *stage, int m0, int mt, int n0, int nr) {
    ptrdiff_t ldo = ep->ldo;
    int bytes = ep->out_type >= DSCY_OUT_U8;
    if (ep->plane) {   /* planar output, element by element (tiles rows_fast does not take) */
        for (int i = 0; i < nr; i++)
            for (int t = 0; t < mt; t++) {
                int32_t v = stage[i * T32 + t];
                if (ep->res_type && ep->out_type != DSCY_OUT_I32) {
                    float f;
                    memcpy(&f, &v, 4);
                    v = dscy_ep_post1(ep, f, m0 + t, n0 + i);
                }
                ptrdiff_t o = planar_at(ep, m0 + t, n0 + i);
                if (bytes) ((uint8_t *)ep->out)[o] = (uint8_t)v;
                else ((int32_t *)ep->out)[o] = v;
            }
        return;
    }
    if (ep->res_type && ep->out_type != DSCY_OUT_I32) {
        /* stage holds pre-epilogue floats: transpose, then residual, activation and output */
#ifdef __AVX2__
        if (nr == 8 && mt % 8 == 0) {
            for (int blk = 0; blk < mt / 8; blk++) {
                __m256 tok[8];
                for (int i = 0; i < 8; i++) tok[i] = _mm256_loadu_ps((const float *)(stage + i * T32 + 8 * blk));
                dscy_tr8x8_ps(tok);
                for (int i = 0; i < 8; i++) {
                    __m256 v = tok[i];
                    ptrdiff_t m = m0 + 8 * blk + i;
                    v = dscy_ep_post8(ep, v, dscy_res8(ep, m * ep->ldr + n0));
                    if (!bytes) { _mm256_storeu_ps((float *)ep->out + m * ldo + n0, v); continue; }
                    __m256i q = dscy_ep_q8(ep, v);            /* saturated: packs only narrow */
                    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
                    w = ep->out_type == DSCY_OUT_U8 ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);
                    _mm_storel_epi64((__m128i *)((uint8_t *)ep->out + m * ldo + n0), w);
                }
            }
            return;
        }
#endif
        for (int t = 0; t < mt; t++)
            for (int i = 0; i < nr; i++) {
                float f;
                memcpy(&f, stage + i * T32 + t, 4);
                int32_t v = dscy_ep_post1(ep, f, m0 + t, n0 + i);
                if (bytes) ((uint8_t *)ep->out)[(ptrdiff_t)(m0 + t) * ldo + n0 + i] = (uint8_t)v;
                else ((int32_t *)ep->out)[(ptrdiff_t)(m0 + t) * ldo + n0 + i] = v;
            }
        return;
    }
#ifdef __AVX2__
    if (nr == 8 && mt == T32) {
        if (bytes) {
            uint8_t bst[8 * T32] __attribute__((aligned(32)));
            for (int i = 0; i < 8; i++) {
                const int32_t *q = stage + i * T32;
                __m256i a = _mm256_packs_epi32(_mm256_loadu_si256((const __m256i *)q),
                                               _mm256_loadu_si256((const __m256i *)(q + 8)));
                __m256i c = _mm256_packs_epi32(_mm256_loadu_si256((const __m256i *)(q + 16)),
                                               _mm256_loadu_si256((const __m256i *)(q + 24)));
                _mm256_store_si256((__m256i *)(bst + i * T32), pack_bytes32(a, c, ep->out_type == DSCY_OUT_U8));
            }
            flush_bytes(ep, bst, m0, n0, 8, T32);
        } else {
            /* four 8x8 transposes of 32-bit lanes: each token gets one 32-byte store */
            int32_t *o = (int32_t *)ep->out + (ptrdiff_t)m0 * ldo + n0;
            for (int blk = 0; blk < 4; blk++) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps((const float *)(stage + i * T32 + 8 * blk));
                dscy_tr8x8_ps(r);
                for (int i = 0; i < 8; i++) _mm256_storeu_ps((float *)(o + (8 * blk + i) * ldo), r[i]);
            }
        }
        return;
    }
#endif
    for (int t = 0; t < mt; t++) {
        if (bytes) {
            uint8_t *o = (uint8_t *)ep->out + (ptrdiff_t)(m0 + t) * ldo + n0;
            for (int i = 0; i < nr; i++) o[i] = (uint8_t)stage[i * T32 + t];
        } else {
            int32_t *o = (int32_t *)ep->out + (ptrdiff_t)(m0 + t) * ldo + n0;
            for (int i = 0; i < nr; i++) o[i] = stage[i * T32 + t];
        }
    }
}

#ifdef __AVX2__
#if DSCY_QUADS
/* acc += x (u8) . w (s8) in place: the intrinsic let gcc copy every accumulator to a fresh
 * register and back around each vpdpbusd in the row loops (two zmm moves per instruction) */
#define DSCY_DPB(acc, x, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w))
/* the 32-bit slot vpdpbusd broadcasts for the block at v: block4 its 4 weights, a pair (bp 1)
 * its 2 weights and two zero bytes */
static inline int32_t block_w32(const int8_t *v, int bp) {
    if (bp == 2) { int32_t w; memcpy(&w, v, 4); return w; }
    uint16_t w; memcpy(&w, v, 2); return w;
}
/* the broadcast weights of block j from the row loops' weight pointer wv */
#define DSCY_WB(j) _mm512_set1_epi32(block_w32(wv + 2 * bp * (j), bp))
#endif

/* One output row over one token tile of V ymm (T = 8V tokens); bp k-pairs per block. Forced
 * inline so each (V, bp) instance keeps its accumulators in registers. */
static inline __attribute__((always_inline)) void row_kernel(
        const int16_t *xt, const uint16_t *idx, const int8_t *vals, int nb, const int V, const int bp,
        int32_t *out) {
    const int T = 8 * V;
#if DSCY_QUADS
    /* one 32-bit weight broadcast per block; four accumulator sets (blocks 4i .. 4i + 3): with
     * two, each chain took a vpdpbusd every other block and its latency (~5 cycles) bounded the
     * loop at ~2.5 cycles per block */
    const uint8_t *xb = (const uint8_t *)xt;
#define DSCY_W32(b) block_w32(vals + 2 * bp * (size_t)(b), bp)
    if (T == 32) {
        /* walked by pointers: with an int block counter gcc spent lea + movslq per block on
         * the index arithmetic (~11 uops a block, rename-bound near 1.8 cycles); now movzwl +
         * shl per block, the tile base folded into the loads */
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, c0 = a0, c1 = a0;
        __m512i e0 = a0, e1 = a0, g0 = a0, g1 = a0;
        const uint16_t *ip = idx, *end4 = idx + (nb & ~3), *end = idx + nb;
        const int8_t *wv = vals;
#define DSCY_XB(j) (xb + ((size_t)ip[j] << 7))
        for (; ip < end4; ip += 4, wv += 8 * bp) {   /* 2 * bp bytes a block */
            __m512i w0 = DSCY_WB(0), w1 = DSCY_WB(1), w2 = DSCY_WB(2), w3 = DSCY_WB(3);
            DSCY_DPB(a0, _mm512_loadu_si512(DSCY_XB(0)), w0);
            DSCY_DPB(a1, _mm512_loadu_si512(DSCY_XB(0) + 64), w0);
            DSCY_DPB(c0, _mm512_loadu_si512(DSCY_XB(1)), w1);
            DSCY_DPB(c1, _mm512_loadu_si512(DSCY_XB(1) + 64), w1);
            DSCY_DPB(e0, _mm512_loadu_si512(DSCY_XB(2)), w2);
            DSCY_DPB(e1, _mm512_loadu_si512(DSCY_XB(2) + 64), w2);
            DSCY_DPB(g0, _mm512_loadu_si512(DSCY_XB(3)), w3);
            DSCY_DPB(g1, _mm512_loadu_si512(DSCY_XB(3) + 64), w3);
        }
        a0 = _mm512_add_epi32(a0, e0); a1 = _mm512_add_epi32(a1, e1);
        c0 = _mm512_add_epi32(c0, g0); c1 = _mm512_add_epi32(c1, g1);
        if (end - ip >= 2) {
            __m512i w0 = DSCY_WB(0), w1 = DSCY_WB(1);
            DSCY_DPB(a0, _mm512_loadu_si512(DSCY_XB(0)), w0);
            DSCY_DPB(a1, _mm512_loadu_si512(DSCY_XB(0) + 64), w0);
            DSCY_DPB(c0, _mm512_loadu_si512(DSCY_XB(1)), w1);
            DSCY_DPB(c1, _mm512_loadu_si512(DSCY_XB(1) + 64), w1);
            ip += 2; wv += 4 * bp;
        }
        if (ip < end) {
            __m512i w0 = DSCY_WB(0);
            DSCY_DPB(a0, _mm512_loadu_si512(DSCY_XB(0)), w0);
            DSCY_DPB(a1, _mm512_loadu_si512(DSCY_XB(0) + 64), w0);
        }
#undef DSCY_XB
        _mm512_storeu_si512(out, _mm512_add_epi32(a0, c0));
        _mm512_storeu_si512(out + 16, _mm512_add_epi32(a1, c1));
    } else {
        __m256i a0 = _mm256_setzero_si256(), c0 = a0;
        int b = 0;
        for (; b + 2 <= nb; b += 2) {
            DSCY_DPB(a0, _mm256_loadu_si256((const __m256i *)(xb + (size_t)idx[b] * 32)), _mm256_set1_epi32(DSCY_W32(b)));
            DSCY_DPB(c0, _mm256_loadu_si256((const __m256i *)(xb + (size_t)idx[b + 1] * 32)), _mm256_set1_epi32(DSCY_W32(b + 1)));
        }
        if (b < nb)
            DSCY_DPB(a0, _mm256_loadu_si256((const __m256i *)(xb + (size_t)idx[b] * 32)), _mm256_set1_epi32(DSCY_W32(b)));
        _mm256_storeu_si256((__m256i *)out, _mm256_add_epi32(a0, c0));
    }
#undef DSCY_W32
    return;
#endif
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    for (int b = 0; b < nb; b++) {
        const int16_t *xr = xt + (size_t)idx[b] * bp * T * 2;
        if (bp == 2) {
            int32_t w4; memcpy(&w4, vals + 4 * (size_t)b, 4);
            __m128i wv = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(w4));
            __m256i p01 = _mm256_broadcastd_epi32(wv);
            __m256i p23 = _mm256_broadcastd_epi32(_mm_srli_si128(wv, 4));
            #pragma GCC unroll 4
            for (int j = 0; j < V; j++) {
                __m256i a = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xr + 16 * j)), p01);
                __m256i c = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xr + T * 2 + 16 * j)), p23);
                acc[j] = _mm256_add_epi32(acc[j], _mm256_add_epi32(a, c));
            }
        } else {
            int16_t w2; memcpy(&w2, vals + 2 * (size_t)b, 2);
            __m128i wv = _mm_cvtepi8_epi16(_mm_cvtsi32_si128((uint16_t)w2));
            __m256i pw = _mm256_broadcastd_epi32(wv);
            #pragma GCC unroll 4
            for (int j = 0; j < V; j++)
                acc[j] = _mm256_add_epi32(acc[j],
                    _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xr + 16 * j)), pw));
        }
    }
    #pragma GCC unroll 4
    for (int j = 0; j < V; j++) _mm256_storeu_si256((__m256i *)(out + 8 * j), acc[j]);
}

#if DSCY_QUADS
/* One output row over two full 32-token tiles at once (64 tokens): each block's index and weight
 * broadcast serve four vpdpbusd instead of two, and the row's loop (its branches, its trip-count
 * miss) is paid once for both tiles. out[0..31]: tile xt0, out[32..63]: tile xt1. */
static inline __attribute__((always_inline)) void row_kernel2(
        const int16_t *xt0, const int16_t *xt1, const uint16_t *idx, const int8_t *vals, int nb,
        const int bp, int32_t *out) {
    const uint8_t *xa = (const uint8_t *)xt0, *xb = (const uint8_t *)xt1;
#define DSCY_BLK(A, j, w) do { size_t o_ = (size_t)ip[j] << 7;                                   \
        DSCY_DPB(A##0, _mm512_loadu_si512(xa + o_), w); DSCY_DPB(A##1, _mm512_loadu_si512(xa + o_ + 64), w); \
        DSCY_DPB(A##2, _mm512_loadu_si512(xb + o_), w); DSCY_DPB(A##3, _mm512_loadu_si512(xb + o_ + 64), w); } while (0)
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    const uint16_t *ip = idx, *end2 = idx + (nb & ~1), *end = idx + nb;
    const int8_t *wv = vals;
    /* two accumulator sets of four: each accumulator takes a vpdpbusd every other block, four
     * vpdpbusd per block, so a chain waits ~8 of them (more than the latency) */
    for (; ip < end2; ip += 2, wv += 4 * bp) {
        __m512i w0 = DSCY_WB(0), w1 = DSCY_WB(1);
        DSCY_BLK(a, 0, w0);
        DSCY_BLK(c, 1, w1);
    }
    if (ip < end) {
        __m512i w0 = DSCY_WB(0);
        DSCY_BLK(a, 0, w0);
    }
    _mm512_storeu_si512(out, _mm512_add_epi32(a0, c0));
    _mm512_storeu_si512(out + 16, _mm512_add_epi32(a1, c1));
    _mm512_storeu_si512(out + 32, _mm512_add_epi32(a2, c2));
    _mm512_storeu_si512(out + 48, _mm512_add_epi32(a3, c3));
#undef DSCY_BLK
}
#endif

/* The epilogue of kind EK (dscy_ep_kind) on row n's 32 sums: 32-bit lanes to dst (int32 /
 * float bits / the float before a residual), 8-bit outputs as 32 bytes. */
static inline __attribute__((always_inline)) void ep_row(const int EK, const dscy_ek_consts *k,
                                                         const int32_t *sums, int n, void *dst) {
#if DSCY_QUADS
    {   /* 16 lanes at a time; 8-bit outputs (already in range) narrowed by vpmovdb */
        __m512i b = _mm512_set1_epi32(k->bias[n]);
        __m512 s = _mm512_set1_ps(EK == DSCY_EK_I32 ? 0.0f : k->scale[n]);
        __m512 ms = _mm512_set1_ps(k->mid ? k->mscale[n] : 0.0f);
        __m512 mb = _mm512_set1_ps(k->mid ? k->mbias[n] : 0.0f);
        __m512i row = _mm512_set1_epi32(n * 256);
        __m512i q0 = dscy_ek16(EK, k, _mm512_loadu_si512(sums), b, s, ms, mb, row);
        __m512i q1 = dscy_ek16(EK, k, _mm512_loadu_si512(sums + 16), b, s, ms, mb, row);
        if (EK == DSCY_EK_Q8 || EK == DSCY_EK_LUT) {
            _mm_storeu_si128((__m128i *)dst, _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)dst + 1, _mm512_cvtepi32_epi8(q1));
        } else {
            _mm512_storeu_si512(dst, q0);
            _mm512_storeu_si512((int32_t *)dst + 16, q1);
        }
        return;
    }
#endif
    __m256i b = _mm256_set1_epi32(k->bias[n]);
    __m256 s = _mm256_set1_ps(EK == DSCY_EK_I32 ? 0.0f : k->scale[n]);
    __m256 ms = _mm256_set1_ps(k->mid ? k->mscale[n] : 0.0f);
    __m256 mb = _mm256_set1_ps(k->mid ? k->mbias[n] : 0.0f);
    __m256i row = _mm256_set1_epi32(n * 256), q[4];
    for (int j = 0; j < 4; j++)
        q[j] = dscy_ek8(EK, k, _mm256_load_si256((const __m256i *)sums + j), b, s, ms, mb, row);
    if (EK == DSCY_EK_Q8 || EK == DSCY_EK_LUT)
        _mm256_store_si256((__m256i *)dst,
            pack_bytes32(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]), k->u8));
    else
        for (int j = 0; j < 4; j++) _mm256_store_si256((__m256i *)dst + j, q[j]);
}
/* one out-of-line instance per kind: inlined into the row loop, the epilogue's constants take
 * registers the block loop needs (gcc then adds register copies to it, 1.2x slower) */
static __attribute__((noinline)) void ep_row_i32(const dscy_ek_consts *k, const int32_t *s, int n, void *d) { ep_row(DSCY_EK_I32, k, s, n, d); }
static __attribute__((noinline)) void ep_row_f32(const dscy_ek_consts *k, const int32_t *s, int n, void *d) { ep_row(DSCY_EK_F32, k, s, n, d); }
static __attribute__((noinline)) void ep_row_q8(const dscy_ek_consts *k, const int32_t *s, int n, void *d) { ep_row(DSCY_EK_Q8, k, s, n, d); }
static __attribute__((noinline)) void ep_row_lut(const dscy_ek_consts *k, const int32_t *s, int n, void *d) { ep_row(DSCY_EK_LUT, k, s, n, d); }
static __attribute__((noinline)) void ep_row_pre(const dscy_ek_consts *k, const int32_t *s, int n, void *d) { ep_row(DSCY_EK_PRE, k, s, n, d); }

#if DSCY_QUADS
/* ep_row of kind Q8 on row n's NT * 32 sums (tile h's bytes to dst + h * s2): one call, and
 * the row's constants broadcast once, for both tiles of a two-tile pass (one ep_row_q8 call a
 * tile spent about as long on its entry, broadcasts and exit as on its two vectors) */
static __attribute__((noinline)) void ep_rows_q8(const dscy_ek_consts *k, const int32_t *sums,
                                                int n, uint8_t *dst, size_t s2, int NT) {
    const __m512i b = _mm512_set1_epi32(k->bias[n]);
    const __m512 s = _mm512_set1_ps(k->scale[n]);
    const __m512 ms = _mm512_set1_ps(k->mid ? k->mscale[n] : 0.0f);
    const __m512 mb = _mm512_set1_ps(k->mid ? k->mbias[n] : 0.0f);
    const __m512i row = _mm512_setzero_si512();           /* (table offsets: kind LUT only) */
    for (int h = 0; h < NT; h++) {
        __m512i q0 = dscy_ek16(DSCY_EK_Q8, k, _mm512_loadu_si512(sums + h * T32), b, s, ms, mb, row);
        __m512i q1 = dscy_ek16(DSCY_EK_Q8, k, _mm512_loadu_si512(sums + h * T32 + 16), b, s, ms, mb, row);
        _mm_storeu_si128((__m128i *)(dst + h * s2), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(dst + h * s2) + 1, _mm512_cvtepi32_epi8(q1));
    }
}
#endif

#if DSCY_QUADS
/* The table epilogue (kind LUT) of row n's NT * 32 sums by byte permutes (AVX-512 VBMI): the
 * row's 256-byte table in four zmm, each lane's mid value (the index the gather path computes)
 * narrowed to a byte, then vpermi2b on the table's halves and a blend by the index's top bit.
 * One gather per 16 outputs (16 loads) becomes three permutes per 64; on ResNet-50's K = 64
 * layers the epilogue was about half of the layer. Bytes for tile h go to dst + h * s2. */
static __attribute__((noinline, target("avx512vbmi"))) void ep_rows_lut_vbmi(
        const dscy_ek_consts *k, const int32_t *sums, int n, uint8_t *dst, size_t s2, int NT) {
    const __m512i b = _mm512_set1_epi32(k->bias[n]);
    const __m512 s = _mm512_set1_ps(k->scale[n]);
    const uint8_t *t = k->lut + (size_t)n * 256;
    __m512i tt[4], c[4];
    for (int q = 0; q < 4; q++) tt[q] = _mm512_loadu_si512(t + 64 * q);
    for (int j = 0; j < 2 * NT; j++)        /* tokens 16j .. 16j + 15 */
        c[j] = dscy_lut_index16(k, _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_loadu_si512(sums + 16 * j), b)), s));
    if (NT == 1) c[2] = c[3] = _mm512_setzero_si512();
    __m512i r = dscy_lut64_vbmi(tt, c);
    _mm256_store_si256((__m256i *)dst, _mm512_castsi512_si256(r));
    if (NT == 2) _mm256_store_si256((__m256i *)(dst + s2), _mm512_extracti64x4_epi64(r, 1));
}
#endif

#if DSCY_QUADS
/* 16 staged rows (outputs n0 .. n0 + 15) of a 32-token tile (its first mt tokens real) to the
 * tokens-major output, one zmm per token (two 8x8 transposes joined: each token's 16 outputs go
 * out as one store).
 * pre: the stage holds the floats before the residual (kind PRE): residual, activation, y_scale
 * and output type follow, the same operations in the same order as dscy_ep_post8 + dscy_ep_q8
 * (bit for bit: dscy_ek16_res on kr, the kind's constants), with the epilogue's fields read
 * once (through ep, gcc reloaded them after every byte store, which may alias them). Otherwise
 * the stage holds finished 32-bit outputs. Not for GELU with a residual (dscy_ep_post8's path). */
static void flush16(const dscy_epilogue *ep, const int32_t *stage, int m0, int n0, int pre,
                    int mt, const dscy_ek_consts *kf, const dscy_ek_consts *kr) {
    /* kf (kind F32, not pre): the stage holds the raw sums; the epilogue runs here on each
     * token's 16 channels with the channels' constants as vectors (dscy_ek16 lane for lane, as
     * ep_row with them broadcast: the same bits), where ep_row was a call, four broadcasts and
     * a copy per row */
    __m512i kb = _mm512_setzero_si512();
    __m512 ks = _mm512_setzero_ps(), kms = ks, kmb = ks;
    if (kf) {
        kb = _mm512_loadu_si512(kf->bias + n0);
        ks = _mm512_loadu_ps(kf->scale + n0);
        if (kf->mid) { kms = _mm512_loadu_ps(kf->mscale + n0); kmb = _mm512_loadu_ps(kf->mbias + n0); }
    }
    const int rt = ep->res_type, ot = ep->out_type;
    const int q8 = ot == DSCY_OUT_U8 || ot == DSCY_OUT_S8;
    const __m512i rzp = _mm512_set1_epi32(ep->res_zp);
    const __m512 rsc = _mm512_set1_ps(ep->res_scale);
    dscy_ek_consts kl;                /* kr's constants in a local: the byte stores may alias *kr */
    if (pre) kl = *kr;
    const void *res = ep->res;
    char *out = (char *)ep->out;
    const ptrdiff_t ldr = ep->ldr, ldo = ep->ldo;
    for (int blk = 0; blk < T32 / 8; blk++) {
        __m256 a[8], b[8];
        for (int i = 0; i < 8; i++) {
            a[i] = _mm256_loadu_ps((const float *)(stage + i * T32 + 8 * blk));
            b[i] = _mm256_loadu_ps((const float *)(stage + (8 + i) * T32 + 8 * blk));
        }
        dscy_tr8x8_ps(a);
        dscy_tr8x8_ps(b);
        for (int i = 0; i < 8 && 8 * blk + i < mt; i++) {   /* real tokens only */
            ptrdiff_t m = m0 + 8 * blk + i;
            __m512 f = _mm512_insertf32x8(_mm512_castps256_ps512(a[i]), b[i], 1);
            if (kf) f = _mm512_castsi512_ps(dscy_ek16(DSCY_EK_F32, kf, _mm512_castps_si512(f), kb, ks,
                                                      kms, kmb, _mm512_setzero_si512()));
            if (!pre) { _mm512_storeu_ps((float *)out + m * ldo + n0, f); continue; }
            __m512i q = dscy_ek16_res(&kl, f, dscy_res16(rt, res, m * ldr + n0, rzp, rsc), q8);
            if (!q8) { _mm512_storeu_si512((float *)out + m * ldo + n0, q); continue; }
            _mm_storeu_si128((__m128i *)(out + m * ldo + n0), _mm512_cvtepi32_epi8(q));  /* in range */
        }
    }
}
#endif

/* Rows [r0, r1) over one full 32-token tile, the epilogue of kind EK specialized, then 8-row
 * transposed flushes (8-bit outputs staged as bytes). */
static inline __attribute__((always_inline)) void rows_fast(
        const int EK, const int bp, const dscy_epilogue *ep, const dscy_ek_consts *k,
        const int16_t *xtile, int m0, int mt, const int32_t *row_ptr, const uint16_t *idx,
        const int8_t *vals, int r0, int r1, const int NT, const int16_t *xtile1, int pf) {
    /* NT = 2 (quads build; rows output, or planar with both tiles in one image): tiles xtile
     * and xtile1 (tokens m0 + 32 ..), both full, in one pass per row (row_kernel2); their
     * stages side by side */
    int32_t stage[NT * DSCY_ROW_CHUNK * T32] __attribute__((aligned(64)));
    uint8_t bst[NT * DSCY_ROW_CHUNK * T32] __attribute__((aligned(64)));
    int32_t *const stage_base = stage;
    uint8_t *const bst_base = bst;
    const int m0_base = m0;
    int32_t sums[NT * T32] __attribute__((aligned(64)));
    const size_t s2 = (size_t)DSCY_ROW_CHUNK * T32;      /* second tile's stage offset */
    int bytes = EK == DSCY_EK_Q8 || EK == DSCY_EK_LUT;
    const int32_t *order = ep->row_order;
    /* F32 rows output: the epilogue deferred to the transposing flush (flush16's kf; rows
     * outside a 16-row group get ep_row in place before theirs) */
    const int dfe = DSCY_QUADS && EK == DSCY_EK_F32 && !ep->plane;
    (void)dfe;                                     /* read only in the quads build */
    /* planar output (the caller checked that the tile lies in one image): each row's mt tokens
     * are mt consecutive elements of its plane, stored as they come, no staging. mt < 32: a
     * zero-padded tail tile, whose padding tokens are computed and never stored */
    char *prow = NULL;
    size_t es = bytes ? 1 : 4;
    if (ep->plane) prow = (char *)ep->out + (size_t)planar_at(ep, m0, 0) * es;
    /* rows in chunks of DSCY_ROW_CHUNK (aligned to multiples of it): within a chunk in the
     * order row_order gives (rows sorted by block count), staged at their own place; the chunk
     * then goes out in natural order, 8 rows per transposed flush */
    for (int c0 = r0, c1; c0 < r1; c0 = c1) {
        int cs = c0 - c0 % DSCY_ROW_CHUNK;
        c1 = cs + DSCY_ROW_CHUNK < r1 ? cs + DSCY_ROW_CHUNK : r1;
        /* pf (a thread's first pass over these rows): the next chunk's weights, offsets and
         * per-channel table go towards L2 while this chunk computes, a few lines a row. In a
         * model they come from L3 / DRAM: BERT-base block4 INT8 streams ~13 MB of weights and
         * ~9 MB of GELU tables a run, and its FFN layers' first calls took 1.3-1.5x their hot
         * time, the row order within a chunk (sorted by block count) hiding the stream from
         * the hardware prefetcher */
        dscy_pf_cursor pfc = {0};
        if (pf && c1 < r1) {
            int n1 = c1 + DSCY_ROW_CHUNK < r1 ? c1 + DSCY_ROW_CHUNK : r1;
            size_t w0 = (size_t)row_ptr[c1], w1 = (size_t)row_ptr[n1];
            dscy_pf_add(&pfc, vals + w0 * 2 * bp, vals + w1 * 2 * bp);
            dscy_pf_add(&pfc, idx + w0, idx + w1);
            if (EK == DSCY_EK_LUT && !k->lut_shared)
                dscy_pf_add(&pfc, (const char *)k->lut + (size_t)c1 * 256,
                            (const char *)k->lut + (size_t)n1 * 256);
            dscy_pf_quota(&pfc, c1 - c0);
        }
        for (int j = order ? cs : c0; j < (order ? cs + DSCY_ROW_CHUNK : c1); j++) {
            int n = order ? order[j] : j;
            if (n < c0 || n >= c1) continue;     /* a chunk this thread's rows cut */
            if (EK == DSCY_EK_LUT) {
                /* the next row's 256-byte table (a per-channel table: 768 KiB on BERT-base's
                 * 768 -> 3072 layer, out of cache by the next inference; its gathers missed
                 * four lines a row: 250 -> 420-550 us for that layer in a model) */
                int nn = j + 1 < (order ? cs + DSCY_ROW_CHUNK : c1) ? (order ? order[j + 1] : j + 1) : n;
                if (nn < 0) nn = n;
                const char *tl = (const char *)k->lut + (size_t)nn * 256;
                _mm_prefetch(tl, _MM_HINT_T0); _mm_prefetch(tl + 64, _MM_HINT_T0);
                _mm_prefetch(tl + 128, _MM_HINT_T0); _mm_prefetch(tl + 192, _MM_HINT_T0);
            }
            dscy_pf_step(&pfc);
            int b0 = row_ptr[n];
#if DSCY_QUADS
            if (NT == 2)
                row_kernel2(xtile, xtile1, idx + b0, vals + (size_t)b0 * 2 * bp, row_ptr[n + 1] - b0, bp, sums);
            else
#endif
            row_kernel(xtile, idx + b0, vals + (size_t)b0 * 2 * bp, row_ptr[n + 1] - b0, 4, bp, sums);
            int slot = prow ? 0 : n - c0;     /* planar: every row through the first slot */
#if DSCY_QUADS
            if (dfe) {                        /* raw sums staged; the epilogue in the flush */
                for (int h = 0; h < NT; h++) {
                    _mm512_store_si512(stage + h * s2 + slot * T32, _mm512_load_si512(sums + h * T32));
                    _mm512_store_si512(stage + h * s2 + slot * T32 + 16, _mm512_load_si512(sums + h * T32 + 16));
                }
                continue;
            }
#endif
#if DSCY_QUADS
            if (EK == DSCY_EK_LUT && k->vbmi)
                ep_rows_lut_vbmi(k, sums, n, bst + slot * T32, s2, NT);
            else if (EK == DSCY_EK_Q8)
                ep_rows_q8(k, sums, n, bst + slot * T32, s2, NT);
            else
#endif
            for (int h = 0; h < NT; h++) {
                void *dst = bytes ? (void *)(bst + h * s2 + slot * T32) : (void *)(stage + h * s2 + slot * T32);
                const int32_t *sh = sums + h * T32;
                if (EK == DSCY_EK_I32) ep_row_i32(k, sh, n, dst);
                else if (EK == DSCY_EK_F32) ep_row_f32(k, sh, n, dst);
                else if (EK == DSCY_EK_Q8) ep_row_q8(k, sh, n, dst);
                else if (EK == DSCY_EK_LUT) ep_row_lut(k, sh, n, dst);
                else ep_row_pre(k, sh, n, dst);
            }
            if (prow)                    /* tile h: tokens m0 + 32h .., in the same image */
                for (int h = 0; h < NT; h++) {
                    if (EK == DSCY_EK_PRE)   /* with a residual: the rest element by element */
                        flush_rows(ep, stage + h * s2, m0 + T32 * h, mt, n, 1);
                    else
                        memcpy(prow + ((size_t)n * ep->plane + T32 * h) * es,
                               bytes ? (void *)(bst + h * s2) : (void *)(stage + h * s2), mt * es);
                }
        }
        if (prow) continue;
        for (int h = 0; h < NT; h++)
        for (int ns = c0, nr; ns < c1; ns += nr) {
            int32_t *stage = stage_base + h * s2;
            uint8_t *bst = bst_base + h * s2;
            int m0 = m0_base + 32 * h;
            nr = c1 - ns < 8 ? c1 - ns : 8;
#if DSCY_QUADS
            if (!bytes && c1 - ns >= 16 && (EK != DSCY_EK_PRE || ep->act != DSCY_ACT_GELU)) {
                flush16(ep, stage + (ns - c0) * T32, m0, ns, EK == DSCY_EK_PRE, mt, dfe ? k : NULL, k);
                nr = 16;
                continue;
            }
            if (dfe)                          /* finish the raw sums of these rows in place */
                for (int r = ns; r < ns + nr; r++)
                    ep_row_f32(k, stage + (r - c0) * T32, r, stage + (r - c0) * T32);
#endif
            if (bytes && c1 - ns >= 16) {
                flush_bytes16(ep, bst + (ns - c0) * T32, m0, ns, mt);
                nr = 16;
                continue;
            }
            if (bytes) flush_bytes(ep, bst + (ns - c0) * T32, m0, ns, nr, mt);
            else flush_rows(ep, stage + (ns - c0) * T32, m0, mt, ns, nr);
        }
    }
}

/* rows_fast for the runtime kind and block width */
static void rows_fast_any(int ek, int bp, const dscy_epilogue *ep, const dscy_ek_consts *k,
                          const int16_t *xtile, int m0, int mt, const int32_t *row_ptr,
                          const uint16_t *idx, const int8_t *vals, int r0, int r1,
                          const int16_t *xtile1, int pf) {
#if DSCY_QUADS
#define DSCY_RF(K) do { if (xtile1) { if (bp == 2) rows_fast(K, 2, ep, k, xtile, m0, mt, row_ptr, idx, vals, r0, r1, 2, xtile1, pf); \
                                      else rows_fast(K, 1, ep, k, xtile, m0, mt, row_ptr, idx, vals, r0, r1, 2, xtile1, pf); } \
                        else if (bp == 2) rows_fast(K, 2, ep, k, xtile, m0, mt, row_ptr, idx, vals, r0, r1, 1, NULL, pf); \
                        else rows_fast(K, 1, ep, k, xtile, m0, mt, row_ptr, idx, vals, r0, r1, 1, NULL, pf); } while (0)
#else
#define DSCY_RF(K) do { (void)xtile1; if (bp == 2) rows_fast(K, 2, ep, k, xtile, m0, mt, row_ptr, idx, vals, r0, r1, 1, NULL, pf); \
                        else rows_fast(K, 1, ep, k, xtile, m0, mt, row_ptr, idx, vals, r0, r1, 1, NULL, pf); } while (0)
#endif
    switch (ek) {
    case DSCY_EK_I32: DSCY_RF(DSCY_EK_I32); break;
    case DSCY_EK_F32: DSCY_RF(DSCY_EK_F32); break;
    case DSCY_EK_Q8: DSCY_RF(DSCY_EK_Q8); break;
    case DSCY_EK_LUT: DSCY_RF(DSCY_EK_LUT); break;
    default: DSCY_RF(DSCY_EK_PRE); break;
    }
#undef DSCY_RF
}
#endif

static void row_generic(const int16_t *xt, int T, const uint16_t *idx, const int8_t *vals, int nb,
                        int bp, int32_t *out) {
    int32_t acc[T32];
    for (int t = 0; t < T; t++) acc[t] = 0;
    for (int b = 0; b < nb; b++) {
        const int16_t *xr = xt + (size_t)idx[b] * bp * T * 2;
        const int8_t *w = vals + (size_t)b * 2 * bp;
        for (int q = 0; q < bp; q++) {
            int32_t w0 = w[2 * q], w1 = w[2 * q + 1];
            const int16_t *xq = xr + (size_t)q * T * 2;
            for (int t = 0; t < T; t++) acc[t] += xq[2 * t] * w0 + xq[2 * t + 1] * w1;
        }
    }
    for (int t = 0; t < T; t++) out[t] = acc[t];
}

/* the calling thread's gathered im2col rows of one tile (bytes, in floats) */
DSCY_THREAD_BUFFER(conv_rows_buffer)

/* Pack tile t of a planar x [B][K][plane] (a 1x1 conv's NCHW input; token m = b * plane + p):
 * inside one image, k-pair q of the tile is rows 2q and 2q + 1 of the planes at p0.., widened
 * and interleaved; tokens across images and tails one by one. */
static void pack_tile_planar(const uint8_t *x, int x_signed, ptrdiff_t plane, int M, int K,
                             int16_t *xt, int K2, int t, int bp, ptrdiff_t at) {
#if DSCY_QUADS
    pack_tile_planar_q(x, x_signed, plane, M, K, xt, K2, t, bp, at);
    return;
#endif
    (void)bp;
    int T; int16_t *d = xt + tile_at(M, K2, t, &T, at);
    int m0 = tile_m0(M, t);
    ptrdiff_t b0 = m0 / plane, p0 = m0 - b0 * plane;
    if (p0 + T <= plane && m0 + T <= M) {
        const uint8_t *xb = x + (size_t)b0 * K * plane + p0;
        for (int q = 0; q < K2; q++) {
            int16_t *dq = d + (size_t)q * T * 2;
            const uint8_t *r0 = 2 * q < K ? xb + (size_t)(2 * q) * plane : NULL;
            const uint8_t *r1 = 2 * q + 1 < K ? xb + (size_t)(2 * q + 1) * plane : NULL;
#ifdef __AVX2__
            if (r0 && r1 && T % 16 == 0) {
                for (int i = 0; i < T; i += 16) {
                    __m128i a = _mm_loadu_si128((const __m128i *)(r0 + i));
                    __m128i c = _mm_loadu_si128((const __m128i *)(r1 + i));
                    __m256i a16 = x_signed ? _mm256_cvtepi8_epi16(a) : _mm256_cvtepu8_epi16(a);
                    __m256i c16 = x_signed ? _mm256_cvtepi8_epi16(c) : _mm256_cvtepu8_epi16(c);
                    __m256i lo = _mm256_unpacklo_epi16(a16, c16);   /* tokens 0-3 | 8-11 */
                    __m256i hi = _mm256_unpackhi_epi16(a16, c16);   /* tokens 4-7 | 12-15 */
                    _mm256_storeu_si256((__m256i *)(dq + 2 * i), _mm256_permute2x128_si256(lo, hi, 0x20));
                    _mm256_storeu_si256((__m256i *)(dq + 2 * i + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
                }
                continue;
            }
#endif
            for (int i = 0; i < T; i++) {
                dq[2 * i] = (int16_t)(r0 ? (x_signed ? (int8_t)r0[i] : r0[i]) : 0);
                dq[2 * i + 1] = (int16_t)(r1 ? (x_signed ? (int8_t)r1[i] : r1[i]) : 0);
            }
        }
        return;
    }
    for (int i = 0; i < T; i++) {
        int m = m0 + i;
        int16_t *dd = d + 2 * i;
        if (m >= M) {
            for (int q = 0; q < K2; q++) dd[(size_t)q * T * 2] = dd[(size_t)q * T * 2 + 1] = 0;
            continue;
        }
        ptrdiff_t b = m / plane;
        const uint8_t *xm = x + (size_t)b * K * plane + (m - b * plane);
        for (int k = 0; k < 2 * K2; k++) {
            int v = k < K ? (x_signed ? (int8_t)xm[(size_t)k * plane] : xm[(size_t)k * plane]) : 0;
            dd[(size_t)(k >> 1) * T * 2 + (k & 1)] = (int16_t)v;
        }
    }
}

/* Pack tile t: from x rows (ldx > 0), a planar x (ldx = -plane), or (g not NULL) from the
 * convolution's im2col rows gathered into rows (T32 * K bytes of the calling thread). */
static void pack_tile_src(const dscy_conv_geom *g, uint8_t *rows, const void *x, int x_signed,
                          ptrdiff_t ldx, int M, int K, int16_t *xt, int K2, int t, int bp,
                          ptrdiff_t at) {
    if (!g && ldx < 0) { pack_tile_planar((const uint8_t *)x, x_signed, -ldx, M, K, xt, K2, t, bp, at); return; }
    if (!g) { pack_tile(x, x_signed, ldx, M, K, xt, K2, t, 0, bp, at); return; }
    int n32 = ntiles32(M), T = t < n32 ? T32 : 8;
    int m0 = tile_m0(M, t);
    int mt = M - m0 < T ? M - m0 : T;
    dscy_conv_rows(g, m0, mt, rows);
    pack_tile(rows, x_signed, K, M, K, xt, K2, t, m0, bp, at);
}

/* rows [*a, *b) of part e (rows [e * seg, (e + 1) * seg)) within [r0, r1) */
static inline void part_rows(int e, int seg, int r0, int r1, int *a, int *b) {
    *a = e * seg > r0 ? e * seg : r0;
    *b = (e + 1) * seg < r1 ? (e + 1) * seg : r1;
}

/* Rows [r0, r1) over token tiles [t0, t1) of the packed xt; with x (not NULL) each tile (or
 * pair of tiles) is first packed into xw, the thread's own buffer of two tiles (from g's
 * gathered rows when g is not NULL), and read there: the whole-M layout would be written for
 * tiles read once, and for ResNet-50's conv layers (M x K up to 1.8 MB a call) its write-backs
 * cost about as much as the multiply. */
static void spmm_range(const int16_t *xt, int M, int K2, const int32_t *row_ptr,
                       const uint16_t *idx, const int8_t *vals, int bp,
                       const dscy_epilogue *eps, int seg,
                       int r0, int r1, int t0, int t1, const void *x, int x_signed,
                       ptrdiff_t ldx, int K, int16_t *xw, const dscy_conv_geom *g,
                       uint8_t *rows, int pre, int pf) {
    /* pre: xw already holds tiles t0 .. t1 - 1 (at most two) at (t - t0) * tsz, packed by the
     * caller for several row ranges (spmm_run's dynamic schedule) */
    const ptrdiff_t tsz = (ptrdiff_t)K2 * T32 * 2;   /* a 32-token tile, int16 */
    int32_t acc[T32] __attribute__((aligned(32)));
    int32_t stage[8 * T32] __attribute__((aligned(32)));
    /* parts (dscy_qs8_spmm_parts): rows [e * seg, (e + 1) * seg) go through eps[e] (its arrays
     * and output indexed by the row itself); one part: seg = N. ea..eb: the parts r0..r1 meet
     * (r1 <= N = nep * seg); part e's rows here: [max(r0, e * seg), min(r1, (e + 1) * seg)) */
    int ea = r0 / seg, eb = (r1 - 1) / seg;
#ifdef __AVX2__
    int ek[DSCY_SPMM_PARTS_MAX];
    dscy_ek_consts kc[DSCY_SPMM_PARTS_MAX];
    int fast = dscy_ek_init_parts(eps, ea, eb, ek, kc);
#endif
    const ptrdiff_t plane = eps[0].plane;    /* (parts: rows outputs only) */
    (void)plane;
    for (int t = t0; t < t1; t++) {
        ptrdiff_t base = pre ? (t - t0) * tsz : 0;
        if (x && !pre) pack_tile_src(g, rows, x, x_signed, ldx, M, K, xw, K2, t, bp, 0);
        int T; const int16_t *xtile = x ? xw + tile_at(M, K2, t, &T, base) : xt + tile_off(M, K2, t, &T);
        int m0 = tile_m0(M, t);
        int mt = M - m0 < T ? M - m0 : T;
#ifdef __AVX2__
        if (fast && T == T32 && (!plane || m0 % plane + mt <= plane)) {   /* in one image */
            const int16_t *xtile1 = NULL;
#if DSCY_QUADS
            /* two full tiles in one pass: M - m0 >= 64 makes tile t and tile t + 1 (tokens
             * m0 + 32 ..) both full 32-token tiles (planar output: both in one image) */
            if (t + 1 < t1 && M - m0 >= 2 * T32
                    && (!plane || m0 % plane + 2 * T32 <= plane)) {
                if (x && !pre) pack_tile_src(g, rows, x, x_signed, ldx, M, K, xw, K2, t + 1, bp, tsz);
                int T1; xtile1 = x ? xw + tile_at(M, K2, t + 1, &T1, base + tsz) : xt + tile_off(M, K2, t + 1, &T1);
            }
#endif
            for (int e = ea; e <= eb; e++) {
                int a, b;
                part_rows(e, seg, r0, r1, &a, &b);
                rows_fast_any(ek[e], bp, &eps[e], &kc[e], xtile, m0, mt, row_ptr, idx, vals, a, b,
                              xtile1, pf && t == t0);
            }
            if (xtile1) t++;
            continue;
        }
#endif
        for (int e = ea; e <= eb; e++) {
            const dscy_epilogue *ep = &eps[e];
            int a, b;
            part_rows(e, seg, r0, r1, &a, &b);
            int ns = a;                       /* first row of the current stage */
            for (int n = a; n < b; n++) {
                int b0 = row_ptr[n], nb = row_ptr[n + 1] - b0;
                const uint16_t *ix = idx + b0;
                const int8_t *v = vals + (size_t)b0 * 2 * bp;
#ifdef __AVX2__
                if (T == T32) { if (bp == 2) row_kernel(xtile, ix, v, nb, 4, 2, acc);
                                else row_kernel(xtile, ix, v, nb, 4, 1, acc); }
                else { if (bp == 2) row_kernel(xtile, ix, v, nb, 1, 2, acc);
                       else row_kernel(xtile, ix, v, nb, 1, 1, acc); }
#else
                row_generic(xtile, T, ix, v, nb, bp, acc);
#endif
                stage_row(ep, acc, m0, mt, n, stage + (n - ns) * T32);
                if (n - ns == 7 || n == b - 1) {
                    flush_rows(ep, stage, m0, mt, ns, n - ns + 1);
                    ns = n + 1;
                }
            }
        }
    }
}

/* rows [r0, r1) of thread tid of TT: an equal share of stored blocks (+ one unit per row, so
 * empty rows, which still cost an epilogue, are shared too) */
static void row_share(const int32_t *row_ptr, int N, int tid, int TT, int *r0p, int *r1p) {
    long tot = (long)row_ptr[N] + N, lo_t = tot * tid / TT, hi_t = tot * (tid + 1) / TT;
    int r0, r1;
    { int a = 0, b = N; while (a < b) { int c = (a + b) / 2; if ((long)row_ptr[c] + c < lo_t) a = c + 1; else b = c; } r0 = a; }
    { int a = 0, b = N; while (a < b) { int c = (a + b) / 2; if ((long)row_ptr[c] + c < hi_t) a = c + 1; else b = c; } r1 = a; }
    if (tid == TT - 1) r1 = N;
    *r0p = r0; *r1p = r1;
}

/* tiles [*ta, *tb) of group gi (np pairs of full tiles first, then the rest one by one) */
static inline void group_tiles(int M, int gi, int *ta, int *tb) {
    int np = (M / T32) / 2;
    if (gi < np) { *ta = 2 * gi; *tb = 2 * gi + 2; }
    else { *ta = 2 * np + (gi - np); *tb = *ta + 1; }
}

/* The token split on several threads, claimed dynamically (dscy_claim: each thread its own
 * share first, then helping with the others'), so a slower core does not hold up the call (the
 * two vCPUs of this project's machines were measured 1.6x apart for minutes at a time). Items
 * are (group of tiles, chunk c of C row chunks), group-major: a share covers whole groups where
 * it can, each packed once by its owner into the thread's two-tile buffer; a thread that joins
 * another group packs it too. */
static void spmm_claimed(const dscy_conv_geom *g, const void *x, int x_signed, ptrdiff_t ldx,
                         int K, int M, int K2, const int32_t *row_ptr, const uint16_t *idx,
                         const int8_t *vals, int bp, int N, const dscy_epilogue *eps, int seg,
                         int16_t *own, uint8_t *rows, long *next, int ng, int C, int nt,
                         int tid) {
    const ptrdiff_t tsz = (ptrdiff_t)K2 * T32 * 2;
    int units = (N + DSCY_ROW_CHUNK - 1) / DSCY_ROW_CHUNK, cur = -1, k = 0, ta = 0, tb = 0;
    int first = -1;                 /* the first group this thread runs: its pass prefetches */
    for (long it; (it = dscy_claim(next, (long)ng * C, nt, tid, &k)) >= 0; ) {
        int gi = (int)(it / C), c = (int)(it % C);
        if (first < 0) first = gi;
        if (cur != gi) {
            group_tiles(M, gi, &ta, &tb);
            for (int t = ta; t < tb; t++)
                pack_tile_src(g, rows, x, x_signed, ldx, M, K, own, K2, t, bp, (t - ta) * tsz);
            cur = gi;
        }
        int r0 = (int)((long)units * c / C) * DSCY_ROW_CHUNK;
        int r1 = (int)((long)units * (c + 1) / C) * DSCY_ROW_CHUNK;
        if (r1 > N) r1 = N;
        if (r0 < r1)
            spmm_range(NULL, M, K2, row_ptr, idx, vals, bp, eps, seg, r0, r1, ta, tb, x,
                       x_signed, ldx, K, own, g, rows, 1, gi == first);
    }
}

/* the calling thread's activation tiles, kept between calls (floats) */
DSCY_THREAD_BUFFER(xt_buffer)
/* the calling thread's own two packed tiles (spmm_range with x) */
DSCY_THREAD_BUFFER(xt_own_buffer)

/* From this many token tiles (512 tokens) a call splits its tokens over the threads whatever
 * its block count: its packing and epilogue per token are work of their own (a MobileNetV3's
 * 1x1 convs of 8 x 8 and 32 x 8 channels at 24 x 160 pixels: 25 and 34 us on one thread) */
#ifndef DSCY_SPMM_SPLIT_TILES
#define DSCY_SPMM_SPLIT_TILES 16
#endif

/* Pack + multiply in one parallel region. With enough 32-token tiles each thread takes whole
 * tiles (packs them itself and runs every row on them: its activations and its output rows stay
 * in its own cache, no barrier between pack and multiply); otherwise threads pack tiles, meet,
 * and split the rows. xt: scratch of dscy_qs8_spmm_xt_size(M, Kp) int16, or NULL for the
 * calling thread's own buffer. Returns 0, or -1 when that buffer could not be allocated. */
static int spmm_run(const dscy_conv_geom *g, const void *x, int x_signed, ptrdiff_t ldx, int K,
                    int16_t *xt, int M, int Kp, const int32_t *row_ptr, const uint16_t *idx,
                    const int8_t *vals, int bp, int N, const dscy_epilogue *ep, int seg,
                    int nthreads) {
    int K2 = Kp / 2, ntl = ntiles_all(M), n32 = ntiles32(M), fail = 0;
    int nt = dscy_nthreads(nthreads);
    /* small work on one thread: a second one costs its wake-up and the split's barrier and
     * claims (~4-6 us on this machine), more than it saves on one token tile or a few hundred
     * stored blocks x tiles (a YOLOv8n's 4x4 to 16x16 maps at a 128 input: 39 such convs
     * took 445 us on one thread, 524 on two) */
    long work = (long)row_ptr[N] * ntl;
    if (nt > 1 && (ntl == 1 || (work < 768 && ntl < DSCY_SPMM_SPLIT_TILES)
                   || (ntl == 2 && work < 4096))) nt = 1;
    /* token split: whole 32-token tiles per thread, balanced (an 8-token tail tile goes last);
     * one thread runs that way too (it packs each tile into its own buffer as it goes) */
    int tok = nt == 1 || (n32 >= nt && (n32 % nt == 0 || n32 >= 4 * nt));
    if (!tok && nt > N) nt = N;
    if (!tok && !xt) {
        xt = (int16_t *)xt_buffer((dscy_qs8_spmm_xt_size(M, Kp) + 1) / 2);
        if (!xt) return -1;
    }
    /* token split on several threads: groups of tiles (pairs of full tiles, then single ones)
     * times row chunks, claimed (spmm_claimed) */
    int ng = 0, C = 1;
    DSCY_CLAIMS(next, nt);
    if (tok && nt > 1) {
        int np = (M / T32) / 2;                 /* pairs of full 32-token tiles */
        ng = np + (ntl - 2 * np);
        int units = (N + DSCY_ROW_CHUNK - 1) / DSCY_ROW_CHUNK;
        if (ng < 4 * nt) C = (8 * nt + ng - 1) / ng;   /* ~8 claims a thread at least */
        if (C > units) C = units;
        dscy_claims_init(next, (long)ng * C, nt);
    }
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, TT = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(); TT = omp_get_num_threads();
#endif
        uint8_t *rows = NULL;
        int16_t *own = NULL;
        if (g) {
            rows = (uint8_t *)conv_rows_buffer(((size_t)T32 * K + 3) / 4 + 16);
            if (!rows) {
                #pragma omp atomic write
                fail = 1;
            }
        }
        if (tok) {
            own = (int16_t *)xt_own_buffer((size_t)2 * K2 * T32);    /* two tiles, in floats */
            if (!own) {
                #pragma omp atomic write
                fail = 1;
            }
        }
        #pragma omp barrier
        if (!fail) {
            if (tok) {
                /* tokens: thread tid gets tokens [M*tid/TT, M*(tid+1)/TT) rounded to tiles */
                long units = (long)n32 * 4 + (ntl - n32);        /* 8-token units */
                long u0 = units * tid / TT, u1 = units * (tid + 1) / TT;
                int t0 = u0 <= (long)n32 * 4 ? (int)((u0 + 3) / 4) : n32 + (int)(u0 - (long)n32 * 4);
                int t1 = u1 <= (long)n32 * 4 ? (int)((u1 + 3) / 4) : n32 + (int)(u1 - (long)n32 * 4);
                if (tid == TT - 1) t1 = ntl;
                if (TT == 1)
                    spmm_range(NULL, M, K2, row_ptr, idx, vals, bp, ep, seg, 0, N, t0, t1,
                               x, x_signed, ldx, K, own, g, rows, 0, 1);
                else
                    spmm_claimed(g, x, x_signed, ldx, K, M, K2, row_ptr, idx, vals, bp, N, ep,
                                 seg, own, rows, next, ng, C, nt, tid);
            } else {
                #pragma omp for schedule(static)
                for (int t = 0; t < ntl; t++) pack_tile_src(g, rows, x, x_signed, ldx, M, K, xt, K2, t, bp, -1);
                int r0, r1;
                row_share(row_ptr, N, tid, TT, &r0, &r1);
                if (r0 < r1)
                    spmm_range(xt, M, K2, row_ptr, idx, vals, bp, ep, seg, r0, r1, 0, ntl,
                               NULL, 0, 0, 0, NULL, NULL, NULL, 0, 1);
            }
        }
    }
    return fail ? -1 : 0;
}

int dscy_qs8_spmm_x(const void *x, int x_signed, ptrdiff_t ldx, int K, int16_t *xt, int M, int Kp,
                    const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                    int N, const dscy_epilogue *ep, int nthreads) {
    return spmm_run(NULL, x, x_signed, ldx, K, xt, M, Kp, row_ptr, idx, vals, bp, N, ep, N,
                    nthreads);
}

/* dscy_qs8_spmm_x over nep parts of seg rows (output channels) each, every part with its own
 * epilogue and output (eps[e]: its own arrays, indexed from 0; rows outputs, no residual); seg
 * a multiple of DSCY_ROW_CHUNK, so the row order's chunks never mix parts. Sibling layers
 * reading the same x (a transformer's Q, K, V) as one call over their stacked sparse rows.
 * Returns 0, -1 (tile buffer allocation), or -2 for a split or epilogue it cannot run. */
int dscy_qs8_spmm_parts(const void *x, int x_signed, ptrdiff_t ldx, int K, int M, int Kp,
                        const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                        int N, const dscy_epilogue *eps, int nep, int seg, int nthreads) {
    if (nep < 1 || nep > DSCY_SPMM_PARTS_MAX || seg <= 0 || seg % DSCY_ROW_CHUNK
            || (long)nep * seg != N)
        return -2;
    /* each part's arrays and output shifted back by its first row, so the kernel indexes them
     * with the stacked row number (the part's own row + e * seg) */
    dscy_epilogue sh[DSCY_SPMM_PARTS_MAX];
    for (int e = 0; e < nep; e++) {
        const dscy_epilogue *p = &eps[e];
        if (p->plane || p->res_type || p->row_order != eps[0].row_order) return -2;
        ptrdiff_t off = (ptrdiff_t)e * seg;
        size_t es = p->out_type >= DSCY_OUT_U8 ? 1 : 4;
        sh[e] = *p;
        sh[e].bias = p->bias - off;
        sh[e].scale = p->scale - off;
        if (p->mid_type) { sh[e].mid_scale = p->mid_scale - off; sh[e].mid_bias = p->mid_bias - off; }
        if (p->lut) sh[e].lut = p->lut - off * 256;
        sh[e].out = (char *)p->out - off * (ptrdiff_t)es;
    }
    return spmm_run(NULL, x, x_signed, ldx, K, NULL, M, Kp, row_ptr, idx, vals, bp, N, sh, seg,
                    nthreads);
}

int dscy_qs8_spmm_planar(const void *x, int x_signed, ptrdiff_t plane, int K, int M, int Kp,
                         const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                         int N, const dscy_epilogue *ep, int nthreads) {
    return spmm_run(NULL, x, x_signed, -plane, K, NULL, M, Kp, row_ptr, idx, vals, bp, N, ep,
                    N, nthreads);
}

int dscy_qs8_spmm_conv(const dscy_conv_geom *g, int x_signed, int M, int K, int Kp,
                       const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                       int N, const dscy_epilogue *ep, int nthreads) {
    return spmm_run(g, g->x, x_signed, 0, K, NULL, M, Kp, row_ptr, idx, vals, bp, N, ep, N,
                    nthreads);
}

int dscy_qs8_spmm_vbmi(int off) {
    return DSCY_QUADS && dscy_vbmi_set(off);
}
