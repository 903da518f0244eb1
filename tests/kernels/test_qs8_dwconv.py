"""The depthwise INT8 conv with the fused epilogue (kernels.PreparedQDW, csrc/qs8_dw.c; every ISA
build this CPU runs), the caller-given table epilogue of the INT8 GEMMs (mid = (..., table)), and
the GEMMs on a convolution's im2col rows gathered by the kernels (PreparedQS8.conv).

Depthwise: against a plain int64 numpy convolution followed by the GEMMs' reference epilogue,
and against qs8_matmul on the layer's im2col columns with the block-diagonal weight (an
independent route through the other kernels): u8 / s8 inputs, channel counts off the vector
width, strides, dilations, asymmetric padding, batch > 1, every epilogue kind (int32, float,
ReLU / Clip, requantized, mid step, table, residual). Integer results bit-exact."""
import zlib

import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _kernel_cases import epilogue_layer, isa_params
from test_dw_q8 import CASES as DW_CASES

# b, h, w, c, kh, kw, sh, sw, dh, dw, (top, left, bottom, right): test_dw_q8's, and
CASES = DW_CASES + [
    (1, 6, 40, 64, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),       # long interior runs, 8 vectors
    (1, 24, 30, 16, 5, 5, 1, 1, 1, 1, (2, 2, 2, 2)),
    (1, 4, 4, 8, 16, 16, 1, 1, 1, 1, (6, 6, 6, 6)),         # 256 taps: the exactness limit
    (1, 5, 13, 33, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),         # 8 pixels and 5 (AVX-512 rows)
    (1, 70, 9, 20, 5, 3, 1, 1, 17, 1, (34, 1, 34, 1)),      # rows 69 apart: past the ring's 64
    (1, 3, 40, 100, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),        # 3 rows: channel chunks, ragged last
    (2, 2, 30, 100, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),        # 4 rows over 2 images, 2 chunks
]
KINDS = ["int32", "float_relu", "u8_clip", "s8_requant", "mid_float", "mid_u8", "table_u8",
         "table_s8", "residual_u8", "residual_f32"]


def _epilogue(rng, kind, c, m):
    """(keyword arguments, residual) of one epilogue kind for c channels, m output pixels."""
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    sc = (rng.random(c) * 2e-3 + 1e-4).astype(np.float32)
    kw = dict(bias=bias, scale=sc)
    res = None
    if kind == "int32":
        kw.update(out_dtype=np.int32, scale=None)
    elif kind == "float_relu":
        kw.update(out_dtype=np.float32, activation="relu")
    elif kind == "u8_clip":
        kw.update(out_dtype=np.uint8, out_zero_point=10, activation="clip", clip=(-2.0, 60.0),
                  scale=sc * 30)
    elif kind == "s8_requant":
        kw.update(out_dtype=np.int8, out_zero_point=-5, scale=sc * 30)
    elif kind in ("mid_float", "mid_u8"):
        mid = (np.uint8, 7, (rng.random(c) + 0.1).astype(np.float32),
               rng.standard_normal(c).astype(np.float32))
        kw.update(out_dtype=np.float32 if kind == "mid_float" else np.uint8, mid=mid,
                  scale=sc * 50, activation="relu", y_scale=1.0 if kind == "mid_float" else 0.05)
    elif kind.startswith("table"):
        table = rng.integers(0, 256, (c, 256)).astype(np.uint8)
        kw.update(out_dtype=np.uint8 if kind == "table_u8" else np.int8, scale=sc * 50,
                  mid=(np.int8, 3, 0.5, None, table))
    elif kind == "residual_u8":
        kw.update(out_dtype=np.uint8, out_zero_point=128, y_scale=0.1, scale=sc)
        res = (rng.integers(0, 256, (m, c)).astype(np.uint8), 100, np.float32(0.07))
    else:
        kw.update(out_dtype=np.float32, activation="clip", clip=(-1.0, 1.0))
        res = (rng.standard_normal((m, c)).astype(np.float32), 0, np.float32(1.0))
    return kw, res


def _block_diag(w):
    """The depthwise weight [C, kh, kw] as the GEMM weight [C, kh*kw*C] of conv_weight_matrix."""
    c, kh, kw = w.shape
    full = np.zeros((c, c, kh, kw), np.int8)
    full[np.arange(c), np.arange(c)] = w
    return K.conv_weight_matrix(full)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("signed", [False, True], ids=["u8", "s8"])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_qs8_dwconv_exact(isa, signed, case, kind):
    b, h, wd, c, kh, kw, sh, sw, dh, dw, pads = case
    rng = np.random.default_rng(zlib.crc32(repr((case, kind, signed)).encode()))
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (b, h, wd, c)).astype(dt)
    x.reshape(-1)[:3] = (info.min, info.max, info.max)           # extreme values
    w = rng.integers(-128, 128, (c, kh, kw)).astype(np.int8)
    w[rng.random(w.shape) < 0.4] = 0
    w.reshape(-1)[:2] = (-128, 127)
    zx = int(rng.integers(info.min, info.max + 1))
    ho, wo = K.conv.conv_output_hw(h, wd, (kh, kw), (sh, sw), pads, (dh, dw))
    m = b * ho * wo
    kw_, res = _epilogue(rng, kind, c, m)
    p = K.prepare_qs8_dwconv(w, x_zero_point=zx, isa=isa, **kw_)
    got = p(x, (sh, sw), pads, (dh, dw), num_threads=2, residual=res)
    ref = K.qs8_dwconv_reference(x, w, (sh, sw), pads, (dh, dw), x_zero_point=zx, residual=res,
                                 **kw_)
    assert got.shape == (m, c) and got.dtype == np.dtype(kw_["out_dtype"])
    np.testing.assert_array_equal(got, ref)
    # the same layer through the GEMM kernels on im2col columns
    cols = K.im2col_nhwc(x, (kh, kw), (sh, sw), pads, (dh, dw), pad_value=zx)
    pk = K.pack_qs8(_block_diag(w), "dense")
    via = K.qs8_matmul(cols, pk, x_zero_point=zx, num_threads=1, isa=isa, residual=res, **kw_)
    np.testing.assert_array_equal(got, via)
    # one thread, and the bound call into a given output, give the same bytes
    out = np.empty_like(got)
    fn, args = p.bound(x, (sh, sw), pads, (dh, dw), out, 1, res)
    fn(*args)
    np.testing.assert_array_equal(out, got)


def test_qs8_dwconv_integer_sums_at_the_float32_limit():
    """256 taps of the largest products (|x - zx| = 255, |w| = 128) and the opposite sign of
    the zero-point start: sums near 2**23 stay exact in the AVX2 interior and border paths."""
    for isa in K.runnable_isas():
        x = np.full((1, 20, 20, 8), 255, np.uint8)
        w = np.full((8, 16, 16), -128, np.int8)
        p = K.prepare_qs8_dwconv(w, out_dtype=np.int32, x_zero_point=0, isa=isa)
        got = p(x, pads=(8, 8, 7, 7))
        ref = K.qs8_dwconv_reference(x, w, pads=(8, 8, 7, 7), out_dtype=np.int32)
        np.testing.assert_array_equal(got, ref)
        assert got.min() == -255 * 128 * 256


def test_qs8_dwconv_errors():
    w = np.ones((4, 3, 3), np.int8)
    p = K.prepare_qs8_dwconv(w, scale=np.float32(1.0))
    with pytest.raises(ValueError, match="channels"):
        p(np.zeros((1, 5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 / int8"):
        p(np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match="empty"):
        p(np.zeros((1, 1, 1, 4), np.uint8))
    with pytest.raises(ValueError, match="taps"):
        K.prepare_qs8_dwconv(np.ones((4, 17, 17), np.int8), scale=np.float32(1.0))
    with pytest.raises(ValueError, match="x zero point"):
        K.prepare_qs8_dwconv(w, scale=np.float32(1.0), x_zero_point=200)(
            np.zeros((1, 5, 5, 4), np.int8))
    t = K.prepare_qs8_dwconv(w, scale=np.float32(1.0), out_dtype=np.uint8,
                             mid=(np.uint8, 0, 1.0, None, np.zeros(256, np.uint8)))
    with pytest.raises(ValueError, match="residual"):
        t(np.zeros((1, 5, 5, 4), np.uint8), residual=(np.zeros((9, 4), np.float32), 0, 1.0))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["dense", "block4", "unstructured"])
@pytest.mark.parametrize("mid_dtype,mid_zp", [(np.uint8, 0), (np.uint8, 131), (np.int8, -128)])
@pytest.mark.parametrize("out", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "per_channel"])
def test_qs8_table_epilogue(isa, fmt, mid_dtype, mid_zp, out, per_channel):
    """A caller's table (graph/fusion_conv's elementwise tails): output = table[n, q1 - min]
    with q1 the mid step's value, bit-exact to the reference on ragged shapes, mid values
    saturating at both ends; a residual is refused (the table would skip it)."""
    m, n = 70, 53
    rng = np.random.default_rng(int(mid_zp) + 1000 + 300 * per_channel)
    x, w, p, b, acc = epilogue_layer(rng, fmt, m=m, n=n)
    sc = np.float32(600.0 / max(np.abs(acc).max(), 1.0))
    table = rng.integers(0, 256, (n, 256) if per_channel else (256,)).astype(np.uint8)
    mid = (mid_dtype, mid_zp, 0.05, None, table)
    got = K.qs8_matmul(x, p, b, sc, out, 0, 128, num_threads=2, isa=isa, mid=mid)
    ref = K.qs8_matmul_reference(x, w, b, sc, out, 0, 128, mid=mid)
    np.testing.assert_array_equal(got, ref)
    info = np.iinfo(mid_dtype)
    q = np.clip(np.rint(acc * sc) + mid_zp, info.min, info.max)
    assert (q == info.min).any() and (q == info.max).any()
    expect = np.broadcast_to(table, (n, 256))[np.arange(n)[None, :], (q - info.min).astype(int)]
    np.testing.assert_array_equal(got.view(np.uint8), expect)
    with pytest.raises(ValueError, match="residual"):
        K.qs8_matmul(x, p, b, sc, out, 0, 128, isa=isa, mid=mid,
                     residual=(np.zeros((m, n), np.float32), 0, 1.0))
    with pytest.raises(ValueError, match="table"):
        K.qs8_matmul(x, p, b, sc, np.float32, 0, 128, isa=isa, mid=mid)
    with pytest.raises(ValueError, match="table"):
        K.qs8_matmul(x, p, b, sc, out, 0, 128, isa=isa, mid=mid[:4] + (table[:10],))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32, np.int32])
@pytest.mark.parametrize("shape", [(1, 6400, 32), (3, 37, 19), (2, 1, 5), (1, 17, 1),
                                   (2, 70, 33)], ids=str)
def test_nhwc_to_nchw(dtype, shape):
    """The compiled channels-last -> planes copy behind QConv's NCHW outputs (8-bit through
    the u8 path, 4-byte types through the float32 one, bit copies either way)."""
    from deepsparse_cy.kernels import _f32_ops
    rng = np.random.default_rng(3)
    x = rng.integers(-2**31 if dtype == np.int32 else 0, 2**31 - 1 if dtype == np.int32 else 255,
                     shape).astype(dtype)
    o = np.empty((shape[0], shape[2], shape[1]), dtype)
    v = np.uint8 if x.itemsize == 1 else np.float32
    for nt in (1, 2):
        o[...] = 0
        _f32_ops.nhwc_to_nchw(x.view(v), o.view(v), nt)
        np.testing.assert_array_equal(o, x.transpose(0, 2, 1))


@pytest.mark.parametrize("shape", [(1, 3, 7, 5), (2, 17, 9, 13), (1, 32, 80, 80), (2, 16, 33, 31),
                                   (1, 1, 1, 1), (3, 40, 4, 4), (2, 3, 70, 90), (1, 5, 64, 65),
                                   (2, 15, 33, 17), (1, 3, 8, 8), (1, 3, 1, 63), (2, 3, 64, 65),
                                   (1, 3, 320, 320), (1, 3, 48, 321)], ids=str)
@pytest.mark.parametrize("vbmi", [False, True], ids=["bytes", "vbmi"])
def test_nchw_to_nhwc_8(shape, vbmi):
    """The planes -> channels-last copy (16 x 16 byte blocks, scalar edges; fewer than 16
    planes column by column, in blocks of 4096 over the threads; 3 planes also by VBMI byte
    permutes, 64 columns at a time, the rest byte by byte) on ragged shapes."""
    from deepsparse_cy.kernels import _f32_ops
    from deepsparse_cy.kernels import cpu_features
    if vbmi and not all(cpu_features().get(f) for f in ("avx512f", "avx512bw", "avx512_vbmi")):
        pytest.skip("no AVX-512 VBMI on this CPU")
    x = np.random.default_rng(5).integers(0, 256, shape).astype(np.uint8)
    b, c, h, w = shape
    was = _f32_ops.vbmi()
    _f32_ops.set_vbmi(vbmi)
    try:
        for nt in (1, 2):
            o = np.zeros((b, h, w, c), np.uint8)
            _f32_ops.nchw_to_nhwc_8(x, o, nt)
            np.testing.assert_array_equal(o, x.transpose(0, 2, 3, 1))
    finally:
        _f32_ops.set_vbmi(was)


@pytest.mark.parametrize("signed", [False, True], ids=["u8", "s8"])
def test_lut8_f32(signed):
    """QTable's lookup: out = table[x - type min], every byte value, both thread counts."""
    from deepsparse_cy.kernels import _f32_ops
    rng = np.random.default_rng(4)
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    x = np.concatenate([np.arange(info.min, info.max + 1),
                        rng.integers(info.min, info.max + 1, 300000)]).astype(dt)
    table = rng.standard_normal(256).astype(np.float32)
    for nt in (1, 2):
        out = np.empty(x.shape, np.float32)
        _f32_ops.lut8_f32(x.view(np.uint8), signed, table, out, nt)
        np.testing.assert_array_equal(out, table[x.astype(np.int64) - info.min])


GEOMS = [  # b, h, w, c, kh, kw, sh, sw, dh, dw, pads
    (1, 20, 20, 3, 3, 3, 2, 2, 1, 1, (1, 1, 1, 1)),         # an RGB stem
    (2, 9, 11, 16, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),
    (1, 12, 17, 19, 3, 1, 1, 2, 2, 1, (2, 0, 1, 0)),
    (1, 7, 30, 48, 5, 5, 1, 1, 1, 2, (2, 4, 2, 4)),
    (1, 13, 9, 8, 2, 3, 2, 1, 1, 1, (0, 1, 1, 0)),
    (3, 5, 5, 1, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),
]


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("fmt", ["dense", "block4", "unstructured"])
@pytest.mark.parametrize("geom", GEOMS, ids=str)
@pytest.mark.parametrize("kind", ["int32", "u8_clip", "table_s8", "residual_f32"])
def test_qs8_conv_gathers_im2col_rows(isa, fmt, geom, kind):
    """PreparedQS8.conv (the kernels gather each token tile's im2col rows from NHWC x, the
    padding the zero point) is bit-identical to the same prepared layer on im2col_nhwc's
    columns, and so to the reference; the bound call too."""
    b, h, wd, c, kh, kw, sh, sw, dh, dw, pads = geom
    rng = np.random.default_rng(zlib.crc32(repr((geom, fmt, kind)).encode()))
    signed = kind == "table_s8"
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (b, h, wd, c)).astype(dt)
    zx = int(rng.integers(info.min, info.max + 1))
    n = 37
    w = rng.integers(-128, 128, (n, kh * kw * c)).astype(np.int8)
    if fmt != "dense":
        w[rng.random(w.shape) < 0.85] = 0
    ho, wo = K.conv.conv_output_hw(h, wd, (kh, kw), (sh, sw), pads, (dh, dw))
    kw_, res = _epilogue(rng, kind, n, b * ho * wo)
    p = K.prepare_qs8_matmul(K.pack_qs8(w, fmt), x_zero_point=zx, isa=isa, **kw_)
    got = p.conv(x, (kh, kw), (sh, sw), pads, (dh, dw), num_threads=2, residual=res)
    cols = K.im2col_nhwc(x, (kh, kw), (sh, sw), pads, (dh, dw), pad_value=zx)
    np.testing.assert_array_equal(got, p(np.ascontiguousarray(cols), num_threads=2,
                                         residual=res))
    np.testing.assert_array_equal(got, K.qs8_matmul_reference(cols, w, x_zero_point=zx,
                                                              residual=res, **kw_))
    out = np.empty_like(got)
    fn, args = p.conv_bound(x, (kh, kw), (sh, sw), pads, (dh, dw), out, 1, res)
    fn(*args)
    np.testing.assert_array_equal(out, got)
    with pytest.raises(ValueError, match="K="):
        p.conv(x, (kh + 1, kw), (sh, sw), pads, (dh, dw))
