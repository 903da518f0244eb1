"""The 8-bit table kernels behind QTable's quantized outputs and QAdd (graph/fusion_q8.py):
lut8_8 (scalar and VBMI copies) against numpy indexing, and qadd8 (baseline, AVX2 and AVX-512
copies) against numpy's float32 sum quantized as ONNX specifies (round half to even, saturate),
on lengths around the 64-byte / 16-lane / 512-value blocks, u8 and s8 inputs and outputs, one and
two threads (from 256K values)."""
import numpy as np
import pytest

from deepsparse_cy.kernels import _f32_ops, cpu_features

_LENS = [0, 1, 5, 63, 64, 65, 511, 512, 513, 1000, 300001]


def _has(*keys):
    f = cpu_features()
    return all(f.get(k) for k in keys)


@pytest.mark.parametrize("vbmi", [0, 1], ids=["scalar", "vbmi"])
@pytest.mark.parametrize("n", _LENS)
@pytest.mark.parametrize("x_signed", [False, True])
@pytest.mark.parametrize("nt", [1, 2])
def test_lut8_8_matches_numpy(vbmi, n, x_signed, nt):
    if vbmi and not _has("avx512f", "avx512bw", "avx512_vbmi"):
        pytest.skip("no AVX-512 VBMI")
    rng = np.random.default_rng(n + 7 * vbmi)
    x = rng.integers(0, 256, n).astype(np.uint8)
    x[:2] = [0, 255][:n]
    t = rng.integers(0, 256, 256).astype(np.uint8)
    out = np.full(n + 8, 77, np.uint8)                 # bytes past n must stay untouched
    was = _f32_ops.vbmi()
    _f32_ops.set_vbmi(vbmi)
    try:
        _f32_ops.lut8_8(x, x_signed, t, out[:n], nt)
    finally:
        _f32_ops.set_vbmi(was)
    np.testing.assert_array_equal(out[:n], t[x ^ np.uint8(0x80) if x_signed else x])
    assert (out[n:] == 77).all()


@pytest.mark.parametrize("level", [0, 1, 2], ids=["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("n", _LENS)
@pytest.mark.parametrize("out", ["u8", "s8", "f32"])
@pytest.mark.parametrize("nt", [1, 2])
def test_qadd8_matches_numpy(level, n, out, nt):
    if level >= 1 and not _has("avx2", "fma"):
        pytest.skip("no AVX2+FMA")
    if level == 2 and not _has("avx512f", "avx512bw", "avx512vl", "avx512dq"):
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(n * 3 + level)
    a = rng.integers(0, 256, n).astype(np.uint8)
    b = rng.integers(0, 256, n).astype(np.uint8)
    ta = (rng.standard_normal(256) * 3).astype(np.float32)
    tb = (rng.standard_normal(256) * 3).astype(np.float32)
    ta[:3] = [np.inf, -np.inf, np.nan]        # saturation both ways; NaN to the type's minimum
    scale, zp = np.float32(0.0137), {"u8": 131, "s8": -9, "f32": 0}[out]
    dt = {"u8": np.uint8, "s8": np.int8, "f32": np.float32}[out]
    y = np.empty(n, dt)
    was = _f32_ops.level()
    _f32_ops.set_level(level)
    try:
        _f32_ops.qadd8(a, True, b, False, ta, tb, y, float(scale), float(zp), nt)
    finally:
        _f32_ops.set_level(was)
    with np.errstate(invalid="ignore"):
        f = np.add(ta[a ^ np.uint8(0x80)], tb[b], dtype=np.float32)
    if dt == np.float32:
        np.testing.assert_array_equal(y, f)
        return
    info = np.iinfo(dt)
    with np.errstate(invalid="ignore"):
        q = np.rint(np.divide(f, scale, dtype=np.float32).astype(np.float64)) + zp
    ref = np.where(np.isnan(q), info.min, np.clip(q, info.min, info.max)).astype(dt)
    np.testing.assert_array_equal(y, ref)


def test_qadd8_rejects_mismatched_arguments():
    a = np.zeros(10, np.uint8)
    t = np.zeros(256, np.float32)
    with pytest.raises(ValueError):
        _f32_ops.qadd8(a, False, np.zeros(9, np.uint8), False, t, t, np.empty(10, np.uint8))
    with pytest.raises(ValueError):
        _f32_ops.qadd8(a, False, a, False, t, t, np.empty(10, np.int32))
    with pytest.raises(ValueError):
        _f32_ops.qadd8(a, False, a, False, t[:255], t, np.empty(10, np.uint8))
    with pytest.raises(ValueError):
        _f32_ops.lut8_8(a, False, np.zeros(255, np.uint8), np.empty(10, np.uint8))


@pytest.mark.parametrize("level", [0, 2], ids=["baseline", "avx512"])
@pytest.mark.parametrize("n", _LENS)
@pytest.mark.parametrize("signs", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("nt", [1, 2])
def test_qadd8_t2_matches_numpy(level, n, signs, nt):
    """QAdd's two-index byte table: out = t2[(a - min) * 256 + (b - min)] (the AVX-512 copy
    gathers dwords at byte offsets and keeps the low byte; a table's last 3 bytes are slack)."""
    if level == 2 and not _has("avx512f", "avx512bw", "avx512vl", "avx512dq"):
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(n + 11 * level)
    a = rng.integers(0, 256, n).astype(np.uint8)
    b = rng.integers(0, 256, n).astype(np.uint8)
    a[:2], b[:2] = [255, 0][:n], [255, 0][:n]
    t2 = rng.integers(0, 256, 65539).astype(np.uint8)
    y = np.full(n + 5, 9, np.uint8)
    was = _f32_ops.level()
    _f32_ops.set_level(level)
    try:
        _f32_ops.qadd8_t2(a, signs[0], b, signs[1], t2, y[:n], nt)
    finally:
        _f32_ops.set_level(was)
    ia = (a ^ np.uint8(0x80) if signs[0] else a).astype(np.int64)
    ib = (b ^ np.uint8(0x80) if signs[1] else b).astype(np.int64)
    np.testing.assert_array_equal(y[:n], t2[ia * 256 + ib])
    assert (y[n:] == 9).all()
    with pytest.raises(ValueError):
        _f32_ops.qadd8_t2(a, False, b, False, t2[:65536], y[:n])
