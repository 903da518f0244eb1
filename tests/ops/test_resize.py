"""Resize / Upsample / GridSample / AffineGrid vs onnxruntime / onnx reference + conformance."""
import numpy as np
import pytest
from onnx import helper

from tests.ops._cnn_common import check, conformance_params, run_conformance_case

FAMILY = ["Resize", "Upsample", "GridSample", "AffineGrid"]

CTMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _resize_inputs(x, scales=None, sizes=None, roi=None):
    return [("x", x), ("roi", roi), ("scales", scales), ("sizes", sizes)]


@pytest.mark.parametrize("ctm", CTMS)
@pytest.mark.parametrize("nearest_mode", NEAREST)
@pytest.mark.parametrize("scales", [[1, 1, 2.0, 1.5], [1, 1, 0.6, 0.8],
                                    [1, 1, 2.0, 2.0], [1, 1, 3.0, 1.0]])   # integer: broadcast path
def test_resize_nearest_vs_ort(rng, ctm, nearest_mode, scales):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    # fractional output lengths (5*0.6, 6*0.8): onnx's spec/reference keep the fractional length
    # and the given scale; onnxruntime differs there, so the reference is the oracle for those
    fractional = any(s * n != int(s * n) for s, n in zip(scales, x.shape))
    check("Resize", _resize_inputs(x, np.array(scales, np.float32)),
          dict(mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest_mode),
          oracle="ref" if ctm == "half_pixel_symmetric" or fractional else "ort", opset=19,
          const_sets=((),))


@pytest.mark.parametrize("ctm", ["asymmetric", "half_pixel", "align_corners"])
@pytest.mark.parametrize("nearest_mode", ["floor", "round_prefer_floor", "ceil"])
def test_resize_nearest_sizes_from_shape_vs_ort(rng, ctm, nearest_mode):
    """The FPN pattern: sizes = the lateral map's shape, one compiled model run at several input
    sizes (integer and non-integer factors, down and up, a size met twice): each geometry gets
    its own planned tables, written into the output's arena slot."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto
    import deepsparse_cy
    nodes = [helper.make_node("Shape", ["lat"], ["shp"]),
             helper.make_node("Resize", ["x", "", "", "shp"], ["r"], mode="nearest",
                              coordinate_transformation_mode=ctm, nearest_mode=nearest_mode),
             helper.make_node("Add", ["r", "lat"], ["y"])]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"]),
                           helper.make_tensor_value_info("lat", TensorProto.FLOAT,
                                                         [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    eng = deepsparse_cy.compile_model(model)
    for (h, w), (H, W) in [((2, 10), (3, 20)), ((3, 20), (6, 40)), ((5, 7), (3, 4)),
                           ((4, 4), (12, 12)), ((2, 10), (3, 20)), ((7, 9), (7, 20))]:
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        lat = rng.standard_normal((1, 3, H, W)).astype(np.float32)
        exp = sess.run(None, {"x": x, "lat": lat})[0]
        got = eng.run([x, lat])[0]
        np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("ctm", CTMS)
@pytest.mark.parametrize("sizes", [[1, 2, 9, 4], [1, 2, 3, 11]])
@pytest.mark.parametrize("exclude_outside", [0, 1])
def test_resize_interp_vs_ort(rng, mode, ctm, sizes, exclude_outside):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    check("Resize", _resize_inputs(x, sizes=np.array(sizes, np.int64)),
          dict(mode=mode, coordinate_transformation_mode=ctm, exclude_outside=exclude_outside,
               cubic_coeff_a=-0.5),
          # onnxruntime rejects exclude_outside for non-antialiased linear
          oracle="ref" if ctm == "half_pixel_symmetric" or (exclude_outside and mode == "linear")
          else "ort", opset=19, const_sets=((),), atol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 0.5, 0.7], [1, 1, 1.6, 0.4]])
def test_resize_antialias_vs_ref(rng, mode, scales):
    x = rng.standard_normal((1, 2, 8, 10)).astype(np.float32)
    check("Resize", _resize_inputs(x, np.array(scales, np.float32)), dict(mode=mode, antialias=1),
          oracle="ref", opset=19, const_sets=((),), atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_tf_crop_and_resize_vs_ort(rng, mode):
    x = rng.standard_normal((1, 1, 6, 7)).astype(np.float32)
    roi = np.array([0, 0, -0.2, 0.3, 1, 1, 0.9, 1.3], np.float32)
    check("Resize", _resize_inputs(x, sizes=np.array([1, 1, 5, 4], np.int64), roi=roi),
          dict(mode=mode, coordinate_transformation_mode="tf_crop_and_resize",
               extrapolation_value=-3.0), opset=13, const_sets=((),), atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_policy_vs_ref(rng, policy):
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    check("Resize", _resize_inputs(x, sizes=np.array([7, 4], np.int64)),
          dict(mode="linear", axes=[1, 2], keep_aspect_ratio_policy=policy), oracle="ref",
          opset=19, const_sets=((),))


def test_resize_uint8_and_opset10(rng):
    x = rng.integers(0, 255, (1, 1, 4, 5)).astype(np.uint8)
    check("Resize", _resize_inputs(x, np.array([1, 1, 1.5, 2.5], np.float32)), dict(mode="linear"),
          oracle="ref", opset=19, const_sets=((),))
    xf = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    check("Resize", [("x", xf), ("s", np.array([1, 1, 2, 3], np.float32))], dict(mode="nearest"),
          opset=10, const_sets=((),))
    check("Upsample", [("x", xf), ("s", np.array([1, 1, 2, 2], np.float32))], dict(mode="linear"),
          opset=9, const_sets=((),))


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_gridsample_2d_vs_ort(rng, mode, padding_mode, align_corners):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    grid = (rng.random((2, 4, 7, 2)) * 2.6 - 1.3).astype(np.float32)
    # cubic + border: onnxruntime clamps differently from onnx's spec/reference; use the reference
    check("GridSample", [("x", x), ("g", grid)],
          dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners), opset=20,
          oracle="ref" if (mode, padding_mode) == ("cubic", "border") else "ort",
          const_sets=((),), atol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_gridsample_3d_vs_ref(rng, mode, padding_mode):
    x = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid = (rng.random((1, 2, 3, 4, 3)) * 2.6 - 1.3).astype(np.float32)
    check("GridSample", [("x", x), ("g", grid)], dict(mode=mode, padding_mode=padding_mode),
          oracle="ref", opset=20, const_sets=((),), atol=1e-5)


@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid_vs_ref(rng, align_corners):
    theta = rng.standard_normal((2, 2, 3)).astype(np.float32)
    check("AffineGrid", [("t", theta), ("s", np.array([2, 3, 4, 5], np.int64))],
          dict(align_corners=align_corners), oracle="ref", opset=20, const_sets=((), (1,)))
    theta3 = rng.standard_normal((1, 3, 4)).astype(np.float32)
    check("AffineGrid", [("t", theta3), ("s", np.array([1, 1, 3, 4, 2], np.int64))],
          dict(align_corners=align_corners), oracle="ref", opset=20, const_sets=((),))


@pytest.mark.parametrize("case", conformance_params(FAMILY))
def test_conformance(case):
    run_conformance_case(case)
