# cython: language_level=3
"""Sparse FP32 GEMM (unstructured), one build per ISA (module _f32_spmm_<isa>). Called through
f32.py, which checks the arguments."""
import numpy as np
from deepsparse_cy.kernels._mem import thread_scratch
include "_common.pxi"

cdef extern from "csrc/dscy_kernels.h" nogil:
    size_t dscy_f32_spmm_xt_size(int M, int K)
    void dscy_f32_pack_x_tiles(const float *x, Py_ssize_t ldx, int M, int K, float *xt, int nthreads)
    void dscy_f32_spmm(const float *xt, int M, int K, const int32_t *row_ptr, const uint16_t *idx,
                       const float *vals, int N, const float *bias, int act, float lo, float hi,
                       float *out, Py_ssize_t ldo, const int32_t *panel_ptr, int npan,
                       int nthreads)

ISA = DSCY_ISA


def spmm(cnp.ndarray x,            # IN  float32 [M][K], rows contiguous
         cnp.ndarray row_ptr,      # IN  int32 [N+1]
         cnp.ndarray idx,          # IN  uint16 [nnz]
         cnp.ndarray vals,         # IN  float32 [nnz]
         int N,
         cnp.ndarray bias,         # IN  float32 [N]
         int act, float lo, float hi,
         cnp.ndarray out,          # OUT float32 [M][>=N]
         int nthreads,
         panel_ptr=None,           # IN  int32 [N][P+1] (K > panel_k) or None
         int panel_k=0):
    cdef int M = x.shape[0], K = x.shape[1]
    cdef cnp.ndarray xt = thread_scratch(dscy_f32_spmm_xt_size(M, K) * 4, "f32_spmm_xt")
    cdef const float *xp = <const float *>_ptr(x)
    cdef Py_ssize_t ldx = x.strides[0] // 4
    cdef float *xtp = <float *>_ptr(xt)
    cdef const int32_t *rp = <const int32_t *>_ptr(row_ptr)
    cdef const uint16_t *ip = <const uint16_t *>_ptr(idx)
    cdef const float *vp = <const float *>_ptr(vals)
    cdef const float *bp = <const float *>_ptr(bias)
    cdef float *op = <float *>_ptr(out)
    cdef Py_ssize_t ldo = out.strides[0] // 4
    cdef const int32_t *pp = NULL
    cdef int npan = 1
    cdef cnp.ndarray ppa
    if panel_ptr is not None:
        ppa = <cnp.ndarray>panel_ptr
        npan = ppa.shape[1] - 1
        if ppa.shape[0] != N or npan < 1 or panel_k < 1 or npan != (K + panel_k - 1) // panel_k:
            raise ValueError("panel_ptr does not match N, K and panel_k")
        pp = <const int32_t *>_ptr(ppa)
    with nogil:
        dscy_f32_pack_x_tiles(xp, ldx, M, K, xtp, nthreads)
        dscy_f32_spmm(xtp, M, K, rp, ip, vp, N, bp, act, lo, hi, op, ldo, pp, npan, nthreads)
    return out
