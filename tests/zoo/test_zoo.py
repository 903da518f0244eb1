"""Built-in model generators (deepsparse_cy/zoo): validity, onnxruntime runs, engine agreement
at batch 1 and 4, pruning structure, quantization closeness, registry and cache. Small configs
of every architecture here; full-size models are in test_zoo_full.py (marked slow)."""
import os
import time

import numpy as np
import onnx
import pytest

from deepsparse_cy import zoo
from deepsparse_cy.zoo.prune import _rows_by_input

ort = pytest.importorskip("onnxruntime")

# Small variants of each architecture: same graph structure and ops, few-second models.
SMALL = {
    "bert-tiny": dict(name="bert-tiny", overrides={}),
    "bert-tiny-opset13": dict(name="bert-tiny", overrides=dict(opset=13)),
    "bert-tiny-decomposed-pooler": dict(name="bert-tiny", overrides=dict(
        opset=18, layernorm="decomposed", mask_value="10000", pooler=True)),
    "minilm-small": dict(name="minilm", overrides=dict(layers=2, vocab=2000)),
    "resnet-small": dict(name="resnet50", overrides=dict(
        depth_blocks=((64, 1, 1), (128, 2, 2), (256, 1, 2), (512, 1, 2)), width=16, image=64,
        classes=10)),
    "mobilenetv2-small": dict(name="mobilenetv2", overrides=dict(width_mult=0.35, image=64,
                                                                  classes=10)),
    "yolov5s-small": dict(name="yolov5s", overrides=dict(image=128, width=0.25, classes=8)),
}


@pytest.fixture(scope="module")
def small_models():
    return {k: zoo.get_model(v["name"], cache=False, **v["overrides"]) for k, v in SMALL.items()}


def _ort_run(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _agreement(ref, got):
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    maxdiff = float(np.max(np.abs(ref - got)))
    cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    return maxdiff, float(np.max(np.abs(ref))), cos


SEQ = 24


@pytest.mark.parametrize("key", list(SMALL))
def test_checker_full(small_models, key):
    onnx.checker.check_model(small_models[key], full_check=True)


@pytest.mark.parametrize("key", list(SMALL))
def test_runs_in_onnxruntime(small_models, key):
    m = small_models[key]
    feeds = zoo.example_inputs(m, batch=2, seq=SEQ)
    outs = _ort_run(m, feeds)
    for o in outs:
        assert np.isfinite(o).all()
        # activations in range: no blow-up, no collapse
        assert 0 < np.abs(o).max() < 1e4
    assert outs[0].shape[0] == 2


def _engine():
    import deepsparse_cy
    if not hasattr(deepsparse_cy, "compile_model"):
        pytest.skip("engine (deepsparse_cy.compile_model) not available yet")
    return deepsparse_cy


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("key", list(SMALL))
def test_engine_matches_onnxruntime(small_models, key, batch):
    ds = _engine()
    m = small_models[key]
    feeds = zoo.example_inputs(m, batch=batch, seq=SEQ, seed=batch)
    ref = _ort_run(m, feeds)
    eng = ds.compile_model(m)
    got = eng.run([feeds[n] for n in eng.input_names])
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        maxdiff, scale, cos = _agreement(r, g)
        assert maxdiff <= 1e-3 * scale, (key, batch, maxdiff, scale)
        assert cos >= 0.9999, (key, batch, cos)


def test_bert_graph_is_torch_style(small_models):
    m = small_models["bert-tiny"]
    ops = [n.op_type for n in m.graph.node]
    names = [i.name for i in m.graph.input]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    for vi in m.graph.input:
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in vi.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert [o.name for o in m.graph.output] == ["last_hidden_state"]
    assert m.opset_import[0].version == 17
    for op in ("Erf", "LayerNormalization", "Softmax", "Cast", "Sub", "Gather", "Reshape",
               "Transpose", "Div"):
        assert op in ops, op
    # mask: Unsqueeze -> Unsqueeze -> Cast -> Sub(1, m) -> Mul(finfo.min)
    i = ops.index("Cast")
    assert ops[i - 2:i + 3] == ["Unsqueeze", "Unsqueeze", "Cast", "Sub", "Mul"]
    dec = small_models["bert-tiny-decomposed-pooler"]
    assert "LayerNormalization" not in [n.op_type for n in dec.graph.node]
    assert "ReduceMean" in [n.op_type for n in dec.graph.node]
    assert [o.name for o in dec.graph.output] == ["last_hidden_state", "pooler_output"]


def test_padding_is_masked(small_models):
    # outputs of attended tokens must not depend on what the padded tokens hold
    m = small_models["bert-tiny"]
    feeds = zoo.example_inputs(m, batch=2, seq=16)
    feeds["attention_mask"][:] = 1
    feeds["attention_mask"][:, 12:] = 0
    a = _ort_run(m, feeds)[0]
    feeds["input_ids"][:, 12:] = 7
    b = _ort_run(m, feeds)[0]
    np.testing.assert_allclose(a[:, :12], b[:, :12], rtol=1e-5, atol=1e-5)


def test_yolo_graph_shape(small_models):
    m = small_models["yolov5s-small"]
    ops = {n.op_type for n in m.graph.node}
    assert {"Sigmoid", "Mul", "Concat", "MaxPool", "Resize", "Split", "Reshape", "Transpose",
            "Pow"} <= ops
    resize = [n for n in m.graph.node if n.op_type == "Resize"]
    assert resize and all(len(n.input) == 3 and n.input[2] for n in resize)
    out = _ort_run(m, zoo.example_inputs(m, batch=1))[0]
    n_boxes = 3 * sum((128 // s) ** 2 for s in (8, 16, 32))
    assert out.shape == (1, n_boxes, 8 + 5)
    # decoded centres (2*sigmoid - 0.5 + cell) * stride: within half the largest stride of the image
    assert out[..., :2].min() > -16 and out[..., :2].max() < 128 + 16
    assert (out[..., 4:] >= 0).all() and (out[..., 4:] <= 1).all()    # sigmoid scores


def test_example_inputs_valid(small_models):
    m = small_models["minilm-small"]
    f = zoo.example_inputs(m, batch=4, seq=40, seed=3)
    assert f["input_ids"].shape == (4, 40) and f["input_ids"].dtype == np.int64
    assert 0 <= f["input_ids"].min() and f["input_ids"].max() < 2000
    mask = f["attention_mask"]
    assert mask[0].all() and (mask.sum(1) >= 1).all() and not mask[1:].all()
    # padding only at the end of each row
    assert all((np.diff(r) <= 0).all() for r in mask)
    assert set(np.unique(f["token_type_ids"])) == {0, 1}
    img = zoo.example_inputs(small_models["yolov5s-small"], batch=2)["images"]
    assert img.shape == (2, 3, 128, 128) and img.min() >= 0 and img.max() <= 1
    np.testing.assert_array_equal(zoo.example_inputs(m, seed=5)["input_ids"],
                                  zoo.example_inputs(m, seed=5)["input_ids"])


# -------------------------------------------------------------------------------------------
# pruning
@pytest.mark.parametrize("key", ["bert-tiny", "resnet-small", "mobilenetv2-small"])
@pytest.mark.parametrize("pattern", ["unstructured", "block4"])
def test_prune_sparsity_and_structure(small_models, key, pattern):
    m = small_models[key]
    pruned, report = zoo.prune_model(m, 0.9, pattern)
    layers = zoo.prunable_layers(m)
    assert len(report) == len(layers) > 2
    # the original is untouched
    assert zoo.layer_sparsity(m)[1]["sparsity"] == 0.0
    measured = {r["weight"]: r for r in zoo.layer_sparsity(pruned)}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for i, (layer, rep) in enumerate(zip(layers, report)):
        s = measured[layer.weight]["sparsity"]
        assert s == pytest.approx(rep["sparsity"])
        if i in (0, len(layers) - 1) or layer.depthwise:
            assert rep["target"] == 0 and s == 0.0, layer
            continue
        w = inits[layer.weight]
        if pattern == "unstructured":
            assert s == pytest.approx(0.9, abs=1.0 / w.size + 1e-9)
        else:
            rows = _rows_by_input(w, layer.in_axis)
            k = rows.shape[1]
            full = rows[:, : k - k % 4].reshape(rows.shape[0], -1, 4)
            zero = full == 0
            # every block is all zero or all nonzero (random weights are never exactly 0)
            assert (zero.all(2) | ~zero.any(2)).all(), layer
            nblocks = rows.shape[0] * ((k + 3) // 4)
            assert zero.all(2).sum() == pytest.approx(0.9 * nblocks, abs=1 + rows.shape[0])
            assert measured[layer.weight]["block4_occupancy"] == pytest.approx(0.1, abs=0.02)
    # the pruned model still runs
    outs = _ort_run(pruned, zoo.example_inputs(pruned, batch=1, seq=16))
    assert np.isfinite(outs[0]).all()


def test_prune_block4_direction():
    # MatMul W[K, N]: blocks run along K (axis 0) for one output column n
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    p = zoo.prune_array(w, 0.5, "block4", in_axis=0)
    blocks = (p == 0).T.reshape(8, 4, 4)
    assert (blocks.all(2) | ~blocks.any(2)).all()
    assert blocks.all(2).sum() == 16
    # Conv W[O, I, kh, kw]: blocks of 4 input channels for one (o, kh, kw)
    w = np.random.default_rng(1).standard_normal((6, 8, 3, 3)).astype(np.float32)
    p = zoo.prune_array(w, 0.75, "block4", in_axis=1)
    z = np.moveaxis(p == 0, 1, -1).reshape(-1, 2, 4)
    assert (z.all(2) | ~z.any(2)).all() and z.all(2).sum() == round(0.75 * 6 * 9 * 2)
    # input dim not divisible by 4 (last block short)
    w = np.random.default_rng(2).standard_normal((10, 6)).astype(np.float32)
    p = zoo.prune_array(w, 0.5, "block4", in_axis=0)
    assert np.count_nonzero(p == 0) > 0
    # magnitude: the kept blocks have the largest mean |w|
    w = np.arange(1, 17, dtype=np.float32).reshape(16, 1)
    p = zoo.prune_array(w, 0.5, "block4", in_axis=0)
    assert (p[:8] == 0).all() and (p[8:] != 0).all()


def test_prune_overrides_and_skip(small_models):
    m = small_models["bert-tiny"]
    layers = zoo.prunable_layers(m)
    first, second, last = layers[0], layers[1], layers[-1]
    pruned, rep = zoo.prune_model(m, 0.8, "unstructured",
                                  overrides={first.weight: 0.5, second.node: 0.95},
                                  skip=[layers[2].weight])
    by = {r["weight"]: r for r in rep}
    assert by[first.weight]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert by[second.weight]["sparsity"] == pytest.approx(0.95, abs=1e-3)
    assert by[layers[2].weight]["sparsity"] == 0.0
    assert by[last.weight]["sparsity"] == 0.0
    assert by[layers[3].weight]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    _, rep = zoo.prune_model(m, 0.8, skip_first_last=False)
    assert rep[0]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    with pytest.raises(ValueError):
        zoo.prune_model(m, 0.8, "block8")


def test_prune_gemm_transb(small_models):
    m = small_models["resnet-small"]
    fc = [layer for layer in zoo.prunable_layers(m) if layer.op_type == "Gemm"]
    assert fc and fc[0].in_axis == 1     # torch Linear exported as Gemm(transB=1): W[N, K]


# -------------------------------------------------------------------------------------------
# quantization
def test_quantize_small_bert_close_to_fp32(small_models):
    m = small_models["minilm-small"]
    q = zoo.quantize_model(m, seq=32)
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # per-channel weight scales, one per output column of each quantized MatMul weight
    scales = [t for t in q.graph.initializer if t.name.endswith("weight_scale")]
    assert scales and all(len(t.dims) == 1 and t.dims[0] > 1 for t in scales)
    feeds = zoo.example_inputs(m, batch=2, seq=32, seed=11)
    ref = _ort_run(m, feeds)[0]
    got = _ort_run(q, feeds)[0]
    _, _, cos = _agreement(ref, got)
    assert cos >= 0.99, cos


def test_quantize_cnn_runs(small_models):
    m = small_models["mobilenetv2-small"]
    q = zoo.quantize_model(m, num_samples=2)
    feeds = zoo.example_inputs(m, batch=1)
    _, _, cos = _agreement(_ort_run(m, feeds)[0], _ort_run(q, feeds)[0])
    assert cos >= 0.95, cos


# -------------------------------------------------------------------------------------------
# registry and cache
def test_registry_names():
    names = zoo.list_models()
    for base in ("bert-base", "minilm", "resnet50", "mobilenetv2", "yolov5s"):
        for v in ("", "-pruned90", "-pruned95", "-pruned90-quant", "-pruned95-quant",
                  "-block4-pruned90-quant", "-block4-pruned95-quant"):
            assert base + v in names
    assert zoo.parse_name("zoo:bert-base-block4-pruned90-quant") == ("bert-base", "block4", 0.9,
                                                                     True)
    assert zoo.parse_name("yolov5s-pruned95") == ("yolov5s", "unstructured", 0.95, False)
    for bad in ("gpt2", "bert-base-block4", "resnet50-pruned"):
        with pytest.raises(KeyError):
            zoo.parse_name(bad)


def test_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSPARSE_CY_CACHE_DIR", str(tmp_path))
    p = zoo.model_path("bert-tiny-pruned90")
    assert os.path.dirname(p) == str(tmp_path) and os.path.exists(p)
    mtime = os.path.getmtime(p)
    t = time.perf_counter()
    m = zoo.get_model("bert-tiny-pruned90")
    assert time.perf_counter() - t < 5
    assert os.path.getmtime(p) == mtime            # served from the cache
    fresh = zoo.get_model("bert-tiny-pruned90", cache=False)
    assert m.SerializeToString() == fresh.SerializeToString()   # deterministic generation
    out = tmp_path / "copy.onnx"
    zoo.save_model("bert-tiny-pruned90", str(out))
    assert onnx.load(str(out)).SerializeToString() == m.SerializeToString()
    # overrides get their own cache entry
    p2 = zoo.model_path("bert-tiny", layers=1)
    assert p2 != zoo.model_path("bert-tiny")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def _same_model(a, b):
    ia = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: onnx.numpy_helper.to_array(t) for t in b.graph.initializer}
    assert set(ia) == set(ib)
    for k in ia:
        assert ia[k].dtype == ib[k].dtype and np.array_equal(ia[k], ib[k]), k
    assert [n.SerializeToString() for n in a.graph.node] == \
        [n.SerializeToString() for n in b.graph.node]


@pytest.mark.parametrize("key", ["bert-tiny", "bert-tiny-decomposed-pooler"])
def test_fast_per_channel_equals_onnxruntime(small_models, key):
    # the vectorised per-channel weight pass must reproduce quantize_static(per_channel=True)
    m, _ = zoo.prune_model(small_models[key], 0.9, "block4")
    _same_model(zoo.quantize_model(m, seq=16), zoo.quantize_model(m, seq=16,
                                                                  fast_per_channel=False))


def test_bert_from_given_weights(small_models):
    # HF-named, torch-layout weights (Linear [out, in]) rebuild the same model under another seed
    m = small_models["bert-tiny"]
    linear = {n.input[1] for n in m.graph.node if n.op_type == "MatMul"}
    hf = {}
    for t in m.graph.initializer:
        if t.name.startswith("const") or t.name == "embeddings.position_ids":
            continue
        a = onnx.numpy_helper.to_array(t)
        hf[t.name] = a.T if t.name in linear else a
    rebuilt = zoo.build_bert(zoo.bert_config("bert-tiny", seed=123), name="bert-tiny", weights=hf)
    _same_model(m, rebuilt)
    with pytest.raises(ValueError):
        zoo.build_bert(zoo.bert_config("bert-tiny"), weights={"nonexistent.weight": np.zeros(3)})
    bad = dict(hf)
    bad["encoder.layer.0.attention.self.query.weight"] = np.zeros((64, 65), np.float32)
    with pytest.raises(ValueError):
        zoo.build_bert(zoo.bert_config("bert-tiny"), weights=bad)


def test_quantize_without_onnxruntime_says_so(small_models, monkeypatch):
    import sys
    from deepsparse_cy.errors import DeepSparseCyError
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    with pytest.raises(DeepSparseCyError, match="pip install onnxruntime"):
        zoo.quantize_model(small_models["bert-tiny"])


@pytest.mark.parametrize("key", ["bert-tiny", "minilm-small", "resnet-small", "yolov5s-small",
                                 "mobilenetv2-small"])
def test_compiled_fp32_kernels_and_their_fallbacks_agree(small_models, key, monkeypatch):
    # With the AVX2 build the FP32 conv / GEMM / attention kernels replace the numpy+BLAS paths;
    # the generic level keeps those paths. Run both on the same model and feeds: each agrees
    # with onnxruntime and with the other (so a machine on either level computes the same).
    ds = _engine()
    from deepsparse_cy.ops import conv as conv_mod
    from deepsparse_cy.ops import fast_fused
    m = small_models[key]
    feeds = zoo.example_inputs(m, batch=2, seq=SEQ, seed=7)
    ref = _ort_run(m, feeds)
    eng = ds.compile_model(m)
    fast = eng.run([feeds[n] for n in eng.input_names])
    with monkeypatch.context() as mp:
        mp.setattr(conv_mod, "_FAST_CONV", False)
        mp.setattr(fast_fused, "_FAST_GEMM", False)
        mp.setattr(fast_fused, "_ATTN", None)
        eng2 = ds.compile_model(m)
        kernels_used = [getattr(op, "kernel_name", "") for _, op in eng2._program.steps]
        assert not any(k.startswith(("f32_conv", "f32_gemm", "f32_attention"))
                       for k in kernels_used), kernels_used
        slow = eng2.run([feeds[n] for n in eng2.input_names])
    for r, a, b in zip(ref, fast, slow):
        for g in (a, b):
            maxdiff, scale, cos = _agreement(r, g)
            assert maxdiff <= 1e-3 * scale and cos >= 0.9999, (key, maxdiff, scale, cos)
        maxdiff, scale, _ = _agreement(b, a)
        assert maxdiff <= 1e-4 * max(scale, 1e-6), (key, maxdiff, scale)
