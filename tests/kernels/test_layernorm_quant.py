"""The LayerNorm + QuantizeLinear + DequantizeLinear row pass (_f32_fused.layernorm_quant, behind
the fused quantized LayerNorm) on the baseline, the AVX2+FMA and the AVX-512 copy (rows of a
multiple of 32 there: one pass normalises, quantizes and dequantizes): bit-identical to the
separate LayerNorm kernel followed by the QuantizeLinear and DequantizeLinear ops' row functions,
and within one quantization step of a float64 numpy LayerNorm. The AVX-512 LayerNorm row is also
bit-identical to the AVX2 one."""
import numpy as np
import pytest

from deepsparse_cy.kernels import _f32_fused, _f32_ops, cpu_features


def _has_avx512():
    f = cpu_features()
    return all(f.get(k) for k in ("avx512f", "avx512bw", "avx512vl", "avx512dq"))


def _set_level(level):
    """0 baseline, 1 AVX2+FMA, 2 AVX-512 in both modules"""
    _f32_fused.set_level(level)
    _f32_ops.set_level(level)


def _equal_q_dq(q, expect_q, dq, expect_dq, check_dq):
    np.testing.assert_array_equal(q, expect_q)
    if check_dq:
        np.testing.assert_array_equal(dq, expect_dq)


def _fused_and_separate(level, x, r, g, b, scale, dt, zp):
    """At `level`: the fused row pass's (q, dq), the LayerNorm kernel's rows y, and the separate
    QuantizeLinear / DequantizeLinear row functions' (q_ref, dq_ref) of y."""
    rows, n = x.shape
    was = (_f32_fused.level(), _f32_ops.level())   # restored after
    _set_level(level)
    try:
        q = np.empty((rows, n), dt)
        dq = np.empty((rows, n), np.float32)
        _f32_fused.layernorm_quant(x, r, g, b, 1e-5, q.view(np.uint8), dt == np.int8, dq, scale,
                                   float(zp), True, 2)
        y = np.empty((rows, n), np.float32)
        _f32_fused.layernorm(x, r, g, b, 1e-5, y, 2)
        q_ref = np.empty((rows, n), dt)
        (_f32_ops.quantize_u8 if dt == np.uint8 else _f32_ops.quantize_s8)(
            y.reshape(-1), q_ref.reshape(-1), scale, zp, 1)
        dq_ref = np.empty((rows, n), np.float32)
        _f32_ops.dequantize_rows(q_ref, float(zp), scale, None, dq_ref, 1)
    finally:
        _f32_fused.set_level(was[0])
        _f32_ops.set_level(was[1])
    return q, dq, y, q_ref, dq_ref


_ROWS = [(1, 8, False, True), (37, 100, True, True), (130, 768, True, False), (5, 33, False, False),
         (3, 32, True, True), (9, 384, False, True), (4, 96, False, False)]


@pytest.mark.parametrize("avx2", [0, 1, 2], ids=["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt,zp", [(np.uint8, 131), (np.int8, -7)])
@pytest.mark.parametrize("rows,n,skip,beta", _ROWS)
def test_layernorm_quant_matches_separate_passes(avx2, dt, zp, rows, n, skip, beta):
    if avx2 and not (cpu_features().get("avx2") and cpu_features().get("fma")):
        pytest.skip("no AVX2+FMA")
    if avx2 == 2 and not _has_avx512():
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(rows * n)
    x = (2 + 3 * rng.standard_normal((rows, n))).astype(np.float32)
    r = rng.standard_normal((rows, n)).astype(np.float32) if skip else None
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32) if beta else None
    scale = float(np.float32(0.021))
    q, dq, _, q_ref, dq_ref = _fused_and_separate(avx2, x, r, g, b, scale, dt, zp)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(dq, dq_ref)
    t = x.astype(np.float64) + (r if skip else 0)
    ln = (t - t.mean(1, keepdims=True)) / np.sqrt(t.var(1, keepdims=True) + 1e-5) * g + (b if beta else 0)
    info = np.iinfo(dt)
    exact = np.clip(np.rint(ln / scale) + zp, info.min, info.max)
    assert np.abs(q.astype(np.int64) - exact).max() <= 1


@pytest.mark.parametrize("skip,beta", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("n", [32, 64, 384, 768, 1024])
def test_layernorm_avx512_row_matches_avx2(n, skip, beta):
    """The AVX-512 row (its two zmm sums per pass standing for the AVX2 row's four ymm sums)
    gives the AVX2 row's bits, on rows wide enough to cancel (mean 1e3, spread 1) where another
    summation order would round differently."""
    if not _has_avx512():
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(n)
    x = (1e3 + rng.standard_normal((33, n))).astype(np.float32)
    r = rng.standard_normal((33, n)).astype(np.float32) if skip else None
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32) if beta else None
    was = (_f32_fused.level(), _f32_ops.level())
    try:
        out = {}
        for lv in (1, 2):
            _set_level(lv)
            out[lv] = np.empty((33, n), np.float32)
            _f32_fused.layernorm(x, r, g, b, 1e-5, out[lv], 2)
    finally:
        _f32_fused.set_level(was[0])
        _f32_ops.set_level(was[1])
    np.testing.assert_array_equal(out[1], out[2])


def _edge_row(scale, n, rng):
    """Values whose quantization is at its edges: exact and near ties of x / scale (x = (k + 0.5)
    * scale and its float neighbours), NaN, +-inf, values far outside the 8-bit range, zeros
    and subnormals, then random ones; n of them, float32."""
    ks = rng.integers(-140, 140, n)
    v = ((ks + 0.5) * np.float64(scale)).astype(np.float32)
    step = rng.integers(-2, 3, n).astype(np.float32)       # up to two ulps either side
    v = np.where(step != 0, np.nextafter(v, np.where(step > 0, np.inf, -np.inf)), v)
    v = v.astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 1e-40, -1e-40,
                        np.float32(scale) * 1000, -np.float32(scale) * 1000], np.float32)
    v[:len(special)] = special
    v[len(special):len(special) + 8] = (scale * rng.standard_normal(8) * 50).astype(np.float32)
    return v


@pytest.mark.parametrize("avx2", [1, 2], ids=["avx2", "avx512"])
@pytest.mark.parametrize("dt,zp", [(np.uint8, 131), (np.uint8, 0), (np.int8, -7), (np.int8, 0)])
@pytest.mark.parametrize("scale", [0.5, 0.1, 0.021, 1e-3, 2.0 ** -110, 2.0 ** 105])
def test_layernorm_quant_edges_match_separate_passes(avx2, dt, zp, scale):
    """The row pass's quantizer on its edge cases: gamma = 0 makes the LayerNorm's output its beta
    exactly, so beta carries ties of x / scale (and values an ulp or two off them, where the
    multiply by 1 / scale and the division can round apart), NaN, infinities, saturation, zeros
    and subnormals; scales below 2^-100 and above 2^100 take the division path. The result must
    be the separate QuantizeLinear / DequantizeLinear row functions' bit for bit."""
    if not (cpu_features().get("avx2") and cpu_features().get("fma")):
        pytest.skip("no AVX2+FMA")
    if avx2 == 2 and not _has_avx512():
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(int(zp) + 1000)
    rows, n = 6, 64
    scale = float(np.float32(scale))
    x = rng.standard_normal((rows, n)).astype(np.float32)
    g = np.zeros(n, np.float32)
    b = _edge_row(scale, n, rng)
    with np.errstate(all="ignore"):
        q, dq, y, q_ref, dq_ref = _fused_and_separate(avx2, x, None, g, b, scale, dt, zp)
    np.testing.assert_array_equal(y, np.broadcast_to(b, y.shape))   # the rows are beta exactly
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(dq, dq_ref)


@pytest.mark.parametrize("avx2", [0, 1, 2], ids=["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("xdt,xzp", [(np.uint8, 128), (np.int8, -3)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows,n,skip,beta", _ROWS)
@pytest.mark.parametrize("nt", [1, 2])
def test_layernorm_quant_x8_matches_float_input(avx2, xdt, xzp, bias, rows, n, skip, beta, nt):
    """layernorm_quant_x8: x given as the 8-bit values of a QGemm whose floats are
    (x - zp) * scale [+ bias], each step rounded to float32 (numpy's steps here). Its outputs
    equal layernorm_quant on those floats bit for bit: the zmm row dequantizes as its first pass
    reads (rows of a multiple of 32), the other levels and lengths dequantize each row into a
    thread's scratch first; 1 and 2 threads."""
    if avx2 and not (cpu_features().get("avx2") and cpu_features().get("fma")):
        pytest.skip("no AVX2+FMA")
    if avx2 == 2 and not _has_avx512():
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(rows * n + 7)
    info = np.iinfo(xdt)
    x8 = rng.integers(info.min, info.max + 1, (rows, n)).astype(xdt)
    xs = float(np.float32(0.037))
    xb = (0.5 * rng.standard_normal(n)).astype(np.float32) if bias else None
    xf = (x8.astype(np.float32) - np.float32(xzp)) * np.float32(xs)
    if bias:
        xf = xf + xb
    r = rng.standard_normal((rows, n)).astype(np.float32) if skip else None
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32) if beta else None
    scale, zp = float(np.float32(0.021)), 127.0
    was = (_f32_fused.level(), _f32_ops.level())
    _set_level(avx2)
    try:
        q, dq = np.empty((rows, n), np.uint8), np.empty((rows, n), np.float32)
        _f32_fused.layernorm_quant(xf, r, g, b, 1e-5, q, False, dq, scale, zp, True, nt)
        for dq_out in (True, False):
            q8, dq8 = np.full((rows, n), 7, np.uint8), np.full((rows, n), np.nan, np.float32)
            _f32_fused.layernorm_quant_x8(x8.view(np.uint8), xdt == np.int8, xs, float(xzp), xb,
                                          r, g, b, 1e-5, q8, False, dq8, scale, zp, dq_out, nt)
            _equal_q_dq(q8, q, dq8, dq, dq_out)
    finally:
        _f32_fused.set_level(was[0])
        _f32_ops.set_level(was[1])
    with pytest.raises(ValueError):
        _f32_fused.layernorm_quant_x8(x8.view(np.uint8), False, xs, 0.0, np.zeros(n + 1, np.float32),
                                      r, g, b, 1e-5, q8, False, dq8, scale, zp, True, 1)


@pytest.mark.parametrize("avx2", [0, 1, 2], ids=["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("sdt,szp", [(np.uint8, 124), (np.int8, 5)])
@pytest.mark.parametrize("rows,n", [(1, 8), (37, 100), (130, 768), (5, 33), (3, 32), (9, 384)])
@pytest.mark.parametrize("nt", [1, 2])
def test_layernorm_quant_x8_reads_8bit_skip(avx2, sdt, szp, rows, n, nt):
    """layernorm_quant_x8 with skip8: the residual given as the 8-bit output of another quantized
    LayerNorm, standing for its DequantizeLinear (skip8 - zp) * scale (numpy's float32 steps,
    what that LayerNorm's dq output holds). The outputs equal those with the float residual bit
    for bit, with dq given or None (scratch rows per thread); a float skip and skip8 together,
    and a skip8 of another shape, are refused."""
    if avx2 and not (cpu_features().get("avx2") and cpu_features().get("fma")):
        pytest.skip("no AVX2+FMA")
    if avx2 == 2 and not _has_avx512():
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(rows * n + 11)
    x8 = rng.integers(0, 256, (rows, n)).astype(np.uint8)
    xs, xzp = float(np.float32(0.029)), 117.0
    xb = (0.3 * rng.standard_normal(n)).astype(np.float32)
    info = np.iinfo(sdt)
    s8 = rng.integers(info.min, info.max + 1, (rows, n)).astype(sdt)
    ss = float(np.float32(0.043))
    sf = (s8.astype(np.float32) - np.float32(szp)) * np.float32(ss)
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32)
    scale, zp = float(np.float32(0.021)), 127.0
    was = (_f32_fused.level(), _f32_ops.level())
    _set_level(avx2)
    try:
        q, dq = np.empty((rows, n), np.uint8), np.empty((rows, n), np.float32)
        _f32_fused.layernorm_quant_x8(x8, False, xs, xzp, xb, sf, g, b, 1e-5, q, False, dq,
                                      scale, zp, True, nt)
        for dq_out, with_dq in ((True, True), (False, True), (False, False)):
            q8 = np.full((rows, n), 7, np.uint8)
            dq8 = np.full((rows, n), np.nan, np.float32) if with_dq else None
            _f32_fused.layernorm_quant_x8(x8, False, xs, xzp, xb, None, g, b, 1e-5, q8, False,
                                          dq8, scale, zp, dq_out, nt, skip8=s8.view(np.uint8),
                                          skip_signed=sdt == np.int8, skip_scale=ss,
                                          skip_zp=float(szp))
            np.testing.assert_array_equal(q8, q)
            if dq_out:
                np.testing.assert_array_equal(dq8, dq)
        with pytest.raises(ValueError):
            _f32_fused.layernorm_quant_x8(x8, False, xs, xzp, xb, sf, g, b, 1e-5, q8, False, dq,
                                          scale, zp, True, nt, skip8=s8.view(np.uint8))
        with pytest.raises(ValueError):
            _f32_fused.layernorm_quant_x8(x8, False, xs, xzp, xb, None, g, b, 1e-5, q8, False,
                                          None, scale, zp, True, nt, skip8=s8.view(np.uint8))
        if rows > 1:
            with pytest.raises(ValueError):
                _f32_fused.layernorm_quant_x8(x8, False, xs, xzp, xb, None, g, b, 1e-5, q8,
                                              False, dq, scale, zp, True, nt,
                                              skip8=s8[1:].view(np.uint8))
    finally:
        _f32_fused.set_level(was[0])
        _f32_ops.set_level(was[1])


@pytest.mark.parametrize("rows,n", [(1, 8), (37, 100), (130, 768), (9, 384)])
@pytest.mark.parametrize("with_dq", [True, False])
def test_layernorm_quant_x8_bound_reads_its_arrays_each_call(rows, n, with_dq):
    """layernorm_quant_x8_bound (the LayerNorm op's bound step: a LayerNormQ8Call made once,
    8-bit x and 8-bit skip, its scratch rows kept): each call reads x and the skip as they are
    then and equals layernorm_quant_x8 on the same values bit for bit, at every level this CPU
    runs (the level is read at each call), on one and two threads."""
    levels = [0] + ([1] if cpu_features().get("avx2") and cpu_features().get("fma") else []) \
        + ([2] if _has_avx512() else [])
    rng = np.random.default_rng(rows + n)
    x8 = np.empty((rows, n), np.uint8)
    s8 = np.empty((rows, n), np.uint8)
    xb = (0.3 * rng.standard_normal(n)).astype(np.float32)
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32)
    args = (0.029, 117.0, xb, None, g, b, 1e-5)
    kw = dict(skip8=s8, skip_signed=True, skip_scale=0.043, skip_zp=3.0)
    was = (_f32_fused.level(), _f32_ops.level())
    try:
        for nt in (1, 2):
            q, dq = np.empty((rows, n), np.uint8), np.empty((rows, n), np.float32)
            call = _f32_fused.layernorm_quant_x8_bound(
                x8, False, *args, q, False, dq if with_dq else None, 0.021, 127.0, with_dq, nt,
                scratch=np.empty((2, 4 * n + 16), np.float32), **kw)
            for level in levels:
                _set_level(level)
                x8[...] = rng.integers(0, 256, (rows, n))
                s8[...] = rng.integers(0, 256, (rows, n))
                call()
                eq, edq = np.empty_like(q), np.empty_like(dq)
                _f32_fused.layernorm_quant_x8(x8, False, *args, eq, False, edq, 0.021, 127.0,
                                              True, nt, **kw)
                _equal_q_dq(q, eq, dq, edq, with_dq)
    finally:
        _f32_fused.set_level(was[0])
        _f32_ops.set_level(was[1])
    assert _f32_fused.layernorm_quant_x8_bound(x8[:0], False, *args, q[:0], False, None, 0.021,
                                               127.0, False, 1, skip8=s8[:0]) is None
