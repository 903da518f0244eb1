"""Full-size built-in models (BERT-base, MiniLM, ResNet-50, MobileNetV2, YOLOv5s): generation
time, checker, onnxruntime agreement with the engine at batch 1 and 4, and the pruned/quantized
variants running in onnxruntime. Minutes, so marked slow: `pytest -m slow tests/zoo`."""
import time

import numpy as np
import onnx
import pytest

from deepsparse_cy import zoo

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

BASES = ["bert-base", "minilm", "resnet50", "mobilenetv2", "yolov5s"]
SEQ = 128


@pytest.fixture(scope="module")
def models():
    return {}


def _get(models, name):
    if name not in models:
        models[name] = zoo.get_model(name)
    return models[name]


def _ort(model, feeds):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


@pytest.mark.parametrize("name", BASES)
def test_generation_time_and_checker(name):
    t = time.perf_counter()
    m = zoo.generate(name)
    elapsed = time.perf_counter() - t
    assert elapsed < 30, f"{name}: generation took {elapsed:.1f} s"
    onnx.checker.check_model(m, full_check=True)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", BASES)
def test_engine_matches_onnxruntime_full(models, name, batch):
    import deepsparse_cy as ds
    m = _get(models, name)
    feeds = zoo.example_inputs(m, batch=batch, seq=SEQ, seed=batch)
    ref = _ort(m, feeds)
    eng = ds.compile_model(m)
    got = eng.run([feeds[n] for n in eng.input_names])
    for r, g in zip(ref, got):
        r = r.astype(np.float64)
        g = np.asarray(g, np.float64)
        maxdiff = np.abs(r - g).max()
        cos = (r * g).sum() / (np.linalg.norm(r) * np.linalg.norm(g))
        assert maxdiff <= 1e-3 * np.abs(r).max(), (name, batch, maxdiff, np.abs(r).max())
        assert cos >= 0.9999, (name, batch, cos)


@pytest.mark.parametrize("variant", ["-pruned90", "-block4-pruned90-quant"])
@pytest.mark.parametrize("name", BASES)
def test_variants_run_in_onnxruntime(models, name, variant):
    m = zoo.get_model(name + variant)
    layers = zoo.layer_sparsity(_get(models, name + "-pruned90")) if "quant" not in variant \
        else None
    if layers:
        inner = layers[1:-1]
        assert np.mean([x["sparsity"] for x in inner if x["sparsity"] > 0]) == \
            pytest.approx(0.9, abs=0.01)
    out = _ort(m, zoo.example_inputs(m, batch=1, seq=SEQ))[0]
    assert np.isfinite(out).all()
