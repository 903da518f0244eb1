"""Quantize/DequantizeLinear (per-tensor, per-axis, blocked, float8/int4), DynamicQuantizeLinear,
QLinearConv vs onnxruntime / onnx reference + conformance cases."""
import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto

from tests.ops._cnn_common import check, conformance_params, run_conformance_case, run_mine

FAMILY = ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv"]


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_quantize_per_tensor_vs_ort(rng, dt):
    x = (rng.standard_normal((3, 4)) * 40).astype(np.float32)
    x[0, 0] = 0.5 * 0.25      # exact .5 tie -> round half to even
    zp = np.array(3 if dt == np.int8 else 130, dt)
    check("QuantizeLinear", [("x", x), ("s", np.array(0.25, np.float32)), ("z", zp)], opset=13,
          const_sets=((),))
    check("DequantizeLinear", [("x", rng.integers(0, 100, (3, 4)).astype(dt)),
                               ("s", np.array(0.25, np.float32)), ("z", zp)], opset=13, const_sets=((),))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_axis_vs_ort(rng, axis):
    x = (rng.standard_normal((2, 3, 4)) * 10).astype(np.float32)
    n = x.shape[axis]
    s = (rng.random(n) + 0.1).astype(np.float32)
    z = rng.integers(-5, 5, n).astype(np.int8)
    check("QuantizeLinear", [("x", x), ("s", s), ("z", z)], dict(axis=axis), opset=13, const_sets=((),))
    q = rng.integers(-128, 127, x.shape).astype(np.int8)
    check("DequantizeLinear", [("x", q), ("s", s), ("z", z)], dict(axis=axis), opset=13, const_sets=((),))


def test_blocked_vs_reference(rng):
    x = (rng.standard_normal((4, 6)) * 10).astype(np.float32)
    s = (rng.random((4, 2)) + 0.1).astype(np.float32)
    z = rng.integers(0, 255, (4, 2)).astype(np.uint8)
    check("QuantizeLinear", [("x", x), ("s", s), ("z", z)], dict(axis=1, block_size=3), oracle="ref",
          opset=21, const_sets=((),))
    s2 = (rng.random((2, 6)) + 0.1).astype(np.float32)    # uneven last block along axis 0
    x2 = (rng.standard_normal((3, 6)) * 10).astype(np.float32)
    check("QuantizeLinear", [("x", x2), ("s", s2)], dict(axis=0, block_size=2), oracle="ref",
          opset=21, const_sets=((),))
    q = rng.integers(0, 255, (4, 6)).astype(np.uint8)
    check("DequantizeLinear", [("x", q), ("s", s), ("z", z)], dict(axis=1, block_size=3), oracle="ref",
          opset=21, const_sets=((),))


@pytest.mark.parametrize("t", [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2,
                               ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2fnuz])
@pytest.mark.parametrize("saturate", [0, 1])
def test_float8_vs_reference(rng, t, saturate):
    x = (rng.standard_normal(20) * 300).astype(np.float32)
    x[:3] = [1e6, -1e6, 0.0]
    z = np.zeros((), t)
    check("QuantizeLinear", [("x", x), ("s", np.array(2.0, np.float32)), ("z", z)],
          dict(saturate=saturate), oracle="ref", opset=21, const_sets=((),))


@pytest.mark.parametrize("t,tp", [(ml_dtypes.int4, TensorProto.INT4), (ml_dtypes.uint4, TensorProto.UINT4)])
def test_int4_output_dtype(rng, t, tp):
    x = (rng.standard_normal((2, 8)) * 5).astype(np.float32)
    got = run_mine("QuantizeLinear", [("x", x), ("s", np.array(0.5, np.float32))],
                   dict(output_dtype=tp), opset=21)[0]
    assert got.dtype == np.dtype(t)
    lo, hi = (-8, 7) if t == ml_dtypes.int4 else (0, 15)
    np.testing.assert_array_equal(got.astype(np.int32), np.clip(np.rint(x / 0.5), lo, hi).astype(np.int32))
    back = run_mine("DequantizeLinear", [("x", got), ("s", np.array(0.5, np.float32))], opset=21)[0]
    np.testing.assert_array_equal(back, got.astype(np.float32) * 0.5)


def test_dequantize_output_dtype_and_fp16(rng):
    q = rng.integers(0, 255, (3, 4)).astype(np.uint8)
    check("DequantizeLinear", [("x", q), ("s", np.array(0.1, np.float16))], oracle="ref", opset=21,
          const_sets=((),))
    got = run_mine("DequantizeLinear", [("x", q), ("s", np.array(0.1, np.float32))],
                   dict(output_dtype=TensorProto.FLOAT16), opset=23)[0]
    assert got.dtype == np.float16


def test_dynamic_quantize_vs_ort(rng):
    for x in ((rng.standard_normal((3, 5)) * 4).astype(np.float32),
              (rng.random((2, 4)) + 1).astype(np.float32)):       # all positive
        check("DynamicQuantizeLinear", [("x", x)], n_out=3, opset=11, const_sets=((),))
    # all zeros: the spec's scale is 0/255; onnx's reference uses 1/255, onnxruntime 1.0; we follow onnx
    check("DynamicQuantizeLinear", [("x", np.zeros((2, 2), np.float32))], n_out=3, oracle="ref",
          opset=11, const_sets=((),))


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv_vs_ort(rng, dt, per_channel):
    lo, hi = (0, 255) if dt == np.uint8 else (-128, 127)
    x = rng.integers(lo, hi, (1, 4, 7, 7)).astype(dt)
    w = rng.integers(-100, 100, (6, 2, 3, 3)).astype(np.int8)
    ws = (rng.random(6) * 0.01 + 0.001).astype(np.float32) if per_channel else np.array(0.004, np.float32)
    wz = np.zeros(6 if per_channel else (), np.int8)
    b = rng.integers(-500, 500, 6).astype(np.int32)
    inputs = [("x", x), ("xs", np.array(0.05, np.float32)), ("xz", np.array(lo + 10, dt)),
              ("w", w), ("ws", ws), ("wz", wz), ("ys", np.array(0.2, np.float32)),
              ("yz", np.array(lo + 100, dt)), ("b", b)]
    # uint8 x against onnx's reference: onnxruntime's AVX2 u8s8 kernel saturates int16 pair sums
    check("QLinearConv", inputs, dict(group=2, pads=[1, 1, 1, 1], strides=[2, 1]),
          oracle="ort" if dt == np.int8 else "ref", opset=10, const_sets=((), (3, 5, 8)))


@pytest.mark.parametrize("case", conformance_params(FAMILY))
def test_conformance(case):
    run_conformance_case(case)
