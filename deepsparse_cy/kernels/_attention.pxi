# The compiled attention's Python entry (csrc/f32_attn.c), shared by the f32_conv builds (float32
# products on zmm / ymm / plain C) and the f32_attn amx build (bf16 products on AMX tiles when
# the output is quantized). Included after _common.pxi.

cdef extern from "csrc/dscy_kernels.h" nogil:
    ctypedef struct dscy_att_in:
        int type
        float zp, scale
        const float *bias
    int dscy_f32_attention(const void *q, Py_ssize_t qb, Py_ssize_t qs, Py_ssize_t qh,
                           const void *k, Py_ssize_t kb, Py_ssize_t ks, Py_ssize_t kh,
                           const void *v, Py_ssize_t vb, Py_ssize_t vs, Py_ssize_t vh,
                           const float *mask, Py_ssize_t mb, Py_ssize_t mh, Py_ssize_t mq,
                           void *out, Py_ssize_t ob, Py_ssize_t os, Py_ssize_t oh,
                           int B, int H, int S, int T, int D, int Dv, float scale, int nthreads,
                           int q_out, int q_signed, float q_scale, float q_zp,
                           const dscy_att_in *att_in)


def attention(cnp.ndarray q,        # IN  float32 [B, S, H, D] view, last axis contiguous
              cnp.ndarray k,        # IN  float32 [B, T, H, D]
              cnp.ndarray v,        # IN  float32 [B, T, H, Dv]
              mask,                 # IN  float32 [B, H, S, T] broadcast view (keys contiguous) or None
              float scale,
              cnp.ndarray out,      # OUT float32 [B, S, H, Dv] view, last axis contiguous
              int nthreads,
              quant=None,           # (scale, zero point): out is uint8 / int8, QuantizeLinear'd
              deq=None):            # per q, k, v: None (float32) or (scale, zero point, bias)
    """out = softmax(scale * q k^T + mask) v per (batch, head) (csrc/f32_attn.c); the caller
    (ops/fast_fused.py) checks shapes and layouts (S, T >= 1). With quant, out (uint8 or int8)
    gets QuantizeLinear(that, *quant), the op's own row function on each row while in cache.
    With deq, an input given as (scale, zero point, bias) is uint8 / int8 and stands for the
    floats (x - zero point) * scale + bias[h * D + d] (bias float32 [H * D] or None; each step
    rounded to float32): the kernel dequantizes it as it packs."""
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
    cdef const void *qp = _ptr(q)
    cdef const void *kp = _ptr(k)
    cdef const void *vp = _ptr(v)
    cdef void *op = _ptr(out)
    cdef Py_ssize_t qi = q.itemsize, ki = k.itemsize, vi = v.itemsize
    cdef Py_ssize_t qb = q.strides[0] // qi, qs = q.strides[1] // qi, qh = q.strides[2] // qi
    cdef Py_ssize_t kb = k.strides[0] // ki, ks = k.strides[1] // ki, kh = k.strides[2] // ki
    cdef Py_ssize_t vb = v.strides[0] // vi, vs = v.strides[1] // vi, vh = v.strides[2] // vi
    cdef dscy_att_in att_in[3]
    cdef const dscy_att_in *inp = NULL
    cdef int i
    cdef cnp.ndarray a, bias
    cdef list keep = []
    for i, a in enumerate((q, k, v)):
        d = deq[i] if deq is not None else None
        att_in[i].type = 0
        att_in[i].bias = NULL
        if d is None:
            if a.dtype != np.float32:
                raise ValueError("attention: a float32 input, or uint8 / int8 with its dequantization")
            continue
        if a.dtype not in (np.uint8, np.int8):
            raise ValueError("attention: a dequantized input must be uint8 / int8")
        att_in[i].type = 1 if a.dtype == np.uint8 else 2
        att_in[i].scale = d[0]
        att_in[i].zp = d[1]
        if d[2] is not None:
            bias = np.ascontiguousarray(d[2], np.float32).reshape(-1)
            if bias.shape[0] != a.shape[2] * a.shape[3]:
                raise ValueError(f"attention: the bias of a dequantized input needs H * D = "
                                 f"{a.shape[2] * a.shape[3]} values, got {bias.shape[0]}")
            keep.append(bias)
            att_in[i].bias = <const float *>_ptr(bias)
        inp = att_in
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
                                q_signed, q_scale, q_zp, inp)
    if rc != 0:
        raise MemoryError("f32 attention: could not allocate its scratch")
    return out
