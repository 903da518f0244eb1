"""MaxPool's AVX-512 path for rows of at most 16 pixels (csrc/dscy_pool.h
dscy_maxpool2d_plane_w16: one zmm per row) against the scalar planes on random geometries with
NaN and -inf inputs: the same taps in the same order, so the same bits (NaN never wins over a
number; a window reaching the padding is -inf when all its inputs are NaN)."""
import numpy as np
import pytest

from deepsparse_cy.kernels import _f32_ops, cpu_features


@pytest.mark.skipif(not all(cpu_features().get(k) for k in ("avx512f", "avx512bw", "avx512vl",
                                                             "avx512dq")),
                    reason="no AVX-512 F/BW/VL/DQ")
@pytest.mark.parametrize("seed", range(8))
def test_maxpool_w16_matches_scalar(seed):
    rng = np.random.default_rng(seed)
    done = 0
    while done < 40:
        h, w = int(rng.integers(1, 17)), int(rng.integers(1, 17))
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        sh, dh = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        pb, pr = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        ho = (h + pt + pb - ((kh - 1) * dh + 1)) // sh + 1
        wo = w + pl + pr - kw + 1
        if ho <= 0 or not 0 < wo <= 16:
            continue
        x = rng.standard_normal((3, h, w)).astype(np.float32)
        x[rng.random(x.shape) < 0.2] = np.nan
        x[rng.random(x.shape) < 0.05] = -np.inf
        got = []
        was = _f32_ops.level()
        try:
            for lv in (1, 2):
                _f32_ops.set_level(lv)
                y = np.full((3, ho, wo), 7, np.float32)
                _f32_ops.maxpool2d(x, y, kh, kw, sh, 1, dh, 1, pt, pl, 2)
                got.append(y)
        finally:
            _f32_ops.set_level(was)
        np.testing.assert_array_equal(got[1], got[0])
        done += 1
