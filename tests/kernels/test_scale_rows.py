"""_f32_fused.scale_rows and the Mul op's bound row scale (ops/fast_fused._mul_bind): rows of
x each times one value, bit for bit numpy's broadcast multiply, at every level this machine
runs, for ragged row lengths, special values, in place and on two threads; the Mul steps of a
graph bind to it only where one operand broadcasts over the other's trailing axes, and give
numpy's values in every case (float64, scalars, other broadcasts)."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import deepsparse_cy as ds
from _kernel_cases import f32_level, same_bits as _same  # noqa: F401 (a fixture)
from deepsparse_cy.kernels import _f32_fused


@pytest.mark.parametrize("rows,n", [(1, 1), (3, 7), (5, 16), (4, 33), (96, 120), (2, 70000)])
@pytest.mark.parametrize("nt", [1, 2])
def test_scale_rows_matches_numpy(f32_level, rows, n, nt):
    rng = np.random.default_rng(rows * n)
    x = (rng.standard_normal((rows, n)) * 10.0 ** rng.integers(-30, 30, (rows, n))).astype(np.float32)
    s = rng.standard_normal(rows).astype(np.float32)
    x.reshape(-1)[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38][: x.size]
    s[0] = -0.0 if rows > 1 else s[0]
    with np.errstate(all="ignore"):
        ref = x * s[:, None]
    y = np.full_like(x, 7.0)
    _f32_fused.scale_rows(x, s, y, nt)
    _same(y, ref)
    z = x.copy()
    _f32_fused.scale_rows(z, s, z, nt)        # in place
    _same(z, ref)
    with pytest.raises(ValueError):
        _f32_fused.scale_rows(x, s[:-1] if rows > 1 else np.zeros(2, np.float32), y, nt)


def _mul_model(sa, sb, tp=TensorProto.FLOAT):
    g = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Relu", ["b"], ["rb"]),
         helper.make_node("Mul", ["ra", "rb"], ["m"]), helper.make_node("Neg", ["m"], ["y"])],
        "g", [helper.make_tensor_value_info("a", tp, sa), helper.make_tensor_value_info("b", tp, sb)],
        [helper.make_tensor_value_info("y", tp, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString()


@pytest.mark.parametrize("sa,sb,fast", [
    ([1, 96, 3, 40], [1, 96, 1, 1], True),     # an SE block's channel scale
    ([1, 8, 1, 1], [1, 8, 5, 7], True),        # the scale first
    ([2, 6, 5], [2, 6, 1], True),
    ([2, 6, 5], [6, 1], False),                # broadcast over the batch too: numpy
    ([1, 4, 3, 3], [1, 1, 1, 1], False),       # one value: numpy
    ([1, 4, 3, 3], [1, 4, 3, 1], True),
    ([1, 4, 3, 3], [1, 1, 3, 3], False),
    ([3, 5], [3, 5], False),                   # no broadcast
])
def test_mul_binds_row_scale(sa, sb, fast):
    e = ds.compile_model(_mul_model(sa, sb))
    rng = np.random.default_rng(len(sa) * 7 + sum(sb))
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    for _ in range(2):
        y = e.run([a, b])[0]
    np.testing.assert_array_equal(y, -(np.maximum(a, 0) * np.maximum(b, 0)))
    plan = next(iter(e._plans.values()))
    inst = plan.acquire()
    plan.release(inst)
    i = next(i for i, st in enumerate(plan.steps) if st[0].op_type == "Mul")
    assert inst.bound[i], "the Mul step binds"
    assert (inst.bound[i][0] is _f32_fused.scale_rows) == fast


def test_mul_float64_keeps_numpy():
    e = ds.compile_model(_mul_model([1, 4, 2, 2], [1, 4, 1, 1], TensorProto.DOUBLE))
    a = np.random.default_rng(0).standard_normal((1, 4, 2, 2))
    b = np.random.default_rng(1).standard_normal((1, 4, 1, 1))
    for _ in range(2):
        y = e.run([a, b])[0]
    np.testing.assert_array_equal(y, -(np.maximum(a, 0) * np.maximum(b, 0)))
