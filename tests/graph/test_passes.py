"""Compile-time passes: BN folding, constant folding, identity/dropout and dead-node removal,
deterministic schedule; each checked against onnxruntime or numpy on the unoptimised graph."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import deepsparse_cy as ds
from deepsparse_cy.errors import ModelLoadError
from deepsparse_cy.graph import ir, passes
from deepsparse_cy.graph.schedule import topological_order

ort = pytest.importorskip("onnxruntime")


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ort(m, feeds):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _conv_bn_model(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    bn = [rng.uniform(0.5, 2, 8), rng.standard_normal(8), rng.standard_normal(8), rng.uniform(0.5, 2, 8)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")] + [
        numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(bn, ["s", "bb", "m", "v"])]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bnout"], epsilon=1e-3),
             helper.make_node("Relu", ["bnout"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, 10, 10])],
                  [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)


def test_batchnorm_folded_into_conv_matches_onnxruntime(rng):
    m = _conv_bn_model(rng)
    g = ir.graph_from_proto(m.graph, {"": 17})
    assert passes.fold_batchnorm_into_conv(g) == 1
    assert [n.op_type for n in g.nodes] == ["Conv", "Relu"]
    e = ds.compile_model(m)
    assert "BatchNormalization" not in [n.op_type for n, _ in e._program.steps]
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    ref = _ort(m, {"x": x})[0]
    np.testing.assert_allclose(e.run([x])[0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group,kernel,stride", [(1, 2, 2), (2, 3, 2), (1, 3, 1)])
def test_batchnorm_folded_into_conv_transpose_matches_onnxruntime(rng, group, kernel, stride):
    """ConvTranspose's output channels are its weight's second axis (per group): the fold must
    scale W[:, m] by the BN factor of output channel g * M/group + m."""
    cin, mg = 4, 3
    M = mg * group
    w = rng.standard_normal((cin, mg, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    bn = [rng.uniform(0.5, 2, M), rng.standard_normal(M), rng.standard_normal(M),
          rng.uniform(0.5, 2, M)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")] + [
        numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(bn, ["s", "bb", "m", "v"])]
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], group=group,
                              strides=[stride, stride]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"], epsilon=1e-3)]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["N", cin, 6, 7])],
               [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    g = ir.graph_from_proto(m.graph, {"": 17})
    assert passes.fold_batchnorm_into_conv(g) == 1
    assert [n.op_type for n in g.nodes] == ["ConvTranspose"]
    e = ds.compile_model(m)
    x = rng.standard_normal((2, cin, 6, 7)).astype(np.float32)
    np.testing.assert_allclose(e.run([x])[0], _ort(m, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_constant_folding_and_identity_removal(rng):
    c = rng.standard_normal((4,)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(c)),
             helper.make_node("Mul", ["k", "k"], ["k2"]),           # foldable
             helper.make_node("Identity", ["k2"], ["k3"]),          # removable
             helper.make_node("Add", ["x", "k3"], ["a"]),
             helper.make_node("Dropout", ["a"], ["d"]),             # inference: identity
             helper.make_node("Neg", ["x"], ["unused"]),            # dead
             helper.make_node("Relu", ["d"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [4])],
               [helper.make_tensor_value_info("y", TP.FLOAT, [4])])
    e = ds.compile_model(m)
    assert [n.op_type for n, _ in e._program.steps] == ["Add", "Relu"]
    x = rng.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(e.run([x])[0], np.maximum(x + c * c, 0), rtol=1e-6)


def test_shape_arithmetic_folded_per_plan(rng):
    # Reshape target computed from Shape(x): folded when the plan for x's shape is built.
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
             helper.make_node("Reshape", ["x", "n"], ["flat"]),
             helper.make_node("Relu", ["flat"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["A", "B"])],
               [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    e = ds.compile_model(m)
    for shape in [(2, 3), (4, 5), (2, 3)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(e.run([x])[0], np.maximum(x.reshape(-1), 0))
    rep = e.memory_report([np.zeros((4, 5), np.float32)])
    assert rep["folded_nodes"] == 2 and rep["steps"] == 2


def test_schedule_is_deterministic_and_detects_cycles():
    nodes = [helper.make_node("Relu", ["b"], ["c"], name="n0"),
             helper.make_node("Relu", ["x"], ["a"], name="n1"),
             helper.make_node("Relu", ["x"], ["b"], name="n2"),
             helper.make_node("Add", ["a", "c"], ["y"], name="n3")]
    g = ir.graph_from_proto(_model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1])],
                                   [helper.make_tensor_value_info("y", TP.FLOAT, [1])]).graph, {"": 17})
    order = [n.name for n in topological_order(g.nodes, {"x"})]
    assert order == ["n1", "n2", "n0", "n3"]
    cyc = [helper.make_node("Relu", ["q"], ["p"]), helper.make_node("Relu", ["p"], ["q"])]
    g2 = ir.graph_from_proto(_model(cyc, [helper.make_tensor_value_info("x", TP.FLOAT, [1])],
                                    [helper.make_tensor_value_info("p", TP.FLOAT, [1])]).graph, {"": 17})
    with pytest.raises(ModelLoadError, match="cycle"):
        topological_order(g2.nodes, {"x"})


def test_if_and_loop_subgraphs_read_outer_scope(rng):
    # If whose branches read an outer value; Loop accumulating an outer tensor.
    outer = helper.make_node("Neg", ["x"], ["nx"])
    then_g = helper.make_graph([helper.make_node("Add", ["nx", "x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TP.FLOAT, [3])])
    else_g = helper.make_graph([helper.make_node("Mul", ["nx", "x"], ["t2"])], "else", [],
                               [helper.make_tensor_value_info("t2", TP.FLOAT, [3])])
    iff = helper.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g)
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", TP.INT64, []), helper.make_tensor_value_info("c_in", TP.BOOL, []),
         helper.make_tensor_value_info("acc_in", TP.FLOAT, [3])],
        [helper.make_tensor_value_info("c_out", TP.BOOL, []), helper.make_tensor_value_info("acc_out", TP.FLOAT, [3])])
    loop = helper.make_node("Loop", ["trip", "", "r"], ["y"], body=body)
    m = _model([outer, iff, loop],
               [helper.make_tensor_value_info("x", TP.FLOAT, [3]), helper.make_tensor_value_info("cond", TP.BOOL, []),
                helper.make_tensor_value_info("trip", TP.INT64, [])],
               [helper.make_tensor_value_info("y", TP.FLOAT, [3])])
    e = ds.compile_model(m)
    x = rng.standard_normal(3).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond), "trip": np.array(4, np.int64)}
        np.testing.assert_allclose(e.mapped_run(feeds)["y"], _ort(m, feeds)[0], rtol=1e-6)
