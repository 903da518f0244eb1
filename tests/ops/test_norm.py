"""Normalization family vs onnxruntime / onnx reference and onnx's conformance cases."""
import numpy as np
import pytest

from tests.ops._cnn_common import (assert_close, check, conformance_params, run_conformance_case,
                                   run_mine)

FAMILY = ["BatchNormalization", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
          "RMSNormalization", "LpNormalization", "LRN", "MeanVarianceNormalization"]


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 4, 5, 6), (1, 3, 2, 3, 4)])
def test_batchnorm_inference_vs_ort(rng, shape):
    C = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    p = [rng.standard_normal(C).astype(np.float32) for _ in range(3)] + [rng.random(C).astype(np.float32) + 0.5]
    inputs = [("x", x), ("s", p[0]), ("b", p[1]), ("m", p[2]), ("v", p[3])]
    check("BatchNormalization", inputs, dict(epsilon=1e-3), opset=15,
          const_sets=((), (1, 2, 3, 4)))


def test_batchnorm_training_vs_reference(rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    p = [rng.standard_normal(3).astype(np.float32) for _ in range(3)] + [rng.random(3).astype(np.float32)]
    inputs = [("x", x), ("s", p[0]), ("b", p[1]), ("m", p[2]), ("v", p[3])]
    check("BatchNormalization", inputs, dict(training_mode=1, momentum=0.8), oracle="ref", n_out=3,
          opset=15, const_sets=((),))


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
@pytest.mark.parametrize("n_out", [1, 3])
def test_layernorm_vs_ort(rng, axis, n_out):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    a = axis + 4 if axis < 0 else axis
    s = rng.standard_normal(x.shape[a:]).astype(np.float32)
    b = rng.standard_normal(x.shape[a:]).astype(np.float32)
    check("LayerNormalization", [("x", x), ("s", s), ("b", b)], dict(axis=axis, epsilon=1e-4),
          n_out=n_out, opset=17, const_sets=((),))


def test_layernorm_no_bias_fp16(rng):
    x = rng.standard_normal((3, 8)).astype(np.float16)
    s = rng.standard_normal(8).astype(np.float16)
    check("LayerNormalization", [("x", x), ("s", s)], {}, oracle="ref", opset=17, rtol=2e-3,
          atol=2e-3, const_sets=((),))


@pytest.mark.parametrize("opset", [18, 21])
def test_groupnorm(rng, opset):
    x = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
    G = 3
    n = G if opset == 18 else 6
    s = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    got = run_mine("GroupNormalization", [("x", x), ("s", s), ("b", b)], dict(num_groups=G), opset=opset)[0]
    xg = x.reshape(2, G, -1).astype(np.float64)
    y = ((xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + 1e-5)).reshape(x.shape)
    sc = np.repeat(s, 2) if opset == 18 else s
    bc = np.repeat(b, 2) if opset == 18 else b
    assert_close(got, (y * sc[None, :, None, None] + bc[None, :, None, None]).astype(np.float32))


def test_instancenorm_vs_ort(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    s = rng.standard_normal(3).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    check("InstanceNormalization", [("x", x), ("s", s), ("b", b)], dict(epsilon=1e-3), opset=6)


@pytest.mark.parametrize("axis", [-1, 1])
def test_rmsnorm_vs_reference(rng, axis):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    s = rng.standard_normal(x.shape[axis:] if axis >= 0 else x.shape[axis:]).astype(np.float32)
    check("RMSNormalization", [("x", x), ("s", s)], dict(axis=axis), oracle="ref", opset=23,
          const_sets=((),))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_lpnorm_vs_ort(rng, p, axis):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    check("LpNormalization", [("x", x)], dict(p=p, axis=axis), opset=1, const_sets=((),))


def test_lrn_even_size(rng):
    # onnxruntime rejects even sizes; check against the spec's window [c - (s-1)//2, c + ceil((s-1)/2)]
    x = rng.standard_normal((2, 7, 3, 4)).astype(np.float32)
    size, alpha, beta, bias = 4, 1e-2, 0.6, 2.0
    got = run_mine("LRN", [("x", x)], dict(size=size, alpha=alpha, beta=beta, bias=bias), opset=13)[0]
    sq = np.zeros_like(x, dtype=np.float64)
    for c in range(7):
        sq[:, c] = (x[:, max(0, c - 1):min(7, c + 3)].astype(np.float64) ** 2).sum(axis=1)
    assert_close(got, (x / (bias + alpha / size * sq) ** beta).astype(np.float32))


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_vs_ort(rng, size):
    x = rng.standard_normal((2, 7, 3, 4)).astype(np.float32)
    check("LRN", [("x", x)], dict(size=size, alpha=1e-2, beta=0.6, bias=2.0), opset=13,
          const_sets=((),))


def test_mvn_vs_ort(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    check("MeanVarianceNormalization", [("x", x)], {}, opset=13, const_sets=((),), atol=1e-4)
    check("MeanVarianceNormalization", [("x", x)], dict(axes=[1, 3]), opset=13, const_sets=((),),
          atol=1e-4)


@pytest.mark.parametrize("case", conformance_params(FAMILY))
def test_conformance(case):
    run_conformance_case(case)


