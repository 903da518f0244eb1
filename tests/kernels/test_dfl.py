"""The DFL decoding kernel (_f32_fused.dfl_decode, csrc/f32_fused.h dscy_dfl_cols) at every
level this machine runs: the float form against a float64 reference, the quantized form bit
for bit against the separate steps it replaces (softmax_axis, QuantizeLinear's division, the
exact integer sum, QConv's float epilogue with and without its mid step), including exact
quantization ties, NaN columns, saturation, ragged column blocks and bins up to the limit."""
import numpy as np
import pytest

from deepsparse_cy.kernels import _f32_fused
from _kernel_cases import f32_level  # noqa: F401 (the fixture)


@pytest.fixture
def level(f32_level):
    return f32_level


def _separate(x, w, quant):
    """The unfused steps: softmax_axis, then QuantizeLinear (division, half to even, NaN to the
    type's minimum), the integer sum and QConv's float epilogue, in numpy."""
    p = np.empty_like(x)
    _f32_fused.softmax_axis(x, p, 2)
    qs, qz, qlo, qhi, bias_i, scale = quant[:6]
    with np.errstate(invalid="ignore"):
        q = np.rint(p / np.float32(qs)) + np.float32(qz)
    q = np.where(np.isnan(q), qlo, np.clip(q, qlo, qhi)).astype(np.int64)
    v = np.einsum("okj,k->oj", q - int(qz), w.astype(np.int64)) + bias_i
    f = v.astype(np.float32) * np.float32(scale)
    if len(quant) == 10:
        mlo, mhi, ma, mb = (np.float32(t) for t in quant[6:])
        f = np.rint(np.clip(f, mlo, mhi)) * ma          # float32 product, rounded
        f = f + mb
    return f


def _logits(rng, shape):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    if shape[2] > 5:
        x[0, :, 1] = 0.0                          # equal logits: p = 1 / bins exactly
        x[0, 0, 2] = np.nan                       # a NaN column
        x[-1, -1, 3] = -np.inf                    # an exact 0
        x[-1, 0, 4] = 200.0                       # one bin takes all: p = 1
    return x


@pytest.mark.parametrize("shape", [(4, 16, 2100), (1, 16, 300), (3, 7, 17), (2, 32, 513),
                                   (1, 1, 40), (2, 16, 256), (1, 2, 5)])
@pytest.mark.parametrize("mid", [False, True])
@pytest.mark.parametrize("xdt", ["uint8", "int8"])
def test_dfl_quantized_matches_separate_steps(level, shape, mid, xdt):
    rng = np.random.default_rng(shape[2] + 7 * mid)
    x = _logits(rng, shape)
    n = shape[1]
    w = np.clip(np.round(np.arange(n) / max(n - 1, 1) * 127), -128, 127).astype(np.float32)
    w[0] = -5.0 if n > 1 else w[0]
    info = np.iinfo(xdt)
    qz = 0 if xdt == "uint8" else -128
    quant = (float(np.float32(1 / 1411.7)), float(qz), float(info.min), float(info.max), 7,
             float(np.float32(0.0027)))
    if mid:
        quant += (-3.0, 252.0, float(np.float32(0.03115)), float(np.float32(0.25)))
    out = np.empty((shape[0], shape[2]), np.float32)
    _f32_fused.dfl_decode(x, out, w, 0.0, quant, 2)
    np.testing.assert_array_equal(out, _separate(x, w, quant))


# (bins, scale): with equal logits (p = float32(1 / bins)), p times float32(1 / scale) and
# p / scale round to different integers: an exact half (31.5, 1.5, 5.5) or one ulp beside it
# (12.500001, 14.500001); found by search over scales near p / (k + 1/2)
TIES = [(3, 0.026666665449738503), (3, 0.02298850566148758), (3, 0.010582011193037033),
        (3, 0.008032129146158695), (5, 0.13333334028720856), (5, 0.021052632480859756),
        (7, 0.025974027812480927), (7, 0.021978022530674934), (12, 0.006666666362434626),
        (12, 0.005747126415371895)]


@pytest.mark.parametrize("bins,qs", TIES + [(2, 1 / 3), (4, 1 / 6), (2, 2.0 ** -9), (4, 1e-30)])
def test_dfl_quantization_ties_and_saturation(level, bins, qs):
    """Equal logits give p = 1 / bins; at these scales the product with 1 / scale and the
    division round to different integers, and the kernel must give the division's (ONNX's
    QuantizeLinear); tiny scales saturate."""
    qs32 = np.float32(qs)
    p = np.float32(1) * (np.float32(1) / np.float32(bins))
    if (bins, qs) in TIES:       # the case is real: the two ways round apart
        assert np.rint(p * (np.float32(1) / qs32)) != np.rint(p / qs32)
    x = np.zeros((2, bins, 37), np.float32)
    x[1, 0, ::2] = 1e-6                          # p one or two ulps beside 1 / bins
    w = np.arange(1, bins + 1, dtype=np.float32)
    quant = (float(np.float32(qs)), 3.0, 0.0, 255.0, 0, 1.0)
    out = np.empty((2, 37), np.float32)
    _f32_fused.dfl_decode(x, out, w, 0.0, quant, 1)
    np.testing.assert_array_equal(out, _separate(x, w, quant))


@pytest.mark.parametrize("shape", [(4, 16, 2100), (3, 7, 17), (2, 32, 513), (1, 1, 9)])
def test_dfl_float_matches_reference(level, shape):
    rng = np.random.default_rng(shape[2])
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    w = rng.standard_normal(shape[1]).astype(np.float32)
    out = np.empty((shape[0], shape[2]), np.float32)
    _f32_fused.dfl_decode(x, out, w, 0.75, None, 2)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(1, keepdims=True))
    ref = np.einsum("okj,k->oj", e / e.sum(1, keepdims=True), w.astype(np.float64)) + 0.75
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(w).sum())


def test_dfl_refuses_what_it_cannot_do():
    x = np.zeros((1, 4, 8), np.float32)
    out = np.empty((1, 8), np.float32)
    with pytest.raises(ValueError, match="bins"):
        _f32_fused.dfl_decode(x, out, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="bins"):
        _f32_fused.dfl_decode(np.zeros((1, 33, 8), np.float32), out, np.zeros(33, np.float32))
    with pytest.raises(ValueError, match="shape"):
        _f32_fused.dfl_decode(x, np.empty((1, 7), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="integers"):
        _f32_fused.dfl_decode(x, out, np.full(4, 0.5, np.float32), 0, (0.1, 0, 0, 255, 0, 1.0))
    with pytest.raises(ValueError, match="quantization"):
        _f32_fused.dfl_decode(x, out, np.ones(4, np.float32), 0, (0.1, 0, -128, 255, 0, 1.0))
    with pytest.raises(ValueError, match="quant takes"):
        _f32_fused.dfl_decode(x, out, np.ones(4, np.float32), 0, (0.1, 0, 0, 255))
