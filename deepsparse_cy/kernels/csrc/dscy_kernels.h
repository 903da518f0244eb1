/* deepsparse_cy kernels: public C interface shared by the per-ISA builds.
 *
 * Every .c file here is compiled once per ISA level (setup.py PER_ISA) with that level's -m flags;
 * the AVX2 paths are selected by __AVX2__ at compile time, the generic C paths otherwise. Packing
 * formats are ISA-independent (built in numpy by deepsparse_cy/kernels/qs8.py), so one packed
 * weight runs on every level.
 *
 * INT8 arithmetic: activations (u8 or s8) are widened to int16 once per call and multiplied with
 * int16-widened s8 weights by vpmaddwd. Unlike vpmaddubsw (u8 x s8 pairs saturate at int16: 255*127*2
 * > 32767) this is exact for every input, so integer results are bit-exact with numpy.
 */
#ifndef DSCY_KERNELS_H
#define DSCY_KERNELS_H
#include <stdint.h>
#include <stddef.h>

/* Fused epilogue, applied once per output element:
 *   v = acc + bias[n]                                          (int32)
 *   out_type INT32: out = v
 *   else f = (float)v * scale[n]                                 (float32, no FMA contraction)
 *        mid_type U8/S8 (a QuantizeLinear -> DequantizeLinear [-> Mul / Add per channel] inside
 *        the layer):
 *          f = (float)(saturate(rint(f) + mid_zp) - mid_zp) * mid_scale[n] + mid_bias[n]
 *        res_type F32/U8/S8 (a residual Add):  f = f + res[m][n] (F32)
 *                                                 f = f + (float)(res[m][n] - res_zp) * res_scale
 *        f = act(f); if y_scale != 1: f = f / y_scale    (QuantizeLinear's division)
 *   out_type F32: out = f
 *   out_type U8/S8: out = saturate(rint_half_even(f) + zero_point)   (ONNX QuantizeLinear)
 * With a mid step the output depends on (n, mid value) only; lut (when given) holds it, computed
 * once per layer (a GELU per element costs more than the multiply on a 768 -> 3072 layer).
 * act: 0 none, 1 relu (max(f,0)), 2 clip [lo, hi], 3 gelu (dscy_fastmath.h's rational erf). A
 * plain requantization folds the output scale into scale[n] (y_scale 1); after GELU or a mid
 * step the activation sees real values, and y_scale is the output quantization scale. */
enum { DSCY_OUT_I32 = 0, DSCY_OUT_F32 = 1, DSCY_OUT_U8 = 2, DSCY_OUT_S8 = 3 };
enum { DSCY_ACT_NONE = 0, DSCY_ACT_RELU = 1, DSCY_ACT_CLIP = 2, DSCY_ACT_GELU = 3 };

typedef struct {
    const int32_t *bias;    /* [N] (zero-point compensation already folded in), never NULL */
    const float *scale;     /* [N], never NULL (unused for INT32 out) */
    int out_type, act;
    float lo, hi;           /* clip bounds (act == CLIP) */
    float y_scale;          /* divisor after the activation (1: none) */
    int mid_type;           /* 0, or DSCY_OUT_U8 / DSCY_OUT_S8: the quantize-dequantize step */
    int mid_zp;
    const float *mid_scale; /* [N] (mid_type != 0), never NULL then */
    const float *mid_bias;  /* [N] (mid_type != 0), never NULL then */
    const uint8_t *lut;     /* NULL, or (mid_type != 0, U8/S8 out, no residual) the output byte of
                             * every mid value: lut[n * 256 + q - type min], q the mid step's
                             * saturate(rint(f) + mid_zp); replaces the rest of the epilogue
                             * (N * 256 + 4 bytes: the vector path reads 4 at a time) */
    int lut_shared;         /* 1: lut's N rows are all the same (row 0 serves every channel) */
    int res_type;           /* 0, or DSCY_OUT_F32 / U8 / S8: residual added before the activation */
    int res_zp;
    float res_scale;
    const void *res;        /* [M][ldr] elements of res_type, tokens-major like out */
    ptrdiff_t ldr;
    int zero_point;         /* output zero point (U8/S8 out) */
    void *out;              /* [M][ldo] elements of out_type, tokens-major */
    ptrdiff_t ldo;          /* row stride of out, in elements */
    ptrdiff_t plane;        /* 0: out as above. > 0 (the sparse kernel only): out is planar
                             * [B][N][plane] (a conv's NCHW output): token m = b * plane + p,
                             * output n at element b * pbatch + n * plane + p */
    ptrdiff_t pbatch;
    const int32_t *row_order; /* the sparse kernel only: NULL, or [N rounded up to a multiple of
                             * DSCY_ROW_CHUNK (64)]: the rows of each aligned chunk of 64 in the
                             * order to run them (by block count: a row loop's trip count then
                             * rarely changes from one row to the next, where random counts
                             * cost about a branch miss a row), -1 past N */
} dscy_epilogue;
#define DSCY_ROW_CHUNK 64

/* A k x k convolution's im2col rows, read straight from its NHWC input by the packers (no
 * column buffer): row m = output pixel (b, oy, ox) holds, in column order (ky, kx, c), the input
 * bytes at (oy*sh - pt + ky*dh, ox*sw - pl + kx*dw), or pad (the zero point's byte) outside. */
typedef struct {
    const uint8_t *x;       /* [B][H][W][C] u8, or s8 as its bytes */
    int B, H, W, C, KH, KW, sh, sw, dh, dw, pt, pl, Ho, Wo;
    uint8_t pad;
} dscy_conv_geom;

/* DSCY_QUADS: the avx512_vnni build, whose INT8 kernels multiply u8 x s8 quads by vpdpbusd.
 * They store s8 activations xor 0x80 (x + 128), so for s8 x the caller's bias must carry
 * -128 * sum_k w (PreparedQS8 passes that bias; the avx2 / generic builds take the plain one). */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define DSCY_QUADS 1
#else
#define DSCY_QUADS 0
#endif

/* ---- dense INT8 GEMM (qs8_gemm.c) ---- */
#if DSCY_QUADS
/* xp holds bytes, micro-tiles of MR tokens [Mp/MR][Kp/4][MR][4] (Kp = K rounded up to a multiple
 * of 4), wp s8 [Np/NR][Kp/4][NR][4]. */
#define DSCY_GEMM_MR 16     /* tokens per micro-tile (16 zmm accumulators) */
#else
#define DSCY_GEMM_MR 6      /* tokens per micro-tile */
#endif
#define DSCY_GEMM_NR 16     /* output channels per micro-tile (two ymm / one zmm of int32) */
/* DSCY_AMX: the amx build of qs8_gemm (the avx512_vnni flags plus -mamx-tile -mamx-int8): the
 * same u8 x s8 products (s8 x stored xor 0x80, the same bias) on AMX tiles. There Kp is a
 * multiple of 64 (a tile row), xp holds the rows as tiles [Mp/16][Kp/64][16][64] (each A tile
 * 1 KiB in one piece; zero past K and past M) and wp the quads [Np/NR][Kp/4][NR][4] of the
 * other quad build (a panel's 16 quads are one B tile). The
 * process must have asked Linux for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM: _cpuid's
 * features() does, and dispatch takes the amx build only when it was granted). */
#if DSCY_QUADS && defined(__AMX_TILE__) && defined(__AMX_INT8__)
#define DSCY_AMX 1
#else
#define DSCY_AMX 0
#endif
/* x [M][K] u8 (x_signed=0) or s8 -> xp int16 [Mp][Kp], Mp = ceil(M/MR)*MR, Kp = K rounded up to even */
void dscy_qs8_pack_x_rows(const void *x, int x_signed, ptrdiff_t ldx, int M, int K,
                          int16_t *xp, int Mp, int Kp, int nthreads);
/* the same from a convolution's rows (M = B*Ho*Wo, K = KH*KW*C); 0, or -1 when the quads build
 * could not allocate its per-thread gather buffer */
/* amx build: a convolution gathering each work item's im2col rows into its own tiles
 * (qs8_gemm.c); -1 on a failed scratch allocation, -2 in the other builds */
int dscy_qs8_conv_amx(const dscy_conv_geom *g, int x_signed, const int16_t *wp, int N, int Np,
                      int Kp, const dscy_epilogue *ep, int nthreads);
/* amx build: a k x k convolution read straight from a padded copy of x by overlapping tile
 * rows (qs8_gemm.c); xpad: dscy_conv_direct_len(...) bytes. -1 when xpad is short or dw != 1,
 * -2 in the other builds. */
int dscy_qs8_conv_amx_direct(const dscy_conv_geom *g, int x_signed, uint8_t *xpad, long xpad_len,
                             const int8_t *wd, int nch, int N, int Np, const dscy_epilogue *ep,
                             int nthreads);
/* The padded copy of dscy_qs8_conv_amx_direct: pixels per row, and bytes in all. Stride 1
 * (sh = sw = 1): rows of exactly the padded width Wo + KW - 1, read as one flat run of virtual
 * pixels (the tiles run on across row ends), plus a last tile's overrun; other strides: rows
 * wide enough for the last 16-pixel tile of an output row to read its nch * 64 bytes. */
static inline int dscy_conv_direct_flat(int sh, int sw) { return sh == 1 && sw == 1; }
static inline long dscy_conv_direct_width(int Wo, int KW, int sh, int sw, int C, int nch) {
    if (dscy_conv_direct_flat(sh, sw)) return (long)Wo + KW - 1;
    return (long)(((Wo + 15) / 16) * 16 - 1) * sw + ((long)nch * 64 + C - 1) / C + 1;
}
static inline long dscy_conv_direct_len(int B, int Ho, int Wo, int KH, int KW, int sh, int sw,
                                        int dh, int C, int nch) {
    long hp = (long)(Ho - 1) * sh + (long)(KH - 1) * dh + 1;
    long n = (long)B * hp * dscy_conv_direct_width(Wo, KW, sh, sw, C, nch);
    if (dscy_conv_direct_flat(sh, sw)) n += 16 + ((long)nch * 64 + C - 1) / C + 1;
    return n * C;
}
int dscy_qs8_pack_conv_rows(const dscy_conv_geom *g, int x_signed, int16_t *xp, int Mp,
                             int Kp, int nthreads);
/* xp [Mp][Kp] int16, wp int16 [Np/NR][Kp/2][NR][2]; out via epilogue (only M x N written) */
void dscy_qs8_gemm(const int16_t *xp, int M, int Mp, int Kp, const int16_t *wp, int N, int Np,
                   const dscy_epilogue *ep, int nthreads);
/* dscy_qs8_gemm over nep (<= DSCY_GEMM_PARTS_MAX) parts of seg output columns, each with its
 * own epilogue and output (ep[nep]; N = nep * seg, seg a multiple of 32; nep 1: seg = N). 0, or -1 for another split */
#define DSCY_GEMM_PARTS_MAX 4
int dscy_qs8_gemm_parts(const int16_t *xp, int M, int Mp, int Kp, const int16_t *wp, int N,
                        int Np, const dscy_epilogue *ep, int nep, int seg, int nthreads);
/* the calling thread's scratch for packed activations, at least nbytes (64-byte aligned, kept
 * and grown by the next call; NULL when allocation fails) */
void *dscy_qs8_xp_buffer(size_t nbytes);
/* dscy_qs8_pack_x_rows + dscy_qs8_gemm_parts in one call (the amx build: one parallel region) */
int dscy_qs8_gemm_parts_x(const void *x, int x_signed, ptrdiff_t ldx, int M, int K, int16_t *xp,
                          int Mp, int Kp, const int16_t *wp, int N, int Np,
                          const dscy_epilogue *ep, int nep, int seg, int nthreads);

/* ---- depthwise INT8 conv (qs8_dw.c, in the qs8_gemm module) ---- */
/* x [B][H][W][C] u8 (x_signed 0) or s8; w float [KH*KW][C] (the s8 weights); zxw float [KH][C]
 * (zx times each kernel row's weight sum); output pixel m = (b*Ho + oy)*Wo + ox, channel c through
 * ep (bias without zero-point fold: taps outside the input are skipped, i.e. padded with zx).
 * Returns 0, or -1 when KH*KW > 256 (the float32 sums would no longer be exact). */
int dscy_qs8_dwconv(const void *x, int x_signed, int B, int H, int W, int C, float zx,
                    const float *w, const float *zxw, int KH, int KW, int sh, int sw, int dh,
                    int dw, int pt, int pl, int Ho, int Wo, const dscy_epilogue *ep, int nthreads);

/* ---- sparse INT8 (qs8_spmm.c) ---- */
#define DSCY_SPMM_T 32      /* tokens per tile (a tail of up to 8 tokens: one 8-token tile; more: a zero-padded 32-token tile) */
/* x [M][K] -> xt int16 tiles: for each tile of T tokens (T = 32, or 8 for a tail of at most 8), [Kp/2][T][2]
 * (two consecutive k of one token side by side). Size: dscy_qs8_spmm_xt_size(M, Kp). */
size_t dscy_qs8_spmm_xt_size(int M, int Kp);
/* Row-compressed blocks: row n owns blocks row_ptr[n]..row_ptr[n+1]; block b covers k-pairs
 * idx[b]*bp .. idx[b]*bp+bp-1 with weights vals[b*2bp .. b*2bp+2bp-1] (s8).
 * bp = 2: "block4" (1x4 along K); bp = 1: "unstructured" (1x2 pair blocks).
 * x [M][K] (row stride ldx bytes) is packed into xt (scratch of dscy_qs8_spmm_xt_size(M, Kp)
 * int16, or NULL: a buffer of the calling thread kept between calls) and multiplied in one
 * parallel region; with enough token tiles each thread packs and multiplies its own tiles.
 * out via epilogue. Returns 0, or -1 when the buffer could not be allocated. */
int dscy_qs8_spmm_x(const void *x, int x_signed, ptrdiff_t ldx, int K, int16_t *xt, int M, int Kp,
                    const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                    int N, const dscy_epilogue *ep, int nthreads);
/* dscy_qs8_spmm_x over nep (<= DSCY_SPMM_PARTS_MAX) parts of seg output rows each (seg a
 * multiple of DSCY_ROW_CHUNK, N = nep * seg), each with its own epilogue (arrays from its own
 * row 0) and output; 0, -1 (buffer allocation) or -2 (a split or epilogue it cannot run) */
#define DSCY_SPMM_PARTS_MAX 4
int dscy_qs8_spmm_parts(const void *x, int x_signed, ptrdiff_t ldx, int K, int M, int Kp,
                        const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                        int N, const dscy_epilogue *eps, int nep, int seg, int nthreads);

/* the same with x the im2col rows of a convolution (g; M = B*Ho*Wo, K = KH*KW*C): each tile's
 * rows are gathered into a small per-thread buffer and packed from there */
/* the same on a planar x [B][K][plane] (a 1x1 conv's NCHW input, M = B * plane) */
int dscy_qs8_spmm_planar(const void *x, int x_signed, ptrdiff_t plane, int K, int M, int Kp,
                         const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                         int N, const dscy_epilogue *ep, int nthreads);
/* The sparse kernel's table epilogue runs on VBMI byte permutes: 1 when it does (the avx512_vnni
 * build on a CPU with AVX-512 VBMI); off >= 0 first turns them off (1) or back on (0). */
int dscy_qs8_spmm_vbmi(int off);
/* The dense builds' (qs8_gemm.c) the same: their shared-table epilogue (lut_shared) */
int dscy_qs8_gemm_vbmi(int off);
int dscy_qs8_spmm_conv(const dscy_conv_geom *g, int x_signed, int M, int K, int Kp,
                       const int32_t *row_ptr, const uint16_t *idx, const int8_t *vals, int bp,
                       int N, const dscy_epilogue *ep, int nthreads);

/* ---- sparse FP32 (f32_spmm.c) ---- */
size_t dscy_f32_spmm_xt_size(int M, int K);
void dscy_f32_pack_x_tiles(const float *x, ptrdiff_t ldx, int M, int K, float *xt, int nthreads);
/* act: 0 none, 1 relu, 2 clip, 3 gelu (erf form). out [M][ldo] float32 */
/* panel_ptr: NULL (one pass over K), or int32 [N][npan+1], row n's nonzeros of K panel p
 * (k in [p*PANEL_K, (p+1)*PANEL_K) of kernels/f32.py) being panel_ptr[n][p] .. panel_ptr[n][p+1]-1: each 32-token
 * tile then makes npan passes, the later ones adding into out. */
void dscy_f32_spmm(const float *xt, int M, int K, const int32_t *row_ptr, const uint16_t *idx,
                   const float *vals, int N, const float *bias, int act, float lo, float hi,
                   float *out, ptrdiff_t ldo, const int32_t *panel_ptr, int npan, int nthreads);

/* ---- dense FP32 conv2d, implicit im2col GEMM (f32_conv.c) ---- */
size_t dscy_f32_conv_wpack_size(int M, int K);
void dscy_f32_conv_pack_w(const float *w, int M, int K, float *wp);
/* act: f32_fused.h's DSCY_F_* codes. Returns 0, -1 when scratch allocation failed. */
int dscy_f32_conv2d(const float *x, int N, int C, int H, int W, const float *wp, int M,
                    int KH, int KW, int sw, int dh, int dw, const int32_t *ih0,
                    const int32_t *iw0, int P, const float *bias, const float *z, int act,
                    float p0, float p1, float *out, float *xph, int nthreads,
                    const float *uw);
/* uw: NULL, or for 3x3 weights their Winograd transform (dscy_f32_wino_pack), which stride-1
 * convs then run on (f32_wino.c) where its tiles fill the GEMM strips */
void dscy_f32_conv_set_wino(int on);
int dscy_f32_conv_get_wino(void);
/* ---- Winograd F(2x2, 3x3) (f32_wino.c; AVX2 build, the generic one reports 0) ---- */
size_t dscy_f32_wino_wsize(int M, int C);
void dscy_f32_wino_pack(const float *w, int M, int C, float *u);
int dscy_f32_wino_available(void);
int dscy_f32_wino_suits(int Ho, int Wo);
int dscy_f32_conv2d_wino(const float *x, int N, int C, int H, int W, const float *u, int M,
                         int pt, int pl, int Ho, int Wo, const float *bias, const float *z,
                         int act, float p0, float p1, float *out, int nthreads);
/* xph: NULL, or (stride_w > 1) scratch of dscy_f32_conv_xph_size floats for the phase split */
size_t dscy_f32_conv_xph_size(int N, int C, int H, int W, int sw);
/* whether dscy_f32_conv2d uses xph for this conv (P output pixels per image) */
int dscy_f32_conv_uses_phase_split(int M, int KH, int KW, int sw, int P);
/* whether depthwise convs of small planes run eight channels at once (default 1; tests force
 * both paths) */
void dscy_f32_dwconv_set_group(int on);
int dscy_f32_dwconv_get_group(void);

/* depthwise 2-D conv: w [C][KH*KW], bias [C] or NULL, z [N][C][Ho][Wo] or NULL, out the same;
 * act: DSCY_F_* codes. Returns 0, -1 when scratch allocation failed. */
int dscy_f32_dwconv2d(const float *x, int N, int C, int H, int W, const float *w, int KH, int KW,
                      int sh, int sw, int dh, int dw, int pt, int pl, int Ho, int Wo,
                      const float *bias, const float *z, int act, float p0, float p1,
                      float *out, int nthreads);

/* ---- dense FP32 GEMM with packed constant weight (f32_conv.c) ---- */
size_t dscy_f32_gemm_wpack_size(int K, int N);
void dscy_f32_gemm_pack_w(const float *w, int K, int N, float *wp);
size_t dscy_f32_gemm_xpack_size(int T, int K);
int dscy_f32_gemm(const float *x, ptrdiff_t ldx, int T, int K, const float *wp, int N,
                  const float *bias, int act, float p0, float p1, float *out, ptrdiff_t ldo,
                  float *xp, int nthreads);

/* ---- FP32 attention per (batch, head) (f32_attn.c); strides in elements of each array: out
 * float32, or with q_out bytes QuantizeLinear(scale, zp) makes of it (u8, s8 with q_signed).
 * q, k, v are float32, or (in[i].type DSCY_ATT_U8 / S8, in = NULL: all float) 8-bit values
 * whose floats are (x - zp) * scale [+ bias[h * D + d]], each step rounded to float32 (the
 * QGemm's requantize-dequantize mid step, so the values equal the float input it replaces) ---- */
#define DSCY_ATT_F32 0
#define DSCY_ATT_U8 1
#define DSCY_ATT_S8 2
typedef struct { int type; float zp, scale; const float *bias; } dscy_att_in;
int dscy_f32_attention(const void *q, ptrdiff_t qb, ptrdiff_t qs, ptrdiff_t qh,
                       const void *k, ptrdiff_t kb, ptrdiff_t ks, ptrdiff_t kh,
                       const void *v, ptrdiff_t vb, ptrdiff_t vs, ptrdiff_t vh,
                       const float *mask, ptrdiff_t mb, ptrdiff_t mh, ptrdiff_t mq,
                       void *out, ptrdiff_t ob, ptrdiff_t os, ptrdiff_t oh,
                       int B, int H, int S, int T, int D, int Dv, float scale, int nthreads,
                       int q_out, int q_signed, float q_scale, float q_zp,
                       const dscy_att_in *in);

/* ---- probes (qs8_gemm.c) ---- */
/* MACs per second of a register-only loop of `kind`: 0 vpmaddubsw+vpmaddwd(ones)+vpaddd,
 * 1 vpmaddwd+vpaddd (the sequence the AVX2 kernels use), 2 vfmadd231ps (f32 FMAs/s).
 * Returns 0 when the build has no AVX2. */
double dscy_probe_peak(int kind, long iters);

#endif
