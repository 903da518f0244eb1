"""_f32_fused.hardswish (the HardSwish op's float32 pass, ops/fast_fused._HardSwishFast): bit for
bit the numpy op (ops/elementwise.HardSwish: x * (1/6), + 1/2, clip to [0, 1], * x in float32
steps) at each level this machine runs (baseline, AVX2, AVX-512), for lengths with ragged tails,
the special values (NaN, infinities, signed zeros, the clip's corners), in place and on two
threads (the halves split at a multiple of 16)."""
import numpy as np
import pytest

from _kernel_cases import f32_level, same_bits as _same  # noqa: F401 (a fixture)
from deepsparse_cy.kernels import _f32_fused
from deepsparse_cy.ops import elementwise as ew


_SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0, -3.0, 2.9999998, -2.9999998,
                     3.0000002, -3.0000002, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 0.5, -0.5,
                     1.5, -1.5, 6.0, -6.0], np.float32)


@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 17, 33, 100, 1000, 4099])
@pytest.mark.parametrize("nt", [1, 2])
def test_hardswish_matches_numpy_op(f32_level, n, nt):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * rng.choice([0.1, 3.0, 1e3], n)).astype(np.float32)
    x[: min(n, _SPECIAL.size)] = _SPECIAL[: min(n, _SPECIAL.size)]
    rng.shuffle(x)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = ew.HardSwish(x.copy())
    y = np.full(n, 7.0, np.float32)
    _f32_fused.hardswish(x, y, nt)
    _same(y, ref)
    z = x.copy()
    _f32_fused.hardswish(z, z, nt)          # in place
    _same(z, ref)


@pytest.mark.parametrize("n", [131072, 131072 + 13, 300001])
def test_hardswish_two_threads_large(f32_level, n):
    """From _nt's size the halves go to two threads (split at a multiple of 16 values)."""
    rng = np.random.default_rng(1)
    x = (4 * rng.standard_normal(n)).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = ew.HardSwish(x.copy())
    for nt in (1, 2, 3):
        y = np.empty(n, np.float32)
        _f32_fused.hardswish(x, y, nt)
        _same(y, ref)


def test_hardswish_refuses_other_length():
    with pytest.raises(ValueError):
        _f32_fused.hardswish(np.zeros(5, np.float32), np.zeros(4, np.float32), 1)


def test_hardswish_op_float_and_fallbacks():
    """The HardSwish op (opset 14): float32 through the kernel, float64 / strided through the
    numpy op; the same values as that op throughout."""
    import onnx
    from onnx import TensorProto, helper

    import deepsparse_cy as ds
    for dt, tp in ((np.float32, TensorProto.FLOAT), (np.float64, TensorProto.DOUBLE)):
        g = helper.make_graph([helper.make_node("HardSwish", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", tp, [2, 3, 5, 7])],
                              [helper.make_tensor_value_info("y", tp, [2, 3, 5, 7])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
        e = ds.compile_model(m.SerializeToString())
        x = (4 * np.random.default_rng(2).standard_normal((2, 3, 5, 7))).astype(dt)
        x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, -0.0]
        for _ in range(2):           # the second run on the bound plan
            y = e.run([x])[0]
        assert y.dtype == dt
        with np.errstate(invalid="ignore"):
            ref = ew.HardSwish(x.copy()).reshape(-1)
        _same(y.reshape(-1), ref)
    from deepsparse_cy.ops.fast_fused import _HardSwishFast
    op = _HardSwishFast.__new__(_HardSwishFast)
    op.nt = 1
    xs = (4 * np.random.default_rng(3).standard_normal((6, 8))).astype(np.float32)[:, ::2]
    _same(op.run([xs], None)[0].reshape(-1), ew.HardSwish(xs.copy()).reshape(-1))
