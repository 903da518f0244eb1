"""YOLOv8 head fusions (graph/fusion_dfl.py -> ops/fast_fused.DFL / BoxDecode). DFL: the
Transpose -> Softmax over the bins -> [QuantizeLinear ->] 1x1 Conv to one channel as one step;
BoxDecode: dist2bbox and the output Concat with the class Sigmoid as one. The fused graphs agree
bit for bit with the unfused ones (DEEPSPARSE_CY_NO_DFL_FUSION / NO_BOX_FUSION=1) on quantized
heads (and on float BoxDecode), closely on float DFL, and with onnxruntime, across anchor counts
and batch 2 from one compile; near misses of the patterns are left alone and still agree."""
import collections

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import deepsparse_cy as ds

ort = pytest.importorskip("onnxruntime")

R = 16


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def _head(quantized, axis=1, cout=1, perm=(0, 2, 1, 3), opset=17, bins=R, extra_reader=False,
          conv_bias=False):
    """x [N, 4, bins, A] -> Transpose -> Softmax -> [Q -> DQ ->] Conv 1x1 (weights 0..bins-1)
    [-> Q -> DQ] -> Reshape [N, 4, A] (the DFL of a YOLOv8 export, QDQ as quantize_static
    writes it)."""
    w = np.arange(bins * cout, dtype=np.float32).reshape(cout, bins, 1, 1) % bins
    inits = [_init("shape", np.array([0, 4 * cout, -1], np.int64))]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=list(perm)),
             helper.make_node("Softmax", ["t"], ["p"], axis=axis)]
    conv_in = ["p"]
    if quantized:
        ws = np.float32(bins - 1) / 127
        inits += [_init("ps", np.float32(1 / 1411.7)), _init("pz", np.uint8(0)),
                  _init("wq", np.round(w / ws).astype(np.int8)), _init("ws", np.float32(ws)),
                  _init("wz", np.int8(0)), _init("ys", np.float32(bins / 255 * 0.5)),
                  _init("yz", np.uint8(0))]
        nodes += [helper.make_node("QuantizeLinear", ["p", "ps", "pz"], ["pq"]),
                  helper.make_node("DequantizeLinear", ["pq", "ps", "pz"], ["pd"]),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"])]
        conv_in = ["pd", "wd"]
    else:
        inits.append(_init("w", w))
        conv_in.append("w")
    if conv_bias:
        inits.append(_init("b", np.full(cout, 0.375, np.float32)))
        conv_in.append("b")
    nodes.append(helper.make_node("Conv", conv_in, ["c"], kernel_shape=[1, 1]))
    y = "c"
    if quantized:
        nodes += [helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
                  helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["cd"])]
        y = "cd"
    nodes.append(helper.make_node("Reshape", [y, "shape"], ["y"]))
    outs = [helper.make_tensor_value_info("y", TP.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["t"], ["t2"]))
        outs.append(helper.make_tensor_value_info("t2", TP.FLOAT, None))
    g = helper.make_graph(nodes, "dfl", [helper.make_tensor_value_info(
        "x", TP.FLOAT, ["N", 4, bins, "A"])], outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ops(engine):
    return collections.Counter(n.op_type for n, _ in engine._program.steps)


def _feeds(rng, shapes):
    out = []
    for shp in shapes:
        x = (rng.standard_normal(shp) * 3).astype(np.float32)
        x[0, 0, :, :2] = 0.0              # equal logits in two columns
        out.append(x)
    return out


SHAPES = [(1, 4, R, 2100), (1, 4, R, 2100), (2, 4, R, 37), (1, 4, R, 300)]


@pytest.mark.parametrize("quantized,conv_bias", [(False, False), (False, True), (True, False),
                                                 (True, True)])
def test_dfl_fused_matches_unfused_and_onnxruntime(monkeypatch, quantized, conv_bias):
    m = _head(quantized, conv_bias=conv_bias)
    e = ds.compile_model(m)
    assert _ops(e)["DFL"] == 1, _ops(e)
    assert not {"Transpose", "Softmax", "QuantizeLinear", "QConv", "Conv"} & set(_ops(e))
    monkeypatch.setenv("DEEPSPARSE_CY_NO_DFL_FUSION", "1")
    u = ds.compile_model(m)
    assert _ops(u)["DFL"] == 0
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in _feeds(np.random.default_rng(5), SHAPES):
        got, ref_u = e.run([x])[0], u.run([x])[0]
        ref = sess.run(None, {"x": x})[0]
        assert got.shape == ref.shape == (x.shape[0], 4, x.shape[3])
        scale = float(np.abs(ref).max())
        if quantized:
            np.testing.assert_array_equal(got, ref_u)
            # onnxruntime's exp may move a probability across a rounding boundary: a few
            # output steps (0.031) at most, on few anchors
            step = R / 255 * 0.5
            assert float(np.abs(got - ref).max()) <= 3 * step
            assert np.mean(got != ref) < 0.02
        else:
            assert float(np.abs(got - ref_u).max()) <= 1e-5 * scale
            assert float(np.abs(got - ref).max()) <= 1e-5 * scale


@pytest.mark.parametrize("case", ["softmax_axis_2", "two_channels", "perm", "opset_11",
                                  "transpose_read_twice"])
@pytest.mark.parametrize("quantized", [False, True])
def test_dfl_near_misses_stay_unfused_and_agree(case, quantized):
    kw = {"softmax_axis_2": {"axis": 2}, "two_channels": {"cout": 2},
          "perm": {"perm": (0, 2, 3, 1)}, "opset_11": {"opset": 11},
          "transpose_read_twice": {"extra_reader": True}}[case]
    m = _head(quantized, **kw)
    e = ds.compile_model(m)
    assert _ops(e)["DFL"] == 0, _ops(e)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in _feeds(np.random.default_rng(6), SHAPES[1:3]):
        for got, ref in zip(e.run([x]), sess.run(None, {"x": x})):
            scale = float(np.abs(ref).max())
            tol = 3 * R / 255 * 0.5 if quantized else 1e-5 * scale
            assert float(np.abs(got - ref).max()) <= tol, case


def _box_model(half="Div", add_swapped=False, mul_swapped=False, sub_reversed=False,
               x1y1_output=False, anchors_a="A"):
    """d [N, 4, A], anchors [1, 2, A], strides [1, A], cls [N, C, A] -> Concat(dist2bbox(d) *
    strides, Sigmoid(cls)) as a YOLOv8 export writes it (opset 17)."""
    k = 2.0 if half == "Div" else 0.5
    inits = [_init("sizes", np.array([2, 2], np.int64)), _init("k", np.float32(k))]
    sub_in = ["lt", "anchors"] if sub_reversed else ["anchors", "lt"]
    nodes = [helper.make_node("Split", ["d", "sizes"], ["lt", "rb"], axis=1),
             helper.make_node("Sub", sub_in, ["x1y1"]),
             helper.make_node("Add", ["rb", "anchors"] if add_swapped else ["anchors", "rb"],
                              ["x2y2"]),
             helper.make_node("Add", ["x1y1", "x2y2"], ["s"]),
             helper.make_node(half, ["s", "k"], ["c"]),
             helper.make_node("Sub", ["x2y2", "x1y1"], ["wh"]),
             helper.make_node("Concat", ["c", "wh"], ["cc"], axis=1),
             helper.make_node("Mul", ["strides", "cc"] if mul_swapped else ["cc", "strides"],
                              ["box"]),
             helper.make_node("Sigmoid", ["cls"], ["sig"]),
             helper.make_node("Concat", ["box", "sig"], ["y"], axis=1)]
    outs = [helper.make_tensor_value_info("y", TP.FLOAT, None)]
    if x1y1_output:
        outs.append(helper.make_tensor_value_info("x1y1", TP.FLOAT, None))
    ins = [helper.make_tensor_value_info("d", TP.FLOAT, ["N", 4, "A"]),
           helper.make_tensor_value_info("anchors", TP.FLOAT, [1, 2, anchors_a]),
           helper.make_tensor_value_info("strides", TP.FLOAT, [1, "A"]),
           helper.make_tensor_value_info("cls", TP.FLOAT, ["N", "C", "A"])]
    g = helper.make_graph(nodes, "box", ins, outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _box_feeds(rng, n, c, a, anchors_a=None):
    return {"d": (rng.random((n, 4, a)) * 15).astype(np.float32),
            "anchors": (rng.random((1, 2, a if anchors_a is None else anchors_a)) * 40
                        ).astype(np.float32),
            "strides": rng.choice(np.array([8, 16, 32], np.float32), (1, a)),
            "cls": (rng.standard_normal((n, c, a)) * 4).astype(np.float32)}


BOX_SHAPES = [(1, 80, 2100), (1, 80, 2100), (2, 80, 315), (2, 7, 84), (1, 3, 9), (3, 5, 300)]


@pytest.mark.parametrize("half,add_swapped,mul_swapped,anchors_a", [
    ("Div", False, False, "A"), ("Mul", True, True, "A"),
    ("Div", False, False, 1)])           # anchors broadcast along A: the numpy box rows
def test_box_decode_fused_matches_unfused_and_onnxruntime(monkeypatch, half, add_swapped,
                                                          mul_swapped, anchors_a):
    m = _box_model(half, add_swapped, mul_swapped, anchors_a=anchors_a)
    e = ds.compile_model(m)
    assert _ops(e)["BoxDecode"] == 1, _ops(e)
    assert not {"Split", "Sub", "Sigmoid", "Concat"} & set(_ops(e))
    monkeypatch.setenv("DEEPSPARSE_CY_NO_BOX_FUSION", "1")
    u = ds.compile_model(m)
    assert _ops(u)["BoxDecode"] == 0
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    for n, c, a in BOX_SHAPES:
        feeds = _box_feeds(rng, n, c, a, None if anchors_a == "A" else 1)
        xs = [feeds[k] for k in e.input_names]
        got, ref_u = e.run(xs)[0], u.run(xs)[0]
        ref = sess.run(None, feeds)[0]
        assert got.shape == ref.shape == (n, 4 + c, a)
        np.testing.assert_array_equal(got, ref_u)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [{"sub_reversed": True}, {"x1y1_output": True}],
                         ids=["sub_reversed", "x1y1_read_twice"])
def test_box_decode_near_misses_stay_unfused_and_agree(kw):
    m = _box_model(**kw)
    e = ds.compile_model(m)
    assert _ops(e)["BoxDecode"] == 0, _ops(e)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _box_feeds(np.random.default_rng(12), 2, 7, 84)
    for got, ref in zip(e.run([feeds[k] for k in e.input_names]), sess.run(None, feeds)):
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["yolov8n-block4-pruned90-quant", "yolov8n"])
def test_yolov8_head_fused_bit_for_bit(monkeypatch, name):
    """The zoo's YOLOv8n (QDQ pruned + quantized, and FP32): its DFL and box decoding fuse, and
    the detector's output is the unfused graph's, bit for bit quantized (same softmax,
    quantizer and integer sum), within float rounding in FP32, at three image sizes (one whose
    anchors are fewer than 256) and batch 2."""
    from deepsparse_cy import zoo
    m = zoo.get_model(name)
    e = ds.compile_model(m)
    assert _ops(e)["DFL"] == 1 and _ops(e)["BoxDecode"] == 1, _ops(e)
    monkeypatch.setenv("DEEPSPARSE_CY_NO_DFL_FUSION", "1")
    monkeypatch.setenv("DEEPSPARSE_CY_NO_BOX_FUSION", "1")
    u = ds.compile_model(m)
    assert _ops(u)["DFL"] == 0 and _ops(u)["BoxDecode"] == 0
    rng = np.random.default_rng(8)
    for shp in [(1, 3, 128, 128), (2, 3, 96, 160), (2, 3, 64, 64), (1, 3, 128, 128)]:
        x = rng.random(shp, dtype=np.float32)
        got, ref = e.run([x])[0], u.run([x])[0]
        if "quant" in name:
            np.testing.assert_array_equal(got, ref)
        else:   # the float sums' order and FMA contraction depend on the level and the build
            assert float(np.abs(got - ref).max()) <= 1e-6 * float(np.abs(ref).max())
