"""Helpers for the reference-op tests (elementwise, cast, tensor, gather, reduce, sequence,
string): one-node models run through the registry, with onnx's ReferenceEvaluator as oracle, and
onnx backend node test cases run through the registry by a tiny executor."""
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

import deepsparse_cy.ops as ops
from deepsparse_cy.backend import proto_to_value
from deepsparse_cy.graph.ir import graph_from_proto
from deepsparse_cy.ops.registry import OpContext


def model(op_type, inputs, n_out=1, attrs=None, opset=21):
    """inputs: list of (name, array or None). -> (ModelProto, feeds)."""
    names = [n if a is not None else "" for n, a in inputs]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, **(attrs or {}))
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype) if a.dtype != object
                                          else onnx.TensorProto.STRING, a.shape)
            for n, a in inputs if a is not None]
    g_out = [helper.make_empty_tensor_value_info(o) for o in outs]
    g = helper.make_graph([node], "g", g_in, g_out)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m, {n: a for n, a in inputs if a is not None}


def run_graph(g, feeds, outs_for=None):
    """Run an ir.Graph node by node through the registry; outs_for: name -> preallocated buffer."""
    env = dict(g.initializers)
    env.update(feeds)
    for n in g.nodes:
        opset = g.opsets.get(n.domain, 1)
        fac = ops.resolve(n.op_type, n.domain, opset)
        if fac is None:
            raise LookupError(f"{n.op_type}-{opset} not registered")
        op = fac(n, OpContext(n, opset, {}))
        ins = [env[x] if x else None for x in n.inputs]
        outs = None
        if outs_for and len(n.outputs) == 1 and n.outputs[0] in outs_for:
            outs = [outs_for[n.outputs[0]]]
        for name, r in zip(n.outputs, op.run(ins, outs)):
            if name:
                env[name] = r
    return [env[o] for o in g.output_names]


def run_mine(m, feeds, use_out_like=None):
    g = graph_from_proto(m.graph, {o.domain: o.version for o in m.opset_import})
    outs_for = None
    if use_out_like is not None:
        outs_for = {g.output_names[0]: np.full(use_out_like.shape, 7, dtype=use_out_like.dtype)}
    return run_graph(g, feeds, outs_for)


def run_ref(m, feeds):
    from onnx.reference import ReferenceEvaluator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return ReferenceEvaluator(m).run(None, feeds)


def _f64(a):
    return np.asarray(a).astype(np.float64)


def assert_same(got, exp, rtol=1e-5, atol=1e-6):
    if isinstance(exp, list):
        assert isinstance(got, list) and len(got) == len(exp)
        for a, b in zip(got, exp):
            assert_same(a, b, rtol, atol)
        return
    if exp is None:
        assert got is None
        return
    assert isinstance(got, np.ndarray), type(got)
    exp = np.asarray(exp)
    if exp.dtype.kind == "U":
        exp = exp.astype(object)
    assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    if exp.dtype == object:
        assert got.tolist() == exp.tolist()
    elif exp.dtype.kind in "biu":
        np.testing.assert_array_equal(got, exp)
    else:
        np.testing.assert_allclose(_f64(got), _f64(exp), rtol=rtol, atol=atol, equal_nan=True)


def check(op_type, inputs, attrs=None, opset=21, n_out=1, rtol=1e-5, atol=1e-6, test_out=True):
    """Compare the registered op with ReferenceEvaluator (and its out= path when it has one)."""
    m, feeds = model(op_type, inputs, n_out, attrs, opset)
    exp = run_ref(m, feeds)
    got = run_mine(m, feeds)
    for g_, e in zip(got, exp):
        assert_same(g_, e, rtol, atol)
    if test_out and n_out == 1 and isinstance(exp[0], np.ndarray) and exp[0].dtype != object:
        got2 = run_mine(m, feeds, use_out_like=np.asarray(exp[0]))
        assert_same(got2[0], exp[0], rtol, atol)
    return got


_CASES = None


_to_value = proto_to_value   # test data decoded as onnx's runner does


def _has_subgraph(m):
    return any(a.type in (a.GRAPH, a.GRAPHS) for n in m.graph.node for a in n.attribute)


# Every op the reference modules tested here own; node_cases runs only graphs made of these
# (graphs that also need other families' ops are tools/conformance.py's business).
MINE = set("""Add Sub Mul Div Pow Mod Abs Neg Exp Log Sqrt Reciprocal Floor Ceil Round Sign Erf Sin
Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Min Max Sum Mean Clip Where IsNaN IsInf BitShift
BitwiseAnd BitwiseOr BitwiseXor BitwiseNot And Or Xor Not Equal Less Greater LessOrEqual
GreaterOrEqual Relu LeakyRelu PRelu Elu Selu Celu Sigmoid HardSigmoid HardSwish Softplus Softsign
Tanh ThresholdedRelu Shrink Gelu Mish Swish SwiGLU Cast CastLike BitCast Reshape Flatten Squeeze
Unsqueeze Transpose Concat Split Slice Pad Tile Expand Shape Size Identity ConstantOfShape Constant
Range EyeLike Trilu DepthToSpace SpaceToDepth CenterCropPad ReverseSequence Compress NonZero Unique
OneHot TopK ArgMax ArgMin CumSum CumProd Dropout Det Col2Im Gather GatherElements GatherND Scatter
ScatterElements ScatterND TensorScatter ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare SequenceConstruct SequenceEmpty SequenceAt
SequenceInsert SequenceErase SequenceLength SplitToSequence ConcatFromSequence Optional
OptionalHasElement OptionalGetElement StringNormalizer StringConcat StringSplit
RegexFullMatch""".split())


def node_cases(op_types):
    """Backend node test cases that use any of op_types, need no subgraph and only ops in MINE.
    -> (cases run, list of (case name, error))."""
    global _CASES
    if _CASES is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from onnx.backend.test.case.node import collect_testcases
            _CASES = collect_testcases(None)
    from onnx.backend.test.runner import Runner
    ran, fails = 0, []
    for c in _CASES:
        types = {n.op_type for n in c.model.graph.node}
        if not types & set(op_types) or _has_subgraph(c.model):
            continue
        opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in c.model.opset_import}
        if not types <= MINE:
            continue
        g = graph_from_proto(c.model.graph, opsets)
        ran += 1
        try:
            for ins, outs in c.data_sets:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with np.errstate(all="ignore"):
                        res = run_graph(g, dict(zip(g.input_names, [_to_value(x) for x in ins])))
                Runner.assert_similar_outputs([_to_value(x) for x in outs], res, c.rtol, c.atol)
        except Exception as e:  # noqa: BLE001 - collected and reported by the test
            fails.append((c.name, f"{type(e).__name__}: {str(e)[:300]}"))
    return ran, fails
