"""Kernel fusions (graph/fusion.py -> ops/fast_quant.QGemm, ops/fast_sparse.SparseMatMul):
patterns matched, fused vs unfused graph, integer-exact single layers against numpy, and a
pruned + quantized BERT against onnxruntime on the same file."""
import collections

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import deepsparse_cy as ds
from deepsparse_cy.graph.fusion import recover_int8
from deepsparse_cy.kernels import kernel_builds

ort = pytest.importorskip("onnxruntime")


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ort_plain(m, feeds):
    """onnxruntime executing the QDQ ops as written (its optimized int8 path on AVX2 uses
    vpmaddubsw, whose int16 saturation its documentation warns about, so it is no oracle)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(engine):
    return collections.Counter(n.op_type for n, _ in engine._program.steps)


def _unfused(model, monkeypatch):
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_FUSION", "1")
        return ds.compile_model(model)


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def _sparse_s8(rng, k, n, sparsity, block4=False):
    w = rng.integers(-127, 128, size=(k, n)).astype(np.int8)
    if block4:
        kb = -(-k // 4)
        keep = rng.random((kb, n)) >= sparsity
        w = (w * np.repeat(keep, 4, axis=0)[:k]).astype(np.int8)
    else:
        w = (w * (rng.random((k, n)) >= sparsity)).astype(np.int8)
    return w


def _qdq_layer(rng, k, n, *, per_channel, x_dtype, sparsity, block4, tail):
    """x float -> Q -> DQ -> MatMul(DQ(W_q)) -> tail ('qdq_bias' = ORT's Q -> DQ -> Add(b),
    'bias_q' = Add(b) -> Q, 'q' = Q (u8 graph output), 'float' = nothing)."""
    wq = _sparse_s8(rng, k, n, sparsity, block4)
    sw = (rng.uniform(0.002, 0.02, n) if per_channel else np.float32(0.01)).astype(np.float32)
    zx = np.uint8(120) if x_dtype == "u8" else np.int8(-5)
    inits = [_init("sx", np.float32(0.05)), _init("zx", zx), _init("wq", wq), _init("sw", sw),
             _init("zw", np.zeros(n, np.int8) if per_channel else np.int8(0)),
             _init("sy", np.float32(0.4)), _init("zy", np.uint8(128)),
             _init("b", rng.standard_normal(n).astype(np.float32))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"])]
    out_t = TP.FLOAT
    if tail == "qdq_bias":
        nodes += [helper.make_node("QuantizeLinear", ["mm", "sy", "zy"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["yd"]),
                  helper.make_node("Add", ["yd", "b"], ["y"])]
    elif tail == "bias_q":
        nodes += [helper.make_node("Add", ["b", "mm"], ["mb"]),
                  helper.make_node("QuantizeLinear", ["mb", "sy", "zy"], ["y"])]
        out_t = TP.UINT8
    elif tail == "q":
        nodes += [helper.make_node("QuantizeLinear", ["mm", "sy", "zy"], ["y"])]
        out_t = TP.UINT8
    elif tail in ("qdq_bias_gelu_q", "bias_gelu_q"):
        # a quantized FFN's intermediate layer: [Q -> DQ ->] Add(b) -> GELU as torch exports it
        # (Div(sqrt 2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5)) -> Q for the next layer
        if tail == "qdq_bias_gelu_q":
            nodes += [helper.make_node("QuantizeLinear", ["mm", "sy", "zy"], ["yq"]),
                      helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["yd"]),
                      helper.make_node("Add", ["yd", "b"], ["g"])]
        else:
            nodes += [helper.make_node("Add", ["mm", "b"], ["g"])]
        inits += [_init("sqrt2", np.float32(2 ** 0.5)), _init("one", np.float32(1.0)),
                  _init("half", np.float32(0.5)), _init("s2", np.float32(0.03)),
                  _init("z2", np.uint8(10))]
        nodes += [helper.make_node("Div", ["g", "sqrt2"], ["g1"]),
                  helper.make_node("Erf", ["g1"], ["g2"]),
                  helper.make_node("Add", ["g2", "one"], ["g3"]),
                  helper.make_node("Mul", ["g", "g3"], ["g4"]),
                  helper.make_node("Mul", ["g4", "half"], ["g5"]),
                  helper.make_node("QuantizeLinear", ["g5", "s2", "z2"], ["y"])]
        out_t = TP.UINT8
    else:
        nodes += [helper.make_node("Identity", ["mm"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [2, 3, k])],
               [helper.make_tensor_value_info("y", out_t, None)], inits)
    return m, wq, sw, zx


# --- weight recovery --------------------------------------------------------------------------

@pytest.mark.parametrize("qmax,per_channel", [(127, True), (127, False), (128, True), (63, True)])
def test_recover_int8_exact(rng, qmax, per_channel):
    n, k = 24, 37
    q = rng.integers(-qmax, qmax + 1, size=(n, k)).astype(np.int8)
    q[:, 0] = qmax if qmax != 128 else -128        # the range endpoint is always present
    q[3] = 0                                       # a fully pruned row
    s = rng.uniform(1e-3, 1e-1, n).astype(np.float32) if per_channel else np.full(n, 0.02, np.float32)
    wf = (q.astype(np.float32) * s[:, None]).astype(np.float32)
    r = recover_int8(wf)
    assert r is not None
    qq, ss = r
    np.testing.assert_array_equal(qq, q)
    assert np.allclose(qq * ss[:, None], wf, rtol=1e-6, atol=0)


def test_recover_int8_rejects_float_weights(rng):
    assert recover_int8(rng.standard_normal((16, 40)).astype(np.float32)) is None


# --- QDQ MatMul: fused vs unfused, integer exact ----------------------------------------------

@pytest.mark.parametrize("tail", ["qdq_bias", "bias_q", "q", "float"])
@pytest.mark.parametrize("per_channel,x_dtype,sparsity,block4", [
    (True, "u8", 0.9, True), (False, "s8", 0.0, False), (True, "u8", 0.92, False),
    (True, "s8", 0.5, True)])
def test_qdq_matmul_fused_matches_unfused(rng, monkeypatch, tail, per_channel, x_dtype, sparsity,
                                          block4):
    k, n = 37, 40                                 # K not a multiple of 4, N not of 16
    m, *_ = _qdq_layer(rng, k, n, per_channel=per_channel, x_dtype=x_dtype, sparsity=sparsity,
                       block4=block4, tail=tail)
    x = (rng.standard_normal((2, 3, k)) * 2).astype(np.float32)
    for exact in ("1", "0"):
        # exact QDQ semantics is the default; DEEPSPARSE_CY_QDQ_FAST=1 drops the u8 round trip
        monkeypatch.setenv("DEEPSPARSE_CY_QDQ_FAST", "0" if exact == "1" else "1")
        e = ds.compile_model(m)
        assert _ops(e)["QGemm"] == 1 and "MatMul" not in _ops(e)
        got = e.run([x])[0]
        ref = _unfused(m, monkeypatch).run([x])[0]
        ort_ref = _ort_plain(m, {"x": x})[0]
        np.testing.assert_allclose(ref.astype(np.float64), ort_ref.astype(np.float64),
                                   atol=1 if ref.dtype == np.uint8 else 0.41, rtol=0)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        if ref.dtype == np.uint8:
            # float matmul in the unfused graph vs exact int32: at most a rounding tie apart
            assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
            assert np.mean(got != ref) < 0.02
        elif tail == "qdq_bias" and exact == "0":
            # the u8 round trip of the matmul output is dropped: within half a step of s_y
            np.testing.assert_allclose(got, ref, atol=0.2 + 1e-4, rtol=0)
        elif tail == "qdq_bias":
            np.testing.assert_allclose(got, ref, atol=0.4 + 1e-4, rtol=0)
            assert np.mean(np.abs(got - ref) > 1e-4) < 0.02
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("tail", ["qdq_bias_gelu_q", "bias_gelu_q"])
@pytest.mark.parametrize("sparsity,block4", [(0.0, False), (0.9, True), (0.92, False)])
def test_qdq_gelu_quantize_fused_into_epilogue(rng, monkeypatch, tail, sparsity, block4):
    """[Q -> DQ ->] Add -> GELU -> QuantizeLinear after a QDQ MatMul runs as one QGemm (GELU and
    both quantizations in the kernel's epilogue) and agrees with the unfused graph and with
    onnxruntime executing the file as written: at most one step apart where a value sits on a
    rounding boundary (the kernels' erf is a rational approximation)."""
    k, n = 150, 70
    m, *_ = _qdq_layer(rng, k, n, per_channel=True, x_dtype="u8", sparsity=sparsity,
                       block4=block4, tail=tail)
    x = (rng.standard_normal((2, 3, k)) * 2).astype(np.float32)
    e = ds.compile_model(m)
    ops = _ops(e)
    assert ops["QGemm"] == 1 and len(ops) == 2, ops       # the input's QuantizeLinear + QGemm
    got = e.run([x])[0]
    ref = _unfused(m, monkeypatch).run([x])[0]
    ort_ref = _ort_plain(m, {"x": x})[0]
    assert got.dtype == ref.dtype == np.uint8 and got.shape == ref.shape
    assert len(np.unique(ref)) > 20                        # GELU's curve, not a constant
    for r in (ref, ort_ref):
        d = np.abs(got.astype(int) - r.astype(int))
        assert d.max() <= 1 and np.mean(d > 0) < 0.02


@pytest.mark.parametrize("x_dtype", ["u8", "s8"])
def test_qdq_layer_integer_exact_vs_numpy(rng, x_dtype):
    k, n = 50, 33
    m, wq, sw, zx = _qdq_layer(rng, k, n, per_channel=True, x_dtype=x_dtype, sparsity=0.9,
                               block4=True, tail="q")
    x = (rng.standard_normal((2, 3, k)) * 2).astype(np.float32)
    e = ds.compile_model(m)
    assert _ops(e)["QGemm"] == 1
    got = e.run([x])[0]
    # numpy: quantize x like QuantizeLinear, exact integer accumulation, float32 requantization
    info = np.iinfo(zx.dtype)
    xq = np.clip(np.rint(x / np.float32(0.05)) + int(zx), info.min, info.max).astype(np.int64)
    acc = (xq.reshape(-1, k) - int(zx)) @ wq.astype(np.int64)
    assert np.abs(acc).max() < 2**31
    scale = (np.float64(np.float32(0.05)) * sw.astype(np.float64) / np.float64(np.float32(0.4)))
    f = acc.astype(np.float32) * scale.astype(np.float32)
    want = np.clip(np.rint(f.astype(np.float64)) + 128, 0, 255).astype(np.uint8).reshape(2, 3, n)
    np.testing.assert_array_equal(got, want)


def test_matmulinteger_int32_exact_and_float_tail(rng, monkeypatch):
    k, n = 67, 29
    b = _sparse_s8(rng, k, n, 0.9, block4=True)
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "za"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TP.FLOAT),
             helper.make_node("Mul", ["accf", "s"], ["yf"]),
             helper.make_node("Add", ["yf", "bias"], ["y"])]
    s = rng.uniform(1e-4, 1e-3, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    inits = [_init("b", b), _init("za", np.uint8(7)), _init("s", s), _init("bias", bias)]
    m = _model(nodes, [helper.make_tensor_value_info("a", TP.UINT8, [4, k])],
               [helper.make_tensor_value_info("y", TP.FLOAT, None),
                helper.make_tensor_value_info("acc", TP.INT32, None)], inits)
    a = rng.integers(0, 256, size=(4, k)).astype(np.uint8)
    e = ds.compile_model(m)
    # acc is a graph output, so the tail stays unfused and the int32 result is exact
    assert _ops(e)["QGemm"] == 1
    y, acc = e.run([a])
    want = (a.astype(np.int64) - 7) @ b.astype(np.int64)
    np.testing.assert_array_equal(acc, want)
    ref = _unfused(m, monkeypatch).run([a])[0]
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    # without the int32 output the whole Cast -> Mul -> Add tail folds into the kernel epilogue
    m2 = _model(nodes, m.graph.input, [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    e2 = ds.compile_model(m2)
    assert set(_ops(e2)) == {"QGemm"}
    # the float bias rides in the int32 accumulator: rounded to half an accumulator unit, s / 2
    err = np.abs(e2.run([a])[0] - ref)
    assert (err <= 0.5 * s + 1e-6 * np.abs(ref).max()).all()


def test_qlinearmatmul_exact_vs_numpy(rng, monkeypatch):
    k, n = 45, 18
    b = _sparse_s8(rng, k, n, 0.0)
    sb = rng.uniform(0.005, 0.02, n).astype(np.float32)
    inits = [_init("sa", np.float32(0.03)), _init("za", np.uint8(100)), _init("b", b),
             _init("sb", sb), _init("zb", np.zeros(n, np.int8)), _init("sy", np.float32(0.2)),
             _init("zy", np.uint8(131))]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    m = _model([node], [helper.make_tensor_value_info("a", TP.UINT8, [3, 5, k])],
               [helper.make_tensor_value_info("y", TP.UINT8, None)], inits, opset=20)
    a = rng.integers(0, 256, size=(3, 5, k)).astype(np.uint8)
    e = ds.compile_model(m)
    assert set(_ops(e)) == {"QGemm"}
    got = e.run([a])[0]
    acc = (a.reshape(-1, k).astype(np.int64) - 100) @ b.astype(np.int64)
    scale = (np.float64(np.float32(0.03)) * sb.astype(np.float64) / np.float64(np.float32(0.2)))
    f = acc.astype(np.float32) * scale.astype(np.float32)
    want = np.clip(np.rint(f.astype(np.float64)) + 131, 0, 255).astype(np.uint8).reshape(3, 5, n)
    np.testing.assert_array_equal(got, want)
    ref = _unfused(m, monkeypatch).run([a])[0]
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_onnxruntime_qlinearmatmul_saturates_on_avx2(rng, monkeypatch):
    """Why the tests use onnxruntime's plain execution as the oracle: its u8 x s8 GEMM on AVX2
    (vpmaddubsw) saturates pairs of products to int16 with full-range s8 weights, while 7-bit
    weights (quantize_static's reduce_range) stay exact. Documents the machine, not our code."""
    k, n = 64, 16
    a = rng.integers(0, 256, size=(8, k)).astype(np.uint8)
    for lim, exact in ((127, False), (63, True)):
        b = rng.integers(-lim, lim + 1, size=(k, n)).astype(np.int8)
        inits = [_init("sa", np.float32(0.03)), _init("za", np.uint8(0)), _init("b", b),
                 _init("sb", np.float32(0.01)), _init("zb", np.int8(0)),
                 _init("sy", np.float32(2.0)), _init("zy", np.uint8(128))]
        node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
                                ["y"])
        m = _model([node], [helper.make_tensor_value_info("a", TP.UINT8, [8, k])],
                   [helper.make_tensor_value_info("y", TP.UINT8, None)], inits, opset=20)
        got = ds.compile_model(m).run([a])[0]
        ort_y = ort.InferenceSession(m.SerializeToString(),
                                     providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
        d = np.abs(got.astype(int) - ort_y.astype(int)).max()
        if ds.cpu_features().get("avx2") and not ds.cpu_features().get("avx512_vnni") \
                and not ds.cpu_features().get("avx_vnni"):
            assert (d <= 1) == exact, d


def test_fake_quant_float_weight_and_gemm_transb(rng, monkeypatch):
    """PyTorch/SparseML fake-quant: float W -> QuantizeLinear -> DequantizeLinear (folded to a
    float constant), on Gemm(transB=1) with a bias C."""
    k, n = 64, 24
    wf = rng.standard_normal((n, k)).astype(np.float32)
    wf[rng.random((n, k)) < 0.9] = 0
    sw = (np.abs(wf).max(1) / 127).astype(np.float32)
    inits = [_init("sx", np.float32(0.05)), _init("zx", np.uint8(128)), _init("w", wf),
             _init("sw", sw), _init("zw", np.zeros(n, np.int8)),
             _init("c", rng.standard_normal(n).astype(np.float32))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("QuantizeLinear", ["w", "sw", "zw"], ["wq"], axis=0),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Gemm", ["xd", "wd", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [7, k])],
               [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    x = rng.standard_normal((7, k)).astype(np.float32)
    e = ds.compile_model(m)
    assert _ops(e)["QGemm"] == 1 and "Gemm" not in _ops(e)
    ref = _unfused(m, monkeypatch).run([x])[0]
    # bias in the int32 accumulator: within half an accumulator unit (alpha * s_x * s_w / 2)
    err = np.abs(e.run([x])[0] - ref)
    assert (err <= 0.5 * 0.5 * np.float32(0.05) * sw + 1e-5 * np.abs(ref).max()).all()


# --- sparse FP32 ------------------------------------------------------------------------------

@pytest.mark.parametrize("sparsity,fused", [(0.9, True), (0.75, True), (0.3, False)])
def test_sparse_f32_matmul_bias(rng, monkeypatch, sparsity, fused):
    k, n = 70, 45
    w = rng.standard_normal((k, n)).astype(np.float32)
    w[rng.random((k, n)) < sparsity] = 0
    b = rng.standard_normal(n).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [2, 9, k])],
               [helper.make_tensor_value_info("y", TP.FLOAT, None)], [_init("w", w), _init("b", b)])
    x = rng.standard_normal((2, 9, k)).astype(np.float32)
    e = ds.compile_model(m)
    assert (set(_ops(e)) == {"SparseMatMul"}) == fused
    got = e.run([x])[0]
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-4, atol=1e-4)
    if fused:
        op = e._program.steps[0][1]
        assert op.kernel_name == "f32_spmm" and op.kernel_isa == kernel_builds()["f32_spmm"]
        dense = op.run_dense([x], None)[0]
        np.testing.assert_allclose(dense, got, rtol=1e-4, atol=1e-4)
        assert op.flops == 2 * 18 * k * n


def test_sparse_f32_matmul_gelu_fused(rng, monkeypatch):
    """MatMul -> Add(bias) -> GELU (torch's Erf form) on a 90% sparse weight: one SparseMatMul
    with the GELU in its epilogue, agreeing with the unfused graph and onnxruntime."""
    k, n = 96, 130
    w = rng.standard_normal((k, n)).astype(np.float32)
    w[rng.random((k, n)) < 0.9] = 0
    b = rng.standard_normal(n).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["g"]),
             helper.make_node("Div", ["g", "sqrt2"], ["g1"]), helper.make_node("Erf", ["g1"], ["g2"]),
             helper.make_node("Add", ["g2", "one"], ["g3"]), helper.make_node("Mul", ["g", "g3"], ["g4"]),
             helper.make_node("Mul", ["g4", "half"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["b", "s", k])],
               [helper.make_tensor_value_info("y", TP.FLOAT, None)],
               [_init("w", w), _init("b", b), _init("sqrt2", np.float32(2 ** 0.5)),
                _init("one", np.float32(1.0)), _init("half", np.float32(0.5))])
    e = ds.compile_model(m)
    assert set(_ops(e)) == {"SparseMatMul"}
    u = _unfused(m, monkeypatch)
    for shape in ((1, 1, k), (2, 33, k), (1, 128, k)):
        x = (rng.standard_normal(shape) * 1.5).astype(np.float32)
        got = e.run([x])[0]
        for ref in (u.run([x])[0], _ort_plain(m, {"x": x})[0]):
            np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())
    op = e._program.steps[0][1]
    np.testing.assert_allclose(op.run_dense([x], None)[0], got, rtol=1e-4, atol=1e-4)


@pytest.fixture
def vnni_costs(monkeypatch):
    """The format chooser as without AMX: the amx build's dense GEMM is weighed
    COST_AMX_GAIN times faster and small layers like these (K = 96..128) pack dense; these tests are about the sparse kernel
    inside a graph (the dense path has its own)."""
    monkeypatch.setattr(ds.kernels.qs8, "COST_AMX_GAIN", 1.0)


def _block4_qgemm(rng, k=96, n=64):
    """A 90% block4 QDQ layer compiled: (engine, its QGemm op, a float input [2, 3, k])."""
    m, *_ = _qdq_layer(rng, k, n, per_channel=True, x_dtype="u8", sparsity=0.9, block4=True,
                       tail="q")
    e = ds.compile_model(m)
    op = [op for n_, op in e._program.steps if n_.op_type == "QGemm"][0]
    return e, op, rng.standard_normal((2, 3, k)).astype(np.float32)


def test_qgemm_profile_fields_and_run_dense(rng, vnni_costs):
    k, n = 96, 64
    e, op, x = _block4_qgemm(rng, k, n)
    assert op.kernel_name == "qs8_spmm_block4"
    got = e.run([x])[0]
    recs = e.profile([x], iterations=1)
    rec = [r for r in recs if r["op_type"] == "QGemm"][0]
    assert rec["kernel"] == "qs8_spmm_block4" and rec["flops"] == 2 * 6 * k * n
    assert "speedup" in rec and rec["weight_sparsity"] >= 0.85
    xq = np.clip(np.rint(x / np.float32(0.05)) + 120, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(op.run_dense([xq], None)[0], got)


def test_profile_dense_baseline_excludes_packing_the_dense_twin(rng, vnni_costs):
    """The dense twin is packed on its first run_dense call; the profile must not time that
    (with iterations=1 the packing was the whole dense time: a 16x 'speedup' on BERT)."""
    import time
    e, op, x = _block4_qgemm(rng)
    calls = []
    real = op.run_dense

    def slow_first(ins, outs):           # stands in for a first call that packs
        if not calls:
            time.sleep(0.2)
        calls.append(1)
        return real(ins, outs)

    op.run_dense = slow_first
    rec = [r for r in e.profile([x], iterations=1) if r["op_type"] == "QGemm"][0]
    assert len(calls) == 2 and rec["dense_ms"] < 100


def test_profile_times_bound_steps_and_compares_speedup_through_run(rng, vnni_costs):
    """A step a normal run makes as a bound kernel call is timed as that call (bound True);
    the speedup compares the dense twin with the step's own op.run, both into new arrays."""
    import time
    e, op, x = _block4_qgemm(rng)
    e.run([x])
    runs, dense = [], []
    real_run, real_dense = op.run, op.run_dense

    def slow_run(ins, outs):             # only the speedup's op.run call may come here
        runs.append(outs)
        time.sleep(0.05)
        return real_run(ins, outs)

    def counted_dense(ins, outs):
        dense.append(outs)
        return real_dense(ins, outs)

    op.run, op.run_dense = slow_run, counted_dense
    rec = [r for r in e.profile([x], iterations=2) if r["op_type"] == "QGemm"][0]
    assert rec["bound"] is True
    assert rec["time_ms"] < 40                       # the bound call, not slow_run
    # the warm-up run may still call op.run into the step's slots; the profile's own op.run
    # calls (one per iteration, for the speedup) go into new arrays
    assert [o for o in runs if o is None] == [None, None] and dense == [None, None, None]
    assert rec["speedup"] < rec["dense_ms"] / 45     # dense over op.run's >= 50 ms
    op.run, op.run_dense = real_run, real_dense


def test_profile_of_a_fresh_engine_times_the_bound_calls(rng, vnni_costs):
    """The CLI profiles an engine that never ran: the shape's first run builds the plan without
    binding a step, so warm-up must run the plan again before timing (with warmup=1 every
    step went through op.run: a quantized YOLOv8n profiled at 3x its run time)."""
    import time
    e, op, x = _block4_qgemm(rng)
    real_run = op.run
    runs = []

    def slow_run(ins, outs):             # the plan build's and the binding run's calls
        runs.append(outs)
        time.sleep(0.05)
        return real_run(ins, outs)

    op.run = slow_run
    recs = e.profile([x], iterations=3, warmup=1, dense_baseline=False)
    rec = [r for r in recs if r["op_type"] == "QGemm"][0]
    assert rec["bound"] is True and rec["time_ms"] < 40
    assert len(runs) == 2                 # the plan build and the run that binds; none timed
    op.run = real_run


def test_profile_summary_scales_the_dense_twin_by_the_like_for_like_ratio():
    """summarize: a layer's dense time is its (bound) time x the measured dense / op.run ratio,
    and the totals add those, not the twin's raw op.run time."""
    from deepsparse_cy.tools.profile import format_profile, summarize
    recs = [{"index": 0, "name": "a", "op_type": "QGemm", "time_ms": 1.0, "dense_ms": 9.0,
             "speedup": 3.0},
            {"index": 1, "name": "b", "op_type": "LayerNorm", "time_ms": 0.5}]
    p = summarize(recs)
    assert p["nodes"][0]["dense_equiv_ms"] == pytest.approx(3.0)
    assert p["nodes"][0]["dense_ms"] == 9.0                 # the raw twin time stays in the JSON
    assert p["dense_total_ms"] == pytest.approx(3.5) and p["total_ms"] == pytest.approx(1.5)
    assert p["sparsity_speedup"] == pytest.approx(3.5 / 1.5)
    by = {s["op_type"]: s for s in p["by_op_type"]}
    assert by["QGemm"]["dense_ms"] == pytest.approx(3.0) and by["QGemm"]["speedup"] == 3.0
    assert by["LayerNorm"]["speedup"] is None and p["layers_with_dense_baseline"] == 1
    text = format_profile(p)
    assert "   3.000   3.00x" in text and "2.33x" in text


# --- a small pruned + quantized BERT against onnxruntime ---------------------------------------

def _cmp(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return cos, float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def tiny_bert_q():
    from deepsparse_cy import zoo
    from deepsparse_cy.zoo.bert import BERT_TINY, build_bert
    m = build_bert(BERT_TINY, name="bert-tiny")
    m, _ = zoo.prune_model(m, 0.9, "block4")
    q = zoo.quantize_model(m, seq=128, per_channel=True)
    return q, zoo.example_inputs(q, batch=1, seq=128, seed=3)


@pytest.fixture(scope="module")
def tiny_bert_q_dense():
    from deepsparse_cy import zoo
    from deepsparse_cy.zoo.bert import BERT_TINY, build_bert
    q = zoo.quantize_model(build_bert(BERT_TINY, name="bert-tiny"), seq=128, per_channel=True)
    return q, zoo.example_inputs(q, batch=1, seq=128, seed=3)


@pytest.mark.parametrize("which", ["dense", "block4"])
def test_qgemm_group_equals_separate_layers(which, tiny_bert_q, tiny_bert_q_dense, monkeypatch):
    """Q, K and V read the same activations: one QGemmGroup per encoder layer, run as one GEMM
    over the stacked weights where the three go to one format (dense, or block4 90% here), else
    as the three layers in turn. Either way the outputs equal the ungrouped graph's bit for bit,
    and agree with onnxruntime."""
    q, feeds = tiny_bert_q_dense if which == "dense" else tiny_bert_q
    e = ds.compile_model(q)
    x = [feeds[nm] for nm in e.input_names]
    groups = [op for n, op in e._program.steps if n.op_type == "QGemmGroup"]
    assert len(groups) == 2 and all(len(g.node.outputs) == 3 for g in groups)
    got = [e.run(x) for _ in range(2)]          # the second run: the bound calls
    monkeypatch.setenv("DEEPSPARSE_CY_NO_QGEMM_GROUP", "1")
    e2 = ds.compile_model(q)
    assert "QGemmGroup" not in _ops(e2) and _ops(e2)["QGemm"] == 12
    # the separate layers' formats decide: one format for all three -> one call
    fmts = [op.weight_format for n, op in e2._program.steps if n.op_type == "QGemm"]
    for i, g in enumerate(groups):
        layer = fmts[6 * i:6 * i + 3]
        if len(set(layer)) == 1:
            assert g.fused is not None and g.weight_format == layer[0]
            assert g.kernel_name == {"dense": "qs8_gemm", "block4": "qs8_spmm_block4"}[layer[0]]
        else:
            assert g.fused is None and g.weight_format == "+".join(layer)
    if which == "dense":
        assert all(g.fused is not None and g.kernel_name == "qs8_gemm" for g in groups)
    else:
        assert any(g.fused is not None and g.kernel_name == "qs8_spmm_block4" for g in groups)
    ref = e2.run(x)
    for run in got:
        for g, r in zip(run, ref):
            np.testing.assert_array_equal(g, r)
    for g, r in zip(got[-1], _ort_plain(q, feeds)):
        cos, rel = _cmp(g, r)
        assert cos >= 0.995 and rel <= 0.10, (cos, rel)
    rec = [r for r in e.profile(x, iterations=1) if r["op_type"] == "QGemmGroup"][0]
    g = groups[0]
    assert rec["kernel"] == g.kernel_name and rec["flops"] == 2 * 128 * g.k * g.n * 3
    assert rec["weight_shape"] == [g.k, 3 * g.n] and rec["dense_ms"] > 0
    # the profiler's dense twin computes the same outputs
    xq = np.random.default_rng(0).integers(0, 256, (1, 128, g.k), dtype=np.uint8)
    for grp in groups:
        for a, b in zip(grp.run([xq], None), grp.run_dense([xq], None)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("which", ["dense", "block4"])
def test_qgemm_group_dynamic_shapes(which, tiny_bert_q, tiny_bert_q_dense, monkeypatch):
    """One compiled engine, several input shapes (plans per shape; batch 2 makes M = 2 * seq,
    seq 7 an M below one 16-token tile): the grouped layers give the ungrouped graph's outputs
    bit for bit at each."""
    from deepsparse_cy import zoo
    q, _ = tiny_bert_q_dense if which == "dense" else tiny_bert_q
    e = ds.compile_model(q)
    monkeypatch.setenv("DEEPSPARSE_CY_NO_QGEMM_GROUP", "1")
    e2 = ds.compile_model(q)
    assert "QGemmGroup" in _ops(e) and "QGemmGroup" not in _ops(e2)
    for batch, seq in [(1, 64), (2, 128), (1, 7), (3, 33), (1, 64)]:
        feeds = zoo.example_inputs(q, batch=batch, seq=seq, seed=batch * 100 + seq)
        x = [feeds[nm] for nm in e.input_names]
        for _ in range(2):                      # the second run on the bound plan
            got = e.run(x)
        for g, r in zip(got, e2.run(x)):
            assert g.shape[:2] == (batch, seq)
            np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("which", ["dense", "block4"])
@pytest.mark.parametrize("path", ["kernel", "numpy", "bf16", "no_group"])
def test_attention_reads_qkv_bytes(which, path, tiny_bert_q, tiny_bert_q_dense, monkeypatch):
    """_attention_8bit_inputs: every attention reads its Q, K and V layers' 8-bit values (the
    layers in mode requant, the attention with in_deq) and dequantizes them itself. The outputs
    equal the graph without the rewrite (DEEPSPARSE_CY_NO_ATTENTION_8BIT_INPUTS=1) bit for bit,
    at several shapes from one compile, on the compiled kernel (dequantizing as it packs), the
    numpy path (the kernel gone after compiling: dequantized by numpy first), bf16 attention,
    and with Q, K and V as separate QGemm layers. Where no compiled attention runs, the rewrite
    is not made (numpy would add a dequantizing pass)."""
    import deepsparse_cy.ops.fast_fused as ff
    q, _ = tiny_bert_q_dense if which == "dense" else tiny_bert_q
    if ff._ATTN is None:
        pytest.skip("no compiled attention kernel at this level (the rewrite is not made)")
    if path == "bf16":
        if ff._ATTN_BF16 is None:
            pytest.skip("no f32_attn amx build at this level (AMX-BF16)")
        monkeypatch.setenv("DEEPSPARSE_CY_BF16_ATTENTION", "1")
    elif path == "no_group":
        monkeypatch.setenv("DEEPSPARSE_CY_NO_QGEMM_GROUP", "1")
    e = ds.compile_model(q)
    atts = [op for n, op in e._program.steps if n.op_type == "FusedAttention"]
    assert len(atts) == 2 and all(
        op.deq is not None and all(d is not None for d in op.deq) for op in atts)
    layers = [op for n, op in e._program.steps if n.op_type in ("QGemm", "QGemmGroup")]
    if path == "no_group":
        # Q, K, V of both layers (and the output projections and layer 0's second FFN layer,
        # read by their LayerNorm: _layernorm_8bit_input)
        assert sum(op.mode == "requant" for op in layers) == 6 + 3
    else:
        groups = [op for op in layers if op.node.op_type == "QGemmGroup"]
        assert len(groups) == 2 and all(g.out_dtypes == [np.dtype(np.uint8)] * 3 for g in groups)
    monkeypatch.setenv("DEEPSPARSE_CY_NO_ATTENTION_8BIT_INPUTS", "1")
    e2 = ds.compile_model(q)
    assert all(op.deq is None for n, op in e2._program.steps if n.op_type == "FusedAttention")
    if path == "numpy":      # after compiling: the rewritten graph on the numpy path
        monkeypatch.setattr(ff, "_ATTN", None)
    _same_outputs(e, e2, q, [(1, 128), (2, 64), (1, 7), (3, 33)])


def _same_outputs(e, e2, q, shapes):
    """e's outputs equal e2's bit for bit at each (batch, seq), e's second run on its bound
    plan."""
    from deepsparse_cy import zoo
    for batch, seq in shapes:
        feeds = zoo.example_inputs(q, batch=batch, seq=seq, seed=batch * 10 + seq)
        x = [feeds[nm] for nm in e.input_names]
        for _ in range(2):
            got = e.run(x)
        for g, r in zip(got, e2.run(x)):
            np.testing.assert_array_equal(g, r)


def _same_outputs_at(e, e2, q, level, shapes=((1, 128), (2, 64), (1, 7))):
    """_same_outputs with the row kernels of `level` in _f32_fused / _f32_ops (None: this
    machine's; 1 the AVX2 rows, 0 the baseline), the levels restored after."""
    from deepsparse_cy.kernels import _f32_fused, _f32_ops
    was = (_f32_fused.level(), _f32_ops.level())
    try:
        if level is not None:
            _f32_fused.set_level(level)
            _f32_ops.set_level(level)
        _same_outputs(e, e2, q, list(shapes))
    finally:
        _f32_fused.set_level(was[0])
        _f32_ops.set_level(was[1])


def test_attention_8bit_inputs_need_the_compiled_attention(tiny_bert_q, monkeypatch):
    """Without a compiled attention (the generic level) the Q/K/V layers keep their float
    outputs: the numpy path would dequantize in a pass of its own."""
    import deepsparse_cy.ops.fast_fused as ff
    monkeypatch.setattr(ff, "_ATTN", None)
    e = ds.compile_model(tiny_bert_q[0])
    assert all(op.deq is None for n, op in e._program.steps if n.op_type == "FusedAttention")
    groups = [op for n, op in e._program.steps if n.op_type == "QGemmGroup"]
    assert len(groups) == 2 and all(dt == np.float32 for g in groups for dt in g.out_dtypes)


def test_attention_8bit_inputs_other_layouts(tiny_bert_q):
    """An 8-bit input whose heads are not the kernel's layout (rows of a wider buffer here) is
    dequantized by numpy first (the kernel's float32 steps, channels in the QGemm's order):
    the same output as the kernel dequantizing the contiguous bytes."""
    import deepsparse_cy.ops.fast_fused as ff
    if ff._ATTN is None:
        pytest.skip("no compiled attention kernel at this level")
    q, _ = tiny_bert_q
    e = ds.compile_model(q)
    op = next(op for n, op in e._program.steps if n.op_type == "FusedAttention")
    n = op.deq[0][2].shape[0]
    H, D = 2, n // 2
    rng = np.random.default_rng(1)
    xs = [rng.integers(0, 256, (2, 9, H, D), dtype=np.uint8) for _ in range(3)]
    mask = np.where(rng.random((2, 1, 1, 9)) < 0.3, -10000.0, 0.0).astype(np.float32)
    ref = op.run(xs + [mask], None)[0]
    wide = []
    for x in xs:
        buf = np.zeros((2, 9, H, D + 5), np.uint8)
        buf[..., 2:D + 2] = x
        wide.append(buf[..., 2:D + 2])
    assert op._deq_inputs(tuple(wide))[3] is None       # all three dequantized by numpy
    np.testing.assert_array_equal(op.run(wide + [mask], None)[0], ref)
    with pytest.raises(Exception):
        op.run([x.astype(np.float32) for x in xs] + [mask], None)


@pytest.mark.parametrize("which", ["dense", "block4"])
@pytest.mark.parametrize("level", [None, 1, 0])
def test_layernorm_reads_8bit_input(which, level, tiny_bert_q, tiny_bert_q_dense, monkeypatch):
    """_layernorm_8bit_input: the output projection's and the second FFN layer's 8-bit values
    go to their quantized LayerNorm (the layers in mode requant, the LayerNorm with x_deq),
    which dequantizes each row itself: outputs equal to the graph without the rewrite
    (DEEPSPARSE_CY_NO_LAYERNORM_8BIT_INPUT=1) bit for bit at several shapes, with the zmm row
    (default here), the AVX2 and the baseline rows (level 1, 0: a scratch row first)."""
    q, _ = tiny_bert_q_dense if which == "dense" else tiny_bert_q
    e = ds.compile_model(q)
    lns = [op for n, op in e._program.steps if n.op_type == "LayerNorm"]
    # the embeddings' LayerNorm reads a Gather sum, the last one feeds the float output
    assert sum(op.xdeq is not None for op in lns) == len(lns) - 2 == 3
    assert sum(op.mode == "requant" for n, op in e._program.steps if n.op_type == "QGemm") == 3
    monkeypatch.setenv("DEEPSPARSE_CY_NO_LAYERNORM_8BIT_INPUT", "1")
    e2 = ds.compile_model(q)
    assert all(op.xdeq is None for n, op in e2._program.steps if n.op_type == "LayerNorm")
    _same_outputs_at(e, e2, q, level)


def _ln_layouts_case(tiny_bert_q, has, seed):
    """(op, rng, x8, x8 as a strided view, x8's floats, gamma, beta) for the LayerNorm layout
    tests: the tiny BERT's first LayerNorm op with attribute `has` (its 8-bit x's dequantization
    numpy's float32 steps, as the QGemm's mid step makes them)."""
    q, _ = tiny_bert_q
    e = ds.compile_model(q)
    op = next(op for n, op in e._program.steps
              if n.op_type == "LayerNorm" and getattr(op, has) is not None)
    n = op.xdeq[2].shape[0]
    rng = np.random.default_rng(seed)
    x8 = rng.integers(0, 256, (2, 5, n), dtype=np.uint8)
    wide = np.zeros((2, 5, n + 3), np.uint8)
    wide[..., 1:n + 1] = x8
    xf = (x8.astype(np.float32) - np.float32(op.xdeq[1])) * np.float32(op.xdeq[0]) + op.xdeq[2]
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32)
    return op, rng, x8, wide[..., 1:n + 1], xf, g, b


def _equal_outputs(got, ref):
    for a, r in zip(got, ref):
        np.testing.assert_array_equal(a, r)


def test_layernorm_8bit_input_other_layouts(tiny_bert_q):
    """An 8-bit x the kernel does not take as it is (a strided view here, or a skip that
    broadcasts) is dequantized by numpy first, in the kernel's float32 steps: the same outputs."""
    op, rng, x8, strided, xf, g, b = _ln_layouts_case(tiny_bert_q, "xdeq", 3)
    skip = rng.standard_normal(x8.shape).astype(np.float32)
    ref = op.run([x8, skip, g, b], None)
    _equal_outputs(op.run([strided, skip, g, b], None), ref)
    # a skip broadcast over the rows: numpy adds it to the floats first, as the float graph did
    sk1 = skip[:1, :1]
    _equal_outputs(op.run([x8, sk1, g, b], None), op.run([np.add(xf, sk1), None, g, b], None))


@pytest.mark.parametrize("which", ["dense", "block4"])
@pytest.mark.parametrize("level", [None, 1, 0])
def test_layernorm_reads_8bit_skip(which, level, tiny_bert_q, tiny_bert_q_dense, monkeypatch):
    """_layernorm_8bit_skip: a quantized LayerNorm whose skip is another quantized LayerNorm's
    dequantized output reads that LayerNorm's bytes (attr skip_deq), and the producer drops its
    float output where nothing else reads it (the exporter's Shape reads the bytes instead):
    outputs equal to the graph without the rewrite (DEEPSPARSE_CY_NO_LAYERNORM_8BIT_SKIP=1) bit
    for bit at several shapes, with the zmm row (default here), the AVX2 and the baseline rows
    (level 1, 0: scratch rows first), every LayerNorm step bound (run through its kernel)."""
    q, _ = tiny_bert_q_dense if which == "dense" else tiny_bert_q
    e = ds.compile_model(q)
    steps = e._program.steps
    lns = [(n, op) for n, op in steps if n.op_type == "LayerNorm"]
    # 2 layers: layer 0's two LayerNorms and layer 1's first read 8-bit skips; the last one
    # (the float graph output) reads no 8-bit x
    assert sum(op.sdeq is not None for n, op in lns) == 3
    # the embeddings' and layer 0's LayerNorms write bytes only; layer 1's first keeps its
    # floats for the last one (no x_deq there)
    assert [len(n.outputs) for n, op in lns] == [1, 1, 1, 2, 1]
    assert not any(op.dq_out for n, op in lns[:3])
    monkeypatch.setenv("DEEPSPARSE_CY_NO_LAYERNORM_8BIT_SKIP", "1")
    e2 = ds.compile_model(q)
    assert all(op.sdeq is None for n, op in e2._program.steps if n.op_type == "LayerNorm")
    _same_outputs_at(e, e2, q, level)
    plan = next(iter(e._plans.values()))
    inst = plan.acquire()
    plan.release(inst)
    assert all(inst.bound[i] for i, st in enumerate(plan.steps)
               if st[0].op_type == "LayerNorm" and st[1].sdeq is not None)


def test_layernorm_8bit_skip_other_layouts(tiny_bert_q):
    """An 8-bit skip the kernel does not take as it is (x given as floats, a strided x, a
    broadcasting skip) is dequantized by numpy first, in the DequantizeLinear's float32 steps:
    the same outputs as with the float skip."""
    op, rng, x8, strided, xf, g, b = _ln_layouts_case(tiny_bert_q, "sdeq", 5)
    s8 = rng.integers(0, 256, x8.shape, dtype=np.uint8)
    sf = (s8.astype(np.float32) - np.float32(op.sdeq[1])) * np.float32(op.sdeq[0])
    ref = op.run([x8, sf, g, b], None)
    _equal_outputs(op.run([x8, s8, g, b], None), ref)
    _equal_outputs(op.run([strided, s8, g, b], None), ref)
    _equal_outputs(op.run([xf, s8, g, b], None), ref)
    _equal_outputs(op.run([x8, s8[:1, :1], g, b], None), op.run([x8, sf[:1, :1], g, b], None))
    with pytest.raises(Exception, match="8-bit values of a quantized LayerNorm"):
        op.run([x8, s8.astype(np.int32), g, b], None)


def _qgemm_layer_kernels(e):
    """The kernel of every int8 weight layer: each QGemm, and each part of a QGemmGroup (its
    fused dense kernel once per part; unfused parts' kernels joined by '+')."""
    kinds = []
    for n, op in e._program.steps:
        if n.op_type == "QGemm":
            kinds.append(op.kernel_name)
        elif n.op_type == "QGemmGroup":
            names = op.kernel_name.split("+")
            kinds += names if len(names) == len(n.outputs) else names * len(n.outputs)
    return kinds


@pytest.mark.parametrize("ort_level", ["disable_all", "enable_all"])
def test_tiny_bert_block4_quant_vs_onnxruntime(tiny_bert_q, ort_level, vnni_costs):
    q, feeds = tiny_bert_q
    e = ds.compile_model(q)
    ops = _ops(e)
    # every weight MatMul (6 per layer) runs on the int8 kernels, attention MatMuls stay float
    # (the FP32 attention fusion runs the two attention MatMuls of a layer as one FusedAttention)
    # (Q, K and V read the same activations: a QGemmGroup of three layers per encoder layer)
    kinds = _qgemm_layer_kernels(e)
    assert len(kinds) == 12 and ops["MatMul"] + 2 * ops["FusedAttention"] == 4
    assert ops.get("QGemmGroup", 0) == 2
    assert collections.Counter(kinds)["qs8_spmm_block4"] >= 10
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if ort_level == "disable_all"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    ref = ort.InferenceSession(q.SerializeToString(), so,
                               providers=["CPUExecutionProvider"]).run(None, feeds)
    got = e.run([feeds[nm] for nm in e.input_names])
    plain = _ort_plain(q, feeds)
    for g, r, p in zip(got, ref, plain):
        cos, rel = _cmp(g, r)
        assert cos >= 0.995, cos
        if ort_level == "disable_all":
            assert rel <= 0.10, rel
        else:
            # onnxruntime's optimized int8 path (vpmaddubsw on AVX2, int16 saturation) is itself
            # 9-14% of max |output| away from its own plain execution of this file (measured);
            # the bar here: no farther from it than onnxruntime's plain execution is
            ort_self = _cmp(p, r)[1]
            assert rel <= max(0.10, ort_self + 0.01), (rel, ort_self)
