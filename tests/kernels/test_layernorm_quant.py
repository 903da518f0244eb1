"""The LayerNorm + QuantizeLinear + DequantizeLinear row pass (_f32_fused.layernorm_quant, behind
the fused quantized LayerNorm) on both the baseline and the AVX2+FMA copy: bit-identical to the
separate LayerNorm kernel followed by the QuantizeLinear and DequantizeLinear ops' row functions,
and within one quantization step of a float64 numpy LayerNorm."""
import numpy as np
import pytest

from deepsparse_cy.kernels import _f32_fused, _f32_ops, cpu_features


@pytest.mark.parametrize("avx2", [False, True], ids=["baseline", "avx2"])
@pytest.mark.parametrize("dt,zp", [(np.uint8, 131), (np.int8, -7)])
@pytest.mark.parametrize("rows,n,skip,beta", [(1, 8, False, True), (37, 100, True, True),
                                              (130, 768, True, False), (5, 33, False, False)])
def test_layernorm_quant_matches_separate_passes(avx2, dt, zp, rows, n, skip, beta):
    if avx2 and not (cpu_features().get("avx2") and cpu_features().get("fma")):
        pytest.skip("no AVX2+FMA")
    rng = np.random.default_rng(rows * n)
    x = (2 + 3 * rng.standard_normal((rows, n))).astype(np.float32)
    r = rng.standard_normal((rows, n)).astype(np.float32) if skip else None
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32) if beta else None
    scale = float(np.float32(0.021))
    was = _f32_fused.avx2_enabled()      # both modules follow kernels.kernel_isa() together
    _f32_fused.set_avx2(avx2)
    _f32_ops.set_avx2(avx2)
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
        _f32_fused.set_avx2(was)
        _f32_ops.set_avx2(was)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(dq, dq_ref)
    t = x.astype(np.float64) + (r if skip else 0)
    ln = (t - t.mean(1, keepdims=True)) / np.sqrt(t.var(1, keepdims=True) + 1e-5) * g + (b if beta else 0)
    info = np.iinfo(dt)
    exact = np.clip(np.rint(ln / scale) + zp, info.min, info.max)
    assert np.abs(q.astype(np.int64) - exact).max() <= 1
