# The compiled attention's Python entry (csrc/f32_attn.c), shared by the f32_conv builds (float32
# products on zmm / ymm / plain C) and the f32_attn amx build (bf16 products on AMX tiles when
# the output is quantized). Included after _common.pxi.

cdef extern from "csrc/dscy_kernels.h" nogil:
    int dscy_f32_attention(const float *q, Py_ssize_t qb, Py_ssize_t qs, Py_ssize_t qh,
                           const float *k, Py_ssize_t kb, Py_ssize_t ks, Py_ssize_t kh,
                           const float *v, Py_ssize_t vb, Py_ssize_t vs, Py_ssize_t vh,
                           const float *mask, Py_ssize_t mb, Py_ssize_t mh, Py_ssize_t mq,
                           void *out, Py_ssize_t ob, Py_ssize_t os, Py_ssize_t oh,
                           int B, int H, int S, int T, int D, int Dv, float scale, int nthreads,
                           int q_out, int q_signed, float q_scale, float q_zp)


def attention(cnp.ndarray q,        # IN  float32 [B, S, H, D] view, last axis contiguous
              cnp.ndarray k,        # IN  float32 [B, T, H, D]
              cnp.ndarray v,        # IN  float32 [B, T, H, Dv]
              mask,                 # IN  float32 [B, H, S, T] broadcast view (keys contiguous) or None
              float scale,
              cnp.ndarray out,      # OUT float32 [B, S, H, Dv] view, last axis contiguous
              int nthreads,
              quant=None):          # (scale, zero point): out is uint8 / int8, QuantizeLinear'd
    """out = softmax(scale * q k^T + mask) v per (batch, head) (csrc/f32_attn.c); the caller
    (ops/fast_fused.py) checks shapes and layouts (S, T >= 1). With quant, out (uint8 or int8)
    gets QuantizeLinear(that, *quant), the op's own row function on each row while in cache."""
    cdef int B = q.shape[0], S = q.shape[1], H = q.shape[2], D = q.shape[3]
    cdef int T = k.shape[1], Dv = v.shape[3]
    cdef const float *mp = NULL
    cdef Py_ssize_t mb = 0, mh = 0, mq = 0
    cdef cnp.ndarray m
    if mask is not None:
        m = <cnp.ndarray>mask
        mp = <const float *>_ptr(m)
        mb, mh, mq = m.strides[0] // 4, m.strides[1] // 4, m.strides[2] // 4
    cdef int rc
    cdef const float *qp = <const float *>_ptr(q)
    cdef const float *kp = <const float *>_ptr(k)
    cdef const float *vp = <const float *>_ptr(v)
    cdef void *op = _ptr(out)
    cdef Py_ssize_t qb = q.strides[0] // 4, qs = q.strides[1] // 4, qh = q.strides[2] // 4
    cdef Py_ssize_t kb = k.strides[0] // 4, ks = k.strides[1] // 4, kh = k.strides[2] // 4
    cdef Py_ssize_t vb = v.strides[0] // 4, vs = v.strides[1] // 4, vh = v.strides[2] // 4
    cdef Py_ssize_t es = out.itemsize
    cdef Py_ssize_t ob = out.strides[0] // es, os_ = out.strides[1] // es, oh = out.strides[2] // es
    cdef int q_signed = 0
    cdef float q_scale = 1.0, q_zp = 0.0
    cdef bint qmode = quant is not None
    if B == 0 or H == 0 or S == 0 or T == 0:
        raise ValueError("attention kernel needs at least one query and one key")
    if quant is not None:
        if out.dtype not in (np.uint8, np.int8) or out.strides[3] != 1:
            raise ValueError("a quantized attention output is uint8 / int8, last axis contiguous")
        q_signed = out.dtype == np.int8
        q_scale, q_zp = quant[0], quant[1]
    elif out.dtype != np.float32:
        raise ValueError("attention output must be float32 without quant")
    with nogil:
        rc = dscy_f32_attention(qp, qb, qs, qh, kp, kb, ks, kh, vp, vb, vs, vh, mp, mb, mh, mq,
                                op, ob, os_, oh, B, H, S, T, D, Dv, scale, nthreads, qmode,
                                q_signed, q_scale, q_zp)
    if rc != 0:
        raise MemoryError("f32 attention: could not allocate its scratch")
    return out
