"""Shared helpers for my op tests: build a one-node model, run it through the registered op and
through onnx's ReferenceEvaluator / onnxruntime (oracles only)."""
import numpy as np
import onnx
from onnx import helper

import deepsparse_cy.ops as ops
from deepsparse_cy.graph.ir import graph_from_proto
from deepsparse_cy.ops.registry import OpContext


def one_node_model(op_type, inputs, n_out, attrs=None, domain="", opset=None, out_names=None,
                   out_types=None):
    """inputs: list of (name, array or None). Returns (model, feeds)."""
    opset = opset or {"": 21}
    names = [n if a is not None else "" for n, a in inputs]
    outs = out_names or [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, domain=domain, **(attrs or {}))
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs if a is not None]
    out_types = out_types or [np.float32] * len(outs)
    g_out = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
             for o, t in zip(outs, out_types) if o]
    graph = helper.make_graph([node], "g", g_in, g_out)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()])
    model.ir_version = 10
    feeds = {n: a for n, a in inputs if a is not None}
    return model, feeds


def run_mine(model, feeds):
    opsets = {o.domain: o.version for o in model.opset_import}
    g = graph_from_proto(model.graph, opsets)
    node = g.nodes[0]
    fac = ops.resolve(node.op_type, node.domain, opsets[node.domain])
    assert fac is not None, node.op_type
    op = fac(node, OpContext(node, opsets[node.domain], {}))
    args = [feeds[n] if n else None for n in node.inputs]
    res = op.run(args, None)
    return [r for r, nm in zip(res, node.outputs) if nm]


def run_ref(model, feeds):
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, feeds)


def run_ort(model, feeds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def close(got, exp, rtol=1e-5, atol=1e-6):
    assert len(got) >= len(exp)
    for g, e in zip(got, exp):
        g = np.asarray(g)
        e = np.asarray(e)
        assert g.shape == e.shape, (g.shape, e.shape)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
