"""Exporter-style models with dynamic shapes (issue #5, item 2): YOLOv8n (dynamic height/width,
in-graph anchors, DFL), the MobileNetV3 OCR detector (HardSigmoid SE, ConvTranspose head,
size-from-shape Resize) and MiniLM (dynamic batch/sequence). Each model is compiled once and run
at several input sizes against onnxruntime:
    max |engine - onnxruntime| <= 1e-3 * max |onnxruntime|  and  cosine >= 0.9999.
Per shape, the shape arithmetic (everything computed from Shape nodes and constants) must be
folded: memory_report's folded_nodes > 0 and none of those nodes among the per-call steps.
Bigger sizes and batches are in the slow tests at the end."""
import numpy as np
import onnx
import pytest

import deepsparse_cy as ds
from deepsparse_cy import zoo

ort = pytest.importorskip("onnxruntime")

REL_TOL = 1e-3
MIN_COS = 0.9999


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _agreement(ref, got):
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    assert ref.shape == got.shape, (ref.shape, got.shape)
    maxdiff = float(np.max(np.abs(ref - got)))
    cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    return maxdiff, float(np.max(np.abs(ref))), cos


def _check(ref, got, what):
    maxdiff, maxabs, cos = _agreement(ref, got)
    assert maxdiff <= REL_TOL * maxabs, f"{what}: max|diff| {maxdiff:.3g} > 1e-3 * {maxabs:.3g}"
    assert cos >= MIN_COS, f"{what}: cosine {cos:.8f}"
    return maxdiff, maxabs, cos


def shape_chain_nodes(model):
    """Names of the nodes whose outputs depend only on input *shapes* and constants: Shape
    nodes and everything computed from them (Gather, Range, Concat, Expand, ...)."""
    g = model.graph
    derived = {t.name for t in g.initializer}
    const_only = set(derived)
    chain = set()
    for n in g.node:
        ins = [x for x in n.input if x]
        if n.op_type == "Shape" or n.op_type == "Constant" or (
                ins and all(x in derived for x in ins)):
            derived.update(n.output)
            if n.op_type == "Shape" or any(x in derived - const_only for x in ins):
                chain.add(n.name)
            else:
                const_only.update(n.output)
    return chain


class Runner:
    """One compiled engine and one onnxruntime session per model."""

    def __init__(self, model):
        self.model = model
        self.engine = ds.compile_model(model)
        self.sess = _session(model)
        self.chain = shape_chain_nodes(model)
        assert self.chain, "the generator should write shape arithmetic into the graph"

    def compare(self, feeds, what):
        xs = [feeds[n] for n in self.engine.input_names]
        got = self.engine.run(xs)
        ref = self.sess.run(None, feeds)
        figures = [_check(r, g, f"{what} output {i}") for i, (r, g) in enumerate(zip(ref, got))]
        rep = self.engine.memory_report(xs)
        assert rep["folded_nodes"] > 0, rep
        assert rep["folded_nodes"] >= len(self.chain), (rep, len(self.chain))
        return ref, got, figures

    def per_call_names(self, feeds):
        xs = [feeds[n] for n in self.engine.input_names]
        recs = self.engine.profile(xs, iterations=1, warmup=1, dense_baseline=False)
        return {r["name"] for r in recs}, [r["op_type"] for r in recs]


def _images(batch, h, w, seed=0):
    return np.random.default_rng(seed).random((batch, 3, h, w), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# YOLOv8n
@pytest.fixture(scope="module")
def yolo():
    return Runner(zoo.get_model("yolov8n"))


@pytest.mark.parametrize("batch,h,w", [(1, 320, 320), (1, 480, 640), (2, 256, 416)])
def test_yolov8_sizes(yolo, batch, h, w):
    ref, got, _ = yolo.compare({"images": _images(batch, h, w)}, f"yolov8n {batch}x{h}x{w}")
    n_anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert ref[0].shape == (batch, 84, n_anchors)
    # boxes (pixels) dominate max|output|: hold the class scores to their own scale too
    _check(ref[0][:, 4:], got[0][:, 4:], "yolov8n scores")


def test_yolov8_shape_chain_folded(yolo):
    names, ops = yolo.per_call_names({"images": _images(1, 160, 224)})
    assert not names & yolo.chain, sorted(names & yolo.chain)[:10]
    for op in ("Shape", "Range", "ConstantOfShape", "Expand", "Gather", "Cast"):
        assert op not in ops, op


@pytest.mark.parametrize("opset", [11, 12, 13, 18, 21])
def test_yolov8_opsets(opset):
    m = zoo.get_model("yolov8n", cache=False, opset=opset)
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == opset
    r = Runner(m)
    for h, w in ((128, 160), (96, 224)):
        r.compare({"images": _images(1, h, w, seed=h)}, f"yolov8n opset {opset} {h}x{w}")


# ---------------------------------------------------------------------------------------------
# MobileNetV3 OCR (DB detector)
@pytest.fixture(scope="module")
def ocr():
    return Runner(zoo.get_model("mbv3-ocr"))


@pytest.mark.parametrize("batch,h,w", [(1, 32, 100), (1, 48, 320), (1, 64, 256), (3, 48, 320),
                                       (1, 96, 170)])
def test_ocr_sizes(ocr, batch, h, w):
    x = np.random.default_rng(h * w).standard_normal((batch, 3, h, w), dtype=np.float32)
    ref, _, _ = ocr.compare({"x": x}, f"mbv3-ocr {batch}x{h}x{w}")
    assert ref[0].shape == (batch, 1, 4 * -(-h // 4), 4 * -(-w // 4))
    # a probability map, neither saturated nor flat
    assert 0.05 < ref[0].std() and 0.01 < ref[0].mean() < 0.9


def test_ocr_shape_chain_folded(ocr):
    x = np.random.default_rng(1).standard_normal((1, 3, 40, 72), dtype=np.float32)
    names, ops = ocr.per_call_names({"x": x})
    assert not names & ocr.chain, sorted(names & ocr.chain)[:10]
    assert "Shape" not in ops and "Slice" not in ops
    # the two upsampling ConvTransposes, each fused with its activation
    assert ops.count("ConvTranspose") + ops.count("FusedConvTranspose") == 2 and "Resize" in ops


@pytest.mark.parametrize("opset,kw", [(11, {}), (12, dict(hswish="clip", se_gate="torch")),
                                      (13, {}), (14, {}), (18, dict(hswish="hardsigmoid")),
                                      (21, {})])
def test_ocr_opsets(opset, kw):
    m = zoo.get_model("mbv3-ocr", cache=False, opset=opset, **kw)
    onnx.checker.check_model(m, full_check=True)
    ops = {n.op_type for n in m.graph.node}
    assert ("HardSwish" in ops) == (opset >= 14 and kw.get("hswish", "auto") == "auto")
    r = Runner(m)
    for h, w in ((32, 100), (48, 136)):
        x = np.random.default_rng(w).standard_normal((1, 3, h, w), dtype=np.float32)
        r.compare({"x": x}, f"mbv3-ocr opset {opset} {kw} {h}x{w}")


# ---------------------------------------------------------------------------------------------
# MiniLM
@pytest.fixture(scope="module")
def minilm():
    return Runner(zoo.get_model("minilm"))


@pytest.mark.parametrize("batch,seq", [(1, 16), (1, 128), (3, 16), (3, 128), (1, 384)])
def test_minilm_sizes(minilm, batch, seq):
    feeds = zoo.example_inputs(minilm.model, batch=batch, seq=seq, seed=seq)
    ref, _, _ = minilm.compare(feeds, f"minilm batch {batch} seq {seq}")
    assert ref[0].shape == (batch, seq, 384)


def test_minilm_shape_chain_folded(minilm):
    feeds = zoo.example_inputs(minilm.model, batch=2, seq=8)
    names, ops = minilm.per_call_names(feeds)
    assert not names & minilm.chain, sorted(names & minilm.chain)[:10]
    # the only Gathers left are the word and token-type embedding lookups
    assert "Shape" not in ops and "Slice" not in ops and "Concat" not in ops
    assert ops.count("Gather") == 2


@pytest.mark.parametrize("opset,kw", [(11, dict(layernorm="decomposed")),
                                      (13, dict(layernorm="decomposed", mask_value="10000")),
                                      (18, dict(layernorm="decomposed")), (21, {})])
def test_minilm_opsets(opset, kw):
    m = zoo.get_model("minilm", cache=False, opset=opset, layers=2, vocab=2000, **kw)
    onnx.checker.check_model(m, full_check=True)
    r = Runner(m)
    for batch, seq in ((1, 16), (3, 40)):
        r.compare(zoo.example_inputs(m, batch=batch, seq=seq), f"minilm opset {opset}")


# ---------------------------------------------------------------------------------------------
# bigger sizes
@pytest.mark.slow
def test_big_sizes(yolo, ocr, minilm):
    yolo.compare({"images": _images(1, 640, 640)}, "yolov8n 640x640")
    yolo.compare({"images": _images(2, 480, 640)}, "yolov8n 2x480x640")
    for batch, h, w in ((1, 640, 640), (1, 736, 1280), (4, 64, 256)):
        x = np.random.default_rng(w).standard_normal((batch, 3, h, w), dtype=np.float32)
        ocr.compare({"x": x}, f"mbv3-ocr {batch}x{h}x{w}")
    for batch, seq in ((3, 384), (8, 128), (1, 512)):
        minilm.compare(zoo.example_inputs(minilm.model, batch=batch, seq=seq),
                       f"minilm {batch}x{seq}")
