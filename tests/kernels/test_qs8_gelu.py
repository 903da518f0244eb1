"""The GELU epilogue of the INT8 kernels (dense, block4, unstructured; every ISA build this CPU
runs): gelu((acc + bias) * scale) / y_scale, rounded like QuantizeLinear, against the float64
reference with the exact erf. The kernels' erf is a rational approximation of a few ulp, so a
quantized output may sit one step off where the value lies on a rounding boundary; nothing more."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _kernel_cases import epilogue_layer, isa_params, sparse_weight


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["dense", "block4", "unstructured"])
@pytest.mark.parametrize("out,zp", [(np.uint8, 3), (np.int8, -100), (np.float32, 0)])
@pytest.mark.parametrize("shape", [(1, 9, 5), (33, 96, 19), (70, 130, 37), (128, 256, 48)],
                         ids=lambda s: "x".join(map(str, s)))
def test_qs8_gelu_epilogue(isa, fmt, out, zp, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + n)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = sparse_weight(rng, n, k, 0.0 if fmt == "dense" else 0.8, "block4")
    p = K.pack_qs8(w, fmt)
    b = rng.integers(-300, 300, n).astype(np.int32)
    # pre-activations up to about +-8 (GELU's whole curved range and both tails)
    acc = K.qs8_matmul_reference(x, w, b, None, np.int32, 0, 128).astype(np.float64)
    sc = (8.0 / max(np.abs(acc).max(), 1.0) * (0.5 + 0.5 * rng.random(n))).astype(np.float32)
    ys = 6.0 / 255
    got = K.qs8_matmul(x, p, b, sc, out, zp, 128, "gelu", num_threads=2, isa=isa, y_scale=ys)
    ref = K.qs8_matmul_reference(x, w, b, sc, out, zp, 128, "gelu", y_scale=ys)
    if out == np.float32:
        # in units of y_scale; 1e-4 of a step absolute covers 1 + erf's cancellation in the
        # negative tail (a few ulp of erf near -1)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    else:
        d = np.abs(got.astype(np.int32) - ref.astype(np.int32))
        assert d.max() <= 1
        assert (d > 0).mean() < 0.01
    if m * n > 100:
        f = acc * sc
        assert f.min() < -3 and f.max() > 3          # the case covers both tails


def test_qs8_gelu_bad_y_scale():
    w = np.ones((4, 8), np.int8)
    p = K.pack_qs8(w, "dense")
    x = np.zeros((2, 8), np.uint8)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="y_scale"):
            K.qs8_matmul(x, p, None, np.float32(1.0), np.uint8, 0, 0, "gelu", y_scale=bad)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["dense", "block4", "unstructured"])
@pytest.mark.parametrize("mid_dtype,mid_zp", [(np.uint8, 131), (np.int8, 5)])
@pytest.mark.parametrize("act,out,zp", [(None, np.float32, 0), ("relu", np.float32, 0),
                                        ("gelu", np.uint8, 7), ("gelu", np.int8, 0)])
def test_qs8_mid_requant(isa, fmt, mid_dtype, mid_zp, act, out, zp):
    """mid: quantize to the layer's output type, dequantize, add a bias, then the activation and
    the final output (QuantizeLinear -> DequantizeLinear -> Add [-> Gelu -> QuantizeLinear] of a
    quantized transformer's FFN). Without GELU the result is bit-exact, and with GELU and an
    8-bit output too: the kernels then look the output up in a per-layer table (channel, mid
    value) computed with the reference's arithmetic."""
    m, n = 45, 37
    rng = np.random.default_rng(11)
    x, w, p, b, acc = epilogue_layer(rng, fmt, m=m, n=n)
    sc = np.float32(300.0 / max(np.abs(acc).max(), 1.0))     # some values saturate the mid type
    mid = (mid_dtype, mid_zp, 0.03, (rng.standard_normal(n) * 0.5).astype(np.float32))
    kw = dict(activation=act, y_scale=6.0 / 255 if act == "gelu" else 1.0, mid=mid)
    got = K.qs8_matmul(x, p, b, sc, out, zp, 128, num_threads=2, isa=isa, **kw)
    ref = K.qs8_matmul_reference(x, w, b, sc, out, zp, 128, **kw)
    if act != "gelu" or out != np.float32:
        np.testing.assert_array_equal(got, ref)
    else:
        d = np.abs(got.astype(np.int32) - ref.astype(np.int32))
        assert d.max() <= 1 and (d > 0).mean() < 0.01
    # the mid step matters: without it the result differs
    kw.pop("mid")
    assert not np.array_equal(got, K.qs8_matmul_reference(x, w, b, sc * np.float32(0.03), out, zp,
                                                          128, **kw))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["dense", "block4", "unstructured"])
@pytest.mark.parametrize("mid_dtype,mid_zp", [(np.uint8, 0), (np.uint8, 200), (np.int8, -128)])
@pytest.mark.parametrize("out,zp", [(np.uint8, 255), (np.int8, 127), (np.int8, -128)])
def test_qs8_mid_gelu_table_edges(isa, fmt, mid_dtype, mid_zp, out, zp):
    """The table epilogue at the ends of both 8-bit ranges (mid values saturating low and high,
    output zero points at the limits) and ragged shapes: bit-exact to the reference; with a
    residual the per-element path runs instead and stays within one step."""
    m, n = 70, 53
    rng = np.random.default_rng(2000 + int(mid_zp) * 7 + zp)
    x, w, p, b, acc = epilogue_layer(rng, fmt, m=m, n=n)
    sc = np.float32(600.0 / max(np.abs(acc).max(), 1.0))
    mid = (mid_dtype, mid_zp, 0.05, (rng.standard_normal(n) * 2).astype(np.float32))
    kw = dict(activation="gelu", y_scale=0.04, mid=mid)
    got = K.qs8_matmul(x, p, b, sc, out, zp, 128, num_threads=2, isa=isa, **kw)
    ref = K.qs8_matmul_reference(x, w, b, sc, out, zp, 128, **kw)
    np.testing.assert_array_equal(got, ref)
    info = np.iinfo(mid_dtype)
    q = np.clip(np.rint(acc * sc) + mid_zp, info.min, info.max)
    assert (q == info.min).any() and (q == info.max).any()
    r = rng.standard_normal((m, n)).astype(np.float32)
    got = K.qs8_matmul(x, p, b, sc, out, zp, 128, num_threads=2, isa=isa, residual=(r, 0, 1.0),
                       **kw)
    ref = K.qs8_matmul_reference(x, w, b, sc, out, zp, 128, residual=(r, 0, 1.0), **kw)
    assert np.abs(got.astype(np.int32) - ref.astype(np.int32)).max() <= 1
