"""The quantized NHWC depthwise kernel (kernels/_f32_fused.pyx dw_conv_nhwc_q8, behind QConv's
depthwise layers) against a plain int64 numpy convolution, on both the baseline and the
AVX2+FMA copy: u8 and s8 inputs, channel counts off the vector width, strides, dilations,
asymmetric padding, batch > 1, extreme values. The float32 sums must be the exact integers."""
import numpy as np
import pytest

from deepsparse_cy.kernels import _f32_fused, cpu_features

CASES = [  # b, h, w, c, kh, kw, sh, sw, dh, dw, (top, left, bottom, right)
    (1, 9, 9, 24, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),
    (2, 12, 11, 37, 3, 3, 2, 2, 1, 1, (1, 1, 1, 1)),
    (1, 13, 13, 8, 5, 5, 2, 1, 2, 2, (4, 4, 4, 4)),
    (1, 7, 10, 3, 3, 3, 1, 2, 1, 1, (0, 2, 1, 0)),
    (1, 5, 5, 17, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0)),
    (1, 1, 1, 9, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),
]


def _ref(x, zx, w, kh, kw, sh, sw, dh, dw, pads):
    b, h, wd, c = x.shape
    t, l, bo, r = pads
    xp = np.zeros((b, h + t + bo, wd + l + r, c), np.int64)
    xp[:, t:t + h, l:l + wd] = x.astype(np.int64) - zx
    ho = (h + t + bo - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((b, ho, wo, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            v = xp[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            out += v * w[i * kw + j].astype(np.int64)
    return out


@pytest.mark.parametrize("avx2", [False, True], ids=["baseline", "avx2"])
@pytest.mark.parametrize("signed", [False, True], ids=["u8", "s8"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_dw_conv_nhwc_q8_exact(avx2, signed, case):
    if avx2 and not (cpu_features().get("avx2") and cpu_features().get("fma")):
        pytest.skip("no AVX2+FMA")
    b, h, wd, c, kh, kw, sh, sw, dh, dw, pads = case
    rng = np.random.default_rng(c * 31 + kh)
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (b, h, wd, c)).astype(dt)
    x[0, 0, 0, :] = info.max                         # extremes: |x - zx| up to 255
    zx = int(info.min) if not signed else int(info.max)
    w = rng.integers(-128, 128, (kh * kw, c)).astype(np.float32)
    w[0, :] = -128
    ref = _ref(x, zx, w, kh, kw, sh, sw, dh, dw, pads)
    out = np.full(ref.shape, np.nan, np.float32)
    was = _f32_fused.level()
    _f32_fused.set_avx2(avx2)
    try:
        _f32_fused.dw_conv_nhwc_q8(x.view(np.uint8), signed, float(zx), w, kh, kw, sh, sw, dh, dw,
                                   pads[0], pads[1], out, 2)
    finally:
        _f32_fused.set_level(was)
    np.testing.assert_array_equal(out.astype(np.int64), ref)
    assert np.all(out == np.round(out))


def test_dw_conv_nhwc_q8_rejects_mismatched_shapes():
    x = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="shapes"):
        _f32_fused.dw_conv_nhwc_q8(x, False, 0.0, np.zeros((9, 4), np.float32), 3, 3, 1, 1, 1, 1,
                                   1, 1, np.zeros((1, 4, 4, 3), np.float32), 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("geom", [
    dict(shape=(1, 224, 224, 3), k=(7, 7), s=(2, 2), p=(3, 3, 3, 3), d=(1, 1)),   # RGB stem
    dict(shape=(2, 9, 11, 5), k=(3, 3), s=(1, 1), p=(1, 1, 1, 1), d=(1, 1)),
    dict(shape=(1, 8, 7, 16), k=(3, 2), s=(2, 3), p=(0, 2, 1, 0), d=(2, 1)),
    dict(shape=(1, 10, 10, 4), k=(3, 3), s=(1, 1), p=(2, 2, 2, 2), d=(2, 2)),
    dict(shape=(3, 5, 6, 1), k=(5, 5), s=(1, 2), p=(4, 4, 4, 4), d=(1, 1)),      # all-pad rows
    dict(shape=(1, 4, 4, 7), k=(1, 1), s=(1, 1), p=(0, 0, 0, 0), d=(1, 1)),
])
@pytest.mark.parametrize("nt", [1, 2])
def test_im2col_nhwc_8_matches_strided_numpy(dtype, geom, nt):
    """The compiled 8-bit im2col against the numpy strided-window form (run on an int16 copy,
    which takes the numpy path), padding filled with the zero point."""
    from deepsparse_cy.kernels.conv import im2col_nhwc
    rng = np.random.default_rng(sum(geom["shape"]) + nt)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, geom["shape"], dtype=dtype)
    zp = int(rng.integers(info.min, info.max + 1))
    args = (geom["k"], geom["s"], geom["p"], geom["d"])
    got = im2col_nhwc(x, *args, pad_value=zp, num_threads=nt)
    ref = im2col_nhwc(x.astype(np.int16), *args, pad_value=zp)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.astype(np.int16), ref)
    out = np.full(got.shape, 7, dtype)                # into a caller's buffer
    assert im2col_nhwc(x, *args, pad_value=zp, out=out, num_threads=nt) is out
    np.testing.assert_array_equal(out, got)
    # an NHWC view of planar (NCHW) data reads the planes directly
    planar = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    view = planar.transpose(0, 2, 3, 1)
    assert not view.flags.c_contiguous or x.shape[3] == 1
    np.testing.assert_array_equal(im2col_nhwc(view, *args, pad_value=zp, num_threads=nt), got)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("geom", [
    dict(shape=(1, 112, 112, 64), k=(3, 3), s=(2, 2), pt=1, pl=1, ho=56, wo=56, d=(1, 1)),
    dict(shape=(2, 7, 9, 5), k=(2, 2), s=(2, 2), pt=0, pl=0, ho=4, wo=5, d=(1, 1)),  # ceil mode
    dict(shape=(1, 6, 6, 33), k=(3, 2), s=(1, 2), pt=2, pl=1, ho=7, wo=4, d=(2, 1)),
    dict(shape=(1, 3, 3, 3), k=(3, 3), s=(1, 1), pt=3, pl=3, ho=5, wo=5, d=(1, 1)),  # all-pad windows
    dict(shape=(1, 10, 10, 128), k=(5, 5), s=(1, 1), pt=2, pl=2, ho=10, wo=10, d=(1, 1)),  # SPPF
    dict(shape=(2, 9, 11, 7), k=(3, 4), s=(3, 2), pt=1, pl=2, ho=4, wo=6, d=(1, 2)),
])
@pytest.mark.parametrize("nt", [1, 2])
def test_maxpool_nhwc_8_vs_numpy(dtype, geom, nt):
    """The compiled 8-bit NHWC max pool against numpy over explicitly padded input (padding
    with the type's lowest value, as ONNX MaxPool pads)."""
    from deepsparse_cy.kernels import _f32_ops
    rng = np.random.default_rng(geom["ho"] * 100 + nt)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, geom["shape"], dtype=dtype)
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = geom["k"], geom["s"], geom["d"]
    ho, wo, pt, pl = geom["ho"], geom["wo"], geom["pt"], geom["pl"]
    ph = max(pt + h, (ho - 1) * sh + (kh - 1) * dh + 1)
    pw = max(pl + w, (wo - 1) * sw + (kw - 1) * dw + 1)
    xp = np.full((b, ph, pw, c), info.min, dtype)
    xp[:, pt:pt + h, pl:pl + w] = x
    ref = np.full((b, ho, wo, c), info.min, dtype)
    for i in range(kh):
        for j in range(kw):
            ref = np.maximum(ref, xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh,
                                     j * dw:j * dw + (wo - 1) * sw + 1:sw])
    out = np.empty((b, ho, wo, c), dtype)
    _f32_ops.maxpool_nhwc_8(x.view(np.uint8), dtype == np.int8, kh, kw, sh, sw, dh, dw, pt, pl,
                            out.view(np.uint8), nt)
    np.testing.assert_array_equal(out, ref)
    # the planar kernel (NCHW planes, two separable passes) on the same values
    planes = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(b * c, h, w)
    outp = np.empty((b * c, ho, wo), dtype)
    _f32_ops.maxpool_planes_8(planes.view(np.uint8), dtype == np.int8, kh, kw, sh, sw, dh, dw,
                              pt, pl, outp.view(np.uint8), nt)
    np.testing.assert_array_equal(outp.reshape(b, c, ho, wo), ref.transpose(0, 3, 1, 2))
