"""8-bit data flow across a QDQ C2f block's joins (graph/fusion_q8.py): Concat -> QuantizeLinear
pushed into the Concat's inputs, QuantizeLinear folded into QTables (quantized tables),
DequantizeLinear -> QuantizeLinear as the same bytes or a requantizing table, tables of tables
composed, and Add(table, table) -> QuantizeLinear as one QAdd. The bytes must be the graph's:
equal to the same engine with the rewrites off, and to onnxruntime up to rounding ties; the
float steps must be gone."""
import collections

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

import deepsparse_cy as ds
from test_fusion_conv import _init, _ort_plain, _steps

ort = pytest.importorskip("onnxruntime")
mk = helper.make_node


def _c2f_join(x_dtype, same_params, bcast, leak):
    """The join of a C2f block on 8-bit inputs xq [B, 8, H, W] (its first conv's output) and
    bq (the bottleneck's last conv's): x * Sigmoid(x) split in two halves, the second quantized
    for the bottleneck (a graph output here) and dequantized for the residual Add and the
    Concat; the bottleneck's x * Sigmoid(x) added; the three maps concatenated and quantized.
    same_params: the Concat's QuantizeLinear has the second half's parameters (its dequantized
    input is then the same bytes); bcast: bq is [B, 4, 1, 1] (the Add broadcasts); leak: the
    first half's float value is a graph output too."""
    s8 = x_dtype == "s8"
    zt = (lambda v: np.int8(v - 128)) if s8 else np.uint8
    inits = [_init("s0", np.float32(0.06)), _init("z0", zt(120)),
             _init("s1", np.float32(0.04)), _init("z1", zt(30)),
             _init("s2", np.float32(0.05)), _init("z2", zt(140)),
             _init("s3", np.float32(0.04 if same_params else 0.07)),
             _init("z3", zt(30 if same_params else 60))]
    nodes = [mk("DequantizeLinear", ["xq", "s0", "z0"], ["d"]), mk("Sigmoid", ["d"], ["sg"]),
             mk("Mul", ["d", "sg"], ["a"]), mk("Split", ["a"], ["p0", "p1"], axis=1),
             mk("QuantizeLinear", ["p1", "s1", "z1"], ["p1q"]),
             mk("DequantizeLinear", ["p1q", "s1", "z1"], ["p1d"]),
             mk("DequantizeLinear", ["bq", "s2", "z2"], ["bd"]), mk("Sigmoid", ["bd"], ["bs"]),
             mk("Mul", ["bd", "bs"], ["m"]), mk("Add", ["p1d", "m"], ["r"]),
             mk("Concat", ["p0", "p1d", "r"], ["c"], axis=1),
             mk("QuantizeLinear", ["c", "s3", "z3"], ["y"])]
    t = TP.INT8 if s8 else TP.UINT8
    outs = [helper.make_tensor_value_info("y", t, None),
            helper.make_tensor_value_info("p1q", t, None)]
    if leak:
        outs.append(helper.make_tensor_value_info("p0", TP.FLOAT, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xq", t, ["b", 8, "h", "w"]),
                                       helper.make_tensor_value_info(
                                           "bq", t, ["b", 4, 1, 1] if bcast else ["b", 4, "h", "w"])],
                          outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(rng, x_dtype, b, h, w, bcast):
    info = np.iinfo(np.int8 if x_dtype == "s8" else np.uint8)
    xq = rng.integers(info.min, info.max + 1, (b, 8, h, w)).astype(info.dtype)
    bq = rng.integers(info.min, info.max + 1, (b, 4) + ((1, 1) if bcast else (h, w)))
    xq.reshape(-1)[:2] = (info.min, info.max)
    return {"xq": xq, "bq": bq.astype(info.dtype)}


@pytest.mark.parametrize("x_dtype", ["u8", "s8"])
@pytest.mark.parametrize("same_params", [False, True])
@pytest.mark.parametrize("bcast", [False, True])
@pytest.mark.parametrize("leak", [False, True])
def test_c2f_join_stays_8bit(rng, monkeypatch, x_dtype, same_params, bcast, leak):
    m = _c2f_join(x_dtype, same_params, bcast, leak)
    eng = ds.compile_model(m)
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_Q8_FLOW", "1")
        ref_eng = ds.compile_model(m)
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    # no float map left between the 8-bit inputs and outputs (but a leaked float output's table)
    assert not {"QuantizeLinear", "DequantizeLinear", "Add", "Split", "Sigmoid", "Mul"} \
        & set(kinds), kinds
    assert kinds["QAdd"] == 1 and kinds["Concat"] == 1, kinds
    # the two halves' tables and the Concat's parts come from one QTable on xq
    assert kinds["QTable"] == 1, kinds
    for b, h, w in ((1, 6, 10), (2, 5, 3), (1, 6, 10)):
        feeds = _feeds(rng, x_dtype, b, h, w, bcast)
        for _ in range(2):                    # the second run: the bound calls
            got = eng.run([feeds["xq"], feeds["bq"]])
            ref = ref_eng.run([feeds["xq"], feeds["bq"]])
            for a, r in zip(got, ref):
                assert a.dtype == r.dtype and a.shape == r.shape
                np.testing.assert_array_equal(a, r)
        o = _ort_plain(m, feeds)
        for a, r in zip(got, o):
            if a.dtype == np.float32:          # onnxruntime's Sigmoid: its own approximation
                np.testing.assert_allclose(a, r, rtol=1e-6, atol=1e-6 * float(np.abs(r).max()))
                continue
            d = np.abs(a.astype(np.int32) - r.astype(np.int32))
            assert d.max() <= 1 and (d == 0).mean() > 0.97, (d.max(), (d == 0).mean())


@pytest.mark.parametrize("with_dq", [False, True])
def test_concat_with_unfoldable_inputs(rng, with_dq):
    """A Concat whose float inputs come from ops nothing folds into (Relu, Neg): left alone;
    with one DequantizeLinear input too, each input gets its own QuantizeLinear (the
    DequantizeLinear's a requantizing table) and the Concat joins bytes. The bytes are
    onnxruntime's either way (Relu / Neg are exact)."""
    inits = [_init("s", np.float32(0.03)), _init("z", np.uint8(7)),
             _init("sd", np.float32(0.05)), _init("zd", np.uint8(128))]
    ins = ["r0", "r1", "r0"] + (["dq"] if with_dq else [])
    nodes = [mk("Relu", ["x0"], ["r0"]), mk("Neg", ["x1"], ["r1"]),
             mk("DequantizeLinear", ["xq", "sd", "zd"], ["dq"]),
             mk("Concat", ins, ["c"], axis=2), mk("QuantizeLinear", ["c", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TP.FLOAT, [2, 3, 4])
                                       for n in ("x0", "x1")]
                          + [helper.make_tensor_value_info("xq", TP.UINT8, [2, 3, 4])],
                          [helper.make_tensor_value_info("y", TP.UINT8, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    eng = ds.compile_model(m)
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    if with_dq:
        assert kinds["QuantizeLinear"] == 2 and kinds["QTable"] == 1, kinds
        assert "DequantizeLinear" not in kinds, kinds
    else:
        assert kinds["QuantizeLinear"] == 1 and "QTable" not in kinds, kinds
    x = [rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(2)]
    xq = rng.integers(0, 256, (2, 3, 4)).astype(np.uint8)
    for _ in range(2):
        np.testing.assert_array_equal(eng.run(x + [xq])[0],
                                      _ort_plain(m, {"x0": x[0], "x1": x[1], "xq": xq})[0])


def test_requantizing_table_composed_into_producer(rng, monkeypatch):
    """QTable -> QuantizeLinear -> DequantizeLinear -> QuantizeLinear (other parameters): the
    requantizing table is composed into the first QTable (one step for both outputs)."""
    inits = [_init("s0", np.float32(0.05)), _init("z0", np.uint8(100)),
             _init("s1", np.float32(0.02)), _init("z1", np.uint8(10)),
             _init("s2", np.float32(0.09)), _init("z2", np.int8(-5))]
    nodes = [mk("DequantizeLinear", ["xq", "s0", "z0"], ["d"]), mk("HardSwish", ["d"], ["a"]),
             mk("QuantizeLinear", ["a", "s1", "z1"], ["aq"]),
             mk("DequantizeLinear", ["aq", "s1", "z1"], ["ad"]),
             mk("QuantizeLinear", ["ad", "s2", "z2"], ["y2"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xq", TP.UINT8, [3, 5, 7])],
                          [helper.make_tensor_value_info("aq", TP.UINT8, None),
                           helper.make_tensor_value_info("y2", TP.INT8, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    eng = ds.compile_model(m)
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    assert dict(kinds) == {"QTable": 1}, kinds
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_Q8_FLOW", "1")
        ref = ds.compile_model(m)
    x = rng.integers(0, 256, (3, 5, 7)).astype(np.uint8)
    for a, r in zip(eng.run([x]), ref.run([x])):
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (2, 3, 96, 160)])
def test_quantized_yolo_outputs_unchanged(monkeypatch, shape):
    """The quantized YOLOv8n (block4 90%): the rewrites leave every output bit for bit as it
    was, and no float Concat is quantized any more (each C2f join is 8-bit)."""
    from deepsparse_cy import zoo
    m = zoo.get_model("yolov8n-block4-pruned90-quant")
    eng = ds.compile_model(m)
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_Q8_FLOW", "1")
        ref = ds.compile_model(m)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    for _ in range(2):
        for a, r in zip(eng.run([x]), ref.run([x])):
            np.testing.assert_array_equal(a, r)
    steps = _steps(eng)
    prod = {o: n for n, _ in steps for o in n.outputs}
    for n, _ in steps:
        if n.op_type == "QuantizeLinear":
            p = prod.get(n.inputs[0])
            assert p is None or p.op_type not in ("Concat", "Add", "QTable"), (n.name, p.op_type)
    kinds = collections.Counter(n.op_type for n, _ in steps)
    ref_kinds = collections.Counter(n.op_type for n, _ in _steps(ref))
    assert kinds["QAdd"] >= 6 and kinds["Add"] < ref_kinds["Add"], (kinds, ref_kinds)


@pytest.mark.parametrize("k,stride,x_dtype", [(3, 1, "u8"), (1, 1, "s8"), (3, 2, "u8")])
def test_qconv_dequantized_output_in_kernel(rng, monkeypatch, k, stride, x_dtype):
    """QDQ Conv -> QuantizeLinear -> DequantizeLinear into a float reader (a YOLO head's box and
    class convs before their Concat): one QConv writing float through its mid step, no
    DequantizeLinear step; the floats are the graph's bit for bit and onnxruntime's up to one
    output step (its rounding ties)."""
    s8 = x_dtype == "s8"
    c, n = 8, 24
    wq = rng.integers(-127, 128, (n, c, k, k)).astype(np.int8)
    inits = [_init("sx", np.float32(0.02)), _init("zx", np.int8(-9) if s8 else np.uint8(118)),
             _init("wq", wq), _init("sw", rng.uniform(0.002, 0.01, n).astype(np.float32)),
             _init("zw", np.zeros(n, np.int8)), _init("b", rng.standard_normal(n).astype(np.float32)),
             _init("sy", np.float32(0.07)), _init("zy", np.uint8(128))]
    nodes = [mk("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             mk("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             mk("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             mk("Conv", ["xd", "wd", "b"], ["cv"], kernel_shape=[k, k], strides=[stride] * 2,
                pads=[k // 2] * 4),
             mk("QuantizeLinear", ["cv", "sy", "zy"], ["cq"]),
             mk("DequantizeLinear", ["cq", "sy", "zy"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, c, 9, 11])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    eng = ds.compile_model(m)
    kinds = collections.Counter(n_.op_type for n_, _ in _steps(eng))
    assert kinds["QConv"] == 1 and "DequantizeLinear" not in kinds, kinds
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_Q8_FLOW", "1")
        ref = ds.compile_model(m)
    assert "DequantizeLinear" in collections.Counter(n_.op_type for n_, _ in _steps(ref))
    x = rng.standard_normal((1, c, 9, 11)).astype(np.float32)
    for _ in range(2):
        got = eng.run([x])[0]
        np.testing.assert_array_equal(got, ref.run([x])[0])
    o = _ort_plain(m, {"x": x})[0]
    d = np.abs(got - o) / np.float32(0.07)
    assert d.max() <= 1.0 + 1e-3 and (d < 1e-3).mean() > 0.97, (d.max(), (d < 1e-3).mean())


def _engines(monkeypatch, g):
    """(model, engine, the engine with the 8-bit rewrites off, the engine's steps, their op
    counts) of graph g at opset 13."""
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    eng = ds.compile_model(m)
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_Q8_FLOW", "1")
        ref_eng = ds.compile_model(m)
    steps = _steps(eng)
    return m, eng, ref_eng, steps, collections.Counter(n.op_type for n, _ in steps)


def _runs_match(rng, m, eng, ref_eng, info, c, sizes, n_q8):
    """Runs of eng on random 8-bit maps [1, c, h, w] of `sizes` (each twice: the second run is
    the bound calls) give ref_eng's outputs exactly, and the first n_q8 outputs onnxruntime's up
    to rounding ties of the float map's quantization. Returns the last outputs and input."""
    for h, w in sizes:
        xq = rng.integers(info.min, info.max + 1, (1, c, h, w)).astype(info.dtype)
        for _ in range(2):
            got = eng.run([xq])
            for a, r in zip(got, ref_eng.run([xq])):
                assert a.dtype == r.dtype and a.shape == r.shape
                np.testing.assert_array_equal(a, r)
        o = _ort_plain(m, {"xq": xq})
        for a, r in zip(got[:n_q8], o[:n_q8]):
            assert a.shape == r.shape
            d = np.abs(a.astype(np.int32) - r.astype(np.int32))
            assert d.max() <= 1 and (d == 0).mean() > 0.97, (d.max(), (d == 0).mean())
    return got, xq


@pytest.mark.parametrize("ctm,scales", [("asymmetric", [1, 1, 2, 2]), ("half_pixel", [1, 1, 2, 3]),
                                        ("pytorch_half_pixel", [1, 1, 1.5, 0.75]),
                                        ("align_corners", [1, 1, 3, 2])])
@pytest.mark.parametrize("x_dtype", ["u8", "s8"])
def test_resize_quantized_before_it(rng, monkeypatch, ctm, scales, x_dtype):
    """x * Sigmoid(x) of an 8-bit map -> Resize(nearest) -> QuantizeLinear (a quantized YOLO
    neck's upsampling before its Concat): the QuantizeLinear moves before the Resize and folds
    into the table, the Resize moves bytes (integer factors and index tables), a second reader
    of the float map keeps it. The bytes: the same engine's with the rewrites off, and
    onnxruntime's up to rounding ties of the float map's quantization."""
    s8 = x_dtype == "s8"
    zt = (lambda v: np.int8(v - 128)) if s8 else np.uint8
    t = TP.INT8 if s8 else TP.UINT8
    inits = [_init("s0", np.float32(0.05)), _init("z0", zt(110)),
             _init("s1", np.float32(0.03)), _init("z1", zt(20)),
             _init("roi", np.zeros(0, np.float32)),
             _init("sc", np.asarray(scales, np.float32))]
    nodes = [mk("DequantizeLinear", ["xq", "s0", "z0"], ["d"]), mk("Sigmoid", ["d"], ["sg"]),
             mk("Mul", ["d", "sg"], ["a"]),
             mk("Resize", ["a", "roi", "sc"], ["r"], mode="nearest",
                coordinate_transformation_mode=ctm),
             mk("QuantizeLinear", ["r", "s1", "z1"], ["y"]), mk("Relu", ["a"], ["other"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xq", t, [1, 6, "h", "w"])],
                          [helper.make_tensor_value_info("y", t, None),
                           helper.make_tensor_value_info("other", TP.FLOAT, None)], inits)
    m, eng, ref_eng, steps, kinds = _engines(monkeypatch, g)
    assert "QuantizeLinear" not in kinds and kinds["Resize"] == 1, kinds
    info = np.iinfo(np.int8 if s8 else np.uint8)
    got, xq = _runs_match(rng, m, eng, ref_eng, info, 6, ((5, 7), (4, 4), (5, 7)), 1)
    rs = [op for n, op in steps if n.op_type == "Resize"][0]
    inst_dtypes = {p.dtype for p in (eng.run([xq])[0],)}
    assert inst_dtypes == {info.dtype}
    assert rs._plans, "the planned (compiled) resize ran"
    # the bound call runs the byte kernel itself, not the op's own path (its geometry key
    # matches the unchanged scales on every call)
    monkeypatch.setattr(rs, "run", lambda *a: pytest.fail("bound Resize fell back to run()"))
    np.testing.assert_array_equal(eng.run([xq])[0], got[0])


@pytest.mark.parametrize("x_dtype", ["u8", "s8"])
@pytest.mark.parametrize("k,pad,stride", [(5, 2, 1), (3, 1, 2), (2, 0, 2)])
def test_sppf_maxpools_on_8bit_values(rng, monkeypatch, x_dtype, k, pad, stride):
    """A quantized SPPF: x * Sigmoid(x) of an 8-bit map, three MaxPools in a chain, each pool's
    output and the map quantized (one scale) into a Concat. The QuantizeLinears move before
    the pools (max commutes with the monotone quantizer) and the chain runs as QMaxPools on
    planar 8-bit maps, no float pool left; a pool read by something else as well keeps its
    float twin. The bytes: the same engine's with the rewrites off, and onnxruntime's up to
    rounding ties of the float map's quantization."""
    s8 = x_dtype == "s8"
    zt = (lambda v: np.int8(v - 128)) if s8 else np.uint8
    t = TP.INT8 if s8 else TP.UINT8
    inits = [_init("s0", np.float32(0.05)), _init("z0", zt(110)),
             _init("s1", np.float32(0.03)), _init("z1", zt(20))]
    pool = dict(kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride])
    nodes = [mk("DequantizeLinear", ["xq", "s0", "z0"], ["d"]), mk("Sigmoid", ["d"], ["sg"]),
             mk("Mul", ["d", "sg"], ["a"]),
             mk("MaxPool", ["a"], ["m0"], **pool), mk("MaxPool", ["m0"], ["m1"], **pool),
             mk("MaxPool", ["m1"], ["m2"], **pool),
             mk("QuantizeLinear", ["a", "s1", "z1"], ["aq"]),
             mk("QuantizeLinear", ["m0", "s1", "z1"], ["m0q"]),
             mk("QuantizeLinear", ["m1", "s1", "z1"], ["m1q"]),
             mk("QuantizeLinear", ["m2", "s1", "z1"], ["m2q"])]
    outs = ["aq", "m0q", "m1q", "m2q"]
    if stride == 1:                    # same-size maps: the SPPF's Concat
        nodes.append(mk("Concat", outs, ["y"], axis=1))
        outs = ["y"]
    nodes.append(mk("Relu", ["m1"], ["other"]))       # a second reader of one float pool
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("xq", t, [1, 16, "h", "w"])],
                          [helper.make_tensor_value_info(o, t, None) for o in outs]
                          + [helper.make_tensor_value_info("other", TP.FLOAT, None)], inits)
    m, eng, ref_eng, steps, kinds = _engines(monkeypatch, g)
    assert kinds["QMaxPool"] == 3 and kinds["MaxPool"] == 2, kinds    # m0, m1 for `other`
    assert "QuantizeLinear" not in kinds, kinds
    info = np.iinfo(np.int8 if s8 else np.uint8)
    got, xq = _runs_match(rng, m, eng, ref_eng, info, 16, ((10, 10), (9, 13), (10, 10)),
                          len(eng.output_names) - 1)
    qp = [op for n, op in steps if n.op_type == "QMaxPool"][0]
    monkeypatch.setattr(qp, "run", lambda *a: pytest.fail("bound QMaxPool fell back to run()"))
    np.testing.assert_array_equal(eng.run([xq])[0], got[0])
