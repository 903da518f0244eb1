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


cdef class BoundAttention:
    """attention() on fixed arrays, prepared once (its pointers, strides, dequantization and
    output quantization): calling it runs the kernel with no argument handling. attention()
    makes one per call; the engine's bound step keeps one (attention_bound)."""
    cdef const void *qp
    cdef const void *kp
    cdef const void *vp
    cdef void *op
    cdef const float *mp
    cdef Py_ssize_t qb, qs, qh, kb, ks, kh, vb, vs, vh, mb, mh, mq, ob, os_, oh
    cdef int B, H, S, T, D, Dv, nthreads, qmode, q_signed
    cdef float scale, q_scale, q_zp
    cdef dscy_att_in att_in[3]
    cdef bint has_in
    cdef object keep                   # the arrays the pointers above point into

    def __call__(self):
        cdef int rc
        cdef const dscy_att_in *inp = self.att_in if self.has_in else NULL
        with nogil:
            rc = dscy_f32_attention(self.qp, self.qb, self.qs, self.qh, self.kp, self.kb,
                                    self.ks, self.kh, self.vp, self.vb, self.vs, self.vh,
                                    self.mp, self.mb, self.mh, self.mq, self.op, self.ob,
                                    self.os_, self.oh, self.B, self.H, self.S, self.T, self.D,
                                    self.Dv, self.scale, self.nthreads, self.qmode,
                                    self.q_signed, self.q_scale, self.q_zp, inp)
        if rc != 0:
            raise MemoryError("f32 attention: could not allocate its scratch")


cdef BoundAttention _prepare_attention(cnp.ndarray q, cnp.ndarray k, cnp.ndarray v, mask,
                                       float scale, cnp.ndarray out, int nthreads, quant, deq):
    cdef BoundAttention a = BoundAttention.__new__(BoundAttention)
    a.B, a.S, a.H, a.D = q.shape[0], q.shape[1], q.shape[2], q.shape[3]
    a.T, a.Dv = k.shape[1], v.shape[3]
    a.mp = NULL
    a.mb = a.mh = a.mq = 0
    cdef cnp.ndarray m
    keep = [q, k, v, out]
    if mask is not None:
        m = <cnp.ndarray>mask
        keep.append(m)
        a.mp = <const float *>_ptr(m)
        a.mb, a.mh, a.mq = m.strides[0] // 4, m.strides[1] // 4, m.strides[2] // 4
    a.qp, a.kp, a.vp, a.op = _ptr(q), _ptr(k), _ptr(v), _ptr(out)
    cdef Py_ssize_t qi = q.itemsize, ki = k.itemsize, vi = v.itemsize
    a.qb, a.qs, a.qh = q.strides[0] // qi, q.strides[1] // qi, q.strides[2] // qi
    a.kb, a.ks, a.kh = k.strides[0] // ki, k.strides[1] // ki, k.strides[2] // ki
    a.vb, a.vs, a.vh = v.strides[0] // vi, v.strides[1] // vi, v.strides[2] // vi
    cdef int i
    cdef cnp.ndarray x, bias
    a.has_in = False
    for i, x in enumerate((q, k, v)):
        d = deq[i] if deq is not None else None
        a.att_in[i].type = 0
        a.att_in[i].bias = NULL
        if d is None:
            if x.dtype != np.float32:
                raise ValueError("attention: a float32 input, or uint8 / int8 with its dequantization")
            continue
        if x.dtype not in (np.uint8, np.int8):
            raise ValueError("attention: a dequantized input must be uint8 / int8")
        a.att_in[i].type = 1 if x.dtype == np.uint8 else 2
        a.att_in[i].scale = d[0]
        a.att_in[i].zp = d[1]
        if d[2] is not None:
            bias = np.ascontiguousarray(d[2], np.float32).reshape(-1)
            if bias.shape[0] != x.shape[2] * x.shape[3]:
                raise ValueError(f"attention: the bias of a dequantized input needs H * D = "
                                 f"{x.shape[2] * x.shape[3]} values, got {bias.shape[0]}")
            keep.append(bias)
            a.att_in[i].bias = <const float *>_ptr(bias)
        a.has_in = True
    cdef Py_ssize_t es = out.itemsize
    a.ob, a.os_, a.oh = out.strides[0] // es, out.strides[1] // es, out.strides[2] // es
    a.q_signed = 0
    a.q_scale, a.q_zp = 1.0, 0.0
    a.qmode = quant is not None
    if a.B == 0 or a.H == 0 or a.S == 0 or a.T == 0:
        raise ValueError("attention kernel needs at least one query and one key")
    if quant is not None:
        if out.dtype not in (np.uint8, np.int8) or out.strides[3] != 1:
            raise ValueError("a quantized attention output is uint8 / int8, last axis contiguous")
        a.q_signed = out.dtype == np.int8
        a.q_scale, a.q_zp = quant[0], quant[1]
    elif out.dtype != np.float32:
        raise ValueError("attention output must be float32 without quant")
    a.scale, a.nthreads = scale, nthreads
    a.keep = keep
    return a


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
    _prepare_attention(q, k, v, mask, scale, out, nthreads, quant, deq)()
    return out


def attention_bound(cnp.ndarray q, cnp.ndarray k, cnp.ndarray v, mask, float scale,
                    cnp.ndarray out, int nthreads, quant=None, deq=None):
    """attention()'s call on these arrays as a BoundAttention (calling it is that call)."""
    return _prepare_attention(q, k, v, mask, scale, out, nthreads, quant, deq)
