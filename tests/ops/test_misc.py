"""Detection, losses, training, random, classical-ML and text ops against onnxruntime /
onnx's ReferenceEvaluator (oracles only), plus onnx node test cases."""
import numpy as np
import pytest

from _fam_cases import run_cases
from _fam_oracle import close, one_node_model, run_mine, run_ort, run_ref

ML = {"": 21, "ai.onnx.ml": 3}


# --- detection ------------------------------------------------------------------------------

@pytest.mark.parametrize("cpb", [0, 1])
@pytest.mark.parametrize("score_thr", [None, 0.3])
def test_nms_vs_onnxruntime(cpb, score_thr):
    rng = np.random.default_rng(0)
    B, N, C = 2, 30, 3
    xy = rng.random((B, N, 2)) * 10
    wh = rng.random((B, N, 2)) * 4 + 0.5
    if cpb:
        boxes = np.concatenate([xy, wh], -1)
    else:
        boxes = np.concatenate([xy, xy + wh], -1)[..., [1, 0, 3, 2]]   # y1 x1 y2 x2
    boxes = boxes.astype(np.float32)
    scores = rng.random((B, C, N)).astype(np.float32)
    ins = [("b", boxes), ("s", scores), ("m", np.array([5], np.int64)), ("i", np.array([0.4], np.float32)),
           ("t", None if score_thr is None else np.array([score_thr], np.float32))]
    model, feeds = one_node_model("NonMaxSuppression", ins, 1, {"center_point_box": cpb},
                                  out_types=[np.int64])
    got = run_mine(model, feeds)[0]
    exp = run_ort(model, feeds)[0]
    np.testing.assert_array_equal(got, exp)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("sr", [0, 2])
def test_roialign_vs_onnxruntime(mode, ctm, sr):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    rois = np.array([[0, 0, 9, 9], [1.5, 2.2, 7.1, 8.9], [-1, -1, 3, 4], [4, 4, 11.5, 9.5]], np.float32)
    bi = np.array([0, 1, 1, 0], np.int64)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "output_height": 3,
             "output_width": 4, "sampling_ratio": sr, "spatial_scale": 0.8}
    model, feeds = one_node_model("RoiAlign", [("x", X), ("r", rois), ("b", bi)], 1, attrs)
    exp = run_ort(model, feeds) if mode == "avg" else run_ref(model, feeds)
    close(run_mine(model, feeds), exp, rtol=1e-4, atol=1e-5)


# --- losses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ii", [None, 1])
def test_losses_vs_reference(op, reduction, weighted, ii):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 4, 2)).astype(np.float32)
    t = rng.integers(0, 5, (3, 4, 2)).astype(np.int64)
    w = rng.random(5).astype(np.float32) if weighted else None
    attrs = {"reduction": reduction}
    if ii is not None:
        attrs["ignore_index"] = ii
    n_out = 2 if op == "SoftmaxCrossEntropyLoss" else 1
    model, feeds = one_node_model(op, [("x", x), ("t", t), ("w", w)], n_out, attrs, opset={"": 13})
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-5, atol=1e-6)


# --- training -------------------------------------------------------------------------------

TR = {"": 21, "ai.onnx.preview.training": 1}


@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("t", [0, 3])
def test_momentum_two_groups(mode, t):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    gs = [rng.standard_normal(x.shape).astype(np.float32) for x in xs]
    vs = [rng.standard_normal(x.shape).astype(np.float32) for x in xs]
    ins = [("r", np.array(0.1, np.float32)), ("T", np.array(t, np.int64))]
    ins += [(f"x{i}", a) for i, a in enumerate(xs)] + [(f"g{i}", a) for i, a in enumerate(gs)]
    ins += [(f"v{i}", a) for i, a in enumerate(vs)]
    attrs = {"alpha": 0.9, "beta": 0.5, "mode": mode, "norm_coefficient": 0.01}
    model, feeds = one_node_model("Momentum", ins, 4, attrs, domain="ai.onnx.preview.training", opset=TR)
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op,groups", [("Adagrad", 3), ("Adam", 4)])
def test_adagrad_adam(op, groups):
    rng = np.random.default_rng(4)
    ins = [("r", np.array(0.1, np.float32)), ("T", np.array(2, np.int64))]
    for g in range(groups):
        a = rng.standard_normal((2, 3)).astype(np.float32)
        ins.append((f"t{g}", np.abs(a) if g >= 2 else a))
    model, feeds = one_node_model(op, ins, groups - 1, {"epsilon": 1e-5, "norm_coefficient": 0.02},
                                  domain="ai.onnx.preview.training", opset=TR)
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-6, atol=1e-6)


# --- random ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["RandomUniform", "RandomNormal"])
def test_random_seeded_reproducible_and_matches_reference(op):
    model, feeds = one_node_model(op, [], 1, {"shape": [3, 4], "seed": 5.0})
    a = run_mine(model, feeds)[0]
    b = run_mine(model, feeds)[0]
    np.testing.assert_array_equal(a, b)
    close([a], run_ref(model, feeds))


def test_random_unseeded_varies_and_like_shapes():
    x = np.zeros((50, 40), np.float64)
    model, feeds = one_node_model("RandomUniformLike", [("x", x)], 1, {"low": 2.0, "high": 3.0},
                                  out_types=[np.float64])
    from deepsparse_cy.graph.ir import graph_from_proto
    import deepsparse_cy.ops as ops
    from deepsparse_cy.ops.registry import OpContext
    g = graph_from_proto(model.graph, {"": 21})
    op = ops.resolve("RandomUniformLike", "", 21)(g.nodes[0], OpContext(g.nodes[0], 21, {}))
    a, b = op.run([x], None)[0], op.run([x], None)[0]
    assert a.shape == x.shape and a.dtype == np.float64
    assert (a >= 2).all() and (a < 3).all() and not np.array_equal(a, b)
    assert abs(a.mean() - 2.5) < 0.02


def test_bernoulli_and_multinomial_statistics():
    p = np.full((200, 100), 0.3, np.float32)
    model, feeds = one_node_model("Bernoulli", [("p", p)], 1, {"seed": 1.0})
    y = run_mine(model, feeds)[0]
    assert set(np.unique(y)) <= {0, 1} and abs(y.mean() - 0.3) < 0.01
    logits = np.log(np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0 + 1e-9]], np.float32))
    model, feeds = one_node_model("Multinomial", [("x", logits)], 1, {"sample_size": 20000, "seed": 3.0},
                                  out_types=[np.int32])
    s = run_mine(model, feeds)[0]
    assert s.shape == (2, 20000) and s.dtype == np.int32
    np.testing.assert_allclose(np.bincount(s[0], minlength=3) / 20000, [0.1, 0.2, 0.7], atol=0.015)
    assert (s[1] != 2).all()


# --- ai.onnx.ml -----------------------------------------------------------------------------

def test_label_encoder_variants():
    x = np.array(["a", "b", "zz", "c"], dtype=object)
    model, feeds = one_node_model("LabelEncoder", [("x", x)], 1,
                                  {"keys_strings": ["a", "b", "c"], "values_int64s": [7, 8, 9],
                                   "default_int64": -5}, domain="ai.onnx.ml", opset=ML,
                                  out_types=[np.int64])
    np.testing.assert_array_equal(run_mine(model, feeds)[0], [7, 8, -5, 9])
    np.testing.assert_array_equal(run_mine(model, feeds)[0], run_ort(model, feeds)[0])
    xf = np.array([[1.5, np.nan], [2.0, 3.0]], np.float32)
    model, feeds = one_node_model("LabelEncoder", [("x", xf)], 1,
                                  {"keys_floats": [1.5, 2.0, float("nan")], "values_strings": ["p", "q", "nan"]},
                                  domain="ai.onnx.ml", opset=ML, out_types=[object])
    got = run_mine(model, feeds)[0]
    assert got.tolist() == [["p", "nan"], ["q", "_Unused"]]
    model, feeds = one_node_model("LabelEncoder", [("x", np.array([3, 1, 4], np.int64))], 1,
                                  {"classes_strings": ["x", "y", "z", "w"]}, domain="ai.onnx.ml",
                                  opset={"": 21, "ai.onnx.ml": 1}, out_types=[object])
    assert run_mine(model, feeds)[0].tolist() == ["w", "y", "_Unused"]


def _tree_attrs():
    # two trees over 3 features; tree 0: x0 <= 0.5 ? (x2 < 0 ? L0 : L1) : L2 ; tree 1: x1 > 1 ? L3 : L4
    return dict(
        nodes_treeids=[0, 0, 0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 3, 4, 0, 1, 2],
        nodes_featureids=[0, 2, 0, 0, 0, 1, 0, 0],
        nodes_modes=["BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF", "BRANCH_GT", "LEAF", "LEAF"],
        nodes_values=[0.5, 0.0, 0, 0, 0, 1.0, 0, 0],
        nodes_truenodeids=[1, 3, 0, 0, 0, 1, 0, 0], nodes_falsenodeids=[2, 4, 0, 0, 0, 2, 0, 0],
        nodes_missing_value_tracks_true=[1, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("agg", ["SUM", "AVERAGE", "MIN", "MAX"])
def test_tree_ensemble_regressor_vs_onnxruntime(agg):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    X[3, 0] = np.nan
    a = _tree_attrs()
    a.update(target_treeids=[0, 0, 0, 1, 1, 0], target_nodeids=[2, 3, 4, 1, 2, 3],
             target_ids=[0, 0, 1, 0, 1, 1], target_weights=[1.0, -2.0, 3.0, 0.5, 4.0, 0.25],
             n_targets=2, aggregate_function=agg, base_values=[0.1, -0.2])
    model, feeds = one_node_model("TreeEnsembleRegressor", [("x", X)], 1, a, domain="ai.onnx.ml", opset=ML)
    close(run_mine(model, feeds), run_ort(model, feeds), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC"])
def test_tree_ensemble_classifier_multiclass_vs_onnxruntime(post):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    a = _tree_attrs()
    a.update(class_treeids=[0, 0, 0, 1, 1, 1], class_nodeids=[2, 3, 4, 1, 2, 2],
             class_ids=[0, 1, 2, 2, 0, 1], class_weights=[0.3, 0.6, 0.9, 0.2, 0.4, 0.1],
             classlabels_int64s=[10, 20, 30], post_transform=post)
    model, feeds = one_node_model("TreeEnsembleClassifier", [("x", X)], 2, a, domain="ai.onnx.ml",
                                  opset=ML, out_types=[np.int64, np.float32])
    got, exp = run_mine(model, feeds), run_ort(model, feeds)
    np.testing.assert_array_equal(got[0], exp[0])
    close(got[1:], exp[1:], rtol=1e-5, atol=1e-5)


def test_tree_ensemble_classifier_binary_vs_onnxruntime():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    a = _tree_attrs()
    a.update(class_treeids=[0, 0, 0, 1, 1], class_nodeids=[2, 3, 4, 1, 2],
             class_ids=[1, 1, 1, 1, 1], class_weights=[0.1, 0.3, 0.2, 0.4, 0.15],
             classlabels_strings=["no", "yes"])
    model, feeds = one_node_model("TreeEnsembleClassifier", [("x", X)], 2, a, domain="ai.onnx.ml",
                                  opset=ML, out_types=[object, np.float32])
    got, exp = run_mine(model, feeds), run_ort(model, feeds)
    assert list(got[0]) == list(exp[0])
    close(got[1:], exp[1:], rtol=1e-5, atol=1e-5)


def test_simple_ml_ops_vs_onnxruntime():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((6, 4)).astype(np.float32)
    for norm in ("MAX", "L1", "L2"):
        model, feeds = one_node_model("Normalizer", [("x", X)], 1, {"norm": norm}, domain="ai.onnx.ml", opset=ML)
        close(run_mine(model, feeds), run_ort(model, feeds))
    model, feeds = one_node_model("Scaler", [("x", X)], 1, {"offset": [0.1, 0.2, 0.3, 0.4],
                                                           "scale": [2.0, 1.0, 0.5, 3.0]},
                                  domain="ai.onnx.ml", opset=ML)
    close(run_mine(model, feeds), run_ort(model, feeds))
    Xn = X.copy()
    Xn[1, 2] = np.nan
    Xn[4, 0] = np.nan
    model, feeds = one_node_model("Imputer", [("x", Xn)], 1, {"imputed_value_floats": [9.0, 8.0, 7.0, 6.0],
                                                             "replaced_value_float": float("nan")},
                                  domain="ai.onnx.ml", opset=ML)
    close(run_mine(model, feeds), run_ort(model, feeds))
    ids = np.array([[1, 5], [3, 1]], np.int64)
    model, feeds = one_node_model("OneHotEncoder", [("x", ids)], 1, {"cats_int64s": [1, 3, 5, 7]},
                                  domain="ai.onnx.ml", opset=ML)
    close(run_mine(model, feeds), run_ort(model, feeds))
    model, feeds = one_node_model("FeatureVectorizer", [("a", X[:, :2]), ("b", X)], 1,
                                  {"inputdimensions": [3, 2]}, domain="ai.onnx.ml", opset=ML)
    close(run_mine(model, feeds), run_ort(model, feeds))
    model, feeds = one_node_model("ArrayFeatureExtractor", [("x", X), ("i", np.array([3, 0], np.int64))], 1,
                                  domain="ai.onnx.ml", opset=ML)
    close(run_mine(model, feeds), run_ort(model, feeds))


def test_zipmap():
    X = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    model, feeds = one_node_model("ZipMap", [("x", X)], 1, {"classlabels_strings": ["a", "b"]},
                                  domain="ai.onnx.ml", opset=ML)
    got = run_mine(model, feeds)[0]
    assert got[1]["a"] == pytest.approx(0.6) and got[0]["b"] == pytest.approx(0.8)


# --- text -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("skip", [0, 2])
def test_tfidf_vs_reference(mode, skip):
    rng = np.random.default_rng(9)
    X = rng.integers(0, 8, (3, 12)).astype(np.int64)
    attrs = dict(mode=mode, min_gram_length=1, max_gram_length=3, max_skip_count=skip,
                 ngram_counts=[0, 4, 10], ngram_indexes=list(range(12)),
                 pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7, 1, 2, 3, 4], weights=list(np.linspace(0.5, 2, 12)))
    model, feeds = one_node_model("TfIdfVectorizer", [("x", X)], 1, attrs)
    close(run_mine(model, feeds), run_ref(model, feeds))


def test_node_cases():
    ops = {"NonMaxSuppression", "RoiAlign", "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss",
           "Adagrad", "Adam", "Momentum", "LabelEncoder", "TreeEnsemble", "ArrayFeatureExtractor",
           "Binarizer", "TfIdfVectorizer"}
    npass, fails = run_cases(ops)
    assert not fails, fails
    assert npass >= 87
