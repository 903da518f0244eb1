"""Sigmoid, SiLU and GELU rows (csrc/f32_fused.h dscy_bias_act: the baseline copy, 8 lanes at
the AVX2 level, 16 at the AVX-512 one) against float64 references and against each other:
ragged row lengths (vector tails), a bias, special values (NaN, +-inf, beyond exp's range)."""
import math

import numpy as np
import pytest

from deepsparse_cy import kernels
from deepsparse_cy.kernels import _f32_fused
from _kernel_cases import F32_LEVELS, f32_level  # noqa: F401 (the fixture)

LEVELS = F32_LEVELS
ACTS = {"Sigmoid": _f32_fused.ACTIVATIONS["Sigmoid"], "SiLU": _f32_fused.ACTIVATIONS["SiLU"],
        "Gelu": _f32_fused.ACTIVATIONS["Gelu"]}
SPECIAL = np.array([np.nan, np.inf, -np.inf, 100.0, -100.0, 0.0, 88.0, -88.0, 87.5, -87.5,
                    1e-30, -1e-30, 4.0 * math.sqrt(2), -6.0], np.float32)


def _reference(name, x):
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if name == "Sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if name == "SiLU":
            return x / (1.0 + np.exp(-x))
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


@pytest.fixture
def level(f32_level):
    return f32_level


@pytest.mark.parametrize("name", list(ACTS))
@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 17, 33, 2100])
@pytest.mark.parametrize("with_bias", [False, True])
def test_act_rows_match_float64(level, name, n, with_bias):
    rng = np.random.default_rng(n * 3 + with_bias)
    x = (rng.standard_normal((5, n)) * 6).astype(np.float32)
    x[0, :min(n, SPECIAL.size)] = SPECIAL[:n]
    b = (rng.standard_normal(n) * 2).astype(np.float32) if with_bias else None
    y = x.copy()
    _f32_fused.bias_act_inplace(y, b, ACTS[name], 0.0, 0.0, 2)
    t = x + b if with_bias else x
    ref = _reference(name, t)
    fin = np.isfinite(ref)
    # a few float32 ulps of the value (the polynomial and the float32 input of exp / erf),
    # plus an absolute floor: GELU far below 0 (its float32 form rounds 1 + erf to 0 there),
    # and the sigmoid / SiLU values below ~1e-30 (flushed or subnormal)
    np.testing.assert_allclose(y[fin], ref[fin], rtol=4e-7, atol=1e-6 if name == "Gelu" else 1e-30)
    assert np.array_equal(np.isnan(y), np.isnan(ref)), "NaN where the reference has one, only there"
    assert np.array_equal(y[~fin & ~np.isnan(ref)], ref[~fin & ~np.isnan(ref)])


@pytest.mark.parametrize("name", list(ACTS))
def test_act_levels_agree(name):
    """The vector rows against the baseline copy on the same data: the same values at +-inf /
    NaN inputs and wherever the baseline's is not finite, the rest within 2 ulps (and the absolute floors above: 1 + erf
    near 0 is one float32 rounding of erf near -1); act_rows (out of place) as in place."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((40, 333)) * 10).astype(np.float32)
    x[0, :SPECIAL.size] = SPECIAL
    was = _f32_fused.level()
    outs = {}
    try:
        for lv in LEVELS:
            _f32_fused.set_level(lv)
            y = np.empty_like(x)
            _f32_fused.act_rows(x, y, ACTS[name], 0.0, 0.0, 2)
            z = x.copy()
            _f32_fused.bias_act_inplace(z, None, ACTS[name], 0.0, 0.0, 1)
            np.testing.assert_array_equal(y, z)
            outs[lv] = y
    finally:
        _f32_fused.set_level(was)
    base = outs[0]
    for lv, y in outs.items():
        special = ~np.isfinite(base) | ~np.isfinite(x)
        np.testing.assert_array_equal(y[special], base[special], err_msg=f"level {lv}")
        ulp = np.spacing(np.abs(base[~special]).astype(np.float32))
        floor = 1e-6 if name == "Gelu" else 1e-30
        assert (np.abs(y[~special] - base[~special]) <= 2 * ulp + floor).all(), f"level {lv}"


@pytest.mark.parametrize("shape", [(1, 16, 8400), (2, 5, 37), (1, 3, 15), (3, 1, 17), (1, 700, 33)])
def test_softmax_axis_levels(level, shape):
    """Softmax over a middle axis (its exp pass on 8 / 16 lanes at levels 1 / 2, the tail of a
    256-column block in the scalar form): float64 reference; a -inf logit gives an exact 0,
    logits far below their column's maximum (beyond exp's range) too."""
    rng = np.random.default_rng(shape[2])
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    x[0, 0, : shape[2] // 2] = -np.inf
    if shape[1] > 1:
        x[0, 1, :3] = -200.0
        x[0, 0, :3] = 0.0
    y = np.empty_like(x)
    _f32_fused.softmax_axis(x, y, 2)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        e = np.exp(x64 - x64.max(1, keepdims=True))
        ref = e / e.sum(1, keepdims=True)
    fin = np.isfinite(ref)
    # e^t of a float32 t carries |t| * 2^-24 of relative error (2e-6 at t = -30)
    np.testing.assert_allclose(y[fin], ref[fin], rtol=1e-5, atol=1e-30)
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    assert (y[np.isneginf(x) & fin] == 0).all()
    if shape[1] > 1:
        assert (y[0, 1, :3] == 0).all()
