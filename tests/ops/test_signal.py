"""DFT / STFT / windows / MelWeightMatrix against onnx's ReferenceEvaluator, plus node cases."""
import numpy as np
import pytest
from onnx import TensorProto

from _fam_cases import run_cases
from _fam_oracle import close, one_node_model, run_mine, run_ref


# an inverse one-sided transform takes a complex half spectrum, so it has no real-input variant
DFT_CASES = [(i, o, c) for i in (0, 1) for o in (0, 1) for c in (False, True) if c or not (i and o)]


@pytest.mark.parametrize("inverse,onesided,complex_in", DFT_CASES)
@pytest.mark.parametrize("axis", [1, 2])
def test_dft20_vs_reference(inverse, onesided, axis, complex_in):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 5, 2 if complex_in else 1)).astype(np.float64)
    n = np.array(8, np.int64)
    model, feeds = one_node_model("DFT", [("x", x), ("n", n), ("a", np.array(axis, np.int64))], 1,
                                  {"inverse": inverse, "onesided": onesided}, opset={"": 20},
                                  out_types=[np.float64])
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-9, atol=1e-9)


def test_dft17_axis_attr():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 2)).astype(np.float32)
    model, feeds = one_node_model("DFT", [("x", x)], 1, {"axis": 1}, opset={"": 17})
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("onesided", [0, 1])
def test_stft_vs_reference(onesided):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 40, 1)).astype(np.float32)
    win = np.hanning(16).astype(np.float32)
    model, feeds = one_node_model("STFT", [("x", x), ("s", np.array(6, np.int64)), ("w", win),
                                           ("l", np.array(16, np.int64))], 1, {"onesided": onesided},
                                  opset={"": 17})
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows(op, periodic):
    model, feeds = one_node_model(op, [("n", np.array(10, np.int64))], 1,
                                  {"periodic": periodic, "output_datatype": TensorProto.DOUBLE},
                                  opset={"": 17}, out_types=[np.float64])
    close(run_mine(model, feeds), run_ref(model, feeds), rtol=1e-12, atol=1e-12)


def test_mel_weight_matrix():
    ins = [("m", np.array(8, np.int64)), ("n", np.array(64, np.int64)), ("sr", np.array(16000, np.int64)),
           ("lo", np.array(20.0, np.float32)), ("hi", np.array(7000.0, np.float32))]
    model, feeds = one_node_model("MelWeightMatrix", ins, 1, opset={"": 17})
    close(run_mine(model, feeds), run_ref(model, feeds))


def test_node_cases():
    npass, fails = run_cases({"DFT", "STFT", "HannWindow", "HammingWindow", "BlackmanWindow",
                              "MelWeightMatrix"})
    assert not fails, fails
    assert npass >= 19
