"""Conv family vs onnxruntime (random shapes/attributes) and onnx's conformance cases."""
import numpy as np
import pytest
from onnx import helper

import deepsparse_cy.ops as ops
from deepsparse_cy.graph.ir import graph_from_proto
from deepsparse_cy.ops.conv import ConvCore
from deepsparse_cy.ops.registry import OpContext
from tests.ops._cnn_common import (check, conformance_params, make_model, run_conformance_case,
                                   run_ort)

FAMILY = ["Conv", "ConvTranspose", "ConvInteger", "DeformConv", "Col2Im"]


def _conv_case(rng, nd, C, M, group, k, s, d, pads, auto_pad, bias, N=2, size=9):
    x = rng.standard_normal((N, C, *[size - i for i in range(nd)])).astype(np.float32)
    w = rng.standard_normal((M, C // group, *k)).astype(np.float32)
    inputs = [("x", x), ("w", w)]
    if bias:
        inputs.append(("b", rng.standard_normal(M).astype(np.float32)))
    attrs = dict(group=group, strides=s, dilations=d)
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    return inputs, attrs


CONV_CONFIGS = [
    # nd, C, M, group, k, s, d, pads, auto_pad, bias
    (2, 4, 6, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], "NOTSET", True),
    (2, 4, 6, 1, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], "NOTSET", True),      # pointwise GEMM
    (2, 4, 6, 1, [1, 1], [2, 2], [1, 1], [0, 0, 0, 0], "NOTSET", False),     # strided 1x1
    (2, 4, 6, 1, [1, 1], [1, 1], [1, 1], [1, 0, 1, 2], "NOTSET", True),      # padded 1x1
    (2, 6, 6, 6, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], "NOTSET", True),      # depthwise
    (2, 6, 6, 6, [3, 3], [2, 2], [2, 1], [2, 0, 1, 1], "NOTSET", False),     # depthwise strided dilated
    (2, 4, 8, 4, [3, 3], [1, 1], [1, 1], [0, 0, 0, 0], "NOTSET", True),      # channel multiplier 2
    (2, 6, 4, 2, [3, 2], [2, 1], [1, 2], [1, 0, 2, 1], "NOTSET", True),      # grouped, asymmetric
    (2, 3, 5, 1, [7, 7], [2, 2], [1, 1], [3, 3, 3, 3], "NOTSET", True),      # stem-like
    (2, 3, 5, 1, [3, 3], [2, 2], [1, 1], None, "SAME_UPPER", True),
    (2, 3, 5, 1, [4, 4], [3, 2], [1, 1], None, "SAME_LOWER", False),
    (2, 3, 5, 1, [3, 3], [1, 1], [1, 1], None, "VALID", True),
    (1, 3, 4, 1, [3], [2], [2], [1, 2], "NOTSET", True),
    (1, 4, 4, 4, [5], [1], [1], [2, 2], "NOTSET", True),                     # 1-D depthwise
    (3, 2, 3, 1, [2, 3, 2], [1, 2, 1], [1, 1, 2], [1, 0, 1, 0, 1, 1], "NOTSET", True),
    (3, 4, 4, 2, [1, 1, 1], [1, 1, 1], [1, 1, 1], [0] * 6, "NOTSET", False),
]


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=[str(i) for i in range(len(CONV_CONFIGS))])
def test_conv_vs_ort(rng, cfg):
    inputs, attrs = _conv_case(rng, *cfg)
    check("Conv", inputs, attrs, opset=17, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("N,C,M,bias", [(1, 480, 120, True), (3, 13, 7, False), (2, 16, 40, True)])
def test_pointwise_conv_on_1x1_maps_vs_ort(rng, N, C, M, bias):
    """Squeeze-excite FCs (1x1 conv after a global pool) take the GEMV path of the FP32 GEMM."""
    inputs = [("x", rng.standard_normal((N, C, 1, 1)).astype(np.float32)),
              ("w", rng.standard_normal((M, C, 1, 1)).astype(np.float32))]
    if bias:
        inputs.append(("b", rng.standard_normal(M).astype(np.float32)))
    check("Conv", inputs, {}, opset=17, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(12))
def test_conv_random(seed):
    rng = np.random.default_rng(100 + seed)
    nd = int(rng.integers(1, 4))
    group = int(rng.choice([1, 1, 2, 3]))
    C = group * int(rng.integers(1, 4))
    M = group * int(rng.integers(1, 4))
    k = [int(rng.integers(1, 4)) for _ in range(nd)]
    s = [int(rng.integers(1, 3)) for _ in range(nd)]
    d = [int(rng.integers(1, 3)) for _ in range(nd)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * nd)]
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad.startswith("SAME"):
        d = [1] * nd
    inputs, attrs = _conv_case(rng, nd, C, M, group, k, s, d, pads, auto_pad, bool(seed % 2),
                               N=int(rng.integers(1, 3)), size=int(rng.integers(7, 11)))
    check("Conv", inputs, attrs, opset=17, rtol=1e-4, atol=1e-4)


def test_conv_float64_and_float16(rng):
    for dt, tol in ((np.float64, 1e-10), (np.float16, 2e-2)):
        inputs, attrs = _conv_case(rng, 2, 4, 4, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], "NOTSET", True)
        inputs = [(n, a.astype(dt)) for n, a in inputs]
        check("Conv", inputs, attrs, oracle="ref", opset=17, rtol=tol, atol=tol)


def test_conv_core_reuses_buffers_across_calls(rng):
    # the im2col buffer is zeroed only once: a second call with other data must not see stale values
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    core = ConvCore(w, None, 1, None, [1, 1], None, [1, 1, 1, 1], "NOTSET", np.float32)
    x1 = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    x2 = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    y1 = core.run(x1).copy()
    y2 = core.run(x2)
    y1b = core.run(x1)
    np.testing.assert_allclose(y1, y1b, rtol=0, atol=0)
    assert not np.allclose(y1, y2)


CT_CONFIGS = [
    # C, M, group, k, s, d, pads, output_padding, output_shape, auto_pad, bias
    (3, 2, 1, [3, 3], [1, 1], [1, 1], [0, 0, 0, 0], None, None, "NOTSET", True),
    (4, 3, 1, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], [1, 1], None, "NOTSET", True),
    (4, 2, 2, [3, 2], [3, 2], [1, 2], [1, 0, 2, 1], None, None, "NOTSET", False),
    (2, 3, 1, [3, 3], [2, 2], [1, 1], None, None, [10, 9], "NOTSET", True),
    (2, 3, 1, [3, 3], [2, 2], [1, 1], None, None, None, "SAME_UPPER", True),
    (2, 3, 1, [4, 4], [2, 3], [1, 1], None, None, None, "SAME_LOWER", False),
    (6, 6, 6, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], [1, 0], None, "NOTSET", True),
    # stride == kernel, no padding: the depth-to-space path (non-overlapping windows)
    (4, 3, 1, [2, 2], [2, 2], [1, 1], [0, 0, 0, 0], None, None, "NOTSET", True),
    (5, 2, 1, [3, 2], [3, 2], [1, 1], None, None, None, "NOTSET", False),
    (3, 7, 1, [2, 2], [2, 2], [1, 1], None, None, None, "SAME_UPPER", True),
]


@pytest.mark.parametrize("cfg", CT_CONFIGS, ids=[str(i) for i in range(len(CT_CONFIGS))])
def test_conv_transpose_vs_ort(rng, cfg):
    C, M, group, k, s, d, pads, opad, oshape, auto_pad, bias = cfg
    x = rng.standard_normal((2, C, 4, 5)).astype(np.float32)
    w = rng.standard_normal((C, M, *k)).astype(np.float32)
    inputs = [("x", x), ("w", w)]
    if bias:
        inputs.append(("b", rng.standard_normal(M * group).astype(np.float32)))
    attrs = dict(group=group, strides=s, dilations=d)
    if pads is not None:
        attrs["pads"] = pads
    if opad is not None:
        attrs["output_padding"] = opad
    if oshape is not None:
        attrs["output_shape"] = oshape
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
    check("ConvTranspose", inputs, attrs, opset=17, rtol=1e-4, atol=1e-4)


def test_conv_transpose_computed_weight_changes_between_calls(rng):
    # weight and bias as graph inputs: packed copies must not be reused across calls (the
    # engine hands them over in the same arena arrays with new values)
    from onnx import TensorProto as TP, helper
    import deepsparse_cy as ds
    n = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2])
    vi = helper.make_tensor_value_info
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["w0"], ["w"]), helper.make_node("Identity", ["b0"], ["b"]),
         n], "g",
        [vi("x", TP.FLOAT, [1, 3, 4, 5]), vi("w0", TP.FLOAT, [3, 2, 2, 2]), vi("b0", TP.FLOAT, [2])],
        [vi("y", TP.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    eng = ds.compile_model(m)
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    for _ in range(3):
        w = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
        b = rng.standard_normal(2).astype(np.float32)
        exp = run_ort("ConvTranspose", [("x", x), ("w", w), ("b", b)], dict(strides=[2, 2]),
                      1, 17)[0]
        np.testing.assert_allclose(eng.run([x, w, b])[0], exp, rtol=1e-4, atol=1e-4)


def test_conv_transpose_1d_3d(rng):
    x = rng.standard_normal((1, 2, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3)).astype(np.float32)
    check("ConvTranspose", [("x", x), ("w", w)], dict(strides=[2]), opset=17, atol=1e-4)
    x = rng.standard_normal((1, 2, 3, 4, 3)).astype(np.float32)
    w = rng.standard_normal((2, 2, 2, 3, 2)).astype(np.float32)
    check("ConvTranspose", [("x", x), ("w", w)], dict(strides=[2, 1, 2], pads=[0, 1, 0, 1, 0, 1]),
          opset=17, atol=1e-4)


def test_conv_integer_vs_ort(rng):
    x = rng.integers(0, 255, (1, 4, 6, 6)).astype(np.uint8)
    w = rng.integers(0, 255, (3, 4, 3, 3)).astype(np.uint8)
    xz = np.array(120, np.uint8)
    wz = np.array(130, np.uint8)
    check("ConvInteger", [("x", x), ("w", w), ("xz", xz), ("wz", wz)], dict(pads=[1, 1, 1, 1]),
          opset=10)
    x8 = rng.integers(-128, 127, (1, 2, 5, 5)).astype(np.int8)
    w8 = rng.integers(-128, 127, (2, 2, 2, 2)).astype(np.int8)
    check("ConvInteger", [("x", x8.view(np.uint8)), ("w", w8)], dict(strides=[2, 2]), opset=10)


def test_col2im_vs_reference(rng):
    x = rng.standard_normal((2, 2 * 6, 9)).astype(np.float32)
    inputs = [("x", x), ("img", np.array([5, 6], np.int64)), ("blk", np.array([2, 3], np.int64))]
    check("Col2Im", inputs, dict(pads=[1, 0, 0, 1], strides=[2, 1], dilations=[1, 2]),
          oracle="ref", opset=18, const_sets=((), (1, 2)))


def test_deform_conv_vs_reference(rng):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((2, 2, 2, 2)).astype(np.float32)
    off = (rng.standard_normal((1, 2 * 2 * 4, 4, 4)) * 1.5).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    mask = rng.random((1, 2 * 4, 4, 4)).astype(np.float32)
    check("DeformConv", [("x", x), ("w", w), ("off", off), ("b", b), ("m", mask)],
          dict(group=2, offset_group=2), oracle="ref", opset=19, atol=1e-4)


@pytest.mark.parametrize("case", conformance_params(FAMILY))
def test_conformance(case):
    run_conformance_case(case)


@pytest.mark.parametrize("act,params", [("Relu", []), ("Clip", [0.0, 6.0]), ("LeakyRelu", [0.1]),
                                        ("Sigmoid", []), ("Tanh", []), ("HardSigmoid", [0.3, 0.4])])
@pytest.mark.parametrize("with_z", [False, True])
def test_fused_conv_vs_ort(rng, act, params, with_z):
    ort = pytest.importorskip("onnxruntime")
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    z = rng.standard_normal((1, 5, 6, 6)).astype(np.float32)
    inputs = [("x", x), ("w", w), ("b", b)] + ([("z", z)] if with_z else [])
    attrs = dict(pads=[1, 1, 1, 1], activation=act, activation_params=params)
    if not params:
        attrs.pop("activation_params")
    m = make_model("FusedConv", inputs, attrs, opset=1, domain="com.microsoft")
    m.opset_import.append(helper.make_opsetid("", 17))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    exp = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {n: a for n, a in inputs})[0]
    g = graph_from_proto(m.graph, {"com.microsoft": 1, "": 17})
    node = g.nodes[0]
    for consts in ({}, {1: w, 2: b}):
        op = ops.resolve("FusedConv", "com.microsoft", 1)(node, OpContext(node, 1, consts))
        got = op.run([a for _, a in inputs], [None])[0]
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg", [CONV_CONFIGS[0], CONV_CONFIGS[7], CONV_CONFIGS[8], CONV_CONFIGS[14]],
                         ids=["3x3", "grouped", "stem", "3d"])
def test_conv_row_chunked_im2col_matches(rng, cfg):
    # force the row-block im2col path (used for big feature maps) on small shapes
    inputs, attrs = _conv_case(rng, *cfg, N=2, size=13)
    x, w = inputs[0][1], inputs[1][1]
    b = inputs[2][1] if len(inputs) > 2 else None
    kw = dict(group=attrs["group"], kernel_shape=None, strides=attrs["strides"],
              dilations=attrs["dilations"], pads=attrs.get("pads"),
              auto_pad=attrs.get("auto_pad", "NOTSET"))
    ref = ConvCore(w, b, dtype=np.float32, kernel=False, **kw).run(x).copy()
    core = ConvCore(w, b, dtype=np.float32, kernel=False, **kw)
    core.CHUNK_MIN_TOTAL, core.CHUNK_BYTES, core.CHUNK_MIN_COLS = 0, 1, 1
    for _ in range(2):       # twice: chunk buffers are reused
        got = core.run(x)
        assert len(core.plan(x.shape)["chunks"]) > 1
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
