"""Elementwise tails of quantized convolutions as tables (graph/fusion_conv._fuse_table_tails):
Conv -> Q -> DQ -> [BN] -> f -> Q, with f SiLU written as x * Sigmoid(x) (YOLO), HardSwish after
BN (MobileNetV3), HardSigmoid, and longer chains with scalar constants. The QConv carries a
[Cout, 256] table of the output byte per mid value; the result must be the unfused graph's and
onnxruntime's up to rounding ties, the chain's nodes gone, and the QConv's int8 output NHWC
into the next QConv. Chains that something else reads into stay as they are."""
import collections

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import deepsparse_cy as ds
from test_fusion_conv import _init, _ort_plain, _steps, _unfused  # the QDQ conv tests' helpers

ort = pytest.importorskip("onnxruntime")

mk = helper.make_node
CHAIN_OPS = {"Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Sub", "Add", "Relu", "Div",
             "BatchNormalization", "DequantizeLinear"}


def _model(rng, first, tail, then, c=16, hw=12):
    """x -> Q -> DQ -> Conv (first: '3x3' | 'dw' | '1x1') -> tail -> [DQ -> Conv 1x1 -> Q]."""
    wq = rng.integers(-127, 128, (c, 1 if first == "dw" else c, *((1, 1) if first == "1x1"
                                                                   else (3, 3)))).astype(np.int8)
    wq[rng.random(wq.shape) < 0.5] = 0
    w2 = rng.integers(-127, 128, (c, c, 1, 1)).astype(np.int8)
    s8 = tail == "s8_hardsigmoid"
    inits = [_init("sx", np.float32(0.02)), _init("zx", np.uint8(118)), _init("wq", wq),
             _init("w2", w2), _init("sw", rng.uniform(0.002, 0.01, c).astype(np.float32)),
             _init("sw2", rng.uniform(0.002, 0.01, c).astype(np.float32)),
             _init("zw", np.zeros(c, np.int8)), _init("b", rng.standard_normal(c).astype(np.float32)),
             _init("s1", np.float32(0.05)), _init("z1", np.int8(-3) if s8 else np.uint8(128)),
             _init("s2", np.float32(0.03)), _init("z2", np.int8(-100) if s8 else np.uint8(20)),
             _init("sy", np.float32(0.05)), _init("zy", np.uint8(128)),
             _init("bn_s", rng.uniform(0.5, 1.5, c).astype(np.float32)),
             _init("bn_b", rng.standard_normal(c).astype(np.float32)),
             _init("bn_m", rng.standard_normal(c).astype(np.float32)),
             _init("bn_v", rng.uniform(0.5, 2.0, c).astype(np.float32)),
             _init("two", np.float32(2.0)), _init("half", np.float32(0.5)),
             _init("per_c", rng.uniform(0.5, 1.5, (1, c, 1, 1)).astype(np.float32))]
    conv_kw = dict(kernel_shape=[1, 1]) if first == "1x1" else dict(
        kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c if first == "dw" else 1)
    nodes = [mk("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             mk("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             mk("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             mk("Conv", ["xd", "wd", "b"], ["c"], **conv_kw),
             mk("QuantizeLinear", ["c", "s1", "z1"], ["cq"]),
             mk("DequantizeLinear", ["cq", "s1", "z1"], ["cd"])]
    outs = [helper.make_tensor_value_info("y", TP.UINT8 if then == "conv" or not s8 else TP.INT8,
                                          None)]
    bn = [mk("BatchNormalization", ["cd", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"])]
    if tail in ("silu", "silu_leak", "silu_per_channel"):
        nodes += [mk("Sigmoid", ["cd"], ["sg"]), mk("Mul", ["cd", "sg"], ["a"])]
        if tail == "silu_leak":        # the Sigmoid is also a graph output
            outs.append(helper.make_tensor_value_info("sg", TP.FLOAT, None))
        if tail == "silu_per_channel":
            nodes[-1] = mk("Mul", ["cd", "sg"], ["a0"])
            nodes.append(mk("Mul", ["a0", "per_c"], ["a"]))
    elif tail == "bn_hardswish":
        nodes += bn + [mk("HardSwish", ["bn"], ["a"])]
    elif tail == "bn_relu_chain":      # Relu becomes the QConv's activation, the rest the table
        nodes += bn + [mk("Relu", ["bn"], ["r"]),
                       mk("HardSigmoid", ["r"], ["h"], alpha=0.3, beta=0.4),
                       mk("Mul", ["two", "h"], ["m"]), mk("Sub", ["m", "half"], ["s"]),
                       mk("Div", ["s", "r"], ["dv"]), mk("Add", ["dv", "r"], ["a"])]
    elif tail == "s8_hardsigmoid":
        nodes += [mk("HardSigmoid", ["cd"], ["a"], alpha=0.25, beta=0.45)]
    nodes.append(mk("QuantizeLinear", ["a", "s2", "z2"], ["aq"]))
    if then == "conv":
        nodes += [mk("DequantizeLinear", ["aq", "s2", "z2"], ["ad"]),
                  mk("DequantizeLinear", ["w2", "sw2", "zw"], ["w2d"], axis=0),
                  mk("Conv", ["ad", "w2d"], ["c2"], kernel_shape=[1, 1]),
                  mk("QuantizeLinear", ["c2", "sy", "zy"], ["y"])]
    else:
        nodes.append(mk("Identity", ["aq"], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2, c, hw, hw])],
                          outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _close(y, ref, tail):
    d = np.abs(y.astype(np.int32) - ref.astype(np.int32))
    # a rounding tie of the conv output's 8-bit step (s1 0.05, behind BN times its factor
    # <= 1.5 / sqrt(0.5)) moves the output by up to that over s2 (0.03), then the last step
    bound = 1 + np.ceil(0.05 * (1.5 / np.sqrt(0.5) if "bn" in tail else 1.0) / 0.03 * 2)
    assert d.max() <= bound and (d == 0).mean() > 0.97, (d.max(), (d == 0).mean())


@pytest.mark.parametrize("first", ["3x3", "dw", "1x1"])
@pytest.mark.parametrize("tail", ["silu", "bn_hardswish", "bn_relu_chain", "s8_hardsigmoid"])
@pytest.mark.parametrize("then", ["conv", "output"])
def test_table_tail_matches_unfused_and_onnxruntime(rng, monkeypatch, first, tail, then):
    m = _model(rng, first, tail, then)
    eng = ds.compile_model(m)
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    assert kinds["QConv"] == (2 if then == "conv" else 1)
    assert not CHAIN_OPS & set(kinds) and kinds["QuantizeLinear"] == 1, kinds   # x's only
    q1 = [op for n, op in _steps(eng) if n.op_type == "QConv"][0]
    assert q1.table is not None and q1.kernel_final and q1.mode == "requant"
    if then == "conv":
        assert q1.y_layout == "NHWC"
    if first == "dw":
        assert q1.qdw and q1.kernel_name == "qs8_dwconv"
    x = rng.uniform(-2.0, 3.0, size=(2, 16, 12, 12)).astype(np.float32)
    y = eng.run([x])[0]
    ref = _unfused(m, monkeypatch).run([x])[0]
    ort_ref = _ort_plain(m, {"x": x})[0]
    assert y.dtype == ref.dtype == ort_ref.dtype and y.shape == ref.shape == ort_ref.shape
    assert len(np.unique(ref)) > 10
    for r in (ref, ort_ref):
        _close(y, r, tail)
    if then == "conv":              # the bound call (second run) gives the same bytes
        np.testing.assert_array_equal(eng.run([x])[0], y)


@pytest.mark.parametrize("tail", ["silu_leak", "silu_per_channel"])
def test_table_tail_left_alone(rng, monkeypatch, tail):
    """A chain value read outside the chain (a graph output), or a per-channel constant in it:
    no QConv table; results as the unfused graph's. (With the per-channel Mul the float part
    before it, DequantizeLinear -> x * Sigmoid(x), still becomes a QTable.)"""
    m = _model(rng, "3x3", tail, "conv")
    eng = ds.compile_model(m)
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    if tail == "silu_leak":
        assert kinds["Sigmoid"] == 1 and kinds["QTable"] == 0, kinds
    else:
        assert kinds["QTable"] == 1 and kinds["Mul"] == 1 and kinds["Sigmoid"] == 0, kinds
    assert all(op.table is None for n, op in _steps(eng) if n.op_type == "QConv")
    x = rng.uniform(-2.0, 3.0, size=(2, 16, 12, 12)).astype(np.float32)
    got = eng.run([x])
    ref = _unfused(m, monkeypatch).run([x])
    _close(got[0], ref[0], tail)


@pytest.mark.parametrize("x_dtype", ["u8", "s8"])
def test_dq_silu_to_float_becomes_one_table(rng, monkeypatch, x_dtype):
    """DequantizeLinear -> Sigmoid -> Mul(x, .) whose float result feeds a Split (a quantized
    YOLO's C2f block): one QTable step, values those of the unfused graph and onnxruntime."""
    s8 = x_dtype == "s8"
    inits = [_init("s", np.float32(0.07)), _init("z", np.int8(-20) if s8 else np.uint8(100))]
    nodes = [mk("DequantizeLinear", ["x", "s", "z"], ["d"]), mk("Sigmoid", ["d"], ["sg"]),
             mk("Mul", ["d", "sg"], ["a"]), mk("Split", ["a"], ["y0", "y1"], axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TP.INT8 if s8 else TP.UINT8, [2, 8, 5, 7])],
        [helper.make_tensor_value_info(n, TP.FLOAT, None) for n in ("y0", "y1")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    eng = ds.compile_model(m)
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    assert kinds["QTable"] == 1 and not {"Sigmoid", "Mul", "DequantizeLinear"} & set(kinds)
    info = np.iinfo(np.int8 if s8 else np.uint8)
    x = rng.integers(info.min, info.max + 1, (2, 8, 5, 7)).astype(info.dtype)
    x.reshape(-1)[:2] = (info.min, info.max)
    got = eng.run([x])
    ref = _unfused(m, monkeypatch).run([x])
    ort_ref = _ort_plain(m, {"x": x})
    for a, r, o in zip(got, ref, ort_ref):
        np.testing.assert_allclose(a, r, rtol=1e-6, atol=1e-7)   # the engine's compiled Sigmoid: ulps
        # onnxruntime's Sigmoid is an approximation of its own (a few 1e-7 of the largest value)
        np.testing.assert_allclose(a, o, rtol=1e-6, atol=1e-6 * float(np.abs(o).max()))
    again = eng.run([x])                      # the bound call
    for a, b in zip(got, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opset,axis,split", [
    (13, 1, [3, 5]), (13, 1, None), (11, 1, [6, 2]), (11, 2, None), (13, -1, [2, 5]),
    (18, 1, "num3"), (13, 3, [7])], ids=str)
def test_table_split_fused(rng, monkeypatch, opset, axis, split):
    """QTable -> Split ==> one QTable writing each part from its own range of the bytes: the
    parts are exactly the unsplit table's values split in numpy (the same graph without the
    Split), for one image (the bound call, each part one range) and two (the run path); the
    first part read in place by a Concat too. Split sizes as input (opset 13), attribute
    (opset 11), absent (equal parts) and num_outputs with an uneven last part (opset 18)."""
    inits = [_init("s", np.float32(0.05)), _init("z", np.uint8(110))]
    nouts = 3 if split == "num3" else (len(split) if split else 2)
    names = [f"y{i}" for i in range(nouts)]
    sp_in, sp_kw = ["a"], dict(axis=axis)
    if split == "num3":
        sp_kw["num_outputs"] = 3
    elif split is not None and opset >= 13:
        inits.append(_init("sizes", np.array(split, np.int64)))
        sp_in.append("sizes")
    elif split is not None:
        sp_kw["split"] = split
    # x float -> QuantizeLinear: the bytes an arena value (a graph input's would not bind)
    nodes = [mk("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             mk("DequantizeLinear", ["xq", "s", "z"], ["d"]), mk("Sigmoid", ["d"], ["sg"]),
             mk("Mul", ["d", "sg"], ["a"])]
    xshape = ["b", 8, 6, 7]
    # the reference: the same table, its whole tensor (read by an Identity: a Split-free QTable)
    m_full = helper.make_model(helper.make_graph(
        nodes + [mk("Identity", ["a"], ["af"])], "g",
        [helper.make_tensor_value_info("x", TP.FLOAT, xshape)],
        [helper.make_tensor_value_info("af", TP.FLOAT, None)], list(inits)),
        opset_imports=[helper.make_opsetid("", opset)])
    nodes = nodes + [mk("Split", sp_in, names, **sp_kw),
                     mk("Concat", [names[0], names[-1]], ["cat"], axis=axis)]
    m = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, xshape)],
        [helper.make_tensor_value_info(n, TP.FLOAT, None) for n in names[1:] + ["cat"]],
        list(inits)), opset_imports=[helper.make_opsetid("", opset)])
    eng, full = ds.compile_model(m), ds.compile_model(m_full)
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    assert kinds["QTable"] == 1 and kinds["Split"] == 0, kinds
    assert collections.Counter(n.op_type for n, _ in _steps(full))["QTable"] == 1
    ort_ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for b in (1, 2, 1):
        x = (rng.integers(0, 256, (b, 8, 6, 7)).astype(np.float32) - 110) * np.float32(0.05)
        a = full.run([x])[0]
        ax = axis % 4
        if split == "num3":
            size = -(-a.shape[ax] // 3)
            bounds = [size, 2 * size]
        elif split is None:
            bounds = [a.shape[ax] // nouts * i for i in range(1, nouts)]
        else:
            bounds = list(np.cumsum(split)[:-1])
        parts = np.split(a, bounds, axis=ax)
        for _ in range(2):                     # the second run: the bound call (one image)
            got = eng.run([x])
        if b == 1 and axis % 4 <= 2:           # up to 8 outer indices: bound
            plan = eng._plans[eng._key([x])]
            inst = plan.acquire()
            plan.release(inst)
            assert any(b_ and st[0].op_type == "QTable" for b_, st in zip(inst.bound, plan.steps))
            for g_, r in zip(got[:-1], parts[1:]):
                np.testing.assert_array_equal(g_, r)
            np.testing.assert_array_equal(got[-1], np.concatenate([parts[0], parts[-1]], axis=ax))
        o = ort_ref.run(None, {"x": x})
        for g_, r in zip(got, o):
            np.testing.assert_allclose(g_, r, rtol=1e-6, atol=1e-6 * float(np.abs(r).max()))


def test_dq_chain_read_midway_is_left_alone(rng):
    """The Sigmoid's value also read by another node: no table."""
    inits = [_init("s", np.float32(0.07)), _init("z", np.uint8(100))]
    nodes = [mk("DequantizeLinear", ["x", "s", "z"], ["d"]), mk("Sigmoid", ["d"], ["sg"]),
             mk("Mul", ["d", "sg"], ["a"]), mk("Concat", ["a", "sg"], ["y"], axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.UINT8, [1, 4, 3, 3])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    eng = ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    kinds = collections.Counter(n.op_type for n, _ in _steps(eng))
    assert kinds["QTable"] == 0 and kinds["Sigmoid"] == 1
