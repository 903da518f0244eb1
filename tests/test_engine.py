"""Public API and error behaviour of Engine / compile_model (DESIGN.md 'Public API')."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import deepsparse_cy as ds


def _chain_model(n_layers=6, dim=16, dynamic=True):
    """x -> (Add bias -> Relu -> Mul x)*n: many intermediates of one size."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i in range(n_layers):
        b = f"b{i}"
        inits.append(numpy_helper.from_array(rng.standard_normal((dim,)).astype(np.float32), b))
        nodes += [helper.make_node("Add", [prev, b], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
                  helper.make_node("Mul", [f"r{i}", "x"], [f"m{i}"])]
        prev = f"m{i}"
    nodes.append(helper.make_node("Neg", [prev], ["y"]))
    shape = ["N", dim] if dynamic else [2, dim]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TP.FLOAT, shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _chain_ref(model, x):
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = x
    for i in range(len(vals)):
        h = np.maximum(h + vals[f"b{i}"], 0) * x
    return -h


def test_compile_from_path_bytes_proto(tmp_path):
    m = _chain_model()
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    ref = _chain_ref(m, x)
    for src in (str(p), p, m.SerializeToString(), m):
        e = ds.compile_model(src)
        np.testing.assert_allclose(e.run([x])[0], ref, rtol=1e-6, atol=1e-6)
    e = ds.Engine(m)
    np.testing.assert_allclose(e([x])[0], ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(e.mapped_run({"x": x})["y"], ref, rtol=1e-6, atol=1e-6)


def test_names_shapes_cores():
    e = ds.compile_model(_chain_model(), num_cores=1)
    assert e.input_names == ["x"] and e.output_names == ["y"]
    assert e.input_shapes == [["N", 16]]
    assert e.num_cores == 1
    e2 = ds.compile_model(_chain_model(), batch_size=4)
    assert e2.input_shapes == [[4, 16]]
    with pytest.raises(ds.InputError, match=r"expected shape \[4, 16\]"):
        e2.run([np.zeros((3, 16), np.float32)])


def test_outputs_not_overwritten_by_later_calls():
    e = ds.compile_model(_chain_model())
    rng = np.random.default_rng(2)
    x1 = rng.standard_normal((5, 16)).astype(np.float32)
    x2 = rng.standard_normal((5, 16)).astype(np.float32)
    y1 = e.run([x1])[0]
    y1_copy = y1.copy()
    for _ in range(3):
        e.run([x2])
    np.testing.assert_array_equal(y1, y1_copy)


def test_planner_off_gives_identical_outputs():
    m = _chain_model(n_layers=10)
    x = np.random.default_rng(3).standard_normal((7, 16)).astype(np.float32)
    on = ds.compile_model(m, memory_planner=True)
    off = ds.compile_model(m, memory_planner=False)
    for _ in range(2):  # first call plans, second runs out of the arena
        np.testing.assert_array_equal(on.run([x])[0], off.run([x])[0])
    r_on, r_off = on.memory_report(), off.memory_report()
    assert r_on["arena_bytes"] < r_off["arena_bytes"]
    assert r_off["arena_bytes"] >= r_off["intermediate_bytes"]


def test_view_outputs_keep_their_source_slot_alive():
    """Reshape/Flatten/Squeeze/Unsqueeze/Identity outputs stay views of their input's arena slot
    (no copy); the source's lifetime must then cover the view's. Here the view is read only at
    the end, after a chain of ops whose outputs would otherwise reuse the source's space; a
    view chain (Reshape -> Unsqueeze -> Squeeze -> Identity) and a view that is a graph output
    are included. Checked against onnxruntime and the planner-off run."""
    ort = pytest.importorskip("onnxruntime")
    shape = helper.make_tensor("shp", TP.INT64, [2], [8, 12])
    back = helper.make_tensor("back", TP.INT64, [2], [6, 16])
    ax = helper.make_tensor("ax", TP.INT64, [1], [0])
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Reshape", ["a", "shp"], ["v1"]),
             helper.make_node("Unsqueeze", ["v1", "ax"], ["v2"]),
             helper.make_node("Squeeze", ["v2", "ax"], ["v3"]),
             helper.make_node("Identity", ["v3"], ["v4"]),
             helper.make_node("Flatten", ["a"], ["f"], axis=1)]
    prev = "a"
    for i in range(8):   # values that die at once: they would take a's space if it were free
        nodes.append(helper.make_node("Sigmoid" if i % 2 else "Neg", [prev], [f"c{i}"]))
        prev = f"c{i}"
    nodes += [helper.make_node("Reshape", ["v4", "back"], ["v5"]),
              helper.make_node("Add", ["v5", prev], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [6, 16])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None),
                           helper.make_tensor_value_info("f", TP.FLOAT, None)],
                          [shape, back, ax])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(5).standard_normal((6, 16)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    on = ds.compile_model(m)
    off = ds.compile_model(m, memory_planner=False)
    for _ in range(3):   # first call plans, later calls run out of the arena
        got = on.run([x])
        for a, b, c in zip(got, off.run([x]), ref):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


def test_dynamic_batch_plans_per_shape():
    m = _chain_model()
    e = ds.compile_model(m)
    rng = np.random.default_rng(4)
    for n in (1, 3, 1, 8, 3):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        np.testing.assert_allclose(e.run([x])[0], _chain_ref(m, x), rtol=1e-6, atol=1e-6)


def test_bad_inputs_are_refused_with_what_was_expected():
    e = ds.compile_model(_chain_model(dynamic=False))
    x = np.zeros((2, 16), np.float32)
    with pytest.raises(ds.InputError, match="expected 1 inputs"):
        e.run([x, x])
    with pytest.raises(ds.InputError, match="expected dtype float32, got float64"):
        e.run([x.astype(np.float64)])
    with pytest.raises(ds.InputError, match="expected rank 2"):
        e.run([x[None]])
    with pytest.raises(ds.InputError, match=r"expected shape \[2, 16\]"):
        e.run([np.zeros((2, 15), np.float32)])
    with pytest.raises(ds.InputError, match="missing"):
        e.mapped_run({})
    assert isinstance(ds.InputError("x"), ds.DeepSparseCyError)


def test_noncontiguous_and_readonly_inputs():
    m = _chain_model()
    e = ds.compile_model(m)
    big = np.random.default_rng(5).standard_normal((6, 32)).astype(np.float32)
    x = big[::2, ::2]
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(e.run([x])[0], _chain_ref(m, np.ascontiguousarray(x)), rtol=1e-6)
    ro = np.ascontiguousarray(x)
    ro.setflags(write=False)
    np.testing.assert_allclose(e.run([ro])[0], _chain_ref(m, ro), rtol=1e-6)


def test_all_unsupported_ops_listed_together():
    nodes = [helper.make_node("FooOp", ["x"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("BarOp", ["b"], ["y"], name="second", domain="com.example")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.example", 1)])
    with pytest.raises(ds.UnsupportedOperatorError) as ei:
        ds.compile_model(m.SerializeToString())
    msg = str(ei.value)
    assert "FooOp" in msg and "BarOp" in msg and "first" in msg and "second" in msg
    assert "com.example" in msg


def test_garbage_and_invalid_models():
    with pytest.raises(ds.ModelLoadError):
        ds.compile_model(b"\x00\x01garbage" * 10)
    with pytest.raises(ds.ModelLoadError, match="not found"):
        ds.compile_model("/nonexistent/model.onnx")
    good = _chain_model().SerializeToString()
    with pytest.raises(ds.ModelLoadError):
        ds.compile_model(good[: len(good) // 2])
    # a node reading an undefined value
    g = helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TP.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, [2])])
    with pytest.raises(ds.ModelLoadError):
        ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _external_model(tmp_path, location):
    w = np.arange(4, dtype=np.float32)
    t = numpy_helper.from_array(w, "w")
    t.ClearField("raw_data")
    t.data_location = TP.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TP.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, [4])], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "model" / "m.onnx"
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(m.SerializeToString())
    return p, w


def test_external_data_inside_folder(tmp_path):
    p, w = _external_model(tmp_path, "weights.bin")
    (p.parent / "weights.bin").write_bytes(w.tobytes())
    e = ds.compile_model(str(p))
    np.testing.assert_array_equal(e.run([np.ones(4, np.float32)])[0], w + 1)


@pytest.mark.parametrize("loc", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_folder_refused(tmp_path, loc):
    (tmp_path / "secret.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    p, _ = _external_model(tmp_path, loc)
    with pytest.raises(ds.ModelLoadError, match="absolute|leaves"):
        ds.compile_model(str(p))


def test_cpu_features_and_isa():
    f = ds.cpu_features()
    assert isinstance(f, dict) and "avx2" in f and "avx512f" in f
    assert ds.kernel_isa() in ("generic", "avx2", "avx512", "avx512_vnni", "amx")


def test_node_errors_name_the_node():
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")], "g",
                          [helper.make_tensor_value_info("x", TP.FLOAT, [2, 3]),
                           helper.make_tensor_value_info("s", TP.INT64, [2])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    e = ds.compile_model(m)
    with pytest.raises(ds.DeepSparseCyError, match="bad_reshape"):
        e.run([np.zeros((2, 3), np.float32), np.array([4, 4], np.int64)])


def test_values_outside_arena_do_not_alias_reused_slots(rng):
    # a lives in the arena and dies after SequenceConstruct; b, c reuse its slot. The sequence
    # (not planned) must keep a's values, not whatever later overwrites the slot.
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("SequenceConstruct", ["a"], ["seq"]),
             helper.make_node("Neg", ["x"], ["b"]),
             helper.make_node("Abs", ["b"], ["c"]),
             helper.make_node("Identity", ["c"], ["d"]),
             helper.make_node("Sin", ["d"], ["e"]),
             helper.make_node("SequenceAt", ["seq", "zero"], ["a_again"]),
             helper.make_node("Add", ["a_again", "e"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [64])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, [64])],
                          [numpy_helper.from_array(np.array(0, np.int64), "zero")])
    e = ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal(64).astype(np.float32)
    ref = np.maximum(x, 0) + np.sin(np.abs(-x))
    for _ in range(3):
        np.testing.assert_allclose(e.run([x])[0], ref, rtol=1e-6)


def test_plan_cache_is_bounded(monkeypatch):
    m = _chain_model()
    e = ds.compile_model(m)
    monkeypatch.setattr(e, "max_plans", 3)
    rng = np.random.default_rng(6)
    for n in range(1, 9):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        np.testing.assert_allclose(e.run([x])[0], _chain_ref(m, x), rtol=1e-6, atol=1e-6)
    assert len(e._plans) == 3
    x = rng.standard_normal((1, 16)).astype(np.float32)   # evicted shape: planned again, same answer
    np.testing.assert_allclose(e.run([x])[0], _chain_ref(m, x), rtol=1e-6, atol=1e-6)


def _cnn_model():
    """Conv on the feed -> strided conv -> max pool -> depthwise -> squeeze-excite -> 1x1 conv
    + residual:
    steps the executor binds (engine._run_plan) next to ones it cannot (the feed's reader)."""
    rng = np.random.default_rng(3)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
    inits = [w("w0", 16, 3, 3, 3), w("b0", 16), w("w1", 24, 16, 3, 3), w("w2", 24, 1, 3, 3),
             w("b2", 24), w("s1", 8, 24, 1, 1), w("s2", 24, 8, 1, 1), w("w3", 24, 24, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1] * 4, strides=[2, 2]),
             helper.make_node("MaxPool", ["c1"], ["mp"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Conv", ["mp", "w2", "b2"], ["c2"], pads=[1] * 4, group=24),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Conv", ["g", "s1"], ["g1"]),
             helper.make_node("Relu", ["g1"], ["g2"]),
             helper.make_node("Conv", ["g2", "s2"], ["g3"]),
             helper.make_node("Sigmoid", ["g3"], ["g4"]),
             helper.make_node("Mul", ["r2", "g4"], ["se"]),
             helper.make_node("Conv", ["se", "w3"], ["c3"]),
             helper.make_node("Add", ["c3", "c1"], ["y"])]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _runs_match_heap_and_onnxruntime(m, shapes, seed, rtol):
    """Run the compiled engine on random inputs of `shapes` in order: every output bit-identical
    to the heap-mode run (no arena, no bound calls, no in-place slots) and within rtol of
    onnxruntime. Returns the engine."""
    ort = pytest.importorskip("onnxruntime")
    e = ds.compile_model(m)
    heap = ds.Engine(m, memory_planner=False)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    for shp in shapes:
        x = rng.standard_normal(shp).astype(np.float32)
        for g, h, r in zip(e.run([x]), heap.run([x]), sess.run(None, {"x": x})):
            np.testing.assert_array_equal(g, h)
            np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * float(np.abs(r).max()))
    return e


def test_bound_steps_follow_new_inputs():
    """After the first run of a plan the executor calls the conv / squeeze-excite kernels with
    prepared arguments; results must stay those of the heap-mode run (no arena, no binding) for
    new input values, other shapes, and back, and match onnxruntime."""
    shapes = [(1, 3, 20, 24), (1, 3, 20, 24), (2, 3, 9, 33), (1, 3, 20, 24), (2, 3, 9, 33)]
    e = _runs_match_heap_and_onnxruntime(_cnn_model(), shapes, seed=4, rtol=1e-4)
    x = np.zeros(shapes[-1], np.float32)
    inst = e._plans[e._key([x])]._pool[0]
    kinds = {e._plans[e._key([x])].steps[i][0].op_type for i, b in enumerate(inst.bound) if b}
    from deepsparse_cy.ops import conv as conv_ops      # compiled convs: not at the generic level
    expected = {"SqueezeExcite", "MaxPool"} | ({"FusedConv"} if conv_ops._FAST_CONV else set())
    assert expected <= kinds, kinds                             # the binding ran
    # the feed (7 KB) is copied into a slot of its own by every run: its reader (a compiled
    # conv, not at the generic level) binds too
    assert "x" in e._plans[e._key([x])].feed_slots
    assert bool(inst.bound[0]) == bool(conv_ops._FAST_CONV)
    if conv_ops._FAST_CONV:   # the strided conv binds too (its phase-split scratch is per thread)
        steps = e._plans[e._key([x])].steps
        i1 = next(i for i, st in enumerate(steps) if "c1" in st[0].outputs)
        assert inst.bound[i1], steps[i1][0].op_type


def test_bound_concat_and_graph_output():
    """A Concat the planner cannot place in its output slot (along the last axis) binds to the
    compiled block copies, and a small graph output gets a slot so its step binds too (the
    result handed out is a copy, not the arena): runs stay bit-identical to heap mode across
    values and shapes, and each run's outputs are new arrays."""
    rng = np.random.default_rng(8)
    w = numpy_helper.from_array((rng.standard_normal((3, 4, 1, 1)) * 0.5).astype(np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Sigmoid", ["x"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=3),
             helper.make_node("Conv", ["c", "w"], ["y"])]
    g = helper.make_graph(nodes, "cc", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 4, "H", "W"])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    shapes = [(1, 4, 6, 5), (1, 4, 6, 5), (2, 4, 3, 7), (1, 4, 6, 5)]
    e = _runs_match_heap_and_onnxruntime(m, shapes, seed=9, rtol=1e-5)
    x = np.ones(shapes[-1], np.float32)
    y1, y2 = e.run([x])[0], e.run([x])[0]
    assert y1 is not y2 and not np.may_share_memory(y1, y2)
    np.testing.assert_array_equal(y1, y2)
    plan = e._plans[e._key([x])]
    inst = plan._pool[0]
    bound = {plan.steps[i][0].outputs[0] for i, b in enumerate(inst.bound) if b}
    assert "c" in bound, bound                              # the concat
    from deepsparse_cy.ops import conv as conv_ops
    if conv_ops._FAST_CONV:
        assert "y" in bound, bound                          # the graph output's conv


def test_small_feeds_copied_into_slots():
    """Feeds up to FEED_SLOT_MAX are copied into slots of their own by every run, so their
    readers bind: a transformer's embedding Gather (its indices checked on every run), the
    mask's Unsqueeze views, Cast and arithmetic. Across new values, a failing run and back,
    results equal numpy's, the caller's arrays are untouched and outputs are new arrays."""
    from deepsparse_cy.engine import FEED_SLOT_MAX
    from deepsparse_cy.errors import InputError
    rng = np.random.default_rng(31)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    pos = rng.standard_normal((6, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Add", ["e", "pos"], ["y"]),
             helper.make_node("Unsqueeze", ["mask", "ax"], ["m1"]),
             helper.make_node("Cast", ["m1"], ["mf"], to=TP.FLOAT),
             helper.make_node("Sub", ["one", "mf"], ["inv"]),
             helper.make_node("Mul", ["inv", "big"], ["z"])]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(pos, "pos"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.array(1, np.float32), "one"),
             numpy_helper.from_array(np.array(-1e4, np.float32), "big")]
    g = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("ids", TP.INT64, [1, 6]),
                                         helper.make_tensor_value_info("mask", TP.INT64, [1, 6])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None),
                           helper.make_tensor_value_info("z", TP.FLOAT, None)], inits)
    e = ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))

    def check(ids, mask):
        keep = ids.copy(), mask.copy()
        y, z = e.run([ids, mask])
        np.testing.assert_array_equal(y, table[ids] + pos)
        np.testing.assert_array_equal(z, (1 - mask[:, None].astype(np.float32)) * np.float32(-1e4))
        np.testing.assert_array_equal(ids, keep[0])
        np.testing.assert_array_equal(mask, keep[1])
        return y, z

    for _ in range(3):
        check(rng.integers(-50, 50, (1, 6)), rng.integers(0, 2, (1, 6)))
    plan = e._plans[e._key([np.zeros((1, 6), np.int64)] * 2)]
    assert set(plan.feed_slots) == {"ids", "mask"} and 48 <= FEED_SLOT_MAX
    inst = plan._pool[0]
    assert inst.fast is not None
    bound = {plan.steps[i][0].op_type for i, b in enumerate(inst.bound) if b}
    assert {"Gather", "Cast", "Sub", "Mul"} <= bound, bound
    with pytest.raises(InputError, match="out of range"):
        e.run([np.array([[0, 1, 2, 50, 3, 4]]), np.ones((1, 6), np.int64)])
    y1, _ = check(np.arange(6).reshape(1, 6), np.zeros((1, 6), np.int64))
    y2, _ = check(np.arange(6).reshape(1, 6), np.zeros((1, 6), np.int64))
    assert y1 is not y2 and not np.may_share_memory(y1, y2)


def test_fast_runs_match_heap_and_keep_unbound_steps():
    """Once every step of an arena instance is bound or known not to bind, runs take the fast
    program (engine._fast_program): runs of bound calls without their input checks, the feed's
    reader and the large graph output's Concat through the checked step path. Outputs stay
    bit-identical to heap mode for new values, another shape and back, are new arrays on each
    run, and the small graph output bound in a fast run is recorded for the output copy."""
    from deepsparse_cy.engine import _fast_program
    rng = np.random.default_rng(21)
    w = numpy_helper.from_array((rng.standard_normal((8, 4, 1, 1)) * 0.5).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),                 # reads the feed
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Concat", ["r", "s"], ["big"], axis=1),      # large graph output
             helper.make_node("ReduceMean", ["r"], ["small"], axes=[2, 3], keepdims=0)]
    g = helper.make_graph(nodes, "fast", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 4, "H", "W"])],
                          [helper.make_tensor_value_info("big", TP.FLOAT, None),
                           helper.make_tensor_value_info("small", TP.FLOAT, None)], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    shapes = [(1, 4, 120, 130)] * 3 + [(2, 4, 9, 7), (1, 4, 120, 130), (1, 4, 120, 130)]
    e = _runs_match_heap_and_onnxruntime(m, shapes, seed=22, rtol=1e-5)
    x = np.ones(shapes[-1], np.float32)
    plan = e._plans[e._key([x])]
    inst = plan._pool[0]
    assert inst.fast is not None
    calls = sum(len(seg[0]) for seg in inst.fast if seg[0] is not None)
    checked = [seg[1] for seg in inst.fast if seg[0] is None]
    assert calls >= 1
    # every bound step is a plain call unless it reads a value that may move (here: none)
    assert calls + sum(1 for i in checked if inst.bound[i]) == sum(1 for b in inst.bound if b)
    assert checked[0] == 0 and not inst.bound[0]      # the feed's reader: run by its op
    y1, y2 = e.run([x]), e.run([x])
    for a, b in zip(y1, y2):
        assert a is not b and not np.may_share_memory(a, b)
        np.testing.assert_array_equal(a, b)
    assert _fast_program(plan, inst, e.output_names) == inst.fast


def test_fast_run_pins_slot_outputs_its_calls_read(monkeypatch):
    """A step run through its op (it reads the feed) whose output a plain call of the fast run
    reads from its slot: if the op hands back a new array instead of filling the slot, the
    value is copied into the slot, so the call never reads a stale one."""
    nodes = [helper.make_node("Neg", ["x"], ["a"], name="feeds_reader"),
             helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Neg", ["b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [64, 1000])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    e = ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    e.run([x])
    e.run([x])
    plan = e._plans[e._key([x])]
    inst = plan._pool[0]
    assert inst.fast is not None
    gen = [seg for seg in inst.fast if seg[0] is None]
    assert gen and gen[0][1] == 0 and gen[0][2] == {"a"}     # the Sigmoid's call reads a's slot
    op = plan.steps[0][1]
    monkeypatch.setattr(op, "run", lambda ins, outs: [np.negative(ins[0])])   # a new array
    for _ in range(2):
        x = rng.standard_normal((64, 1000)).astype(np.float32)
        np.testing.assert_allclose(e.run([x])[0], -1 / (1 + np.exp(x)), rtol=1e-5, atol=1e-7)


def test_fast_run_errors_name_the_node():
    """A kernel failing inside a fast run's plain calls is reported with its node's name."""
    from deepsparse_cy.engine import _fast_program
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["b"], name="the_sigmoid"),
             helper.make_node("Neg", ["b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [64, 1000])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    e = ds.compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.ones((64, 1000), np.float32)
    e.run([x])
    e.run([x])
    plan = e._plans[e._key([x])]
    inst = plan._pool[0]
    assert inst.fast is not None
    seg = next(s for s in inst.fast if s[0] is not None and any(
        n.name == "the_sigmoid" for n in s[1]))
    k = next(k for k, n in enumerate(seg[1]) if n.name == "the_sigmoid")

    def fails(*args):
        raise ValueError("kernel failed")

    seg[0][k] = (fails, ())
    with pytest.raises(ds.DeepSparseCyError, match="the_sigmoid"):
        e.run([x])
    inst.fast = _fast_program(plan, inst, e.output_names)
    np.testing.assert_allclose(e.run([x])[0], -1 / (1 + np.exp(-1.0)), rtol=1e-6)


@pytest.mark.parametrize("shapes,axis", [
    # rows split: outer = N*C*H >= 8 pieces (a detector head's [1, 144, HW] maps along HW)
    ([(1, 144, 1600), (1, 144, 400), (1, 144, 100)], 2),
    ([(2, 3, 200, 200), (2, 3, 200, 30)], 3),
    # few rows (outer 2): blocks cut by bytes; a zero-size input among them
    ([(2, 40, 50, 50), (2, 0, 50, 50), (2, 33, 50, 50)], 1)], ids=["head", "last", "bytes"])
def test_bound_concat_over_threads_matches_numpy(shapes, axis):
    """A Concat of >= 1 MB that is not placed in its output slot runs its copies on the
    engine's threads (concat_pieces / copy_pieces), bit for bit numpy.concatenate of the same
    values, on each run with new values."""
    from deepsparse_cy.kernels import _f32_ops
    names = [f"x{i}" for i in range(len(shapes))]
    nodes = [helper.make_node("Neg" if i % 2 else "Relu", [n], [n + "r"]) for i, n in enumerate(names)]
    nodes.append(helper.make_node("Concat", [n + "r" for n in names], ["c"], axis=axis))
    nodes.append(helper.make_node("Neg", ["c"], ["y"]))
    g = helper.make_graph(nodes, "cat", [helper.make_tensor_value_info(n, TP.FLOAT, s)
                                         for n, s in zip(names, shapes)],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    e = ds.compile_model(m, num_cores=2)
    rng = np.random.default_rng(len(shapes) + axis)
    for _ in range(4):
        xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        ref = -np.concatenate([-x if i % 2 else np.maximum(x, 0) for i, x in enumerate(xs)], axis)
        np.testing.assert_array_equal(e.run(xs)[0], ref)
    plan = e._plans[e._key(xs)]
    inst = plan._pool[0]
    i = next(i for i, st in enumerate(plan.steps) if st[0].op_type == "Concat")
    assert inst.bound[i] and inst.bound[i][0] is _f32_ops.copy_pieces, inst.bound[i]


@pytest.mark.parametrize("dt", [np.uint8, np.float32])
@pytest.mark.parametrize("shapes,axis", [([(3, 70000), (3, 90001)], 1), ([(1, 300000), (1, 7)], 1),
                                         ([(40, 9, 777), (40, 2, 777)], 1)])
def test_concat_pieces_cover_every_byte_once(dt, shapes, axis):
    """The pieces tile the output exactly (no byte twice, none missed) for 1 and 2 threads."""
    from deepsparse_cy.kernels import _f32_ops
    rng = np.random.default_rng(3)
    xs = [rng.integers(0, 250, s).astype(dt) for s in shapes]
    ref = np.concatenate(xs, axis)
    out = np.zeros_like(ref)
    p = _f32_ops.concat_pieces(xs, axis, out, 2)
    if p is None:
        assert ref.nbytes < 4 * 262144
        return
    assert int(p[:, 4:].prod(axis=1).sum()) == ref.nbytes
    for nt in (1, 2):
        out[...] = 0
        _f32_ops.copy_pieces(p, nt)
        np.testing.assert_array_equal(out, ref)


def test_bound_resize_follows_computed_sizes():
    """A Resize whose sizes are computed from values (not from shapes) gives the new output for
    new sizes, same and other output shapes. (Today the planner keeps such a value-dependent
    output out of the arena, so the step is not bound; should it get a slot, the bound call
    re-keys on the sizes' values and replans on a new output shape.)"""
    ort = pytest.importorskip("onnxruntime")
    nodes = [helper.make_node("Relu", ["x"], ["xr"]),
             helper.make_node("Add", ["s", "zero"], ["sz"]),
             helper.make_node("Resize", ["xr", "", "", "sz"], ["y0"], mode="nearest"),
             helper.make_node("Neg", ["y0"], ["y"])]
    g = helper.make_graph(nodes, "rs", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 2, 5, 5]),
                                        helper.make_tensor_value_info("s", TP.INT64, [4])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)],
                          [numpy_helper.from_array(np.zeros(4, np.int64), "zero")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    e = ds.compile_model(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(6).standard_normal((1, 2, 5, 5)).astype(np.float32)
    for s in ([1, 2, 10, 10], [1, 2, 10, 10], [1, 2, 10, 10], [1, 2, 10, 7], [1, 2, 7, 10],
              [1, 2, 10, 10]):
        s = np.array(s, np.int64)
        got = e.run([x, s])[0]
        ref = sess.run(None, {"x": x, "s": s})[0]
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


def _c2f_model():
    """A YOLOv8 C2f-style block: 1x1 conv -> Split -> two 3x3 convs in a chain -> Concat of all
    four maps -> 1x1 conv; one Split half is read again after the Concat, another map feeds two
    Concats (only one can host it), the second Concat's output is also a graph output."""
    rng = np.random.default_rng(7)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
    inits = [w("w0", 16, 3, 1, 1), w("w1", 8, 8, 3, 3), w("w2", 8, 8, 3, 3), w("w3", 12, 32, 1, 1),
             numpy_helper.from_array(np.array([8, 8], np.int64), "sp")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Split", ["r0", "sp"], ["y0", "y1"], axis=1),
             helper.make_node("Conv", ["y1", "w1"], ["m0"], pads=[1] * 4),
             helper.make_node("Conv", ["m0", "w2"], ["m1"], pads=[1] * 4),
             helper.make_node("Concat", ["y0", "y1", "m0", "m1"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w3"], ["c3"]),
             helper.make_node("Concat", ["m1", "c3"], ["cat2"], axis=-3),
             helper.make_node("Add", ["y0", "m1"], ["late"])]       # y0 read after the Concat
    g = helper.make_graph(nodes, "c2f", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("cat2", TP.FLOAT, None),
                           helper.make_tensor_value_info("late", TP.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_inplace_concat_matches_heap_and_onnxruntime(monkeypatch):
    """Batch 1: the Concat's inputs are produced in its output slot (no copy); batch 2 (not
    contiguous per input) and DEEPSPARSE_CY_NO_INPLACE_CONCAT=1 copy. All bit-identical to the
    heap-mode run and equal to onnxruntime, over repeated runs with new values."""
    m = _c2f_model()
    e = _runs_match_heap_and_onnxruntime(m, [(1, 3, 12, 20)] * 3 + [(2, 3, 7, 9), (1, 3, 5, 6)],
                                         seed=8, rtol=1e-5)
    rng = np.random.default_rng(9)
    plan = e._plans[e._key([np.zeros((1, 3, 12, 20), np.float32)])]
    inst = plan._pool[0]
    kinds = {plan.steps[i][0].op_type for i, b in enumerate(inst.bound) if b}
    assert {"Concat", "Split"} <= kinds, kinds         # their bound calls ran on runs 2 and 3
    cat = plan.slots["cat"]
    for name, ch in (("y0", 0), ("y1", 8), ("m0", 16), ("m1", 24)):   # placed in the slot
        assert plan.slots[name][0] == cat[0] + ch * 12 * 20 * 4, name
    assert "c3" not in plan.slots or plan.slots["c3"][0] != plan.slots.get("cat2", (None,))[0]
    plan2 = e._plans[e._key([np.zeros((2, 3, 7, 9), np.float32)])]
    assert plan2.slots["y1"][0] != plan2.slots["cat"][0] + 8 * 7 * 9 * 4   # batch 2: own slots
    monkeypatch.setenv("DEEPSPARSE_CY_NO_INPLACE_CONCAT", "1")
    e2 = ds.compile_model(m)
    x = rng.standard_normal((1, 3, 12, 20)).astype(np.float32)
    for g, h in zip(e2.run([x]), e.run([x])):
        np.testing.assert_array_equal(g, h)


def _head_split_model():
    """A detector head's split: conv -> Reshape [N, 16, HW] -> Concat with a second map along
    the anchors axis -> Split along channels (box 6 / classes 10) -> box through Relu, classes
    through Sigmoid, the box half read again at the end (after other values took memory); a
    second Split of a graph output (never in place) and one in halves along the last axis
    (batch 1, but 16 rows before it: each part is not one piece, copies)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 3, 1, 1)) * 0.5).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, 16, -1], np.int64), "shp"),
             numpy_helper.from_array(np.array([6, 10], np.int64), "sp")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shp"], ["r"]),
             helper.make_node("Neg", ["r"], ["r2"]),
             helper.make_node("Concat", ["r", "r2"], ["cat"], axis=2),
             helper.make_node("Split", ["cat", "sp"], ["box", "cls"], axis=1),
             helper.make_node("Relu", ["box"], ["b1"]),
             helper.make_node("Sigmoid", ["cls"], ["s1"]),
             helper.make_node("Abs", ["s1"], ["s2"]),
             helper.make_node("Concat", ["b1", "s2"], ["head"], axis=1),
             helper.make_node("Split", ["head", "sp"], ["h0", "h1"], axis=1),
             helper.make_node("Split", ["cat"], ["t0", "t1"], axis=2),
             helper.make_node("Mul", ["box", "b1"], ["late"])]
    outs = ["head", "h1", "late", "t1"]
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info(o, TP.FLOAT, None) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_inplace_split_matches_heap_and_onnxruntime(monkeypatch):
    """Batch 1: a Split along channels of a planned value keeps its parts as pieces of the
    input's slot (no copy; the step binds to no call); the Split of a graph output, the one along
    the last axis, batch 2 and DEEPSPARSE_CY_NO_INPLACE_SPLIT=1 copy. All bit-identical to
    the heap-mode run and equal to onnxruntime, over repeated runs with new values."""
    from deepsparse_cy.engine import _no_call
    m = _head_split_model()
    e = _runs_match_heap_and_onnxruntime(m, [(1, 3, 4, 6)] * 3 + [(2, 3, 5, 3), (1, 3, 4, 6)],
                                         seed=5, rtol=1e-5)
    plan = e._plans[e._key([np.zeros((1, 3, 4, 6), np.float32)])]
    assert plan.split_views == {"box", "cls"}, plan.split_views
    cat = plan.slots["cat"]
    assert plan.slots["box"][0] == cat[0] and plan.slots["cls"][0] == cat[0] + 6 * 48 * 4
    inst = plan._pool[0]
    bound = {plan.steps[i][0].name or plan.steps[i][0].outputs[0]: b
             for i, b in enumerate(inst.bound)}
    split_steps = [i for i, st in enumerate(plan.steps) if st[0].op_type == "Split"]
    kinds = [inst.bound[i][0] is _no_call for i in split_steps if inst.bound[i]]
    assert kinds.count(True) == 1, (kinds, bound)       # only the channel split of "cat"
    plan2 = e._plans[e._key([np.zeros((2, 3, 5, 3), np.float32)])]
    assert not plan2.split_views
    monkeypatch.setenv("DEEPSPARSE_CY_NO_INPLACE_SPLIT", "1")
    e2 = ds.compile_model(m)
    x = np.random.default_rng(6).standard_normal((1, 3, 4, 6)).astype(np.float32)
    for _ in range(2):
        for g, h in zip(e2.run([x]), e.run([x])):
            np.testing.assert_array_equal(g, h)
    assert not e2._plans[e2._key([x])].split_views


def test_transpose_and_div_bind_and_follow_new_inputs():
    """Transpose (its view of the input slot made once, copied on each run) and Div bind in a
    plan, and give numpy's values for new inputs and for another shape (a new plan); integer
    Div truncates toward zero there too."""
    inits = [numpy_helper.from_array(np.array([2.5], np.float32), "c"),
             numpy_helper.from_array(np.array([-3], np.int64), "k")]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Div", ["t", "c"], ["d"]),
             helper.make_node("Cast", ["x"], ["xi"], to=TP.INT64),
             helper.make_node("Abs", ["xi"], ["ai"]),
             helper.make_node("Div", ["ai", "k"], ["di"]),
             helper.make_node("Exp", ["d"], ["y"])]
    g = helper.make_graph(nodes, "td", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 4, "S", 3])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None),
                           helper.make_tensor_value_info("di", TP.INT64, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    e = ds.compile_model(m)
    rng = np.random.default_rng(2)
    for s_ in (5, 5, 5, 7, 5):
        x = (rng.standard_normal((1, 4, s_, 3)) * 10).astype(np.float32)
        y, di = e.run([x])
        ref = np.exp(np.maximum(x, 0).transpose(0, 2, 1, 3) / np.float32(2.5))
        np.testing.assert_allclose(y, ref, rtol=1e-6)
        ai = np.abs(x.astype(np.int64))
        np.testing.assert_array_equal(di, -(ai // 3))
    plan = e._plans[e._key([np.zeros((1, 4, 5, 3), np.float32)])]
    inst = plan._pool[0]
    kinds = [plan.steps[i][0].op_type for i, b in enumerate(inst.bound) if b]
    assert kinds.count("Transpose") == 1 and kinds.count("Div") == 2, kinds


def test_concat_in_place_function():
    from deepsparse_cy.ops.tensor import Concat
    out = np.zeros((1, 7, 3), np.float32)
    a = out[:, :2]                       # already in place
    a[...] = 1
    b = np.full((1, 5, 3), 2, np.float32)  # elsewhere: copied to its range
    assert Concat(a, b, axis=1, out=out) is out
    np.testing.assert_array_equal(out, np.concatenate([np.ones((1, 2, 3)), np.full((1, 5, 3), 2)], 1))
    # in place but in the wrong order: a normal copy, still right
    out2 = np.zeros((1, 7, 3), np.float32)
    c = out2[:, 5:]
    c[...] = 3
    d = np.full((1, 5, 3), 4, np.float32)
    res = Concat(c, d, axis=1, out=out2)
    np.testing.assert_array_equal(res, np.concatenate([np.full((1, 2, 3), 3), np.full((1, 5, 3), 4)], 1))


@pytest.mark.parametrize("name,expected", [
    ("minilm-block4-pruned90-quant", {"QGemm", "LayerNorm", "FusedAttention", "Reshape"}),
    ("minilm", {"FusedMatMul", "LayerNorm", "FusedAttention", "Reshape"})])
def test_bound_transformer_steps_follow_new_inputs(name, expected):
    """Transformers (a quantized one: QGemm, LayerNorm with quantized outputs, attention with
    its QuantizeLinear fused in; FP32): after the first run of a plan their GEMM, LayerNorm and
    attention steps are bound calls, and their Reshape views bind to no call (the same view
    object on every run, so its readers can bind); outputs stay bit-identical to the heap-mode
    run (no arena, no binding) for new token values, other lengths and back."""
    from deepsparse_cy import zoo
    m = zoo.get_model(name)
    e = ds.compile_model(m)
    heap = ds.Engine(m, memory_planner=False)
    for i, (b, seq) in enumerate([(1, 24), (1, 24), (2, 40), (1, 24), (2, 40)]):
        feeds = zoo.example_inputs(m, batch=b, seq=seq, seed=i)
        xs = [feeds[n] for n in e.input_names]
        for g, h in zip(e.run(xs), heap.run(xs)):
            np.testing.assert_array_equal(g, h)
    plan = e._plans[e._key(xs)]
    inst = plan._pool[0]
    kinds = {plan.steps[i][0].op_type for i, b in enumerate(inst.bound) if b}
    from deepsparse_cy.ops import fast_fused     # compiled FP32 kernels: not at the generic level
    if fast_fused._ATTN is None:
        expected = expected - {"FusedAttention"}
    if not fast_fused._FAST_GEMM:
        expected = expected - {"FusedMatMul"}
    assert expected <= kinds, kinds
    if "QGemm" in expected and fast_fused._ATTN is not None:
        # the attention output's QuantizeLinear runs inside the attention kernel
        assert "QuantizeLinear" not in {st[0].op_type for st in plan.steps}


@pytest.mark.parametrize("name,shapes,min_qconv,heap_max", [
    ("resnet50-block4-pruned90-quant", [(1, 3, 224, 224), (1, 3, 224, 224), (2, 3, 224, 224),
                                        (1, 3, 224, 224)], 30, None),
    ("mobilenetv2-block4-pruned90-quant", [(1, 3, 224, 224), (1, 3, 224, 224),
                                           (2, 3, 224, 224), (1, 3, 224, 224)], 45, None),
    ("mbv3-ocr-block4-pruned90-quant", [(1, 3, 48, 160), (1, 3, 48, 160), (2, 3, 32, 96),
                                        (1, 3, 48, 160)], 50, 2),
    ("yolov8n-block4-pruned90-quant", [(1, 3, 128, 128), (1, 3, 128, 128), (2, 3, 96, 160),
                                       (1, 3, 128, 128)], 60, 8)])
def test_bound_quantized_cnn_steps_follow_new_inputs(name, shapes, min_qconv, heap_max):
    """Quantized CNNs: after a plan's first run their QConv steps (1x1 on the input slot,
    k x k through the per-thread im2col buffer, residuals in the kernel, compiled depthwise
    convs, NCHW inputs and outputs through the binding's scratch) and the QTable / QAdd
    steps are bound calls; outputs stay bit-identical to the heap-mode run for
    new images, another batch and back."""
    from deepsparse_cy import zoo
    m = zoo.get_model(name)
    e = ds.compile_model(m)
    heap = ds.Engine(m, memory_planner=False)
    rng = np.random.default_rng(7)
    for shp in shapes:
        x = rng.standard_normal(shp).astype(np.float32)
        for g, h in zip(e.run([x]), heap.run([x])):
            np.testing.assert_array_equal(g, h)
    plan = e._plans[e._key([x])]
    inst = plan._pool[0]
    bound = [plan.steps[i][1] for i, b in enumerate(inst.bound) if b]
    n_bound = sum(1 for op in bound if type(op).__name__ == "QConv")
    assert n_bound >= min_qconv, n_bound
    if "mobilenet" in name or "ocr" in name:
        assert any(getattr(op, "qdw", False) for op in bound)        # depthwise convs
    kinds = {plan.steps[i][0].op_type for i, b in enumerate(inst.bound) if b}
    if "yolo" in name:        # C2f's SiLU tables and 8-bit joins (graph/fusion_q8.py); the
        assert {"QTable", "QAdd"} <= kinds, kinds          # head's dequantizations are in its
        assert "DequantizeLinear" not in {st[0].op_type for st in plan.steps}   # QConvs now
    if "ocr" in name:                           # the squeeze-excite blocks' float steps
        assert {"GlobalAveragePool", "HardSwish", "QTable"} <= kinds, kinds
    if heap_max is not None:
        from deepsparse_cy.ops import conv as conv_ops   # compiled FP32 convs: not at generic
        heap = [plan.steps[i][0].op_type for i, b in enumerate(inst.bound) if not b]
        if not conv_ops._FAST_CONV:             # the OCR head's FP32 ConvTransposes
            heap = [k for k in heap if k not in ("FusedConv", "FusedConvTranspose")]
        assert len(heap) <= heap_max, heap


def test_compiled_float_paths_follow_dispatch():
    """Every SIMD build of f32_conv (avx2, avx512_vnni) turns on the compiled FP32 conv, GEMM and
    attention paths; only the generic level keeps numpy / BLAS. (An avx512_vnni build once
    switched them off: BERT-base INT8's attention fell back to BLAS, whose spinning workers
    slowed every other step 6x; no output changed, so only this check sees it.)"""
    from deepsparse_cy import kernels as K
    from deepsparse_cy.ops import conv, fast_fused
    simd = K.kernel_builds()["f32_conv"] != "generic"
    assert conv._FAST_CONV == simd and fast_fused._FAST_GEMM == simd
    assert (fast_fused._ATTN is not None) == simd
