"""MatMul / Gemm / MatMulInteger / QLinearMatMul / Einsum vs onnxruntime + conformance cases."""
import numpy as np
import pytest

from tests.ops._cnn_common import check, conformance_params, run_conformance_case, run_mine

FAMILY = ["MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "Einsum"]


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                   ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
                                   ((1, 4), (2, 4, 6))])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_matmul_vs_ort(rng, sa, sb, dt):
    a = rng.standard_normal(sa).astype(dt)
    b = rng.standard_normal(sb).astype(dt)
    check("MatMul", [("a", a), ("b", b)], opset=13)


def test_matmul_int_and_half(rng):
    a = rng.integers(-50, 50, (3, 4)).astype(np.int32)
    b = rng.integers(-50, 50, (4, 5)).astype(np.int32)
    check("MatMul", [("a", a), ("b", b)], opset=13)
    a16 = rng.standard_normal((3, 8)).astype(np.float16)
    b16 = rng.standard_normal((8, 2)).astype(np.float16)
    check("MatMul", [("a", a16), ("b", b16)], oracle="ref", opset=13, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("transA", [0, 1])
@pytest.mark.parametrize("transB", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (2.0, 0.0)])
@pytest.mark.parametrize("cshape", [None, (5,), (1, 5), (3, 1), (3, 5), ()])
def test_gemm_vs_ort(rng, transA, transB, alpha, beta, cshape):
    A = rng.standard_normal((4, 3) if transA else (3, 4)).astype(np.float32)
    B = rng.standard_normal((5, 4) if transB else (4, 5)).astype(np.float32)
    inputs = [("a", A), ("b", B)]
    if cshape is not None:
        inputs.append(("c", rng.standard_normal(cshape).astype(np.float32)))
    check("Gemm", inputs, dict(transA=transA, transB=transB, alpha=alpha, beta=beta), opset=13)


@pytest.mark.parametrize("m", [1, 2, 16, 17])
@pytest.mark.parametrize("transB", [0, 1])
def test_gemm_few_rows_const_weight_vs_ort(rng, m, transB):
    # classifier-style Gemm: constant weight + bias, few rows -> ops/linalg.py's kernel path
    A = rng.standard_normal((m, 300)).astype(np.float32)
    B = rng.standard_normal((37, 300) if transB else (300, 37)).astype(np.float32)
    C = rng.standard_normal(37).astype(np.float32)
    check("Gemm", [("a", A), ("b", B), ("c", C)], dict(transB=transB, alpha=0.5, beta=1.5),
          opset=13)


def test_matmul_integer_vs_ort(rng):
    # u8 x s8 against onnx's reference: onnxruntime's AVX2 u8s8 kernel saturates int16 pair sums
    a = rng.integers(0, 255, (2, 3, 4)).astype(np.uint8)
    b = rng.integers(-128, 127, (4, 5)).astype(np.int8)
    check("MatMulInteger", [("a", a), ("b", b), ("az", np.array(12, np.uint8)),
                            ("bz", np.array(-3, np.int8))], oracle="ref", opset=10)
    # per-row a / per-column b zero points (neither oracle supports per-row a): exact numpy
    a2 = rng.integers(0, 255, (3, 4)).astype(np.uint8)
    b2 = rng.integers(0, 255, (4, 5)).astype(np.uint8)
    az = rng.integers(0, 255, 3).astype(np.uint8)
    bz = rng.integers(0, 255, 5).astype(np.uint8)
    got = run_mine("MatMulInteger", [("a", a2), ("b", b2), ("az", az), ("bz", bz)], opset=10)[0]
    exp = (a2.astype(np.int64) - az[:, None]) @ (b2.astype(np.int64) - bz[None, :])
    np.testing.assert_array_equal(got, exp.astype(np.int32))
    assert got.dtype == np.int32


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_qlinear_matmul_vs_ort(rng, dt):
    lo, hi = (0, 255) if dt == np.uint8 else (-128, 127)
    a = rng.integers(lo, hi, (3, 7)).astype(dt)
    b = rng.integers(lo, hi, (7, 4)).astype(dt)
    inputs = [("a", a), ("as", np.array(0.02, np.float32)), ("az", np.array(lo + 100, dt)),
              ("b", b), ("bs", np.array(0.03, np.float32)), ("bz", np.array(lo + 120, dt)),
              ("ys", np.array(0.5, np.float32)), ("yz", np.array(lo + 90, dt))]
    check("QLinearMatMul", inputs, opset=10, const_sets=((),))


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij, bjk -> bik", [(2, 3, 4), (2, 4, 5)]),
    ("ii->i", [(4, 4)]),
    ("ij->ji", [(3, 4)]),
    ("i,i", [(5,), (5,)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
])
def test_einsum_vs_ort(rng, eq, shapes):
    inputs = [(f"x{i}", rng.standard_normal(s).astype(np.float32)) for i, s in enumerate(shapes)]
    check("Einsum", inputs, dict(equation=eq), opset=12, const_sets=((),))


@pytest.mark.parametrize("case", conformance_params(FAMILY))
def test_conformance(case):
    run_conformance_case(case)
