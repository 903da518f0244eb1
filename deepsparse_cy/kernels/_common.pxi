# Shared Cython declarations of csrc/dscy_kernels.h (included by each kernel family's .pyx).
from libc.stdint cimport int8_t, uint8_t, int16_t, uint16_t, int32_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "csrc/dscy_kernels.h" nogil:
    ctypedef struct dscy_epilogue:
        const int32_t *bias
        const float *scale
        int out_type, act
        float lo, hi
        float y_scale
        int mid_type, mid_zp
        const float *mid_scale
        const float *mid_bias
        const uint8_t *lut
        int lut_shared
        int res_type, res_zp
        float res_scale
        const void *res
        Py_ssize_t ldr
        int zero_point
        void *out
        Py_ssize_t ldo
        Py_ssize_t plane, pbatch
        const int32_t *row_order
    int DSCY_GEMM_MR, DSCY_GEMM_NR
    ctypedef struct dscy_conv_geom:
        const uint8_t *x
        int B, H, W, C, KH, KW, sh, sw, dh, dw, pt, pl, Ho, Wo
        uint8_t pad

cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)

cdef inline dscy_epilogue _epilogue(cnp.ndarray bias, cnp.ndarray scale, int out_type, int act,
                                    float lo, float hi, float y_scale, tuple mid, tuple res,
                                    int zp, cnp.ndarray out):
    cdef dscy_epilogue ep
    ep.row_order = NULL
    ep.bias = <const int32_t *>_ptr(bias)
    ep.scale = <const float *>_ptr(scale)
    ep.out_type = out_type
    ep.act = act
    ep.lo = lo
    ep.hi = hi
    ep.y_scale = y_scale
    cdef cnp.ndarray mb, ms
    ep.mid_type = 0
    ep.mid_zp = 0
    ep.mid_scale = NULL
    ep.mid_bias = NULL
    ep.lut = NULL
    ep.lut_shared = 0
    cdef cnp.ndarray lut
    if mid is not None:    # (type code, zero point, float32 scale [>= N], float32 bias [>= N]
                           #  [, uint8 table [N * 256 + 4] or None, its rows all equal])
        ms = <cnp.ndarray>mid[2]
        mb = <cnp.ndarray>mid[3]
        ep.mid_type = <int>mid[0]
        ep.mid_zp = <int>mid[1]
        ep.mid_scale = <const float *>_ptr(ms)
        ep.mid_bias = <const float *>_ptr(mb)
        if len(mid) > 4 and mid[4] is not None and res is None and out_type >= 2:
            lut = <cnp.ndarray>mid[4]
            ep.lut = <const uint8_t *>_ptr(lut)
            ep.lut_shared = 1 if len(mid) > 5 and mid[5] else 0
    cdef cnp.ndarray ra
    ep.res_type = 0
    ep.res_zp = 0
    ep.res_scale = 1.0
    ep.res = NULL
    ep.ldr = 0
    if res is not None:    # (array [M][>= N] with contiguous rows, type code, zero point, scale)
        ra = <cnp.ndarray>res[0]
        ep.res = _ptr(ra)
        ep.ldr = ra.strides[0] // ra.itemsize
        ep.res_type = <int>res[1]
        ep.res_zp = <int>res[2]
        ep.res_scale = <float>res[3]
    ep.zero_point = zp
    ep.out = _ptr(out)
    ep.plane = 0
    ep.pbatch = 0
    if out.ndim == 3:      # planar [B][N][plane], C-contiguous (the sparse kernel only)
        ep.plane = out.shape[2]
        ep.pbatch = out.strides[0] // out.itemsize
        ep.ldo = 0
    else:
        ep.ldo = out.strides[0] // out.itemsize
    return ep


cdef inline dscy_conv_geom _geom(cnp.ndarray x, tuple g, int pad_byte):
    """x: [B, H, W, C] 8-bit, C-contiguous; g = (KH, KW, sh, sw, dh, dw, pt, pl, Ho, Wo)."""
    cdef dscy_conv_geom c
    c.x = <const uint8_t *>_ptr(x)
    c.B = x.shape[0]
    c.H = x.shape[1]
    c.W = x.shape[2]
    c.C = x.shape[3]
    c.KH, c.KW, c.sh, c.sw, c.dh, c.dw, c.pt, c.pl, c.Ho, c.Wo = g
    c.pad = <uint8_t>(pad_byte & 0xFF)
    return c
