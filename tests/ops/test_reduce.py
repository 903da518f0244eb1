"""deepsparse_cy/ops/reduce.py against onnx's ReferenceEvaluator and the node test cases."""
import numpy as np
import pytest

from _ref_common import check, node_cases

RNG = np.random.default_rng(4)
OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
       "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def data(dt, shape=(3, 4, 5)):
    if np.dtype(dt).kind == "f":
        return RNG.uniform(0.5, 1.5, size=shape).astype(dt)
    return RNG.integers(1, 4, size=shape).astype(dt)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axes", [None, [1], [0, 2], [-1], []])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_axes_input(op, axes, keepdims):
    ins = [("x", data(np.float32))] + ([("a", np.array(axes, np.int64))] if axes is not None else [])
    check(op, ins, {"keepdims": keepdims}, opset=18, rtol=1e-5, test_out=False)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axes", [None, [1], [0, -1]])
def test_axes_attr(op, axes):
    attrs = {"keepdims": 0, **({"axes": axes} if axes else {})}
    check(op, [("x", data(np.float32))], attrs, opset=11 if op == "ReduceSum" else 13, rtol=1e-5,
          test_out=False)


@pytest.mark.parametrize("op", OPS)
def test_noop_with_empty_axes(op):
    check(op, [("x", data(np.float32))], {"noop_with_empty_axes": 1}, opset=18, test_out=False)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                "ReduceSumSquare", "ReduceL1"])
@pytest.mark.parametrize("dt", [np.int32, np.int64, np.float64, np.float16])
def test_dtypes(op, dt):
    # The output keeps the input type (the reference widens int32 ReduceSumSquare to int64, so
    # compare values after casting its result).
    from _ref_common import assert_same, model, run_mine, run_ref
    m, feeds = model(op, [("x", data(dt)), ("a", np.array([1], np.int64))], opset=18)
    got = run_mine(m, feeds)[0]
    assert got.dtype == np.dtype(dt)
    assert_same(got, run_ref(m, feeds)[0].astype(dt), rtol=1e-2)


@pytest.mark.parametrize("op", OPS)
def test_empty_set(op):
    check(op, [("x", np.zeros((2, 0, 4), np.float32)), ("a", np.array([1], np.int64))], opset=18,
          test_out=False)


def test_node_cases():
    ran, fails = node_cases(OPS)
    assert ran > 80
    assert not fails, fails
