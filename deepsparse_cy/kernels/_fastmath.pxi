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
    void dscy_dequant_row_u8(const unsigned char *q, float *y, long n, float zp, float scale,
                             const float *bias)
    void dscy_dequant_row_s8(const signed char *q, float *y, long n, float zp, float scale,
                             const float *bias)
