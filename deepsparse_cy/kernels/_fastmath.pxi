# Cython declarations of csrc/dscy_fastmath.h, included by _f32_ops.pyx and _f32_fused.pyx
# (each module uses part of them; one list so the two cannot drift apart).


# The copies a module's kernels run (each including module has its own): 0 baseline, 1 AVX2+FMA,
# 2 also AVX-512 (the quantizers and dequantizer, LayerNorm rows of a multiple of 32).
# ops/fast_f32.py and ops/fast_fused.py set it from kernels.kernel_isa().
cdef int _level = 0


def set_avx2(bint on):
    """Run the AVX2+FMA copies of this module's kernels (only when the CPU has them); False:
    the baseline copies."""
    global _level
    _level = 1 if on else 0


def set_avx512(bint on):
    """Also the AVX-512 copies (only when the CPU has AVX-512 F/BW/VL/DQ); False goes back to
    the AVX2 copies."""
    global _level
    _level = 2 if on else 1


cdef int _vbmi = 0


def set_vbmi(bint on):
    """Run the AVX-512 VBMI copy of the 8-bit table lookup (only when the CPU has VBMI)."""
    global _vbmi
    _vbmi = 1 if on else 0


def vbmi():
    return bool(_vbmi)


def level():
    """The copies in use: 0 baseline, 1 AVX2+FMA, 2 also AVX-512 (tests restore it with
    set_level after forcing another)."""
    return _level


def set_level(int lv):
    global _level
    if lv not in (0, 1, 2):
        raise ValueError(f"level {lv}: 0, 1 or 2")
    _level = lv

cdef extern from "csrc/dscy_fastmath.h" nogil:
    int dscy_cap_threads(int want)
    void dscy_erf_array(const float *x, float *y, long n)
    void dscy_gelu_array(const float *x, float *y, long n)
    double dscy_exp_shift_array(const float *x, float *y, long n, float m)
    float dscy_max_array(const float *x, long n)
    void dscy_dw_plane_generic(const float *plane, long phase_len, const float *w,
                               const int *tph, const long *toff, int K, long Q1, long O0,
                               long O1, float bias, float *out)
    void dscy_dw_plane_avx2(const float *plane, long phase_len, const float *w,
                            const int *tph, const long *toff, int K, long Q1, long O0,
                            long O1, float bias, float *out)
    void dscy_clip_array(const float *x, float *y, long n, float lo, float hi)
    void dscy_quantize8(int avx2, int sgn, const float *x, void *y, long n, float scale,
                        float zp)
    void dscy_dequant_row(int level, int sgn, const void *q, float *y, long n, float zp,
                          float scale, const float *bias)
    void dscy_lut8_8(const unsigned char *x, unsigned char flip, const unsigned char *t,
                     unsigned char *y, long n)
    void dscy_lut8_8_vbmi(const unsigned char *x, unsigned char flip, const unsigned char *t,
                          unsigned char *y, long n)
    void dscy_qadd8_t2(const unsigned char *a, unsigned char fa, const unsigned char *b,
                       unsigned char fb, const unsigned char *t2, unsigned char *y, long n)
    void dscy_qadd8_t2_avx512(const unsigned char *a, unsigned char fa, const unsigned char *b,
                              unsigned char fb, const unsigned char *t2, unsigned char *y, long n)
    void dscy_qadd8(const unsigned char *a, unsigned char fa, const unsigned char *b,
                    unsigned char fb, const float *ta, const float *tb, void *y, int ykind,
                    float scale, float zp, long n, int level)


# The element-wise and row kernels of _f32_ops and _f32_fused take a second thread from 128K
# elements: with the FP32 GEMM, conv and attention on this package's kernels a model's ops no
# longer follow a BLAS call whose spinning workers hold the other core (the reason this was 1M,
# then 512K in _f32_ops); ResNet-50's and YOLOv8n's input quantizations (150528 and 307200
# elements) take 0.77x and 0.57x the time on two threads.
DEF SMALL = 131072


cdef inline int _nt(Py_ssize_t n, int num_threads) noexcept nogil:
    if n < SMALL or num_threads < 1:
        return 1
    return dscy_cap_threads(num_threads)   # never above threadpoolctl's / OMP's limit
