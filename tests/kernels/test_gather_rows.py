"""_f32_fused.gather_rows and the Gather op's bound call (ops/gather._gather_bind): rows of a
row-major table picked by index, byte for byte numpy's take on axis 0, for negative indices,
ragged row sizes, every row dtype width, one to three threads and more rows than the prefetch
runs ahead; an index out of range writes nothing and is reported; in a graph, an embedding
lookup binds to it and follows new indices, raising InputError on a bad one."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import deepsparse_cy as ds
from deepsparse_cy.errors import InputError
from deepsparse_cy.kernels import _f32_fused
from deepsparse_cy.ops import gather as gather_ops


@pytest.mark.parametrize("V,rb", [(1, 1), (7, 3), (50, 64), (300, 3072), (5, 4100)])
@pytest.mark.parametrize("n", [0, 1, 5, 8, 9, 129])
@pytest.mark.parametrize("nt", [1, 2, 3])
def test_gather_rows_matches_take(V, rb, n, nt):
    rng = np.random.default_rng(V * 1000 + rb + n)
    table = rng.integers(0, 256, (V, rb), dtype=np.uint8)
    idx = rng.integers(-V, V, n).astype(np.int64)
    out = np.full((n, rb), 7, np.uint8)
    assert _f32_fused.gather_rows(table, idx, out, nt) == -1
    np.testing.assert_array_equal(out, np.take(table, idx, axis=0))


@pytest.mark.parametrize("bad", [5, -6, 2**40, -(2**62)])
def test_gather_rows_reports_first_bad_index(bad):
    table = np.arange(5 * 8, dtype=np.uint8).reshape(5, 8)
    idx = np.array([0, 4, -5, bad, 9], np.int64)
    out = np.zeros((5, 8), np.uint8)
    assert _f32_fused.gather_rows(table, idx, out, 2) == 3
    assert not out.any()                          # nothing written
    with pytest.raises(ValueError):
        _f32_fused.gather_rows(table, idx, np.zeros((4, 8), np.uint8), 1)


def _embedding_model(V, D, idx_type, dtype=TensorProto.FLOAT):
    rng = np.random.default_rng(V + D)
    np_dt = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16,
             TensorProto.INT64: np.int64}[dtype]
    table = (rng.standard_normal((V, D)) * 100).astype(np_dt)
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("Neg", ["e"], ["y"])],
        "emb", [helper.make_tensor_value_info("ids", idx_type, [2, 3])],
        [helper.make_tensor_value_info("y", dtype, None)],
        [numpy_helper.from_array(table, "table")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), table


@pytest.mark.parametrize("idx_type", [TensorProto.INT64, TensorProto.INT32])
@pytest.mark.parametrize("dtype,D", [(TensorProto.FLOAT, 96), (TensorProto.FLOAT16, 200),
                                     (TensorProto.INT64, 40), (TensorProto.FLOAT, 3)])
def test_bound_embedding_gather(idx_type, dtype, D):
    m, table = _embedding_model(1000, D, idx_type, dtype)
    e = ds.compile_model(m)
    rng = np.random.default_rng(D)
    it = np.int64 if idx_type == TensorProto.INT64 else np.int32
    for _ in range(4):
        ids = rng.integers(-1000, 1000, (2, 3)).astype(it)
        np.testing.assert_array_equal(e.run([ids])[0], -np.take(table, ids, axis=0))
    plan = e._plans[e._key([ids])]
    inst = plan._pool[0]
    call = inst.bound[0]
    assert call and plan.steps[0][0].op_type == "Gather"
    compiled = table.itemsize * D >= gather_ops.GATHER_ROWS_MIN_BYTES
    assert (call[0].__name__ == "gather_rows") == compiled, call[0].__name__
    for bad in (1000, -1001):
        ids[1, 2] = bad
        with pytest.raises(InputError, match="out of range"):
            e.run([ids])
    ids[1, 2] = -1
    np.testing.assert_array_equal(e.run([ids])[0], -np.take(table, ids, axis=0))


@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_bound_gather_reads_strided_indices_each_call(idx_dtype):
    """The Gather op's bound call on indices that are a strided view (not C-contiguous): each
    call takes the values the view holds then, as np.take does, and a bad one raises."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((40, 96)).astype(np.float32)
    base = np.zeros((3, 8), idx_dtype)
    ids = base[:, 1:5]             # [3, 4], rows not evenly spaced: reshape(-1) would copy
    out = np.empty((3, 4, 96), np.float32)
    f, args = gather_ops._gather_bind([table, ids], out, num_threads=2)
    assert f.__name__ == "gather_rows"
    for _ in range(3):
        base[...] = rng.integers(-40, 40, base.shape)
        f(*args)
        np.testing.assert_array_equal(out, np.take(table, ids, axis=0))
    base[2, 4] = 40
    with pytest.raises(InputError, match="out of range"):
        f(*args)
