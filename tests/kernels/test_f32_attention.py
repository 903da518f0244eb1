"""Compiled FP32 attention (kernels/csrc/f32_attn.c, used by FusedAttention) against a float64
numpy reference, on every ISA build this machine runs: strided [B, S, H, D] views as the
exporter's Reshape gives them, ragged sizes (queries not a multiple of the 6-row block, keys not
a multiple of the 16-key panel, head sizes off the 8/32 vector widths, Dv != D) and broadcast masks.
The zmm build reads a block's query and probability rows at fixed strides up to 512 keys and a
head size of 256, and transposes the blocks beyond; cases on both sides of those limits."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _kernel_cases import isa_params


def ref_attention(q, k, v, mask, scale):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = np.einsum("bshd,bthd->bhst", q, k) * scale
    if mask is not None:
        s = s + mask
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhst,bthd->bshd", p, v)


CASES = [  # B, S, T, H, D, Dv, mask shape
    (1, 128, 128, 12, 32, 32, (1, 1, 1, 128)),      # MiniLM attention with padding mask
    (1, 128, 128, 12, 64, 64, (1, 1, 1, 128)),      # BERT-base
    (1, 67, 40, 2, 64, 48, (1, 1, 1, 40)),          # 6-row blocks + 1, keys 40 = 2.5 panels
    (2, 10, 130, 2, 9, 17, None),                   # 4-row tail, 17 columns = 1 panel + 1
    (2, 7, 13, 3, 5, 5, None),
    (3, 1, 9, 2, 40, 24, (3, 1, 1, 9)),
    (1, 5, 5, 1, 64, 72, (1, 1, 5, 5)),             # full [S, T] mask
    (2, 33, 17, 4, 8, 8, (2, 4, 33, 17)),
    (1, 4, 1, 2, 3, 1, None),                       # one key
]
# the zmm build's limits of fixed-stride rows (512 keys, head size 256) and past them
WIDE = [
    (1, 14, 512, 1, 256, 20, (1, 1, 1, 512)),       # the most the fixed-stride rows take
    (1, 14, 600, 2, 64, 40, (1, 1, 1, 600)),        # keys past 512: transposed blocks
    (1, 13, 40, 2, 300, 24, None),                  # head size past 256: transposed blocks
]


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("case", CASES + WIDE, ids=str)
def test_f32_attention(isa, case):
    B, S, T, H, D, Dv, mshape = case
    rng = np.random.default_rng(S * 7 + T)
    q = rng.standard_normal((B, S, H * D)).astype(np.float32).reshape(B, S, H, D)
    # k and v as views into one [B, T, H*(D+Dv)] buffer (row stride wider than H*D)
    kvbuf = rng.standard_normal((B, T, H * (D + Dv))).astype(np.float32)
    k = np.lib.stride_tricks.as_strided(kvbuf, (B, T, H, D),
                                        (kvbuf.strides[0], kvbuf.strides[1], D * 4, 4))
    v = np.lib.stride_tricks.as_strided(kvbuf[:, :, H * D:], (B, T, H, Dv),
                                        (kvbuf.strides[0], kvbuf.strides[1], Dv * 4, 4))
    mask = None
    if mshape is not None:
        mask = np.where(rng.random(mshape) < 0.2, -10000.0, 0.0).astype(np.float32)
        if len(mshape) and mshape[-2] > 1:
            # -inf entries too (causal-style masks), every row keeps its first key
            mask = np.where(rng.random(mshape) < 0.2, -np.inf, mask).astype(np.float32)
            mask[..., 0] = 0.0
    scale = 1 / np.sqrt(D)
    exp = ref_attention(q, k, v, mask, scale)
    mb = None if mask is None else np.broadcast_to(mask, (B, H, S, T))
    out = np.full((B, S, H, Dv), np.nan, np.float32)
    K.load("f32_conv", isa).attention(q, k, v, mb, scale, out, 2)
    np.testing.assert_allclose(out, exp, rtol=2e-5, atol=2e-5)
    # into a strided output view too (the fused op writes [B, S, H, Dv] slices of a buffer)
    big = np.full((B, S, H, Dv + 2), np.nan, np.float32)
    K.load("f32_conv", isa).attention(q, k, v, mb, scale, big[..., 1:Dv + 1], 1)
    np.testing.assert_allclose(big[..., 1:Dv + 1], exp, rtol=2e-5, atol=2e-5)
    assert np.isnan(big[..., 0]).all() and np.isnan(big[..., -1]).all()


def _qkv(rng, case, q_scale):
    """q (q_scale x N(0, 1)), k (N(0, 1)) and v (40 x N(0, 1)) of a case: scores a few units
    wide, outputs past both ends of an 8-bit range at scale 0.17."""
    B, S, T, H, D, Dv, _ = case
    q = (q_scale * rng.standard_normal((B, S, H, D))).astype(np.float32)
    k = rng.standard_normal((B, T, H, D)).astype(np.float32)
    v = (40 * rng.standard_normal((B, T, H, Dv))).astype(np.float32)
    return q, k, v


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dt,zp", [(np.uint8, 130), (np.int8, 3)])
def test_f32_attention_quantized_output(isa, case, dt, zp):
    """quant=(scale, zp): the bytes QuantizeLinear (the op's kernel) makes of the float output,
    into a strided byte view (the output's last axis inside a wider row), on 1 and 2 threads;
    values around half-steps and beyond both saturation ends."""
    from deepsparse_cy.kernels import _f32_ops
    B, S, T, H, D, Dv, mshape = case
    rng = np.random.default_rng(S * 11 + T)
    q, k, v = _qkv(rng, case, 3.0)
    mb = None
    if mshape is not None:
        mb = np.broadcast_to(np.where(rng.random(mshape) < 0.2, -10000.0, 0.0).astype(np.float32),
                             (B, H, S, T))
    m = K.load("f32_conv", isa)
    f = np.empty((B, S, H, Dv), np.float32)
    m.attention(q, k, v, mb, 0.3, f, 2)
    scale = float(np.float32(0.17))
    ref = np.empty(f.shape, dt)
    (_f32_ops.quantize_u8 if dt == np.uint8 else _f32_ops.quantize_s8)(
        f.reshape(-1), ref.reshape(-1), scale, zp, 1)
    info = np.iinfo(dt)
    assert (ref == info.min).any() or (ref == info.max).any() or f.size < 64
    for nt in (1, 2):
        big = np.full((B, S, H, Dv + 3), 77, dt)
        m.attention(q, k, v, mb, 0.3, big[..., 2:Dv + 2], nt, (scale, float(zp)))
        np.testing.assert_array_equal(big[..., 2:Dv + 2], ref)
        assert (big[..., :2] == 77).all() and (big[..., -1] == 77).all()
    with pytest.raises(ValueError):
        m.attention(q, k, v, mb, 0.3, np.empty((B, S, H, Dv), np.float32), 1, (scale, float(zp)))


def _denormal_product():
    """A float32 product in the subnormal range, computed by numpy on the calling thread: 0
    if the thread's MXCSR flushes to zero."""
    return float(np.float32(1e-38) * np.float32(np.float32(0.25) + np.float32(0.0) * np.float32(1.0)))


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("nt", [1, 2])
def test_f32_attention_wide_scores(isa, nt):
    """Scores spanning hundreds within a row, as a trained model's attention has them (here by
    a mask of -90 ... -300 on most keys, added exactly): most probabilities fall below FLT_MIN.
    The kernel runs with denormals flushed (they made every FMA of P.V a microcode assist) and
    must still match the float64 reference, and leave the calling thread's floating-point mode
    as it found it (numpy's subnormal products stay subnormal afterwards)."""
    B, S, T, H, D = 1, 40, 96, 3, 64
    rng = np.random.default_rng(42)
    q = rng.standard_normal((B, S, H, D)).astype(np.float32)
    k = rng.standard_normal((B, T, H, D)).astype(np.float32)
    v = rng.standard_normal((B, T, H, D)).astype(np.float32)
    mask = np.where(rng.random((B, H, S, T)) < 0.7, -rng.uniform(90, 300, (B, H, S, T)),
                    0.0).astype(np.float32)
    mask[..., 0] = 0.0
    scale = 1 / np.sqrt(D)
    s = np.einsum("bshd,bthd->bhst", q.astype(np.float64), k) * scale + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert ((p > 0) & (p < np.finfo(np.float32).tiny)).mean() > 0.2   # below FLT_MIN
    before = _denormal_product()
    assert before != 0.0
    out = np.full((B, S, H, D), np.nan, np.float32)
    K.load("f32_conv", isa).attention(q, k, v, mask, scale, out, nt)
    np.testing.assert_allclose(out, ref_attention(q, k, v, mask, scale), rtol=2e-5, atol=2e-5)
    assert _denormal_product() == before


def _bf16(a):
    """float32 -> the nearest bfloat16 (round half to even), as float32 (finite inputs)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).reshape(np.shape(a))


def _quantize(x, scale, zp, dt):
    info = np.iinfo(dt)
    return np.clip(np.rint(x / scale) + zp, info.min, info.max).astype(dt)


def ref_attention_bf16(q, k, v, mask, scale):
    """The amx build's arithmetic in float64: q, k, v rounded to bf16, the scores' exps (less
    the row maximum) rounded to bf16, their product with v divided by the float sum of the
    exps."""
    q, k, v = (_bf16(a).astype(np.float64) for a in (q, k, v))
    s = np.einsum("bshd,bthd->bhst", q, k) * scale
    if mask is not None:
        s = s + mask
    e = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhst,bthd->bshd", _bf16(e.astype(np.float32)).astype(np.float64), v) \
        / e.sum(-1)[..., None].transpose(0, 2, 1, 3)


_BF16 = [pytest.param(b, marks=pytest.mark.skip(reason=f"CPU lacks {', '.join(K.missing_features(b, 'f32_attn'))} for the f32_attn {b} build")
                      if K.missing_features(b, "f32_attn") else [], id=b)
         for _, b, _, _ in [k for k in K.KERNELS if k[0] == "f32_attn"]]


@pytest.mark.parametrize("isa", _BF16)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dt,zp", [(np.uint8, 130), (np.int8, 3)])
def test_bf16_attention_quantized_output(isa, case, dt, zp):
    """f32_attn's amx build with a quantized output: from 8 queries on, bf16 products on AMX
    tiles. Against the bf16 arithmetic done in float64 (ref_attention_bf16): within one step
    everywhere and equal on at least 99% of the bytes (the rest: float32 sums and the exp
    polynomial landing on the other side of a rounding boundary). Against exact float64
    attention: within two steps (bf16 keeps 8 significant bits, the step here is ~1/200 of the
    output range). Below 8 queries: the float32 path, the bytes of the f32_conv kernel. Into a
    strided byte view, on 1 and 2 threads, leaving the bytes around it alone."""
    B, S, T, H, D, Dv, mshape = case
    rng = np.random.default_rng(S * 13 + T)
    q, k, v = _qkv(rng, case, 1.5)
    mask = None
    if mshape is not None:
        mask = np.where(rng.random(mshape) < 0.2, -10000.0, 0.0).astype(np.float32)
        mask[..., 0] = 0.0
    mb = None if mask is None else np.broadcast_to(mask, (B, H, S, T))
    scale, qs = 1 / np.sqrt(D), float(np.float32(0.17))
    m = K.load("f32_attn", isa)
    for nt in (1, 2):
        big = np.full((B, S, H, Dv + 3), 77, dt)
        m.attention(q, k, v, mb, scale, big[..., 2:Dv + 2], nt, (qs, float(zp)))
        got = big[..., 2:Dv + 2].astype(np.int32)
        assert (big[..., :2] == 77).all() and (big[..., -1] == 77).all()
        if S < 8:
            f = np.empty((B, S, H, Dv), np.float32)
            K.load("f32_conv", "avx512_vnni").attention(q, k, v, mb, scale, f, 1)
            from deepsparse_cy.kernels import _f32_ops
            ref = np.empty(f.shape, dt)
            (_f32_ops.quantize_u8 if dt == np.uint8 else _f32_ops.quantize_s8)(
                f.reshape(-1), ref.reshape(-1), qs, zp, 1)
            np.testing.assert_array_equal(got, ref)
            continue
        emu = _quantize(ref_attention_bf16(q, k, v, mask, scale), qs, zp, dt).astype(np.int32)
        assert np.abs(got - emu).max() <= 1
        assert (got != emu).mean() <= 0.01, (got != emu).mean()
        exact = _quantize(ref_attention(q, k, v, mask, scale), qs, zp, dt).astype(np.int32)
        assert np.abs(got - exact).max() <= 2
        info = np.iinfo(dt)
        assert ((got == info.min) | (got == info.max)).any()   # saturation reached


@pytest.mark.parametrize("isa", _BF16)
def test_bf16_attention_float_output_is_float32(isa):
    """A float output keeps float32 products in the amx build too (the f32_conv kernel's
    values), and the kernel leaves the thread's floating-point mode as it found it."""
    B, S, T, H, D = 1, 40, 48, 2, 32
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((B, n, H, D)).astype(np.float32) for n in (S, T, T))
    out = np.empty((B, S, H, D), np.float32)
    before = _denormal_product()
    K.load("f32_attn", isa).attention(q, k, v, None, 0.2, out, 2)
    np.testing.assert_allclose(out, ref_attention(q, k, v, None, 0.2), rtol=2e-5, atol=2e-5)
    assert _denormal_product() == before


def _deq_ref(x, scale, zp, bias):
    """numpy's float32 steps of the QGemm's requantize-dequantize mid step on 8-bit x
    [B, S, H, D]: (x - zp) * scale [+ bias[h * D + d]], each rounded to float32."""
    f = (x.astype(np.float32) - np.float32(zp)) * np.float32(scale)
    if bias is not None:
        f = f + bias.reshape(x.shape[2], x.shape[3])
    return f.astype(np.float32)


_ATT_BUILDS = [pytest.param(("f32_conv", p.values[0]), marks=p.marks, id=f"f32_conv-{p.id}")
               for p in isa_params("f32_conv")] + \
              [pytest.param(("f32_attn", p.values[0]), marks=p.marks, id=f"f32_attn-{p.id}")
               for p in _BF16]


@pytest.mark.parametrize("build", _ATT_BUILDS)
@pytest.mark.parametrize("case", CASES + WIDE, ids=str)
@pytest.mark.parametrize("dt,zp,which,biased", [
    (np.uint8, 131, "qkv", True), (np.int8, -3, "qkv", False), (np.uint8, 0, "k", True),
    (np.int8, 5, "qv", True)], ids=["u8-qkv-bias", "s8-qkv", "u8-k-bias", "s8-qv-bias"])
def test_attention_8bit_inputs(build, case, dt, zp, which, biased):
    """deq: q / k / v given as the 8-bit values a QGemm requantizes to, with the scale, zero
    point and per-channel bias of their dequantization. The outputs (float, and quantized)
    equal, bit for bit, those of the same kernel on the floats numpy dequantizes them to:
    the kernel's dequantization while it packs rounds each step as numpy does. K and V read
    as views into one wider buffer, a float output into a strided view, 1 and 2 threads."""
    fam, isa = build
    B, S, T, H, D, Dv, mshape = case
    rng = np.random.default_rng(S * 17 + T + D)
    info = np.iinfo(dt)
    scales = {"q": 0.031, "k": 0.027, "v": 0.45}
    q8 = rng.integers(info.min, info.max + 1, (B, S, H * D)).astype(dt).reshape(B, S, H, D)
    kvbuf = rng.integers(info.min, info.max + 1, (B, T, H * (D + Dv) + 5)).astype(dt)
    k8 = np.lib.stride_tricks.as_strided(kvbuf, (B, T, H, D),
                                         (kvbuf.strides[0], kvbuf.strides[1], D, 1))
    v8 = np.lib.stride_tricks.as_strided(kvbuf[:, :, H * D:], (B, T, H, Dv),
                                         (kvbuf.strides[0], kvbuf.strides[1], Dv, 1))
    ins, floats, deq = [], [], []
    for name, x in (("q", q8), ("k", k8), ("v", v8)):
        s = float(np.float32(scales[name]))
        b = (rng.standard_normal(x.shape[2] * x.shape[3]).astype(np.float32)
             if biased else None)
        f = _deq_ref(x, s, zp, b)
        floats.append(f)
        if name in which:
            ins.append(x)
            deq.append((s, float(zp), b))
        else:
            ins.append(f)
            deq.append(None)
    mb = None
    if mshape is not None:
        mb = np.broadcast_to(np.where(rng.random(mshape) < 0.2, -10000.0, 0.0).astype(np.float32),
                             (B, H, S, T))
    m = K.load(fam, isa)
    scale = 1 / np.sqrt(D)
    exp = np.empty((B, S, H, Dv), np.float32)
    m.attention(*floats, mb, scale, exp, 1)
    np.testing.assert_allclose(exp, ref_attention(*floats, None if mb is None else mb, scale),
                               rtol=2e-4, atol=2e-3 * np.abs(exp).max())
    qs = float(np.float32(0.5))
    expq = np.empty(exp.shape, np.uint8)
    m.attention(*floats, mb, scale, expq, 1, (qs, 128.0))
    for nt in (1, 2):
        big = np.full((B, S, H, Dv + 2), np.nan, np.float32)
        m.attention(*ins, mb, scale, big[..., 1:Dv + 1], nt, None, deq)
        np.testing.assert_array_equal(big[..., 1:Dv + 1], exp)
        assert np.isnan(big[..., 0]).all() and np.isnan(big[..., -1]).all()
        got = np.empty(exp.shape, np.uint8)
        m.attention(*ins, mb, scale, got, nt, (qs, 128.0), deq)
        np.testing.assert_array_equal(got, expq)


def test_attention_8bit_inputs_checked():
    """An 8-bit input without its dequantization, a dequantized float input, and a bias of the
    wrong length are errors, not misread memory."""
    m = K.load("f32_conv", K.kernel_builds().get("f32_conv", "generic"))
    q = np.zeros((1, 4, 2, 8), np.uint8)
    f = np.zeros((1, 4, 2, 8), np.float32)
    out = np.empty((1, 4, 2, 8), np.float32)
    with pytest.raises(ValueError):
        m.attention(q, f, f, None, 1.0, out, 1)
    with pytest.raises(ValueError):
        m.attention(f, f, f, None, 1.0, out, 1, None, [(0.1, 0.0, None), None, None])
    with pytest.raises(ValueError):
        m.attention(q, f, f, None, 1.0, out, 1, None, [(0.1, 0.0, np.zeros(15, np.float32)),
                                                       None, None])
    m.attention(q, f, f, None, 1.0, out, 1, None, [(0.1, 0.0, np.zeros(16, np.float32)),
                                                   None, None])


@pytest.mark.parametrize("build", _ATT_BUILDS)
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3]], ids=str)
def test_attention_bound_reads_its_arrays_each_call(build, case):
    """attention_bound (the engine's bound step: a BoundAttention prepared once, 8-bit inputs
    with their dequantization, a quantized output): each call reads q / k / v as they are then
    and equals attention() on the same values, bit for bit, on one and two threads; it keeps
    its bias arrays alive; bad arguments fail when it is made, as attention() does."""
    import gc
    fam, isa = build
    B, S, T, H, D, Dv, mshape = case
    rng = np.random.default_rng(B + S + T)
    q8 = np.empty((B, S, H, D), np.uint8)
    k8 = np.empty((B, T, H, D), np.uint8)
    v8 = np.empty((B, T, H, Dv), np.uint8)
    deq = [(0.03, 128.0, rng.standard_normal(H * D).astype(np.float32)),
           (0.02, 120.0, None), (0.4, 131.0, rng.standard_normal(H * Dv).astype(np.float32))]
    mb = None if mshape is None else np.broadcast_to(
        np.where(rng.random(mshape) < 0.2, -10000.0, 0.0).astype(np.float32), (B, H, S, T))
    m = K.load(fam, isa)
    out = np.empty((B, S, H, Dv), np.uint8)
    for nt in (1, 2):
        call = m.attention_bound(q8, k8, v8, mb, 0.125, out, nt, (0.05, 128.0),
                                 [(d[0], d[1], None if d[2] is None else d[2].copy())
                                  for d in deq])
        gc.collect()                                   # (its own bias copies must stay alive)
        for _ in range(2):
            for x in (q8, k8, v8):
                x[...] = rng.integers(0, 256, x.shape)
            call()
            exp = np.empty_like(out)
            m.attention(q8, k8, v8, mb, 0.125, exp, nt, (0.05, 128.0), deq)
            np.testing.assert_array_equal(out, exp)
    with pytest.raises(ValueError):
        m.attention_bound(q8, k8, v8, mb, 0.125, out, 1, None, deq)   # uint8 out, no quant
