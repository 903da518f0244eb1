"""The amx build's dense GEMM epilogues, bit for bit against the numpy reference and against the
same build's other paths:

* between the multiplies: a work item's finished tiles go through their epilogue 4 rows at a
  time while the next tiles multiply (every kind but the tables); shapes with several token
  blocks (M > 128), several items per thread, ragged token tiles and a partial last panel;
* a table per channel (a GELU table, a caller's [n, 256] table) 4 token tiles at a time by VBMI
  byte permutes (tile4_lut_vbmi), against the gather path of the same build (VBMI off);
* a residual on the 16-lane path (float32, uint8 and int8 residuals, ReLU / Clip, y_scale);
* sibling parts whose epilogues mix a table with other kinds (one GEMM, one pool of items)."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from deepsparse_cy.kernels import qs8
from _kernel_cases import epilogue_layer, residual_view

AMX = K.load("qs8_gemm", "amx") if "amx" in K.runnable_isas() else None
needs_amx = pytest.mark.skipif(AMX is None, reason="no runnable amx build of qs8_gemm here")

# (m, k, n): one partial tile, token blocks of 8 tiles and their tails, a partial last panel,
# one panel pair, several pairs per thread, K over one 192-quad chunk (768 bytes)
SHAPES = [(1, 64, 16), (15, 64, 33), (70, 96, 53), (128, 768, 96), (131, 64, 40),
          (260, 200, 70), (300, 1000, 130)]


@pytest.fixture(params=[False, True], ids=["vbmi", "gather"])
def vbmi_off(request):
    """The table epilogue by byte permutes (the default here) or, second, by gathers (as on a
    CPU without VBMI), for the amx build; restored after the test."""
    AMX.vbmi(off=request.param)
    yield request.param
    AMX.vbmi(off=False)


@needs_amx
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["gelu", "per_channel", "shared"])
@pytest.mark.parametrize("out,zp", [(np.uint8, 3), (np.int8, -128)])
def test_table_epilogue(vbmi_off, shape, kind, out, zp):
    m, k, n = shape
    rng = np.random.default_rng(m * 31 + n * 7 + k)
    x, w, _, b, acc = epilogue_layer(rng, "dense", m=m, k=k, n=n)
    sc = np.float32(500.0 / max(np.abs(acc).max(), 1.0))
    if kind == "gelu":
        kw = dict(activation="gelu", y_scale=0.04,
                  mid=(np.uint8, 120, 0.05, rng.standard_normal(n).astype(np.float32)))
    else:
        t = rng.integers(0, 256, (n, 256) if kind == "per_channel" else (256,)).astype(np.uint8)
        kw = dict(mid=(np.int8, -3, 0.05, None, t))
    ref = qs8.qs8_matmul_reference(x, w, b, sc, out, zp, 128, **kw)
    prep = qs8.prepare_qs8_matmul(K.pack_qs8(w, "dense"), b, sc, out, zp, 128, isa="amx", **kw)
    for nt in (1, 2):
        np.testing.assert_array_equal(prep(x, num_threads=nt), ref)
    # the mid values reach both ends of their type: the tables' first and last entries
    if m * n > 1000:
        lo, hi = (0, 255) if kind == "gelu" else (-128, 127)
        mzp = 120 if kind == "gelu" else -3
        q = np.clip(np.rint(acc * sc) + mzp, lo, hi)
        assert (q == lo).any() and (q == hi).any()


@needs_amx
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("out,mid", [(np.uint8, False), (np.uint8, True), (np.float32, True),
                                     (np.float32, False), (np.int8, True)])
def test_plain_epilogues_between_multiplies(shape, out, mid):
    """Every non-table kind (int32 sums, float, 8-bit; with a mid step) on shapes where items
    leave tiles pending across token-tile pairs, items and threads."""
    m, k, n = shape
    rng = np.random.default_rng(m + 3 * n + k)
    x, w, _, b, acc = epilogue_layer(rng, "dense", m=m, k=k, n=n)
    sc = np.float32(2.0 / max(np.abs(acc).max(), 1.0))
    kw = dict(activation="relu", y_scale=0.02 if out != np.float32 else 1.0)
    if mid:
        kw["mid"] = (np.uint8, 120, (rng.random(n) * 0.02 + 0.01).astype(np.float32),
                     rng.standard_normal(n).astype(np.float32) * 0.1)
        sc = np.float32(sc / 0.015)
    zp = 9 if out == np.uint8 else (-4 if out == np.int8 else 0)
    p = K.pack_qs8(w, "dense")
    for nt in (1, 2):
        got = qs8.qs8_matmul(x, p, b, sc, out, zp, 128, num_threads=nt, isa="amx", **kw)
        np.testing.assert_array_equal(got, qs8.qs8_matmul_reference(x, w, b, sc, out, zp, 128,
                                                                    **kw))
    got = qs8.qs8_matmul(x, p, b, None, np.int32, 0, 128, isa="amx")
    np.testing.assert_array_equal(got, acc.astype(np.int32))


@needs_amx
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("rdt", [np.float32, np.uint8, np.int8])
@pytest.mark.parametrize("act,clip", [(None, None), ("relu", None), ("clip", (-0.5, 1.5))])
@pytest.mark.parametrize("out", [np.float32, np.uint8, np.int8])
def test_residual_epilogue(shape, rdt, act, clip, out):
    m, k, n = shape
    rng = np.random.default_rng(m * 5 + n + k)
    x, w, _, b, acc = epilogue_layer(rng, "dense", m=m, k=k, n=n)
    sc = np.float32(2.0 / max(np.abs(acc).max(), 1.0))
    residual = residual_view(rng, rdt, m, n, off=3)            # a strided view
    kw = dict(activation=act, clip=clip, residual=residual,
              y_scale=0.02 if out != np.float32 else 1.0,
              mid=(np.uint8, 120, np.float32(0.015), rng.standard_normal(n).astype(np.float32)))
    sc = np.float32(sc / 0.015)
    zp = 9 if out == np.uint8 else (-4 if out == np.int8 else 0)
    p = K.pack_qs8(w, "dense")
    ref = qs8.qs8_matmul_reference(x, w, b, sc, out, zp, 128, **kw)
    for nt in (1, 2):
        np.testing.assert_array_equal(
            qs8.qs8_matmul(x, p, b, sc, out, zp, 128, num_threads=nt, isa="amx", **kw), ref)


@needs_amx
@pytest.mark.parametrize("m", [1, 64, 128, 200])
def test_parts_mixing_a_table(vbmi_off, m):
    """Parts with a GELU table, a float output and an 8-bit mid step in one GEMM: each part
    equals its own layer's call, and the reference."""
    k, n = 160, 96
    rng = np.random.default_rng(m)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    ws = [rng.integers(-127, 128, (n, k), dtype=np.int8) for _ in range(3)]
    mid = (np.uint8, 120, 0.05, rng.standard_normal(n).astype(np.float32))
    eps = [dict(bias=None, scale=np.float32(2e-4), out_dtype=np.uint8, out_zero_point=5,
                x_zero_point=128, activation="gelu", y_scale=0.04, mid=mid),
           dict(bias=rng.integers(-99, 99, n).astype(np.int32), scale=np.float32(1e-3),
                out_dtype=np.float32, x_zero_point=128),
           dict(scale=np.float32(3e-4), out_dtype=np.int8, out_zero_point=-2, x_zero_point=128,
                mid=(np.int8, 0, 0.03, None), y_scale=0.05)]
    got = K.prepare_qs8_parts(ws, eps, isa="amx")(x, num_threads=2)
    for w, e, g in zip(ws, eps, got):
        one = qs8.prepare_qs8_matmul(K.pack_qs8(w, "dense"), isa="amx", **e)(x)
        np.testing.assert_array_equal(g, one)
        e = dict(e)
        ref = qs8.qs8_matmul_reference(x, w, e.pop("bias", None), e.pop("scale"),
                                       e.pop("out_dtype"), e.pop("out_zero_point", 0),
                                       e.pop("x_zero_point"), **e)
        np.testing.assert_array_equal(g, ref)
