"""Pooling family vs onnxruntime / onnx reference and onnx's conformance cases."""
import numpy as np
import pytest

from tests.ops._cnn_common import check, conformance_params, run_conformance_case, run_mine, run_ort

FAMILY = ["MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "MaxUnpool",
          "MaxRoiPool"]

POOL_CONFIGS = [
    # nd, k, s, d, pads, auto_pad, ceil_mode
    (2, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], "NOTSET", 0),
    (2, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], "NOTSET", 1),
    (2, [2, 3], [2, 1], [1, 1], [1, 0, 0, 2], "NOTSET", 1),
    (2, [3, 3], [1, 1], [2, 2], [2, 2, 2, 2], "NOTSET", 0),
    (2, [3, 2], [2, 2], [1, 1], None, "SAME_UPPER", 0),
    (2, [3, 3], [3, 2], [1, 1], None, "SAME_LOWER", 0),
    (2, [2, 2], [2, 2], [1, 1], None, "VALID", 0),
    (1, [3], [2], [1], [1, 1], "NOTSET", 1),
    (3, [2, 2, 2], [1, 2, 2], [1, 1, 1], [1, 0, 0, 0, 1, 1], "NOTSET", 0),
    (2, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], "NOTSET", 0),          # separable path (SPPF-like)
    (3, [3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 0, 1, 1, 1, 0], "NOTSET", 1),
]


def _attrs(k, s, d, pads, auto_pad, ceil_mode, dil=True):
    a = dict(kernel_shape=k, strides=s, ceil_mode=ceil_mode)
    if dil:
        a["dilations"] = d
    if auto_pad == "NOTSET":
        a["pads"] = pads
    else:
        a["auto_pad"] = auto_pad
    return a


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=[str(i) for i in range(len(POOL_CONFIGS))])
def test_maxpool_vs_ort(rng, cfg):
    nd, k, s, d, pads, auto_pad, ceil = cfg
    x = rng.standard_normal((2, 3, *[8 - i for i in range(nd)])).astype(np.float32)
    check("MaxPool", [("x", x)], _attrs(k, s, d, pads, auto_pad, ceil), opset=12, const_sets=((),))


@pytest.mark.parametrize("cfg", POOL_CONFIGS[:4] + POOL_CONFIGS[7:9], ids=str)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices_vs_ort(rng, cfg, storage_order):
    nd, k, s, d, pads, auto_pad, ceil = cfg
    if storage_order and nd != 2:
        pytest.skip("storage_order only defined for 2-D")
    x = rng.standard_normal((2, 3, *[7 - i for i in range(nd)])).astype(np.float32)
    a = _attrs(k, s, d, pads, auto_pad, ceil)
    a["storage_order"] = storage_order
    exp = run_ort("MaxPool", [("x", x)], a, n_out=2, opset=12)
    got = run_mine("MaxPool", [("x", x)], a, n_out=2, opset=12)
    np.testing.assert_array_equal(got[0], exp[0])
    np.testing.assert_array_equal(got[1], exp[1])


def test_maxpool_int8_and_nan(rng):
    x = rng.integers(-128, 127, (1, 2, 6, 6)).astype(np.int8)
    check("MaxPool", [("x", x)], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
          opset=12, const_sets=((),))
    xf = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    xf[0, 0, 0, 0] = np.nan
    y = run_mine("MaxPool", [("x", xf)], dict(kernel_shape=[2, 2], strides=[2, 2]), opset=12)[0]
    assert np.isfinite(y).all()          # a NaN does not win the max (as in onnxruntime)


@pytest.mark.parametrize("cfg", [c for c in POOL_CONFIGS if c[0] == 2], ids=str)
def test_maxpool_compiled_matches_numpy_path_with_nans(rng, cfg):
    # float32 2-D MaxPool runs the compiled window loop; the numpy tap loop is the reference,
    # including NaN handling (NaN loses to numbers, an all-NaN window stays NaN) and padding
    from deepsparse_cy.ops.pool import _Geom, _max_pool
    _, k, s, d, pads, auto_pad, ceil = cfg
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = np.nan
    x[0, 0, :4, :4] = np.nan
    a = _attrs(k, s, d, pads, auto_pad, ceil)
    got = run_mine("MaxPool", [("x", x)], a, opset=12)[0]
    g = _Geom(x, a["kernel_shape"], a["strides"], a.get("dilations"), a.get("pads"),
              a.get("auto_pad", "NOTSET"), a["ceil_mode"])
    np.testing.assert_array_equal(got, _max_pool(x, g, False, 0))


@pytest.mark.parametrize("shape,k,d,pads,ceil", [
    ((1, 128, 4, 4), [5, 5], [1, 1], [2, 2, 2, 2], 0),     # YOLOv8 SPPF on a 128x128 input
    ((2, 3, 2, 3), [5, 5], [1, 1], [2, 2, 2, 2], 0),       # window wider than the plane
    ((1, 4, 6, 7), [3, 4], [1, 2], [0, 3, 1, 0], 1),       # dilated, asymmetric, ceil tail
    ((1, 2, 5, 1), [1, 3], [1, 1], [0, 1, 0, 1], 0)])      # 1-wide rows
def test_maxpool_stride1_small_planes_match_numpy_path(rng, shape, k, d, pads, ceil):
    """Width-stride-1 pooling reads the row between -inf columns: bit-exact against the numpy
    tap loop, NaNs and all-padding windows included."""
    from deepsparse_cy.ops.pool import _Geom, _max_pool
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(x.shape) < 0.25] = np.nan
    x.reshape(-1)[:3] = np.nan
    a = dict(kernel_shape=k, strides=[1, 1], dilations=d, pads=pads, ceil_mode=ceil)
    got = run_mine("MaxPool", [("x", x)], a, opset=12)[0]
    g = _Geom(x, k, [1, 1], d, pads, "NOTSET", ceil)
    np.testing.assert_array_equal(got, _max_pool(x, g, False, 0))


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=[str(i) for i in range(len(POOL_CONFIGS))])
@pytest.mark.parametrize("cip", [0, 1])
def test_averagepool_vs_ort(rng, cfg, cip):
    nd, k, s, d, pads, auto_pad, ceil = cfg
    x = rng.standard_normal((2, 3, *[8 - i for i in range(nd)])).astype(np.float32)
    a = _attrs(k, s, d, pads, auto_pad, ceil, dil=d != [1] * nd)
    a["count_include_pad"] = cip
    check("AveragePool", [("x", x)], a, opset=19, const_sets=((),))


@pytest.mark.parametrize("cfg", POOL_CONFIGS[:4], ids=str)
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool_vs_ort(rng, cfg, p):
    # onnxruntime, not onnx's reference: the reference rescales ceil_mode tail windows
    nd, k, s, d, pads, auto_pad, ceil = cfg
    x = rng.standard_normal((1, 2, *[7 - i for i in range(nd)])).astype(np.float32)
    a = _attrs(k, s, d, pads, auto_pad, ceil)
    a["p"] = p
    check("LpPool", [("x", x)], a, opset=18, const_sets=((),))


def test_global_pools(rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    check("GlobalAveragePool", [("x", x)], opset=17, const_sets=((),))
    check("GlobalMaxPool", [("x", x)], opset=17, const_sets=((),))
    x1 = rng.standard_normal((2, 3, 7)).astype(np.float32)
    check("GlobalAveragePool", [("x", x1)], opset=17, const_sets=((),))


def test_maxunpool_roundtrip(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    a = dict(kernel_shape=[2, 2], strides=[2, 2])
    y, idx = run_ort("MaxPool", [("x", x)], a, n_out=2, opset=12)
    check("MaxUnpool", [("y", y), ("i", idx)], a, opset=11, const_sets=((),))
    shape = np.array([1, 2, 7, 7], np.int64)
    got = run_mine("MaxUnpool", [("y", y), ("i", idx), ("s", shape)], a, opset=11)[0]
    assert got.shape == (1, 2, 7, 7)


def test_maxroipool_vs_ort(rng):
    x = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
    rois = np.array([[0, 1, 1, 6, 5], [1, 0, 2, 8, 7], [0, 3, 3, 3, 3]], np.float32)
    check("MaxRoiPool", [("x", x), ("r", rois)], dict(pooled_shape=[2, 3], spatial_scale=1.0),
          opset=1, const_sets=((),))


@pytest.mark.parametrize("case", conformance_params(FAMILY))
def test_conformance(case):
    run_conformance_case(case)
