"""deepsparse_cy/ops/gather.py against onnx's ReferenceEvaluator and the node test cases."""
import numpy as np
import pytest

from _ref_common import check, node_cases

RNG = np.random.default_rng(3)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("idx_shape", [(), (4,), (2, 3)])
@pytest.mark.parametrize("idt", [np.int64, np.int32])
def test_gather(axis, idx_shape, idt):
    x = f32(5, 6, 7)
    d = x.shape[axis]
    idx = RNG.integers(-d, d, size=idx_shape).astype(idt)
    check("Gather", [("x", x), ("i", idx)], {"axis": axis})


def test_gather_out_of_range_raises():
    from deepsparse_cy.errors import InputError
    from deepsparse_cy.ops.gather import Gather
    with pytest.raises(InputError):
        Gather(f32(3, 2), np.array([3]))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_elements(axis):
    x = f32(4, 5, 3)
    shape = list(x.shape)
    shape[axis] = 6
    idx = RNG.integers(-x.shape[axis], x.shape[axis], size=shape)
    got = check("GatherElements", [("x", x), ("i", idx)], {"axis": axis}, test_out=False)
    # The reference rejects negative axes here; ours must give the same for axis - rank.
    from deepsparse_cy.ops.gather import GatherElements
    np.testing.assert_array_equal(GatherElements(x, idx, axis=axis - 3), got[0])


@pytest.mark.parametrize("batch_dims,idx_shape", [(0, (3, 2)), (0, (2, 2, 3)), (0, (4, 1)),
                                                  (1, (4, 2, 1)), (1, (4, 2)), (2, (4, 5, 3, 1))])
def test_gather_nd(batch_dims, idx_shape):
    x = f32(4, 5, 6)
    k = idx_shape[-1]
    dims = x.shape[batch_dims: batch_dims + k]
    idx = np.stack([RNG.integers(-d, d, size=idx_shape[:-1]) for d in dims], axis=-1).astype(np.int64)
    check("GatherND", [("x", x), ("i", idx)], {"batch_dims": batch_dims}, test_out=False)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_elements(reduction, axis):
    x = f32(4, 5)
    shape = [3, 3]
    # Unique indices per column/row for "none" (duplicates are order-dependent there).
    if reduction == "none":
        idx = np.argsort(RNG.random((x.shape[axis], 3) if axis == 0 else (3, x.shape[axis])), axis=axis)
        idx = idx[:3] if axis == 0 else idx[:, :3]
    else:
        idx = RNG.integers(-x.shape[axis], x.shape[axis], size=shape)
    check("ScatterElements", [("x", x), ("i", idx.astype(np.int64)), ("u", f32(*idx.shape))],
          {"axis": axis, "reduction": reduction}, opset=18, test_out=False)


def test_scatter_deprecated():
    # Scatter-9/10 is ScatterElements without reduction (the reference has no Scatter).
    from deepsparse_cy.ops.gather import Scatter
    x, i, u = f32(3, 3), np.array([[1, 0, 2]], np.int64), f32(1, 3)
    exp = check("ScatterElements", [("x", x), ("i", i), ("u", u)], {"axis": 0}, opset=11, test_out=False)
    np.testing.assert_array_equal(Scatter(x, i, u, axis=0), exp[0])


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    x = f32(4, 5, 6)
    idx = np.array([[0, 1], [3, -2], [2, 4]] + ([[0, 1]] if reduction != "none" else []), np.int64)
    check("ScatterND", [("x", x), ("i", idx), ("u", f32(len(idx), 6))], {"reduction": reduction},
          opset=18, test_out=False)


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("with_idx", [False, True])
def test_tensor_scatter(mode, with_idx):
    past = f32(2, 3, 8, 4)
    upd = f32(2, 3, 3, 4)
    wi = np.array([1, 5], np.int64) if mode == "linear" else np.array([6, 2], np.int64)
    ins = [("p", past), ("u", upd)] + ([("w", wi)] if with_idx else [])
    check("TensorScatter", ins, {"mode": mode, "axis": 2}, opset=24, test_out=False)


def test_node_cases():
    ran, fails = node_cases(["Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements",
                             "ScatterND", "TensorScatter"])
    assert ran > 20
    assert not fails, fails
