"""FP32 fusions (graph/fusion.py -> ops/fast_fused.py): each pattern is matched (the fused op is
in the compiled program), and the fused graph agrees with the unfused one
(DEEPSPARSE_CY_NO_FUSION=1) and with onnxruntime on random shapes, batch > 1 and several
sequence lengths from one compile."""
import collections
import math

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import deepsparse_cy as ds
from deepsparse_cy.kernels import _f32_fused

ort = pytest.importorskip("onnxruntime")

F = TP.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def _ops(engine):
    return collections.Counter(n.op_type for n, _ in engine._program.steps)


def _check(model, feeds_list, fused_op, monkeypatch, count=1, rtol=2e-5):
    """fused op present `count` times; fused == unfused == onnxruntime on every feed."""
    e = ds.compile_model(model)
    ops = _ops(e)
    assert ops[fused_op] == count, ops
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_FUSION", "1")
        u = ds.compile_model(model)
    assert _ops(u)[fused_op] == 0
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for feeds in feeds_list:
        xs = [feeds[k] for k in e.input_names]
        got, ref_u = e.run(xs), u.run(xs)
        ref = sess.run(None, feeds)
        for g, r, ru in zip(got, ref, ref_u):
            assert g.shape == r.shape
            scale = max(float(np.abs(r).max()), 1e-6)
            assert float(np.abs(g - r).max()) <= rtol * scale, (fused_op, feeds_list.index(feeds))
            assert float(np.abs(g - ru).max()) <= rtol * scale
    return e


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# --- GELU -----------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["div_x_half", "mul_half_x", "half_first"])
def test_gelu(form, monkeypatch):
    rng = np.random.default_rng(0)
    inits = [_init("s2", np.float32(math.sqrt(2))), _init("is2", np.float32(1 / math.sqrt(2))),
             _init("one", np.float32(1)), _init("half", np.float32(0.5))]
    first = (helper.make_node("Div", ["x", "s2"], ["d"]) if form != "mul_half_x"
             else helper.make_node("Mul", ["x", "is2"], ["d"]))
    nodes = [first, helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["a"])]
    if form == "div_x_half":
        nodes += [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    elif form == "mul_half_x":
        nodes += [helper.make_node("Mul", ["a", "half"], ["m"]), helper.make_node("Mul", ["x", "m"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "a"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, ["b", "n"])],
               [helper.make_tensor_value_info("y", F, None)], inits)
    feeds = [{"x": 3 * _rand(rng, b, n)} for b, n in ((1, 7), (4, 1000), (2, 70000))]
    _check(m, feeds, "Gelu", monkeypatch)


# --- MatMul + bias (+ GELU) -----------------------------------------------------------------

@pytest.mark.parametrize("tail", ["none", "bias", "bias_gelu", "bias_relu"])
def test_matmul_bias_act(tail, monkeypatch):
    rng = np.random.default_rng(1)
    k, n = 48, 72
    inits = [_init("w", _rand(rng, k, n)), _init("b", _rand(rng, n)),
             _init("s2", np.float32(math.sqrt(2))), _init("one", np.float32(1)),
             _init("half", np.float32(0.5))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"])]
    out = "mm"
    if tail != "none":
        nodes.append(helper.make_node("Add", ["b", "mm"], ["mb"]))   # bias first: either order
        out = "mb"
    if tail == "bias_gelu":
        nodes += [helper.make_node("Div", ["mb", "s2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["a"]),
                  helper.make_node("Mul", ["mb", "a"], ["m"]),
                  helper.make_node("Mul", ["m", "half"], ["y"])]
        out = "y"
    elif tail == "bias_relu":
        nodes.append(helper.make_node("Relu", ["mb"], ["y"]))
        out = "y"
    m = _model(nodes, [helper.make_tensor_value_info("x", F, ["b", "s", k])],
               [helper.make_tensor_value_info(out, F, None)], inits)
    feeds = [{"x": _rand(rng, b, s, k)} for b, s in ((1, 5), (3, 17), (8, 128))]
    e = _check(m, feeds, "FusedMatMul", monkeypatch, rtol=1e-5)
    assert _ops(e)["Add"] == 0 and _ops(e)["Erf"] == 0 and _ops(e)["Gelu"] == 0


# --- LayerNorm ------------------------------------------------------------------------------

@pytest.mark.parametrize("form,skip", [("onnx", False), ("onnx", True), ("decomposed", False),
                                       ("decomposed", True), ("decomposed18", True)])
def test_layernorm(form, skip, monkeypatch):
    rng = np.random.default_rng(2)
    h = 96
    inits = [_init("g", 1 + 0.1 * _rand(rng, h)), _init("beta", 0.1 * _rand(rng, h)),
             _init("two", np.float32(2)), _init("eps", np.float32(1e-5)), _init("ax", np.int64([-1]))]
    nodes = []
    x = "x"
    if skip:
        nodes.append(helper.make_node("Add", ["x", "r"], ["xr"]))
        x = "xr"
    opset = 17
    if form == "onnx":
        nodes.append(helper.make_node("LayerNormalization", [x, "g", "beta"], ["y"], axis=-1,
                                      epsilon=1e-5))
    else:
        if form == "decomposed18":
            opset = 18
            rm = lambda i, o: helper.make_node("ReduceMean", [i, "ax"], [o])  # noqa: E731
        else:
            opset = 13
            rm = lambda i, o: helper.make_node("ReduceMean", [i], [o], axes=[-1])  # noqa: E731
        nodes += [rm(x, "mu"), helper.make_node("Sub", [x, "mu"], ["d"]),
                  helper.make_node("Pow", ["d", "two"], ["d2"]), rm("d2", "var"),
                  helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
                  helper.make_node("Div", ["d", "sd"], ["n"]), helper.make_node("Mul", ["n", "g"], ["ng"]),
                  helper.make_node("Add", ["ng", "beta"], ["y"])]
    ins = [helper.make_tensor_value_info("x", F, ["b", "s", h])]
    if skip:
        ins.append(helper.make_tensor_value_info("r", F, ["b", "s", h]))
    m = _model(nodes, ins, [helper.make_tensor_value_info("y", F, None)], inits, opset)
    feeds = []
    for b, s in ((1, 3), (2, 50), (8, 128)):
        f = {"x": 2 + 3 * _rand(rng, b, s, h)}
        if skip:
            f["r"] = _rand(rng, b, s, h)
        feeds.append(f)
    e = _check(m, feeds, "LayerNorm", monkeypatch, rtol=1e-5)
    assert _ops(e)["Add"] == 0 and _ops(e)["ReduceMean"] == 0


@pytest.mark.parametrize("qdt,dq", [("u8", True), ("s8", True), ("u8", False)])
def test_layernorm_quantize_dequantize(qdt, dq, monkeypatch):
    """Add -> LayerNormalization -> QuantizeLinear [-> DequantizeLinear] (a quantized
    transformer's LayerNorm feeding int8 layers and the residual) runs as one LayerNorm step;
    its u8/s8 and dequantized outputs agree with the unfused graph and onnxruntime to one
    quantization step (float LayerNorm rounding may move a value across a boundary)."""
    rng = np.random.default_rng(7)
    h = 80
    zp = np.uint8(131) if qdt == "u8" else np.int8(-3)
    inits = [_init("g", 1 + 0.1 * _rand(rng, h)), _init("beta", 0.1 * _rand(rng, h)),
             _init("s", np.float32(0.031)), _init("z", zp)]
    nodes = [helper.make_node("Add", ["x", "r"], ["xr"]),
             helper.make_node("LayerNormalization", ["xr", "g", "beta"], ["y"], axis=-1,
                              epsilon=1e-5),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"])]
    qt = TP.UINT8 if qdt == "u8" else TP.INT8
    outs = [helper.make_tensor_value_info("yq", qt, None)]
    if dq:
        nodes.append(helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["yd"]))
        outs = [helper.make_tensor_value_info("yd", F, None)]
    m = _model(nodes, [helper.make_tensor_value_info(n, F, ["b", "s", h]) for n in ("x", "r")],
               outs, inits)
    e = ds.compile_model(m)
    ops = _ops(e)
    assert ops == collections.Counter({"LayerNorm": 1}), ops
    with monkeypatch.context() as mp:
        mp.setenv("DEEPSPARSE_CY_NO_FUSION", "1")
        u = ds.compile_model(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for b, sl in ((1, 3), (2, 50), (4, 128)):
        feeds = {"x": 2 + 3 * _rand(rng, b, sl, h), "r": _rand(rng, b, sl, h)}
        got = e.run([feeds["x"], feeds["r"]])[0]
        for ref in (u.run([feeds["x"], feeds["r"]])[0], sess.run(None, feeds)[0]):
            assert got.dtype == ref.dtype and got.shape == ref.shape
            d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            step = 0.031 if dq else 1
            assert d.max() <= step * 1.0001 and np.mean(d > 0) < 0.01
        assert len(np.unique(got)) > 50


def test_layernorm_quantize_output_read_twice_not_fused(monkeypatch):
    """The float LayerNorm output also read by another node keeps its own QuantizeLinear."""
    rng = np.random.default_rng(8)
    h = 32
    inits = [_init("g", np.ones(h, np.float32)), _init("s", np.float32(0.05)),
             _init("z", np.uint8(128))]
    nodes = [helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=-1),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"]),
             helper.make_node("Relu", ["y"], ["yr"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [2, h])],
               [helper.make_tensor_value_info("yq", TP.UINT8, None),
                helper.make_tensor_value_info("yr", F, None)], inits)
    e = ds.compile_model(m)
    assert _ops(e)["QuantizeLinear"] == 1 and _ops(e)["LayerNorm"] == 1
    x = _rand(rng, 2, h)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got, ref = e.run([x]), sess.run(None, {"x": x})
    assert np.abs(got[0].astype(int) - ref[0].astype(int)).max() <= 1
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-5)


# --- attention ------------------------------------------------------------------------------

def _attention_model(heads, hd, *, scale_op="Div", k_form="0231", mask=True, opset=17):
    """BERT self-attention as torch.onnx writes it, from projections q/k/v [B, S, H*D] (graph
    inputs) with shape-derived Reshapes, mask [B, 1, 1, S] added to the scaled scores."""
    H = heads * hd
    inits = [_init("c0", np.int64([0])), _init("c1", np.int64([1])), _init("nh", np.int64([heads])),
             _init("hd", np.int64([hd])), _init("hid", np.int64([H])),
             _init("sc", np.float32(math.sqrt(hd) if scale_op == "Div" else 1 / math.sqrt(hd)))]
    n = [helper.make_node("Shape", ["q"], ["qs"]),
         helper.make_node("Gather", ["qs", "c0"], ["bd"], axis=0),
         helper.make_node("Gather", ["qs", "c1"], ["sd"], axis=0),
         helper.make_node("Concat", ["bd", "sd", "nh", "hd"], ["hs"], axis=0),
         helper.make_node("Concat", ["bd", "sd", "hid"], ["ms"], axis=0)]
    for t in "qkv":
        n.append(helper.make_node("Reshape", [t, "hs"], [t + "4"]))
    n.append(helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]))
    if k_form == "0231":
        n.append(helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]))
    else:
        n += [helper.make_node("Transpose", ["k4"], ["k0"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["k0"], ["kt"], perm=[0, 1, 3, 2])]
    n += [helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
          helper.make_node("MatMul", ["qt", "kt"], ["s0"]),
          helper.make_node(scale_op, ["s0", "sc"], ["s1"])]
    last = "s1"
    if mask:
        n.append(helper.make_node("Add", ["s1", "mask"], ["s2"]))
        last = "s2"
    n += [helper.make_node("Softmax", [last], ["p"], axis=-1 if opset >= 13 else 3),
          helper.make_node("MatMul", ["p", "vt"], ["c"]),
          helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
          helper.make_node("Reshape", ["ct", "ms"], ["y"])]
    ins = [helper.make_tensor_value_info(t, F, ["b", "s", H]) for t in "qkv"]
    if mask:
        ins.append(helper.make_tensor_value_info("mask", F, ["b", 1, 1, "s"]))
    return _model(n, ins, [helper.make_tensor_value_info("y", F, None)], inits, opset)


def _attention_feeds(rng, heads, hd, shapes, mask=True):
    out = []
    for b, s in shapes:
        f = {t: _rand(rng, b, s, heads * hd) for t in "qkv"}
        if mask:
            m = np.zeros((b, 1, 1, s), np.float32)
            for i in range(1, b):          # trailing padding on all rows but the first
                m[i, ..., s - (i * s) // (b + 1):] = np.finfo(np.float32).min
            f["mask"] = m
        out.append(f)
    return out


@pytest.mark.parametrize("heads,hd,scale_op,k_form,mask,opset", [
    (4, 16, "Div", "0231", True, 17), (12, 32, "Mul", "0231", True, 17),
    (2, 8, "Div", "0213+0132", True, 17), (3, 5, "Mul", "0231", False, 17),
    (4, 16, "Div", "0231", True, 11)])
def test_attention(heads, hd, scale_op, k_form, mask, opset, monkeypatch):
    rng = np.random.default_rng(3)
    m = _attention_model(heads, hd, scale_op=scale_op, k_form=k_form, mask=mask, opset=opset)
    feeds = _attention_feeds(rng, heads, hd, [(1, 7), (3, 33), (8, 128)], mask)
    e = _check(m, feeds, "FusedAttention", monkeypatch, rtol=2e-5)
    ops = _ops(e)
    assert ops["Transpose"] == 0 and ops["Softmax"] == 0 and ops["MatMul"] == 0


def test_attention_transpose_shared_stays(monkeypatch):
    """A transposed Q read by another node too keeps its Transpose; the rest still fuses."""
    m = _attention_model(2, 8)
    extra = helper.make_node("ReduceSum", ["qt"], ["qsum"], keepdims=0)
    m.graph.node.append(extra)
    m.graph.output.append(helper.make_tensor_value_info("qsum", F, None))
    rng = np.random.default_rng(4)
    e = _check(m, _attention_feeds(rng, 2, 8, [(2, 9)]), "FusedAttention", monkeypatch)
    assert _ops(e)["Transpose"] == 1


@pytest.mark.parametrize("dt,zp", [(np.uint8, 121), (np.int8, -9)])
@pytest.mark.parametrize("reshape", [True, False])
@pytest.mark.parametrize("fast", ["kernel", "blas", "bf16"])
def test_attention_quantized_output(dt, zp, reshape, fast, monkeypatch):
    """FusedAttention [-> Reshape] -> QuantizeLinear: the quantize goes into the attention (no
    QuantizeLinear left), and its bytes are the QuantizeLinear op's bytes of the float
    attention (the same graph without the QuantizeLinear, quantized by the op's kernel), on
    the compiled float32 kernel and on the BLAS path; within one step of onnxruntime. bf16:
    DEEPSPARSE_CY_BF16_ATTENTION=1 where the f32_attn amx build runs (bf16 products on AMX
    tiles from 8 queries on): within two steps of both."""
    import deepsparse_cy.ops.fast_fused as ff
    from deepsparse_cy.kernels import _f32_ops
    if fast == "blas":
        monkeypatch.setattr(ff, "_ATTN", None)
    elif ff._ATTN is None:
        pytest.skip("no compiled attention kernel at this level")
    if fast == "bf16" and ff._ATTN_BF16 is None:
        pytest.skip("no f32_attn amx build at this level (AMX-BF16)")
    if fast == "bf16":
        monkeypatch.setenv("DEEPSPARSE_CY_BF16_ATTENTION", "1")
    else:                                   # the default: float32 products
        monkeypatch.delenv("DEEPSPARSE_CY_BF16_ATTENTION", raising=False)
    heads, hd = 3, 20
    mf = _attention_model(heads, hd)
    if not reshape:                 # the 4-D context is the output: FusedAttention -> Q
        mf.graph.node.pop()
        mf.graph.output[0].name = "ct"
    y = mf.graph.output[0].name
    scale = np.float32(0.013)
    mq = _model(list(mf.graph.node) + [helper.make_node("QuantizeLinear", [y, "oqs", "oqz"], ["yq"])],
                list(mf.graph.input), [helper.make_tensor_value_info("yq", TP.UINT8 if dt == np.uint8 else TP.INT8, None)],
                list(mf.graph.initializer) + [_init("oqs", scale), _init("oqz", np.array(zp, dt))])
    eq, ef = ds.compile_model(mq), ds.compile_model(mf)
    ops = _ops(eq)
    assert ops["FusedAttention"] == 1 and ops["QuantizeLinear"] == 0, ops
    kname = next(op.kernel_name for n, op in eq._program.steps if n.op_type == "FusedAttention")
    assert kname == {"kernel": "f32_attention", "blas": "blas+f32_softmax_mask",
                     "bf16": "bf16_attention_amx"}[fast]
    tol = 2 if fast == "bf16" else 0
    assert ops["Reshape"] == _ops(ef)["Reshape"]          # the output Reshape kept, of bytes
    sess = ort.InferenceSession(mq.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    for feeds in _attention_feeds(rng, heads, hd, [(1, 7), (3, 33), (2, 128)]):
        xs = [feeds[k] for k in eq.input_names]
        got = eq.run(xs)[0]
        f = ef.run(xs)[0]
        ref = np.empty(f.shape, dt)
        (_f32_ops.quantize_u8 if dt == np.uint8 else _f32_ops.quantize_s8)(
            np.ascontiguousarray(f).reshape(-1), ref.reshape(-1), float(scale), zp, 1)
        assert got.dtype == dt and got.shape == ref.shape
        if tol == 0 or got.shape[1] < 8:         # bf16 from 8 queries on
            np.testing.assert_array_equal(got, ref)
        else:
            assert np.abs(got.astype(np.int32) - ref.astype(np.int32)).max() <= tol
        r = sess.run(None, feeds)[0]
        assert np.abs(got.astype(np.int32) - r.astype(np.int32)).max() <= max(tol, 1)


def test_attention_bf16_unavailable_warns(monkeypatch):
    """DEEPSPARSE_CY_BF16_ATTENTION=1 where no f32_attn amx build runs: a RuntimeWarning at
    compile time, and the quantized attention keeps its float32 kernel (or BLAS path)."""
    import deepsparse_cy.ops.fast_fused as ff
    monkeypatch.setattr(ff, "_ATTN_BF16", None)
    monkeypatch.setenv("DEEPSPARSE_CY_BF16_ATTENTION", "1")
    mf = _attention_model(3, 20)
    y = mf.graph.output[0].name
    mq = _model(list(mf.graph.node) + [helper.make_node("QuantizeLinear", [y, "oqs", "oqz"], ["yq"])],
                list(mf.graph.input), [helper.make_tensor_value_info("yq", TP.UINT8, None)],
                list(mf.graph.initializer) + [_init("oqs", np.float32(0.013)),
                                              _init("oqz", np.array(121, np.uint8))])
    with pytest.warns(RuntimeWarning, match="BF16_ATTENTION"):
        eq = ds.compile_model(mq)
    kname = next(op.kernel_name for n, op in eq._program.steps if n.op_type == "FusedAttention")
    assert kname in ("f32_attention", "blas+f32_softmax_mask")


# --- Conv + activation ----------------------------------------------------------------------

@pytest.mark.parametrize("act", ["Relu", "Clip6", "HardSwish", "SiLU", "HardSigmoidMul",
                                 "LeakyRelu", "AddRelu", "Add"])
@pytest.mark.parametrize("kind", ["3x3", "1x1", "dw"])
def test_conv_activation(act, kind, monkeypatch):
    rng = np.random.default_rng(5)
    c, m_ = (8, 8) if kind == "dw" else (6, 10)
    k = 1 if kind == "1x1" else 3
    group = c if kind == "dw" else 1
    w = _rand(rng, m_, c // group, k, k)
    inits = [_init("w", w), _init("b", _rand(rng, m_)), _init("lo", np.float32(0)),
             _init("hi", np.float32(6))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y0"], pads=[k // 2] * 4, group=group)]
    y = "y0"
    if act.startswith("Add"):
        nodes.append(helper.make_node("Add", ["y0", "z"], ["y1"]))
        y = "y1"
        act = act[3:]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", [y], ["out"]))
    elif act == "Clip6":
        nodes.append(helper.make_node("Clip", [y, "lo", "hi"], ["out"]))
    elif act == "HardSwish":
        nodes.append(helper.make_node("HardSwish", [y], ["out"]))
    elif act == "SiLU":
        nodes += [helper.make_node("Sigmoid", [y], ["sg"]), helper.make_node("Mul", [y, "sg"], ["out"])]
    elif act == "HardSigmoidMul":
        nodes += [helper.make_node("HardSigmoid", [y], ["sg"], alpha=1 / 6, beta=0.5),
                  helper.make_node("Mul", ["sg", y], ["out"])]
    elif act == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", [y], ["out"], alpha=0.1))
    else:
        nodes.append(helper.make_node("Identity", [y], ["out"]))
    ins = [helper.make_tensor_value_info("x", F, ["n", c, "h", "w"])]
    if "z" in [i for nd in nodes for i in nd.input]:
        ins.append(helper.make_tensor_value_info("z", F, ["n", m_, "h", "w"]))
    model = _model(nodes, ins, [helper.make_tensor_value_info("out", F, None)], inits)
    feeds = []
    for n, h, w_ in ((1, 5, 6), (2, 17, 9), (3, 40, 40)):
        f = {"x": 2 * _rand(rng, n, c, h, w_)}
        if len(ins) > 1:
            f["z"] = _rand(rng, n, m_, h, w_)
        feeds.append(f)
    e = _check(model, feeds, "FusedConv", monkeypatch, rtol=1e-5)
    assert _ops(e)["Conv"] == 0


def test_conv_output_read_twice_not_fused(monkeypatch):
    """The conv output is also a graph output: the activation must not be fused into it."""
    rng = np.random.default_rng(6)
    inits = [_init("w", _rand(rng, 4, 3, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["r"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
               [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("r", F, None)],
               inits)
    e = ds.compile_model(m)
    assert _ops(e)["FusedConv"] == 0 and _ops(e)["Relu"] == 1


# --- kernels against numpy ------------------------------------------------------------------

@pytest.mark.parametrize("avx2", [0, 1, 2], ids=["baseline", "avx2", "avx512"])
def test_kernels_both_copies(avx2):
    from deepsparse_cy.kernels import cpu_features
    f = cpu_features()
    if avx2 and not (f.get("avx2") and f.get("fma")):
        pytest.skip("no AVX2+FMA")
    if avx2 == 2 and not all(f.get(k) for k in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        pytest.skip("no AVX-512 F/BW/VL/DQ")
    rng = np.random.default_rng(7)
    was = _f32_fused.level()
    _f32_fused.set_level(avx2)
    try:
        y = 4 * _rand(rng, 37, 203)
        b = _rand(rng, 203)
        got = y.copy()
        _f32_fused.bias_gelu_inplace(got, b, 2)
        t = (y + b).astype(np.float64)
        erf = np.vectorize(math.erf)
        np.testing.assert_allclose(got, 0.5 * t * (1 + erf(t / math.sqrt(2))), rtol=1e-5, atol=1e-6)
        x, r = 5 + _rand(rng, 300, 130), _rand(rng, 300, 130)
        g, be = _rand(rng, 130), _rand(rng, 130)
        out = np.empty_like(x)
        _f32_fused.layernorm(x, r, g, be, 1e-5, out, 2)
        t = (x + r).astype(np.float64)
        ref = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5) * g + be
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-5)
        for n in (768, 7, 40):           # full 32-float steps, under one vector, 8-steps + tail
            x = 5 + _rand(rng, 9, n)
            g = _rand(rng, n)
            out = np.empty_like(x)
            _f32_fused.layernorm(x, None, g, None, 1e-5, out, 2)   # no skip, no beta
            t = x.astype(np.float64)
            ref = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5) * g
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-5)
        s = 10 * _rand(rng, 2, 3, 5, 67)
        mk = np.where(rng.random((2, 1, 1, 67)) < 0.3, np.float32(-1e30), np.float32(0))
        got = s.copy()
        _f32_fused.scale_mask_softmax(got, np.broadcast_to(mk, s.shape), 0.25, 2)
        t = s.astype(np.float64) * 0.25 + mk
        e = np.exp(t - t.max(-1, keepdims=True))
        np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
    finally:
        _f32_fused.set_level(was)


def test_bert_tiny_fused_vs_onnxruntime(monkeypatch):
    """The zoo's torch-style BERT (fused LayerNormalization and the opset-13 decomposition):
    every block fused, dynamic batch and sequence from one compile."""
    from deepsparse_cy import zoo
    from deepsparse_cy.zoo.bert import BERT_TINY, build_bert, replace
    for cfg in (BERT_TINY, replace(BERT_TINY, opset=13, layernorm="decomposed")):
        m = build_bert(cfg, name="bert-tiny")
        feeds = [zoo.example_inputs(m, batch=b, seq=s, seed=b) for b, s in ((1, 16), (3, 41), (8, 128))]
        e = _check(m, feeds, "FusedAttention", monkeypatch, count=2, rtol=1e-4)
        ops = _ops(e)
        assert ops["FusedMatMul"] == 12 and ops["LayerNorm"] == 5 and ops["Softmax"] == 0 \
            and ops["Erf"] == 0 and ops["MatMul"] == 0


# --- squeeze-excitation ---------------------------------------------------------------------

def _se_model(rng, c, r, *, act1="Relu", gate="HardSigmoid", bias=True, mul_order=(0, 1),
              rank=4, extra_consumer=False):
    ones = [1] * (rank - 2)
    inits = [_init("w1", _rand(rng, r, c, *ones)), _init("w2", _rand(rng, c, r, *ones))]
    c1_in, c2_in = ["s", "w1"], ["h", "w2"]
    if bias:
        inits += [_init("b1", _rand(rng, r)), _init("b2", _rand(rng, c))]
        c1_in.append("b1")
        c2_in.append("b2")
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["s"]),
             helper.make_node("Conv", c1_in, ["h0"])]
    if act1 == "Relu":
        nodes.append(helper.make_node("Relu", ["h0"], ["h"]))
    elif act1 == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["h0"], ["h0s"]),
                  helper.make_node("Mul", ["h0", "h0s"], ["h"])]
    else:
        nodes.append(helper.make_node("Identity", ["h0"], ["h"]))
    nodes.append(helper.make_node("Conv", c2_in, ["g0"]))
    if gate == "HardSigmoid":
        nodes.append(helper.make_node("HardSigmoid", ["g0"], ["g"], alpha=0.2, beta=0.5))
    else:
        nodes.append(helper.make_node("Sigmoid", ["g0"], ["g"]))
    nodes.append(helper.make_node("Mul", [["x", "g"][i] for i in mul_order], ["out"]))
    outs = [helper.make_tensor_value_info("out", F, None)]
    if extra_consumer:
        outs.append(helper.make_tensor_value_info("g", F, None))
    spatial = ["h", "w", "d"][:rank - 2]
    ins = [helper.make_tensor_value_info("x", F, ["n", c] + spatial)]
    return _model(nodes, ins, outs, inits)


@pytest.mark.parametrize("c,r,act1,gate,bias,mul_order", [
    (40, 16, "Relu", "HardSigmoid", True, (0, 1)),     # MobileNetV3 (paddle gate)
    (72, 24, "None", "Sigmoid", False, (1, 0)),        # no activation, gate first in the Mul
    (130, 9, "SiLU", "Sigmoid", True, (0, 1)),          # EfficientNet's form, ragged widths
])
def test_squeeze_excite(c, r, act1, gate, bias, mul_order, monkeypatch):
    rng = np.random.default_rng(11)
    m = _se_model(rng, c, r, act1=act1, gate=gate, bias=bias, mul_order=mul_order)
    feeds = [{"x": 2 * _rand(rng, n, c, h, w)} for n, h, w in ((1, 1, 1), (2, 5, 7), (3, 24, 40))]
    e = _check(m, feeds, "SqueezeExcite", monkeypatch, rtol=1e-5)
    ops = _ops(e)
    assert ops["GlobalAveragePool"] == 0 and ops["Mul"] == 0 and ops["FusedConv"] == 0, ops


def test_squeeze_excite_3d_input(monkeypatch):
    """Conv1d-style SE (rank 3): the mean runs over the one spatial axis."""
    rng = np.random.default_rng(12)
    m = _se_model(rng, 24, 8, rank=3)
    feeds = [{"x": _rand(rng, n, 24, L)} for n, L in ((1, 1), (2, 50))]
    _check(m, feeds, "SqueezeExcite", monkeypatch, rtol=1e-5)


def test_squeeze_excite_gate_read_twice_not_fused(monkeypatch):
    rng = np.random.default_rng(13)
    m = _se_model(rng, 16, 4, extra_consumer=True)
    e = ds.compile_model(m)
    assert _ops(e)["SqueezeExcite"] == 0
    x = _rand(rng, 2, 16, 6, 6)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for g, r in zip(e.run([x]), sess.run(None, {"x": x})):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_squeeze_excite_padded_conv_not_fused(monkeypatch):
    """A 1x1 conv with padding turns the 1x1 pooled map into 3x3: not a squeeze-excite FC."""
    rng = np.random.default_rng(14)
    m = _se_model(rng, 8, 4)
    m.graph.node[1].attribute.extend([helper.make_attribute("pads", [1, 1, 1, 1])])
    m.graph.node[3].attribute.extend([helper.make_attribute("pads", [0, 0, 0, 0])])
    e = ds.compile_model(m)
    assert _ops(e)["SqueezeExcite"] == 0


@pytest.mark.parametrize("avx2", [False, True])
def test_squeeze_excite_kernel_both_copies(avx2):
    """The kernel against a float64 numpy reference: widths around the 8- and 64-column blocks
    of its transposed GEMVs, 1 to 2 threads, in place and not."""
    from deepsparse_cy.kernels import cpu_features
    if avx2 and not (cpu_features().get("avx2") and cpu_features().get("fma")):
        pytest.skip("no AVX2+FMA")
    rng = np.random.default_rng(15)
    was = _f32_fused.level()
    _f32_fused.set_avx2(avx2)
    acts = _f32_fused.ACTIVATIONS
    try:
        for n, c, r, hw in ((1, 1, 1, 1), (2, 7, 3, 5), (1, 64, 8, 33), (3, 130, 65, 71),
                            (1, 480, 120, 60), (2, 40, 16, 9000)):
            x = _rand(rng, n, c, hw)
            w1, w2 = _rand(rng, r, c), _rand(rng, c, r)
            b1, b2 = _rand(rng, r), _rand(rng, c)
            m = x.astype(np.float64).mean(-1)
            h = np.maximum(m @ w1.T.astype(np.float64) + b1, 0)
            g = np.clip((h @ w2.T.astype(np.float64) + b2) * 0.2 + 0.5, 0, 1)
            ref = x * g[:, :, None]
            out = np.empty_like(x)
            _f32_fused.squeeze_excite(x, np.ascontiguousarray(w1.T), b1, acts["Relu"], 0, 0,
                                      np.ascontiguousarray(w2.T), b2, acts["HardSigmoid"], 0.2,
                                      0.5, out, 2)
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()))
            xi = x.copy()                                    # in place, no biases, no act1
            h = m @ w1.T.astype(np.float64)
            g = 1 / (1 + np.exp(-(h @ w2.T.astype(np.float64))))
            _f32_fused.squeeze_excite(xi, np.ascontiguousarray(w1.T), None, 0, 0, 0,
                                      np.ascontiguousarray(w2.T), None, acts["Sigmoid"], 0, 0,
                                      xi, 1)
            np.testing.assert_allclose(xi, x * g[:, :, None], rtol=1e-4,
                                       atol=1e-5 * float(np.abs(x).max()))
        with pytest.raises(ValueError):
            _f32_fused.squeeze_excite(x, np.ascontiguousarray(w1.T), b2, 0, 0, 0,
                                      np.ascontiguousarray(w2.T), b2, 0, 0, 0, out, 1)
    finally:
        _f32_fused.set_level(was)


# --- ConvTranspose + activation -------------------------------------------------------------

@pytest.mark.parametrize("k,s,pads,act", [
    (2, 2, [0, 0, 0, 0], "Relu"),          # the 2x upsampling head: activation in the GEMM
    (2, 2, [0, 0, 0, 0], "Sigmoid"),
    (2, 2, [0, 0, 0, 0], "HardSwish"),
    (3, 2, [1, 1, 1, 1], "Relu"),          # overlapping windows: col2im, activation after
    (4, 2, [1, 1, 1, 1], "LeakyRelu"),
])
def test_conv_transpose_activation(k, s, pads, act, monkeypatch):
    rng = np.random.default_rng(16)
    c, m_ = 12, 5
    inits = [_init("w", _rand(rng, c, m_, k, k)), _init("b", _rand(rng, m_)),
             _init("half", np.float32(0.5))]
    # read from an arena value (not the feed) so repeated runs take the bound call
    nodes = [helper.make_node("Mul", ["x", "half"], ["xa"]),
             helper.make_node("ConvTranspose", ["xa", "w", "b"], ["y"], strides=[s, s],
                              pads=pads)]
    if act == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["y"], ["a"], alpha=0.1))
    else:
        nodes.append(helper.make_node(act, ["y"], ["a"]))
    nodes.append(helper.make_node("Mul", ["a", "half"], ["out"]))   # the output into a slot
    ins = [helper.make_tensor_value_info("x", F, ["n", c, "h", "w"])]
    model = _model(nodes, ins, [helper.make_tensor_value_info("out", F, None)], inits)
    feeds = [{"x": 2 * _rand(rng, n, c, h, w_)} for n, h, w_ in ((1, 1, 1), (2, 7, 5), (1, 24, 80))]
    e = _check(model, feeds, "FusedConvTranspose", monkeypatch, rtol=1e-5)
    ops = _ops(e)
    assert ops["ConvTranspose"] == 0 and ops[act] == 0, ops
    # repeated runs of one plan take the executor's bound call on the 2x2 path: same results
    # for new values
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for _ in range(3):
        x = 2 * _rand(rng, 1, c, 24, 80)
        ref = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(e.run([x])[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    from deepsparse_cy.ops import conv as conv_ops
    if k == s and conv_ops._FAST_CONV:        # the compiled path (not at the generic level)
        inst = e._plans[e._key([x])]._pool[0]
        assert any(inst.bound), inst.bound
