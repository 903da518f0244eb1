"""Bad inputs at run time are refused with a message saying what was expected; NaN/Inf
propagate as ONNX says; non-contiguous, read-only and zero-size arrays give correct results
(onnxruntime as the oracle). Issue 6, item 2."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import deepsparse_cy as ds
from deepsparse_cy.errors import DeepSparseCyError, InputError, ShapeError

ort = pytest.importorskip("onnxruntime")


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def vi(name, shape, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, shape)


def ort_run(m, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


TWO_IN = model([h.make_node("Add", ["a", "b"], ["y"])],
               [vi("a", ["N", 3]), vi("b", ["N", 3])], [vi("y", None)])


def _err(engine, inputs, cls=InputError):
    with pytest.raises(cls) as ei:
        engine.run(inputs)
    assert isinstance(ei.value, DeepSparseCyError)
    return str(ei.value)


# --- refused with what was expected --------------------------------------------------------------

def test_wrong_count():
    e = ds.compile_model(TWO_IN)
    a = np.ones((2, 3), np.float32)
    msg = _err(e, [a])
    assert "expected 2 inputs" in msg and "'a'" in msg and "'b'" in msg and "got 1" in msg
    assert "got 3" in _err(e, [a, a, a])
    assert "list" in _err(e, {"a": a})


def test_wrong_name():
    e = ds.compile_model(TWO_IN)
    a = np.ones((2, 3), np.float32)
    with pytest.raises(InputError) as ei:
        e.mapped_run({"a": a, "c": a})
    msg = str(ei.value)
    assert "'c'" in msg and "missing ['b']" in msg and "['a', 'b']" in msg


def test_wrong_dtype():
    e = ds.compile_model(TWO_IN)
    a = np.ones((2, 3), np.float32)
    msg = _err(e, [a, a.astype(np.float64)])
    assert "'b'" in msg and "expected dtype float32" in msg and "float64" in msg
    msg = _err(e, [a, [["x"] * 3] * 2])
    assert "'b'" in msg


def test_wrong_rank_and_shape():
    m = model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", None)])
    e = ds.compile_model(m)
    msg = _err(e, [np.ones((2, 3, 1), np.float32)])
    assert "expected rank 2" in msg and "[2, 3]" in msg and "[2, 3, 1]" in msg
    msg = _err(e, [np.ones((2, 4), np.float32)])
    assert "expected shape [2, 3]" in msg and "axis 1" in msg
    msg = _err(e, [np.float32(1)])
    assert "rank 2" in msg


def test_symbolic_dimension_disagreement():
    e = ds.compile_model(TWO_IN)
    msg = _err(e, [np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)])
    assert "'N'" in msg and "2" in msg and "4" in msg


def _shape_model(op, extra_inputs=(), **attrs):
    x = vi("x", [2, 6])
    s = vi("s", [None], T.INT64)
    node = h.make_node(op, ["x", "s", *extra_inputs], ["y"], name=f"the_{op.lower()}", **attrs)
    return model([node], [x, s] + [vi(n, [None], T.INT64) for n in extra_inputs], [vi("y", None)])


def test_impossible_reshape_expand_slice_name_the_node():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    e = ds.compile_model(_shape_model("Reshape"))
    msg = _err(e, [x, np.array([5, 5], np.int64)], ShapeError)
    assert "the_reshape" in msg and "(2, 6)" in msg and "[5, 5]" in msg
    np.testing.assert_array_equal(e.run([x, np.array([3, 4], np.int64)])[0], x.reshape(3, 4))
    e = ds.compile_model(_shape_model("Expand"))
    msg = _err(e, [x, np.array([3, 5], np.int64)], ShapeError)
    assert "the_expand" in msg and "broadcast" in msg
    e = ds.compile_model(_shape_model("Slice", ["e", "ax"]))
    msg = _err(e, [x, np.array([0], np.int64), np.array([1], np.int64), np.array([5], np.int64)],
               DeepSparseCyError)
    assert "the_slice" in msg and "axis" in msg


# --- NaN and Inf -------------------------------------------------------------------------------------

SPECIALS = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0],
                     [3e38, -3e38, 1e-45, np.nan, 2.0, -1.0]], np.float32)


@pytest.mark.parametrize("op, attrs", [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("Exp", {}), ("Abs", {}), ("Neg", {}),
    ("Softmax", {"axis": 1}), ("LeakyRelu", {}), ("Elu", {}), ("Sqrt", {}), ("Log", {}),
    ("Floor", {}), ("HardSigmoid", {}), ("Softplus", {}), ("Erf", {}), ("Sign", {}),
    ("ReduceMax", {"keepdims": 0}), ("ReduceSum", {"keepdims": 0}), ("ReduceMean", {"keepdims": 0}),
    ("IsNaN", {}), ("IsInf", {}),
    # not ArgMax: where NaN is the spec is silent (numpy and onnx's reference pick the NaN,
    # onnxruntime skips it)
])
def test_nan_inf_unary_match_onnxruntime(op, attrs):
    out_t = T.INT64 if op == "ArgMax" else (T.BOOL if op in ("IsNaN", "IsInf") else T.FLOAT)
    m = model([h.make_node(op, ["x"], ["y"], **attrs)], [vi("x", [2, 6])], [vi("y", None, out_t)],
              opset=17)
    got = ds.compile_model(m).run([SPECIALS])[0]
    want = ort_run(m, {"x": SPECIALS})[0]
    # atol = FLT_MIN: whether tanh/erf of a denormal is that denormal or 0 (flush) is a
    # floating-point environment choice, not a propagation question
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1.2e-38, equal_nan=True)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub", "Max", "Min", "MatMul", "Pow"])
def test_nan_inf_binary_match_onnxruntime(op):
    b = SPECIALS[:, ::-1].copy() if op != "MatMul" else SPECIALS.T.copy()
    m = model([h.make_node(op, ["a", "b"], ["y"])], [vi("a", [2, 6]), vi("b", list(b.shape))],
              [vi("y", None)])
    got = ds.compile_model(m).run([SPECIALS, b])[0]
    want = ort_run(m, {"a": SPECIALS, "b": b})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)


def test_nan_in_a_dense_conv_and_gemm_propagates():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    m = model([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
              [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits=[nh.from_array(w, "w")])
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    x[0, 1, 4, 4] = np.nan
    x[0, 2, 0, 0] = np.inf
    got = ds.compile_model(m).run([x])[0]
    want = ort_run(m, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True)


# --- non-contiguous, read-only, zero-size ----------------------------------------------------------

def _cnn():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    wf = rng.standard_normal((8, 5)).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("GlobalAveragePool", ["r"], ["p"]),
             h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("MatMul", ["f", "wf"], ["y"])]
    return model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("y", None)],
                 inits=[nh.from_array(w, "w"), nh.from_array(wf, "wf")])


def _mlp():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "b"], ["a"]),
             h.make_node("Softmax", ["a"], ["y"], axis=-1)]
    return model(nodes, [vi("x", ["N", 6]), vi("b", ["N", 4])], [vi("y", None)],
                 inits=[nh.from_array(w, "w")])


def _variants(rng):
    big = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    return {
        "strided": big[:, :, ::2, ::2],                                     # non-contiguous
        "transposed": np.ascontiguousarray(big[:, :, :8, :8].transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
        "fortran": np.asfortranarray(big[:, :, :8, :8]),
        "negative_stride": big[::-1, :, :8, 8::-1][:, :, :, :8],
        "readonly": _readonly(big[:, :, :8, :8].copy()),
        "unaligned": _unaligned(big[:, :, :8, :8]),
    }


def _readonly(a):
    a.flags.writeable = False
    return a


def _unaligned(a):
    raw = np.empty(a.nbytes + 1, np.uint8)[1:]
    u = raw.view(np.float32).reshape(a.shape) if raw.ctypes.data % 4 == 0 else \
        np.frombuffer(raw.data, dtype=np.float32).reshape(a.shape)
    u[...] = a
    return u


@pytest.mark.parametrize("kind", ["strided", "transposed", "fortran", "negative_stride", "readonly",
                                  "unaligned"])
def test_odd_layouts_match_onnxruntime(kind):
    rng = np.random.default_rng(3)
    x = _variants(rng)[kind]
    before = x.copy()
    m = _cnn()
    e = ds.compile_model(m)
    got = e.run([x])[0]
    want = ort_run(m, {"x": np.ascontiguousarray(x)})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(x, before)          # inputs are never written
    # the same engine and plan on a contiguous copy gives the same bits
    np.testing.assert_array_equal(e.run([np.ascontiguousarray(x)])[0], got)


def test_mlp_odd_layouts():
    rng = np.random.default_rng(4)
    xb = rng.standard_normal((6, 10)).astype(np.float32)
    x = xb.T[::2]                                   # (5, 6), non-contiguous
    b = _readonly(rng.standard_normal((5, 4)).astype(np.float32))
    m = _mlp()
    got = ds.compile_model(m).run([x, b])[0]
    want = ort_run(m, {"x": np.ascontiguousarray(x), "b": b})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build", [_cnn, _mlp])
def test_zero_size_batch(build):
    m = build()
    e = ds.compile_model(m)
    if build is _cnn:
        feeds = {"x": np.zeros((0, 3, 8, 8), np.float32)}
    else:
        feeds = {"x": np.zeros((0, 6), np.float32), "b": np.zeros((0, 4), np.float32)}
    got = e.run(list(feeds.values()))[0]
    want = ort_run(m, feeds)[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    # and a non-empty batch afterwards still works (separate plan per shape)
    if build is _mlp:
        x = np.ones((2, 6), np.float32)
        b = np.zeros((2, 4), np.float32)
        np.testing.assert_allclose(e.run([x, b])[0], ort_run(m, {"x": x, "b": b})[0], rtol=1e-5)


def test_zero_size_elementwise_and_reduce():
    m = model([h.make_node("Add", ["a", "b"], ["s"]), h.make_node("ReduceSum", ["s"], ["y"], keepdims=1)],
              [vi("a", [None, 3]), vi("b", [1, 3])], [vi("y", None)])
    a = np.zeros((0, 3), np.float32)
    b = np.ones((1, 3), np.float32)
    got = ds.compile_model(m).run([a, b])[0]
    want = ort_run(m, {"a": a, "b": b})[0]
    np.testing.assert_array_equal(got, want)


def test_outputs_are_not_views_of_inputs_or_of_each_other():
    m = model([h.make_node("Identity", ["x"], ["y"]), h.make_node("Relu", ["x"], ["z"])],
              [vi("x", [2, 3])], [vi("y", None), vi("z", None)])
    x = np.ones((2, 3), np.float32)
    e = ds.compile_model(m)
    y, z = e.run([x])
    y[...] = 5
    z[...] = 7
    np.testing.assert_array_equal(x, 1)
    y2, z2 = e.run([x])
    np.testing.assert_array_equal(y2, 1)
    np.testing.assert_array_equal(z2, 1)


def test_engine_survives_a_failed_run():
    e = ds.compile_model(_shape_model("Reshape"))
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    for _ in range(3):
        with pytest.raises(ShapeError):
            e.run([x, np.array([7, 7], np.int64)])
        np.testing.assert_array_equal(e.run([x, np.array([4, 3], np.int64)])[0], x.reshape(4, 3))


def test_onnx_model_is_not_modified():
    m = _cnn()
    before = m.SerializeToString()
    ds.compile_model(m).run([np.ones((1, 3, 8, 8), np.float32)])
    assert m.SerializeToString() == before
