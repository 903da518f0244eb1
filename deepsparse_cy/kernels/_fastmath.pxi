# Cython declarations of csrc/dscy_fastmath.h, included by _f32_ops.pyx and _f32_fused.pyx
# (each module uses part of them; one list so the two cannot drift apart).

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
