"""Dense FP32 conv kernel (kernels/f32conv.py, implicit im2col GEMM) against a float64 numpy
direct convolution, on every ISA build this machine runs: ragged channel counts (M not a multiple
of the 6-row panel), pixel counts not a multiple of the 16-wide strip (incl. the 8-wide tail),
strides, dilations, asymmetric padding, kernels with more taps than the packer's mask table,
batch > 1, residual z and every fused activation."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from deepsparse_cy.kernels import _f32_fused
from deepsparse_cy.kernels.f32conv import PackedConvF32, conv_pixel_tables, f32_conv2d, f32_dwconv2d
from _kernel_cases import isa_params

ACT = _f32_fused.ACTIVATIONS


def conv_ref(x, w, b, strides, pads, dil):
    """Direct convolution in float64: zero-pad, then one einsum per kernel tap."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    N, C, H, W = x.shape
    M, _, KH, KW = w.shape
    pt, pl, pb, pr = pads
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    Ho = (H + pt + pb - dil[0] * (KH - 1) - 1) // strides[0] + 1
    Wo = (W + pl + pr - dil[1] * (KW - 1) - 1) // strides[1] + 1
    y = np.zeros((N, M, Ho, Wo))
    for i in range(KH):
        for j in range(KW):
            v = xp[:, :, i * dil[0]: i * dil[0] + (Ho - 1) * strides[0] + 1: strides[0],
                   j * dil[1]: j * dil[1] + (Wo - 1) * strides[1] + 1: strides[1]]
            y += np.einsum("nchw,mc->nmhw", v, w[:, :, i, j])
    if b is not None:
        y += b.astype(np.float64).reshape(1, -1, 1, 1)
    return y


def act_ref(y, name, p):
    if name == "":
        return y
    if name == "Relu":
        return np.where(y > 0, y, 0)
    if name == "Clip":
        return np.minimum(np.maximum(y, p[0]), p[1])
    if name == "Gelu":
        return 0.5 * y * (1 + np.vectorize(math.erf)(y / np.sqrt(2)))
    if name == "SiLU":
        return y / (1 + np.exp(-y))
    if name == "HardSwish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-y))
    if name == "LeakyRelu":
        return np.where(y < 0, y * p[0], y)
    if name == "HardSigmoid":
        return np.clip(y * p[0] + p[1], 0, 1)
    raise AssertionError(name)


PARAMS = {"Clip": (-0.5, 0.7), "LeakyRelu": (0.1, 0.0), "HardSigmoid": (0.2, 0.5)}


def _check(rng, isa, N, C, M, H, W, k, strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1),
           bias=True, z=False, act="", nt=None):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((M, C) + tuple(k)) / np.sqrt(C * k[0] * k[1])).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if bias else None
    ref = conv_ref(x, w, b, strides, pads, dil)
    zz = rng.standard_normal(ref.shape).astype(np.float32) if z else None
    p = PARAMS.get(act, (0.0, 0.0))
    pk = PackedConvF32(w, isa)
    got = f32_conv2d(x, pk, strides, pads, dil, b, z=zz, activation=ACT[act], params=p,
                     num_threads=nt)
    pre = ref + (zz if z else 0)
    exp = act_ref(pre, act, p)
    # float32 accumulation in another order than the float64 reference: bound by sum |terms|
    absref = conv_ref(np.abs(x), np.abs(w), None if b is None else np.abs(b), strides, pads, dil)
    tol = 2e-6 * (absref + (np.abs(zz) if z else 0)) + 1e-6
    assert got.shape == exp.shape and got.dtype == np.float32
    err = np.abs(got - exp)
    assert (err <= tol * (1 + np.abs(exp))).all(), float(err.max())


CASES = [
    # N, C, M, H, W, k, strides, pads, dil
    (1, 3, 64, 32, 32, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),       # ResNet stem
    (1, 16, 24, 14, 14, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),      # 'same' 3x3, rows of 14
    (2, 8, 13, 9, 11, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),        # strided, batch 2
    (1, 32, 20, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),        # 49 pixels: 8-wide tail
    (1, 40, 70, 7, 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),        # 1x1 on 7x7
    (1, 24, 17, 20, 20, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),      # strided 1x1 (downsample)
    (1, 5, 7, 19, 23, (3, 5), (1, 2), (0, 2, 1, 0), (2, 1)),        # asymmetric everything
    (1, 3, 6, 20, 20, (9, 9), (1, 1), (4, 4, 4, 4), (1, 1)),        # 81 taps > mask table
    (1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),          # smallest
    (1, 300, 9, 6, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),        # K = 2700: several K blocks
    (1, 4, 5, 3, 3, (3, 3), (1, 1), (2, 2, 2, 2), (1, 1)),          # output larger than input
    (1, 8, 10, 9, 40, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),        # strips wrapping one row
    (2, 6, 7, 11, 20, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),        # ... with 5x5 padding
    (1, 5, 9, 12, 24, (3, 3), (1, 1), (0, 0, 0, 0), (2, 1)),        # ... 'valid', dilated
    (1, 260, 13, 10, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),     # 10-wide rows, 3 runs/strip
    (1, 6, 7, 9, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),          # 8-wide rows
    (1, 40, 100, 17, 23, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),     # gathers: 17 panels, small
    (2, 12, 50, 20, 19, (3, 3), (3, 3), (1, 0, 1, 2), (1, 1)),      # map, 2 K blocks; stride 3
    (1, 30, 60, 66, 70, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),      # phase split with 10 panels
]                                                                   # (>= 1024 output pixels)


def _conv_flag(name, value):
    """Set the f32_conv modules' switch `name` (set_<name> / get_<name>) on every ISA build
    this CPU runs, yield, restore."""
    from deepsparse_cy import kernels as K
    mods = [K.load("f32_conv", isa) for isa in K.runnable_isas("f32_conv")]
    was = [getattr(m, "get_" + name)() for m in mods]
    for m in mods:
        getattr(m, "set_" + name)(value)
    yield value
    for m, w in zip(mods, was):
        getattr(m, "set_" + name)(w)


@pytest.fixture(params=[True, False], ids=["wino", "packed"])
def conv_wino(request):
    """Both paths of 3x3 stride-1 convs: Winograd F(2x2, 3x3) where it suits (the default at
    the AVX2 level; the generic build has only the other) and the packed implicit im2col."""
    yield from _conv_flag("wino", request.param)


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}m{}_{}x{}_k{}x{}".format(
    c[0], c[1], c[2], c[3], c[4], *c[5]))
def test_f32_conv_shapes(isa, case, conv_wino):
    N, C, M, H, W, k, s, p, d = case
    rng = np.random.default_rng(C * 131 + M)
    _check(rng, isa, N, C, M, H, W, k, s, p, d, bias=True, z=True, act="Relu")
    _check(rng, isa, N, C, M, H, W, k, s, p, d, bias=False)


STRIDE1_CASES = [
    # N, C, M, H, W, k, pads, dil: stride-1 shapes at the edges of the Winograd path's tiling
    # (odd output sizes, blocks of tiles spanning tile rows, short last blocks) and others
    (1, 96, 24, 12, 80, (3, 3), (1, 1, 1, 1), (1, 1)),     # MobileNetV3-OCR neck
    (1, 300, 13, 10, 10, (3, 3), (1, 1, 1, 1), (1, 1)),    # large C: 16-tile blocks
    (3, 5, 19, 9, 13, (3, 3), (0, 2, 1, 0), (1, 1)),       # odd Ho, Wo; asymmetric pads
    (1, 7, 8, 17, 31, (3, 3), (0, 0, 0, 0), (1, 1)),       # 'valid': 15 x 29 output
    (2, 16, 33, 23, 7, (3, 3), (2, 1, 0, 2), (1, 1)),      # narrow rows: blocks span rows
    (1, 9, 8, 6, 5, (3, 3), (1, 1, 1, 1), (1, 1)),         # 9 tiles: packed path
    (1, 5, 6, 6, 30, (3, 3), (1, 1, 1, 1), (2, 2)),        # dilated: packed path
    (2, 7, 11, 1, 37, (1, 5), (0, 2, 0, 2), (1, 1)),       # one output row, 1 x 5
    (1, 2, 1, 40, 3, (3, 3), (1, 1, 1, 1), (1, 1)),        # one output channel
]


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("case", STRIDE1_CASES, ids=lambda c: "n{}c{}m{}_{}x{}_k{}x{}".format(
    c[0], c[1], c[2], c[3], c[4], *c[5]))
def test_f32_conv_stride1(isa, case, conv_wino):
    N, C, M, H, W, k, p, d = case
    rng = np.random.default_rng(C * 7 + M)
    for nt in (1, 2):
        _check(rng, isa, N, C, M, H, W, k, (1, 1), p, d, bias=True, z=True, act="SiLU", nt=nt)
        _check(rng, isa, N, C, M, H, W, k, (1, 1), p, d, bias=False, act="Gelu", nt=nt)


def test_f32_conv_wino_runs():
    """The AVX2 build takes 3x3 stride-1 convs with enough 2x2 output tiles to Winograd, and
    its answer differs (in rounding only) from the packed path's on the same conv."""
    from deepsparse_cy import kernels as K
    if "avx2" not in K.ISA_BUILDS or K.missing_features("avx2"):
        pytest.skip("no AVX2 build or CPU support here")
    m = K.load("f32_conv", "avx2")
    assert m.uses_wino(12, 80) and not m.uses_wino(7, 7)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 96, 12, 80)).astype(np.float32)
    pk = PackedConvF32(rng.standard_normal((24, 96, 3, 3)).astype(np.float32), "avx2")
    a = f32_conv2d(x, pk, (1, 1), (1, 1, 1, 1))
    m.set_wino(False)
    try:
        b = f32_conv2d(x, pk, (1, 1), (1, 1, 1, 1))
    finally:
        m.set_wino(True)
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()))


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("act", sorted(ACT))
@pytest.mark.parametrize("z", [False, True])
def test_f32_conv_epilogue(isa, act, z, conv_wino):
    rng = np.random.default_rng(len(act) + z)
    for nt in (1, 2):
        _check(rng, isa, 1, 12, 22, 9, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), z=z, act=act,
               nt=nt)


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_f32_conv_random(isa, data, conv_wino):
    d = data.draw
    kh, kw = d(st.integers(1, 5)), d(st.integers(1, 5))
    dil = (d(st.integers(1, 2)), d(st.integers(1, 2)))
    pads = tuple(d(st.integers(0, 3)) for _ in range(4))
    H = d(st.integers(max(1, dil[0] * (kh - 1) + 1 - pads[0] - pads[2]), 24))
    W = d(st.integers(max(1, dil[1] * (kw - 1) + 1 - pads[1] - pads[3]), 40))
    rng = np.random.default_rng(d(st.integers(0, 2 ** 31)))
    _check(rng, isa, d(st.integers(1, 3)), d(st.integers(1, 20)), d(st.integers(1, 40)), H, W,
           (kh, kw), (d(st.integers(1, 3)), d(st.integers(1, 3))), pads, dil,
           bias=d(st.booleans()), z=d(st.booleans()),
           act=d(st.sampled_from(["", "Relu", "Clip", "SiLU"])), nt=d(st.sampled_from([1, 2])))


def test_f32_conv_pixel_tables():
    ih0, iw0 = conv_pixel_tables(5, 6, 3, 4, (2, 2), (1, 1))
    assert ih0.tolist() == [-1] * 4 + [1] * 4 + [3] * 4
    assert iw0.tolist() == [-1, 1, 3, 5] * 3


def test_f32_conv_argument_errors():
    pk = PackedConvF32(np.ones((4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        f32_conv2d(np.ones((1, 2, 5, 5), np.float32), pk)
    with pytest.raises(ValueError, match="empty"):
        f32_conv2d(np.ones((1, 3, 2, 2), np.float32), pk)
    with pytest.raises(ValueError, match="float32"):
        PackedConvF32(np.ones((4, 3, 3, 3), np.float64))
    with pytest.raises(ValueError, match="out must be"):
        f32_conv2d(np.ones((1, 3, 5, 5), np.float32), pk, out=np.empty((1, 4, 2, 2), np.float32))


# ---- the same tiles as a GEMM with a packed constant weight (FusedMatMul) -------------------

from deepsparse_cy.kernels.f32conv import PackedGemmF32, f32_gemm  # noqa: E402


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("shape", [(1, 1, 1), (128, 384, 384), (5, 7, 3), (13, 600, 37),
                                   (64, 1536, 40), (7, 300, 8), (70, 33, 129),
                                   (1, 600, 37), (1, 480, 120), (1, 3, 17)],   # T = 1: GEMV
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ["", "Relu", "Gelu", "Clip", "SiLU", "HardSwish", "HardSigmoid"])
def test_f32_gemm(isa, shape, act):
    T, K, N = shape
    rng = np.random.default_rng(T * 7 + K + N)
    # x rows with a wider row stride than K, out rows inside a wider buffer
    xb = rng.standard_normal((T, K + 3)).astype(np.float32)
    x = xb[:, 1:K + 1]
    w = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    p = PARAMS.get(act, (0.0, 0.0))
    pk = PackedGemmF32(w, isa)
    ob = np.full((T, N + 2), np.nan, np.float32)
    for nt in (1, 2):
        got = f32_gemm(x, pk, b, ACT[act], p, out=ob[:, 1:N + 1], num_threads=nt)
        pre = x.astype(np.float64) @ w.astype(np.float64) + b
        exp = act_ref(pre, act, p)
        tol = 2e-6 * (np.abs(x).astype(np.float64) @ np.abs(w) + np.abs(b)) + 1e-6
        assert (np.abs(got - exp) <= tol * (1 + np.abs(exp))).all()
        assert np.isnan(ob[:, 0]).all() and np.isnan(ob[:, -1]).all()


def test_f32_gemm_argument_errors():
    pk = PackedGemmF32(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        f32_gemm(np.ones((2, 5), np.float32), pk)
    with pytest.raises(ValueError, match="bias"):
        f32_gemm(np.ones((2, 4), np.float32), pk, bias=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="out must be"):
        f32_gemm(np.ones((2, 4), np.float32), pk, out=np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        PackedGemmF32(np.ones((4, 3), np.float64))


# ---- depthwise (kernels/f32conv.f32_dwconv2d) ----------------------------------------------

@pytest.fixture(params=[True, False], ids=["group8", "planes"])
def dw_group(request):
    """Both depthwise paths: eight channels at once for small planes (the default at the AVX2
    level) and plane by plane."""
    yield from _conv_flag("dw_group", request.param)


def _check_dw(rng, isa, N, C, H, W, k, strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), bias=True,
              z=False, act="", nt=None):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((C, 1) + tuple(k)) / np.sqrt(k[0] * k[1])).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32) if bias else None
    # the depthwise conv is the block-diagonal dense conv: the same float64 reference
    wd = np.zeros((C, C) + tuple(k), np.float32)
    wd[np.arange(C), np.arange(C)] = w[:, 0]
    ref = conv_ref(x, wd, b, strides, pads, dil)
    zz = rng.standard_normal(ref.shape).astype(np.float32) if z else None
    p = PARAMS.get(act, (0.0, 0.0))
    got = f32_dwconv2d(x, w, strides, pads, dil, b, z=zz, activation=ACT[act], params=p,
                       num_threads=nt, isa=isa)
    exp = act_ref(ref + (zz if z else 0), act, p)
    absref = conv_ref(np.abs(x), np.abs(wd), None if b is None else np.abs(b), strides, pads, dil)
    tol = 2e-6 * (absref + (np.abs(zz) if z else 0)) + 1e-6
    assert got.shape == exp.shape and got.dtype == np.float32
    err = np.abs(got - exp)
    assert (err <= tol * (1 + np.abs(exp))).all(), float(err.max())


DW_CASES = [
    # N, C, H, W, k, strides, pads, dil
    (1, 336, 4, 4, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),     # MobileNet tail: planes < 1 vector
    (1, 32, 112, 112, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # large plane: several row blocks
    (2, 24, 15, 17, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),    # strided, odd sizes, batch 2
    (1, 40, 16, 16, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1)),    # strided 5x5
    (1, 7, 9, 30, (3, 5), (1, 3), (0, 2, 1, 0), (2, 1)),      # asymmetric everything
    (1, 3, 5, 5, (9, 9), (1, 1), (4, 4, 4, 4), (1, 1)),       # 81 taps (heap tap table)
    (1, 5, 3, 3, (3, 3), (1, 1), (3, 3, 3, 3), (1, 1)),       # output larger than input
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),       # smallest
]


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "n{}c{}_{}x{}_k{}x{}_s{}".format(
    c[0], c[1], c[2], c[3], *c[4], c[5][0]))
def test_f32_dwconv_shapes(isa, case, dw_group):
    N, C, H, W, k, s, p, d = case
    rng = np.random.default_rng(C * 7 + H)
    _check_dw(rng, isa, N, C, H, W, k, s, p, d, bias=True, z=True, act="HardSwish", nt=2)
    _check_dw(rng, isa, N, C, H, W, k, s, p, d, bias=False, nt=1)


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@pytest.mark.parametrize("act", sorted(ACT))
def test_f32_dwconv_epilogue(isa, act, dw_group):
    rng = np.random.default_rng(len(act))
    for nt in (1, 2):
        _check_dw(rng, isa, 1, 64, 9, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), z=nt == 2,
                  act=act, nt=nt)


@pytest.mark.parametrize("isa", isa_params("f32_conv"))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_f32_dwconv_random(isa, data, dw_group):
    d = data.draw
    kh, kw = d(st.integers(1, 7)), d(st.integers(1, 7))
    dil = (d(st.integers(1, 2)), d(st.integers(1, 2)))
    pads = tuple(d(st.integers(0, 3)) for _ in range(4))
    H = d(st.integers(max(1, dil[0] * (kh - 1) + 1 - pads[0] - pads[2]), 30))
    W = d(st.integers(max(1, dil[1] * (kw - 1) + 1 - pads[1] - pads[3]), 40))
    rng = np.random.default_rng(d(st.integers(0, 2 ** 31)))
    _check_dw(rng, isa, d(st.integers(1, 3)), d(st.integers(1, 40)), H, W, (kh, kw),
              (d(st.integers(1, 3)), d(st.integers(1, 3))), pads, dil, bias=d(st.booleans()),
              z=d(st.booleans()), act=d(st.sampled_from(["", "Relu", "HardSigmoid"])),
              nt=d(st.sampled_from([1, 2])))


def test_f32_dwconv_argument_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((4, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="channels"):
        f32_dwconv2d(x, np.zeros((3, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="depthwise weight"):
        f32_dwconv2d(x, np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        f32_dwconv2d(x, np.zeros((4, 1, 7, 7), np.float32))
    with pytest.raises(ValueError, match="bias"):
        f32_dwconv2d(x, w, bias=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=">= 1"):
        f32_dwconv2d(x, w, strides=(0, 1))
