"""Hostile models: each ends in a DeepSparseCyError subclass naming the problem, at compile time
(issue 6, item 1). Over-budget tensors are refused before they are allocated; external data
outside the model's folder is refused before any file is opened."""
from __future__ import annotations

import builtins
import io
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import deepsparse_cy as ds
from deepsparse_cy.errors import (DeepSparseCyError, ModelLoadError, ResourceError, ShapeError,
                                  UnsupportedOperatorError)

X = h.make_tensor_value_info("X", T.FLOAT, [2, 3])
Y_NOSHAPE = h.make_tensor_value_info("Y", T.FLOAT, None)
Y = h.make_tensor_value_info("Y", T.FLOAT, [2, 3])
ONES = np.ones((2, 3), np.float32)


def model(nodes, inputs=(X,), outputs=(Y_NOSHAPE,), inits=(), opset=17, extra=(), sparse=()):
    g = h.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(inits),
                     sparse_initializer=list(sparse))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset), *extra])


def refused(m, cls, *needles, **kw):
    """compile_model(m) must raise cls (a DeepSparseCyError) whose message holds all needles."""
    with pytest.raises(cls) as ei:
        ds.compile_model(m, **kw)
    assert isinstance(ei.value, DeepSparseCyError)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# --- bytes that are not a model --------------------------------------------------------------------

GOOD = model([h.make_node("Relu", ["X"], ["Y"])]).SerializeToString()


@pytest.mark.parametrize("data, needle", [
    (b"\x00\xff" * 50, "cannot parse"),
    (GOOD[: len(GOOD) // 2], "cannot parse"),
    (GOOD[:-3], "cannot parse"),
    (b"", "no graph"),
    (b"\x08\x07", "no graph"),                     # a valid ModelProto with only ir_version
    (bytes(range(256)) * 4, "cannot parse"),
])
def test_garbage_and_truncated_bytes(data, needle):
    refused(data, ModelLoadError, needle)


def test_garbage_file_and_missing_file(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"PK\x03\x04 this is a zip, not onnx" * 10)
    refused(str(p), ModelLoadError, "cannot parse", "m.onnx")
    refused(str(tmp_path / "nope.onnx"), ModelLoadError, "not found")
    refused(12345, ModelLoadError, "path, bytes or onnx.ModelProto")


def test_every_truncation_of_a_small_model_is_refused_or_runs():
    # Protobuf may accept some prefixes (a shorter but valid message): those must compile or be
    # refused cleanly, never crash or raise a foreign exception.
    for n in range(len(GOOD)):
        try:
            e = ds.compile_model(GOOD[:n])
            e.run([ONES])
        except DeepSparseCyError:
            pass


# --- graph structure -----------------------------------------------------------------------------

def test_undefined_value_name():
    m = model([h.make_node("Add", ["X", "Z"], ["Y"], name="add0")])
    refused(m, ModelLoadError, "'Z'", "add0", "defines")


def test_graph_output_never_produced():
    m = model([h.make_node("Relu", ["X"], ["A"])], outputs=[Y_NOSHAPE])
    msg = refused(m, ModelLoadError, "'Y'")
    assert "not produced" in msg or "not an output of any node" in msg


def test_cycle():
    m = model([h.make_node("Add", ["X", "B"], ["A"], name="a"),
               h.make_node("Relu", ["A"], ["B"], name="b"),
               h.make_node("Relu", ["A"], ["Y"], name="c")])
    refused(m, ModelLoadError, "cycle", "'a'", "'b'")


def test_self_loop():
    m = model([h.make_node("Add", ["X", "Y"], ["Y"], name="selfie")])
    refused(m, ModelLoadError, "selfie", "cycle")


@pytest.mark.parametrize("outputs", [(Y_NOSHAPE,), (Y,)])
def test_duplicate_outputs(outputs):
    m = model([h.make_node("Relu", ["X"], ["Y"], name="r"), h.make_node("Abs", ["X"], ["Y"], name="a")],
              outputs=outputs)
    refused(m, ModelLoadError, "'Y'")


def test_output_shadowing_an_input():
    m = model([h.make_node("Relu", ["X"], ["X"], name="r")], outputs=[X])
    refused(m, ModelLoadError, "'X'")


def test_unknown_ops_and_domains_listed_together():
    m = model([h.make_node("Foo", ["X"], ["A"], name="f1"),
               h.make_node("Bar", ["A"], ["B"], domain="com.x", name="b1"),
               h.make_node("Relu", ["B"], ["C"], name="fine"),
               h.make_node("Baz", ["C"], ["Y"], domain="com.y", name="z1")],
              extra=[h.make_opsetid("com.x", 1)])
    msg = refused(m, UnsupportedOperatorError, "3 unsupported", "'f1'", "Foo", "'b1'", "com.x::Bar",
                  "'z1'", "com.y::Baz")
    assert "fine" not in msg


def test_unknown_op_inside_a_subgraph_is_listed_too():
    then = h.make_graph([h.make_node("Nope", ["X"], ["t"], name="inner")], "then", [],
                        [h.make_tensor_value_info("t", T.FLOAT, None)])
    els = h.make_graph([h.make_node("Relu", ["X"], ["e"])], "else", [],
                       [h.make_tensor_value_info("e", T.FLOAT, None)])
    c = h.make_tensor_value_info("c", T.BOOL, [])
    m = model([h.make_node("If", ["c"], ["Y"], then_branch=then, else_branch=els, name="if0"),
               h.make_node("Zap", ["X"], ["Q"], name="outer")], inputs=[X, c])
    refused(m, UnsupportedOperatorError, "2 unsupported", "'inner'", "Nope", "'outer'", "Zap")


@pytest.mark.parametrize("outputs", [(Y_NOSHAPE,), (Y,)])
@pytest.mark.parametrize("op, attr, value, want", [
    ("Softmax", "axis", "one", "INT"),
    ("Transpose", "perm", 1.5, "INTS"),
    ("LeakyRelu", "alpha", [1, 2], "FLOAT"),
    ("Transpose", "perm", "01", "INTS"),
])
def test_wrong_attribute_type(outputs, op, attr, value, want):
    n = h.make_node(op, ["X"], ["Y"], name="n0")
    n.attribute.append(h.make_attribute(attr, value))
    refused(model([n], outputs=outputs), ModelLoadError, attr, want)


def test_missing_required_attribute_and_bad_arity():
    refused(model([h.make_node("Cast", ["X"], ["Y"], name="c0")]), ModelLoadError, "to")
    refused(model([h.make_node("Add", ["X"], ["Y"], name="a0")]), ModelLoadError, "input")
    refused(model([h.make_node("Relu", ["X", "X"], ["Y"], name="r0")]), ModelLoadError, "input")


def test_attribute_without_type():
    n = h.make_node("Softmax", ["X"], ["Y"], name="s0")
    a = n.attribute.add()
    a.name = "axis"
    a.i = 1          # value set, type left UNDEFINED
    refused(model([n]), ModelLoadError, "s0", "type")


# --- initializers ------------------------------------------------------------------------------------

def _add_w(t, outputs=(Y_NOSHAPE,)):
    return model([h.make_node("Add", ["X", "W"], ["Y"])], inits=[t], outputs=outputs)


@pytest.mark.parametrize("outputs", [(Y_NOSHAPE,), (Y,)])
def test_initializer_raw_data_too_short(outputs):
    t = nh.from_array(np.ones((2, 3), np.float32), "W")
    t.raw_data = t.raw_data[:-4]
    refused(_add_w(t, outputs), ModelLoadError, "W", "raw_data")


def test_initializer_raw_data_too_long():
    t = nh.from_array(np.ones((2, 3), np.float32), "W")
    t.raw_data = t.raw_data + b"\0" * 4
    refused(_add_w(t), ModelLoadError, "W")


def test_initializer_float_data_too_short():
    t = h.make_tensor("W", T.FLOAT, [2, 3], [1.0] * 6)
    del t.float_data[-1]
    refused(_add_w(t), ModelLoadError, "W")


def test_initializer_huge_dims_small_data():
    t = nh.from_array(np.ones((2, 3), np.float32), "W")
    del t.dims[:]
    t.dims.extend([1_000_000, 1_000_000])
    refused(_add_w(t), ModelLoadError, "W")


def test_large_initializer_length_mismatch():
    # Over 64 KiB of weights: the checker sees a stub (graph.loader._skeleton); the decoder must
    # still catch the disagreement between data length and shape.
    t = nh.from_array(np.ones((200, 200), np.float32), "W")
    t.raw_data = t.raw_data[:-8]
    W_in = h.make_tensor_value_info("X", T.FLOAT, [200, 200])
    m = model([h.make_node("Add", ["X", "W"], ["Y"])], inputs=[W_in], inits=[t])
    refused(m, ModelLoadError, "'W'")


def test_negative_dims():
    t = nh.from_array(np.ones((2, 3), np.float32), "W")
    del t.dims[:]
    t.dims.extend([-2, -3])
    refused(_add_w(t), ModelLoadError, "W")


def test_sparse_initializer_out_of_range_and_huge():
    vals = nh.from_array(np.array([1.0, 2.0], np.float32), "W")
    idx = nh.from_array(np.array([0, 99], np.int64), "W_idx")
    sp = h.make_sparse_tensor(vals, idx, [2, 3])
    refused(_add_w_sparse(sp), ModelLoadError, "W")
    idx = nh.from_array(np.array([0, 1], np.int64), "W_idx")
    sp = h.make_sparse_tensor(vals, idx, [10**8, 10**8])
    refused(_add_w_sparse(sp), ModelLoadError, "W")


def _add_w_sparse(sp):
    return model([h.make_node("Add", ["X", "W"], ["Y"])], sparse=[sp])


# --- external data -----------------------------------------------------------------------------------

class OpenSpy:
    """Records every path opened through builtins.open, io.open and os.open."""

    def __init__(self, monkeypatch):
        self.paths = []
        real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

        def spy(real):
            def f(path, *a, **k):
                if isinstance(path, (str, bytes, os.PathLike)):
                    self.paths.append(os.path.realpath(os.fsdecode(path)))
                return real(path, *a, **k)
            return f
        monkeypatch.setattr(builtins, "open", spy(real_open))
        monkeypatch.setattr(io, "open", spy(real_io_open))
        monkeypatch.setattr(os, "open", spy(real_os_open))


def _external_model(folder, location, length=24, offset=0):
    t = nh.from_array(np.ones((2, 3), np.float32), "W")
    t.ClearField("raw_data")
    t.data_location = T.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    m = _add_w(t)
    p = folder / "model.onnx"
    p.write_bytes(m.SerializeToString())
    return p


@pytest.fixture
def outside(tmp_path):
    """A real file with valid weights, outside the model's folder."""
    f = tmp_path / "outside.bin"
    f.write_bytes(np.full((2, 3), 7, np.float32).tobytes())
    folder = tmp_path / "model_dir"
    folder.mkdir()
    return f, folder


def test_external_data_inside_folder_works(outside):
    f, folder = outside
    (folder / "w.bin").write_bytes(f.read_bytes())
    out = ds.compile_model(str(_external_model(folder, "w.bin"))).run([ONES])[0]
    np.testing.assert_array_equal(out, np.full((2, 3), 8, np.float32))


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "dotdot_inner"])
def test_external_data_outside_folder_refused_before_open(outside, monkeypatch, kind):
    f, folder = outside
    if kind == "absolute":
        loc = str(f)
    elif kind == "dotdot":
        loc = "../outside.bin"
    elif kind == "dotdot_inner":
        (folder / "sub").mkdir()
        loc = "sub/../../outside.bin"
    else:
        (folder / "link.bin").symlink_to(f)
        loc = "link.bin"
    path = _external_model(folder, loc)
    spy = OpenSpy(monkeypatch)
    msg = refused(str(path), ModelLoadError, "'W'", loc)
    assert "absolute" in msg or "leaves" in msg
    assert os.path.realpath(f) not in spy.paths, spy.paths
    # the model file itself was read: the spy works
    assert os.path.realpath(path) in spy.paths


def test_external_data_windows_style_and_empty_locations(outside):
    f, folder = outside
    for loc in ("C:\\outside.bin", "\\\\server\\share\\w.bin", ""):
        refused(str(_external_model(folder, loc)), ModelLoadError, "'W'")


def test_external_data_range_outside_file(outside):
    f, folder = outside
    (folder / "w.bin").write_bytes(f.read_bytes())
    refused(str(_external_model(folder, "w.bin", offset=16)), ModelLoadError, "outside")
    refused(str(_external_model(folder, "w.bin", length=10**12)), ModelLoadError, "outside")
    refused(str(_external_model(folder, "w.bin", offset=-5)), ModelLoadError, "W")
    refused(str(_external_model(folder, "missing.bin")), ModelLoadError, "not found")


def test_external_data_without_a_folder(outside, monkeypatch):
    f, folder = outside
    m = onnx.load(str(_external_model(folder, str(f))), load_external_data=False)
    spy = OpenSpy(monkeypatch)
    refused(m, ModelLoadError, "external data")
    refused(m.SerializeToString(), ModelLoadError, "external data")
    assert os.path.realpath(f) not in spy.paths


def test_external_data_in_sparse_tensor_refused(outside, monkeypatch):
    # onnx's own walk over a model's tensors does not visit sparse tensors' values; the IR must
    # not hand such a tensor to onnx (which would open the path it names).
    f, folder = outside
    vals = nh.from_array(np.array([1.0, 2.0], np.float32), "W")
    vals.ClearField("raw_data")
    vals.data_location = T.EXTERNAL
    e = vals.external_data.add()
    e.key, e.value = "location", str(f)
    idx = nh.from_array(np.array([0, 1], np.int64), "W_idx")
    m = _add_w_sparse(h.make_sparse_tensor(vals, idx, [2, 3]))
    p = folder / "sparse.onnx"
    p.write_bytes(m.SerializeToString())
    spy = OpenSpy(monkeypatch)
    with pytest.raises(DeepSparseCyError) as ei:
        ds.compile_model(str(p))
    assert "W" in str(ei.value)
    assert os.path.realpath(f) not in spy.paths


# --- memory budget -------------------------------------------------------------------------------------

def _cos(shape_const=None):
    cos = h.make_node("ConstantOfShape", ["S"], ["C"], name="cos",
                      value=nh.from_array(np.array([1.0], np.float32)))
    add = h.make_node("Add", ["X", "C"], ["Y"], name="add")
    if shape_const is not None:
        return model([cos, add], inits=[nh.from_array(np.array(shape_const, np.int64), "S")])
    S = h.make_tensor_value_info("S", T.INT64, [2])
    return model([cos, add], inputs=[X, S])


def test_constant_of_shape_1e15_refused_at_compile():
    refused(_cos([10**6, 10**9]), ResourceError, "cos", "ConstantOfShape", "budget", "refused")


def test_constant_of_shape_1e15_refused_at_run():
    e = ds.compile_model(_cos())
    with pytest.raises(ResourceError) as ei:
        e.run([ONES, np.array([10**6, 10**9], np.int64)])
    assert "cos" in str(ei.value) and "budget" in str(ei.value)
    # the engine is still usable afterwards
    np.testing.assert_array_equal(e.run([ONES, np.array([2, 3], np.int64)])[0], ONES + 1)


def test_budget_refuses_before_allocating():
    # 100 MB would be easy to allocate here: a ResourceError under a 1 MB budget shows the size
    # was checked first, not discovered by a failed allocation.
    refused(_cos([5000, 5000]), ResourceError, "budget", memory_budget=1 << 20)
    e = ds.compile_model(_cos(), memory_budget=1 << 20)
    with pytest.raises(ResourceError):
        e.run([ONES, np.array([5000, 5000], np.int64)])
    e.run([ONES, np.array([2, 3], np.int64)])


def _refused_compile_or_first_run(m, feeds, node_name):
    """Refused at compile time when the offending node is constant (folded), otherwise by the
    first run, before the node allocates; either way a ResourceError naming the node."""
    try:
        e = ds.compile_model(m)
    except ResourceError as ex:
        assert node_name in str(ex)
        return "compile"
    with pytest.raises(ResourceError) as ei:
        e.run(feeds)
    assert node_name in str(ei.value) and "budget" in str(ei.value)
    return "run"


@pytest.mark.parametrize("name, node, shape", [
    ("Expand", h.make_node("Expand", ["X", "S"], ["Y"], name="big"), [10**7, 10**7, 1, 1]),
    ("Tile", h.make_node("Tile", ["X", "S"], ["Y"], name="big"), [10**7, 10**7]),
    ("Pad", h.make_node("Pad", ["X", "S"], ["Y"], name="big"), [0, 0, 10**8, 10**8]),
])
def test_amplifying_ops_refused_over_budget(name, node, shape):
    shape = np.array(shape, np.int64)
    # the shape as an initializer (known when compiling) and as a graph input
    assert _refused_compile_or_first_run(model([node], inits=[nh.from_array(shape, "S")]),
                                         [ONES], "big") == "run"
    S = h.make_tensor_value_info("S", T.INT64, list(shape.shape))
    assert _refused_compile_or_first_run(model([node], inputs=[X, S]), [ONES, shape], "big") == "run"


def test_range_refused():
    t = [nh.from_array(np.array(v, np.int64), n) for n, v in (("a", 0), ("b", 10**15), ("c", 1))]
    rng = h.make_node("Range", ["a", "b", "c"], ["R"], name="big")
    # fully constant and not a graph output: folded, so refused at compile time
    m = model([rng, h.make_node("Cast", ["R"], ["Y"], to=T.FLOAT)], inputs=[], inits=t)
    assert _refused_compile_or_first_run(m, [], "big") == "compile"
    m = model([rng], inputs=[], inits=t, outputs=[h.make_tensor_value_info("R", T.INT64, None)])
    assert _refused_compile_or_first_run(m, [], "big") == "run"


def test_broadcast_outer_product_refused():
    # [n,1] * [1,n] with n = 10**5: 4e10 bytes from two 400 KB inputs
    A = h.make_tensor_value_info("A", T.FLOAT, [100000, 1])
    B = h.make_tensor_value_info("B", T.FLOAT, [1, 100000])
    for op in ("Mul", "Add", "Sub", "Div", "Pow", "Max", "Sum"):
        m = model([h.make_node(op, ["A", "B"], ["Y"], name="big")], inputs=[A, B])
        a = np.ones((100000, 1), np.float32)
        assert _refused_compile_or_first_run(m, [a, a.reshape(1, -1)], "big") == "run", op
    cond = h.make_tensor_value_info("c", T.BOOL, [100000, 1])
    m = model([h.make_node("Where", ["c", "A", "B"], ["Y"], name="big")], inputs=[cond, A, B])
    _refused_compile_or_first_run(m, [np.ones((100000, 1), bool), a, a.reshape(1, -1)], "big")


def test_negative_constant_of_shape_is_a_shape_error():
    e = ds.compile_model(_cos())
    with pytest.raises(ShapeError) as ei:
        e.run([ONES, np.array([-1, 3], np.int64)])
    assert "cos" in str(ei.value)


def test_memory_plan_over_budget():
    big = h.make_tensor_value_info("X", T.FLOAT, [512, 512])
    m = model([h.make_node("Relu", ["X"], ["A"]), h.make_node("Neg", ["A"], ["Y"])], inputs=[big])
    e = ds.compile_model(m, memory_budget=1000)
    with pytest.raises(ResourceError):
        e.run([np.ones((512, 512), np.float32)])


def test_resize_with_huge_scales_is_refused_before_allocating():
    import deepsparse_cy as ds
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 1, 1e6, 1e6], np.float32), "s")])
    e = ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    with pytest.raises(ds.ResourceError, match="Resize"):
        e.run([np.zeros((1, 1, 4, 4), np.float32)])
