"""The residual epilogue of the INT8 kernels (dense, block4, unstructured; every ISA build this
CPU runs): f = (acc + bias) * scale [-> the mid quantize-dequantize step] + residual (float32, or
(r - zp) * scale for uint8 / int8), then the activation and the output quantization (division by
y_scale), bit-exact against the numpy reference. Ragged token tiles (M not a multiple of 32 or 8)
and channel counts, a residual view with a wider row stride."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _kernel_cases import epilogue_layer, isa_params, residual_view, sparse_weight


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["dense", "block4", "unstructured"])
@pytest.mark.parametrize("rdt", [np.float32, np.uint8, np.int8])
@pytest.mark.parametrize("act,clip", [(None, None), ("relu", None), ("clip", (-0.5, 1.5))])
@pytest.mark.parametrize("out,mid", [(np.uint8, False), (np.uint8, True), (np.float32, True),
                                     (np.int8, False)])
def test_qs8_residual_epilogue(isa, fmt, rdt, act, clip, out, mid):
    m, n = 45, 37
    rng = np.random.default_rng(3)
    x, w, p, b, acc = epilogue_layer(rng, fmt, m=m, n=n)
    sc = np.float32(2.0 / max(np.abs(acc).max(), 1.0))        # real values about +-2
    residual = residual_view(rng, rdt, m, n)                   # a strided view
    kw = dict(activation=act, clip=clip, residual=residual,
              y_scale=0.02 if out != np.float32 else 1.0,
              mid=(np.uint8, 120, (rng.random(n) * 0.02 + 0.01).astype(np.float32),
                   rng.standard_normal(n).astype(np.float32) * 0.1) if mid else None)
    scale = sc if mid else np.full(n, sc, np.float32)
    if mid:
        scale = np.float32(sc / 0.015)                          # into the mid type's units
    zp = 9 if out == np.uint8 else (-4 if out == np.int8 else 0)
    for nt in (1, 2):
        got = K.qs8_matmul(x, p, b, scale, out, zp, 128, num_threads=nt, isa=isa, **kw)
        ref = K.qs8_matmul_reference(x, w, b, scale, out, zp, 128, **kw)
        np.testing.assert_array_equal(got, ref)
    # the residual matters
    kw["residual"] = None
    assert not np.array_equal(got, K.qs8_matmul_reference(x, w, b, scale, out, zp, 128, **kw))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("m", [1, 8, 9, 17, 31, 33, 49, 128, 130])
def test_qs8_residual_token_tails(isa, m):
    """Token tiles of 32 and 8 and their ragged ends (a tail of more than 8 tokens is a 32-token
    tile padded with zero tokens): each residual lands on its own output."""
    k, n = 64, 24
    rng = np.random.default_rng(m)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = sparse_weight(rng, n, k, 0.75, "block4")
    r = np.arange(m * n, dtype=np.float32).reshape(m, n) * 0.5
    for fmt in ("dense", "block4", "unstructured"):
        p = K.pack_qs8(w, fmt)
        got = K.qs8_matmul(x, p, None, np.float32(1e-3), np.float32, 0, 128, isa=isa,
                           residual=(r, 0, 1.0))
        ref = K.qs8_matmul_reference(x, w, None, np.float32(1e-3), np.float32, 0, 128,
                                     residual=(r, 0, 1.0))
        np.testing.assert_array_equal(got, ref)


def test_qs8_residual_checks():
    w = np.ones((4, 8), np.int8)
    p = K.pack_qs8(w, "dense")
    x = np.zeros((2, 8), np.uint8)
    with pytest.raises(ValueError, match="residual"):
        K.qs8_matmul(x, p, None, np.float32(1.0), np.uint8, 0, 0, residual=(np.zeros((3, 4), np.float32), 0, 1.0))
    with pytest.raises(ValueError, match="residual"):
        K.qs8_matmul(x, p, None, np.float32(1.0), np.uint8, 0, 0, residual=(np.zeros((2, 4), np.int16), 0, 1.0))
    with pytest.raises(ValueError, match="residual"):
        K.qs8_matmul(x, p, None, None, np.int32, 0, 0, residual=(np.zeros((2, 4), np.float32), 0, 1.0))
    # a residual that is the output buffer itself is read before it is overwritten
    out = np.ones((2, 4), np.float32)
    got = K.qs8_matmul(x + 1, p, None, np.float32(0.5), np.float32, 0, 0, out=out,
                       residual=(out, 0, 1.0))
    np.testing.assert_array_equal(got, np.full((2, 4), 1 + 8 * 0.5, np.float32))
