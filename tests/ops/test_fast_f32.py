"""Compiled FP32 kernels (kernels/_f32_ops.pyx) against plain numpy references."""
import math

import numpy as np
import pytest

from deepsparse_cy.kernels import _f32_ops

_erf = np.vectorize(math.erf, otypes=[np.float64])


@pytest.mark.parametrize("n", [1, 7, 1000, 70000, 300001])
@pytest.mark.parametrize("threads", [1, 2])
def test_erf_and_gelu(n, threads):
    x = (np.random.default_rng(n).standard_normal(n) * 3).astype(np.float32)
    x[:3] = [0.0, np.inf, -np.inf][: min(3, n)]
    ref = _erf(x.astype(np.float64))
    y = np.empty_like(x)
    _f32_ops.erf(x, y, threads)
    # Contract of the vectorised rational erf (csrc/dscy_fastmath.h): |error| <= 5e-7, i.e. a
    # few float32 ulp near +-1, and relative error <= 5e-7 near 0 (where erf(x) ~ 1.128 x).
    np.testing.assert_allclose(y, ref, rtol=0, atol=5e-7)
    small = np.abs(ref) < 1e-3
    np.testing.assert_allclose(y[small], ref[small], rtol=5e-7, atol=0)
    g = np.empty_like(x)
    _f32_ops.gelu_erf(x[np.isfinite(x)], g[: np.isfinite(x).sum()], threads)
    xf = x[np.isfinite(x)].astype(np.float64)
    np.testing.assert_allclose(g[: xf.size], 0.5 * xf * (1 + _erf(xf / math.sqrt(2))), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows,n", [(1, 1), (3, 5), (12 * 128, 128), (700, 333)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows(rows, n, log):
    x = (np.random.default_rng(rows + n).standard_normal((rows, n)) * 5).astype(np.float32)
    y = np.empty_like(x)
    _f32_ops.softmax_rows(x, y, 2, log)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(1, keepdims=True))
    ref = e / e.sum(1, keepdims=True)
    if log:
        ref = np.log(ref)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_softmax_masked_rows():
    x = np.array([[-np.inf, 0.0, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    y = np.empty_like(x)
    with np.errstate(all="ignore"):
        _f32_ops.softmax_rows(x, y, 1, False)
    np.testing.assert_array_equal(y[0], [0, 1, 0])
    assert np.isnan(y[1]).all()   # the ONNX spec's NaN for an all -inf row
