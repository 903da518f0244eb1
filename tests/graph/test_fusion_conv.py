"""Quantized convolution fusion (graph/fusion_conv.py -> ops/fast_qconv.QConv): integer-exact
single layers against numpy for every conv shape class (1x1, 3x3 s1/s2 padded, 7x7 s2, groups,
depthwise, dilation, batch 2), QDQ tails fused vs unfused, QLinearConv, and small pruned + quantized
ResNet / MobileNetV2 models against onnxruntime on the same file."""
import collections

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import deepsparse_cy as ds
import deepsparse_cy.kernels as K

ort = pytest.importorskip("onnxruntime")

# (name, batch, cin, cout, hw, kernel, stride, pads, dilation, group)
SHAPES = [
    ("1x1", 1, 16, 24, 9, 1, 1, 0, 1, 1),
    ("1x1_s2", 1, 12, 20, 9, 1, 2, 0, 1, 1),
    ("3x3_s1_pad", 1, 16, 32, 10, 3, 1, 1, 1, 1),
    ("3x3_s2_pad", 1, 13, 18, 11, 3, 2, 1, 1, 1),
    ("7x7_s2_pad3", 1, 3, 16, 20, 7, 2, 3, 1, 1),
    ("groups4", 1, 16, 24, 8, 3, 1, 1, 1, 4),
    ("depthwise", 1, 24, 24, 9, 3, 1, 1, 1, 24),
    ("depthwise_s2_mult2", 1, 8, 16, 9, 3, 2, 1, 1, 8),
    ("depthwise_5x5_s2_dil2_b2", 2, 16, 16, 13, 5, 2, 4, 2, 16),
    ("dilation2", 1, 8, 12, 12, 3, 1, 2, 2, 1),
    ("batch2_3x3", 2, 16, 16, 7, 3, 1, 1, 1, 1),
    ("batch2_asym_pad", 2, 8, 8, 7, 3, 1, (0, 1, 2, 1), 1, 1),
]


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def _steps(engine):
    return [(n, op) for n, op in engine._program.steps]


def _ops(engine):
    return collections.Counter(n.op_type for n, _ in _steps(engine))


def _pads(p):
    return list(p) if isinstance(p, tuple) else [p] * 4


def _conv_ref_int(x, w, zx, stride, pads, dil, group):
    """Plain int64 convolution of (x - zx) with w, NCHW; pads in ONNX order."""
    b, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    t, l, bo, r = pads
    xp = np.zeros((b, c, h + t + bo, wd + l + r), np.int64)
    xp[:, :, t:t + h, l:l + wd] = x.astype(np.int64) - int(zx)
    ho = (h + t + bo - dil * (kh - 1) - 1) // stride + 1
    wo = (wd + l + r - dil * (kw - 1) - 1) // stride + 1
    out = np.zeros((b, co, ho, wo), np.int64)
    og = co // group
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og].astype(np.int64)
        for i in range(kh):
            for j in range(kw):
                win = xs[:, :, i * dil:i * dil + stride * (ho - 1) + 1:stride,
                         j * dil:j * dil + stride * (wo - 1) + 1:stride]
                out[:, g * og:(g + 1) * og] += np.einsum("bchw,oc->bohw", win, ws[:, :, i, j])
    return out


def _weights(rng, cout, cg, k, sparsity=0.6):
    w = rng.integers(-127, 128, size=(cout, cg, k, k)).astype(np.int8)
    keep = rng.random((cout, -(-cg // 4), k, k)) >= sparsity     # block4 along input channels
    return (w * np.repeat(keep, 4, axis=1)[:, :cg]).astype(np.int8)


@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("x_dtype", ["u8", "s8"])
def test_convinteger_integer_exact_vs_numpy(rng, shape, x_dtype):
    _, b, cin, cout, hw, k, s, p, d, g = shape
    w = _weights(rng, cout, cin // g, k)
    if x_dtype == "u8":
        x = rng.integers(0, 256, size=(b, cin, hw, hw)).astype(np.uint8)
        zx = np.uint8(113)
    else:
        x = rng.integers(-128, 128, size=(b, cin, hw, hw)).astype(np.int8)
        zx = np.int8(-7)
    node = helper.make_node("ConvInteger", ["x", "w", "zx"], ["y"], kernel_shape=[k, k],
                            strides=[s, s], pads=_pads(p), dilations=[d, d], group=g)
    m = _model([node], [helper.make_tensor_value_info("x", TP.UINT8 if x_dtype == "u8"
                                                      else TP.INT8, list(x.shape))],
               [helper.make_tensor_value_info("y", TP.INT32, None)],
               [_init("w", w), _init("zx", zx)])
    eng = ds.compile_model(m)
    assert _ops(eng)["QConv"] == 1
    y = eng.run([x])[0]
    ref = _conv_ref_int(x, w, zx, s, _pads(p), d, g)
    assert y.dtype == np.int32 and y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


def _qdq_conv_model(rng, shape, tail, zx=118, sparsity=0.6):
    """x float -> Q -> DQ -> Conv(DQ(W_q per channel), bias) -> tail, as quantize_static writes
    it. tail: 'q' | 'relu_q' | 'clip_q' | 'bn_relu_q' (Q -> DQ -> BN -> Relu -> Q) |
    'bn_res_relu_q' (+ residual Add of DQ(r_q)) | 'bn_relu' (float out) | 'float'."""
    _, b, cin, cout, hw, k, s, p, d, g = shape
    wq = _weights(rng, cout, cin // g, k, sparsity)
    sw = rng.uniform(0.002, 0.01, cout).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    inits = [_init("sx", np.float32(0.02)), _init("zx", np.uint8(zx)), _init("wq", wq),
             _init("sw", sw), _init("zw", np.zeros(cout, np.int8)),
             _init("bias", bias), _init("s1", np.float32(0.15)), _init("z1", np.uint8(128)),
             _init("sy", np.float32(0.05)), _init("zy", np.uint8(0)),
             _init("bn_s", rng.uniform(0.5, 1.5, cout).astype(np.float32)),
             _init("bn_b", rng.standard_normal(cout).astype(np.float32)),
             _init("bn_m", rng.standard_normal(cout).astype(np.float32)),
             _init("bn_v", rng.uniform(0.5, 2.0, cout).astype(np.float32)),
             _init("lo", np.float32(0.0)), _init("hi", np.float32(6.0)),
             _init("sr", np.float32(0.03)), _init("zr", np.uint8(100))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bias"], ["c"], kernel_shape=[k, k],
                              strides=[s, s], pads=_pads(p), dilations=[d, d], group=g)]
    inputs = [helper.make_tensor_value_info("x", TP.FLOAT, [b, cin, hw, hw])]
    out_t = TP.UINT8
    if tail == "q":
        nodes.append(helper.make_node("QuantizeLinear", ["c", "sy", "zy"], ["y"]))
    elif tail in ("relu_q", "clip_q"):
        act = helper.make_node("Relu", ["c"], ["a"]) if tail == "relu_q" else \
            helper.make_node("Clip", ["c", "lo", "hi"], ["a"])
        nodes += [act, helper.make_node("QuantizeLinear", ["a", "sy", "zy"], ["y"])]
    elif tail.startswith("bn"):
        nodes += [helper.make_node("QuantizeLinear", ["c", "s1", "z1"], ["cq"]),
                  helper.make_node("DequantizeLinear", ["cq", "s1", "z1"], ["cd"]),
                  helper.make_node("BatchNormalization", ["cd", "bn_s", "bn_b", "bn_m", "bn_v"],
                                   ["bn"])]
        last = "bn"
        if tail == "bn_res_relu_q":
            inputs.append(helper.make_tensor_value_info("r", TP.UINT8, None))
            nodes += [helper.make_node("DequantizeLinear", ["r", "sr", "zr"], ["rd"]),
                      helper.make_node("Add", ["bn", "rd"], ["sum"])]
            last = "sum"
        if tail == "bn_relu":      # float out after the conv's Q -> DQ (a stem before MaxPool)
            nodes.append(helper.make_node("Relu", [last], ["y"]))
            out_t = TP.FLOAT
        else:
            nodes += [helper.make_node("Relu", [last], ["a"]),
                      helper.make_node("QuantizeLinear", ["a", "sy", "zy"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
        out_t = TP.FLOAT
    m = _model(nodes, inputs, [helper.make_tensor_value_info("y", out_t, None)], inits)
    x = rng.uniform(-2.0, 3.0, size=(b, cin, hw, hw)).astype(np.float32)
    feeds = [x]
    if tail == "bn_res_relu_q":
        ho = (hw + sum(_pads(p)[::2]) - d * (k - 1) - 1) // s + 1
        feeds.append(rng.integers(0, 256, size=(b, cout, ho, ho)).astype(np.uint8))
    return m, feeds


def _ort_plain(m, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _unfused(model, monkeypatch):
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_FUSION", "1")
        return ds.compile_model(model)


@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("tail", ["q", "relu_q", "clip_q", "bn_relu_q", "bn_res_relu_q", "bn_relu",
                                  "float"])
def test_qdq_conv_fused_matches_unfused(rng, monkeypatch, shape, tail):
    m, feeds = _qdq_conv_model(rng, shape, tail)
    ref = _unfused(m, monkeypatch).run(feeds)[0]
    eng = ds.compile_model(m)
    assert _ops(eng)["QConv"] == 1 and _ops(eng)["Conv"] == 0
    y = eng.run(feeds)[0]
    assert y.dtype == ref.dtype and y.shape == ref.shape
    if tail == "float":
        # float out: same accumulator; the float bias enters as an int32 accumulator bias,
        # rint(b / (s_x * s_w)), so it is off by at most half a unit s_x * s_w / 2 (sw <= 0.01)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=0.5 * 0.02 * 0.01 + 1e-6)
    elif tail == "bn_relu":
        # the conv output's u8 step s1 = 0.15 kept (exact QDQ): a rounding tie there moves a
        # value by s1 times the BN factor (<= 1.5 / sqrt(0.5)); otherwise float rounding only
        d = np.abs(y - ref)
        assert d.max() <= 0.15 * 1.5 / np.sqrt(0.5) + 1e-4
        assert (d <= 1e-5 * (1 + np.abs(ref))).mean() > 0.99
    else:
        # requantization: s_x*s_w/s_y in one float32 product vs the graph's two steps, a
        # one-unit difference at a rounding tie. Behind BN the conv output's u8 step
        # (s1 = 0.15) is kept (exact QDQ mode), so a tie there moves the output by up to
        # s1 * BN factor (<= 1.5 / sqrt(0.5)) / sy (0.05) + 1 units; ties stay rare.
        d = np.abs(y.astype(np.int32) - ref.astype(np.int32))
        bound = np.ceil(0.15 * 1.5 / np.sqrt(0.5) / 0.05 + 1) if tail.startswith("bn") else 1
        assert d.max() <= bound and (d == 0).mean() > 0.99


@pytest.mark.parametrize("k2,sparsity", [(1, 0.0), (3, 0.0), (1, 0.9), (3, 0.9)])
def test_residual_block_adds_in_the_kernel(rng, monkeypatch, k2, sparsity):
    """A ResNet-style block as quantize_static writes it: conv1 -> Relu -> Q (u8, kept NHWC
    between the QConvs) -> DQ -> conv2 -> Q -> DQ -> Add(DQ(conv1 out)) -> Relu -> Q. conv2 adds
    its u8 residual in the int8 kernel's epilogue (no numpy tail) and agrees with the unfused
    graph and onnxruntime executing the file as written. (The float residual form is covered by
    the ResNet-50 INT8 zoo model's agreement with onnxruntime.)"""
    c, hw = 24, 9
    w1 = _weights(rng, c, c, 1, sparsity)
    w2 = _weights(rng, c, c, k2, sparsity)
    inits = [_init("sx", np.float32(0.02)), _init("zx", np.uint8(118)),
             _init("w1", w1), _init("w2", w2),
             _init("sw1", rng.uniform(0.002, 0.01, c).astype(np.float32)),
             _init("sw2", rng.uniform(0.002, 0.01, c).astype(np.float32)),
             _init("zw", np.zeros(c, np.int8)),
             _init("b1", rng.standard_normal(c).astype(np.float32)),
             _init("b2", rng.standard_normal(c).astype(np.float32)),
             _init("s1", np.float32(0.05)), _init("z1", np.uint8(0)),
             _init("s2", np.float32(0.07)), _init("z2", np.uint8(131)),
             _init("sy", np.float32(0.06)), _init("zy", np.uint8(0))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w1", "sw1", "zw"], ["w1d"], axis=0),
             helper.make_node("Conv", ["xd", "w1d", "b1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"]),
             helper.make_node("QuantizeLinear", ["a1", "s1", "z1"], ["a1q"]),
             helper.make_node("DequantizeLinear", ["a1q", "s1", "z1"], ["a1d"]),
             helper.make_node("DequantizeLinear", ["w2", "sw2", "zw"], ["w2d"], axis=0),
             helper.make_node("Conv", ["a1d", "w2d", "b2"], ["c2"], kernel_shape=[k2, k2],
                              pads=[k2 // 2] * 4),
             helper.make_node("QuantizeLinear", ["c2", "s2", "z2"], ["c2q"]),
             helper.make_node("DequantizeLinear", ["c2q", "s2", "z2"], ["c2d"]),
             helper.make_node("Add", ["c2d", "a1d"], ["sum"]),
             helper.make_node("Relu", ["sum"], ["a2"]),
             helper.make_node("QuantizeLinear", ["a2", "sy", "zy"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, c, hw, hw])],
               [helper.make_tensor_value_info("y", TP.UINT8, None)], inits)
    x = rng.uniform(-2.0, 3.0, size=(1, c, hw, hw)).astype(np.float32)
    eng = ds.compile_model(m)
    convs = [op for n, op in _steps(eng) if n.op_type == "QConv"]
    assert len(convs) == 2 and _ops(eng)["Add"] == 0
    assert convs[1].has_res and convs[1].res_in_kernel and convs[1].kernel_final
    y = eng.run([x])[0]
    ref = _unfused(m, monkeypatch).run([x])[0]
    ort_ref = _ort_plain(m, {"x": x})[0]
    assert len(np.unique(ref)) > 20
    for r in (ref, ort_ref):
        d = np.abs(y.astype(np.int32) - r.astype(np.int32))
        # rounding ties of the u8 steps in between move a value by a step of theirs
        # (s1 0.05, s2 0.07) over sy (0.06), plus the final rounding
        assert d.max() <= 2 and (d == 0).mean() > 0.97


@pytest.mark.parametrize("pool", [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                                  dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
                                  dict(kernel_shape=[3, 3], strides=[1, 1], pads=[0, 1, 2, 1])],
                         ids=["3x3s2p1", "2x2s2ceil", "3x3s1asym"])
@pytest.mark.parametrize("then", ["conv", "output"])
@pytest.mark.parametrize("pool_dtype", ["u8", "s8"])
def test_stem_maxpool_stays_int8(rng, monkeypatch, pool, then, pool_dtype):
    """conv -> Q -> DQ -> Relu -> MaxPool -> Q (a ResNet stem as quantize_static writes it):
    the QConv requantizes to the pool's QuantizeLinear and a QMaxPool pools the int8 values
    (max commutes with the monotone quantization), NHWC into a following QConv; the result is
    the unfused graph's and onnxruntime's to a rounding step."""
    c, hw = 16, 15
    w1, w2 = _weights(rng, c, 3, 3), _weights(rng, c, c, 1)
    inits = [_init("sx", np.float32(0.02)), _init("zx", np.uint8(118)), _init("w1", w1),
             _init("w2", w2), _init("sw1", rng.uniform(0.002, 0.01, c).astype(np.float32)),
             _init("sw2", rng.uniform(0.002, 0.01, c).astype(np.float32)),
             _init("zw", np.zeros(c, np.int8)), _init("b1", rng.standard_normal(c).astype(np.float32)),
             _init("s1", np.float32(0.04)), _init("z1", np.uint8(60)),
             _init("sp", np.float32(0.03)),
             _init("zp", np.uint8(0) if pool_dtype == "u8" else np.int8(-100)),
             _init("sy", np.float32(0.05)), _init("zy", np.uint8(128))]
    mk = helper.make_node
    nodes = [mk("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), mk("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             mk("DequantizeLinear", ["w1", "sw1", "zw"], ["w1d"], axis=0),
             mk("Conv", ["xd", "w1d", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             mk("QuantizeLinear", ["c1", "s1", "z1"], ["c1q"]), mk("DequantizeLinear", ["c1q", "s1", "z1"], ["c1d"]),
             mk("Relu", ["c1d"], ["a1"]), mk("MaxPool", ["a1"], ["p"], **pool),
             mk("QuantizeLinear", ["p", "sp", "zp"], ["pq"])]
    if then == "conv":
        nodes += [mk("DequantizeLinear", ["pq", "sp", "zp"], ["pd"]),
                  mk("DequantizeLinear", ["w2", "sw2", "zw"], ["w2d"], axis=0),
                  mk("Conv", ["pd", "w2d"], ["c2"], kernel_shape=[1, 1]),
                  mk("QuantizeLinear", ["c2", "sy", "zy"], ["y"])]
    else:
        nodes.append(mk("Identity", ["pq"], ["y"]))
    yt = TP.INT8 if then == "output" and pool_dtype == "s8" else TP.UINT8
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3, hw, hw])],
               [helper.make_tensor_value_info("y", yt, None)], inits)
    eng = ds.compile_model(m)
    kinds = [n.op_type for n, _ in _steps(eng)]
    assert "QMaxPool" in kinds and "MaxPool" not in kinds, kinds
    pool_op = [op for n, op in _steps(eng) if n.op_type == "QMaxPool"][0]
    assert pool_op.x_layout == "NHWC" and pool_op.y_layout == ("NHWC" if then == "conv" else "NCHW")
    x = rng.uniform(-2.0, 3.0, size=(1, 3, hw, hw)).astype(np.float32)
    y = eng.run([x])[0]
    ref = _unfused(m, monkeypatch).run([x])[0]
    ort_ref = _ort_plain(m, {"x": x})[0]
    assert y.shape == ref.shape == ort_ref.shape and len(np.unique(ref)) > 10
    for r in (ref, ort_ref):
        d = np.abs(y.astype(np.int32) - r.astype(np.int32))
        # the conv's requantization in one float32 product vs the graph's steps: a tie
        assert d.max() <= (1 if then == "output" else 2) and (d == 0).mean() > 0.97


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2], SHAPES[6]], ids=["1x1", "3x3", "dw"])
@pytest.mark.parametrize("tail", ["bn_relu_q", "bn_res_relu_q"])
def test_qdq_fast_mode_drops_round_trip(rng, monkeypatch, shape, tail):
    """DEEPSPARSE_CY_QDQ_FAST=1 drops the conv output's Q -> DQ round trip (one epilogue in the
    kernel): at most half a step of s1 = 0.15 times the BN factor (<= 1.5 / sqrt(0.5)), in
    units of sy = 0.05, plus the final rounding."""
    m, feeds = _qdq_conv_model(rng, shape, tail)
    ref = _unfused(m, monkeypatch).run(feeds)[0]
    monkeypatch.setenv("DEEPSPARSE_CY_QDQ_FAST", "1")
    eng = ds.compile_model(m)
    assert _ops(eng)["QConv"] == 1 and _ops(eng)["BatchNormalization"] == 0
    (node, _), = [(n, o) for n, o in _steps(eng) if n.op_type == "QConv"]
    assert "mid_scale" not in node.attrs
    d = np.abs(eng.run(feeds)[0].astype(np.int32) - ref.astype(np.int32))
    assert d.max() <= np.ceil(0.5 * 0.15 * 1.5 / np.sqrt(0.5) / 0.05 + 1)
    assert d.mean() < 1.0


def test_qlinearconv_vs_numpy(rng):
    _, b, cin, cout, hw, k, s, p, d, g = SHAPES[3]
    w = _weights(rng, cout, cin, k)
    x = rng.integers(0, 256, size=(b, cin, hw, hw)).astype(np.uint8)
    bias = rng.integers(-3000, 3000, cout).astype(np.int32)
    sw = rng.uniform(0.002, 0.01, cout).astype(np.float32)
    node = helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"],
                            ["y"], kernel_shape=[k, k], strides=[s, s], pads=_pads(p))
    m = _model([node], [helper.make_tensor_value_info("x", TP.UINT8, list(x.shape))],
               [helper.make_tensor_value_info("y", TP.UINT8, None)],
               [_init("sx", np.float32(0.02)), _init("zx", np.uint8(120)), _init("w", w),
                _init("sw", sw), _init("zw", np.zeros(cout, np.int8)),
                _init("sy", np.float32(0.1)), _init("zy", np.uint8(128)), _init("b", bias)])
    eng = ds.compile_model(m)
    assert _ops(eng)["QConv"] == 1
    y = eng.run([x])[0]
    acc = _conv_ref_int(x, w, 120, s, _pads(p), 1, 1) + bias.reshape(1, -1, 1, 1)
    ref = np.clip(np.rint(acc * (0.02 * sw.astype(np.float64) / 0.1).reshape(1, -1, 1, 1)) + 128,
                  0, 255)
    diff = np.abs(y.astype(np.int32) - ref)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_qconv_profile_fields_and_run_dense(rng):
    m, feeds = _qdq_conv_model(rng, SHAPES[2], "relu_q")
    eng = ds.compile_model(m)
    (node, op), = [(n, o) for n, o in _steps(eng) if n.op_type == "QConv"]
    assert op.kernel_name.startswith(("qs8_gemm", "qs8_spmm"))
    assert op.kernel_isa in K.runnable_isas("qs8_gemm")
    y = eng.run(feeds)[0]
    assert op.flops == 2 * 10 * 10 * 32 * 16 * 9
    xq = np.clip(np.rint(feeds[0] / np.float32(0.02)) + 118, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(op.run_dense([xq, None], None)[0], y)
    recs = eng.profile(feeds, iterations=1)
    assert any(r["op_type"] == "QConv" and r["dense_ms"] is not None for r in recs)


def test_qconv_first_run_tuning_keeps_outputs(rng, monkeypatch):
    """A sparse layer large enough to be timed on its first run against the dense kernel: both
    timings recorded, and the outputs bit-identical to the untuned engine's whichever kernel
    won."""
    m, feeds = _qdq_conv_model(rng, ("tune", 1, 64, 64, 32, 3, 1, 1, 1, 1), "relu_q",
                               sparsity=0.9)
    eng = ds.compile_model(m)
    (node, op), = [(n, o) for n, o in _steps(eng) if n.op_type == "QConv"]
    assert op.packs[0].format != "dense"
    y = eng.run(feeds)[0]
    assert set(op.tune_times) == {"sparse", "dense"}
    assert op.kernel_name.startswith(("qs8_gemm", "qs8_spmm"))
    monkeypatch.setenv("DEEPSPARSE_CY_NO_TUNE", "1")
    ref = ds.compile_model(m).run(feeds)[0]
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(eng.run(feeds)[0], ref)


# --- small pruned + quantized CNNs vs onnxruntime --------------------------------------------

def _cmp(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return cos, float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name,overrides", [
    ("resnet50-block4-pruned90-quant", dict(image=64, width=16,
                                            depth_blocks=((16, 2, 1), (32, 2, 2)))),
    ("mobilenetv2-block4-pruned90-quant", dict(image=64, width_mult=0.5)),
])
def test_small_cnn_block4_quant_vs_onnxruntime(name, overrides, tmp_path):
    from deepsparse_cy import zoo
    m = zoo.get_model(name, **overrides)
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    feeds = zoo.example_inputs(m, batch=2, seed=3)
    eng = ds.compile_model(path)
    ops = _ops(eng)
    n_conv = sum(1 for n in m.graph.node if n.op_type == "Conv")
    assert ops["QConv"] == n_conv and ops["Conv"] == 0
    qconv = [n for n, _ in _steps(eng) if n.op_type == "QConv"]
    assert sum(n.attrs.get("y_layout") == "NHWC" for n in qconv) >= n_conv // 2
    y = eng.run(list(feeds.values()))[0]
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    cos, rel = _cmp(y, ref)
    assert cos >= 0.995 and rel <= 0.10, (cos, rel)
