"""RNN / GRU / LSTM against onnxruntime (oracle) on random inputs, plus onnx node test cases."""
import numpy as np
import pytest

from _fam_oracle import close, one_node_model, run_mine, run_ort, run_ref

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _inputs(op, rng, T, Bn, I, H, D, seq_lens=None, init=True, peep=False, layout=0):
    g = GATES[op]
    X = rng.standard_normal((Bn, T, I) if layout else (T, Bn, I)).astype(np.float32)
    ins = [("X", X),
           ("W", (rng.standard_normal((D, g * H, I)) * 0.5).astype(np.float32)),
           ("R", (rng.standard_normal((D, g * H, H)) * 0.5).astype(np.float32)),
           ("B", rng.standard_normal((D, 2 * g * H)).astype(np.float32)),
           ("seq", None if seq_lens is None else np.array(seq_lens, np.int32))]
    hshape = (Bn, D, H) if layout else (D, Bn, H)
    ins.append(("h0", rng.standard_normal(hshape).astype(np.float32) if init else None))
    if op == "LSTM":
        ins.append(("c0", rng.standard_normal(hshape).astype(np.float32) if init else None))
        ins.append(("P", rng.standard_normal((D, 3 * H)).astype(np.float32) if peep else None))
    return ins


CASES = [
    dict(direction="forward"),
    dict(direction="reverse"),
    dict(direction="bidirectional"),
    dict(direction="forward", seq_lens=[5, 2, 3]),
    dict(direction="reverse", seq_lens=[5, 1, 3]),
    dict(direction="bidirectional", seq_lens=[4, 5, 2]),
    dict(direction="bidirectional", clip=0.7),
    dict(direction="forward", init=False),
]


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("case", CASES)
def test_vs_onnxruntime(op, case):
    rng = np.random.default_rng(0)
    D = 2 if case["direction"] == "bidirectional" else 1
    H = 4
    ins = _inputs(op, rng, 5, 3, 3, H, D, case.get("seq_lens"), case.get("init", True),
                  peep=op == "LSTM")
    attrs = {"hidden_size": H, "direction": case["direction"]}
    if "clip" in case:
        attrs["clip"] = case["clip"]
    n_out = 3 if op == "LSTM" else 2
    model, feeds = one_node_model(op, ins, n_out, attrs, opset={"": 14})
    got = run_mine(model, feeds)
    exp = run_ort(model, feeds)
    close(got, exp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(lbr):
    rng = np.random.default_rng(1)
    ins = _inputs("GRU", rng, 4, 2, 3, 5, 2, seq_lens=[4, 2])
    model, feeds = one_node_model("GRU", ins, 2, {"hidden_size": 5, "direction": "bidirectional",
                                                  "linear_before_reset": lbr}, opset={"": 14})
    close(run_mine(model, feeds), run_ort(model, feeds), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_layout_batch_first(op):
    rng = np.random.default_rng(2)
    ins = _inputs(op, rng, 4, 3, 2, 3, 2, layout=1)
    attrs = {"hidden_size": 3, "direction": "bidirectional", "layout": 1}
    model, feeds = one_node_model(op, ins, 3 if op == "LSTM" else 2, attrs, opset={"": 14})
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-5, atol=1e-6)


def test_activations_with_alpha():
    rng = np.random.default_rng(3)
    ins = _inputs("LSTM", rng, 3, 2, 3, 4, 2)
    attrs = {"hidden_size": 4, "direction": "bidirectional",
             "activations": ["HardSigmoid", "Tanh", "ScaledTanh", "Sigmoid", "LeakyRelu", "Tanh"],
             "activation_alpha": [0.3, 0.9, 0.05], "activation_beta": [0.4, 1.1]}
    model, feeds = one_node_model("LSTM", ins, 3, attrs, opset={"": 14})
    close(run_mine(model, feeds), run_ort(model, feeds), rtol=1e-4, atol=1e-5)


def test_lstm_input_forget():
    rng = np.random.default_rng(4)
    ins = _inputs("LSTM", rng, 3, 2, 3, 4, 1)
    model, feeds = one_node_model("LSTM", ins, 3, {"hidden_size": 4, "input_forget": 1}, opset={"": 14})
    close(run_mine(model, feeds), run_ort(model, feeds), rtol=1e-4, atol=1e-5)


def test_node_cases():
    from _fam_cases import run_cases
    npass, fails = run_cases({"RNN", "GRU", "LSTM"})
    assert not fails, fails
    assert npass >= 18
