"""Shared helpers of the kernel tests: ISA parametrisation (from the kernel table) and random
weights with each sparsity pattern."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K


def isa_params(family=None):
    """One pytest param per ISA build (of `family`, when given: the float families have no
    avx512_vnni build); builds this CPU cannot run are skipped naming the feature."""
    out = []
    have = {b for f, b, _, _ in K.KERNELS if family is None or f == family}
    for isa in [b for b in K.ISA_BUILDS if b in have]:
        miss = K.missing_features(isa, family)
        marks = [pytest.mark.skip(reason=f"CPU lacks {', '.join(miss)} for the {isa} build")] if miss else []
        out.append(pytest.param(isa, marks=marks, id=isa))
    return out


def level_params():
    """Every dispatch level of DEEPSPARSE_CY_ISA; levels above this CPU are skipped."""
    need = {"generic": [], "avx2": ["avx2", "fma"], "avx512": ["avx512f", "avx512bw", "avx512vl"],
            "avx512_vnni": ["avx512f", "avx512bw", "avx512vl", "avx512_vnni"]}
    f = K.cpu_features()
    out = []
    for lv in K.LEVELS:
        # amx: its build's own needs (features, OS grant, a compiler that made the build)
        miss = K.missing_features(lv, "qs8_gemm") if lv == "amx" else [x for x in need[lv] if not f.get(x)]
        marks = [pytest.mark.skip(reason=f"CPU lacks {', '.join(miss)} for level {lv}")] if miss else []
        out.append(pytest.param(lv, marks=marks, id=lv))
    return out


def sparse_weight(rng, n, k, sparsity, pattern, dtype=np.int8, full_range=True):
    """Random [n, k] weight with `sparsity` zeros in `pattern`: 'block4' (whole aligned 1x4 quads
    along K), 'unstructured' (elements) or 'dense' (no pruning). Full s8 range incl. -128."""
    if dtype == np.int8:
        w = rng.integers(-128, 128, (n, k), dtype=np.int8) if full_range else \
            rng.integers(-8, 8, (n, k), dtype=np.int8)
        w[w == 0] = 1                       # sparsity comes only from the mask
    else:
        w = rng.standard_normal((n, k)).astype(dtype)
    if pattern == "dense" or sparsity == 0:
        return w
    if pattern == "block4":
        k4 = -(-k // 4)
        keep = np.repeat(rng.random((n, k4)) >= sparsity, 4, axis=1)[:, :k]
    else:
        keep = rng.random((n, k)) >= sparsity
    return np.where(keep, w, 0).astype(dtype)


def epilogue_layer(rng, fmt, m=45, k=100, n=37):
    """An INT8 layer for the epilogue tests: u8 x [m, k], an 80% block4 weight (dense for
    fmt 'dense') packed in fmt, an int32 bias, and the float64 accumulators with x_zero_point
    128 (to size the scales). Returns (x, w, packed, bias, acc)."""
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = sparse_weight(rng, n, k, 0.0 if fmt == "dense" else 0.8, "block4")
    p = K.pack_qs8(w, fmt)
    b = rng.integers(-300, 300, n).astype(np.int32)
    acc = K.qs8_matmul_reference(x, w, b, None, np.int32, 0, 128).astype(np.float64)
    return x, w, p, b, acc


def residual_view(rng, rdt, m, n, off=2):
    """A residual (r [m, n], zero_point, scale) for the INT8 kernels' epilogue: float32 r, or
    uint8 / int8 r with a zero point and scale; r is a strided view (columns off .. off + n - 1
    of a wider buffer, off <= 5)."""
    if rdt == np.float32:
        rbuf = rng.standard_normal((m, n + 5)).astype(np.float32)
        return (rbuf[:, off:n + off], 0, 1.0)
    info = np.iinfo(rdt)
    rbuf = rng.integers(info.min, info.max + 1, (m, n + 5)).astype(rdt)
    return (rbuf[:, off:n + off], 7 if rdt == np.uint8 else -3, 0.011)


# the levels of the once-built float kernels (_f32_fused: baseline, AVX2, AVX-512) this CPU runs
F32_LEVELS = [0] + ([1] if K.kernel_isa() != "generic" else []) + \
    ([2] if K.kernel_isa() in ("avx512_vnni", "amx") else [])


@pytest.fixture(params=F32_LEVELS, ids=lambda lv: ["baseline", "avx2", "avx512"][lv])
def f32_level(request):
    """_f32_fused's level set for the test (restored after it)."""
    from deepsparse_cy.kernels import _f32_fused
    was = _f32_fused.level()
    _f32_fused.set_level(request.param)
    yield request.param
    _f32_fused.set_level(was)


def same_bits(a, b):
    """a and b hold the same float bit patterns (NaNs compared as NaN, whatever their payload's
    sign: numpy's own ops keep or drop it as the platform does)."""
    an, bn = np.isnan(a), np.isnan(b)
    np.testing.assert_array_equal(an, bn)
    u = np.uint64 if a.dtype == np.float64 else np.uint32
    np.testing.assert_array_equal(a[~an].view(u), b[~bn].view(u))
