"""Attention family: Attention (23-25), RotaryEmbedding, LinearAttention, CausalConvWithState,
SwiGLU and FlexAttention (ai.onnx.preview).

Numpy references. Half-precision inputs (float16 / bfloat16) are computed in float32 and cast
back, which is at least as accurate as the spec's in-precision function body.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import Op, register

try:  # ml_dtypes ships with onnx; only needed to recognise bfloat16 and softmax_precision=16
    import ml_dtypes
    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    _BF16 = None

# TensorProto enum -> numpy dtype for softmax_precision
_PRECISION = {1: np.dtype(np.float32), 10: np.dtype(np.float16), 11: np.dtype(np.float64)}
if _BF16 is not None:
    _PRECISION[16] = _BF16


def _compute_dtype(dt):
    """Dtype used for the arithmetic: float32 for float16, the input dtype otherwise.

    bfloat16 stays bfloat16: its 8-bit mantissa makes float32 results differ from the spec's
    in-precision function body by more than the conformance tolerance."""
    dt = np.dtype(dt)
    if dt == np.float64 or dt == _BF16:
        return dt
    return np.dtype(np.float32)


def _to_heads(x, num_heads, name):
    """(B, S, H*D) -> (B, H, S, D)."""
    if num_heads is None or num_heads <= 0:
        raise InputError(f"Attention: 3D {name} needs q_num_heads/kv_num_heads attributes")
    b, s, hd = x.shape
    if hd % num_heads:
        raise ShapeError(f"Attention: {name} hidden size {hd} not divisible by {num_heads} heads")
    return x.reshape(b, s, num_heads, hd // num_heads).transpose(0, 2, 1, 3)


def _softmax_lastaxis(x):
    """Softmax over the last axis; rows that are entirely -inf give zeros instead of NaN."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0, m)
    e = np.exp(x - m)
    s = np.sum(e, axis=-1, keepdims=True)
    s = np.where(s == 0, 1, s)
    return e / s


def _frontier(q_len, kv_len, offset):
    """diff[i, j] = (i + offset) - j, i.e. how far key j lies behind query i's absolute position.

    offset is a scalar (shape (q, kv)) or per batch (shape (B, 1, q, kv))."""
    i = np.arange(q_len).reshape(q_len, 1)
    j = np.arange(kv_len).reshape(1, kv_len)
    if np.ndim(offset) > 0:
        off = np.asarray(offset, dtype=np.int64).reshape(-1, 1, 1, 1)
        return (i + off) - j
    return (i + int(offset)) - j


def _grouped_matmul(a, b, hq, hkv):
    """a: (B, Hq, M, K), b: (B, Hkv, K, N) with Hq = G*Hkv: query head h uses kv head h // G.

    Done by viewing a as (B, Hkv, G, M, K) rather than repeating b G times."""
    if hq == hkv:
        return np.matmul(a, b)
    if hkv <= 0 or hq % hkv:
        raise ShapeError(f"Attention: q heads ({hq}) must be a multiple of kv heads ({hkv})")
    g = hq // hkv
    B, _, M, K = a.shape
    r = np.matmul(a.reshape(B, hkv, g, M, K), b[:, :, None])
    return r.reshape(B, hq, M, r.shape[-1])


def _attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None,
               *, is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0,
               scale=None, softcap=0.0, softmax_precision=None, left_window_size=-1,
               right_window_size=-1):
    if not (Q.ndim == K.ndim == V.ndim) or Q.ndim not in (3, 4):
        raise ShapeError(f"Attention: Q/K/V must all be 3D or 4D, got {Q.shape}, {K.shape}, {V.shape}")
    if (past_key is None) != (past_value is None):
        raise InputError("Attention: past_key and past_value must be given together")
    out_dtype = Q.dtype
    rank3 = Q.ndim == 3
    if rank3:
        Q = _to_heads(Q, q_num_heads, "Q")
        K = _to_heads(K, kv_num_heads, "K")
        V = _to_heads(V, kv_num_heads, "V")
    if past_key is not None:
        K = np.concatenate((past_key, K), axis=2)
        V = np.concatenate((past_value, V), axis=2)
    present_key, present_value = K, V

    ct = _compute_dtype(out_dtype)
    B, hq, q_len, dk = Q.shape
    hkv, kv_len = K.shape[1], K.shape[2]
    if scale is None:
        scale = 1.0 / np.sqrt(dk)
    # sqrt(scale) on both Q and K as the spec's function body does (keeps low-precision
    # results aligned with it; the extra multiply over K is cheap next to the matmul).
    sq = ct.type(np.sqrt(scale))
    scores = _grouped_matmul(Q.astype(ct) * sq, np.swapaxes(K.astype(ct) * sq, -1, -2), hq, hkv)
    scores = scores.astype(ct, copy=False)   # numpy's bfloat16 matmul returns float32
    raw_scores = scores
    if softcap and softcap > 0:
        # before the bias, so -inf mask entries stay -inf
        scores = ct.type(softcap) * np.tanh(scores / ct.type(softcap))
    capped = scores

    # --- additive bias: attn_mask (+ causal) (+ sliding window) (+ key padding) ---------------
    bias = None
    if attn_mask is not None:
        m = attn_mask
        pad = kv_len - m.shape[-1]
        if pad > 0:  # a mask shorter than the key sequence masks the extra keys
            m = np.pad(m, [(0, 0)] * (m.ndim - 1) + [(0, pad)], constant_values=False if m.dtype == np.bool_ else -np.inf)
        if m.dtype == np.bool_:
            bias = np.where(m, ct.type(0), ct.type(-np.inf))
        else:
            bias = m.astype(ct)
    if past_key is not None:
        offset = past_key.shape[2]
    elif nonpad_kv_seqlen is not None:
        offset = np.asarray(nonpad_kv_seqlen).reshape(-1).astype(np.int64) - q_len
    else:
        offset = 0
    left = -1 if left_window_size is None else left_window_size
    right = -1 if right_window_size is None else right_window_size
    allowed = None
    if is_causal or left >= 0 or right >= 0:
        diff = _frontier(q_len, kv_len, offset)
        allowed = np.ones(diff.shape, dtype=bool)
        if is_causal:
            allowed &= diff >= 0
        if left >= 0:
            allowed &= diff <= left
        if right >= 0:
            allowed &= -diff <= right
    if nonpad_kv_seqlen is not None:
        keep = np.arange(kv_len) < np.asarray(nonpad_kv_seqlen).reshape(-1, 1)
        keep = keep.reshape(B, 1, 1, kv_len)
        allowed = keep if allowed is None else (allowed & keep)
    if allowed is not None:
        pos = np.where(allowed, ct.type(0), ct.type(-np.inf))
        bias = pos if bias is None else bias + pos

    if bias is not None:
        scores = scores + bias
    biased = scores

    sm_dt = _PRECISION.get(softmax_precision, ct) if softmax_precision is not None else ct
    if sm_dt != ct and sm_dt != np.float64:
        # narrower softmax precision requested: round the logits to it
        scores = scores.astype(sm_dt).astype(np.float32)
    elif sm_dt == np.float64:
        scores = scores.astype(np.float64)
    probs = _softmax_lastaxis(scores)
    if bias is not None:
        # A query row with no attendable key is a zero row (decided on the bias, not the logits,
        # so NaN/inf logits in masked positions cannot leak).
        dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
        if dead.any():
            probs = np.where(dead, 0, probs)
    probs = probs.astype(ct, copy=False)
    Y = _grouped_matmul(probs, V.astype(ct, copy=False), hq, hkv).astype(ct, copy=False)
    if rank3:
        Y = Y.transpose(0, 2, 1, 3).reshape(B, q_len, -1)

    mode = qk_matmul_output_mode or 0
    qk = {0: raw_scores, 1: capped, 2: biased, 3: probs}.get(mode)
    if qk is None:
        raise InputError(f"Attention: qk_matmul_output_mode {mode} is not 0..3")
    if mode == 2 and bias is None:
        qk = np.broadcast_to(qk, (B, hq, q_len, kv_len))
    return (Y.astype(out_dtype), present_key, present_value,
            np.ascontiguousarray(qk, dtype=out_dtype))


@register("Attention", since=23)
def Attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0,
              scale=None, softcap=0.0, softmax_precision=None, left_window_size=-1,
              right_window_size=-1):
    return _attention(Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen,
                      is_causal=is_causal, kv_num_heads=kv_num_heads, q_num_heads=q_num_heads,
                      qk_matmul_output_mode=qk_matmul_output_mode, scale=scale, softcap=softcap,
                      softmax_precision=softmax_precision, left_window_size=left_window_size,
                      right_window_size=right_window_size)


register("Attention", since=24)(Attention)
register("Attention", since=25)(Attention)


@register("RotaryEmbedding", since=23)
def RotaryEmbedding(X, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                    rotary_embedding_dim=0):
    shape = X.shape
    if X.ndim == 4:                       # (B, H, S, D) -> (B, S, H, D)
        x = X.transpose(0, 2, 1, 3)
    elif X.ndim == 3:                     # (B, S, H*D) -> (B, S, H, D)
        if not num_heads:
            raise InputError("RotaryEmbedding: 3D input needs num_heads")
        x = X.reshape(shape[0], shape[1], num_heads, shape[2] // num_heads)
    else:
        raise ShapeError(f"RotaryEmbedding: input must be 3D or 4D, got {shape}")
    d = x.shape[-1]
    rd = rotary_embedding_dim or d
    half = rd // 2
    if position_ids is not None:
        cos_cache = cos_cache[position_ids]
        sin_cache = sin_cache[position_ids]
    if cos_cache.shape[-1] != half or sin_cache.shape[-1] != half:
        raise ShapeError(f"RotaryEmbedding: cache last dim must be rotary_dim/2 = {half}")
    cos = cos_cache[:, :, None, :]        # (B, S, 1, half)
    sin = sin_cache[:, :, None, :]
    out = np.array(x, copy=True)
    if interleaved:
        x1, x2 = x[..., 0:rd:2], x[..., 1:rd:2]
        out[..., 0:rd:2] = cos * x1 - sin * x2
        out[..., 1:rd:2] = sin * x1 + cos * x2
    else:
        x1, x2 = x[..., :half], x[..., half:rd]
        out[..., :half] = cos * x1 - sin * x2
        out[..., half:rd] = sin * x1 + cos * x2
    if X.ndim == 4:
        return np.ascontiguousarray(out.transpose(0, 2, 1, 3))
    return out.reshape(shape)


@register("SwiGLU", since=28)
def SwiGLU(A, B, *, alpha=1.0):
    if A.shape != B.shape:
        raise ShapeError(f"SwiGLU: A {A.shape} and B {B.shape} must have the same shape")
    ct = _compute_dtype(A.dtype)
    a = A.astype(ct)
    gate = (1.0 / (1.0 + np.exp(-ct.type(alpha) * a))).astype(A.dtype).astype(ct)
    return ((a * gate).astype(A.dtype).astype(ct) * B.astype(ct)).astype(A.dtype)


@register("CausalConvWithState", since=27)
def CausalConvWithState(X, W, bias=None, past_state=None, *, activation="none"):
    """Depthwise causal conv1d over (B, C, L) with a carried left context of k-1 steps."""
    if activation not in ("none", "silu", "swish"):
        raise InputError(f"CausalConvWithState: unsupported activation {activation!r}")
    if X.ndim != 3 or W.ndim != 3:
        raise ShapeError("CausalConvWithState: input and weight must be rank 3")
    b, c, L = X.shape
    k = W.shape[2]
    pad = np.zeros((b, c, k - 1), X.dtype) if past_state is None else past_state.astype(X.dtype)
    padded = np.concatenate([pad, X], axis=2)
    ct = _compute_dtype(X.dtype)
    p = padded.astype(ct)
    w = W.reshape(c, k).astype(ct)
    acc = np.zeros((b, c, L), ct)
    for t in range(k):                    # k is a small kernel width: loop taps, vectorise the rest
        acc += w[None, :, t, None] * p[:, :, t:t + L]
    if bias is not None:
        acc += bias.astype(ct)[None, :, None]
    acc = acc.astype(X.dtype)
    if activation in ("silu", "swish"):
        a = acc.astype(np.float32)
        acc = (a / (1.0 + np.exp(-a))).astype(X.dtype)
    return acc, padded[:, :, padded.shape[2] - (k - 1):]


@register("LinearAttention", since=27)
def LinearAttention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=None,
                    kv_num_heads=None, q_num_heads=None, scale=None, update_rule="gated_delta"):
    if update_rule not in ("linear", "gated", "delta", "gated_delta"):
        raise InputError(f"LinearAttention: unknown update_rule {update_rule!r}")
    if not q_num_heads or not kv_num_heads or q_num_heads % kv_num_heads:
        raise InputError("LinearAttention: q_num_heads must be a positive multiple of kv_num_heads")
    gating = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    if gating and decay is None:
        raise InputError(f"LinearAttention: update_rule {update_rule!r} needs decay")
    if delta and beta is None:
        raise InputError(f"LinearAttention: update_rule {update_rule!r} needs beta")
    b, t, _ = query.shape
    hq, hkv = q_num_heads, kv_num_heads
    dk = query.shape[-1] // hq
    dv = value.shape[-1] // hkv
    g = hq // hkv
    f32 = np.float32
    q4 = query.reshape(b, t, hq, dk).astype(f32)
    k4 = key.reshape(b, t, hkv, dk).astype(f32)
    v4 = value.reshape(b, t, hkv, dv).astype(f32)
    if gating:
        if decay.shape[-1] == hkv:
            dec = np.exp(decay.astype(f32)).reshape(b, t, hkv, 1, 1)
        elif decay.shape[-1] == hkv * dk:
            dec = np.exp(decay.astype(f32)).reshape(b, t, hkv, dk, 1)
        else:
            raise ShapeError("LinearAttention: decay last dim must be kv_num_heads or kv_num_heads*d_k")
    if delta:
        bl = beta.shape[-1]
        if bl not in (hkv, 1):
            raise ShapeError("LinearAttention: beta last dim must be kv_num_heads or 1")
        bet = beta.astype(f32).reshape(b, t, bl, 1)
    if past_state is not None:
        if past_state.shape != (b, hkv, dk, dv):
            raise ShapeError(f"LinearAttention: past_state shape {past_state.shape} != {(b, hkv, dk, dv)}")
        state_dt = past_state.dtype
        S = past_state.astype(f32)
    else:
        state_dt = query.dtype
        S = np.zeros((b, hkv, dk, dv), f32)
    sc = 1.0 / np.sqrt(dk) if not scale else float(scale)
    out = np.empty((b, t, hq, dv), f32)
    for i in range(t):                    # a recurrence: time steps are inherently sequential
        kt, vt = k4[:, i], v4[:, i]
        if gating:
            S = S * dec[:, i]
        if delta:
            retrieved = np.einsum("bhdm,bhd->bhm", S, kt)
            vt = bet[:, i] * (vt - retrieved)
        S = S + kt[..., :, None] * vt[..., None, :]
        # GQA read: query head h reads kv head h // g
        qt = q4[:, i].reshape(b, hkv, g, dk)
        out[:, i] = (sc * np.einsum("bhgd,bhdm->bhgm", qt, S)).reshape(b, hq, dv)
    return out.reshape(b, t, hq * dv).astype(query.dtype), S.astype(state_dt)


@register("FlexAttention", since=1, domain="ai.onnx.preview")
class FlexAttention(Op):
    """Scaled dot-product attention with optional score_mod / prob_mod subgraphs."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.scale = a.get("scale")
        self.softmax_precision = a.get("softmax_precision")
        self.score_mod = self._compile(a.get("score_mod"))
        self.prob_mod = self._compile(a.get("prob_mod"))

    def _compile(self, g):
        if g is None:
            return None
        fn = self.ctx.compile_subgraph(g)
        name = g.input_names[0]
        return lambda x: np.asarray(fn({name: x})[0])

    def run(self, inputs, outs):
        Q, K, V = inputs[:3]
        if Q.ndim != 4 or K.ndim != 4 or V.ndim != 4:
            raise ShapeError("FlexAttention: Q, K, V must be rank 4")
        hq, e = Q.shape[1], Q.shape[3]
        hkv = K.shape[1]
        scale = 1.0 / np.sqrt(e) if self.scale is None else self.scale
        # precision of the softmax: explicit, else at least float32
        if self.softmax_precision is not None:
            sm = _PRECISION[self.softmax_precision]
        else:
            sm = _compute_dtype(Q.dtype)
        ct = _compute_dtype(Q.dtype)
        sq = np.sqrt(np.float32(scale)).astype(Q.dtype)
        scores = _grouped_matmul((Q * sq).astype(ct), np.swapaxes((K * sq).astype(ct), -1, -2), hq, hkv)
        scores = scores.astype(sm)
        if self.score_mod is not None:
            scores = self.score_mod(scores).astype(sm)
        m = np.max(scores, axis=-1, keepdims=True)
        ex = np.exp(scores - m)
        probs = ex / np.sum(ex, axis=-1, keepdims=True)
        if self.prob_mod is not None:
            probs = self.prob_mod(probs).astype(sm)
        Y = _grouped_matmul(probs, V.astype(sm), hq, hkv)
        return [Y.astype(V.dtype)]
