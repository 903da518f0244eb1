"""Helpers for the CNN / linear-algebra op tests (conv, pool, norm, softmax, linalg, quant,
resize): one-node models run through the registry (optionally with constant inputs, as the
engine passes initializers, and with a preallocated output buffer), onnxruntime and onnx's
ReferenceEvaluator as oracles, and onnx's backend node cases run through the engine."""
import functools
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

import deepsparse_cy.ops as ops
from deepsparse_cy.graph.ir import graph_from_proto
from deepsparse_cy.ops.registry import OpContext


def make_model(op_type, inputs, attrs=None, n_out=1, opset=21, domain=""):
    """inputs: list of (name, array or None) -> ModelProto with one node (None = omitted)."""
    names = [n if a is not None else "" for n, a in inputs]
    while names and names[-1] == "":
        names.pop()
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, domain=domain, **(attrs or {}))
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs if a is not None]
    g_out = [helper.make_empty_tensor_value_info(o) for o in outs]
    g = helper.make_graph([node], "g", g_in, g_out)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(domain, opset)])
    m.ir_version = 10 if opset >= 21 else 8
    return m


def feeds_of(inputs):
    return {n: a for n, a in inputs if a is not None}


def run_mine(op_type, inputs, attrs=None, n_out=1, opset=21, const=(), out_like=None):
    """Run our registered op. const: input indices passed as compile-time constants.
    out_like: expected arrays; when given, a preallocated output (filled with junk) is passed."""
    m = make_model(op_type, inputs, attrs, n_out, opset)
    g = graph_from_proto(m.graph, {"": opset})
    node = g.nodes[0]
    vals = [a for _, a in inputs]
    while vals and vals[-1] is None:
        vals.pop()
    consts = {i: vals[i] for i in const if i < len(vals) and vals[i] is not None}
    fac = ops.resolve(op_type, "", opset)
    assert fac is not None, f"{op_type}-{opset} not registered"
    op = fac(node, OpContext(node, opset, consts))
    outs = [None] * n_out
    if out_like is not None and n_out == 1:
        e = np.asarray(out_like[0])
        outs = [np.full(e.shape, 7, e.dtype)]
    res = op.run(list(vals), outs)
    return [np.asarray(r) if r is not None else None for r in res]


def run_ort(op_type, inputs, attrs=None, n_out=1, opset=21):
    ort = pytest.importorskip("onnxruntime")
    m = make_model(op_type, inputs, attrs, n_out, opset)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds_of(inputs))


def run_ref(op_type, inputs, attrs=None, n_out=1, opset=21):
    from onnx.reference import ReferenceEvaluator
    m = make_model(op_type, inputs, attrs, n_out, opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(m).run(None, feeds_of(inputs))


def assert_close(got, exp, rtol=1e-4, atol=1e-5):
    got, exp = np.asarray(got), np.asarray(exp)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
    if exp.dtype.kind in "iub":
        np.testing.assert_array_equal(got, exp)
    else:
        np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol)


def check(op_type, inputs, attrs=None, oracle="ort", n_out=1, opset=21, rtol=1e-4, atol=1e-5,
          const_sets=((), (1,), (1, 2))):
    """Compare our op against an oracle, with and without constant inputs / output buffers."""
    exp = (run_ort if oracle == "ort" else run_ref)(op_type, inputs, attrs, n_out, opset)
    for const in const_sets:
        for use_out in (False, True):
            got = run_mine(op_type, inputs, attrs, n_out, opset, const, exp if use_out else None)
            for g, e in zip(got, exp):
                assert_close(g, e, rtol, atol)


@functools.lru_cache(maxsize=1)
def _all_cases():
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases(None) if c.kind == "node"]


def conformance_params(op_types):
    """pytest params (ids = case names) of onnx node cases whose graph uses any of op_types."""
    op_types = set(op_types)
    return [pytest.param(c, id=c.name) for c in _all_cases()
            if op_types & {n.op_type for n in c.model.graph.node}]


def run_conformance_case(case):
    """Compile the case's model with the engine backend and compare as onnx's runner does."""
    from onnx import numpy_helper
    from onnx.backend.test.runner import Runner
    backend = pytest.importorskip("deepsparse_cy.backend")

    def val(v):
        if isinstance(v, onnx.TensorProto):
            return numpy_helper.to_array(v)
        return v

    rep = backend.DeepSparseCyBackend.prepare(case.model.SerializeToString())
    for inputs, ref in case.data_sets:
        out = rep.run([val(x) for x in inputs])
        Runner.assert_similar_outputs([val(x) for x in ref], list(out), rtol=case.rtol, atol=case.atol)
