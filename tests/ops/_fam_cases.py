"""Run onnx backend node test cases (single-node, for given op types) through the registry."""
import warnings

import numpy as np

import deepsparse_cy.ops as ops
from deepsparse_cy.graph.ir import graph_from_proto
from deepsparse_cy.ops.registry import OpContext

_CASES = None


def _all():
    global _CASES
    if _CASES is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from onnx.backend.test.case.node import collect_testcases
            _CASES = collect_testcases(None)
    return _CASES


def _f(a):
    a = np.asarray(a)
    if a.dtype.kind == "V" or a.dtype.name.startswith(("bfloat", "float8", "float4")):
        return a.astype(np.float64)
    return a


def run_cases(op_types, skip=()):
    """-> (number passed, list of (case name, error)). Cases whose node owns subgraphs are skipped
    (they need the engine's subgraph compiler; tools/conformance.py covers them)."""
    npass, fails = 0, []
    for t in _all():
        nodes = t.model.graph.node
        if len(nodes) != 1 or nodes[0].op_type not in op_types or t.name in skip:
            continue
        if any(a.type == a.GRAPH for a in nodes[0].attribute):
            continue
        opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in t.model.opset_import}
        try:
            g = graph_from_proto(t.model.graph, opsets)
            node = g.nodes[0]
            fac = ops.resolve(node.op_type, node.domain, opsets.get(node.domain, 1))
            assert fac is not None, f"{node.op_type} not registered"
            op = fac(node, OpContext(node, opsets.get(node.domain, 1), {}))
            for inputs, outputs in t.data_sets:
                feeds = dict(zip([i.name for i in t.model.graph.input], inputs))
                res = op.run([feeds[n] if n else None for n in node.inputs], None)
                exp_iter = iter(outputs)
                for k, nm in enumerate(node.outputs):
                    if not nm:
                        continue
                    exp, got = next(exp_iter), res[k]
                    if isinstance(exp, list):
                        assert len(exp) == len(got)
                        for a, b in zip(exp, got):
                            np.testing.assert_allclose(_f(b), _f(a), rtol=t.rtol, atol=t.atol)
                        continue
                    got = np.asarray(got)
                    assert got.shape == exp.shape, (k, got.shape, exp.shape)
                    assert got.dtype == exp.dtype, (k, got.dtype, exp.dtype)
                    if exp.dtype == object:
                        assert (got == exp).all()
                    else:
                        np.testing.assert_allclose(_f(got), _f(exp), rtol=t.rtol, atol=t.atol)
            npass += 1
        except Exception as e:  # noqa: BLE001 - collect every failure
            fails.append((t.name, f"{type(e).__name__}: {str(e)[:300]}"))
    return npass, fails
