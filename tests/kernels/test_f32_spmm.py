"""Sparse FP32 GEMM against numpy (float tolerance: summation order differs from BLAS)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import deepsparse_cy.kernels as K
from _kernel_cases import isa_params, sparse_weight

SHAPES = [(1, 1, 1), (1, 9, 5), (3, 6, 17), (8, 31, 33), (33, 257, 19), (40, 768, 24),
          (70, 103, 129), (128, 768, 40)]


def _check(x, w, isa, act=None, clip=None, nt=None, bias=True):
    rng = np.random.default_rng(0)
    b = rng.standard_normal(w.shape[0]).astype(np.float32) if bias else None
    p = K.pack_f32_sparse(w)
    np.testing.assert_array_equal(p.unpack(), w)
    got = K.f32_spmm(x, p, b, act, clip, num_threads=nt, isa=isa)
    ref = K.f32_spmm_reference(x.astype(np.float64), w.astype(np.float64), b, act, clip)
    # GELU: |gelu'| <= 1.13, and the rational erf adds a few ulp of the result
    tol = 1.2e-5 * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T + 1)
    assert got.dtype == np.float32
    assert (np.abs(got - ref) <= tol).all()


@pytest.mark.parametrize("isa", isa_params("f32_spmm"))
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_f32_spmm(isa, sparsity, shape):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = sparse_weight(rng, n, k, sparsity, "unstructured", dtype=np.float32)
    _check(x, w, isa)


@pytest.mark.parametrize("isa", isa_params("f32_spmm"))
@pytest.mark.parametrize("act,clip", [("relu", None), ("clip", (-0.5, 0.7)), ("gelu", None)])
@pytest.mark.parametrize("nt", [1, 2, 5])
def test_f32_spmm_act_threads(isa, act, clip, nt):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((45, 120)).astype(np.float32)
    w = sparse_weight(rng, 61, 120, 0.85, "unstructured", dtype=np.float32)
    w[5:9] = 0
    _check(x, w, isa, act, clip, nt)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 80), k=st.integers(1, 300), n=st.integers(1, 50),
       sparsity=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_hypothesis_f32(m, k, n, sparsity, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = sparse_weight(rng, n, k, sparsity, "unstructured", dtype=np.float32)
    for isa in K.runnable_isas("f32_spmm"):
        _check(x, w, isa, bias=bool(seed % 2))


def test_f32_bad_args():
    p = K.pack_f32_sparse(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError):
        K.f32_spmm(np.ones((2, 5), np.float32), p)
    with pytest.raises(ValueError):
        K.pack_f32_sparse(np.ones((3, 4), np.float64))


@pytest.mark.parametrize("isa", isa_params("f32_spmm"))
@pytest.mark.parametrize("shape", [(32, 64, 24), (70, 130, 9), (128, 200, 40)],
                         ids=lambda s: "x".join(map(str, s)))
def test_f32_spmm_gelu_covers_both_tails(isa, shape):
    """GELU over pre-activations spanning its curved range and both tails (erf clamp at
    |x| / sqrt 2 = 4), staged rows full and ragged."""
    m, k, n = shape
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((m, k)) * 0.6).astype(np.float32)
    w = sparse_weight(rng, n, k, 0.8, "unstructured", dtype=np.float32)
    pre = x.astype(np.float64) @ w.astype(np.float64).T
    assert pre.min() < -6 and pre.max() > 6
    _check(x, w, isa, "gelu")


@pytest.mark.parametrize("isa", isa_params("f32_spmm"))
@pytest.mark.parametrize("act,clip", [(None, None), ("relu", None), ("clip", (-0.5, 0.7)),
                                      ("gelu", None)])
@pytest.mark.parametrize("shape", [(33, 769, 19), (70, 1600, 40), (128, 3072, 24)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("nt", [1, 2])
def test_f32_spmm_k_panels(isa, act, clip, shape, nt):
    """K above the panel width: several passes per token tile, the later ones adding into the
    output and the last applying the activation; rows with nonzeros in only some panels (or
    none) and a panel without any nonzero."""
    m, k, n = shape
    rng = np.random.default_rng(k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = sparse_weight(rng, n, k, 0.9, "unstructured", dtype=np.float32)
    w[3] = 0                                   # an empty row
    w[4, K.f32.PANEL_K:] = 0                   # a row only in the first panel
    w[5, :K.f32.PANEL_K] = 0                   # a row only in the later panels
    if k >= 3 * K.f32.PANEL_K:
        w[:, K.f32.PANEL_K:2 * K.f32.PANEL_K] = 0   # a panel no row uses
    p = K.pack_f32_sparse(w)
    assert "panel_ptr" in p.arrays
    _check(x, w, isa, act, clip, nt)
