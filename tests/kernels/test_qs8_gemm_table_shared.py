"""The dense INT8 kernels' table epilogue when every channel has the same table (lut_shared: a
per-tensor mid step, as quantize_static's activations are): looked up by AVX-512 VBMI byte
permutes on one 256-byte table, 4 rows of a tile at a time, against the numpy reference and the
same build's gather path, bit for bit. Tables given as [256], as [N, 256] with equal rows, and
(the per-channel gather path) with unequal rows; GEMMs whose M and N are not multiples of the
tile (partial panels, a last block of 1-3 rows); convolutions through the amx build's direct
conv and through gathered im2col rows; every dense build this machine runs."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from deepsparse_cy.kernels import qs8
from deepsparse_cy.kernels.conv import im2col_nhwc

ISAS = [i for i in ("amx", "avx512_vnni", "avx2", "generic")
        if K.kernel_builds().get("qs8_gemm") and not K.missing_features(i, "qs8_gemm")
        and K.load("qs8_gemm", i) is not None]


@pytest.fixture(params=[False, True], ids=["permutes", "gather"])
def vbmi_off(request):
    """Each test once as this CPU runs it and once with the VBMI paths off (as on a CPU
    without VBMI); a build without them takes its gather path both times."""
    mods = [K.load("qs8_gemm", i) for i in ISAS]
    for m in mods:
        m.vbmi(off=request.param)
    yield request.param
    for m in mods:
        m.vbmi(off=False)


def _table(rng, n, kind, out_dtype):
    t = rng.integers(0, 256, 256, dtype=np.int64).astype(np.uint8)
    if kind == "one":
        return t
    if kind == "equal_rows":
        return np.tile(t, (n, 1))
    return rng.integers(0, 256, (n, 256), dtype=np.int64).astype(np.uint8)


def _case(rng, m, k, n, mid_dtype, mid_zp, kind, out_dtype, zp):
    x = rng.integers(0, 256, (m, k), dtype=np.int64).astype(np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int64).astype(np.int8)
    b = rng.integers(-3000, 3000, n).astype(np.int32)
    acc = qs8.qs8_matmul_reference(x, w, b, None, np.int32, 0, 128).astype(np.float64)
    sc = (300.0 / max(np.abs(acc).max(), 1.0) * (0.5 + rng.random(n))).astype(np.float32)
    mid = (mid_dtype, mid_zp, np.float32(0.02), np.full(n, 0.1, np.float32),
           _table(rng, n, kind, out_dtype))
    kw = dict(bias=b, scale=sc, out_dtype=out_dtype, out_zero_point=zp, x_zero_point=128,
              mid=mid)
    return x, w, kw


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(1, 64, 16), (3, 70, 19), (17, 128, 33), (64, 96, 64),
                                   (130, 200, 47)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["one", "equal_rows", "per_channel"])
@pytest.mark.parametrize("mid_dtype,mid_zp,out_dtype,zp", [
    (np.uint8, 0, np.uint8, 0), (np.uint8, 131, np.uint8, 250), (np.int8, -128, np.int8, -7),
    (np.int8, 9, np.uint8, 3)])
def test_gemm_shared_table_matches_reference(vbmi_off, isa, shape, kind, mid_dtype, mid_zp,
                                             out_dtype, zp):
    m, k, n = shape
    rng = np.random.default_rng(m * 31 + n + k + mid_zp + zp + 1000 * len(kind))
    x, w, kw = _case(rng, m, k, n, mid_dtype, mid_zp, kind, out_dtype, zp)
    prep = qs8.prepare_qs8_matmul(K.pack_qs8(w, "dense"), isa=isa, **kw)
    assert prep.mid[5] == (kind != "per_channel")
    ref = qs8.qs8_matmul_reference(x, w, **kw)
    for nt in (1, 2):
        np.testing.assert_array_equal(prep(x, num_threads=nt), ref.astype(out_dtype))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("geom", [
    # (B, H, W, C, N, kernel, stride, pads)
    (1, 9, 11, 3, 16, (3, 3), (2, 2), (1, 1, 1, 1)),       # an RGB stem
    (2, 7, 6, 8, 20, (3, 3), (1, 1), (1, 1, 1, 1)),
    (1, 5, 13, 16, 35, (3, 3), (1, 1), (0, 1, 0, 1)),
    (1, 6, 6, 32, 16, (1, 1), (1, 1), (0, 0, 0, 0))], ids=str)
@pytest.mark.parametrize("kind", ["one", "per_channel"])
def test_conv_shared_table_matches_reference(vbmi_off, isa, geom, kind):
    bsz, h, w_, c, n, ks, st, pads = geom
    rng = np.random.default_rng(h * 7 + w_ + c + n)
    x = rng.integers(0, 256, (bsz, h, w_, c), dtype=np.int64).astype(np.uint8)
    cols = im2col_nhwc(x, ks, st, pads, pad_value=128)
    k = cols.shape[1]
    _, wt, kw = _case(rng, 1, k, n, np.uint8, 117, kind, np.uint8, 5)
    ref = qs8.qs8_matmul_reference(cols, wt, **kw)
    prep = qs8.prepare_qs8_matmul(K.pack_qs8(wt, "dense"), isa=isa, **kw)
    for nt in (1, 2):
        got = prep.conv(x, ks, st, pads, num_threads=nt)
        np.testing.assert_array_equal(got, ref)
