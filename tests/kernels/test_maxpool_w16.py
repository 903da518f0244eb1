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


@pytest.mark.parametrize("kh,kw", [(2, 2), (1, 2), (2, 1), (3, 2), (2, 3), (1, 1)])
@pytest.mark.parametrize("h,w", [(20, 20), (1, 37), (10, 16), (3, 33)])
def test_upsample_and_resize_nearest_8bit(kh, kw, h, w):
    """The byte planes of the 8-bit nearest Resize (upsampling by integer factors, index-table
    resize) against numpy, 1 and 2 threads, s8 through its uint8 view."""
    from deepsparse_cy.kernels import _f32_ops
    rng = np.random.default_rng(h * 7 + w + kh)
    x = rng.integers(0, 256, (130, h, w)).astype(np.uint8)
    ref = np.repeat(np.repeat(x, kh, 1), kw, 2)
    for nt in (1, 2):
        y = np.full((130, h * kh, w * kw), 7, np.uint8)
        _f32_ops.upsample_nearest(x, y, kh, kw, nt)
        np.testing.assert_array_equal(y, ref)
        hi = (np.arange(h * kh) * 5 // 7 % h).astype(np.int32)
        wi = (np.arange(w * kw)[::-1] % w).astype(np.int32)
        z = np.empty((130, len(hi), len(wi)), np.uint8)
        _f32_ops.resize_nearest(x.view(np.int8).view(np.uint8), hi, wi, z, nt)
        np.testing.assert_array_equal(z, x[:, hi][:, :, wi])
    with pytest.raises(ValueError):
        _f32_ops.resize_nearest(x, np.array([h], np.int32), wi, np.empty((130, 1, len(wi)), np.uint8))
