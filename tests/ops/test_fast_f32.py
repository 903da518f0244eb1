"""Compiled FP32 kernels (kernels/_f32_ops.pyx) against plain numpy references."""
import math

import numpy as np
import pytest

from deepsparse_cy import kernels
from deepsparse_cy.kernels import _f32_fused, _f32_ops

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


_AVX512 = kernels.kernel_isa() in ("avx512_vnni", "amx")
_Q_LEVELS = ["scalar"] + (["avx2"] if kernels.kernel_isa() != "generic" else []) + \
    (["avx512"] if _AVX512 else [])


@pytest.fixture(params=_Q_LEVELS)
def q_avx2(request):
    """Run a test with the scalar and (where the dispatch level has them) the AVX2 and AVX-512
    quantizer copies; the import-time choice is restored after."""
    _f32_ops.set_avx2(request.param != "scalar")
    if request.param == "avx512":
        _f32_ops.set_avx512(True)
    yield request.param
    _f32_ops.set_avx2(kernels.kernel_isa() != "generic")
    if _AVX512:
        _f32_ops.set_avx512(True)


@pytest.mark.parametrize("zdt", [np.uint8, np.int8])
@pytest.mark.parametrize("seed", range(6))
def test_quantize_matches_reference_exactly(zdt, seed, q_avx2):
    from deepsparse_cy.ops import quant
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200000))
    s = np.float32(rng.uniform(0.001, 2))
    x = (rng.standard_normal(n) * rng.uniform(0.1, 300)).astype(np.float32)
    k = min(50, n)
    x[:k] = (np.arange(k) - 25 + 0.5).astype(np.float32) * s     # exact halves: ties to even
    x[-1] = np.inf
    z = zdt(rng.integers(0, 256) if zdt == np.uint8 else rng.integers(-128, 128))
    fn = _f32_ops.quantize_u8 if zdt == np.uint8 else _f32_ops.quantize_s8
    y = np.empty(n, zdt)
    fn(x, y, float(s), int(z), 2)
    np.testing.assert_array_equal(y, quant.quantize(x, np.array(s), np.array(z)))


@pytest.mark.parametrize("zdt", [np.uint8, np.int8])
def test_quantize_at_and_beside_every_tie_matches_the_division(zdt, q_avx2):
    """The AVX2 and AVX-512 quantizers multiply by 1 / scale and divide only near a
    half-integer: at the ties, one and two ulps either side of them (where x * (1 / s) and
    x / s can round apart), across scales including ones whose reciprocal is inexact or not a
    normal float."""
    from deepsparse_cy.ops import quant
    rng = np.random.default_rng(11)
    fn = _f32_ops.quantize_u8 if zdt == np.uint8 else _f32_ops.quantize_s8
    scales = [np.float32(v) for v in rng.uniform(1e-4, 3, 40)] + [
        np.float32(0.1), np.float32(1 / 3), np.float32(7e-3), np.float32(1e-30), np.float32(3e30),
        np.float32(2.0 ** -126), np.float32(1.0)]
    for s in scales:
        k = np.arange(-300, 300, dtype=np.float32) + np.float32(0.5)
        t = (k * s).astype(np.float32)
        x = [t]
        for d in (1, 2):
            up, dn = t, t
            for _ in range(d):
                up, dn = np.nextafter(up, np.float32(np.inf)), np.nextafter(dn, np.float32(-np.inf))
            x += [up, dn]
        x = np.concatenate(x + [(rng.standard_normal(1000) * 200 * s).astype(np.float32)])
        z = zdt(rng.integers(0, 256) if zdt == np.uint8 else rng.integers(-128, 128))
        y = np.empty(x.size, zdt)
        fn(x, y, float(s), int(z), 1)
        np.testing.assert_array_equal(y, quant.quantize(x, np.array(s), np.array(z)), err_msg=str(s))


def test_quantize_nan_saturates_low_like_onnxruntime(q_avx2):
    # 40 copies: the first 32 go through the 32-wide vector step, the rest the scalar tail
    x = np.tile(np.array([np.nan, 0, np.inf, -np.inf], np.float32), 10)
    y8 = np.empty(40, np.uint8)
    _f32_ops.quantize_u8(x, y8, 0.1, 3, 1)
    np.testing.assert_array_equal(y8, [0, 3, 255, 0] * 10)
    s8 = np.empty(40, np.int8)
    _f32_ops.quantize_s8(x, s8, 0.1, 3, 1)
    np.testing.assert_array_equal(s8, [-128, 3, 127, -128] * 10)


@pytest.mark.parametrize("n", [1, 33, 70000, 250001])
def test_clip_and_relu(n):
    x = (np.random.default_rng(n).standard_normal(n) * 10).astype(np.float32)
    x[0] = np.nan
    y = np.empty_like(x)
    _f32_ops.clip(x, y, -1.5, 6.0, 2)
    np.testing.assert_array_equal(y, np.clip(x, -1.5, 6.0))   # NaN stays NaN, as np.clip
    _f32_ops.clip(x, y, 0.0, np.inf, 2)
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("avx2", [False, True])
@pytest.mark.parametrize("C,H,W,s,d,N", [(5, 9, 40, 1, 1, 1), (3, 17, 70, 2, 1, 2),
                                         (4, 12, 33, 1, 2, 1), (8, 7, 7, 2, 1, 3)])
def test_depthwise_kernel_both_builds(avx2, C, H, W, s, d, N):
    """ConvCore's compiled depthwise path (both builds) against a direct numpy convolution."""
    import deepsparse_cy as ds
    from deepsparse_cy.ops import conv as conv_mod
    if avx2 and not ds.cpu_features().get("avx2"):
        pytest.skip("CPU lacks avx2")
    rng = np.random.default_rng(C * H + s)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((C, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    core = conv_mod.ConvCore(w, b, C, None, [s, s], [d, d], [1, 1, 1, 1], None, np.float32)
    old = conv_mod._AVX2
    conv_mod._AVX2 = avx2
    try:
        y = core.run(x)
    finally:
        conv_mod._AVX2 = old
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    O0 = (H + 2 - d * 2 - 1) // s + 1
    O1 = (W + 2 - d * 2 - 1) // s + 1
    ref = np.zeros((N, C, O0, O1)) + b[None, :, None, None]
    for a in range(3):
        for c in range(3):
            ref += w[None, :, 0, a, c, None, None] * xp[:, :, a * d: a * d + s * (O0 - 1) + 1: s,
                                                        c * d: c * d + s * (O1 - 1) + 1: s]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n", [1, 15, 17, 33, 37, 101])
def test_dequantize_rows_bit_equal_to_numpy(dt, bias, n, q_avx2):
    # the compiled (q - zp) * s (+ b) must round exactly as numpy's float32 passes do, in every
    # copy (scalar, and the AVX-512 rows with their masked tail: no FMA contraction there)
    rng = np.random.default_rng(int(bias) + (dt == np.int8) * 2 + 4 * n)
    info = np.iinfo(dt)
    q = rng.integers(info.min, info.max + 1, (37, n)).astype(dt)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    for zp in (0, int(info.min), int(info.max), 7):
        for s in (np.float32(0.0123), np.float32(3.7), np.float32(1e-7)):
            out = np.empty(q.shape, np.float32)
            _f32_ops.dequantize_rows(q, float(zp), float(s), b, out, 2)
            ref = np.subtract(q, np.float32(zp), dtype=np.float32)
            ref *= s
            if b is not None:
                ref += b
            np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("opset", [10, 13, 19, 21])
def test_dequantize_linear_fast_path_matches_reference(opset):
    from onnx import TensorProto, helper
    import deepsparse_cy as ds
    from deepsparse_cy.ops import quant
    rng = np.random.default_rng(opset)
    x = rng.integers(0, 256, (3, 5, 7)).astype(np.uint8)
    s = np.array(0.05, np.float32)
    z = np.array(131, np.uint8)
    n = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])
    g = helper.make_graph([n], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8,
                                                                   ["n", 5, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [helper.make_tensor(nm, dt_, [], [v]) for nm, dt_, v in
                           (("s", TensorProto.FLOAT, float(s)), ("z", TensorProto.UINT8, int(z)))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    got = ds.compile_model(m).run([x])[0]
    np.testing.assert_array_equal(got, quant.dequantize(x, s, z))
    assert ds.compile_model(m).run([x[:0]])[0].shape == (0, 5, 7)


@pytest.mark.parametrize("NC,H,W,kh,kw", [(1, 1, 1, 1, 1), (96, 4, 4, 2, 2), (24, 4, 4, 8, 8),
                                          (3, 5, 7, 3, 1), (2, 3, 9, 1, 4), (64, 80, 80, 2, 2),
                                          (5, 3, 7, 2, 2), (2, 2, 1, 1, 2)])
def test_upsample_nearest_copies_exactly(NC, H, W, kh, kw):
    x = np.random.default_rng(NC + H).standard_normal((NC, H, W)).astype(np.float32)
    y = np.empty((NC, H * kh, W * kw), np.float32)
    _f32_ops.upsample_nearest(x, y, kh, kw, 2)
    assert np.array_equal(y, x.repeat(kh, axis=1).repeat(kw, axis=2))
    with pytest.raises(ValueError, match="shape"):
        _f32_ops.upsample_nearest(x, np.empty((NC, H * kh + 1, W * kw), np.float32), kh, kw)


@pytest.mark.parametrize("NP,k0,k1,S0,S1", [(1, 1, 1, 1, 1), (24, 2, 2, 32, 32), (3, 3, 2, 5, 7),
                                            (2, 1, 3, 4, 4), (48, 2, 2, 64, 80)])
def test_depth_to_space_matches_numpy_transpose(NP, k0, k1, S0, S1):
    cols = np.random.default_rng(NP + S1).standard_normal((NP, k0 * k1, S0 * S1)).astype(np.float32)
    y = np.empty((NP, S0 * k0, S1 * k1), np.float32)
    _f32_ops.depth_to_space(cols, y, k0, k1, S0, S1, 2)
    ref = cols.reshape(NP, k0, k1, S0, S1).transpose(0, 3, 1, 4, 2).reshape(y.shape)
    assert np.array_equal(y, ref)


@pytest.mark.parametrize("NC,H,W,Ho,Wo", [(1, 1, 1, 1, 1), (96, 2, 10, 3, 20), (4, 7, 9, 3, 4),
                                          (3, 5, 6, 11, 13), (200, 4, 4, 8, 8)])
def test_resize_nearest_gathers_exactly(NC, H, W, Ho, Wo):
    """Any row / column index tables (repeated rows copied from the previous output row)."""
    rng = np.random.default_rng(NC + Ho)
    x = rng.standard_normal((NC, H, W)).astype(np.float32)
    hi = np.sort(rng.integers(0, H, Ho)).astype(np.int32)
    wi = rng.integers(0, W, Wo).astype(np.int32)
    y = np.empty((NC, Ho, Wo), np.float32)
    _f32_ops.resize_nearest(x, hi, wi, y, 2)
    assert np.array_equal(y, x[:, hi][:, :, wi])
    with pytest.raises(ValueError, match="range"):
        _f32_ops.resize_nearest(x, np.array([H], np.int32), wi, np.empty((NC, 1, Wo), np.float32))
    with pytest.raises(ValueError, match="shape"):
        _f32_ops.resize_nearest(x, hi, wi, np.empty((NC, Ho + 1, Wo), np.float32))


@pytest.mark.parametrize("NP,n", [(1, 1), (8, 7), (40, 256), (480, 16), (3, 1000003)])
def test_plane_mean(NP, n):
    x = (np.random.default_rng(n).standard_normal((NP, n)) + 3).astype(np.float32)
    y = np.empty(NP, np.float32)
    _f32_ops.plane_mean(x, y, 2)
    np.testing.assert_allclose(y, x.astype(np.float64).mean(1), rtol=2e-6, atol=1e-7)


def test_global_average_pool_and_sigmoid_fast_paths_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    import deepsparse_cy as ds
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Sigmoid", ["x"], ["s"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "gs"])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    e = ds.compile_model(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(1, 40, 16, 16), (2, 3, 5), (1, 1, 1, 1), (1, 8, 3, 4, 5)]:
        x = (np.random.default_rng(len(shape)).standard_normal(shape) * 20).astype(np.float32)
        for got, ref in zip(e.run([x]), sess.run(None, {"x": x})):
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 16, 8400), (3, 5, 7), (2, 1, 300), (1, 700, 513), (4, 3, 1)])
@pytest.mark.parametrize("avx2", [False, True])
def test_softmax_axis_middle(shape, avx2):
    if avx2 and kernels.kernel_isa() == "generic":
        pytest.skip("no AVX2 on this machine")
    x = (np.random.default_rng(shape[1]).standard_normal(shape) * 5).astype(np.float32)
    x[0, 0, 0] = -np.inf          # a -inf logit gets probability 0
    y = np.empty_like(x)
    was = _f32_fused.level()
    _f32_fused.set_avx2(avx2)
    try:
        _f32_fused.softmax_axis(x, y, 2)
    finally:
        _f32_fused.set_level(was)
    x64 = x.astype(np.float64)
    if shape[1] == 1:
        x64[0, 0, 0] = 0.0        # a lone -inf column is NaN in both; compare the rest
        y[0, 0, 0] = 1.0
    e = np.exp(x64 - x64.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("axis", [1, -1, 2])
def test_sigmoid_softmax_bound_in_plans(axis):
    """Sigmoid and (Log)Softmax steps bind in a plan (a YOLO head's class Sigmoid and DFL
    softmax ran through op.run on every call): bound after the first run, and the bound calls
    give numpy's values for new inputs (Sigmoid out of place in one pass, act_rows)."""
    from onnx import TensorProto as TP
    from onnx import helper

    import deepsparse_cy as ds
    nodes = [helper.make_node("Relu", ["x"], ["r"]),     # an arena value, not the feed
             helper.make_node("Sigmoid", ["r"], ["s"]),
             helper.make_node("Softmax", ["r"], ["sm"], axis=axis),
             helper.make_node("LogSoftmax", ["r"], ["lsm"], axis=axis),
             helper.make_node("Add", ["s", "sm"], ["a"]), helper.make_node("Add", ["a", "lsm"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2, 16, 4, 300])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    e = ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    rng = np.random.default_rng(axis + 5)
    for i in range(3):
        x = rng.standard_normal((2, 16, 4, 300)).astype(np.float32) * 4
        y = e.run([x])[0]
        r = np.maximum(x, 0).astype(np.float64)
        sm = np.exp(r - r.max(axis, keepdims=True))
        sm /= sm.sum(axis, keepdims=True)
        ref = 1 / (1 + np.exp(-r)) + sm + np.log(sm)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    plan = next(iter(e._plans.values()))
    inst = plan.acquire()
    plan.release(inst)
    bound = {st[0].op_type for b, st in zip(inst.bound, plan.steps) if b}
    assert {"Sigmoid", "Softmax"} <= bound, bound
    assert "LogSoftmax" in bound or axis % 4 != 3, bound
