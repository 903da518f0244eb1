"""The sparse kernel's table epilogue on AVX-512 VBMI byte permutes (vpermi2b on the row's
256-byte table) against the same kernel's gather path and the numpy reference, bit for bit:
caller tables, GELU tables, and the tables PreparedQS8 builds itself for a mid step with no
activation, ReLU or Clip before an 8-bit output (used by calls without a residual). Ragged
shapes cover the two-tile row pass (64 tokens), one padded 32-token tile, the 8-token tail
tiles, the conv row gather and the planar (NCHW) output."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from deepsparse_cy.kernels import qs8
from _kernel_cases import sparse_weight

SPMM = K.load("qs8_spmm", "avx512_vnni") if not K.missing_features("avx512_vnni") else None
HAVE_VBMI = SPMM is not None and SPMM.vbmi()
needs_vbmi = pytest.mark.skipif(not HAVE_VBMI, reason="no avx512_vnni build with AVX-512 VBMI "
                                                      "on this CPU")


@pytest.fixture(params=[False, True], ids=["vbmi", "gather"])
def gather(request):
    """run(f, *args): f(*args) on the VBMI path (the default on this CPU) or, second, with it
    turned off (the gather path, as on a CPU without VBMI) for that call only; tables are
    prepared with VBMI on either way."""
    def run(f, *args, **kw):
        SPMM.vbmi(off=request.param)
        try:
            return f(*args, **kw)
        finally:
            SPMM.vbmi(off=False)
    yield run
    SPMM.vbmi(off=False)


def _layer(rng, m, k, n, fmt):
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = sparse_weight(rng, n, k, 0.8, "block4" if fmt == "block4" else "unstructured")
    return x, w, K.pack_qs8(w, fmt)


SHAPES = [(1, 40, 5), (33, 64, 19), (50, 64, 20), (64, 100, 16), (70, 96, 53), (131, 260, 70),
          (220, 12, 129)]


@needs_vbmi
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mid_dtype,mid_zp", [(np.uint8, 0), (np.uint8, 131), (np.int8, -128),
                                              (np.int8, 9)])
@pytest.mark.parametrize("act,clip", [(None, None), ("relu", None), ("clip", (-0.3, 0.9))])
@pytest.mark.parametrize("out,zp", [(np.uint8, 0), (np.uint8, 250), (np.int8, -7)])
def test_auto_table_matches_reference(gather, fmt, shape, mid_dtype, mid_zp, act, clip, out, zp):
    m, k, n = shape
    rng = np.random.default_rng(m * 7 + n + int(mid_zp) + 3 * zp + 1000)
    x, w, p = _layer(rng, m, k, n, fmt)
    b = rng.integers(-2000, 2000, n).astype(np.int32)
    acc = qs8.qs8_matmul_reference(x, w, b, None, np.int32, 0, 128).astype(np.float64)
    sc = (400.0 / max(np.abs(acc).max(), 1.0) * (0.5 + rng.random(n))).astype(np.float32)
    mid = (mid_dtype, mid_zp, (0.01 + 0.02 * rng.random(n)).astype(np.float32),
           (rng.standard_normal(n) * 0.5).astype(np.float32))
    kw = dict(bias=b, scale=sc, out_dtype=out, out_zero_point=zp, x_zero_point=128,
              activation=act, clip=clip, y_scale=0.013, mid=mid)
    prep = qs8.prepare_qs8_matmul(p, isa="avx512_vnni", **kw)
    got = gather(prep, x, num_threads=2)
    ref = qs8.qs8_matmul_reference(x, w, **kw)
    np.testing.assert_array_equal(got, ref.astype(out))
    assert prep._mid_lut is not None          # built when VBMI was on at prepare time
    # mid values saturate at both ends of their type (the table's first and last entries)
    info = np.iinfo(mid_dtype)
    q = np.clip(np.rint(acc * sc) + mid_zp, info.min, info.max)
    if m * n > 1000:
        assert (q == info.min).any() and (q == info.max).any()


@needs_vbmi
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
@pytest.mark.parametrize("kind", ["caller_shared", "caller_per_channel", "gelu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_caller_and_gelu_tables(gather, fmt, kind, shape):
    m, k, n = shape
    rng = np.random.default_rng(m + 11 * n)
    x, w, p = _layer(rng, m, k, n, fmt)
    b = rng.integers(-2000, 2000, n).astype(np.int32)
    acc = qs8.qs8_matmul_reference(x, w, b, None, np.int32, 0, 128).astype(np.float64)
    sc = np.float32(500.0 / max(np.abs(acc).max(), 1.0))
    if kind == "gelu":
        kw = dict(activation="gelu", y_scale=0.04,
                  mid=(np.uint8, 120, 0.05, (rng.standard_normal(n)).astype(np.float32)))
    else:
        t = rng.integers(0, 256, (n, 256) if kind == "caller_per_channel" else (256,))
        kw = dict(mid=(np.int8, -3, 0.05, None, t.astype(np.uint8)))
    prep = qs8.prepare_qs8_matmul(p, b, sc, np.int8, -5, 128, isa="avx512_vnni", **kw)
    got = gather(prep, x, num_threads=2)
    ref = qs8.qs8_matmul_reference(x, w, b, sc, np.int8, -5, 128, **kw)
    np.testing.assert_array_equal(got, ref)


@needs_vbmi
@pytest.mark.parametrize("fmt", ["block4", "unstructured"])
def test_auto_table_conv_and_planar(gather, fmt):
    """The conv row gather (3x3, stride 2, ragged M) and the planar output of a 1x1 layer read
    from planar x, both on the table path, against the reference on the same columns."""
    rng = np.random.default_rng(5)
    n, c = 37, 12
    w = sparse_weight(rng, n, 9 * c, 0.8, "block4" if fmt == "block4" else "unstructured")
    p = K.pack_qs8(w, fmt)
    b = rng.integers(-500, 500, n).astype(np.int32)
    mid = (np.uint8, 128, (0.02 + 0.01 * rng.random(n)).astype(np.float32), None)
    kw = dict(bias=b, scale=np.float32(0.02), out_dtype=np.uint8, out_zero_point=0,
              x_zero_point=5, activation="relu", y_scale=0.03, mid=mid)
    prep = qs8.prepare_qs8_matmul(p, isa="avx512_vnni", **kw)
    x = rng.integers(0, 256, (2, 13, 11, c), dtype=np.uint8)
    got = gather(prep.conv, x, (3, 3), (2, 2), (1, 1, 1, 1), num_threads=2)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=5)
    ho, wo = 7, 6
    cols = np.stack([xp[:, ky:ky + 2 * ho:2, kx:kx + 2 * wo:2] for ky in range(3)
                     for kx in range(3)], axis=3).reshape(-1, 9 * c)
    np.testing.assert_array_equal(got.reshape(-1, n), qs8.qs8_matmul_reference(cols, w, **kw))
    # planar: x [B, K, HW] -> out [B, N, HW]
    w1 = sparse_weight(rng, n, 40, 0.8, "block4" if fmt == "block4" else "unstructured")
    p1 = K.pack_qs8(w1, fmt)
    prep1 = qs8.prepare_qs8_matmul(p1, isa="avx512_vnni", **kw)
    xpl = rng.integers(0, 256, (2, 40, 75), dtype=np.uint8)
    out = np.empty((2, n, 75), np.uint8)
    prep1(xpl[:, :, :1].transpose(0, 2, 1).reshape(-1, 40).copy())   # builds the table
    fn, args = prep1.bound(xpl, out, 2)
    gather(fn, *args)
    rows = xpl.transpose(0, 2, 1).reshape(-1, 40)
    ref = qs8.qs8_matmul_reference(rows, w1, **kw).reshape(2, 75, n).transpose(0, 2, 1)
    np.testing.assert_array_equal(out, ref)


@needs_vbmi
def test_auto_table_not_used_with_a_residual():
    """A layer called with a residual keeps the per-element epilogue (the table would skip the
    residual) and builds no table; the same prepared layer without one uses it."""
    rng = np.random.default_rng(9)
    m, k, n = 70, 64, 40
    x, w, p = _layer(rng, m, k, n, "block4")
    kw = dict(bias=None, scale=np.float32(0.01), out_dtype=np.uint8, out_zero_point=0,
              x_zero_point=128, activation="relu", y_scale=0.05,
              mid=(np.uint8, 128, 0.03, None))
    prep = qs8.prepare_qs8_matmul(p, isa="avx512_vnni", **kw)
    r = rng.integers(0, 256, (m, n), dtype=np.uint8)
    got = prep(x, residual=(r, 3, 0.02))
    np.testing.assert_array_equal(
        got, qs8.qs8_matmul_reference(x, w, residual=(r, 3, 0.02), **kw).astype(np.uint8))
    assert prep._mid_lut is None
    np.testing.assert_array_equal(prep(x), qs8.qs8_matmul_reference(x, w, **kw).astype(np.uint8))
    assert prep._mid_lut is not None


def test_no_auto_table_without_vbmi():
    """Builds without VBMI byte permutes (avx2, generic) keep the arithmetic epilogue: a table
    there would run on gathers, slower than the arithmetic."""
    w = np.ones((8, 16), np.int8)
    for isa in ("avx2", "generic"):
        if K.missing_features(isa):
            continue
        prep = qs8.prepare_qs8_matmul(K.pack_qs8(w, "block4"), scale=np.float32(0.1),
                                      out_dtype=np.uint8, activation="relu", y_scale=0.5,
                                      mid=(np.uint8, 0, 0.1, None), isa=isa)
        assert not prep._lut_ok
        assert not K.load("qs8_spmm", isa).vbmi()
